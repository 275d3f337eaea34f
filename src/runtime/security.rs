//! What a container may do, decided as docker decides it: its capabilities (docker's default
//! set, `--cap-add`/`--cap-drop` with `ALL`, every capability for `--privileged`), its seccomp
//! filter (Berth's default profile `seccomp_default.json`, a docker-format profile file, or
//! none), `no-new-privileges`, and for `--privileged` the host's devices.
//!
//! Profiles are in docker's format (`defaultAction`, `archMap`/`architectures`, `syscalls` with
//! `names`, `action`, `errnoRet`, `args`, and `includes`/`excludes` on capabilities,
//! architectures and kernel versions) and become the OCI `linux.seccomp` that libcontainer loads:
//! rules whose conditions the container does not meet are left out, as docker leaves them out.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

/// Berth's default seccomp profile (docker's default semantics).
pub const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

/// Every capability Linux knows, by number.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The capabilities Berth itself may give: those this kernel knows that are in Berth's own
/// bounding set (a capability outside it cannot be granted to anything Berth starts).
pub fn available_capabilities() -> Vec<String> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(ALL_CAPABILITIES.len() - 1);
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string())))
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| *i <= last && bounding & (1u64 << i) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// `NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN` as `CAP_NET_ADMIN`; `ALL` stays `ALL`.
fn normalize_capability(name: &str) -> anyhow::Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    if !ALL_CAPABILITIES.contains(&full.as_str()) {
        bail!("unknown capability {name:?}");
    }
    Ok(full)
}

/// The container's capabilities, as docker computes them: every available one when
/// privileged; with `ALL` in `add`, every available one but those dropped; with `ALL` in
/// `drop`, only those added; otherwise the defaults without the dropped, with the added.
/// `available` is [`available_capabilities`]; asking for one outside it is an error.
pub fn capabilities(
    add: &[String],
    drop: &[String],
    privileged: bool,
    available: &[String],
) -> anyhow::Result<Vec<String>> {
    if privileged {
        return Ok(available.to_vec());
    }
    let add = add.iter().map(|c| normalize_capability(c)).collect::<anyhow::Result<Vec<_>>>()?;
    let drop = drop.iter().map(|c| normalize_capability(c)).collect::<anyhow::Result<Vec<_>>>()?;
    let (add_all, drop_all) = (add.iter().any(|c| c == "ALL"), drop.iter().any(|c| c == "ALL"));
    for c in add.iter().filter(|c| *c != "ALL") {
        if !available.contains(c) {
            bail!("capability {c} cannot be added: Berth itself does not have it (its bounding set lacks it)");
        }
    }
    let mut caps: Vec<String> = if add_all {
        available.iter().filter(|c| !drop.contains(c)).cloned().collect()
    } else if drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).filter(|c| !drop.contains(c)).collect()
    };
    if !add_all {
        for c in add {
            if c != "ALL" && !caps.contains(&c) {
                caps.push(c);
            }
        }
    }
    Ok(caps)
}

/// Which seccomp filter a container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    /// Berth's default profile.
    Default,
    /// None (`seccomp=unconfined`).
    Unconfined,
    /// A docker-format profile: its text (read when the container is created).
    Profile(String),
}

/// What `--security-opt` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityOptions {
    pub seccomp: Seccomp,
    pub no_new_privileges: bool,
}

/// Parses docker's `--security-opt` values: `seccomp=unconfined`, `seccomp=PROFILE.json`,
/// `no-new-privileges[=true|false]` (`:` works for `=`, as in docker); anything else (AppArmor,
/// SELinux labels) is refused.
pub fn parse_security_options(opts: &[String]) -> anyhow::Result<SecurityOptions> {
    let mut out = SecurityOptions { seccomp: Seccomp::Default, no_new_privileges: false };
    for opt in opts {
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("no-new-privileges", None) => out.no_new_privileges = true,
            ("no-new-privileges", Some(v)) => {
                out.no_new_privileges = match v {
                    "true" => true,
                    "false" => false,
                    _ => bail!("invalid --security-opt {opt:?}: no-new-privileges takes true or false"),
                }
            }
            ("seccomp", Some("unconfined")) => out.seccomp = Seccomp::Unconfined,
            ("seccomp", Some("builtin")) => out.seccomp = Seccomp::Default,
            ("seccomp", Some(path)) if !path.is_empty() => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("cannot read the seccomp profile {path}"))?;
                // Checked now, so that a bad file is Berth's error before anything is made.
                let _: Profile = serde_json::from_str(&text)
                    .with_context(|| format!("the seccomp profile {path} is not a docker seccomp profile"))?;
                out.seccomp = Seccomp::Profile(text);
            }
            _ => bail!(
                "--security-opt {opt:?} is not supported: use seccomp=unconfined, seccomp=PROFILE.json or \
                 no-new-privileges[=true|false]"
            ),
        }
    }
    Ok(out)
}

// ---- docker-format seccomp profiles --------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// This machine's architecture: docker's (Go's) name for it, and libseccomp's.
fn native_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "x86" => ("386", "SCMP_ARCH_X86"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        "powerpc64" => ("ppc64", "SCMP_ARCH_PPC64"),
        other => (other, "SCMP_ARCH_NATIVE"),
    }
}

/// The running kernel's version (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    parse_version(&release).unwrap_or((0, 0))
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// The OCI `linux.seccomp` for a docker-format profile, given the container's capabilities
/// (its bounding set), the architecture (docker's name) and the kernel version.
fn oci_seccomp(profile: &str, caps: &[String], arch: (&str, &str), kernel: (u32, u32)) -> anyhow::Result<Value> {
    let p: Profile = serde_json::from_str(profile).context("not a docker seccomp profile")?;
    if p.listener_path.is_some() || p.default_action == "SCMP_ACT_NOTIFY" {
        bail!("seccomp profiles with a user-space notifier (listenerPath, SCMP_ACT_NOTIFY) are not supported");
    }
    let mut architectures: Vec<String> = Vec::new();
    match (&p.architectures, &p.arch_map) {
        (Some(a), Some(m)) if !a.is_empty() && !m.is_empty() => {
            bail!("a seccomp profile gives either architectures or archMap, not both")
        }
        (Some(a), _) if !a.is_empty() => architectures.clone_from(a),
        (_, Some(m)) => {
            for entry in m.iter().filter(|e| e.architecture == arch.1) {
                architectures.push(entry.architecture.clone());
                architectures.extend(entry.sub_architectures.iter().flatten().cloned());
            }
        }
        _ => {}
    }
    let has_cap = |c: &String| caps.iter().any(|have| have == c);
    let kernel_at_least = |v: &str| -> anyhow::Result<bool> {
        let want = parse_version(v).with_context(|| format!("invalid minKernel {v:?}"))?;
        Ok(kernel >= want)
    };
    let mut syscalls = Vec::new();
    for rule in p.syscalls.iter().flatten() {
        let names: Vec<String> = match (&rule.name, &rule.names) {
            (Some(_), Some(n)) if !n.is_empty() => bail!("a seccomp rule gives either name or names, not both"),
            (Some(n), _) => vec![n.clone()],
            (None, Some(n)) => n.clone(),
            (None, None) => bail!("a seccomp rule without a system call name"),
        };
        if rule.action == "SCMP_ACT_NOTIFY" {
            bail!("seccomp profiles with a user-space notifier (SCMP_ACT_NOTIFY) are not supported");
        }
        let (inc, exc) = (rule.includes.as_ref(), rule.excludes.as_ref());
        if let Some(a) = exc.and_then(|e| e.arches.as_ref())
            && a.iter().any(|a| a == arch.0)
        {
            continue;
        }
        if let Some(a) = inc.and_then(|i| i.arches.as_ref())
            && !a.is_empty()
            && !a.iter().any(|a| a == arch.0)
        {
            continue;
        }
        if exc.and_then(|e| e.caps.as_ref()).is_some_and(|c| c.iter().any(has_cap)) {
            continue;
        }
        if let Some(v) = exc.and_then(|e| e.min_kernel.as_deref())
            && kernel_at_least(v)?
        {
            continue;
        }
        if inc.and_then(|i| i.caps.as_ref()).is_some_and(|c| !c.iter().all(has_cap)) {
            continue;
        }
        if let Some(v) = inc.and_then(|i| i.min_kernel.as_deref())
            && !kernel_at_least(v)?
        {
            continue;
        }
        let mut out = json!({"names": names, "action": rule.action});
        if let Some(e) = rule.errno_ret {
            out["errnoRet"] = json!(e);
        }
        if let Some(args) = &rule.args
            && !args.is_empty()
        {
            out["args"] = args
                .iter()
                .map(|a| json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}))
                .collect();
        }
        syscalls.push(out);
    }
    let mut seccomp = json!({"defaultAction": p.default_action, "syscalls": syscalls});
    if let Some(e) = p.default_errno_ret {
        seccomp["defaultErrnoRet"] = json!(e);
    }
    if !architectures.is_empty() {
        seccomp["architectures"] = json!(architectures);
    }
    if let Some(f) = p.flags.filter(|f| !f.is_empty()) {
        seccomp["flags"] = json!(f);
    }
    // What libcontainer will read.
    let _: oci_spec::runtime::LinuxSeccomp =
        serde_json::from_value(seccomp.clone()).context("the seccomp profile is not valid")?;
    Ok(seccomp)
}

/// The container's `linux.seccomp`, or `None` (unconfined, or privileged: docker applies no
/// filter to privileged containers).
pub fn seccomp_for(choice: &Seccomp, caps: &[String], privileged: bool) -> anyhow::Result<Option<Value>> {
    let profile = match choice {
        _ if privileged => return Ok(None),
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => DEFAULT_PROFILE,
        Seccomp::Profile(text) => text.as_str(),
    };
    oci_seccomp(profile, caps, native_arch(), kernel_version()).map(Some)
}

// ---- devices ---------------------------------------------------------------------------------

/// The host's device nodes under `/dev` as OCI `linux.devices`, for `--privileged` (as docker:
/// every character and block device, without `/dev/pts`, `/dev/shm`, `/dev/mqueue`, `/dev/fd`
/// and the console).
pub fn host_devices() -> Vec<Value> {
    let mut out = Vec::new();
    walk_devices(Path::new("/dev"), &mut out);
    out
}

fn walk_devices(dir: &Path, out: &mut Vec<Value>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let ft = meta.file_type();
        if ft.is_dir() {
            if dir == Path::new("/dev") && matches!(name, "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".udev") {
                continue;
            }
            walk_devices(&path, out);
            continue;
        }
        if path == Path::new("/dev/console") {
            continue;
        }
        let kind = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            continue;
        };
        let rdev = meta.rdev();
        out.push(json!({
            "path": path, "type": kind,
            "major": libc::major(rdev), "minor": libc::minor(rdev),
            "fileMode": meta.mode() & 0o777, "uid": meta.uid(), "gid": meta.gid(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn capabilities_as_docker_tweaks_them() {
        let avail: Vec<String> = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        let default: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        assert_eq!(capabilities(&[], &[], false, &avail).unwrap(), default);
        let c = capabilities(&s(&["net_admin"]), &s(&["CAP_CHOWN", "MKNOD"]), false, &avail).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".into()) && !c.contains(&"CAP_CHOWN".into()));
        assert!(!c.contains(&"CAP_MKNOD".into()));
        assert_eq!(capabilities(&s(&["SYS_ADMIN"]), &s(&["ALL"]), false, &avail).unwrap(), s(&["CAP_SYS_ADMIN"]));
        let all_but = capabilities(&s(&["ALL"]), &s(&["SYS_ADMIN"]), false, &avail).unwrap();
        assert_eq!(all_but.len(), avail.len() - 1);
        assert_eq!(capabilities(&[], &[], true, &avail).unwrap(), avail);
        assert!(capabilities(&s(&["NOPE"]), &[], false, &avail).is_err());
        // Not in Berth's own bounding set: refused, not silently missing.
        let fewer: Vec<String> = avail.iter().filter(|c| *c != "CAP_SYS_RESOURCE").cloned().collect();
        assert!(capabilities(&s(&["SYS_RESOURCE"]), &[], false, &fewer).is_err());
    }

    #[test]
    fn security_options() {
        let o = parse_security_options(&[]).unwrap();
        assert_eq!(o, SecurityOptions { seccomp: Seccomp::Default, no_new_privileges: false });
        let o = parse_security_options(&s(&["no-new-privileges", "seccomp=unconfined"])).unwrap();
        assert_eq!(o, SecurityOptions { seccomp: Seccomp::Unconfined, no_new_privileges: true });
        assert!(!parse_security_options(&s(&["no-new-privileges:false"])).unwrap().no_new_privileges);
        assert!(parse_security_options(&s(&["no-new-privileges=maybe"])).is_err());
        assert!(parse_security_options(&s(&["apparmor=unconfined"])).is_err());
        assert!(parse_security_options(&s(&["seccomp=/nonexistent.json"])).is_err());
    }

    fn names_with(seccomp: &Value, action: &str) -> Vec<String> {
        seccomp["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == action && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn the_default_profile_follows_the_capabilities() {
        let amd64 = ("amd64", "SCMP_ARCH_X86_64");
        let default: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        let p = oci_seccomp(DEFAULT_PROFILE, &default, amd64, (6, 1)).unwrap();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        assert_eq!(p["architectures"], json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
        let allowed = names_with(&p, "SCMP_ACT_ALLOW");
        for refused in ["mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "kexec_load"]
        {
            assert!(!allowed.iter().any(|n| n == refused), "{refused} allowed by default");
        }
        for ok in ["read", "execve", "chroot", "arch_prctl", "modify_ldt", "ptrace"] {
            assert!(allowed.iter().any(|n| n == ok), "{ok} refused by default");
        }
        // clone only without namespace flags; clone3 answers ENOSYS.
        let clone = p["syscalls"].as_array().unwrap().iter().find(|r| r["names"] == json!(["clone"])).unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["index"], 0);
        let clone3 = p["syscalls"].as_array().unwrap().iter().find(|r| r["names"] == json!(["clone3"])).unwrap();
        assert_eq!(clone3["errnoRet"], 38);
        // CAP_SYS_ADMIN brings mount, unshare, all of clone; no ENOSYS for clone3.
        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let p = oci_seccomp(DEFAULT_PROFILE, &admin, amd64, (6, 1)).unwrap();
        let allowed = names_with(&p, "SCMP_ACT_ALLOW");
        for ok in ["mount", "unshare", "clone", "clone3", "setns"] {
            assert!(allowed.iter().any(|n| n == ok), "{ok} refused with CAP_SYS_ADMIN");
        }
        assert!(names_with(&p, "SCMP_ACT_ERRNO").is_empty());
        // Without CAP_SYS_CHROOT no chroot; ptrace needs kernel 4.8 without CAP_SYS_PTRACE.
        let p = oci_seccomp(DEFAULT_PROFILE, &[], amd64, (4, 4)).unwrap();
        let allowed = names_with(&p, "SCMP_ACT_ALLOW");
        assert!(!allowed.iter().any(|n| n == "chroot" || n == "ptrace"));
        // Architectures: s390x puts clone's flags second; arm64 gets its own calls.
        let p = oci_seccomp(DEFAULT_PROFILE, &default, ("s390x", "SCMP_ARCH_S390X"), (6, 1)).unwrap();
        let clone = p["syscalls"].as_array().unwrap().iter().find(|r| r["names"] == json!(["clone"])).unwrap();
        assert_eq!(clone["args"][0]["index"], 1);
        let p = oci_seccomp(DEFAULT_PROFILE, &default, ("arm64", "SCMP_ARCH_AARCH64"), (6, 1)).unwrap();
        assert!(names_with(&p, "SCMP_ACT_ALLOW").iter().any(|n| n == "set_tls"));
        assert!(!names_with(&p, "SCMP_ACT_ALLOW").iter().any(|n| n == "arch_prctl"));
    }

    #[test]
    fn docker_format_profiles() {
        let amd64 = ("amd64", "SCMP_ARCH_X86_64");
        let text = r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                         {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#;
        let p = oci_seccomp(text, &[], amd64, (6, 1)).unwrap();
        assert_eq!(p["syscalls"], json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]));
        assert_eq!(p["architectures"], json!(["SCMP_ARCH_X86_64"]));
        assert!(oci_seccomp(r#"{"syscalls": []}"#, &[], amd64, (6, 1)).is_err());
        assert!(oci_seccomp(r#"{"defaultAction": "SCMP_ACT_BOGUS"}"#, &[], amd64, (6, 1)).is_err());
        let both = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ERRNO"}]}"#;
        assert!(oci_seccomp(both, &[], amd64, (6, 1)).is_err());
        let notify = r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/x.sock"}"#;
        assert!(oci_seccomp(notify, &[], amd64, (6, 1)).is_err());
        assert_eq!(parse_version("6.18.44-fc-v1252"), Some((6, 18)));
        assert_eq!(parse_version("4.8"), Some((4, 8)));
    }
}
