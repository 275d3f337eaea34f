//! Operations end to end, against real `berth serve` processes: Prometheus `/metrics` (parsed,
//! counters follow traffic), webhooks (a receiver on loopback checks the HMAC signature and the
//! fields of push and delete events from a real `docker push`; a receiver that fails at first
//! gets the event after retries, and the delivery history shows them), the audit log (logins,
//! a push, a delete, permission changes; admins only), and graceful shutdown (a slow upload and
//! a slow download in flight finish after SIGTERM, new connections are refused, exit code 0).
//!
//! Needs the docker daemon, `/bin/busybox` (busybox-static), tar and curl, like docker_e2e.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::docker::{DockerClient, Images, import_busybox, pushed_digest, require_tools};
use common::html::Ui;
use common::images::image_with_layer;
use common::registry::{Creds, Reg};
use common::{ADMIN_PASSWORD, Berth, sha256};
use hmac::{KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

// ---- Prometheus text parsing -------------------------------------------------------------------

/// Parses the Prometheus/OpenMetrics text format into `series → value`, where a series is
/// `name{label="value",...}` with labels sorted by name (and no braces without labels).
/// Panics on a malformed line, so a broken exposition fails the test.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let mut saw_eof = false;
    for line in text.lines() {
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        assert!(!saw_eof, "content after # EOF: {line}");
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        let mut rest = &line[name_end..];
        let mut labels: Vec<(String, String)> = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let (parsed, len) = parse_labels_from(r, line);
            labels = parsed;
            rest = &r[len..];
        }
        assert!(rest.starts_with(' '), "no space before the value: {line}");
        let value = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value {v:?} in {line}")),
        };
        labels.sort();
        let key = if labels.is_empty() {
            name.to_string()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        assert!(out.insert(key.clone(), value).is_none(), "series twice: {key}");
    }
    assert!(saw_eof, "the exposition does not end with # EOF");
    out
}

/// Parses the labels after a `{`: `k="v",k2="v2"}`; returns them and the length read
/// including the closing brace.
fn parse_labels_from(s: &str, line: &str) -> (Vec<(String, String)>, usize) {
    let bytes = s.as_bytes();
    let mut labels = Vec::new();
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'}') {
            return (labels, i + 1);
        }
        let eq = s[i..].find('=').unwrap_or_else(|| panic!("label without '=': {line}")) + i;
        let name = s[i..eq].to_string();
        assert_eq!(bytes.get(eq + 1), Some(&b'"'), "label value not quoted: {line}");
        let mut value = String::new();
        i = eq + 2;
        loop {
            let c = *bytes.get(i).unwrap_or_else(|| panic!("unterminated label value: {line}"));
            i += 1;
            match c {
                b'\\' => {
                    value.push(if bytes[i] == b'n' { '\n' } else { bytes[i] as char });
                    i += 1;
                }
                b'"' => break,
                _ => value.push(c as char),
            }
        }
        labels.push((name, value));
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => panic!("bad label separator: {line}"),
        }
    }
}

async fn scrape(b: &Berth) -> HashMap<String, f64> {
    let r = Reg::new(b).send(Method::GET, "/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers().get("content-type").unwrap().to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text") || ct.starts_with("text/plain"), "{ct}");
    parse_metrics(&r.text().await.unwrap())
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

fn requests(route: &str, status: u16) -> String {
    format!("berth_http_requests_total{{route=\"{route}\",status=\"{status}\"}}")
}

// ---- registry helpers -------------------------------------------------------------------------

/// Pushes a one-layer image `repo:tag` over `layer`; returns the manifest's and the layer's
/// digests.
async fn push_one_layer(reg: &Reg, repo: &str, tag: &str, layer: &[u8]) -> (String, String) {
    (reg.push_image(repo, tag, &image_with_layer(repo, layer)).await, sha256(layer))
}

// ---- a webhook receiver -------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 server on loopback that records every POST and answers 500 to the first
/// `fail_first` of them, 200 afterwards.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let Some(req) = read_request(&conn) else { continue };
                let n = {
                    let mut all = sink.lock().unwrap();
                    all.push(req);
                    all.len()
                };
                let status = if n <= fail_first { "500 Internal Server Error" } else { "200 OK" };
                let mut conn = conn;
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Receiver { url, got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for a request whose `X-Berth-Event` is `action`.
    fn wait_for(&self, action: &str, timeout: Duration) -> Received {
        self.wait_for_nth(action, 1, timeout)
    }

    /// Waits for the `n`th request whose `X-Berth-Event` is `action`.
    fn wait_for_nth(&self, action: &str, n: usize, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self
                .received()
                .into_iter()
                .filter(|r| r.headers.get("x-berth-event").map(String::as_str) == Some(action))
                .nth(n - 1)
            {
                return r;
            }
            assert!(Instant::now() < deadline, "no {action} event #{n} within {timeout:?}; got {:?}", self.received());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Received> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received { headers, body })
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks the signature and returns the event JSON.
fn verified(r: &Received, secret: &str) -> Value {
    let sig = r.headers.get("x-berth-signature").expect("a signature header");
    assert_eq!(sig, &hmac_hex(secret, &r.body), "signature does not match the body");
    assert_ne!(sig, &hmac_hex("some-other-secret-value", &r.body));
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.headers.get("x-berth-event-id").map(String::as_str), v["id"].as_str());
    assert!(chrono_like(v["timestamp"].as_str().unwrap()), "{v}");
    v
}

/// `2026-01-02T03:04:05.678Z`-shaped.
fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && s.ends_with('Z')
}

// ---- tests --------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_are_parsed_and_follow_traffic() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let before = scrape(&b).await;
    assert!(before.contains_key("berth_uploads_in_flight"), "{before:?}");

    let layer: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let config_len = image_with_layer("ops/metered", &layer).config.len();
    let (manifest_digest, layer_digest) = push_one_layer(&reg, "ops/metered", "v1", &layer).await;
    for _ in 0..3 {
        let r = reg.get_manifest("ops/metered", "v1").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(sha256(&r.bytes().await.unwrap()), manifest_digest);
    }
    let r = reg.send(Method::GET, &format!("/v2/ops/metered/blobs/{layer_digest}")).await;
    assert_eq!(r.bytes().await.unwrap().len(), layer.len());
    let r = reg.send(Method::GET, "/v2/ops/metered/manifests/nope").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let after = scrape(&b).await;
    let delta = |k: &str| get(&after, k) - get(&before, k);
    assert_eq!(delta(&requests("manifest_get", 200)), 3.0);
    assert_eq!(delta(&requests("manifest_get", 404)), 1.0);
    assert_eq!(delta(&requests("manifest_put", 201)), 1.0);
    assert_eq!(delta(&requests("upload_start", 201)), 2.0);
    assert_eq!(delta(&requests("blob_get", 200)), 1.0);
    assert_eq!(delta("berth_http_request_duration_seconds_count{route=\"manifest_get\"}"), 4.0);
    assert!(delta("berth_http_request_duration_seconds_sum{route=\"manifest_get\"}") > 0.0);
    assert_eq!(get(&after, "berth_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"manifest_get\"}"), 4.0);
    assert_eq!(delta("berth_upload_bytes_total"), (layer.len() + config_len) as f64);
    assert_eq!(delta("berth_blob_served_bytes_total"), layer.len() as f64);
    assert!(after.contains_key("berth_uploads_in_flight"));
    assert_eq!(get(&after, "berth_uploads_in_flight"), 0.0);
    // No repository name, tag or digest ever becomes a label.
    let text = reg.send(Method::GET, "/metrics").await.text().await.unwrap();
    assert!(!text.contains("metered") && !text.contains("sha256:"), "{text}");
    // GC runs are exported (at zero until a collection runs).
    assert!(after.contains_key("berth_gc_runs_total"));
    assert_eq!(get(&after, "berth_gc_runs_total"), 0.0);
    assert!(after.contains_key("berth_gc_freed_bytes_total"));
    // Where the memory sits: the heap (jemalloc's own figures) and SQLite's memory beside it
    // (the fs backend's database). A heap holds at least the live bytes it counts, and more than
    // nothing once the server runs.
    let allocated = get(&after, "berth_memory_heap_allocated_bytes");
    assert!(allocated > 1e5, "{after:?}");
    assert!(get(&after, "berth_memory_heap_resident_bytes") >= allocated, "{after:?}");
    if matches!(b.backend(), common::Backend::FsSqlite) {
        assert!(get(&after, "berth_memory_sqlite_bytes") > 1e4, "{after:?}");
    }
}

#[tokio::test]
async fn metrics_can_require_a_token_or_be_off() {
    let b = Berth::start_with_env(&[("BERTH_AUTH__ENABLED", "false"), ("BERTH_METRICS__TOKEN", "scrape-me-please")]);
    let reg = Reg::new(&b);
    let r = reg.send(Method::GET, "/metrics").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg.with(&Creds::bearer("wrong")).send(Method::GET, "/metrics").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg.with(&Creds::bearer("scrape-me-please")).send(Method::GET, "/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    parse_metrics(&r.text().await.unwrap());

    let off = Berth::start_with_env(&[("BERTH_AUTH__ENABLED", "false"), ("BERTH_METRICS__ENABLED", "false")]);
    assert_eq!(Reg::new(&off).status(Method::GET, "/metrics").await, StatusCode::NOT_FOUND);
}

const SECRET: &str = "webhook-secret-for-the-ops-suite";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_signed_push_and_delete_events_from_docker() {
    require_tools();
    let b = Berth::start_auth();
    let admin = Reg::admin(&b);
    let hook = Receiver::start(0);
    let elsewhere = Receiver::start(0);
    let (s, v) = admin
        .api(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": hook.url, "secret": SECRET, "events": ["push", "delete"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v.get("secret").is_none(), "a given secret is never echoed: {v}");
    // A webhook of another namespace hears nothing of admin/...
    let (s, _) = admin.api(Method::POST, "/api/v1/namespaces", Some(json!({"name": "ops-elsewhere"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = admin
        .api(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": elsewhere.url, "namespace": "ops-elsewhere", "events": ["push", "delete", "pull"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["secret"].as_str().is_some_and(|s| s.len() >= 32), "a generated secret is shown once: {v}");
    // Listing never shows secrets.
    let (_, list) = admin.api(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(SECRET));
    // A namespace's maintainer sees its webhooks, but only admins create them.
    let carol_password = "carols-password-1";
    let carol = Reg::new(&b).with(&Creds::basic("carol", carol_password));
    let (s, _) =
        admin.api(Method::POST, "/api/v1/users", Some(json!({"name": "carol", "password": carol_password}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = admin
        .api(Method::PUT, "/api/v1/namespaces/ops-elsewhere/members/carol", Some(json!({"role": "maintainer"})))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) =
        carol.api(Method::POST, "/api/v1/webhooks", Some(json!({"url": hook.url, "namespace": "ops-elsewhere"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, theirs) = carol.api(Method::GET, "/api/v1/webhooks", None).await;
    let theirs = theirs["webhooks"].as_array().unwrap().clone();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["namespace"], "ops-elsewhere");
    assert_eq!(theirs[0]["url"], elsewhere.url.trim_end_matches("/hook"), "only the origin for non-admins");
    let global_id =
        list["webhooks"].as_array().unwrap().iter().find(|w| w["namespace"].is_null()).unwrap()["id"].clone();
    let (s, _) = carol.api(Method::GET, &format!("/api/v1/webhooks/{global_id}/deliveries"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = carol.api(Method::DELETE, &format!("/api/v1/webhooks/{}", theirs[0]["id"]), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Bad input is refused clearly.
    let (s, v) = admin.api(Method::POST, "/api/v1/webhooks", Some(json!({"url": "ftp://x", "events": ["push"]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) =
        admin.api(Method::POST, "/api/v1/webhooks", Some(json!({"url": hook.url, "events": ["explode"]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // A real docker push.
    let mut images = Images::new();
    let base = images.add("local/ops-busybox:latest".to_string());
    import_busybox(&base);
    let remote = images.add(format!("{}/admin/ops-hooked:v1", b.host()));
    common::docker::docker(&["tag", &base, &remote]);
    let docker = DockerClient::new(&b.host());
    let login = docker.login("admin", ADMIN_PASSWORD);
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let out = tokio::task::spawn_blocking({
        let (docker, remote) = (docker.config_dir(), remote.clone());
        move || {
            let out = Command::new("docker").env("DOCKER_CONFIG", docker).args(["push", &remote]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    })
    .await
    .unwrap();
    let digest = pushed_digest(&out);

    let push = verified(&hook.wait_for("push", Duration::from_secs(20)), SECRET);
    assert_eq!(push["action"], "push");
    assert_eq!(push["repository"], "admin/ops-hooked");
    assert_eq!(push["tag"], "v1");
    assert_eq!(push["digest"], digest.as_str());
    assert_eq!(push["actor"], "admin");
    assert!(push["media_type"].as_str().unwrap().contains("manifest"), "{push}");

    // Delete the tag over HTTP.
    assert_eq!(admin.status(Method::DELETE, "/v2/admin/ops-hooked/manifests/v1").await, StatusCode::ACCEPTED);
    let delete = verified(&hook.wait_for("delete", Duration::from_secs(20)), SECRET);
    assert_eq!(delete["repository"], "admin/ops-hooked");
    assert_eq!(delete["tag"], "v1");
    assert_eq!(delete["actor"], "admin");
    assert_ne!(delete["id"], push["id"]);
    // One event each: blob uploads are no events, and this webhook did not ask for pulls.
    std::thread::sleep(Duration::from_millis(500));
    let actions: Vec<String> = hook.received().iter().map(|r| r.headers["x-berth-event"].clone()).collect();
    assert_eq!(actions, ["push", "delete"]);
    assert!(elsewhere.received().is_empty(), "a namespace webhook heard another namespace");

    // The history shows both delivered.
    let id = list["webhooks"].as_array().unwrap().iter().find(|w| w["url"] == hook.url.as_str()).unwrap()["id"]
        .as_i64()
        .unwrap();
    // (A delivery is recorded once the receiver has answered, after it counted the request.)
    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    let statuses = || async {
        let (s, h) = admin.api(Method::GET, &deliveries, None).await;
        assert_eq!(s, StatusCode::OK);
        let statuses: Vec<String> =
            h["deliveries"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap().to_string()).collect();
        statuses
    };
    common::eventually(20, || async { statuses().await == ["delivered", "delivered"] }).await;
    assert_eq!(statuses().await, ["delivered", "delivered"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_event_after_retries() {
    let b = Berth::start_with_env(&[
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_WEBHOOKS__BACKOFF_INITIAL_MS", "200"),
        ("BERTH_WEBHOOKS__POLL_MS", "100"),
    ]);
    let admin = Reg::admin(&b);
    let hook = Receiver::start(2);
    // Added with the command line, while the server runs (it sees it within seconds).
    let out = b.cli_stdin(&["webhook", "add", &hook.url, "--events", "push,pull", "--secret-stdin"], SECRET);
    assert!(out.contains("webhook 1 added"), "{out}");
    assert!(b.cli(&["webhook", "list"]).contains(&hook.url));
    std::thread::sleep(Duration::from_millis(2500)); // the server's webhook cache (2 s)

    let started = Instant::now();
    let (digest, _) = push_one_layer(&admin, "admin/retried", "latest", b"retried layer").await;
    let push = verified(&hook.wait_for_nth("push", 3, Duration::from_secs(20)), SECRET);
    let pushes: Vec<Received> = hook.received().into_iter().filter(|r| r.headers["x-berth-event"] == "push").collect();
    assert_eq!(pushes.len(), 3, "two failures, then success");
    assert!(pushes.iter().all(|r| r.body == pushes[0].body), "every attempt sends the same event");
    assert!(pushes.iter().all(|r| r.headers["x-berth-delivery"] == pushes[0].headers["x-berth-delivery"]));
    // Backoff: 200 ms then 400 ms between the attempts.
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
    assert_eq!(push["digest"], digest.as_str());
    assert_eq!(push["tag"], "latest");

    // Pulls were asked for: a manifest GET is delivered too.
    let r = admin.get_manifest("admin/retried", "latest").await;
    assert_eq!(r.status(), StatusCode::OK);
    let pull = verified(&hook.wait_for("pull", Duration::from_secs(20)), SECRET);
    assert_eq!(pull["repository"], "admin/retried");
    assert_eq!(pull["digest"], digest.as_str());
    assert_eq!(pull["actor"], "admin");

    // The history, newest first: the pull (1 attempt) and the push (3 attempts, the last error kept).
    let (s, h) = admin.api(Method::GET, "/api/v1/webhooks/1/deliveries", None).await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let d = h["deliveries"].as_array().unwrap();
    assert_eq!(d.len(), 2, "{h}");
    assert_eq!(d[0]["action"], "pull");
    assert_eq!(d[0]["attempts"], 1);
    assert_eq!(d[1]["action"], "push");
    assert_eq!(d[1]["status"], "delivered");
    assert_eq!(d[1]["attempts"], 3);
    assert_eq!(d[1]["last_status_code"], 200);
    assert!(d[1]["last_error"].as_str().unwrap().contains("500"), "{h}");
    let cli = b.cli(&["webhook", "deliveries", "1"]);
    assert!(cli.contains("delivered") && cli.contains("push"), "{cli}");
    // Pagination.
    let (_, page) = admin.api(Method::GET, "/api/v1/webhooks/1/deliveries?n=1", None).await;
    let before = page["next_before"].as_i64().expect("a next page");
    let (_, page2) = admin.api(Method::GET, &format!("/api/v1/webhooks/1/deliveries?n=1&before={before}"), None).await;
    assert_eq!(page2["deliveries"][0]["action"], "push");

    let m = scrape(&b).await;
    assert_eq!(get(&m, "berth_webhook_attempts_total{result=\"retry\"}"), 2.0);
    assert_eq!(get(&m, "berth_webhook_attempts_total{result=\"delivered\"}"), 2.0);

    // A receiver that never answers 2xx: given up after max_attempts.
    // (Deleting the webhook drops its history.)
    let (s, _) = admin.api(Method::DELETE, "/api/v1/webhooks/1", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = admin.api(Method::GET, "/api/v1/webhooks/1/deliveries", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_given_up_after_max_attempts() {
    let b = Berth::start_with_env(&[
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_WEBHOOKS__BACKOFF_INITIAL_MS", "100"),
        ("BERTH_WEBHOOKS__POLL_MS", "50"),
        ("BERTH_WEBHOOKS__MAX_ATTEMPTS", "3"),
    ]);
    let hook = Receiver::start(usize::MAX);
    let admin = Reg::admin(&b);
    let (s, v) = admin.api(Method::POST, "/api/v1/webhooks", Some(json!({"url": hook.url, "secret": SECRET}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    push_one_layer(&admin, "admin/unheard", "v1", b"unheard").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, h) = admin.api(Method::GET, &format!("/api/v1/webhooks/{id}/deliveries"), None).await;
        if h["deliveries"][0]["status"] == "failed" {
            assert_eq!(h["deliveries"][0]["attempts"], 3, "{h}");
            assert_eq!(h["deliveries"][0]["last_status_code"], 500, "{h}");
            break;
        }
        assert!(Instant::now() < deadline, "not given up: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.received().len(), 3, "no attempt after giving up");
    // A disabled webhook gets nothing queued.
    let (s, v) = admin.api(Method::PATCH, &format!("/api/v1/webhooks/{id}"), Some(json!({"enabled": false}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["enabled"], false);
    push_one_layer(&admin, "admin/unheard", "v2", b"unheard").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, h) = admin.api(Method::GET, &format!("/api/v1/webhooks/{id}/deliveries"), None).await;
    assert_eq!(h["deliveries"].as_array().unwrap().len(), 1, "{h}");
    assert_eq!(hook.received().len(), 3);
    assert!(b.cli(&["webhook", "list"]).contains("false"));
}

#[tokio::test]
async fn the_audit_log_records_logins_pushes_deletes_and_permission_changes() {
    let b = Berth::start_auth();
    let admin = Reg::admin(&b);
    let bob_pw = "bobs-password-123";
    let bob = Reg::new(&b).with(&Creds::basic("bob", bob_pw));
    let (s, _) = admin.api(Method::POST, "/api/v1/users", Some(json!({"name": "bob", "password": bob_pw}))).await;
    assert_eq!(s, StatusCode::CREATED);
    // Logins at /token: one refused, one accepted.
    let r = admin.with(&Creds::basic("bob", "not-bobs-password")).token_response(&[], &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = bob.token_response(&[], &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    // A push and a delete.
    push_one_layer(&admin, "admin/audited", "v1", b"audited layer").await;
    assert_eq!(admin.status(Method::DELETE, "/v2/admin/audited/manifests/v1").await, StatusCode::ACCEPTED);
    // Permission changes.
    let (s, _) = admin.api(Method::POST, "/api/v1/namespaces", Some(json!({"name": "ops-team"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) =
        admin.api(Method::PUT, "/api/v1/namespaces/ops-team/members/bob", Some(json!({"role": "writer"}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = admin.api(Method::PUT, "/api/v1/namespaces/ops-team/visibility", Some(json!({"public": true}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, tok) = bob.api(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci", "scope": "push"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let token_secret = tok["token"].as_str().unwrap().to_string();
    // And one from the command line.
    b.cli(&["namespace", "member", "ops-team", "bob", "reader"]);

    // Non-admins may not read it.
    let (s, _) = bob.api(Method::GET, "/api/v1/audit", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(Reg::new(&b).status(Method::GET, "/api/v1/audit").await, StatusCode::UNAUTHORIZED);

    let (s, all) = admin.api(Method::GET, "/api/v1/audit", None).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    let entries = all["entries"].as_array().unwrap();
    let find_where = |actor: &str, action: &str, detail: Value| -> Value {
        entries
            .iter()
            .find(|e| {
                e["actor"] == actor
                    && e["action"] == action
                    && detail.as_object().unwrap().iter().all(|(k, v)| &e["detail"][k] == v)
            })
            .unwrap_or_else(|| panic!("no {action} ({detail}) by {actor} in {all:#}"))
            .clone()
    };
    let find = |actor: &str, action: &str| -> Value {
        entries
            .iter()
            .find(|e| e["actor"] == actor && e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} by {actor} in {all:#}"))
            .clone()
    };
    assert_eq!(find("bob", "login.failed")["addr"], "127.0.0.1");
    assert_eq!(find_where("bob", "login", json!({"via": "token"}))["addr"], "127.0.0.1");
    find_where("bob", "login", json!({"via": "api"}));
    find_where("admin", "login", json!({"via": "api"}));
    let push = find("admin", "push");
    assert_eq!(push["target"], "admin/audited");
    assert_eq!(push["detail"]["tag"], "v1");
    assert!(push["detail"]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(find("admin", "delete")["target"], "admin/audited");
    assert_eq!(find("admin", "user.create")["target"], "bob");
    let member = find("admin", "member.set");
    assert_eq!(member["target"], "ops-team");
    assert_eq!(member["detail"], json!({"account": "bob", "role": "writer"}));
    assert_eq!(find("admin", "namespace.visibility")["detail"]["public"], true);
    assert_eq!(find("bob", "token.create")["detail"]["scope"], "push");
    assert_eq!(find("cli", "member.set")["detail"]["role"], "reader");
    // Newest first, and no secret anywhere.
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let text = all.to_string();
    for secret in [bob_pw, "not-bobs-password", ADMIN_PASSWORD, token_secret.as_str()] {
        assert!(!text.contains(secret), "a secret in the audit log");
    }

    // Filters and pages.
    let (_, bobs) = admin.api(Method::GET, "/api/v1/audit?actor=bob", None).await;
    assert!(bobs["entries"].as_array().unwrap().iter().all(|e| e["actor"] == "bob"));
    // login.failed, login (token), login (api), token.create
    assert_eq!(bobs["entries"].as_array().unwrap().len(), 4, "{bobs}");
    let (_, pushes) = admin.api(Method::GET, "/api/v1/audit?action=push", None).await;
    assert_eq!(pushes["entries"].as_array().unwrap().len(), 1);
    let (_, p1) = admin.api(Method::GET, "/api/v1/audit?n=2", None).await;
    assert_eq!(p1["entries"].as_array().unwrap().len(), 2);
    let before = p1["next_before"].as_i64().unwrap();
    let (_, p2) = admin.api(Method::GET, &format!("/api/v1/audit?n=2&before={before}"), None).await;
    assert_eq!(p2["entries"][0]["id"].as_i64().unwrap(), ids[2]);
    let (s, _) = admin.api(Method::GET, "/api/v1/audit?n=0", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The command line reads it too.
    let out = b.cli(&["audit", "--action", "push"]);
    assert!(out.contains("admin/audited"), "{out}");
}

/// Sends an HTTP/1.1 request head on a raw connection.
fn send_head(conn: &mut TcpStream, head: &str) {
    conn.write_all(head.as_bytes()).unwrap();
}

/// Reads one HTTP/1.1 response head from a raw connection: status and headers.
fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, HashMap<String, String>) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 =
        line.split_whitespace().nth(1).unwrap_or_else(|| panic!("no status line: {line:?}")).parse().unwrap();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    (status, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_transfers_in_flight() {
    let mut b = Berth::start_with_env(&[("BERTH_AUTH__ENABLED", "false"), ("BERTH_SHUTDOWN_TIMEOUT_SECS", "30")]);
    // A 24 MiB blob to download slowly.
    let big: Vec<u8> = (0..24u32 * 1024 * 1024).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let big_digest = Reg::new(&b).blob("ops/graceful", &big).await;
    let addr = b.host();

    // The download: headers and the first MiB, then the reader pauses.
    let mut down = TcpStream::connect(&addr).unwrap();
    send_head(&mut down, &format!("GET /v2/ops/graceful/blobs/{big_digest} HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    let mut down = BufReader::new(down);
    let (status, headers) = read_head(&mut down);
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], big.len().to_string());
    let mut got = vec![0u8; 1024 * 1024];
    down.read_exact(&mut got).unwrap();

    // The upload: a monolithic POST whose body is half sent.
    let small: Vec<u8> = (0..4u32 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let small_digest = sha256(&small);
    let mut up = TcpStream::connect(&addr).unwrap();
    send_head(
        &mut up,
        &format!(
            "POST /v2/ops/graceful/blobs/uploads/?digest={small_digest} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            small.len()
        ),
    );
    up.write_all(&small[..small.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The metrics see it in flight.
    let m = scrape(&b).await;
    assert_eq!(get(&m, "berth_uploads_in_flight"), 1.0);

    // SIGTERM.
    let kill = Command::new("kill").args(["-TERM", &b.pid().to_string()]).status().unwrap();
    assert!(kill.success());
    // New connections are refused soon after.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(&addr) {
            Err(_) => break,
            Ok(_) => {
                assert!(Instant::now() < deadline, "still accepting connections 5 s after SIGTERM");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(b.wait_exit(Duration::from_millis(1)).is_none(), "exited with transfers in flight");

    // The upload's second half, slowly (2.4 s: actix checks every second whether the shutdown
    // timeout has passed, so a timeout that did not hold would cut this); it completes.
    for chunk in small[small.len() / 2..].chunks(256 * 1024) {
        up.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut up = BufReader::new(up);
    let (status, headers) = read_head(&mut up);
    assert_eq!(status, 201, "{headers:?}");
    assert_eq!(headers["docker-content-digest"], small_digest);

    // The download finishes, every byte right.
    let mut rest = Vec::new();
    down.read_to_end(&mut rest).unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(got.len(), big.len());
    assert_eq!(sha256(&got), big_digest);

    let status = b.wait_exit(Duration::from_secs(20)).expect("berth did not exit after its transfers finished");
    assert_eq!(status.code(), Some(0), "{status}");

    // The upload was committed: after a restart the blob is there.
    b.restart();
    Reg::new(&b).get_blob("ops/graceful", &small_digest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_queue_and_send_each_delivery_once() {
    // Two nodes on one PostgreSQL database, both sending, both polling every 20 ms.
    let env = [
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_WEBHOOKS__POLL_MS", "20"),
        ("BERTH_WEBHOOKS__BACKOFF_INITIAL_MS", "100"),
    ];
    let a = Berth::start_on(common::Backend::s3_postgres(None), &env);
    let b = a.start_peer();
    let hook = Receiver::start(3);
    let admin = Reg::admin(&a);
    let (s, v) = admin.api(Method::POST, "/api/v1/webhooks", Some(json!({"url": hook.url, "secret": SECRET}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    tokio::time::sleep(Duration::from_millis(2100)).await; // the nodes' webhook caches
    let n = 12;
    for i in 0..n {
        let node = if i % 2 == 0 { &a } else { &b };
        push_one_layer(&Reg::admin(node), "admin/shared", &format!("t{i}"), format!("layer {i}").as_bytes()).await;
    }
    // Every event arrives (3 of them after a failure), each delivered exactly once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok: std::collections::HashSet<String> = hook
            .received()
            .iter()
            .skip(3)
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["tag"].as_str().unwrap().to_string())
            .collect();
        if ok.len() == n {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of {n} events arrived", ok.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = hook.received();
    assert_eq!(got.len(), n + 3, "a delivery was sent twice");
    for r in &got {
        verified(r, SECRET);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_hits_misses_upstream_bytes_and_cache_events() {
    // The upstream is another Berth on loopback.
    let upstream = Berth::start();
    let layer: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let (manifest_digest, layer_digest) = push_one_layer(&Reg::new(&upstream), "lib/mirrored", "v1", &layer).await;
    let toml = format!("[mirror]\nenabled = true\n[[mirror.upstreams]]\nname = \"up\"\nurl = \"{}\"\n", upstream.base);
    let mirror =
        Berth::start_with_config(&toml, &[("BERTH_AUTH__ENABLED", "false"), ("BERTH_WEBHOOKS__POLL_MS", "50")]);
    let hook = Receiver::start(0);
    mirror.cli_stdin(&["webhook", "add", &hook.url, "--events", "mirror,pull", "--secret-stdin"], SECRET);
    let before = scrape(&mirror).await;

    let m = Reg::new(&mirror);
    let blob_path = format!("/v2/up/lib/mirrored/blobs/{layer_digest}");
    let mut manifest_len = 0;
    for _ in 0..2 {
        let r = m.get_manifest("up/lib/mirrored", "v1").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.bytes().await.unwrap();
        assert_eq!(sha256(&body), manifest_digest);
        manifest_len = body.len();
        let r = m.send(Method::GET, &blob_path).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(sha256(&r.bytes().await.unwrap()), layer_digest);
    }
    let after = scrape(&mirror).await;
    let delta = |k: &str| get(&after, k) - get(&before, k);
    assert_eq!(delta("berth_mirror_cache_misses_total{kind=\"manifest\"}"), 1.0);
    assert_eq!(delta("berth_mirror_cache_hits_total{kind=\"manifest\"}"), 1.0);
    assert_eq!(delta("berth_mirror_cache_misses_total{kind=\"blob\"}"), 1.0);
    assert_eq!(delta("berth_mirror_cache_hits_total{kind=\"blob\"}"), 1.0);
    assert_eq!(delta("berth_mirror_upstream_bytes_total"), (manifest_len + layer.len()) as f64);
    assert_eq!(delta("berth_blob_served_bytes_total"), 2.0 * layer.len() as f64);

    // Cache events: the manifest and the blob were stored once each; two pulls.
    let stored = verified(&hook.wait_for_nth("mirror", 2, Duration::from_secs(20)), SECRET);
    let events: Vec<Value> =
        hook.received().iter().map(|r| verified(r, SECRET)).filter(|v| v["action"] == "mirror").collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let manifest_event = events.iter().find(|v| v["kind"] == "manifest").expect("a manifest cache event");
    assert_eq!(manifest_event["repository"], "up/lib/mirrored");
    assert_eq!(manifest_event["tag"], "v1");
    assert_eq!(manifest_event["digest"], manifest_digest.as_str());
    assert_eq!(manifest_event["actor"], "mirror");
    let blob_event = events.iter().find(|v| v["kind"] == "blob").expect("a blob cache event");
    assert_eq!(blob_event["digest"], layer_digest.as_str());
    assert!(stored["id"].is_string());
    let pull = verified(&hook.wait_for_nth("pull", 2, Duration::from_secs(20)), SECRET);
    assert_eq!(pull["repository"], "up/lib/mirrored");
    assert_eq!(pull["actor"], "anonymous");
}

#[tokio::test]
async fn a_gc_run_shows_in_the_metrics_and_the_audit_log() {
    let b = Berth::start_with_env(&[
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_GC__ENABLED", "false"),
        ("BERTH_GC__GRACE_SECS", "0"),
    ]);
    let admin = Reg::admin(&b);
    let layer = vec![7u8; 50_000];
    let (digest, _) = push_one_layer(&admin, "admin/collected", "v1", &layer).await;
    let path = format!("/v2/admin/collected/manifests/{digest}");
    assert_eq!(admin.status(Method::DELETE, &path).await, StatusCode::ACCEPTED);
    // Timestamps are whole seconds: let the deleted content be older than the cutoff.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, dry) = admin.api(Method::POST, "/api/v1/gc?dry_run=true", None).await;
    assert_eq!(s, StatusCode::OK, "{dry}");
    assert_eq!(get(&scrape(&b).await, "berth_gc_runs_total"), 0.0, "a dry run is no run");
    let (s, report) = admin.api(Method::POST, "/api/v1/gc", None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let freed_bytes = report["bytes_freed"].as_u64().unwrap();
    assert!(freed_bytes >= layer.len() as u64, "{report}");
    let freed = report["blobs_deleted"].as_u64().unwrap()
        + report["manifests_deleted"].as_u64().unwrap()
        + report["mirror_manifests_evicted"].as_u64().unwrap();
    let m = scrape(&b).await;
    assert_eq!(get(&m, "berth_gc_runs_total"), 1.0);
    assert_eq!(get(&m, "berth_gc_freed_bytes_total"), freed_bytes as f64);
    assert_eq!(get(&m, "berth_gc_freed_objects_total"), freed as f64);
    assert_eq!(get(&m, "berth_gc_duration_seconds_count"), 1.0);
    let (_, audit) = admin.api(Method::GET, "/api/v1/audit?action=gc.run", None).await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["actor"], "admin");
    assert_eq!(entries[0]["detail"]["bytes_freed"], freed_bytes);
}

#[tokio::test]
async fn web_ui_logins_and_deletes_reach_the_audit_log_and_webhooks() {
    let b = Berth::start_with_env(&[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD), ("BERTH_WEBHOOKS__POLL_MS", "50")]);
    let admin = Reg::admin(&b);
    let hook = Receiver::start(0);
    let (s, _) = admin
        .api(Method::POST, "/api/v1/webhooks", Some(json!({"url": hook.url, "secret": SECRET, "events": ["delete"]})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    push_one_layer(&admin, "admin/ui-deleted", "v1", b"ui layer").await;

    // Log in through the form.
    let ui = Ui::login(&b.base, "admin", ADMIN_PASSWORD).await;

    // Delete the tag from the repository page.
    assert_eq!(ui.get("/r/admin/ui-deleted").await.0, StatusCode::OK);
    let (status, page) = ui.post("/r/admin/ui-deleted/-/delete", &[("reference", "v1")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");

    let delete = verified(&hook.wait_for("delete", Duration::from_secs(20)), SECRET);
    assert_eq!(delete["repository"], "admin/ui-deleted");
    assert_eq!(delete["tag"], "v1");
    assert_eq!(delete["actor"], "admin");
    let (_, audit) = admin.api(Method::GET, "/api/v1/audit?actor=admin", None).await;
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "login" && e["detail"]["via"] == "ui"), "{audit:#}");
    assert!(entries.iter().any(|e| e["action"] == "delete" && e["target"] == "admin/ui-deleted"), "{audit:#}");
}
