//! Retention queries: the policies, the tags a policy decides on, and the pull times it reads
//! (written in batches by `crate::registry::PullTracker`).

use sqlx::Row;

use super::{Meta, now};
use crate::error::Result;

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
}
