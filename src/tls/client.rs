//! Client certificates (mutual TLS): the verifier built from `tls.client_ca_file`, and what a
//! verified certificate says, kept with its connection as a [`ClientCert`] for the handlers
//! (`HttpRequest::conn_data`). Access control (`crate::auth`) reads the account name from it
//! when a request carries no `Authorization` header.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use actix_web::dev::Extensions;
use anyhow::{Context, bail};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use x509_parser::extensions::GeneralName;

use super::certs;

/// A verified client certificate of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Its subject (for logs).
    pub subject: String,
    /// The account name it stands for, per `tls.client_cert_identity`; `None`: nobody.
    pub account: Option<String>,
}

/// Which name of a certificate is the account (`tls.client_cert_identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityFrom {
    /// The subject's common name.
    CommonName,
    /// The first subject alternative name that is a DNS name, an email address or a URI.
    AltName,
    /// Verified, but nobody's login.
    Nobody,
}

impl IdentityFrom {
    pub fn parse(s: &str) -> anyhow::Result<IdentityFrom> {
        Ok(match s {
            "cn" | "" => IdentityFrom::CommonName,
            "san" => IdentityFrom::AltName,
            "none" => IdentityFrom::Nobody,
            other => bail!("tls.client_cert_identity is \"cn\", \"san\" or \"none\", not {other:?}"),
        })
    }
}

/// Whether clients must present a certificate (`tls.client_auth`).
pub fn required(client_auth: &str) -> anyhow::Result<bool> {
    match client_auth {
        "optional" | "" => Ok(false),
        "required" => Ok(true),
        other => bail!("tls.client_auth is \"optional\" or \"required\", not {other:?}"),
    }
}

/// Verifies client certificates against the CAs of `ca_file`; without `required`, clients that
/// present none are let through (as anonymous, or with their credentials).
pub fn verifier(ca_file: &Path, required: bool) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs::ca_certs(ca_file)? {
        roots.add(cert).with_context(|| format!("a CA certificate of {}", ca_file.display()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), certs::provider());
    let builder = if required { builder } else { builder.allow_unauthenticated() };
    builder.build().context("the client certificate verifier")
}

/// What a (verified) DER certificate says; `None` if it does not parse.
pub fn client_cert(der: &[u8], from: IdentityFrom) -> Option<ClientCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let account = match from {
        IdentityFrom::CommonName => {
            cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string)
        }
        IdentityFrom::AltName => cert.subject_alternative_name().ok().flatten().and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => Some(s.to_string()),
                _ => None,
            })
        }),
        IdentityFrom::Nobody => None,
    };
    Some(ClientCert { subject: cert.subject().to_string(), account: account.filter(|a| !a.is_empty()) })
}

/// The `HttpServer::on_connect` callback of an HTTPS listener: keeps the verified client
/// certificate of the connection, if any, in its extensions.
pub fn on_connect(from: IdentityFrom) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |conn, ext| {
        use actix_tls::accept::rustls_0_23::TlsStream;
        let Some(tls) = conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() else {
            return;
        };
        let (_, session) = tls.get_ref();
        // rustls hands out peer certificates only after its verifier accepted them.
        if let Some(cert) = session.peer_certificates().and_then(|c| c.first())
            && let Some(found) = client_cert(cert, from)
        {
            tracing::debug!(subject = %found.subject, account = ?found.account, "client certificate");
            ext.insert(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_common_name_or_alt_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ci.example".into(), "other.example".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "team+ci");
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der();
        let cn = client_cert(der, IdentityFrom::CommonName).unwrap();
        assert_eq!(cn.account.as_deref(), Some("team+ci"));
        assert!(cn.subject.contains("team+ci"), "{}", cn.subject);
        assert_eq!(client_cert(der, IdentityFrom::AltName).unwrap().account.as_deref(), Some("ci.example"));
        assert_eq!(client_cert(der, IdentityFrom::Nobody).unwrap().account, None);
        assert_eq!(client_cert(b"not a certificate", IdentityFrom::CommonName), None);
        assert_eq!(IdentityFrom::parse("san").unwrap(), IdentityFrom::AltName);
        assert!(IdentityFrom::parse("email").is_err());
        assert!(required("required").unwrap() && !required("optional").unwrap() && required("yes").is_err());
    }
}
