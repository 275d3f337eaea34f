//! Let's Encrypt's test ACME server, Debian's `pebble`, for one test: its own HTTPS endpoint
//! with a certificate from a [`TestCa`] (Debian ships none), its DNS answered by
//! `pebble-challtestsrv` (every name is 127.0.0.1; no IPv6 answers), validations sent to the
//! ports the test names (`httpPort` for HTTP-01, `tlsPort` for TLS-ALPN-01), no sleeping before
//! validation, no rejected nonces, no reused authorizations (each order validates again). Both
//! processes are killed on drop. A missing binary fails the test with the install hint.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::tls::TestCa;

const HINT: &str = "install Debian's pebble (apt-get install pebble; scripts/prereqs test does)";

pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    pub port: u16,
    pub management_port: u16,
    /// The CA of pebble's own HTTPS endpoint (what Berth's `tls.acme.ca_file` names).
    pub ca: TestCa,
    pebble: Option<Child>,
    dns: Option<Child>,
    dns_port: u16,
    config_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts pebble and its DNS; HTTP-01 validations go to `http_port`, TLS-ALPN-01 ones to
    /// `tls_port` (on 127.0.0.1).
    pub fn start(http_port: u16, tls_port: u16) -> Pebble {
        for tool in ["pebble", "pebble-challtestsrv"] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
            {
                panic!("the ACME tests need `{tool}` on PATH: {HINT}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("pebble's HTTPS endpoint");
        let (cert, key) = ca.server(&["127.0.0.1", "localhost"]).write(dir.path(), "pebble");
        let (port, management_port, dns_port, dns_management) = (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let dir_path = dir.path().to_path_buf();
        let log = |name: &str| std::fs::File::create(dir_path.join(name)).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args([
                "-management",
                &format!("127.0.0.1:{dns_management}"),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(log("dns.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pebble-challtestsrv ({e}): {HINT}"));
        let mut p = Pebble {
            directory: format!("https://127.0.0.1:{port}/dir"),
            port,
            management_port,
            ca,
            pebble: None,
            dns: Some(dns),
            dns_port,
            config_path,
            dir,
        };
        wait_port(dns_management, "pebble-challtestsrv", &p.log());
        p.resume();
        p
    }

    /// Starts pebble (again, after [`Pebble::stop`]: with a new root, same ports); its log
    /// goes on in the same file.
    pub fn resume(&mut self) {
        assert!(self.pebble.is_none(), "pebble is running");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("pebble.log")).unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&self.config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pebble ({e}): {HINT}"));
        self.pebble = Some(pebble);
        wait_port(self.port, "pebble", &self.log());
        wait_port(self.management_port, "pebble's management endpoint", &self.log());
    }

    /// `tls.acme.ca_file` for Berth.
    pub fn ca_file(&self) -> PathBuf {
        self.ca.ca_file()
    }

    /// The root pebble issues under (it makes a new one at each start), from its management
    /// endpoint.
    pub async fn root_pem(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let r = self.ca.http().get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.text().await.unwrap()
    }

    /// What pebble logged (each issued certificate and each order shows up there).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Stops pebble (the ACME server becomes unreachable); its DNS stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut c) = self.dns.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_port(port: u16, what: &str, log: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on 127.0.0.1:{port}\n{log}");
}
