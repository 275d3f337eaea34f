//! Accounts, once for every door: users (administrators), one's own password and tokens,
//! organisations, members, visibility, robots and their tokens. Each operation checks who asks
//! (`By`), calls the rules of [`AuthService`] (names, passwords, roles, scopes; which sessions
//! and tokens end with a change) and writes its audit record. `/api/v1` (`api/accounts.rs`), the
//! web UI (`ui/account.rs`) and the CLI (`cli/accounts.rs`) parse their input, call
//! [`AccountAdmin`] and render what it answers.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{By, token_audit};
use crate::auth::{AuthService, Identity};
use crate::error::{RegistryError, Result};
use crate::events::Events;
use crate::meta::{Account, Meta, Namespace, TokenRecord};

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

fn not_found(what: String) -> RegistryError {
    RegistryError::NotFound(what)
}

impl AccountAdmin {
    pub fn new(meta: Meta, auth: Arc<AuthService>, events: Arc<Events>) -> AccountAdmin {
        AccountAdmin { meta, auth, events }
    }

    /// The rules underneath (what an identity may do), for the doors' own questions.
    pub fn auth(&self) -> &Arc<AuthService> {
        &self.auth
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
        let (account, generated) = self.auth.create_user(name, password, admin).await?;
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
        if is_me && (change.disabled == Some(true) || change.admin == Some(false)) {
            return Err(RegistryError::Invalid("you cannot lock yourself out: ask another administrator".into()));
        }
        if let Some(password) = change.password {
            self.auth.set_password(name, password, keep_ui_session).await?;
        }
        let account = self.auth.set_flags(name, change.admin, change.disabled).await?;
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
        self.auth.delete_account(name).await?;
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
        self.auth.set_password(&name, new, keep_ui_session).await?;
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
            (Some(_), None) => {
                self.auth.tokens_of(me.ok_or_else(|| RegistryError::Denied("log in first".into()))?).await
            }
            (Some(_), Some(account)) if me != Some(account) => {
                let robot = self.managed_robot(by, account).await?;
                self.auth.tokens_of(&robot.name).await
            }
            (_, Some(account)) => self.auth.tokens_of(account).await,
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
            self.auth.create_token(account, spec.name, spec.scope, spec.repository_pattern, spec.expires_days).await?;
        self.record(by, "token.create", account, token_audit(&token)).await;
        Ok((token, secret))
    }

    /// Revokes a token: its owner (with a password login), an administrator, the command line.
    pub async fn revoke_token(&self, by: By<'_>, id: i64) -> Result<()> {
        let owner = match by.password_login()? {
            Some(me) if !me.is_admin => Some(me.name.as_str()),
            _ => None,
        };
        self.auth.revoke_token(id, owner).await?;
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
        self.auth.create_org(name).await?;
        if let Some(account) = creator.filter(|a| !a.is_admin) {
            self.auth.set_member(name, &account.name, Some("maintainer")).await?;
        }
        self.record(by, "namespace.create", name, Value::Null).await;
        Ok(())
    }

    /// Makes a namespace public or private: its managers.
    pub async fn set_visibility(&self, by: By<'_>, namespace: &str, public: bool) -> Result<()> {
        self.require_manager(by, namespace).await?;
        self.auth.set_visibility(namespace, public).await?;
        self.record(by, "namespace.visibility", namespace, json!({ "public": public })).await;
        Ok(())
    }

    /// Adds a member with a role, changes its role, or removes it (`role` = `None`): the
    /// namespace's managers.
    pub async fn set_member(&self, by: By<'_>, namespace: &str, account: &str, role: Option<&str>) -> Result<()> {
        self.require_manager(by, namespace).await?;
        self.auth.set_member(namespace, account, role).await?;
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
        let robot = self.auth.create_robot(namespace, name, role).await?;
        self.record(by, "robot.create", &robot.name, json!({ "role": role })).await;
        Ok(robot)
    }

    /// Deletes a robot and its tokens: its namespace's managers.
    pub async fn delete_robot(&self, by: By<'_>, name: &str) -> Result<Account> {
        let robot = self.managed_robot(by, name).await?;
        self.auth.delete_account(&robot.name).await?;
        self.record(by, "robot.delete", &robot.name, Value::Null).await;
        Ok(robot)
    }
}
