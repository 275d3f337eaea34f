//! Another registry as a client, for replication: requests that answer its challenge (a Bearer
//! token from its realm for the scope a request needs, fetched with Basic credentials and
//! reused until it expires, or Basic itself), wait out a `429` with its `Retry-After`, and the
//! operations a copy needs — does it have a blob or a manifest, a blob streamed up in one
//! upload (the bytes flow from Berth's store to the socket, never held whole), a manifest put
//! byte for byte, a manifest deleted — and, for pull rules, the other way: its catalog and tag
//! lists (paged through `Link`), a manifest read (size-capped), a blob streamed down, the
//! manifests that refer to one (the referrers API, else the `sha256-…` tag scheme).
//!
//! Whatever a remote sends back is bounded: an error body is read up to [`ERROR_BODY_MAX`], a
//! token answer up to [`TOKEN_BODY_MAX`], a manifest up to the caller's limit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::error::{RegistryError, Result};
use crate::storage::ByteStream;

/// Longest wait a `Retry-After` gets, and how often a request is tried while rate limited.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const RATE_LIMITED_TRIES: u32 = 4;
/// What a manifest request to another registry accepts: every type Berth stores.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// The `PATCH` chunk size where a remote refuses a blob in one request.
pub const DEFAULT_CHUNK_BYTES: usize = 16 << 20;
/// The most of an error answer read (and quoted in the error).
pub const ERROR_BODY_MAX: usize = 4096;
/// The most of a token endpoint's answer read.
pub const TOKEN_BODY_MAX: usize = 64 * 1024;
/// The most of a tag list or catalog page read.
const LIST_BODY_MAX: usize = 8 * 1024 * 1024;
/// Pages of a tag list or catalog followed at most, and entries kept at most.
const MAX_PAGES: usize = 1000;
const MAX_LIST_ENTRIES: usize = 200_000;

/// Reads at most `max` bytes of a response body; `Err` with what was read when it is longer.
pub async fn read_capped(resp: Response, max: usize) -> std::result::Result<Vec<u8>, String> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if body.len() + chunk.len() > max {
            return Err(format!("the answer is longer than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Bearer realm="...",service="...",scope="..."` → its parameters.
pub fn challenge_params(value: &str) -> Option<HashMap<String, String>> {
    let rest = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
    let mut params = HashMap::new();
    let mut s = rest;
    while let Some(eq) = s.find('=') {
        let key = s[..eq].trim().trim_start_matches(',').trim().to_string();
        s = &s[eq + 1..];
        let value = if let Some(stripped) = s.strip_prefix('"') {
            let end = stripped.find('"')?;
            let v = stripped[..end].to_string();
            s = &stripped[end + 1..];
            v
        } else {
            let end = s.find(',').unwrap_or(s.len());
            let v = s[..end].to_string();
            s = &s[end..];
            v
        };
        params.insert(key, value);
    }
    Some(params)
}

/// A remote registry.
pub struct Remote {
    /// `https://host[:port]`, no trailing slash.
    base: String,
    username: String,
    password: String,
    client: reqwest::Client,
    /// Bearer tokens by scope, with when they stop being usable.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Set once the remote refused a blob in one request (`413`): uploads go in `PATCH` chunks
    /// of `chunk_bytes` from then on.
    chunked: std::sync::atomic::AtomicBool,
    chunk_bytes: usize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("base", &self.base).field("username", &self.username).finish_non_exhaustive()
    }
}

fn unreachable(base: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("{base}: {e}"))
}

/// What a remote answered, as an error.
async fn refused(base: &str, what: &str, resp: Response) -> RegistryError {
    use futures_util::StreamExt;
    let status = resp.status();
    // Only the start of the body is read (and quoted): a remote cannot make us buffer more.
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while body.len() < ERROR_BODY_MAX {
        match stream.next().await {
            Some(Ok(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(300);
    let body = String::from_utf8_lossy(&body);
    let message = format!("{base}: {what} answered {status}: {}", body.trim());
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Denied(message),
        StatusCode::TOO_MANY_REQUESTS => RegistryError::TooManyRequests(message),
        _ => RegistryError::Unavailable(message),
    }
}

impl Remote {
    /// A client of the registry at `url` (`https://…`, or `http://…` for a registry on a
    /// trusted network), with credentials (empty `username`: anonymous) and an extra CA file.
    pub fn new(url: &str, username: &str, password: &str, ca_file: Option<&Path>) -> Result<Remote> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| RegistryError::Invalid(format!("target URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(RegistryError::Invalid(format!("target URL {url:?}: http:// or https:// with a host")));
        }
        // Credentials belong in the username and secret (sealed), never in a URL that is shown.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(RegistryError::Invalid(
                "a target URL may not carry credentials: give a username and secret instead".into(),
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(RegistryError::Invalid(format!("target URL {url:?}: no query or fragment")));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("berth-replication/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca_file {
            let roots = crate::tls::certs::reqwest_roots(ca)
                .map_err(|e| RegistryError::Invalid(format!("CA file {}: {e:#}", ca.display())))?;
            builder = builder.tls_certs_merge(roots);
        }
        let client = builder.build().map_err(|e| RegistryError::internal("building an HTTP client", e))?;
        Ok(Remote {
            base: url.trim_end_matches('/').to_string(),
            username: username.to_string(),
            password: password.to_string(),
            client,
            tokens: Mutex::new(HashMap::new()),
            chunked: std::sync::atomic::AtomicBool::new(false),
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        })
    }

    /// The size of the `PATCH` chunks used where the remote refuses a blob in one request.
    pub fn with_chunk_bytes(mut self, n: usize) -> Remote {
        self.chunk_bytes = n.max(1024);
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn basic(&self) -> Option<String> {
        (!self.username.is_empty()).then(|| {
            let pair = format!("{}:{}", self.username, self.password);
            format!("Basic {}", data_encoding::BASE64.encode(pair.as_bytes()))
        })
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.get(scope).filter(|(_, until)| Instant::now() < *until).map(|(t, _)| format!("Bearer {t}"))
    }

    /// A token from the challenge's realm for `scope`.
    async fn fetch_token(&self, params: &HashMap<String, String>, scope: &str) -> Result<String> {
        let realm = params.get("realm").ok_or_else(|| unreachable(&self.base, "a challenge without a realm"))?;
        // Several scopes (a mount needs two) go as several `scope` parameters.
        let mut query: Vec<(&str, &str)> = scope.split(' ').map(|s| ("scope", s)).collect();
        if let Some(service) = params.get("service") {
            query.push(("service", service.as_str()));
        }
        let url = reqwest::Url::parse_with_params(realm, &query).map_err(|e| unreachable(&self.base, e))?;
        // The credentials go to the realm: never in clear text from an HTTPS target.
        if url.scheme() != "https" && self.base.starts_with("https:") {
            return Err(unreachable(&self.base, format!("a token realm without TLS: {realm}")));
        }
        let mut req = self.client.get(url);
        if let Some(basic) = self.basic() {
            req = req.header(AUTHORIZATION, basic);
        }
        let resp = req.send().await.map_err(|e| unreachable(&self.base, e))?;
        if !resp.status().is_success() {
            return Err(refused(&self.base, "the token endpoint", resp).await);
        }
        let bytes = read_capped(resp, TOKEN_BODY_MAX).await.map_err(|e| unreachable(&self.base, e))?;
        crate::oci::json::check_nesting(&bytes).map_err(|e| unreachable(&self.base, e))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| unreachable(&self.base, e))?;
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .ok_or_else(|| unreachable(&self.base, "the token endpoint sent no token"))?
            .to_string();
        let ttl = body["expires_in"].as_u64().unwrap_or(60).max(10);
        let until = Instant::now() + Duration::from_secs(ttl.saturating_sub(5));
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(scope.to_string(), (token.clone(), until));
        Ok(token)
    }

    /// Sends a replayable request (`build` makes it again for each try) with the credentials
    /// `scope` needs: the cached token, else whatever the remote's challenge asks for; a `429`
    /// waits its `Retry-After` (at most a minute) and tries again.
    async fn send(&self, scope: &str, build: impl Fn() -> RequestBuilder) -> Result<Response> {
        let mut auth = self.cached_token(scope);
        let mut answered_challenge = false;
        for _ in 0..RATE_LIMITED_TRIES {
            let mut req = build();
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| unreachable(&self.base, e))?;
            match resp.status() {
                StatusCode::UNAUTHORIZED if !answered_challenge => {
                    answered_challenge = true;
                    let challenge =
                        resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    auth = if let Some(params) = challenge_params(&challenge) {
                        Some(format!("Bearer {}", self.fetch_token(&params, scope).await?))
                    } else {
                        self.basic()
                    };
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(&resp);
                    tracing::info!(remote = %self.base, wait_secs = wait.as_secs(), "rate limited: waiting");
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(resp),
            }
        }
        Err(RegistryError::TooManyRequests(format!(
            "{}: still rate limited after {RATE_LIMITED_TRIES} tries",
            self.base
        )))
    }

    fn url(&self, repo: &str, path: &str) -> String {
        format!("{}/v2/{repo}/{path}", self.base)
    }

    fn push_scope(repo: &str) -> String {
        format!("repository:{repo}:pull,push")
    }

    fn pull_scope(repo: &str) -> String {
        format!("repository:{repo}:pull")
    }

    /// Follows a list through its `Link: <…>; rel="next"` pages, collecting `field`.
    async fn list(&self, scope: &str, first: String, field: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut url = first;
        for _ in 0..MAX_PAGES {
            let resp = self.send(scope, || self.client.get(&url)).await?;
            if resp.status() == StatusCode::NOT_FOUND && field == "tags" && out.is_empty() {
                return Err(RegistryError::NameUnknown(format!("{}: no repository at {url}", self.base)));
            }
            if !resp.status().is_success() {
                return Err(refused(&self.base, &format!("GET {}", url.trim_start_matches(&self.base)), resp).await);
            }
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link)
                .map(|l| if l.starts_with('/') { format!("{}{l}", self.base) } else { l });
            let body = read_capped(resp, LIST_BODY_MAX).await.map_err(|e| unreachable(&self.base, e))?;
            crate::oci::json::check_nesting(&body).map_err(|e| unreachable(&self.base, e))?;
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| unreachable(&self.base, format!("a {field} list: {e}")))?;
            out.extend(value[field].as_array().into_iter().flatten().filter_map(|v| v.as_str()).map(String::from));
            if out.len() > MAX_LIST_ENTRIES {
                return Err(unreachable(&self.base, format!("more than {MAX_LIST_ENTRIES} {field}")));
            }
            match next {
                // Only pages of the same registry are followed; a list cut short is an error,
                // never taken for the whole list.
                Some(n) if n.starts_with(&format!("{}/v2/", self.base)) => url = n,
                Some(n) => return Err(unreachable(&self.base, format!("a {field} page elsewhere: {n}"))),
                None => return Ok(out),
            }
        }
        Err(unreachable(&self.base, format!("more than {MAX_PAGES} pages of {field}")))
    }

    /// Every repository the remote lists (`/v2/_catalog`; registries that do not offer it
    /// answer an error, and a rule then names its repositories without `*`).
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let url = format!("{}/v2/_catalog?n=1000", self.base);
        self.list("registry:catalog:*", url, "repositories").await
    }

    /// Every valid tag of a remote repository (`None` when the repository does not exist).
    pub async fn tags(&self, repo: &str) -> Result<Option<Vec<String>>> {
        match self.list(&Self::pull_scope(repo), self.url(repo, "tags/list?n=1000"), "tags").await {
            Ok(tags) => Ok(Some(tags.into_iter().filter(|t| crate::oci::validate_tag(t).is_ok()).collect())),
            Err(RegistryError::NameUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A manifest by tag or digest: its media type, digest and bytes (`None`: not there). The
    /// bytes are checked against the digest asked for, or the one the remote announces.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &str,
        max: usize,
    ) -> Result<Option<(String, String, Vec<u8>)>> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let resp = self
            .send(&Self::pull_scope(repo), || self.client.get(&url).header(reqwest::header::ACCEPT, accept))
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            s if !s.is_success() => return Err(refused(&self.base, &format!("GET manifest {reference}"), resp).await),
            _ => {}
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| crate::oci::manifest::bare_media_type(v).to_string())
            .unwrap_or_default();
        let announced = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(String::from);
        let body = read_capped(resp, max)
            .await
            .map_err(|e| unreachable(&self.base, format!("manifest {repo}:{reference}: {e}")))?;
        let expected = if reference.contains(':') { Some(reference.to_string()) } else { announced };
        let actual = match &expected {
            Some(e) => {
                let want = e.parse::<crate::oci::Digest>()?;
                let got = want.same_algorithm_of(&body);
                if got != want {
                    return Err(RegistryError::DigestInvalid(format!(
                        "{}: manifest {repo}:{reference} is {got}, not {want}",
                        self.base
                    )));
                }
                got.to_string()
            }
            None => crate::oci::Digest::sha256_of(&body).to_string(),
        };
        Ok(Some((media_type, actual, body)))
    }

    /// A blob, streamed: its announced length and its bytes (the caller verifies the digest).
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<(Option<u64>, futures_util::stream::BoxStream<'static, Result<bytes::Bytes>>)> {
        use futures_util::StreamExt;
        let url = self.url(repo, &format!("blobs/{digest}"));
        let resp = self.send(&Self::pull_scope(repo), || self.client.get(&url)).await?;
        if !resp.status().is_success() {
            return Err(refused(&self.base, &format!("GET blob {digest}"), resp).await);
        }
        let size = resp.content_length();
        let base = self.base.clone();
        let body = resp.bytes_stream().map(move |c| c.map_err(|e| unreachable(&base, e)));
        Ok((size, Box::pin(body)))
    }

    /// The digests of the manifests whose `subject` is `digest`: the referrers API, else the
    /// index tagged `sha256-<hex>` (the OCI 1.1 fallback), else none.
    pub async fn referrers(&self, repo: &str, digest: &str, max: usize) -> Result<Vec<String>> {
        const INDEX: &str = "application/vnd.oci.image.index.v1+json";
        let url = self.url(repo, &format!("referrers/{digest}"));
        let resp = self.send(&Self::pull_scope(repo), || self.client.get(&url)).await?;
        let body = if resp.status().is_success()
            && resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with(INDEX))
        {
            read_capped(resp, max).await.map_err(|e| unreachable(&self.base, e))?
        } else if resp.status() == StatusCode::NOT_FOUND || resp.status().is_success() {
            let tag = digest.replacen(':', "-", 1);
            match self.get_manifest(repo, &tag, INDEX, max).await {
                Ok(Some((_, _, b))) => b,
                Ok(None) | Err(RegistryError::Unavailable(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        } else {
            return Err(refused(&self.base, &format!("GET referrers of {digest}"), resp).await);
        };
        crate::oci::json::check_nesting(&body).map_err(|e| unreachable(&self.base, e))?;
        let index: serde_json::Value = serde_json::from_slice(&body).map_err(|e| unreachable(&self.base, e))?;
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["digest"].as_str())
            .filter(|d| d.parse::<crate::oci::Digest>().is_ok())
            .map(String::from)
            .collect())
    }

    /// `GET /v2/` with the credentials: whether the remote is there and lets us in.
    pub async fn check(&self, repo_for_scope: &str) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let resp = self.send(&Self::push_scope(repo_for_scope), || self.client.get(&url)).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(refused(&self.base, "GET /v2/", resp).await)
    }

    /// Whether the remote repository has the blob.
    pub async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = self.url(repo, &format!("blobs/{digest}"));
        let resp = self.send(&Self::push_scope(repo), || self.client.head(&url)).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(refused(&self.base, "HEAD blob", resp).await),
        }
    }

    /// Whether the remote repository has the manifest (by digest or tag), and its digest.
    pub async fn manifest_digest(&self, repo: &str, reference: &str, accept: &str) -> Result<Option<String>> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let resp = self
            .send(&Self::push_scope(repo), || self.client.head(&url).header(reqwest::header::ACCEPT, accept))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
                .or_else(|| reference.starts_with("sha256:").then(|| reference.to_string()))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(refused(&self.base, "HEAD manifest", resp).await),
        }
    }

    /// At a source (pull credentials): whether it has the manifest (`None`: a 404), and its
    /// digest if it says (`Some(None)`: there, digest not announced).
    pub async fn source_manifest(&self, repo: &str, reference: &str, accept: &str) -> Result<Option<Option<String>>> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let resp = self
            .send(&Self::pull_scope(repo), || self.client.head(&url).header(reqwest::header::ACCEPT, accept))
            .await?;
        match resp.status() {
            s if s.is_success() => {
                Ok(Some(resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(String::from)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(refused(&self.base, "HEAD manifest", resp).await),
        }
    }

    /// Uploads a blob in one request: `POST` opens the upload (where the token is fetched), the
    /// `PUT` streams `body` (`size` bytes) and names the digest, which the remote verifies.
    pub async fn push_blob(&self, repo: &str, digest: &str, size: u64, body: ByteStream) -> Result<()> {
        match self.start_upload(repo, digest, None).await? {
            Some(location) => self.finish_upload(repo, &location, digest, size, body).await,
            None => Ok(()),
        }
    }

    /// Opens an upload in `repo` — or, with `mount_from` (another repository at the remote that
    /// may hold the blob), asks the remote to mount the blob from there: `None` when it did (no
    /// bytes to send), else the upload's location.
    pub async fn start_upload(&self, repo: &str, digest: &str, mount_from: Option<&str>) -> Result<Option<String>> {
        let (scope, start_url) = match mount_from {
            Some(from) => (
                format!("{} {}", Self::push_scope(repo), Self::pull_scope(from)),
                reqwest::Url::parse_with_params(
                    &self.url(repo, "blobs/uploads/"),
                    &[("mount", digest), ("from", from)],
                )
                .map_err(|e| unreachable(&self.base, e))?
                .to_string(),
            ),
            None => (Self::push_scope(repo), self.url(repo, "blobs/uploads/")),
        };
        let resp = self.send(&scope, || self.client.post(&start_url).header(CONTENT_LENGTH, "0")).await?;
        match resp.status() {
            StatusCode::CREATED if mount_from.is_some() => return Ok(None),
            StatusCode::ACCEPTED => {}
            _ => return Err(refused(&self.base, "starting an upload", resp).await),
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unreachable(&self.base, "an upload without a Location"))?;
        Ok(Some(location.to_string()))
    }

    /// Streams a blob into an upload opened by [`Remote::start_upload`]: one `PUT` naming the
    /// digest (which the remote verifies), or — once the remote has refused that with `413` —
    /// `PATCH` chunks of `chunk_bytes` and a closing `PUT`.
    pub async fn finish_upload(
        &self,
        repo: &str,
        location: &str,
        digest: &str,
        size: u64,
        body: ByteStream,
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.chunked.load(Ordering::Relaxed) {
            return self.finish_chunked(repo, location, digest, body).await;
        }
        let scope = Self::push_scope(repo);
        let mut put_url = self.upload_url(location)?;
        put_url.query_pairs_mut().append_pair("digest", digest);
        let mut req = self
            .client
            .put(put_url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size.to_string())
            .body(reqwest::Body::wrap_stream(body));
        if let Some(a) = self.cached_token(&scope).or_else(|| self.basic()) {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = req.send().await.map_err(|e| unreachable(&self.base, e))?;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            // The body cannot be sent again from here: wait what the target asks, then let the
            // job try again (its blobs already there are skipped).
            let wait = retry_after(&resp);
            tracing::info!(remote = %self.base, wait_secs = wait.as_secs(), "rate limited during an upload: waiting");
            tokio::time::sleep(wait).await;
            return Err(RegistryError::TooManyRequests(format!("{}: uploading {digest}: rate limited", self.base)));
        }
        if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
            self.chunked.store(true, Ordering::Relaxed);
            tracing::info!(remote = %self.base, size, chunk = self.chunk_bytes, "a blob in one request was too large: uploading in chunks from now on");
            return Err(RegistryError::Unavailable(format!(
                "{}: refused {digest} ({size} bytes) in one request; later attempts upload it in chunks of {} bytes",
                self.base, self.chunk_bytes
            )));
        }
        if resp.status() != StatusCode::CREATED {
            return Err(refused(&self.base, &format!("uploading {digest}"), resp).await);
        }
        Ok(())
    }

    /// An upload's `Location`, which must stay on the target (its credentials go with it).
    fn upload_url(&self, location: &str) -> Result<reqwest::Url> {
        let base = reqwest::Url::parse(&self.base).map_err(|e| unreachable(&self.base, e))?;
        let url =
            base.join(location).map_err(|e| unreachable(&self.base, format!("upload location {location:?}: {e}")))?;
        if url.origin() != base.origin() {
            return Err(unreachable(&self.base, format!("an upload location on another host: {location:?}")));
        }
        Ok(url)
    }

    /// `PATCH` chunks (each with its `Content-Range`, following the `Location` each answer
    /// gives), then the closing `PUT ?digest=`.
    async fn finish_chunked(&self, repo: &str, location: &str, digest: &str, mut body: ByteStream) -> Result<()> {
        use futures_util::StreamExt;
        let scope = Self::push_scope(repo);
        let mut location = location.to_string();
        let mut offset: u64 = 0;
        let mut buf = bytes::BytesMut::new();
        let mut ended = false;
        while !ended {
            while buf.len() < self.chunk_bytes {
                match body.next().await {
                    Some(chunk) => {
                        buf.extend_from_slice(&chunk.map_err(|e| RegistryError::internal("reading a blob", e))?)
                    }
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            while buf.len() >= self.chunk_bytes || (ended && !buf.is_empty()) {
                let take = buf.len().min(self.chunk_bytes);
                let chunk = buf.split_to(take).freeze();
                let end = offset + chunk.len() as u64 - 1;
                let url = self.upload_url(&location)?;
                let resp = self
                    .send(&scope, || {
                        self.client
                            .patch(url.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_LENGTH, chunk.len().to_string())
                            .header("content-range", format!("{offset}-{end}"))
                            .body(chunk.clone())
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(refused(&self.base, &format!("uploading a chunk of {digest}"), resp).await);
                }
                if let Some(next) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                    location = next.to_string();
                }
                offset = end + 1;
            }
        }
        let mut put_url = self.upload_url(&location)?;
        put_url.query_pairs_mut().append_pair("digest", digest);
        let resp = self.send(&scope, || self.client.put(put_url.clone()).header(CONTENT_LENGTH, "0")).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(refused(&self.base, &format!("closing the upload of {digest}"), resp).await);
        }
        Ok(())
    }

    /// Puts a manifest byte for byte under `reference` (a tag or its digest).
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Result<()> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .send(&Self::push_scope(repo), || self.client.put(&url).header(CONTENT_TYPE, media_type).body(body.clone()))
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(refused(&self.base, &format!("putting manifest {reference}"), resp).await);
        }
        Ok(())
    }

    /// Deletes a manifest by digest or tag.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> Result<Deleted> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let scope = format!("repository:{repo}:pull,push,delete");
        let resp = self.send(&scope, || self.client.request(Method::DELETE, &url)).await?;
        match resp.status() {
            s if s.is_success() => Ok(Deleted::Yes),
            StatusCode::NOT_FOUND => Ok(Deleted::Absent),
            // The plain registry refuses a tag (it deletes by digest only).
            StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED if !reference.contains(':') => {
                Ok(Deleted::Unsupported)
            }
            _ => Err(refused(&self.base, &format!("deleting {reference}"), resp).await),
        }
    }
}

/// What a delete at a remote came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Yes,
    /// It was not there.
    Absent,
    /// The remote does not delete by tag.
    Unsupported,
}

/// How long a `429` asks to wait (`Retry-After` in seconds; 1 s without one; at most a minute).
fn retry_after(resp: &Response) -> Duration {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER)
}

/// The target of a `Link` header's `rel="next"`.
fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_next_links() {
        assert_eq!(
            next_link(r#"</v2/app/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/app/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(r#"<https://x/a>; rel="prev""#), None);
    }

    #[test]
    fn parses_challenges() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        assert!(challenge_params("Basic realm=\"x\"").is_none());
    }

    #[test]
    fn target_urls_are_checked() {
        assert!(Remote::new("https://registry.example.com/", "", "", None).is_ok());
        assert_eq!(
            Remote::new("https://registry.example.com/", "", "", None).unwrap().base(),
            "https://registry.example.com"
        );
        for bad in
            ["ftp://x", "registry.example.com", "https://", "", "https://u:p@registry.example.com", "https://u@x"]
        {
            assert!(Remote::new(bad, "", "", None).is_err(), "{bad}");
        }
    }
}
