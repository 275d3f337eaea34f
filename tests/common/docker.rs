//! Helpers for tests that drive the real docker engine: tool checks, offline image builds from
//! busybox, clean-up guards for local images and for `docker login` state.
//!
//! Needs a running docker daemon that treats 127.0.0.1 registries as insecure (the default for
//! loopback), `/bin/busybox` from Debian's `busybox-static`, `tar` and `curl`. A missing tool is a
//! failure, not a skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{Berth, run};

/// Panics with an actionable message unless every tool the docker tests need is present.
pub fn require_tools() {
    for (tool, arg) in [("docker", "--version"), ("tar", "--version"), ("curl", "--version")] {
        match Command::new(tool).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("`{tool} {arg}` failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("docker e2e tests need `{tool}` on PATH: {e}"),
        }
    }
    let info =
        Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output().expect("run docker info");
    assert!(
        info.status.success(),
        "docker e2e tests need a running docker daemon: {}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "docker e2e tests need a static /bin/busybox (apt-get install busybox-static)"
    );
}

/// Runs `docker ARGS`, panicking with its output on failure; returns stdout.
pub fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// Runs `docker ARGS` and returns its output whatever the exit status.
pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("run docker")
}

/// Local docker image names a test created; all removed (`docker rmi -f`) when dropped, so
/// also when an assertion fails.
pub struct Images(Vec<String>);

impl Images {
    pub fn new() -> Images {
        Images(Vec::new())
    }

    /// Records a name and returns it.
    pub fn add(&mut self, name: String) -> String {
        self.0.push(name.clone());
        name
    }

    /// Removes every recorded name from the local engine (errors ignored: it may be gone).
    pub fn remove_all(&self) {
        for name in &self.0 {
            let _ = docker_output(&["rmi", "-f", name]);
        }
    }
}

impl Default for Images {
    fn default() -> Self {
        Images::new()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Imports a busybox-only root filesystem as the local image `name`.
pub fn import_busybox(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for dir in ["tmp", "etc", "root"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy /bin/busybox");
    for applet in ["sh", "echo", "cat", "ls", "true", "false", "sleep", "mkdir", "rm", "env", "uname"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let tarball = tmp.path().join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tarball).arg("."));
    run(Command::new("docker").arg("import").arg(&tarball).arg(name));
}

/// Builds `name` FROM `base` with two RUN layers and a CMD that prints both files.
/// Returns what running the image prints.
pub fn build_image(base: &str, name: &str, marker: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {base}\n\
         RUN echo 'hello from {marker}' > /greeting\n\
         RUN mkdir -p /data && echo 'second layer of {marker}' > /data/second\n\
         CMD [\"/bin/sh\", \"-c\", \"cat /greeting /data/second\"]\n"
    );
    std::fs::write(tmp.path().join("Dockerfile"), dockerfile).unwrap();
    run(Command::new("docker").args(["build", "-q", "-t", name]).arg(tmp.path()));
    format!("hello from {marker}\nsecond layer of {marker}\n")
}

/// The manifest digest `docker push` reports in its output.
pub fn pushed_digest(out: &str) -> String {
    let digest = out
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"))
        .to_string();
    assert!(digest.starts_with("sha256:"), "odd digest {digest:?}");
    digest
}

/// `docker push`, returning its stdout and the manifest digest it reports.
pub fn push(reference: &str) -> (String, String) {
    let out = docker(&["push", reference]);
    let digest = pushed_digest(&out);
    (out, digest)
}

/// `docker inspect` of a local image with a Go template.
pub fn inspect(image: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, image]).trim().to_string()
}

/// The repo digests of a local image, as `name@sha256:...`.
pub fn repo_digests(image: &str) -> Vec<String> {
    serde_json::from_str(&inspect(image, "{{json .RepoDigests}}")).unwrap()
}

/// Unique local image names for one test (the port is unique among running tests).
pub fn local_name(berth: &Berth, what: &str) -> String {
    format!("berth-e2e-{}-{what}:latest", berth.port)
}

/// Imports a busybox base and builds an app image on it ([`build_image`] with `marker` and the
/// server's port), both under [`local_name`]s recorded in `images`; returns the app's name and
/// what running it prints.
pub fn local_app(berth: &Berth, images: &mut Images, marker: &str) -> (String, String) {
    let base = images.add(local_name(berth, "base"));
    let app = images.add(local_name(berth, "app"));
    import_busybox(&base);
    let expected = build_image(&base, &app, &format!("{marker} {}", berth.port));
    (app, expected)
}

/// A docker client whose login state is private to one test: its own `DOCKER_CONFIG`
/// directory, so parallel tests and the user's `~/.docker/config.json` are never touched.
/// Logs out of the registry when dropped (also when an assertion fails).
pub struct DockerClient {
    registry: String,
    config: tempfile::TempDir,
}

impl DockerClient {
    /// A client for the registry `host` (`127.0.0.1:PORT`).
    pub fn new(host: &str) -> DockerClient {
        DockerClient { registry: host.to_string(), config: tempfile::tempdir().unwrap() }
    }

    /// The client's configuration directory (its `config.json` holds the login).
    pub fn config_dir(&self) -> PathBuf {
        self.config.path().to_path_buf()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_CONFIG", self.config.path()).args(args);
        cmd
    }

    /// Runs `docker ARGS` with this client's configuration, whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run docker")
    }

    /// Runs `docker ARGS`, panicking with its output on failure; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        run(&mut self.command(args))
    }

    /// `docker login REGISTRY -u USER --password-stdin` with `secret` on stdin.
    pub fn login(&self, user: &str, secret: &str) -> Output {
        let mut child = self
            .command(&["login", &self.registry, "-u", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker login");
        child.stdin.take().unwrap().write_all(secret.as_bytes()).unwrap();
        child.wait_with_output().expect("wait for docker login")
    }

    /// `docker logout REGISTRY`.
    pub fn logout(&self) {
        self.run(&["logout", &self.registry]);
    }

    /// What `config.json` records for the registry (`null` when logged out).
    pub fn stored_auth(&self) -> serde_json::Value {
        let path = self.config.path().join("config.json");
        let Ok(bytes) = std::fs::read(&path) else {
            return serde_json::Value::Null;
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        v["auths"][&self.registry].clone()
    }
}

impl Drop for DockerClient {
    fn drop(&mut self) {
        let _ = self.output(&["logout", &self.registry]);
    }
}
