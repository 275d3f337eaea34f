//! End to end with skopeo: OCI image layouts written by the test are copied into a running
//! `berth` and back out, and must come back byte for byte.
//!
//! Needs `skopeo`, `tar` and `gzip` on PATH; a missing tool is a failure, not a skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Berth, run, sha256};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Panics with an actionable message unless every tool the tests need is present.
fn require_tools() {
    for (tool, arg) in [("skopeo", "--version"), ("tar", "--version"), ("gzip", "--version")] {
        match Command::new(tool).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("`{tool} {arg}` failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr)),
            Err(e) => {
                panic!("skopeo e2e tests need `{tool}` on PATH (apt-get install {tool}): {e}")
            }
        }
    }
}

/// Runs `skopeo ARGS`, panicking with its output on failure; returns stdout.
fn skopeo(args: &[&str]) -> String {
    run(Command::new("skopeo").args(args))
}

/// Runs `skopeo ARGS` and returns its output whatever the exit status.
fn skopeo_output(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().expect("run skopeo")
}

/// A descriptor as it appears in manifests and indexes.
#[derive(Clone, Debug)]
struct Desc {
    media_type: String,
    digest: String,
    size: usize,
}

impl Desc {
    fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// An OCI image layout directory under construction.
struct Layout {
    dir: PathBuf,
    /// Entries of `index.json`.
    refs: Vec<Value>,
}

impl Layout {
    fn new(dir: PathBuf) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir, refs: Vec::new() }
    }

    /// Stores a blob and returns its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> Desc {
        let digest = sha256(bytes);
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).unwrap();
        Desc { media_type: media_type.to_string(), digest, size: bytes.len() }
    }

    /// Stores a one-layer image for `arch` whose file `/hello` holds `content`; the layer is
    /// gzipped when `gzip` is set. Returns the manifest descriptor.
    fn image(&self, arch: &str, content: &str, gzip: bool) -> Desc {
        let tar = layer_tar(content);
        let diff_id = sha256(&tar);
        let layer = if gzip { self.blob(OCI_LAYER_GZIP, &gzip_bytes(&tar)) } else { self.blob(OCI_LAYER_TAR, &tar) };
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh", "-c", "cat /hello"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "berth skopeo e2e test"}],
        });
        let config = self.blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.json(),
            "layers": [layer.json()],
            "annotations": {"org.opencontainers.image.description": content},
        });
        self.blob(OCI_MANIFEST, &serde_json::to_vec_pretty(&manifest).unwrap())
    }

    /// Stores an image index over `manifests` (each with its platform architecture).
    fn index(&self, manifests: &[(Desc, &str)]) -> Desc {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(d, arch)| {
                let mut v = d.json();
                v["platform"] = json!({"architecture": arch, "os": "linux"});
                v
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        self.blob(OCI_INDEX, &serde_json::to_vec(&index).unwrap())
    }

    /// Names `desc` as `name` in `index.json` and rewrites it.
    fn tag(&mut self, name: &str, desc: &Desc) {
        let mut v = desc.json();
        v["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        self.refs.push(v);
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// `oci:DIR:NAME` for skopeo.
    fn transport(&self, name: &str) -> String {
        format!("oci:{}:{name}", self.dir.display())
    }
}

/// A deterministic tar holding `/hello` with `content`, made by GNU tar.
fn layer_tar(content: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("hello"), format!("{content}\n")).unwrap();
    let out = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "-C",
        ])
        .arg(tmp.path())
        .args(["-cf", "-", "hello"])
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `gzip -n` of bytes (no name or time in the header, so deterministic).
fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

/// Reads the blob `digest` from a layout, checking that its bytes hash to the digest.
fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = dir.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(sha256(&bytes), digest, "{} is corrupt", path.display());
    bytes
}

/// The descriptor `index.json` of a layout names `name`.
fn layout_ref(dir: &Path, name: &str) -> Value {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {}", dir.display()))
        .clone()
}

/// Digests of a manifest's config and layers.
fn manifest_blobs(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        out.push(l["digest"].as_str().unwrap().to_string());
    }
    out
}

/// `skopeo copy` from the layout to `dest` (a `docker://` reference), keeping digests.
fn copy_in(src: &str, dest: &str, all: bool) {
    let mut args = vec!["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    args.extend([src, dest]);
    skopeo(&args);
}

/// `skopeo copy` from `src` (a `docker://` reference) into a layout.
fn copy_out(src: &str, dest: &str, all: bool) {
    let mut args = vec!["copy", "--quiet", "--preserve-digests", "--src-tls-verify=false"];
    if all {
        args.push("--all");
    }
    args.extend([src, dest]);
    skopeo(&args);
}

fn inspect(reference: &str) -> Value {
    serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", reference])).unwrap()
}

fn inspect_raw(reference: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", reference])
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo inspect --raw {reference}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn list_tags(repo: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&skopeo(&["list-tags", "--tls-verify=false", repo])).unwrap();
    let mut tags: Vec<String> = v["Tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no Tags in list-tags output: {v}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

#[test]
fn oci_layout_round_trip_tags_and_delete() {
    require_tools();
    let berth = Berth::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut src = Layout::new(tmp.path().join("src"));
    let v1 = src.image("amd64", "skopeo v1", true);
    let v2 = src.image("amd64", "skopeo v2", false);
    src.tag("v1", &v1);
    src.tag("v2", &v2);
    let v1_bytes = read_blob(&src.dir, &v1.digest);

    let repo = format!("docker://{}/skopeo/test", berth.host());
    copy_in(&src.transport("v1"), &format!("{repo}:v1"), false);
    copy_in(&src.transport("v2"), &format!("{repo}:v2"), false);

    // The registry serves the very bytes that were pushed.
    assert_eq!(inspect_raw(&format!("{repo}:v1")), v1_bytes);
    assert_eq!(inspect_raw(&format!("{repo}@{}", v1.digest)), v1_bytes);

    // Copy back out: same manifest digest, same blobs.
    let out = tmp.path().join("out");
    copy_out(&format!("{repo}:v1"), &format!("oci:{}:v1", out.display()), false);
    let got = layout_ref(&out, "v1");
    assert_eq!(got["digest"], v1.digest.as_str(), "manifest digest after round trip");
    assert_eq!(got["mediaType"], OCI_MANIFEST);
    assert_eq!(got["size"], v1.size);
    assert_eq!(read_blob(&out, &v1.digest), v1_bytes, "manifest bytes after round trip");
    for digest in manifest_blobs(&v1_bytes) {
        assert_eq!(read_blob(&out, &digest), read_blob(&src.dir, &digest), "blob {digest}");
    }

    // The plain-tar layer of v2 comes back unchanged too.
    copy_out(&format!("{repo}:v2"), &format!("oci:{}:v2", out.display()), false);
    assert_eq!(layout_ref(&out, "v2")["digest"], v2.digest.as_str());
    let v2_bytes = read_blob(&src.dir, &v2.digest);
    for digest in manifest_blobs(&v2_bytes) {
        assert_eq!(read_blob(&out, &digest), read_blob(&src.dir, &digest), "blob {digest}");
    }

    // inspect and list-tags.
    let info = inspect(&format!("{repo}:v1"));
    assert_eq!(info["Digest"], v1.digest.as_str(), "skopeo inspect: {info}");
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    let layers: Vec<String> = serde_json::from_value(info["Layers"].clone()).expect("Layers in inspect output");
    assert_eq!(layers, manifest_blobs(&v1_bytes)[1..]);
    assert_eq!(inspect(&format!("{repo}:v2"))["Digest"], v2.digest.as_str());
    assert_eq!(list_tags(&repo), ["v1", "v2"]);

    // Delete v1 (skopeo resolves the tag and deletes the manifest by digest).
    skopeo(&["delete", "--tls-verify=false", &format!("{repo}:v1")]);
    for reference in [format!("{repo}:v1"), format!("{repo}@{}", v1.digest)] {
        let out = skopeo_output(&["inspect", "--tls-verify=false", &reference]);
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
    assert_eq!(list_tags(&repo), ["v2"], "only v2 is left");
    assert_eq!(inspect(&format!("{repo}:v2"))["Digest"], v2.digest.as_str());
}

#[test]
fn oci_index_round_trip() {
    require_tools();
    let berth = Berth::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut src = Layout::new(tmp.path().join("src"));
    let amd64 = src.image("amd64", "multi amd64", true);
    let arm64 = src.image("arm64", "multi arm64", true);
    let index = src.index(&[(amd64.clone(), "amd64"), (arm64.clone(), "arm64")]);
    src.tag("multi", &index);
    let index_bytes = read_blob(&src.dir, &index.digest);

    let dest = format!("docker://{}/skopeo/multi:v1", berth.host());
    copy_in(&src.transport("multi"), &dest, true);

    // The index comes back byte for byte, by tag and by digest.
    let raw = inspect_raw(&dest);
    assert_eq!(sha256(&raw), index.digest, "index digest served by tag");
    assert_eq!(raw, index_bytes);
    let by_digest = format!("docker://{}/skopeo/multi@{}", berth.host(), index.digest);
    assert_eq!(inspect_raw(&by_digest), index_bytes);

    // Every image of the index was pushed, with its own architecture.
    for (desc, arch) in [(&amd64, "amd64"), (&arm64, "arm64")] {
        let reference = format!("docker://{}/skopeo/multi@{}", berth.host(), desc.digest);
        assert_eq!(inspect_raw(&reference), read_blob(&src.dir, &desc.digest));
        let info = inspect(&reference);
        assert_eq!(info["Architecture"], arch, "{reference}: {info}");
        assert_eq!(info["Digest"], desc.digest.as_str());
    }

    // Copy everything back out: same index, same manifests, same blobs.
    let out = tmp.path().join("out");
    copy_out(&dest, &format!("oci:{}:multi", out.display()), true);
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
