//! Accounts kept by an identity provider: the directory (LDAP) and OpenID Connect.
//!
//! The directory: a login with a name that has no local account asks
//! the directory; the first success makes the account (origin `ldap`, no password here), and
//! every login sets its administrator right and its namespace roles from its groups
//! (`groups::GroupRules`): roles the groups no longer give go, roles a manager set by hand stay.
//! A checked password is remembered for `remember_secs`, and a token of such an account (a
//! refresh token, a personal access token) re-reads the groups once that time has passed, so a
//! removal from a group shows within it. A directory that does not answer refuses its users'
//! password logins with 503 and lets their tokens work on the roles last read.
//!
//! OpenID Connect: a checked ID token makes the account on its first login (origin `oidc`,
//! bound to the provider's subject, so the provider giving the name to somebody else later
//! opens nothing) and sets its rights from its groups claim at every login. A local or
//! directory account of the same name is never taken over.

use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use serde_json::json;
use sha2::Digest as _;

use super::oidc::{Oidc, ProviderUser};
use super::secrets;
use super::service::{AuthService, burn};
use super::{Identity, validate_account_name};
use crate::error::{RegistryError, Result};
use crate::meta::{Account, NewAccount, now};

fn another_user(name: &str) -> RegistryError {
    tracing::warn!(account = name, "single sign-on refused: the account belongs to another user of the provider");
    RegistryError::Denied(format!(
        "the account {name} belongs to another user of the identity provider; ask an administrator"
    ))
}

/// How long a login may take at the provider, in seconds.
const PENDING_LOGIN_SECS: i64 = 600;

fn key(name: &str, secret: &str) -> [u8; 32] {
    sha2::Sha256::digest(format!("ldap\0{name}\0{secret}").as_bytes()).into()
}

impl AuthService {
    /// How long the directory's answers count (at most a day).
    fn remember_for(&self) -> Duration {
        Duration::from_secs(self.config.ldap.remember_secs.min(86_400))
    }

    /// An audit entry whose actor is the provider (`ldap`, `oidc`).
    async fn audit(&self, origin: &str, action: &str, target: &str, detail: serde_json::Value, addr: &str) {
        if let Some(events) = self.events.get() {
            events.audit(origin, action, Some(target), detail, Some(addr).filter(|a| !a.is_empty())).await;
        }
    }

    /// A password login of a directory user (`found`: the account it made before, if any).
    pub(super) async fn directory_login(
        &self,
        name: &str,
        secret: &str,
        found: Option<Account>,
        addr: &str,
    ) -> Result<Option<Identity>> {
        let Some(directory) = &self.directory else {
            return Ok(None);
        };
        // A disabled account stays as it is: no bind, no change from its groups.
        if validate_account_name(name).is_err() || found.as_ref().is_some_and(|a| a.disabled) {
            burn(secret).await;
            return Ok(None);
        }
        let k = key(name, secret);
        if let Some(account) = &found {
            let hit = self.remembered.passwords.lock().unwrap_or_else(|p| p.into_inner()).get(&k).copied();
            if let Some((id, until)) = hit
                && id == account.id
                && until > Instant::now()
            {
                return Ok(Some(Identity { account: found, limit: None, granted: None }));
            }
        }
        let Some(user) = directory.authenticate(name, secret).await? else {
            return Ok(None);
        };
        let account = self.sync(name, "ldap", &user.groups, found, addr).await?;
        let until = Instant::now() + self.remember_for();
        {
            let mut map = self.remembered.passwords.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 10_000 {
                map.retain(|_, (_, t)| *t > Instant::now());
            }
            map.insert(k, (account.id, until));
        }
        self.remembered.groups.lock().unwrap_or_else(|p| p.into_inner()).insert(account.id, until);
        if account.last_login_at.is_none_or(|t| now() - t > 60) {
            self.meta.touch_login(account.id).await?;
        }
        Ok(Some(Identity { account: Some(account), limit: None, granted: None }))
    }

    /// For a token of a directory's account: its groups read again once the remembered time
    /// is over. `None` when the directory no longer has the user; the account as it was when
    /// the directory does not answer (its tokens keep working on the roles last read).
    pub(super) async fn directory_recheck(&self, account: Account, addr: &str) -> Result<Option<Account>> {
        let Some(directory) = &self.directory else {
            return Ok(Some(account)); // the directory was turned off: what it gave stays
        };
        let fresh = self.remembered.groups.lock().unwrap_or_else(|p| p.into_inner()).get(&account.id).copied();
        if fresh.is_some_and(|until| until > Instant::now()) {
            return Ok(Some(account));
        }
        let user = match directory.lookup(&account.name).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                tracing::info!(account = %account.name, "the directory no longer has this user: its tokens are refused");
                return Ok(None);
            }
            Err(RegistryError::Unreachable(_)) => return Ok(Some(account)),
            Err(e) => return Err(e),
        };
        let name = account.name.clone();
        let account = self.sync(&name, "ldap", &user.groups, Some(account), addr).await?;
        let until = Instant::now() + self.remember_for();
        self.remembered.groups.lock().unwrap_or_else(|p| p.into_inner()).insert(account.id, until);
        Ok(Some(account))
    }

    /// The OpenID Connect provider, when configured.
    pub fn oidc(&self) -> Option<&Oidc> {
        self.oidc.as_ref()
    }

    /// Starts a login through the OpenID Connect provider: the URL to send the browser to, and
    /// the secret for its cookie (the login in progress is stored under its hash, so any node
    /// can finish it).
    pub async fn begin_oidc_login(&self, redirect_url: &str, next: &str) -> Result<(String, String)> {
        let oidc = self.oidc.as_ref().ok_or_else(|| RegistryError::NotFound("single sign-on is off".into()))?;
        let (url, pending) = oidc.begin(redirect_url, next).await?;
        let secret = BASE64URL_NOPAD.encode(&secrets::random_bytes::<32>());
        self.meta.create_oidc_login(&secrets::token_hash(&secret), &pending, PENDING_LOGIN_SECS).await?;
        Ok((url, secret))
    }

    /// Finishes a login when the provider sends the browser back with `state` and `code`:
    /// the login in progress (by the cookie's secret; used once) must have sent that `state`.
    /// Returns the account and where the browser goes next.
    pub async fn finish_oidc_login(
        &self,
        browser_secret: &str,
        state: &str,
        code: &str,
        addr: &str,
    ) -> Result<(Account, String)> {
        let oidc = self.oidc.as_ref().ok_or_else(|| RegistryError::NotFound("single sign-on is off".into()))?;
        let refused = |m: &str| RegistryError::Unauthorized { message: m.to_string(), challenge: None };
        let Some(pending) = self.meta.take_oidc_login(&secrets::token_hash(browser_secret)).await? else {
            return Err(refused("this login has expired or was already used: start again"));
        };
        if !secrets::constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
            tracing::warn!(addr, "single sign-on refused: the state that came back is not the one sent");
            return Err(refused("the login's state does not match: start again"));
        }
        let user = oidc.finish(&pending, code).await?;
        let account = self.oidc_login(&user, addr).await?;
        if let Some(events) = self.events.get() {
            events.login_succeeded(&account.name, "oidc", addr).await;
        }
        Ok((account, pending.next))
    }

    /// A login through the OpenID Connect provider, whose ID token was checked: the account
    /// it stands for, made on the first login, with its rights from the groups.
    pub async fn oidc_login(&self, user: &ProviderUser, addr: &str) -> Result<Account> {
        let found = self.meta.account(&user.name).await?.map(|f| f.account);
        if let Some(account) = &found {
            if account.origin != "oidc" {
                tracing::warn!(account = %user.name, origin = %account.origin, "single sign-on refused: the name belongs to another account here");
                return Err(RegistryError::Denied(format!(
                    "the name {} belongs to an account here that does not log in through the identity provider; \
                     ask an administrator",
                    user.name
                )));
            }
            if !self.meta.bind_account_external_id(account.id, &user.external_id).await? {
                return Err(another_user(&user.name));
            }
            if account.disabled {
                return Err(RegistryError::Denied(format!("the account {} is disabled", user.name)));
            }
        }
        let made = found.is_none();
        let account = self.sync(&user.name, "oidc", &user.groups, found, addr).await?;
        // Made just now: bound here, unless a concurrent first login by another user of the
        // provider bound it first.
        if made && !self.meta.bind_account_external_id(account.id, &user.external_id).await? {
            return Err(another_user(&user.name));
        }
        self.meta.touch_login(account.id).await?;
        Ok(account)
    }

    /// Makes or updates the account of a provider's user (`origin`: `ldap` or `oidc`) from its
    /// groups; returns it as stored.
    async fn sync(
        &self,
        name: &str,
        origin: &'static str,
        groups: &[String],
        found: Option<Account>,
        addr: &str,
    ) -> Result<Account> {
        let granted = match (origin, &self.oidc) {
            ("oidc", Some(oidc)) => oidc.rules().grant(groups),
            _ => self.group_rules.grant(groups),
        };
        let account = match found {
            Some(account) => account,
            None => {
                let new = NewAccount {
                    name,
                    kind: "user",
                    password_hash: None,
                    is_admin: granted.admin,
                    robot_namespace: None,
                    robot_role: None,
                    origin,
                };
                let Some(account) = self.meta.create_account(&new).await? else {
                    return Err(RegistryError::Denied(format!(
                        "the name {name} is taken here by an organisation: ask an administrator"
                    )));
                };
                tracing::info!(account = name, origin, "account made by a login through the identity provider");
                self.audit(origin, "user.create", name, json!({ "origin": origin, "admin": granted.admin }), addr)
                    .await;
                account
            }
        };
        if account.is_admin != granted.admin {
            self.meta.set_account_flags(account.id, Some(granted.admin), None).await?;
            if !granted.admin {
                self.meta.delete_ui_sessions_of(account.id, "").await?;
            }
            self.audit(origin, "user.update", name, json!({ "admin": granted.admin, "by_groups": true }), addr).await;
        }
        let had = self.meta.provider_memberships(account.id, origin).await?;
        for (namespace, role) in &granted.roles {
            match self.meta.namespace(namespace).await? {
                Some(ns) if ns.kind != "org" => continue, // a user's own namespace has no members
                Some(_) => {}
                None => {
                    if self.meta.create_org(namespace).await? {
                        self.audit(origin, "namespace.create", namespace, json!({ "by_groups": true }), addr).await;
                    }
                }
            }
            if self.meta.set_provider_member(namespace, account.id, role, origin).await? {
                self.audit(
                    origin,
                    "member.set",
                    namespace,
                    json!({ "account": name, "role": role, "by_groups": true }),
                    addr,
                )
                .await;
            }
        }
        for (namespace, _) in had.iter().filter(|(ns, _)| !granted.roles.contains_key(ns)) {
            if self.meta.remove_provider_member(namespace, account.id, origin).await? {
                self.audit(origin, "member.remove", namespace, json!({ "account": name, "by_groups": true }), addr)
                    .await;
            }
        }
        Ok(self.meta.account(name).await?.map(|a| a.account).unwrap_or(account))
    }
}
