//! Replication: copies of images in other registries, and of other registries' images here.
//! A *target* is another registry (any OCI registry: another Berth, the plain registry,
//! Harbor, a cloud registry), its password or token sealed in the database (`crate::seal`); a
//! *rule* goes one way — `push` (local → target) or `pull` (target → local) — and says which
//! repositories (a glob) and tags (a glob or a regular expression, optionally only the latest
//! N, [`select`]) go, under which prefix, whether deletes follow, and on which schedule
//! ([`schedule`]).
//!
//! Every copy or delete is a job in the database queue (`crate::meta::replication`): a push or
//! a delete that a push rule matches queues one at once (through
//! [`crate::events::RepoListener`]); a run of a rule — on demand or on its schedule, recorded
//! as an *execution* — queues one per matching tag. Each node's worker claims due jobs under
//! a lease — one node runs each job — with `workers` at a time and `per_target` at a time per
//! target, retries a failed one with doubling waits, and gives up after `max_attempts` with a
//! `replication` webhook event. A copy ([`copy`] out, [`pull`] in) sends what the other side
//! lacks only, so a job retried after a failure (or a lost node) resumes instead of sending
//! everything again.

mod copy;
mod pull;
pub mod schedule;
pub mod select;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use crate::auth::policy::glob_match;
use crate::config::ReplicationConfig;
use crate::error::{RegistryError, Result};
use crate::events::{Events, RepoListener};
use crate::meta::{JobOutcome, Meta, ReplicationJob, ReplicationRule, ReplicationTarget, now_millis};
use crate::metrics;
use crate::registry::Registry;
use crate::remote::Remote;
use crate::seal::SealKey;
use schedule::Schedule;
use select::TagFilter;

/// The purpose sealed target secrets are bound to.
pub const SECRET_PURPOSE: &str = "replication-target";
/// How long the rule list is trusted before it is read again.
const RULES_TTL: Duration = Duration::from_secs(2);

/// The replication service of one node.
pub struct Replicator {
    meta: Meta,
    registry: Arc<Registry>,
    events: Arc<Events>,
    config: ReplicationConfig,
    /// The sealing key, read (or made) the first time a secret is sealed or opened.
    seal: std::sync::OnceLock<SealKey>,
    seal_path: std::path::PathBuf,
    wake: Notify,
    rules: Mutex<(Vec<ReplicationRule>, Option<Instant>)>,
    /// One client per target (its token cache and connections reused), with what it was made
    /// from: a changed target gets a new one.
    remotes: Mutex<HashMap<i64, (String, Arc<Remote>)>>,
    /// Jobs running per target, at most `per_target`.
    target_slots: Mutex<HashMap<i64, Arc<Semaphore>>>,
}

/// What a copy sent and found at the target.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Blobs and manifests sent.
    pub sent: i64,
    /// Blobs and manifests the target had.
    pub skipped: i64,
    pub bytes: i64,
}

impl Replicator {
    pub fn new(
        registry: Arc<Registry>,
        events: Arc<Events>,
        config: ReplicationConfig,
        seal_path: std::path::PathBuf,
    ) -> Replicator {
        Replicator {
            meta: registry.meta.clone(),
            registry,
            events,
            config,
            seal: std::sync::OnceLock::new(),
            seal_path,
            wake: Notify::new(),
            rules: Mutex::new((Vec::new(), None)),
            remotes: Mutex::new(HashMap::new()),
            target_slots: Mutex::new(HashMap::new()),
        }
    }

    /// The key that seals target secrets (`BERTH_SECRET_KEY`, or the key file).
    pub fn seal(&self) -> Result<&SealKey> {
        if let Some(k) = self.seal.get() {
            return Ok(k);
        }
        let env = std::env::var(crate::seal::KEY_ENV).ok();
        let key = SealKey::load_or_create(env.as_deref(), &self.seal_path)
            .map_err(|e| RegistryError::Internal(format!("the secret key: {e:#}")))?;
        Ok(self.seal.get_or_init(|| key))
    }

    /// Forgets the cached rules (after this node changed them).
    pub fn rules_changed(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).1 = None;
    }

    async fn rules(&self) -> Result<Vec<ReplicationRule>> {
        {
            let cached = self.rules.lock().unwrap_or_else(|p| p.into_inner());
            if cached.1.is_some_and(|t| t.elapsed() < RULES_TTL) {
                return Ok(cached.0.clone());
            }
        }
        let rules = self.meta.replication_rules().await?;
        *self.rules.lock().unwrap_or_else(|p| p.into_inner()) = (rules.clone(), Some(Instant::now()));
        Ok(rules)
    }

    /// A client of a target, with its secret opened (made once per target and kept).
    pub fn remote(&self, target: &ReplicationTarget) -> Result<Arc<Remote>> {
        let made_from = format!("{}\n{}\n{}\n{}", target.url, target.username, target.secret_sealed, target.ca_file);
        if target.id != 0
            && let Some((from, remote)) = self.remotes.lock().unwrap_or_else(|p| p.into_inner()).get(&target.id)
            && *from == made_from
        {
            return Ok(remote.clone());
        }
        let secret = if target.secret_sealed.is_empty() {
            String::new()
        } else {
            let plain = self.seal()?.open(SECRET_PURPOSE, &target.secret_sealed).map_err(|e| {
                RegistryError::Internal(format!("the secret of replication target {}: {e:#}", target.name))
            })?;
            String::from_utf8(plain).map_err(|e| RegistryError::internal("a target's secret", e))?
        };
        let ca = (!target.ca_file.is_empty()).then(|| std::path::Path::new(&target.ca_file));
        let remote = Arc::new(
            Remote::new(&target.url, &target.username, &secret, ca)?.with_chunk_bytes(self.config.chunk_bytes),
        );
        if target.id != 0 {
            self.remotes.lock().unwrap_or_else(|p| p.into_inner()).insert(target.id, (made_from, remote.clone()));
        }
        Ok(remote)
    }

    /// Queues the jobs the push or delete of `repository` (`tag`, or a manifest by digest)
    /// calls for.
    async fn queue_for(&self, action: &str, repository: &str, tag: Option<&str>, digest: Option<&str>) -> Result<()> {
        let mut queued = false;
        for rule in self.rules().await?.iter().filter(|r| r.enabled && r.direction == "push") {
            if !glob_match(&rule.repositories, repository) {
                continue;
            }
            if action == "delete" && !rule.replicate_deletes {
                continue;
            }
            let filter = TagFilter::new(rule)?;
            // A tag must match the rule's tags; a manifest pushed by digest alone is judged when
            // copied (a referrer follows its subject). A manifest deleted by digest follows
            // only under a rule that takes every tag: under a filter, Berth cannot tell whether
            // the target's copy came from a tag the rule covers.
            let reference = match (tag, digest) {
                (Some(t), _) if filter.matches(t) => t,
                (Some(_), _) => continue,
                (None, Some(_)) if action == "delete" && !filter.takes_all() => continue,
                (None, Some(d)) => d,
                (None, None) => continue,
            };
            queued |= self.meta.enqueue_replication_job(rule.id, action, repository, reference, None).await?;
        }
        if queued {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Runs a rule now (`cause`: manual or schedule): an execution that queues a copy of every
    /// tag the rule selects (and, for a pull rule that follows deletes, a delete of every local
    /// tag the source no longer has). Returns the execution and how many jobs it queued.
    pub async fn run_rule(&self, rule: &ReplicationRule, cause: &str) -> Result<(i64, usize)> {
        let execution = self.meta.create_replication_execution(rule.id, cause).await?;
        let listed = match rule.direction.as_str() {
            "pull" => self.list_pull(rule).await,
            _ => self.list_push(rule).await,
        };
        let result = match listed {
            Ok(jobs) => {
                let mut queued = 0;
                for (action, repository, reference) in jobs {
                    if self
                        .meta
                        .enqueue_replication_job(rule.id, action, &repository, &reference, Some(execution))
                        .await?
                    {
                        queued += 1;
                    }
                }
                self.meta.finish_replication_execution(execution, queued as i64, None).await?;
                Ok((execution, queued))
            }
            Err(e) => {
                self.meta.finish_replication_execution(execution, 0, Some(&e.to_string())).await?;
                Err(e)
            }
        };
        self.wake.notify_one();
        result
    }

    /// What a run of a push rule copies: the selected tags of every matching local repository.
    async fn list_push(&self, rule: &ReplicationRule) -> Result<Vec<(&'static str, String, String)>> {
        let filter = TagFilter::new(rule)?;
        let mut jobs = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self.registry.catalog(last.as_deref(), 1000).await?;
            for repository in page.iter().filter(|r| glob_match(&rule.repositories, r)) {
                let tags: Vec<_> =
                    self.meta.tag_times(repository).await?.into_iter().filter(|(t, _)| filter.matches(t)).collect();
                for tag in select::latest(tags, rule.latest) {
                    jobs.push(("copy", repository.clone(), tag));
                }
            }
            match page.last() {
                Some(l) if page.len() == 1000 => last = Some(l.clone()),
                _ => return Ok(jobs),
            }
        }
    }

    /// What a run of a pull rule copies: the selected tags of every matching repository of
    /// the source (its catalog when the rule's repositories have a `*`), and the local tags
    /// the source no longer has when deletes follow.
    async fn list_pull(&self, rule: &ReplicationRule) -> Result<Vec<(&'static str, String, String)>> {
        let filter = TagFilter::new(rule)?;
        let target = self.target_of(rule).await?;
        let remote = self.remote(&target)?;
        let repositories = if rule.repositories.contains('*') {
            remote.catalog().await?.into_iter().filter(|r| glob_match(&rule.repositories, r)).collect()
        } else {
            vec![rule.repositories.clone()]
        };
        let mut jobs = Vec::new();
        for repository in repositories {
            if crate::oci::validate_name(&repository).is_err() {
                continue;
            }
            // A repository the source does not have (a typo, lost access) deletes nothing here.
            let Some(all) = remote.tags(&repository).await? else {
                tracing::warn!(rule = %rule.name, %repository, "replication: the source has no such repository");
                continue;
            };
            let tags: Vec<String> = all.into_iter().filter(|t| filter.matches(t)).collect();
            let chosen = if rule.latest > 0 && tags.len() as i64 > rule.latest {
                let mut timed = Vec::with_capacity(tags.len());
                for tag in &tags {
                    timed.push((tag.clone(), pull::created(&remote, &repository, tag).await));
                }
                select::latest(timed, rule.latest)
            } else {
                tags.clone()
            };
            if rule.replicate_deletes {
                let upstream: HashSet<&String> = tags.iter().collect();
                let local = destination(&rule.destination_prefix, &repository);
                for (tag, _) in self.meta.tag_times(&local).await? {
                    if filter.matches(&tag) && !upstream.contains(&tag) {
                        jobs.push(("delete", repository.clone(), tag));
                    }
                }
            }
            for tag in chosen {
                jobs.push(("copy", repository.clone(), tag));
            }
        }
        Ok(jobs)
    }

    async fn target_of(&self, rule: &ReplicationRule) -> Result<ReplicationTarget> {
        self.meta
            .replication_target_by_id(rule.target_id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("replication target {} is gone", rule.target_name)))
    }

    /// Runs the scheduled rules that are due and that this node claims first.
    async fn run_schedules(self: &Arc<Self>) -> Result<()> {
        let now = now_millis();
        for rule in self.meta.due_replication_rules(now).await? {
            let Some(due) = rule.next_run_at else { continue };
            let next = match Schedule::parse(&rule.schedule).and_then(|s| s.next_after(now.max(due))) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(rule = %rule.name, error = %e, "replication: a schedule that cannot run");
                    // Pushed far out, so the bad schedule is not looked at every poll.
                    now + 86_400_000
                }
            };
            if self.meta.claim_scheduled_run(rule.id, due, next).await? {
                // Listing a slow source must not hold up this node's jobs: its own task.
                let me = self.clone();
                tokio::spawn(async move {
                    match me.run_rule(&rule, "schedule").await {
                        Ok((execution, queued)) => {
                            tracing::info!(rule = %rule.name, execution, queued, "replication: scheduled run")
                        }
                        Err(e) => tracing::warn!(rule = %rule.name, error = %e, "replication: scheduled run failed"),
                    }
                });
            }
        }
        Ok(())
    }

    /// Runs this node's worker in the background.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.work().await });
    }

    async fn work(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.workers.max(1)));
        let lease_ms = (self.config.lease_secs.max(10) * 1000) as i64;
        let mut pruned: Option<Instant> = None;
        loop {
            if pruned.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                pruned = Some(Instant::now());
                let before = now_millis() - self.config.history_days as i64 * 86_400_000;
                match self.meta.prune_replication_history(before).await {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "replication: old history pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "replication: cannot prune the history"),
                }
            }
            if let Err(e) = self.run_schedules().await {
                tracing::warn!(error = %e, "replication: cannot read the schedules");
            }
            match self.meta.pending_replication_jobs().await {
                Ok(n) => metrics::global().replication_pending(n),
                Err(e) => tracing::warn!(error = %e, "replication: cannot count the queue"),
            }
            let free = slots.available_permits() as i64;
            if free > 0 {
                match self.meta.claim_replication_jobs(lease_ms, free).await {
                    Ok(jobs) => {
                        for job in jobs {
                            let Ok(permit) = slots.clone().acquire_owned().await else { return };
                            let me = self.clone();
                            tokio::spawn(async move {
                                me.run_job(job, lease_ms).await;
                                drop(permit);
                                // A free slot: look for the next job now, not at the next poll.
                                me.wake.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "replication: cannot read the job queue"),
                }
            }
            let poll = Duration::from_millis(self.config.poll_ms.max(50));
            let _ = tokio::time::timeout(poll, self.wake.notified()).await;
        }
    }

    /// One attempt of a job, its lease renewed while it runs, its outcome recorded.
    async fn run_job(&self, job: ReplicationJob, lease_ms: i64) {
        let started = Instant::now();
        let keep_lease = async {
            loop {
                tokio::time::sleep(Duration::from_millis((lease_ms / 3) as u64)).await;
                match self.meta.extend_replication_lease(job.id, job.attempts, lease_ms).await {
                    Ok(true) => {}
                    _ => return,
                }
            }
        };
        let result = tokio::select! {
            r = self.attempt(&job) => r,
            _ = keep_lease => Err(RegistryError::Unavailable("the job's lease was lost".into())),
        };
        let outcome = match &result {
            Ok(c) => JobOutcome::Done { copied: c.sent, skipped: c.skipped, bytes: c.bytes },
            Err(e) => {
                let last = job.attempts >= self.config.max_attempts as i64 || !retryable(e);
                let wait = self.config.backoff_initial_ms.saturating_mul(1 << (job.attempts - 1).clamp(0, 20) as u64);
                let wait = wait.min(self.config.backoff_max_secs * 1000) as i64;
                JobOutcome::Failed { error: e.to_string(), next_attempt_at: (!last).then(|| now_millis() + wait) }
            }
        };
        match &result {
            Ok(c) => tracing::info!(
                job = job.id, action = %job.action, repository = %job.repository, reference = %job.reference,
                sent = c.sent, skipped = c.skipped, bytes = c.bytes, ms = started.elapsed().as_millis() as u64,
                "replicated"
            ),
            Err(e) => tracing::warn!(
                job = job.id, attempt = job.attempts, action = %job.action, repository = %job.repository,
                reference = %job.reference, error = %e, "replication failed"
            ),
        }
        let pull =
            self.rules().await.is_ok_and(|rules| rules.iter().any(|r| r.id == job.rule_id && r.direction == "pull"));
        let direction = if pull { "pull" } else { "push" };
        match &outcome {
            JobOutcome::Done { copied, skipped, bytes } => {
                metrics::global().replication_job(direction, "done", *copied as u64, *skipped as u64, *bytes as u64)
            }
            JobOutcome::Failed { next_attempt_at: Some(_), .. } => {
                metrics::global().replication_job(direction, "retry", 0, 0, 0)
            }
            JobOutcome::Failed { next_attempt_at: None, .. } => {
                metrics::global().replication_job(direction, "failed", 0, 0, 0)
            }
        }
        match self.meta.finish_replication_job(job.id, job.attempts, &outcome).await {
            Ok(true) => {
                if let (JobOutcome::Failed { error, next_attempt_at: None }, Ok(Some(rule))) =
                    (&outcome, self.meta.replication_rule_by_id(job.rule_id).await)
                {
                    // The event belongs to the local repository: the source for a push rule,
                    // the destination for a pull rule.
                    let (local, detail) = if rule.direction == "pull" {
                        let local = destination(&rule.destination_prefix, &job.repository);
                        (local, format!("rule {} from {}: {error}", rule.name, rule.target_name))
                    } else {
                        (job.repository.clone(), format!("rule {} to {}: {error}", rule.name, rule.target_name))
                    };
                    self.events.replication_failed(&local, &job.reference, &detail).await;
                }
            }
            Ok(false) => tracing::info!(job = job.id, "another node took this job over meanwhile"),
            Err(e) => tracing::warn!(job = job.id, error = %e, "cannot record a replication outcome"),
        }
    }

    async fn attempt(&self, job: &ReplicationJob) -> Result<Copied> {
        let rule = self
            .meta
            .replication_rule_by_id(job.rule_id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("replication rule {} is gone", job.rule_id)))?;
        let target = self.target_of(&rule).await?;
        let remote = self.remote(&target)?;
        let slots = self
            .target_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_target.max(1))))
            .clone();
        let _slot = slots.acquire_owned().await.map_err(|e| RegistryError::internal("a target's slots", e))?;
        let destination = destination(&rule.destination_prefix, &job.repository);
        let (registry, repo, reference) = (&*self.registry, job.repository.as_str(), job.reference.as_str());
        match (rule.direction.as_str(), job.action.as_str()) {
            ("push", "copy") => copy::copy(registry, &remote, &rule, repo, reference, &destination).await,
            ("push", "delete") => copy::delete(registry, &remote, repo, &destination, reference).await,
            ("pull", "copy") => pull::pull(registry, &remote, repo, reference, &destination).await,
            ("pull", "delete") => pull::delete(registry, &remote, repo, &destination, reference).await,
            (d, a) => Err(RegistryError::Internal(format!("unknown replication job: {d} {a}"))),
        }
    }
}

/// Whether a failed attempt may succeed later: not when what the source sent is corrupt or
/// what was asked for is invalid (a retry would fetch the same bytes).
fn retryable(e: &RegistryError) -> bool {
    !matches!(
        e,
        RegistryError::DigestInvalid(_)
            | RegistryError::ManifestInvalid(_)
            | RegistryError::NameInvalid(_)
            | RegistryError::Invalid(_)
            | RegistryError::NotFound(_)
    )
}

/// The repository name at the target: the prefix, then the local name.
pub fn destination(prefix: &str, repository: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() { repository.to_string() } else { format!("{prefix}/{repository}") }
}

/// What the events call: a weak handle, so the listener keeps nothing alive.
struct Listener(std::sync::Weak<Replicator>);

impl RepoListener for Listener {
    fn pushed(&self, repository: &str, tag: Option<&str>, digest: Option<&str>) {
        if let Some(me) = self.0.upgrade() {
            me.queue_later("copy", repository, tag, digest);
        }
    }

    fn deleted(&self, repository: &str, tag: Option<&str>, digest: Option<&str>) {
        if let Some(me) = self.0.upgrade() {
            me.queue_later("delete", repository, tag, digest);
        }
    }
}

impl Replicator {
    /// Registers `me` as the events' listener of pushes and deletes.
    pub fn listen(me: &Arc<Replicator>) {
        me.events.set_listener(Arc::new(Listener(Arc::downgrade(me))));
    }

    /// Queues on the runtime, off the request's path.
    fn queue_later(self: Arc<Self>, action: &'static str, repository: &str, tag: Option<&str>, digest: Option<&str>) {
        let (repository, tag, digest) = (repository.to_string(), tag.map(String::from), digest.map(String::from));
        tokio::spawn(async move {
            if let Err(e) = self.queue_for(action, &repository, tag.as_deref(), digest.as_deref()).await {
                tracing::warn!(%repository, action, error = %e, "replication: could not queue a job");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::destination;

    #[test]
    fn destinations() {
        assert_eq!(destination("", "team/app"), "team/app");
        assert_eq!(destination("mirror", "team/app"), "mirror/team/app");
        assert_eq!(destination("/dr/site-b/", "app"), "dr/site-b/app");
    }
}
