//! Accounts kept by the directory (LDAP): a login with a name that has no local account asks
//! the directory; the first success makes the account (origin `ldap`, no password here), and
//! every login sets its administrator right and its namespace roles from its groups
//! (`groups::GroupRules`): roles the groups no longer give go, roles a manager set by hand stay.
//! A checked password is remembered for `remember_secs`, and a token of such an account (a
//! refresh token, a personal access token) re-reads the groups once that time has passed, so a
//! removal from a group shows within it. A directory that does not answer refuses its users'
//! password logins with 503 and lets their tokens work on the roles last read.

use std::time::{Duration, Instant};

use serde_json::json;
use sha2::Digest as _;

use super::directory::DirectoryUser;
use super::service::{AuthService, burn};
use super::{Identity, validate_account_name};
use crate::error::{RegistryError, Result};
use crate::meta::{Account, NewAccount, now};

/// The audit log's actor for changes the directory's groups make.
const ACTOR: &str = "ldap";

fn key(name: &str, secret: &str) -> [u8; 32] {
    sha2::Sha256::digest(format!("ldap\0{name}\0{secret}").as_bytes()).into()
}

impl AuthService {
    /// How long the directory's answers count (at most a day).
    fn remember_for(&self) -> Duration {
        Duration::from_secs(self.config.ldap.remember_secs.min(86_400))
    }

    async fn audit(&self, action: &str, target: &str, detail: serde_json::Value, addr: &str) {
        if let Some(events) = self.events.get() {
            events.audit(ACTOR, action, Some(target), detail, Some(addr).filter(|a| !a.is_empty())).await;
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
        let account = self.sync(name, &user, found, addr).await?;
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
        let account = self.sync(&name, &user, Some(account), addr).await?;
        let until = Instant::now() + self.remember_for();
        self.remembered.groups.lock().unwrap_or_else(|p| p.into_inner()).insert(account.id, until);
        Ok(Some(account))
    }

    /// Makes or updates the account of a directory user from its groups; returns it as stored.
    async fn sync(&self, name: &str, user: &DirectoryUser, found: Option<Account>, addr: &str) -> Result<Account> {
        let granted = self.group_rules.grant(&user.groups);
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
                    origin: "ldap",
                };
                let Some(account) = self.meta.create_account(&new).await? else {
                    return Err(RegistryError::Denied(format!(
                        "the name {name} is taken here by an organisation: ask an administrator"
                    )));
                };
                tracing::info!(account = name, dn = %user.dn, "account made from the directory");
                self.audit("user.create", name, json!({ "origin": "ldap", "admin": granted.admin }), addr).await;
                account
            }
        };
        if account.is_admin != granted.admin {
            self.meta.set_account_flags(account.id, Some(granted.admin), None).await?;
            if !granted.admin {
                self.meta.delete_ui_sessions_of(account.id, "").await?;
            }
            self.audit("user.update", name, json!({ "admin": granted.admin, "by_groups": true }), addr).await;
        }
        let had = self.meta.provider_memberships(account.id, ACTOR).await?;
        for (namespace, role) in &granted.roles {
            match self.meta.namespace(namespace).await? {
                Some(ns) if ns.kind != "org" => continue, // a user's own namespace has no members
                Some(_) => {}
                None => {
                    if self.meta.create_org(namespace).await? {
                        self.audit("namespace.create", namespace, json!({ "by_groups": true }), addr).await;
                    }
                }
            }
            if self.meta.set_provider_member(namespace, account.id, role, ACTOR).await? {
                self.audit("member.set", namespace, json!({ "account": name, "role": role, "by_groups": true }), addr)
                    .await;
            }
        }
        for (namespace, _) in had.iter().filter(|(ns, _)| !granted.roles.contains_key(ns)) {
            if self.meta.remove_provider_member(namespace, account.id, ACTOR).await? {
                self.audit("member.remove", namespace, json!({ "account": name, "by_groups": true }), addr).await;
            }
        }
        Ok(self.meta.account(name).await?.map(|a| a.account).unwrap_or(account))
    }
}
