//! HTTPS: the `[tls]` section turned into a rustls server configuration for the `listen`
//! address (HTTP/2 and HTTP/1.1 through ALPN, which actix adds), with
//!
//! - [`reload`]: the served certificate behind one shared resolver, reloaded from its files
//!   when they change and on SIGHUP, without dropping a connection;
//! - [`client`]: client certificates (mutual TLS): the verifier, and the account name a
//!   verified certificate carries to the handlers;
//! - [`certs`]: PEM files as rustls types, and CA bundles for Berth's own HTTPS clients (the
//!   mirror's upstreams, `berth run`'s pulls, the ACME client);
//! - [`generated`]: certificates Berth makes itself for ACME (the placeholder served until
//!   the first certificate, TLS-ALPN-01 validation certificates).
//!
//! With `[tls.acme]` the certificate comes from the ACME client (`crate::acme`, which needs
//! the database and so lives a layer up): this room starts the resolver with a self-signed
//! placeholder and, for TLS-ALPN-01, offers the `acme-tls/1` protocol besides h2/http1.1.

pub mod certs;
pub mod client;
pub mod generated;
pub mod reload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::TlsConfig;
use client::IdentityFrom;
use reload::{CertFiles, CertResolver};

/// What the server needs for HTTPS.
pub struct Https {
    /// For `HttpServer::bind_rustls_0_23`.
    pub server_config: rustls::ServerConfig,
    pub resolver: Arc<CertResolver>,
    /// The files served (none with ACME, whose client replaces the certificate itself).
    files: Option<CertFiles>,
    reload_every: Duration,
    /// Set when client certificates are verified.
    identity_from: Option<IdentityFrom>,
}

impl Https {
    /// HTTPS as `[tls]` asks: `None` for plain HTTP (no `cert_file`; other `[tls]` settings
    /// without one are an error, not silently plain HTTP).
    pub fn from_config(config: &TlsConfig) -> anyhow::Result<Option<Https>> {
        if config.acme.enabled() {
            return Https::acme(config).map(Some);
        }
        if config.enabled() {
            return Https::new(config).map(Some);
        }
        if !config.key_file.is_empty() || !config.client_ca_file.is_empty() {
            anyhow::bail!("tls.key_file or tls.client_ca_file is set but tls.cert_file is not");
        }
        if !config.http_listen.is_empty() {
            anyhow::bail!("tls.http_listen is set but HTTPS is not (set tls.cert_file or tls.acme.domains)");
        }
        Ok(None)
    }

    /// HTTPS with ACME certificates: a self-signed placeholder until the ACME client installs
    /// the stored or a new certificate.
    fn acme(config: &TlsConfig) -> anyhow::Result<Https> {
        config.acme.check(config)?;
        let placeholder = generated::placeholder(&config.acme.normalized_domains())?;
        let mut https = Https::with_resolver(config, CertResolver::new(placeholder), None)?;
        if config.acme.challenge()? == crate::config::AcmeChallenge::TlsAlpn01 {
            // actix puts h2 and http/1.1 first: a normal client still gets one of those, and a
            // validation (which offers acme-tls/1 alone) gets acme-tls/1.
            https.server_config.alpn_protocols.push(reload::ACME_TLS_ALPN.to_vec());
        }
        Ok(https)
    }

    /// Loads the certificate (a bad file stops the start) and the client CAs.
    pub fn new(config: &TlsConfig) -> anyhow::Result<Https> {
        if config.key_file.is_empty() {
            anyhow::bail!("tls.cert_file is set but tls.key_file is not");
        }
        let files = CertFiles { cert: PathBuf::from(&config.cert_file), key: PathBuf::from(&config.key_file) };
        let (first, info) = files.load().with_context(|| {
            format!("loading the TLS certificate {} with the key {}", files.cert.display(), files.key.display())
        })?;
        reload::log_serving(&info, "serving the TLS certificate");
        Https::with_resolver(config, CertResolver::new(first), Some(files))
    }

    /// The rustls configuration around `resolver`, with client certificates as configured.
    fn with_resolver(
        config: &TlsConfig,
        resolver: Arc<CertResolver>,
        files: Option<CertFiles>,
    ) -> anyhow::Result<Https> {
        let builder = rustls::ServerConfig::builder_with_provider(certs::provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let required = client::required(&config.client_auth)?;
        let identity_from = IdentityFrom::parse(&config.client_cert_identity)?;
        let (builder, identity_from) = if config.client_ca_file.is_empty() {
            if required {
                anyhow::bail!("tls.client_auth = \"required\" needs tls.client_ca_file");
            }
            (builder.with_no_client_auth(), None)
        } else {
            let verifier = client::verifier(std::path::Path::new(&config.client_ca_file), required)?;
            tracing::info!(required, identity = ?identity_from, "client certificates are verified");
            (builder.with_client_cert_verifier(verifier), Some(identity_from))
        };
        let server_config = builder.with_cert_resolver(resolver.clone());
        Ok(Https {
            server_config,
            resolver,
            files,
            reload_every: Duration::from_secs(config.reload_check_secs),
            identity_from,
        })
    }

    /// Starts reloading the certificate on file changes and SIGHUP (inside the server's runtime).
    /// Nothing to watch with ACME certificates.
    pub fn watch(&self) -> anyhow::Result<()> {
        match &self.files {
            Some(files) => reload::watch(self.resolver.clone(), files.clone(), self.reload_every),
            None => Ok(()),
        }
    }

    /// The `HttpServer::on_connect` callback that keeps verified client certificates with their
    /// connections; `None` without client certificates.
    pub fn on_connect(
        &self,
    ) -> Option<impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + 'static> {
        self.identity_from.map(client::on_connect)
    }
}
