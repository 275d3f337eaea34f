//! Test harness: runs the real `berth` binary on a free loopback port with its own data dir
//! ([`Berth`]), and the helpers every suite shares, one home each:
//!
//! - [`registry`]: [`registry::Reg`], the typed HTTP client of a registry (token endpoint,
//!   blobs and uploads, manifests, `/api/v1`), and its [`registry::Creds`];
//! - [`images`]: media types, manifests and small test images to push;
//! - [`html`]: the web UI over HTTP (forms, cookies, CSRF, a logged-in [`html::Ui`]);
//! - [`docker`]: the docker engine (busybox images, per-test login state);
//! - [`skopeo`]: skopeo and OCI image layouts on disk;
//! - [`containers`]: podman and buildah with private storage, auth file and configuration;
//! - [`db`]: a server's database, opened behind its back;
//! - [`postgres`]: a private PostgreSQL server for one test, stopped and started at will;
//! - [`tls`]: a test CA, certificates and clients that trust it, for servers started with
//!   [`Berth::start_https`];
//! - [`pebble`]: Let's Encrypt's test ACME server (Debian's `pebble`) with its DNS
//!   (`pebble-challtestsrv`), for servers started with [`Berth::start_https_at`].
//!
//! Each `tests/*.rs` is its own binary with `mod common;`; what a suite does not use is
//! compiled and left unused (hence `dead_code` allowed).
#![allow(dead_code)]

pub mod containers;
pub mod db;
pub mod docker;
pub mod html;
pub mod images;
pub mod oidc;
pub mod pebble;
pub mod postgres;
pub mod proxy;
pub mod reference;
pub mod registry;
pub mod skopeo;
pub mod slapd;
pub mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
    /// Where this server keeps blobs and metadata ([`Backend`]).
    backend: Backend,
    /// Whether dropping this server drops its backend's database (not for peers).
    owns_backend: bool,
    /// Where the server's log (its stderr) goes, when not inherited ([`Berth::start_with_config`]).
    log_file: Option<PathBuf>,
    /// Where it listens and how clients name it ([`Berth::start_https`]).
    net: Net,
    _tmp: Option<tempfile::TempDir>,
}

/// The address a test server listens on and the name in its URL.
#[derive(Debug, Clone)]
struct Net {
    /// `127.0.0.1` or `::1`.
    ip: String,
    /// The host in [`Berth::base`] and [`Berth::host`]: the address, or a name that resolves to it.
    name: String,
    scheme: &'static str,
}

impl Net {
    fn loopback() -> Net {
        Net { ip: "127.0.0.1".into(), name: "127.0.0.1".into(), scheme: "http" }
    }

    /// `ip:port` as a socket address string (`[::1]:port` for IPv6).
    fn addr(&self, port: u16) -> String {
        if self.ip.contains(':') { format!("[{}]:{port}", self.ip) } else { format!("{}:{port}", self.ip) }
    }
}

/// The storage and database a test server runs on, chosen for the whole run by
/// `BERTH_TEST_BACKEND`: `fs-sqlite` (the default: filesystem and SQLite in the data dir) or
/// `s3-postgres` (each server gets its own key prefix in the S3 bucket
/// `BERTH_TEST_S3_BUCKET` at `BERTH_TEST_S3_ENDPOINT`, and its own PostgreSQL database created
/// through `BERTH_TEST_PG_URL`, a URL of a role allowed to create databases).
#[derive(Debug, Clone)]
pub enum Backend {
    FsSqlite,
    S3Postgres { env: Vec<(String, String)>, endpoint: String, bucket: String, prefix: String, database: String },
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

impl Backend {
    fn for_new_server() -> Backend {
        if env_or("BERTH_TEST_BACKEND", "fs-sqlite") == "s3-postgres" {
            Backend::s3_postgres(None)
        } else {
            Backend::FsSqlite
        }
    }

    /// A fresh PostgreSQL database and S3 prefix, on the S3 server at `endpoint` (default
    /// `BERTH_TEST_S3_ENDPOINT`).
    pub fn s3_postgres(endpoint: Option<&str>) -> Backend {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("t{}_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst), nanos % 100_000);
        let endpoint =
            endpoint.map(String::from).unwrap_or_else(|| env_or("BERTH_TEST_S3_ENDPOINT", "http://127.0.0.1:9010"));
        let bucket = env_or("BERTH_TEST_S3_BUCKET", "berth-test");
        let admin_url = env_or("BERTH_TEST_PG_URL", "postgres://berth:berth@127.0.0.1/postgres");
        run(Command::new("psql").arg(&admin_url).args(["-q", "-c", &format!("CREATE DATABASE {name}")]));
        let database = admin_url.rsplit_once('/').map(|(base, _)| format!("{base}/{name}")).unwrap();
        let env = vec![
            ("BERTH_DATABASE__URL".to_string(), database.clone()),
            ("BERTH_STORAGE__KIND".into(), "s3".into()),
            ("BERTH_STORAGE__S3__BUCKET".into(), bucket.clone()),
            ("BERTH_STORAGE__S3__PREFIX".into(), name.clone()),
            ("BERTH_STORAGE__S3__ENDPOINT".into(), endpoint.clone()),
            ("BERTH_STORAGE__S3__PATH_STYLE".into(), "true".into()),
            ("BERTH_STORAGE__S3__ALLOW_HTTP".into(), "true".into()),
            ("BERTH_STORAGE__S3__REGION".into(), "us-east-1".into()),
            ("BERTH_STORAGE__S3__ACCESS_KEY_ID".into(), env_or("BERTH_TEST_S3_ACCESS_KEY", "AK")),
            ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY".into(), env_or("BERTH_TEST_S3_SECRET_KEY", "SK")),
        ];
        Backend::S3Postgres { env, endpoint, bucket, prefix: name, database }
    }

    /// The same S3 prefix with a new, empty PostgreSQL database (a restore's target); the
    /// filesystem backend as it is (each server has its own data dir).
    pub fn with_fresh_database(&self) -> Backend {
        let Backend::S3Postgres { env, endpoint, bucket, prefix, .. } = self else {
            return Backend::FsSqlite;
        };
        let fresh = Backend::s3_postgres(Some(endpoint));
        let Backend::S3Postgres { database, .. } = fresh else { unreachable!() };
        let env = env
            .iter()
            .map(|(k, v)| (k.clone(), if k == "BERTH_DATABASE__URL" { database.clone() } else { v.clone() }))
            .collect();
        Backend::S3Postgres {
            env,
            endpoint: endpoint.clone(),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            database,
        }
    }

    /// Drops the PostgreSQL database of an S3 backend no server owns (the filesystem's is
    /// its data dir).
    pub fn drop_database(&self) {
        if let Backend::S3Postgres { database, .. } = self {
            let admin_url = env_or("BERTH_TEST_PG_URL", "postgres://berth:berth@127.0.0.1/postgres");
            let name = database.rsplit('/').next().unwrap_or_default();
            let _ = Command::new("psql")
                .arg(&admin_url)
                .args(["-q", "-c", &format!("DROP DATABASE IF EXISTS {name}")])
                .output();
        }
    }

    /// A request to the test S3 server, signed (SigV4, by curl) with the test's keys
    /// (`BERTH_TEST_S3_ACCESS_KEY`/`BERTH_TEST_S3_SECRET_KEY`), since the server `scripts/test`
    /// starts checks every signature. `path` follows the bucket (a key, or `?query` on the
    /// bucket: curl signs it as given, so give its parameters sorted, `%`-encoded and each with
    /// an `=`); `body` is sent as the request's payload. Returns (HTTP status, body).
    pub fn s3_request(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
        let Backend::S3Postgres { endpoint, bucket, .. } = self else {
            panic!("not an S3 backend");
        };
        s3_request(endpoint, bucket, method, path, body)
    }

    /// The test S3 server's listing (XML) of the keys under `key_prefix`. moto walks the whole
    /// bucket for a listing and answers 500 when another test deletes a key meanwhile (a
    /// KeyError in its iteration): asked again, up to ten times.
    pub fn s3_listing(&self, key_prefix: &str) -> String {
        for _ in 0..10 {
            let (status, body) =
                self.s3_request("GET", &format!("?list-type=2&prefix={}", key_prefix.replace('/', "%2F")), None);
            if status == 200 {
                return String::from_utf8_lossy(&body).into_owned();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("cannot list {key_prefix} on the test S3 server");
    }

    /// The environment a server (or a `berth` command) needs for this backend.
    pub fn env(&self) -> &[(String, String)] {
        match self {
            Backend::FsSqlite => &[],
            Backend::S3Postgres { env, .. } => env,
        }
    }
}

/// [`Backend::s3_request`] to the S3 server at `endpoint`, bucket `bucket`.
pub fn s3_request(endpoint: &str, bucket: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let sep = if path.starts_with('?') || path.is_empty() { "" } else { "/" };
    let url = format!("{endpoint}/{bucket}{sep}{path}");
    let payload = body.unwrap_or_default();
    let keys = format!("{}:{}", env_or("BERTH_TEST_S3_ACCESS_KEY", "AK"), env_or("BERTH_TEST_S3_SECRET_KEY", "SK"));
    let tmp = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(tmp.path(), payload).expect("write the payload");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "60", "-X", method, "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", &keys])
        .arg("-H")
        .arg(format!("x-amz-content-sha256: {}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(payload))))
        .args(["-w", "\n%{http_code}"]);
    if body.is_some() {
        cmd.arg("--data-binary").arg(format!("@{}", tmp.path().display()));
    }
    let out = cmd.arg(&url).output().expect("run curl");
    let mut text = out.stdout;
    let at = text.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&text[at..]).trim().parse().unwrap_or(0);
    text.truncate(at);
    (status, text)
}

/// A free TCP port on 127.0.0.1, for a server the test starts. Taken below Linux's ephemeral
/// range (32768–60999), where the kernel hands out the local ports of outgoing connections and
/// of `bind(:0)`: a port from that range could be taken by someone's connection between this
/// check and the server's bind (seen as a test talking to the wrong process, or to none). Each
/// process walks the range 20000–32767 from its own starting point and never hands out a port
/// twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 32_768 - LOW;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = || {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        (std::process::id().wrapping_mul(7919) ^ nanos) % SPAN
    };
    let _ = NEXT.compare_exchange(u32::MAX, seed(), Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and 32767 on 127.0.0.1");
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
        Self::start_on(Backend::for_new_server(), env)
    }

    /// Starts a server on the given backend with extra environment variables.
    pub fn start_on(backend: Backend, env: &[(&str, &str)]) -> Berth {
        Self::start_inner(backend, env, None)
    }

    /// Starts a server with the TOML configuration file `toml` (written to its data dir and
    /// named by `BERTH_CONFIG`) and extra environment variables. Its log goes to a file,
    /// appended across restarts, that [`Berth::log`] reads.
    pub fn start_with_config(toml: &str, env: &[(&str, &str)]) -> Berth {
        Self::start_inner(Backend::for_new_server(), env, Some(toml))
    }

    /// Starts an HTTPS server: `toml` (as [`Berth::start_with_config`]) names the certificate
    /// in its `[tls]` section. It listens on `ip` (`127.0.0.1` or `::1`); clients name it
    /// `name` ([`Berth::base`] is `https://NAME:PORT`).
    pub fn start_https(toml: &str, env: &[(&str, &str)], ip: &str, name: &str) -> Berth {
        let net = Net { ip: ip.into(), name: name.into(), scheme: "https" };
        Self::start_net(Backend::for_new_server(), env, Some(toml), net)
    }

    /// Starts an HTTPS server (as [`Berth::start_https`], on 127.0.0.1) on `backend` and a
    /// port chosen beforehand (an ACME test server must know where to send validations).
    pub fn start_https_at(backend: Backend, port: u16, toml: &str, env: &[(&str, &str)], name: &str) -> Berth {
        let net = Net { ip: "127.0.0.1".into(), name: name.into(), scheme: "https" };
        Self::start_port(backend, env, Some(toml), net, port)
    }

    /// Starts a plain HTTP server on `backend` and a port chosen beforehand.
    pub fn start_at(backend: Backend, port: u16, env: &[(&str, &str)]) -> Berth {
        Self::start_port(backend, env, None, Net::loopback(), port)
    }

    /// Another node of `self`'s backend (its database is not dropped with this one), as
    /// [`Berth::start_https_at`].
    pub fn start_https_peer(&self, port: u16, toml: &str, env: &[(&str, &str)]) -> Berth {
        let mut peer = Self::start_port(self.backend.clone(), env, Some(toml), self.net.clone(), port);
        peer.owns_backend = false;
        peer
    }

    fn start_inner(backend: Backend, env: &[(&str, &str)], config: Option<&str>) -> Berth {
        Self::start_net(backend, env, config, Net::loopback())
    }

    fn start_net(backend: Backend, env: &[(&str, &str)], config: Option<&str>, net: Net) -> Berth {
        Self::start_port(backend, env, config, net, 0)
    }

    /// `port` 0: a free one.
    fn start_port(backend: Backend, env: &[(&str, &str)], config: Option<&str>, net: Net, port: u16) -> Berth {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().to_path_buf();
        let mut extra_env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut log_file = None;
        if let Some(toml) = config {
            let path = data_dir.join("berth.toml");
            std::fs::write(&path, toml).unwrap();
            extra_env.insert(0, ("BERTH_CONFIG".into(), path.display().to_string()));
            log_file = Some(data_dir.join("berth.log"));
        }
        let mut b = Berth {
            port,
            base: String::new(),
            data_dir,
            child: None,
            extra_env,
            backend,
            owns_backend: true,
            log_file,
            net,
            _tmp: Some(tmp),
        };
        b.spawn();
        b
    }

    /// What the server has logged so far (servers of [`Berth::start_with_config`]; empty for
    /// the others, whose log is the test's stderr).
    pub fn log(&self) -> String {
        self.log_file.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// A second node on the same database and blob store (another port and data dir).
    pub fn start_peer(&self) -> Berth {
        let env: Vec<(&str, &str)> = self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut peer = Self::start_net(self.backend.clone(), &env, None, self.net.clone());
        peer.owns_backend = false;
        peer
    }

    /// Starts the server on `self.port`, or on a free port when it is 0. A port found free can
    /// be taken by another process (another test run's server, say) before the server binds it:
    /// the server then exits, and is started again on another port.
    fn spawn(&mut self) {
        let chosen_here = self.port == 0;
        for attempt in 1.. {
            let port = if !chosen_here {
                self.port
            } else if self.net.ip == "127.0.0.1" {
                free_port()
            } else {
                TcpListener::bind(self.net.addr(0)).unwrap().local_addr().unwrap().port()
            };
            let addr = self.net.addr(port);
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
            cmd.args(["serve", "--listen", &addr])
                .arg("--data-dir")
                .arg(&self.data_dir)
                .env("BERTH_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            if let Some(path) = &self.log_file {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the log file");
                cmd.stderr(file);
            }
            for (k, v) in self.backend.env().iter().chain(&self.extra_env) {
                cmd.env(k, v);
            }
            self.child = Some(cmd.spawn().expect("start berth"));
            let child = self.child.as_mut().unwrap();
            match wait_ready(&addr, port, child) {
                Ok(()) => {
                    self.port = port;
                    self.base = format!("{}://{}:{port}", self.net.scheme, self.net.name);
                    return;
                }
                Err(status) => {
                    self.child = None;
                    let taken = std::net::TcpStream::connect(&addr).is_ok();
                    if chosen_here && taken && attempt < 5 {
                        eprintln!("port {port} was taken by another process before berth bound it: another port");
                        continue;
                    }
                    let log = self.log_file.as_deref().and_then(|p| std::fs::read_to_string(p).ok());
                    let other = if taken { " (another process listens on its port)" } else { "" };
                    panic!("berth exited during start: {status}{other}\n{}", log.unwrap_or_default());
                }
            }
        }
    }

    /// Starts a server on `backend` with the data dir `data_dir` (kept by the caller: a
    /// restored one), on loopback.
    pub fn start_in(backend: Backend, data_dir: &Path, env: &[(&str, &str)]) -> Berth {
        let mut b = Berth {
            port: 0,
            base: String::new(),
            data_dir: data_dir.to_path_buf(),
            child: None,
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            backend,
            owns_backend: true,
            log_file: None,
            net: Net::loopback(),
            _tmp: None,
        };
        b.spawn();
        b
    }

    /// `127.0.0.1:PORT` (or the name of [`Berth::start_https`]), as docker and skopeo name the registry.
    pub fn host(&self) -> String {
        format!("{}:{}", self.net.name, self.port)
    }

    /// Kills the server with SIGKILL (no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Waits up to `timeout` for the server to exit by itself; its exit status, or `None` if
    /// it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills and starts the server again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn data_path(&self) -> &Path {
        &self.data_dir
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Where upload data lives on the filesystem backend (`None` on S3).
    pub fn upload_leftovers_dir(&self) -> Option<PathBuf> {
        matches!(self.backend, Backend::FsSqlite).then(|| self.data_dir.join("storage/_uploads"))
    }

    /// How many objects of unfinished or abandoned uploads the blob store holds.
    pub fn upload_leftovers(&self) -> usize {
        match &self.backend {
            Backend::FsSqlite => {
                std::fs::read_dir(self.data_dir.join("storage/_uploads")).map(|d| d.count()).unwrap_or(0)
            }
            Backend::S3Postgres { prefix, .. } => {
                self.backend.s3_listing(&format!("{prefix}/_uploads/")).matches("<Key>").count()
            }
        }
    }

    /// Runs a `berth` management command on this server's data dir; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args).arg("--data-dir").arg(&self.data_dir).env("BERTH_LOG", "warn");
        cmd.envs(self.backend.env().iter().map(|(k, v)| (k, v)));
        run(&mut cmd)
    }

    /// Like [`Berth::cli`], with `input` on standard input (for `--password-stdin`).
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("BERTH_LOG", "warn")
            .envs(self.backend.env().iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run berth {args:?}: {e}"));
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        succeeded(&format!("berth {args:?}"), child.wait_with_output().unwrap(), "")
    }
}

/// Runs a `berth` command on `data_dir` and `backend` (no server needed); its output, whatever
/// its status.
pub fn berth_command(backend: &Backend, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("BERTH_LOG", "warn")
        .envs(backend.env().iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run berth {args:?}: {e}"))
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill();
        if self.owns_backend {
            self.backend.drop_database();
        }
    }
}

/// Waits until `child` listens on `port`: its own listening socket, not merely one that
/// answers at `addr` — a port found free may have been taken by another process before the
/// child bound it, and a test talking to that process loses it when its owner stops it. The
/// child's exit status if it exited first.
fn wait_ready(addr: &str, port: u16, child: &mut Child) -> Result<(), std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(status);
        }
        if listens_on(child.id(), port) && std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("berth did not start listening on {addr}");
}

/// Whether process `pid` holds a TCP socket listening on `port` (Linux: the listening sockets'
/// inodes from `/proc/net/tcp` and `tcp6`, matched against the process's open files).
pub fn listens_on(pid: u32, port: u16) -> bool {
    let mut sockets = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            if f.len() > 9 && f[3] == "0A" && local_port == Some(port) {
                sockets.insert(format!("socket:[{}]", f[9]));
            }
        }
    }
    if sockets.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| sockets.contains(&*l.to_string_lossy())))
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    succeeded(&format!("{cmd:?}"), out, "")
}

/// The stdout of a command (`what`) that must have succeeded; else a panic with its output and
/// `context` (what else helps to tell why).
pub fn succeeded(what: &str, out: Output, context: &str) -> String {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}\n{context}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stdout and stderr of a command, for failure messages and matching error messages.
pub fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// An HTTP client that does not follow redirects, so tests see the registry's own answers
/// (`Location` headers, 307s, the UI's 303s). It drops idle connections before the server's
/// keep-alive (`limits.keep_alive_secs`, 15 s) closes them, so a request after a long pause never lands on a connection
/// being closed.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// A client (as [`client`]) whose connections come from `ip`: any 127.0.0.0/8 address works on
/// Linux, so a test tells clients apart by address (login throttling, the access log).
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(2))
        .local_address(Some(ip.parse().expect("an IP address")))
        .build()
        .unwrap()
}

/// Runs a future to completion on a runtime of its own, for tests that are not async.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Polls `check` every 100 ms for up to `secs`; whether it turned true. For what a server does
/// after its answer (a log line, a job's status, a delivery), which a test must wait for.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`eventually`] for a test without a runtime, or one that may block its thread (polls every
/// 50 ms).
pub fn eventually_blocking(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Panics with the install hint unless `tool ARGS` runs and succeeds.
pub fn require(tool: &str, args: &[&str], hint: &str) {
    match Command::new(tool).args(args).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            panic!("`{tool} {}` failed ({}): {}\n{hint}", args.join(" "), o.status, String::from_utf8_lossy(&o.stderr))
        }
        Err(e) => panic!("the tests need `{tool}` on PATH ({e}); {hint}"),
    }
}

/// The requests the server has answered, one `METHOD PATH STATUS` line each (the last 80), and
/// any warnings: for failure messages.
pub fn requests_seen(berth: &Berth) -> String {
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or("?")
            .trim_matches('"')
            .to_string()
    };
    let lines: Vec<String> = berth
        .log()
        .lines()
        .map(|l| {
            if l.contains("berth::access") {
                format!("{} {} {}", field(l, "method"), field(l, "path"), field(l, "status"))
            } else {
                l.to_string()
            }
        })
        .collect();
    let skip = lines.len().saturating_sub(80);
    format!("server log (requests as METHOD PATH STATUS):\n{}", lines[skip..].join("\n"))
}

/// Runs a command; on failure panics with its output and what the server saw.
pub fn run_client(berth: &Berth, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let seen = if out.status.success() { String::new() } else { requests_seen(berth) };
    succeeded(&format!("{cmd:?}"), out, &seen)
}
