//! Accounts, namespaces, members, access tokens and the token signing key in the metadata
//! database. Only storage here: the rules (who may do what) are in `crate::auth`.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Meta, now};
use crate::error::{RegistryError, Result};

/// A user or robot account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: String,
    /// `user` or `robot`.
    pub kind: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub robot_namespace: Option<String>,
    pub robot_role: Option<String>,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    /// Where the account comes from: `local` (a password here, or a robot), `ldap` or `oidc`
    /// (made by a login through the directory or the identity provider; no password here).
    pub origin: String,
}

/// An account with its password hash, for verification only.
#[derive(Debug, Clone)]
pub struct AccountSecret {
    pub account: Account,
    pub password_hash: Option<String>,
}

/// A namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    /// `user` or `org`.
    pub kind: String,
    pub public: bool,
    pub created_at: i64,
}

/// A stored access token (the secret itself is never stored).
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: i64,
    pub account_id: i64,
    pub account_name: String,
    /// `personal` or `refresh`.
    pub kind: String,
    pub name: String,
    pub scope: String,
    pub repository_pattern: Option<String>,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
}

const ACCOUNT_COLUMNS: &str = "a.id, a.name, a.kind, a.is_admin, a.disabled, a.robot_namespace, \
                               a.robot_role, a.created_at, a.last_login_at, a.password_hash, a.origin";

fn account_from(r: &AnyRow) -> AccountSecret {
    AccountSecret {
        account: Account {
            id: r.get(0),
            name: r.get(1),
            kind: r.get(2),
            is_admin: r.get::<i64, _>(3) != 0,
            disabled: r.get::<i64, _>(4) != 0,
            robot_namespace: r.get(5),
            robot_role: r.get(6),
            created_at: r.get(7),
            last_login_at: r.get(8),
            origin: r.get(10),
        },
        password_hash: r.get(9),
    }
}

const TOKEN_COLUMNS: &str = "t.id, t.account_id, a.name, t.kind, t.name, t.scope, t.repository_pattern, \
                             t.expires_at, t.last_used_at, t.created_at";

fn token_from(r: &AnyRow) -> TokenRecord {
    TokenRecord {
        id: r.get(0),
        account_id: r.get(1),
        account_name: r.get(2),
        kind: r.get(3),
        name: r.get(4),
        scope: r.get(5),
        repository_pattern: r.get(6),
        expires_at: r.get(7),
        last_used_at: r.get(8),
        created_at: r.get(9),
    }
}

fn namespace_from(r: &AnyRow) -> Namespace {
    Namespace { name: r.get(0), kind: r.get(1), public: r.get::<i64, _>(2) != 0, created_at: r.get(3) }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A new account to insert.
pub struct NewAccount<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub password_hash: Option<&'a str>,
    pub is_admin: bool,
    pub robot_namespace: Option<&'a str>,
    pub robot_role: Option<&'a str>,
    /// `local`, `ldap` or `oidc`.
    pub origin: &'a str,
}

impl Meta {
    pub async fn count_accounts(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM accounts").fetch_one(self.pool()).await?;
        Ok(row.get(0))
    }

    /// Inserts an account (and, for users, its own namespace). Returns `None` when the name is
    /// taken by an account or a namespace.
    pub async fn create_account(&self, new: &NewAccount<'_>) -> Result<Option<Account>> {
        let mut tx = self.begin_write().await?;
        let taken =
            sqlx::query("SELECT 1 FROM accounts WHERE name = $1 UNION ALL SELECT 1 FROM namespaces WHERE name = $1")
                .bind(new.name)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let t = now();
        let inserted = sqlx::query(
            "INSERT INTO accounts (name, kind, password_hash, is_admin, disabled, robot_namespace, robot_role, created_at, origin) \
             VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8)",
        )
        .bind(new.name)
        .bind(new.kind)
        .bind(new.password_hash)
        .bind(new.is_admin as i64)
        .bind(new.robot_namespace)
        .bind(new.robot_role)
        .bind(t)
        .bind(new.origin)
        .execute(&mut *tx)
        .await;
        // Two creations racing past the check above (PostgreSQL, read committed): one loses here.
        if let Err(e) = &inserted
            && is_unique_violation(e)
        {
            return Ok(None);
        }
        inserted?;
        if new.kind == "user" {
            sqlx::query("INSERT INTO namespaces (name, kind, public, created_at) VALUES ($1, 'user', 0, $2)")
                .bind(new.name)
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(self.account(new.name).await?.map(|a| a.account))
    }

    /// An account with its password hash.
    pub async fn account(&self, name: &str) -> Result<Option<AccountSecret>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(name).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(account_from))
    }

    pub async fn accounts(&self, kind: Option<&str>) -> Result<Vec<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE ($1 = '' OR a.kind = $1) ORDER BY a.name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(kind.unwrap_or("")).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(|r| account_from(r).account).collect())
    }

    pub async fn set_password_hash(&self, account_id: i64, hash: &str) -> Result<()> {
        sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(account_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_account_flags(
        &self,
        account_id: i64,
        is_admin: Option<bool>,
        disabled: Option<bool>,
    ) -> Result<()> {
        if let Some(a) = is_admin {
            sqlx::query("UPDATE accounts SET is_admin = $1 WHERE id = $2")
                .bind(a as i64)
                .bind(account_id)
                .execute(self.pool())
                .await?;
        }
        if let Some(d) = disabled {
            sqlx::query("UPDATE accounts SET disabled = $1 WHERE id = $2")
                .bind(d as i64)
                .bind(account_id)
                .execute(self.pool())
                .await?;
        }
        self.identities_changed();
        Ok(())
    }

    pub async fn touch_login(&self, account_id: i64) -> Result<()> {
        sqlx::query("UPDATE accounts SET last_login_at = $1 WHERE id = $2")
            .bind(now())
            .bind(account_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes an account, its tokens and memberships. A user's namespace stays (with its
    /// repositories), so a later account of the same name cannot inherit them.
    pub async fn delete_account(&self, account_id: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for sql in
            ["DELETE FROM access_tokens WHERE account_id = $1", "DELETE FROM namespace_members WHERE account_id = $1"]
        {
            sqlx::query(sql).bind(account_id).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM accounts WHERE id = $1").bind(account_id).execute(&mut *tx).await?;
        tx.commit().await?;
        self.identities_changed();
        Ok(())
    }

    // ---- namespaces -------------------------------------------------------------------------

    /// Creates an organisation namespace; false when the name is taken.
    pub async fn create_org(&self, name: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let taken =
            sqlx::query("SELECT 1 FROM accounts WHERE name = $1 UNION ALL SELECT 1 FROM namespaces WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() {
            return Ok(false);
        }
        let inserted = sqlx::query("INSERT INTO namespaces (name, kind, public, created_at) VALUES ($1, 'org', 0, $2)")
            .bind(name)
            .bind(now())
            .execute(&mut *tx)
            .await;
        if let Err(e) = &inserted
            && is_unique_violation(e)
        {
            return Ok(false);
        }
        inserted?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn namespace(&self, name: &str) -> Result<Option<Namespace>> {
        let row = sqlx::query("SELECT name, kind, public, created_at FROM namespaces WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(namespace_from))
    }

    pub async fn namespaces(&self) -> Result<Vec<Namespace>> {
        let rows = sqlx::query("SELECT name, kind, public, created_at FROM namespaces ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(namespace_from).collect())
    }

    pub async fn set_namespace_public(&self, name: &str, public: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE namespaces SET public = $1 WHERE name = $2")
            .bind(public as i64)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_namespace(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM namespace_members WHERE namespace = $1").bind(name).execute(self.pool()).await?;
        sqlx::query("DELETE FROM namespaces WHERE name = $1").bind(name).execute(self.pool()).await?;
        Ok(())
    }

    /// Whether a namespace is public, and the role of `account_id` in it (if any); `None` when
    /// the namespace does not exist.
    pub async fn namespace_access(
        &self,
        namespace: &str,
        account_id: Option<i64>,
    ) -> Result<Option<(bool, Option<String>)>> {
        let row = sqlx::query(
            "SELECT n.public, m.role FROM namespaces n \
             LEFT JOIN namespace_members m ON m.namespace = n.name AND m.account_id = $2 \
             WHERE n.name = $1",
        )
        .bind(namespace)
        .bind(account_id.unwrap_or(-1))
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0) != 0, r.get::<Option<String>, _>(1))))
    }

    /// Adds or changes a member (set by a manager: `local`, which no provider changes).
    pub async fn set_member(&self, namespace: &str, account_id: i64, role: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO namespace_members (namespace, account_id, role, source) VALUES ($1, $2, $3, 'local') \
             ON CONFLICT (namespace, account_id) DO UPDATE SET role = excluded.role, source = 'local'",
        )
        .bind(namespace)
        .bind(account_id)
        .bind(role)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The memberships a provider (`ldap`, `oidc`) set for an account: (namespace, role).
    pub async fn provider_memberships(&self, account_id: i64, source: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT namespace, role FROM namespace_members WHERE account_id = $1 AND source = $2 ORDER BY namespace",
        )
        .bind(account_id)
        .bind(source)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Sets a membership as a provider's, unless a manager set one in that namespace (a
    /// `local` membership stays as it is). Returns whether a row changed.
    pub async fn set_provider_member(
        &self,
        namespace: &str,
        account_id: i64,
        role: &str,
        source: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO namespace_members (namespace, account_id, role, source) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (namespace, account_id) DO UPDATE SET role = excluded.role \
             WHERE namespace_members.source = excluded.source AND namespace_members.role <> excluded.role",
        )
        .bind(namespace)
        .bind(account_id)
        .bind(role)
        .bind(source)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Who set a membership (`local`, `ldap`, `oidc`), if there is one.
    pub async fn member_source(&self, namespace: &str, account_id: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT source FROM namespace_members WHERE namespace = $1 AND account_id = $2")
            .bind(namespace)
            .bind(account_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Removes a membership a provider set.
    pub async fn remove_provider_member(&self, namespace: &str, account_id: i64, source: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM namespace_members WHERE namespace = $1 AND account_id = $2 AND source = $3")
                .bind(namespace)
                .bind(account_id)
                .bind(source)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn remove_member(&self, namespace: &str, account_id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM namespace_members WHERE namespace = $1 AND account_id = $2")
            .bind(namespace)
            .bind(account_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Members of a namespace: (account name, role).
    pub async fn members(&self, namespace: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT a.name, m.role FROM namespace_members m JOIN accounts a ON a.id = m.account_id \
             WHERE m.namespace = $1 ORDER BY a.name",
        )
        .bind(namespace)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    // ---- tokens -----------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub async fn create_token(
        &self,
        account_id: i64,
        kind: &str,
        name: &str,
        token_hash: &str,
        scope: &str,
        repository_pattern: Option<&str>,
        expires_at: Option<i64>,
    ) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO access_tokens (account_id, kind, name, token_hash, scope, repository_pattern, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(account_id)
        .bind(kind)
        .bind(name)
        .bind(token_hash)
        .bind(scope)
        .bind(repository_pattern)
        .bind(expires_at)
        .bind(now())
        .fetch_one(self.pool())
        .await?;
        Ok(row.get(0))
    }

    /// A token by the hash of its secret.
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens t JOIN accounts a ON a.id = t.account_id WHERE t.token_hash = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(token_hash).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(token_from))
    }

    pub async fn token_by_id(&self, id: i64) -> Result<Option<TokenRecord>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens t JOIN accounts a ON a.id = t.account_id WHERE t.id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(token_from))
    }

    /// Tokens of an account (personal ones, or all kinds).
    pub async fn tokens(&self, account_id: Option<i64>, kind: Option<&str>) -> Result<Vec<TokenRecord>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens t JOIN accounts a ON a.id = t.account_id \
             WHERE ($1 < 0 OR t.account_id = $1) AND ($2 = '' OR t.kind = $2) ORDER BY t.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id.unwrap_or(-1))
            .bind(kind.unwrap_or(""))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(token_from).collect())
    }

    pub async fn touch_token(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE access_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes every token of one kind of an account (`refresh` when its password changes).
    pub async fn delete_tokens_of_kind(&self, account_id: i64, kind: &str) -> Result<()> {
        sqlx::query("DELETE FROM access_tokens WHERE account_id = $1 AND kind = $2")
            .bind(account_id)
            .bind(kind)
            .execute(self.pool())
            .await?;
        self.identities_changed();
        Ok(())
    }

    pub async fn delete_token(&self, id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM access_tokens WHERE id = $1").bind(id).execute(self.pool()).await?;
        self.identities_changed();
        Ok(done.rows_affected() > 0)
    }

    // ---- signing key ------------------------------------------------------------------------

    /// The registry token signing key (kid, base64 PKCS#8), created with `make` by the first
    /// node that needs it; every node then reads the same one.
    pub async fn signing_key(&self, make: impl FnOnce() -> Result<(String, String)>) -> Result<(String, String)> {
        let read = || sqlx::query("SELECT kid, private_key FROM signing_keys WHERE id = 'registry-token'");
        if let Some(r) = read().fetch_optional(self.pool()).await? {
            return Ok((r.get(0), r.get(1)));
        }
        let (kid, key) = make()?;
        sqlx::query(
            "INSERT INTO signing_keys (id, kid, private_key, created_at) VALUES ('registry-token', $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&kid)
        .bind(&key)
        .bind(now())
        .execute(self.pool())
        .await?;
        let r =
            read().fetch_one(self.pool()).await.map_err(|e| RegistryError::internal("reading the signing key", e))?;
        Ok((r.get(0), r.get(1)))
    }
}
