//! End to end with the real docker engine: build images offline from busybox, push them to a
//! running `berth`, pull them back and run them.
//!
//! Needs a running docker daemon that treats 127.0.0.1 registries as insecure (the default for
//! loopback), `/bin/busybox` from Debian's `busybox-static`, `tar` and `curl`. A missing tool is a
//! failure, not a skip.

mod common;

use std::process::Command;

use common::docker::{
    Images, build_image, docker, docker_output, import_busybox, inspect, local_name, push, repo_digests, require_tools,
};
use common::{Berth, run, sha256};

/// Media types a Docker client accepts for an image manifest.
const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.manifest.v1+json";

/// HTTP status, headers (lowercased names) and body of a curl request.
fn curl(method: &str, url: &str, accept: Option<&str>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let headers_file = tmp.path().join("headers");
    let body_file = tmp.path().join("body");
    let mut cmd = Command::new("curl");
    if method == "HEAD" {
        cmd.arg("-I");
    } else {
        cmd.args(["-X", method]);
    }
    cmd.args(["-sS", "-D"]).arg(&headers_file).arg("-o").arg(&body_file).args(["-w", "%{http_code}"]);
    if let Some(accept) = accept {
        cmd.args(["-H", &format!("Accept: {accept}")]);
    }
    cmd.arg(url);
    let status: u16 = run(&mut cmd).trim().parse().expect("curl status code");
    let headers = std::fs::read_to_string(&headers_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(&body_file).unwrap_or_default();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The digest the registry serves for `name:reference`, checked against the manifest bytes.
fn served_digest(berth: &Berth, name: &str, reference: &str) -> String {
    let url = format!("{}/v2/{name}/manifests/{reference}", berth.base);
    let (status, headers, _) = curl("HEAD", &url, Some(MANIFEST_ACCEPT));
    assert_eq!(status, 200, "HEAD {url}: {headers:?}");
    let head_digest = header(&headers, "docker-content-digest")
        .unwrap_or_else(|| panic!("HEAD {url} has no Docker-Content-Digest: {headers:?}"))
        .to_string();
    let (status, headers, body) = curl("GET", &url, Some(MANIFEST_ACCEPT));
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "docker-content-digest"), Some(head_digest.as_str()));
    assert_eq!(sha256(&body), head_digest, "GET {url} body does not hash to its digest");
    head_digest
}

/// Number of layers in the manifest the registry serves for `name:reference`.
fn served_layers(berth: &Berth, name: &str, reference: &str) -> usize {
    let url = format!("{}/v2/{name}/manifests/{reference}", berth.base);
    let (status, _, body) = curl("GET", &url, Some(MANIFEST_ACCEPT));
    assert_eq!(status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    manifest["layers"].as_array().expect("layers").len()
}

#[test]
fn push_pull_run_and_digests_match() {
    require_tools();
    let berth = Berth::start();
    let mut images = Images::new();
    let base = images.add(local_name(&berth, "base"));
    let built = images.add(local_name(&berth, "app"));
    let remote = images.add(format!("{}/team/app:1", berth.host()));

    import_busybox(&base);
    let expected = build_image(&base, &built, &format!("app {}", berth.port));
    assert_eq!(docker(&["run", "--rm", &built]), expected, "built image runs");
    let image_id = inspect(&built, "{{.Id}}");

    docker(&["tag", &built, &remote]);
    let (out, pushed) = push(&remote);
    assert!(out.contains("Pushed"), "first push uploads layers:\n{out}");
    assert_eq!(served_digest(&berth, "team/app", "1"), pushed);
    assert_eq!(served_digest(&berth, "team/app", &pushed), pushed);
    assert_eq!(served_layers(&berth, "team/app", "1"), 3, "base + two RUN layers");

    // Remove every local name so that the pull has to download all layers.
    images.remove_all();
    let gone = docker_output(&["image", "inspect", &image_id]);
    assert!(!gone.status.success(), "image {image_id} still present locally");

    let out = docker(&["pull", &remote]);
    assert!(out.contains(&pushed), "pull reports the pushed digest:\n{out}");
    assert_eq!(inspect(&remote, "{{.Id}}"), image_id, "same config after pull");
    let repo_digest = format!("{}/team/app@{pushed}", berth.host());
    assert_eq!(repo_digests(&remote), vec![repo_digest.clone()]);
    assert_eq!(docker(&["run", "--rm", &remote]), expected);

    // Pull by digest works as well.
    images.add(repo_digest.clone());
    docker(&["pull", &repo_digest]);
    assert_eq!(docker(&["run", "--rm", &repo_digest]), expected);
}

#[test]
fn second_repo_reuses_base_layer() {
    require_tools();
    let berth = Berth::start();
    let mut images = Images::new();
    let base = images.add(local_name(&berth, "base"));
    let app = images.add(local_name(&berth, "app"));
    let other = images.add(local_name(&berth, "other"));
    let remote_app = images.add(format!("{}/team/app:1", berth.host()));
    let remote_other = images.add(format!("{}/team/other:1", berth.host()));

    import_busybox(&base);
    build_image(&base, &app, &format!("app {}", berth.port));
    let expected_other = build_image(&base, &other, &format!("other {}", berth.port));
    let other_id = inspect(&other, "{{.Id}}");

    docker(&["tag", &app, &remote_app]);
    docker(&["tag", &other, &remote_other]);
    push(&remote_app);
    let (out, pushed) = push(&remote_other);
    assert!(
        out.contains("Mounted from team/app") || out.contains("Layer already exists"),
        "the base layer is mounted or skipped on the second push:\n{out}"
    );
    assert!(out.contains("Pushed"), "the new layers are uploaded:\n{out}");
    assert_eq!(served_digest(&berth, "team/other", "1"), pushed);

    images.remove_all();
    docker(&["pull", &remote_other]);
    assert_eq!(inspect(&remote_other, "{{.Id}}"), other_id);
    assert_eq!(docker(&["run", "--rm", &remote_other]), expected_other);
}

#[test]
fn pushed_image_survives_restart() {
    require_tools();
    let mut berth = Berth::start();
    let mut images = Images::new();
    let base = images.add(local_name(&berth, "base"));
    let built = images.add(local_name(&berth, "app"));
    let remote = images.add(format!("{}/team/app:1", berth.host()));

    import_busybox(&base);
    let expected = build_image(&base, &built, &format!("restart {}", berth.port));
    docker(&["tag", &built, &remote]);
    let (_, pushed) = push(&remote);

    berth.restart();
    assert_eq!(berth.host(), remote.split('/').next().unwrap(), "same port after restart");
    assert_eq!(served_digest(&berth, "team/app", "1"), pushed);

    images.remove_all();
    let out = docker(&["pull", &remote]);
    assert!(out.contains(&pushed), "pull after restart:\n{out}");
    assert_eq!(docker(&["run", "--rm", &remote]), expected);
}

#[test]
fn deleted_manifest_cannot_be_pulled() {
    require_tools();
    let berth = Berth::start();
    let mut images = Images::new();
    let base = images.add(local_name(&berth, "base"));
    let built = images.add(local_name(&berth, "app"));
    let remote = images.add(format!("{}/team/app:1", berth.host()));

    import_busybox(&base);
    build_image(&base, &built, &format!("delete {}", berth.port));
    docker(&["tag", &built, &remote]);
    let (_, pushed) = push(&remote);

    let url = format!("{}/v2/team/app/manifests/{pushed}", berth.base);
    let (status, _, body) = curl("DELETE", &url, None);
    assert_eq!(status, 202, "DELETE {url}: {}", String::from_utf8_lossy(&body));
    for reference in [pushed.as_str(), "1"] {
        let url = format!("{}/v2/team/app/manifests/{reference}", berth.base);
        let (status, _, _) = curl("HEAD", &url, Some(MANIFEST_ACCEPT));
        assert_eq!(status, 404, "HEAD {url} after delete");
    }

    images.remove_all();
    let out = docker_output(&["pull", &remote]);
    assert!(!out.status.success(), "pull of a deleted manifest succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("not found") || stderr.contains("manifest unknown"),
        "pull fails because the manifest is gone: {stderr}"
    );
}
