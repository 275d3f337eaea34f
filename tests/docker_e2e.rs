//! End to end with the real docker engine: build images offline from busybox, push them to a
//! running `berth`, pull them back and run them.
//!
//! Needs a running docker daemon that treats 127.0.0.1 registries as insecure (the default for
//! loopback), `/bin/busybox` from Debian's `busybox-static`, `tar` and `curl`. A missing tool is a
//! failure, not a skip.

mod common;

use common::Berth;
use common::docker::{
    Images, build_image, docker, docker_output, inspect, local_app, local_name, push, repo_digests, require_tools,
};
use common::images::MANIFEST_ACCEPT;
use common::registry::Reg;
use reqwest::{Method, StatusCode};

/// The digest the registry serves for `name:reference` ([`Reg::served`]: HEAD and GET agree,
/// the bytes hash to it).
async fn served_digest(berth: &Berth, name: &str, reference: &str) -> String {
    Reg::new(berth).served(name, reference).await.digest
}

#[tokio::test]
async fn push_pull_run_and_digests_match() {
    require_tools();
    let berth = Berth::start();
    let mut images = Images::new();
    let (built, expected) = local_app(&berth, &mut images, "app");
    let remote = images.add(format!("{}/team/app:1", berth.host()));
    assert_eq!(docker(&["run", "--rm", &built]), expected, "built image runs");
    let image_id = inspect(&built, "{{.Id}}");

    docker(&["tag", &built, &remote]);
    let (out, pushed) = push(&remote);
    assert!(out.contains("Pushed"), "first push uploads layers:\n{out}");
    let served = Reg::new(&berth).served("team/app", "1").await;
    assert_eq!(served.digest, pushed);
    assert_eq!(served_digest(&berth, "team/app", &pushed).await, pushed);
    assert_eq!(served.layers().len(), 3, "base + two RUN layers");

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

#[tokio::test]
async fn second_repo_reuses_base_layer() {
    require_tools();
    let berth = Berth::start();
    let mut images = Images::new();
    let (app, _) = local_app(&berth, &mut images, "app");
    let other = images.add(local_name(&berth, "other"));
    let remote_app = images.add(format!("{}/team/app:1", berth.host()));
    let remote_other = images.add(format!("{}/team/other:1", berth.host()));
    let expected_other = build_image(&local_name(&berth, "base"), &other, &format!("other {}", berth.port));
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
    assert_eq!(served_digest(&berth, "team/other", "1").await, pushed);

    images.remove_all();
    docker(&["pull", &remote_other]);
    assert_eq!(inspect(&remote_other, "{{.Id}}"), other_id);
    assert_eq!(docker(&["run", "--rm", &remote_other]), expected_other);
}

#[tokio::test]
async fn pushed_image_survives_restart() {
    require_tools();
    let mut berth = Berth::start();
    let mut images = Images::new();
    let (built, expected) = local_app(&berth, &mut images, "restart");
    let remote = images.add(format!("{}/team/app:1", berth.host()));
    docker(&["tag", &built, &remote]);
    let (_, pushed) = push(&remote);

    berth.restart();
    assert_eq!(berth.host(), remote.split('/').next().unwrap(), "same port after restart");
    assert_eq!(served_digest(&berth, "team/app", "1").await, pushed);

    images.remove_all();
    let out = docker(&["pull", &remote]);
    assert!(out.contains(&pushed), "pull after restart:\n{out}");
    assert_eq!(docker(&["run", "--rm", &remote]), expected);
}

#[tokio::test]
async fn deleted_manifest_cannot_be_pulled() {
    require_tools();
    let berth = Berth::start();
    let mut images = Images::new();
    let (built, _) = local_app(&berth, &mut images, "delete");
    let remote = images.add(format!("{}/team/app:1", berth.host()));
    docker(&["tag", &built, &remote]);
    let (_, pushed) = push(&remote);

    let reg = Reg::new(&berth);
    let path = format!("/v2/team/app/manifests/{pushed}");
    let r = reg.send(Method::DELETE, &path).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "DELETE {path}: {}", r.text().await.unwrap());
    for reference in [pushed.as_str(), "1"] {
        let path = format!("/v2/team/app/manifests/{reference}");
        let r = reg.req(Method::HEAD, &path).header("accept", MANIFEST_ACCEPT).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {path} after delete");
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
