//! Namespace quotas and usage, and the name range of a namespace's repositories ([`below`])
//! that every per-namespace query uses.

use sqlx::Row;

use super::{Meta, now};
use crate::error::Result;

impl Meta {
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
}

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
