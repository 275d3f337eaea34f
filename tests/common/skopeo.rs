//! skopeo and the OCI image layouts it copies from and to: [`Layout`] writes a layout on disk
//! (blobs, images, indexes, tags), [`Skopeo`] runs the tool with an auth file of its own.
//!
//! Needs `skopeo` and `tar` on PATH; a missing tool is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use super::images::{OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST, gzip};
use super::{output_text, sha256};

/// A descriptor as it appears in manifests and indexes.
#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
}

impl Desc {
    pub fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// An OCI image layout directory under construction.
pub struct Layout {
    pub dir: PathBuf,
    /// Entries of `index.json`.
    refs: Vec<Value>,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir, refs: Vec::new() }
    }

    /// Stores a blob and returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Desc {
        let digest = sha256(bytes);
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).unwrap();
        Desc { media_type: media_type.to_string(), digest, size: bytes.len() }
    }

    /// Stores a one-layer image for `arch` whose file `/hello` holds `content`; the layer is
    /// gzipped when `gzip` is set. Returns the manifest descriptor.
    pub fn image(&self, arch: &str, content: &str, gzipped: bool) -> Desc {
        let tar = hello_tar(content);
        let diff_id = sha256(&tar);
        let layer = if gzipped { self.blob(OCI_LAYER_GZIP, &gzip(&tar)) } else { self.blob(OCI_LAYER, &tar) };
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
    pub fn index(&self, manifests: &[(Desc, &str)]) -> Desc {
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
    pub fn tag(&mut self, name: &str, desc: &Desc) {
        let mut v = desc.json();
        v["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        self.refs.push(v);
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// `oci:DIR:NAME` for skopeo.
    pub fn transport(&self, name: &str) -> String {
        format!("oci:{}:{name}", self.dir.display())
    }
}

/// A deterministic tar holding one file, `/hello`, with `content` and a newline, made by GNU tar.
pub fn hello_tar(content: &str) -> Vec<u8> {
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

/// Reads the blob `digest` from a layout, checking that its bytes hash to the digest.
pub fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = dir.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(sha256(&bytes), digest, "{} is corrupt", path.display());
    bytes
}

/// The descriptor `index.json` of a layout names `name`.
pub fn layout_ref(dir: &Path, name: &str) -> Value {
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
pub fn manifest_blobs(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        out.push(l["digest"].as_str().unwrap().to_string());
    }
    out
}

/// skopeo with its own (empty) auth file, so only the credentials on the command line count.
pub struct Skopeo {
    auth: tempfile::TempDir,
}

impl Skopeo {
    /// Panics with an actionable message unless `skopeo` and `tar` are there.
    pub fn new() -> Skopeo {
        for tool in ["skopeo", "tar"] {
            match Command::new(tool).arg("--version").output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => panic!("`{tool} --version` failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr)),
                Err(e) => panic!("the skopeo tests need `{tool}` on PATH (apt-get install {tool}): {e}"),
            }
        }
        Skopeo { auth: tempfile::tempdir().unwrap() }
    }

    /// Runs `skopeo ARGS` and returns its output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        Command::new("skopeo")
            .env("REGISTRY_AUTH_FILE", self.auth.path().join("auth.json"))
            .env("DOCKER_CONFIG", self.auth.path())
            .args(args)
            .output()
            .expect("run skopeo")
    }

    /// Runs `skopeo ARGS`, panicking with its output on failure; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "skopeo {args:?}:\n{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `skopeo copy` (keeping digests; every image of an index with `all`) from `src` into the
    /// registry reference `dest`, with `--dest-creds` when given.
    pub fn copy_in(&self, src: &str, dest: &str, creds: Option<&str>, all: bool) -> Output {
        self.copy("dest", src, dest, creds, all)
    }

    /// `skopeo copy` from the registry reference `src` to `dest`, with `--src-creds` when given.
    pub fn copy_out(&self, src: &str, dest: &str, creds: Option<&str>, all: bool) -> Output {
        self.copy("src", src, dest, creds, all)
    }

    /// `skopeo copy` whose `side` (`src` or `dest`) is the registry.
    fn copy(&self, side: &str, src: &str, dest: &str, creds: Option<&str>, all: bool) -> Output {
        let tls = format!("--{side}-tls-verify=false");
        let creds_flag = format!("--{side}-creds");
        let mut args = vec!["copy", "--quiet", "--preserve-digests", tls.as_str()];
        if let Some(c) = creds {
            args.extend([creds_flag.as_str(), c]);
        }
        if all {
            args.push("--all");
        }
        args.extend([src, dest]);
        self.output(&args)
    }

    /// `skopeo inspect` (with `--raw` when `raw`) of a registry reference, with `--creds` when
    /// given.
    pub fn inspect(&self, reference: &str, creds: Option<&str>, raw: bool) -> Output {
        let mut args = vec!["inspect", "--tls-verify=false"];
        if raw {
            args.push("--raw");
        }
        if let Some(c) = creds {
            args.extend(["--creds", c]);
        }
        args.push(reference);
        self.output(&args)
    }

    /// `skopeo inspect` that must succeed, as JSON.
    pub fn inspect_json(&self, reference: &str, creds: Option<&str>) -> Value {
        let out = self.inspect(reference, creds, false);
        assert!(out.status.success(), "skopeo inspect {reference}:\n{}", output_text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `skopeo inspect --raw` that must succeed: the manifest's bytes as served.
    pub fn inspect_raw(&self, reference: &str) -> Vec<u8> {
        let out = self.inspect(reference, None, true);
        assert!(out.status.success(), "skopeo inspect --raw {reference}:\n{}", output_text(&out));
        out.stdout
    }

    /// The tags of a registry repository (`docker://HOST/NAME`), sorted.
    pub fn list_tags(&self, repo: &str, creds: Option<&str>) -> Vec<String> {
        let mut args = vec!["list-tags", "--tls-verify=false"];
        if let Some(c) = creds {
            args.extend(["--creds", c]);
        }
        args.push(repo);
        let v: Value = serde_json::from_str(&self.run(&args)).unwrap();
        let mut tags: Vec<String> = v["Tags"]
            .as_array()
            .unwrap_or_else(|| panic!("no Tags in list-tags output: {v}"))
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        tags.sort();
        tags
    }
}
