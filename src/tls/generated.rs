//! Certificates Berth makes itself (rcgen, ECDSA P-256): the self-signed placeholder served for
//! ACME domains until the first certificate is issued (so the HTTPS port is up and can answer
//! TLS-ALPN-01), and the TLS-ALPN-01 validation certificate (RFC 8737: the domain as its only
//! name, the SHA-256 of the key authorization in a critical `acmeIdentifier` extension).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use rcgen::{CertificateParams, CustomExtension, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::certs;

fn certified(params: CertificateParams) -> anyhow::Result<CertifiedKey> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| anyhow!("generating a key: {e}"))?;
    let cert = params.self_signed(&key).map_err(|e| anyhow!("making a certificate: {e}"))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = certs::provider().key_provider.load_private_key(der).map_err(|e| anyhow!("{e}"))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// A self-signed certificate for `domains`, valid for a week from an hour ago.
pub fn placeholder(domains: &[String]) -> anyhow::Result<CertifiedKey> {
    let mut params = CertificateParams::new(domains.to_vec()).map_err(|e| anyhow!("{e}"))?;
    params.distinguished_name.push(DnType::CommonName, "Berth placeholder: no ACME certificate yet");
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(7 * 86_400)).into();
    certified(params)
}

/// The TLS-ALPN-01 validation certificate for `domain`, whose key authorization hashes to
/// `key_authorization_sha256`.
pub fn acme_validation(domain: &str, key_authorization_sha256: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(|e| anyhow!("{e}"))?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(key_authorization_sha256)];
    certified(params).map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_and_validation_certificates_carry_what_they_must() {
        let ck = placeholder(&["a.example.com".into(), "b.example.com".into()]).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(a.example.com)", "DNSName(b.example.com)"]);
        assert!(ck.keys_match().is_ok());

        let digest = [7u8; 32];
        let v = acme_validation("a.example.com", &digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&v.cert[0]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING of the 32 bytes.
        assert_eq!(ext.value, [&[0x04, 32][..], &digest[..]].concat());
    }
}
