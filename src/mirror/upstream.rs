//! An upstream registry as a client: requests with the `Accept` headers a registry expects,
//! following its Bearer challenge to its token realm (anonymously or with configured
//! credentials) and reusing the token until it expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use crate::config::UpstreamConfig;
use crate::error::{RegistryError, Result};
use crate::oci::manifest::media;
pub use crate::remote::MANIFEST_ACCEPT;
use crate::remote::challenge_params;

pub struct Upstream {
    pub config: UpstreamConfig,
    client: reqwest::Client,
    /// Bearer tokens by scope, with when they stop being usable.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// An OAuth2 refresh token (docker's `identitytoken`), used instead of Basic credentials.
    refresh_token: Option<String>,
}

fn unavailable(name: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("upstream {name} is unavailable: {e}"))
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> anyhow::Result<Upstream> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.timeout_secs.clamp(1, 10)))
            .read_timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if !config.ca_file.is_empty() {
            // A private registry's CA, trusted besides the system's.
            let roots = crate::tls::certs::reqwest_roots(std::path::Path::new(&config.ca_file))
                .map_err(|e| anyhow::anyhow!("upstream {}: {e:#}", config.name))?;
            builder = builder.tls_certs_merge(roots);
        }
        if !config.client_cert_file.is_empty() {
            let (cert, key) =
                (std::path::Path::new(&config.client_cert_file), std::path::Path::new(&config.client_key_file));
            let identity = crate::tls::certs::reqwest_identity(cert, key)
                .map_err(|e| anyhow::anyhow!("upstream {}: {e:#}", config.name))?;
            builder = builder.identity(identity);
        }
        let client = builder.build()?;
        Ok(Upstream { config, client, tokens: Mutex::new(HashMap::new()), refresh_token: None })
    }

    /// Authenticates to the token realm with an OAuth2 refresh token (what `docker login`
    /// stores as `identitytoken`) rather than a password.
    pub fn with_refresh_token(mut self, token: Option<String>) -> Upstream {
        self.refresh_token = token.filter(|t| !t.is_empty());
        self
    }

    /// The repository name upstream for a name asked for here.
    pub fn remote_name(&self, name: &str) -> String {
        if self.config.library_prefix && !name.contains('/') { format!("library/{name}") } else { name.to_string() }
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.get(scope).filter(|(_, until)| Instant::now() < *until).map(|(t, _)| t.clone())
    }

    fn basic(&self) -> Option<String> {
        (!self.config.username.is_empty()).then(|| {
            let pair = format!("{}:{}", self.config.username, self.config.password);
            format!("Basic {}", data_encoding::BASE64.encode(pair.as_bytes()))
        })
    }

    /// Fetches a token from the challenge's realm.
    async fn fetch_token(&self, params: &HashMap<String, String>, scope: &str) -> Result<String> {
        let realm = params.get("realm").ok_or_else(|| unavailable(&self.config.name, "challenge without realm"))?;
        let mut query = vec![("scope", scope)];
        if let Some(service) = params.get("service") {
            query.push(("service", service.as_str()));
        }
        let req = if let Some(refresh) = &self.refresh_token {
            let mut form =
                vec![("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", "berth")];
            form.extend(query.iter().copied());
            let body = serde_urlencoded::to_string(&form).map_err(|e| unavailable(&self.config.name, e))?;
            self.client
                .post(realm)
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
        } else {
            let url = reqwest::Url::parse_with_params(realm, &query).map_err(|e| unavailable(&self.config.name, e))?;
            let mut req = self.client.get(url);
            if let Some(basic) = self.basic() {
                req = req.header(AUTHORIZATION, basic);
            }
            req
        };
        let resp = req.send().await.map_err(|e| unavailable(&self.config.name, e))?;
        if !resp.status().is_success() {
            return Err(unavailable(&self.config.name, format!("token endpoint answered {}", resp.status())));
        }
        let bytes = resp.bytes().await.map_err(|e| unavailable(&self.config.name, e))?;
        crate::oci::json::check_nesting(&bytes).map_err(|e| unavailable(&self.config.name, e))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| unavailable(&self.config.name, e))?;
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .ok_or_else(|| unavailable(&self.config.name, "token endpoint sent no token"))?
            .to_string();
        let ttl = body["expires_in"].as_u64().unwrap_or(60).max(10);
        let until = Instant::now() + Duration::from_secs(ttl.saturating_sub(5));
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(scope.to_string(), (token.clone(), until));
        Ok(token)
    }

    /// Sends a request for a repository's resource, answering the upstream's challenge once.
    pub async fn send(&self, method: Method, remote: &str, path: &str, accept: Option<&str>) -> Result<Response> {
        let url = format!("{}/v2/{remote}/{path}", self.config.url.trim_end_matches('/'));
        let scope = format!("repository:{remote}:pull");
        let build = |auth: Option<String>| {
            let mut req = self.client.request(method.clone(), &url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            req
        };
        let first_auth = self.cached_token(&scope).map(|t| format!("Bearer {t}"));
        let resp = build(first_auth).send().await.map_err(|e| unavailable(&self.config.name, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let auth = if let Some(params) = challenge_params(&challenge) {
            Some(format!("Bearer {}", self.fetch_token(&params, &scope).await?))
        } else if challenge.to_ascii_lowercase().starts_with("basic") {
            self.basic()
        } else {
            None
        };
        build(auth).send().await.map_err(|e| unavailable(&self.config.name, e))
    }

    /// Maps an upstream error status for a resource to the error to answer.
    pub fn status_error(&self, status: StatusCode, what: &str) -> RegistryError {
        match status {
            StatusCode::NOT_FOUND if what.starts_with("manifest") => {
                RegistryError::ManifestUnknown(format!("{what} unknown upstream ({})", self.config.name))
            }
            StatusCode::NOT_FOUND => {
                RegistryError::BlobUnknown(format!("{what} unknown upstream ({})", self.config.name))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                RegistryError::Denied(format!("upstream {} refused access to {what}", self.config.name))
            }
            StatusCode::TOO_MANY_REQUESTS => {
                RegistryError::TooManyRequests(format!("upstream {} is rate limiting", self.config.name))
            }
            other => unavailable(&self.config.name, format!("{what}: status {other}")),
        }
    }
}

/// Whether a content type is one of the manifest types Berth stores.
pub fn is_manifest_type(t: &str) -> bool {
    [media::DOCKER_MANIFEST, media::DOCKER_LIST, media::OCI_MANIFEST, media::OCI_INDEX].contains(&t)
}
