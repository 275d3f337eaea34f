//! Automatic certificates over ACME (RFC 8555), `[tls.acme]`: Berth orders the certificate of
//! its domains from an ACME CA (Let's Encrypt by default), serves it through the one
//! `tls::reload::CertResolver`, and renews it before it expires.
//!
//! - **State in the database** (`meta::acme`), so it survives restarts and every node on the
//!   database shares it: the account per directory and the certificate with its key, both
//!   sealed (`crate::seal`); a version every node polls (every `check_interval_secs`) to
//!   serve a certificate another node obtained; the pending challenges of the order in
//!   progress, so any node answers them.
//! - **One node orders at a time**: the lease `acme` (the GC lease table), taken before an
//!   order and released after it.
//! - **Challenges**: TLS-ALPN-01 on the HTTPS port itself (the resolver answers `acme-tls/1`
//!   handshakes with the validation certificate; nodes load pending ones from the database
//!   every [`VALIDATION_SYNC`]), or HTTP-01 on `tls.http_listen` ([`plain`], which also
//!   redirects browsers and refuses registry clients there).
//! - **Renewal**: due when fewer than `renew_before_days` remain, or when `berth tls renew`
//!   asked for it ([`request_renewal`]); a failed order is retried after
//!   `retry_initial_secs`, doubled at each failure up to `retry_max_secs`, while the
//!   certificate already served stays. Every outcome is logged (domains, not_after, attempt,
//!   error); secrets never are.
//! - **SIGHUP** checks at once (the stored certificate, and whether one is due).
//! - **Until the first certificate** the HTTPS port serves a self-signed placeholder
//!   (`tls::generated`), with a warning in the log.

mod http;
mod order;
pub mod plain;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use instant_acme::{Account, AccountCredentials, NewAccount};
use sha2::Digest as _;

use crate::config::{AcmeChallenge, Config};
use crate::meta::{AcmeCertificate, Meta, now};
use crate::seal::SealKey;
use crate::tls::reload::CertResolver;
use crate::tls::{certs, generated};

/// How often every node loads the pending TLS-ALPN-01 challenges from the database.
pub const VALIDATION_SYNC: Duration = Duration::from_secs(2);
/// The name of the lease that lets one node order (in the GC lease table).
const LEASE: &str = "acme";
/// Long enough for an order's validation and issuance timeouts together.
const LEASE_SECS: i64 = 600;
/// How long a published challenge stays answerable.
const CHALLENGE_SECS: i64 = 600;
/// Purposes of the sealed values (`crate::seal`).
const SEAL_ACCOUNT: &str = "acme-account";
const SEAL_CERT_KEY: &str = "acme-certificate-key";

/// What `[tls.acme]` asks, checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub domains: Vec<String>,
    pub contact: Vec<String>,
    pub directory: String,
    pub ca_file: String,
    pub challenge: AcmeChallenge,
    pub renew_before_secs: i64,
    pub check_every: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Settings {
    fn challenge_name(&self) -> &'static str {
        match self.challenge {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }

    /// The stored certificate's key in the database.
    fn domains_key(&self) -> String {
        self.domains.join(",")
    }
}

/// A challenge of the order in progress.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub token: String,
    pub domain: String,
    pub key_authorization: String,
}

/// The ACME client of this node.
pub struct Acme {
    meta: Meta,
    settings: Settings,
    secret_env: Option<String>,
    secret_path: PathBuf,
    /// This process, as lease holder.
    node: String,
    /// This node's pending HTTP-01 answers (token → key authorization); other nodes' are
    /// read from the database.
    http01: Mutex<HashMap<String, String>>,
    /// Set by [`Acme::start`].
    running: std::sync::OnceLock<Running>,
}

struct Running {
    resolver: Arc<CertResolver>,
    seal: SealKey,
    http: http::AcmeHttp,
    account: tokio::sync::Mutex<Option<Account>>,
}

impl Acme {
    /// The client for `[tls.acme]` (`None` when it has no domains); nothing runs until
    /// [`Acme::start`].
    pub fn new(meta: Meta, config: &Config) -> anyhow::Result<Option<Acme>> {
        let tls = &config.tls;
        let c = &tls.acme;
        if !c.enabled() {
            return Ok(None);
        }
        c.check(tls)?;
        let settings = Settings {
            domains: c.normalized_domains(),
            contact: c.contact.clone(),
            directory: c.directory.clone(),
            ca_file: c.ca_file.clone(),
            challenge: c.challenge()?,
            renew_before_secs: (c.renew_before_days as i64).saturating_mul(86_400),
            check_every: Duration::from_secs(c.check_interval_secs),
            retry_initial: Duration::from_secs(c.retry_initial_secs),
            retry_max: Duration::from_secs(c.retry_max_secs),
        };
        Ok(Some(Acme {
            meta,
            settings,
            secret_env: std::env::var(crate::seal::KEY_ENV).ok(),
            secret_path: config.secret_key_path(),
            node: uuid::Uuid::new_v4().to_string(),
            http01: Mutex::default(),
            running: std::sync::OnceLock::new(),
        }))
    }

    /// Serves the stored certificate at once (or logs that the placeholder is served), then
    /// keeps it renewed and in step with the database in the background. Inside the server's
    /// runtime, before it accepts connections.
    pub async fn start(self: &Arc<Self>, resolver: Arc<CertResolver>) -> anyhow::Result<()> {
        let seal = SealKey::load_or_create(self.secret_env.as_deref(), &self.secret_path)?;
        let http = http::AcmeHttp::new(&self.settings.ca_file)?;
        let running = Running { resolver, seal, http, account: tokio::sync::Mutex::new(None) };
        if self.running.set(running).is_err() {
            return Err(anyhow!("the ACME client is already running"));
        }
        let stored = self.stored().await?;
        let mut serving = None;
        if let Some(cert) = &stored {
            match self.install(cert) {
                Ok(()) => serving = Some(cert.version),
                Err(e) => {
                    tracing::error!(domains = ?self.settings.domains, error = %format!("{e:#}"), "the stored ACME certificate cannot be served")
                }
            }
        }
        if serving.is_none() {
            tracing::warn!(
                domains = ?self.settings.domains,
                directory = %self.settings.directory,
                "NO ACME CERTIFICATE YET: serving a SELF-SIGNED PLACEHOLDER, which clients refuse, until the CA issues one"
            );
        }
        tracing::info!(
            domains = ?self.settings.domains,
            directory = %self.settings.directory,
            challenge = self.settings.challenge_name(),
            "ACME certificates on"
        );
        // SIGHUP (which reloads certificate files without ACME) checks at once here, instead
        // of ending the process.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let me = self.clone();
        tokio::spawn(async move { me.keep_renewed(serving, hangup).await });
        if self.settings.challenge == AcmeChallenge::TlsAlpn01 {
            let me = self.clone();
            tokio::spawn(async move { me.sync_validations().await });
        }
        Ok(())
    }

    fn running(&self) -> &Running {
        self.running.get().expect("the ACME client runs")
    }

    async fn stored(&self) -> anyhow::Result<Option<AcmeCertificate>> {
        Ok(self.meta.acme_certificate(&self.settings.directory, &self.settings.domains_key()).await?)
    }

    /// Serves a stored certificate.
    fn install(&self, cert: &AcmeCertificate) -> anyhow::Result<()> {
        let running = self.running();
        let key = running.seal.open(SEAL_CERT_KEY, &cert.key_sealed).context("opening the certificate's key")?;
        let ck = certs::certified_key(cert.chain_pem.as_bytes(), &key)?;
        let info = certs::describe(&ck.cert[0])?;
        running.resolver.replace(ck);
        tracing::info!(
            domains = ?self.settings.domains,
            serial = %info.serial,
            not_after = %info.not_after,
            version = cert.version,
            "serving the ACME certificate"
        );
        Ok(())
    }

    /// The background loop: every check, serve a newer stored certificate and order one
    /// when due (under the lease), with backoff after failures.
    async fn keep_renewed(self: Arc<Self>, mut serving: Option<i64>, mut hangup: tokio::signal::unix::Signal) {
        let s = &self.settings;
        // The version this node could not serve (logged once).
        let mut refused = None;
        let mut failures: u32 = 0;
        let mut next_attempt = tokio::time::Instant::now();
        let mut request_seen: Option<i64> = None;
        loop {
            let mut wait = s.check_every;
            match self.stored().await {
                Err(e) => {
                    tracing::error!(domains = ?s.domains, error = %format!("{e:#}"), "cannot read the stored ACME certificate")
                }
                Ok(stored) => {
                    if let Some(cert) = &stored
                        && serving != Some(cert.version)
                        && refused != Some(cert.version)
                    {
                        match self.install(cert) {
                            Ok(()) => serving = Some(cert.version),
                            Err(e) => {
                                refused = Some(cert.version);
                                tracing::error!(domains = ?s.domains, version = cert.version, error = %format!("{e:#}"), "cannot serve the stored ACME certificate");
                            }
                        }
                    }
                    let requested = stored.as_ref().and_then(|c| c.renew_requested_at);
                    if requested.is_some() && requested != request_seen {
                        // A new request from `berth tls renew`: try at once.
                        failures = 0;
                        next_attempt = tokio::time::Instant::now();
                    }
                    request_seen = requested;
                    if let Some(reason) = due(stored.as_ref(), s.renew_before_secs) {
                        let now = tokio::time::Instant::now();
                        if now >= next_attempt {
                            match self.renew(reason, failures + 1, requested).await {
                                Ok(Some(version)) => {
                                    serving = Some(version);
                                    failures = 0;
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    failures += 1;
                                    let delay = backoff(s.retry_initial, s.retry_max, failures);
                                    next_attempt = tokio::time::Instant::now() + delay;
                                    tracing::warn!(
                                        domains = ?s.domains,
                                        not_after = %stored.as_ref().map(|c| rfc3339(c.not_after)).unwrap_or_else(|| "none".into()),
                                        attempt = failures,
                                        retry_in_secs = delay.as_secs(),
                                        error = %format!("{e:#}"),
                                        "ACME certificate order failed; the served certificate stays, retrying later"
                                    );
                                }
                            }
                        }
                        wait = wait.min(next_attempt.saturating_duration_since(tokio::time::Instant::now()));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
                Some(()) = hangup.recv() => {
                    tracing::info!(domains = ?s.domains, "SIGHUP: checking the stored ACME certificate now");
                }
            }
        }
    }

    /// Orders a certificate under the lease; the new version, or `None` when another node
    /// holds the lease (it orders; this node serves its certificate when stored).
    async fn renew(&self, reason: &str, attempt: u32, requested: Option<i64>) -> anyhow::Result<Option<i64>> {
        let s = &self.settings;
        if !self.meta.acquire_lease(LEASE, &self.node, LEASE_SECS).await? {
            tracing::debug!(domains = ?s.domains, "another node is ordering the ACME certificate");
            return Ok(None);
        }
        let result = self.order_and_store(reason, attempt, requested).await;
        if let Err(e) = self.meta.release_lease(LEASE, &self.node).await {
            tracing::warn!(error = %e, "cannot release the ACME lease (it expires by itself)");
        }
        result.map(Some)
    }

    async fn order_and_store(&self, reason: &str, attempt: u32, requested: Option<i64>) -> anyhow::Result<i64> {
        let s = &self.settings;
        // Another node may have stored one between this node's check and its lease.
        let before = self.stored().await?;
        if let Some(cert) = &before
            && due(Some(cert), s.renew_before_secs).is_none()
        {
            self.install(cert)?;
            return Ok(cert.version);
        }
        tracing::info!(domains = ?s.domains, reason, attempt, directory = %s.directory, "ordering an ACME certificate");
        let account = self.account().await?;
        let issued = order::obtain(self, &account).await?;
        let ck = certs::certified_key(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())
            .context("the certificate the CA issued")?;
        let info = certs::describe(&ck.cert[0])?;
        let not_after = now() + info.expires_in_secs;
        let sealed = self.running().seal.seal(SEAL_CERT_KEY, issued.key_pem.as_bytes())?;
        let version = self
            .meta
            .save_acme_certificate(&s.directory, &s.domains_key(), &issued.chain_pem, &sealed, not_after, requested)
            .await?;
        self.running().resolver.replace(ck);
        tracing::info!(
            domains = ?s.domains,
            serial = %info.serial,
            not_after = %info.not_after,
            version,
            attempt,
            "obtained and serving a new ACME certificate"
        );
        Ok(version)
    }

    /// The ACME account: stored, or created (under the lease) and stored.
    async fn account(&self) -> anyhow::Result<Account> {
        let running = self.running();
        let mut cached = running.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let s = &self.settings;
        let contact = s.contact.join(",");
        let builder = || Account::builder_with_http(Box::new(running.http.clone()));
        let account = match self.meta.acme_account(&s.directory).await? {
            Some((sealed, stored_contact)) => {
                let json = running.seal.open(SEAL_ACCOUNT, &sealed).context("opening the stored ACME account")?;
                let credentials: AccountCredentials =
                    serde_json::from_slice(&json).context("the stored ACME account credentials")?;
                let account = builder().from_credentials(credentials).await.context("reaching the ACME directory")?;
                if stored_contact != contact {
                    let contacts: Vec<&str> = s.contact.iter().map(String::as_str).collect();
                    account.update_contacts(&contacts).await.context("updating the account's contact")?;
                    self.meta.set_acme_account_contact(&s.directory, &contact).await?;
                    tracing::info!(contact = ?s.contact, "updated the ACME account's contact");
                }
                account
            }
            None => {
                let contacts: Vec<&str> = s.contact.iter().map(String::as_str).collect();
                let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
                let (account, credentials) =
                    builder().create(&new, s.directory.clone(), None).await.context("creating the ACME account")?;
                let json = serde_json::to_vec(&credentials)?;
                let sealed = running.seal.seal(SEAL_ACCOUNT, &json)?;
                self.meta.save_acme_account(&s.directory, &sealed, &contact).await?;
                tracing::info!(directory = %s.directory, account = account.id(), "created the ACME account");
                account
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    /// Makes the challenges answerable: in the database for every node, and here at once.
    async fn publish(&self, pending: &[Pending]) -> anyhow::Result<()> {
        let kind = self.settings.challenge_name();
        let expires = now() + CHALLENGE_SECS;
        for p in pending {
            self.meta.put_acme_challenge(&p.token, kind, &p.domain, &p.key_authorization, expires).await?;
        }
        match self.settings.challenge {
            AcmeChallenge::Http01 => {
                let mut map = self.http01.lock().unwrap_or_else(|p| p.into_inner());
                for p in pending {
                    map.insert(p.token.clone(), p.key_authorization.clone());
                }
            }
            AcmeChallenge::TlsAlpn01 => {
                let pairs: Vec<(String, String)> =
                    pending.iter().map(|p| (p.domain.clone(), p.key_authorization.clone())).collect();
                self.running().resolver.set_validations(validation_certs(&pairs, &mut HashMap::new())?);
            }
        }
        tracing::info!(domains = ?pending.iter().map(|p| &p.domain).collect::<Vec<_>>(), challenge = kind, "ACME challenges published");
        Ok(())
    }

    /// Withdraws the challenges of a finished order.
    async fn withdraw(&self, pending: &[Pending]) {
        let tokens: Vec<String> = pending.iter().map(|p| p.token.clone()).collect();
        {
            let mut map = self.http01.lock().unwrap_or_else(|p| p.into_inner());
            for t in &tokens {
                map.remove(t);
            }
        }
        if self.settings.challenge == AcmeChallenge::TlsAlpn01 {
            self.running().resolver.set_validations(HashMap::new());
        }
        if let Err(e) = self.meta.delete_acme_challenges(&tokens).await {
            tracing::warn!(error = %e, "cannot remove finished ACME challenges (they expire by themselves)");
        }
    }

    /// The answer to `GET /.well-known/acme-challenge/TOKEN`: this node's, or another's.
    pub async fn http01_answer(&self, token: &str) -> Option<String> {
        if let Some(ka) = self.http01.lock().unwrap_or_else(|p| p.into_inner()).get(token) {
            return Some(ka.clone());
        }
        match self.meta.acme_http_challenge(token).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "cannot read pending ACME challenges");
                None
            }
        }
    }

    /// Keeps the resolver's TLS-ALPN-01 validation certificates in step with the challenges
    /// any node published.
    async fn sync_validations(self: Arc<Self>) {
        let mut made: HashMap<(String, String), Arc<rustls::sign::CertifiedKey>> = HashMap::new();
        let mut had_any = false;
        loop {
            tokio::time::sleep(VALIDATION_SYNC).await;
            let pairs = match self.meta.acme_alpn_challenges().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read pending ACME challenges");
                    continue;
                }
            };
            if pairs.is_empty() && !had_any {
                continue;
            }
            had_any = !pairs.is_empty();
            match validation_certs(&pairs, &mut made) {
                Ok(certs) => self.running().resolver.set_validations(certs),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot make a TLS-ALPN-01 validation certificate")
                }
            }
        }
    }
}

/// The validation certificates of `(domain, key authorization)` pairs, reusing those already
/// made (and forgetting the others).
fn validation_certs(
    pairs: &[(String, String)],
    made: &mut HashMap<(String, String), Arc<rustls::sign::CertifiedKey>>,
) -> anyhow::Result<HashMap<String, Arc<rustls::sign::CertifiedKey>>> {
    let mut out = HashMap::new();
    let mut keep = HashMap::new();
    for pair in pairs {
        let ck = match made.get(pair) {
            Some(ck) => ck.clone(),
            None => generated::acme_validation(&pair.0, &sha2::Sha256::digest(pair.1.as_bytes()))?,
        };
        keep.insert(pair.clone(), ck.clone());
        out.insert(pair.0.clone(), ck);
    }
    *made = keep;
    Ok(out)
}

/// Why the stored certificate needs renewing, if it does.
fn due(stored: Option<&AcmeCertificate>, renew_before_secs: i64) -> Option<&'static str> {
    match stored {
        None => Some("no certificate yet"),
        Some(c) if c.renew_requested_at.is_some() => Some("renewal requested (berth tls renew)"),
        Some(c) if c.not_after - now() < renew_before_secs => Some("expires within renew_before_days"),
        Some(_) => None,
    }
}

/// The wait after the `failures`-th failure in a row: `initial × 2^(failures−1)`, capped.
fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// Marks the stored certificates due, so the serving node renews at its next check (`berth
/// tls renew`); one line per certificate.
pub async fn request_renewal(meta: &Meta) -> anyhow::Result<Vec<String>> {
    let rows = meta.request_acme_renewal().await?;
    Ok(rows
        .into_iter()
        .map(|(directory, domains, not_after)| {
            format!("{domains} (from {directory}, expires {}): renewal requested", rfc3339(not_after))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let d = |n| backoff(Duration::from_secs(5), Duration::from_secs(60), n).as_secs();
        assert_eq!([d(1), d(2), d(3), d(4), d(5), d(6), d(100)], [5, 10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn due_when_missing_requested_or_expiring() {
        let cert = |not_after, requested| AcmeCertificate {
            directory: "d".into(),
            domains: "a.example.com".into(),
            chain_pem: String::new(),
            key_sealed: String::new(),
            not_after,
            version: 1,
            renew_requested_at: requested,
        };
        let month = 30 * 86_400;
        assert!(due(None, month).is_some());
        assert!(due(Some(&cert(now() + 90 * 86_400, None)), month).is_none());
        assert!(due(Some(&cert(now() + 90 * 86_400, Some(1))), month).is_some());
        assert!(due(Some(&cert(now() + 10 * 86_400, None)), month).is_some());
    }
}
