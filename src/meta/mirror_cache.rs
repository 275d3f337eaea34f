//! The pull-through mirror's cache as its size cap sees it: bytes per upstream, manifests least
//! recently pulled first, eviction.

use sqlx::Row;

use super::Meta;
use crate::error::Result;

use super::quotas::below;

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

impl Meta {
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
