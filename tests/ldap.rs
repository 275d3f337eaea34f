//! Logins through a real directory (Debian's `slapd`, started per test with a small tree):
//! `docker login` with a directory password, pushes where the user's group gives a role and
//! refusals elsewhere, a removal from the group taking the role away within the remembered
//! time, a filter-injection name that does not log in, a local account that the directory
//! never takes over, and a stopped directory that leaves local accounts and issued tokens
//! working while its users' password logins get 503.
//!
//! Needs `slapd` and `ldap-utils` (scripts/prereqs test installs them), and for the docker test
//! what tests/auth_clients.rs needs. A missing tool is a failure, not a skip.

mod common;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use common::docker::{DockerClient, Images, docker, local_app, require_tools};
use common::html::Ui;
use common::registry::{Creds, Reg, jwt_actions};
use common::slapd::Slapd;
use common::{ADMIN_PASSWORD, Berth, output_text};

const LENA_PASSWORD: &str = "lena-directory-1";

/// A directory with lena (in `team-devs`), ada (in `registry-admins`) and omar (no group),
/// and a Berth that asks it; roles are remembered for 2 seconds.
fn setup() -> (Slapd, Berth) {
    let slapd = Slapd::start();
    slapd.add_user("lena", LENA_PASSWORD);
    slapd.add_user("ada", "ada-directory-1");
    slapd.add_user("omar", "omar-directory-1");
    slapd.add_group("team-devs", &["lena"]);
    slapd.add_group("registry-admins", &["ada"]);
    let config = slapd.berth_config(
        "remember_secs = 2\nadmin_groups = [\"registry-admins\"]\n\
         [auth.ldap.group_roles]\n\"team-devs\" = \"team:writer, shared:reader\"\n",
    );
    let berth = Berth::start_with_config(&config, &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    (slapd, berth)
}

/// Whether `creds` may start an upload in `repo` (202), or why not.
async fn may_push(reg: &Reg, creds: &Creds, repo: &str) -> StatusCode {
    reg.with(creds).status(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).await
}

#[tokio::test]
async fn directory_users_get_their_groups_roles_and_lose_them() {
    let (slapd, berth) = setup();
    let reg = Reg::admin(&berth);
    let lena = Creds::basic("lena", LENA_PASSWORD);
    assert_eq!(may_push(&reg, &lena, "team/app").await, StatusCode::ACCEPTED, "{}", berth.log());
    assert_eq!(may_push(&reg, &lena, "lena/app").await, StatusCode::ACCEPTED, "her own namespace");
    assert_eq!(may_push(&reg, &lena, "shared/app").await, StatusCode::FORBIDDEN, "a reader does not push");
    assert_eq!(may_push(&reg, &Creds::basic("lena", "wrong-password"), "team/app").await, StatusCode::UNAUTHORIZED);

    // The account exists, says where it comes from, has no password here.
    let users = reg.api_ok(Method::GET, "/api/v1/users", None).await;
    let find = |name: &str| users["users"].as_array().unwrap().iter().find(|u| u["name"] == name).cloned();
    let account = find("lena").expect("lena's account was made");
    assert_eq!((account["origin"].as_str(), account["admin"].as_bool()), (Some("ldap"), Some(false)));
    let team = reg.api_ok(Method::GET, "/api/v1/namespaces/team", None).await;
    assert!(
        team["members"].as_array().unwrap().iter().any(|m| m["account"] == "lena" && m["role"] == "writer"),
        "{team}"
    );
    let body = serde_json::json!({ "password": "a-local-password-1" });
    let (status, _) = reg.api(Method::PATCH, "/api/v1/users/lena", Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the directory keeps her password");
    // What her groups decide is not changed here: it would come back at her next login.
    let (status, _) = reg.api(Method::PATCH, "/api/v1/users/lena", Some(serde_json::json!({ "admin": true }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "admin rights follow the groups");
    let (status, _) = reg.api(Method::DELETE, "/api/v1/namespaces/team/members/lena", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a role the groups give");

    // An administrator by group: may list users, and opens the admin page in the web UI.
    let ada = reg.with(&Creds::basic("ada", "ada-directory-1"));
    let (status, _) = ada.api(Method::GET, "/api/v1/users", None).await;
    assert_eq!(status, StatusCode::OK);
    let ada_ui = Ui::login(&berth.base, "ada", "ada-directory-1").await;
    assert_eq!(ada_ui.get("/admin").await.0, StatusCode::OK);

    // A refresh token (docker's stored login) re-reads the groups once the remembered time is over.
    let refresh = reg.offline_login("lena", LENA_PASSWORD, "repository:team/app:pull,push").await;
    slapd.remove_member("team-devs", "lena");
    slapd.remove_member("registry-admins", "ada");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // A web UI session re-reads the groups too: ada's admin page is gone without a new login.
    assert_eq!(ada_ui.get("/admin").await.0, StatusCode::FORBIDDEN, "admin rights follow the groups in a session");
    assert_eq!(may_push(&reg, &lena, "team/app").await, StatusCode::FORBIDDEN, "removed from the group");
    let r = reg.refresh_grant(&refresh, "repository:team/app:pull,push").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let granted = jwt_actions(body["token"].as_str().unwrap(), "team/app");
    assert!(!granted.contains(&"push".to_string()), "push is gone for the stored login too: {granted:?}");
    let audit = reg.api_ok(Method::GET, "/api/v1/audit?actor=ldap", None).await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["user.create", "member.set", "member.remove"] {
        assert!(actions.contains(&action), "{action} in the audit log: {actions:?}");
    }
}

#[tokio::test]
async fn injection_local_precedence_and_a_stopped_directory() {
    let (mut slapd, berth) = setup();
    let reg = Reg::admin(&berth);
    // A filter-injection name matches every user if unescaped; it must not log in.
    for name in ["*)(uid=*", "*", "lena)(|(uid=*"] {
        let r = reg.with(&Creds::basic(name, LENA_PASSWORD)).token_response(&[], &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
    }
    // omar has a local account: the directory's password is not his password here.
    berth.cli_stdin(&["user", "add", "omar", "--password-stdin"], "omar-local-pass-1\n");
    let omar_dir = reg.with(&Creds::basic("omar", "omar-directory-1")).token_response(&[], &[]).await;
    assert_eq!(omar_dir.status(), StatusCode::UNAUTHORIZED, "a local account is never taken over");
    let omar_local = reg.with(&Creds::basic("omar", "omar-local-pass-1")).token_response(&[], &[]).await;
    assert_eq!(omar_local.status(), StatusCode::OK);

    // lena logs in once (a stored login), then the directory stops.
    let lena = Creds::basic("lena", LENA_PASSWORD);
    assert_eq!(may_push(&reg, &lena, "team/app").await, StatusCode::ACCEPTED);
    let refresh = reg.offline_login("lena", LENA_PASSWORD, "repository:team/app:pull,push").await;
    slapd.stop();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await; // past the remembered time
    let down = reg.with(&lena).token_response(&[], &[]).await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE, "a clear 503 for directory users");
    let text = down.text().await.unwrap();
    assert!(text.contains("directory"), "{text}");
    assert_eq!(reg.token_response(&[], &[]).await.status(), StatusCode::OK, "the local admin still logs in");
    let r = reg.refresh_grant(&refresh, "repository:team/app:pull,push").await;
    assert_eq!(r.status(), StatusCode::OK, "an issued login keeps working");
    let body: Value = r.json().await.unwrap();
    assert!(jwt_actions(body["token"].as_str().unwrap(), "team/app").contains(&"push".to_string()));
    slapd.restart();
    assert_eq!(may_push(&reg, &lena, "team/app").await, StatusCode::ACCEPTED, "back when the directory is");
}

#[test]
fn docker_login_and_push_with_a_directory_password() {
    require_tools();
    let (_slapd, berth) = setup();
    let host = berth.host();
    berth.cli(&["namespace", "create", "lab"]);
    let mut images = Images::new();
    let (app, _) = local_app(&berth, &mut images, "ldap");
    let team = images.add(format!("{host}/team/app:1"));
    let lab = images.add(format!("{host}/lab/app:1"));
    docker(&["tag", &app, &team]);
    docker(&["tag", &app, &lab]);
    let client = DockerClient::new(&host);
    let out = client.login("lena", LENA_PASSWORD);
    assert!(out.status.success(), "docker login with the directory password:\n{}", output_text(&out));
    client.run(&["push", &team]);
    let out = client.output(&["push", &lab]);
    let text = output_text(&out);
    assert!(!out.status.success() && text.to_lowercase().contains("denied"), "push outside her groups:\n{text}");
}

/// `ldap://` upgraded with StartTLS: the directory's certificate is checked against `ca_file`;
/// without it (the system's roots do not know that CA) its users cannot log in.
#[tokio::test]
async fn starttls_checks_the_directorys_certificate() {
    let slapd = Slapd::start_tls();
    slapd.add_user("lena", LENA_PASSWORD);
    let lena = Creds::basic("lena", LENA_PASSWORD);
    let trusted = slapd.berth_config(&format!("starttls = true\nca_file = \"{}\"\n", slapd.ca_file().display()));
    let berth = Berth::start_with_config(&trusted, &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let reg = Reg::admin(&berth);
    assert_eq!(may_push(&reg, &lena, "lena/app").await, StatusCode::ACCEPTED, "{}", berth.log());
    let untrusted =
        Berth::start_with_config(&slapd.berth_config("starttls = true\n"), &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let reg = Reg::admin(&untrusted);
    assert_eq!(may_push(&reg, &lena, "lena/app").await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(untrusted.log().contains("directory"), "the reason is logged: {}", untrusted.log());
}
