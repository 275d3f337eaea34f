//! Replication: copies of images in other registries. A *target* is another registry (any OCI
//! registry: another Berth, the plain registry, Harbor, a cloud registry), its password or
//! token sealed in the database (`crate::seal`); a *rule* says which local repositories
//! (a glob) and tags (a glob) go there, under which prefix, and whether deletes follow.
//!
//! Every copy or delete is a job in the database queue (`crate::meta::replication`): a push or
//! a delete that a rule matches queues one at once (through [`crate::events::RepoListener`]),
//! `run_rule` queues one per matching tag on demand. Each node's worker claims due jobs under
//! a lease — one node runs each job — with `workers` at a time, retries a failed one with
//! doubling waits, and gives up after `max_attempts` with a `replication` webhook event. A
//! copy ([`copy`]) sends what the target lacks only, so a job retried after a failure (or a
//! lost node) resumes instead of sending everything again.

mod copy;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use crate::auth::policy::glob_match;
use crate::config::ReplicationConfig;
use crate::error::{RegistryError, Result};
use crate::events::{Events, RepoListener};
use crate::meta::{JobOutcome, Meta, ReplicationJob, ReplicationRule, ReplicationTarget, now_millis};
use crate::registry::Registry;
use crate::remote::Remote;
use crate::seal::SealKey;

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

    /// A client of a target, with its secret opened.
    pub fn remote(&self, target: &ReplicationTarget) -> Result<Remote> {
        let secret = if target.secret_sealed.is_empty() {
            String::new()
        } else {
            let plain = self.seal()?.open(SECRET_PURPOSE, &target.secret_sealed).map_err(|e| {
                RegistryError::Internal(format!("the secret of replication target {}: {e:#}", target.name))
            })?;
            String::from_utf8(plain).map_err(|e| RegistryError::internal("a target's secret", e))?
        };
        let ca = (!target.ca_file.is_empty()).then(|| std::path::Path::new(&target.ca_file));
        Remote::new(&target.url, &target.username, &secret, ca)
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
            // A tag must match the rule's tags; a manifest pushed by digest alone is judged when
            // copied (a referrer follows its subject).
            let reference = match (tag, digest) {
                (Some(t), _) if glob_match(&rule.tags, t) => t,
                (Some(_), _) => continue,
                (None, Some(d)) => d,
                (None, None) => continue,
            };
            queued |= self.meta.enqueue_replication_job(rule.id, action, repository, reference).await?;
        }
        if queued {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Queues a copy of every tag of every local repository the rule matches; the number queued.
    pub async fn run_rule(&self, rule: &ReplicationRule) -> Result<usize> {
        let mut queued = 0;
        let mut last: Option<String> = None;
        loop {
            let page = self.registry.catalog(last.as_deref(), 1000).await?;
            for repository in page.iter().filter(|r| glob_match(&rule.repositories, r)) {
                for tag in self.registry.tags(repository, None, 100_000).await? {
                    if glob_match(&rule.tags, &tag)
                        && self.meta.enqueue_replication_job(rule.id, "copy", repository, &tag).await?
                    {
                        queued += 1;
                    }
                }
            }
            match page.last() {
                Some(l) if page.len() == 1000 => last = Some(l.clone()),
                _ => break,
            }
        }
        self.wake.notify_one();
        Ok(queued)
    }

    /// Runs this node's worker in the background.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.work().await });
    }

    async fn work(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.workers.max(1)));
        let lease_ms = (self.config.lease_secs.max(10) * 1000) as i64;
        loop {
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
                let last = job.attempts >= self.config.max_attempts as i64;
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
        match self.meta.finish_replication_job(job.id, job.attempts, &outcome).await {
            Ok(true) => {
                if let (JobOutcome::Failed { error, next_attempt_at: None }, Ok(Some(rule))) =
                    (&outcome, self.meta.replication_rule_by_id(job.rule_id).await)
                {
                    let detail = format!("rule {} to {}: {error}", rule.name, rule.target_name);
                    self.events.replication_failed(&job.repository, &job.reference, &detail).await;
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
        let target = self
            .meta
            .replication_target_by_id(rule.target_id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("replication target {} is gone", rule.target_name)))?;
        let remote = self.remote(&target)?;
        let destination = destination(&rule.destination_prefix, &job.repository);
        match job.action.as_str() {
            "copy" => copy::copy(&self.registry, &remote, &rule, &job.repository, &job.reference, &destination).await,
            "delete" => copy::delete(&remote, &destination, &job.reference).await,
            other => Err(RegistryError::Internal(format!("unknown replication action {other}"))),
        }
    }
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
