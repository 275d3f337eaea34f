//! A private PostgreSQL server for one test (Debian's `postgresql` binaries, run as the
//! `postgres` user in a temporary folder on a free port), which the test may stop and start
//! again without disturbing the shared server other suites use.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{free_port, run};

/// The folder of `initdb` and `pg_ctl`: the newest installed PostgreSQL.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/prereqs test installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL under /usr/lib/postgresql (scripts/prereqs test installs it)")
}

/// A running private PostgreSQL; stopped (immediately) and removed when dropped.
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// Runs `cmd` (a shell command line) as the `postgres` user.
fn as_postgres(cmd: &str) -> Command {
    let mut c = Command::new("su");
    c.args(["postgres", "-s", "/bin/sh", "-c", cmd]);
    c
}

impl Postgres {
    /// Initialises a cluster (role `berth`, trusted on loopback) and starts it.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("chown").arg("postgres").arg(dir.path()));
        let data = dir.path().join("data");
        run(&mut as_postgres(&format!(
            "{} -D {} -U berth -A trust --no-sync >/dev/null",
            bin.join("initdb").display(),
            data.display()
        )));
        let pg = Postgres { port: free_port(), dir, bin };
        pg.start_again();
        pg
    }

    /// `postgres://berth@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://berth@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &str) -> Command {
        let data = self.dir.path().join("data");
        as_postgres(&format!("{} -D {} {args}", self.bin.join("pg_ctl").display(), data.display()))
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&self) {
        let log = self.dir.path().join("postgres.log");
        let opts =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        run(&mut self.pg_ctl(&format!("-w -t 30 -l {} -o '{opts}' start", log.display())));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast: open sessions are ended, as in a real outage).
    pub fn stop(&self) {
        run(&mut self.pg_ctl("-w -m fast stop"));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl("-m immediate stop").output();
    }
}
