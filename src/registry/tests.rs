//! In-process tests of the registry service: the metadata store on SQLite in a temp dir, blobs
//! in `object_store`'s in-memory store behind the multipart upload backend (the one S3, GCS and
//! Azure use). Upload rules that a backend could break run on the local filesystem backend
//! too. Each test takes milliseconds; start here to test a new rule of the service.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{TryStreamExt, stream};
use object_store::memory::InMemory;
use serde_json::json;

use super::{ByteRange, Limits, PushedManifest, Registry};
use crate::error::{RegistryError, Result};
use crate::meta::{Linked, Meta};
use crate::oci::{Algorithm, Digest, Hasher, Reference, media};
use crate::storage::BlobStore;

// ---- fixture ---------------------------------------------------------------------------------

/// Where blobs and upload sessions are kept.
#[derive(Debug, Clone, Copy)]
enum Backend {
    /// `object_store`'s in-memory store, multipart sessions (S3, GCS, Azure).
    Memory,
    /// Local files under the temp dir, commit by rename (the default).
    Files,
}

const BACKENDS: [Backend; 2] = [Backend::Memory, Backend::Files];

/// A registry on a fresh database and blob store; the temp dir lives as long as the first value.
async fn open(backend: Backend) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::temp_sqlite(dir.path()).await;
    let blobs = match backend {
        Backend::Memory => BlobStore::multipart(Arc::new(InMemory::new()), ""),
        Backend::Files => BlobStore::filesystem(&dir.path().join("storage"), false).unwrap(),
    };
    (dir, Registry::new(meta, blobs, Limits::default()))
}

type Body = stream::Iter<std::vec::IntoIter<Result<Bytes>>>;

/// A request body arriving in these pieces.
fn body(parts: &[&[u8]]) -> Body {
    stream::iter(parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect::<Vec<_>>())
}

const NO_BODY: Option<Body> = None;

fn sha512_of(data: &[u8]) -> Digest {
    let mut h = Hasher::new(Algorithm::Sha512);
    h.update(data);
    h.finish()
}

/// `len` bytes that differ from those of another `seed`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add((i >> 8) as u8)).collect()
}

/// A monolithic push (`POST ?digest=` / one `PUT`), which must succeed.
async fn push(reg: &Registry, repo: &str, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    let up = reg.start_upload(repo).await.unwrap();
    assert_eq!(reg.finish_upload(repo, &up.id, &digest, Some(body(&[data]))).await.unwrap(), data.len() as u64);
    digest
}

/// The whole blob, read through `repo`.
async fn read(reg: &Registry, repo: &str, digest: &Digest) -> Vec<u8> {
    let blob = reg.read_blob(repo, digest, None).await.unwrap();
    let chunks: Vec<Bytes> = blob.body.try_collect().await.unwrap();
    chunks.concat()
}

/// Objects left under `_uploads/` (session data).
async fn uploads_left(reg: &Registry) -> Vec<String> {
    reg.blobs.list(false).map_ok(|(key, _)| key).try_collect().await.unwrap()
}

/// Fails unless `$result` is the error `$pattern`.
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!("expected {}, got {:?}", stringify!($pattern), other.map(|_| ())),
        }
    };
}

// ---- uploads ---------------------------------------------------------------------------------

/// A chunked upload: each chunk that starts where the upload ends is acknowledged (streamed
/// PATCHes without `Content-Range` too), nothing is visible before the commit, and the commit
/// (with a final chunk in the PUT) makes exactly the bytes sent the blob, readable whole and by
/// range through its repository only; the session and its data are gone after. The blob spans
/// several hashing batches, sent in small pieces, so batches hashed out of order would break it.
#[tokio::test]
async fn a_chunked_upload_commits_exactly_the_bytes_sent() {
    for backend in BACKENDS {
        let (_dir, reg) = open(backend).await;
        let data = bytes(3 * 1024 * 1024 + 4321, 1);
        let digest = Digest::sha256_of(&data);
        let (first, rest) = data.split_at(2 * 1024 * 1024 + 17);
        let (second, last) = rest.split_at(1000);
        let up = reg.start_upload("team/app").await.unwrap();
        assert_eq!(up.size, 0);
        let pieces: Vec<&[u8]> = first.chunks(64 * 1024 + 3).collect();
        let s = reg.append_upload("team/app", &up.id, Some(0), Some(first.len() as u64), body(&pieces)).await.unwrap();
        assert_eq!(s.size, first.len() as u64);
        let s = reg.append_upload("team/app", &up.id, None, None, body(&[second])).await.unwrap();
        assert_eq!(s.size, (first.len() + second.len()) as u64);
        assert_eq!(reg.upload_status("team/app", &up.id).await.unwrap().size, s.size);
        // The session belongs to its repository.
        assert_err!(reg.upload_status("team/other", &up.id).await, RegistryError::BlobUploadUnknown(_));
        assert_err!(reg.stat_blob("team/app", &digest).await, RegistryError::BlobUnknown(_));

        let size = reg
            .finish_upload_at("team/app", &up.id, &digest, Some(s.size), Some(last.len() as u64), Some(body(&[last])))
            .await
            .unwrap();
        assert_eq!(size, data.len() as u64, "{backend:?}");
        assert_eq!(reg.stat_blob("team/app", &digest).await.unwrap(), data.len() as u64);
        assert!(read(&reg, "team/app", &digest).await == data, "{backend:?}: stored bytes differ");
        let part =
            reg.read_blob("team/app", &digest, Some(ByteRange::From { start: 10, end: Some(19) })).await.unwrap();
        assert_eq!(part.range, Some(10..20));
        assert_eq!(part.body.try_collect::<Vec<Bytes>>().await.unwrap().concat(), &data[10..20]);
        assert_err!(
            reg.read_blob("team/app", &digest, Some(ByteRange::From { start: data.len() as u64, end: None })).await,
            RegistryError::RangeNotSatisfiable { .. }
        );
        // Linked to its repository only.
        assert_err!(reg.stat_blob("team/other", &digest).await, RegistryError::BlobUnknown(_));
        // The session is over.
        assert_err!(reg.upload_status("team/app", &up.id).await, RegistryError::BlobUploadUnknown(_));
        assert_err!(
            reg.append_upload("team/app", &up.id, None, None, body(&[b"more"])).await,
            RegistryError::BlobUploadUnknown(_)
        );
        assert_eq!(uploads_left(&reg).await, Vec::<String>::new(), "{backend:?}");
    }
}

/// A chunk must start where the upload ends: one that leaves a gap or overlaps is refused with
/// 416 and the acknowledged size, in a PATCH or with the final PUT, and the upload stays as it
/// was. A chunk shorter than it announced is refused and never acknowledged: the next chunk
/// continues after the last good one, and the blob holds none of the refused bytes.
#[tokio::test]
async fn a_chunk_out_of_order_is_refused_and_changes_nothing() {
    for backend in BACKENDS {
        let (_dir, reg) = open(backend).await;
        let repo = "team/app";
        let up = reg.start_upload(repo).await.unwrap();
        reg.append_upload(repo, &up.id, Some(0), Some(3), body(&[b"abc"])).await.unwrap();
        for start in [5, 0, 2] {
            assert_err!(
                reg.append_upload(repo, &up.id, Some(start), Some(3), body(&[b"XYZ"])).await,
                RegistryError::RangeInvalid { upload_size: Some(3), .. }
            );
        }
        assert_err!(
            reg.append_upload(repo, &up.id, Some(3), Some(10), body(&[b"XYZ"])).await,
            RegistryError::RangeInvalid { .. }
        );
        assert_eq!(reg.upload_status(repo, &up.id).await.unwrap().size, 3, "{backend:?}");
        let digest = Digest::sha256_of(b"abcdef");
        assert_err!(
            reg.finish_upload_at(repo, &up.id, &digest, Some(1), Some(3), Some(body(&[b"def"]))).await,
            RegistryError::RangeInvalid { upload_size: Some(3), .. }
        );
        assert_eq!(reg.upload_status(repo, &up.id).await.unwrap().size, 3, "the refused PUT keeps the session");
        assert_err!(reg.stat_blob(repo, &digest).await, RegistryError::BlobUnknown(_));

        reg.append_upload(repo, &up.id, Some(3), Some(3), body(&[b"def"])).await.unwrap();
        assert_eq!(reg.finish_upload(repo, &up.id, &digest, NO_BODY).await.unwrap(), 6);
        assert_eq!(read(&reg, repo, &digest).await, b"abcdef", "{backend:?}");
    }
}

/// A digest that does not match the bytes ends the session (its data dropped) and links and
/// stores nothing, for a chunked upload and a monolithic one alike.
#[tokio::test]
async fn a_wrong_digest_links_nothing_and_ends_the_session() {
    for backend in BACKENDS {
        let (_dir, reg) = open(backend).await;
        let repo = "team/app";
        let (sent, claimed) = (Digest::sha256_of(b"hello"), Digest::sha256_of(b"world"));
        let chunked = reg.start_upload(repo).await.unwrap();
        reg.append_upload(repo, &chunked.id, Some(0), None, body(&[b"hel", b"lo"])).await.unwrap();
        assert_err!(reg.finish_upload(repo, &chunked.id, &claimed, NO_BODY).await, RegistryError::DigestInvalid(_));
        let whole = reg.start_upload(repo).await.unwrap();
        assert_err!(
            reg.finish_upload(repo, &whole.id, &claimed, Some(body(&[b"hello"]))).await,
            RegistryError::DigestInvalid(_)
        );
        for id in [&chunked.id, &whole.id] {
            assert_err!(reg.upload_status(repo, id).await, RegistryError::BlobUploadUnknown(_));
            assert_err!(reg.finish_upload(repo, id, &sent, NO_BODY).await, RegistryError::BlobUploadUnknown(_));
        }
        for d in [&sent, &claimed] {
            assert_err!(reg.stat_blob(repo, d).await, RegistryError::BlobUnknown(_));
            assert_eq!(reg.meta.blob_size(d).await.unwrap(), None);
            assert!(!reg.blobs.exists(d).await.unwrap(), "{backend:?}: an object was stored for {d}");
        }
        assert_eq!(uploads_left(&reg).await, Vec::<String>::new(), "{backend:?}");
    }
}

/// A monolithic upload stores and links the blob in one call; pushed again, it stays linked. A
/// sha512 digest named with the bytes is hashed with sha512 from the first byte.
#[tokio::test]
async fn a_monolithic_upload_stores_and_links_in_one_call() {
    for backend in BACKENDS {
        let (_dir, reg) = open(backend).await;
        let data = bytes(70_000, 2);
        let digest = push(&reg, "team/app", &data).await;
        assert!(read(&reg, "team/app", &digest).await == data);
        assert_eq!(push(&reg, "team/app", &data).await, digest);
        assert!(read(&reg, "team/app", &digest).await == data);

        let long = sha512_of(&data);
        let up = reg.start_upload("team/app").await.unwrap();
        assert_eq!(reg.finish_upload("team/app", &up.id, &long, Some(body(&[&data]))).await.unwrap(), 70_000);
        assert!(read(&reg, "team/app", &long).await == data, "{backend:?}");
        assert_eq!(uploads_left(&reg).await, Vec::<String>::new(), "{backend:?}");
    }
}

/// A chunked upload is hashed with sha256 as it arrives; finished with a sha512 digest, the
/// filesystem backend hashes the stored bytes again, while the multipart backend (whose parts
/// cannot be read back) refuses with DIGEST_INVALID and links nothing.
#[tokio::test]
async fn a_chunked_upload_finished_with_sha512() {
    for backend in BACKENDS {
        let (_dir, reg) = open(backend).await;
        let data = bytes(5000, 3);
        let digest = sha512_of(&data);
        let up = reg.start_upload("team/app").await.unwrap();
        reg.append_upload("team/app", &up.id, Some(0), None, body(&[&data[..1234], &data[1234..]])).await.unwrap();
        let finished = reg.finish_upload("team/app", &up.id, &digest, NO_BODY).await;
        match backend {
            Backend::Files => {
                assert_eq!(finished.unwrap(), 5000);
                assert!(read(&reg, "team/app", &digest).await == data);
            }
            Backend::Memory => {
                assert_err!(finished, RegistryError::DigestInvalid(_));
                assert_err!(reg.stat_blob("team/app", &digest).await, RegistryError::BlobUnknown(_));
            }
        }
    }
}

/// A mount links a blob that its source repository links, without a new upload; the source
/// must link it itself (the registry holding the blob for another repository is not enough),
/// an invalid or unknown source or an unknown blob links nothing, and a blob unlinked from the
/// source can no longer be mounted from it (other links stay).
#[tokio::test]
async fn a_mount_needs_a_source_that_links_the_blob() {
    let (_dir, reg) = open(Backend::Memory).await;
    let data = bytes(4096, 4);
    let digest = push(&reg, "team/a", &data).await;
    push(&reg, "other/x", b"something else").await;

    assert!(reg.mount_blob("team/b", &digest, "team/a").await.unwrap());
    assert!(read(&reg, "team/b", &digest).await == data);
    for from in ["other/x", "nobody/here", "Not A Name"] {
        assert!(!reg.mount_blob("team/c", &digest, from).await.unwrap(), "mounted from {from}");
    }
    assert!(!reg.mount_blob("team/c", &Digest::sha256_of(b"never pushed"), "team/a").await.unwrap());
    assert_err!(reg.stat_blob("team/c", &digest).await, RegistryError::BlobUnknown(_));

    reg.delete_blob("team/a", &digest).await.unwrap();
    assert_err!(reg.stat_blob("team/a", &digest).await, RegistryError::BlobUnknown(_));
    assert_err!(reg.delete_blob("team/a", &digest).await, RegistryError::BlobUnknown(_));
    assert!(!reg.mount_blob("team/c", &digest, "team/a").await.unwrap());
    assert_err!(reg.stat_blob("team/c", &digest).await, RegistryError::BlobUnknown(_));
    assert!(read(&reg, "team/b", &digest).await == data, "the other link stays");
}

// ---- manifests -------------------------------------------------------------------------------

const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const EMPTY: &[u8] = b"{}";

fn descriptor(media_type: &str, content: &[u8]) -> serde_json::Value {
    json!({ "mediaType": media_type, "digest": Digest::sha256_of(content).to_string(), "size": content.len() })
}

fn image(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(LAYER, l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// An artifact manifest (empty config, no layers) about `subject`.
fn artifact(subject: &[u8], artifact_type: &str, annotations: Option<serde_json::Value>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor("application/vnd.oci.empty.v1+json", EMPTY),
        "layers": [],
        "subject": descriptor(media::OCI_MANIFEST, subject),
    });
    if let Some(a) = annotations {
        m["annotations"] = a;
    }
    serde_json::to_vec(&m).unwrap()
}

fn index(children: &[&[u8]]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|c| {
            let mut d = descriptor(media::OCI_MANIFEST, c);
            d["platform"] = json!({ "architecture": "amd64", "os": "linux" });
            d
        })
        .collect();
    serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests })).unwrap()
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

async fn put(reg: &Registry, repo: &str, r: &str, manifest: &[u8]) -> Result<PushedManifest> {
    reg.put_manifest(repo, &reference(r), None, manifest).await
}

/// An image whose blobs `repo` links, pushed under `tag`.
async fn push_image(reg: &Registry, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, Digest) {
    push(reg, repo, b"config").await;
    push(reg, repo, layer).await;
    let m = image(b"config", &[layer]);
    let pushed = put(reg, repo, tag, &m).await.unwrap();
    (m, pushed.digest)
}

/// A manifest whose config and layers the repository links is stored byte for byte under its
/// sha256, and its tag and digest resolve to it (in that repository only); pushed by digest it
/// must hash to that digest.
#[tokio::test]
async fn a_manifest_whose_blobs_are_linked_is_stored_and_its_tag_resolves() {
    let (_dir, reg) = open(Backend::Memory).await;
    push(&reg, "team/app", b"config").await;
    push(&reg, "team/app", b"layer one").await;
    let m = image(b"config", &[b"layer one"]);
    let pushed = reg.put_manifest("team/app", &reference("v1"), Some(media::OCI_MANIFEST), &m).await.unwrap();
    assert_eq!(pushed.digest, Digest::sha256_of(&m));
    assert_eq!((pushed.media_type.as_str(), pushed.subject), (media::OCI_MANIFEST, None));
    for r in ["v1", pushed.digest.as_str()] {
        let got = reg.get_manifest("team/app", &reference(r)).await.unwrap();
        assert_eq!((got.digest.as_str(), got.media_type.as_str()), (pushed.digest.as_str(), media::OCI_MANIFEST));
        assert!(got.content == m, "{r}: stored bytes differ");
    }
    assert_err!(reg.get_manifest("team/app", &reference("v2")).await, RegistryError::ManifestUnknown(_));
    assert_err!(reg.get_manifest("team/other", &reference("v1")).await, RegistryError::ManifestUnknown(_));

    assert_eq!(put(&reg, "team/app", pushed.digest.as_str(), &m).await.unwrap().digest, pushed.digest);
    let wrong = Digest::sha256_of(b"not the manifest");
    assert_err!(put(&reg, "team/app", wrong.as_str(), &m).await, RegistryError::DigestInvalid(_));
    assert_err!(reg.get_manifest("team/app", &Reference::Digest(wrong)).await, RegistryError::ManifestUnknown(_));
}

/// A manifest naming a blob its repository does not link is refused with
/// MANIFEST_BLOB_UNKNOWN, even when another repository holds that blob, and nothing of it is
/// stored; once the blob is linked, the same push passes. An index whose child manifest is not
/// in the repository is refused the same way.
#[tokio::test]
async fn a_manifest_referencing_an_unlinked_blob_is_refused() {
    let (_dir, reg) = open(Backend::Memory).await;
    push(&reg, "team/app", b"config").await;
    let layer = push(&reg, "team/other", b"layer elsewhere").await;
    let m = image(b"config", &[b"layer elsewhere"]);
    assert_err!(put(&reg, "team/app", "v1", &m).await, RegistryError::ManifestBlobUnknown(_));
    assert_err!(reg.get_manifest("team/app", &reference("v1")).await, RegistryError::ManifestUnknown(_));
    let digest = Digest::sha256_of(&m);
    assert_err!(reg.get_manifest("team/app", &Reference::Digest(digest)).await, RegistryError::ManifestUnknown(_));
    assert_eq!(reg.tags("team/app", None, 100).await.unwrap(), Vec::<String>::new());

    assert!(reg.mount_blob("team/app", &layer, "team/other").await.unwrap());
    put(&reg, "team/app", "v1", &m).await.unwrap();

    // An index needs its children in the repository.
    let child = image(b"config", &[]);
    let idx = index(&[&child]);
    assert_err!(put(&reg, "team/app", "multi", &idx).await, RegistryError::ManifestBlobUnknown(_));
    let child_digest = Digest::sha256_of(&child);
    assert_err!(put(&reg, "team/other", child_digest.as_str(), &child).await, RegistryError::ManifestBlobUnknown(_));
    put(&reg, "team/app", child_digest.as_str(), &child).await.unwrap();
    put(&reg, "team/app", "multi", &idx).await.unwrap();
    let got = reg.get_manifest("team/app", &reference("multi")).await.unwrap();
    assert_eq!(got.media_type, media::OCI_INDEX);
}

/// Deleting by digest removes the manifest and every tag pointing at it (others stay);
/// deleting a tag leaves its manifest; deleting what is not there is MANIFEST_UNKNOWN.
#[tokio::test]
async fn deleting_a_manifest_by_digest_removes_it_and_its_tags() {
    let (_dir, reg) = open(Backend::Memory).await;
    let (m1, d1) = push_image(&reg, "team/app", "v1", b"one").await;
    put(&reg, "team/app", "latest", &m1).await.unwrap();
    let (_, d2) = push_image(&reg, "team/app", "v2", b"two").await;
    assert_ne!(d1, d2);

    reg.delete_manifest("team/app", &reference("latest")).await.unwrap();
    assert_err!(reg.get_manifest("team/app", &reference("latest")).await, RegistryError::ManifestUnknown(_));
    reg.get_manifest("team/app", &Reference::Digest(d1.clone())).await.unwrap();
    assert_eq!(reg.tags("team/app", None, 100).await.unwrap(), ["v1", "v2"]);

    reg.delete_manifest("team/app", &Reference::Digest(d1.clone())).await.unwrap();
    assert_err!(reg.get_manifest("team/app", &Reference::Digest(d1.clone())).await, RegistryError::ManifestUnknown(_));
    assert_err!(reg.get_manifest("team/app", &reference("v1")).await, RegistryError::ManifestUnknown(_));
    assert_eq!(reg.tags("team/app", None, 100).await.unwrap(), ["v2"]);
    reg.get_manifest("team/app", &reference("v2")).await.unwrap();

    assert_err!(
        reg.delete_manifest("team/app", &Reference::Digest(d1.clone())).await,
        RegistryError::ManifestUnknown(_)
    );
    assert_err!(reg.delete_manifest("team/app", &reference("v1")).await, RegistryError::ManifestUnknown(_));
    assert_err!(reg.delete_manifest("team/none", &reference("v2")).await, RegistryError::ManifestUnknown(_));
}

/// Tags are listed in byte order and paged after `last` (the page's JSON names the repository
/// and, when more follow, the last tag for the `Link` header); a tag pushed or deleted through
/// this process shows at once (the cached list is dropped, not served for its recheck period);
/// an unknown repository is NAME_UNKNOWN.
#[tokio::test]
async fn tags_are_listed_sorted_and_paged() {
    let (_dir, reg) = open(Backend::Memory).await;
    let (m, _) = push_image(&reg, "team/app", "b", b"layer").await;
    for tag in ["a", "c", "1.0"] {
        put(&reg, "team/app", tag, &m).await.unwrap();
    }
    assert_eq!(reg.tags("team/app", None, 100).await.unwrap(), ["1.0", "a", "b", "c"]);
    assert_eq!(reg.tags("team/app", Some("a"), 2).await.unwrap(), ["b", "c"]);
    assert_eq!(reg.tags("team/app", Some("c"), 2).await.unwrap(), Vec::<String>::new());
    assert_eq!(reg.tags("team/app", None, 0).await.unwrap(), Vec::<String>::new());

    let page = reg.tags_page("team/app", None, 2).await.unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&page.body).unwrap();
    assert_eq!(doc, json!({ "name": "team/app", "tags": ["1.0", "a"] }));
    assert_eq!(page.next_after.as_deref(), Some("a"));
    let page = reg.tags_page("team/app", Some("a"), 2).await.unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&page.body).unwrap()["tags"], json!(["b", "c"]));
    assert_eq!(page.next_after, None);

    // Cached now; changes show at once.
    put(&reg, "team/app", "d", &m).await.unwrap();
    assert_eq!(reg.tags("team/app", None, 100).await.unwrap(), ["1.0", "a", "b", "c", "d"]);
    reg.delete_manifest("team/app", &reference("a")).await.unwrap();
    let page = reg.tags_page("team/app", None, 100).await.unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&page.body).unwrap()["tags"], json!(["1.0", "b", "c", "d"]));

    assert_err!(reg.tags("team/none", None, 100).await, RegistryError::NameUnknown(_));
}

/// What `reg` serves for `tag` of team/app: digest and body.
async fn served(reg: &Registry, tag: &str) -> Result<(String, Bytes)> {
    reg.serve_manifest("team/app", &reference(tag)).await.map(|m| (m.digest.clone(), m.body.clone()))
}

/// A manifest served by tag comes from memory, and stays true to the database: a tag moved or
/// deleted through this process shows at once; one moved, or deleted with its manifest by
/// digest, through another node on the same database shows once the repository's tags version
/// is checked again (within `TAGS_RECHECK`), and not before that version moves.
#[tokio::test]
async fn a_manifest_served_by_tag_follows_changes_from_this_and_other_nodes() {
    let (dir, here) = open(Backend::Memory).await;
    let store = Arc::new(InMemory::new());
    let here = Registry::new(here.meta.clone(), BlobStore::multipart(store.clone(), ""), Limits::default());
    let other_meta = Meta::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await.unwrap();
    let other = Registry::new(other_meta, BlobStore::multipart(store, ""), Limits::default());
    let (m1, d1) = push_image(&here, "team/app", "v1", b"one").await;
    assert_eq!(served(&here, "v1").await.unwrap(), (d1.to_string(), Bytes::from(m1.clone())));

    // Through this process: at once.
    let (m2, d2) = push_image(&here, "team/app", "v2", b"two").await;
    put(&here, "team/app", "v1", &m2).await.unwrap();
    assert_eq!(served(&here, "v1").await.unwrap(), (d2.to_string(), Bytes::from(m2.clone())));
    here.delete_manifest("team/app", &reference("v2")).await.unwrap();
    assert_err!(served(&here, "v2").await, RegistryError::ManifestUnknown(_));

    // Through another node: within the recheck period, and served from memory until then.
    put(&other, "team/app", "v1", &m1).await.unwrap();
    let seen_at = std::time::Instant::now();
    loop {
        let (digest, body) = served(&here, "v1").await.unwrap();
        if digest == d1.as_str() {
            assert_eq!(body, Bytes::from(m1.clone()));
            break;
        }
        assert_eq!(digest, d2.as_str());
        assert!(seen_at.elapsed() < super::TAGS_RECHECK * 2, "the move on the other node is not seen");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A manifest deleted by digest on the other node takes its tags with it: the version moves.
    let (_, d3) = push_image(&other, "team/app", "v3", b"three").await;
    put(&other, "team/app", "latest", &image(b"config", &[b"three"])).await.unwrap();
    assert_eq!(served(&here, "latest").await.unwrap().0, d3.as_str());
    other.delete_manifest("team/app", &Reference::Digest(d3)).await.unwrap();
    tokio::time::sleep(super::TAGS_RECHECK + std::time::Duration::from_millis(50)).await;
    assert_err!(served(&here, "latest").await, RegistryError::ManifestUnknown(_));
    assert_err!(served(&here, "v3").await, RegistryError::ManifestUnknown(_));
    assert_eq!(served(&here, "v1").await.unwrap().0, d1.as_str());
}

/// The referrers of a manifest are the manifests of the same repository that name it as their
/// subject, listed as an OCI index with size, artifact type and annotations, and filtered by
/// artifact type on request; a deleted referrer drops out.
#[tokio::test]
async fn referrers_are_the_manifests_naming_a_subject() {
    let (_dir, reg) = open(Backend::Memory).await;
    let (subject, subject_digest) = push_image(&reg, "team/app", "v1", b"layer").await;
    push(&reg, "team/app", EMPTY).await;
    let sig = artifact(&subject, "application/vnd.example.sig", Some(json!({ "org.example.signer": "ci" })));
    let sbom = artifact(&subject, "application/vnd.example.sbom", None);
    let mut pushed = Vec::new();
    for m in [&sig, &sbom] {
        let p = put(&reg, "team/app", Digest::sha256_of(m).as_str(), m).await.unwrap();
        assert_eq!(p.subject.as_ref(), Some(&subject_digest));
        pushed.push(p.digest);
    }

    let all = reg.referrers("team/app", &subject_digest, None).await.unwrap();
    assert_eq!((all["schemaVersion"].clone(), all["mediaType"].clone()), (json!(2), json!(media::OCI_INDEX)));
    let mut listed: Vec<&str> =
        all["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    listed.sort();
    let mut want: Vec<&str> = pushed.iter().map(Digest::as_str).collect();
    want.sort();
    assert_eq!(listed, want);

    let sigs = reg.referrers("team/app", &subject_digest, Some("application/vnd.example.sig")).await.unwrap();
    assert_eq!(
        sigs["manifests"],
        json!([{
            "mediaType": media::OCI_MANIFEST,
            "digest": pushed[0].as_str(),
            "size": sig.len(),
            "artifactType": "application/vnd.example.sig",
            "annotations": { "org.example.signer": "ci" },
        }])
    );
    // Not referrers of anything else, nor seen from another repository.
    assert_eq!(reg.referrers("team/app", &pushed[0], None).await.unwrap()["manifests"], json!([]));
    assert_eq!(reg.referrers("team/none", &subject_digest, None).await.unwrap()["manifests"], json!([]));

    reg.delete_manifest("team/app", &Reference::Digest(pushed[0].clone())).await.unwrap();
    let left = reg.referrers("team/app", &subject_digest, None).await.unwrap();
    assert_eq!(left["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(left["manifests"][0]["digest"], json!(pushed[1].as_str()));
}

// ---- quotas ----------------------------------------------------------------------------------

/// With a namespace quota, a push that fits passes; one that does not is refused with DENIED
/// and links nothing: announced too long (before any byte is stored), streamed past the space
/// left (cut off), and at commit when another push took the space meanwhile (the session ends
/// and no object is stored). Other namespaces are not limited by it; a full namespace refuses
/// a new upload at once.
#[tokio::test]
async fn a_push_over_the_namespace_quota_is_denied() {
    let (_dir, reg) = open(Backend::Memory).await;
    reg.meta.set_quota("team", Some(100)).await.unwrap();
    push(&reg, "team/a", &bytes(60, 1)).await;
    push(&reg, "other/x", &bytes(500, 2)).await;

    let too_big = bytes(50, 3);
    let up = reg.start_upload("team/b").await.unwrap();
    assert_err!(
        reg.append_upload("team/b", &up.id, Some(0), Some(50), body(&[&too_big])).await,
        RegistryError::Denied(_)
    );
    assert_err!(
        reg.append_upload("team/b", &up.id, Some(0), None, body(&[&too_big[..30], &too_big[30..]])).await,
        RegistryError::Denied(_)
    );
    assert_eq!(reg.upload_status("team/b", &up.id).await.unwrap().size, 0, "nothing acknowledged");
    assert_err!(
        reg.finish_upload("team/b", &up.id, &Digest::sha256_of(&too_big), Some(body(&[&too_big]))).await,
        RegistryError::Denied(_)
    );
    assert_err!(reg.stat_blob("team/b", &Digest::sha256_of(&too_big)).await, RegistryError::BlobUnknown(_));
    reg.cancel_upload("team/b", &up.id).await.unwrap();
    assert_eq!(reg.meta.namespace_usage("team").await.unwrap(), 60);

    // What fits passes, up to the last byte.
    let fits = push(&reg, "team/b", &bytes(40, 4)).await;
    reg.stat_blob("team/b", &fits).await.unwrap();
    assert_eq!(reg.meta.namespace_usage("team").await.unwrap(), 100);
    assert_err!(reg.start_upload("team/c").await, RegistryError::Denied(_));

    // Refused at commit: the upload fitted when it streamed, another push finished first.
    reg.meta.set_quota("team", Some(200)).await.unwrap();
    let late = bytes(60, 5);
    let late_digest = Digest::sha256_of(&late);
    let up = reg.start_upload("team/c").await.unwrap();
    reg.append_upload("team/c", &up.id, Some(0), Some(60), body(&[&late])).await.unwrap();
    push(&reg, "team/d", &bytes(60, 6)).await;
    assert_err!(reg.finish_upload("team/c", &up.id, &late_digest, NO_BODY).await, RegistryError::Denied(_));
    assert_err!(reg.stat_blob("team/c", &late_digest).await, RegistryError::BlobUnknown(_));
    assert_err!(reg.upload_status("team/c", &up.id).await, RegistryError::BlobUploadUnknown(_));
    assert!(!reg.blobs.exists(&late_digest).await.unwrap(), "refused before the blob store");
    assert_eq!(reg.meta.blob_size(&late_digest).await.unwrap(), None);
    assert_eq!(reg.meta.namespace_usage("team").await.unwrap(), 160);
    assert_eq!(uploads_left(&reg).await, Vec::<String>::new());
}

/// A namespace's usage counts each of its blobs once however many of its repositories link
/// it, including the repository named like the namespace, and nothing of namespaces whose
/// names merely start the same. A blob the namespace already holds adds nothing: it mounts
/// into a full namespace, while one from another namespace does not; the link transaction's
/// own check (the one that holds against uploads finishing together) agrees.
#[tokio::test]
async fn quota_usage_counts_a_shared_blob_once() {
    let (_dir, reg) = open(Backend::Memory).await;
    let x = push(&reg, "team/a", &bytes(60, 1)).await;
    assert!(reg.mount_blob("team/b", &x, "team/a").await.unwrap());
    push(&reg, "team/b", &bytes(60, 1)).await; // pushed again: still one blob
    push(&reg, "team/a", &bytes(40, 2)).await;
    push(&reg, "team", &bytes(10, 3)).await;
    for other in ["teamx/a", "team-x/a", "tea/m"] {
        push(&reg, other, &bytes(60, 1)).await;
        push(&reg, other, &bytes(7, 9)).await;
    }
    assert_eq!(reg.meta.namespace_usage("team").await.unwrap(), 110);
    assert_eq!(reg.meta.namespace_usage("teamx").await.unwrap(), 67);

    reg.meta.set_quota("team", Some(110)).await.unwrap();
    assert!(reg.mount_blob("team/c", &x, "teamx/a").await.unwrap(), "a blob the namespace holds adds nothing");
    reg.stat_blob("team/c", &x).await.unwrap();
    assert_eq!(reg.meta.namespace_usage("team").await.unwrap(), 110);
    let foreign = Digest::sha256_of(&bytes(7, 9));
    assert_err!(reg.mount_blob("team/c", &foreign, "teamx/a").await, RegistryError::Denied(_));
    assert_err!(reg.stat_blob("team/c", &foreign).await, RegistryError::BlobUnknown(_));

    let id = reg.meta.repository_id("team/c").await.unwrap().unwrap();
    assert_eq!(
        reg.meta.link_blob(id, &foreign, 7, "team").await.unwrap(),
        Linked::OverQuota { quota: 110, usage: 110 }
    );
    assert_eq!(reg.meta.link_blob(id, &x, 60, "team").await.unwrap(), Linked::Done);
}

// ---- garbage collection between a push's look and its link ----------------------------------
//
// A push reads the database, then links in a write transaction. These tests hold SQLite's write
// lock on another connection, so the push's link waits while the test does there what a
// collection could do in between (committed when the lock is released), then let it go on.

/// A write transaction of another connection on the registry's database file.
async fn hold_write_lock(dir: &std::path::Path) -> sqlx::AnyConnection {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
    c.execute("BEGIN IMMEDIATE").await.unwrap();
    c
}

async fn exec(c: &mut sqlx::AnyConnection, sql: &'static str, digest: &Digest) {
    sqlx::query(sql).bind(digest.as_str()).execute(&mut *c).await.unwrap();
}

async fn commit(mut c: sqlx::AnyConnection) {
    sqlx::Executor::execute(&mut c, "COMMIT").await.unwrap();
}

/// The object of a blob on the `Files` backend.
fn object_path(dir: &std::path::Path, digest: &Digest) -> std::path::PathBuf {
    let hex = digest.hex();
    dir.join("storage/blobs").join(digest.algorithm().as_str()).join(&hex[..2]).join(hex)
}

/// Long enough for a push to make its reads and wait for the write lock (if it is slower, the
/// collection comes before its look, and the test passes without testing the race).
const PUSH_LOOKS: std::time::Duration = std::time::Duration::from_secs(1);

/// An upload of a blob the registry records (old, unlinked): after the upload saw the row,
/// garbage collection deletes the object and then the row. The link finds no row and must not
/// write one for the object that is gone: the upload stores its own copy.
#[tokio::test]
async fn an_upload_whose_recorded_blob_gc_takes_before_the_link_stores_its_copy() {
    let (dir, reg) = open(Backend::Files).await;
    let data = bytes(3000, 7);
    let digest = push(&reg, "old/a", &data).await;
    reg.delete_blob("old/a", &digest).await.unwrap();
    let up = reg.start_upload("new/b").await.unwrap();
    reg.append_upload("new/b", &up.id, Some(0), None, body(&[&data])).await.unwrap();
    let mut gc = hold_write_lock(dir.path()).await;
    let (finished, ()) = tokio::join!(reg.finish_upload("new/b", &up.id, &digest, NO_BODY), async {
        tokio::time::sleep(PUSH_LOOKS).await;
        exec(&mut gc, "UPDATE blobs SET deleting = 'gc-test' WHERE digest = $1", &digest).await;
        std::fs::remove_file(object_path(dir.path(), &digest)).unwrap();
        exec(&mut gc, "DELETE FROM blobs WHERE digest = $1", &digest).await;
        commit(gc).await;
    });
    assert_eq!(finished.unwrap(), data.len() as u64);
    assert_eq!(read(&reg, "new/b", &digest).await, data, "the blob is readable where it was pushed");
    assert_eq!(uploads_left(&reg).await, Vec::<String>::new());
}

/// A cross-repository mount: after it saw the source link the blob, garbage collection removes
/// the link (old, unreferenced), the object and the row. The mount links nothing (the client
/// then uploads the blob) and writes no row.
#[tokio::test]
async fn a_mount_whose_blob_gc_takes_before_the_link_mounts_nothing() {
    let (dir, reg) = open(Backend::Files).await;
    let data = bytes(3000, 8);
    let digest = push(&reg, "old/a", &data).await;
    reg.meta.ensure_repository("new/c").await.unwrap();
    let mut gc = hold_write_lock(dir.path()).await;
    let (mounted, ()) = tokio::join!(reg.mount_blob("new/c", &digest, "old/a"), async {
        tokio::time::sleep(PUSH_LOOKS).await;
        exec(&mut gc, "DELETE FROM repository_blobs WHERE digest = $1", &digest).await;
        exec(&mut gc, "UPDATE blobs SET deleting = 'gc-test' WHERE digest = $1", &digest).await;
        std::fs::remove_file(object_path(dir.path(), &digest)).unwrap();
        exec(&mut gc, "DELETE FROM blobs WHERE digest = $1", &digest).await;
        commit(gc).await;
    });
    assert!(!mounted.unwrap(), "nothing to mount: the client uploads the blob");
    assert_err!(reg.stat_blob("new/c", &digest).await, RegistryError::BlobUnknown(_));
    assert_eq!(reg.meta.blob_size(&digest).await.unwrap(), None);
}

/// A new blob's upload has stored the object; before it records the row, the collection's sweep
/// of leftover objects claims the object (a row marked `deleting`), deletes it and drops the
/// claim. The upload must not record a row for it: the push fails, to be made again.
#[tokio::test]
async fn an_upload_whose_stored_object_gc_sweeps_as_a_leftover_records_nothing() {
    let (dir, reg) = open(Backend::Files).await;
    let data = bytes(3000, 9);
    let digest = Digest::sha256_of(&data);
    let up = reg.start_upload("new/d").await.unwrap();
    reg.append_upload("new/d", &up.id, Some(0), None, body(&[&data])).await.unwrap();
    let object = object_path(dir.path(), &digest);
    let mut gc = hold_write_lock(dir.path()).await;
    let (finished, ()) = tokio::join!(reg.finish_upload("new/d", &up.id, &digest, NO_BODY), async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !object.exists() {
            assert!(std::time::Instant::now() < deadline, "the upload did not store its object");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        exec(&mut gc, "INSERT INTO blobs (digest, size, created_at, deleting) VALUES ($1, 0, 0, 'gc-test')", &digest)
            .await;
        std::fs::remove_file(&object).unwrap();
        exec(&mut gc, "DELETE FROM blobs WHERE digest = $1", &digest).await;
        commit(gc).await;
    });
    assert_err!(finished, RegistryError::BlobUploadInvalid(_));
    assert_eq!(reg.meta.blob_size(&digest).await.unwrap(), None, "no row for an object that is gone");
    assert_err!(reg.stat_blob("new/d", &digest).await, RegistryError::BlobUnknown(_));
}

/// A committed blob's object counts as written at the commit, not when its last chunk came (the
/// rename keeps the file's time): the sweep of leftover objects gives it the whole grace period.
#[tokio::test]
async fn a_committed_object_is_dated_at_its_commit() {
    let (dir, reg) = open(Backend::Files).await;
    let data = bytes(3000, 10);
    let digest = Digest::sha256_of(&data);
    let up = reg.start_upload("new/e").await.unwrap();
    reg.append_upload("new/e", &up.id, Some(0), None, body(&[&data])).await.unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let file = std::fs::File::options().write(true).open(dir.path().join("storage/_uploads").join(&up.id)).unwrap();
    file.set_modified(hour_ago).unwrap();
    reg.finish_upload("new/e", &up.id, &digest, NO_BODY).await.unwrap();
    let modified = reg.blobs.blob_modified(&digest).await.unwrap().unwrap();
    assert!(modified >= crate::meta::now() - 60, "object dated {modified}, an hour before the commit");
}

// ---- reads -----------------------------------------------------------------------------------

#[test]
fn byte_ranges_resolve_as_rfc_9110_says() {
    let from = |start, end| ByteRange::From { start, end };
    assert_eq!(from(4, Some(7)).resolve(16), Some(4..8));
    assert_eq!(from(10, None).resolve(16), Some(10..16));
    assert_eq!(from(10, Some(99)).resolve(16), Some(10..16));
    assert_eq!(from(0, Some(u64::MAX)).resolve(16), Some(0..16));
    assert_eq!(from(16, None).resolve(16), None);
    assert_eq!(from(16, Some(20)).resolve(16), None);
    assert_eq!(ByteRange::Suffix(6).resolve(16), Some(10..16));
    assert_eq!(ByteRange::Suffix(16).resolve(16), Some(0..16));
    assert_eq!(ByteRange::Suffix(100).resolve(16), Some(0..16));
    assert_eq!(ByteRange::Suffix(0).resolve(16), None);
    assert_eq!(ByteRange::Suffix(5).resolve(0), None);
    assert_eq!(from(0, None).resolve(0), None);
}
