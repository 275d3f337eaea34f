//! The token endpoint and the registry tokens it hands out, over HTTP against a real
//! `berth serve` with authentication on: the challenges of `/v2/` (realm, service, scope),
//! widening a token that lacks a scope (`insufficient_scope`), the OAuth2 grants of `POST /token`
//! (password and refresh token, as containerd and docker use them), forged, expired and
//! tampered JWTs, and registry tokens kept out of the token endpoint and the management API.
//!
//! Every test starts its own server (its own port, database and login throttling).

mod common;

use common::registry::{Creds, Reg, error_of, header, jwt_claims};
use common::{Berth, images::OCI_MANIFEST, sha256};
use data_encoding::BASE64URL_NOPAD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

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
        let r = reg.with(&anon).req(method.clone(), &path).send().await.unwrap();
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
    let r = reg.with(&Creds::admin()).req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg.with(&Creds::basic("admin", "wrong-password")).req(Method::GET, "/v2/").send().await.unwrap();
    let (status, code, challenge) = error_of(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(challenge.starts_with(&realm), "{challenge}");

    // A valid token for another repository: 401 with a challenge for this one (the client
    // fetches a new token), not 403.
    let tok = reg.with(&Creds::admin()).token(&["repository:other/app:pull"]).await;
    let r = reg.with(&Creds::bearer(&tok)).get_manifest("team/app", "v1").await;
    let (status, _, challenge) = error_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, format!("{realm},scope=\"repository:team/app:pull\",error=\"insufficient_scope\""));
    // Any valid token passes the /v2/ check.
    let r = reg.with(&Creds::bearer(&tok)).req(Method::GET, "/v2/").send().await.unwrap();
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
    let seed = reg.with(&alice).seed("alice/app", "v1").await;
    let layer = seed.layer_digest(0);

    // containerd's order: a pull token for the HEAD, then the upload with it.
    let pull = Creds::bearer(&reg.with(&alice).token(&["repository:alice/app:pull"]).await);
    let r = reg.with(&pull).req(Method::HEAD, &format!("/v2/alice/app/blobs/{layer}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg.with(&pull).push_blob("alice/app", b"pushed after widening").await;
    let (status, code, challenge) = error_of(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert_eq!(challenge, insufficient("repository:alice/app:pull,push"));
    // The client asks for that scope and retries: it works.
    let push = Creds::bearer(&reg.with(&alice).token(&["repository:alice/app:pull,push"]).await);
    let r = reg.with(&push).push_blob("alice/app", b"pushed after widening").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.with(&pull).put_manifest("alice/app", "v2", OCI_MANIFEST, &seed.with_note("v2").manifest()).await;
    assert_eq!(error_of(r).await.2, insufficient("repository:alice/app:pull,push"));

    // A pull,push token reused for a DELETE.
    let body = seed.with_note("to delete").manifest();
    assert_eq!(
        reg.with(&push).put_manifest("alice/app", "gone", OCI_MANIFEST, &body).await.status(),
        StatusCode::CREATED
    );
    let path = format!("/v2/alice/app/manifests/{}", sha256(&body));
    let r = reg.with(&push).req(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(error_of(r).await.2, insufficient("repository:alice/app:delete"));
    let delete = Creds::bearer(&reg.with(&alice).token(&["repository:alice/app:delete"]).await);
    assert_eq!(reg.with(&delete).req(Method::DELETE, &path).send().await.unwrap().status(), StatusCode::ACCEPTED);

    // A token for repository A reused for a mount into repository B: B's scope is named.
    let mount = format!("/v2/alice/copy/blobs/uploads/?mount={layer}&from=alice/app");
    let r = reg.with(&push).req(Method::POST, &mount).send().await.unwrap();
    assert_eq!(error_of(r).await.2, insufficient("repository:alice/copy:pull,push"));
    let both =
        Creds::bearer(&reg.with(&alice).token(&["repository:alice/copy:pull,push", "repository:alice/app:pull"]).await);
    assert_eq!(reg.with(&both).req(Method::POST, &mount).send().await.unwrap().status(), StatusCode::CREATED);

    // containerd asks for one repository twice in a token request (`pull`, then `pull,push`):
    // any entry that grants the action counts.
    let twice = reg.with(&alice).token(&["repository:alice/app:pull", "repository:alice/app:pull,push"]).await;
    assert_eq!(jwt_claims(&twice)["access"].as_array().unwrap().len(), 2, "{}", jwt_claims(&twice));
    let r = reg.with(&Creds::bearer(&twice)).push_blob("alice/app", b"pushed with a repeated scope").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A mount whose source the token does not name: an upload session instead (202), though
    // alice may pull there.
    let own = Creds::bearer(&reg.with(&alice).token(&["repository:alice/copy2:pull,push"]).await);
    let mount2 = format!("/v2/alice/copy2/blobs/uploads/?mount={layer}&from=alice/app");
    assert_eq!(reg.with(&own).req(Method::POST, &mount2).send().await.unwrap().status(), StatusCode::ACCEPTED);

    // The catalog, with a token that does not name it.
    let r = reg.with(&push).req(Method::GET, "/v2/_catalog").send().await.unwrap();
    assert_eq!(error_of(r).await.2, insufficient("registry:catalog:*"));

    // An account that may not push there gets 403 DENIED naming what is missing, whatever
    // token it holds: a wider one would not be granted.
    for scopes in [&["repository:alice/app:pull"][..], &["repository:rita/app:pull"][..]] {
        let t = Creds::bearer(&reg.with(&rita).token(scopes).await);
        let r = reg.with(&t).push_blob("alice/app", b"not rita's").await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{scopes:?}: {body}");
        assert_eq!(body["errors"][0]["code"], "DENIED");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("push alice/app"), "{body}");
    }

    // An anonymous token: for what anyone may do (a public repository) it is widened like
    // any other; for the rest the answer is the plain challenge, as without a token, so the
    // client logs in (docker then says "unauthorized: authentication required").
    reg.with(&alice).api_ok(Method::POST, "/api/v1/namespaces", Some(json!({"name": "pub"}))).await;
    reg.with(&alice).api_ok(Method::PUT, "/api/v1/namespaces/pub/visibility", Some(json!({"public": true}))).await;
    reg.with(&alice).seed("pub/app", "v1").await;
    let anon = Creds::bearer(&reg.token(&["repository:alice/app:pull"]).await);
    let r = reg.with(&anon).get_manifest("pub/app", "v1").await;
    let (status, _, challenge) = error_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, insufficient("repository:pub/app:pull"));
    let r = reg.with(&anon).get_manifest("alice/app", "v1").await;
    let (status, _, challenge) = error_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, format!("{realm},scope=\"repository:alice/app:pull\""));
}

#[tokio::test]
async fn oauth2_password_and_refresh_grants() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    reg.create_user("alice", "alice-password-1").await;
    let scope = "repository:alice/app:pull,push";

    // containerd's first request: grant_type=password with access_type=offline.
    let password_grant = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "alice-password-1"),
        ("scope", scope),
        ("service", "berth"),
        ("client_id", "containerd"),
    ];
    let r = reg.post_token(&[&password_grant[..], &[("access_type", "offline")]].concat()).await;
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
    let c = jwt_claims(&access);
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
    let seed = reg.with(&bearer).seed("alice/app", "v1").await;
    assert_eq!(reg.with(&bearer).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);

    // Without access_type=offline: no refresh token.
    let r = reg.post_token(&password_grant).await;
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
        jwt_claims(&pulled)["access"],
        json!([
            {"type": "repository", "name": "alice/app", "actions": ["pull"]},
            {"type": "repository", "name": "alice/other", "actions": ["pull", "push"]},
        ])
    );
    let pull_only = Creds::bearer(&pulled);
    assert_eq!(reg.with(&pull_only).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);
    let r = reg.with(&pull_only).put_manifest("alice/app", "v2", OCI_MANIFEST, &seed.with_note("v2").manifest()).await;
    // The account may push: the client is sent for a wider token.
    let (status, _, challenge) = error_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "token lacks push");
    assert!(
        challenge.ends_with(",scope=\"repository:alice/app:pull,push\",error=\"insufficient_scope\""),
        "{challenge}"
    );

    // GET /token with offline_token=true (docker login) also hands out a refresh token.
    let r = reg
        .with(&Creds::basic("alice", "alice-password-1"))
        .token_response(&[], &[("offline_token", "true"), ("client_id", "docker")])
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
    let tok = reg.token(&[scope]).await;
    assert_eq!(jwt_claims(&tok)["sub"], "");
    assert_eq!(jwt_claims(&tok)["access"][0]["actions"], json!([]));
    let r = reg.with(&Creds::bearer(&tok)).get_manifest("alice/app", "v1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    reg.create_user("bob", "bob-password-1").await;
    let tok = reg.with(&Creds::basic("bob", "bob-password-1")).token(&[scope]).await;
    assert_eq!(jwt_claims(&tok)["access"][0]["actions"], json!([]));
    let r = reg.with(&Creds::bearer(&tok)).get_manifest("alice/app", "v1").await;
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
}

// ---- forged and damaged registry tokens --------------------------------------------------------

/// The registry's signing key (kid and PKCS#8 DER), read from its database.
async fn signing_key(b: &Berth) -> (String, Vec<u8>) {
    const SQL: &str = "SELECT kid, private_key FROM signing_keys WHERE id = 'registry-token'";
    let mut conn = common::db::connect(b).await;
    let (kid, key): (String, String) = sqlx::query_as(SQL).fetch_one(&mut conn).await.unwrap();
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
    let seed = reg.with(&alice).seed("alice/app", "v1").await;
    let (kid, der) = signing_key(&b).await;

    let status_with = |tok: String| {
        let reg = &reg;
        async move {
            let r = reg.with(&Creds::bearer(&tok)).get_manifest("alice/app", "v1").await;
            let status = r.status();
            let challenge = header(&r, "www-authenticate");
            (status, challenge)
        }
    };

    // Controls: the registry's own token works, and so does one the test signs with the real
    // key (so the refusals below are about what was changed, not about how the test signs).
    let real = reg.with(&alice).token(&["repository:alice/app:pull"]).await;
    assert_eq!(status_with(real.clone()).await.0, StatusCode::OK);
    let forged_ok = sign(&kid, &der, &pull_claims("alice", "alice/app", &["pull"]));
    assert_eq!(status_with(forged_ok).await.0, StatusCode::OK, "test-signed token works");
    // ... including for a pull-only token asked to push: 401 asking for the wider scope
    // (alice may push there).
    let r = reg
        .with(&Creds::bearer(&real))
        .put_manifest("alice/app", "v2", OCI_MANIFEST, &seed.with_note("x").manifest())
        .await;
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
    let mut c = jwt_claims(&real);
    c["sub"] = json!("admin");
    let payload = BASE64URL_NOPAD.encode(&serde_json::to_vec(&c).unwrap());
    cases.push(("tampered payload (sub)", format!("{}.{payload}.{}", parts[0], parts[2])));
    let mut c = jwt_claims(&real);
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
    let tok = reg.with(&alice).token(&["repository:alice/app:pull"]).await;
    let bearer = Creds::bearer(&tok);

    let r = reg.with(&bearer).token_response(&["repository:alice/app:pull,push,delete"], &[]).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a pull-only registry token was exchanged at /token for {}",
        body["token"].as_str().map(|t| jwt_claims(t)["access"].to_string()).unwrap_or_default()
    );

    let (status, body) = reg
        .with(&bearer)
        .api(Method::POST, "/api/v1/tokens", Some(json!({"name": "escalated", "scope": "delete"})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a pull-only registry token created a personal access token: {body}");
    let (status, _) = reg.with(&bearer).api(Method::GET, "/api/v1/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A personal access token as Bearer is fine for the API (it is a login).
    let pat =
        reg.with(&alice).api_ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "full", "scope": "delete"}))).await;
    let pat = pat["token"].as_str().unwrap();
    let me = reg.with(&Creds::bearer(pat)).api_ok(Method::GET, "/api/v1/me", None).await;
    assert_eq!(me["name"], "alice");
    // ... for reading. No token, however wide, may mint another token or change access.
    let limited = reg
        .with(&alice)
        .api_ok(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "ci", "scope": "delete", "repository_pattern": "alice/ci-*", "expires_days": 7})),
        )
        .await;
    for creds in [Creds::bearer(pat), Creds::basic("alice", limited["token"].as_str().unwrap())] {
        let (status, body) = reg
            .with(&creds)
            .api(Method::POST, "/api/v1/tokens", Some(json!({"name": "wider", "scope": "delete"})))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a token minted a token: {body}");
        let (status, _) = reg
            .with(&creds)
            .api(Method::PUT, "/api/v1/namespaces/alice/visibility", Some(json!({"public": true})))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a token changed visibility");
    }
}
