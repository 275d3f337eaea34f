//! Read queries and session storage for the web UI (`crate::ui`): repositories with their tag
//! count, last push and size; a repository's tags with size and pushed time; namespace usage
//! (the mirror's cache); login sessions. Portable SQL for SQLite and PostgreSQL, keyset
//! pagination by name.

use sqlx::Row;

use super::{Meta, now};
use crate::error::Result;

/// A repository as the UI lists it.
#[derive(Debug, Clone)]
pub struct RepositorySummary {
    pub name: String,
    pub tag_count: i64,
    /// Latest manifest push or tag change (Unix seconds).
    pub last_push: Option<i64>,
    /// Bytes of the blobs the repository links (config and layers, shared ones counted once).
    pub size: i64,
}

/// A tag with what the repository page shows.
#[derive(Debug, Clone)]
pub struct TagSummary {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    /// When the tag was last set (Unix seconds).
    pub pushed_at: i64,
    /// Config and layer bytes of the image, or of every image of an index.
    pub size: i64,
    /// The manifest bytes (platforms of an index are read from them).
    pub content: Vec<u8>,
}

/// A login session of the UI.
#[derive(Debug, Clone)]
pub struct UiSession {
    pub account_name: String,
    pub csrf: String,
    pub expires_at: i64,
}

/// An OpenID Connect login on its way to the provider and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOidcLogin {
    /// The `state` sent to the provider, which must come back unchanged.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier whose challenge was sent.
    pub pkce_verifier: String,
    /// The `redirect_uri` sent (the code exchange repeats it).
    pub redirect_url: String,
    /// Where the browser goes once logged in.
    pub next: String,
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Meta {
    /// Names of repositories holding at least one manifest, after `after` in byte order, whose
    /// name contains `search` (when not empty) and lies in `namespace` (when not empty).
    pub async fn ui_repository_names(
        &self,
        after: &str,
        search: &str,
        namespace: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        let search_pattern = if search.is_empty() { String::new() } else { format!("%{}%", like_escape(search)) };
        let ns_pattern = format!("{}/%", like_escape(namespace));
        let rows = sqlx::query(
            "SELECT r.name FROM repositories r \
             WHERE r.name > $1 \
               AND ($2 = '' OR r.name LIKE $2 ESCAPE '\\') \
               AND ($3 = '' OR r.name = $3 OR r.name LIKE $4 ESCAPE '\\') \
               AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) \
             ORDER BY r.name LIMIT $5",
        )
        .bind(after)
        .bind(search_pattern)
        .bind(namespace)
        .bind(ns_pattern)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Tag count, last push and size of the named repositories (one page of the list), in
    /// name order.
    pub async fn ui_repository_summaries(&self, names: &[String]) -> Result<Vec<RepositorySummary>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT r.name, \
               (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id), \
               (SELECT MAX(m.created_at) FROM manifests m WHERE m.repository_id = r.id), \
               (SELECT MAX(t.updated_at) FROM tags t WHERE t.repository_id = r.id), \
               (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM repository_blobs rb \
                  JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = r.id) \
             FROM repositories r WHERE r.name IN ({}) ORDER BY r.name",
            super::placeholders(1, names.len())
        );
        // Only numbered placeholders are formatted in.
        let mut q = super::in_list_query(sql);
        for n in names {
            q = q.bind(n);
        }
        let rows = q.fetch_all(self.pool()).await?;
        Ok(rows
            .iter()
            .map(|r| RepositorySummary {
                name: r.get(0),
                tag_count: r.get(1),
                last_push: r.get::<Option<i64>, _>(2).max(r.get::<Option<i64>, _>(3)),
                size: r.get(4),
            })
            .collect())
    }

    /// Up to `limit` tags of a repository after `after`, in byte order.
    pub async fn ui_tags(&self, repository_id: i64, after: &str, limit: i64) -> Result<Vec<TagSummary>> {
        let rows = sqlx::query(
            "SELECT t.name, t.digest, m.media_type, t.updated_at, \
               (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM manifest_references mr \
                  JOIN blobs b ON b.digest = mr.child_digest \
                  WHERE mr.repository_id = t.repository_id AND mr.kind = 'blob' \
                    AND (mr.parent_digest = t.digest OR mr.parent_digest IN \
                      (SELECT c.child_digest FROM manifest_references c WHERE c.repository_id = t.repository_id \
                         AND c.parent_digest = t.digest AND c.kind = 'manifest'))), \
               m.content \
             FROM tags t JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
             WHERE t.repository_id = $1 AND t.name > $2 ORDER BY t.name LIMIT $3",
        )
        .bind(repository_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| TagSummary {
                name: r.get(0),
                digest: r.get(1),
                media_type: r.get(2),
                pushed_at: r.get(3),
                size: r.get(4),
                content: r.get(5),
            })
            .collect())
    }

    /// Tags pointing at a manifest.
    pub async fn ui_tags_of(&self, repository_id: i64, digest: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM tags WHERE repository_id = $1 AND digest = $2 ORDER BY name")
            .bind(repository_id)
            .bind(digest)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Repositories in a namespace and the bytes of the distinct blobs they link.
    pub async fn ui_namespace_usage(&self, namespace: &str) -> Result<(i64, i64)> {
        // The same namespace range as the quota's `namespace_usage` (which gives the bytes), so
        // the page's size and the quota's usage are one figure.
        let (lower, upper) = super::quotas::below(namespace);
        let repos = sqlx::query("SELECT COUNT(*) FROM repositories WHERE name = $1 OR (name > $2 AND name < $3)")
            .bind(namespace)
            .bind(lower)
            .bind(upper)
            .fetch_one(self.pool())
            .await?;
        Ok((repos.get(0), self.namespace_usage(namespace).await?))
    }

    // ---- sessions ---------------------------------------------------------------------------

    /// Stores a session under the hash of its secret.
    pub async fn create_ui_session(&self, id_hash: &str, account_id: i64, csrf: &str, ttl_secs: i64) -> Result<()> {
        let t = now();
        // Expired sessions go when someone logs in: no timer needed, and the table stays small.
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1").bind(t).execute(self.pool()).await?;
        sqlx::query(
            "INSERT INTO ui_sessions (id_hash, account_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(account_id)
        .bind(csrf)
        .bind(t)
        .bind(t + ttl_secs)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The unexpired session with this hash.
    pub async fn ui_session(&self, id_hash: &str) -> Result<Option<UiSession>> {
        let row = sqlx::query(
            "SELECT a.name, s.csrf, s.expires_at FROM ui_sessions s JOIN accounts a ON a.id = s.account_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(now())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| UiSession { account_name: r.get(0), csrf: r.get(1), expires_at: r.get(2) }))
    }

    pub async fn delete_ui_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1").bind(id_hash).execute(self.pool()).await?;
        Ok(())
    }

    /// Stores a login in progress under the hash of the browser's secret, for `ttl_secs`.
    pub async fn create_oidc_login(&self, id_hash: &str, login: &PendingOidcLogin, ttl_secs: i64) -> Result<()> {
        let t = now();
        sqlx::query("DELETE FROM oidc_logins WHERE expires_at <= $1").bind(t).execute(self.pool()).await?;
        sqlx::query(
            "INSERT INTO oidc_logins (id_hash, state, nonce, pkce_verifier, redirect_url, next, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id_hash)
        .bind(&login.state)
        .bind(&login.nonce)
        .bind(&login.pkce_verifier)
        .bind(&login.redirect_url)
        .bind(&login.next)
        .bind(t + ttl_secs)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Takes a login in progress out (it is used once), if it has not expired.
    pub async fn take_oidc_login(&self, id_hash: &str) -> Result<Option<PendingOidcLogin>> {
        let row = sqlx::query(
            "DELETE FROM oidc_logins WHERE id_hash = $1 \
             RETURNING state, nonce, pkce_verifier, redirect_url, next, expires_at",
        )
        .bind(id_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.filter(|r| r.get::<i64, _>(5) > now()).map(|r| PendingOidcLogin {
            state: r.get(0),
            nonce: r.get(1),
            pkce_verifier: r.get(2),
            redirect_url: r.get(3),
            next: r.get(4),
        }))
    }

    /// Binds an account to `external_id` unless it is bound to another one already; whether
    /// it is (now) bound to this one. One statement, so two first logins cannot both win.
    pub async fn bind_account_external_id(&self, account_id: i64, external_id: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE accounts SET external_id = $1 WHERE id = $2 AND (external_id IS NULL OR external_id = $1)",
        )
        .bind(external_id)
        .bind(account_id)
        .execute(self.pool())
        .await?;
        Ok(n.rows_affected() > 0)
    }

    /// Ends every session of an account but `keep` (a password change or reset).
    pub async fn delete_ui_sessions_of(&self, account_id: i64, keep: &str) -> Result<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE account_id = $1 AND id_hash <> $2")
            .bind(account_id)
            .bind(keep)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape("a_b%c\\d"), "a\\_b\\%c\\\\d");
        assert_eq!(like_escape("team/app"), "team/app");
    }
}
