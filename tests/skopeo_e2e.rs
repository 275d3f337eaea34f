//! End to end with skopeo: OCI image layouts written by the test are copied into a running
//! `berth` and back out, and must come back byte for byte.
//!
//! Needs `skopeo` and `tar` on PATH; a missing tool is a failure, not a skip.

mod common;

use std::process::Output;

use common::images::{OCI_INDEX, OCI_MANIFEST};
use common::skopeo::{Layout, Skopeo, layout_ref, manifest_blobs, read_blob};
use common::{Berth, output_text, sha256};

/// Asserts that a `skopeo copy` succeeded.
fn copied(out: Output) {
    assert!(out.status.success(), "skopeo copy:\n{}", output_text(&out));
}

#[test]
fn oci_layout_round_trip_tags_and_delete() {
    let skopeo = Skopeo::new();
    let berth = Berth::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut src = Layout::new(tmp.path().join("src"));
    let v1 = src.image("amd64", "skopeo v1", true);
    let v2 = src.image("amd64", "skopeo v2", false);
    src.tag("v1", &v1);
    src.tag("v2", &v2);
    let v1_bytes = read_blob(&src.dir, &v1.digest);

    let repo = format!("docker://{}/skopeo/test", berth.host());
    copied(skopeo.copy_in(&src.transport("v1"), &format!("{repo}:v1"), None, false));
    copied(skopeo.copy_in(&src.transport("v2"), &format!("{repo}:v2"), None, false));

    // The registry serves the very bytes that were pushed.
    assert_eq!(skopeo.inspect_raw(&format!("{repo}:v1")), v1_bytes);
    assert_eq!(skopeo.inspect_raw(&format!("{repo}@{}", v1.digest)), v1_bytes);

    // Copy back out: same manifest digest, same blobs.
    let out = tmp.path().join("out");
    copied(skopeo.copy_out(&format!("{repo}:v1"), &format!("oci:{}:v1", out.display()), None, false));
    let got = layout_ref(&out, "v1");
    assert_eq!(got["digest"], v1.digest.as_str(), "manifest digest after round trip");
    assert_eq!(got["mediaType"], OCI_MANIFEST);
    assert_eq!(got["size"], v1.size);
    assert_eq!(read_blob(&out, &v1.digest), v1_bytes, "manifest bytes after round trip");
    for digest in manifest_blobs(&v1_bytes) {
        assert_eq!(read_blob(&out, &digest), read_blob(&src.dir, &digest), "blob {digest}");
    }

    // The plain-tar layer of v2 comes back unchanged too.
    copied(skopeo.copy_out(&format!("{repo}:v2"), &format!("oci:{}:v2", out.display()), None, false));
    assert_eq!(layout_ref(&out, "v2")["digest"], v2.digest.as_str());
    let v2_bytes = read_blob(&src.dir, &v2.digest);
    for digest in manifest_blobs(&v2_bytes) {
        assert_eq!(read_blob(&out, &digest), read_blob(&src.dir, &digest), "blob {digest}");
    }

    // inspect and list-tags.
    let info = skopeo.inspect_json(&format!("{repo}:v1"), None);
    assert_eq!(info["Digest"], v1.digest.as_str(), "skopeo inspect: {info}");
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    let layers: Vec<String> = serde_json::from_value(info["Layers"].clone()).expect("Layers in inspect output");
    assert_eq!(layers, manifest_blobs(&v1_bytes)[1..]);
    assert_eq!(skopeo.inspect_json(&format!("{repo}:v2"), None)["Digest"], v2.digest.as_str());
    assert_eq!(skopeo.list_tags(&repo, None), ["v1", "v2"]);

    // Delete v1 (skopeo resolves the tag and deletes the manifest by digest).
    skopeo.run(&["delete", "--tls-verify=false", &format!("{repo}:v1")]);
    for reference in [format!("{repo}:v1"), format!("{repo}@{}", v1.digest)] {
        let out = skopeo.inspect(&reference, None, false);
        assert!(
            !out.status.success(),
            "inspect {reference} after delete succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            stderr.contains("manifest unknown") || stderr.contains("not found"),
            "inspect {reference} fails because the manifest is gone: {stderr}"
        );
    }
    assert_eq!(skopeo.list_tags(&repo, None), ["v2"], "only v2 is left");
    assert_eq!(skopeo.inspect_json(&format!("{repo}:v2"), None)["Digest"], v2.digest.as_str());
}

#[test]
fn oci_index_round_trip() {
    let skopeo = Skopeo::new();
    let berth = Berth::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut src = Layout::new(tmp.path().join("src"));
    let amd64 = src.image("amd64", "multi amd64", true);
    let arm64 = src.image("arm64", "multi arm64", true);
    let index = src.index(&[(amd64.clone(), "amd64"), (arm64.clone(), "arm64")]);
    src.tag("multi", &index);
    let index_bytes = read_blob(&src.dir, &index.digest);

    let dest = format!("docker://{}/skopeo/multi:v1", berth.host());
    copied(skopeo.copy_in(&src.transport("multi"), &dest, None, true));

    // The index comes back byte for byte, by tag and by digest.
    let raw = skopeo.inspect_raw(&dest);
    assert_eq!(sha256(&raw), index.digest, "index digest served by tag");
    assert_eq!(raw, index_bytes);
    let by_digest = format!("docker://{}/skopeo/multi@{}", berth.host(), index.digest);
    assert_eq!(skopeo.inspect_raw(&by_digest), index_bytes);

    // Every image of the index was pushed, with its own architecture.
    for (desc, arch) in [(&amd64, "amd64"), (&arm64, "arm64")] {
        let reference = format!("docker://{}/skopeo/multi@{}", berth.host(), desc.digest);
        assert_eq!(skopeo.inspect_raw(&reference), read_blob(&src.dir, &desc.digest));
        let info = skopeo.inspect_json(&reference, None);
        assert_eq!(info["Architecture"], arch, "{reference}: {info}");
        assert_eq!(info["Digest"], desc.digest.as_str());
    }

    // Copy everything back out: same index, same manifests, same blobs.
    let out = tmp.path().join("out");
    copied(skopeo.copy_out(&dest, &format!("oci:{}:multi", out.display()), None, true));
    let got = layout_ref(&out, "multi");
    assert_eq!(got["digest"], index.digest.as_str());
    assert_eq!(got["mediaType"], OCI_INDEX);
    assert_eq!(read_blob(&out, &index.digest), index_bytes);
    for desc in [&amd64, &arm64] {
        let manifest = read_blob(&out, &desc.digest);
        assert_eq!(manifest, read_blob(&src.dir, &desc.digest));
        for digest in manifest_blobs(&manifest) {
            assert_eq!(read_blob(&out, &digest), read_blob(&src.dir, &digest), "blob {digest}");
        }
    }
}
