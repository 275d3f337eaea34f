//! Who may do what, through the token flow against a real `berth serve` with authentication on:
//! the authorisation matrix (admin, namespace owner, an organisation's maintainer, writer and
//! reader, an outsider, a robot and anonymous, each trying pull, push, overwrite, delete, mount
//! and the catalog on an own, an organisation's, a public and a private repository), and
//! credentials that never have fewer rights than an anonymous client.

mod common;

use common::images::Image;
use common::registry::{Creds, Reg, error_of, jwt_claims};
use common::{Berth, images::OCI_MANIFEST, sha256};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A credential never has fewer rights than an anonymous client: a personal access token
/// limited to `team/*` and a robot of another namespace both pull a public repository outside
/// their reach (and push nothing there), with Basic credentials and through the token flow.
#[tokio::test]
async fn limited_credentials_still_pull_what_is_public() {
    let b = Berth::start_auth();
    let reg = Reg::new(&b);
    let admin = reg.with(&Creds::admin());
    reg.create_user("alice", "alice-password-1").await;
    let alice = Creds::basic("alice", "alice-password-1");
    for ns in ["team", "pub"] {
        admin.api_ok(Method::POST, "/api/v1/namespaces", Some(json!({"name": ns}))).await;
    }
    admin.api_ok(Method::PUT, "/api/v1/namespaces/pub/visibility", Some(json!({"public": true}))).await;
    admin.api_ok(Method::PUT, "/api/v1/namespaces/team/members/alice", Some(json!({"role": "writer"}))).await;
    admin.seed("pub/base", "v1").await;
    admin.seed("alice/private", "v1").await;
    let made = reg
        .with(&alice)
        .api_ok(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "ci", "scope": "push", "repository_pattern": "team/*"})),
        )
        .await;
    let limited = Creds::basic("alice", made["token"].as_str().unwrap());
    let robot = admin
        .api_ok(Method::POST, "/api/v1/namespaces/team/robots", Some(json!({"name": "ci", "role": "writer"})))
        .await;
    let robot_name = robot["name"].as_str().unwrap().to_string();
    let path = format!("/api/v1/robots/{robot_name}/tokens");
    let made = admin.api_ok(Method::POST, &path, Some(json!({"name": "robot", "scope": "push"}))).await;
    let robot = Creds::basic(&robot_name, made["token"].as_str().unwrap());
    for (label, creds) in [("limited token", &limited), ("robot", &robot)] {
        // Directly with Basic credentials.
        assert_eq!(reg.with(creds).get_manifest("pub/base", "v1").await.status(), StatusCode::OK, "{label}, Basic");
        // Through a registry token.
        let t = Creds::bearer(&reg.with(creds).token(&["repository:pub/base:pull,push"]).await);
        assert_eq!(claims_actions(&t, "pub/base"), ["pull"], "{label}");
        assert_eq!(reg.with(&t).get_manifest("pub/base", "v1").await.status(), StatusCode::OK, "{label}, token");
        let r = reg.with(&t).push_blob("pub/base", b"not theirs").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{label} pushes into a public namespace");
        // What is not public stays out of reach.
        assert_eq!(
            reg.with(creds).get_manifest("alice/private", "v1").await.status(),
            StatusCode::FORBIDDEN,
            "{label}"
        );
    }
    // Inside its limit the token works as before.
    assert_eq!(reg.with(&limited).push_blob("team/app", b"inside").await.status(), StatusCode::CREATED);
}

/// The actions a registry token grants on `repo`.
fn claims_actions(token: &Creds, repo: &str) -> Vec<String> {
    let Creds::Bearer(jwt) = token else { panic!("not a registry token") };
    let access = jwt_claims(jwt)["access"].as_array().cloned().unwrap_or_default();
    access
        .iter()
        .filter(|e| e["type"] == "repository" && e["name"] == repo)
        .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
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
async fn run_cell(reg: &Reg, who: &Who, repo: &str, seed: &Image, action: &str) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    let admin = reg.with(&Creds::admin());
    let token = |scopes: Vec<String>| {
        let creds = who.creds.clone();
        async move {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            Creds::bearer(&reg.with(&creds).token(&scopes).await)
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
            (reg.with(&t).get_manifest(repo, "v1").await, StatusCode::OK)
        }
        "push" => {
            let t = token(vec![push_scope]).await;
            let data = format!("pushed by {} into {repo}", who.label);
            (reg.with(&t).push_blob(repo, data.as_bytes()).await, StatusCode::CREATED)
        }
        "overwrite" => {
            let t = token(vec![push_scope]).await;
            let body = seed.with_note(&format!("overwritten by {}", who.label)).manifest();
            (reg.with(&t).put_manifest(repo, "v1", OCI_MANIFEST, &body).await, StatusCode::CREATED)
        }
        "delete" => {
            // A sacrificial manifest, made by the admin for this cell.
            let body = seed.with_note(&format!("victim for {}", who.label)).manifest();
            let digest = sha256(&body);
            let r = admin.put_manifest(repo, "victim", OCI_MANIFEST, &body).await;
            assert_eq!(r.status(), StatusCode::CREATED, "admin recreates the victim in {repo}");
            let t = token(vec![format!("repository:{repo}:delete")]).await;
            let r = reg.with(&t).req(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}")).send().await.unwrap();
            let deleted = r.status() == StatusCode::ACCEPTED;
            let after = admin.get_manifest(repo, &digest).await.status();
            let want_after = if deleted { StatusCode::NOT_FOUND } else { StatusCode::OK };
            if after != want_after {
                notes.push(format!("after DELETE answered {}, the manifest answers {after}", r.status()));
            }
            (r, StatusCode::ACCEPTED)
        }
        "mount" => {
            let target = &who.push_target;
            let t = token(vec![format!("repository:{target}:pull,push"), format!("repository:{repo}:pull")]).await;
            let layer = &seed.layer_digest(0);
            let r = reg
                .with(&t)
                .req(Method::POST, &format!("/v2/{target}/blobs/uploads/?mount={layer}&from={repo}"))
                .send()
                .await
                .unwrap();
            let status = r.status();
            if status == StatusCode::CREATED || status == StatusCode::ACCEPTED {
                let head = reg
                    .with(&t)
                    .req(Method::HEAD, &format!("/v2/{target}/blobs/{layer}"))
                    .send()
                    .await
                    .unwrap()
                    .status();
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
    let t = Creds::bearer(&reg.with(&who.creds).token(&["registry:catalog:*"]).await);
    let r = reg.with(&t).req(Method::GET, "/v2/_catalog").send().await.unwrap();
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
    let admin_api = reg.with(&admin);
    let password = |u: &str| format!("{u}-password-1");
    for u in ["olivia", "mara", "walt", "rita", "otto"] {
        reg.create_user(u, &password(u)).await;
    }
    let user = |u: &str| Creds::basic(u, &password(u));
    for org in ["team", "puborg", "privorg"] {
        let v = admin_api.api_ok(Method::POST, "/api/v1/namespaces", Some(json!({"name": org}))).await;
        assert_eq!(v["public"], false, "organisations start private");
    }
    admin_api.api_ok(Method::PUT, "/api/v1/namespaces/puborg/visibility", Some(json!({"public": true}))).await;
    admin_api.api_ok(Method::PUT, "/api/v1/namespaces/team/members/mara", Some(json!({"role": "maintainer"}))).await;
    // The maintainer manages the organisation: members and the robot.
    for (member, role) in [("walt", "writer"), ("rita", "reader")] {
        reg.with(&user("mara"))
            .api_ok(Method::PUT, &format!("/api/v1/namespaces/team/members/{member}"), Some(json!({"role": role})))
            .await;
    }
    let robot = reg
        .with(&user("mara"))
        .api_ok(Method::POST, "/api/v1/namespaces/team/robots", Some(json!({"name": "ci", "role": "writer"})))
        .await;
    assert_eq!(robot["name"], "team+ci");
    let robot_token = reg
        .with(&user("mara"))
        .api_ok(Method::POST, "/api/v1/robots/team+ci/tokens", Some(json!({"name": "pipeline", "scope": "delete"})))
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
        let (status, v) = reg.with(&user(who)).api(method.clone(), path, Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {method} {path}: {v}");
    }

    let mut seeds = Vec::new();
    for (_, repo) in REPOS {
        seeds.push(admin_api.seed(repo, "v1").await);
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
        let t = Creds::bearer(&reg.with(&who.creds).token(&["repository:puborg/app:pull"]).await);
        assert_eq!(reg.with(&t).get_manifest("puborg/app", "v1").await.status(), StatusCode::OK, "{}", who.label);
    }
}
