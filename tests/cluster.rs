//! Several stateless Berth nodes on one PostgreSQL database and one S3 bucket: the docker
//! engine pushes through an nginx load balancer that alternates nodes, every node serves what
//! any node stored, tokens from one node work on another (and a revoked one ends on every node
//! within half a second, as does a deleted blob), an S3 outage mid-push leaves no partial
//! blob, and each replication job (and each scheduled run) is carried out by one node only.
//! Always runs on S3 + PostgreSQL (scripts/test starts both).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::docker::{DockerClient, Images, build_image, import_busybox, pushed_digest, require_tools};
use common::images::{DOCKER_MANIFEST, MANIFEST_ACCEPT, tiny};
use common::reference::DockerRegistry;
use common::registry::{Creds, Reg, header};
use common::{ADMIN_PASSWORD, Backend, Berth, free_port, sha256};
use reqwest::{Method, StatusCode};

/// nginx balancing round robin over some nodes, on its own port.
struct Balancer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(nodes: &[&Berth]) -> Balancer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers: String = nodes.iter().map(|n| format!("server 127.0.0.1:{};\n", n.port)).collect();
        let conf = format!(
            "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n log_format up '$request_method $upstream_addr';\n access_log {dir}/access.log up;\n\
             client_body_temp_path {dir};\n proxy_temp_path {dir};\n\
             upstream berth {{ {servers} }}\n\
             server {{\n listen 127.0.0.1:{port};\n client_max_body_size 0;\n\
             location / {{\n proxy_pass http://berth;\n proxy_http_version 1.1;\n\
             proxy_set_header Host $http_host;\n proxy_request_buffering off;\n proxy_buffering off;\n }}\n }}\n}}\n",
            dir = dir.path().display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (apt-get install nginx-light)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Balancer { port, child, _dir: dir }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many requests of a method the balancer sent to each upstream (`127.0.0.1:PORT`).
    fn requests_by_upstream(&self, method: &str) -> std::collections::HashMap<String, usize> {
        let log = std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default();
        let mut counts = std::collections::HashMap::new();
        for line in log.lines() {
            if let Some((m, upstream)) = line.split_once(' ')
                && m == method
            {
                *counts.entry(upstream.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its worker too (SIGKILL would orphan it).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_nodes_behind_a_balancer_serve_one_registry() {
    require_tools();
    let a = Berth::start_on(Backend::s3_postgres(None), &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let b = a.start_peer();
    let lb = Balancer::start(&[&a, &b]);

    // The docker engine pushes through the balancer: POST, PATCH and PUT of each layer
    // alternate between the nodes.
    let mut images = Images::new();
    let base = images.add(format!("berth-cluster-{}-base:latest", lb.port));
    import_busybox(&base);
    let name = images.add(format!("{}/admin/app:1", lb.host()));
    let expected = build_image(&base, &name, "cluster");
    let docker = DockerClient::new(&lb.host());
    let login = docker.login("admin", ADMIN_PASSWORD);
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let out = docker.run(&["push", &name]);
    let digest = pushed_digest(&out);
    for method in ["PATCH", "PUT"] {
        let counts = lb.requests_by_upstream(method);
        for node in [&a, &b] {
            assert!(
                counts.get(&node.host()).is_some_and(|n| *n > 0),
                "no {method} reached node {}: {counts:?}",
                node.port
            );
        }
    }

    // Each node serves the same manifest and blobs.
    let (reg_a, reg_b) = (Reg::admin(&a), Reg::admin(&b));
    let manifest = |reg: &Reg| {
        let r = reg.req(Method::GET, "/v2/admin/app/manifests/1").header("accept", DOCKER_MANIFEST).send();
        async move { r.await.unwrap().bytes().await.unwrap().to_vec() }
    };
    let manifest_a = manifest(&reg_a).await;
    assert_eq!(manifest_a, manifest(&reg_b).await);
    assert_eq!(sha256(&manifest_a), digest);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_a).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        for reg in [&reg_a, &reg_b] {
            reg.get_blob("admin/app", d).await;
        }
    }

    // docker pulls from node B directly and runs the image.
    let docker_b = DockerClient::new(&b.host());
    assert!(docker_b.login("admin", ADMIN_PASSWORD).status.success());
    let from_b = images.add(format!("{}/admin/app:1", b.host()));
    docker_b.run(&["pull", &from_b]);
    assert_eq!(docker_b.run(&["run", "--rm", &from_b]), expected);

    // A token issued by node A works on node B.
    let token = reg_a.token(&["repository:admin/app:pull"]).await;
    let r = reg_b.with(&Creds::bearer(&token)).send(Method::GET, "/v2/admin/app/tags/list").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), r#"{"name":"admin/app","tags":["1"]}"#);

    // An upload session started on one node continues on the other.
    let r = reg_a.start_upload("admin/app").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location");
    let part1 = vec![b'x'; 6 * 1024 * 1024];
    let part2 = vec![b'y'; 3 * 1024 * 1024 + 7];
    let range1 = format!("0-{}", part1.len() - 1);
    let r = reg_b.patch_upload(&location, &part1, Some(&range1)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "PATCH on node B");
    let range2 = format!("{}-{}", part1.len(), part1.len() + part2.len() - 1);
    let r = reg_a.patch_upload(&location, &part2, Some(&range2)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "PATCH on node A");
    let mut all = part1.clone();
    all.extend_from_slice(&part2);
    let blob = sha256(&all);
    let r = reg_b.finish_upload(&location, &blob, &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED, "PUT on node B");
    reg_a.get_blob("admin/app", &blob).await;

    // A delete on node A is seen on node B at once.
    let manifest_path = format!("/v2/admin/app/manifests/{digest}");
    assert_eq!(reg_a.status(Method::DELETE, &manifest_path).await, StatusCode::ACCEPTED);
    let status = reg_b.status(Method::HEAD, &manifest_path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleted manifest still served by node B");
    let r = reg_b.req(Method::HEAD, "/v2/admin/app/manifests/1").header("accept", DOCKER_MANIFEST).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::NOT_FOUND, "deleted tag still served by node B");
}

/// A moto S3 server of the test's own, to stop and start.
struct S3Server {
    port: u16,
    child: Option<Child>,
}

impl S3Server {
    /// Starts on `port`, or on another free port when moto cannot have it (another test's
    /// server took it after `free_port` chose it).
    fn start(port: u16) -> S3Server {
        let mut s = S3Server { port, child: None };
        for _ in 0..3 {
            if s.resume() {
                return s;
            }
            s.port = free_port();
        }
        panic!("moto did not start (pip install 'moto[server]')");
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (empty: moto keeps everything in memory) and creates the bucket; false
    /// when the server exited before it answered (its port was taken).
    fn resume(&mut self) -> bool {
        let port = self.port.to_string();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .or_else(|_| {
                Command::new("python3")
                    .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .expect("start moto (pip install 'moto[server]')");
        // moto takes a few seconds to import on a busy machine. Ready means it answers HTTP (the
        // bucket's creation), not merely that the port takes a connection.
        let bucket = std::env::var("BERTH_TEST_S3_BUCKET").unwrap_or_else(|_| "berth-test".into());
        let url = format!("{}/{bucket}", self.endpoint());
        let child = self.child.insert(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answered = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "--max-time", "5", "-X", "PUT", &url])
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                break;
            }
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return false;
            }
            assert!(std::time::Instant::now() < deadline, "moto did not answer on port {} within 60 s", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Uploads `parts` as chunked PATCHes then a PUT; returns each request's status.
async fn chunked_push(reg: &Reg, repo: &str, parts: &[Vec<u8>]) -> Vec<u16> {
    let r = reg.start_upload(repo).await;
    let mut statuses = vec![r.status().as_u16()];
    let location = header(&r, "location");
    if location.is_empty() {
        return statuses;
    }
    let mut offset = 0;
    let mut all = Vec::new();
    for part in parts {
        let range = format!("{}-{}", offset, offset + part.len() - 1);
        statuses.push(reg.patch_upload(&location, part, Some(&range)).await.status().as_u16());
        offset += part.len();
        all.extend_from_slice(part);
    }
    statuses.push(reg.finish_upload(&location, &sha256(&all), &[]).await.status().as_u16());
    statuses
}

#[tokio::test]
async fn s3_outage_mid_push_leaves_no_partial_blob() {
    let mut s3 = S3Server::start(free_port());
    let berth = Berth::start_on(
        Backend::s3_postgres(Some(&s3.endpoint())),
        &[
            ("BERTH_AUTH__ENABLED", "false"),
            ("BERTH_STORAGE__S3__MAX_RETRIES", "2"),
            ("BERTH_STORAGE__S3__RETRY_TIMEOUT_SECS", "3"),
        ],
    );
    let reg = Reg::new(&berth);
    let parts = vec![vec![1u8; 9 * 1024 * 1024], vec![2u8; 9 * 1024 * 1024], vec![3u8; 1024]];
    let mut all = Vec::new();
    parts.iter().for_each(|p| all.extend_from_slice(p));
    let digest = sha256(&all);

    // The first chunk is stored (one 8 MiB part sent, the rest in the tail); then S3 goes away.
    let r = reg.start_upload("fault").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location");
    assert_eq!(reg.patch_upload(&location, &parts[0], None).await.status(), StatusCode::ACCEPTED);
    s3.stop();
    let r = reg.patch_upload(&location, &parts[1], None).await;
    let status = r.status();
    assert!(status.is_server_error(), "PATCH during the outage answered {status}: {}", r.text().await.unwrap());
    // The node says it is not ready while its bucket is unreachable.
    let r = reg.send(Method::GET, "/readyz").await;
    let (status, body) = (r.status(), r.text().await.unwrap());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains(r#""database":"ok""#), "{body}");
    // The failed chunk was not acknowledged: the upload stands at the first chunk.
    let r = reg.send(Method::GET, &location).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), format!("0-{}", parts[0].len() - 1));
    // Completing it needs S3 too: an error, and no blob, whole or partial, is visible.
    let first = sha256(&parts[0]);
    let r = reg.finish_upload(&location, &first, &[]).await;
    let status = r.status();
    assert!(status.is_server_error(), "PUT during the outage answered {status}: {}", r.text().await.unwrap());
    for d in [&first, &digest] {
        assert_eq!(reg.status(Method::HEAD, &format!("/v2/fault/blobs/{d}")).await, StatusCode::NOT_FOUND);
    }

    // S3 is back (empty: moto keeps nothing): the same push, from the start, succeeds. (Berth
    // knows this port: a server that cannot have it yet is started again.)
    let back = (0..5).any(|_| s3.resume() || (std::thread::sleep(Duration::from_millis(500)), false).1);
    assert!(back, "moto could not take its port back");
    assert_eq!(reg.status(Method::GET, "/readyz").await, StatusCode::OK);
    let statuses = chunked_push(&reg, "fault", &parts).await;
    assert_eq!(statuses, vec![202, 202, 202, 202, 201]);
    reg.get_blob("fault", &digest).await;
}

#[tokio::test]
async fn blob_gets_redirect_to_presigned_urls_when_asked() {
    // On an S3 server of its own: moto with its signature checks on (the suite's) answers every
    // presigned URL with a 500 of its own, boto3's too.
    let s3 = S3Server::start(free_port());
    let berth = Berth::start_on(
        Backend::s3_postgres(Some(&s3.endpoint())),
        &[("BERTH_AUTH__ENABLED", "false"), ("BERTH_STORAGE__S3__REDIRECT", "true")],
    );
    let reg = Reg::new(&berth);
    let data = vec![7u8; 3 * 1024 * 1024];
    let statuses = chunked_push(&reg, "redirected", std::slice::from_ref(&data)).await;
    assert_eq!(statuses, vec![202, 202, 201]);
    let digest = sha256(&data);
    let path = format!("/v2/redirected/blobs/{digest}");
    let r = reg.send(Method::GET, &path).await;
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = header(&r, "location");
    assert!(location.contains("X-Amz-Signature="), "not a presigned URL: {location}");
    // Following it downloads the blob straight from the bucket.
    let followed = reqwest::Client::new().get(reg.url(&path)).send().await.unwrap();
    assert_eq!(sha256(&followed.bytes().await.unwrap()), digest);
    // Range requests and HEAD are still answered by Berth.
    assert_eq!(reg.status(Method::HEAD, &path).await, StatusCode::OK);
    let r = reg.req(Method::GET, &path).header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    // A repository that does not link the blob gets no URL.
    assert_eq!(reg.status(Method::GET, &format!("/v2/other/blobs/{digest}")).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_nodes_run_each_replication_job_once() {
    let env = [
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_REPLICATION__POLL_MS", "100"),
        ("BERTH_REPLICATION__BACKOFF_INITIAL_MS", "300"),
        ("BERTH_REPLICATION__BACKOFF_MAX_SECS", "1"),
    ];
    let a = Berth::start_on(Backend::s3_postgres(None), &env);
    let b = a.start_peer();
    let reference = DockerRegistry::start();
    let (ra, rb) = (Reg::admin(&a), Reg::admin(&b));
    let body = serde_json::json!({"name": "dr", "url": reference.base()});
    assert_eq!(ra.api(Method::POST, "/api/v1/replication/targets", Some(body)).await.0, StatusCode::CREATED);
    let rule = serde_json::json!({"name": "to-dr", "target": "dr", "repositories": "team/*"});
    assert_eq!(ra.api(Method::POST, "/api/v1/replication/rules", Some(rule)).await.0, StatusCode::CREATED);

    // Pushes through both nodes: each node queues the jobs of its pushes, both workers claim.
    let tags: Vec<String> = (0..16).map(|i| format!("t{i}")).collect();
    for (i, tag) in tags.iter().enumerate() {
        let node = if i % 2 == 0 { &ra } else { &rb };
        node.push_image("team/app", tag, &tiny(&format!("two nodes {tag}"))).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = ra.api_ok(Method::GET, "/api/v1/replication/rules/to-dr/jobs", None).await;
        let jobs = out["jobs"].as_array().unwrap().clone();
        if jobs.len() == tags.len() && jobs.iter().all(|j| j["status"] == "done") {
            for j in &jobs {
                assert_eq!(j["attempts"], 1, "one attempt, by one node: {j}");
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "jobs not done in 30 s: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let target = Reg::foreign(&reference.base());
    let log = reference.access_log();
    for tag in &tags {
        let r = target.req(Method::HEAD, &format!("/v2/team/app/manifests/{tag}")).header("accept", MANIFEST_ACCEPT);
        assert_eq!(r.send().await.unwrap().status(), StatusCode::OK, "{tag} at the target");
        let puts = log.lines().filter(|l| l.contains(&format!("\"PUT /v2/team/app/manifests/{tag} "))).count();
        assert_eq!(puts, 1, "{tag} was put once, by one node");
    }

    // A schedule fires once across the nodes: an hourly pull rule's first run is now.
    let pull = serde_json::json!({"name": "hourly", "target": "dr", "direction": "pull", "repositories": "team/app",
                                  "tags": "t1", "destination_prefix": "back", "schedule": "1h"});
    assert_eq!(rb.api(Method::POST, "/api/v1/replication/rules", Some(pull)).await.0, StatusCode::CREATED);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ra.get_manifest("back/team/app", "t1").await.status() != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "the scheduled pull did not run");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = ra.api_ok(Method::GET, "/api/v1/replication/rules/hourly/executions", None).await;
    assert_eq!(runs["executions"].as_array().unwrap().len(), 1, "one run, by one node: {runs}");
}

/// Each node remembers what it read for a registry token for a moment (no signature check and
/// no database read per request): revoking the personal access token it came from through one
/// node ends it on that node at once and on the other within half a second.
#[tokio::test]
async fn a_revoked_token_ends_on_every_node_within_half_a_second() {
    let a = Berth::start_on(Backend::s3_postgres(None), &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let b = a.start_peer();
    let (reg_a, reg_b) = (Reg::new(&a), Reg::new(&b));
    reg_a.create_user("alice", "alice-password-1").await;
    let alice = Creds::basic("alice", "alice-password-1");
    reg_a.with(&alice).seed("alice/app", "v1").await;
    let created = reg_a
        .with(&alice)
        .api_ok(Method::POST, "/api/v1/tokens", Some(serde_json::json!({"name": "ci", "scope": "pull"})))
        .await;
    let pat = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_i64().unwrap();
    let jwt = reg_a.with(&Creds::basic("alice", &pat)).token(&["repository:alice/app:pull"]).await;
    // Both nodes have read the token's identity.
    for reg in [&reg_a, &reg_b] {
        assert_eq!(reg.with(&Creds::bearer(&jwt)).get_manifest("alice/app", "v1").await.status(), StatusCode::OK);
    }
    let (status, _) = reg_a.with(&alice).api(Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked = std::time::Instant::now();
    assert_eq!(
        reg_a.with(&Creds::bearer(&jwt)).get_manifest("alice/app", "v1").await.status(),
        StatusCode::UNAUTHORIZED,
        "the node that revoked it"
    );
    loop {
        let sent = revoked.elapsed();
        let status = reg_b.with(&Creds::bearer(&jwt)).get_manifest("alice/app", "v1").await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(sent < Duration::from_millis(700), "the other node still accepts it {sent:?} after");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each node answers "does this repository link this blob?" from memory for a moment after the
/// database confirmed it: a blob deleted through one node is gone on that node at once and on
/// the other within half a second.
#[tokio::test]
async fn a_blob_deleted_through_one_node_is_gone_on_every_node_within_half_a_second() {
    let a = Berth::start_on(Backend::s3_postgres(None), &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let b = a.start_peer();
    let (reg_a, reg_b) = (Reg::admin(&a), Reg::admin(&b));
    let data = b"a blob both nodes serve".to_vec();
    let digest = reg_a.blob("shared/app", &data).await;
    let path = format!("/v2/shared/app/blobs/{digest}");
    // Both nodes have checked the link (and keep it).
    for reg in [&reg_a, &reg_b] {
        assert_eq!(reg.get_blob("shared/app", &digest).await, data);
    }
    assert_eq!(reg_a.status(Method::DELETE, &path).await, StatusCode::ACCEPTED);
    let deleted = std::time::Instant::now();
    assert_eq!(reg_a.status(Method::GET, &path).await, StatusCode::NOT_FOUND, "the node that deleted it");
    loop {
        let sent = deleted.elapsed();
        let status = reg_b.status(Method::GET, &path).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(sent < Duration::from_millis(700), "the other node still serves it {sent:?} after");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reg_b.status(Method::HEAD, &path).await, StatusCode::NOT_FOUND);
}
