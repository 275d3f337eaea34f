//! Several stateless Berth nodes on one PostgreSQL database and one S3 bucket: the docker
//! engine pushes through an nginx load balancer that alternates nodes, every node serves what
//! any node stored, tokens from one node work on another, and an S3 outage mid-push leaves no
//! partial blob. Always runs on S3 + PostgreSQL (scripts/test starts both).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::docker::{DockerClient, Images, build_image, import_busybox, pushed_digest, require_tools};
use common::{ADMIN_PASSWORD, Backend, Berth, free_port, run, sha256};

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

fn curl(args: &[&str]) -> String {
    run(Command::new("curl").args(["-s", "--max-time", "60"]).args(args))
}

/// `(status, headers+body)` of a curl request.
fn curl_status(args: &[&str]) -> (u16, String) {
    let out = curl(&[&["-w", "\n%{http_code}"], args].concat());
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn admin() -> String {
    format!("admin:{ADMIN_PASSWORD}")
}

#[test]
fn two_nodes_behind_a_balancer_serve_one_registry() {
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
    let accept = "Accept: application/vnd.docker.distribution.manifest.v2+json";
    let manifest_a = curl(&["-u", &admin(), "-H", accept, &format!("{}/v2/admin/app/manifests/1", a.base)]);
    let manifest_b = curl(&["-u", &admin(), "-H", accept, &format!("{}/v2/admin/app/manifests/1", b.base)]);
    assert_eq!(manifest_a, manifest_b);
    assert_eq!(sha256(manifest_a.as_bytes()), digest);
    let manifest: serde_json::Value = serde_json::from_str(&manifest_a).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        for node in [&a, &b] {
            let tmp = tempfile::NamedTempFile::new().unwrap();
            let path = tmp.path().to_str().unwrap();
            curl(&["-u", &admin(), "-o", path, &format!("{}/v2/admin/app/blobs/{d}", node.base)]);
            assert_eq!(sha256(&std::fs::read(path).unwrap()), d, "layer from node {}", node.port);
        }
    }

    // docker pulls from node B directly and runs the image.
    let docker_b = DockerClient::new(&b.host());
    assert!(docker_b.login("admin", ADMIN_PASSWORD).status.success());
    let from_b = images.add(format!("{}/admin/app:1", b.host()));
    docker_b.run(&["pull", &from_b]);
    assert_eq!(docker_b.run(&["run", "--rm", &from_b]), expected);

    // A token issued by node A works on node B.
    let token: serde_json::Value = serde_json::from_str(&curl(&[
        "-u",
        &admin(),
        &format!("{}/token?service=berth&scope=repository:admin/app:pull", a.base),
    ]))
    .unwrap();
    let bearer = format!("Authorization: Bearer {}", token["token"].as_str().unwrap());
    let (status, body) = curl_status(&["-H", &bearer, &format!("{}/v2/admin/app/tags/list", b.base)]);
    assert_eq!((status, body.as_str()), (200, r#"{"name":"admin/app","tags":["1"]}"#));

    // An upload session started on one node continues on the other.
    let (status, headers) =
        curl_status(&["-u", &admin(), "-X", "POST", "-D", "-", &format!("{}/v2/admin/app/blobs/uploads/", a.base)]);
    assert_eq!(status, 202);
    let location = headers.lines().find_map(|l| l.strip_prefix("location: ")).unwrap().trim().to_string();
    let part1 = vec![b'x'; 6 * 1024 * 1024];
    let part2 = vec![b'y'; 3 * 1024 * 1024 + 7];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1"), &part1).unwrap();
    std::fs::write(dir.path().join("2"), &part2).unwrap();
    let p1 = dir.path().join("1");
    let range1 = format!("Content-Range: 0-{}", part1.len() - 1);
    let (status, _) = curl_status(&[
        "-u",
        &admin(),
        "-X",
        "PATCH",
        "-H",
        &range1,
        "--data-binary",
        &format!("@{}", p1.display()),
        &format!("{}{location}", b.base),
    ]);
    assert_eq!(status, 202, "PATCH on node B");
    let p2 = dir.path().join("2");
    let range2 = format!("Content-Range: {}-{}", part1.len(), part1.len() + part2.len() - 1);
    let (status, _) = curl_status(&[
        "-u",
        &admin(),
        "-X",
        "PATCH",
        "-H",
        &range2,
        "--data-binary",
        &format!("@{}", p2.display()),
        &format!("{}{location}", a.base),
    ]);
    assert_eq!(status, 202, "PATCH on node A");
    let mut all = part1.clone();
    all.extend_from_slice(&part2);
    let blob = sha256(&all);
    let (status, _) = curl_status(&["-u", &admin(), "-X", "PUT", &format!("{}{location}?digest={blob}", b.base)]);
    assert_eq!(status, 201, "PUT on node B");
    let got = dir.path().join("got");
    curl(&["-u", &admin(), "-o", got.to_str().unwrap(), &format!("{}/v2/admin/app/blobs/{blob}", a.base)]);
    assert_eq!(sha256(&std::fs::read(&got).unwrap()), blob);

    // A delete on node A is seen on node B at once.
    let (status, _) =
        curl_status(&["-u", &admin(), "-X", "DELETE", &format!("{}/v2/admin/app/manifests/{digest}", a.base)]);
    assert_eq!(status, 202);
    let (status, _) = curl_status(&["-u", &admin(), "-I", &format!("{}/v2/admin/app/manifests/{digest}", b.base)]);
    assert_eq!(status, 404, "deleted manifest still served by node B");
    let (status, _) =
        curl_status(&["-u", &admin(), "-I", "-H", accept, &format!("{}/v2/admin/app/manifests/1", b.base)]);
    assert_eq!(status, 404, "deleted tag still served by node B");
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
fn chunked_push(base: &str, repo: &str, parts: &[Vec<u8>], dir: &std::path::Path) -> Vec<u16> {
    let (status, headers) = curl_status(&["-X", "POST", "-D", "-", &format!("{base}/v2/{repo}/blobs/uploads/")]);
    let mut statuses = vec![status];
    let Some(location) = headers.lines().find_map(|l| l.strip_prefix("location: ")) else { return statuses };
    let location = location.trim().to_string();
    let mut offset = 0;
    let mut all = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let path = dir.join(format!("part{i}"));
        std::fs::write(&path, part).unwrap();
        let range = format!("Content-Range: {}-{}", offset, offset + part.len() - 1);
        let (status, _) = curl_status(&[
            "-X",
            "PATCH",
            "-H",
            &range,
            "--data-binary",
            &format!("@{}", path.display()),
            &format!("{base}{location}"),
        ]);
        statuses.push(status);
        offset += part.len();
        all.extend_from_slice(part);
    }
    let (status, _) = curl_status(&["-X", "PUT", &format!("{base}{location}?digest={}", sha256(&all))]);
    statuses.push(status);
    statuses
}

#[test]
fn s3_outage_mid_push_leaves_no_partial_blob() {
    let mut s3 = S3Server::start(free_port());
    let berth = Berth::start_on(
        Backend::s3_postgres(Some(&s3.endpoint())),
        &[
            ("BERTH_AUTH__ENABLED", "false"),
            ("BERTH_STORAGE__S3__MAX_RETRIES", "2"),
            ("BERTH_STORAGE__S3__RETRY_TIMEOUT_SECS", "3"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let parts = vec![vec![1u8; 9 * 1024 * 1024], vec![2u8; 9 * 1024 * 1024], vec![3u8; 1024]];
    let mut all = Vec::new();
    parts.iter().for_each(|p| all.extend_from_slice(p));
    let digest = sha256(&all);

    // The first chunk is stored (one 8 MiB part sent, the rest in the tail); then S3 goes away.
    let (status, headers) = curl_status(&["-X", "POST", "-D", "-", &format!("{}/v2/fault/blobs/uploads/", berth.base)]);
    assert_eq!(status, 202);
    let location = headers.lines().find_map(|l| l.strip_prefix("location: ")).unwrap().trim().to_string();
    let p0 = dir.path().join("p0");
    std::fs::write(&p0, &parts[0]).unwrap();
    let (status, _) = curl_status(&[
        "-X",
        "PATCH",
        "--data-binary",
        &format!("@{}", p0.display()),
        &format!("{}{location}", berth.base),
    ]);
    assert_eq!(status, 202);
    s3.stop();
    let p1 = dir.path().join("p1");
    std::fs::write(&p1, &parts[1]).unwrap();
    let (status, body) = curl_status(&[
        "-X",
        "PATCH",
        "--data-binary",
        &format!("@{}", p1.display()),
        &format!("{}{location}", berth.base),
    ]);
    assert!(status >= 500, "PATCH during the outage answered {status}: {body}");
    // The node says it is not ready while its bucket is unreachable.
    let (status, body) = curl_status(&[&format!("{}/readyz", berth.base)]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""database":"ok""#), "{body}");
    // The failed chunk was not acknowledged: the upload stands at the first chunk.
    let (status, headers) = curl_status(&["-D", "-", &format!("{}{location}", berth.base)]);
    assert_eq!(status, 204);
    assert!(headers.contains(&format!("range: 0-{}", parts[0].len() - 1)), "{headers}");
    // Completing it needs S3 too: an error, and no blob, whole or partial, is visible.
    let first = sha256(&parts[0]);
    let (status, body) = curl_status(&["-X", "PUT", &format!("{}{location}?digest={first}", berth.base)]);
    assert!(status >= 500, "PUT during the outage answered {status}: {body}");
    for d in [&first, &digest] {
        let (status, _) = curl_status(&["-I", &format!("{}/v2/fault/blobs/{d}", berth.base)]);
        assert_eq!(status, 404);
    }

    // S3 is back (empty: moto keeps nothing): the same push, from the start, succeeds. (Berth
    // knows this port: a server that cannot have it yet is started again.)
    let back = (0..5).any(|_| s3.resume() || (std::thread::sleep(Duration::from_millis(500)), false).1);
    assert!(back, "moto could not take its port back");
    let (status, _) = curl_status(&[&format!("{}/readyz", berth.base)]);
    assert_eq!(status, 200);
    let statuses = chunked_push(&berth.base, "fault", &parts, dir.path());
    assert_eq!(statuses, vec![202, 202, 202, 202, 201]);
    let got = dir.path().join("got");
    curl(&["-o", got.to_str().unwrap(), &format!("{}/v2/fault/blobs/{digest}", berth.base)]);
    assert_eq!(sha256(&std::fs::read(&got).unwrap()), digest);
}

#[test]
fn blob_gets_redirect_to_presigned_urls_when_asked() {
    let berth = Berth::start_on(
        Backend::s3_postgres(None),
        &[("BERTH_AUTH__ENABLED", "false"), ("BERTH_STORAGE__S3__REDIRECT", "true")],
    );
    let dir = tempfile::tempdir().unwrap();
    let data = vec![7u8; 3 * 1024 * 1024];
    let statuses = chunked_push(&berth.base, "redirected", std::slice::from_ref(&data), dir.path());
    assert_eq!(statuses, vec![202, 202, 201]);
    let digest = sha256(&data);
    let url = format!("{}/v2/redirected/blobs/{digest}", berth.base);
    let (status, headers) = curl_status(&["-D", "-", "-o", "/dev/null", &url]);
    assert_eq!(status, 307);
    let location = headers.lines().find_map(|l| l.strip_prefix("location: ")).unwrap().trim().to_string();
    assert!(location.contains("X-Amz-Signature="), "not a presigned URL: {location}");
    // Following it downloads the blob straight from the bucket.
    let got = dir.path().join("got");
    curl(&["-L", "-o", got.to_str().unwrap(), &url]);
    assert_eq!(sha256(&std::fs::read(&got).unwrap()), digest);
    // Range requests and HEAD are still answered by Berth.
    let (status, _) = curl_status(&["-I", &url]);
    assert_eq!(status, 200);
    let (status, _) = curl_status(&["-o", "/dev/null", "-H", "Range: bytes=0-9", &url]);
    assert_eq!(status, 206);
    // A repository that does not link the blob gets no URL.
    let (status, _) = curl_status(&["-o", "/dev/null", &format!("{}/v2/other/blobs/{digest}", berth.base)]);
    assert_eq!(status, 404);
}
