//! Garbage collection, retention, quota and pull-time queries. Portable SQL (SQLite and
//! PostgreSQL through sqlx `Any`); everything that walks a table pages through it with a keyset
//! (`> last ORDER BY key LIMIT n`), and every delete re-checks, inside its own short
//! transaction, the condition that made the row garbage — so a push that raced the scan wins.
//! The rule itself is described in `src/gc/mod.rs` and ARCHITECTURE.md.

use sqlx::Row;

use super::placeholders;
use super::{Meta, now};
use crate::error::Result;
use crate::oci::Digest;

/// A mirrored manifest as the cache cap sees it.
#[derive(Debug, Clone)]
pub struct CachedManifest {
    pub repository_id: i64,
    pub repository: String,
    pub digest: String,
    /// Bytes of the blobs it references.
    pub bytes: i64,
    /// When it was last pulled (or cached), Unix seconds.
    pub last_used: i64,
}

/// A retention policy for the repositories matching `pattern` (a glob, `*` any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetentionPolicy {
    pub pattern: String,
    /// Keep the N most recently pushed tags.
    #[serde(default)]
    pub keep_last: Option<i64>,
    /// Keep tags matching this glob (e.g. `v*`); `|` separates several.
    #[serde(default)]
    pub keep_tags: Option<String>,
    /// Only tags pushed more than D days ago may go.
    #[serde(default)]
    pub older_than_days: Option<i64>,
    /// Keep tags whose manifest was pulled within D days.
    #[serde(default)]
    pub keep_pulled_days: Option<i64>,
}

/// A tag with what retention decides on.
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub name: String,
    pub digest: String,
    pub updated_at: i64,
    pub last_pulled_at: Option<i64>,
}

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
    ) -> Result<Option<u64>> {
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
        }
        Ok(Some(size as u64))
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
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run).bind(cutoff);
        for d in digests {
            q = q.bind(d);
        }
        q.execute(&mut *tx).await?;
        let sql = format!(
            "SELECT digest, size FROM blobs WHERE deleting = $1 AND digest IN ({})",
            placeholders(2, digests.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run);
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
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run);
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
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
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

    // ---- pulls ------------------------------------------------------------------------------

    /// Records pull times: `(repository name, manifest digest, time)`.
    pub async fn record_pulls(&self, pulls: &[(String, String, i64)]) -> Result<()> {
        if pulls.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (repo, digest, t) in pulls {
            sqlx::query(
                "UPDATE manifests SET last_pulled_at = $1 WHERE digest = $2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = $3)",
            )
            .bind(t)
            .bind(digest)
            .bind(repo)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- retention --------------------------------------------------------------------------

    pub async fn retention_policies(&self) -> Result<Vec<RetentionPolicy>> {
        let rows = sqlx::query(
            "SELECT pattern, keep_last, keep_tags, older_than_days, keep_pulled_days FROM retention_policies \
             ORDER BY pattern",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| RetentionPolicy {
                pattern: r.get(0),
                keep_last: r.get(1),
                keep_tags: r.get(2),
                older_than_days: r.get(3),
                keep_pulled_days: r.get(4),
            })
            .collect())
    }

    /// Creates or replaces the policy of a pattern.
    pub async fn set_retention_policy(&self, p: &RetentionPolicy) -> Result<()> {
        sqlx::query(
            "INSERT INTO retention_policies (pattern, keep_last, keep_tags, older_than_days, keep_pulled_days, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pattern) DO UPDATE SET \
             keep_last = excluded.keep_last, keep_tags = excluded.keep_tags, \
             older_than_days = excluded.older_than_days, keep_pulled_days = excluded.keep_pulled_days",
        )
        .bind(&p.pattern)
        .bind(p.keep_last)
        .bind(p.keep_tags.clone())
        .bind(p.older_than_days)
        .bind(p.keep_pulled_days)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn delete_retention_policy(&self, pattern: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM retention_policies WHERE pattern = $1").bind(pattern).execute(self.pool()).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Repositories after id `last`: `(id, name)`.
    pub async fn repositories_after(&self, last: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT id, name FROM repositories WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(last)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// A repository's tags, most recently pushed first.
    pub async fn tag_infos(&self, repository_id: i64) -> Result<Vec<TagInfo>> {
        let rows = sqlx::query(
            "SELECT t.name, t.digest, t.updated_at, m.last_pulled_at FROM tags t \
             LEFT JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
             WHERE t.repository_id = $1 ORDER BY t.updated_at DESC, t.name",
        )
        .bind(repository_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| TagInfo { name: r.get(0), digest: r.get(1), updated_at: r.get(2), last_pulled_at: r.get(3) })
            .collect())
    }

    /// Deletes a tag if it still points at `digest` and was not pushed since `updated_at`.
    pub async fn delete_tag_if_unchanged(&self, repository_id: i64, tag: &TagInfo) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("DELETE FROM tags WHERE repository_id = $1 AND name = $2 AND digest = $3 AND updated_at = $4")
                .bind(repository_id)
                .bind(&tag.name)
                .bind(&tag.digest)
                .bind(tag.updated_at)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() > 0 {
            super::bump_tags_version(&mut tx, repository_id).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- quotas -----------------------------------------------------------------------------

    pub async fn quota(&self, namespace: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT max_bytes FROM namespace_quotas WHERE namespace = $1")
            .bind(namespace)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_quota(&self, namespace: &str, max_bytes: Option<i64>) -> Result<()> {
        match max_bytes {
            Some(max) => {
                sqlx::query(
                    "INSERT INTO namespace_quotas (namespace, max_bytes, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (namespace) DO UPDATE SET max_bytes = excluded.max_bytes, \
                     updated_at = excluded.updated_at",
                )
                .bind(namespace)
                .bind(max)
                .bind(now())
                .execute(self.pool())
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM namespace_quotas WHERE namespace = $1")
                    .bind(namespace)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// Bytes stored for a namespace: each distinct blob linked by its repositories once
    /// (`<ns>` itself and `<ns>/...`, found by a range on the repository name index).
    pub async fn namespace_usage(&self, namespace: &str) -> Result<i64> {
        namespace_usage_on(self.pool(), namespace).await
    }

    /// Whether a repository of the namespace links the blob already.
    pub async fn namespace_has_blob(&self, namespace: &str, digest: &str) -> Result<bool> {
        namespace_has_blob_on(self.pool(), namespace, digest).await
    }

    // ---- mirror cache -----------------------------------------------------------------------

    /// Bytes of the distinct blobs linked by repositories under any of `prefixes` (`up/`).
    pub async fn prefix_usage(&self, prefixes: &[String]) -> Result<i64> {
        let mut total = 0;
        // One upstream's blobs are shared between its repositories only (the mirror links
        // within an upstream), so per-prefix sums add up.
        for p in prefixes {
            let ns = p.trim_end_matches('/');
            total += self.namespace_usage(ns).await?;
        }
        Ok(total)
    }

    /// Manifests of repositories under `prefix`, least recently pulled (or cached) first.
    pub async fn least_recently_pulled(&self, prefix: &str, limit: i64) -> Result<Vec<CachedManifest>> {
        let (lower, upper) = below(prefix.trim_end_matches('/'));
        let rows = sqlx::query(
            "SELECT m.repository_id, m.digest, \
             (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM manifest_references r JOIN blobs b ON b.digest = r.child_digest \
              WHERE r.repository_id = m.repository_id AND r.parent_digest = m.digest), \
             COALESCE(m.last_pulled_at, m.created_at), rp.name \
             FROM manifests m JOIN repositories rp ON rp.id = m.repository_id \
             WHERE rp.name > $1 AND rp.name < $2 \
             ORDER BY COALESCE(m.last_pulled_at, m.created_at), m.repository_id, m.digest LIMIT $3",
        )
        .bind(lower)
        .bind(upper)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| CachedManifest {
                repository_id: r.get(0),
                digest: r.get(1),
                bytes: r.get(2),
                last_used: r.get(3),
                repository: r.get(4),
            })
            .collect())
    }

    /// Removes a cached manifest, its tags and reference rows (mirror eviction).
    pub async fn evict_manifest(&self, repository_id: i64, digest: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(repository_id)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        for sql in [
            "DELETE FROM tags WHERE repository_id = $1 AND digest = $2",
            "DELETE FROM manifest_references WHERE repository_id = $1 AND parent_digest = $2",
        ] {
            sqlx::query(sql).bind(repository_id).bind(digest).execute(&mut *tx).await?;
        }
        super::bump_tags_version(&mut tx, repository_id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}

/// The condition under which manifest `m` is unreachable (with `$3` the cutoff time).
const UNREACHABLE: &str = "m.created_at < $3 \
     AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest) \
     AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = m.repository_id \
                     AND r.child_digest = m.digest AND r.kind = 'manifest') \
     AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repository_id = m.repository_id \
                                          AND s.digest = m.subject))";

/// The bounds of the repository names below `namespace/`: a name `n` is in it when
/// `lower < n < upper` (`'0'` is the byte after `'/'`), which an index on names answers as a
/// range. Every query that asks for a namespace's repositories uses these.
pub(super) fn below(namespace: &str) -> (String, String) {
    (format!("{namespace}/"), format!("{namespace}0"))
}

/// Bytes of the distinct blobs linked by the namespace's repositories (on a pool or inside a
/// transaction).
pub(super) async fn namespace_usage_on<'e, E>(e: E, namespace: &str) -> Result<i64>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let (lower, upper) = below(namespace);
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blobs b WHERE b.digest IN \
         (SELECT rb.digest FROM repositories r JOIN repository_blobs rb ON rb.repository_id = r.id \
          WHERE r.name = $1 OR (r.name > $2 AND r.name < $3))",
    )
    .bind(namespace)
    .bind(lower)
    .bind(upper)
    .fetch_one(e)
    .await?;
    Ok(row.get(0))
}

/// Whether a repository of the namespace links the blob (on a pool or inside a transaction).
pub(super) async fn namespace_has_blob_on<'e, E>(e: E, namespace: &str, digest: &str) -> Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let (lower, upper) = below(namespace);
    let row = sqlx::query(
        "SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
         WHERE rb.digest = $1 AND (r.name = $2 OR (r.name > $3 AND r.name < $4)) LIMIT 1",
    )
    .bind(digest)
    .bind(namespace)
    .bind(lower)
    .bind(upper)
    .fetch_optional(e)
    .await?;
    Ok(row.is_some())
}

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
