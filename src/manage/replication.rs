//! Replication targets and rules, once for every door (`/api/v1/replication` in
//! `api/replication.rs`, `berth replication` in `cli/replication.rs`). Administrators only: a
//! target makes the server send images, with stored credentials, to an address of the
//! creator's choosing. A target's secret is sealed when stored and never returned or logged.

use std::sync::Arc;

use serde_json::{Value, json};

use super::By;
use crate::error::{RegistryError, Result};
use crate::events::Events;
use crate::meta::{
    Meta, NewRule, NewTarget, ReplicationExecution, ReplicationJob, ReplicationRule, ReplicationTarget, now_millis,
};
use crate::replication::schedule::Schedule;
use crate::replication::{Replicator, SECRET_PURPOSE, select};

/// What a new target is.
pub struct TargetSpec<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub username: &'a str,
    pub secret: &'a str,
    pub ca_file: &'a str,
}

/// What a new rule is.
pub struct RuleSpec<'a> {
    pub name: &'a str,
    pub target: &'a str,
    /// `push` (local → target) or `pull` (target → local).
    pub direction: &'a str,
    pub repositories: &'a str,
    pub tags: &'a str,
    /// A regular expression the whole tag must match, instead of `tags` (empty: none).
    pub tags_regex: &'a str,
    /// Only the latest N tags (0: every one).
    pub latest: i64,
    pub destination_prefix: &'a str,
    pub replicate_deletes: bool,
    /// An interval (`10m`) or a cron expression; empty: on push (push rules) and on demand.
    pub schedule: &'a str,
}

pub struct ReplicationAdmin {
    meta: Meta,
    replicator: Arc<Replicator>,
    events: Arc<Events>,
}

impl RuleSpec<'_> {
    /// The checks of a new rule that need no database (its name, direction, globs, expression,
    /// latest N, schedule, destination prefix); the first run of its schedule, if it has one.
    pub fn check(&self) -> Result<Option<i64>> {
        validate_label("rule", self.name)?;
        if !matches!(self.direction, "push" | "pull") {
            return Err(RegistryError::Invalid(format!("direction {:?}: push or pull", self.direction)));
        }
        validate_glob("repositories", self.repositories)?;
        validate_glob("tags", self.tags)?;
        if !self.tags_regex.is_empty() {
            select::compile(self.tags_regex)?;
        }
        if !(0..=100_000).contains(&self.latest) {
            return Err(RegistryError::Invalid("latest: 0 (every tag) up to 100000".into()));
        }
        let next_run_at = if self.schedule.trim().is_empty() {
            None
        } else {
            Some(Schedule::parse(self.schedule)?.first(now_millis())?)
        };
        let prefix = self.destination_prefix.trim_matches('/');
        if !prefix.is_empty() {
            crate::oci::validate_name(prefix)?;
        }
        Ok(next_run_at)
    }
}

/// A name for targets and rules: 1–64 of `a-z 0-9 . _ -`.
fn validate_label(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok { Ok(()) } else { Err(RegistryError::Invalid(format!("a {what} name is 1-64 of a-z, 0-9, '.', '_', '-'"))) }
}

/// A repository or tag glob: the characters of names and tags, and `*`.
fn validate_glob(what: &str, glob: &str) -> Result<()> {
    let ok = !glob.is_empty()
        && glob.len() <= 255
        && glob.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/*".contains(&b));
    if ok { Ok(()) } else { Err(RegistryError::Invalid(format!("{what} {glob:?} is not a glob of names and `*`"))) }
}

pub fn target_json(t: &ReplicationTarget) -> Value {
    json!({
        "name": t.name, "url": t.url, "username": t.username, "has_secret": !t.secret_sealed.is_empty(),
        "ca_file": t.ca_file, "created_by": t.created_by, "created_at": t.created_at,
    })
}

pub fn rule_json(r: &ReplicationRule) -> Value {
    json!({
        "name": r.name, "target": r.target_name, "direction": r.direction, "repositories": r.repositories,
        "tags": r.tags, "tags_regex": r.tags_regex, "latest": r.latest, "destination_prefix": r.destination_prefix,
        "replicate_deletes": r.replicate_deletes, "schedule": r.schedule, "next_run_at": r.next_run_at,
        "last_run_at": r.last_run_at, "enabled": r.enabled, "created_by": r.created_by, "created_at": r.created_at,
    })
}

pub fn job_json(j: &ReplicationJob) -> Value {
    json!({
        "id": j.id, "execution": j.execution_id, "action": j.action, "repository": j.repository,
        "reference": j.reference, "status": j.status, "attempts": j.attempts, "copied": j.copied,
        "skipped": j.skipped, "bytes": j.bytes, "last_error": j.last_error, "created_at": j.created_at,
        "finished_at": j.finished_at,
    })
}

pub fn execution_json(e: &ReplicationExecution) -> Value {
    json!({
        "id": e.id, "trigger": e.trigger, "status": e.status(), "queued": e.queued, "error": e.error,
        "started_at": e.started_at, "pending": e.pending, "done": e.done, "failed": e.failed,
        "copied": e.copied, "skipped": e.skipped, "bytes": e.bytes,
    })
}

impl ReplicationAdmin {
    pub fn new(replicator: Arc<Replicator>, events: Arc<Events>) -> ReplicationAdmin {
        ReplicationAdmin { meta: events.meta().clone(), replicator, events }
    }

    async fn record(&self, by: By<'_>, action: &str, target: &str, detail: Value) {
        self.events.audit(by.actor(), action, Some(target), detail, by.addr()).await;
    }

    pub async fn targets(&self, by: By<'_>) -> Result<Vec<ReplicationTarget>> {
        by.require_admin()?;
        self.meta.replication_targets().await
    }

    async fn target(&self, name: &str) -> Result<ReplicationTarget> {
        self.meta
            .replication_target(name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no replication target {name}")))
    }

    /// Stores a target, its secret sealed.
    pub async fn create_target(&self, by: By<'_>, spec: &TargetSpec<'_>) -> Result<ReplicationTarget> {
        by.require_admin()?;
        validate_label("target", spec.name)?;
        // The URL and CA file are checked by building a client.
        let probe = ReplicationTarget {
            id: 0,
            name: spec.name.into(),
            url: spec.url.into(),
            username: spec.username.into(),
            secret_sealed: String::new(),
            ca_file: spec.ca_file.into(),
            created_by: String::new(),
            created_at: 0,
        };
        self.replicator.remote(&probe)?;
        let sealed = if spec.secret.is_empty() {
            String::new()
        } else {
            self.replicator
                .seal()?
                .seal(SECRET_PURPOSE, spec.secret.as_bytes())
                .map_err(|e| RegistryError::Internal(format!("sealing a target's secret: {e:#}")))?
        };
        let new = NewTarget {
            name: spec.name,
            url: spec.url.trim_end_matches('/'),
            username: spec.username,
            secret_sealed: &sealed,
            ca_file: spec.ca_file,
            created_by: by.actor(),
        };
        if self.meta.create_replication_target(&new).await?.is_none() {
            return Err(RegistryError::Conflict(format!("a replication target {} exists", spec.name)));
        }
        let target = self.target(spec.name).await?;
        self.record(by, "replication.target.create", spec.name, json!({ "url": target.url })).await;
        Ok(target)
    }

    pub async fn delete_target(&self, by: By<'_>, name: &str) -> Result<()> {
        by.require_admin()?;
        if !self.meta.delete_replication_target(name).await? {
            return Err(RegistryError::NotFound(format!("no replication target {name}")));
        }
        self.replicator.rules_changed();
        self.record(by, "replication.target.delete", name, Value::Null).await;
        Ok(())
    }

    /// Connects to the target with its credentials: `Ok` when it lets us in.
    pub async fn test_target(&self, by: By<'_>, name: &str) -> Result<()> {
        by.require_admin()?;
        let target = self.target(name).await?;
        self.replicator.remote(&target)?.check("berth-replication-test/check").await
    }

    pub async fn rules(&self, by: By<'_>) -> Result<Vec<ReplicationRule>> {
        by.require_admin()?;
        self.meta.replication_rules().await
    }

    async fn rule(&self, name: &str) -> Result<ReplicationRule> {
        self.meta
            .replication_rule(name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no replication rule {name}")))
    }

    /// Stores a rule: push (local → target) or pull (target → local).
    pub async fn create_rule(&self, by: By<'_>, spec: &RuleSpec<'_>) -> Result<ReplicationRule> {
        by.require_admin()?;
        let next_run_at = spec.check()?;
        let prefix = spec.destination_prefix.trim_matches('/');
        let target = self.target(spec.target).await?;
        let new = NewRule {
            name: spec.name,
            target_id: target.id,
            direction: spec.direction,
            repositories: spec.repositories,
            tags: spec.tags,
            destination_prefix: prefix,
            replicate_deletes: spec.replicate_deletes,
            created_by: by.actor(),
            tags_regex: spec.tags_regex,
            latest: spec.latest,
            schedule: spec.schedule.trim(),
            next_run_at,
        };
        if self.meta.create_replication_rule(&new).await?.is_none() {
            return Err(RegistryError::Conflict(format!("a replication rule {} exists", spec.name)));
        }
        self.replicator.rules_changed();
        let rule = self.rule(spec.name).await?;
        self.record(by, "replication.rule.create", spec.name, rule_json(&rule)).await;
        Ok(rule)
    }

    pub async fn delete_rule(&self, by: By<'_>, name: &str) -> Result<()> {
        by.require_admin()?;
        if !self.meta.delete_replication_rule(name).await? {
            return Err(RegistryError::NotFound(format!("no replication rule {name}")));
        }
        self.replicator.rules_changed();
        self.record(by, "replication.rule.delete", name, Value::Null).await;
        Ok(())
    }

    /// Runs the rule now: an execution that queues a copy of everything the rule selects.
    /// Returns the execution's id and the number of jobs queued.
    pub async fn run_rule(&self, by: By<'_>, name: &str) -> Result<(i64, usize)> {
        by.require_admin()?;
        let rule = self.rule(name).await?;
        let result = self.replicator.run_rule(&rule, "manual").await;
        let detail = match &result {
            Ok((execution, queued)) => json!({ "execution": execution, "queued": queued }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        self.record(by, "replication.rule.run", name, detail).await;
        result
    }

    /// A rule's jobs (of one execution, if given), newest first (at most `n`).
    pub async fn jobs(&self, by: By<'_>, name: &str, execution: Option<i64>, n: i64) -> Result<Vec<ReplicationJob>> {
        by.require_admin()?;
        let rule = self.rule(name).await?;
        self.meta.replication_jobs(rule.id, execution, n.clamp(1, 1000)).await
    }

    /// A rule's executions, newest first (at most `n`).
    pub async fn executions(&self, by: By<'_>, name: &str, n: i64) -> Result<Vec<ReplicationExecution>> {
        by.require_admin()?;
        let rule = self.rule(name).await?;
        self.meta.replication_executions(rule.id, n.clamp(1, 1000)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_globs() {
        assert!(validate_label("rule", "to-site-b").is_ok());
        for bad in ["", "Site", "a b", "x/y", &"a".repeat(65)] {
            assert!(validate_label("rule", bad).is_err(), "{bad}");
        }
        assert!(validate_glob("repositories", "team/*").is_ok());
        assert!(validate_glob("tags", "v1.*").is_ok());
        for bad in ["", "team/[a]", "a b", "x?"] {
            assert!(validate_glob("tags", bad).is_err(), "{bad}");
        }
    }
}
