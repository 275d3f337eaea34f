//! `berth exec`: one more process in a running container — its namespaces and cgroup, through
//! libcontainer's tenant builder, run from the `berth exec` process itself (single-threaded, as
//! libcontainer's clone requires). The process gets the container's user (or `-u`, resolved in
//! the image), environment (with `-e`), working directory (or `-w`), capabilities,
//! `no_new_privs` and seccomp filter; with `-t` a pty relayed like `run -t`'s, signals are
//! forwarded, and its exit status is `berth exec`'s (126/127 when the command cannot be run,
//! 125 for Berth's own failures).
//!
//! The seccomp filter needs care: libcontainer's tenant builder keeps only the namespaces and
//! cgroup of the container's `linux` section, so it would start the process without the
//! container's filter. Berth's executor ([`FilteredExecutor`]) loads it right before `execve`.
//! By then the capabilities are the container's, and loading a filter without `no_new_privs`
//! needs `CAP_SYS_ADMIN`: the process gets it in its effective and permitted sets only (not in
//! the bounding set, so `execve` could not keep it anyway), and the executor drops it once the
//! filter is loaded.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use anyhow::{Context, bail};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use serde_json::{Value, json};

use super::args::ExecArgs;
use super::monitor;
use super::state::{self, Paths};

/// Runs the command of `berth exec`; returns its exit status.
pub fn exec(paths: &Paths, a: &ExecArgs) -> anyhow::Result<i32> {
    let c = state::resolve(paths, &a.container)?;
    if !state::running(&c) {
        bail!("container {} is not running", a.container);
    }
    let dir = paths.container(&c.id);
    let config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)
        .context("the container's config.json is damaged")?;
    let process = &config["process"];

    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|e| e.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    if a.tty {
        super::set_env(&mut env, "TERM=xterm".into());
    }
    for e in &a.env {
        if e.contains('=') {
            super::set_env(&mut env, e.clone());
        } else if let Ok(v) = std::env::var(e) {
            super::set_env(&mut env, format!("{e}={v}"));
        }
    }
    let cwd = match &a.workdir {
        Some(w) if !super::spec::valid_container_path(w) => bail!("--workdir must be an absolute path"),
        Some(w) => w.clone(),
        None => process["cwd"].as_str().unwrap_or("/").to_string(),
    };
    let user = match &a.user {
        Some(u) => {
            let layer_dirs: Vec<_> = c.layers.iter().map(|l| paths.layer(l)).collect();
            let (uid, gid, additional) = super::spec::resolve_user(u, &layer_dirs)?;
            json!({"uid": uid, "gid": gid, "additionalGids": additional})
        }
        None => process["user"].clone(),
    };

    // 127/126 as for `run`: the command is looked up in the container's (mounted) root.
    let command = a.command.first().cloned().unwrap_or_default();
    let path_var = env.iter().find_map(|e| e.strip_prefix("PATH="));
    let mounts: Vec<String> = config["mounts"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["destination"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    super::command::check(&super::rootfs::rootfs_dir(paths, &c.id), &command, path_var, &cwd, &mounts)?;

    let seccomp: Option<LinuxSeccomp> = match config["linux"].get("seccomp") {
        Some(s) => Some(serde_json::from_value(s.clone()).context("the container's seccomp filter is damaged")?),
        None => None,
    };
    let mut caps = process["capabilities"].clone();
    let bounding: Vec<String> = caps["bounding"]
        .as_array()
        .map(|b| b.iter().filter_map(|c| c.as_str().map(String::from)).collect())
        .unwrap_or_default();
    // See the module's comment: CAP_SYS_ADMIN to load the filter, dropped right after.
    let lend_admin = seccomp.is_some() && !bounding.iter().any(|c| c == "CAP_SYS_ADMIN");
    if lend_admin {
        for set in ["effective", "permitted"] {
            if let Some(list) = caps[set].as_array_mut() {
                list.push(json!("CAP_SYS_ADMIN"));
            }
        }
    }
    let mut exec_process = json!({
        "terminal": a.tty,
        "user": user,
        "args": a.command,
        "env": env,
        "cwd": cwd,
        "capabilities": caps,
    });
    if process["noNewPrivileges"] == json!(true) {
        exec_process["noNewPrivileges"] = json!(true);
    }
    let process_file = dir.join(format!("exec-{}.json", std::process::id()));
    std::fs::write(&process_file, serde_json::to_vec(&exec_process)?)?;
    let result = run_tenant(paths, &c.id, a, &process_file, FilteredExecutor { seccomp, lend_admin }, &command);
    let _ = std::fs::remove_file(&process_file);
    result
}

fn run_tenant(
    paths: &Paths,
    id: &str,
    a: &ExecArgs,
    process_file: &std::path::Path,
    executor: FilteredExecutor,
    command: &str,
) -> anyhow::Result<i32> {
    let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(paths.libcontainer_state())
        .context("cannot use the runtime state directory")?
        .with_executor(executor);
    let mut console = None;
    if a.tty {
        let sock = monitor::console_socket_path(id);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).with_context(|| format!("cannot bind {}", sock.display()))?;
        builder = builder.with_console_socket(Some(&sock));
        console = Some((listener, sock));
    } else {
        // Output goes straight to this process's stdout and stderr; stdin only with -i.
        let stdin: OwnedFd = if a.interactive {
            // SAFETY: dup returns a new descriptor we own.
            nix::unistd::dup(0).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })?
        } else {
            File::open("/dev/null")?.into()
        };
        builder = builder.with_stdin(stdin);
    }
    let built = builder.as_tenant().with_process(Some(process_file)).with_detach(a.tty).build();
    let pid = match built {
        Ok(pid) => pid,
        Err(e) => {
            if let Some((_, sock)) = &console {
                let _ = std::fs::remove_file(sock);
            }
            return Err(monitor::runtime_error("cannot run the command in the container", &e, command));
        }
    };

    let sfd = monitor::signal_fd()?;

    let mut raw_mode = None;
    let mut master = None;
    if let Some((listener, sock)) = console.take() {
        let m = monitor::receive_master(&listener);
        let _ = std::fs::remove_file(&sock);
        let m = m?;
        if monitor::isatty(0) {
            monitor::copy_winsize(0, m.as_raw_fd());
            if a.interactive {
                raw_mode = monitor::RawMode::enter(0);
            }
        }
        monitor::set_nonblocking(m.as_raw_fd());
        master = Some(m);
    }
    let stdin_open = a.interactive && master.is_some();
    if stdin_open {
        monitor::set_nonblocking(0);
    }
    let code = monitor::relay(None, &sfd, pid, &mut Vec::new(), master.as_ref(), true, stdin_open);
    if stdin_open {
        // SAFETY: restoring the blocking flag on our stdin.
        unsafe {
            let flags = libc::fcntl(0, libc::F_GETFL);
            libc::fcntl(0, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    drop(raw_mode);
    Ok(code)
}

/// libcontainer's executor, which first loads the container's seccomp filter (see the module's
/// comment) and gives back the `CAP_SYS_ADMIN` lent for it.
#[derive(Clone)]
struct FilteredExecutor {
    seccomp: Option<LinuxSeccomp>,
    lend_admin: bool,
}

impl Executor for FilteredExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(filter) = &self.seccomp {
            libcontainer::seccomp::initialize_seccomp(filter)
                .map_err(|e| ExecutorError::Other(format!("cannot load the container's seccomp filter: {e}")))?;
        }
        if self.lend_admin {
            use caps::{CapSet, Capability};
            for set in [CapSet::Effective, CapSet::Permitted] {
                caps::drop(None, set, Capability::CAP_SYS_ADMIN)
                    .map_err(|e| ExecutorError::Other(format!("cannot drop CAP_SYS_ADMIN: {e}")))?;
            }
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
