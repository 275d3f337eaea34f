//! PEM files as rustls types: a served certificate chain with its private key, and CA bundles
//! (for client certificates, and for Berth's own HTTPS clients: the mirror, `berth run`).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, anyhow, bail};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider of every TLS configuration Berth builds: aws-lc-rs, the one reqwest and
/// object_store already use. Installed as the process default on first use, so a library that
/// asks rustls for the default finds the same one.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            // Another part of the process may have installed one first: that is fine.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            Arc::new(rustls::crypto::aws_lc_rs::default_provider())
        })
        .clone()
}

/// A certificate chain (end-entity first) and its private key, from PEM text. Refused: no
/// certificate, no or an unusable private key (PKCS#8, PKCS#1 RSA and SEC1 EC are read; RSA,
/// ECDSA and Ed25519 keys are usable), a key that is not the certificate's, a first certificate
/// that is no X.509 certificate.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the certificate file is no valid PEM: {e}"))?;
    if chain.is_empty() {
        bail!("the certificate file holds no certificate (PEM `CERTIFICATE` block)");
    }
    describe(&chain[0]).context("the first certificate of the certificate file")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| anyhow!("the key file holds no private key: {e}"))?;
    let signing_key =
        provider().key_provider.load_private_key(key).map_err(|e| anyhow!("the private key is not usable: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(anyhow!("the private key does not belong to the certificate: {e}")),
    }
}

/// What the logs say about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    /// Hexadecimal, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// RFC 3339.
    pub not_after: String,
    /// Seconds until it expires (negative: expired).
    pub expires_in_secs: i64,
}

/// Subject, serial and expiry of a DER certificate.
pub fn describe(der: &[u8]) -> anyhow::Result<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
    let not_after = cert.validity().not_after.timestamp();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
        not_after: chrono::DateTime::from_timestamp(not_after, 0).map(|t| t.to_rfc3339()).unwrap_or_default(),
        expires_in_secs: not_after - chrono::Utc::now().timestamp(),
    })
}

/// The CA certificates of a PEM bundle (at least one).
pub fn ca_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the CA file {} is no valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("the CA file {} holds no certificate", path.display());
    }
    Ok(certs)
}

/// The CAs of a PEM bundle for a reqwest client, trusted besides the system's
/// (`ClientBuilder::tls_certs_merge`).
pub fn reqwest_roots(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    ca_certs(path)?
        .iter()
        .map(|der| reqwest::Certificate::from_der(der).with_context(|| format!("a certificate of {}", path.display())))
        .collect()
}

/// A client certificate (with its chain) and its key, from PEM files, for a reqwest client.
pub fn reqwest_identity(cert: &Path, key: &Path) -> anyhow::Result<reqwest::Identity> {
    let mut pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    pem.push(b'\n');
    pem.extend(std::fs::read(key).with_context(|| format!("reading {}", key.display()))?);
    reqwest::Identity::from_pem(&pem)
        .with_context(|| format!("the client certificate {} with the key {}", cert.display(), key.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn rsa_ecdsa_and_ed25519_keys_load() {
        for alg in [
            &rcgen::PKCS_RSA_SHA256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let (cert, key) = pair(alg);
            let ck = certified_key(cert.as_bytes(), key.as_bytes()).unwrap_or_else(|e| panic!("{alg:?}: {e:#}"));
            assert_eq!(ck.cert.len(), 1);
            assert!(describe(&ck.cert[0]).unwrap().expires_in_secs > 0);
        }
    }

    #[test]
    fn bad_pairs_are_refused() {
        let (cert, key) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, other_key) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mismatch = certified_key(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(format!("{mismatch:#}").contains("does not belong"), "{mismatch:#}");
        let truncated = &cert[..cert.len() / 2];
        assert!(certified_key(truncated.as_bytes(), key.as_bytes()).is_err());
        assert!(certified_key(b"", key.as_bytes()).is_err());
        assert!(certified_key(cert.as_bytes(), b"garbage").is_err());
        // A key file that holds a certificate instead.
        assert!(certified_key(cert.as_bytes(), cert.as_bytes()).is_err());
    }
}
