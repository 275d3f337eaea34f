//! `berth backup` and `berth restore`: a backup taken while pushes, deletes and garbage
//! collection go on, restored into a fresh data dir (and database) that a new server serves —
//! every tag the snapshot holds pulls with the right digests, nothing it references is
//! missing; on filesystem + SQLite (blobs copied) and on S3 + PostgreSQL (`pg_dump`, the
//! blobs left in the bucket). And what a restore refuses: a non-empty data dir, an unfinished
//! backup, a damaged blob.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::images::{Image, image_with_layer};
use common::registry::Reg;
use common::{ADMIN_PASSWORD, Backend, Berth, berth_command, output_text, sha256};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A push the registry acknowledged.
#[derive(Clone, Debug)]
struct Pushed {
    repo: String,
    tag: String,
    manifest: String,
    blobs: Vec<String>,
    /// When the manifest's PUT was answered.
    acked: Instant,
}

fn layer(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(sha256(format!("{seed} {i}").as_bytes()).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

async fn push(reg: &Reg, repo: &str, tag: &str, image: &Image) -> Pushed {
    let manifest = reg.push_image(repo, tag, image).await;
    let mut blobs = vec![sha256(&image.config)];
    blobs.extend(image.layers.iter().map(|l| sha256(l)));
    Pushed { repo: repo.into(), tag: tag.into(), manifest, blobs, acked: Instant::now() }
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BERTH_GC__ENABLED", "false"),
        // Short, so the collector runs during the backup could take what the deletes free.
        ("BERTH_GC__GRACE_SECS", "2"),
        ("BERTH_GC__DELETE_UNTAGGED", "true"),
    ]
}

/// Every tag a registry serves: `(repo, tag) → manifest digest`, each manifest and blob pulled
/// and checked against its digest.
async fn pull_everything(reg: &Reg) -> BTreeMap<(String, String), String> {
    let catalog: Value = reg.send(Method::GET, "/v2/_catalog?n=10000").await.json().await.unwrap();
    let mut out = BTreeMap::new();
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: Value = reg.send(Method::GET, &format!("/v2/{repo}/tags/list?n=10000")).await.json().await.unwrap();
        for tag in tags["tags"].as_array().cloned().unwrap_or_default() {
            let tag = tag.as_str().unwrap();
            let served = reg.served(repo, tag).await;
            let mut digests = vec![served.json["config"]["digest"].as_str().unwrap().to_string()];
            for l in served.json["layers"].as_array().unwrap() {
                digests.push(l["digest"].as_str().unwrap().to_string());
            }
            for d in digests {
                reg.get_blob(repo, &d).await; // checks the bytes against the digest
            }
            out.insert((repo.to_string(), tag.to_string()), served.digest);
        }
    }
    out
}

/// The scenario on `backend`: a base of images (some of which are deleted while the backup
/// runs, and collected by GC runs asked for all along), four pushers pushing all the time,
/// `berth backup` in the middle; then a restore into a fresh data dir (and database) and a
/// server on it (on S3 with the blobs copied, into a new bucket prefix as well).
async fn backup_during_pushes(backend: Backend, blobs: &'static str) {
    // Blobs deleted after the snapshot are kept by the backup only when it copies them (on S3
    // the bucket's versioning keeps them, which the test server does not have).
    let copies = blobs == "copy" || (blobs == "auto" && matches!(backend, Backend::FsSqlite));
    let b = Berth::start_on(backend.clone(), &env());
    let reg = Reg::admin(&b);

    // The base: 40 images of 128 KiB to 1 MiB; the first 10 are deleted during the backup.
    let mut base = Vec::new();
    for i in 0..40 {
        let image =
            image_with_layer(&format!("base {i}"), &layer(&format!("base layer {i}"), (128 << 10) * (1 + i % 8)));
        base.push(push(&reg, &format!("base/r{}", i % 4), &format!("v{i}"), &image).await);
    }
    // Older than the grace period: unreferenced, they would go at once.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stop_pushing = Arc::new(AtomicBool::new(false));
    let backing_up = Arc::new(AtomicBool::new(true));
    let mut pushers = Vec::new();
    for p in 0..4 {
        let (reg, stop) = (reg.clone(), stop_pushing.clone());
        pushers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let seed = format!("stream {p} {n}");
                let image = image_with_layer(&seed, &layer(&seed, (16 << 10) + (n * 977) % 40_000));
                done.push(push(&reg, &format!("stream/p{p}"), &format!("t{n}"), &image).await);
                n += 1;
            }
            done
        }));
    }
    // Deletes and GC runs while the backup runs (answered 409 while it holds GC off).
    let gc_answers = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let collector = {
        let (reg, running, answers) = (reg.clone(), backing_up.clone(), gc_answers.clone());
        let doomed: Vec<Pushed> = if copies { base[..10].to_vec() } else { Vec::new() };
        tokio::spawn(async move {
            let mut doomed = doomed.into_iter();
            while running.load(Ordering::Relaxed) {
                if let Some(d) = doomed.next() {
                    let path = format!("/v2/{}/manifests/{}", d.repo, d.manifest);
                    assert_eq!(reg.status(Method::DELETE, &path).await, StatusCode::ACCEPTED, "{path}");
                }
                match reg.status(Method::POST, "/api/v1/gc?dry_run=false").await {
                    StatusCode::OK => answers.0.fetch_add(1, Ordering::Relaxed),
                    StatusCode::CONFLICT => answers.1.fetch_add(1, Ordering::Relaxed),
                    s => panic!("POST /api/v1/gc: {s}"),
                };
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    let backup_dir = tempfile::tempdir().unwrap();
    let dir = backup_dir.path().join("backup");
    let backup_started = Instant::now();
    let out = {
        let (backend, data, dir) = (b.backend().clone(), b.data_path().to_path_buf(), dir.clone());
        tokio::task::spawn_blocking(move || {
            berth_command(&backend, &data, &["backup", dir.to_str().unwrap(), "--blobs", blobs])
        })
    };
    let out = out.await.unwrap();
    let backup_ended = Instant::now();
    backing_up.store(false, Ordering::Relaxed);
    let text = output_text(&out);
    assert!(out.status.success(), "berth backup failed:\n{text}");
    eprintln!("berth backup:\n{text}");
    collector.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_pushing.store(true, Ordering::Relaxed);
    let mut pushed = base.clone();
    for p in pushers {
        pushed.extend(p.await.unwrap());
    }
    let during = pushed.iter().filter(|p| p.acked > backup_started && p.acked < backup_ended).count();
    let (gc_ok, gc_held_off) = (gc_answers.0.load(Ordering::Relaxed), gc_answers.1.load(Ordering::Relaxed));
    eprintln!(
        "{} pushes in all, {during} acknowledged while the backup ran ({:.1} s); GC runs: {gc_ok} done, {gc_held_off} held off",
        pushed.len(),
        (backup_ended - backup_started).as_secs_f64()
    );
    assert!(during > 0, "no push landed during the backup");
    if copies {
        assert!(gc_held_off > 0, "no GC run was asked for while the backup held GC off");
    }

    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("backup.json")).unwrap()).unwrap();
    let copied = manifest["blobs_included"].as_bool().unwrap();
    assert_eq!(copied, copies);
    if copied {
        let files = walk(&dir.join("blobs"));
        assert_eq!(files.len() as u64, manifest["blob_count"].as_u64().unwrap(), "blob files in the backup");
        assert!(files.iter().all(|f| !f.ends_with(".partial")));
    }
    assert_eq!(manifest["missing"].as_array().unwrap().len(), 0, "{manifest}");

    // Restore into a fresh data dir (and an empty database on S3 + PostgreSQL; the bucket is
    // the same prefix: its blobs are what versioning would keep).
    let target = match (&backend, copies) {
        // The blobs are in the backup: a new bucket prefix too, which the restore fills.
        (Backend::S3Postgres { .. }, true) => Backend::s3_postgres(None),
        _ => backend.with_fresh_database(),
    };
    let restored_dir = tempfile::tempdir().unwrap();
    let data = restored_dir.path().join("data");
    let out = berth_command(&target, &data, &["restore", dir.to_str().unwrap()]);
    let text = output_text(&out);
    assert!(out.status.success(), "berth restore failed:\n{text}");
    eprintln!("berth restore:\n{text}");
    assert!(text.contains("every blob the database records is in the blob store"), "{text}");
    drop(b); // the old server is gone: the restored one stands alone

    let r = Berth::start_in(target, &data, &env());
    let restored = Reg::admin(&r);
    let served = pull_everything(&restored).await;
    assert_eq!(served.len() as u64, manifest["tags"].as_u64().unwrap(), "tags served vs the snapshot's");
    // Every tag is one that was pushed, with the digest it was pushed with.
    let by_tag: BTreeMap<(String, String), &Pushed> =
        pushed.iter().map(|p| ((p.repo.clone(), p.tag.clone()), p)).collect();
    for ((repo, tag), digest) in &served {
        let p = by_tag.get(&(repo.clone(), tag.clone())).unwrap_or_else(|| panic!("{repo}:{tag} was never pushed"));
        assert_eq!(&p.manifest, digest, "{repo}:{tag}");
    }
    // Every push acknowledged before the backup started is there (the deleted ones may be).
    let doomed: HashSet<(String, String)> = base[..10].iter().map(|p| (p.repo.clone(), p.tag.clone())).collect();
    let mut before = 0;
    for p in pushed.iter().filter(|p| p.acked < backup_started) {
        if !doomed.contains(&(p.repo.clone(), p.tag.clone())) {
            assert!(
                served.contains_key(&(p.repo.clone(), p.tag.clone())),
                "{}:{} acknowledged before the backup",
                p.repo,
                p.tag
            );
            before += 1;
        }
    }
    let after = pushed.iter().filter(|p| p.acked > backup_ended).count();
    let after_served = pushed
        .iter()
        .filter(|p| p.acked > backup_ended && served.contains_key(&(p.repo.clone(), p.tag.clone())))
        .count();
    eprintln!(
        "restored: {} tags served; {before} pushed before the backup, all there; {after_served} of {after} pushed after it",
        served.len()
    );
    assert_eq!(after_served, 0, "a push acknowledged after the backup ended is in the snapshot");
    // The snapshot's blobs are all pullable through some repository (checked by
    // pull_everything for the tagged ones; the restore checked every recorded one).
    let restored_blobs: HashSet<String> = pushed
        .iter()
        .filter(|p| served.contains_key(&(p.repo.clone(), p.tag.clone())))
        .flat_map(|p| p.blobs.clone())
        .collect();
    let listed: HashSet<String> =
        manifest["blobs"].as_array().unwrap().iter().map(|b| b["digest"].as_str().unwrap().to_string()).collect();
    assert!(restored_blobs.is_subset(&listed), "a tagged blob is not in the snapshot's list");
    // GC works again on the old data and on the restored one.
    assert_eq!(restored.status(Method::POST, "/api/v1/gc?dry_run=false").await, StatusCode::OK);
    backend.drop_database();
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_during_pushes_restores_every_tag_on_filesystem_sqlite() {
    backup_during_pushes(Backend::FsSqlite, "auto").await;
}

/// The database part through `pg_dump` (the blobs stay in the bucket), restored with
/// `pg_restore` into an empty database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_during_pushes_restores_every_tag_on_s3_postgres() {
    backup_during_pushes(Backend::s3_postgres(None), "auto").await;
}

/// `--blobs copy` on S3: the blobs streamed out of the bucket into the backup, and restored into
/// a new prefix (each verified as it streams in).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_with_blobs_copied_out_of_s3_restores_into_an_empty_bucket_prefix() {
    backup_during_pushes(Backend::s3_postgres(None), "copy").await;
}

/// What a restore and a backup refuse, and a damaged blob found on the way in.
#[tokio::test]
async fn restore_refuses_what_it_cannot_trust() {
    let b = Berth::start_on(Backend::FsSqlite, &env());
    let reg = Reg::admin(&b);
    let image = image_with_layer("refuse", &layer("refuse", 300_000));
    push(&reg, "r/one", "v1", &image).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backup");
    let out = berth_command(b.backend(), b.data_path(), &["backup", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));

    // A backup goes into a new directory.
    let out = berth_command(b.backend(), b.data_path(), &["backup", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("is not empty"), "{}", output_text(&out));

    // Not into a data dir that holds anything.
    let out = berth_command(&Backend::FsSqlite, b.data_path(), &["restore", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("is not empty"), "{}", output_text(&out));

    // An unfinished backup (no backup.json, which is written last).
    let unfinished = tmp.path().join("unfinished");
    copy_tree(&dir, &unfinished);
    std::fs::remove_file(unfinished.join("backup.json")).unwrap();
    let out = berth_command(&Backend::FsSqlite, &tmp.path().join("d1"), &["restore", unfinished.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("unfinished backup"), "{}", output_text(&out));

    // A blob changed in the backup: its digest no longer matches.
    let damaged = tmp.path().join("damaged");
    copy_tree(&dir, &damaged);
    let layer_digest = image.layer_digest(0);
    let hex = layer_digest.strip_prefix("sha256:").unwrap();
    let file = damaged.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let out = berth_command(&Backend::FsSqlite, &tmp.path().join("d2"), &["restore", damaged.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = output_text(&out);
    assert!(text.contains(&layer_digest) && text.contains("could not be restored"), "{text}");
    assert!(
        !tmp.path().join(format!("d2/storage/blobs/sha256/{}/{hex}", &hex[..2])).exists(),
        "a damaged blob was stored"
    );

    // The good one restores.
    let out = berth_command(&Backend::FsSqlite, &tmp.path().join("d3"), &["restore", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_tree(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}
