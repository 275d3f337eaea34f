//! Accounts, once for every door: users (administrators), one's own password and tokens,
//! organisations, members, visibility, robots and their tokens. Each operation checks who asks
//! (`By`), calls the rules of [`AuthService`] (names, passwords, roles, scopes; which sessions
//! and tokens end with a change) and writes its audit record. `/api/v1` (`api/accounts.rs`), the
//! web UI (`ui/account.rs`) and the CLI (`cli/accounts.rs`) parse their input, call
//! [`AccountAdmin`] and render what it answers.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{By, token_audit};
use crate::auth::{AuthService, Identity, secrets, validate_account_name};
use crate::error::{RegistryError, Result};
use crate::events::Events;
use crate::meta::{Account, Meta, Namespace, NewAccount, TokenRecord, now};

/// A change to a user, by an administrator.
#[derive(Debug, Default, Clone)]
pub struct UserChange<'a> {
    pub admin: Option<bool>,
    pub disabled: Option<bool>,
    pub password: Option<&'a str>,
}

/// A new personal access token's settings.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    pub name: &'a str,
    /// `pull`, `push` or `delete`.
    pub scope: &'a str,
    /// Repositories it is limited to (a glob such as `team/*`); empty or `None`: all.
    pub repository_pattern: Option<&'a str>,
    pub expires_days: Option<u32>,
}

/// A namespace as its page shows it.
#[derive(Debug, Clone)]
pub struct NamespaceView {
    pub namespace: Namespace,
    /// (account, role) of an organisation's members.
    pub members: Vec<(String, String)>,
    /// Whether the caller manages it (visibility, members, robots).
    pub may_manage: bool,
}

/// Accounts, tokens, robots and namespaces, with the permission check and the audit record of
/// each change.
pub struct AccountAdmin {
    meta: Meta,
    auth: Arc<AuthService>,
    events: Arc<Events>,
}

/// Roles a member or robot can have in a namespace.
pub const ROLES: [&str; 3] = ["reader", "writer", "maintainer"];
/// The expiry of a new token of an account from `origin` when tokens of accounts that sign
/// in through a provider may live `max_days` at most (0: no limit): none asked gets the
/// longest, longer is refused.
fn sso_expiry(origin: &str, asked: Option<u32>, max_days: u64) -> Result<Option<u32>> {
    if origin == "local" || max_days == 0 {
        return Ok(asked);
    }
    match asked {
        None => Ok(Some(max_days.min(u32::MAX as u64) as u32)),
        Some(d) if d as u64 > max_days => Err(RegistryError::Invalid(format!(
            "tokens of accounts that log in through single sign-on expire within {max_days} days here"
        ))),
        Some(d) => Ok(Some(d)),
    }
}

/// Scopes a personal access token can have.
pub const SCOPES: [&str; 3] = ["pull", "push", "delete"];
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

fn not_found(what: String) -> RegistryError {
    RegistryError::NotFound(what)
}

impl AccountAdmin {
    pub fn new(meta: Meta, auth: Arc<AuthService>, events: Arc<Events>) -> AccountAdmin {
        AccountAdmin { meta, auth, events }
    }

    async fn record(&self, by: By<'_>, action: &str, target: &str, detail: Value) {
        self.events.audit(by.actor(), action, Some(target), detail, by.addr()).await;
    }

    /// `by` manages `namespace` (a maintainer, its owner, an administrator, or the command line).
    async fn require_manager(&self, by: By<'_>, namespace: &str) -> Result<()> {
        by.password_login()?;
        match by.identity() {
            Some(who) if !self.auth.may_manage(who, namespace).await? => {
                Err(RegistryError::Denied(format!("you may not manage {namespace}")))
            }
            _ => Ok(()),
        }
    }

    // ---- users ------------------------------------------------------------------------------

    /// Every user: administrators.
    pub async fn users(&self, by: By<'_>) -> Result<Vec<Account>> {
        by.require_admin()?;
        self.meta.accounts(Some("user")).await
    }

    /// Creates a user: administrators. Returns the generated password when none was given.
    pub async fn create_user(
        &self,
        by: By<'_>,
        name: &str,
        password: Option<&str>,
        admin: bool,
    ) -> Result<(Account, Option<String>)> {
        by.require_admin()?;
        let (account, generated) = self.insert_user(name, password, admin).await?;
        self.record(by, "user.create", &account.name, json!({ "admin": admin })).await;
        Ok((account, generated))
    }

    /// Changes a user's password and flags: administrators, who cannot disable themselves or
    /// take their own administrator right away (another administrator must). A new password
    /// ends the account's logins but `keep_ui_session` (the caller's own web UI session).
    pub async fn update_user(
        &self,
        by: By<'_>,
        name: &str,
        change: &UserChange<'_>,
        keep_ui_session: Option<&str>,
    ) -> Result<Account> {
        by.require_admin()?;
        let is_me = by.identity().and_then(Identity::name) == Some(name);
        if change.admin.is_some() && self.account_named(name).await?.origin != "local" {
            return Err(RegistryError::Invalid(format!(
                "the groups of {name} in its directory decide whether it is an administrator"
            )));
        }
        if is_me && (change.disabled == Some(true) || change.admin == Some(false)) {
            return Err(RegistryError::Invalid("you cannot lock yourself out: ask another administrator".into()));
        }
        if let Some(password) = change.password {
            self.store_password(name, password, keep_ui_session).await?;
        }
        let account = self.store_flags(name, change.admin, change.disabled).await?;
        let detail = json!({ "admin": change.admin, "disabled": change.disabled, "password_changed": change.password.is_some() });
        self.record(by, "user.update", name, detail).await;
        Ok(account)
    }

    /// Deletes a user with its tokens and memberships: administrators, not their own account.
    pub async fn delete_user(&self, by: By<'_>, name: &str) -> Result<()> {
        by.require_admin()?;
        if by.identity().and_then(Identity::name) == Some(name) {
            return Err(RegistryError::Invalid("you cannot delete your own account".into()));
        }
        self.remove_account(name).await?;
        self.record(by, "user.delete", name, Value::Null).await;
        Ok(())
    }

    // ---- one's own account ------------------------------------------------------------------

    /// Changes the caller's password after checking the current one (a wrong one is `Denied`,
    /// and counts as a failed login). Ends the account's other logins but `keep_ui_session`.
    pub async fn change_own_password(
        &self,
        by: By<'_>,
        current: &str,
        new: &str,
        keep_ui_session: Option<&str>,
    ) -> Result<()> {
        let account = by.password_login()?.ok_or_else(|| RegistryError::Invalid("name the account".into()))?;
        let name = account.name.clone();
        self.auth.login(&name, current, by.addr().unwrap_or_default()).await.map_err(|e| match e {
            RegistryError::Unauthorized { .. } => RegistryError::Denied("the current password is wrong".into()),
            other => other,
        })?;
        self.store_password(&name, new, keep_ui_session).await?;
        self.record(by, "password.change", &name, Value::Null).await;
        Ok(())
    }

    // ---- tokens -----------------------------------------------------------------------------

    /// Personal access tokens: with `account` `None`, the caller's own (a token may read the
    /// list) or, for the command line, every account's; with `account`, that account's: the
    /// caller's own, a robot the caller manages, or any from the command line.
    pub async fn tokens(&self, by: By<'_>, account: Option<&str>) -> Result<Vec<TokenRecord>> {
        let me = by.identity().and_then(Identity::name);
        match (by.identity(), account) {
            (None, None) => self.meta.tokens(None, Some("personal")).await,
            (Some(_), None) => self.tokens_of(me.ok_or_else(|| RegistryError::Denied("log in first".into()))?).await,
            (Some(_), Some(account)) if me != Some(account) => {
                let robot = self.managed_robot(by, account).await?;
                self.tokens_of(&robot.name).await
            }
            (_, Some(account)) => self.tokens_of(account).await,
        }
    }

    /// Creates a personal access token for `account`: the caller's own account (with a
    /// password login), a robot the caller manages, or any account from the command line. The
    /// secret is returned once.
    pub async fn create_token(&self, by: By<'_>, account: &str, spec: &TokenSpec<'_>) -> Result<(TokenRecord, String)> {
        if let Some(me) = by.password_login()?
            && me.name != account
        {
            let robot = self.robot(account).await?;
            self.require_manager(by, robot.robot_namespace.as_deref().unwrap_or_default()).await?;
        }
        let (token, secret) =
            self.insert_token(account, spec.name, spec.scope, spec.repository_pattern, spec.expires_days).await?;
        self.record(by, "token.create", account, token_audit(&token)).await;
        Ok((token, secret))
    }

    /// Revokes a token: its owner (with a password login), an administrator, the command line.
    pub async fn revoke_token(&self, by: By<'_>, id: i64) -> Result<()> {
        let owner = match by.password_login()? {
            Some(me) if !me.is_admin => Some(me.name.as_str()),
            _ => None,
        };
        self.remove_token(id, owner).await?;
        self.record(by, "token.revoke", &id.to_string(), Value::Null).await;
        Ok(())
    }

    // ---- namespaces -------------------------------------------------------------------------

    /// The namespaces the caller may see (all, for the command line).
    pub async fn namespaces(&self, by: By<'_>) -> Result<Vec<Namespace>> {
        let mut out = Vec::new();
        for ns in self.meta.namespaces().await? {
            let visible = match by.identity() {
                Some(who) => self.auth.may_see_namespace(who, &ns.name, ns.public).await?,
                None => true,
            };
            if visible {
                out.push(ns);
            }
        }
        Ok(out)
    }

    /// A namespace with its members, for whoever may see it (`NotFound` for the rest, so a
    /// private namespace's existence does not show).
    pub async fn namespace(&self, by: By<'_>, name: &str) -> Result<NamespaceView> {
        let hidden = || not_found(format!("no namespace {name}"));
        let namespace = self.meta.namespace(name).await?.ok_or_else(hidden)?;
        let may_manage = match by.identity() {
            Some(who) => self.auth.may_manage(who, name).await?,
            None => true,
        };
        if let Some(who) = by.identity()
            && !may_manage
            && !namespace.public
            && !self.auth.may_pull_in(who, name).await?
        {
            return Err(hidden());
        }
        Ok(NamespaceView { members: self.meta.members(name).await?, namespace, may_manage })
    }

    /// Creates an organisation: any user (who becomes its maintainer), administrators, the
    /// command line; not robots.
    pub async fn create_org(&self, by: By<'_>, name: &str) -> Result<()> {
        let creator = by.password_login()?;
        if creator.is_some_and(|a| a.kind != "user") {
            return Err(RegistryError::Denied("robots cannot create organisations".into()));
        }
        self.insert_org(name).await?;
        if let Some(account) = creator.filter(|a| !a.is_admin) {
            self.store_member(name, &account.name, Some("maintainer")).await?;
        }
        self.record(by, "namespace.create", name, Value::Null).await;
        Ok(())
    }

    /// Makes a namespace public or private: its managers.
    pub async fn set_visibility(&self, by: By<'_>, namespace: &str, public: bool) -> Result<()> {
        self.require_manager(by, namespace).await?;
        self.store_visibility(namespace, public).await?;
        self.record(by, "namespace.visibility", namespace, json!({ "public": public })).await;
        Ok(())
    }

    /// Adds a member with a role, changes its role, or removes it (`role` = `None`): the
    /// namespace's managers.
    pub async fn set_member(&self, by: By<'_>, namespace: &str, account: &str, role: Option<&str>) -> Result<()> {
        self.require_manager(by, namespace).await?;
        self.store_member(namespace, account, role).await?;
        match role {
            Some(role) => self.record(by, "member.set", namespace, json!({ "account": account, "role": role })).await,
            None => self.record(by, "member.remove", namespace, json!({ "account": account })).await,
        }
        Ok(())
    }

    // ---- robots -----------------------------------------------------------------------------

    async fn robot(&self, name: &str) -> Result<Account> {
        let robot = self.meta.account(name).await?.map(|a| a.account).filter(|a| a.kind == "robot");
        robot.ok_or_else(|| not_found(format!("no robot {name}")))
    }

    /// A robot the caller manages.
    pub async fn managed_robot(&self, by: By<'_>, name: &str) -> Result<Account> {
        let robot = self.robot(name).await?;
        self.require_manager(by, robot.robot_namespace.as_deref().unwrap_or_default()).await?;
        Ok(robot)
    }

    /// The robots the caller manages, of one namespace or of all.
    pub async fn robots(&self, by: By<'_>, namespace: Option<&str>) -> Result<Vec<Account>> {
        let mut out = Vec::new();
        for robot in self.meta.accounts(Some("robot")).await? {
            let ns = robot.robot_namespace.as_deref().unwrap_or_default();
            if namespace.is_some_and(|n| n != ns) {
                continue;
            }
            let visible = match by.identity() {
                Some(who) => self.auth.may_manage(who, ns).await?,
                None => true,
            };
            if visible {
                out.push(robot);
            }
        }
        Ok(out)
    }

    /// Creates a robot `<namespace>+<name>` with a role: the namespace's managers.
    pub async fn create_robot(&self, by: By<'_>, namespace: &str, name: &str, role: &str) -> Result<Account> {
        self.require_manager(by, namespace).await?;
        let robot = self.insert_robot(namespace, name, role).await?;
        self.record(by, "robot.create", &robot.name, json!({ "role": role })).await;
        Ok(robot)
    }

    /// Deletes a robot and its tokens: its namespace's managers.
    pub async fn delete_robot(&self, by: By<'_>, name: &str) -> Result<Account> {
        let robot = self.managed_robot(by, name).await?;
        self.remove_account(&robot.name).await?;
        self.record(by, "robot.delete", &robot.name, Value::Null).await;
        Ok(robot)
    }
}

// ---- the stored changes: the rules of names, passwords, roles and scopes, and what ends with a
// change (logins after a new password, UI sessions of a disabled account). The permission checks
// are the callers' above.

impl AccountAdmin {
    async fn account_named(&self, name: &str) -> Result<Account> {
        self.meta
            .account(name)
            .await?
            .map(|a| a.account)
            .ok_or_else(|| RegistryError::NotFound(format!("no account {name:?}")))
    }

    /// Creates a user (and its namespace); returns the generated password when none was given.
    async fn insert_user(&self, name: &str, password: Option<&str>, admin: bool) -> Result<(Account, Option<String>)> {
        validate_account_name(name)?;
        let generated = password.is_none().then(secrets::random_password);
        let password = password.or(generated.as_deref()).unwrap_or_default();
        validate_password(password)?;
        let hash = secrets::hash_password(password)?;
        let new = NewAccount {
            name,
            kind: "user",
            password_hash: Some(&hash),
            is_admin: admin,
            robot_namespace: None,
            robot_role: None,
            origin: "local",
        };
        let account = self
            .meta
            .create_account(&new)
            .await?
            .ok_or_else(|| RegistryError::Conflict(format!("the name {name:?} is taken")))?;
        tracing::info!(account = name, admin, "user created");
        Ok((account, generated))
    }

    /// Sets a user's password. Logins made with the old one end with it, whichever door the
    /// change came through: docker's stored refresh tokens and the account's web UI sessions,
    /// but `keep_ui_session` (the session hash of a user changing their own password in the UI).
    async fn store_password(&self, name: &str, password: &str, keep_ui_session: Option<&str>) -> Result<()> {
        validate_password(password)?;
        let account = self.account_named(name).await?;
        if account.kind != "user" {
            return Err(RegistryError::Invalid("robots log in with tokens only".into()));
        }
        if account.origin != "local" {
            return Err(RegistryError::Invalid(format!(
                "{name} logs in through {}: its password is kept there",
                account.origin
            )));
        }
        self.meta.set_password_hash(account.id, &secrets::hash_password(password)?).await?;
        self.meta.delete_tokens_of_kind(account.id, "refresh").await?;
        self.meta.delete_ui_sessions_of(account.id, keep_ui_session.unwrap_or("")).await?;
        tracing::info!(account = name, "password changed");
        Ok(())
    }

    /// Sets the admin and disabled flags; disabling an account or taking its admin right away
    /// also ends its web UI sessions.
    async fn store_flags(&self, name: &str, admin: Option<bool>, disabled: Option<bool>) -> Result<Account> {
        let account = self.account_named(name).await?;
        self.meta.set_account_flags(account.id, admin, disabled).await?;
        if disabled == Some(true) || admin == Some(false) {
            self.meta.delete_ui_sessions_of(account.id, "").await?;
        }
        tracing::info!(account = name, ?admin, ?disabled, "account changed");
        self.account_named(name).await
    }

    async fn remove_account(&self, name: &str) -> Result<()> {
        let account = self.account_named(name).await?;
        self.meta.delete_account(account.id).await?;
        tracing::info!(account = name, "account deleted");
        Ok(())
    }

    /// Creates a robot `<namespace>+<name>` acting in one namespace with a role.
    async fn insert_robot(&self, namespace: &str, name: &str, role: &str) -> Result<Account> {
        validate_account_name(name)?;
        if !ROLES.contains(&role) {
            return Err(RegistryError::Invalid(format!("role must be one of {ROLES:?}")));
        }
        self.meta
            .namespace(namespace)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no namespace {namespace:?}")))?;
        let full = format!("{namespace}+{name}");
        let new = NewAccount {
            name: &full,
            kind: "robot",
            password_hash: None,
            is_admin: false,
            robot_namespace: Some(namespace),
            robot_role: Some(role),
            origin: "local",
        };
        let account = self
            .meta
            .create_account(&new)
            .await?
            .ok_or_else(|| RegistryError::Conflict(format!("the robot {full:?} exists")))?;
        tracing::info!(robot = %full, role, "robot created");
        Ok(account)
    }

    /// Creates a personal access token; the secret is returned once and never stored.
    async fn insert_token(
        &self,
        account: &str,
        name: &str,
        scope: &str,
        pattern: Option<&str>,
        expires_days: Option<u32>,
    ) -> Result<(TokenRecord, String)> {
        if !SCOPES.contains(&scope) {
            return Err(RegistryError::Invalid(format!("scope must be one of {SCOPES:?}")));
        }
        if name.trim().is_empty() || name.len() > 100 {
            return Err(RegistryError::Invalid("a token needs a name of at most 100 characters".into()));
        }
        let account = self.account_named(account).await?;
        let expires_days = sso_expiry(&account.origin, expires_days, self.auth.config.sso_token_max_days)?;
        let secret = secrets::new_token_secret();
        let expires = expires_days.map(|d| now() + d as i64 * 86_400);
        let id = self
            .meta
            .create_token(
                account.id,
                "personal",
                name,
                &secrets::token_hash(&secret),
                scope,
                pattern.filter(|p| !p.is_empty()),
                expires,
            )
            .await?;
        tracing::info!(account = %account.name, token = id, scope, "personal access token created");
        let record =
            self.meta.token_by_id(id).await?.ok_or_else(|| RegistryError::Internal("token vanished".into()))?;
        Ok((record, secret))
    }

    async fn tokens_of(&self, account: &str) -> Result<Vec<TokenRecord>> {
        let account = self.account_named(account).await?;
        self.meta.tokens(Some(account.id), Some("personal")).await
    }

    /// Revokes a token; `owner`, when given, must own it.
    async fn remove_token(&self, id: i64, owner: Option<&str>) -> Result<()> {
        let token = self.meta.token_by_id(id).await?.filter(|t| owner.is_none_or(|o| o == t.account_name));
        if token.is_none() || !self.meta.delete_token(id).await? {
            return Err(RegistryError::NotFound(format!("no token {id}")));
        }
        tracing::info!(token = id, "token revoked");
        Ok(())
    }

    async fn insert_org(&self, name: &str) -> Result<()> {
        validate_account_name(name)?;
        if !self.meta.create_org(name).await? {
            return Err(RegistryError::Conflict(format!("the name {name:?} is taken")));
        }
        tracing::info!(namespace = name, "organisation created");
        Ok(())
    }

    async fn store_visibility(&self, namespace: &str, public: bool) -> Result<()> {
        if !self.meta.set_namespace_public(namespace, public).await? {
            return Err(RegistryError::NotFound(format!("no namespace {namespace:?}")));
        }
        tracing::info!(namespace, public, "visibility changed");
        Ok(())
    }

    /// Adds a member with a role, changes its role, or removes it (`role` = `None`).
    async fn store_member(&self, namespace: &str, account: &str, role: Option<&str>) -> Result<()> {
        let ns = self
            .meta
            .namespace(namespace)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no namespace {namespace:?}")))?;
        if ns.kind != "org" {
            return Err(RegistryError::Invalid("only organisations have members".into()));
        }
        let member = self.account_named(account).await?;
        if member.kind != "user" {
            return Err(RegistryError::Invalid("members are users; robots get a role when created".into()));
        }
        match role {
            Some(role) if ROLES.contains(&role) => self.meta.set_member(namespace, member.id, role).await?,
            Some(_) => {
                return Err(RegistryError::Invalid(format!("role must be one of {ROLES:?}")));
            }
            None => {
                if self.meta.member_source(namespace, member.id).await?.is_some_and(|s| s != "local") {
                    return Err(RegistryError::Invalid(format!(
                        "{account}'s groups in its directory give this role: change the groups, or set a role here"
                    )));
                }
                if !self.meta.remove_member(namespace, member.id).await? {
                    return Err(RegistryError::NotFound(format!("{account} is not a member of {namespace}")));
                }
            }
        }
        tracing::info!(namespace, account, ?role, "membership changed");
        Ok(())
    }
}

fn validate_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(RegistryError::Invalid(format!("passwords have at least {MIN_PASSWORD_LEN} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod sso_expiry_tests {
    use super::sso_expiry;

    #[test]
    fn tokens_of_sso_accounts_expire_when_asked() {
        assert_eq!(sso_expiry("local", None, 30).unwrap(), None, "local accounts: as asked");
        assert_eq!(sso_expiry("oidc", None, 0).unwrap(), None, "no limit set");
        assert_eq!(sso_expiry("oidc", None, 30).unwrap(), Some(30), "none asked: the longest");
        assert_eq!(sso_expiry("ldap", Some(7), 30).unwrap(), Some(7));
        assert_eq!(sso_expiry("oidc", Some(30), 30).unwrap(), Some(30));
        assert!(sso_expiry("oidc", Some(31), 30).is_err(), "longer is refused");
    }
}
