//! Configuration: defaults, then a TOML file, then `BERTH_*` environment variables (nested keys
//! joined by `__`, e.g. `BERTH_DATABASE__URL`), then command-line flags. Loaded with `figment`.
//! `config/berth.toml` documents every key.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the server listens on.
    pub listen: String,
    /// Where the embedded defaults keep their data (SQLite file, filesystem blobs).
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub mirror: MirrorConfig,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client; empty: the
    /// TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    pub metrics: MetricsConfig,
    pub webhooks: WebhooksConfig,
    /// On SIGTERM or SIGINT: seconds in-flight requests get to finish before the server exits.
    pub shutdown_timeout_secs: u64,
    pub gc: GcConfig,
    pub tls: TlsConfig,
    /// The key that seals secrets kept in the database (ACME account and certificate keys,
    /// replication targets' passwords;
    /// `src/seal.rs`): a file holding 32 random bytes in base64; empty: `<data_dir>/secret.key`,
    /// created (mode 0600) the first time one is needed. The environment variable
    /// `BERTH_SECRET_KEY` (the key itself) wins over the file. Nodes sharing a database need
    /// the same key.
    pub secret_key_file: String,
    pub replication: ReplicationConfig,
    pub runtime: RuntimeConfig,
}

/// The bundled runtime (`berth run`, `src/runtime`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeConfig {
    /// The bridge `--network bridge` containers are attached to (created on demand, removed
    /// when its last container is gone; at most 15 characters: letters, digits, `_`).
    pub bridge: String,
    /// The bridge's IPv4 subnet (`BERTH_RUNTIME__SUBNET`): its first address is the bridge's
    /// (the containers' gateway), the others are leased to containers. It must not overlap a
    /// network the host reaches (docker's 172.17.0.0/16 is avoided by the default).
    pub subnet: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { bridge: "berth0".into(), subnet: "10.89.0.0/24".into() }
    }
}

/// Replication's job worker on this node (targets and rules are in the database).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationConfig {
    /// Whether this node runs replication jobs (jobs are queued either way).
    pub enabled: bool,
    /// Jobs this node runs at a time.
    pub workers: usize,
    /// Jobs this node runs at a time against one target (or source).
    pub per_target: usize,
    /// The chunk size (bytes) of uploads to a target that refused a blob in one request.
    pub chunk_bytes: usize,
    /// Days finished jobs and executions stay in the history.
    pub history_days: u64,
    /// How often, in milliseconds, the queue is checked for jobs queued by other nodes or due
    /// for a retry (this node's own are started at once).
    pub poll_ms: u64,
    /// How long a node holds a job it works on before another may take it over (renewed while
    /// it runs), in seconds.
    pub lease_secs: u64,
    /// Attempts before a job is given up (a `replication` webhook event).
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; doubled after each failure ...
    pub backoff_initial_ms: u64,
    /// ... up to this many seconds.
    pub backoff_max_secs: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            enabled: true,
            workers: 4,
            per_target: 2,
            chunk_bytes: 16 << 20,
            history_days: 30,
            poll_ms: 1000,
            lease_secs: 120,
            max_attempts: 10,
            backoff_initial_ms: 2000,
            backoff_max_secs: 600,
        }
    }
}

/// HTTPS on the `listen` address (see `src/tls`): on when `cert_file` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM: the server's certificate followed by its chain (a full-chain file).
    pub cert_file: String,
    /// PEM: its private key (PKCS#8, or PKCS#1 RSA / SEC1 EC; RSA, ECDSA or Ed25519).
    pub key_file: String,
    /// How often, in seconds, the two files are read again for a renewed certificate (0: only
    /// on SIGHUP). A new pair is served to new connections; a bad one is refused with a log line.
    pub reload_check_secs: u64,
    /// PEM: the CAs whose client certificates are verified (mutual TLS); empty: none are asked for.
    pub client_ca_file: String,
    /// With `client_ca_file`: `optional` (clients may present a certificate) or `required`
    /// (the handshake fails without a verified one).
    pub client_auth: String,
    /// Which name of a verified client certificate is the account it stands for (a user, or a
    /// robot `namespace+name`): `cn` (the subject's common name), `san` (its first subject
    /// alternative name: DNS name, email or URI) or `none` (verified, but nobody's login).
    pub client_cert_identity: String,
    /// A plain-HTTP address (e.g. `0.0.0.0:80`) beside the HTTPS `listen` address: it answers
    /// ACME HTTP-01 challenges, redirects browsers to HTTPS (308) and tells registry clients
    /// (`/v2/`) to use `https://` (400). Empty: none.
    pub http_listen: String,
    /// Automatic certificates over ACME (RFC 8555): on when `domains` is set.
    pub acme: AcmeConfig,
}

/// The HTTP server's write buffer per connection (actix's `h1_write_buffer_size`; not a
/// setting): local blobs are sent in pieces of this size below 256 KiB, so the buffer a
/// keep-alive connection keeps stays small (see `storage::SMALL_READ`).
pub const HTTP_WRITE_BUFFER: usize = 8 * 1024;

/// Let's Encrypt's production directory, the default ACME server.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `[tls.acme]`: the certificate for `domains` is ordered, renewed and served by Berth itself
/// (see `src/acme`). Exclusive with `cert_file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AcmeConfig {
    /// DNS names of the certificate (the first is its subject); each must resolve to this
    /// server (or its balancer) for the CA's validation.
    pub domains: Vec<String>,
    /// `mailto:` addresses the CA may write to about the account (expiry, incidents).
    pub contact: Vec<String>,
    /// The ACME directory URL (Let's Encrypt production by default; any RFC 8555 server, e.g.
    /// a company's step-ca).
    pub directory: String,
    /// PEM: CAs trusted for the ACME directory's HTTPS besides the system's (a private CA).
    pub ca_file: String,
    /// `tls-alpn-01` (on the HTTPS port itself, which must be reachable on 443 from the CA) or
    /// `http-01` (on `tls.http_listen`, reachable on port 80).
    pub challenge: String,
    /// Renew when the certificate has fewer days left than this.
    pub renew_before_days: u64,
    /// How often, in seconds, the stored certificate is checked: due for renewal, or renewed
    /// by another node (then served here too).
    pub check_interval_secs: u64,
    /// After a failed order, the first retry waits this long (seconds); each further failure
    /// doubles the wait, up to `retry_max_secs`.
    pub retry_initial_secs: u64,
    pub retry_max_secs: u64,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            domains: Vec::new(),
            contact: Vec::new(),
            directory: LETS_ENCRYPT.into(),
            ca_file: String::new(),
            challenge: "tls-alpn-01".into(),
            renew_before_days: 30,
            check_interval_secs: 600,
            retry_initial_secs: 300,
            retry_max_secs: 6 * 3600,
        }
    }
}

/// The ACME challenge a configuration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    TlsAlpn01,
    Http01,
}

impl AcmeConfig {
    /// Whether certificates come from ACME.
    pub fn enabled(&self) -> bool {
        !self.domains.is_empty()
    }

    /// The challenge; an error names the accepted values.
    pub fn challenge(&self) -> anyhow::Result<AcmeChallenge> {
        match self.challenge.as_str() {
            "tls-alpn-01" => Ok(AcmeChallenge::TlsAlpn01),
            "http-01" => Ok(AcmeChallenge::Http01),
            other => anyhow::bail!("tls.acme.challenge = {other:?}: use \"tls-alpn-01\" or \"http-01\""),
        }
    }

    /// The domains, lower-cased, in their configured order.
    pub fn normalized_domains(&self) -> Vec<String> {
        self.domains.iter().map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase()).collect()
    }

    /// Checks `[tls.acme]` (with the `[tls]` around it), every error naming the key.
    pub fn check(&self, tls: &TlsConfig) -> anyhow::Result<()> {
        use anyhow::bail;
        if !tls.cert_file.is_empty() || !tls.key_file.is_empty() {
            bail!(
                "tls.acme.domains and tls.cert_file/key_file are exclusive: either Berth gets its certificate over ACME, or it serves the files (remove one of them)"
            );
        }
        let domains = self.normalized_domains();
        for (i, d) in domains.iter().enumerate() {
            if let Err(why) = check_dns_name(d) {
                bail!("tls.acme.domains: {:?} {why}", self.domains[i]);
            }
            if domains[..i].contains(d) {
                bail!("tls.acme.domains: {d:?} is listed twice");
            }
        }
        for c in &self.contact {
            let Some(addr) = c.strip_prefix("mailto:") else {
                bail!("tls.acme.contact: {c:?} must be a mailto: URL, e.g. \"mailto:ops@example.com\"");
            };
            if !addr.contains('@') || addr.contains(|ch: char| ch.is_whitespace() || ch == ',') {
                bail!("tls.acme.contact: {c:?} is no e-mail address");
            }
        }
        if !self.directory.starts_with("https://") {
            bail!("tls.acme.directory = {:?}: an ACME directory URL starts with https://", self.directory);
        }
        if !self.ca_file.is_empty() && !Path::new(&self.ca_file).is_file() {
            bail!("tls.acme.ca_file: {} is no readable file", self.ca_file);
        }
        let challenge = self.challenge()?;
        if challenge == AcmeChallenge::Http01 && tls.http_listen.is_empty() {
            bail!("tls.acme.challenge = \"http-01\" needs tls.http_listen (a plain-HTTP address reachable on port 80)");
        }
        if challenge == AcmeChallenge::TlsAlpn01 && tls.client_auth == "required" && !tls.client_ca_file.is_empty() {
            bail!(
                "tls.acme.challenge = \"tls-alpn-01\" cannot pass with tls.client_auth = \"required\" (the CA presents no client certificate): use \"http-01\""
            );
        }
        if self.renew_before_days == 0 {
            bail!("tls.acme.renew_before_days must be at least 1");
        }
        if self.check_interval_secs == 0 {
            bail!("tls.acme.check_interval_secs must be at least 1");
        }
        if self.retry_initial_secs == 0 || self.retry_max_secs < self.retry_initial_secs {
            bail!("tls.acme.retry_initial_secs must be at least 1 and at most tls.acme.retry_max_secs");
        }
        Ok(())
    }
}

/// Whether `name` (lower case) is a DNS name a CA can validate with HTTP-01 or TLS-ALPN-01.
fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.starts_with("*.") {
        return Err("is a wildcard, which only the DNS-01 challenge can validate (not built in)");
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address; ACME certificates here are for DNS names");
    }
    if name.is_empty() || name.len() > 253 || !name.contains('.') {
        return Err("is no fully qualified DNS name");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err("is no valid DNS name");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("is no valid DNS name (letters, digits, hyphens and dots; IDNs in their xn-- form)");
        }
    }
    Ok(())
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            reload_check_secs: 5,
            client_ca_file: String::new(),
            client_auth: "optional".into(),
            client_cert_identity: "cn".into(),
            http_listen: String::new(),
            acme: AcmeConfig::default(),
        }
    }
}

impl TlsConfig {
    /// Whether the server speaks HTTPS (certificate files, or ACME).
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty() || self.acme.enabled()
    }
}

/// Prometheus metrics at `GET /metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// When set, scrapes must send `Authorization: Bearer <token>`.
    pub token: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, token: String::new() }
    }
}

/// Webhook delivery (the webhooks themselves are in the database).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhooksConfig {
    /// Whether this node sends queued deliveries (events are queued either way).
    pub deliver: bool,
    /// Attempts before a delivery is given up (`failed`).
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; doubled after each failure.
    pub backoff_initial_ms: u64,
    /// Longest wait between retries, in seconds.
    pub backoff_max_secs: u64,
    /// Seconds a receiver gets to answer.
    pub timeout_secs: u64,
    /// How often, in milliseconds, the queue is checked for deliveries queued by other nodes
    /// or due for a retry (this node's own events are sent at once).
    pub poll_ms: u64,
    /// Days finished deliveries stay in the history.
    pub history_days: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            deliver: true,
            max_attempts: 8,
            backoff_initial_ms: 1000,
            backoff_max_secs: 3600,
            timeout_secs: 10,
            poll_ms: 1000,
            history_days: 30,
        }
    }
}

/// Garbage collection (see `src/gc`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GcConfig {
    /// Run on a schedule (every `interval_secs`); `berth gc` and the admin API work either way.
    pub enabled: bool,
    pub interval_secs: u64,
    /// Blobs, links and manifests younger than this are never collected (a push in progress
    /// may be about to reference them).
    pub grace_secs: u64,
    /// Upload sessions untouched for this long are removed with their stored bytes.
    pub upload_expiry_secs: u64,
    /// Delete manifests that no tag (nor tagged index, nor kept subject) reaches.
    pub delete_untagged: bool,
    /// How often pull times are written to the database (at most once per manifest per period).
    pub pull_record_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            interval_secs: 24 * 3600,
            grace_secs: 3600,
            upload_expiry_secs: 24 * 3600,
            delete_untagged: false,
            pull_record_secs: 60,
        }
    }
}

/// Pull-through mirror of other registries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MirrorConfig {
    pub enabled: bool,
    /// The upstream that serves names without an upstream prefix (what Docker daemons with
    /// `registry-mirrors` ask for), by its `name`; empty for none.
    pub default_upstream: String,
    /// Whether anonymous clients may pull through the mirror (logged-in accounts always may).
    pub anonymous_pull: bool,
    pub upstreams: Vec<UpstreamConfig>,
    /// Size cap of the mirrored content in bytes (0: none). Above it, garbage collection evicts
    /// the least recently pulled mirrored manifests and their blobs.
    pub max_cache_bytes: u64,
    /// How often (seconds) the cache's size is checked against `max_cache_bytes` between
    /// scheduled collections; over it, a collection runs at once (needs `gc.enabled`).
    pub cap_check_secs: u64,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            enabled: false,
            default_upstream: String::new(),
            anonymous_pull: true,
            upstreams: Vec::new(),
            max_cache_bytes: 0,
            cap_check_secs: 300,
        }
    }
}

/// One upstream registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UpstreamConfig {
    /// The first path component its repositories get here (`docker.io/library/busybox`), and a
    /// name containerd's `?ns=` may use.
    pub name: String,
    /// Base URL, e.g. `https://registry-1.docker.io`.
    pub url: String,
    pub username: String,
    pub password: String,
    /// Seconds a cached tag is served before it is revalidated upstream (with a HEAD).
    pub tag_ttl_secs: u64,
    /// Seconds to wait for an upstream answer before serving stale content or failing.
    pub timeout_secs: u64,
    /// Prefix one-component names with `library/` (Docker Hub's official images).
    pub library_prefix: bool,
    /// PEM: CAs trusted for this upstream's HTTPS besides the system's (a private registry).
    pub ca_file: String,
    /// PEM: a client certificate (and its key) to present to an upstream that asks for one
    /// (mutual TLS).
    pub client_cert_file: String,
    pub client_key_file: String,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: String::new(),
            url: String::new(),
            username: String::new(),
            password: String::new(),
            tag_ttl_secs: 300,
            timeout_secs: 30,
            library_prefix: false,
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; empty for `<data_dir>/berth.db`.
    pub url: String,
    /// Seconds a request waits for a database connection (on PostgreSQL, connecting included)
    /// before it is answered 503: a stopped database fails requests fast instead of holding
    /// them.
    pub acquire_timeout_secs: u64,
    /// SQLite: seconds a write waits for another process's lock on the file before it is
    /// answered 503.
    pub busy_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: String::new(), acquire_timeout_secs: 5, busy_timeout_secs: 10 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// `filesystem` (the default).
    pub kind: String,
    /// Root of the filesystem store; empty for `<data_dir>/storage`.
    pub path: String,
    /// Filesystem store: uploads write whole 1 MiB blocks with direct I/O (`O_DIRECT`), past
    /// the page cache (see `storage::direct`).
    pub direct_io: bool,
    /// The S3 store, when `kind = "s3"`.
    pub s3: S3Config,
    /// Google Cloud Storage, when `kind = "gcs"` (not tested here).
    pub gcs: GcsConfig,
    /// Azure Blob Storage, when `kind = "azure"` (not tested here).
    pub azure: AzureConfig,
}

/// A Google Cloud Storage bucket; empty settings come from the `GOOGLE_*` environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GcsConfig {
    pub bucket: String,
    pub prefix: String,
    /// Path of a service account JSON key file.
    pub service_account_path: String,
}

/// An Azure Blob Storage container; empty settings come from the `AZURE_*` environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AzureConfig {
    pub account: String,
    pub container: String,
    pub prefix: String,
    pub access_key: String,
}

/// An S3 (or S3-compatible) bucket. Empty settings fall back to the `AWS_*` environment and
/// the usual credential chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, e.g. `registry`.
    pub prefix: String,
    pub region: String,
    /// Endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want.
    pub path_style: bool,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Answer blob GETs with a 307 to a presigned S3 URL instead of streaming through Berth.
    pub redirect: bool,
    /// Lifetime of those URLs, in seconds.
    pub redirect_expiry_secs: u64,
    /// Retries of a failed S3 request (idempotent requests and throttling only).
    pub max_retries: usize,
    /// Give up retrying a request after this many seconds.
    pub retry_timeout_secs: u64,
    /// Longest time one S3 request may take (object_store's default is 30 s, which completing
    /// a multipart upload of several GiB on an S3-compatible server can exceed).
    pub request_timeout_secs: u64,
    /// Blobs larger than this many bytes are committed with a multipart copy
    /// (`UploadPartCopy`): S3 refuses a single server-side copy above 5 GiB.
    pub multipart_copy_threshold: u64,
    /// Size of each part of such a copy, in bytes (S3: 5 MiB to 5 GiB; raised by itself when a
    /// blob would need more than 10,000 parts).
    pub multipart_copy_part_size: u64,
    /// Parts copied at the same time.
    pub multipart_copy_concurrency: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            region: String::new(),
            endpoint: String::new(),
            path_style: false,
            allow_http: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            redirect: false,
            redirect_expiry_secs: 600,
            max_retries: 5,
            retry_timeout_secs: 30,
            request_timeout_secs: 300,
            multipart_copy_threshold: 5_000_000_000,
            multipart_copy_part_size: 512 * 1024 * 1024,
            multipart_copy_concurrency: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `berth=debug,actix_web=info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// One line per request.
    pub access: bool,
}

/// Accounts and Docker token authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Off runs an open registry: anyone may push, pull and delete (a warning at start).
    pub enabled: bool,
    /// Whether anonymous clients may pull from public namespaces.
    pub anonymous_pull: bool,
    /// The `service` of the token challenge and the audience of tokens.
    pub service: String,
    /// The `iss` of tokens.
    pub issuer: String,
    /// Token endpoint URL sent in challenges; empty: `<scheme>://<host>/token` of the request.
    pub realm: String,
    /// Lifetime of registry tokens, in seconds.
    pub token_ttl_secs: u64,
    /// Lifetime of the refresh tokens handed out at login, in days.
    pub refresh_token_days: u64,
    /// Failed logins per client address, and per account at one address, before refusing
    /// with 429 (`auth::limiter`).
    pub max_failed_logins: u32,
    /// Failed logins per account across all addresses before it is refused everywhere: the
    /// backstop against guesses spread over many addresses (NIST SP 800-63B: at most 100).
    pub max_failed_logins_per_account: u32,
    /// How long, in seconds, those failures count.
    pub lockout_secs: u64,
    /// Directory logins (`[auth.ldap]`); off while its `url` is empty.
    pub ldap: LdapConfig,
    /// Web UI logins through an OpenID Connect provider (`[auth.oidc]`); off while its
    /// `issuer` is empty.
    pub oidc: OidcConfig,
    /// Days a personal access token of an account that signs in through a provider (OIDC,
    /// LDAP) may live at most; a token asked for without an expiry gets this many. 0: no limit.
    pub sso_token_max_days: u64,
}

/// OpenID Connect: people log in to the web UI through the team's identity provider
/// (authorization code flow with PKCE, `state` and `nonce`; the ID token checked against the
/// provider's keys). The first login makes the account (origin `oidc`, no password here); every
/// login sets its administrator right and namespace roles from its groups claim. A local account
/// of the same name is never taken over.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OidcConfig {
    /// The provider's issuer URL (its `/.well-known/openid-configuration` is read); empty: off.
    pub issuer: String,
    /// The name on the login page's button: "Log in with <display_name>".
    pub display_name: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// Where the provider sends the browser back: `https://HOST/login/oidc/callback` as
    /// registered at the provider; empty: built from the request's scheme and host.
    pub redirect_url: String,
    /// The ID token claim that names the account.
    pub username_claim: String,
    /// The ID token claim that lists the user's groups (empty: groups give nothing).
    pub groups_claim: String,
    /// Members of these groups are administrators.
    pub admin_groups: Vec<String>,
    /// Group → roles, as for LDAP: `"team-a-devs" = "team-a:writer"`.
    pub group_roles: std::collections::BTreeMap<String, String>,
    /// `false` hides the password form: only local administrators may still log in with a
    /// password (break-glass, at `/login?local`); tokens work as before.
    pub local_login: bool,
    /// PEM certificates to trust for the provider's HTTPS (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Timeout of each request to the provider, in seconds.
    pub timeout_secs: u64,
}

impl std::fmt::Debug for OidcConfig {
    /// Everything but the client secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("display_name", &self.display_name)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("redirect_url", &self.redirect_url)
            .field("username_claim", &self.username_claim)
            .field("groups_claim", &self.groups_claim)
            .field("admin_groups", &self.admin_groups)
            .field("group_roles", &self.group_roles)
            .field("local_login", &self.local_login)
            .finish_non_exhaustive()
    }
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: String::new(),
            display_name: "single sign-on".into(),
            client_id: String::new(),
            client_secret: String::new(),
            scopes: vec!["profile".into(), "email".into()],
            redirect_url: String::new(),
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            admin_groups: Vec::new(),
            group_roles: Default::default(),
            local_login: true,
            ca_file: None,
            timeout_secs: 10,
        }
    }
}

impl OidcConfig {
    pub fn enabled(&self) -> bool {
        !self.issuer.is_empty()
    }
}

/// LDAP: the passwords of directory users are checked with a bind as the user (`docker login`,
/// `/token`, the web UI's form); their groups give namespace roles and administrator rights,
/// refreshed at every login. A local account of the same name is never taken over: the
/// directory is asked only for names without a local account.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LdapConfig {
    /// `ldap://host:389` (with `starttls`, or plain on a trusted network) or `ldaps://host:636`;
    /// empty: no directory.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// PEM certificates to trust for the directory's TLS (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// The service account that looks users and groups up (empty: anonymous search).
    pub bind_dn: String,
    pub bind_password: String,
    /// Where users are, and the filter that finds one (`{username}` is replaced, escaped as
    /// RFC 4515 says).
    pub user_base: String,
    pub user_filter: String,
    /// Where groups are, and the filter that finds a user's (`{dn}` is the user's DN, escaped).
    /// Empty `group_base`: the groups are the user's `member_of_attribute` values.
    pub group_base: String,
    pub group_filter: String,
    /// The group attribute that names it in `admin_groups` and `group_roles` (its DN works too).
    pub group_name_attribute: String,
    pub member_of_attribute: String,
    /// Members of these groups are administrators.
    pub admin_groups: Vec<String>,
    /// Group → roles, e.g. `"team-devs" = "team:writer"` (several: `"team:writer, lab:reader"`);
    /// the highest role per namespace wins. A namespace that does not exist is created (an
    /// organisation).
    pub group_roles: std::collections::BTreeMap<String, String>,
    /// How long a checked password is remembered, in seconds (a push of 20 layers is not 20
    /// binds); also how long a removal from a group may take to show.
    pub remember_secs: u64,
    /// Connection and operation timeout, in seconds.
    pub timeout_secs: u64,
}

impl std::fmt::Debug for LdapConfig {
    /// Everything but the service account's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConfig")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("bind_dn", &self.bind_dn)
            .field("user_base", &self.user_base)
            .field("group_base", &self.group_base)
            .field("admin_groups", &self.admin_groups)
            .field("group_roles", &self.group_roles)
            .finish_non_exhaustive()
    }
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: String::new(),
            starttls: false,
            ca_file: None,
            bind_dn: String::new(),
            bind_password: String::new(),
            user_base: String::new(),
            user_filter: "(uid={username})".into(),
            group_base: String::new(),
            group_filter: "(member={dn})".into(),
            group_name_attribute: "cn".into(),
            member_of_attribute: "memberOf".into(),
            admin_groups: Vec::new(),
            group_roles: Default::default(),
            remember_secs: 60,
            timeout_secs: 5,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            anonymous_pull: true,
            service: "berth".into(),
            issuer: "berth".into(),
            realm: String::new(),
            token_ttl_secs: 300,
            refresh_token_days: 90,
            max_failed_logins: 10,
            max_failed_logins_per_account: 100,
            lockout_secs: 300,
            ldap: LdapConfig::default(),
            oidc: OidcConfig::default(),
            sso_token_max_days: 0,
        }
    }
}

/// What one client may take of the server: sizes, and how long it may keep a connection,
/// a request head or a body waiting. Each refusal is cheap (before any handler runs, or the
/// connection is closed); see README, "Slow and abusive clients".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Seconds a client gets to send a request's whole head (request line and headers), from
    /// the connection's start or the previous response: slower ones are answered 408 and
    /// closed (slowloris; connections that never speak).
    pub client_request_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open between requests (0: keep-alive off).
    pub keep_alive_secs: u64,
    /// Seconds a connection gets to close cleanly after the server has ended it.
    pub client_disconnect_timeout_secs: u64,
    /// Open connections per worker thread (one per CPU core) before new ones wait in the
    /// listen queue.
    pub max_connections: usize,
    /// Seconds a request body may stall (no byte arrives) before it is cut off with 408; an
    /// upload session stays as it was before that chunk (0: no limit).
    pub body_timeout_secs: u64,
    /// Longest request target (path and query), in bytes: longer ones get 414.
    pub max_url_bytes: usize,
    /// Most headers in one request: more get 431 (at most 96, where the HTTP parser stops).
    pub max_header_count: usize,
    /// Most bytes of all headers' names and values together: more get 431 (at most about
    /// 128 KiB, the HTTP parser's buffer for a request head).
    pub max_header_bytes: usize,
    /// Threads each runtime (every HTTP worker's and the background tasks') keeps at most for
    /// blocking work: file reads that would wait for the disk, direct-I/O writes, `fdatasync`,
    /// hashing, password checks. Work beyond it waits its turn. Each thread holds a stack and
    /// its own allocator cache, so an unbounded pool on a slow disk grows the server for
    /// nothing (tokio's default is 512).
    pub max_blocking_threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:5000".into(),
            data_dir: PathBuf::from("./data"),
            database: DatabaseConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            mirror: MirrorConfig::default(),
            trusted_proxies: Vec::new(),
            metrics: MetricsConfig::default(),
            webhooks: WebhooksConfig::default(),
            replication: ReplicationConfig::default(),
            shutdown_timeout_secs: 30,
            gc: GcConfig::default(),
            tls: TlsConfig::default(),
            secret_key_file: String::new(),
            runtime: RuntimeConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: "filesystem".into(),
            path: String::new(),
            direct_io: true,
            s3: S3Config::default(),
            gcs: GcsConfig::default(),
            azure: AzureConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "text".into(), access: true }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            client_request_timeout_secs: 10,
            keep_alive_secs: 15,
            client_disconnect_timeout_secs: 5,
            max_connections: 10_000,
            body_timeout_secs: 60,
            max_url_bytes: 8192,
            max_header_count: 64,
            max_header_bytes: 32 * 1024,
            max_blocking_threads: 32,
        }
    }
}

impl Config {
    /// Loads defaults, the file (if given), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("BERTH_").split("__").ignore(&["config", "log"]));
        Ok(figment.extract()?)
    }

    /// The database URL, defaulting to SQLite in the data dir.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}?mode=rwc", self.data_dir.join("berth.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// The file of the key that seals secrets in the database (`src/seal.rs`).
    pub fn secret_key_path(&self) -> PathBuf {
        if self.secret_key_file.is_empty() {
            self.data_dir.join("secret.key")
        } else {
            PathBuf::from(&self.secret_key_file)
        }
    }

    /// The root of the filesystem blob store.
    pub fn storage_path(&self) -> PathBuf {
        if self.storage.path.is_empty() { self.data_dir.join("storage") } else { PathBuf::from(&self.storage.path) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("b.toml", "listen = \"127.0.0.1:1\"\n[log]\nlevel = \"debug\"\n")?;
            jail.set_env("BERTH_LOG__FORMAT", "json");
            jail.set_env("BERTH_DATA_DIR", "/srv/berth");
            jail.set_env("BERTH_LOG", "warn"); // the log filter variable, not a config key
            let c = Config::load(Some(Path::new("b.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:1");
            assert_eq!(c.log.level, "debug");
            assert_eq!(c.log.format, "json");
            assert_eq!(c.data_dir, PathBuf::from("/srv/berth"));
            assert!(c.database_url().starts_with("sqlite:///srv/berth/berth.db"));
            Ok(())
        });
    }

    #[test]
    fn acme_settings_are_checked_with_clear_errors() {
        let ok = |f: &dyn Fn(&mut TlsConfig)| {
            let mut tls = TlsConfig::default();
            tls.acme.domains = vec!["Registry.Example.com".into()];
            f(&mut tls);
            tls.acme.check(&tls).map_err(|e| e.to_string())
        };
        assert_eq!(ok(&|_| {}), Ok(()));
        assert_eq!(ok(&|t| t.acme.contact = vec!["mailto:ops@example.com".into()]), Ok(()));
        let err = |f: &dyn Fn(&mut TlsConfig), want: &str| {
            let e = ok(f).unwrap_err();
            assert!(e.contains(want), "{e}");
        };
        err(&|t| t.cert_file = "/x.pem".into(), "exclusive");
        err(&|t| t.acme.domains.push("*.example.com".into()), "wildcard");
        err(&|t| t.acme.domains.push("10.0.0.1".into()), "IP address");
        err(&|t| t.acme.domains.push("localhost".into()), "fully qualified");
        err(&|t| t.acme.domains.push("bad_name.example.com".into()), "no valid DNS name");
        err(&|t| t.acme.domains.push("registry.example.com".into()), "twice");
        err(&|t| t.acme.contact = vec!["ops@example.com".into()], "mailto:");
        err(&|t| t.acme.directory = "http://ca.example.com/dir".into(), "https://");
        err(&|t| t.acme.challenge = "dns-01".into(), "tls-alpn-01");
        err(&|t| t.acme.challenge = "http-01".into(), "tls.http_listen");
        err(&|t| t.acme.ca_file = "/nonexistent/ca.pem".into(), "ca_file");
        err(&|t| t.acme.renew_before_days = 0, "renew_before_days");
        err(&|t| t.acme.retry_max_secs = 1, "retry_initial_secs");
        err(
            &|t| {
                t.client_ca_file = "/ca.pem".into();
                t.client_auth = "required".into();
            },
            "http-01",
        );
        let mut tls = TlsConfig::default();
        assert!(!tls.enabled());
        tls.acme.domains = vec!["a.example.com".into()];
        assert!(tls.enabled());
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/berth.toml");
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.storage.kind, "filesystem");
        let d = Config::default();
        assert_eq!(c.tls.acme.directory, d.tls.acme.directory);
        assert_eq!(c.tls.acme.check_interval_secs, d.tls.acme.check_interval_secs);
        assert_eq!(c.tls.acme.retry_max_secs, d.tls.acme.retry_max_secs);
        assert!(!c.tls.enabled());
    }

    #[test]
    fn the_acme_example_loads_and_passes_the_checks() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/acme.toml");
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.tls.acme.domains, ["registry.example.com"]);
        assert_eq!(c.tls.acme.challenge().unwrap(), AcmeChallenge::TlsAlpn01);
        c.tls.acme.check(&c.tls).unwrap();
    }
}
