//! The HTTP API against a real `berth serve`: every endpoint of the distribution spec and the
//! errors it must answer.

mod common;

use common::images::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, tiny};
use common::registry::{Reg, header};
use common::{Berth, client, sha256};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

/// Asserts a spec error: status, code, and the API version header.
async fn expect_error(r: Response, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status, "expected {code}");
    assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0");
    let body: Value = r.json().await.expect("error body is JSON");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
}

/// An image manifest over freshly pushed config and layer blobs ([`tiny`]`(seed)`); its bytes.
async fn image(reg: &Reg, repo: &str, media_type: &str, seed: &str) -> Vec<u8> {
    let image = if media_type == DOCKER_MANIFEST { tiny(seed).docker() } else { tiny(seed) };
    reg.push_blobs(repo, &image).await;
    image.manifest()
}

#[tokio::test]
async fn base_endpoint_and_unknown_paths() {
    let b = Berth::start();
    let c = client();
    let r = c.get(format!("{}/v2/", b.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0");
    let r = c.get(format!("{}/v2", b.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    expect_error(
        c.get(format!("{}/v2/nothing/here", b.base)).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
    )
    .await;
    expect_error(
        c.post(format!("{}/v2/", b.base)).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
    )
    .await;
}

#[tokio::test]
async fn health_and_readiness() {
    let b = Berth::start();
    let c = client();
    let r = c.get(format!("{}/healthz", b.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{}/readyz", b.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"database": "ok", "storage": "ok"}));
}

#[tokio::test]
async fn invalid_names_digests_and_tags() {
    let b = Berth::start();
    let c = client();
    let base = &b.base;
    for path in ["/v2/UPPER/tags/list", "/v2/a..b/tags/list", "/v2/a//b/tags/list", "/v2/-a/blobs/uploads/"] {
        let r = c
            .request(if path.ends_with('/') { Method::POST } else { Method::GET }, format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    }
    let long = "a".repeat(256);
    expect_error(
        c.get(format!("{base}/v2/{long}/tags/list")).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "NAME_INVALID",
    )
    .await;
    // Path traversal never reaches storage.
    let r = c.get(format!("{base}/v2/a/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd")).send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = c.get(format!("{base}/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e")).send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = c.put(format!("{base}/v2/a/manifests/bad*tag")).body("{}").send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let r = c.get(format!("{base}/v2/never/pushed/tags/list")).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    let r = c.post(format!("{base}/v2/a/blobs/uploads/?digest=sha256:nope")).body("x").send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn monolithic_blob_head_get_range_delete() {
    let b = Berth::start();
    let c = client();
    let base = &b.base;
    let data = b"0123456789abcdef".to_vec();
    let digest = sha256(&data);
    let r =
        c.post(format!("{base}/v2/team/app/blobs/uploads/?digest={digest}")).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/team/app/blobs/{digest}"));
    assert_eq!(header(&r, "docker-content-digest"), digest);

    let r = c.head(format!("{base}/v2/team/app/blobs/{digest}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "16");
    assert_eq!(header(&r, "docker-content-digest"), digest);

    let r = c.get(format!("{base}/v2/team/app/blobs/{digest}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);

    let r = c.get(format!("{base}/v2/team/app/blobs/{digest}")).header("range", "bytes=4-7").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 4-7/16");
    assert_eq!(&r.bytes().await.unwrap()[..], b"4567");
    let r = c.get(format!("{base}/v2/team/app/blobs/{digest}")).header("range", "bytes=10-").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], b"abcdef");
    let r = c.get(format!("{base}/v2/team/app/blobs/{digest}")).header("range", "bytes=16-20").send().await.unwrap();
    assert_eq!(header(&r, "content-range"), "bytes */16");
    expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;

    // Knowing the digest is not enough: another repository does not link it.
    let r = c.get(format!("{base}/v2/team/other/blobs/{digest}")).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    let r = c.head(format!("{base}/v2/team/other/blobs/{digest}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = c.delete(format!("{base}/v2/team/app/blobs/{digest}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.get(format!("{base}/v2/team/app/blobs/{digest}")).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    let r = c.delete(format!("{base}/v2/team/app/blobs/{digest}")).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

/// Suffix (`bytes=-N`) and open (`bytes=N-`) ranges are served as 206 with the bytes they
/// name; ranges that select nothing are 416.
#[tokio::test]
async fn blob_ranges_suffix_open_and_unsatisfiable() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    let digest = reg.blob("ranges", b"0123456789abcdef").await;
    let url = format!("{base}/v2/ranges/blobs/{digest}");
    for (range, content_range, body) in [
        ("bytes=-6", "bytes 10-15/16", &b"abcdef"[..]),
        ("bytes=-1", "bytes 15-15/16", b"f"),
        ("bytes=-16", "bytes 0-15/16", b"0123456789abcdef"),
        ("bytes=-100", "bytes 0-15/16", b"0123456789abcdef"),
        ("bytes=10-", "bytes 10-15/16", b"abcdef"),
        ("bytes=0-", "bytes 0-15/16", b"0123456789abcdef"),
        ("bytes=14-99", "bytes 14-15/16", b"ef"),
    ] {
        let r = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(header(&r, "content-range"), content_range, "{range}");
        assert_eq!(header(&r, "content-length"), body.len().to_string(), "{range}");
        assert_eq!(&r.bytes().await.unwrap()[..], body, "{range}");
    }
    for range in ["bytes=-0", "bytes=16-", "bytes=99-"] {
        let r = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(header(&r, "content-range"), "bytes */16", "{range}");
        expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
    }
    // An empty blob has no last byte to serve.
    let empty = reg.blob("ranges", b"").await;
    let r = c.get(format!("{base}/v2/ranges/blobs/{empty}")).header("range", "bytes=-5").send().await.unwrap();
    assert_eq!(header(&r, "content-range"), "bytes */0");
    expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
    // Forms that are ignored (RFC 9110 allows it): the whole blob.
    for range in ["bytes=0-1,4-5", "items=0-1", "bytes=-"] {
        let r = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{range}");
        assert_eq!(&r.bytes().await.unwrap()[..], b"0123456789abcdef", "{range}");
    }
}

#[tokio::test]
async fn chunked_and_streamed_uploads() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    let r = c.post(format!("{base}/v2/chunks/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location");
    assert!(location.starts_with("/v2/chunks/blobs/uploads/"), "relative Location: {location}");
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    assert_eq!(header(&r, "range"), "0-0");
    let url = format!("{base}{location}");

    let r = c
        .patch(&url)
        .header("content-range", "0-4")
        .header("content-type", "application/octet-stream")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-4");
    let url = format!("{base}{}", header(&r, "location"));

    // A chunk that does not start where the upload ends.
    let r = c.patch(&url).header("content-range", "9-12").body("nope").send().await.unwrap();
    assert_eq!(header(&r, "range"), "0-4");
    assert_eq!(format!("{base}{}", header(&r, "location")), url);
    expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-4");
    assert!(header(&r, "location").starts_with("/v2/chunks/blobs/uploads/"));

    // Streamed PATCH without Content-Range.
    let r = c.patch(&url).body(", world").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-11");

    // Final PUT with the last chunk.
    let full = b"hello, world!!".to_vec();
    let digest = sha256(&full);
    let r = c.put(format!("{url}?digest={digest}")).body("!!").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let got = c.get(format!("{base}/v2/chunks/blobs/{digest}")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.to_vec(), full);
    // The session is gone once completed.
    expect_error(c.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;

    // PUT without a final chunk.
    let r = c.post(format!("{base}/v2/chunks/blobs/uploads/")).send().await.unwrap();
    let url = format!("{base}{}", header(&r, "location"));
    c.patch(&url).body("abc").send().await.unwrap();
    let r = c.put(format!("{url}?digest={}", sha256(b"abc"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Pushing a blob that exists again is fine.
    reg.blob("chunks", b"abc").await;
    // sha512 digests.
    let d512 = {
        use sha2::Digest;
        format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"five twelve")))
    };
    let r = c.post(format!("{base}/v2/chunks/blobs/uploads/?digest={d512}")).body("five twelve").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(format!("{base}/v2/chunks/blobs/{d512}")).send().await.unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], b"five twelve");
    // An empty blob.
    reg.blob("chunks", b"").await;
}

/// The closing PUT's final chunk is held to its `Content-Range` as a PATCH is: one that does not
/// start where the upload ends gets 416 with the same headers, nothing is stored, and the
/// session goes on.
#[tokio::test]
async fn a_closing_put_with_a_chunk_out_of_place_is_refused_like_a_patch() {
    let b = Berth::start();
    let c = client();
    let base = &b.base;
    let r = c.post(format!("{base}/v2/closing/blobs/uploads/")).send().await.unwrap();
    let url = format!("{base}{}", header(&r, "location"));
    let r = c.patch(&url).header("content-range", "0-4").body("hello").send().await.unwrap();
    assert_eq!(header(&r, "range"), "0-4");
    let digest = sha256(b"hello world");

    // " world" really is what follows, but the client says it starts at 6 (past the end) or
    // at 3 (over acknowledged bytes).
    for bad in ["6-11", "3-8"] {
        let r = c
            .put(format!("{url}?digest={digest}"))
            .header("content-range", bad)
            .header("content-type", "application/octet-stream")
            .body(" world")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "range"), "0-4", "{bad}");
        assert_eq!(format!("{base}{}", header(&r, "location")), url, "{bad}");
        assert!(!header(&r, "docker-upload-uuid").is_empty(), "{bad}");
        expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
        // Nothing committed, nothing appended.
        let r = c.head(format!("{base}/v2/closing/blobs/{digest}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{bad}");
        assert_eq!(header(&r, "range"), "0-4", "{bad}");
    }
    // A Content-Range whose length disagrees with the body's: the same 416.
    let r =
        c.put(format!("{url}?digest={digest}")).header("content-range", "5-20").body(" world").send().await.unwrap();
    expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
    assert_eq!(header(&c.get(&url).send().await.unwrap(), "range"), "0-4");

    // The session is still usable: the right range completes it.
    let r =
        c.put(format!("{url}?digest={digest}")).header("content-range", "5-10").body(" world").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c.get(format!("{base}/v2/closing/blobs/{digest}")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"hello world");
}

#[tokio::test]
async fn wrong_digest_leaves_nothing_and_cancel_works() {
    let b = Berth::start();
    let c = client();
    let base = &b.base;
    let r = c.post(format!("{base}/v2/x/blobs/uploads/")).send().await.unwrap();
    let url = format!("{base}{}", header(&r, "location"));
    c.patch(&url).body("actual content").send().await.unwrap();
    let claimed = sha256(b"something else");
    let r = c.put(format!("{url}?digest={claimed}")).send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    expect_error(
        c.get(format!("{base}/v2/x/blobs/{claimed}")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    )
    .await;
    let actual = sha256(b"actual content");
    assert_eq!(c.head(format!("{base}/v2/x/blobs/{actual}")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    expect_error(c.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(b.upload_leftovers(), 0, "no upload data left behind");

    // Monolithic with a wrong digest.
    let r = c.post(format!("{base}/v2/x/blobs/uploads/?digest={claimed}")).body("other").send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    // PUT without a digest.
    let r = c.post(format!("{base}/v2/x/blobs/uploads/")).send().await.unwrap();
    let url = format!("{base}{}", header(&r, "location"));
    expect_error(c.put(&url).send().await.unwrap(), StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    // Cancel.
    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(c.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(c.patch(&url).body("x").send().await.unwrap(), StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // An upload of one repository is unknown to another.
    let r = c.post(format!("{base}/v2/x/blobs/uploads/")).send().await.unwrap();
    let location = header(&r, "location");
    let id = location.rsplit('/').next().unwrap();
    let r = c.get(format!("{base}/v2/y/blobs/uploads/{id}")).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = c.get(format!("{base}/v2/x/blobs/uploads/..%2f..%2fetc")).send().await.unwrap();
    assert!(r.status().is_client_error());
}

#[tokio::test]
async fn cross_repository_mount() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    let digest = reg.blob("src/repo", b"shared layer").await;
    let r = c.post(format!("{base}/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/dst/repo/blobs/{digest}"));
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(c.get(format!("{base}/v2/dst/repo/blobs/{digest}")).send().await.unwrap().status(), StatusCode::OK);

    // The source does not link it: a normal upload session instead.
    let r = c.post(format!("{base}/v2/third/blobs/uploads/?mount={digest}&from=elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").starts_with("/v2/third/blobs/uploads/"));
    assert_eq!(c.head(format!("{base}/v2/third/blobs/{digest}")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // Without `from`: the blob exists and (open registry) may be read.
    let r = c.post(format!("{base}/v2/fourth/blobs/uploads/?mount={digest}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // An unknown blob cannot be mounted.
    let unknown = sha256(b"never pushed");
    let r = c.post(format!("{base}/v2/fifth/blobs/uploads/?mount={unknown}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn manifests_by_tag_and_digest() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    for (repo, media_type) in [("m/docker", DOCKER_MANIFEST), ("m/oci", OCI_MANIFEST)] {
        let body = image(&reg, repo, media_type, repo).await;
        let digest = sha256(&body);
        let r = reg.put_manifest(repo, "v1", media_type, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "docker-content-digest"), digest);
        assert_eq!(header(&r, "location"), format!("/v2/{repo}/manifests/{digest}"));

        for reference in ["v1", digest.as_str()] {
            let r = c
                .get(format!("{base}/v2/{repo}/manifests/{reference}"))
                .header("accept", media_type)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "content-type"), media_type);
            assert_eq!(header(&r, "docker-content-digest"), digest);
            assert_eq!(r.bytes().await.unwrap().to_vec(), body, "stored byte for byte");
            let h = c
                .head(format!("{base}/v2/{repo}/manifests/{reference}"))
                .header("accept", media_type)
                .send()
                .await
                .unwrap();
            assert_eq!(h.status(), StatusCode::OK);
            assert_eq!(header(&h, "content-type"), media_type);
            assert_eq!(header(&h, "content-length"), body.len().to_string());
            assert_eq!(header(&h, "docker-content-digest"), digest);
        }
        // Push by digest.
        let r = reg.put_manifest(repo, &digest, media_type, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    // Whitespace matters: the digest is that of the exact bytes.
    let body = image(&reg, "m/ws", OCI_MANIFEST, "ws").await;
    let mut spaced = body.clone();
    spaced.extend_from_slice(b"\n\n");
    let r = reg.put_manifest("m/ws", "spaced", OCI_MANIFEST, &spaced).await;
    assert_eq!(header(&r, "docker-content-digest"), sha256(&spaced));
    // A digest reference that does not match the bytes.
    let r = reg.put_manifest("m/ws", &sha256(b"other"), OCI_MANIFEST, &body).await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // Unknown manifests.
    let r = c.get(format!("{base}/v2/m/ws/manifests/nope")).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = c.get(format!("{base}/v2/m/never/manifests/{}", sha256(b"x"))).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn manifest_validation() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    let r = reg.put_manifest("v/a", "bad", OCI_MANIFEST, b"{not json").await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let r = reg.put_manifest("v/a", "bad", "text/plain", br#"{"schemaVersion":2}"#).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    // Content-Type and mediaType disagree.
    let body = image(&reg, "v/a", DOCKER_MANIFEST, "a").await;
    let r = reg.put_manifest("v/a", "bad", OCI_MANIFEST, &body).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    // Blobs that are not in this repository (they are in v/a only).
    let r = reg.put_manifest("v/b", "x", DOCKER_MANIFEST, &body).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    // Too large.
    let mut huge = br#"{"schemaVersion":2,"annotations":{"x":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 4 * 1024 * 1024));
    huge.extend_from_slice(br#""}}"#);
    let r = reg.put_manifest("v/a", "huge", OCI_MANIFEST, &huge).await;
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID").await;
    // An index whose child is not in the repository.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"absent"), "size": 10}],
    }))
    .unwrap();
    let r = reg.put_manifest("v/a", "idx", OCI_INDEX, &index).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    // Nothing was tagged by the failures.
    let tags: Value = c.get(format!("{base}/v2/v/a/tags/list")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tags["tags"], json!([]));
}

/// A reference that is no valid tag or digest names no manifest: GET and HEAD answer 404
/// MANIFEST_UNKNOWN (as the OCI conformance suite expects), PUT and DELETE still refuse it (400).
#[tokio::test]
async fn a_manifest_by_an_invalid_reference_is_unknown() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    let body = image(&reg, "refs", OCI_MANIFEST, "refs").await;
    assert_eq!(reg.put_manifest("refs", "v1", OCI_MANIFEST, &body).await.status(), StatusCode::CREATED);
    let long = "a".repeat(129);
    for reference in [".INVALID", "bad*tag", "-dash", long.as_str(), "sha256:zz", "md5:abc"] {
        let url = format!("{base}/v2/refs/manifests/{reference}");
        expect_error(c.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let r = c.head(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {reference}");
        // Also in a repository that does not exist.
        let r = c.get(format!("{base}/v2/never/pushed/manifests/{reference}")).send().await.unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    }
    let r = reg.put_manifest("refs", ".INVALID", OCI_MANIFEST, &body).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let r = reg.put_manifest("refs", "sha256:zz", OCI_MANIFEST, &body).await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = c.delete(format!("{base}/v2/refs/manifests/.INVALID")).send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    // An invalid name is still NAME_INVALID.
    let r = c.get(format!("{base}/v2/UPPER/manifests/.INVALID")).send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    let tags: Value = c.get(format!("{base}/v2/refs/tags/list")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));
}

/// `depth` nested arrays, as text (a serde_json `Value` that deep would be built recursively).
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// JSON nested deeper than 64 levels is refused wherever Berth parses JSON: manifests
/// (400 MANIFEST_INVALID, nothing stored) and `/api/v1` bodies (400 INVALID, nothing changed),
/// even where the deep part is a field serde skips.
#[tokio::test]
async fn json_nested_deeper_than_64_levels_is_refused() {
    let b = Berth::start_auth();
    let admin = Reg::admin(&b);
    let put = |reference: &str, body: String| {
        admin
            .req(Method::PUT, &format!("/v2/admin/deep/manifests/{reference}"))
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .send()
    };
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let digest = admin.blob("admin/deep", config).await;
    // A valid image manifest with `extra` (a field nobody reads) `depth` levels deep overall.
    let manifest = |depth: usize| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":{}}},"layers":[],"extra":{}}}"#,
            config.len(),
            nested_arrays(depth - 1)
        )
    };
    assert_eq!(put("ok64", manifest(64)).await.unwrap().status(), StatusCode::CREATED);
    for (tag, depth) in [("deep65", 65), ("deep10000", 10_000)] {
        expect_error(put(tag, manifest(depth)).await.unwrap(), StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    }
    // Deep where serde_json itself gives up (past its 128 levels, in a field it builds): 400 too.
    let annotated = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{digest}","size":{}}},"layers":[],"annotations":{{"a":{}}}}}"#,
        config.len(),
        nested_arrays(200)
    );
    expect_error(put("annotated", annotated).await.unwrap(), StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let tags: Value = admin.send(Method::GET, "/v2/admin/deep/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["ok64"]), "nothing deeper was stored");

    // /api/v1: an organisation and a webhook, each with a deep field the endpoint ignores.
    let api = |method: Method, path: &str, body: String| {
        admin.req(method, &format!("/api/v1{path}")).header("content-type", "application/json").body(body).send()
    };
    let org = |name: &str, depth: usize| format!(r#"{{"name":"{name}","extra":{}}}"#, nested_arrays(depth - 1));
    let r = api(Method::POST, "/namespaces", org("shallow", 64)).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for (name, depth) in [("deep-org", 65), ("deeper-org", 10_000)] {
        let r = api(Method::POST, "/namespaces", org(name, depth)).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "INVALID", "{body}");
        let r = api(Method::GET, &format!("/namespaces/{name}"), String::new()).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{name} was created");
    }
    let hook = |depth: usize| {
        format!(r#"{{"url":"http://127.0.0.1:9/hook","events":["push"],"extra":{}}}"#, nested_arrays(depth - 1))
    };
    let r = api(Method::POST, "/webhooks", hook(100)).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api(Method::POST, "/webhooks", hook(64)).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let hooks: Value = api(Method::GET, "/webhooks", String::new()).await.unwrap().json().await.unwrap();
    assert_eq!(hooks["webhooks"].as_array().map(Vec::len), Some(1), "{hooks}");
    // Malformed JSON is the same 400 INVALID.
    let r = api(Method::POST, "/namespaces", "{oops".into()).await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "INVALID", "{body}");
}

#[tokio::test]
async fn indexes_and_accept_negotiation() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    let amd = image(&reg, "multi", DOCKER_MANIFEST, "amd64").await;
    let arm = image(&reg, "multi", DOCKER_MANIFEST, "arm64").await;
    for m in [&amd, &arm] {
        assert_eq!(reg.put_manifest("multi", &sha256(m), DOCKER_MANIFEST, m).await.status(), StatusCode::CREATED);
    }
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": sha256(&arm), "size": arm.len(), "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "digest": sha256(&amd), "size": amd.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }))
    .unwrap();
    assert_eq!(reg.put_manifest("multi", "latest", DOCKER_LIST, &list).await.status(), StatusCode::CREATED);
    // A client that takes lists gets the list.
    let r = c
        .get(format!("{base}/v2/multi/manifests/latest"))
        .header("accept", format!("{DOCKER_LIST}, {DOCKER_MANIFEST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), DOCKER_LIST);
    assert_eq!(r.bytes().await.unwrap().to_vec(), list);
    // No Accept: whatever is stored.
    let r = c.get(format!("{base}/v2/multi/manifests/latest")).send().await.unwrap();
    assert_eq!(header(&r, "content-type"), DOCKER_LIST);
    // A client that only takes image manifests gets the linux/amd64 one.
    let r = c.get(format!("{base}/v2/multi/manifests/latest")).header("accept", DOCKER_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), sha256(&amd));
    // A client that takes neither.
    let r = c.get(format!("{base}/v2/multi/manifests/latest")).header("accept", OCI_MANIFEST).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;

    // OCI index with an artifact type.
    let oci = image(&reg, "multi", OCI_MANIFEST, "oci").await;
    reg.put_manifest("multi", &sha256(&oci), OCI_MANIFEST, &oci).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": "application/x.bundle",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(&oci), "size": oci.len(), "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    assert_eq!(reg.put_manifest("multi", "oci", OCI_INDEX, &index).await.status(), StatusCode::CREATED);
    let r = c.get(format!("{base}/v2/multi/manifests/oci")).header("accept", OCI_INDEX).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), index);
}

#[tokio::test]
async fn deletes_of_tags_and_manifests() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    let body = image(&reg, "del", OCI_MANIFEST, "del").await;
    let digest = sha256(&body);
    reg.put_manifest("del", "a", OCI_MANIFEST, &body).await;
    reg.put_manifest("del", "b", OCI_MANIFEST, &body).await;
    // Deleting a tag removes the tag only.
    assert_eq!(c.delete(format!("{base}/v2/del/manifests/a")).send().await.unwrap().status(), StatusCode::ACCEPTED);
    expect_error(
        c.get(format!("{base}/v2/del/manifests/a")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(c.get(format!("{base}/v2/del/manifests/b")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(c.get(format!("{base}/v2/del/manifests/{digest}")).send().await.unwrap().status(), StatusCode::OK);
    // Deleting the digest removes the manifest and the tags on it.
    assert_eq!(
        c.delete(format!("{base}/v2/del/manifests/{digest}")).send().await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    expect_error(
        c.get(format!("{base}/v2/del/manifests/{digest}")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        c.get(format!("{base}/v2/del/manifests/b")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        c.delete(format!("{base}/v2/del/manifests/{digest}")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        c.delete(format!("{base}/v2/del/manifests/zzz")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let tags: Value = c.get(format!("{base}/v2/del/tags/list")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tags["tags"], json!([]));
}

#[tokio::test]
async fn referrers_and_subject() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    let subject = image(&reg, "art", OCI_MANIFEST, "subject").await;
    let sd = sha256(&subject);
    reg.put_manifest("art", "v1", OCI_MANIFEST, &subject).await;
    let empty = reg.blob("art", b"{}").await;
    let mut pushed = Vec::new();
    for (i, artifact_type) in ["application/vnd.example.sig", "application/spdx+json"].iter().enumerate() {
        let layer = reg.blob("art", format!("payload {i}").as_bytes()).await;
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": 9}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()},
            "annotations": {"org.example.n": i.to_string()},
        }))
        .unwrap();
        let digest = sha256(&body);
        let r = reg.put_manifest("art", &digest, OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), sd);
        pushed.push((digest, body.len()));
    }
    let r = c.get(format!("{base}/v2/art/referrers/{sd}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[0]["digest"], pushed[0].0);
    assert_eq!(manifests[0]["size"], pushed[0].1);
    assert_eq!(manifests[0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(manifests[0]["annotations"]["org.example.n"], "0");

    let r = c.get(format!("{base}/v2/art/referrers/{sd}?artifactType=application/spdx%2Bjson")).send().await.unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], pushed[1].0);

    // None: an empty index, not a 404.
    let r = c.get(format!("{base}/v2/art/referrers/{}", sha256(b"lonely"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["manifests"], json!([]));
    let r = c.get(format!("{base}/v2/art/referrers/sha256:bad")).send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // Helm-style artifact: any config media type.
    let cfg = reg.blob("charts/app", br#"{"name":"app","version":"1.0.0"}"#).await;
    let chart = reg.blob("charts/app", b"chart tgz").await;
    let helm = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": cfg, "size": 31},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": chart, "size": 9}],
    }))
    .unwrap();
    assert_eq!(reg.put_manifest("charts/app", "1.0.0", OCI_MANIFEST, &helm).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn tags_and_catalog_pagination() {
    let b = Berth::start();
    let reg = Reg::new(&b);
    let (c, base) = (&reg.http, &b.base);
    let body = image(&reg, "pages/one", OCI_MANIFEST, "p").await;
    let mut expected: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    expected.push("Z".into());
    expected.push("latest".into());
    for t in &expected {
        assert_eq!(reg.put_manifest("pages/one", t, OCI_MANIFEST, &body).await.status(), StatusCode::CREATED);
    }
    expected.sort();
    let all: Value = c.get(format!("{base}/v2/pages/one/tags/list")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["name"], "pages/one");
    assert_eq!(all["tags"], json!(expected));

    // Walk pages of 10 by the Link header.
    let mut url = format!("{base}/v2/pages/one/tags/list?n=10");
    let mut seen = Vec::new();
    loop {
        let r = c.get(&url).send().await.unwrap();
        let link = header(&r, "link");
        let page: Value = r.json().await.unwrap();
        seen.extend(page["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()));
        if link.is_empty() {
            break;
        }
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        let next = link.trim_start_matches('<').split('>').next().unwrap();
        assert!(next.starts_with("/v2/pages/one/tags/list?"));
        url = format!("{base}{next}");
    }
    assert_eq!(seen, expected);
    let page: Value =
        c.get(format!("{base}/v2/pages/one/tags/list?n=2&last=t05")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["tags"], json!(["t06", "t07"]));
    let page: Value = c.get(format!("{base}/v2/pages/one/tags/list?n=0")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["tags"], json!([]));
    let r = c.get(format!("{base}/v2/pages/one/tags/list?n=-1")).send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID").await;

    for repo in ["pages/two", "alpha", "zeta/deep/name"] {
        let m = image(&reg, repo, OCI_MANIFEST, repo).await;
        reg.put_manifest(repo, "v1", OCI_MANIFEST, &m).await;
    }
    // A repository with only an upload or a blob is not in the catalog.
    reg.blob("blobonly", b"x").await;
    let cat: Value = c.get(format!("{base}/v2/_catalog")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cat["repositories"], json!(["alpha", "pages/one", "pages/two", "zeta/deep/name"]));
    let r = c.get(format!("{base}/v2/_catalog?n=2")).send().await.unwrap();
    assert_eq!(header(&r, "link"), "</v2/_catalog?last=pages/one&n=2>; rel=\"next\"");
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["repositories"], json!(["alpha", "pages/one"]));
    let r = c.get(format!("{base}/v2/_catalog?n=2&last=pages/one")).send().await.unwrap();
    assert_eq!(header(&r, "link"), "");
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["repositories"], json!(["pages/two", "zeta/deep/name"]));
}

#[tokio::test]
async fn upload_session_survives_restart_and_data_persists() {
    let mut b = Berth::start();
    let reg = Reg::new(&b);
    let c = &reg.http;
    let body = image(&reg, "keep/me", OCI_MANIFEST, "keep").await;
    reg.put_manifest("keep/me", "v1", OCI_MANIFEST, &body).await;
    let r = c.post(format!("{}/v2/keep/me/blobs/uploads/", b.base)).send().await.unwrap();
    let location = header(&r, "location");
    let first = vec![7u8; 3 * 1024 * 1024 + 17];
    let r = c.patch(format!("{}{location}", b.base)).body(first.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    b.restart();
    let c = client(); // the old client's pooled connections died with the server

    let url = format!("{}{location}", b.base);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), format!("0-{}", first.len() - 1));
    let second = vec![9u8; 1024];
    let r = c
        .patch(&url)
        .header("content-range", format!("{}-{}", first.len(), first.len() + 1023))
        .body(second.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut all = first;
    all.extend_from_slice(&second);
    let digest = sha256(&all);
    let r = c.put(format!("{url}?digest={digest}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c.get(format!("{}/v2/keep/me/blobs/{digest}", b.base)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), all.len());
    assert_eq!(sha256(&got), digest);
    let r = c.get(format!("{}/v2/keep/me/manifests/v1", b.base)).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), body);
}

#[tokio::test]
async fn kill_during_upload_leaves_no_partial_blob() {
    use tokio::io::AsyncWriteExt;
    let mut b = Berth::start();
    let c = client();
    let r = c.post(format!("{}/v2/crash/blobs/uploads/", b.base)).send().await.unwrap();
    let location = header(&r, "location");
    let acked = vec![1u8; 1024 * 1024];
    c.patch(format!("{}{location}", b.base)).body(acked.clone()).send().await.unwrap();

    // A PATCH that announces 64 MiB, sends 8 MiB, and is cut off by kill -9.
    let mut s = tokio::net::TcpStream::connect(b.host()).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        b.host(),
        64 * 1024 * 1024
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![2u8; 8 * 1024 * 1024]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    b.restart();
    drop(s);
    let c = client();

    let url = format!("{}{location}", b.base);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), format!("0-{}", acked.len() - 1), "only acknowledged bytes count");
    // The partial content is nowhere visible, and the upload completes with the acked bytes.
    let mut partial = acked.clone();
    partial.extend(std::iter::repeat_n(2u8, 8 * 1024 * 1024));
    assert_eq!(
        c.head(format!("{}/v2/crash/blobs/{}", b.base, sha256(&partial))).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = c.put(format!("{url}?digest={}", sha256(&acked))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got =
        c.get(format!("{}/v2/crash/blobs/{}", b.base, sha256(&acked))).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.to_vec(), acked);
}

#[tokio::test]
async fn a_cut_off_chunk_is_not_acknowledged() {
    use tokio::io::AsyncWriteExt;
    let b = Berth::start();
    let c = client();
    let r = c.post(format!("{}/v2/cut/blobs/uploads/", b.base)).send().await.unwrap();
    let location = header(&r, "location");
    c.patch(format!("{}{location}", b.base)).body("kept").send().await.unwrap();
    {
        let mut s = tokio::net::TcpStream::connect(b.host()).await.unwrap();
        let head = format!("PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[3u8; 5000]).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    } // connection dropped mid-body
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let url = format!("{}{location}", b.base);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "range"), "0-3");
    c.patch(&url).body(" and more").send().await.unwrap();
    let r = c.put(format!("{url}?digest={}", sha256(b"kept and more"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// Chunks are not flushed one by one, so a power loss can leave an upload file shorter than the
/// size the database acknowledged: that upload answers BLOB_UPLOAD_UNKNOWN (the client starts
/// again), never a 500 and never a blob with a hole. On S3 the same holds when what the
/// database records of the upload is gone from the bucket: its tail object. (A multipart upload
/// aborted behind Berth's back — S3's 404 `NoSuchUpload` — is mapped the same way; moto answers
/// that case with a 500 of its own, so it is not tested here.)
#[tokio::test]
async fn an_upload_that_lost_acknowledged_bytes_must_start_again() {
    let b = Berth::start();
    if b.upload_leftovers_dir().is_none() {
        return lost_s3_upload_state(&b).await;
    }
    let reg = Reg::new(&b);
    let c = &reg.http;
    let r = c.post(format!("{}/v2/lost/blobs/uploads/", b.base)).send().await.unwrap();
    let location = header(&r, "location");
    let url = format!("{}{location}", b.base);
    let r = c.patch(&url).body(vec![7u8; 10_000]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // The power loss: the file keeps less than was acknowledged.
    let dir = b.upload_leftovers_dir().unwrap();
    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(4_000).unwrap();
    let r = c.patch(&url).body(vec![7u8; 10]).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = c.put(format!("{url}?digest={}", sha256(&[7u8; 10_000]))).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let digest = sha256(&[7u8; 10_000]);
    let r = c.head(format!("{}/v2/lost/blobs/{digest}", b.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a blob with a hole was committed");
    // Starting again works.
    assert_eq!(reg.blob("lost", &[7u8; 10_000]).await, digest);
}

/// The S3 half of [`an_upload_that_lost_acknowledged_bytes_must_start_again`].
async fn lost_s3_upload_state(b: &Berth) {
    let common::Backend::S3Postgres { prefix, .. } = b.backend() else { unreachable!() };
    let reg = Reg::new(b);
    let c = &reg.http;
    let keys_under = |key_prefix: &str| -> Vec<String> {
        let listing = b.backend().s3_listing(key_prefix);
        listing.split("<Key>").skip(1).map(|k| k.split("</Key>").next().unwrap().to_string()).collect()
    };
    // A small upload lives in its tail object: deleted behind Berth's back.
    let r = c.post(format!("{}/v2/lost/blobs/uploads/", b.base)).send().await.unwrap();
    let url = format!("{}{}", b.base, header(&r, "location"));
    let r = c.patch(&url).body(vec![7u8; 10_000]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let tails = keys_under(&format!("{prefix}/_uploads/"));
    assert_eq!(tails.len(), 1, "one tail object: {tails:?}");
    let (status, _) = b.backend().s3_request("DELETE", &tails[0], None);
    assert_eq!(status, 204);
    let r = c.patch(&url).body(vec![7u8; 10]).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = c.put(format!("{url}?digest={}", sha256(&[7u8; 10_000]))).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;

    let r = c.head(format!("{}/v2/lost/blobs/{}", b.base, sha256(&[7u8; 10_000]))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a blob with a hole was committed");
    // Starting again works.
    assert_eq!(reg.blob("lost", &[7u8; 10_000]).await, sha256(&[7u8; 10_000]));
}

#[tokio::test]
async fn large_blob_streams_both_ways() {
    let b = Berth::start();
    let c = client();
    // 64 MiB of varied bytes, sent in one streamed PATCH then read back.
    let data: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let digest = sha256(&data);
    let r = c.post(format!("{}/v2/big/blobs/uploads/", b.base)).send().await.unwrap();
    let url = format!("{}{}", b.base, header(&r, "location"));
    let r = c.patch(&url).body(data.clone()).send().await.unwrap();
    assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
    assert_eq!(c.put(format!("{url}?digest={digest}")).send().await.unwrap().status(), StatusCode::CREATED);
    let got = c.get(format!("{}/v2/big/blobs/{digest}", b.base)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256(&got), digest);
    let r = c
        .get(format!("{}/v2/big/blobs/{digest}", b.base))
        .header("range", "bytes=40000000-40000009")
        .send()
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], &data[40000000..40000010]);
}
