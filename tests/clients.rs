//! End to end with the clients people push with besides docker and skopeo: containerd's `ctr`,
//! podman, buildah and the Python oras client (oras-py), each against a real `berth serve` with
//! authentication on. Each pushes, pulls back and compares digests with what Berth serves.
//!
//! Needs root, a running docker engine (it builds the test images from busybox and runs the
//! containerd that `ctr` talks to), and `ctr`, `podman`, `buildah`, `unshare`, `python3` with the
//! PyPI module `oras`; `scripts/prereqs test` installs them. A missing client is a failure, not a
//! skip.
//!
//! Nothing outside the tests' temporary directories is changed: `ctr` works in a containerd
//! namespace of its own, removed at the end; podman and buildah get private storage, auth file
//! and configuration, and run in a mount namespace where `/var/lib/containers` is a private
//! directory (podman 4.3 and buildah 1.28 keep their blob-info cache there whatever `--root`
//! says; the directory itself is created, empty, when missing, to mount over).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::containers::Containers;
use common::docker::{DockerClient, Images, build_image, docker, import_busybox, local_name, pushed_digest};
use common::images::{DOCKER_MANIFEST, MANIFEST_ACCEPT, OCI_MANIFEST};
use common::registry::{Reg, Served, header};
use common::{ADMIN_PASSWORD, Berth, requests_seen, require, run, run_client, sha256};
use reqwest::{Method, StatusCode};
use serde_json::Value;

// ---- shared ----------------------------------------------------------------------------------

/// A server with authentication on (admin password [`ADMIN_PASSWORD`]) whose log, with one
/// access line per request, goes to a file ([`Berth::log`]) so failures can show what it saw.
fn start_berth() -> Berth {
    Berth::start_with_config("", &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD), ("BERTH_LOG", "warn,berth::access=info")])
}

/// Creates the user `name` (not an admin) with `password`.
fn add_user(berth: &Berth, name: &str, password: &str) {
    berth.cli_stdin(&["user", "add", name, "--password-stdin"], password);
}

/// A manifest as Berth serves it to the admin ([`Reg::served`]).
async fn served(berth: &Berth, name: &str, reference: &str) -> Served {
    Reg::admin(berth).served(name, reference).await
}

/// Berth's request counters and upload byte count (`GET /metrics`), to tell how a client
/// pushed: upload sessions started, blob mounts, chunks, uploads finished, bytes received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Uploads {
    sessions: u64,
    mounts: u64,
    chunks: u64,
    finished: u64,
    bytes: u64,
}

async fn uploads(berth: &Berth) -> Uploads {
    let text = Reg::new(berth).send(Method::GET, "/metrics").await.text().await.unwrap();
    let value = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    Uploads {
        sessions: value(r#"berth_http_requests_total{route="upload_start",status="202"}"#),
        mounts: value(r#"berth_http_requests_total{route="upload_start",status="201"}"#),
        chunks: value(r#"berth_http_requests_total{route="upload_patch",status="202"}"#),
        finished: value(r#"berth_http_requests_total{route="upload_put",status="201"}"#),
        bytes: value("berth_upload_bytes_total "),
    }
}

/// A local busybox image made by the docker engine (one layer; with `app`, two more from
/// [`build_image`]), saved as a `docker save` archive; the engine's copies go when it drops.
struct BusyboxArchive {
    path: PathBuf,
    _dir: tempfile::TempDir,
    _images: Images,
}

fn busybox_archive(berth: &Berth, what: &str, app: bool) -> BusyboxArchive {
    common::docker::require_tools();
    let mut images = Images::new();
    let base = images.add(local_name(berth, &format!("{what}-base")));
    import_busybox(&base);
    let mut image = base.clone();
    if app {
        image = images.add(local_name(berth, what));
        build_image(&base, &image, &format!("{what} {}", berth.port));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    docker(&["save", "-o", path.to_str().unwrap(), &image]);
    BusyboxArchive { path, _dir: dir, _images: images }
}

// ---- containerd --------------------------------------------------------------------------------

/// `ctr` against the running containerd (the docker engine's, or a system one), in a namespace
/// of its own; everything in it (images, content, snapshots, leases) and the namespace itself
/// are removed when dropped, also when an assertion fails.
struct Ctr {
    socket: String,
    namespace: String,
}

impl Ctr {
    fn new(berth: &Berth) -> Ctr {
        require("ctr", &["--version"], "apt-get install containerd (or docker.io, which brings it)");
        let socket = ["/var/run/docker/containerd/containerd.sock", "/run/containerd/containerd.sock"]
            .into_iter()
            .find(|s| Path::new(s).exists())
            .unwrap_or_else(|| {
                panic!(
                    "no containerd socket (/var/run/docker/containerd/containerd.sock of the docker \
                     engine, or /run/containerd/containerd.sock): start dockerd or containerd"
                )
            });
        let ctr =
            Ctr { socket: socket.to_string(), namespace: format!("berth-test-{}-{}", std::process::id(), berth.port) };
        ctr.run(&["version"]);
        ctr
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.args(["-a", &self.socket, "-n", &self.namespace]).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        run(&mut self.command(args))
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run ctr")
    }

    /// `ctr images pull|push --plain-http --user USER:PASSWORD REF`.
    fn transfer(&self, berth: &Berth, verb: &str, user: &str, password: &str, reference: &str) -> String {
        let creds = format!("{user}:{password}");
        run_client(berth, &mut self.command(&["images", verb, "--plain-http", "--user", &creds, reference]))
    }

    /// The manifest digest of a local image.
    fn digest(&self, reference: &str) -> String {
        let out = self.run(&["images", "ls", &format!("name=={reference}")]);
        let row = out.lines().nth(1).unwrap_or_else(|| panic!("no image {reference} in containerd:\n{out}"));
        row.split_whitespace().nth(2).unwrap().to_string()
    }

    /// Names of the namespace's rows of `ctr KIND ls -q`.
    fn list(&self, kind: &str) -> Vec<String> {
        let out = self.output(&[kind, "ls", "-q"]);
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }

    /// Removes every image and blob of the namespace, so the next pull downloads everything.
    fn clear(&self) {
        let images = self.list("images");
        if !images.is_empty() {
            let mut args = vec!["images", "rm", "--sync"];
            args.extend(images.iter().map(String::as_str));
            let _ = self.output(&args);
        }
        for kind in ["content", "leases"] {
            let items = self.list(kind);
            if !items.is_empty() {
                let mut args = vec![kind, "rm"];
                args.extend(items.iter().map(String::as_str));
                let _ = self.output(&args);
            }
        }
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        self.clear();
        for snapshot in self.list("snapshots") {
            let _ = self.output(&["snapshots", "rm", &snapshot]);
        }
        let _ = Command::new("ctr").args(["-a", &self.socket, "namespaces", "rm", &self.namespace]).output();
    }
}

/// containerd pulls an image docker pushed, pushes it into repositories no token named before
/// (as the admin, and as a plain user into their own namespace), and pulls each back: every
/// digest is the one Berth serves. A user cannot push into someone else's namespace.
#[tokio::test]
async fn containerd_pulls_and_pushes_with_user_credentials() {
    let berth = start_berth();
    let ctr = Ctr::new(&berth);
    let host = berth.host();
    let bob_password = "bob-password-1";
    add_user(&berth, "bob", bob_password);

    // The image: built by the docker engine, pushed to Berth by docker.
    common::docker::require_tools();
    let mut images = Images::new();
    let base = images.add(local_name(&berth, "ctr-base"));
    let app = images.add(local_name(&berth, "ctr-app"));
    import_busybox(&base);
    build_image(&base, &app, &format!("containerd {}", berth.port));
    let source = images.add(format!("{host}/admin/ctr-source:1"));
    docker(&["tag", &app, &source]);
    let docker_client = DockerClient::new(&host);
    let login = docker_client.login("admin", ADMIN_PASSWORD);
    assert!(login.status.success(), "docker login: {}", String::from_utf8_lossy(&login.stderr));
    let pushed = pushed_digest(&docker_client.run(&["push", &source]));
    let original = served(&berth, "admin/ctr-source", "1").await;
    assert_eq!(original.digest, pushed);
    assert_eq!(original.layers().len(), 3);

    // Pull with the admin's credentials.
    ctr.transfer(&berth, "pull", "admin", ADMIN_PASSWORD, &source);
    assert_eq!(ctr.digest(&source), original.digest, "containerd's digest of what it pulled");

    // Push into a repository no token named before (containerd asks for a pull token first and
    // needs the 401 insufficient_scope challenge to widen it).
    let copy = format!("{host}/admin/ctr-copy:1");
    ctr.run(&["images", "tag", &source, &copy]);
    ctr.transfer(&berth, "push", "admin", ADMIN_PASSWORD, &copy);
    assert_eq!(served(&berth, "admin/ctr-copy", "1").await.digest, original.digest);

    // Pull it back into an empty namespace.
    ctr.clear();
    ctr.transfer(&berth, "pull", "admin", ADMIN_PASSWORD, &copy);
    assert_eq!(ctr.digest(&copy), original.digest);

    // A plain user pushes into their own namespace (the blobs cannot be mounted from admin/,
    // which bob may not pull, so they are uploaded) and pulls back.
    let bobs = format!("{host}/bob/ctr:1");
    ctr.run(&["images", "tag", &copy, &bobs]);
    ctr.transfer(&berth, "push", "bob", bob_password, &bobs);
    assert_eq!(served(&berth, "bob/ctr", "1").await.digest, original.digest);
    ctr.clear();
    ctr.transfer(&berth, "pull", "bob", bob_password, &bobs);
    assert_eq!(ctr.digest(&bobs), original.digest);

    // ... but not into the admin's.
    let not_bobs = format!("{host}/admin/from-bob:1");
    ctr.run(&["images", "tag", &bobs, &not_bobs]);
    let out = ctr.output(&["images", "push", "--plain-http", "--user", &format!("bob:{bob_password}"), &not_bobs]);
    assert!(!out.status.success(), "bob pushed into admin/:\n{}", String::from_utf8_lossy(&out.stdout));
    let r = Reg::admin(&berth).req(Method::GET, "/v2/admin/from-bob/manifests/1").header("accept", MANIFEST_ACCEPT);
    assert_eq!(r.send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

// ---- podman and buildah ------------------------------------------------------------------------

/// it reports and stores are the ones Berth serves, with the media type asked for.
#[tokio::test]
async fn podman_pushes_docker_and_oci_formats_and_pulls_back() {
    let berth = start_berth();
    let podman = Containers::new("podman");
    let archive = busybox_archive(&berth, "podman", true);
    let image = podman.load(&berth, &archive.path);
    podman.login(&berth, "admin", ADMIN_PASSWORD);

    let host = berth.host();
    let mut pushed = Vec::new();
    for (format, repo, media_type) in
        [("v2s2", "admin/podman-docker", DOCKER_MANIFEST), ("oci", "admin/podman-oci", OCI_MANIFEST)]
    {
        let dest = format!("{host}/{repo}:1");
        let digest = podman.push(&berth, &image, &dest, &["--format", format]);
        let served = served(&berth, repo, "1").await;
        assert_eq!(served.digest, digest, "podman push --format {format}: its digest and Berth's");
        assert_eq!(served.media_type, media_type, "podman push --format {format}");
        assert_eq!(served.layers().len(), 3, "podman push --format {format}");
        pushed.push((dest, served.digest));
    }

    // Pull both back into empty storage.
    podman.remove_all();
    for (dest, digest) in &pushed {
        podman.run(&berth, &["pull", "--tls-verify=false", dest]);
        let local = podman.run(&berth, &["image", "inspect", "--format", "{{.Digest}}", dest]);
        assert_eq!(local.trim(), digest, "podman's digest of {dest}");
    }
}

/// buildah builds on an image in Berth and pushes the result to a new repository: the image has
/// one layer more than the base and shares its layers, and the base layer is mounted from the
/// base's repository, not uploaded again.
#[tokio::test]
async fn buildah_builds_on_an_image_in_berth_and_reuses_its_layer() {
    let berth = start_berth();
    let buildah = Containers::new("buildah");
    let host = berth.host();
    buildah.login(&berth, "admin", ADMIN_PASSWORD);

    // The base image, pushed by buildah itself (one layer: busybox).
    let archive = busybox_archive(&berth, "buildah", false);
    let tmp = tempfile::tempdir().unwrap();
    let loaded = buildah.load(&berth, &archive.path);
    let base_ref = format!("{host}/admin/buildah-base:1");
    let base_digest = buildah.push(&berth, &loaded, &base_ref, &[]);
    let base = served(&berth, "admin/buildah-base", "1").await;
    assert_eq!(base.digest, base_digest);
    let base_layers = base.layers();
    assert_eq!(base_layers.len(), 1);
    let base_layer_size = base.json["layers"][0]["size"].as_u64().unwrap();

    // Build on it: `from` must pull it from Berth.
    buildah.remove_all();
    let container = buildah.run(&berth, &["from", "--tls-verify=false", &base_ref]).trim().to_string();
    let file = tmp.path().join("hello.txt");
    let greeting = format!("hello from buildah on port {}\n", berth.port);
    std::fs::write(&file, &greeting).unwrap();
    buildah.run(&berth, &["copy", &container, file.to_str().unwrap(), "/hello.txt"]);
    buildah.run(&berth, &["commit", &container, "berth-buildah-app"]);

    let before = uploads(&berth).await;
    let app_digest = buildah.push(&berth, "berth-buildah-app", &format!("{host}/admin/buildah-app:1"), &[]);
    let after = uploads(&berth).await;

    let app = served(&berth, "admin/buildah-app", "1").await;
    assert_eq!(app.digest, app_digest, "buildah's digest and Berth's");
    let app_layers = app.layers();
    assert_eq!(app_layers.len(), base_layers.len() + 1, "one layer more than the base: {app_layers:?}");
    assert_eq!(app_layers[0], base_layers[0], "the base layer is shared (same digest)");

    // The base layer was mounted, not sent again: two uploads (the new layer and the config),
    // fewer bytes than the base layer alone, and one mount.
    let seen = format!("uploads before {before:?}, after {after:?}\n{}", requests_seen(&berth));
    assert_eq!(after.sessions - before.sessions, 2, "upload sessions for the new layer and the config; {seen}");
    assert_eq!(after.finished - before.finished, 2, "finished uploads; {seen}");
    assert_eq!(after.mounts - before.mounts, 1, "the base layer mounted from admin/buildah-base; {seen}");
    assert!(
        after.bytes - before.bytes < base_layer_size,
        "{} bytes uploaded, the base layer alone is {base_layer_size}; {seen}",
        after.bytes - before.bytes
    );

    // The new layer holds the copied file.
    let layer = Reg::admin(&berth).get_blob("admin/buildah-app", &app_layers[1]).await;
    let mut tar = Command::new("tar")
        .args(["-xzOf", "-", "hello.txt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        tar.stdin.take().unwrap().write_all(&layer).unwrap();
    }
    let out = tar.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), greeting, "{}", String::from_utf8_lossy(&out.stderr));

    // Pull it back into empty storage.
    buildah.remove_all();
    let app_ref = format!("{host}/admin/buildah-app:1");
    buildah.run(&berth, &["pull", "--tls-verify=false", &app_ref]);
    let local = buildah.run(&berth, &["inspect", "--type", "image", "--format", "{{.FromImageDigest}}", &app_ref]);
    assert_eq!(local.trim(), app.digest, "buildah's digest of what it pulled");
}

// ---- oras ---------------------------------------------------------------------------------------

/// Runs tests/clients/oras_client.py (oras-py) as `user` in `dir`; its JSON answer.
fn oras(berth: &Berth, dir: &Path, user: &str, password: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/oras_client.py");
    let out = run_client(
        berth,
        Command::new("python3")
            .arg(script)
            .args(args)
            .current_dir(dir)
            .env("HOME", dir)
            .env("ORAS_USER", user)
            .env("ORAS_PASSWORD", password),
    );
    serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("oras_client.py printed no JSON ({e}):\n{out}"))
}

/// oras pushes a file as an artifact with an artifactType (in several chunks), pulls it back
/// byte for byte, and attaches a referrer that the referrers API lists under its type.
#[tokio::test]
async fn oras_pushes_an_artifact_and_a_referrer() {
    require("python3", &["-c", "import oras.client"], "pip install oras (scripts/prereqs test installs it)");
    let berth = start_berth();
    let host = berth.host();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    const REPORT_TYPE: &str = "application/vnd.berth.test.report.v1";
    const SIGNATURE_TYPE: &str = "application/vnd.berth.test.signature.v1";

    // About 300 KiB that do not compress, so the 64 KiB chunks are five PATCHes.
    let report: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("report.bin"), &report).unwrap();
    let before = uploads(&berth).await;
    let pushed = oras(
        &berth,
        dir,
        "admin",
        ADMIN_PASSWORD,
        &["push", &format!("{host}/admin/artifacts:v1"), "report.bin", REPORT_TYPE],
    );
    let after = uploads(&berth).await;
    assert!(after.bytes - before.bytes >= report.len() as u64, "{before:?} {after:?}");
    assert!(after.chunks - before.chunks >= 5, "the report went in 64 KiB chunks: {before:?} {after:?}");

    let artifact = served(&berth, "admin/artifacts", "v1").await;
    assert_eq!(pushed["digest"], artifact.digest.as_str());
    assert_eq!(artifact.media_type, OCI_MANIFEST);
    assert_eq!(artifact.json["artifactType"], REPORT_TYPE);
    let layer = &artifact.json["layers"][0];
    assert_eq!(layer["digest"], sha256(&report).as_str());
    assert_eq!(layer["size"], report.len());
    assert_eq!(layer["annotations"]["org.opencontainers.image.title"], "report.bin");
    assert_eq!(Reg::admin(&berth).get_blob("admin/artifacts", &sha256(&report)).await, report);

    // Pull back, byte for byte.
    let out = dir.join("pulled");
    let pulled = oras(
        &berth,
        dir,
        "admin",
        ADMIN_PASSWORD,
        &["pull", &format!("{host}/admin/artifacts:v1"), out.to_str().unwrap()],
    );
    assert_eq!(pulled["files"].as_array().map(Vec::len), Some(1), "{pulled}");
    assert_eq!(std::fs::read(out.join("report.bin")).unwrap(), report, "the pulled file");

    // A referrer: a signature whose subject is the report.
    std::fs::write(dir.join("report.sig"), b"signed: the report\n").unwrap();
    let size = artifact.size().to_string();
    let signed = oras(
        &berth,
        dir,
        "admin",
        ADMIN_PASSWORD,
        &[
            "push",
            &format!("{host}/admin/artifacts:v1-sig"),
            "report.sig",
            SIGNATURE_TYPE,
            &artifact.digest,
            &size,
            OCI_MANIFEST,
        ],
    );
    let signature = served(&berth, "admin/artifacts", "v1-sig").await;
    assert_eq!(signed["digest"], signature.digest.as_str());
    assert_eq!(signature.json["subject"]["digest"], artifact.digest.as_str());

    // The referrers API lists it, also filtered by its type; another type's filter does not.
    let url = format!("/v2/admin/artifacts/referrers/{}", artifact.digest);
    for (filter, expected) in [(None, 1), (Some(SIGNATURE_TYPE), 1), (Some(REPORT_TYPE), 0)] {
        let query = filter.map(|t| format!("?artifactType={t}")).unwrap_or_default();
        let r = Reg::admin(&berth).send(Method::GET, &format!("{url}{query}")).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {url} {filter:?}");
        assert_eq!(header(&r, "content-type"), "application/vnd.oci.image.index.v1+json");
        if filter.is_some() {
            assert_eq!(header(&r, "oci-filters-applied"), "artifactType", "{filter:?}");
        }
        let index: Value = r.json().await.unwrap();
        let manifests = index["manifests"].as_array().expect("manifests");
        assert_eq!(manifests.len(), expected, "referrers with filter {filter:?}: {index}");
        if expected == 1 {
            assert_eq!(manifests[0]["digest"], signature.digest.as_str());
            assert_eq!(manifests[0]["artifactType"], SIGNATURE_TYPE);
            assert_eq!(manifests[0]["size"], signature.size());
        }
    }
}
