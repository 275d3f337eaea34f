//! Debian's `docker-registry` (CNCF Distribution 2.8, the reference registry) for the tests
//! that need a registry that is not Berth: the mirror's upstream, replication's target.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::free_port;

/// Debian's `docker-registry` (Distribution 2.8) on a free loopback port, storing in a temp
/// dir. Its access log (one combined-log line per request, on its stdout) goes to a file.
pub struct DockerRegistry {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl DockerRegistry {
    pub fn start() -> DockerRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = DockerRegistry { port, child: None, dir };
        registry.spawn();
        registry
    }

    /// Starts it again after [`DockerRegistry::stop`], on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = |name: &str| {
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(name)).unwrap()
        };
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .env("REGISTRY_HTTP_SECRET", "berth-mirror-test")
            .stdout(log("access.log"))
            .stderr(log("registry.log"))
            .spawn()
            .expect("the tests need Debian's docker-registry (apt-get install docker-registry)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("docker-registry exited during start: {status}\n{}", self.error_log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// GET lines in the access log once it stopped growing: the registry writes a request's
    /// line after the response, which can be after the client already has every byte.
    pub fn settled_gets(&self) -> usize {
        let count = || self.access_log().lines().filter(|l| l.contains("\"GET ")).count();
        let mut last = count();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = count();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines of GETs (not HEADs) of one blob.
    pub fn blob_gets(&self, name: &str, digest: &str) -> usize {
        let needle = format!("\"GET /v2/{name}/blobs/{digest} HTTP/");
        self.access_log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Kills the registry (by its own process, nothing else).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
