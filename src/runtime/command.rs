//! Exit statuses as docker gives them, and finding a container's command before it starts.
//!
//! `berth run` exits with the container's own status, or: [`EXIT_BERTH`] (125) when Berth itself
//! fails (a bad flag or argument, an image not in the store, anything before the container
//! runs), [`EXIT_CANNOT_INVOKE`] (126) when the command exists but cannot be executed (a
//! directory, a file without an execute bit), [`EXIT_NOT_FOUND`] (127) when it is not in the
//! image. The monitor resolves the command in the mounted root before libcontainer starts it,
//! as runc does: `argv[0]` with a slash is a path (relative ones from the working directory),
//! anything else is looked up in the container's `PATH`; symbolic links are followed inside the
//! root, never out of it. A path under a mount point (a volume, `/proc`, `/dev`) cannot be judged
//! from the host and is left to the runtime, whose own refusal is mapped the same way
//! ([`from_runtime_error`]).

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Berth itself failed (docker's 125).
pub const EXIT_BERTH: i32 = 125;
/// The command exists but cannot be invoked (126).
pub const EXIT_CANNOT_INVOKE: i32 = 126;
/// The command is not in the image (127).
pub const EXIT_NOT_FOUND: i32 = 127;

/// A failure with the exit status docker gives it; anything else that fails is [`EXIT_BERTH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit status for an error of the runtime's commands.
pub fn exit_status(e: &anyhow::Error) -> i32 {
    e.chain().find_map(|c| c.downcast_ref::<Failure>()).map_or(EXIT_BERTH, |f| f.code)
}

fn not_found(command: &str, path_var: Option<&str>) -> Failure {
    let message = match path_var {
        Some(p) => format!("container command {command:?} not found in the image (nor in its PATH {p})"),
        None => format!("container command {command:?} not found in the image"),
    };
    Failure { code: EXIT_NOT_FOUND, message }
}

fn cannot_invoke(command: &str, why: &str) -> Failure {
    Failure { code: EXIT_CANNOT_INVOKE, message: format!("container command {command:?} cannot be invoked: {why}") }
}

/// Where a path inside the container leads.
#[derive(Debug, PartialEq, Eq)]
enum Resolved {
    /// This file of the root on the host (it may not exist as the last component).
    Host(PathBuf),
    /// A component is missing or not a directory, or the links loop.
    Missing,
    /// Under a mount point, or unreadable: the host cannot tell.
    Unknown,
}

/// Resolves `path` (absolute, inside the container) in `root`, following symbolic links as the
/// kernel would after `pivot_root` (absolute targets and `..` stay inside the root).
fn resolve(root: &Path, path: &str, mounts: &[String]) -> Resolved {
    let mut todo: Vec<OsString> = components(path.as_bytes());
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c.as_bytes() == b".." {
            done.pop();
            continue;
        }
        done.push(c);
        let inside = format!("/{}", done.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/"));
        if mounts.iter().any(|m| m.trim_end_matches('/') == inside) {
            return Resolved::Unknown;
        }
        let host: PathBuf = done.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Resolved::Missing; // ELOOP
                }
                let Ok(target) = std::fs::read_link(&host) else { return Resolved::Unknown };
                done.pop();
                if target.is_absolute() {
                    done.clear();
                }
                todo.extend(components(target.as_os_str().as_bytes()));
            }
            Ok(m) if !m.is_dir() && !todo.is_empty() => return Resolved::Missing, // ENOTDIR
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                // A volume's mount point (or a folder above it) that the image lacks is made
                // when the container starts: a path that leads under it is not the image's to
                // tell.
                let rest: Vec<String> = todo.iter().rev().map(|c| c.to_string_lossy().into_owned()).collect();
                let full =
                    [inside.trim_end_matches('/').to_string()].into_iter().chain(rest).collect::<Vec<_>>().join("/");
                if mounts
                    .iter()
                    .map(|m| m.trim_end_matches('/'))
                    .any(|m| full == m || full.starts_with(&format!("{m}/")))
                {
                    return Resolved::Unknown;
                }
                return Resolved::Missing;
            }
            Err(_) => return Resolved::Unknown,
        }
    }
    Resolved::Host(done.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// The components of a path, last first (to pop in order), without empty ones and `.`.
fn components(path: &[u8]) -> Vec<OsString> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .rev()
        .map(|c| std::ffi::OsStr::from_bytes(c).to_os_string())
        .collect()
}

fn absolute(path: &str, cwd: &str) -> String {
    if path.starts_with('/') { path.to_string() } else { format!("{}/{path}", cwd.trim_end_matches('/')) }
}

/// What a candidate turned out to be.
enum Candidate {
    Executable,
    NotExecutable(&'static str),
    Missing,
    Unknown,
}

fn candidate(root: &Path, path: &str, mounts: &[String]) -> Candidate {
    match resolve(root, path, mounts) {
        Resolved::Missing => Candidate::Missing,
        Resolved::Unknown => Candidate::Unknown,
        Resolved::Host(p) => match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => Candidate::NotExecutable("it is a directory"),
            Ok(m) if !m.is_file() => Candidate::NotExecutable("it is not a regular file"),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                Candidate::NotExecutable("it is not executable (no execute permission)")
            }
            Ok(_) => Candidate::Executable,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Candidate::Missing,
            Err(_) => Candidate::Unknown,
        },
    }
}

/// Checks that `command` (the container's `argv[0]`) can be executed in `root`: with a slash it
/// is a path (from `cwd` when relative), otherwise it is searched in `path_var` (the
/// container's `PATH`) as `execvp` does. `mounts` are the container's mount points, under
/// which nothing is judged.
pub fn check(root: &Path, command: &str, path_var: Option<&str>, cwd: &str, mounts: &[String]) -> Result<(), Failure> {
    if command.is_empty() {
        return Err(not_found(command, None));
    }
    if command.contains('/') {
        return match candidate(root, &absolute(command, cwd), mounts) {
            Candidate::Executable | Candidate::Unknown => Ok(()),
            Candidate::Missing => Err(not_found(command, None)),
            Candidate::NotExecutable(why) => Err(cannot_invoke(command, why)),
        };
    }
    let search = path_var.unwrap_or(super::DEFAULT_PATH.trim_start_matches("PATH="));
    let mut refused = None;
    for dir in search.split(':') {
        let dir = if dir.is_empty() { cwd } else { dir };
        match candidate(root, &absolute(&format!("{}/{command}", dir.trim_end_matches('/')), cwd), mounts) {
            Candidate::Executable | Candidate::Unknown => return Ok(()),
            Candidate::Missing => {}
            // execvp goes on looking, and reports EACCES only if nothing better turns up.
            Candidate::NotExecutable(why) => {
                refused.get_or_insert(why);
            }
        }
    }
    match refused {
        Some(why) => Err(cannot_invoke(command, why)),
        None => Err(not_found(command, Some(search))),
    }
}

/// Maps libcontainer's refusal to execute the command (its own check inside the container, or
/// a failed `execvp`) to 127/126; `None` for any other failure.
pub fn from_runtime_error(error: &str, command: &str) -> Option<Failure> {
    // libcontainer's words: its check ("executable '…' not found in $PATH", "… does not have
    // correct permissions") and its failed execvp ("error 'ENOENT: …' executing '…'").
    let exec_failed = error.contains("' executing '");
    if error.contains("not found in $PATH") || (exec_failed && error.contains("ENOENT")) {
        Some(Failure { code: EXIT_NOT_FOUND, message: format!("container command {command:?} not found") })
    } else if error.contains("does not have correct permissions") || (exec_failed && error.contains("EACCES")) {
        Some(cannot_invoke(command, "permission denied"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A little root: /bin/busybox (executable), /bin/sh -> busybox, /usr/bin -> ../bin (as a
    /// merged /usr), /etc/passwd (not executable), /abs -> /bin/sh, /loop -> /loop, /vol (a
    /// mount point in the container).
    fn root() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["bin", "etc", "usr", "vol", "work"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("bin/busybox"), b"\x7fELF").unwrap();
        std::fs::set_permissions(r.join("bin/busybox"), std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink("busybox", r.join("bin/sh")).unwrap();
        symlink("../bin", r.join("usr/bin")).unwrap();
        std::fs::write(r.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join("etc/passwd"), std::fs::Permissions::from_mode(0o644)).unwrap();
        symlink("/bin/sh", r.join("abs")).unwrap();
        symlink("/loop", r.join("loop")).unwrap();
        // A link that would leave the root on the host: it stays inside.
        symlink("../../../../../../bin/sh", r.join("work/up")).unwrap();
        std::fs::write(r.join("work/script"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join("work/script"), std::fs::Permissions::from_mode(0o700)).unwrap();
        t
    }

    fn code(r: Result<(), Failure>) -> i32 {
        r.map_or_else(|f| f.code, |()| 0)
    }

    #[test]
    fn finds_commands_by_path_and_in_path() {
        let t = root();
        let r = t.path();
        let mounts = vec!["/proc".to_string(), "/vol".to_string(), "/opt/tools".to_string()];
        let check = |cmd: &str, path: Option<&str>, cwd: &str| code(check(r, cmd, path, cwd, &mounts));
        assert_eq!(check("/bin/busybox", None, "/"), 0);
        assert_eq!(check("/bin/sh", None, "/"), 0);
        assert_eq!(check("/usr/bin/sh", None, "/"), 0);
        assert_eq!(check("/abs", None, "/"), 0);
        assert_eq!(check("sh", Some("/nope:/usr/bin"), "/"), 0);
        assert_eq!(check("./script", None, "/work"), 0);
        assert_eq!(check("script", Some(""), "/work"), 0); // an empty PATH entry is the cwd
        assert_eq!(check("up", Some("/work"), "/"), 0);
        assert_eq!(check("/bin/../etc/../bin/sh", None, "/"), 0);
        // Not there.
        assert_eq!(check("/nope", None, "/"), EXIT_NOT_FOUND);
        assert_eq!(check("nope", Some("/bin:/usr/bin"), "/"), EXIT_NOT_FOUND);
        assert_eq!(check("sh", Some("/etc"), "/"), EXIT_NOT_FOUND);
        assert_eq!(check("/etc/passwd/x", None, "/"), EXIT_NOT_FOUND);
        assert_eq!(check("/loop", None, "/"), EXIT_NOT_FOUND);
        assert_eq!(check("", None, "/"), EXIT_NOT_FOUND);
        // There, but not executable.
        assert_eq!(check("/etc", None, "/"), EXIT_CANNOT_INVOKE);
        assert_eq!(check("/etc/passwd", None, "/"), EXIT_CANNOT_INVOKE);
        assert_eq!(check("passwd", Some("/bin:/etc"), "/"), EXIT_CANNOT_INVOKE);
        assert_eq!(check("bin", Some("/"), "/"), EXIT_CANNOT_INVOKE);
        // A non-executable match does not hide a later executable one.
        std::fs::write(r.join("etc/sh"), b"").unwrap();
        assert_eq!(check("sh", Some("/etc:/bin"), "/"), 0);
        // Under a mount point: left to the runtime.
        assert_eq!(check("/vol/anything", None, "/"), 0);
        assert_eq!(check("/proc/self/exe", None, "/"), 0);
        // …also when the image lacks the mount point or a folder above it (made at start).
        assert_eq!(check("/opt/tools/run.sh", None, "/"), 0);
        assert_eq!(check("/opt/other", None, "/"), EXIT_NOT_FOUND);
        // The messages name the command.
        let f = super::check(r, "/nope", None, "/", &mounts).unwrap_err();
        assert_eq!(f.message, r#"container command "/nope" not found in the image"#);
        let f = super::check(r, "/etc", None, "/", &mounts).unwrap_err();
        assert_eq!(f.message, r#"container command "/etc" cannot be invoked: it is a directory"#);
    }

    #[test]
    fn runtime_refusals_map_to_docker_codes() {
        let e = "error in executing process : executable 'nope' not found in $PATH";
        assert_eq!(from_runtime_error(e, "nope").map(|f| f.code), Some(EXIT_NOT_FOUND));
        let e = "executable 'x' at path '\"/x\"' does not have correct permissions";
        assert_eq!(from_runtime_error(e, "x").map(|f| f.code), Some(EXIT_CANNOT_INVOKE));
        let e = "error 'ENOENT: No such file or directory' executing '\"x\"' with args '[\"x\"]'";
        assert_eq!(from_runtime_error(e, "x").map(|f| f.code), Some(EXIT_NOT_FOUND));
        assert_eq!(from_runtime_error("cgroup trouble", "x"), None);
        assert_eq!(from_runtime_error("mount failed: ENOENT", "x"), None);
        let e = anyhow::Error::new(Failure { code: 127, message: "m".into() }).context("outer");
        assert_eq!(exit_status(&e), 127);
        assert_eq!(exit_status(&anyhow::anyhow!("image not in the store")), EXIT_BERTH);
    }
}
