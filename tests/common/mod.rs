//! Test harness: runs the real `berth` binary on a free loopback port with its own data dir.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin password of [`Berth::start_auth`] servers.
pub const ADMIN_PASSWORD: &str = "admin-secret-pw";

/// A running `berth serve`.
pub struct Berth {
    pub port: u16,
    pub base: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    extra_env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Berth {
    /// Starts an open registry (authentication off) on a fresh data dir.
    pub fn start() -> Berth {
        Self::start_with_env(&[("BERTH_AUTH__ENABLED", "false")])
    }

    /// Starts a registry with authentication on; the admin's password is [`ADMIN_PASSWORD`].
    pub fn start_auth() -> Berth {
        Self::start_with_env(&[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)])
    }

    /// Starts a server on a fresh data dir with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Berth {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().to_path_buf();
        let mut b = Berth {
            port: 0,
            base: String::new(),
            data_dir,
            child: None,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _tmp: Some(tmp),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let port = if self.port == 0 {
            free_port()
        } else {
            self.port
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("BERTH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start berth"));
        self.port = port;
        self.base = format!("http://127.0.0.1:{port}");
        wait_ready(&self.base, self.child.as_mut().unwrap());
    }

    /// `127.0.0.1:PORT`, as docker and skopeo name the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts the server again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn data_path(&self) -> &Path {
        &self.data_dir
    }

    /// Runs a `berth` management command on this server's data dir; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("BERTH_LOG", "warn");
        run(&mut cmd)
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_ready(base: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = base.trim_start_matches("http://").to_string();
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("berth exited during start: {status}");
        }
        if std::net::TcpStream::connect(&addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("berth did not start listening on {base}");
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
