//! The monitor: the single-threaded helper process (`berth runtime-monitor ID`, Berth re-executing
//! itself, so no tokio thread exists when libcontainer forks) that creates and starts one
//! container with youki's `libcontainer`, relays its output to the log (and to the terminal when
//! attached), forwards signals, and when the container exits records the exit code, deletes the
//! runtime state and cgroup, tears its network down (`network.rs`), unmounts the root, and
//! removes the container if it was `--rm`. It also serves the container's published ports
//! (`ports.rs`), so they live exactly as long as it does.
//! `berth run` in the foreground *becomes* the monitor (exec), so its exit status is the
//! container's; `run -d` and `start` without `-a` start it detached.
//!
//! With `-t` the container gets a pty (libcontainer sends the master over a console socket); the
//! monitor puts the user's terminal in raw mode, restored on exit, and copies window sizes.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, kill, signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::state::{self, Container, Paths, Status};
use super::{network, ports, rootfs};

/// Output streams in the log.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// The container's log: records of `[stream: u8][length: u32 BE][bytes]`, appended.
pub struct LogWriter {
    file: File,
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        Ok(LogWriter { file: File::options().create(true).append(true).open(path)? })
    }

    pub fn write(&mut self, stream: u8, data: &[u8]) -> io::Result<()> {
        let mut record = Vec::with_capacity(5 + data.len());
        record.push(stream);
        record.extend_from_slice(&(data.len() as u32).to_be_bytes());
        record.extend_from_slice(data);
        self.file.write_all(&record)
    }
}

/// The path of the console socket (short: socket paths are limited to 108 bytes).
pub(super) fn console_socket_path(id: &str) -> PathBuf {
    PathBuf::from(format!("/run/berth-{}-{}.sock", &id[..16], std::process::id()))
}

/// The user's terminal in raw mode until dropped.
pub(super) struct RawMode {
    fd: RawFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub(super) fn enter(fd: RawFd) -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        // SAFETY: fd 0 stays open for the life of the process.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let saved = tcgetattr(borrowed).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(borrowed, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        // SAFETY: as in `enter`.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let _ = tcsetattr(borrowed, SetArg::TCSANOW, &self.saved);
    }
}

/// Copies the window size of `from` (a terminal) to `to` (the pty master).
pub(super) fn copy_winsize(from: RawFd, to: RawFd) {
    // SAFETY: ioctls with a properly sized winsize struct; errors are ignored (not a tty).
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

pub(super) fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Receives the pty master libcontainer sends over the console socket.
pub(super) fn receive_master(listener: &UnixListener) -> anyhow::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let (conn, _) = listener.accept().context("the container did not connect to the console socket")?;
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
        .context("cannot receive the pty from the container")?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just gave us this descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    bail!("the container sent no pty over the console socket")
}

pub(super) fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Reads what is available on `fd`: Some(bytes) (empty = would block) or None at EOF.
fn read_some(fd: RawFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: reading into a buffer we own.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n > 0 {
        return Some(n as usize);
    }
    if n == 0 {
        return None;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Some(0),
        _ => None, // EIO: the pty's other side is gone
    }
}

fn write_all_fd(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a buffer we own.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n > 0 {
            data = &data[n as usize..];
        } else if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
            let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, 1000) };
        } else {
            return; // the reader went away: output still goes to the log
        }
    }
}

/// Updates the record under the runtime lock.
fn update(paths: &Paths, id: &str, f: impl FnOnce(&mut Container)) -> anyhow::Result<Container> {
    let _lock = paths.lock()?;
    let mut c = state::load(paths, id)?;
    f(&mut c);
    state::save(paths, &c)?;
    Ok(c)
}

/// Exit status for a wait status, as shells report it.
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Runs the container `id`; returns its exit status. `attach`: relay output to this process's
/// stdout/stderr (else only to the log); `interactive`: give it this process's stdin.
pub fn run(paths: &Paths, id: &str, attach: bool, interactive: bool) -> anyhow::Result<i32> {
    let me = std::process::id() as i32;
    let c = {
        let _lock = paths.lock()?;
        let mut c = state::load(paths, id)?;
        if state::running(&c) {
            bail!("container {} is already running", c.short_id());
        }
        c.monitor_pid = Some(me);
        c.monitor_start = state::process_start(me);
        c.error = None;
        state::save(paths, &c)?;
        c
    };
    match start_and_wait(paths, &c, attach, interactive) {
        Ok(code) => Ok(code),
        Err(e) => {
            let message = format!("{e:#}");
            if !attach {
                // A detached monitor's stdout is read by the command that started it, until
                // the container runs (see `Ctx::start_detached`); nobody reads it later.
                let _ = writeln!(io::stdout(), "{message}");
            }
            network::teardown(id, c.bridge.as_ref());
            let _ = rootfs::unmount(paths, id);
            if c.auto_remove {
                // `--rm`: a container that could not start is not kept either.
                let _lock = paths.lock();
                let _ = super::remove_container_files(paths, id);
                return Err(e);
            }
            let _ = update(paths, id, |c| {
                c.error = Some(message.clone());
                c.monitor_pid = None;
                c.pid = None;
                c.address = None;
                if c.status == Status::Running {
                    c.status = Status::Exited;
                    c.finished = Some(state::now());
                }
            });
            Err(e)
        }
    }
}

/// Checks the container's command in its mounted root, from its `config.json` (127 when it is
/// not in the image, 126 when it cannot be executed); returns it.
fn check_command(paths: &Paths, c: &Container) -> anyhow::Result<String> {
    let path = paths.container(&c.id).join("config.json");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path)?).with_context(|| format!("{} is damaged", path.display()))?;
    let process = &spec["process"];
    let command = process["args"].get(0).and_then(|a| a.as_str()).unwrap_or_default().to_string();
    let path_var = process["env"]
        .as_array()
        .and_then(|env| env.iter().filter_map(|e| e.as_str()).find_map(|e| e.strip_prefix("PATH=")));
    let cwd = process["cwd"].as_str().unwrap_or("/");
    let mounts: Vec<String> = spec["mounts"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["destination"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    super::command::check(&rootfs::rootfs_dir(paths, &c.id), &command, path_var, cwd, &mounts)?;
    Ok(command)
}

/// Blocks the signals a monitor forwards or waits for (children, terminal size, the usual
/// termination signals) and returns a non-blocking signalfd that delivers them.
pub(super) fn signal_fd() -> anyhow::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        mask.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    Ok(SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?)
}

/// A libcontainer failure as one line: its refusal to execute the command as 127/126 (see
/// [`super::command`]), anything else with its causes.
pub(super) fn runtime_error(what: &str, e: &dyn std::error::Error, command: &str) -> anyhow::Error {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        source = s.source();
    }
    match super::command::from_runtime_error(&text, command) {
        Some(f) => f.into(),
        None => anyhow::anyhow!("{what}: {text}"),
    }
}

/// Deletes libcontainer's state of a container, if any is left.
pub fn delete_runtime_state(paths: &Paths, id: &str) {
    let dir = paths.libcontainer_state().join(id);
    if !dir.exists() {
        return;
    }
    match libcontainer::container::Container::load(dir.clone()) {
        Ok(mut container) => {
            if let Err(e) = container.delete(true) {
                tracing::warn!(id, error = %e, "cannot delete the container's runtime state");
            }
        }
        Err(e) => tracing::debug!(id, error = %e, "unreadable runtime state"),
    }
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn start_and_wait(paths: &Paths, c: &Container, attach: bool, interactive: bool) -> anyhow::Result<i32> {
    let id = c.id.as_str();
    let dir = paths.container(id);
    rootfs::mount(paths, c)?;
    delete_runtime_state(paths, id);
    let command = check_command(paths, c)?;
    // Published ports are bound first (one in use fails the start before anything is made),
    // then the network namespace is made; both go on any failure (see `run`).
    let bound = ports::bind(&c.ports)?;
    let attached = network::setup(id, &c.network, c.bridge.as_ref())?;
    if let Some(address) = attached.address {
        let hostname = std::fs::read_to_string(dir.join("hostname")).unwrap_or_default();
        // A name Berth made up is not the user's: docker's /etc/hosts has only the host name.
        let given_name = Some(c.name.as_str()).filter(|n| *n != state::default_name(&c.id));
        std::fs::write(dir.join("hosts"), network::hosts_file(hostname.trim(), given_name, Some(address)))?;
    }

    // The container inherits dispositions and the signal mask: give it the defaults.
    // SAFETY: setting default dispositions, single-threaded.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);

    let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(paths.libcontainer_state())
        .context("cannot use the runtime state directory")?;
    let mut console: Option<(UnixListener, PathBuf)> = None;
    let mut pipes: Vec<(OwnedFd, u8)> = Vec::new();
    if c.tty {
        let sock = console_socket_path(id);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).with_context(|| format!("cannot bind {}", sock.display()))?;
        builder = builder.with_console_socket(Some(&sock));
        console = Some((listener, sock));
    } else {
        let (out_r, out_w) = nix::unistd::pipe()?;
        let (err_r, err_w) = nix::unistd::pipe()?;
        let stdin: OwnedFd = if interactive {
            nix::unistd::dup(0).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })?
        } else {
            File::open("/dev/null")?.into()
        };
        builder = builder.with_stdin(stdin).with_stdout(out_w).with_stderr(err_w);
        pipes.push((out_r, STDOUT));
        pipes.push((err_r, STDERR));
    }
    let built = builder.as_init(&dir).with_systemd(false).with_detach(true).build();
    let mut container = match built {
        Ok(container) => container,
        Err(e) => {
            if let Some((_, sock)) = &console {
                let _ = std::fs::remove_file(sock);
            }
            delete_runtime_state(paths, id);
            return Err(runtime_error("cannot create the container", &e, &command));
        }
    };
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(runtime_error("cannot start the container", &e, &command));
    }
    let pid = container.pid().ok_or_else(|| anyhow::anyhow!("the started container has no pid"))?;

    // From here on signals arrive through a signalfd, and a vanished reader is no reason to die.
    let sfd = signal_fd()?;
    // SAFETY: ignoring SIGPIPE in the monitor only (the container already runs).
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigIgn);
    }

    let serving = attached.address.map(|address| ports::serve(bound, address));

    update(paths, id, |rec| {
        rec.status = Status::Running;
        rec.address = attached.address;
        rec.pid = Some(pid.as_raw());
        rec.started = Some(state::now());
        rec.finished = None;
        rec.exit_code = None;
    })?;
    tracing::info!(id, pid = pid.as_raw(), "container started");

    let mut log = LogWriter::open(&dir.join("log"))?;
    let mut raw_mode = None;
    let mut master: Option<OwnedFd> = None;
    if let Some((listener, sock)) = console.take() {
        let m = receive_master(&listener);
        let _ = std::fs::remove_file(&sock);
        let m = m?;
        if attach && isatty(0) {
            copy_winsize(0, m.as_raw_fd());
            if interactive {
                raw_mode = RawMode::enter(0);
            }
        }
        set_nonblocking(m.as_raw_fd());
        master = Some(m);
    }
    for (fd, _) in &pipes {
        set_nonblocking(fd.as_raw_fd());
    }
    let stdin_open = interactive && master.is_some();
    if stdin_open {
        set_nonblocking(0);
    }

    let code = relay(Some(&mut log), &sfd, pid, &mut pipes, master.as_ref(), attach, stdin_open);
    if stdin_open {
        // SAFETY: restoring the blocking flag on our stdin.
        unsafe {
            let flags = libc::fcntl(0, libc::F_GETFL);
            libc::fcntl(0, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    drop(raw_mode);
    drop(master);
    // The host ports are free before the exit is recorded (`rm` returns on that record).
    if let Some(serving) = serving {
        serving.close();
    }

    if let Err(e) = container.delete(true) {
        tracing::warn!(id, error = %e, "cannot delete the container's runtime state");
    }
    delete_runtime_state(paths, id);
    network::teardown(id, c.bridge.as_ref());
    rootfs::unmount(paths, id)?;
    let rec = update(paths, id, |rec| {
        rec.address = None;
        rec.status = Status::Exited;
        rec.exit_code = Some(code);
        rec.finished = Some(state::now());
        rec.pid = None;
        rec.monitor_pid = None;
    })?;
    tracing::info!(id, code, "container exited");
    if rec.auto_remove {
        super::remove_container_files(paths, id)?;
    }
    Ok(code)
}

/// Copies output (to the log, if any, and when attached to this process's stdout and stderr)
/// until the process `pid` exits and its output is drained; forwards signals; returns the exit
/// code.
pub(super) fn relay(
    mut log: Option<&mut LogWriter>,
    sfd: &SignalFd,
    pid: Pid,
    pipes: &mut Vec<(OwnedFd, u8)>,
    master: Option<&OwnedFd>,
    attach: bool,
    mut stdin_open: bool,
) -> i32 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut code: Option<i32> = None;
    let mut master_open = master.is_some();
    // The exit may have happened before the signalfd existed.
    if let Ok(status) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        code = exit_code(status);
    }
    let mut drain_deadline: Option<std::time::Instant> = None;
    loop {
        if code.is_some() {
            let done = pipes.is_empty() && !master_open;
            let deadline =
                *drain_deadline.get_or_insert_with(|| std::time::Instant::now() + std::time::Duration::from_secs(2));
            if done || std::time::Instant::now() > deadline {
                break;
            }
        }
        let mut fds: Vec<libc::pollfd> = Vec::new();
        fds.push(libc::pollfd { fd: sfd.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 });
        for (fd, _) in pipes.iter() {
            fds.push(libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let master_fd = master.map(|m| m.as_raw_fd()).unwrap_or(-1);
        if master_open {
            fds.push(libc::pollfd { fd: master_fd, events: libc::POLLIN, revents: 0 });
        }
        if stdin_open && code.is_none() {
            fds.push(libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 });
        }
        let timeout = if code.is_some() { 50 } else { -1 };
        // SAFETY: a valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if code.is_some() && n == 0 {
            break; // exited and nothing more to read
        }
        // Signals.
        if fds[0].revents != 0 {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    loop {
                        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::StillAlive) | Err(_) => break,
                            Ok(status) => {
                                if status.pid() == Some(pid) {
                                    code = exit_code(status);
                                }
                            }
                        }
                    }
                } else if sig == libc::SIGWINCH {
                    if master_open && isatty(0) {
                        copy_winsize(0, master_fd);
                    }
                } else if code.is_none()
                    && let Ok(s) = Signal::try_from(sig)
                {
                    tracing::debug!(signal = %s, "forwarding a signal to the container");
                    let _ = kill(pid, s);
                }
            }
        }
        // Output pipes.
        let mut closed = Vec::new();
        for (i, (fd, stream)) in pipes.iter().enumerate() {
            let p = fds[1 + i];
            if p.revents == 0 {
                continue;
            }
            match read_some(fd.as_raw_fd(), &mut buf) {
                Some(0) => {}
                Some(n) => {
                    if let Some(log) = log.as_deref_mut() {
                        let _ = log.write(*stream, &buf[..n]);
                    }
                    if attach {
                        write_all_fd(if *stream == STDERR { 2 } else { 1 }, &buf[..n]);
                    }
                }
                None => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            pipes.remove(i);
        }
        // The pty.
        if master_open
            && let Some(p) = fds.iter().find(|p| p.fd == master_fd)
            && p.revents != 0
        {
            match read_some(master_fd, &mut buf) {
                Some(0) => {}
                Some(n) => {
                    if let Some(log) = log.as_deref_mut() {
                        let _ = log.write(STDOUT, &buf[..n]);
                    }
                    if attach {
                        write_all_fd(1, &buf[..n]);
                    }
                }
                None => master_open = false,
            }
        }
        // The user's keystrokes.
        if stdin_open
            && code.is_none()
            && let Some(p) = fds.iter().find(|p| p.fd == 0)
            && p.revents != 0
        {
            match read_some(0, &mut buf) {
                Some(0) => {}
                Some(n) => write_all_fd(master_fd, &buf[..n]),
                None => stdin_open = false,
            }
        }
    }
    code.unwrap_or(255)
}
