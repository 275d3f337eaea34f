//! The typed HTTP client of the suites. A [`Reg`] talks to one registry (a [`Berth`], or any
//! registry by URL) as one identity ([`Creds`]); [`Reg::with`] gives the same connections as
//! another identity. It has a method for each door: the token endpoint, blobs and upload
//! sessions, manifests, and the `/api/v1` management API.
//!
//! Methods named for something that must work (`blob`, `upload`, `push_image`, `seed`, `token`,
//! `api_ok`, `served`, `gc`) assert that it did; the others return the response for the test
//! to judge.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use super::images::{BlobRef, Image, MANIFEST_ACCEPT, OCI_MANIFEST, image_manifest, tiny};
use super::{ADMIN_PASSWORD, Berth, sha256};

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Creds {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl Creds {
    pub fn basic(user: &str, secret: &str) -> Creds {
        Creds::Basic(user.to_string(), secret.to_string())
    }

    /// The admin of [`Berth::start_auth`] servers.
    pub fn admin() -> Creds {
        Creds::basic("admin", ADMIN_PASSWORD)
    }

    pub fn bearer(token: &str) -> Creds {
        Creds::Bearer(token.to_string())
    }

    pub fn apply(&self, rb: RequestBuilder) -> RequestBuilder {
        match self {
            Creds::Anonymous => rb,
            Creds::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Creds::Bearer(t) => rb.bearer_auth(t),
        }
    }
}

/// How [`Reg::blob`] uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Uploads {
    /// One `POST ...?digest=` with the body (Berth).
    Monolithic,
    /// `POST`, then `PUT ...?digest=` with the body: what every registry takes.
    PostThenPut,
}

/// A client of one registry as one identity.
#[derive(Clone)]
pub struct Reg {
    /// The HTTP client (by default [`super::client`]: no redirects followed).
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// What every request carries.
    pub creds: Creds,
    uploads: Uploads,
}

impl Reg {
    /// An anonymous client of `b`.
    pub fn new(b: &Berth) -> Reg {
        Reg::at(&b.base)
    }

    /// The admin of `b` (a [`Berth::start_auth`] server, or any with `ADMIN_PASSWORD` set).
    pub fn admin(b: &Berth) -> Reg {
        Reg::new(b).with(&Creds::admin())
    }

    /// An anonymous client of the registry at `base` (`http://host:port`).
    pub fn at(base: &str) -> Reg {
        Reg { http: super::client(), base: base.to_string(), creds: Creds::Anonymous, uploads: Uploads::Monolithic }
    }

    /// A client of a registry that is not Berth: [`Reg::blob`] uploads with `POST` then `PUT`
    /// (Distribution's `docker-registry` has no monolithic `POST`).
    pub fn foreign(base: &str) -> Reg {
        Reg { uploads: Uploads::PostThenPut, ..Reg::at(base) }
    }

    /// The same registry and connections, as `creds`.
    pub fn with(&self, creds: &Creds) -> Reg {
        Reg { creds: creds.clone(), ..self.clone() }
    }

    /// The same, through another HTTP client (a local address, other pool settings).
    pub fn with_http(self, http: reqwest::Client) -> Reg {
        Reg { http, ..self }
    }

    /// `path` (from `/`) on this registry; an absolute URL stays as it is.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// A request with this client's credentials.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.creds.apply(self.http.request(method, self.url(path)))
    }

    pub async fn send(&self, method: Method, path: &str) -> Response {
        self.req(method, path).send().await.unwrap()
    }

    pub async fn status(&self, method: Method, path: &str) -> StatusCode {
        self.send(method, path).await.status()
    }

    // ---- the token endpoint ------------------------------------------------------------------

    /// `GET /token?service=berth` for `scopes`, with extra query parameters.
    pub async fn token_response(&self, scopes: &[&str], extra: &[(&str, &str)]) -> Response {
        let mut q: Vec<(&str, &str)> = vec![("service", "berth")];
        q.extend(scopes.iter().map(|s| ("scope", *s)));
        q.extend_from_slice(extra);
        self.send(Method::GET, &format!("/token?{}", serde_urlencoded::to_string(&q).unwrap())).await
    }

    /// A registry token for `scopes` through `GET /token` (which must answer 200).
    pub async fn token(&self, scopes: &[&str]) -> String {
        let r = self.token_response(scopes, &[]).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "GET /token {scopes:?} as {:?}: {body}", self.creds);
        body["token"].as_str().expect("a token").to_string()
    }

    /// `POST /token` with an urlencoded form (the OAuth2 grants; the form carries the
    /// credentials, the request none).
    pub async fn post_token(&self, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// A stored login as docker and containerd make one: `POST /token` with the password grant
    /// and `access_type=offline` for `scope` (must answer 200); the refresh token.
    pub async fn offline_login(&self, user: &str, password: &str, scope: &str) -> String {
        let r = self
            .post_token(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", password),
                ("scope", scope),
                ("access_type", "offline"),
                ("service", "berth"),
            ])
            .await;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "password grant for {user}: {body}");
        body["refresh_token"].as_str().expect("a refresh token").to_string()
    }

    /// `POST /token` with the refresh-token grant (docker's stored login) for `scope`.
    pub async fn refresh_grant(&self, refresh_token: &str, scope: &str) -> Response {
        self.post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("scope", scope),
            ("service", "berth"),
        ])
        .await
    }

    // ---- blobs and upload sessions -----------------------------------------------------------

    /// A monolithic blob upload: `POST /v2/REPO/blobs/uploads/?digest=` with the bytes.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Response {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(data));
        self.req(Method::POST, &path).body(data.to_vec()).send().await.unwrap()
    }

    /// Uploads a blob that must be stored (201); returns its digest.
    pub async fn blob(&self, repo: &str, data: &[u8]) -> String {
        if self.uploads == Uploads::PostThenPut {
            return self.upload(repo, data).await;
        }
        let r = self.push_blob(repo, data).await;
        let status = r.status();
        assert_eq!(status, StatusCode::CREATED, "push blob to {repo}: {}", r.text().await.unwrap());
        sha256(data)
    }

    /// `POST /v2/REPO/blobs/uploads/`: a new upload session.
    pub async fn start_upload(&self, repo: &str) -> Response {
        self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).await
    }

    /// A chunk of an upload session (`Content-Range` when given).
    pub async fn patch_upload(&self, location: &str, data: &[u8], range: Option<&str>) -> Response {
        let mut rb = self.req(Method::PATCH, location).body(data.to_vec());
        if let Some(range) = range {
            rb = rb.header("content-range", range);
        }
        rb.send().await.unwrap()
    }

    /// The closing `PUT` of an upload session with `digest` and a last chunk (may be empty).
    pub async fn finish_upload(&self, location: &str, digest: &str, data: &[u8]) -> Response {
        let sep = if location.contains('?') { '&' } else { '?' };
        self.req(Method::PUT, &format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Uploads a blob with a session (`POST`, then `PUT` with the bytes), which must be stored;
    /// returns its digest.
    pub async fn upload(&self, repo: &str, data: &[u8]) -> String {
        let r = self.start_upload(repo).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "start an upload to {repo}");
        let location = header(&r, "location");
        let digest = sha256(data);
        let r = self.finish_upload(&location, &digest, data).await;
        let status = r.status();
        assert_eq!(status, StatusCode::CREATED, "PUT {location}: {}", r.text().await.unwrap());
        digest
    }

    /// A blob that must be served (200) with the bytes of its digest.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let r = self.send(Method::GET, &path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        let bytes = r.bytes().await.unwrap().to_vec();
        assert_eq!(sha256(&bytes), digest, "GET {path}");
        bytes
    }

    // ---- manifests ---------------------------------------------------------------------------

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// `GET` of an OCI image manifest.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Response {
        self.req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap()
    }

    /// Puts an OCI image manifest over `blobs` (the first is the config).
    pub async fn put_image_manifest(&self, repo: &str, reference: &str, blobs: &[BlobRef]) -> Response {
        let body = serde_json::to_vec(&image_manifest(OCI_MANIFEST, &blobs[0], &blobs[1..])).unwrap();
        self.put_manifest(repo, reference, OCI_MANIFEST, &body).await
    }

    /// Uploads an image's blobs ([`Reg::blob`]).
    pub async fn push_blobs(&self, repo: &str, image: &Image) {
        self.blob(repo, &image.config).await;
        for layer in &image.layers {
            self.blob(repo, layer).await;
        }
    }

    /// Pushes an image as `repo:reference` (blobs and manifest must be stored); returns the
    /// manifest's digest.
    pub async fn push_image(&self, repo: &str, reference: &str, image: &Image) -> String {
        self.push_blobs(repo, image).await;
        let r = self.put_manifest(repo, reference, image.media_type, &image.manifest()).await;
        let status = r.status();
        assert_eq!(status, StatusCode::CREATED, "manifest {repo}:{reference}: {}", r.text().await.unwrap());
        image.digest()
    }

    /// Pushes [`tiny`]`(repo)` noted `seed` as `repo:reference`; returns it, to build more
    /// manifests over its blobs ([`Image::with_note`]).
    pub async fn seed(&self, repo: &str, reference: &str) -> Image {
        let image = tiny(repo).with_note("seed");
        self.push_image(repo, reference, &image).await;
        image
    }

    /// A manifest as the registry serves it: `HEAD` and `GET` must answer 200 with the same
    /// `Docker-Content-Digest`, which the bytes must hash to.
    pub async fn served(&self, repo: &str, reference: &str) -> Served {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let head = self.req(Method::HEAD, &path).header("accept", MANIFEST_ACCEPT).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "HEAD {path}");
        let head_digest = header(&head, "docker-content-digest");
        let r = self.req(Method::GET, &path).header("accept", MANIFEST_ACCEPT).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        let digest = header(&r, "docker-content-digest");
        let media_type = header(&r, "content-type");
        let bytes = r.bytes().await.unwrap().to_vec();
        assert_eq!(sha256(&bytes), digest, "GET {path}: the body does not hash to Docker-Content-Digest");
        assert_eq!(head_digest, digest, "HEAD and GET {path} disagree");
        let json = serde_json::from_slice(&bytes).unwrap();
        Served { digest, media_type, json, bytes }
    }

    // ---- the management API --------------------------------------------------------------------

    /// A JSON call of the management API; the status and the body (`null` when empty).
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut rb = self.req(method, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A management API call that must succeed; its body.
    pub async fn api_ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.api(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path} as {:?}: {status} {v}", self.creds);
        v
    }

    /// Creates a user (as the admin, whoever this client is).
    pub async fn create_user(&self, name: &str, password: &str) {
        let body = json!({"name": name, "password": password});
        self.with(&Creds::admin()).api_ok(Method::POST, "/api/v1/users", Some(body)).await;
    }

    /// `POST /api/v1/gc` (must answer 200); the report.
    pub async fn gc(&self, dry_run: bool) -> Value {
        let r = self.send(Method::POST, &format!("/api/v1/gc?dry_run={dry_run}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

/// A manifest as a registry serves it ([`Reg::served`]).
pub struct Served {
    pub digest: String,
    pub media_type: String,
    pub json: Value,
    pub bytes: Vec<u8>,
}

impl Served {
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The digests of its layers.
    pub fn layers(&self) -> Vec<String> {
        self.json["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A response header as text (empty when absent).
pub fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// Status, error code (the first `errors[].code`, if any) and challenge of an error response.
pub async fn error_of(r: Response) -> (StatusCode, String, String) {
    let status = r.status();
    let challenge = header(&r, "www-authenticate");
    let body: Value = r.json().await.unwrap_or_default();
    let code = body["errors"][0]["code"].as_str().unwrap_or_default().to_string();
    (status, code, challenge)
}

/// The actions a registry token grants on `repository` (from its claims, not verified).
pub fn jwt_actions(jwt: &str, repository: &str) -> Vec<String> {
    let claims = jwt_claims(jwt);
    let access = claims["access"].as_array().cloned().unwrap_or_default();
    access
        .iter()
        .filter(|a| a["name"] == repository)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// The claims of a JWT (not verified).
pub fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&data_encoding::BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap()).unwrap()
}
