//! The OCI runtime configuration (`config.json`) of a container: the process (args, env, cwd,
//! user, terminal, capabilities and `noNewPrivileges` as `security` decided them), namespaces
//! (mount, PID, UTS, IPC, and network unless the host's is asked for), `/proc`, a minimal `/dev`
//! with devpts, `/sys` read-only, docker's masked and read-only `/proc` and `/sys` paths, the
//! seccomp filter, a device cgroup that refuses every device but docker's defaults, a read-only
//! root if asked, tmpfs mounts, `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, volumes
//! and bind mounts, and memory/pids limits when asked. `--privileged` lifts the masks, the
//! filter and the device rule, mounts `/sys` read-write and gives the host's devices, as docker
//! does. Written as JSON and checked by parsing it as `oci_spec`'s `Spec`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// A mount from the host into the container.
#[derive(Debug, Clone)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// A tmpfs mount (`--tmpfs PATH[:OPTIONS]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub target: String,
    pub options: Vec<String>,
}

/// Everything the configuration is built from.
#[derive(Debug, Clone)]
pub struct SpecInput {
    pub id: String,
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub terminal: bool,
    pub hostname: String,
    pub host_network: bool,
    /// The network namespace to join (bridge and none), else a new one unless host.
    pub netns: Option<PathBuf>,
    pub binds: Vec<BindMount>,
    pub memory_bytes: Option<i64>,
    pub pids_limit: Option<i64>,
    pub tmpfs: Vec<Tmpfs>,
    /// The capabilities (bounding, effective, permitted).
    pub capabilities: Vec<String>,
    /// The OCI `linux.seccomp`, if any (`security::seccomp_for`).
    pub seccomp: Option<Value>,
    pub no_new_privileges: bool,
    pub privileged: bool,
    pub read_only: bool,
    /// Device nodes to create (`--privileged`: the host's, `security::host_devices`).
    pub devices: Vec<Value>,
}

/// Docker's masked paths: bound to /dev/null (files) or an empty read-only tmpfs (folders).
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// The options of a `--tmpfs` mount: docker's `noexec,nosuid,nodev` unless `exec`, `suid`,
/// `dev` ask otherwise, then the rest (`size=`, `mode=`, `ro`…); an unknown option is refused.
pub fn parse_tmpfs(spec: &str) -> anyhow::Result<Tmpfs> {
    let (target, opts) = match spec.split_once(':') {
        Some((t, o)) => (t, o),
        None => (spec, ""),
    };
    if !valid_container_path(target) || target == "/" {
        anyhow::bail!("invalid --tmpfs {spec:?}: the container path must be absolute, without `..`, not /");
    }
    let mut flags = vec!["noexec", "nosuid", "nodev"];
    let mut rest = Vec::new();
    for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let key = o.split('=').next().unwrap_or_default();
        match o {
            "exec" | "suid" | "dev" => flags.retain(|f| f[2..] != *o),
            "noexec" | "nosuid" | "nodev" => {}
            "rw" | "ro" | "sync" | "async" | "dirsync" | "atime" | "noatime" | "diratime" | "nodiratime"
            | "relatime" | "norelatime" | "strictatime" | "nostrictatime" => rest.push(o.to_string()),
            _ if o.contains('=') && matches!(key, "size" | "mode" | "uid" | "gid" | "nr_inodes" | "nr_blocks") => {
                rest.push(o.to_string())
            }
            _ => anyhow::bail!("invalid --tmpfs {spec:?}: unknown option {o:?}"),
        }
    }
    let options = flags.into_iter().map(String::from).chain(rest).collect();
    Ok(Tmpfs { target: target.to_string(), options })
}

/// Builds the configuration; fails only if the result is not a valid OCI spec.
pub fn build(input: &SpecInput) -> anyhow::Result<Value> {
    let caps: Vec<Value> = input.capabilities.iter().map(|c| json!(c)).collect();
    let sys_mode = if input.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", sys_mode]}),
    ];
    // Tmpfs mounts and binds, parents before what is mounted inside them.
    let mut user_mounts: Vec<(usize, Value)> = Vec::new();
    for t in &input.tmpfs {
        user_mounts.push((
            depth(&t.target),
            json!({"destination": t.target, "type": "tmpfs", "source": "tmpfs", "options": t.options}),
        ));
    }
    for b in &input.binds {
        let mode = if b.read_only { "ro" } else { "rw" };
        user_mounts.push((
            depth(&b.target),
            json!({"destination": b.target, "type": "bind", "source": b.source,
                   "options": ["rbind", mode, "rprivate"]}),
        ));
    }
    user_mounts.sort_by_key(|(d, _)| *d);
    mounts.extend(user_mounts.into_iter().map(|(_, m)| m));
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    match &input.netns {
        _ if input.host_network => {}
        // The namespace Berth prepared (`network.rs`): libcontainer joins it.
        Some(path) => namespaces.push(json!({"type": "network", "path": path})),
        None => namespaces.push(json!({"type": "network"})),
    }
    // The device cgroup: nothing but docker's defaults (which libcontainer adds after this
    // rule), so a container with CAP_MKNOD cannot make and open the host's disks; everything
    // when privileged.
    let device_rule = json!([{"allow": input.privileged, "access": "rwm"}]);
    let mut resources = json!({"devices": device_rule});
    if let Some(m) = input.memory_bytes {
        resources["memory"] = json!({"limit": m});
    }
    if let Some(p) = input.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": format!("/berth/{}", input.id),
        "resources": resources,
    });
    if !input.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    if let Some(seccomp) = &input.seccomp {
        linux["seccomp"] = seccomp.clone();
    }
    if !input.devices.is_empty() {
        linux["devices"] = json!(input.devices);
    }
    let mut process = json!({
        "terminal": input.terminal,
        "user": {"uid": input.uid, "gid": input.gid, "additionalGids": input.additional_gids},
        "args": input.args,
        "env": input.env,
        "cwd": input.cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
    });
    // Only when asked: libcontainer loads the seccomp filter late (after dropping capabilities,
    // which then needs the flag) whenever the key is present, even as false.
    if input.no_new_privileges {
        process["noNewPrivileges"] = json!(true);
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": input.rootfs, "readonly": input.read_only},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": linux,
    });
    // The configuration must be what libcontainer will read.
    let _: oci_spec::runtime::Spec = serde_json::from_value(spec.clone())
        .map_err(|e| anyhow::anyhow!("internal error: the container configuration is not a valid OCI spec: {e}"))?;
    Ok(spec)
}

/// The number of components of a container path (`/` is 0).
fn depth(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

/// Parses docker's `--memory` values: bytes, or a number with b, k, m, g (powers of 1024).
pub fn parse_memory(s: &str) -> anyhow::Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('b') => (&t[..t.len() - 1], 1),
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t.as_str(), 1),
    };
    let n: i64 = num.parse().map_err(|_| anyhow::anyhow!("invalid memory size {s:?} (e.g. 256m, 1g)"))?;
    let bytes = n.checked_mul(mult).filter(|b| *b >= 6 * 1024 * 1024);
    bytes.ok_or_else(|| anyhow::anyhow!("memory limit {s:?} is out of range (at least 6m)"))
}

/// `uid[:gid]` or `name[:group]` (`--user` or the image's `User`; empty is root), resolved with
/// the image's own `/etc/passwd` and `/etc/group`, read through the merged layers with links kept
/// inside the image's root (`layers::read_image_file`). The supplementary groups are docker's:
/// the primary group, and without an explicit group also every group that lists the user.
pub fn resolve_user(user: &str, layer_dirs: &[PathBuf]) -> anyhow::Result<(u32, u32, Vec<u32>)> {
    let user = user.trim();
    let user = if user.is_empty() { "0" } else { user };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // Read as the container will see them: never through a layer's link to the host's files.
    let read = |name: &str| -> String {
        super::layers::read_image_file(layer_dirs, &format!("/etc/{name}"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let passwd = read("passwd");
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == u)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(0);
            (uid, gid)
        }
        Err(_) => {
            let f = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[0] == u)
                .ok_or_else(|| anyhow::anyhow!("user {u:?} is not in the image's /etc/passwd"))?;
            (f[2].parse()?, f[3].parse()?)
        }
    };
    let group = read("group");
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| anyhow::anyhow!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    let user_name = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == uid.to_string())
        .map(|f| f[0].to_string());
    let mut additional = vec![gid];
    if let Some(name) = user_name.filter(|_| g.is_none()) {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() > 3
                && f[3].split(',').any(|m| m == name)
                && let Ok(id) = f[2].parse::<u32>()
                && id != gid
            {
                additional.push(id);
            }
        }
    }
    Ok((uid, gid, additional))
}

/// Whether `path` is an absolute container path without `..`.
pub fn valid_container_path(path: &str) -> bool {
    let p = Path::new(path);
    p.is_absolute() && !p.components().any(|c| matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256m").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
    }

    #[test]
    fn users_from_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("etc")).unwrap();
        std::fs::write(tmp.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
            .unwrap();
        std::fs::write(tmp.path().join("etc/group"), "root:x:0:\napp:x:1001:\nextra:x:2000:app\n").unwrap();
        let dirs = vec![tmp.path().to_path_buf()];
        assert_eq!(resolve_user("app", &dirs).unwrap(), (1000, 1001, vec![1001, 2000]));
        assert_eq!(resolve_user("1000", &dirs).unwrap(), (1000, 1001, vec![1001, 2000]));
        assert_eq!(resolve_user("1000:extra", &dirs).unwrap(), (1000, 2000, vec![2000]));
        assert_eq!(resolve_user("app:1001", &dirs).unwrap(), (1000, 1001, vec![1001]));
        assert_eq!(resolve_user("", &dirs).unwrap(), (0, 0, vec![0]));
        assert_eq!(resolve_user("1234", &dirs).unwrap(), (1234, 0, vec![0]));
        assert!(resolve_user("nobody-here", &dirs).is_err());
    }

    /// A layer whose `etc` links to `/etc`, or whose `passwd` links to the host's: the host's
    /// accounts never resolve an image's user. Links inside the image, whiteouts and opaque
    /// directories follow the merged view.
    #[test]
    fn users_never_come_from_the_hosts_files() {
        use std::os::unix::fs::symlink;
        assert!(std::fs::read_to_string("/etc/passwd").unwrap().contains("daemon:"), "the host has a daemon user");
        let tmp = tempfile::tempdir().unwrap();
        let layer = |name: &str| {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        // etc -> /etc: inside the image that is a loop, not the host's /etc.
        let a = layer("a");
        symlink("/etc", a.join("etc")).unwrap();
        assert!(resolve_user("daemon", std::slice::from_ref(&a)).is_err());
        // etc/passwd -> /etc/passwd and -> ../../../../etc/passwd: both stay in the image.
        let b = layer("b");
        std::fs::create_dir(b.join("etc")).unwrap();
        symlink("/etc/passwd", b.join("etc/passwd")).unwrap();
        assert!(resolve_user("daemon", std::slice::from_ref(&b)).is_err());
        std::fs::remove_file(b.join("etc/passwd")).unwrap();
        symlink("../../../../../../etc/passwd", b.join("etc/passwd")).unwrap();
        assert!(resolve_user("daemon", std::slice::from_ref(&b)).is_err());
        // A link inside the image is followed: etc -> usr/etc in a lower layer.
        let c = layer("c");
        std::fs::create_dir_all(c.join("usr/etc")).unwrap();
        std::fs::write(c.join("usr/etc/passwd"), "svc:x:700:700::/:/bin/sh\n").unwrap();
        let d = layer("d");
        symlink("usr/etc", d.join("etc")).unwrap();
        assert_eq!(resolve_user("svc", &[c.clone(), d.clone()]).unwrap().0, 700);
        // A whiteout in an upper layer hides the lower file; an opaque directory hides it too.
        let e = layer("e");
        std::fs::create_dir_all(e.join("usr/etc")).unwrap();
        let p = std::ffi::CString::new(e.join("usr/etc/passwd").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path; a 0/0 character device is overlayfs's whiteout.
        assert_eq!(unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR, 0) }, 0, "root makes whiteouts");
        assert!(resolve_user("svc", &[c.clone(), d.clone(), e]).is_err());
        let f = layer("f");
        std::fs::create_dir_all(f.join("usr/etc")).unwrap();
        let dir = std::ffi::CString::new(f.join("usr/etc").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid strings and a buffer of the given length.
        let rc =
            unsafe { libc::lsetxattr(dir.as_ptr(), c"trusted.overlay.opaque".as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, 0, "root sets trusted xattrs");
        assert!(resolve_user("svc", &[c, d, f]).is_err());
    }

    #[test]
    fn spec_is_valid() {
        let input = SpecInput {
            id: "a".repeat(64),
            rootfs: "/tmp/rootfs".into(),
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            terminal: false,
            hostname: "h".into(),
            host_network: false,
            netns: None,
            binds: vec![BindMount { source: "/tmp".into(), target: "/data".into(), read_only: true }],
            memory_bytes: Some(64 << 20),
            pids_limit: Some(10),
            tmpfs: vec![parse_tmpfs("/data/tmp:size=1m,exec").unwrap(), parse_tmpfs("/run").unwrap()],
            capabilities: vec!["CAP_CHOWN".into()],
            seccomp: None,
            no_new_privileges: false,
            privileged: false,
            read_only: true,
            devices: vec![],
        };
        let spec = build(&input).unwrap();
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 10);
        assert_eq!(spec["linux"]["resources"]["devices"], json!([{"allow": false, "access": "rwm"}]));
        assert_eq!(spec["root"]["readonly"], true);
        assert!(spec["process"].get("noNewPrivileges").is_none(), "absent unless asked (libcontainer reads presence)");
        assert!(spec["linux"]["maskedPaths"].as_array().unwrap().contains(&json!("/proc/kcore")));
        // Parents before children: /run and /data before /data/tmp.
        let dests: Vec<&str> =
            spec["mounts"].as_array().unwrap().iter().map(|m| m["destination"].as_str().unwrap()).collect();
        let pos = |d: &str| dests.iter().position(|x| *x == d).unwrap();
        assert!(pos("/data") < pos("/data/tmp") && pos("/run") < pos("/data/tmp"));
        let tmp = &spec["mounts"].as_array().unwrap()[pos("/data/tmp")];
        assert_eq!(tmp["options"], json!(["nosuid", "nodev", "size=1m"]));
        let privileged = build(&SpecInput { privileged: true, no_new_privileges: true, ..input.clone() }).unwrap();
        assert!(privileged["linux"].get("maskedPaths").is_none());
        assert_eq!(privileged["linux"]["resources"]["devices"], json!([{"allow": true, "access": "rwm"}]));
        assert_eq!(privileged["process"]["noNewPrivileges"], true);
        assert!(parse_tmpfs("relative").is_err());
        assert!(parse_tmpfs("/").is_err());
        assert!(parse_tmpfs("/t:bogus").is_err());
        assert_eq!(parse_tmpfs("/t").unwrap().options, ["noexec", "nosuid", "nodev"]);
        assert!(valid_container_path("/data"));
        assert!(!valid_container_path("data"));
        assert!(!valid_container_path("/a/../b"));
    }
}
