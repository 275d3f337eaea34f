//! Garbage collection, retention, quotas and the mirror's cache cap against real `berth`
//! processes: content pushed over the registry API (reqwest) and by the docker engine, GC run
//! through the admin API and the CLI, objects checked in the blob store itself.
//! `BERTH_TEST_BACKEND=s3-postgres` runs the same tests on S3 and PostgreSQL.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::db::execute as sql;
use common::docker::{DockerClient, Images, import_busybox, require_tools};
use common::registry::{Reg, header};
use common::{ADMIN_PASSWORD, Backend, Berth, run, sha256};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// (repository index, image number, blobs with sizes).
type Image = (usize, usize, Vec<(String, usize)>);

/// Whether the blob store holds the object of `digest` (the file, or the S3 object).
fn object_exists(b: &Berth, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    match b.backend() {
        Backend::FsSqlite => b.data_path().join(format!("storage/blobs/sha256/{}/{hex}", &hex[..2])).exists(),
        Backend::S3Postgres { prefix, .. } => {
            let key = format!("{prefix}/blobs/sha256/{}/{hex}", &hex[..2]);
            b.backend().s3_listing(&key).contains(&format!("<Key>{key}</Key>"))
        }
    }
}

fn gc_env<'a>(grace: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_GC__ENABLED", "false"),
        ("BERTH_GC__GRACE_SECS", grace),
        ("BERTH_GC__DELETE_UNTAGGED", "true"),
    ];
    env.extend_from_slice(extra);
    env
}

/// 1,000 blobs in ten repositories: images with their own config and layers, layers shared by
/// every repository, a layer shared by image number across repositories, and blobs no manifest
/// references. Some images are then deleted by digest, some only untagged. GC must remove
/// exactly the blobs no remaining image references.
#[tokio::test]
async fn gc_removes_exactly_the_unreferenced_of_1000_blobs() {
    let b = Berth::start_with_env(&gc_env("300", &[]));
    let reg = Reg::admin(&b);
    let repos: Vec<String> = (0..10).map(|i| format!("gcns/r{i}")).collect();
    let shared: Vec<Vec<u8>> = (0..10).map(|i| format!("shared layer {i}").into_bytes()).collect();
    let by_number: Vec<Vec<u8>> = (0..19).map(|j| format!("layer of image number {j}").into_bytes()).collect();

    // Everything pushed, keyed by digest with its size; and each image's blobs.
    let mut all: HashMap<String, usize> = HashMap::new();
    let mut images: Vec<Image> = Vec::new();
    let mut jobs = Vec::new();
    for (i, repo) in repos.iter().enumerate() {
        for (j, numbered) in by_number.iter().enumerate() {
            let mut contents = vec![format!("{{\"config\":\"{repo} {j}\"}}").into_bytes()];
            contents.extend((0..3).map(|k| format!("own layer {k} of {repo} image {j}").into_bytes()));
            contents.push(numbered.clone());
            contents.extend(shared.iter().cloned());
            let blobs: Vec<(String, usize)> = contents.iter().map(|c| (sha256(c), c.len())).collect();
            images.push((i, j, blobs));
            for c in contents {
                jobs.push((repo.clone(), c));
            }
        }
        // Pushed but never referenced.
        let n = if i == 9 { 22 } else { 21 };
        for k in 0..n {
            jobs.push((repo.clone(), format!("orphan {k} in {repo}").into_bytes()));
        }
    }
    for (_, c) in &jobs {
        all.insert(sha256(c), c.len());
    }
    assert_eq!(all.len(), 1000, "the scenario holds 1,000 distinct blobs");
    let pushed: Vec<()> = futures_util::stream::iter(jobs)
        .map(|(repo, c)| {
            let reg = reg.clone();
            async move {
                reg.blob(&repo, &c).await;
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(!pushed.is_empty());
    let mut digests: HashMap<(usize, usize), String> = HashMap::new();
    for (i, j, blobs) in &images {
        let r = reg.put_image_manifest(&repos[*i], &format!("v{j}"), blobs).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        digests.insert((*i, *j), r.headers()["docker-content-digest"].to_str().unwrap().to_string());
    }

    // Repository i loses images j with (i + j) % 19 < 10: half by manifest delete, half by
    // deleting only the tag (untagged: collected with delete_untagged).
    let mut kept: HashSet<String> = HashSet::new();
    for (i, j, blobs) in &images {
        let repo = &repos[*i];
        if (i + j) % 19 < 10 {
            let path = if j % 2 == 0 {
                format!("/v2/{repo}/manifests/{}", digests[&(*i, *j)])
            } else {
                format!("/v2/{repo}/manifests/v{j}")
            };
            assert_eq!(reg.status(Method::DELETE, &path).await, StatusCode::ACCEPTED);
        } else {
            kept.extend(blobs.iter().map(|(d, _)| d.clone()));
        }
    }
    let doomed: HashSet<String> = all.keys().filter(|d| !kept.contains(*d)).cloned().collect();
    let doomed_bytes: usize = doomed.iter().map(|d| all[d]).sum();
    assert!(kept.len() > 300 && doomed.len() > 500, "{} kept, {} doomed", kept.len(), doomed.len());
    for s in &shared {
        assert!(kept.contains(&sha256(s)));
    }

    // Inside the grace period nothing goes.
    let early = reg.gc(false).await;
    assert_eq!(early["blobs_deleted"], 0, "{early}");
    assert_eq!(early["manifests_deleted"], 0, "{early}");
    // Age everything past the grace period (the test does not wait 5 minutes).
    for table in ["blobs", "repository_blobs", "manifests"] {
        sql(&b, &format!("UPDATE {table} SET created_at = created_at - 600")).await;
    }

    // A dry run reports and changes nothing.
    let dry = reg.gc(true).await;
    assert_eq!(dry["dry_run"], true);
    let untagged = images.iter().filter(|(i, j, _)| (i + j) % 19 < 10 && j % 2 == 1).count();
    assert_eq!(dry["manifests_deleted"], untagged as u64, "{dry}");
    assert!(dry["blobs_deleted"].as_u64().unwrap() > 0, "{dry}");
    assert!(doomed.iter().all(|d| object_exists(&b, d)), "a dry run deleted something");

    // The real run: exactly the unreferenced blobs go.
    let report = reg.gc(false).await;
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["manifests_deleted"], untagged as u64, "{report}");
    assert_eq!(report["blobs_deleted"], doomed.len() as u64, "{report}");
    assert_eq!(report["bytes_freed"], doomed_bytes as u64, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    for d in &doomed {
        assert!(!object_exists(&b, d), "{d} should be gone");
    }
    for d in &kept {
        assert!(object_exists(&b, d), "{d} must stay");
    }
    // Through the API: every kept image pulls whole; deleted content is unknown.
    for (i, j, blobs) in &images {
        let repo = &repos[*i];
        let tag_status = reg.status(Method::GET, &format!("/v2/{repo}/manifests/v{j}")).await;
        if (i + j) % 19 < 10 {
            assert_eq!(tag_status, StatusCode::NOT_FOUND);
            let by_digest = format!("/v2/{repo}/manifests/{}", digests[&(*i, *j)]);
            assert_eq!(reg.status(Method::GET, &by_digest).await, StatusCode::NOT_FOUND);
        } else {
            assert_eq!(tag_status, StatusCode::OK);
            for (d, size) in blobs {
                let r = reg.req(Method::GET, &format!("/v2/{repo}/blobs/{d}")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK, "{repo} {d}");
                assert_eq!(r.bytes().await.unwrap().len(), *size);
            }
        }
    }
    let last: Value = reg.req(Method::GET, "/api/v1/gc").send().await.unwrap().json().await.unwrap();
    assert_eq!(last["last_run"]["blobs_deleted"], doomed.len() as u64);
    assert_eq!(last["last_dry_run"]["dry_run"], true);
    // A second run finds nothing more.
    let again = reg.gc(false).await;
    assert_eq!(again["blobs_deleted"], 0, "{again}");
    // /metrics counts the three real runs (not the dry one) and the bytes they freed.
    let text = Reg::new(&b).send(Method::GET, "/metrics").await.text().await.unwrap();
    let metric = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(metric("berth_gc_runs_total"), 3.0);
    assert_eq!(metric("berth_gc_freed_bytes_total"), doomed_bytes as f64);

    // Only administrators may collect.
    assert_eq!(Reg::new(&b).status(Method::POST, "/api/v1/gc").await, StatusCode::UNAUTHORIZED);
}

/// Pushes racing garbage collection: fresh images, and images whose blobs are garbage being
/// collected at that moment (uploaded again, or only announced by HEAD) — every push that
/// succeeded pulls whole afterwards, and the docker engine's push during GC pulls back.
#[tokio::test]
async fn pushes_during_gc_complete_and_pull_afterwards() {
    require_tools();
    let b = Berth::start_with_env(&gc_env("2", &[]));
    let reg = Reg::admin(&b);
    // Garbage to keep GC busy: 1,500 unreferenced blobs, old enough to collect.
    let garbage: Vec<Vec<u8>> = (0..1500).map(|k| format!("garbage blob {k}").into_bytes()).collect();
    futures_util::stream::iter(garbage.iter().cloned())
        .map(|c| {
            let reg = reg.clone();
            async move { reg.blob("race/old", &c).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The docker engine pushes an image while GC runs.
    let mut images = Images::new();
    let name = images.add(format!("{}/gcrace/busybox:1", b.host()));
    import_busybox(&name);
    let client = DockerClient::new(&b.host());
    let login = client.login("admin", ADMIN_PASSWORD);
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));

    let gc_loop = {
        let reg = reg.clone();
        tokio::spawn(async move {
            let mut freed = 0;
            for _ in 0..6 {
                freed += reg.gc(false).await["blobs_deleted"].as_u64().unwrap();
            }
            freed
        })
    };
    let docker_push = {
        let client_dir = client.config_dir();
        let name = name.clone();
        tokio::task::spawn_blocking(move || {
            run(std::process::Command::new("docker").env("DOCKER_CONFIG", client_dir).args(["push", &name]))
        })
    };
    // Meanwhile over the API: 60 images, a third of them re-using garbage blobs (uploaded
    // again), a third announcing garbage blobs by HEAD only (they exist in race/old: mount).
    let mut pushes = Vec::new();
    for n in 0..60usize {
        let reg = reg.clone();
        let reused = garbage[n * 20].clone();
        pushes.push(tokio::spawn(async move {
            // The third kind pushes into the garbage repository itself, where the reused blob
            // is (still) linked, and relies on a HEAD like docker does.
            let (repo, tag) = if n % 3 == 2 {
                ("race/old".to_string(), format!("img{n}"))
            } else {
                (format!("race/img{n}"), "latest".into())
            };
            let own = format!("own layer of racing image {n}").into_bytes();
            let config = format!("{{\"racing\":{n}}}").into_bytes();
            let mut blobs =
                vec![(reg.blob(&repo, &config).await, config.len()), (reg.blob(&repo, &own).await, own.len())];
            let d = sha256(&reused);
            match n % 3 {
                0 => {
                    reg.blob(&repo, &reused).await;
                }
                1 => {
                    // Cross-repository mount from the garbage repository: linked if the blob is
                    // still there, else a 202 and a normal upload.
                    let r = reg
                        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?mount={d}&from=race/old"))
                        .send()
                        .await
                        .unwrap();
                    if r.status() != StatusCode::CREATED {
                        reg.blob(&repo, &reused).await;
                    }
                }
                _ => {
                    if reg.status(Method::HEAD, &format!("/v2/{repo}/blobs/{d}")).await != StatusCode::OK {
                        reg.blob(&repo, &reused).await;
                    }
                }
            }
            blobs.push((d, reused.len()));
            let r = reg.put_image_manifest(&repo, &tag, &blobs).await;
            let status = r.status();
            assert_eq!(status, StatusCode::CREATED, "{repo}:{tag}: {}", r.text().await.unwrap());
            (repo, tag, blobs)
        }));
    }
    let mut pushed = Vec::new();
    for p in pushes {
        pushed.push(p.await.unwrap());
    }
    let push_out = docker_push.await.unwrap();
    let freed = gc_loop.await.unwrap();
    assert!(freed > 1000, "GC ran beside the pushes and freed {freed}");
    // One more collection after everything settled, then every image pulls whole.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reg.gc(false).await;
    for (repo, tag, blobs) in &pushed {
        assert_eq!(reg.status(Method::GET, &format!("/v2/{repo}/manifests/{tag}")).await, StatusCode::OK);
        for (d, size) in blobs {
            let r = reg.req(Method::GET, &format!("/v2/{repo}/blobs/{d}")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{repo} {d}");
            let bytes = r.bytes().await.unwrap();
            assert_eq!(bytes.len(), *size);
            assert_eq!(sha256(&bytes), *d);
            assert!(object_exists(&b, d));
        }
    }
    assert!(push_out.contains("digest: sha256:"), "{push_out}");

    // The same interleavings, in a fixed order: old unreferenced blobs that a client is told
    // exist (HEAD), mounts, or uploads again, then a collection, then the manifest. The push
    // must win each time; an untouched blob of the same age is collected.
    let contents: Vec<Vec<u8>> = (0..4).map(|k| format!("sequenced blob {k}").into_bytes()).collect();
    let mut seq = Vec::new();
    for c in &contents {
        seq.push((reg.blob("race/seq", c).await, c.len()));
    }
    for table in ["blobs", "repository_blobs"] {
        sql(
            &b,
            &format!(
                "UPDATE {table} SET created_at = created_at - 600 WHERE digest IN ('{}', '{}', '{}', '{}')",
                seq[0].0, seq[1].0, seq[2].0, seq[3].0
            ),
        )
        .await;
    }
    assert_eq!(reg.status(Method::HEAD, &format!("/v2/race/seq/blobs/{}", seq[0].0)).await, StatusCode::OK);
    let mount = format!("/v2/race/seq-mount/blobs/uploads/?mount={}&from=race/seq", seq[1].0);
    assert_eq!(reg.status(Method::POST, &mount).await, StatusCode::CREATED);
    reg.blob("race/seq-again", &contents[2]).await;
    reg.gc(false).await;
    for (repo, blob) in [("race/seq", &seq[0]), ("race/seq-mount", &seq[1]), ("race/seq-again", &seq[2])] {
        let config = (reg.blob(repo, b"{\"seq\":1}").await, 9);
        let r = reg.put_image_manifest(repo, "1", &[config, blob.clone()]).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{repo}: {}", r.text().await.unwrap());
        let r = reg.req(Method::GET, &format!("/v2/{repo}/blobs/{}", blob.0)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(sha256(&r.bytes().await.unwrap()), blob.0);
    }
    assert_eq!(reg.status(Method::HEAD, &format!("/v2/race/seq/blobs/{}", seq[3].0)).await, StatusCode::NOT_FOUND);
    assert!(!object_exists(&b, &seq[3].0), "the untouched old blob is collected");
    client.run(&["rmi", &name]);
    client.run(&["pull", &name]);
    let out = client.run(&["run", "--rm", &name, "echo", "pulled after gc"]);
    assert_eq!(out.trim(), "pulled after gc");
}

/// Each retention rule, dry run first, then applied.
#[tokio::test]
async fn retention_policies_each_rule_with_dry_run() {
    let b = Berth::start_with_env(&gc_env("0", &[("BERTH_GC__PULL_RECORD_SECS", "1")]));
    let reg = Reg::admin(&b);
    // Per repository: tags t0..t5, each its own image, pushed in order (t5 newest).
    for repo in ["ret/last", "ret/pattern", "ret/old", "ret/pulled", "other/free"] {
        for t in 0..6 {
            let config = format!("{{\"{repo}\":{t}}}").into_bytes();
            let layer = format!("layer {t} of {repo}").into_bytes();
            let blobs =
                vec![(reg.blob(repo, &config).await, config.len()), (reg.blob(repo, &layer).await, layer.len())];
            assert_eq!(reg.put_image_manifest(repo, &format!("t{t}"), &blobs).await.status(), StatusCode::CREATED);
        }
        // Push order decides recency; make it unambiguous (same-second pushes).
        for t in 0..6 {
            sql(
                &b,
                &format!(
                    "UPDATE tags SET updated_at = updated_at - {} WHERE name = 't{t}' AND repository_id = \
                 (SELECT id FROM repositories WHERE name = '{repo}')",
                    (6 - t) * 10
                ),
            )
            .await;
        }
    }
    // ret/old: t0..t2 pushed 40 days ago.
    sql(
        &b,
        "UPDATE tags SET updated_at = updated_at - 40 * 86400 WHERE name IN ('t0', 't1', 't2') \
             AND repository_id = (SELECT id FROM repositories WHERE name = 'ret/old')",
    )
    .await;
    // ret/pulled: t1 and t3 pulled now (recorded within a second).
    for t in ["t1", "t3"] {
        assert_eq!(reg.status(Method::GET, &format!("/v2/ret/pulled/manifests/{t}")).await, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let policies = [
        json!({"pattern": "ret/last", "keep_last": 2}),
        json!({"pattern": "ret/pattern", "keep_last": 1, "keep_tags": "t0|t2"}),
        json!({"pattern": "ret/old", "older_than_days": 30}),
        json!({"pattern": "ret/pulled", "keep_last": 1, "keep_pulled_days": 7}),
        json!({"pattern": "ret/*", "keep_last": 100}),
    ];
    for p in &policies {
        let r = reg.req(Method::PUT, "/api/v1/retention").json(p).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let bad = reg.req(Method::PUT, "/api/v1/retention").json(&json!({"pattern": "x", "keep_last": -1})).send();
    assert_eq!(bad.await.unwrap().status(), StatusCode::BAD_REQUEST);
    let listed: Value = reg.req(Method::GET, "/api/v1/retention").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["policies"].as_array().unwrap().len(), 5);

    let mut expected = vec![
        "ret/last:t0",
        "ret/last:t1",
        "ret/last:t2",
        "ret/last:t3",
        "ret/pattern:t1",
        "ret/pattern:t3",
        "ret/pattern:t4",
        "ret/old:t0",
        "ret/old:t1",
        "ret/old:t2",
        "ret/pulled:t0",
        "ret/pulled:t2",
        "ret/pulled:t4",
    ];
    expected.sort();
    let dry = reg.gc(true).await;
    let mut listed: Vec<String> = serde_json::from_value(dry["retention"].clone()).unwrap();
    listed.sort();
    assert_eq!(listed, expected, "{dry}");
    assert_eq!(reg.status(Method::GET, "/v2/ret/last/manifests/t0").await, StatusCode::OK, "dry run kept it");

    // The CLI's dry run says the same.
    let out = b.cli(&["gc", "--dry-run"]);
    assert!(out.contains("would remove 13 tags by retention"), "{out}");
    assert!(out.contains("ret/pulled:t2"), "{out}");

    let report = reg.gc(false).await;
    assert_eq!(report["tags_deleted"], 13, "{report}");
    assert_eq!(report["manifests_deleted"], 13, "{report}");
    assert_eq!(report["blobs_deleted"], 26, "{report}");
    for repo in ["ret/last", "ret/pattern", "ret/old", "ret/pulled", "other/free"] {
        for t in 0..6 {
            let gone = expected.contains(&format!("{repo}:t{t}").as_str());
            let status = reg.status(Method::GET, &format!("/v2/{repo}/manifests/t{t}")).await;
            assert_eq!(status, if gone { StatusCode::NOT_FOUND } else { StatusCode::OK }, "{repo}:t{t}");
        }
    }
    // Policies through the CLI too.
    let out = b.cli(&["retention", "list"]);
    assert!(out.contains("ret/pattern") && out.contains("t0|t2"), "{out}");
    b.cli(&["retention", "remove", "ret/*"]);
    let r = reg.req(Method::DELETE, "/api/v1/retention?pattern=ret/last").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let listed: Value = reg.req(Method::GET, "/api/v1/retention").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["policies"].as_array().unwrap().len(), 3);
}

/// Uploads that each fit under the quota while they stream, finishing at the same moment:
/// only as many become blobs as the quota holds (the check that counts is made in the
/// transaction that links the blob), the others are refused with DENIED and leave no session.
#[tokio::test]
async fn uploads_finishing_together_never_take_a_namespace_over_its_quota() {
    let b = Berth::start_with_env(&gc_env("3600", &[]));
    let reg = Reg::admin(&b);
    let r = reg.req(Method::PUT, "/api/v1/namespaces/race/quota").json(&json!({"max_bytes": 100_000})).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::OK);
    // Eight uploads of 40,000 bytes each: every one fits while usage is 0; two fit in all.
    let mut sessions = Vec::new();
    for i in 0..8u8 {
        let r = reg.start_upload(&format!("race/r{i}")).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let location = header(&r, "location");
        let data = vec![i; 40_000];
        let r = reg.patch_upload(&location, &data, None).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        sessions.push((location, sha256(&data)));
    }
    let puts = sessions.iter().map(|(location, digest)| reg.finish_upload(location, digest, &[]));
    let answers = futures_util::future::join_all(puts).await;
    let mut created = 0;
    for r in answers {
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
            }
            other => panic!("unexpected answer {other}"),
        }
    }
    let usage: Value =
        reg.req(Method::GET, "/api/v1/namespaces/race/usage").send().await.unwrap().json().await.unwrap();
    assert_eq!(created, 2, "usage now {usage}");
    assert_eq!(usage["used_bytes"], 80_000);
    assert_eq!(b.upload_leftovers(), 0, "refused uploads left their data");
}

/// A namespace quota: the docker engine's push is refused with the quota named in its output;
/// usage shows in the API; a blob already in the namespace does not count twice.
#[tokio::test]
async fn quota_refuses_a_docker_push_with_its_message() {
    require_tools();
    let b = Berth::start_with_env(&gc_env("3600", &[]));
    let reg = Reg::admin(&b);
    let small = b"a small layer".to_vec();
    let d = reg.blob("quota/a", &small).await;
    let r = reg.req(Method::PUT, "/api/v1/namespaces/quota/quota").json(&json!({"max_bytes": 100_000})).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::OK);
    let usage: Value =
        reg.req(Method::GET, "/api/v1/namespaces/quota/usage").send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["used_bytes"], small.len() as u64);
    assert_eq!(usage["quota_bytes"], 100_000);

    // Over the API: a blob larger than what is left is refused before it is stored.
    let big = vec![7u8; 150_000];
    let r = reg
        .req(Method::POST, &format!("/v2/quota/a/blobs/uploads/?digest={}", sha256(&big)))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("quota of namespace quota"), "{body}");
    assert!(!object_exists(&b, &sha256(&big)));
    // Pushing a blob the namespace holds, or mounting it, adds nothing and is allowed.
    reg.blob("quota/b", &small).await;
    let r = reg.req(Method::POST, &format!("/v2/quota/c/blobs/uploads/?mount={d}&from=quota/a")).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
    // Other namespaces are not limited.
    reg.blob("free/a", &big).await;

    // The docker engine: busybox is about 1 MB, over the quota.
    let mut images = Images::new();
    let name = images.add(format!("{}/quota/busybox:1", b.host()));
    import_busybox(&name);
    let client = DockerClient::new(&b.host());
    assert!(client.login("admin", ADMIN_PASSWORD).status.success());
    let out = client.output(&["push", &name]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "push over quota succeeded: {text}");
    assert!(text.contains("denied") && text.contains("quota of namespace quota"), "docker output: {text}");
    // Raised quota: the same push goes through.
    let r = reg.req(Method::PUT, "/api/v1/namespaces/quota/quota").json(&json!({"max_bytes": 50_000_000})).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::OK);
    client.run(&["push", &name]);
    let usage: Value =
        reg.req(Method::GET, "/api/v1/namespaces/quota/usage").send().await.unwrap().json().await.unwrap();
    assert!(usage["used_bytes"].as_u64().unwrap() > 100_000, "{usage}");
    let out = b.cli(&["quota", "show", "quota"]);
    assert!(out.contains("of 50000000 bytes used"), "{out}");
}

/// The mirror's cache cap evicts the least recently pulled mirrored images (never local pushes)
/// and an evicted image is fetched again on the next pull.
#[tokio::test]
async fn mirror_cache_cap_evicts_least_recently_pulled() {
    let (_upstream, mirror, sizes) = capped_mirror("", "false").await;
    let m = Reg::admin(&mirror);
    let pull = |name: &'static str| {
        let m = m.clone();
        let blobs = sizes[name].clone();
        async move {
            let r = m.req(Method::GET, &format!("/v2/up/lib/{name}/manifests/1")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "pull {name}");
            for (d, size) in &blobs {
                let r = m.req(Method::GET, &format!("/v2/up/lib/{name}/blobs/{d}")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                assert_eq!(r.bytes().await.unwrap().len(), *size);
            }
        }
    };
    // A local push of similar size on the mirror: never evicted.
    let local_layer = vec![3u8; 100_000];
    let local = vec![(m.blob("mine/app", b"{}").await, 2), (m.blob("mine/app", &local_layer).await, local_layer.len())];
    assert_eq!(m.put_image_manifest("mine/app", "1", &local).await.status(), StatusCode::CREATED);
    // Pulled in the order a, b, c, then a again: b is the least recently pulled.
    for name in ["a", "b", "c"] {
        pull(name).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    pull("a").await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // pull times recorded, grace passed

    let report = m.gc(false).await;
    assert_eq!(report["mirror_manifests_evicted"], 1, "{report}");
    assert!(report["evicted"][0].as_str().unwrap().starts_with("up/lib/b@"), "{report}");
    for (d, _) in &sizes["b"] {
        assert!(!object_exists(&mirror, d), "b's blobs are evicted");
    }
    for name in ["a", "c"] {
        for (d, _) in &sizes[name] {
            assert!(object_exists(&mirror, d), "{name} stays");
        }
    }
    for (d, _) in &local {
        assert!(object_exists(&mirror, d), "local pushes are never evicted");
    }
    // Under the cap now: nothing more goes; b comes back from upstream on the next pull.
    let again = m.gc(false).await;
    assert_eq!(again["mirror_manifests_evicted"], 0, "{again}");
    pull("b").await;
}

/// With garbage collection on its daily schedule, the mirror's cap still holds: the cache's
/// size is checked every `mirror.cap_check_secs`, and a collection runs as soon as it is over.
#[tokio::test]
async fn mirror_cache_cap_is_enforced_between_scheduled_collections() {
    let (_upstream, mirror, blobs_of) = capped_mirror("cap_check_secs = 1\n", "true").await;
    let m = Reg::admin(&mirror);
    // a, b, c pulled in that order: a and b fit under the cap, c takes the cache over it, and
    // a, the least recently pulled, goes without anyone starting a collection.
    for name in ["a", "b", "c"] {
        let r = m.req(Method::GET, &format!("/v2/up/lib/{name}/manifests/1")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        for (d, _) in &blobs_of[name] {
            let r = m.req(Method::GET, &format!("/v2/up/lib/{name}/blobs/{d}")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.bytes().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let a_layer = &blobs_of["a"][1].0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while object_exists(&mirror, a_layer) {
        assert!(std::time::Instant::now() < deadline, "the cache stayed over its cap");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for name in ["b", "c"] {
        for (d, _) in &blobs_of[name] {
            assert!(object_exists(&mirror, d), "{name} stays");
        }
    }
}

/// An upstream Berth with three images of ~100 KB (`lib/a`, `lib/b`, `lib/c`, tag `1`), and a
/// mirror of it capped at 250,000 bytes (`extra` more `[mirror]` settings; garbage collection
/// on its daily schedule when `gc_enabled`, with a 1 s grace period). Returns both servers and
/// each image's blobs with their sizes.
async fn capped_mirror(extra: &str, gc_enabled: &str) -> (Berth, Berth, HashMap<&'static str, Vec<(String, usize)>>) {
    let upstream = Berth::start();
    let up = Reg::new(&upstream);
    let mut images = HashMap::new();
    for name in ["a", "b", "c"] {
        let config = format!("{{\"image\":\"{name}\"}}").into_bytes();
        let layer: Vec<u8> = (0..100_000u32).map(|i| (i as u8) ^ name.as_bytes()[0]).collect();
        let blobs = vec![
            (up.blob(&format!("lib/{name}"), &config).await, config.len()),
            (up.blob(&format!("lib/{name}"), &layer).await, layer.len()),
        ];
        assert_eq!(up.put_image_manifest(&format!("lib/{name}"), "1", &blobs).await.status(), StatusCode::CREATED);
        images.insert(name, blobs);
    }
    let toml = format!(
        "[mirror]\nenabled = true\nmax_cache_bytes = 250000\n{extra}\n[[mirror.upstreams]]\nname = \"up\"\nurl = {:?}\n",
        upstream.base
    );
    let mirror = Berth::start_with_config(
        &toml,
        &[
            ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("BERTH_GC__ENABLED", gc_enabled),
            ("BERTH_GC__INTERVAL_SECS", "86400"),
            ("BERTH_GC__GRACE_SECS", "1"),
            ("BERTH_GC__PULL_RECORD_SECS", "1"),
        ],
    );
    (upstream, mirror, images)
}

/// Writes an object straight into the blob store (a crash's leftover), by key.
fn put_object(b: &Berth, key: &str, data: &[u8]) {
    match b.backend() {
        Backend::FsSqlite => {
            let path = b.data_path().join("storage").join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        Backend::S3Postgres { prefix, .. } => {
            let (status, body) = b.backend().s3_request("PUT", &format!("{prefix}/{key}"), Some(data));
            assert_eq!(status, 200, "PUT {key}: {}", String::from_utf8_lossy(&body));
        }
    }
}

/// Expired upload sessions go with their stored bytes; objects without a database row (a crash
/// between storing and recording, an upload file without its session) go once older than the
/// grace period; everything younger stays.
#[tokio::test]
async fn expired_uploads_and_leftover_objects() {
    let b = Berth::start_with_env(&gc_env("2", &[("BERTH_GC__UPLOAD_EXPIRY_SECS", "2")]));
    let reg = Reg::admin(&b);
    // A session with some bytes, then abandoned.
    let r = reg.req(Method::POST, "/v2/left/app/blobs/uploads/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let path = location.trim_start_matches(&b.base).to_string();
    let r = reg.req(Method::PATCH, &path).body(vec![1u8; 10_000]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Leftovers: a blob object no row records, an upload object no session owns.
    let orphan = b"an object whose row was never written".to_vec();
    let od = sha256(&orphan);
    let hex = od.trim_start_matches("sha256:");
    put_object(&b, &format!("blobs/sha256/{}/{hex}", &hex[..2]), &orphan);
    put_object(&b, "_uploads/0b1d2c3e-leftover", b"half an upload");
    // A real blob, referenced, must stay.
    let kept = reg.blob("left/app", b"{}").await;
    assert_eq!(reg.put_image_manifest("left/app", "1", &[(kept.clone(), 2)]).await.status(), StatusCode::CREATED);

    let young = reg.gc(false).await;
    assert_eq!(young["uploads_removed"], 0, "{young}");
    assert_eq!(young["orphans_deleted"], 0, "{young}");
    assert!(object_exists(&b, &od));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dry = reg.gc(true).await;
    assert_eq!(dry["uploads_removed"], 1, "{dry}");
    assert_eq!(dry["orphans_deleted"], 2, "{dry}");
    let report = reg.gc(false).await;
    assert_eq!(report["uploads_removed"], 1, "{report}");
    assert_eq!(report["orphans_deleted"], 2, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(!object_exists(&b, &od));
    assert_eq!(b.upload_leftovers(), 0, "upload data is gone");
    let r = reg.req(Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(object_exists(&b, &kept));
    assert_eq!(reg.status(Method::GET, &format!("/v2/left/app/blobs/{kept}")).await, StatusCode::OK);
    // The leftover's digest can be pushed normally afterwards.
    reg.blob("left/app", &orphan).await;
    assert!(object_exists(&b, &od));

    // A run interrupted between marking a blob `deleting` and removing it (a crash, a restart)
    // leaves the mark: the next run finishes it, and the digest can be pushed again at once.
    let stuck = b"a blob whose collection was interrupted".to_vec();
    let sd = reg.blob("left/stuck", &stuck).await;
    assert_eq!(reg.status(Method::DELETE, &format!("/v2/left/stuck/blobs/{sd}")).await, StatusCode::ACCEPTED);
    sql(
        &b,
        &format!(
            "UPDATE blobs SET deleting = 'gc-a-node-that-died', created_at = created_at - 600 WHERE digest = '{sd}'"
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the object is past the grace period too
    let report = reg.gc(false).await;
    assert!(report["blobs_deleted"].as_u64().unwrap() >= 1, "{report}");
    assert!(!object_exists(&b, &sd), "the interrupted deletion was finished");
    // With the mark left in place this push would wait for it and fail (commit_blob).
    reg.blob("left/stuck", &stuck).await;
    assert!(object_exists(&b, &sd));
    assert_eq!(reg.status(Method::GET, &format!("/v2/left/stuck/blobs/{sd}")).await, StatusCode::OK);
}
