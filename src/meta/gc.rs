//! Garbage collection queries: the lease that lets one node collect, the reports, expired
//! upload sessions, unreachable manifests, unreferenced links and unlinked blobs. Portable SQL (SQLite and
//! PostgreSQL through sqlx `Any`); everything that walks a table pages through it with a keyset
//! (`> last ORDER BY key LIMIT n`), and every delete re-checks, inside its own short
//! transaction, the condition that made the row garbage — so a push that raced the scan wins.
//! The rule itself is described in `src/gc/mod.rs` and ARCHITECTURE.md.

use sqlx::Row;

use super::{Meta, now};
use super::{in_list_query, placeholders};
use crate::error::Result;
use crate::oci::Digest;

impl Meta {
    // ---- lease ------------------------------------------------------------------------------

    /// Takes (or renews) the lease `name` for `holder` until `ttl_secs` from now; false when
    /// another holder has it and it has not expired.
    pub async fn acquire_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<bool> {
        let t = now();
        let done = sqlx::query(
            "INSERT INTO gc_lease (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE gc_lease.holder = excluded.holder OR gc_lease.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(t + ttl_secs)
        .bind(t)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM gc_lease WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // ---- reports ----------------------------------------------------------------------------

    pub async fn save_gc_report(&self, kind: &str, report: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO gc_reports (kind, report, finished_at) VALUES ($1, $2, $3) \
             ON CONFLICT (kind) DO UPDATE SET report = excluded.report, finished_at = excluded.finished_at",
        )
        .bind(kind)
        .bind(report)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn gc_report(&self, kind: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT report FROM gc_reports WHERE kind = $1").bind(kind).fetch_optional(self.pool()).await?;
        Ok(row.map(|r| r.get(0)))
    }

    // ---- uploads ----------------------------------------------------------------------------

    /// Upload sessions untouched since `cutoff`, after id `last`: `(id, backend state)`.
    pub async fn stale_uploads(&self, cutoff: i64, last: &str, limit: i64) -> Result<Vec<(String, Option<String>)>> {
        let rows = sqlx::query("SELECT id, state FROM uploads WHERE updated_at < $1 AND id > $2 ORDER BY id LIMIT $3")
            .bind(cutoff)
            .bind(last)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Removes an upload session if it is still untouched since `cutoff`.
    pub async fn delete_stale_upload(&self, id: &str, cutoff: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1 AND updated_at < $2")
            .bind(id)
            .bind(cutoff)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- manifests --------------------------------------------------------------------------

    /// Manifests older than `cutoff` that nothing keeps: no tag points at them, no manifest of
    /// their repository lists them (an index), and their subject (if any) is not in the
    /// repository. After `(repository id, digest)` `last`, in that order.
    pub async fn unreachable_manifests(
        &self,
        cutoff: i64,
        last: &(i64, String),
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let sql = format!(
            "SELECT m.repository_id, m.digest FROM manifests m \
             WHERE (m.repository_id > $1 OR (m.repository_id = $1 AND m.digest > $2)) AND {UNREACHABLE} \
             ORDER BY m.repository_id, m.digest LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(last.0)
            .bind(&last.1)
            .bind(cutoff)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Deletes those of `manifests` that are still unreachable (the condition is evaluated
    /// again, in the deleting transaction), with their reference rows. Returns the deleted.
    pub async fn delete_unreachable_manifests(
        &self,
        manifests: &[(i64, String)],
        cutoff: i64,
    ) -> Result<Vec<(i64, String)>> {
        let mut deleted = Vec::new();
        let mut tx = self.begin_write().await?;
        for (repo, digest) in manifests {
            let sql = format!(
                // The conditions are on the deleted row itself, so a PostgreSQL DELETE that waited
                // for a concurrent push re-checks them on the pushed version (whose refreshed
                // `created_at` keeps it); an uncorrelated subquery would keep its stale answer.
                "DELETE FROM manifests AS m WHERE m.repository_id = $1 AND m.digest = $2 AND {UNREACHABLE}"
            );
            let done =
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(repo).bind(digest).bind(cutoff).execute(&mut *tx).await?;
            if done.rows_affected() > 0 {
                sqlx::query("DELETE FROM manifest_references WHERE repository_id = $1 AND parent_digest = $2")
                    .bind(repo)
                    .bind(digest)
                    .execute(&mut *tx)
                    .await?;
                deleted.push((*repo, digest.clone()));
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    // ---- links and blobs --------------------------------------------------------------------

    /// The size of a blob if the repository links it; a link older than `refresh_secs` is
    /// refreshed (a client told the blob exists may reference it in a manifest next).
    pub async fn linked_blob_refreshed(
        &self,
        repository: &str,
        digest: &Digest,
        refresh_secs: i64,
    ) -> Result<Option<(u64, i64)>> {
        let row = sqlx::query(
            "SELECT b.size, rb.created_at, r.id FROM repositories r \
             JOIN repository_blobs rb ON rb.repository_id = r.id \
             JOIN blobs b ON b.digest = rb.digest \
             WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repository)
        .bind(digest.as_str())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (size, linked, id): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let t = now();
        let mut linked_at = linked;
        if linked < t - refresh_secs {
            let done =
                sqlx::query("UPDATE repository_blobs SET created_at = $1 WHERE repository_id = $2 AND digest = $3")
                    .bind(t)
                    .bind(id)
                    .bind(digest.as_str())
                    .execute(self.pool())
                    .await?;
            if done.rows_affected() == 0 {
                return Ok(None); // collected meanwhile
            }
            linked_at = t;
        }
        Ok(Some((size as u64, linked_at)))
    }

    /// Repository↔blob links older than `cutoff` that no manifest of the repository
    /// references, after `last`.
    pub async fn unreferenced_links(
        &self,
        cutoff: i64,
        last: &(i64, String),
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT rb.repository_id, rb.digest FROM repository_blobs rb \
             WHERE (rb.repository_id > $1 OR (rb.repository_id = $1 AND rb.digest > $2)) AND rb.created_at < $3 \
             AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = rb.repository_id \
                             AND r.child_digest = rb.digest) \
             ORDER BY rb.repository_id, rb.digest LIMIT $4",
        )
        .bind(last.0)
        .bind(&last.1)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Deletes those links that are still old and unreferenced; returns how many went. A
    /// manifest push refreshes the links it depends on (`created_at`) in its own transaction,
    /// so whichever commits first wins and the loser sees it.
    pub async fn delete_unreferenced_links(&self, links: &[(i64, String)], cutoff: i64) -> Result<u64> {
        let mut n = 0;
        let mut tx = self.begin_write().await?;
        for (repo, digest) in links {
            let done = sqlx::query(
                "DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2 AND created_at < $3 \
                 AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = $1 \
                                 AND r.child_digest = $2)",
            )
            .bind(repo)
            .bind(digest)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            n += done.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Blobs older than `cutoff` that no repository links, after digest `last`: `(digest, size)`.
    pub async fn unlinked_blobs(&self, cutoff: i64, last: &str, limit: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT b.digest, b.size FROM blobs b WHERE b.digest > $1 AND b.created_at < $2 AND b.deleting IS NULL \
             AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
             ORDER BY b.digest LIMIT $3",
        )
        .bind(last)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// For a dry run: blobs every link of which would go (old and unreferenced), or that have
    /// none, after `last`.
    pub async fn collectable_blobs(&self, cutoff: i64, last: &str, limit: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT b.digest, b.size FROM blobs b WHERE b.digest > $1 AND b.created_at < $2 AND b.deleting IS NULL \
             AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest AND (rb.created_at >= $2 \
                 OR EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = rb.repository_id \
                            AND r.child_digest = rb.digest))) \
             ORDER BY b.digest LIMIT $3",
        )
        .bind(last)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Marks those blobs that are still old and unlinked as being deleted by `run`; returns
    /// the marked ones `(digest, size)`. A push linking a blob refreshes its row first, so the
    /// two cannot both succeed.
    pub async fn mark_blobs_deleting(&self, digests: &[String], cutoff: i64, run: &str) -> Result<Vec<(String, i64)>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let list = placeholders(3, digests.len());
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE blobs SET deleting = $1 WHERE deleting IS NULL AND created_at < $2 AND digest IN ({list}) \
             AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = blobs.digest)"
        );
        let mut q = in_list_query(sql).bind(run).bind(cutoff);
        for d in digests {
            q = q.bind(d);
        }
        q.execute(&mut *tx).await?;
        let sql = format!(
            "SELECT digest, size FROM blobs WHERE deleting = $1 AND digest IN ({})",
            placeholders(2, digests.len())
        );
        let mut q = in_list_query(sql).bind(run);
        for d in digests {
            q = q.bind(d);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Drops the rows of marked blobs whose objects are gone.
    pub async fn delete_marked_blobs(&self, digests: &[String], run: &str) -> Result<u64> {
        if digests.is_empty() {
            return Ok(0);
        }
        let sql = format!("DELETE FROM blobs WHERE deleting = $1 AND digest IN ({})", placeholders(2, digests.len()));
        let mut q = in_list_query(sql).bind(run);
        for d in digests {
            q = q.bind(d);
        }
        Ok(q.execute(self.pool()).await?.rows_affected())
    }

    /// Blob rows still marked `deleting` (digest, size): left by a run that stopped between
    /// marking and removing them (a crash, a restart, an error). Only called under the lease,
    /// when no other run can be working on them.
    pub async fn stale_marked_blobs(&self, limit: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT digest, size FROM blobs WHERE deleting IS NOT NULL ORDER BY digest LIMIT $1")
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect())
    }

    /// Removes the row of a stale mark (whatever run set it).
    pub async fn drop_marked_blob(&self, digest: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM blobs WHERE digest = $1 AND deleting IS NOT NULL")
            .bind(digest)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Clears the mark of a blob whose object could not be deleted (it stays a valid blob).
    pub async fn unmark_blob(&self, digest: &str, run: &str) -> Result<()> {
        sqlx::query("UPDATE blobs SET deleting = NULL WHERE digest = $1 AND deleting = $2")
            .bind(digest)
            .bind(run)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Whether a blob row exists and is being deleted (`Some(true)`), exists (`Some(false)`),
    /// or not (`None`).
    pub async fn blob_deleting(&self, digest: &str) -> Result<Option<bool>> {
        let row = sqlx::query("SELECT deleting FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get::<Option<String>, _>(0).is_some()))
    }

    /// Those of `digests` that have a blob row.
    pub async fn known_blobs(&self, digests: &[String]) -> Result<std::collections::HashSet<String>> {
        self.existing("SELECT digest FROM blobs WHERE digest IN", digests).await
    }

    /// Those of `keys` that `select` (a query ending in `IN`, of one text column) returns.
    async fn existing(&self, select: &'static str, keys: &[String]) -> Result<std::collections::HashSet<String>> {
        if keys.is_empty() {
            return Ok(Default::default());
        }
        let sql = format!("{select} ({})", placeholders(1, keys.len()));
        let mut q = in_list_query(sql);
        for k in keys {
            q = q.bind(k);
        }
        Ok(q.fetch_all(self.pool()).await?.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Claims an object that has no blob row for deletion: inserts a row already marked
    /// `deleting` by `run` (a push of the same blob then waits for it). False if a row exists.
    pub async fn claim_orphan(&self, digest: &str, run: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO blobs (digest, size, created_at, deleting) VALUES ($1, 0, $2, $3) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(now())
        .bind(run)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Those of `ids` that are upload sessions.
    pub async fn known_uploads(&self, ids: &[String]) -> Result<std::collections::HashSet<String>> {
        self.existing("SELECT id FROM uploads WHERE id IN", ids).await
    }
}

/// The condition under which manifest `m` is unreachable (with `$3` the cutoff time).
const UNREACHABLE: &str = "m.created_at < $3 \
     AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest) \
     AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = m.repository_id \
                     AND r.child_digest = m.digest AND r.kind = 'manifest') \
     AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repository_id = m.repository_id \
                                          AND s.digest = m.subject))";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_lease_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::temp_sqlite(dir.path()).await;
        assert!(meta.acquire_lease("gc", "node-a", 300).await.unwrap());
        assert!(!meta.acquire_lease("gc", "node-b", 300).await.unwrap(), "held by a");
        assert!(meta.acquire_lease("gc", "node-a", 300).await.unwrap(), "a renews");
        meta.release_lease("gc", "node-b").await.unwrap(); // not b's to release
        assert!(!meta.acquire_lease("gc", "node-b", 300).await.unwrap());
        meta.release_lease("gc", "node-a").await.unwrap();
        assert!(meta.acquire_lease("gc", "node-b", -1).await.unwrap(), "free after release");
        assert!(meta.acquire_lease("gc", "node-a", 300).await.unwrap(), "b's lease expired");
    }
}
