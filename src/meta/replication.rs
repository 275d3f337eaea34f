//! Replication queries: targets (their secret sealed by the caller), rules, and the job queue —
//! claimed under a lease by one node at a time (`UPDATE … WHERE id IN (SELECT …) AND <still
//! claimable> RETURNING`, as webhook deliveries are), finished with the attempt count as the
//! fence so a node whose lease ran out cannot overwrite a newer attempt's outcome.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Meta, now, now_millis};
use crate::error::Result;

/// Another registry that receives copies.
#[derive(Debug, Clone)]
pub struct ReplicationTarget {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub username: String,
    /// Sealed (`src/seal.rs`); empty when there is none. Never returned by the API.
    pub secret_sealed: String,
    pub ca_file: String,
    pub created_by: String,
    pub created_at: i64,
}

/// Which repositories and tags go to a target, and under which name.
#[derive(Debug, Clone)]
pub struct ReplicationRule {
    pub id: i64,
    pub name: String,
    pub target_id: i64,
    pub target_name: String,
    pub direction: String,
    pub repositories: String,
    pub tags: String,
    pub destination_prefix: String,
    pub replicate_deletes: bool,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: i64,
    /// A regular expression tags must match instead of `tags` (empty: the glob).
    pub tags_regex: String,
    /// Only the latest N tags (0: every tag).
    pub latest: i64,
    /// An interval (`30s`, `10m`, `1h`, `1d`) or a cron expression; empty: no schedule.
    pub schedule: String,
    /// When the schedule runs the rule next, and last ran it (ms).
    pub next_run_at: Option<i64>,
    pub last_run_at: Option<i64>,
}

/// One run of a rule, with how its jobs fared.
#[derive(Debug, Clone)]
pub struct ReplicationExecution {
    pub id: i64,
    pub rule_id: i64,
    /// `manual`, `schedule` or `event`.
    pub trigger: String,
    pub queued: i64,
    /// Why listing the source failed, if it did.
    pub error: Option<String>,
    pub started_at: i64,
    pub pending: i64,
    pub done: i64,
    pub failed: i64,
    pub copied: i64,
    pub skipped: i64,
    pub bytes: i64,
}

impl ReplicationExecution {
    /// `failed` (the source could not be listed, or a job gave up), `running` (jobs still
    /// waiting) or `done`.
    pub fn status(&self) -> &'static str {
        if self.error.is_some() {
            "failed"
        } else if self.pending > 0 {
            "running"
        } else if self.failed > 0 {
            "failed"
        } else {
            "done"
        }
    }
}

/// One copy or delete to carry out, with its outcome.
#[derive(Debug, Clone)]
pub struct ReplicationJob {
    pub id: i64,
    pub rule_id: i64,
    pub action: String,
    pub repository: String,
    pub reference: String,
    pub status: String,
    pub attempts: i64,
    pub copied: i64,
    pub skipped: i64,
    pub bytes: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub execution_id: Option<i64>,
}

/// What a job's attempt came to.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    Done {
        copied: i64,
        skipped: i64,
        bytes: i64,
    },
    /// Failed; retried at `next_attempt_at` (ms), or given up when `None`.
    Failed {
        error: String,
        next_attempt_at: Option<i64>,
    },
}

const TARGET_COLUMNS: &str = "id, name, url, username, secret_sealed, ca_file, created_by, created_at";
const RULE_COLUMNS: &str = "r.id, r.name, r.target_id, t.name, r.direction, r.repositories, r.tags, \
                            r.destination_prefix, r.replicate_deletes, r.enabled, r.created_by, r.created_at, \
                            r.tags_regex, r.latest, r.schedule, r.next_run_at, r.last_run_at";
const JOB_COLUMNS: &str = "id, rule_id, action, repository, reference, status, attempts, copied, skipped, bytes, \
                           last_error, created_at, finished_at, execution_id";

fn target_from(r: &AnyRow) -> ReplicationTarget {
    ReplicationTarget {
        id: r.get(0),
        name: r.get(1),
        url: r.get(2),
        username: r.get(3),
        secret_sealed: r.get(4),
        ca_file: r.get(5),
        created_by: r.get(6),
        created_at: r.get(7),
    }
}

fn rule_from(r: &AnyRow) -> ReplicationRule {
    ReplicationRule {
        id: r.get(0),
        name: r.get(1),
        target_id: r.get(2),
        target_name: r.get(3),
        direction: r.get(4),
        repositories: r.get(5),
        tags: r.get(6),
        destination_prefix: r.get(7),
        replicate_deletes: r.get::<i64, _>(8) != 0,
        enabled: r.get::<i64, _>(9) != 0,
        created_by: r.get(10),
        created_at: r.get(11),
        tags_regex: r.get(12),
        latest: r.get(13),
        schedule: r.get(14),
        next_run_at: r.get(15),
        last_run_at: r.get(16),
    }
}

fn job_from(r: &AnyRow) -> ReplicationJob {
    ReplicationJob {
        id: r.get(0),
        rule_id: r.get(1),
        action: r.get(2),
        repository: r.get(3),
        reference: r.get(4),
        status: r.get(5),
        attempts: r.get(6),
        copied: r.get(7),
        skipped: r.get(8),
        bytes: r.get(9),
        last_error: r.get(10),
        created_at: r.get(11),
        finished_at: r.get(12),
        execution_id: r.get(13),
    }
}

/// A new target, as stored.
pub struct NewTarget<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub username: &'a str,
    pub secret_sealed: &'a str,
    pub ca_file: &'a str,
    pub created_by: &'a str,
}

/// A new rule, as stored.
pub struct NewRule<'a> {
    pub name: &'a str,
    pub target_id: i64,
    pub direction: &'a str,
    pub repositories: &'a str,
    pub tags: &'a str,
    pub destination_prefix: &'a str,
    pub replicate_deletes: bool,
    pub created_by: &'a str,
    pub tags_regex: &'a str,
    pub latest: i64,
    pub schedule: &'a str,
    /// The schedule's first run (ms).
    pub next_run_at: Option<i64>,
}

impl Meta {
    /// Stores a target; `None` when the name is taken.
    pub async fn create_replication_target(&self, t: &NewTarget<'_>) -> Result<Option<i64>> {
        let row = sqlx::query(
            "INSERT INTO replication_targets (name, url, username, secret_sealed, ca_file, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(t.name)
        .bind(t.url)
        .bind(t.username)
        .bind(t.secret_sealed)
        .bind(t.ca_file)
        .bind(t.created_by)
        .bind(now())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn replication_targets(&self) -> Result<Vec<ReplicationTarget>> {
        let sql = format!("SELECT {TARGET_COLUMNS} FROM replication_targets ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(target_from).collect())
    }

    pub async fn replication_target(&self, name: &str) -> Result<Option<ReplicationTarget>> {
        let sql = format!("SELECT {TARGET_COLUMNS} FROM replication_targets WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(name).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(target_from))
    }

    pub async fn replication_target_by_id(&self, id: i64) -> Result<Option<ReplicationTarget>> {
        let sql = format!("SELECT {TARGET_COLUMNS} FROM replication_targets WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(target_from))
    }

    /// Deletes a target with its rules and their jobs; false when there was none.
    pub async fn delete_replication_target(&self, name: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let id: Option<i64> = sqlx::query("SELECT id FROM replication_targets WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        let Some(id) = id else { return Ok(false) };
        sqlx::query(
            "DELETE FROM replication_jobs WHERE rule_id IN (SELECT id FROM replication_rules WHERE target_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM replication_executions WHERE rule_id IN (SELECT id FROM replication_rules WHERE target_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM replication_rules WHERE target_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM replication_targets WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a rule; `None` when the name is taken.
    pub async fn create_replication_rule(&self, r: &NewRule<'_>) -> Result<Option<i64>> {
        let row = sqlx::query(
            "INSERT INTO replication_rules (name, target_id, direction, repositories, tags, destination_prefix, \
             replicate_deletes, enabled, created_by, created_at, tags_regex, latest, schedule, next_run_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(r.name)
        .bind(r.target_id)
        .bind(r.direction)
        .bind(r.repositories)
        .bind(r.tags)
        .bind(r.destination_prefix)
        .bind(r.replicate_deletes as i64)
        .bind(r.created_by)
        .bind(now())
        .bind(r.tags_regex)
        .bind(r.latest)
        .bind(r.schedule)
        .bind(r.next_run_at)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn replication_rules(&self) -> Result<Vec<ReplicationRule>> {
        let sql = format!(
            "SELECT {RULE_COLUMNS} FROM replication_rules r JOIN replication_targets t ON t.id = r.target_id \
             ORDER BY r.name"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(rule_from).collect())
    }

    pub async fn replication_rule(&self, name: &str) -> Result<Option<ReplicationRule>> {
        let sql = format!(
            "SELECT {RULE_COLUMNS} FROM replication_rules r JOIN replication_targets t ON t.id = r.target_id \
             WHERE r.name = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(name).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(rule_from))
    }

    pub async fn replication_rule_by_id(&self, id: i64) -> Result<Option<ReplicationRule>> {
        let sql = format!(
            "SELECT {RULE_COLUMNS} FROM replication_rules r JOIN replication_targets t ON t.id = r.target_id \
             WHERE r.id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(rule_from))
    }

    /// Deletes a rule with its jobs; false when there was none.
    pub async fn delete_replication_rule(&self, name: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM replication_executions WHERE rule_id IN (SELECT id FROM replication_rules WHERE name = $1)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM replication_jobs WHERE rule_id IN (SELECT id FROM replication_rules WHERE name = $1)")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM replication_rules WHERE name = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    /// Queues a job, unless the same one is already waiting (a tag pushed twice in a row is
    /// copied once). Returns whether one was queued.
    pub async fn enqueue_replication_job(
        &self,
        rule_id: i64,
        action: &str,
        repository: &str,
        reference: &str,
        execution: Option<i64>,
    ) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO replication_jobs (rule_id, action, repository, reference, status, next_attempt_at, created_at, \
             execution_id) SELECT $1, $2, $3, $4, 'pending', $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM replication_jobs \
               WHERE rule_id = $1 AND action = $2 AND repository = $3 AND reference = $4 AND status = 'pending' \
                 AND lease_until IS NULL)",
        )
        .bind(rule_id)
        .bind(action)
        .bind(repository)
        .bind(reference)
        .bind(now_millis())
        .bind(now())
        .bind(execution)
        .execute(self.pool())
        .await?;
        Ok(n.rows_affected() > 0)
    }

    /// Claims up to `limit` due jobs for `lease_ms` and counts the attempt.
    pub async fn claim_replication_jobs(&self, lease_ms: i64, limit: i64) -> Result<Vec<ReplicationJob>> {
        let now_ms = now_millis();
        let sql = format!(
            "UPDATE replication_jobs SET lease_until = $1, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM replication_jobs \
                          WHERE status = 'pending' AND next_attempt_at <= $2 \
                            AND (lease_until IS NULL OR lease_until <= $2) \
                          ORDER BY next_attempt_at, id LIMIT $3) \
               AND status = 'pending' AND (lease_until IS NULL OR lease_until <= $2) \
             RETURNING {JOB_COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(job_from).collect())
    }

    /// Extends the lease of a job still held at `attempt` (a long copy); false when lost.
    pub async fn extend_replication_lease(&self, id: i64, attempt: i64, lease_ms: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE replication_jobs SET lease_until = $3 WHERE id = $1 AND attempts = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(attempt)
        .bind(now_millis() + lease_ms)
        .execute(self.pool())
        .await?;
        Ok(n.rows_affected() > 0)
    }

    /// Records an attempt's outcome and releases the lease, fenced by the attempt count.
    pub async fn finish_replication_job(&self, id: i64, attempt: i64, outcome: &JobOutcome) -> Result<bool> {
        const FENCE: &str = " WHERE id = $1 AND attempts = $2 AND status = 'pending'";
        let q = match outcome {
            JobOutcome::Done { copied, skipped, bytes } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE replication_jobs SET status = 'done', lease_until = NULL, copied = $3, skipped = $4, \
                 bytes = $5, finished_at = $6{FENCE}"
            )))
            .bind(id)
            .bind(attempt)
            .bind(*copied)
            .bind(*skipped)
            .bind(*bytes)
            .bind(now()),
            JobOutcome::Failed { error, next_attempt_at: Some(next) } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE replication_jobs SET lease_until = NULL, last_error = $3, next_attempt_at = $4{FENCE}"
            )))
            .bind(id)
            .bind(attempt)
            .bind(error.clone())
            .bind(*next),
            JobOutcome::Failed { error, next_attempt_at: None } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE replication_jobs SET status = 'failed', lease_until = NULL, last_error = $3, \
                 finished_at = $4{FENCE}"
            )))
            .bind(id)
            .bind(attempt)
            .bind(error.clone())
            .bind(now()),
        };
        Ok(q.execute(self.pool()).await?.rows_affected() > 0)
    }

    /// A rule's jobs (of one execution, if given), newest first.
    pub async fn replication_jobs(
        &self,
        rule_id: i64,
        execution: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ReplicationJob>> {
        // Two statements rather than `$2 IS NULL OR …`: PostgreSQL cannot type a NULL parameter.
        let rows = match execution {
            Some(e) => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM replication_jobs WHERE rule_id = $1 AND execution_id = $2 \
                     ORDER BY id DESC LIMIT $3"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(rule_id).bind(e).bind(limit).fetch_all(self.pool()).await?
            }
            None => {
                let sql =
                    format!("SELECT {JOB_COLUMNS} FROM replication_jobs WHERE rule_id = $1 ORDER BY id DESC LIMIT $2");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(rule_id).bind(limit).fetch_all(self.pool()).await?
            }
        };
        Ok(rows.iter().map(job_from).collect())
    }

    /// The tags of a local repository with when each was set (Unix seconds).
    pub async fn tag_times(&self, repository: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT t.name, t.updated_at FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = $1",
        )
        .bind(repository)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Deletes finished jobs and executions older than `before` (ms); the rows deleted.
    pub async fn prune_replication_history(&self, before: i64) -> Result<u64> {
        let jobs = sqlx::query(
            "DELETE FROM replication_jobs WHERE status <> 'pending' AND finished_at IS NOT NULL AND finished_at < $1",
        )
        .bind(before / 1000)
        .execute(self.pool())
        .await?;
        let executions = sqlx::query(
            "DELETE FROM replication_executions WHERE started_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM replication_jobs j WHERE j.execution_id = replication_executions.id)",
        )
        .bind(before)
        .execute(self.pool())
        .await?;
        Ok(jobs.rows_affected() + executions.rows_affected())
    }

    /// Jobs waiting or running, over every rule (a gauge).
    pub async fn pending_replication_jobs(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM replication_jobs WHERE status = 'pending'")
            .fetch_one(self.pool())
            .await?;
        Ok(row.get(0))
    }

    /// Records the start of a run of a rule; its id.
    pub async fn create_replication_execution(&self, rule_id: i64, trigger: &str) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO replication_executions (rule_id, cause, started_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(rule_id)
        .bind(trigger)
        .bind(now_millis())
        .fetch_one(self.pool())
        .await?;
        Ok(row.get(0))
    }

    /// Records how many jobs a run queued, or why it could not list its source.
    pub async fn finish_replication_execution(&self, id: i64, queued: i64, error: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE replication_executions SET queued = $2, error = $3 WHERE id = $1")
            .bind(id)
            .bind(queued)
            .bind(error)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A rule's executions, newest first, with their jobs counted by outcome.
    pub async fn replication_executions(&self, rule_id: i64, limit: i64) -> Result<Vec<ReplicationExecution>> {
        let rows = sqlx::query(
            "SELECT e.id, e.rule_id, e.cause, e.queued, e.error, e.started_at, \
                    CAST(COALESCE(SUM(CASE WHEN j.status = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN j.status = 'done' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN j.status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(j.copied), 0) AS BIGINT), CAST(COALESCE(SUM(j.skipped), 0) AS BIGINT), CAST(COALESCE(SUM(j.bytes), 0) AS BIGINT) \
             FROM replication_executions e LEFT JOIN replication_jobs j ON j.execution_id = e.id \
             WHERE e.rule_id = $1 GROUP BY e.id, e.rule_id, e.cause, e.queued, e.error, e.started_at \
             ORDER BY e.id DESC LIMIT $2",
        )
        .bind(rule_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| ReplicationExecution {
                id: r.get(0),
                rule_id: r.get(1),
                trigger: r.get(2),
                queued: r.get(3),
                error: r.get(4),
                started_at: r.get(5),
                pending: r.get(6),
                done: r.get(7),
                failed: r.get(8),
                copied: r.get(9),
                skipped: r.get(10),
                bytes: r.get(11),
            })
            .collect())
    }

    /// Scheduled rules due at `now_ms`.
    pub async fn due_replication_rules(&self, now_ms: i64) -> Result<Vec<ReplicationRule>> {
        let sql = format!(
            "SELECT {RULE_COLUMNS} FROM replication_rules r JOIN replication_targets t ON t.id = r.target_id \
             WHERE r.enabled = 1 AND r.schedule <> '' AND r.next_run_at IS NOT NULL AND r.next_run_at <= $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(rule_from).collect())
    }

    /// Moves a scheduled rule's next run from `due` to `next`: true for the one node that did
    /// (it runs the rule), false for every other.
    pub async fn claim_scheduled_run(&self, id: i64, due: i64, next: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE replication_rules SET next_run_at = $3, last_run_at = $4 WHERE id = $1 AND next_run_at = $2",
        )
        .bind(id)
        .bind(due)
        .bind(next)
        .bind(now_millis())
        .execute(self.pool())
        .await?;
        Ok(n.rows_affected() > 0)
    }
}
