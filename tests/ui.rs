//! The web UI end to end: a real berth with authentication, images pushed and pulled by the
//! real docker engine, the pages driven in a real browser (Debian's chromium through
//! Playwright, `tests/ui/browser.py`), and the session/CSRF rules checked over HTTP.
//!
//! Needs what tests/docker_e2e.rs needs plus `/usr/bin/chromium` and PyPI's `playwright`
//! (`.ci/run` installs them). Screenshots go to `$BERTH_UI_SCREENSHOTS`, else
//! `/tmp/berth-ui-screenshots`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::docker::{DockerClient, Images, docker, docker_output, import_busybox, pushed_digest, require_tools};
use common::html::{FormBody, Ui, form_csrf, set_cookie, ui_login};
use common::images::{DOCKER_MANIFEST, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, tiny};
use common::registry::{Creds, Reg};
use common::{ADMIN_PASSWORD, Berth, client, run, sha256};
use reqwest::header::{COOKIE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const XSS: &str = "<script>alert(1)</script>";

fn screenshots_dir() -> PathBuf {
    std::env::var_os("BERTH_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/berth-ui-screenshots"))
}

/// Panics with an actionable message unless the browser and Playwright are there.
fn require_browser() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").is_file(),
        "the UI tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
    );
    let ok =
        Command::new("python3").args(["-c", "import playwright.sync_api"]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "the UI tests need Playwright for Python (pip install playwright; no `playwright install` needed)");
}

/// Runs one phase of tests/ui/browser.py; returns its stdout (panics with its output on failure).
fn browser(berth: &Berth, phase: &str, repo: &str, extra: &[(&str, &str)]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/browser.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(phase)
        .env("BERTH_URL", &berth.base)
        .env("BERTH_HOST", berth.host())
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("REPO", repo)
        .env("SHOTS", screenshots_dir());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert!(out.lines().any(|l| l == format!("OK {phase}")), "browser phase {phase} did not finish:\n{out}");
    out
}

fn line_value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

/// Builds `name` from busybox with a `<script>` label, an env var with markup, a working dir,
/// a port, a COPY layer and a CMD: history lines with and without layers.
fn build_labelled_image(base: &str, name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("marker.txt"), "berth ui test\n").unwrap();
    let dockerfile = format!(
        "FROM {base}\n\
         LABEL org.example.note=\"{XSS}\"\n\
         ENV XSS_PROBE=\"<img src=x onerror=alert(2)>\"\n\
         WORKDIR /app\n\
         COPY marker.txt /app/marker.txt\n\
         EXPOSE 8080/tcp\n\
         CMD [\"sh\"]\n"
    );
    std::fs::write(tmp.path().join("Dockerfile"), dockerfile).unwrap();
    run(Command::new("docker").args(["build", "-q", "-t", name]).arg(tmp.path()));
}

/// Pushes, as admin over the API, the index `multi` (one linux/amd64 entry: `digest`) and an
/// artifact whose subject is `digest`.
async fn push_index_and_referrer(berth: &Berth, repo: &str, digest: &str) {
    let reg = Reg::admin(berth);
    let image = reg
        .req(Method::GET, &format!("/v2/{repo}/manifests/{digest}"))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), StatusCode::OK);
    let size = image.bytes().await.unwrap().len();
    let subject = json!({"mediaType": DOCKER_MANIFEST, "digest": digest, "size": size});
    let mut platform_entry = subject.clone();
    platform_entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [platform_entry]});
    let r = reg.put_manifest(repo, "multi", OCI_INDEX, index.to_string().as_bytes()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let mut blobs = Vec::new();
    for data in [&b"{}"[..], &b"sbom of the berth ui test"[..]] {
        blobs.push((reg.blob(repo, data).await, data.len()));
    }
    let artifact = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom+json",
        "config": {"mediaType": OCI_EMPTY, "digest": blobs[0].0, "size": blobs[0].1},
        "layers": [{"mediaType": "text/plain", "digest": blobs[1].0, "size": blobs[1].1}],
        "subject": subject,
    })
    .to_string()
    .into_bytes();
    let r = reg.put_manifest(repo, &sha256(&artifact), OCI_MANIFEST, &artifact).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
}

#[test]
fn browse_tokens_deletes_and_access_in_a_real_browser() {
    require_tools();
    require_browser();
    let berth = Berth::start_auth();
    let host = berth.host();
    let repo = "uitest/web";
    let mut images = Images::new();
    let base = images.add(format!("local/ui-busybox:{}", berth.port));
    let built = images.add(format!("local/ui-web:{}", berth.port));
    import_busybox(&base);
    build_labelled_image(&base, &built);

    // Push two tags of the image as admin (the namespace `uitest` is private: no such org).
    let admin = DockerClient::new(&host);
    let login = admin.login("admin", ADMIN_PASSWORD);
    assert!(login.status.success(), "docker login: {}", String::from_utf8_lossy(&login.stderr));
    let (v1, old) = (images.add(format!("{host}/{repo}:1.0")), images.add(format!("{host}/{repo}:old")));
    docker(&["tag", &built, &v1]);
    docker(&["tag", &built, &old]);
    let digest = pushed_digest(&admin.run(&["push", &v1]));
    admin.run(&["push", &old]);
    // An index over it (tag `multi`) and an SBOM-like artifact referring to it, over the API.
    common::block_on(push_index_and_referrer(&berth, repo, &digest));

    // Log in, find it, check tags, layers and history, the <script> label; create a token.
    let out = browser(&berth, "browse", repo, &[]);
    let shown: Vec<String> = serde_json::from_str(line_value(&out, "HISTORY=")).unwrap();
    let mut history: Vec<String> =
        docker(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", &built]).lines().map(String::from).collect();
    history.reverse(); // docker lists the newest first; the page the oldest first
    assert_eq!(shown, history, "the page's history lines differ from `docker history`");
    let token = line_value(&out, "TOKEN=").trim().to_string();

    // The token from the UI works for a real `docker login` and pull.
    let with_token = DockerClient::new(&host);
    let login = with_token.login("admin", &token);
    assert!(login.status.success(), "docker login with the UI token: {}", String::from_utf8_lossy(&login.stderr));
    let _ = docker_output(&["rmi", &v1]);
    with_token.run(&["pull", &v1]);

    // Delete the tag `old` in the UI; create a user who cannot see the repository.
    let out = browser(&berth, "admin", repo, &[("NEW_USER", "alice"), ("NEW_PASSWORD", "alice-password-1")]);
    // The robot token made on the namespace page logs docker in as the robot.
    let robot = DockerClient::new(&host);
    let login = robot.login("uiorg+ci", line_value(&out, "ROBOT_TOKEN=").trim());
    assert!(login.status.success(), "docker login as the robot: {}", String::from_utf8_lossy(&login.stderr));
    let _ = docker_output(&["rmi", &old]);
    let pulled = with_token.output(&["pull", &old]);
    assert!(!pulled.status.success(), "the deleted tag still pulls");
    let err = String::from_utf8_lossy(&pulled.stderr).to_lowercase();
    assert!(err.contains("not found") || err.contains("unknown"), "pull of the deleted tag: {err}");
    let _ = docker_output(&["rmi", &v1]);
    with_token.run(&["pull", &v1]); // the other tag is untouched

    // alice's credentials work for the registry API too, which refuses her the same way.
    let alice = DockerClient::new(&host);
    assert!(alice.login("alice", "alice-password-1").status.success());
    let _ = docker_output(&["rmi", &v1]);
    assert!(!alice.output(&["pull", &v1]).status.success(), "alice pulls a private repository");
    eprintln!("UI screenshots: {}", screenshots_dir().display());
}

// ---- sessions and CSRF over plain HTTP -------------------------------------------------------

#[tokio::test]
async fn sessions_and_csrf() {
    // Loopback is the trusted proxy: its X-Forwarded-Proto says the client came over TLS.
    let berth = Berth::start_with_env(&[
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
    ]);
    let (base, c) = (berth.base.clone(), client());

    // A login form posted without its token, or with another one, is refused.
    let page = c.get(format!("{base}/login")).send().await.unwrap();
    let (csrf_cookie, line) = set_cookie(&page, "berth_csrf").unwrap();
    assert!(line.contains("HttpOnly") && line.contains("SameSite=Lax"), "{line}");
    for form in [
        vec![("name", "admin"), ("password", ADMIN_PASSWORD)],
        vec![("csrf", "x".repeat(43).as_str()), ("name", "admin"), ("password", ADMIN_PASSWORD)],
    ] {
        let resp = c
            .post(format!("{base}/login"))
            .header(COOKIE, format!("berth_csrf={csrf_cookie}"))
            .form_body(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(set_cookie(&resp, "berth_session").is_none());
    }
    // A wrong password gets the form again with a readable error.
    let resp = c
        .post(format!("{base}/login"))
        .header(COOKIE, format!("berth_csrf={csrf_cookie}"))
        .form_body(&[("csrf", csrf_cookie.as_str()), ("name", "admin"), ("password", "wrong-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("Invalid name or password."));

    // Cookie flags: HttpOnly, SameSite, Secure only over TLS (as a proxy reports it).
    let (session, line) = ui_login(&c, &base, "admin", ADMIN_PASSWORD, false).await;
    assert!(line.contains("HttpOnly") && line.contains("SameSite=Lax") && !line.contains("Secure"), "{line}");
    let (_, tls_line) = ui_login(&c, &base, "admin", ADMIN_PASSWORD, true).await;
    assert!(tls_line.contains("; Secure"), "{tls_line}");

    // Only the SHA-256 of the session secret is stored.
    let mut stored = Vec::new();
    for f in ["berth.db", "berth.db-wal"] {
        stored.extend(std::fs::read(berth.data_path().join(f)).unwrap_or_default());
    }
    // (On S3 + PostgreSQL the database is not a file here; the SQLite run checks it.)
    if std::env::var("BERTH_TEST_BACKEND").as_deref() != Ok("s3-postgres") {
        assert!(!stored.is_empty(), "no SQLite file read under {}", berth.data_path().display());
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(session.as_bytes()));
        let has = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
        assert!(!has(session.as_bytes()), "the session secret is in the database");
        assert!(has(hash.as_bytes()), "the session's hash is not in the database");
    }

    // A POST without the session's CSRF token changes nothing.
    let cookie = format!("berth_session={session}");
    let settings = c.get(format!("{base}/settings")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(settings.status(), StatusCode::OK);
    let csrf = form_csrf(&settings.text().await.unwrap());
    for form in [
        vec![("name", "t1"), ("scope", "pull")],
        vec![("csrf", csrf_cookie.as_str()), ("name", "t1"), ("scope", "pull")],
    ] {
        let resp =
            c.post(format!("{base}/settings/tokens")).header(COOKIE, &cookie).form_body(&form).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.text().await.unwrap().contains("Form expired"));
    }
    let list = c.get(format!("{base}/settings")).header(COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    assert!(list.contains("No tokens yet."), "a token was created without the CSRF token");
    // With it, the token is made and shown once.
    let resp = c
        .post(format!("{base}/settings/tokens"))
        .header(COOKIE, &cookie)
        .form_body(&[("csrf", csrf.as_str()), ("name", "t1"), ("scope", "pull")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("berth_"));

    // Anonymous visitors are sent to the login page for account pages and unknown repositories.
    let resp = c.get(format!("{base}/settings")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/login?next=/settings");
    let resp = c.get(format!("{base}/r/secret/app")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    // Logging out deletes the session: the cookie no longer opens anything.
    let resp = c
        .post(format!("{base}/logout"))
        .header(COOKIE, &cookie)
        .form_body(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = c.get(format!("{base}/settings")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "the session survived the logout");

    // The pages carry a CSP that forbids inline scripts; the API is untouched.
    let resp = c.get(format!("{base}/login")).send().await.unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(c.get(format!("{base}/v2/")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn open_registry_browses_without_accounts() {
    let berth = Berth::start();
    let c = client();
    let home = c.get(format!("{}/", berth.base)).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    let html = home.text().await.unwrap();
    assert!(html.contains("No repositories yet"), "{html}");
    assert!(html.contains(&format!("docker push {}/NAME:TAG", berth.host())));
    assert!(!html.contains("Log in"), "an open registry has no login");
    assert_eq!(c.get(format!("{}/settings", berth.base)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let login = c.get(format!("{}/login", berth.base)).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let css = c.get(format!("{}/static/berth.css", berth.base)).send().await.unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.text().await.unwrap().contains("prefers-color-scheme: dark"));

    // Everyone may delete on an open registry, but only through a form of this site: the
    // token must match the visitor's berth_csrf cookie.
    Reg::new(&berth).push_image("open/app", "v1", &tiny("open/app")).await;
    let confirm = c.get(format!("{}/r/open/app/-/delete?reference=v1", berth.base)).send().await.unwrap();
    assert_eq!(confirm.status(), StatusCode::OK);
    let (cookie, _) = set_cookie(&confirm, "berth_csrf").expect("a csrf cookie");
    let token = form_csrf(&confirm.text().await.unwrap());
    let post = |cookie: Option<String>| {
        let mut r = c.post(format!("{}/r/open/app/-/delete", berth.base));
        if let Some(v) = cookie {
            r = r.header(COOKIE, format!("berth_csrf={v}"));
        }
        r.form_body(&[("csrf", token.as_str()), ("reference", "v1")]).send()
    };
    assert_eq!(post(None).await.unwrap().status(), StatusCode::FORBIDDEN, "a cross-site post (no cookie)");
    assert_eq!(post(Some("y".repeat(43))).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(post(Some(cookie)).await.unwrap().status(), StatusCode::SEE_OTHER);
    let gone = c.get(format!("{}/v2/open/app/manifests/v1", berth.base)).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

/// The repository names listed on a page of the list.
fn listed(html: &str) -> Vec<String> {
    html.match_indices("<a href=\"/r/")
        .map(|(i, _)| html[i + "<a href=\"/r/".len()..].split('"').next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn list_pages_searches_and_filters() {
    let berth = Berth::start();
    let (base, c) = (berth.base.clone(), client());
    let reg = Reg::new(&berth);
    let mut names: Vec<String> = (0..33).map(|i| format!("pages/app{i:02}")).collect();
    names.push("other/app-odd_name".into());
    for n in &names {
        reg.push_image(n, "v1", &tiny(n)).await;
    }
    reg.push_image("pages/app00", "v2", &tiny("pages/app00")).await;
    names.sort();
    let page1 = c.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    assert_eq!(listed(&page1), names[..30].to_vec());
    let next = format!("/?q=&ns=&after={}", names[29]);
    assert!(
        page1.contains(&next.replace('&', "&#38;")),
        "no next link to {next}: {}",
        &page1[page1.find("pager").unwrap_or(0)..]
    );
    let page2 = c.get(format!("{base}{next}")).send().await.unwrap().text().await.unwrap();
    assert_eq!(listed(&page2), names[30..].to_vec());
    assert!(!page2.contains("Next page"));
    // Search (a `_` is a literal, not a LIKE wildcard) and the namespace filter.
    let found = c.get(format!("{base}/?q=odd_n")).send().await.unwrap().text().await.unwrap();
    assert_eq!(listed(&found), vec!["other/app-odd_name".to_string()]);
    let none = c.get(format!("{base}/?q=app_0")).send().await.unwrap().text().await.unwrap();
    assert!(listed(&none).is_empty() && none.contains("No repository matches"));
    let ns = c.get(format!("{base}/?ns=other")).send().await.unwrap().text().await.unwrap();
    assert_eq!(listed(&ns), vec!["other/app-odd_name".to_string()]);
    // Tag count and size of a repository row.
    let row = page1.split("/r/pages/app00\"").nth(1).unwrap_or_default();
    assert!(row.contains("<td class=\"num\">2</td>"), "pages/app00 shows no 2 tags: {row}");
}

#[tokio::test]
async fn admin_page_shows_the_mirror() {
    let toml = "[mirror]\nenabled = true\n[[mirror.upstreams]]\nname = \"hub\"\nurl = \"http://127.0.0.1:9\"\ntag_ttl_secs = 77\n";
    let berth = Berth::start_with_config(toml, &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let c = client();
    let (session, _) = ui_login(&c, &berth.base, "admin", ADMIN_PASSWORD, false).await;
    let html = c
        .get(format!("{}/admin", berth.base))
        .header(COOKIE, format!("berth_session={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mirror = html.split("id=\"mirror\"").nth(1).expect("a mirror table");
    assert!(mirror.contains("hub") && mirror.contains("http://127.0.0.1:9") && mirror.contains("77 s"), "{mirror}");
}

/// What `GET /v2/` answers for Basic credentials.
async fn v2_status(base: &str, user: &str, secret: &str) -> StatusCode {
    Reg::at(base).with(&Creds::basic(user, secret)).status(Method::GET, "/v2/").await
}

#[tokio::test]
async fn account_changes_through_forms() {
    let berth = Berth::start_auth();
    let base = berth.base.clone();
    let admin = Ui::login(&base, "admin", ADMIN_PASSWORD).await;

    // Create bob; make him admin and back; disable, enable, reset his password.
    let (status, page) = admin.post("/admin/users", &[("name", "bob"), ("password", "bob-password-1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("User created.") && page.contains("data-user=\"bob\""));
    let bob = Ui::login(&base, "bob", "bob-password-1").await;
    assert_eq!(bob.get("/admin").await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        bob.post("/admin/users", &[("name", "eve"), ("password", "eve-password-1")]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(admin.post("/admin/users/bob", &[("action", "make-admin")]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(bob.get("/admin").await.0, StatusCode::OK);
    assert_eq!(admin.post("/admin/users/bob", &[("action", "remove-admin")]).await.0, StatusCode::SEE_OTHER);
    assert!(!bob.alive().await, "removing admin rights ends the sessions");
    let bob = Ui::login(&base, "bob", "bob-password-1").await;
    assert_eq!(admin.post("/admin/users/bob", &[("action", "disable")]).await.0, StatusCode::SEE_OTHER);
    assert!(!bob.alive().await, "a disabled account's session still works");
    assert_eq!(v2_status(&base, "bob", "bob-password-1").await, StatusCode::UNAUTHORIZED);
    assert_eq!(admin.post("/admin/users/bob", &[("action", "enable")]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(v2_status(&base, "bob", "bob-password-1").await, StatusCode::OK);
    let bob = Ui::login(&base, "bob", "bob-password-1").await;
    let reset = admin.post("/admin/users/bob", &[("action", "password"), ("password", "bob-password-2")]).await;
    assert_eq!(reset.0, StatusCode::SEE_OTHER);
    assert!(!bob.alive().await, "a reset password leaves the old session open");
    assert_eq!(v2_status(&base, "bob", "bob-password-1").await, StatusCode::UNAUTHORIZED);
    // An admin cannot lock themselves out.
    let (status, page) = admin.post("/admin/users/admin", &[("action", "disable")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("cannot lock yourself out"));

    // bob changes his own password: his other session ends, this one stays.
    let bob = Ui::login(&base, "bob", "bob-password-2").await;
    let other = Ui::login(&base, "bob", "bob-password-2").await;
    let wrong = bob
        .post(
            "/settings/password",
            &[("current", "nope-nope"), ("new", "bob-password-3"), ("confirm", "bob-password-3")],
        )
        .await;
    assert_eq!(wrong.0, StatusCode::FORBIDDEN);
    let changed = bob
        .post(
            "/settings/password",
            &[("current", "bob-password-2"), ("new", "bob-password-3"), ("confirm", "bob-password-3")],
        )
        .await;
    assert_eq!(changed, (StatusCode::SEE_OTHER, "/settings?ok=password".to_string()));
    assert!(bob.alive().await && !other.alive().await);
    assert_eq!(v2_status(&base, "bob", "bob-password-3").await, StatusCode::OK);

    // A password changed through the REST API or the CLI ends the UI sessions as well.
    let bob_api = Reg::new(&berth).with(&Creds::basic("bob", "bob-password-3"));
    let body = json!({"current_password": "bob-password-3", "new_password": "bob-password-4"});
    let (status, _) = bob_api.api(Method::PUT, "/api/v1/me/password", Some(body)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!bob.alive().await, "a password changed through the API leaves the UI session open");
    let bob = Ui::login(&base, "bob", "bob-password-4").await;
    // (back to an earlier password: the server's cache of verified passwords, which still
    // holds bob-password-3 with the hash it had then, must not refuse it now)
    berth.cli_stdin(&["user", "passwd", "bob", "--password-stdin"], "bob-password-3");
    assert!(!bob.alive().await, "a password changed with the CLI leaves the UI session open");
    let bob = Ui::login(&base, "bob", "bob-password-3").await;

    // A token made in the UI works on /v2 until it is revoked in the UI.
    let (status, page) =
        bob.post("/settings/tokens", &[("name", "cli"), ("scope", "pull"), ("expires_days", "30")]).await;
    assert_eq!(status, StatusCode::OK);
    let secret = page.split("id=\"secret-value\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert_eq!(v2_status(&base, "bob", &secret).await, StatusCode::OK);
    let id = page.split("/settings/tokens/").nth(1).unwrap().split('/').next().unwrap().to_string();
    assert_eq!(bob.post(&format!("/settings/tokens/{id}/revoke"), &[]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(v2_status(&base, "bob", &secret).await, StatusCode::UNAUTHORIZED);
    assert!(bob.get("/settings").await.1.contains("No tokens yet."));
    // A token is no UI login.
    let (status, page) = bob.post("/settings/tokens", &[("name", "cli2"), ("scope", "push")]).await;
    assert_eq!(status, StatusCode::OK);
    let secret = page.split("id=\"secret-value\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    let c = client();
    let login = c.get(format!("{base}/login")).send().await.unwrap();
    let (csrf, _) = set_cookie(&login, "berth_csrf").unwrap();
    let r = c
        .post(format!("{base}/login"))
        .header(COOKIE, format!("berth_csrf={csrf}"))
        .form_body(&[("csrf", csrf.as_str()), ("name", "bob"), ("password", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("not a token"));

    // Deleting a manifest by digest (with its tags), only with delete permission.
    let admin_api = Reg::admin(&berth);
    let digest = admin_api.push_image("admin/app", "v1", &tiny("admin/app")).await;
    admin_api.push_image("admin/app", "v1-again", &tiny("admin/app")).await;
    assert_eq!(bob.post("/r/admin/app/-/delete", &[("reference", &digest)]).await.0, StatusCode::FORBIDDEN);
    let (status, confirm) = admin.get(&format!("/r/admin/app/-/delete?reference={digest}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(confirm.contains("<strong>v1</strong>") && confirm.contains("<strong>v1-again</strong>"), "{confirm}");
    let (status, to) = admin.post("/r/admin/app/-/delete", &[("reference", &digest)]).await;
    assert_eq!((status, to.as_str()), (StatusCode::SEE_OTHER, "/r/admin/app?ok=deleted"));
    assert_eq!(admin_api.status(Method::GET, "/v2/admin/app/manifests/v1-again").await, StatusCode::NOT_FOUND);
    let (_, page) = admin.get("/r/admin/app?ok=deleted").await;
    assert!(page.contains("Deleted.") && page.contains("No tags"));
}

/// The text of the cell `data-k="{key}"` inside the element `id="{id}"` of a page.
fn cell(html: &str, id: &str, key: &str) -> String {
    let section = html.split(&format!("id=\"{id}\"")).nth(1).unwrap_or_else(|| panic!("no #{id} in the page"));
    let at = section.find(&format!("data-k=\"{key}\"")).unwrap_or_else(|| panic!("no {key} in #{id}"));
    let tag = &section[at..];
    tag[tag.find('>').unwrap() + 1..].split('<').next().unwrap().trim().to_string()
}

/// The exact byte count a size cell carries in its `title="N bytes"`.
fn cell_bytes(html: &str, id: &str, key: &str) -> i64 {
    let section = html.split(&format!("id=\"{id}\"")).nth(1).unwrap_or_else(|| panic!("no #{id} in the page"));
    let at = section.find(&format!("data-k=\"{key}\" title=\"")).unwrap_or_else(|| panic!("no {key} in #{id}"));
    let rest = &section[at + format!("data-k=\"{key}\" title=\"").len()..];
    rest.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("no byte count in {rest:.60}"))
}

const GC_KEYS: [&str; 8] = [
    "blobs_deleted",
    "manifests_deleted",
    "mirror_manifests_evicted",
    "tags_deleted",
    "uploads_removed",
    "links_removed",
    "orphans_deleted",
    "errors",
];

/// `GET /api/v1/gc` as admin.
async fn api_gc(base: &str) -> Value {
    let (status, report) = Reg::at(base).with(&Creds::admin()).api(Method::GET, "/api/v1/gc", None).await;
    assert_eq!(status, StatusCode::OK);
    report
}

/// Every count of the report shown in `#{id}` equals the API's `report`.
fn assert_report_shown(html: &str, id: &str, report: &Value) {
    for key in GC_KEYS {
        assert_eq!(cell(html, id, key), report[key].to_string(), "{key} in #{id} vs {report}");
    }
    assert_eq!(cell_bytes(html, id, "bytes_freed"), report["bytes_freed"].as_i64().unwrap(), "bytes in #{id}");
}

/// Writes, as another node would, a garbage collection lease that lasts an hour into the
/// server's database.
async fn hold_gc_lease(b: &Berth) {
    let until = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 3600;
    let sql = format!(
        "INSERT INTO gc_lease (name, holder, expires_at) VALUES ('gc', 'another-node', {until}) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
    );
    common::db::execute(b, &sql).await;
}

#[tokio::test]
async fn gc_and_quota_through_the_ui() {
    let berth = Berth::start_with_env(&[
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_GC__ENABLED", "false"),
        ("BERTH_GC__GRACE_SECS", "0"),
        ("BERTH_GC__DELETE_UNTAGGED", "true"),
    ]);
    let base = berth.base.clone();
    let admin_api = Reg::admin(&berth);
    let admin = Ui::login(&base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(admin.post("/admin/orgs", &[("name", "gcui")]).await.0, StatusCode::SEE_OTHER);
    let (_, page) = admin.post("/admin/users", &[("name", "bob"), ("password", "bob-password-1")]).await;
    assert!(page.contains("User created."));
    admin_api.push_image("gcui/keep", "v1", &tiny("gcui/keep")).await;
    let dropped = admin_api.push_image("gcui/drop", "v1", &tiny("gcui/drop")).await;
    let path = format!("/v2/gcui/drop/manifests/{dropped}");
    assert_eq!(admin_api.status(Method::DELETE, &path).await, StatusCode::ACCEPTED);
    // Past the grace period (0 s: rows of an earlier second).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let (status, html) = admin.get("/admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No collection has run yet.") && html.contains("No dry run yet."));
    assert!(html.contains("value=\"dry-run\"") && html.contains("data-confirm=\"Collect garbage now?"));

    // A dry run from the form: its report on the page, as the API reports it; nothing deleted.
    let (status, html) = admin.post("/admin/gc", &[("action", "dry-run")]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Dry run done"));
    let api = api_gc(&base).await;
    assert!(api["last_run"].is_null(), "{api}");
    assert_eq!(api["last_dry_run"]["blobs_deleted"], 2, "the dropped image's config and layer: {api}");
    assert_report_shown(&html, "gc-result", &api["last_dry_run"]);
    assert_report_shown(&html, "gc-last-dry-run", &api["last_dry_run"]);

    // Refused: a non-admin, and a form without (or with a wrong) CSRF token.
    let bob = Ui::login(&base, "bob", "bob-password-1").await;
    assert_eq!(bob.post("/admin/gc", &[("action", "collect")]).await.0, StatusCode::FORBIDDEN);
    let no_csrf = admin
        .c
        .post(format!("{base}/admin/gc"))
        .header(COOKIE, &admin.cookie)
        .form_body(&[("action", "collect")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    let wrong = admin
        .c
        .post(format!("{base}/admin/gc"))
        .header(COOKIE, &admin.cookie)
        .form_body(&[("csrf", "x".repeat(43).as_str()), ("action", "collect")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert!(api_gc(&base).await["last_run"].is_null(), "a refused form ran a collection");

    // The real run: freed what the dry run announced; the admin page shows the API's report.
    let (status, html) = admin.post("/admin/gc", &[("action", "collect")]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Garbage collection done."));
    let api = api_gc(&base).await;
    assert_eq!(api["last_run"]["blobs_deleted"], 2, "{api}");
    assert!(api["last_run"]["bytes_freed"].as_i64().unwrap() > 0);
    assert_report_shown(&html, "gc-result", &api["last_run"]);
    let (_, html) = admin.get("/admin").await;
    assert_report_shown(&html, "gc-last-run", &api["last_run"]);
    assert_report_shown(&html, "gc-last-dry-run", &api["last_dry_run"]);
    assert!(!html.contains("id=\"gc-result\""), "the just-ran report is shown only after a run");
    // Another node holds the collection lease: the button answers 409 with a readable page and
    // nothing runs.
    hold_gc_lease(&berth).await;
    let (status, html) = admin.post("/admin/gc", &[("action", "collect")]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(html.contains("Nothing was done: garbage collection is already running on another node"), "{html}");
    assert_report_shown(&html, "gc-last-run", &api["last_run"]);
    assert_eq!(api_gc(&base).await["last_run"], api["last_run"]);
    // The audit log has the one real run, by admin, as the API would have recorded it.
    let (_, audit) = admin_api.api(Method::GET, "/api/v1/audit?action=gc.run", None).await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["actor"], "admin");
    assert_eq!(entries[0]["detail"]["bytes_freed"], api["last_run"]["bytes_freed"]);

    // Quota: set through the form (admins only), shown with the usage the API reports.
    let usage = |ns: &'static str| {
        let admin_api = admin_api.clone();
        async move {
            let (status, usage) = admin_api.api(Method::GET, &format!("/api/v1/namespaces/{ns}/usage"), None).await;
            assert_eq!(status, StatusCode::OK);
            usage
        }
    };
    let (_, html) = admin.get("/ns/gcui").await;
    assert!(html.contains("id=\"quota-form\""));
    assert_eq!(cell(&html, "storage", "quota_bytes"), "none");
    let (status, location) = admin.post("/ns/gcui/quota", &[("action", "set"), ("max", "1 MB")]).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ns/gcui?ok=quota"));
    let api = usage("gcui").await;
    assert_eq!(api["quota_bytes"], 1_000_000, "{api}");
    let used = api["used_bytes"].as_i64().unwrap();
    assert!(used > 0, "{api}");
    let (_, html) = admin.get("/ns/gcui?ok=quota").await;
    assert!(html.contains("Quota changed."));
    assert_eq!(cell_bytes(&html, "storage", "used_bytes"), used);
    assert_eq!(cell_bytes(&html, "storage", "quota_bytes"), 1_000_000);
    assert_eq!(cell(&html, "storage", "quota_bytes"), "1.00 MB");
    let percent = ((used as f64 / 1e6) * 100.0).round() as i64;
    assert_eq!(cell(&html, "storage", "percent"), format!("{percent}%"));
    assert!(html.contains(&format!("<progress max=\"100\" value=\"{}\"", percent.min(100))));

    // bob, a reader of gcui, sees the usage (as the API shows him) but may not set the quota.
    assert_eq!(
        admin.post("/ns/gcui/members", &[("account", "bob"), ("role", "reader")]).await.0,
        StatusCode::SEE_OTHER
    );
    let (status, html) = bob.get("/ns/gcui").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cell_bytes(&html, "storage", "used_bytes"), used);
    assert!(!html.contains("id=\"quota-form\""));
    assert_eq!(bob.post("/ns/gcui/quota", &[("action", "set"), ("max", "1 GB")]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(bob.post("/ns/gcui/quota", &[("action", "clear")]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(usage("gcui").await["quota_bytes"], 1_000_000);
    // A size that is no size: a readable error, nothing changed.
    let (status, page) = admin.post("/ns/gcui/quota", &[("action", "set"), ("max", "12 parsecs")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("is not a size"), "{page}");
    assert_eq!(usage("gcui").await["quota_bytes"], 1_000_000);
    // Cleared through the form.
    assert_eq!(admin.post("/ns/gcui/quota", &[("action", "clear")]).await.0, StatusCode::SEE_OTHER);
    assert!(usage("gcui").await["quota_bytes"].is_null());
    let (_, html) = admin.get("/ns/gcui").await;
    assert_eq!(cell(&html, "storage", "quota_bytes"), "none");
}

#[tokio::test]
async fn admin_page_counts_mirror_hits_and_misses() {
    // The upstream is another Berth on loopback.
    let upstream = Berth::start();
    let image = tiny("lib/counted");
    let digest = Reg::new(&upstream).push_image("lib/counted", "v1", &image).await;
    let layer = image.layers[0].clone();
    let toml = format!("[mirror]\nenabled = true\n[[mirror.upstreams]]\nname = \"up\"\nurl = \"{}\"\n", upstream.base);
    let mirror = Berth::start_with_config(&toml, &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let admin = Ui::login(&mirror.base, "admin", ADMIN_PASSWORD).await;
    let admin_api = Reg::admin(&mirror);
    let counts = |html: &str| {
        ["manifest_hits", "manifest_misses", "blob_hits", "blob_misses", "hits", "misses"]
            .map(|k| cell(html, "mirror-traffic", k).parse::<u64>().unwrap())
    };
    let (_, html) = admin.get("/admin").await;
    assert!(html.contains("since this Berth process started"));
    assert_eq!(counts(&html), [0; 6]);
    assert_eq!(cell_bytes(&html, "mirror", "upstream_bytes"), 0);

    for round in 0..2 {
        let r = admin_api.get_manifest("up/lib/counted", "v1").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.bytes().await.unwrap();
        assert_eq!(sha256(&body), digest);
        let manifest_len = body.len();
        let r = admin_api.send(Method::GET, &format!("/v2/up/lib/counted/blobs/{}", sha256(&layer))).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().to_vec(), layer);
        let (_, html) = admin.get("/admin").await;
        let expected = if round == 0 { [0, 1, 0, 1, 0, 2] } else { [1, 1, 1, 1, 2, 2] };
        assert_eq!(counts(&html), expected, "after pull {}", round + 1);
        assert_eq!(cell_bytes(&html, "mirror", "upstream_bytes"), (manifest_len + layer.len()) as i64);
    }
}
