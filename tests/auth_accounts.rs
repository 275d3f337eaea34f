//! Accounts and their credentials over their life, against a real `berth serve` with
//! authentication on: a password change ends stored logins, revoked and expired personal access
//! tokens stop working everywhere (Basic, Bearer, `/token`, as refresh token), disabled users are
//! refused everywhere until enabled again, and failed logins are throttled per address and per
//! account at an address (also behind a trusted proxy, by `X-Forwarded-For`; the per-account
//! backstop across addresses is `tests/faults.rs`'s).
//!
//! Every test starts its own server (its own port, database and login throttling).

mod common;

use std::time::{Duration, Instant};

use common::registry::{Creds, Reg, error_of, header, jwt_claims};
use common::{ADMIN_PASSWORD, Berth, client_from, sha256};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn a_password_change_ends_stored_logins() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    reg.create_user("carol", "carol-password-1").await;
    // docker login stores a refresh token instead of the password.
    let refresh = reg.offline_login("carol", "carol-password-1", "repository:carol/app:pull").await;
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
    let seed = reg.with(&alice).seed("alice/app", "v1").await;

    let created =
        reg.with(&alice).api_ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "laptop", "scope": "push"}))).await;
    let pat = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_i64().unwrap();
    assert!(pat.starts_with("berth_"));
    assert_eq!(created["scope"], "push");

    // Before revocation: as Basic password, as Bearer, at /token and as refresh token.
    let basic = Creds::basic("alice", &pat);
    assert_eq!(reg.with(&basic).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);
    assert_eq!(reg.with(&Creds::bearer(&pat)).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);
    let jwt = reg.with(&basic).token(&["repository:alice/app:pull,push,delete"]).await;
    assert_eq!(jwt_claims(&jwt)["access"][0]["actions"], json!(["pull", "push"]), "a push-scoped token gets no delete");
    assert_eq!(reg.with(&Creds::bearer(&jwt)).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);
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
        .with(&basic)
        .req(Method::DELETE, &format!("/v2/alice/app/manifests/{}", sha256(&seed.with_note("seed").manifest())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Someone else's name with the token: refused.
    let r = reg.with(&Creds::basic("bob", &pat)).get_manifest("alice/app", "v1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // bob cannot revoke alice's token; alice can.
    let (status, _) = reg
        .with(&Creds::basic("bob", "bob-password-1"))
        .api(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = reg.with(&alice).api(Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let mut accepted = Vec::new();
    let s = reg.with(&basic).get_manifest("alice/app", "v1").await.status();
    if s != StatusCode::UNAUTHORIZED {
        accepted.push(format!("Basic with the revoked token: {s}"));
    }
    let s = reg.with(&Creds::bearer(&pat)).get_manifest("alice/app", "v1").await.status();
    if s != StatusCode::UNAUTHORIZED {
        accepted.push(format!("Bearer with the revoked token: {s}"));
    }
    let s = reg.with(&Creds::bearer(&jwt)).get_manifest("alice/app", "v1").await.status();
    if s != StatusCode::UNAUTHORIZED {
        accepted.push(format!("a JWT issued from it before revocation: {s}"));
    }
    let s = reg.with(&basic).token_response(&["repository:alice/app:pull"], &[]).await.status();
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
    assert_eq!(reg.with(&alice).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);

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
    assert_eq!(reg.with(&limited).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);
    let r = reg.with(&limited).push_blob("alice/other", b"outside the pattern").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "outside the token's repositories");
    // ... and one that has already expired.
    let out = b.cli(&["token", "create", "--user", "alice", "--name", "old", "--scope", "pull", "--expires-days", "0"]);
    let expired = out.lines().nth(1).unwrap().trim().to_string();
    let r = reg.with(&Creds::basic("alice", &expired)).get_manifest("alice/app", "v1").await;
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
    reg.with(&alice).seed("alice/app", "v1").await;
    let pat = reg
        .with(&alice)
        .api_ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "t", "scope": "push"})))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let jwt = reg.with(&alice).token(&["repository:alice/app:pull"]).await;
    let refresh = reg.offline_login("alice", "alice-password-1", "repository:alice/app:pull").await;

    let disabled =
        reg.with(&Creds::admin()).api_ok(Method::PATCH, "/api/v1/users/alice", Some(json!({"disabled": true}))).await;
    assert_eq!(disabled["disabled"], true);

    let results = [
        ("Basic password", reg.with(&alice).get_manifest("alice/app", "v1").await.status()),
        ("Basic token", reg.with(&Creds::basic("alice", &pat)).get_manifest("alice/app", "v1").await.status()),
        ("JWT issued before", reg.with(&Creds::bearer(&jwt)).get_manifest("alice/app", "v1").await.status()),
        ("GET /token", reg.with(&alice).token_response(&["repository:alice/app:pull"], &[]).await.status()),
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
        ("API /me", reg.with(&alice).api(Method::GET, "/api/v1/me", None).await.0),
    ];
    let wrong: Vec<String> =
        results.iter().filter(|(_, s)| *s != StatusCode::UNAUTHORIZED).map(|(w, s)| format!("{w}: {s}")).collect();
    assert!(wrong.is_empty(), "a disabled user got in:\n{}", wrong.join("\n"));

    // Enabled again (by the CLI): everything works again.
    b.cli(&["user", "enable", "alice"]);
    assert_eq!(reg.with(&alice).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);
    assert_eq!(reg.with(&Creds::basic("alice", &pat)).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);
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
    let from = |ip: &str| Reg::new(&b).with_http(client_from(ip));
    let (attacker, elsewhere, third) = (from("127.0.0.2"), from("127.0.0.3"), from("127.0.0.4"));
    let scope = ["repository:alice/app:pull"];

    let started = Instant::now();
    for i in 0..3 {
        let r = attacker.with(&Creds::basic("alice", &format!("guess-{i}"))).token_response(&scope, &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let alice = Creds::basic("alice", "alice-password-1");
    // Per account at the guessing address: even the right password is refused there now ...
    let r = attacker.with(&alice).token_response(&scope, &[]).await;
    assert!(!header(&r, "retry-after").is_empty(), "Retry-After");
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"));
    let r = attacker.with(&alice).req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "/v2/ with Basic");
    let r = attacker
        .post_token(&[("grant_type", "password"), ("username", "alice"), ("password", "alice-password-1")])
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "POST /token");
    // ... but not for its owner elsewhere (the backstop across addresses is far away: 100).
    let r = third.with(&alice).token_response(&scope, &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "alice from another address");
    // Per address: another account from the attacker's address is refused, and a forged
    // X-Forwarded-For does not get around it.
    let bob = Creds::basic("bob", "bob-password-1");
    let r = attacker.with(&bob).token_response(&scope, &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "per address");
    let r = attacker.with(&bob).req(Method::GET, "/v2/").header("x-forwarded-for", "10.9.8.7").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "X-Forwarded-For is not trusted");
    // Others are not affected.
    let r = elsewhere.with(&bob).token_response(&scope, &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "bob from another address");
    let r = third.with(&Creds::basic("carol", "carol-password-1")).token_response(&scope, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);

    // After the lockout window alice gets in again from the guessing address too.
    let wait = Duration::from_secs(5).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    let r = attacker.with(&alice).token_response(&scope, &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "after the lockout");

    // Bad refresh tokens are throttled per address too, and must not lock out other clients'
    // refresh tokens (docker and containerd renew with them on every pull and push).
    let refresh = reg.offline_login("dave", "dave-password-1", "repository:dave/app:pull").await;
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
    let proxy = Reg::new(&b).with_http(client_from("127.0.0.9"));
    let scope = ["repository:erin/app:pull"];
    // A guessing client behind the proxy: three wrong passwords for three different accounts'
    // worth of names, so only the per-address limit can trip.
    for (i, user) in ["nobody-1", "nobody-2", "nobody-3"].iter().enumerate() {
        let r = proxy
            .with(&Creds::basic(user, &format!("guess-{i}")))
            .req(Method::GET, "/v2/")
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let frank = Creds::basic("frank", "frank-password-1");
    let r = proxy.with(&frank).req(Method::GET, "/v2/").header("x-forwarded-for", "203.0.113.7").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "the guessing client (by its forwarded address)");
    // Another client behind the same proxy is not locked out ...
    let r = proxy.with(&frank).req(Method::GET, "/v2/").header("x-forwarded-for", "198.51.100.4").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "another client behind the proxy");
    // ... nor is the proxy's own address.
    let r = proxy.with(&Creds::basic("erin", "erin-password-1")).token_response(&scope, &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "a request with no forwarded address");
    // An untrusted peer cannot choose its address: its header is ignored.
    let direct = Reg::new(&b).with_http(client_from("127.0.0.10"));
    for i in 0..3 {
        let r = direct
            .with(&Creds::basic("nobody", &format!("guess-{i}")))
            .req(Method::GET, "/v2/")
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = direct.with(&frank).req(Method::GET, "/v2/").header("x-forwarded-for", "192.0.2.99").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "X-Forwarded-For from an untrusted peer");
}
