//! Authentication and authorisation end to end, with real clients against a real `berth serve`:
//! the docker engine (`docker login`, push, pull), skopeo (`--creds`), the containerd-style
//! OAuth2 `POST /token` flow and plain HTTP through the Docker token flow.
//!
//! Every test starts its own server (so its own port, database and login throttling). Docker
//! login state lives in a per-test `DOCKER_CONFIG` directory, so parallel tests never share a
//! `config.json`. Needs what `docker_e2e` and `skopeo_e2e` need (docker daemon, busybox-static,
//! skopeo, tar, curl); a missing tool is a failure, not a skip.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::docker::{
    DockerClient, Images, build_image, docker, import_busybox, local_name, pushed_digest, require_tools,
};
use common::{ADMIN_PASSWORD, Berth, client, sha256};
use data_encoding::BASE64URL_NOPAD;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

// ---- HTTP helpers ------------------------------------------------------------------------------

/// How a request authenticates.
#[derive(Clone, Debug)]
enum Creds {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl Creds {
    fn basic(user: &str, secret: &str) -> Creds {
        Creds::Basic(user.to_string(), secret.to_string())
    }

    fn admin() -> Creds {
        Creds::basic("admin", ADMIN_PASSWORD)
    }

    fn bearer(token: &str) -> Creds {
        Creds::Bearer(token.to_string())
    }

    fn apply(&self, rb: RequestBuilder) -> RequestBuilder {
        match self {
            Creds::Anonymous => rb,
            Creds::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Creds::Bearer(t) => rb.bearer_auth(t),
        }
    }
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address works on Linux), to tell
/// per-address from per-account login throttling.
fn client_from(ip: &str) -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(Some(ip.parse().unwrap()))
        .build()
        .unwrap()
}

fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// Status, error code (first `errors[].code`, if any) and challenge of an error response.
async fn error_of(r: Response) -> (StatusCode, String, String) {
    let status = r.status();
    let challenge = header(&r, "www-authenticate");
    let body: Value = r.json().await.unwrap_or_default();
    let code = body["errors"][0]["code"].as_str().unwrap_or_default().to_string();
    (status, code, challenge)
}

/// The claims of a JWT (not verified).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap()).unwrap()
}

/// A registry server plus an HTTP client.
struct Reg {
    c: Client,
    base: String,
}

impl Reg {
    fn new(b: &Berth) -> Reg {
        Reg { c: client(), base: b.base.clone() }
    }

    fn with_client(b: &Berth, c: Client) -> Reg {
        Reg { c, base: b.base.clone() }
    }

    fn req(&self, method: Method, path: &str, creds: &Creds) -> RequestBuilder {
        creds.apply(self.c.request(method, format!("{}{path}", self.base)))
    }

    /// A JSON management API call; returns the status and the body (`null` when empty).
    async fn api(&self, method: Method, path: &str, creds: &Creds, body: Option<Value>) -> (StatusCode, Value) {
        let mut rb = self.req(method, path, creds);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A management API call that must succeed.
    async fn api_ok(&self, method: Method, path: &str, creds: &Creds, body: Option<Value>) -> Value {
        let (status, v) = self.api(method.clone(), path, creds, body).await;
        assert!(status.is_success(), "{method} {path} as {creds:?}: {status} {v}");
        v
    }

    async fn create_user(&self, name: &str, password: &str) {
        self.api_ok(Method::POST, "/api/v1/users", &Creds::admin(), Some(json!({"name": name, "password": password})))
            .await;
    }

    /// `GET /token` for some scopes, with extra query parameters.
    async fn get_token_response(&self, creds: &Creds, scopes: &[&str], extra: &[(&str, &str)]) -> Response {
        let mut q: Vec<(&str, &str)> = vec![("service", "berth")];
        q.extend(scopes.iter().map(|s| ("scope", *s)));
        q.extend_from_slice(extra);
        let path = format!("/token?{}", serde_urlencoded::to_string(&q).unwrap());
        self.req(Method::GET, &path, creds).send().await.unwrap()
    }

    /// A registry token for some scopes, through `GET /token` (which must answer 200).
    async fn token(&self, creds: &Creds, scopes: &[&str]) -> String {
        let r = self.get_token_response(creds, scopes, &[]).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "GET /token {scopes:?} as {creds:?}: {body}");
        body["token"].as_str().expect("a token").to_string()
    }

    /// `POST /token` with an urlencoded form.
    async fn post_token(&self, form: &[(&str, &str)]) -> Response {
        self.c
            .post(format!("{}/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap()
    }

    async fn push_blob(&self, creds: &Creds, repo: &str, data: &[u8]) -> Response {
        let digest = sha256(data);
        self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), creds)
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn put_manifest(&self, creds: &Creds, repo: &str, reference: &str, body: &[u8]) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), creds)
            .header("content-type", OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn get_manifest(&self, creds: &Creds, repo: &str, reference: &str) -> Response {
        self.req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"), creds)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap()
    }

    /// Pushes a small image as `repo:reference` with `creds` (all must succeed).
    async fn seed(&self, creds: &Creds, repo: &str, reference: &str) -> Seed {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","repo":"{repo}"}}"#);
        let layer = format!("the layer of {repo}");
        for blob in [config.as_bytes(), layer.as_bytes()] {
            let r = self.push_blob(creds, repo, blob).await;
            assert_eq!(r.status(), StatusCode::CREATED, "seed blob into {repo}");
        }
        let seed =
            Seed { config: (sha256(config.as_bytes()), config.len()), layer: (sha256(layer.as_bytes()), layer.len()) };
        let r = self.put_manifest(creds, repo, reference, &seed.manifest("seed")).await;
        assert_eq!(r.status(), StatusCode::CREATED, "seed manifest of {repo}");
        seed
    }
}

/// The blobs of a seeded repository, to build more manifests over them.
#[derive(Clone)]
struct Seed {
    config: (String, usize),
    layer: (String, usize),
}

impl Seed {
    /// An image manifest over the seed's blobs; `note` makes it unique.
    fn manifest(&self, note: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.config.0, "size": self.config.1},
            "layers": [{"mediaType": OCI_LAYER, "digest": self.layer.0, "size": self.layer.1}],
            "annotations": {"note": note},
        }))
        .unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

// ---- the token endpoint over HTTP --------------------------------------------------------------

#[tokio::test]
async fn challenges_name_the_token_endpoint_and_scope() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    let anon = Creds::Anonymous;
    let realm = format!("Bearer realm=\"{}/token\",service=\"berth\"", b.base);
    let digest = sha256(b"x");
    for (method, path, scope) in [
        (Method::GET, "/v2/".to_string(), None),
        (Method::GET, "/v2/team/app/manifests/v1".to_string(), Some("repository:team/app:pull")),
        (Method::HEAD, format!("/v2/team/app/blobs/{digest}"), Some("repository:team/app:pull")),
        (Method::POST, "/v2/team/app/blobs/uploads/".to_string(), Some("repository:team/app:pull,push")),
        (Method::PUT, "/v2/team/app/manifests/v1".to_string(), Some("repository:team/app:pull,push")),
        (Method::DELETE, format!("/v2/team/app/manifests/{digest}"), Some("repository:team/app:delete")),
        (Method::GET, "/v2/_catalog".to_string(), Some("registry:catalog:*")),
    ] {
        let r = reg.req(method.clone(), &path, &anon).send().await.unwrap();
        let expected = match scope {
            Some(s) => format!("{realm},scope=\"{s}\""),
            None => realm.clone(),
        };
        // Anonymous catalog is allowed when anonymous pull is on (the default).
        if path == "/v2/_catalog" {
            assert_eq!(r.status(), StatusCode::OK, "{method} {path}");
            continue;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(header(&r, "www-authenticate"), expected, "{method} {path}");
        assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0");
    }

    // With the right credentials /v2/ answers 200; wrong ones get 401 with a challenge.
    let r = reg.req(Method::GET, "/v2/", &Creds::admin()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg.req(Method::GET, "/v2/", &Creds::basic("admin", "wrong-password")).send().await.unwrap();
    let (status, code, challenge) = error_of(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(challenge.starts_with(&realm), "{challenge}");

    // A valid token for another repository: 401 with a challenge for this one (the client
    // fetches a new token), not 403.
    let tok = reg.token(&Creds::admin(), &["repository:other/app:pull"]).await;
    let r = reg.get_manifest(&Creds::bearer(&tok), "team/app", "v1").await;
    let (status, _, challenge) = error_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, format!("{realm},scope=\"repository:team/app:pull\",error=\"insufficient_scope\""));
    // Any valid token passes the /v2/ check.
    let r = reg.req(Method::GET, "/v2/", &Creds::bearer(&tok)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A registry token that lacks what a request needs gets `401` naming exactly the scope to
/// ask for, with `error="insufficient_scope"`, when its bearer may do it (containerd, BuildKit
/// and oras fetch a `pull` token first and widen it on this challenge), and `403 DENIED` when
/// a wider token would not help.
#[tokio::test]
async fn tokens_lacking_a_scope_are_sent_to_widen_it() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    let realm = format!("Bearer realm=\"{}/token\",service=\"berth\"", b.base);
    let insufficient = |scope: &str| format!("{realm},scope=\"{scope}\",error=\"insufficient_scope\"");
    reg.create_user("alice", "alice-password-1").await;
    reg.create_user("rita", "rita-password-1").await;
    let alice = Creds::basic("alice", "alice-password-1");
    let rita = Creds::basic("rita", "rita-password-1");
    let seed = reg.seed(&alice, "alice/app", "v1").await;
    let (layer, _) = seed.layer.clone();

    // containerd's order: a pull token for the HEAD, then the upload with it.
    let pull = Creds::bearer(&reg.token(&alice, &["repository:alice/app:pull"]).await);
    let r = reg.req(Method::HEAD, &format!("/v2/alice/app/blobs/{layer}"), &pull).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg.push_blob(&pull, "alice/app", b"pushed after widening").await;
    let (status, code, challenge) = error_of(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert_eq!(challenge, insufficient("repository:alice/app:pull,push"));
    // The client asks for that scope and retries: it works.
    let push = Creds::bearer(&reg.token(&alice, &["repository:alice/app:pull,push"]).await);
    let r = reg.push_blob(&push, "alice/app", b"pushed after widening").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.put_manifest(&pull, "alice/app", "v2", &seed.manifest("v2")).await;
    assert_eq!(error_of(r).await.2, insufficient("repository:alice/app:pull,push"));

    // A pull,push token reused for a DELETE.
    let body = seed.manifest("to delete");
    assert_eq!(reg.put_manifest(&push, "alice/app", "gone", &body).await.status(), StatusCode::CREATED);
    let path = format!("/v2/alice/app/manifests/{}", sha256(&body));
    let r = reg.req(Method::DELETE, &path, &push).send().await.unwrap();
    assert_eq!(error_of(r).await.2, insufficient("repository:alice/app:delete"));
    let delete = Creds::bearer(&reg.token(&alice, &["repository:alice/app:delete"]).await);
    assert_eq!(reg.req(Method::DELETE, &path, &delete).send().await.unwrap().status(), StatusCode::ACCEPTED);

    // A token for repository A reused for a mount into repository B: B's scope is named.
    let mount = format!("/v2/alice/copy/blobs/uploads/?mount={layer}&from=alice/app");
    let r = reg.req(Method::POST, &mount, &push).send().await.unwrap();
    assert_eq!(error_of(r).await.2, insufficient("repository:alice/copy:pull,push"));
    let both =
        Creds::bearer(&reg.token(&alice, &["repository:alice/copy:pull,push", "repository:alice/app:pull"]).await);
    assert_eq!(reg.req(Method::POST, &mount, &both).send().await.unwrap().status(), StatusCode::CREATED);

    // containerd asks for one repository twice in a token request (`pull`, then `pull,push`):
    // any entry that grants the action counts.
    let twice = reg.token(&alice, &["repository:alice/app:pull", "repository:alice/app:pull,push"]).await;
    assert_eq!(claims(&twice)["access"].as_array().unwrap().len(), 2, "{}", claims(&twice));
    let r = reg.push_blob(&Creds::bearer(&twice), "alice/app", b"pushed with a repeated scope").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A mount whose source the token does not name: an upload session instead (202), though
    // alice may pull there.
    let own = Creds::bearer(&reg.token(&alice, &["repository:alice/copy2:pull,push"]).await);
    let mount2 = format!("/v2/alice/copy2/blobs/uploads/?mount={layer}&from=alice/app");
    assert_eq!(reg.req(Method::POST, &mount2, &own).send().await.unwrap().status(), StatusCode::ACCEPTED);

    // The catalog, with a token that does not name it.
    let r = reg.req(Method::GET, "/v2/_catalog", &push).send().await.unwrap();
    assert_eq!(error_of(r).await.2, insufficient("registry:catalog:*"));

    // An account that may not push there gets 403 DENIED naming what is missing, whatever
    // token it holds: a wider one would not be granted.
    for scopes in [&["repository:alice/app:pull"][..], &["repository:rita/app:pull"][..]] {
        let t = Creds::bearer(&reg.token(&rita, scopes).await);
        let r = reg.push_blob(&t, "alice/app", b"not rita's").await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{scopes:?}: {body}");
        assert_eq!(body["errors"][0]["code"], "DENIED");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("push alice/app"), "{body}");
    }

    // An anonymous token: for what anyone may do (a public repository) it is widened like
    // any other; for the rest the answer is the plain challenge, as without a token, so the
    // client logs in (docker then says "unauthorized: authentication required").
    reg.api_ok(Method::POST, "/api/v1/namespaces", &alice, Some(json!({"name": "pub"}))).await;
    reg.api_ok(Method::PUT, "/api/v1/namespaces/pub/visibility", &alice, Some(json!({"public": true}))).await;
    reg.seed(&alice, "pub/app", "v1").await;
    let anon = Creds::bearer(&reg.token(&Creds::Anonymous, &["repository:alice/app:pull"]).await);
    let r = reg.get_manifest(&anon, "pub/app", "v1").await;
    let (status, _, challenge) = error_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, insufficient("repository:pub/app:pull"));
    let r = reg.get_manifest(&anon, "alice/app", "v1").await;
    let (status, _, challenge) = error_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, format!("{realm},scope=\"repository:alice/app:pull\""));
}

/// A credential never has fewer rights than an anonymous client: a personal access token
/// limited to `team/*` and a robot of another namespace both pull a public repository outside
/// their reach (and push nothing there), with Basic credentials and through the token flow.
#[tokio::test]
async fn limited_credentials_still_pull_what_is_public() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    let admin = Creds::admin();
    reg.create_user("alice", "alice-password-1").await;
    let alice = Creds::basic("alice", "alice-password-1");
    for ns in ["team", "pub"] {
        reg.api_ok(Method::POST, "/api/v1/namespaces", &admin, Some(json!({"name": ns}))).await;
    }
    reg.api_ok(Method::PUT, "/api/v1/namespaces/pub/visibility", &admin, Some(json!({"public": true}))).await;
    reg.api_ok(Method::PUT, "/api/v1/namespaces/team/members/alice", &admin, Some(json!({"role": "writer"}))).await;
    reg.seed(&admin, "pub/base", "v1").await;
    reg.seed(&admin, "alice/private", "v1").await;
    let made = reg
        .api_ok(
            Method::POST,
            "/api/v1/tokens",
            &alice,
            Some(json!({"name": "ci", "scope": "push", "repository_pattern": "team/*"})),
        )
        .await;
    let limited = Creds::basic("alice", made["token"].as_str().unwrap());
    let robot = reg
        .api_ok(Method::POST, "/api/v1/namespaces/team/robots", &admin, Some(json!({"name": "ci", "role": "writer"})))
        .await;
    let robot_name = robot["name"].as_str().unwrap().to_string();
    let path = format!("/api/v1/robots/{robot_name}/tokens");
    let made = reg.api_ok(Method::POST, &path, &admin, Some(json!({"name": "robot", "scope": "push"}))).await;
    let robot = Creds::basic(&robot_name, made["token"].as_str().unwrap());
    for (label, creds) in [("limited token", &limited), ("robot", &robot)] {
        // Directly with Basic credentials.
        assert_eq!(reg.get_manifest(creds, "pub/base", "v1").await.status(), StatusCode::OK, "{label}, Basic");
        // Through a registry token.
        let t = Creds::bearer(&reg.token(creds, &["repository:pub/base:pull,push"]).await);
        assert_eq!(claims_actions(&t, "pub/base"), ["pull"], "{label}");
        assert_eq!(reg.get_manifest(&t, "pub/base", "v1").await.status(), StatusCode::OK, "{label}, token");
        let r = reg.push_blob(&t, "pub/base", b"not theirs").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{label} pushes into a public namespace");
        // What is not public stays out of reach.
        assert_eq!(reg.get_manifest(creds, "alice/private", "v1").await.status(), StatusCode::FORBIDDEN, "{label}");
    }
    // Inside its limit the token works as before.
    assert_eq!(reg.push_blob(&limited, "team/app", b"inside").await.status(), StatusCode::CREATED);
}

/// The actions a registry token grants on `repo`.
fn claims_actions(token: &Creds, repo: &str) -> Vec<String> {
    let Creds::Bearer(jwt) = token else { panic!("not a registry token") };
    let access = claims(jwt)["access"].as_array().cloned().unwrap_or_default();
    access
        .iter()
        .filter(|e| e["type"] == "repository" && e["name"] == repo)
        .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn oauth2_password_and_refresh_grants() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    reg.create_user("alice", "alice-password-1").await;
    let scope = "repository:alice/app:pull,push";

    // containerd's first request: grant_type=password with access_type=offline.
    let r = reg
        .post_token(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-password-1"),
            ("scope", scope),
            ("service", "berth"),
            ("client_id", "containerd"),
            ("access_type", "offline"),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "cache-control"), "no-store");
    let body: Value = r.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 300);
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["issued_at"].as_str().unwrap()).is_ok(),
        "issued_at is RFC 3339: {body}"
    );
    let refresh = body["refresh_token"].as_str().expect("a refresh token").to_string();
    assert!(refresh.starts_with("berth_"), "{refresh}");
    let c = claims(&access);
    assert_eq!(c["iss"], "berth");
    assert_eq!(c["aud"], "berth");
    assert_eq!(c["sub"], "alice");
    assert!(c["exp"].as_i64().unwrap() > now());
    assert_eq!(c["access"], json!([{"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}]));
    let header_json: Value =
        serde_json::from_slice(&BASE64URL_NOPAD.decode(access.split('.').next().unwrap().as_bytes()).unwrap()).unwrap();
    assert_eq!(header_json["alg"], "ES256");
    assert!(header_json["kid"].as_str().is_some_and(|k| !k.is_empty()));

    // The access token pushes and pulls.
    let bearer = Creds::bearer(&access);
    let seed = reg.seed(&bearer, "alice/app", "v1").await;
    assert_eq!(reg.get_manifest(&bearer, "alice/app", "v1").await.status(), StatusCode::OK);

    // Without access_type=offline: no refresh token.
    let r = reg
        .post_token(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-password-1"),
            ("scope", scope),
            ("service", "berth"),
            ("client_id", "containerd"),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");

    // grant_type=refresh_token: a working token, here for pull only and two repositories.
    let r = reg
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "repository:alice/app:pull repository:alice/other:pull,push"),
            ("service", "berth"),
            ("client_id", "containerd"),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["refresh_token"], refresh.as_str());
    let pulled = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        claims(&pulled)["access"],
        json!([
            {"type": "repository", "name": "alice/app", "actions": ["pull"]},
            {"type": "repository", "name": "alice/other", "actions": ["pull", "push"]},
        ])
    );
    let pull_only = Creds::bearer(&pulled);
    assert_eq!(reg.get_manifest(&pull_only, "alice/app", "v1").await.status(), StatusCode::OK);
    let r = reg.put_manifest(&pull_only, "alice/app", "v2", &seed.manifest("v2")).await;
    // The account may push: the client is sent for a wider token.
    let (status, _, challenge) = error_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "token lacks push");
    assert!(
        challenge.ends_with(",scope=\"repository:alice/app:pull,push\",error=\"insufficient_scope\""),
        "{challenge}"
    );

    // GET /token with offline_token=true (docker login) also hands out a refresh token.
    let r = reg
        .get_token_response(
            &Creds::basic("alice", "alice-password-1"),
            &[],
            &[("offline_token", "true"), ("client_id", "docker")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let docker_refresh = body["refresh_token"].as_str().unwrap().to_string();
    let r = reg
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &docker_refresh),
            ("scope", "repository:alice/app:pull"),
            ("service", "berth"),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Failures.
    for (what, form, status) in [
        (
            "wrong password",
            vec![("grant_type", "password"), ("username", "alice"), ("password", "not-her-password"), ("scope", scope)],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown user",
            vec![
                ("grant_type", "password"),
                ("username", "nobody"),
                ("password", "alice-password-1"),
                ("scope", scope),
            ],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "made-up refresh token",
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "berth_madeupmadeupmadeupmadeup"),
                ("scope", scope),
            ],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "an access token as refresh token",
            vec![("grant_type", "refresh_token"), ("refresh_token", access.as_str()), ("scope", scope)],
            StatusCode::UNAUTHORIZED,
        ),
        ("unsupported grant", vec![("grant_type", "client_credentials"), ("scope", scope)], StatusCode::BAD_REQUEST),
    ] {
        let r = reg.post_token(&form).await;
        assert_eq!(r.status(), status, "{what}");
        let body: Value = r.json().await.unwrap_or_default();
        assert!(body.get("access_token").is_none(), "{what}: {body}");
    }

    // Anonymous and outsiders get a token, but one that grants nothing on a private repository.
    let tok = reg.token(&Creds::Anonymous, &[scope]).await;
    assert_eq!(claims(&tok)["sub"], "");
    assert_eq!(claims(&tok)["access"][0]["actions"], json!([]));
    let r = reg.get_manifest(&Creds::bearer(&tok), "alice/app", "v1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    reg.create_user("bob", "bob-password-1").await;
    let tok = reg.token(&Creds::basic("bob", "bob-password-1"), &[scope]).await;
    assert_eq!(claims(&tok)["access"][0]["actions"], json!([]));
    let r = reg.get_manifest(&Creds::bearer(&tok), "alice/app", "v1").await;
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
}

// ---- forged and damaged registry tokens --------------------------------------------------------

/// The registry's signing key (kid and PKCS#8 DER), read from its database (SQLite in the data
/// dir, or the PostgreSQL database of an `s3-postgres` test run).
async fn signing_key(b: &Berth) -> (String, Vec<u8>) {
    use sqlx::Connection as _;
    const SQL: &str = "SELECT kid, private_key FROM signing_keys WHERE id = 'registry-token'";
    let (kid, key): (String, String) = match b.backend() {
        common::Backend::FsSqlite => {
            let url = format!("sqlite://{}?mode=ro", b.data_path().join("berth.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_as(SQL).fetch_one(&mut conn).await.unwrap()
        }
        common::Backend::S3Postgres { database, .. } => {
            let mut conn = sqlx::PgConnection::connect(database).await.unwrap();
            sqlx::query_as(SQL).fetch_one(&mut conn).await.unwrap()
        }
    };
    let der = data_encoding::BASE64.decode(key.as_bytes()).unwrap();
    (kid, der)
}

/// An ES256 JWT over `claims` signed with a PKCS#8 key.
fn sign(kid: &str, der: &[u8], claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ec_der(der)).unwrap()
}

/// Claims like the registry's for `sub` pulling `repo`, valid for five minutes.
fn pull_claims(sub: &str, repo: &str, actions: &[&str]) -> Value {
    let t = now();
    json!({
        "iss": "berth", "sub": sub, "aud": "berth",
        "exp": t + 300, "nbf": t - 1, "iat": t, "jti": format!("test-{t}"),
        "access": [{"type": "repository", "name": repo, "actions": actions}],
    })
}

#[tokio::test]
async fn forged_expired_and_tampered_tokens_are_refused() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    reg.create_user("alice", "alice-password-1").await;
    let alice = Creds::basic("alice", "alice-password-1");
    let seed = reg.seed(&alice, "alice/app", "v1").await;
    let (kid, der) = signing_key(&b).await;

    let status_with = |tok: String| {
        let reg = &reg;
        async move {
            let r = reg.get_manifest(&Creds::bearer(&tok), "alice/app", "v1").await;
            let status = r.status();
            let challenge = header(&r, "www-authenticate");
            (status, challenge)
        }
    };

    // Controls: the registry's own token works, and so does one the test signs with the real
    // key (so the refusals below are about what was changed, not about how the test signs).
    let real = reg.token(&alice, &["repository:alice/app:pull"]).await;
    assert_eq!(status_with(real.clone()).await.0, StatusCode::OK);
    let forged_ok = sign(&kid, &der, &pull_claims("alice", "alice/app", &["pull"]));
    assert_eq!(status_with(forged_ok).await.0, StatusCode::OK, "test-signed token works");
    // ... including for a pull-only token asked to push: 401 asking for the wider scope
    // (alice may push there).
    let r = reg.put_manifest(&Creds::bearer(&real), "alice/app", "v2", &seed.manifest("x")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").contains("error=\"insufficient_scope\""));

    let t = now();
    let mut cases: Vec<(&str, String)> = Vec::new();
    let mut c = pull_claims("alice", "alice/app", &["pull"]);
    c["exp"] = json!(t - 600);
    c["nbf"] = json!(t - 900);
    c["iat"] = json!(t - 900);
    cases.push(("expired", sign(&kid, &der, &c)));
    let mut c = pull_claims("alice", "alice/app", &["pull"]);
    c["nbf"] = json!(t + 600);
    cases.push(("not yet valid", sign(&kid, &der, &c)));
    let mut c = pull_claims("alice", "alice/app", &["pull"]);
    c["aud"] = json!("some-other-registry");
    cases.push(("wrong audience", sign(&kid, &der, &c)));
    let mut c = pull_claims("alice", "alice/app", &["pull"]);
    c["iss"] = json!("someone-else");
    cases.push(("wrong issuer", sign(&kid, &der, &c)));
    let mut c = pull_claims("alice", "alice/app", &["pull"]);
    c.as_object_mut().unwrap().remove("aud");
    cases.push(("no audience", sign(&kid, &der, &c)));

    // Tampered: the registry's own token with a modified payload and the original signature.
    let parts: Vec<&str> = real.split('.').collect();
    let mut c = claims(&real);
    c["sub"] = json!("admin");
    let payload = BASE64URL_NOPAD.encode(&serde_json::to_vec(&c).unwrap());
    cases.push(("tampered payload (sub)", format!("{}.{payload}.{}", parts[0], parts[2])));
    let mut c = claims(&real);
    c["exp"] = json!(t + 86_400 * 365);
    let payload = BASE64URL_NOPAD.encode(&serde_json::to_vec(&c).unwrap());
    cases.push(("tampered payload (exp)", format!("{}.{payload}.{}", parts[0], parts[2])));
    let mut sig = BASE64URL_NOPAD.decode(parts[2].as_bytes()).unwrap();
    sig[10] ^= 1;
    cases.push(("tampered signature", format!("{}.{}.{}", parts[0], parts[1], BASE64URL_NOPAD.encode(&sig))));

    // Signed by another key (with the real key id, too).
    let other = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    cases.push(("another key", sign(&kid, other.as_ref(), &pull_claims("alice", "alice/app", &["pull"]))));

    // alg "none".
    let none_header = BASE64URL_NOPAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = BASE64URL_NOPAD.encode(&serde_json::to_vec(&pull_claims("alice", "alice/app", &["pull"])).unwrap());
    cases.push(("alg none", format!("{none_header}.{payload}.")));
    cases.push(("garbage", "not.a.jwt".to_string()));

    let mut failures = Vec::new();
    for (what, tok) in cases {
        let (status, challenge) = status_with(tok).await;
        if status != StatusCode::UNAUTHORIZED || !challenge.starts_with("Bearer realm=") {
            failures.push(format!("{what}: {status}, challenge {challenge:?}"));
        }
    }
    assert!(failures.is_empty(), "accepted or wrongly refused:\n{}", failures.join("\n"));
}

/// A registry token is for the registry: it must not log in at the token endpoint (which would
/// let it be renewed, widened and kept forever) nor at the management API.
#[tokio::test]
async fn registry_tokens_do_not_log_in_elsewhere() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    reg.create_user("alice", "alice-password-1").await;
    let alice = Creds::basic("alice", "alice-password-1");
    let tok = reg.token(&alice, &["repository:alice/app:pull"]).await;
    let bearer = Creds::bearer(&tok);

    let r = reg.get_token_response(&bearer, &["repository:alice/app:pull,push,delete"], &[]).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a pull-only registry token was exchanged at /token for {}",
        body["token"].as_str().map(|t| claims(t)["access"].to_string()).unwrap_or_default()
    );

    let (status, body) =
        reg.api(Method::POST, "/api/v1/tokens", &bearer, Some(json!({"name": "escalated", "scope": "delete"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a pull-only registry token created a personal access token: {body}");
    let (status, _) = reg.api(Method::GET, "/api/v1/me", &bearer, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A personal access token as Bearer is fine for the API (it is a login).
    let pat =
        reg.api_ok(Method::POST, "/api/v1/tokens", &alice, Some(json!({"name": "full", "scope": "delete"}))).await;
    let pat = pat["token"].as_str().unwrap();
    let me = reg.api_ok(Method::GET, "/api/v1/me", &Creds::bearer(pat), None).await;
    assert_eq!(me["name"], "alice");
    // ... for reading. No token, however wide, may mint another token or change access.
    let limited = reg
        .api_ok(
            Method::POST,
            "/api/v1/tokens",
            &alice,
            Some(json!({"name": "ci", "scope": "delete", "repository_pattern": "alice/ci-*", "expires_days": 7})),
        )
        .await;
    for creds in [Creds::bearer(pat), Creds::basic("alice", limited["token"].as_str().unwrap())] {
        let (status, body) =
            reg.api(Method::POST, "/api/v1/tokens", &creds, Some(json!({"name": "wider", "scope": "delete"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a token minted a token: {body}");
        let (status, _) =
            reg.api(Method::PUT, "/api/v1/namespaces/alice/visibility", &creds, Some(json!({"public": true}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a token changed visibility");
    }
}

#[tokio::test]
async fn a_password_change_ends_stored_logins() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    reg.create_user("carol", "carol-password-1").await;
    // docker login stores a refresh token instead of the password.
    let r = reg
        .post_token(&[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", "carol-password-1"),
            ("access_type", "offline"),
            ("service", "berth"),
            ("scope", "repository:carol/app:pull"),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let refresh_form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("service", "berth")];
    assert_eq!(reg.post_token(&refresh_form).await.status(), StatusCode::OK);
    b.cli_stdin(&["user", "passwd", "carol", "--password-stdin"], "carol-password-2");
    assert_eq!(reg.post_token(&refresh_form).await.status(), StatusCode::UNAUTHORIZED, "old login still works");
}

// ---- revoked tokens, disabled users, brute force -----------------------------------------------

#[tokio::test]
async fn revoked_and_expired_personal_access_tokens_are_refused() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    reg.create_user("alice", "alice-password-1").await;
    reg.create_user("bob", "bob-password-1").await;
    let alice = Creds::basic("alice", "alice-password-1");
    let seed = reg.seed(&alice, "alice/app", "v1").await;

    let created =
        reg.api_ok(Method::POST, "/api/v1/tokens", &alice, Some(json!({"name": "laptop", "scope": "push"}))).await;
    let pat = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_i64().unwrap();
    assert!(pat.starts_with("berth_"));
    assert_eq!(created["scope"], "push");

    // Before revocation: as Basic password, as Bearer, at /token and as refresh token.
    let basic = Creds::basic("alice", &pat);
    assert_eq!(reg.get_manifest(&basic, "alice/app", "v1").await.status(), StatusCode::OK);
    assert_eq!(reg.get_manifest(&Creds::bearer(&pat), "alice/app", "v1").await.status(), StatusCode::OK);
    let jwt = reg.token(&basic, &["repository:alice/app:pull,push,delete"]).await;
    assert_eq!(claims(&jwt)["access"][0]["actions"], json!(["pull", "push"]), "a push-scoped token gets no delete");
    assert_eq!(reg.get_manifest(&Creds::bearer(&jwt), "alice/app", "v1").await.status(), StatusCode::OK);
    let r = reg
        .post_token(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", &pat),
            ("scope", "repository:alice/app:pull"),
            ("access_type", "offline"),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["refresh_token"], pat.as_str(), "a token login refreshes with the token");
    // The token's scope holds on every path: no delete with it.
    let r = reg
        .req(Method::DELETE, &format!("/v2/alice/app/manifests/{}", sha256(&seed.manifest("seed"))), &basic)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Someone else's name with the token: refused.
    let r = reg.get_manifest(&Creds::basic("bob", &pat), "alice/app", "v1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // bob cannot revoke alice's token; alice can.
    let (status, _) =
        reg.api(Method::DELETE, &format!("/api/v1/tokens/{id}"), &Creds::basic("bob", "bob-password-1"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = reg.api(Method::DELETE, &format!("/api/v1/tokens/{id}"), &alice, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let mut accepted = Vec::new();
    let s = reg.get_manifest(&basic, "alice/app", "v1").await.status();
    if s != StatusCode::UNAUTHORIZED {
        accepted.push(format!("Basic with the revoked token: {s}"));
    }
    let s = reg.get_manifest(&Creds::bearer(&pat), "alice/app", "v1").await.status();
    if s != StatusCode::UNAUTHORIZED {
        accepted.push(format!("Bearer with the revoked token: {s}"));
    }
    let s = reg.get_manifest(&Creds::bearer(&jwt), "alice/app", "v1").await.status();
    if s != StatusCode::UNAUTHORIZED {
        accepted.push(format!("a JWT issued from it before revocation: {s}"));
    }
    let s = reg.get_token_response(&basic, &["repository:alice/app:pull"], &[]).await.status();
    if s != StatusCode::UNAUTHORIZED {
        accepted.push(format!("GET /token with it: {s}"));
    }
    let s = reg
        .post_token(&[("grant_type", "refresh_token"), ("refresh_token", &pat), ("scope", "repository:alice/app:pull")])
        .await
        .status();
    if s != StatusCode::UNAUTHORIZED {
        accepted.push(format!("as refresh token: {s}"));
    }
    assert!(accepted.is_empty(), "revoked token still works:\n{}", accepted.join("\n"));
    // The password still works.
    assert_eq!(reg.get_manifest(&alice, "alice/app", "v1").await.status(), StatusCode::OK);

    // A token made by the CLI, limited to a repository pattern.
    let out = b.cli(&[
        "token",
        "create",
        "--user",
        "alice",
        "--name",
        "ci",
        "--scope",
        "delete",
        "--repository",
        "alice/app*",
    ]);
    let limited = out.lines().nth(1).expect("the secret on the second line").trim().to_string();
    let limited = Creds::basic("alice", &limited);
    assert_eq!(reg.get_manifest(&limited, "alice/app", "v1").await.status(), StatusCode::OK);
    let r = reg.push_blob(&limited, "alice/other", b"outside the pattern").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "outside the token's repositories");
    // ... and one that has already expired.
    let out = b.cli(&["token", "create", "--user", "alice", "--name", "old", "--scope", "pull", "--expires-days", "0"]);
    let expired = out.lines().nth(1).unwrap().trim().to_string();
    let r = reg.get_manifest(&Creds::basic("alice", &expired), "alice/app", "v1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "expired token");
    let listed = b.cli(&["token", "list", "--user", "alice"]);
    assert!(listed.contains("ci") && !listed.contains("laptop"), "{listed}");
}

#[tokio::test]
async fn disabled_users_are_refused_everywhere() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    reg.create_user("alice", "alice-password-1").await;
    let alice = Creds::basic("alice", "alice-password-1");
    reg.seed(&alice, "alice/app", "v1").await;
    let pat =
        reg.api_ok(Method::POST, "/api/v1/tokens", &alice, Some(json!({"name": "t", "scope": "push"}))).await["token"]
            .as_str()
            .unwrap()
            .to_string();
    let jwt = reg.token(&alice, &["repository:alice/app:pull"]).await;
    let r = reg
        .post_token(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-password-1"),
            ("scope", "repository:alice/app:pull"),
            ("access_type", "offline"),
        ])
        .await;
    let refresh = r.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_string();

    let disabled =
        reg.api_ok(Method::PATCH, "/api/v1/users/alice", &Creds::admin(), Some(json!({"disabled": true}))).await;
    assert_eq!(disabled["disabled"], true);

    let results = [
        ("Basic password", reg.get_manifest(&alice, "alice/app", "v1").await.status()),
        ("Basic token", reg.get_manifest(&Creds::basic("alice", &pat), "alice/app", "v1").await.status()),
        ("JWT issued before", reg.get_manifest(&Creds::bearer(&jwt), "alice/app", "v1").await.status()),
        ("GET /token", reg.get_token_response(&alice, &["repository:alice/app:pull"], &[]).await.status()),
        (
            "POST /token password",
            reg.post_token(&[("grant_type", "password"), ("username", "alice"), ("password", "alice-password-1")])
                .await
                .status(),
        ),
        (
            "POST /token refresh",
            reg.post_token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await.status(),
        ),
        ("API /me", reg.api(Method::GET, "/api/v1/me", &alice, None).await.0),
    ];
    let wrong: Vec<String> =
        results.iter().filter(|(_, s)| *s != StatusCode::UNAUTHORIZED).map(|(w, s)| format!("{w}: {s}")).collect();
    assert!(wrong.is_empty(), "a disabled user got in:\n{}", wrong.join("\n"));

    // Enabled again (by the CLI): everything works again.
    b.cli(&["user", "enable", "alice"]);
    assert_eq!(reg.get_manifest(&alice, "alice/app", "v1").await.status(), StatusCode::OK);
    assert_eq!(reg.get_manifest(&Creds::basic("alice", &pat), "alice/app", "v1").await.status(), StatusCode::OK);
    let r = reg.post_token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn brute_force_is_throttled_per_account_and_per_address() {
    let b = Berth::start_with_env(&[
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_AUTH__MAX_FAILED_LOGINS", "3"),
        ("BERTH_AUTH__LOCKOUT_SECS", "4"),
    ]);
    let reg = Reg::new(&b);
    for u in ["alice", "bob", "carol", "dave"] {
        reg.create_user(u, &format!("{u}-password-1")).await;
    }
    let from = |ip: &str| Reg::with_client(&b, client_from(ip));
    let (attacker, elsewhere, third) = (from("127.0.0.2"), from("127.0.0.3"), from("127.0.0.4"));
    let scope = ["repository:alice/app:pull"];

    let started = Instant::now();
    for i in 0..3 {
        let r = attacker.get_token_response(&Creds::basic("alice", &format!("guess-{i}")), &scope, &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let alice = Creds::basic("alice", "alice-password-1");
    // Per account: even the right password from another address is refused now.
    let r = elsewhere.get_token_response(&alice, &scope, &[]).await;
    assert!(!header(&r, "retry-after").is_empty(), "Retry-After");
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"));
    let r = elsewhere.req(Method::GET, "/v2/", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "/v2/ with Basic");
    let r = elsewhere
        .post_token(&[("grant_type", "password"), ("username", "alice"), ("password", "alice-password-1")])
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "POST /token");
    // Per address: another account from the attacker's address is refused, and a forged
    // X-Forwarded-For does not get around it.
    let bob = Creds::basic("bob", "bob-password-1");
    let r = attacker.get_token_response(&bob, &scope, &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "per address");
    let r = attacker.req(Method::GET, "/v2/", &bob).header("x-forwarded-for", "10.9.8.7").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "X-Forwarded-For is not trusted");
    // Others are not affected.
    let r = elsewhere.get_token_response(&bob, &scope, &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "bob from another address");
    let r = third.get_token_response(&Creds::basic("carol", "carol-password-1"), &scope, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);

    // After the lockout window alice gets in again.
    let wait = Duration::from_secs(5).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    let r = elsewhere.get_token_response(&alice, &scope, &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "after the lockout");

    // Bad refresh tokens are throttled per address too, and must not lock out other clients'
    // refresh tokens (docker and containerd renew with them on every pull and push).
    let r = reg
        .post_token(&[
            ("grant_type", "password"),
            ("username", "dave"),
            ("password", "dave-password-1"),
            ("access_type", "offline"),
        ])
        .await;
    let refresh = r.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_string();
    let bad = from("127.0.0.5");
    for i in 0..3 {
        let r =
            bad.post_token(&[("grant_type", "refresh_token"), ("refresh_token", &format!("berth_stale-{i}"))]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = bad.post_token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "the guessing address is throttled");
    let r = from("127.0.0.6").post_token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "failed refreshes from one address lock out every other client's refresh tokens"
    );
}

/// Behind a trusted proxy (here: 127.0.0.9, configured in `trusted_proxies`) clients are told
/// apart by the `X-Forwarded-For` the proxy appends, so one client's guessing does not lock out
/// everyone else behind the same proxy; an untrusted peer's header still counts for nothing.
#[tokio::test]
async fn throttling_behind_a_trusted_proxy_uses_x_forwarded_for() {
    let b = Berth::start_with_env(&[
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_AUTH__MAX_FAILED_LOGINS", "3"),
        ("BERTH_AUTH__LOCKOUT_SECS", "60"),
        ("BERTH_TRUSTED_PROXIES", "[\"127.0.0.9/32\"]"),
    ]);
    let reg = Reg::new(&b);
    for u in ["erin", "frank"] {
        reg.create_user(u, &format!("{u}-password-1")).await;
    }
    let proxy = Reg::with_client(&b, client_from("127.0.0.9"));
    let scope = ["repository:erin/app:pull"];
    // A guessing client behind the proxy: three wrong passwords for three different accounts'
    // worth of names, so only the per-address limit can trip.
    for (i, user) in ["nobody-1", "nobody-2", "nobody-3"].iter().enumerate() {
        let r = proxy
            .req(Method::GET, "/v2/", &Creds::basic(user, &format!("guess-{i}")))
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let frank = Creds::basic("frank", "frank-password-1");
    let r = proxy.req(Method::GET, "/v2/", &frank).header("x-forwarded-for", "203.0.113.7").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "the guessing client (by its forwarded address)");
    // Another client behind the same proxy is not locked out ...
    let r = proxy.req(Method::GET, "/v2/", &frank).header("x-forwarded-for", "198.51.100.4").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "another client behind the proxy");
    // ... nor is the proxy's own address.
    let r = proxy.get_token_response(&Creds::basic("erin", "erin-password-1"), &scope, &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "a request with no forwarded address");
    // An untrusted peer cannot choose its address: its header is ignored.
    let direct = Reg::with_client(&b, client_from("127.0.0.10"));
    for i in 0..3 {
        let r = direct
            .req(Method::GET, "/v2/", &Creds::basic("nobody", &format!("guess-{i}")))
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = direct.req(Method::GET, "/v2/", &frank).header("x-forwarded-for", "192.0.2.99").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "X-Forwarded-For from an untrusted peer");
}

// ---- the authorisation matrix ------------------------------------------------------------------

/// The matrix's repositories: (label, repository).
const REPOS: [(&str, &str); 4] =
    [("own", "olivia/app"), ("organisation", "team/app"), ("public", "puborg/app"), ("private", "privorg/app")];

const ACTIONS: [&str; 6] = ["pull", "push", "overwrite", "delete", "mount", "catalog"];

/// What each account may do on each of [`REPOS`]: `all`, `write` (pull and push), `read` or `-`.
const EXPECTED: [(&str, [&str; 4]); 8] = [
    ("admin", ["all", "all", "all", "all"]),
    ("owner", ["all", "-", "read", "-"]),
    ("maintainer", ["-", "all", "read", "-"]),
    ("writer", ["-", "write", "read", "-"]),
    ("reader", ["-", "read", "read", "-"]),
    ("outsider", ["-", "-", "read", "-"]),
    ("robot", ["-", "write", "read", "-"]),
    ("anonymous", ["-", "-", "read", "-"]),
];

/// The outcome a cell should have: `yes`/`no`, and for a mount `201` (mounted), `202` (an
/// upload session instead: the source may not be read) or `no` (no push anywhere).
fn expected_outcome(level: &str, action: &str, anonymous: bool) -> &'static str {
    let rank = match level {
        "all" => 3,
        "write" => 2,
        "read" => 1,
        _ => 0,
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    match action {
        "pull" | "catalog" => yes(rank >= 1),
        "push" | "overwrite" => yes(rank >= 2),
        "delete" => yes(rank >= 3),
        "mount" if anonymous => "no",
        "mount" if rank >= 1 => "201",
        "mount" => "202",
        _ => unreachable!(),
    }
}

/// One account of the matrix.
struct Who {
    label: &'static str,
    creds: Creds,
    /// A repository it may push to, for mounts.
    push_target: String,
}

impl Who {
    fn anonymous(&self) -> bool {
        matches!(self.creds, Creds::Anonymous)
    }
}

/// Runs one cell through the token flow; returns the outcome and anything odd about it.
async fn run_cell(reg: &Reg, who: &Who, repo: &str, seed: &Seed, action: &str) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    let admin = Creds::admin();
    let token = |scopes: Vec<String>| {
        let creds = who.creds.clone();
        async move {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            Creds::bearer(&reg.token(&creds, &scopes).await)
        }
    };
    // A refusal must be 403 DENIED for an account, 401 with a challenge for anonymous.
    let refused = |status: StatusCode, code: &str, challenge: &str, repo: &str| -> Option<String> {
        if who.anonymous() {
            let want = format!("scope=\"repository:{repo}:");
            (status != StatusCode::UNAUTHORIZED || !challenge.contains(&want))
                .then(|| format!("anonymous refused with {status} {code}, challenge {challenge:?}"))
        } else {
            (status != StatusCode::FORBIDDEN || code != "DENIED")
                .then(|| format!("refused with {status} {code} instead of 403 DENIED"))
        }
    };
    let pull_scope = format!("repository:{repo}:pull");
    let push_scope = format!("repository:{repo}:pull,push");
    let (r, ok) = match action {
        "pull" => {
            let t = token(vec![pull_scope]).await;
            (reg.get_manifest(&t, repo, "v1").await, StatusCode::OK)
        }
        "push" => {
            let t = token(vec![push_scope]).await;
            let data = format!("pushed by {} into {repo}", who.label);
            (reg.push_blob(&t, repo, data.as_bytes()).await, StatusCode::CREATED)
        }
        "overwrite" => {
            let t = token(vec![push_scope]).await;
            let body = seed.manifest(&format!("overwritten by {}", who.label));
            (reg.put_manifest(&t, repo, "v1", &body).await, StatusCode::CREATED)
        }
        "delete" => {
            // A sacrificial manifest, made by the admin for this cell.
            let body = seed.manifest(&format!("victim for {}", who.label));
            let digest = sha256(&body);
            let r = reg.put_manifest(&admin, repo, "victim", &body).await;
            assert_eq!(r.status(), StatusCode::CREATED, "admin recreates the victim in {repo}");
            let t = token(vec![format!("repository:{repo}:delete")]).await;
            let r = reg.req(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}"), &t).send().await.unwrap();
            let deleted = r.status() == StatusCode::ACCEPTED;
            let after = reg.get_manifest(&admin, repo, &digest).await.status();
            let want_after = if deleted { StatusCode::NOT_FOUND } else { StatusCode::OK };
            if after != want_after {
                notes.push(format!("after DELETE answered {}, the manifest answers {after}", r.status()));
            }
            (r, StatusCode::ACCEPTED)
        }
        "mount" => {
            let target = &who.push_target;
            let t = token(vec![format!("repository:{target}:pull,push"), format!("repository:{repo}:pull")]).await;
            let layer = &seed.layer.0;
            let r = reg
                .req(Method::POST, &format!("/v2/{target}/blobs/uploads/?mount={layer}&from={repo}"), &t)
                .send()
                .await
                .unwrap();
            let status = r.status();
            if status == StatusCode::CREATED || status == StatusCode::ACCEPTED {
                let head =
                    reg.req(Method::HEAD, &format!("/v2/{target}/blobs/{layer}"), &t).send().await.unwrap().status();
                let want = if status == StatusCode::CREATED { StatusCode::OK } else { StatusCode::NOT_FOUND };
                if head != want {
                    notes.push(format!("mount answered {status} but the blob in {target} answers {head}"));
                }
                return (status.as_u16().to_string(), notes);
            }
            let (status, code, challenge) = error_of(r).await;
            notes.extend(refused(status, &code, &challenge, target));
            return ("no".into(), notes);
        }
        _ => unreachable!(),
    };
    if r.status() == ok {
        return ("yes".into(), notes);
    }
    let (status, code, challenge) = error_of(r).await;
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        notes.extend(refused(status, &code, &challenge, repo));
        ("no".into(), notes)
    } else {
        (format!("HTTP {status} {code}"), notes)
    }
}

/// Which of [`REPOS`] the account's catalog lists (through a `registry:catalog:*` token).
async fn catalog_row(reg: &Reg, who: &Who) -> Vec<String> {
    let t = Creds::bearer(&reg.token(&who.creds, &["registry:catalog:*"]).await);
    let r = reg.req(Method::GET, "/v2/_catalog", &t).send().await.unwrap();
    let status = r.status();
    if status != StatusCode::OK {
        return vec![format!("HTTP {status}"); REPOS.len()];
    }
    let body: Value = r.json().await.unwrap();
    let listed: Vec<&str> = body["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    REPOS.iter().map(|(_, repo)| if listed.contains(repo) { "yes" } else { "no" }.to_string()).collect()
}

#[tokio::test]
async fn authorisation_matrix() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    let admin = Creds::admin();
    let password = |u: &str| format!("{u}-password-1");
    for u in ["olivia", "mara", "walt", "rita", "otto"] {
        reg.create_user(u, &password(u)).await;
    }
    let user = |u: &str| Creds::basic(u, &password(u));
    for org in ["team", "puborg", "privorg"] {
        let v = reg.api_ok(Method::POST, "/api/v1/namespaces", &admin, Some(json!({"name": org}))).await;
        assert_eq!(v["public"], false, "organisations start private");
    }
    reg.api_ok(Method::PUT, "/api/v1/namespaces/puborg/visibility", &admin, Some(json!({"public": true}))).await;
    reg.api_ok(Method::PUT, "/api/v1/namespaces/team/members/mara", &admin, Some(json!({"role": "maintainer"}))).await;
    // The maintainer manages the organisation: members and the robot.
    for (member, role) in [("walt", "writer"), ("rita", "reader")] {
        reg.api_ok(
            Method::PUT,
            &format!("/api/v1/namespaces/team/members/{member}"),
            &user("mara"),
            Some(json!({"role": role})),
        )
        .await;
    }
    let robot = reg
        .api_ok(
            Method::POST,
            "/api/v1/namespaces/team/robots",
            &user("mara"),
            Some(json!({"name": "ci", "role": "writer"})),
        )
        .await;
    assert_eq!(robot["name"], "team+ci");
    let robot_token = reg
        .api_ok(
            Method::POST,
            "/api/v1/robots/team+ci/tokens",
            &user("mara"),
            Some(json!({"name": "pipeline", "scope": "delete"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // ... which writers, readers and outsiders may not.
    for (who, method, path, body) in [
        ("walt", Method::POST, "/api/v1/namespaces/team/robots", json!({"name": "x", "role": "writer"})),
        ("rita", Method::PUT, "/api/v1/namespaces/team/visibility", json!({"public": true})),
        ("otto", Method::PUT, "/api/v1/namespaces/team/members/otto", json!({"role": "maintainer"})),
        ("walt", Method::POST, "/api/v1/robots/team+ci/tokens", json!({"name": "x", "scope": "push"})),
    ] {
        let (status, v) = reg.api(method.clone(), path, &user(who), Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {method} {path}: {v}");
    }

    let mut seeds = Vec::new();
    for (_, repo) in REPOS {
        seeds.push(reg.seed(&admin, repo, "v1").await);
    }

    let whos = [
        ("admin", admin.clone(), "admin/mnt"),
        ("owner", user("olivia"), "olivia/mnt"),
        ("maintainer", user("mara"), "mara/mnt"),
        ("writer", user("walt"), "walt/mnt"),
        ("reader", user("rita"), "rita/mnt"),
        ("outsider", user("otto"), "otto/mnt"),
        ("robot", Creds::basic("team+ci", &robot_token), "team/mnt"),
        ("anonymous", Creds::Anonymous, "puborg/mnt"),
    ]
    .map(|(label, creds, target)| Who { label, creds, push_target: target.to_string() });

    let mut table =
        format!("{:<11} {:<13} {}\n", "ACCOUNT", "REPOSITORY", ACTIONS.map(|a| format!("{a:<14}")).concat().trim_end());
    let mut mismatches = 0;
    let mut notes = Vec::new();
    for (who, (label, levels)) in whos.iter().zip(EXPECTED) {
        assert_eq!(who.label, label);
        let catalog = catalog_row(&reg, who).await;
        for (i, ((repo_label, repo), seed)) in REPOS.iter().zip(&seeds).enumerate() {
            let mut row = format!("{:<11} {:<13} ", who.label, repo_label);
            for action in ACTIONS {
                let want = expected_outcome(levels[i], action, who.anonymous());
                let got = if action == "catalog" {
                    catalog[i].clone()
                } else {
                    let (got, cell_notes) = run_cell(&reg, who, repo, seed, action).await;
                    notes.extend(cell_notes.into_iter().map(|n| format!("{} / {repo} / {action}: {n}", who.label)));
                    got
                };
                let cell = if got == want {
                    got
                } else {
                    mismatches += 1;
                    format!("{got}!=want {want}")
                };
                row.push_str(&format!("{cell:<14}"));
            }
            table.push_str(row.trim_end());
            table.push('\n');
        }
    }
    println!("{table}");
    assert!(
        mismatches == 0 && notes.is_empty(),
        "{mismatches} cells differ from the expected permissions:\n{table}\n{}",
        notes.join("\n")
    );

    // Everybody pulls the public repository; after the matrix (which overwrote its v1) too.
    for who in &whos {
        let t = Creds::bearer(&reg.token(&who.creds, &["repository:puborg/app:pull"]).await);
        assert_eq!(reg.get_manifest(&t, "puborg/app", "v1").await.status(), StatusCode::OK, "{}", who.label);
    }
}

// ---- the docker engine -------------------------------------------------------------------------

/// stdout and stderr of a command, for matching error messages.
fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Asserts that a docker command failed and said `word` (case-insensitive).
fn assert_refused(out: &Output, word: &str, what: &str) {
    let text = output_text(out);
    assert!(!out.status.success(), "{what} succeeded:\n{text}");
    assert!(text.to_lowercase().contains(word), "{what} failed without saying {word:?}:\n{text}");
    // docker retries errors it does not recognise as final for about a minute.
    assert!(!text.contains("Retrying in"), "docker retried a refusal (it did not read it as {word:?}):\n{text}");
}

/// Imports a busybox base and builds an app image on it; returns the local name and what
/// running it prints.
fn local_app(berth: &Berth, images: &mut Images, marker: &str) -> (String, String) {
    let base = images.add(local_name(berth, "base"));
    let app = images.add(local_name(berth, "app"));
    import_busybox(&base);
    let expected = build_image(&base, &app, &format!("{marker} {}", berth.port));
    (app, expected)
}

#[test]
fn docker_login_with_password_push_pull_and_denied() {
    require_tools();
    let berth = Berth::start_auth();
    let host = berth.host();
    berth.cli_stdin(&["user", "add", "alice", "--password-stdin"], "alice-password-1\n");
    berth.cli(&["namespace", "create", "team"]);
    let mut images = Images::new();
    let (app, expected) = local_app(&berth, &mut images, "password");
    let mine = images.add(format!("{host}/alice/app:1"));
    let team = images.add(format!("{host}/team/app:1"));
    docker(&["tag", &app, &mine]);
    docker(&["tag", &app, &team]);

    let client = DockerClient::new(&host);
    // Not logged in: no push.
    assert_refused(&client.output(&["push", &mine]), "unauthorized", "anonymous push");
    assert_refused(&client.login("alice", "wrong-password"), "unauthorized", "login with a wrong password");

    let out = client.login("alice", "alice-password-1");
    assert!(out.status.success(), "docker login:\n{}", output_text(&out));
    assert!(output_text(&out).contains("Login Succeeded"));
    // docker keeps the refresh token the registry handed out, not the password.
    let stored = client.stored_auth();
    assert!(stored["identitytoken"].as_str().is_some_and(|t| t.starts_with("berth_")), "{stored}");
    let config = std::fs::read_to_string(client.config_dir().join("config.json")).unwrap();
    assert!(!config.contains("alice-password-1"), "the password is not stored");

    // Own namespace: push works.
    let out = client.run(&["push", &mine]);
    let digest = pushed_digest(&out);
    // A private organisation she is not a member of: docker's usual "denied".
    assert_refused(&client.output(&["push", &team]), "denied", "push to another namespace");
    // As a writer she may.
    berth.cli(&["namespace", "member", "team", "alice", "writer"]);
    client.run(&["push", &team]);

    // Pull back (the local copies removed so that the layers come from the registry).
    docker(&["rmi", &mine, &team]);
    let out = client.run(&["pull", &mine]);
    assert!(out.contains(&digest), "pull reports the pushed digest:\n{out}");
    assert_eq!(docker(&["run", "--rm", &mine]), expected);

    // Logged out: the private repositories are refused.
    client.logout();
    assert!(client.stored_auth().is_null(), "logout forgets the registry");
    docker(&["rmi", &mine]);
    for reference in [&mine, &team] {
        let out = client.output(&["pull", reference]);
        let text = output_text(&out).to_lowercase();
        assert!(!out.status.success(), "anonymous pull of {reference}:\n{text}");
        assert!(
            text.contains("denied") || text.contains("unauthorized"),
            "anonymous pull of {reference} refused for the wrong reason:\n{text}"
        );
    }
    // Once her namespace is public, anyone pulls it.
    berth.cli(&["namespace", "visibility", "alice", "public"]);
    client.run(&["pull", &mine]);
    assert_eq!(docker(&["run", "--rm", &mine]), expected);
    let out = client.output(&["pull", &team]);
    let text = output_text(&out).to_lowercase();
    assert!(!out.status.success(), "anonymous pull of {team}:\n{text}");
    assert!(text.contains("denied") || text.contains("unauthorized"), "{text}");
}

#[test]
fn docker_login_with_tokens_for_users_and_robots() {
    require_tools();
    let berth = Berth::start_auth();
    let host = berth.host();
    let reg_admin = DockerClient::new(&host);
    berth.cli_stdin(&["user", "add", "bob", "--password-stdin"], "bob-password-1");
    berth.cli(&["namespace", "create", "team"]);
    berth.cli(&["namespace", "create", "pub"]);
    berth.cli(&["namespace", "visibility", "pub", "public"]);
    berth.cli(&["namespace", "member", "team", "bob", "reader"]);
    let mut images = Images::new();
    let (app, expected) = local_app(&berth, &mut images, "tokens");
    let team1 = images.add(format!("{host}/team/app:1"));
    let team2 = images.add(format!("{host}/team/app:2"));
    let bobs = images.add(format!("{host}/bob/app:1"));
    let public = images.add(format!("{host}/pub/app:1"));
    for target in [&team1, &team2, &bobs, &public] {
        docker(&["tag", &app, target]);
    }

    // The admin publishes team/app:1 and pub/app:1.
    let out = reg_admin.login("admin", ADMIN_PASSWORD);
    assert!(out.status.success(), "{}", output_text(&out));
    reg_admin.run(&["push", &team1]);
    reg_admin.run(&["push", &public]);
    reg_admin.logout();

    // bob logs in with a pull-scoped personal access token.
    let out = berth.cli(&["token", "create", "--user", "bob", "--name", "laptop", "--scope", "pull"]);
    let pat = out.lines().nth(1).expect("secret on the second line").trim().to_string();
    let bob = DockerClient::new(&host);
    let out = bob.login("bob", &pat);
    assert!(out.status.success(), "docker login with a token:\n{}", output_text(&out));
    docker(&["rmi", &team1]);
    bob.run(&["pull", &team1]);
    assert_eq!(docker(&["run", "--rm", &team1]), expected);
    // A reader, and a pull-only token even in his own namespace.
    assert_refused(&bob.output(&["push", &team2]), "denied", "reader pushes to team");
    assert_refused(&bob.output(&["push", &bobs]), "denied", "pull-only token pushes");
    // With the token revoked, docker's stored login stops working.
    let id = out_token_id(&berth.cli(&["token", "list", "--user", "bob"]), "laptop");
    berth.cli(&["token", "revoke", &id]);
    docker(&["rmi", &team1]);
    assert_refused(&bob.output(&["pull", &team1]), "unauthorized", "pull with a revoked token");
    bob.logout();

    // A writer robot of the organisation pushes with its token, but only there.
    berth.cli(&["robot", "create", "team", "ci", "--role", "writer"]);
    let out = berth.cli(&["token", "create", "--user", "team+ci", "--name", "ci", "--scope", "push"]);
    let robot_token = out.lines().nth(1).unwrap().trim().to_string();
    let robot = DockerClient::new(&host);
    let out = robot.login("team+ci", &robot_token);
    assert!(out.status.success(), "robot login:\n{}", output_text(&out));
    robot.run(&["push", &team2]);
    assert_refused(&robot.output(&["push", &bobs]), "denied", "robot pushes outside its namespace");
    robot.logout();

    // Anonymous: the public namespace only.
    let anonymous = DockerClient::new(&host);
    docker(&["rmi", &public, &team2]);
    anonymous.run(&["pull", &public]);
    assert_eq!(docker(&["run", "--rm", &public]), expected);
    let out = anonymous.output(&["pull", &team2]);
    assert!(!out.status.success(), "anonymous pull of a private org:\n{}", output_text(&out));
}

/// The id of the token named `name` in `berth token list` output.
fn out_token_id(list: &str, name: &str) -> String {
    list.lines()
        .find(|l| l.split_whitespace().nth(2) == Some(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token {name} in\n{list}"))
        .to_string()
}

// ---- skopeo ------------------------------------------------------------------------------------

/// Writes a one-image OCI layout (tagged `latest`) to `dir`; returns the manifest digest.
fn oci_layout(dir: &Path, content: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        json!({"digest": digest, "size": bytes.len()})
    };
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("hello"), content).unwrap();
    let out = Command::new("tar")
        .args(["--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(src.path())
        .args(["-cf", "-", "hello"])
        .output()
        .expect("run tar");
    assert!(out.status.success());
    let mut layer = put(&out.stdout);
    layer["mediaType"] = json!(OCI_LAYER);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&out.stdout)]},
    });
    let mut config = put(&serde_json::to_vec(&config).unwrap());
    config["mediaType"] = json!(OCI_CONFIG);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer],
    });
    let mut desc = put(&serde_json::to_vec(&manifest).unwrap());
    desc["mediaType"] = json!(OCI_MANIFEST);
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    let index =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    desc["digest"].as_str().unwrap().to_string()
}

/// skopeo with its own (empty) auth file, so only the credentials on the command line count.
struct Skopeo {
    auth: tempfile::TempDir,
}

impl Skopeo {
    fn new() -> Skopeo {
        for tool in ["skopeo", "tar"] {
            let ok = Command::new(tool).arg("--version").output();
            assert!(
                ok.is_ok_and(|o| o.status.success()),
                "the skopeo tests need `{tool}` on PATH (apt-get install {tool})"
            );
        }
        Skopeo { auth: tempfile::tempdir().unwrap() }
    }

    fn output(&self, args: &[&str]) -> Output {
        Command::new("skopeo")
            .env("REGISTRY_AUTH_FILE", self.auth.path().join("auth.json"))
            .env("DOCKER_CONFIG", self.auth.path())
            .args(args)
            .output()
            .expect("run skopeo")
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "skopeo {args:?}:\n{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `skopeo copy` from a layout into the registry.
    fn copy_in(&self, src: &str, dest: &str, creds: Option<&str>) -> Output {
        let mut args = vec!["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            args.extend(["--dest-creds", c]);
        }
        args.extend([src, dest]);
        self.output(&args)
    }

    fn inspect(&self, reference: &str, creds: Option<&str>) -> Output {
        let mut args = vec!["inspect", "--tls-verify=false"];
        if let Some(c) = creds {
            args.extend(["--creds", c]);
        }
        args.push(reference);
        self.output(&args)
    }
}

#[test]
fn skopeo_with_credentials_and_tokens() {
    let skopeo = Skopeo::new();
    let berth = Berth::start_auth();
    let host = berth.host();
    berth.cli_stdin(&["user", "add", "carol", "--password-stdin"], "carol-password-1\n");
    berth.cli(&["namespace", "create", "team"]);
    berth.cli(&["robot", "create", "team", "ci", "--role", "writer"]);
    let out = berth.cli(&["token", "create", "--user", "team+ci", "--name", "ci", "--scope", "push"]);
    let robot = format!("team+ci:{}", out.lines().nth(1).unwrap().trim());
    let carol = "carol:carol-password-1";

    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let digest = oci_layout(&layout, "hello from skopeo\n");
    let src = format!("oci:{}:latest", layout.display());
    let carols = format!("docker://{host}/carol/app:1");
    let teams = format!("docker://{host}/team/app:1");

    // Into her own (private) namespace with a password.
    let out = skopeo.copy_in(&src, &carols, Some(carol));
    assert!(out.status.success(), "copy with --dest-creds:\n{}", output_text(&out));
    let inspected: Value =
        serde_json::from_str(&skopeo.run(&["inspect", "--tls-verify=false", "--creds", carol, &carols])).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    let tags: Value = serde_json::from_str(&skopeo.run(&[
        "list-tags",
        "--tls-verify=false",
        "--creds",
        carol,
        &format!("docker://{host}/carol/app"),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], json!(["1"]));

    // Without credentials, or with wrong ones: refused.
    let out = skopeo.inspect(&carols, None);
    assert!(!out.status.success(), "anonymous inspect of a private repo:\n{}", output_text(&out));
    let out = skopeo.copy_in(&src, &format!("docker://{host}/carol/app:2"), None);
    assert!(!out.status.success(), "anonymous copy:\n{}", output_text(&out));
    let out = skopeo.copy_in(&src, &format!("docker://{host}/carol/app:2"), Some("carol:wrong-password"));
    assert!(!out.status.success(), "copy with a wrong password:\n{}", output_text(&out));
    let text = output_text(&out).to_lowercase();
    assert!(text.contains("unauthorized") || text.contains("authentication required"), "{text}");

    // The organisation: the robot's token may push there, carol (an outsider) may not.
    let out = skopeo.copy_in(&src, &teams, Some(&robot));
    assert!(out.status.success(), "robot copy:\n{}", output_text(&out));
    let inspected: Value = serde_json::from_slice(&skopeo.inspect(&teams, Some(&robot)).stdout).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    let out = skopeo.copy_in(&src, &format!("docker://{host}/team/app:2"), Some(carol));
    assert!(!out.status.success(), "outsider copy:\n{}", output_text(&out));
    let text = output_text(&out).to_lowercase();
    assert!(text.contains("denied") || text.contains("403"), "{text}");
    assert!(!skopeo.inspect(&teams, Some(carol)).status.success(), "outsider inspect");
    // ... nor may the robot outside its organisation.
    let out = skopeo.copy_in(&src, &format!("docker://{host}/carol/app:3"), Some(&robot));
    assert!(!out.status.success(), "robot copy elsewhere:\n{}", output_text(&out));

    // carol's own personal access token works like her password, and copies back out.
    let out = berth.cli(&["token", "create", "--user", "carol", "--name", "skopeo", "--scope", "pull"]);
    let carol_token = format!("carol:{}", out.lines().nth(1).unwrap().trim());
    let back = tmp.path().join("back");
    skopeo.run(&[
        "copy",
        "--quiet",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &carol_token,
        &carols,
        &format!("oci:{}:latest", back.display()),
    ]);
    let index: Value = serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    let out = skopeo.copy_in(&src, &format!("docker://{host}/carol/app:4"), Some(&carol_token));
    assert!(!out.status.success(), "a pull token copies in:\n{}", output_text(&out));
}
