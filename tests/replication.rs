//! Replication to other registries, against real ones on loopback: Debian's `docker-registry`
//! (Distribution 2.8, the reference) and a second Berth with token authentication. A push into
//! Berth that a rule matches reaches the target within seconds with the same digests — images,
//! a multi-platform index with its children, a referrer artifact — while the tag and repository
//! filters keep out what they should; a delete follows when the rule says so; a target that
//! is down gets the job retried until it is back; a job run again sends nothing the target has.
//!
//! Needs Debian's `docker-registry`, and for the docker test what tests/docker_e2e.rs needs.

mod common;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use common::docker::{DockerClient, Images, docker, local_app, pushed_digest, require_tools};
use common::images::{MANIFEST_ACCEPT, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, tiny};
use common::reference::DockerRegistry;
use common::registry::Reg;
use common::{ADMIN_PASSWORD, Berth, output_text, sha256};

/// A Berth whose retries come quickly (the faults test waits for them).
fn berth() -> Berth {
    Berth::start_with_env(&[
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_REPLICATION__BACKOFF_INITIAL_MS", "300"),
        ("BERTH_REPLICATION__BACKOFF_MAX_SECS", "1"),
        ("BERTH_REPLICATION__POLL_MS", "200"),
    ])
}

/// The digest and bytes of `repo:reference` at a registry, if there.
async fn manifest_at(reg: &Reg, repo: &str, reference: &str) -> Option<(String, Vec<u8>)> {
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::OK {
        return None;
    }
    let digest = r.headers()["docker-content-digest"].to_str().unwrap().to_string();
    Some((digest, r.bytes().await.unwrap().to_vec()))
}

/// Waits up to 20 s for `check` to hold.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn jobs(reg: &Reg, rule: &str) -> Vec<Value> {
    let out = reg.api_ok(Method::GET, &format!("/api/v1/replication/rules/{rule}/jobs"), None).await;
    out["jobs"].as_array().unwrap().clone()
}

/// Pushes two images by digest and an index over them as `repo:tag`; returns the index's
/// digest and its children's.
async fn push_index(reg: &Reg, repo: &str, tag: &str) -> (String, Vec<String>) {
    let mut entries = Vec::new();
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let image = tiny(&format!("{repo}-{arch}"));
        let digest = reg.push_image(repo, &image.digest(), &image).await;
        let size = image.manifest().len();
        entries.push(json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                            "platform": {"architecture": arch, "os": "linux"}}));
        children.push(digest);
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).to_string();
    let r = reg.put_manifest(repo, tag, OCI_INDEX, index.as_bytes()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (sha256(index.as_bytes()), children)
}

/// Pushes an SBOM-like artifact whose subject is `subject` (by digest); returns its digest.
async fn push_referrer(reg: &Reg, repo: &str, subject: &str, subject_size: usize) -> String {
    let config = reg.blob(repo, b"{}").await;
    let sbom = reg.blob(repo, format!("sbom of {subject}").as_bytes()).await;
    let artifact = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom+json",
        "config": {"mediaType": OCI_EMPTY, "digest": config, "size": 2},
        "layers": [{"mediaType": "text/plain", "digest": sbom, "size": format!("sbom of {subject}").len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
    })
    .to_string()
    .into_bytes();
    let digest = sha256(&artifact);
    let r = reg.put_manifest(repo, &digest, OCI_MANIFEST, &artifact).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    digest
}

#[tokio::test]
async fn pushes_reach_the_reference_registry_with_their_digests() {
    let reference = DockerRegistry::start();
    let berth = berth();
    let reg = Reg::admin(&berth);
    let target = Reg::foreign(&reference.base());

    let body = json!({"name": "dr-site", "url": reference.base()});
    assert_eq!(reg.api(Method::POST, "/api/v1/replication/targets", Some(body)).await.0, StatusCode::CREATED);
    let tested = reg.api_ok(Method::POST, "/api/v1/replication/targets/dr-site/test", None).await;
    assert_eq!(tested["ok"], true, "{tested}");
    let rule = json!({"name": "to-dr", "target": "dr-site", "repositories": "team/*", "tags": "v*",
                      "destination_prefix": "copy", "replicate_deletes": true});
    assert_eq!(reg.api(Method::POST, "/api/v1/replication/rules", Some(rule)).await.0, StatusCode::CREATED);

    let image = tiny("replicated");
    let digest = reg.push_image("team/app", "v1", &image).await;
    let referrer = push_referrer(&reg, "team/app", &digest, image.manifest().len()).await;
    let (index, children) = push_index(&reg, "team/app", "v1-multi").await;
    reg.push_image("team/app", "dev", &tiny("not replicated: tag")).await;
    reg.push_image("other/app", "v1", &tiny("not replicated: repository")).await;

    eventually("team/app:v1 at the target", || async {
        manifest_at(&target, "copy/team/app", "v1").await.is_some_and(|(d, _)| d == digest)
    })
    .await;
    let (_, bytes) = manifest_at(&target, "copy/team/app", "v1").await.unwrap();
    assert_eq!(bytes, image.manifest(), "byte for byte");
    eventually("the index and its children at the target", || async {
        manifest_at(&target, "copy/team/app", "v1-multi").await.is_some_and(|(d, _)| d == index)
    })
    .await;
    for child in &children {
        assert!(manifest_at(&target, "copy/team/app", child).await.is_some(), "child {child}");
    }
    eventually("the referrer at the target", || async {
        manifest_at(&target, "copy/team/app", &referrer).await.is_some()
    })
    .await;
    for layer in 0..image.layers.len() {
        let r = target.send(Method::HEAD, &format!("/v2/copy/team/app/blobs/{}", image.layer_digest(layer))).await;
        assert_eq!(r.status(), StatusCode::OK, "the layer was copied");
    }
    assert!(manifest_at(&target, "copy/team/app", "dev").await.is_none(), "the tag filter keeps dev out");
    assert!(manifest_at(&target, "copy/other/app", "v1").await.is_none(), "other/* is not replicated");

    // Run on demand: every matching tag is checked, nothing the target has is sent again.
    let ran = reg.api_ok(Method::POST, "/api/v1/replication/rules/to-dr/run", None).await;
    assert_eq!(ran["queued"], 2, "{ran}");
    eventually("the run's jobs are done", || async {
        let all = jobs(&reg, "to-dr").await;
        // Pushed: v1, the referrer, two children by digest, v1-multi; run: v1 and v1-multi.
        all.iter().filter(|j| j["status"] == "done").count() >= 7 && all.iter().all(|j| j["status"] != "pending")
    })
    .await;
    let all = jobs(&reg, "to-dr").await;
    let rerun = all.iter().find(|j| j["reference"] == "v1").unwrap();
    assert_eq!(rerun["bytes"], 0, "no blob sent twice: {rerun}");
    assert!(rerun["skipped"].as_i64().unwrap() >= 1, "{rerun}");

    // A delete follows the rule.
    assert_eq!(reg.send(Method::DELETE, "/v2/team/app/manifests/v1").await.status(), StatusCode::ACCEPTED);
    eventually("v1 deleted at the target", || async { manifest_at(&target, "copy/team/app", "v1").await.is_none() })
        .await;
    assert!(manifest_at(&target, "copy/team/app", "v1-multi").await.is_some(), "the other tag stays");
}

#[tokio::test]
async fn a_target_that_is_down_gets_the_job_when_it_is_back() {
    let mut reference = DockerRegistry::start();
    let berth = berth();
    let reg = Reg::admin(&berth);
    let target = Reg::foreign(&reference.base());
    let body = json!({"name": "flaky", "url": reference.base()});
    assert_eq!(reg.api(Method::POST, "/api/v1/replication/targets", Some(body)).await.0, StatusCode::CREATED);
    let rule = json!({"name": "to-flaky", "target": "flaky"});
    assert_eq!(reg.api(Method::POST, "/api/v1/replication/rules", Some(rule)).await.0, StatusCode::CREATED);

    reference.stop();
    let tested = reg.api_ok(Method::POST, "/api/v1/replication/targets/flaky/test", None).await;
    assert_eq!(tested["ok"], false, "{tested}");
    let image = tiny("while the target is down");
    let digest = reg.push_image("lab/app", "1", &image).await;
    eventually("the job failed twice", || async {
        jobs(&reg, "to-flaky").await.first().is_some_and(|j| j["attempts"].as_i64().unwrap() >= 2)
    })
    .await;
    let failing = jobs(&reg, "to-flaky").await[0].clone();
    assert_eq!(failing["status"], "pending", "still to be retried: {failing}");
    assert!(failing["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{failing}");

    reference.restart();
    eventually("the copy once the target is back", || async {
        manifest_at(&target, "lab/app", "1").await.is_some_and(|(d, _)| d == digest)
    })
    .await;
    eventually("the job is done", || async { jobs(&reg, "to-flaky").await[0]["status"] == "done" }).await;
}

#[test]
fn docker_push_reaches_a_second_berth_with_token_auth() {
    require_tools();
    let source = berth();
    let target = Berth::start_auth();
    common::block_on(async {
        let reg = Reg::admin(&source);
        let body = json!({"name": "site-b", "url": target.base, "username": "admin", "secret": ADMIN_PASSWORD});
        let (status, created) = reg.api(Method::POST, "/api/v1/replication/targets", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(created.get("secret").is_none() && created["has_secret"] == true, "{created}");
        let listed = reg.api_ok(Method::GET, "/api/v1/replication/targets", None).await;
        assert!(!listed.to_string().contains(ADMIN_PASSWORD), "the secret is never returned: {listed}");
        let rule = json!({"name": "to-b", "target": "site-b", "repositories": "*"});
        assert_eq!(reg.api(Method::POST, "/api/v1/replication/rules", Some(rule)).await.0, StatusCode::CREATED);
    });
    let db = std::fs::read(source.data_path().join("berth.db")).unwrap();
    assert!(
        !db.windows(ADMIN_PASSWORD.len()).any(|w| w == ADMIN_PASSWORD.as_bytes()),
        "the target's password is sealed in the database"
    );

    let host = source.host();
    let mut images = Images::new();
    let (app, _) = local_app(&source, &mut images, "replication");
    let tagged = images.add(format!("{host}/team/app:1"));
    docker(&["tag", &app, &tagged]);
    let client = DockerClient::new(&host);
    let out = client.login("admin", ADMIN_PASSWORD);
    assert!(out.status.success(), "{}", output_text(&out));
    let digest = pushed_digest(&client.run(&["push", &tagged]));
    common::block_on(async {
        let at_b = Reg::admin(&target);
        eventually("team/app:1 at the second Berth", || async {
            manifest_at(&at_b, "team/app", "1").await.is_some_and(|(d, _)| d == digest)
        })
        .await;
    });
}

#[tokio::test]
async fn the_command_line_manages_targets_rules_and_runs() {
    let reference = DockerRegistry::start();
    let berth = berth();
    let reg = Reg::admin(&berth);
    let target = Reg::foreign(&reference.base());
    reg.push_image("team/tool", "2.0", &tiny("before the rule")).await;

    let out = berth.cli_stdin(
        &["replication", "target", "add", "ref", &reference.base(), "--username", "robot", "--secret-stdin"],
        "not-needed-by-this-registry\n",
    );
    assert!(out.contains("target ref added"), "{out}");
    let listed = berth.cli(&["replication", "target", "list"]);
    assert!(listed.contains("sealed") && !listed.contains("not-needed-by-this-registry"), "{listed}");
    assert!(berth.cli(&["replication", "target", "test", "ref"]).contains("logged in"));
    let out = berth.cli(&["replication", "rule", "add", "tools", "--target", "ref", "--repositories", "team/*"]);
    assert!(out.contains("rule tools added"), "{out}");
    let out = berth.cli(&["replication", "rule", "run", "tools"]);
    assert!(out.contains("1 jobs queued"), "{out}");
    eventually("the serving node ran the queued job", || async {
        manifest_at(&target, "team/tool", "2.0").await.is_some()
    })
    .await;
    let jobs = berth.cli(&["replication", "rule", "jobs", "tools"]);
    assert!(jobs.contains("team/tool:2.0") && jobs.contains("done"), "{jobs}");
    berth.cli(&["replication", "rule", "rm", "tools"]);
    berth.cli(&["replication", "target", "rm", "ref"]);
    assert!(!berth.cli(&["replication", "target", "list"]).contains("ref "), "deleted");
}
