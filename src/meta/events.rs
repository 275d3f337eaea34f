//! Webhooks, their delivery queue and the audit log in the metadata database. Only storage
//! here: what is emitted and when is `crate::events`.
//!
//! The queue is a table with a row per delivery. A node claims due rows with one `UPDATE ...
//! WHERE id IN (SELECT ... LIMIT n) AND <still claimable> RETURNING ...` that sets a lease: on
//! SQLite writes are serialised, and on PostgreSQL a second node's `UPDATE` re-checks the
//! condition on rows the first one just leased and skips them, so a row is sent by one node at
//! a time (a node that dies mid-send leaves a lease that expires, and another node retries).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Meta, now};
use crate::error::Result;

/// A configured webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: i64,
    /// `None`: every repository; else the repositories of this namespace.
    pub namespace: Option<String>,
    pub url: String,
    /// The HMAC key. Never returned by the API, never logged.
    pub secret: String,
    /// Which events it gets: `push`, `pull`, `delete`, `mirror`.
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: i64,
}

impl Webhook {
    /// Whether this webhook wants `action` on `repository`.
    pub fn wants(&self, action: &str, repository: &str) -> bool {
        self.enabled
            && self.events.iter().any(|e| e == action)
            && self.namespace.as_deref().is_none_or(|ns| repository.split('/').next() == Some(ns))
    }
}

/// One event to one webhook, as queued and (being) delivered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event_id: String,
    pub action: String,
    pub payload: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub status: String,
    pub attempts: i64,
    /// Unix milliseconds.
    pub next_attempt_at: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// One line of the audit log.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    /// A JSON object.
    pub detail: Option<String>,
    pub addr: Option<String>,
}

/// What an attempt to deliver came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered {
        status_code: i64,
    },
    /// Try again at `next_attempt_at` (ms), or give up when it is `None`.
    Failed {
        status_code: Option<i64>,
        error: String,
        next_attempt_at: Option<i64>,
    },
}

const WEBHOOK_COLUMNS: &str = "id, namespace, url, secret, events, enabled, created_by, created_at";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, action, payload, status, attempts, next_attempt_at, \
                                last_status_code, last_error, created_at, finished_at";

fn webhook_from(r: &AnyRow) -> Webhook {
    let events: String = r.get(4);
    Webhook {
        id: r.get(0),
        namespace: r.get(1),
        url: r.get(2),
        secret: r.get(3),
        events: events.split(',').filter(|e| !e.is_empty()).map(String::from).collect(),
        enabled: r.get::<i64, _>(5) != 0,
        created_by: r.get(6),
        created_at: r.get(7),
    }
}

fn delivery_from(r: &AnyRow) -> Delivery {
    Delivery {
        id: r.get(0),
        webhook_id: r.get(1),
        event_id: r.get(2),
        action: r.get(3),
        payload: r.get(4),
        status: r.get(5),
        attempts: r.get(6),
        next_attempt_at: r.get(7),
        last_status_code: r.get(8),
        last_error: r.get(9),
        created_at: r.get(10),
        finished_at: r.get(11),
    }
}

impl Meta {
    // ---- webhooks ---------------------------------------------------------------------------

    pub async fn create_webhook(
        &self,
        namespace: Option<&str>,
        url: &str,
        secret: &str,
        events: &[String],
        created_by: &str,
    ) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO webhooks (namespace, url, secret, events, enabled, created_by, created_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $6) RETURNING id",
        )
        .bind(namespace)
        .bind(url)
        .bind(secret)
        .bind(events.join(","))
        .bind(created_by)
        .bind(now())
        .fetch_one(self.pool())
        .await?;
        Ok(row.get(0))
    }

    /// Every webhook, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(webhook_from).collect())
    }

    pub async fn webhook(&self, id: i64) -> Result<Option<Webhook>> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(webhook_from))
    }

    /// Turns a webhook on or off (off: no new deliveries are queued for it).
    pub async fn set_webhook_enabled(&self, id: i64, enabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE webhooks SET enabled = $2 WHERE id = $1")
            .bind(id)
            .bind(enabled as i64)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a webhook and its delivery history.
    pub async fn delete_webhook(&self, id: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- deliveries -------------------------------------------------------------------------

    /// Queues one event for several webhooks, due at once.
    pub async fn enqueue_deliveries(
        &self,
        webhook_ids: &[i64],
        event_id: &str,
        action: &str,
        payload: &str,
    ) -> Result<()> {
        if webhook_ids.is_empty() {
            return Ok(());
        }
        let (now_s, now_ms) = (now(), now_millis());
        let mut tx = self.begin_write().await?;
        for id in webhook_ids {
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, action, payload, status, attempts, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6)",
            )
            .bind(id)
            .bind(event_id)
            .bind(action)
            .bind(payload)
            .bind(now_ms)
            .bind(now_s)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` due deliveries for `lease_ms` and counts the attempt.
    pub async fn claim_deliveries(&self, lease_ms: i64, limit: i64) -> Result<Vec<Delivery>> {
        let now_ms = now_millis();
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_until = $1, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM webhook_deliveries \
                          WHERE status = 'pending' AND next_attempt_at <= $2 \
                            AND (lease_until IS NULL OR lease_until <= $2) \
                          ORDER BY next_attempt_at LIMIT $3) \
               AND status = 'pending' AND (lease_until IS NULL OR lease_until <= $2) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(delivery_from).collect())
    }

    /// Records what an attempt came to and releases the lease. `attempt` is the delivery's
    /// attempt count as claimed, the fence: when the lease ran out meanwhile and another node
    /// claimed the delivery again (the count moved on), or it is no longer pending, nothing is
    /// written and false is returned, so a late answer never overwrites a newer attempt's.
    pub async fn finish_attempt(&self, id: i64, attempt: i64, outcome: &Outcome) -> Result<bool> {
        Ok(self.finish_attempts(&[(id, attempt, outcome.clone())]).await?[0])
    }

    /// [`Meta::finish_attempt`] for a batch of attempts, in one write transaction (one commit
    /// and one turn of SQLite's write lock for the batch, not one per delivery); each element of
    /// the answer says whether that attempt was recorded.
    pub async fn finish_attempts(&self, attempts: &[(i64, i64, Outcome)]) -> Result<Vec<bool>> {
        const FENCE: &str = " WHERE id = $1 AND attempts = $2 AND status = 'pending'";
        let mut recorded = Vec::with_capacity(attempts.len());
        if attempts.is_empty() {
            return Ok(recorded);
        }
        let mut tx = self.begin_write().await?;
        for (id, attempt, outcome) in attempts {
            let q = match outcome {
                Outcome::Delivered { status_code } => sqlx::query(sqlx::AssertSqlSafe(format!(
                    // last_error stays: the history shows what failed before the delivery went through.
                    "UPDATE webhook_deliveries SET status = 'delivered', lease_until = NULL, last_status_code = $3, \
                     finished_at = $4{FENCE}"
                )))
                .bind(*id)
                .bind(*attempt)
                .bind(*status_code)
                .bind(now()),
                Outcome::Failed { status_code, error, next_attempt_at: Some(next) } => {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE webhook_deliveries SET lease_until = NULL, last_status_code = $3, last_error = $4, \
                         next_attempt_at = $5{FENCE}"
                    )))
                    .bind(*id)
                    .bind(*attempt)
                    .bind(*status_code)
                    .bind(error.clone())
                    .bind(*next)
                }
                Outcome::Failed { status_code, error, next_attempt_at: None } => {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE webhook_deliveries SET status = 'failed', lease_until = NULL, last_status_code = $3, \
                         last_error = $4, finished_at = $5{FENCE}"
                    )))
                    .bind(*id)
                    .bind(*attempt)
                    .bind(*status_code)
                    .bind(error.clone())
                    .bind(now())
                }
            };
            recorded.push(q.execute(&mut *tx).await?.rows_affected() > 0);
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// A webhook's deliveries, newest first, before the id `before`.
    pub async fn deliveries(&self, webhook_id: i64, before: Option<i64>, limit: i64) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(webhook_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(delivery_from).collect())
    }

    /// Forgets finished deliveries older than `secs`.
    pub async fn prune_deliveries(&self, secs: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND finished_at < $1")
            .bind(now() - secs)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    // ---- audit ------------------------------------------------------------------------------

    pub async fn add_audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: Option<&str>,
        addr: Option<&str>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (at, actor, action, target, detail, addr) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(now())
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(detail)
            .bind(addr)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Audit entries, newest first, before the id `before`, optionally of one actor and/or
    /// one action.
    pub async fn audit(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, detail, addr FROM audit_log \
             WHERE id < $1 AND ($2 = '' OR actor = $2) AND ($3 = '' OR action = $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(actor.unwrap_or(""))
        .bind(action.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                detail: r.get(5),
                addr: r.get(6),
            })
            .collect())
    }
}

/// Current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node whose lease ran out while it delivered cannot overwrite the outcome of the node
    /// that claimed the delivery after it.
    #[tokio::test]
    async fn a_late_attempt_does_not_overwrite_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::temp_sqlite(dir.path()).await;
        let hook = meta.create_webhook(None, "http://127.0.0.1:9/", "s", &["push".into()], "admin").await.unwrap();
        meta.enqueue_deliveries(&[hook], "e1", "push", "{}").await.unwrap();
        // Node A claims with a lease that runs out at once; node B claims it again.
        let a = meta.claim_deliveries(-1, 10).await.unwrap();
        let b = meta.claim_deliveries(60_000, 10).await.unwrap();
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!((a[0].attempts, b[0].attempts), (1, 2));
        // B delivers; A's late failure is not recorded.
        assert!(meta.finish_attempt(b[0].id, b[0].attempts, &Outcome::Delivered { status_code: 200 }).await.unwrap());
        let late = Outcome::Failed { status_code: Some(500), error: "late".into(), next_attempt_at: Some(0) };
        assert!(!meta.finish_attempt(a[0].id, a[0].attempts, &late).await.unwrap());
        let d = &meta.deliveries(hook, None, 10).await.unwrap()[0];
        assert_eq!((d.status.as_str(), d.last_status_code, d.last_error.as_deref()), ("delivered", Some(200), None));
    }
}
