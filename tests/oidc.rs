//! Single sign-on through a real OpenID provider (PyPI's `oidc-provider-mock`, started per test):
//! Chromium driven by Playwright through "Log in with ...", the provider's page and back; the
//! account made with the roles its groups map to, and the roles following the groups at the
//! next login; a personal access token made after the login used by `docker login` and
//! `docker push`; a tampered `state`, a replayed callback, a wrong `nonce`, an ID token for
//! another audience and an expired one refused; a local account of the same name never taken
//! over; the provider's keys rotating; `local_login = false` with a break-glass administrator.
//!
//! Needs `oidc-provider-mock` (pip), and for the browser and docker tests what tests/ui.rs and
//! tests/auth_clients.rs need. A missing tool is a failure, not a skip.

mod common;

use std::process::Command;

use reqwest::header::COOKIE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use common::docker::{DockerClient, Images, docker, local_app, require_tools};
use common::html::{Ui, form_csrf};
use common::oidc::{Provider, Tamper, sso_login};
use common::registry::{Creds, Reg};
use common::{ADMIN_PASSWORD, Berth, client, output_text, run};

/// Group rules of every test: devs write in team-a, leads maintain it, admins administer.
const RULES: &str = "admin_groups = [\"registry-admins\"]\n\
                     [auth.oidc.group_roles]\n\
                     \"team-a-devs\" = \"team-a:writer\"\n\
                     \"team-a-leads\" = \"team-a:maintainer, lab:reader\"\n";

fn berth_for(provider: &Provider, auth_extra: &str, oidc_extra: &str) -> Berth {
    let config = format!("[auth]\n{auth_extra}\n{}", provider.berth_section(&format!("{oidc_extra}\n{RULES}")));
    // Info: the log shows the provider's keys fetched again.
    Berth::start_with_config(&config, &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD), ("BERTH_LOG", "info")])
}

fn olga(groups: &[&str]) -> Value {
    json!({ "preferred_username": "Olga", "email": "olga@example.com", "groups": groups })
}

/// The account `name` as the API lists it.
async fn account(reg: &Reg, name: &str) -> Option<Value> {
    let users = reg.api_ok(Method::GET, "/api/v1/users", None).await;
    users["users"].as_array().unwrap().iter().find(|u| u["name"] == name).cloned()
}

/// `name`'s role in `namespace`, if any.
async fn role(reg: &Reg, namespace: &str, name: &str) -> Option<String> {
    let (status, ns) = reg.api(Method::GET, &format!("/api/v1/namespaces/{namespace}"), None).await;
    if status == StatusCode::NOT_FOUND {
        return None;
    }
    ns["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["account"] == name)
        .map(|m| m["role"].as_str().unwrap().to_string())
}

/// Whether a UI session cookie opens the settings page as `name`.
async fn session_is(berth: &Berth, session: &str, name: &str) -> bool {
    let r = client()
        .get(format!("{}/settings", berth.base))
        .header(COOKIE, format!("berth_session={session}"))
        .send()
        .await
        .unwrap();
    r.status() == StatusCode::OK && r.text().await.unwrap().contains(&format!("<h2>{name}</h2>"))
}

fn screenshots_dir() -> String {
    std::env::var("BERTH_UI_SCREENSHOTS").unwrap_or_else(|_| "/tmp/berth-ui-screenshots".into())
}

#[test]
fn browser_login_makes_the_account_and_its_token_pushes_with_docker() {
    require_tools();
    assert!(std::path::Path::new("/usr/bin/chromium").is_file(), "needs Debian's chromium (apt-get install chromium)");
    let provider = Provider::start();
    let berth = berth_for(&provider, "sso_token_max_days = 30", "");
    common::block_on(provider.set_user("olga-sub", olga(&["team-a-devs"])));
    std::fs::create_dir_all(screenshots_dir()).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/browser.py");
    let out = run(Command::new("python3")
        .arg(script)
        .env("BERTH_URL", &berth.base)
        .env("SUB", "olga-sub")
        .env("EXPECT_NAME", "olga")
        .env("TOKEN_NAME", "laptop")
        .env("SHOTS", screenshots_dir()));
    assert!(out.lines().any(|l| l == "OK"), "the browser did not finish:\n{out}\n{}", berth.log());
    let token = out.lines().find_map(|l| l.strip_prefix("TOKEN=")).expect("a token").to_string();
    let expires = out.lines().find_map(|l| l.strip_prefix("TOKEN_EXPIRES=")).unwrap_or_default().to_string();
    assert!(expires.starts_with("20"), "tokens of SSO accounts expire here: {expires:?}");

    common::block_on(async {
        let reg = Reg::admin(&berth);
        let found = account(&reg, "olga").await.expect("the first login made the account");
        assert_eq!((found["origin"].as_str(), found["admin"].as_bool()), (Some("oidc"), Some(false)), "{found}");
        assert_eq!(role(&reg, "team-a", "olga").await.as_deref(), Some("writer"), "her group's role");
        let audit = reg.api_ok(Method::GET, "/api/v1/audit?actor=oidc", None).await;
        let actions: Vec<&str> =
            audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
        for action in ["user.create", "namespace.create", "member.set"] {
            assert!(actions.contains(&action), "{action} in the audit log: {actions:?}");
        }
    });

    // The token is her docker password: she pushes where her group writes, not elsewhere.
    let host = berth.host();
    berth.cli(&["namespace", "create", "lab"]);
    let mut images = Images::new();
    let (app, _) = local_app(&berth, &mut images, "oidc");
    let team = images.add(format!("{host}/team-a/app:1"));
    let lab = images.add(format!("{host}/lab/app:1"));
    docker(&["tag", &app, &team]);
    docker(&["tag", &app, &lab]);
    let docker_client = DockerClient::new(&host);
    let out = docker_client.login("olga", &token);
    assert!(out.status.success(), "docker login with the token made after SSO:\n{}", output_text(&out));
    docker_client.run(&["push", &team]);
    let out = docker_client.output(&["push", &lab]);
    let text = output_text(&out);
    assert!(!out.status.success() && text.to_lowercase().contains("denied"), "push outside her groups:\n{text}");
}

#[tokio::test]
async fn roles_follow_the_groups_at_each_login() {
    let provider = Provider::start();
    let berth = berth_for(&provider, "sso_token_max_days = 30", "");
    let reg = Reg::admin(&berth);

    provider.set_user("olga-sub", olga(&["team-a-devs"])).await;
    let first = sso_login(&berth.base, "olga-sub", Tamper::Nothing).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}\n{}", first.location_or_page, berth.log());
    assert_eq!(first.location_or_page, "/settings", "back where the login started");
    let session = first.session.clone().unwrap();
    assert!(session_is(&berth, &session, "olga").await);
    assert_eq!(role(&reg, "team-a", "olga").await.as_deref(), Some("writer"));

    // Her tokens expire within sso_token_max_days: longer is refused, none asked gets 30 days.
    let mut ui =
        Ui { c: client(), base: berth.base.clone(), cookie: format!("berth_session={session}"), csrf: String::new() };
    ui.csrf = form_csrf(&ui.get("/settings").await.1);
    let fields = [("name", "forever"), ("scope", "pull"), ("pattern", ""), ("expires_days", "365")];
    let (status, page) = ui.post("/settings/tokens", &fields).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("within 30 days"), "{page}");
    let fields = [("name", "laptop"), ("scope", "pull"), ("pattern", ""), ("expires_days", "")];
    let (status, _) = ui.post("/settings/tokens", &fields).await;
    assert!(status.is_success() || status.is_redirection(), "{status}");
    let settings = ui.get("/settings").await.1;
    let row = settings.split("<td>laptop</td>").nth(1).expect("the token is listed").split("</tr>").next().unwrap();
    // Scope, repositories, created, expires, last used.
    let expires = row.split("<td>").nth(4).unwrap_or_default();
    assert!(expires.starts_with("20"), "an expiry for a token of an SSO account: {row}");

    // Promoted at the provider: maintainer, a reader elsewhere, an administrator.
    provider.set_user("olga-sub", olga(&["team-a-leads", "registry-admins", "team-a-devs"])).await;
    let second = sso_login(&berth.base, "olga-sub", Tamper::Nothing).await;
    assert_eq!(second.status, StatusCode::SEE_OTHER, "{}", second.location_or_page);
    assert_eq!(role(&reg, "team-a", "olga").await.as_deref(), Some("maintainer"), "the highest role wins");
    assert_eq!(role(&reg, "lab", "olga").await.as_deref(), Some("reader"));
    assert_eq!(account(&reg, "olga").await.unwrap()["admin"], true);

    // Out of every group: the roles and the admin right go at the next login.
    provider.set_user("olga-sub", olga(&[])).await;
    let third = sso_login(&berth.base, "olga-sub", Tamper::Nothing).await;
    assert_eq!(third.status, StatusCode::SEE_OTHER, "{}", third.location_or_page);
    assert_eq!(role(&reg, "team-a", "olga").await, None);
    assert_eq!(role(&reg, "lab", "olga").await, None);
    assert_eq!(account(&reg, "olga").await.unwrap()["admin"], false);
    let audit = reg.api_ok(Method::GET, "/api/v1/audit?actor=oidc", None).await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["member.remove", "user.update"] {
        assert!(actions.contains(&action), "{action} in the audit log: {actions:?}");
    }
    let logins = reg.api_ok(Method::GET, "/api/v1/audit?actor=olga", None).await;
    let sso = logins["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "login").count();
    assert!(sso >= 1 && logins.to_string().contains("oidc"), "SSO logins in the audit log: {logins}");
    // No password here: the account cannot log in with one.
    let r = reg.with(&Creds::basic("olga", "")).token_response(&[], &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Disabled here: the provider's word does not open it.
    let (status, _) = reg.api(Method::PATCH, "/api/v1/users/olga", Some(json!({ "disabled": true }))).await;
    assert_eq!(status, StatusCode::OK);
    let refused = sso_login(&berth.base, "olga-sub", Tamper::Nothing).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.location_or_page);
    assert!(refused.session.is_none());
}

#[tokio::test]
async fn tampered_replayed_and_foreign_tokens_are_refused() {
    let provider = Provider::start();
    let berth = berth_for(&provider, "", "");
    let reg = Reg::admin(&berth);
    provider.set_user("olga-sub", olga(&["team-a-devs"])).await;

    for (tamper, status, says) in [
        (Tamper::State, StatusCode::UNAUTHORIZED, "state does not match"),
        (Tamper::NoCookie, StatusCode::BAD_REQUEST, "not started here"),
        (Tamper::Replay, StatusCode::UNAUTHORIZED, "expired or was already used"),
    ] {
        let out = sso_login(&berth.base, "olga-sub", tamper).await;
        assert_eq!(out.status, status, "{}", out.location_or_page);
        assert!(out.location_or_page.contains(says), "the page says why ({says}): {}", out.location_or_page);
        assert!(out.session.is_none(), "no session");
    }

    // ID tokens the real provider signs, with one claim wrong each: never an account.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let cases = [
        ("nonce", json!("not-the-nonce-sent"), "nonce"),
        ("aud", json!("another-client"), "audiences"),
        ("exp", json!(now - 600), "Expired"),
        ("iss", json!("http://127.0.0.1:1"), "issuer"),
    ];
    for (claim, value, says) in cases {
        let mut claims = json!({ "preferred_username": "mallory", "groups": ["registry-admins"] });
        claims[claim] = value;
        provider.set_user("mallory-sub", claims).await;
        let out = sso_login(&berth.base, "mallory-sub", Tamper::Nothing).await;
        assert_eq!(out.status, StatusCode::UNAUTHORIZED, "{claim}: {}", out.location_or_page);
        assert!(out.location_or_page.contains(says), "{claim}: the page says why: {}", out.location_or_page);
        assert!(out.session.is_none());
        assert!(account(&reg, "mallory").await.is_none(), "{claim}: no account made");
    }
    assert!(berth.log().contains("ID token refused"), "refusals are logged");

    // A local account of the same name is never taken over.
    let body = json!({ "name": "lucas", "password": "lucas-password-1" });
    assert_eq!(reg.api(Method::POST, "/api/v1/users", Some(body)).await.0, StatusCode::CREATED);
    provider.set_user("lucas-sub", json!({ "preferred_username": "lucas", "groups": ["registry-admins"] })).await;
    let out = sso_login(&berth.base, "lucas-sub", Tamper::Nothing).await;
    assert_eq!(out.status, StatusCode::FORBIDDEN, "{}", out.location_or_page);
    assert!(out.location_or_page.contains("ask an administrator"), "{}", out.location_or_page);
    let lucas = account(&reg, "lucas").await.unwrap();
    assert_eq!((lucas["origin"].as_str(), lucas["admin"].as_bool()), (Some("local"), Some(false)));

    // Nor an SSO account by another user of the provider who now carries its name.
    let first = sso_login(&berth.base, "olga-sub", Tamper::Nothing).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    provider.set_user("impostor-sub", olga(&["registry-admins"])).await;
    let out = sso_login(&berth.base, "impostor-sub", Tamper::Nothing).await;
    assert_eq!(out.status, StatusCode::FORBIDDEN, "{}", out.location_or_page);
    assert!(out.location_or_page.contains("another user of the identity provider"), "{}", out.location_or_page);
    assert_eq!(account(&reg, "olga").await.unwrap()["admin"], false);
}

#[tokio::test]
async fn rotated_keys_are_fetched_and_a_provider_down_is_a_503() {
    let mut provider = Provider::start();
    let berth = berth_for(&provider, "", "");
    provider.set_user("olga-sub", olga(&["team-a-devs"])).await;
    let first = sso_login(&berth.base, "olga-sub", Tamper::Nothing).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.location_or_page);

    // A restarted provider signs with a new key; Berth fetches the keys again.
    let old_keys = provider.key_ids().await;
    provider.restart();
    assert_ne!(provider.key_ids().await, old_keys, "the provider has a new key");
    provider.set_user("olga-sub", olga(&["team-a-devs"])).await;
    let after = sso_login(&berth.base, "olga-sub", Tamper::Nothing).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "{}\n{}", after.location_or_page, berth.log());
    assert!(berth.log().contains("keys fetched again"), "{}", berth.log());

    // The provider down: a clear 503 at the start of a login, local passwords still work.
    provider.stop();
    let mut berth2 = berth;
    berth2.restart();
    let r = client().get(format!("{}/login/oidc", berth2.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("identity provider does not answer"));
    let reg = Reg::admin(&berth2);
    assert_eq!(reg.status(Method::GET, "/api/v1/users").await, StatusCode::OK, "the local admin");
}

#[tokio::test]
async fn local_login_off_leaves_a_break_glass_administrator() {
    let provider = Provider::start();
    let berth = berth_for(&provider, "", "local_login = false");
    let reg = Reg::admin(&berth);
    let body = json!({ "name": "lucas", "password": "lucas-password-1" });
    assert_eq!(reg.api(Method::POST, "/api/v1/users", Some(body)).await.0, StatusCode::CREATED);

    let page = client().get(format!("{}/login", berth.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"sso-login\"") && page.contains("Log in with Test IdP"), "{page}");
    assert!(!page.contains("name=\"password\""), "no password form: {page}");
    let local = client().get(format!("{}/login?local", berth.base)).send().await.unwrap().text().await.unwrap();
    assert!(local.contains("name=\"password\""), "the break-glass form: {local}");

    // The local administrator logs in with a password (UI and registry); lucas does not, but
    // his access token works.
    let admin_ui = Ui::login_at(&berth.base, "/login?local", "admin", ADMIN_PASSWORD).await;
    assert_eq!(admin_ui.get("/admin").await.0, StatusCode::OK);
    let r = reg.with(&Creds::basic("lucas", "lucas-password-1")).token_response(&[], &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("single sign-on"), "says why");
    let out = berth.cli(&["token", "create", "--user", "lucas", "--name", "ci", "--scope", "pull"]);
    let pat = out.lines().nth(1).expect("secret on the second line").trim().to_string();
    let r = reg.with(&Creds::basic("lucas", &pat)).token_response(&[], &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "tokens work as before");
    let c = client();
    let form = c.get(format!("{}/login?local", berth.base)).send().await.unwrap();
    let (csrf, _) = common::html::set_cookie(&form, "berth_csrf").unwrap();
    use common::html::FormBody;
    let r = c
        .post(format!("{}/login", berth.base))
        .header(COOKIE, format!("berth_csrf={csrf}"))
        .form_body(&[("csrf", csrf.as_str()), ("name", "lucas"), ("password", "lucas-password-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("single sign-on"));
}
