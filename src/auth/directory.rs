//! The directory (LDAP) for logins of accounts it keeps: the service account finds the user by
//! name (the name escaped as RFC 4515 says, so it cannot rewrite the filter), a bind as the
//! user's DN checks the password, and the user's groups are read (a group search, or the
//! user's `memberOf`). Each check is a connection of its own (plain, StartTLS or `ldaps://`)
//! with a timeout; a directory that does not answer is `Unreachable` (503), a wrong password or
//! an unknown user `None`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};

use crate::config::LdapConfig;
use crate::error::{RegistryError, Result};

/// A user the directory vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub dn: String,
    /// Group names (or DNs, from `memberOf`).
    pub groups: Vec<String>,
}

/// What the directory confirmed lately (kept by `AuthService`, used by `provider.rs`): hash of
/// (name, password) → (account id, until), and account id → until (its groups were read).
#[derive(Default)]
pub struct Remembered {
    pub(super) passwords: Mutex<HashMap<[u8; 32], (i64, Instant)>>,
    pub(super) groups: Mutex<HashMap<i64, Instant>>,
}

/// The LDAP result code of a wrong password.
const INVALID_CREDENTIALS: u32 = 49;

pub struct Directory {
    config: LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> RegistryError {
    tracing::warn!(error = %e, "the directory: {what}");
    RegistryError::Unreachable("the directory (LDAP) does not answer; try again later".into())
}

/// A TLS client configuration trusting the certificates of a PEM file.
fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad =
        |e: &dyn std::fmt::Display| RegistryError::Invalid(format!("auth.ldap.ca_file {}: {e}", ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Directory {
    /// The directory of the configuration; `None` when no `url` is set.
    pub fn new(config: &LdapConfig) -> Result<Option<Directory>> {
        if config.url.is_empty() {
            return Ok(None);
        }
        if !(config.url.starts_with("ldap://") || config.url.starts_with("ldaps://")) {
            return Err(RegistryError::Invalid("auth.ldap.url is ldap://host[:port] or ldaps://host[:port]".into()));
        }
        if config.user_base.is_empty() || !config.user_filter.contains("{username}") {
            return Err(RegistryError::Invalid(
                "auth.ldap needs user_base and a user_filter with {username}, e.g. (uid={username})".into(),
            ));
        }
        let tls = config.ca_file.as_deref().map(tls_config).transpose()?;
        Ok(Some(Directory { config: config.clone(), tls }))
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs.max(1))
    }

    async fn connect(&self) -> Result<Ldap> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.timeout()).set_starttls(self.config.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) =
            LdapConnAsync::with_settings(settings, &self.config.url).await.map_err(|e| unreachable("connecting", e))?;
        ldap3::drive!(conn);
        ldap.with_timeout(self.timeout());
        Ok(ldap)
    }

    /// Binds as the service account (anonymous without one).
    async fn bind_service(&self, ldap: &mut Ldap) -> Result<()> {
        if self.config.bind_dn.is_empty() {
            return Ok(());
        }
        ldap.with_timeout(self.timeout());
        ldap.simple_bind(&self.config.bind_dn, &self.config.bind_password)
            .await
            .and_then(|r| r.success())
            .map_err(|e| unreachable("binding as the service account", e))?;
        Ok(())
    }

    /// Checks `password` for `username`: the user and its groups when right, `None` when the
    /// user is unknown (or not unique) or the password wrong.
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<Option<DirectoryUser>> {
        // An empty password would be an anonymous bind, which directories accept.
        if password.is_empty() {
            return Ok(None);
        }
        self.user(username, Some(password)).await
    }

    /// The user and its groups as the directory has them now (no password: the service
    /// account reads them), `None` when the user is gone.
    pub async fn lookup(&self, username: &str) -> Result<Option<DirectoryUser>> {
        self.user(username, None).await
    }

    /// The search filter for a user name, escaped (RFC 4515): `*`, `(`, `)`, `\` and NUL
    /// cannot widen or rewrite it.
    fn user_filter(&self, username: &str) -> String {
        self.config.user_filter.replace("{username}", &ldap_escape(username))
    }

    async fn user(&self, username: &str, password: Option<&str>) -> Result<Option<DirectoryUser>> {
        if username.is_empty() {
            return Ok(None);
        }
        let mut ldap = self.connect().await?;
        let result = self.user_on(&mut ldap, username, password).await;
        let _ = ldap.unbind().await;
        result
    }

    async fn user_on(&self, ldap: &mut Ldap, username: &str, password: Option<&str>) -> Result<Option<DirectoryUser>> {
        self.bind_service(ldap).await?;
        let filter = self.user_filter(username);
        let member_of = self.config.member_of_attribute.as_str();
        ldap.with_timeout(self.timeout());
        let (entries, _) = ldap
            .search(&self.config.user_base, Scope::Subtree, &filter, vec![member_of])
            .await
            .and_then(|r| r.success())
            .map_err(|e| unreachable("looking the user up", e))?;
        let [entry] = &entries[..] else {
            return Ok(None); // unknown, or a filter that matches several: refuse
        };
        let user = SearchEntry::construct(entry.clone());
        if let Some(password) = password {
            ldap.with_timeout(self.timeout());
            match ldap.simple_bind(&user.dn, password).await.map_err(|e| unreachable("checking a password", e))? {
                r if r.rc == 0 => {}
                r if r.rc == INVALID_CREDENTIALS => return Ok(None),
                r => return Err(unreachable("checking a password", r)),
            }
        }
        let groups = if self.config.group_base.is_empty() {
            user.attrs.get(member_of).cloned().unwrap_or_default()
        } else {
            if password.is_some() {
                self.bind_service(ldap).await?;
            }
            let filter = self.config.group_filter.replace("{dn}", &ldap_escape(&user.dn));
            let name = self.config.group_name_attribute.as_str();
            ldap.with_timeout(self.timeout());
            let (entries, _) = ldap
                .search(&self.config.group_base, Scope::Subtree, &filter, vec![name])
                .await
                .and_then(|r| r.success())
                .map_err(|e| unreachable("reading groups", e))?;
            entries
                .into_iter()
                .map(SearchEntry::construct)
                .map(|g| g.attrs.get(name).and_then(|v| v.first().cloned()).unwrap_or(g.dn))
                .collect()
        };
        Ok(Some(DirectoryUser { dn: user.dn, groups }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory() -> Directory {
        let config =
            LdapConfig { url: "ldap://127.0.0.1:1".into(), user_base: "ou=people,dc=x".into(), ..Default::default() };
        Directory::new(&config).unwrap().unwrap()
    }

    #[test]
    fn names_cannot_rewrite_the_filter() {
        let d = directory();
        assert_eq!(d.user_filter("lena"), "(uid=lena)");
        assert_eq!(d.user_filter("*)(uid=*"), "(uid=\\2a\\29\\28uid=\\2a)");
        assert_eq!(d.user_filter("a\\b"), "(uid=a\\5cb)");
    }

    #[test]
    fn settings_are_checked() {
        assert!(Directory::new(&LdapConfig::default()).unwrap().is_none(), "no url: no directory");
        let bad = LdapConfig { url: "http://x".into(), user_base: "dc=x".into(), ..Default::default() };
        assert!(Directory::new(&bad).is_err());
        let no_placeholder = LdapConfig {
            url: "ldap://x".into(),
            user_base: "dc=x".into(),
            user_filter: "(uid=lena)".into(),
            ..Default::default()
        };
        assert!(Directory::new(&no_placeholder).is_err());
    }
}
