//! Layers above S3's 5 GiB single-copy limit: an upload's commit on S3 copies the completed
//! upload to the blob's key, and above `storage.s3.multipart_copy_threshold` that copy is a
//! multipart copy (`UploadPartCopy` by ranges). Run here with a threshold of 6 MiB and 5 MiB
//! parts against the test S3 server (moto, which `scripts/test` starts), so small blobs take the
//! path a 6 GiB layer takes on AWS. (`bench/s3-large-bench.sh` pushes one real blob above 5 GiB.)

mod common;

use std::sync::Arc;

use berth::storage::s3::LargeCopy;
use berth::storage::s3_copy::{BucketAddress, S3MultipartCopy};
use common::registry::{Reg, header};
use common::{Backend, Berth, block_on, sha256};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use reqwest::{Method, StatusCode};

const MIB: usize = 1024 * 1024;

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed).collect()
}

/// The endpoint, bucket and key prefix of an S3 backend.
fn s3_of(backend: &Backend) -> (String, String, String) {
    match backend {
        Backend::S3Postgres { endpoint, bucket, prefix, .. } => (endpoint.clone(), bucket.clone(), prefix.clone()),
        Backend::FsSqlite => unreachable!(),
    }
}

/// `ETag` of an object, from a listing (moto answers unsigned requests; it answers a HEAD of an
/// object made by `CopyObject` with 403), `None` when it does not exist.
async fn etag(endpoint: &str, bucket: &str, key: &str) -> Option<String> {
    let (status, xml) =
        common::s3_request(endpoint, bucket, "GET", &format!("?list-type=2&prefix={}", key.replace('/', "%2F")), None);
    let xml = String::from_utf8_lossy(&xml).into_owned();
    assert_eq!(status, 200, "listing {key}: {xml}");
    let at = xml.find(&format!("<Key>{key}</Key>"))?;
    let rest = &xml[at..];
    let start = rest.find("<ETag>")? + "<ETag>".len();
    let end = rest[start..].find("</ETag>")? + start;
    Some(rest[start..end].replace("&quot;", "\""))
}

/// The multipart uploads in progress under `prefix` (`ListMultipartUploads`).
async fn uploads_in_progress(endpoint: &str, bucket: &str, prefix: &str) -> usize {
    let (status, xml) =
        common::s3_request(endpoint, bucket, "GET", &format!("?prefix={}&uploads=", prefix.replace('/', "%2F")), None);
    let xml = String::from_utf8_lossy(&xml).into_owned();
    assert_eq!(status, 200, "multipart uploads under {prefix}: {xml}");
    xml.matches("<Upload>").count()
}

fn blob_key(prefix: &str, digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap();
    format!("{prefix}/blobs/sha256/{}/{hex}", &hex[..2])
}

/// Pushed monolithically and in chunks, blobs above the threshold are committed as multipart
/// copies (the object's ETag ends in `-<parts>`, which a single `CopyObject` never gives) and
/// pull back whole; blobs below it are copied in one request; no upload object or multipart
/// upload is left.
#[test]
fn blobs_above_the_threshold_are_committed_by_multipart_copy() {
    let backend = Backend::s3_postgres(None);
    let (endpoint, bucket, prefix) = s3_of(&backend);
    let b = Berth::start_on(
        backend,
        &[
            ("BERTH_AUTH__ENABLED", "false"),
            ("BERTH_STORAGE__S3__MULTIPART_COPY_THRESHOLD", &(6 * MIB).to_string()),
            ("BERTH_STORAGE__S3__MULTIPART_COPY_PART_SIZE", &(5 * MIB).to_string()),
            ("BERTH_STORAGE__S3__MULTIPART_COPY_CONCURRENCY", "3"),
        ],
    );
    let reg = Reg::new(&b);
    block_on(async {
        // Monolithic: 20 MiB + 123 bytes → 5 parts of the copy.
        let mono = bytes(20 * MIB + 123, 1);
        let r = reg.push_blob("big/mono", &mono).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        let mono_digest = sha256(&mono);

        // Chunked: PATCHes of 3 MiB + 1 byte (the upload's own 8 MiB parts and a tail between),
        // 17 MiB in all → 4 parts of the copy.
        let chunked = bytes(17 * MIB, 2);
        let r = reg.start_upload("big/chunked").await;
        let mut location = header(&r, "location");
        let mut offset = 0;
        for chunk in chunked.chunks(3 * MIB + 1) {
            let range = format!("{}-{}", offset, offset + chunk.len() - 1);
            let r = reg.patch_upload(&location, chunk, Some(&range)).await;
            assert_eq!(r.status(), StatusCode::ACCEPTED, "PATCH {range}");
            location = header(&r, "location");
            offset += chunk.len();
        }
        let chunked_digest = sha256(&chunked);
        let r = reg.finish_upload(&location, &chunked_digest, &[]).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());

        // Below the threshold (above one 8 MiB upload part, so it is copied): one request.
        let small = bytes(6 * MIB, 3);
        let small_digest = reg.upload("big/small", &small).await;

        for (repo, digest, data, parts) in [
            ("big/mono", &mono_digest, &mono, Some(5)),
            ("big/chunked", &chunked_digest, &chunked, Some(4)),
            ("big/small", &small_digest, &small, None),
        ] {
            assert!(reg.get_blob(repo, digest).await == *data, "{repo}: the bytes pulled differ");
            let etag = etag(&endpoint, &bucket, &blob_key(&prefix, digest)).await.expect("the blob's object");
            match parts {
                Some(n) => assert!(etag.ends_with(&format!("-{n}\"")), "{repo}: ETag {etag}: not a {n}-part object"),
                None => assert!(!etag.contains('-'), "{repo}: ETag {etag}: a multipart object"),
            }
            // A range read crosses part boundaries of the copy.
            let r = reg
                .req(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
                .header("range", format!("bytes={}-{}", 5 * MIB - 10, 5 * MIB + 9))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            assert!(r.bytes().await.unwrap() == data[5 * MIB - 10..5 * MIB + 10]);
        }
        assert_eq!(uploads_in_progress(&endpoint, &bucket, &prefix).await, 0, "multipart uploads left behind");
    });
    assert_eq!(b.upload_leftovers(), 0, "upload objects left behind");
}

/// The copy on its own against the S3 server: a source that vanished fails the copy, which is
/// aborted (nothing at the destination, no multipart upload left); a good one publishes the
/// object whole.
#[test]
fn a_failed_multipart_copy_leaves_nothing() {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let endpoint = env("BERTH_TEST_S3_ENDPOINT", "http://127.0.0.1:9010");
    let bucket = env("BERTH_TEST_S3_BUCKET", "berth-test");
    let prefix = format!("copy-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let builder = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_endpoint(&endpoint)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_access_key_id(env("BERTH_TEST_S3_ACCESS_KEY", "AK"))
        .with_secret_access_key(env("BERTH_TEST_S3_SECRET_KEY", "SK"));
    let address = BucketAddress::of(&builder).unwrap();
    let s3 = Arc::new(builder.build().unwrap());
    let copy = S3MultipartCopy::new(s3.clone(), address, 5 * MIB as u64, 2, 1).unwrap();
    block_on(async {
        let source = Path::from(format!("{prefix}/src"));
        let data = bytes(12 * MIB + 7, 4);
        s3.put(&source, PutPayload::from(data.clone())).await.unwrap();

        // The source is gone (as if deleted between the upload's completion and the copy).
        let gone = Path::from(format!("{prefix}/gone"));
        let dest = Path::from(format!("{prefix}/dest-failed"));
        let err = copy.copy(&gone, &dest, data.len() as u64).await.unwrap_err();
        eprintln!("the copy of a missing source failed as it must: {err}");
        assert_eq!(etag(&endpoint, &bucket, dest.as_ref()).await, None, "a failed copy published an object");
        assert_eq!(uploads_in_progress(&endpoint, &bucket, &prefix).await, 0, "the failed copy was not aborted");

        // A good copy: 3 parts, the bytes whole.
        let dest = Path::from(format!("{prefix}/dest"));
        copy.copy(&source, &dest, data.len() as u64).await.unwrap();
        let tag = etag(&endpoint, &bucket, dest.as_ref()).await.unwrap();
        assert!(tag.ends_with("-3\""), "ETag {tag}");
        let got = s3.get(&dest).await.unwrap().bytes().await.unwrap();
        assert!(got == data, "the copy differs");
        assert_eq!(uploads_in_progress(&endpoint, &bucket, &prefix).await, 0);
    });
}
