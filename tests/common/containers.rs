//! podman and buildah with storage, auth file and configuration of their own, for the suites
//! that drive them (`tests/clients.rs`, `tests/tls.rs`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::{Berth, requests_seen, require, run_client};

/// podman or buildah with storage, auth file and configuration of their own (a temporary
/// directory), each command in a private mount namespace whose `/var/lib/containers` is a
/// directory of that too. Dropping it removes the images and containers it made.
pub struct Containers {
    tool: &'static str,
    dir: tempfile::TempDir,
}

impl Containers {
    pub fn new(tool: &'static str) -> Containers {
        require(tool, &["--version"], &format!("apt-get install {tool} (scripts/prereqs test installs it)"));
        require("unshare", &["--version"], "apt-get install util-linux");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for sub in ["root", "runroot", "var-lib-containers", "tmp"] {
            std::fs::create_dir_all(p.join(sub)).unwrap();
        }
        std::fs::write(p.join("auth.json"), "{}").unwrap();
        std::fs::write(p.join("registries.conf"), "unqualified-search-registries = []\n").unwrap();
        std::fs::write(
            p.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                p.join("root").display(),
                p.join("runroot").display()
            ),
        )
        .unwrap();
        std::fs::write(
            p.join("containers.conf"),
            "[engine]\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n",
        )
        .unwrap();
        std::fs::create_dir_all("/var/lib/containers").expect("create /var/lib/containers to mount over");
        Containers { tool, dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /var/lib/containers && exec "$@""#)
            .arg(self.path("var-lib-containers"))
            .arg(self.tool)
            .args(["--root", &self.path("root"), "--runroot", &self.path("runroot"), "--storage-driver", "vfs"])
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("TMPDIR", self.path("tmp"));
        cmd
    }

    /// Runs the tool; on failure panics with its output and what `berth` saw.
    pub fn run(&self, berth: &Berth, args: &[&str]) -> String {
        run_client(berth, &mut self.command(args))
    }

    /// `login --tls-verify=false -u USER --password-stdin HOST`; checks the auth file has it.
    pub fn login(&self, berth: &Berth, user: &str, password: &str) {
        use std::io::Write;
        let mut child = self
            .command(&["login", "--tls-verify=false", "-u", user, "--password-stdin", &berth.host()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{} login: {}\n{}",
            self.tool,
            String::from_utf8_lossy(&out.stderr),
            requests_seen(berth)
        );
        let auth: Value = serde_json::from_slice(&std::fs::read(self.path("auth.json")).unwrap()).unwrap();
        assert!(auth["auths"][berth.host()]["auth"].is_string(), "{} login stored nothing: {auth}", self.tool);
    }

    /// Reads a `docker save` archive into local storage; the image id.
    pub fn load(&self, berth: &Berth, archive: &Path) -> String {
        let out = self.run(berth, &["pull", &format!("docker-archive:{}", archive.display())]);
        out.lines().last().expect("an image id").trim().to_string()
    }

    /// `push --tls-verify=false [extra] IMAGE docker://DEST`; the digest the tool reports.
    pub fn push(&self, berth: &Berth, image: &str, dest: &str, extra: &[&str]) -> String {
        let digest_file = self.path("digest");
        let mut args = vec!["push", "--tls-verify=false", "--digestfile", &digest_file];
        args.extend(extra);
        let dest = format!("docker://{dest}");
        args.extend([image, dest.as_str()]);
        self.run(berth, &args);
        std::fs::read_to_string(&digest_file).unwrap().trim().to_string()
    }

    /// Removes every local image (and buildah's working containers).
    pub fn remove_all(&self) {
        if self.tool == "buildah" {
            let _ = self.command(&["rm", "--all"]).output();
        }
        let _ = self.command(&["rmi", "--all", "--force"]).output();
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.remove_all();
    }
}

impl Containers {
    /// Runs the tool whatever its exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run the tool")
    }
}
