//! Container records and the runtime's directories under the data dir:
//! `runtime/layers/<diff_id hex>` (the layer cache), `runtime/containers/<id>/` (one container:
//! `container.json`, the OCI bundle `config.json`, its writable layer `upper/` + `work/`, the
//! `rootfs/` mount point, `log`), `runtime/volumes/<name>/_data`, `runtime/state/` (libcontainer's
//! own state) and `runtime/lock`, the lock every command that changes records takes.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The runtime's directories.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    /// The runtime's directories under `data_dir` (created if missing).
    pub fn new(data_dir: &Path) -> anyhow::Result<Paths> {
        let data_dir =
            if data_dir.is_absolute() { data_dir.to_path_buf() } else { std::env::current_dir()?.join(data_dir) };
        let p = Paths { root: data_dir.join("runtime") };
        for dir in [p.layers(), p.containers(), p.volumes(), p.libcontainer_state()] {
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(p)
    }
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }
    pub fn layer(&self, diff_id_hex: &str) -> PathBuf {
        self.layers().join(diff_id_hex)
    }
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn container(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }
    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes().join(name)
    }
    pub fn libcontainer_state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Takes the runtime lock (blocks until it is free); released when the guard is dropped.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        let path = self.root.join("lock");
        let file = File::options().create(true).truncate(false).write(true).open(&path)?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error());
        }
        Ok(Lock { _file: file })
    }
}

/// The held runtime lock (`flock`, so it also goes when the process dies).
pub struct Lock {
    _file: File,
}

/// What a container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// A volume or bind mount of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeMount {
    /// An absolute host path (bind mount) or a volume name.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl VolumeMount {
    pub fn is_bind(&self) -> bool {
        self.source.starts_with('/')
    }
}

/// One container, as `container.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    /// 64 hex characters.
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The manifest digest it resolved to.
    pub image_digest: String,
    /// The layer cache entries (diff_id hex), lowest first.
    pub layers: Vec<String>,
    /// The process: entrypoint + command, after the image config was applied.
    pub command: Vec<String>,
    pub tty: bool,
    pub auto_remove: bool,
    pub volumes: Vec<VolumeMount>,
    pub status: Status,
    pub exit_code: Option<i32>,
    /// The container's init process (host PID) while it runs.
    pub pid: Option<i32>,
    /// The monitor process while it runs, with its start time (against PID reuse).
    pub monitor_pid: Option<i32>,
    pub monitor_start: Option<u64>,
    /// "overlay" or "copy".
    pub rootfs_mode: String,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// Why the last start failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
    /// `--network` (records from before networks were recorded ran on the host's).
    #[serde(default)]
    pub network: super::network::Mode,
    /// The bridge (name and subnet) of a bridge container, fixed when it was created.
    #[serde(default)]
    pub bridge: Option<super::network::Bridge>,
    /// Its address on the bridge while it runs.
    #[serde(default)]
    pub address: Option<std::net::Ipv4Addr>,
    /// `-p` mappings.
    #[serde(default)]
    pub ports: Vec<super::ports::Port>,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Reads one container record.
pub fn load(paths: &Paths, id: &str) -> anyhow::Result<Container> {
    let path = paths.container(id).join("container.json");
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
}

/// Writes a container record atomically (temporary file + rename).
pub fn save(paths: &Paths, c: &Container) -> anyhow::Result<()> {
    let dir = paths.container(&c.id);
    let tmp = dir.join(format!(".container.json.{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(c)?)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join("container.json"))?;
    Ok(())
}

/// Every container record, oldest first.
pub fn list(paths: &Paths) -> anyhow::Result<Vec<Container>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(paths.containers())? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name.to_str() else { continue };
        if !is_id(id) {
            continue;
        }
        match load(paths, id) {
            Ok(c) => out.push(c),
            Err(e) => tracing::debug!(id, error = %e, "skipping a container without a readable record"),
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(out)
}

/// Whether `s` is a full container id (64 lowercase hex characters).
pub fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new random container id.
pub fn new_id() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", a.simple(), b.simple())
}

/// Finds a container by full id, name, or unique id prefix.
pub fn resolve(paths: &Paths, what: &str) -> anyhow::Result<Container> {
    if what.is_empty() {
        bail!("empty container id");
    }
    let all = list(paths)?;
    if let Some(c) = all.iter().find(|c| c.id == what || c.name == what) {
        return Ok(c.clone());
    }
    let matches: Vec<&Container> = all.iter().filter(|c| c.id.starts_with(what)).collect();
    match matches.len() {
        0 => bail!("no such container: {what}"),
        1 => Ok(matches[0].clone()),
        n => bail!("{n} containers match the prefix {what}: give more characters"),
    }
}

/// A name for a container the user did not name: `adjective_noun` style would be docker's; an
/// id-derived name is as unique and needs no word lists.
pub fn default_name(id: &str) -> String {
    format!("berth_{}", &id[..12])
}

/// Container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, as docker accepts.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 128;
    if !ok {
        bail!("invalid name {name:?}: use letters, digits, '_', '.', '-' (starting with a letter or digit)");
    }
    Ok(())
}

/// The start time of a live process (clock ticks since boot, field 22 of `/proc/PID/stat`);
/// `None` if it is gone or a zombie.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    if matches!(fields.next(), Some("Z") | Some("X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the container runs: its record says so and its monitor process is alive.
pub fn running(c: &Container) -> bool {
    c.status == Status::Running && monitor_alive(c)
}

/// Whether the record's monitor process is still alive.
pub fn monitor_alive(c: &Container) -> bool {
    match (c.monitor_pid, c.monitor_start) {
        (Some(pid), Some(start)) => process_start(pid) == Some(start),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        let id = new_id();
        assert!(is_id(&id), "{id}");
        assert!(!is_id(&id[..63]));
        assert!(validate_name("web_1.a-b").is_ok());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(process_start(std::process::id() as i32).is_some());
    }
}
