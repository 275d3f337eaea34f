//! The pull-through mirror against real upstreams on loopback: Debian's `docker-registry`
//! (Distribution 2.8) and a second Berth with token authentication. Images are pushed upstream
//! only, then pulled through the mirror by the docker engine (by every name form, and by the
//! daemon's own `registry-mirrors`) and over HTTP (containerd's `?ns=`).
//!
//! Needs what tests/docker_e2e.rs needs plus Debian's `docker-registry`; the `registry-mirrors`
//! test edits /etc/docker/daemon.json and reloads the daemon (SIGHUP), restoring both after.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::{
    DockerClient, Images, build_image, docker, docker_output, import_busybox, push, pushed_digest, repo_digests,
    require_tools,
};
use common::images::{MANIFEST_ACCEPT, tiny};
use common::proxy::Proxy;
use common::reference::DockerRegistry;
use common::registry::{Creds, Reg, jwt_claims};
use common::{ADMIN_PASSWORD, Berth, run, sha256};
use futures_util::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::json;
use sha2::Digest as _;

/// One `[[mirror.upstreams]]` entry.
struct Upstream {
    name: &'static str,
    url: String,
    username: &'static str,
    password: &'static str,
    tag_ttl_secs: u64,
}

impl Upstream {
    fn new(name: &'static str, url: String) -> Upstream {
        Upstream { name, url, username: "", password: "", tag_ttl_secs: 300 }
    }
}

/// The `[mirror]` section of a configuration file.
fn mirror_toml(default_upstream: &str, anonymous_pull: bool, upstreams: &[Upstream]) -> String {
    let mut toml = format!(
        "[mirror]\nenabled = true\ndefault_upstream = {default_upstream:?}\nanonymous_pull = {anonymous_pull}\n"
    );
    for u in upstreams {
        toml.push_str(&format!(
            "\n[[mirror.upstreams]]\nname = {:?}\nurl = {:?}\nusername = {:?}\npassword = {:?}\n\
             tag_ttl_secs = {}\ntimeout_secs = 5\n",
            u.name, u.url, u.username, u.password, u.tag_ttl_secs
        ));
    }
    toml
}

/// The log filter of mirror servers: warnings, and every mirror decision.
const MIRROR_LOG: (&str, &str) = ("BERTH_LOG", "warn,berth::mirror=info");

/// A mirror server with authentication off.
fn start_open_mirror(toml: &str) -> Berth {
    Berth::start_with_config(toml, &[("BERTH_AUTH__ENABLED", "false"), MIRROR_LOG])
}

/// Lines of a mirror's log with `message` about `repository`.
fn log_lines(mirror: &Berth, message: &str, repository: &str) -> usize {
    let repo = format!("repository={repository} ");
    mirror.log().lines().filter(|l| l.contains(message) && l.contains(&repo)).count()
}

/// Lines of a mirror's log with `message` about `repository`, once there are `want` of them or
/// 10 s have passed: a fetch's clients may have had their last byte before the fetch stored the
/// blob and logged "cached blob from upstream".
fn logged(mirror: &Berth, message: &str, repository: &str, want: usize) -> usize {
    common::eventually_blocking(10, || log_lines(mirror, message, repository) >= want);
    log_lines(mirror, message, repository)
}

/// An HTTP client without idle connections: the tests block their runtime (docker, sleeps),
/// and a pooled connection the server closed meanwhile would fail the next request.
fn http() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build().unwrap()
}

/// A GET: status, `Docker-Content-Digest`, body.
async fn get(client: &Client, url: &str, bearer: Option<&str>) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut req = client.get(url).header("Accept", MANIFEST_ACCEPT);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let digest = resp.headers().get("docker-content-digest").map(|v| v.to_str().unwrap().to_string());
    (status, digest, resp.bytes().await.unwrap().to_vec())
}

/// The digest served for a manifest (checked against its bytes).
async fn manifest_digest(client: &Client, url: &str, bearer: Option<&str>) -> String {
    let (status, digest, body) = get(client, url, bearer).await;
    assert_eq!(status, StatusCode::OK, "GET {url}: {}", String::from_utf8_lossy(&body));
    let digest = digest.unwrap_or_else(|| panic!("GET {url} has no Docker-Content-Digest"));
    assert_eq!(sha256(&body), digest, "GET {url}: the body does not hash to its digest");
    digest
}

/// Fetches a manifest and every blob it names from `base` (each checked against its digest);
/// returns the manifest's digest.
async fn fetch_image(client: &Client, base: &str, name: &str, reference: &str) -> String {
    let url = format!("{base}/v2/{name}/manifests/{reference}");
    let (status, digest, body) = get(client, &url, None).await;
    assert_eq!(status, StatusCode::OK, "GET {url}: {}", String::from_utf8_lossy(&body));
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut blobs = vec![manifest["config"]["digest"].as_str().expect("a config").to_string()];
    for layer in manifest["layers"].as_array().expect("layers") {
        blobs.push(layer["digest"].as_str().unwrap().to_string());
    }
    for blob in blobs {
        let url = format!("{base}/v2/{name}/blobs/{blob}");
        let (status, _, bytes) = get(client, &url, None).await;
        assert_eq!(status, StatusCode::OK, "GET {url}: {}", String::from_utf8_lossy(&bytes));
        assert_eq!(sha256(&bytes), blob, "GET {url}: wrong bytes");
    }
    digest.unwrap()
}

/// The error code of a registry error body.
fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {}", String::from_utf8_lossy(body)));
    v["errors"][0]["code"].as_str().unwrap_or_default().to_string()
}

/// The mirror's catalog (authentication off).
async fn catalog(client: &Client, mirror: &Berth) -> Vec<String> {
    let (status, _, body) = get(client, &format!("{}/v2/_catalog?n=1000", mirror.base), None).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    serde_json::from_value(v["repositories"].clone()).unwrap()
}

/// Imports a busybox base and builds an image from it as `name`; returns what running it prints.
fn build(images: &mut Images, base: &str, name: &str, marker: &str) -> String {
    build_image(base, &images.add(name.to_string()), marker)
}

/// `docker pull reference:tag`, checks the repo digest and what running it prints.
fn pull_and_run(images: &mut Images, repository: &str, tag: &str, digest: &str, prints: &str) {
    let reference = images.add(format!("{repository}:{tag}"));
    docker(&["pull", &reference]);
    let digests = repo_digests(&reference);
    let want = format!("{repository}@{digest}");
    assert!(digests.contains(&want), "{reference}: repo digests {digests:?}, wanted {want}");
    assert_eq!(docker(&["run", "--rm", &reference]), prints, "running {reference}");
}

#[tokio::test]
async fn pulls_from_docker_registry_by_default_prefix_and_ns_names() {
    require_tools();
    let upstream = DockerRegistry::start();
    let mirror = start_open_mirror(&mirror_toml("up", true, &[Upstream::new("up", upstream.base())]));
    let client = http();
    let mut images = Images::new();
    let image = format!("mirror-{}", mirror.port);

    // The image exists upstream only.
    let base = images.add(format!("berth-mirror-{}-base:latest", mirror.port));
    import_busybox(&base);
    let prints = build(&mut images, &base, &format!("{}/library/{image}:1", upstream.host()), "upstream one");
    let (_, pushed) = push(&format!("{}/library/{image}:1", upstream.host()));
    images.remove_all();
    let up_digest =
        manifest_digest(&client, &format!("{}/v2/library/{image}/manifests/1", upstream.base()), None).await;
    assert_eq!(up_digest, pushed);

    // Default upstream: the name as Docker Hub would have it.
    pull_and_run(&mut images, &format!("{}/library/{image}", mirror.host()), "1", &up_digest, &prints);
    let local = format!("up/library/{image}");
    assert_eq!(log_lines(&mirror, "cached manifest from upstream", &local), 1, "{}", mirror.log());
    assert!(logged(&mirror, "cached blob from upstream", &local, 2) >= 2, "{}", mirror.log());

    // Prefix form: the same cached repository, served without going upstream again.
    let gets_before = upstream.settled_gets();
    images.remove_all();
    pull_and_run(&mut images, &format!("{}/up/library/{image}", mirror.host()), "1", &up_digest, &prints);
    assert!(log_lines(&mirror, "cache hit", &local) >= 2, "{}", mirror.log());
    assert_eq!(log_lines(&mirror, "cached manifest from upstream", &local), 1, "{}", mirror.log());
    let gets_after = upstream.settled_gets();
    assert_eq!(gets_before, gets_after, "the second pull went upstream:\n{}", upstream.access_log());

    // containerd's ?ns=, by the upstream's host:port and by its name.
    for ns in [upstream.host(), "up".to_string()] {
        let url = format!("{}/v2/library/{image}/manifests/1?ns={ns}", mirror.base);
        assert_eq!(manifest_digest(&client, &url, None).await, up_digest, "{url}");
    }
    // And by digest through the prefix form.
    let url = format!("{}/v2/up/library/{image}/manifests/{up_digest}", mirror.base);
    assert_eq!(manifest_digest(&client, &url, None).await, up_digest);

    // A name unknown upstream: the upstream's answer, as the spec's error.
    let url = format!("{}/v2/library/absent-{image}/manifests/1", mirror.base);
    let (status, _, body) = get(&client, &url, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");

    let repos = catalog(&client, &mirror).await;
    assert!(repos.contains(&local), "catalog {repos:?}");
}

#[tokio::test]
async fn pulls_from_an_upstream_that_wants_a_bearer_token() {
    require_tools();
    let upstream = Berth::start_auth();
    let mut secure = Upstream::new("secure", upstream.base.clone());
    secure.username = "admin";
    secure.password = ADMIN_PASSWORD;
    // The same upstream without credentials, and no default upstream.
    let anon = Upstream::new("anon", upstream.base.clone());
    let mirror = start_open_mirror(&mirror_toml("", true, &[secure, anon]));
    let client = http();
    let mut images = Images::new();
    let name = format!("admin/app-{}", mirror.port);

    // Pushed to the upstream's private admin namespace.
    let pusher = DockerClient::new(&upstream.host());
    let login = pusher.login("admin", ADMIN_PASSWORD);
    assert!(login.status.success(), "login: {}", String::from_utf8_lossy(&login.stderr));
    let base = images.add(format!("berth-mirror-{}-base:latest", mirror.port));
    import_busybox(&base);
    let upstream_ref = format!("{}/{name}:1", upstream.host());
    let prints = build(&mut images, &base, &upstream_ref, "behind a token");
    let pushed = pushed_digest(&pusher.run(&["push", &upstream_ref]));
    images.remove_all();

    // The upstream wants a token, and only the admin's will do.
    let (status, _, _) = get(&client, &format!("{}/v2/{name}/manifests/1", upstream.base), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let token = Reg::admin(&upstream).with_http(client.clone()).token(&[&format!("repository:{name}:pull")]).await;
    let up_url = format!("{}/v2/{name}/manifests/1", upstream.base);
    assert_eq!(manifest_digest(&client, &up_url, Some(&token)).await, pushed);

    // Prefix form through the docker engine.
    pull_and_run(&mut images, &format!("{}/secure/{name}", mirror.host()), "1", &pushed, &prints);
    assert_eq!(log_lines(&mirror, "cached manifest from upstream", &format!("secure/{name}")), 1);

    // ?ns= by host:port picks the first upstream at that address (the one with credentials).
    let url = format!("{}/v2/{name}/manifests/1?ns={}", mirror.base, upstream.host());
    assert_eq!(manifest_digest(&client, &url, None).await, pushed);

    // No default upstream: a bare name is a local one, and there is none.
    let (status, _, body) = get(&client, &format!("{}/v2/{name}/manifests/1", mirror.base), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&body));

    // Without credentials the upstream refuses the private repository.
    let (status, _, body) = get(&client, &format!("{}/v2/anon/{name}/manifests/1", mirror.base), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "DENIED");
}

/// Adds a registry mirror to /etc/docker/daemon.json and reloads the daemon; dropping it puts
/// back the file and the daemon's mirrors as they were (also when the test fails).
struct DaemonMirror {
    original_file: Option<Vec<u8>>,
    original_mirrors: Vec<String>,
}

const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// The registry mirrors the running daemon uses.
fn daemon_mirrors() -> Vec<String> {
    serde_json::from_str(docker(&["info", "--format", "{{json .RegistryConfig.Mirrors}}"]).trim()).unwrap_or_default()
}

fn reload_daemon() {
    let pids = run(Command::new("pidof").arg("dockerd"));
    for pid in pids.split_whitespace() {
        run(Command::new("kill").args(["-HUP", pid]));
    }
}

/// Waits until the daemon's mirrors satisfy `ok`; returns them.
fn wait_mirrors(ok: impl Fn(&[String]) -> bool) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mirrors = daemon_mirrors();
        if ok(&mirrors) {
            return Ok(mirrors);
        }
        if Instant::now() > deadline {
            return Err(mirrors);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_daemon_json(config: &serde_json::Value) {
    std::fs::write(DAEMON_JSON, serde_json::to_vec_pretty(config).unwrap()).unwrap();
}

impl DaemonMirror {
    fn add(url: &str) -> DaemonMirror {
        let original_file = std::fs::read(DAEMON_JSON).ok();
        let mut config: serde_json::Value = match &original_file {
            Some(bytes) => serde_json::from_slice(bytes).expect("/etc/docker/daemon.json is not JSON"),
            None => serde_json::json!({}),
        };
        let guard = DaemonMirror { original_file, original_mirrors: daemon_mirrors() };
        let mut mirrors: Vec<String> = serde_json::from_value(config["registry-mirrors"].clone()).unwrap_or_default();
        mirrors.insert(0, url.to_string());
        config["registry-mirrors"] = serde_json::json!(mirrors);
        write_daemon_json(&config);
        reload_daemon();
        if let Err(seen) = wait_mirrors(|m| m.iter().any(|m| m.trim_end_matches('/') == url)) {
            panic!("after SIGHUP the daemon's Registry Mirrors are {seen:?}, not {url}");
        }
        guard
    }
}

impl Drop for DaemonMirror {
    fn drop(&mut self) {
        // A reload keeps the mirrors when the file has no `registry-mirrors` key: set the old
        // ones explicitly first, then put back the file exactly as it was.
        let mut config: serde_json::Value = self
            .original_file
            .as_ref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        config["registry-mirrors"] = serde_json::json!(self.original_mirrors);
        write_daemon_json(&config);
        reload_daemon();
        let restored = wait_mirrors(|m| m == self.original_mirrors.as_slice());
        match &self.original_file {
            Some(bytes) => std::fs::write(DAEMON_JSON, bytes).unwrap(),
            None => {
                let _ = std::fs::remove_file(DAEMON_JSON);
            }
        }
        reload_daemon();
        if let Err(seen) = restored {
            eprintln!("warning: the daemon's mirrors are {seen:?}, not {:?} as before", self.original_mirrors);
        }
    }
}

#[tokio::test]
async fn docker_daemon_registry_mirrors_pull_hub_names_through_the_mirror() {
    require_tools();
    let upstream = DockerRegistry::start();
    let mirror = start_open_mirror(&mirror_toml("up", true, &[Upstream::new("up", upstream.base())]));
    let client = http();
    let mut images = Images::new();
    let port = mirror.port;

    // Hub-style names that only the loopback upstream has.
    let base = images.add(format!("berth-mirror-{port}-base:latest"));
    import_busybox(&base);
    let org = format!("berthtest/app-{port}");
    let official = format!("busybox-mirror-test-{port}");
    let org_prints = build(&mut images, &base, &format!("{}/{org}:1", upstream.host()), "org image");
    let org_digest = push(&format!("{}/{org}:1", upstream.host())).1;
    let lib_prints = build(&mut images, &base, &format!("{}/library/{official}:1", upstream.host()), "official image");
    let lib_digest = push(&format!("{}/library/{official}:1", upstream.host())).1;
    images.remove_all();

    let mirror_url = mirror.base.clone();
    let _daemon = DaemonMirror::add(&mirror_url);
    let info = docker(&["info"]);
    assert!(info.contains("Registry Mirrors:") && info.contains(&mirror_url), "docker info:\n{info}");

    // The daemon asks the mirror for docker.io names (Docker Hub itself is not reachable).
    pull_and_run(&mut images, &org, "1", &org_digest, &org_prints);
    pull_and_run(&mut images, &official, "1", &lib_digest, &lib_prints);
    assert_eq!(repo_digests(&format!("docker.io/{official}:1")), vec![format!("{official}@{lib_digest}")]);

    for local in [format!("up/{org}"), format!("up/library/{official}")] {
        assert_eq!(log_lines(&mirror, "cached manifest from upstream", &local), 1, "{local}:\n{}", mirror.log());
        assert!(logged(&mirror, "cached blob from upstream", &local, 1) >= 1, "{local}:\n{}", mirror.log());
    }
    let repos = catalog(&client, &mirror).await;
    assert!(repos.contains(&format!("up/{org}")) && repos.contains(&format!("up/library/{official}")), "{repos:?}");
}

/// `size` bytes that do not compress, the same for a seed.
fn noise(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_fetch_a_blob_from_upstream_once() {
    let upstream = DockerRegistry::start();
    let mirror = start_open_mirror(&mirror_toml("up", true, &[Upstream::new("up", upstream.base())]));
    let client = http();

    // A 64 MiB blob, upstream only.
    let blob = noise(64 << 20, mirror.port as u64);
    let digest = sha256(&blob);
    let name = "library/big";
    Reg::foreign(&upstream.base()).with_http(client.clone()).upload(name, &blob).await;

    // 20 clients at once, none of them cached.
    let url = format!("{}/v2/{name}/blobs/{digest}", mirror.base);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..20).map(|_| tokio::spawn(get_blob(client.clone(), url.clone(), t0, None))).collect();
    for task in tasks {
        let got = task.await.unwrap();
        assert_eq!((got.status, got.size, got.failed), (StatusCode::OK, 64 << 20, false));
        assert_eq!(got.digest, digest);
    }

    // The upstream served that blob once (its log line lands when the response ends).
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.blob_gets(name, &digest) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(upstream.blob_gets(name, &digest), 1, "upstream access log:\n{}", upstream.access_log());
    assert_eq!(logged(&mirror, "cached blob from upstream", "up/library/big", 1), 1, "{}", mirror.log());
    // The requests did overlap: one missed the cache and fetched, others joined that fetch
    // (streaming it as it arrived, or, joining after its first bytes had gone, from the store).
    assert_eq!(log_lines(&mirror, "cache miss", "up/library/big"), 1, "{}", mirror.log());
    assert!(log_lines(&mirror, "fetch in flight)", "up/library/big") >= 1, "{}", mirror.log());
}

/// What one client got from a blob GET: status, bytes, their digest, whether the body ended in
/// an error, and when (since `t0`) its first byte and its end came.
struct Got {
    status: StatusCode,
    size: usize,
    digest: String,
    failed: bool,
    first_byte: Duration,
    ended: Duration,
}

/// GETs `url`, reading the body as it comes; with `pause`, stops after the first chunk until
/// `pause` fires (a client too slow for the fetch it joined).
async fn get_blob(client: Client, url: String, t0: Instant, pause: Option<tokio::sync::oneshot::Receiver<()>>) -> Got {
    let resp = client.get(&url).send().await.unwrap();
    let status = resp.status();
    let mut body = resp.bytes_stream();
    let (mut hasher, mut size, mut failed, mut first_byte) = (sha2::Sha256::new(), 0, false, None);
    let mut pause = pause;
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            failed = true;
            break;
        };
        first_byte.get_or_insert_with(|| t0.elapsed());
        size += chunk.len();
        hasher.update(&chunk);
        if let Some(p) = pause.take() {
            let _ = p.await;
        }
    }
    Got {
        status,
        size,
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        failed,
        first_byte: first_byte.unwrap_or_else(|| t0.elapsed()),
        ended: t0.elapsed(),
    }
}

/// Clients that ask for a blob while the mirror fetches it from a slow upstream get the bytes
/// as they arrive, not once the fetch is stored; one that reads too slowly to keep up with
/// the fetch gets the rest from the store; and when the upstream's bytes do not verify, no
/// client that joined gets a whole blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_joining_a_fetch_get_its_bytes_as_they_arrive() {
    let upstream = DockerRegistry::start();
    let proxy = Proxy::start(upstream.port);
    let mirror = start_open_mirror(&mirror_toml("up", true, &[Upstream::new("up", proxy.base())]));
    let client = http();
    let name = "library/slow";
    let blob = noise(32 << 20, 11);
    let digest = sha256(&blob);
    Reg::foreign(&upstream.base()).with_http(client.clone()).upload(name, &blob).await;
    // A remote upstream: 16 MiB/s, so the fetch takes about 2 s.
    proxy.throttle_downloads(16 << 20);

    let url = format!("{}/v2/{name}/blobs/{digest}", mirror.base);
    let t0 = Instant::now();
    let leader = tokio::spawn(get_blob(client.clone(), url.clone(), t0, None));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let joiners: Vec<_> = (0..4).map(|_| tokio::spawn(get_blob(client.clone(), url.clone(), t0, None))).collect();
    let (resume, paused) = tokio::sync::oneshot::channel();
    let slow = tokio::spawn(get_blob(client.clone(), url.clone(), t0, Some(paused)));

    let leader = leader.await.unwrap();
    assert_eq!((leader.status, leader.size, leader.failed), (StatusCode::OK, blob.len(), false));
    assert_eq!(leader.digest, digest);
    assert!(leader.ended > Duration::from_millis(1500), "the upstream was not throttled: {:?}", leader.ended);
    for joiner in joiners {
        let got = joiner.await.unwrap();
        assert_eq!((got.status, got.size, got.failed), (StatusCode::OK, blob.len(), false));
        assert_eq!(got.digest, digest);
        // Before: a joined client's first byte came once the blob was stored, after the fetch.
        assert!(
            got.first_byte + Duration::from_secs(1) < leader.ended,
            "a joined client's first byte came at {:?}, the fetch ended at {:?}",
            got.first_byte,
            leader.ended
        );
    }
    // The slow client reads on once the blob is stored: the fetch's window has moved on.
    logged(&mirror, "cached blob from upstream", "up/library/slow", 1);
    resume.send(()).unwrap();
    let got = slow.await.unwrap();
    assert_eq!((got.status, got.size, got.failed), (StatusCode::OK, blob.len(), false));
    assert_eq!(got.digest, digest);
    assert_eq!(log_lines(&mirror, "joined client fell behind the fetch", "up/library/slow"), 1, "{}", mirror.log());
    assert_eq!(
        log_lines(&mirror, "cache hit (streamed from the fetch in flight)", "up/library/slow"),
        5,
        "{}",
        mirror.log()
    );
    assert_eq!(log_lines(&mirror, "cache miss", "up/library/slow"), 1, "{}", mirror.log());
    assert_eq!(upstream.blob_gets(name, &digest), 1, "upstream access log:\n{}", upstream.access_log());

    // An upstream whose bytes change on the way: neither the first client nor the ones that
    // joined get a whole blob, and nothing is stored.
    let name = "library/corrupt";
    let mut blob = noise(16 << 20, 12);
    for mib in [9, 10, 11, 12] {
        blob[mib << 20..(mib << 20) + 16].copy_from_slice(b"berth-flip-here!");
    }
    let digest = sha256(&blob);
    Reg::foreign(&upstream.base()).with_http(client.clone()).upload(name, &blob).await;
    proxy.corrupt(b"berth-flip-here!");
    let url = format!("{}/v2/{name}/blobs/{digest}", mirror.base);
    let t0 = Instant::now();
    let leader = tokio::spawn(get_blob(client.clone(), url.clone(), t0, None));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let joiners: Vec<_> = (0..3).map(|_| tokio::spawn(get_blob(client.clone(), url.clone(), t0, None))).collect();
    for task in std::iter::once(leader).chain(joiners) {
        let got = task.await.unwrap();
        assert!(
            got.status != StatusCode::OK || got.failed || got.size < blob.len(),
            "a client got all {} bytes of a blob that did not verify ({:?}, failed {})",
            got.size,
            got.status,
            got.failed
        );
    }
    assert!(proxy.flipped() >= 1);
    assert_eq!(log_lines(&mirror, "cached blob from upstream", "up/library/corrupt"), 0, "{}", mirror.log());
    assert!(
        log_lines(&mirror, "cache hit (streamed from the fetch in flight)", "up/library/corrupt") >= 1,
        "{}",
        mirror.log()
    );
}

#[tokio::test]
async fn outage_serves_the_cache_and_moved_tags_follow_after_the_ttl() {
    require_tools();
    let mut upstream = DockerRegistry::start();
    let mut up = Upstream::new("up", upstream.base());
    up.tag_ttl_secs = 2;
    let mirror = start_open_mirror(&mirror_toml("up", true, &[up]));
    let client = http();
    let mut images = Images::new();
    let port = mirror.port;
    let ttl_passes = || std::thread::sleep(Duration::from_millis(3100));

    // Upstream: `moving:1` (first), `moving:next` (second), and `standby:1`, never asked for.
    let base = images.add(format!("berth-mirror-{port}-base:latest"));
    import_busybox(&base);
    let moving = format!("library/moving-{port}");
    let standby = format!("library/standby-{port}");
    let up = upstream.host();
    build(&mut images, &base, &format!("{up}/{moving}:1"), "first");
    let first = push(&format!("{up}/{moving}:1")).1;
    let second_prints = build(&mut images, &base, &format!("{up}/{moving}:next"), "second");
    let second = push(&format!("{up}/{moving}:next")).1;
    docker(&["tag", &format!("{up}/{moving}:next"), &images.add(format!("{up}/{standby}:1"))]);
    push(&format!("{up}/{standby}:1"));
    images.remove_all();

    let mirror_tag = format!("{}/v2/{moving}/manifests/1", mirror.base);
    assert_eq!(fetch_image(&client, &mirror.base, &moving, "1").await, first);

    // Past the TTL an unchanged tag is revalidated (HEAD) and stays.
    ttl_passes();
    assert_eq!(manifest_digest(&client, &mirror_tag, None).await, first);
    assert_eq!(log_lines(&mirror, "revalidated", &format!("up/{moving}")), 1, "{}", mirror.log());

    // Move the tag upstream: PUT `next`'s manifest as `1`.
    let resp = client
        .get(format!("{}/v2/{moving}/manifests/next", upstream.base()))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let manifest = resp.bytes().await.unwrap();
    let resp = client
        .put(format!("{}/v2/{moving}/manifests/1", upstream.base()))
        .header("Content-Type", content_type)
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let up_tag = format!("{}/v2/{moving}/manifests/1", upstream.base());
    assert_eq!(manifest_digest(&client, &up_tag, None).await, second);

    // Within the TTL (revalidated just now) the old digest is served…
    assert_eq!(manifest_digest(&client, &mirror_tag, None).await, first);
    // …after it, the new one.
    ttl_passes();
    assert_eq!(manifest_digest(&client, &mirror_tag, None).await, second);
    let mirror_ref = format!("{}/{moving}", mirror.host());
    pull_and_run(&mut images, &mirror_ref, "1", &second, &second_prints);
    assert_eq!(fetch_image(&client, &mirror.base, &moving, "1").await, second);

    // The upstream goes away.
    upstream.stop();
    images.remove_all();
    ttl_passes();
    pull_and_run(&mut images, &mirror_ref, "1", &second, &second_prints);
    assert!(
        log_lines(&mirror, "upstream unreachable; serving the cached tag", &format!("up/{moving}")) >= 1,
        "{}",
        mirror.log()
    );
    // By digest, the old image's manifest too.
    let url = format!("{}/v2/{moving}/manifests/{first}", mirror.base);
    assert_eq!(manifest_digest(&client, &url, None).await, first);

    // What was never fetched cannot be served: 502 UNAVAILABLE, for docker too.
    let url = format!("{}/v2/{standby}/manifests/1", mirror.base);
    let (status, _, body) = get(&client, &url, None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "UNAVAILABLE");
    assert!(
        String::from_utf8_lossy(&body).contains("upstream up is unavailable"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let out = docker_output(&["pull", &images.add(format!("{}/{standby}:1", mirror.host()))]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Docker reads no error body of a 5xx: it says "received unexpected HTTP status: 502 Bad Gateway".
    assert!(stderr.contains("502"), "docker pull said: {stderr}");
    let url = format!("{}/v2/{standby}/blobs/sha256:{}", mirror.base, "0".repeat(64));
    let (status, _, body) = get(&client, &url, None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "UNAVAILABLE");
}

#[tokio::test]
async fn private_pushes_work_on_a_mirror_with_auth() {
    require_tools();
    let upstream = DockerRegistry::start();
    let mirror = Berth::start_with_config(
        &mirror_toml("up", true, &[Upstream::new("up", upstream.base())]),
        &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD), MIRROR_LOG],
    );
    let mut images = Images::new();
    let port = mirror.port;

    let base = images.add(format!("berth-mirror-{port}-base:latest"));
    import_busybox(&base);
    let public = format!("library/public-{port}");
    let public_prints = build(&mut images, &base, &format!("{}/{public}:1", upstream.host()), "mirrored");
    let public_digest = push(&format!("{}/{public}:1", upstream.host())).1;
    let private_ref = format!("{}/admin/private:1", mirror.host());
    let private_prints = build(&mut images, &base, &private_ref, "private");

    // The admin pushes to their private namespace on the mirror.
    let admin = DockerClient::new(&mirror.host());
    let login = admin.login("admin", ADMIN_PASSWORD);
    assert!(login.status.success(), "login: {}", String::from_utf8_lossy(&login.stderr));
    let private_digest = pushed_digest(&admin.run(&["push", &private_ref]));
    images.remove_all();

    // Anonymous pulls through the mirror (anonymous_pull = true), both name forms.
    let anonymous = DockerClient::new(&mirror.host());
    for repository in [format!("{}/{public}", mirror.host()), format!("{}/up/{public}", mirror.host())] {
        let reference = images.add(format!("{repository}:1"));
        anonymous.run(&["pull", &reference]);
        assert!(repo_digests(&reference).contains(&format!("{repository}@{public_digest}")));
        assert_eq!(docker(&["run", "--rm", &reference]), public_prints);
    }
    // …but no anonymous push into a mirrored name, nor a pull of the private repository.
    let out = anonymous.output(&["push", &format!("{}/{public}:1", mirror.host())]);
    assert!(!out.status.success(), "an anonymous push into a mirrored repository worked");
    let out = anonymous.output(&["pull", &images.add(private_ref.clone())]);
    assert!(!out.status.success(), "an anonymous client pulled admin/private");

    // The admin pulls the private image back; it was never looked for upstream.
    admin.run(&["pull", &private_ref]);
    assert!(repo_digests(&private_ref).contains(&format!("{}/admin/private@{private_digest}", mirror.host())));
    assert_eq!(docker(&["run", "--rm", &private_ref]), private_prints);
    assert!(!mirror.log().contains("admin/private"), "the private repository went to the mirror:\n{}", mirror.log());
    assert!(!upstream.access_log().contains("admin/private"), "{}", upstream.access_log());
}

#[tokio::test]
async fn a_local_namespace_named_like_an_upstream_stays_local_and_private() {
    let upstream = DockerRegistry::start();
    let mirror = Berth::start_with_config(
        &mirror_toml("", true, &[Upstream::new("up", upstream.base())]),
        &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD), MIRROR_LOG],
    );
    let client = http();
    let reg = Reg::new(&mirror).with_http(client.clone());
    // A user takes the upstream's name and pushes a private image into its namespace.
    let user = serde_json::json!({"name": "up", "password": "up-password-1"});
    let (status, _) = reg.with(&Creds::admin()).api(Method::POST, "/api/v1/users", Some(user)).await;
    assert_eq!(status, StatusCode::CREATED);
    reg.with(&Creds::basic("up", "up-password-1")).push_image("up/secret", "1", &tiny("secret")).await;
    // Anonymous clients get nothing of it, with or without a token.
    let url = format!("{}/v2/up/secret/manifests/1", mirror.base);
    assert_eq!(get(&client, &url, None).await.0, StatusCode::UNAUTHORIZED);
    let token = reg.token(&["repository:up/secret:pull"]).await;
    let (status, _, _) = get(&client, &url, Some(&token)).await;
    assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN, "{status}");
    assert!(!mirror.log().contains("up/secret"), "the local namespace went to the mirror:\n{}", mirror.log());
}

#[tokio::test]
async fn ns_names_pull_anonymously_on_a_mirror_with_auth_and_no_default() {
    let upstream = DockerRegistry::start();
    let client = http();
    let digest =
        Reg::foreign(&upstream.base()).with_http(client.clone()).push_image("library/tiny", "1", &tiny("ns")).await;
    let mirror = Berth::start_with_config(
        &mirror_toml("", true, &[Upstream::new("up", upstream.base())]),
        &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD), MIRROR_LOG],
    );
    // containerd asks the token endpoint for the plain name; ?ns= comes only on the request.
    let token = Reg::new(&mirror).with_http(client.clone()).token(&["repository:library/tiny:pull"]).await;
    let url = format!("{}/v2/library/tiny/manifests/1?ns={}", mirror.base, upstream.host());
    assert_eq!(manifest_digest(&client, &url, Some(&token)).await, digest);
}

/// A personal access token limited to some repositories pulls the mirror's names only while
/// anonymous mirror pulls are on (then they are public); with them off, pulling through the
/// mirror is an account's right (the upstream may be private), which the limit narrows.
#[tokio::test]
async fn limited_tokens_pull_mirrored_names_only_when_anyone_may() {
    let upstream = DockerRegistry::start();
    let client = http();
    Reg::foreign(&upstream.base()).with_http(client.clone()).push_image("library/tiny", "1", &tiny("limit")).await;
    for anonymous_pull in [true, false] {
        let mirror = Berth::start_with_config(
            &mirror_toml("up", anonymous_pull, &[Upstream::new("up", upstream.base())]),
            &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD), MIRROR_LOG],
        );
        let admin = Reg::admin(&mirror).with_http(client.clone());
        let made = admin
            .api_ok(
                Method::POST,
                "/api/v1/tokens",
                Some(json!({"name": "ci", "scope": "pull", "repository_pattern": "admin/*"})),
            )
            .await;
        let limited = admin.with(&Creds::basic("admin", made["token"].as_str().unwrap()));
        let token = limited.token(&["repository:library/tiny:pull"]).await;
        let granted = jwt_claims(&token)["access"][0]["actions"].clone();
        let want = if anonymous_pull { json!(["pull"]) } else { json!([]) };
        assert_eq!(granted, want, "anonymous_pull = {anonymous_pull}");
        // The account itself, without the limit, pulls either way.
        let full = admin.token(&["repository:library/tiny:pull"]).await;
        assert_eq!(jwt_claims(&full)["access"][0]["actions"], json!(["pull"]));
    }
}
