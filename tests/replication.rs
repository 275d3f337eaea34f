//! Replication to and from other registries, against real ones on loopback: Debian's
//! `docker-registry` (Distribution 2.8, the reference) and a second Berth with token
//! authentication. A push into Berth that a rule matches reaches the target within seconds
//! with the same digests — images, a multi-platform index with its children, a referrer
//! artifact — while the tag and repository filters keep out what they should; a delete
//! follows when the rule says so; a target that is down gets the job retried until it is
//! back; a job run again sends nothing the target has. A pull rule on a schedule brings the
//! chosen tags of the reference registry here (by regular expression, or the latest N) and
//! follows a tag moved there. Faults, through a relay in front of the reference registry: the
//! target stopped in the middle of a 200 MiB layer (the job completes once it is back, without
//! sending the finished layers again), and a source whose bytes are corrupted on the way (the
//! blob is refused, never stored, the job reported failed with why). The pages of the web UI
//! drive the same service. Two nodes on PostgreSQL running each job once: tests/cluster.rs.
//!
//! Needs Debian's `docker-registry`, and for the docker test what tests/docker_e2e.rs needs.

mod common;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use common::docker::{DockerClient, Images, docker, local_app, pushed_digest, require_tools};
use common::html::Ui;
use common::images::{Image, MANIFEST_ACCEPT, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, tiny};
use common::proxy::Proxy;
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
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(20, what, check).await
}

/// Waits up to `secs` for `check` to hold.
async fn within<F, Fut>(secs: u64, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(common::eventually(secs, check).await, "not within {secs} s: {what}");
}

/// An image whose config says it was built at `created` (RFC 3339).
fn built_at(seed: &str, created: &str) -> Image {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","created":"{created}","config":{{}},"rootfs":{{"type":"layers","diff_ids":[]}},"seed":"{seed}"}}"#
    );
    Image::new(config, vec![format!("layer of {seed}").into_bytes()])
}

async fn add_target(reg: &Reg, name: &str, url: &str) {
    let body = json!({"name": name, "url": url});
    let (status, out) = reg.api(Method::POST, "/api/v1/replication/targets", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
}

async fn add_rule(reg: &Reg, rule: Value) {
    let (status, out) = reg.api(Method::POST, "/api/v1/replication/rules", Some(rule)).await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
}

async fn executions(reg: &Reg, rule: &str) -> Vec<Value> {
    let out = reg.api_ok(Method::GET, &format!("/api/v1/replication/rules/{rule}/executions"), None).await;
    out["executions"].as_array().unwrap().clone()
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

    // The same image in another repository: the target mounts its blobs, none is sent again.
    reg.push_image("team/app2", "v1", &image).await;
    eventually("team/app2:v1 at the target", || async {
        manifest_at(&target, "copy/team/app2", "v1").await.is_some_and(|(d, _)| d == digest)
    })
    .await;
    let log = reference.access_log();
    let mounted = log
        .lines()
        .filter(|l| {
            l.contains("\"POST /v2/copy/team/app2/blobs/uploads/?") && l.contains("mount=") && l.contains("\" 201 ")
        })
        .count();
    assert_eq!(mounted, 2, "the config and the layer were mounted:\n{log}");
    assert!(!log.contains("\"PUT /v2/copy/team/app2/blobs/"), "no blob sent again:\n{log}");
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
    // The copy's last step is the target's manifest PUT; the job is recorded done after it.
    eventually("the job recorded done", || async { jobs(&reg, "tools").await.iter().any(|j| j["status"] == "done") })
        .await;
    let jobs = berth.cli(&["replication", "rule", "jobs", "tools"]);
    assert!(jobs.contains("team/tool:2.0") && jobs.contains("done"), "{jobs}");
    berth.cli(&["replication", "rule", "rm", "tools"]);
    berth.cli(&["replication", "target", "rm", "ref"]);
    assert!(!berth.cli(&["replication", "target", "list"]).contains("ref "), "deleted");
}

#[tokio::test]
async fn a_pull_rule_on_a_schedule_brings_the_chosen_tags_and_follows_moves() {
    let reference = DockerRegistry::start();
    let upstream = Reg::foreign(&reference.base());
    let berth = berth();
    let reg = Reg::admin(&berth);

    let v1 = upstream.push_image("lib/app", "v1", &tiny("pull v1")).await;
    let v2 = upstream.push_image("lib/app", "v2", &tiny("pull v2")).await;
    upstream.push_image("lib/app", "v2-rc1", &tiny("pull rc: not chosen")).await;
    upstream.push_image("lib/app", "dev", &tiny("pull dev: not chosen")).await;
    let (index, children) = push_index(&upstream, "lib/tool", "v3").await;
    upstream.push_image("other/app", "v1", &tiny("pull other: not chosen")).await;

    add_target(&reg, "upstream", &reference.base()).await;
    // Bad rules are refused with a reason.
    for bad in [
        json!({"name": "bad", "target": "upstream", "direction": "sideways"}),
        json!({"name": "bad", "target": "upstream", "tags_regex": "v[0-9"}),
        json!({"name": "bad", "target": "upstream", "schedule": "every so often"}),
    ] {
        let (status, out) = reg.api(Method::POST, "/api/v1/replication/rules", Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {out}");
    }
    add_rule(
        &reg,
        json!({"name": "base-images", "target": "upstream", "direction": "pull", "repositories": "lib/*",
               "tags_regex": "v[0-9]+", "destination_prefix": "mirror", "schedule": "2s"}),
    )
    .await;
    let rules = reg.api_ok(Method::GET, "/api/v1/replication/rules", None).await;
    let rule = &rules["rules"][0];
    assert_eq!((rule["direction"].as_str(), rule["schedule"].as_str()), (Some("pull"), Some("2s")), "{rule}");

    eventually("v1, v2 and the index here", || async {
        manifest_at(&reg, "mirror/lib/app", "v1").await.is_some_and(|(d, _)| d == v1)
            && manifest_at(&reg, "mirror/lib/app", "v2").await.is_some_and(|(d, _)| d == v2)
            && manifest_at(&reg, "mirror/lib/tool", "v3").await.is_some_and(|(d, _)| d == index)
    })
    .await;
    for child in &children {
        assert!(manifest_at(&reg, "mirror/lib/tool", child).await.is_some(), "child {child}");
    }
    let image = tiny("pull v1");
    assert_eq!(reg.get_blob("mirror/lib/app", &image.layer_digest(0)).await, image.layers[0], "the layer pulls");
    for (repo, tag) in [("mirror/lib/app", "v2-rc1"), ("mirror/lib/app", "dev"), ("mirror/other/app", "v1")] {
        assert!(manifest_at(&reg, repo, tag).await.is_none(), "{repo}:{tag} is not chosen");
    }
    // A run is done once its jobs are recorded done, just after their last manifest lands.
    eventually("a scheduled run done", || async {
        executions(&reg, "base-images").await.iter().any(|e| e["trigger"] == "schedule" && e["status"] == "done")
    })
    .await;

    // The tag moves upstream; the next scheduled run moves it here.
    let moved = upstream.push_image("lib/app", "v1", &tiny("pull v1, rebuilt")).await;
    eventually("v1 moved here", || async {
        manifest_at(&reg, "mirror/lib/app", "v1").await.is_some_and(|(d, _)| d == moved)
    })
    .await;

    // Only the latest 2 by build time, on demand.
    upstream.push_image("lib/dated", "old", &built_at("old", "2024-01-01T00:00:00Z")).await;
    let newer = upstream.push_image("lib/dated", "newer", &built_at("newer", "2025-06-01T00:00:00Z")).await;
    let newest = upstream.push_image("lib/dated", "newest", &built_at("newest", "2026-01-01T00:00:00Z")).await;
    add_rule(
        &reg,
        json!({"name": "latest-two", "target": "upstream", "direction": "pull", "repositories": "lib/dated",
               "latest": 2, "destination_prefix": "latest"}),
    )
    .await;
    let ran = reg.api_ok(Method::POST, "/api/v1/replication/rules/latest-two/run", None).await;
    assert_eq!(ran["queued"], 2, "{ran}");
    eventually("the two newest here", || async {
        manifest_at(&reg, "latest/lib/dated", "newest").await.is_some_and(|(d, _)| d == newest)
            && manifest_at(&reg, "latest/lib/dated", "newer").await.is_some_and(|(d, _)| d == newer)
    })
    .await;
    assert!(manifest_at(&reg, "latest/lib/dated", "old").await.is_none(), "the oldest stays out");
    let execution = ran["execution"].as_i64().unwrap();
    let of_run = reg
        .api_ok(Method::GET, &format!("/api/v1/replication/rules/latest-two/jobs?execution={execution}"), None)
        .await;
    assert_eq!(of_run["jobs"].as_array().unwrap().len(), 2, "{of_run}");

    let metrics = reg.send(Method::GET, "/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("berth_replication_jobs_total{direction=\"pull\",result=\"done\"}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_corrupt_blob_from_the_source_is_refused_and_reported() {
    let reference = DockerRegistry::start();
    let upstream = Reg::foreign(&reference.base());
    let relay = Proxy::start(reference.port);
    let berth = berth();
    let reg = Reg::admin(&berth);

    let marker = b"FLIP-THIS-BYTE-0123456789";
    let mut layer = b"a layer whose bytes the network will change: ".to_vec();
    layer.extend_from_slice(marker);
    let image = Image::new(tiny("corrupted").config, vec![layer]);
    upstream.push_image("lib/bad", "1", &image).await;

    add_target(&reg, "flaky-source", &relay.base()).await;
    add_rule(
        &reg,
        json!({"name": "from-flaky", "target": "flaky-source", "direction": "pull", "repositories": "lib/bad"}),
    )
    .await;
    relay.corrupt(marker);
    let ran = reg.api_ok(Method::POST, "/api/v1/replication/rules/from-flaky/run", None).await;
    assert_eq!(ran["queued"], 1, "{ran}");
    eventually("the job failed", || async { jobs(&reg, "from-flaky").await[0]["status"] == "failed" }).await;
    assert!(relay.flipped() >= 1, "the relay changed a byte");
    let job = jobs(&reg, "from-flaky").await[0].clone();
    let why = job["last_error"].as_str().unwrap_or_default();
    assert!(why.contains(&image.layer_digest(0)) && why.contains("did not match"), "{job}");
    assert_eq!(job["attempts"], 1, "the same bytes would come again: not retried: {job}");
    let runs = executions(&reg, "from-flaky").await;
    assert_eq!(runs[0]["status"], "failed", "{runs:?}");

    assert!(manifest_at(&reg, "lib/bad", "1").await.is_none(), "the tag is not here");
    let head = reg.send(Method::HEAD, &format!("/v2/lib/bad/blobs/{}", image.layer_digest(0))).await;
    assert_eq!(head.status(), StatusCode::NOT_FOUND, "the corrupt blob is not served");
    let hex = image.layer_digest(0).trim_start_matches("sha256:").to_string();
    let stored: Vec<_> = walk(berth.data_path()).into_iter().filter(|p| p.to_string_lossy().contains(&hex)).collect();
    assert!(stored.is_empty(), "nothing stored under the blob's digest: {stored:?}");

    // Without the corruption the same rule copies it.
    relay.corrupt(b"no such bytes anywhere in this test");
    reg.api_ok(Method::POST, "/api/v1/replication/rules/from-flaky/run", None).await;
    eventually("the image once the bytes are right", || async {
        manifest_at(&reg, "lib/bad", "1").await.is_some_and(|(d, _)| d == image.digest())
    })
    .await;
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_target_stopped_mid_layer_gets_the_rest_without_the_finished_layers_again() {
    let mut reference = DockerRegistry::start();
    let relay = Proxy::start(reference.port);
    let berth = berth();
    let reg = Reg::admin(&berth);

    // Three small layers, then one of 200 MiB (copied in manifest order).
    let mut big = vec![0u8; 200 << 20];
    for (i, chunk) in big.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    }
    let small: Vec<Vec<u8>> = (0..3).map(|i| format!("small layer {i} of the big image").into_bytes()).collect();
    let mut layers = small.clone();
    layers.push(big);
    let image = Image::new(tiny("big image").config, layers);
    // 200 MiB at 40 MB/s: about five seconds on the wire.
    relay.throttle_uploads(40_000_000);
    add_target(&reg, "far", &relay.base()).await;
    add_rule(&reg, json!({"name": "to-far", "target": "far", "repositories": "big/*"})).await;
    let digest = reg.push_image("big/app", "1", &image).await;

    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let puts = |log: &str, d: &str| log.lines().filter(|l| l.contains("\"PUT ") && l.contains(&hex(d))).count();
    let finished: Vec<String> =
        std::iter::once(image.config_ref().0).chain((0..3).map(|i| image.layer_digest(i))).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !finished.iter().all(|d| puts(&reference.access_log(), d) == 1) {
        assert!(
            Instant::now() < deadline,
            "the config and the small layers not at the target in 30 s: {}\n{:?}",
            reference.access_log(),
            jobs(&reg, "to-far").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(puts(&reference.access_log(), &image.layer_digest(3)), 0, "the big layer is still on its way");
    reference.stop();
    eventually("the attempt failed", || async {
        jobs(&reg, "to-far").await[0]["last_error"].as_str().is_some_and(|e| !e.is_empty())
    })
    .await;
    relay.throttle_uploads(0);
    reference.restart();

    let target = Reg::foreign(&reference.base());
    within(60, "the image at the target", || async {
        manifest_at(&target, "big/app", "1").await.is_some_and(|(d, _)| d == digest)
    })
    .await;
    eventually("the job is done", || async { jobs(&reg, "to-far").await[0]["status"] == "done" }).await;
    let done = jobs(&reg, "to-far").await[0].clone();
    assert!(done["attempts"].as_i64().unwrap() >= 2, "{done}");
    assert!(done["skipped"].as_i64().unwrap() >= 4, "the finished blobs were found there: {done}");
    let log = reference.access_log();
    for d in &finished {
        assert_eq!(puts(&log, d), 1, "{d} was sent once");
    }
    assert_eq!(puts(&log, &image.layer_digest(3)), 1, "the big layer arrived once");
    let r = target.send(Method::HEAD, &format!("/v2/big/app/blobs/{}", image.layer_digest(3))).await;
    assert_eq!(r.headers()["content-length"], (200u64 << 20).to_string().as_str());
}

#[tokio::test]
async fn the_web_ui_adds_targets_and_rules_and_shows_runs() {
    let reference = DockerRegistry::start();
    let berth = berth();
    let reg = Reg::admin(&berth);
    let target = Reg::foreign(&reference.base());
    reg.push_image("web/app", "1", &tiny("through the UI")).await;

    let ui = Ui::login(&berth.base, "admin", ADMIN_PASSWORD).await;
    let (status, page) = ui.get("/admin/replication").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No targets yet"), "{page}");
    let (status, to) = ui
        .post(
            "/admin/replication/targets",
            &[("name", "ui-target"), ("url", &reference.base()), ("secret", "s3cret-value")],
        )
        .await;
    assert_eq!((status, to.as_str()), (StatusCode::SEE_OTHER, "/admin/replication?ok=target"));
    let (_, page) = ui.get("/admin/replication").await;
    assert!(page.contains("data-target=\"ui-target\"") && page.contains("sealed"), "{page}");
    assert!(!page.contains("s3cret-value"), "the secret is never shown");
    let (status, page) = ui.post("/admin/replication/targets/ui-target/test", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("connected and logged in"), "{page}");
    let (status, _) = ui
        .post(
            "/admin/replication/rules",
            &[("name", "ui-rule"), ("target", "ui-target"), ("direction", "push"), ("repositories", "web/*")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, to) = ui.post("/admin/replication/rules/ui-rule/run", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(to.starts_with("/admin/replication/rules/ui-rule?execution="), "{to}");
    eventually("web/app:1 at the target", || async { manifest_at(&target, "web/app", "1").await.is_some() }).await;
    eventually("the run shows as done", || async {
        let (_, page) = ui.get(&to).await;
        page.contains("data-status=\"done\"") && page.contains("web/app:1")
    })
    .await;

    // Not for everyone: a user who is not an administrator is refused.
    let (status, _) =
        reg.api(Method::POST, "/api/v1/users", Some(json!({"name": "carol", "password": "carol-password-1"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let carol = Ui::login(&berth.base, "carol", "carol-password-1").await;
    assert_eq!(carol.get("/admin/replication").await.0, StatusCode::FORBIDDEN);
}

/// nginx in front of a registry, refusing request bodies over 1 MiB (a proxy's body limit).
struct BodyLimit {
    port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl BodyLimit {
    fn start(upstream: u16) -> BodyLimit {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n access_log {d}/access.log;\n client_body_temp_path {d};\n proxy_temp_path {d};\n\
             server {{\n listen 127.0.0.1:{port};\n client_max_body_size 1m;\n\
             location / {{\n proxy_pass http://127.0.0.1:{upstream};\n proxy_http_version 1.1;\n\
             proxy_set_header Host $http_host;\n proxy_request_buffering off;\n }}\n }}\n}}\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new("nginx")
            .args(["-g", "daemon off;", "-c"])
            .arg(dir.path().join("nginx.conf"))
            .spawn()
            .expect("the tests need nginx (apt-get install nginx-light)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen");
            std::thread::sleep(Duration::from_millis(25));
        }
        BodyLimit { port, child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for BodyLimit {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its worker too (SIGKILL would orphan it, holding the
        // port and the test's output pipe).
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_target_that_refuses_large_bodies_gets_chunks() {
    let reference = DockerRegistry::start();
    let limit = BodyLimit::start(reference.port);
    let berth = Berth::start_with_env(&[
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_REPLICATION__BACKOFF_INITIAL_MS", "300"),
        ("BERTH_REPLICATION__BACKOFF_MAX_SECS", "1"),
        ("BERTH_REPLICATION__POLL_MS", "200"),
        ("BERTH_REPLICATION__CHUNK_BYTES", "262144"),
    ]);
    let reg = Reg::admin(&berth);
    add_target(&reg, "limited", &format!("http://127.0.0.1:{}", limit.port)).await;
    add_rule(&reg, json!({"name": "to-limited", "target": "limited"})).await;
    let layer: Vec<u8> = (0..3 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let image = Image::new(tiny("chunked").config, vec![layer]);
    let digest = reg.push_image("big/chunked", "1", &image).await;

    let target = Reg::foreign(&reference.base());
    within(30, "the image at the target", || async {
        manifest_at(&target, "big/chunked", "1").await.is_some_and(|(d, _)| d == digest)
    })
    .await;
    let log = limit.log();
    assert!(log.lines().any(|l| l.contains("\"PUT /v2/big/chunked/blobs/uploads/") && l.contains("\" 413 ")), "{log}");
    let patches =
        log.lines().filter(|l| l.contains("\"PATCH /v2/big/chunked/blobs/uploads/") && l.contains("\" 202 ")).count();
    assert_eq!(patches, 12, "3 MiB in chunks of 256 KiB:\n{log}");
    assert_eq!(target.get_blob("big/chunked", &image.layer_digest(0)).await, image.layers[0]);
}
