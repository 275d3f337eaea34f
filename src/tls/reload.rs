//! The served certificate: one [`CertResolver`] shared by every worker's TLS configuration,
//! holding the current certificate and key. A reload swaps them whole: handshakes from then on
//! get the new pair, connections already open keep theirs (nothing is dropped). Whatever
//! provides certificates — the files of `[tls]` here, the ACME client (`crate::acme`) — calls
//! [`CertResolver::replace`]. The ACME client also hands it TLS-ALPN-01 validation
//! certificates ([`CertResolver::set_validations`]): a handshake that offers only the
//! `acme-tls/1` protocol (RFC 8737) gets the one for its server name, or none.
//!
//! [`watch`] reads the two files again every `reload_check_secs` and on SIGHUP; a changed pair
//! that loads is served, a bad one (unreadable, no certificate, wrong key, half written) is
//! refused with an error in the log and the previous certificate stays.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::Digest as _;

use super::certs::{self, CertInfo};

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificate handshakes get, replaceable while the server runs.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
    /// TLS-ALPN-01 validation certificates by (lower-case) domain, while an order is pending.
    validations: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    pub fn new(first: CertifiedKey) -> Arc<CertResolver> {
        Arc::new(CertResolver { current: RwLock::new(Arc::new(first)), validations: RwLock::default() })
    }

    /// The TLS-ALPN-01 validation certificates from now on (by domain; empty: none).
    pub fn set_validations(&self, certs: HashMap<String, Arc<CertifiedKey>>) {
        *self.validations.write().unwrap_or_else(|p| p.into_inner()) = certs;
    }

    /// The domains with a validation certificate.
    pub fn validation_domains(&self) -> Vec<String> {
        self.validations.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// The certificate new connections get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serves `next` to every connection from now on.
    pub fn replace(&self, next: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // An ACME validation offers `acme-tls/1` alone; it gets the validation certificate of
        // its name or no handshake (never the served certificate, RFC 8737 section 3).
        if hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN)) {
            let name = hello.server_name()?.to_ascii_lowercase();
            let found = self.validations.read().unwrap_or_else(|p| p.into_inner()).get(&name).cloned();
            if found.is_none() {
                tracing::debug!(server_name = %name, "a TLS-ALPN-01 handshake for a name with no pending challenge");
            }
            return found;
        }
        Some(self.current())
    }
}

/// A certificate file and its key file, read together (paths are opened anew each time, so a
/// renewal that swaps symlinks, as certbot does, or renames files over them is seen).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Both files' bytes.
type Pair = (Vec<u8>, Vec<u8>);

impl CertFiles {
    fn read(&self) -> anyhow::Result<Pair> {
        use anyhow::Context as _;
        let cert = std::fs::read(&self.cert).with_context(|| format!("reading {}", self.cert.display()))?;
        let key = std::fs::read(&self.key).with_context(|| format!("reading {}", self.key.display()))?;
        Ok((cert, key))
    }

    /// Reads and checks the pair.
    pub fn load(&self) -> anyhow::Result<(CertifiedKey, CertInfo)> {
        let (cert, key) = self.read()?;
        load_pair(&cert, &key)
    }
}

fn load_pair(cert: &[u8], key: &[u8]) -> anyhow::Result<(CertifiedKey, CertInfo)> {
    let ck = certs::certified_key(cert, key)?;
    let info = certs::describe(&ck.cert[0])?;
    Ok((ck, info))
}

/// A replacement for the served certificate: as at start, and not already expired (the
/// certificate served may still be valid; at start an expired one is served with a warning).
fn load_renewal(cert: &[u8], key: &[u8]) -> anyhow::Result<(CertifiedKey, CertInfo)> {
    let (ck, info) = load_pair(cert, key)?;
    if info.expires_in_secs < 0 {
        anyhow::bail!("the new certificate ({}, serial {}) expired at {}", info.subject, info.serial, info.not_after);
    }
    Ok((ck, info))
}

/// Tells files' contents apart without keeping them.
fn fingerprint((cert, key): &Pair) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

/// Logs a served certificate, with a warning when it is expired or about to be.
pub fn log_serving(info: &CertInfo, what: &str) {
    if info.expires_in_secs < 0 {
        tracing::warn!(subject = %info.subject, serial = %info.serial, not_after = %info.not_after, "{what}: the TLS certificate has EXPIRED");
    } else if info.expires_in_secs < 7 * 86_400 {
        tracing::warn!(subject = %info.subject, serial = %info.serial, not_after = %info.not_after, "{what}: the TLS certificate expires within a week");
    } else {
        tracing::info!(subject = %info.subject, serial = %info.serial, not_after = %info.not_after, "{what}");
    }
}

/// Keeps `resolver` in step with `files`: checks them every `every` (not at all when zero) and
/// on SIGHUP. `serving` is what the files held when the served certificate was loaded. Must
/// be called inside a tokio runtime (it installs the SIGHUP handler at once, so the signal no
/// longer ends the process).
pub fn watch(resolver: Arc<CertResolver>, files: CertFiles, every: Duration) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut serving = files.read().map(|p| fingerprint(&p)).ok();
    tokio::spawn(async move {
        // The last pair refused, so a bad file is reported once, not at every check.
        let mut refused = None;
        let mut unreadable = false;
        let mut tick = (!every.is_zero()).then(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let forced = tokio::select! {
                s = hangup.recv() => {
                    if s.is_none() {
                        return;
                    }
                    true
                }
                _ = async { tick.as_mut().unwrap().tick().await }, if tick.is_some() => false,
            };
            let mut pair = match files.read() {
                Ok(p) => {
                    unreadable = false;
                    p
                }
                Err(e) => {
                    if forced || !unreadable {
                        tracing::error!(error = %format!("{e:#}"), "cannot read the TLS certificate files; the previous certificate stays in use");
                        unreadable = true;
                    }
                    continue;
                }
            };
            let mut fp = fingerprint(&pair);
            if serving == Some(fp) {
                if forced {
                    tracing::info!("SIGHUP: the TLS certificate files are unchanged");
                }
                refused = None;
                continue;
            }
            if refused == Some(fp) && !forced {
                continue;
            }
            let mut result = load_renewal(&pair.0, &pair.1);
            if result.is_err() {
                // A renewal may be written in steps (the certificate, then the key): look
                // again a moment later before refusing what is there.
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(again) = files.read()
                    && fingerprint(&again) != fp
                {
                    pair = again;
                    fp = fingerprint(&pair);
                    result = load_renewal(&pair.0, &pair.1);
                }
            }
            match result {
                Ok((ck, info)) => {
                    resolver.replace(ck);
                    serving = Some(fp);
                    refused = None;
                    log_serving(
                        &info,
                        if forced { "SIGHUP: reloaded the TLS certificate" } else { "reloaded the TLS certificate" },
                    );
                }
                Err(e) => {
                    refused = Some(fp);
                    tracing::error!(
                        cert_file = %files.cert.display(),
                        key_file = %files.key.display(),
                        error = %format!("{e:#}"),
                        "refused the new TLS certificate files; the previous certificate stays in use"
                    );
                }
            }
        }
    });
    Ok(())
}
