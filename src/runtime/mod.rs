//! The bundled runtime: `berth run`, `ps`, `stop`, `rm`, `start`, `exec`, `logs`, `images`, `volume` — run
//! the images the store holds without a Docker engine.
//!
//! - `image.rs`: image references, resolution through the registry service, the layer cache fill;
//! - `pull.rs`: images named `host:port/repo:tag` pulled from another registry into the store;
//! - `layers.rs`: safe layer unpacking (whiteouts to overlay form, diff_id verified);
//! - `rootfs.rs`: the overlay (or private copy) root of a container;
//! - `spec.rs`: the OCI configuration of a container;
//! - `security.rs`: capabilities, seccomp profiles (the default one is `seccomp_default.json`),
//!   `--security-opt`, the host's devices for `--privileged`;
//! - `monitor.rs`: the single-threaded helper process that runs a container with libcontainer;
//! - `network.rs`: `--network bridge|none|host`: the bridge, veth pairs, address leases, NAT
//!   and forwarding rules, their teardown;
//! - `ports.rs`: `-p`, published ports served by a user-space proxy in the monitor;
//! - `exec.rs`: `berth exec`, a process in a running container (libcontainer's tenant builder);
//! - `logs.rs`: `berth logs` (`--tail`, `-f`);
//! - `ps.rs`: `berth ps` (`-s`, `--format`);
//! - `housekeeping.rs`: `berth rmi`, `image prune`, `system prune` (what an image is to the
//!   runtime, and why the registry store is left alone), disk sizes;
//! - `state.rs`: container records, directories and the lock;
//! - `cgroups.rs`: the host's cgroup layout;
//! - `command.rs`: exit statuses as docker gives them (125, 126, 127) and the check of the
//!   container's command in its root before it starts;
//! - `args.rs`: the subcommands and their flags (clap), flattened into `crate::cli`.
//!
//! Container state lives in files under `<data_dir>/runtime` (see `state.rs`), so it survives
//! restarts of Berth and needs no database; concurrent commands serialise on `runtime/lock`.

pub mod args;
pub mod cgroups;
pub mod command;
pub mod exec;
pub mod housekeeping;
pub mod image;
pub mod layers;
pub mod logs;
pub mod monitor;
pub mod network;
pub mod ports;
pub mod ps;
pub mod pull;
pub mod rootfs;
pub mod security;
pub mod spec;
pub mod state;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::Config;
use args::{ImageCommand, RunArgs, RuntimeCommand, SystemCommand, VolumeCommand};
use state::{Container, Paths, Status, VolumeMount};

/// Runs a runtime subcommand; returns the process exit status.
pub fn main(config: &Config, config_path: Option<&Path>, command: RuntimeCommand) -> anyhow::Result<i32> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the berth runtime needs root (it mounts filesystems and creates namespaces): run it with sudo");
    }
    let paths = Paths::new(&config.data_dir)?;
    let ctx = Ctx { config, config_path: config_path.map(Path::to_path_buf), paths };
    if let RuntimeCommand::Monitor(m) = command {
        return monitor::run(&ctx.paths, &m.id, m.attach, m.interactive);
    }
    recover(&ctx.paths)?;
    // A bridge whose last container's teardown was cut short (a crash) goes too.
    if let Ok(b) = network::Bridge::from_config(&config.runtime.bridge, &config.runtime.subnet) {
        network::collect_unused_bridge(&b);
    }
    match command {
        RuntimeCommand::Run(args) => run(&ctx, *args),
        RuntimeCommand::Ps(a) => ps::ps(&ctx.paths, a).map(|()| 0),
        RuntimeCommand::Stop(a) => {
            for what in &a.containers {
                let c = state::resolve(&ctx.paths, what)?;
                stop(&ctx.paths, &c, Duration::from_secs(a.time))?;
                println!("{what}");
            }
            Ok(0)
        }
        RuntimeCommand::Rm(a) => {
            for what in &a.containers {
                let c = state::resolve(&ctx.paths, what)?;
                rm(&ctx.paths, &c, a.force)?;
                println!("{what}");
            }
            Ok(0)
        }
        RuntimeCommand::Start(a) => {
            if a.attach && a.containers.len() > 1 {
                bail!("start -a attaches to one container at a time");
            }
            for what in &a.containers {
                let c = state::resolve(&ctx.paths, what)?;
                if state::running(&c) {
                    bail!("container {what} is already running");
                }
                if a.attach {
                    return Err(ctx.exec_monitor(&c.id, true, a.interactive));
                }
                ctx.start_detached(&c)?;
                println!("{what}");
            }
            Ok(0)
        }
        RuntimeCommand::Exec(a) => exec::exec(&ctx.paths, &a),
        RuntimeCommand::Logs(a) => logs::logs(&ctx.paths, &a).map(|()| 0),
        RuntimeCommand::Images | RuntimeCommand::Image(ImageCommand::Ls) => ctx.block_on(images(&ctx)).map(|()| 0),
        RuntimeCommand::Rmi(a) | RuntimeCommand::Image(ImageCommand::Rm(a)) => ctx.block_on(async {
            let registry = crate::registry::Registry::open(ctx.config).await?;
            housekeeping::rmi(&ctx.paths, &registry, &a.images, a.force).await
        }),
        RuntimeCommand::Image(ImageCommand::Prune(a)) => {
            let store = if a.all { None } else { Some(ctx.store_images()?) };
            housekeeping::image_prune(&ctx.paths, store.as_deref(), a.force)
        }
        RuntimeCommand::System(SystemCommand::Prune { prune, volumes }) => {
            let store = if prune.all { None } else { Some(ctx.store_images()?) };
            housekeeping::system_prune(&ctx.paths, store.as_deref(), volumes, prune.force)
        }
        RuntimeCommand::Volume(VolumeCommand::Ls { quiet }) => volume_ls(&ctx.paths, quiet).map(|()| 0),
        RuntimeCommand::Volume(VolumeCommand::Rm { volumes }) => {
            for v in &volumes {
                volume_rm(&ctx.paths, v)?;
                println!("{v}");
            }
            Ok(0)
        }
        RuntimeCommand::Monitor(_) => unreachable!("handled above"),
    }
}

struct Ctx<'a> {
    config: &'a Config,
    config_path: Option<PathBuf>,
    paths: Paths,
}

impl Ctx<'_> {
    /// The store's tagged images (what a prune without `-a` keeps the layers of).
    fn store_images(&self) -> anyhow::Result<Vec<housekeeping::StoreImage>> {
        self.block_on(async {
            let registry = crate::registry::Registry::open(self.config).await?;
            housekeeping::store_images(&registry).await
        })
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
    }

    /// `berth [--config C] --data-dir D runtime-monitor ID ...`.
    fn monitor_command(&self, id: &str, attach: bool, interactive: bool) -> anyhow::Result<Command> {
        let exe = std::env::current_exe().context("cannot find the berth binary")?;
        let mut cmd = Command::new(exe);
        if let Some(c) = &self.config_path {
            cmd.arg("--config").arg(c);
        }
        let data_dir = self.paths.root.parent().unwrap_or(&self.paths.root);
        cmd.arg("--data-dir").arg(data_dir).arg("runtime-monitor").arg(id);
        if attach {
            cmd.arg("--attach");
        }
        if interactive {
            cmd.arg("--interactive");
        }
        Ok(cmd)
    }

    /// Replaces this process with the container's monitor (foreground): its exit status becomes
    /// the container's. Returns only on failure.
    fn exec_monitor(&self, id: &str, attach: bool, interactive: bool) -> anyhow::Error {
        match self.monitor_command(id, attach, interactive) {
            Ok(mut cmd) => anyhow::Error::from(cmd.exec()).context("cannot start the container's monitor"),
            Err(e) => e,
        }
    }

    /// Starts the monitor in the background and waits until the container runs (or ran).
    fn start_detached(&self, c: &Container) -> anyhow::Result<()> {
        let dir = self.paths.container(&c.id);
        let log = std::fs::File::options().create(true).append(true).open(dir.join("monitor.log"))?;
        let mut cmd = self.monitor_command(&c.id, false, false)?;
        // Its stdout says why it could not start (read below if it exits before starting).
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        // SAFETY: setsid is async-signal-safe; the monitor leaves this terminal's session.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let before = state::now();
        let mut child = cmd.spawn().context("cannot start the container's monitor")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = child.try_wait()?;
            let exited = status.is_some();
            match state::load(&self.paths, &c.id) {
                Ok(rec) => {
                    if rec.started.as_deref().is_some_and(|s| s > before.as_str()) {
                        return Ok(());
                    }
                    if let Some(e) = rec.error.filter(|_| exited) {
                        // The monitor exits with the status the failure has (127, 126, 125).
                        let code = status.and_then(|s| s.code()).filter(|&c| c != 0).unwrap_or(command::EXIT_BERTH);
                        return Err(command::Failure { code, message: e }.into());
                    }
                }
                // Removed already: it ran, exited and was `--rm`; or it could not start (and
                // `--rm` removed it), which it said.
                Err(_) if exited && !dir.exists() => {
                    let mut said = String::new();
                    if let Some(mut out) = child.stdout.take() {
                        let _ = std::io::Read::read_to_string(&mut out, &mut said);
                    }
                    if said.trim().is_empty() {
                        return Ok(());
                    }
                    let code = status.and_then(|s| s.code()).filter(|&c| c != 0).unwrap_or(command::EXIT_BERTH);
                    return Err(command::Failure { code, message: said.trim().to_string() }.into());
                }
                Err(_) => {}
            }
            if exited {
                let log = std::fs::read_to_string(dir.join("monitor.log")).unwrap_or_default();
                bail!("the container did not start: {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("the container did not start within a minute");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Marks containers whose monitor died as exited and unmounts roots nobody uses (after a crash
/// or a reboot).
fn recover(paths: &Paths) -> anyhow::Result<()> {
    let _lock = paths.lock()?;
    for mut c in state::list(paths)? {
        if c.monitor_pid.is_some() && !state::monitor_alive(&c) {
            tracing::warn!(id = c.id, "the container's monitor is gone: marking it exited");
            if let Some(pid) = c.pid {
                // The init may outlive its monitor only if the monitor was killed: end it.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            monitor::delete_runtime_state(paths, &c.id);
            network::teardown(&c.id, c.bridge.as_ref());
            c.address = None;
            if c.status != Status::Exited {
                c.status = Status::Exited;
                c.finished = Some(state::now());
            }
            c.pid = None;
            c.monitor_pid = None;
            c.monitor_start = None;
            state::save(paths, &c)?;
        }
        if c.status != Status::Running && c.monitor_pid.is_none() {
            rootfs::unmount(paths, &c.id)?;
        }
    }
    Ok(())
}

/// Removes a container's files: root, writable layer, log, record.
pub(crate) fn remove_container_files(paths: &Paths, id: &str) -> anyhow::Result<()> {
    if let Ok(c) = state::load(paths, id) {
        network::teardown(id, c.bridge.as_ref());
    }
    rootfs::unmount(paths, id)?;
    monitor::delete_runtime_state(paths, id);
    let dir = paths.container(id);
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(())
}

/// Waits until the container's record says it exited.
fn wait_exited(paths: &Paths, id: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match state::load(paths, id) {
            Ok(c) if state::running(&c) => {}
            _ => return true,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn stop(paths: &Paths, c: &Container, timeout: Duration) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    if !state::running(c) {
        return Ok(());
    }
    let Some(pid) = c.pid.map(nix::unistd::Pid::from_raw) else { return Ok(()) };
    let _ = kill(pid, Signal::SIGTERM);
    if wait_exited(paths, &c.id, timeout) {
        return Ok(());
    }
    let _ = kill(pid, Signal::SIGKILL);
    if !wait_exited(paths, &c.id, Duration::from_secs(30)) {
        bail!("container {} did not stop", c.short_id());
    }
    Ok(())
}

fn rm(paths: &Paths, c: &Container, force: bool) -> anyhow::Result<()> {
    if state::running(c) {
        if !force {
            bail!("container {} is running: stop it first, or use rm -f", c.short_id());
        }
        stop(paths, c, Duration::ZERO)?;
    }
    let _lock = paths.lock()?;
    // Its monitor may have removed it already (`--rm`).
    if paths.container(&c.id).exists() {
        remove_container_files(paths, &c.id)?;
    }
    Ok(())
}

fn volume_ls(paths: &Paths, quiet: bool) -> anyhow::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(paths.volumes())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    if !quiet {
        println!("DRIVER    VOLUME NAME");
    }
    for n in names {
        if quiet { println!("{n}") } else { println!("local     {n}") }
    }
    Ok(())
}

fn volume_rm(paths: &Paths, name: &str) -> anyhow::Result<()> {
    state::validate_name(name)?;
    let _lock = paths.lock()?;
    let dir = paths.volume(name);
    if !dir.exists() {
        bail!("no such volume: {name}");
    }
    if let Some(c) =
        state::list(paths)?.into_iter().find(|c| c.volumes.iter().any(|v| !v.is_bind() && v.source == name))
    {
        bail!("volume {name} is in use by container {} ({}): remove the container first", c.short_id(), c.name);
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(())
}

async fn images(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let registry = crate::registry::Registry::open(ctx.config).await?;
    println!("{:<40} {:<20} {:<19} LAYERS UNPACKED", "REPOSITORY", "TAG", "DIGEST");
    for (repo, tag) in housekeeping::store_tags(&registry).await? {
        let reference = crate::oci::Reference::Tag(tag.clone());
        let (digest, unpacked) = match image::resolve(&registry, &repo, &reference).await {
            Ok(img) => {
                let n = img.layers.iter().filter(|(_, d)| ctx.paths.layer(d.hex()).is_dir()).count();
                (img.manifest_digest, format!("{n}/{}", img.layers.len()))
            }
            Err(_) => match registry.get_manifest(&repo, &reference).await {
                Ok(m) => (m.digest, "not an image".into()),
                Err(_) => ("?".into(), "-".into()),
            },
        };
        let short = digest.get(..19).unwrap_or(&digest);
        println!("{repo:<40} {tag:<20} {short:<19} {unpacked}");
    }
    Ok(())
}

/// `-v` values: `/host:/ctr[:ro]` or `name:/ctr[:ro]`.
fn parse_volume(v: &str) -> anyhow::Result<VolumeMount> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        _ => bail!("invalid volume {v:?}: use HOST_PATH:CTR_PATH[:ro] or VOLUME:CTR_PATH[:ro]"),
    };
    if !spec::valid_container_path(target) {
        bail!("invalid volume {v:?}: the container path must be absolute, without `..`");
    }
    if !source.starts_with('/') {
        state::validate_name(source)
            .map_err(|_| anyhow::anyhow!("invalid volume name {source:?} in {v:?} (a host path must be absolute)"))?;
    }
    Ok(VolumeMount { source: source.to_string(), target: target.to_string(), read_only })
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn set_env(env: &mut Vec<String>, kv: String) {
    let key = kv.split('=').next().unwrap_or_default().to_string();
    env.retain(|e| e.split('=').next() != Some(key.as_str()));
    env.push(kv);
}

fn run(ctx: &Ctx<'_>, args: RunArgs) -> anyhow::Result<i32> {
    // Check what needs no image first.
    if let Some(name) = &args.name {
        state::validate_name(name)?;
    }
    let network = network::Mode::parse(&args.network)?;
    let bridge = match network {
        network::Mode::Bridge => {
            Some(network::Bridge::from_config(&ctx.config.runtime.bridge, &ctx.config.runtime.subnet)?)
        }
        _ => None,
    };
    let ports = args.publish.iter().map(|p| ports::parse(p)).collect::<anyhow::Result<Vec<_>>>()?;
    if !ports.is_empty() && network != network::Mode::Bridge {
        bail!("-p needs --network bridge (a {} container has no address to publish)", args.network);
    }
    let memory = args.memory.as_deref().map(spec::parse_memory).transpose()?;
    if memory.is_some() {
        cgroups::require("memory", "--memory")?;
    }
    if let Some(p) = args.pids_limit {
        if p <= 0 {
            bail!("--pids-limit must be positive");
        }
        cgroups::require("pids", "--pids-limit")?;
    }
    let volumes = args.volumes.iter().map(|v| parse_volume(v)).collect::<anyhow::Result<Vec<_>>>()?;
    let tmpfs = args.tmpfs.iter().map(|t| spec::parse_tmpfs(t)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut targets: Vec<&str> = volumes.iter().map(|v| v.target.as_str()).collect();
    targets.extend(tmpfs.iter().map(|t| t.target.as_str()));
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|o| o.trim_end_matches('/') == t.trim_end_matches('/')) {
            bail!("duplicate mount point: {t}");
        }
    }
    let hardening = Security {
        options: security::parse_security_options(&args.security_opt)?,
        capabilities: security::capabilities(
            &args.cap_add,
            &args.cap_drop,
            args.privileged,
            &security::available_capabilities(),
        )?,
        tmpfs,
    };
    if let Some(w) = &args.workdir
        && !spec::valid_container_path(w)
    {
        bail!("--workdir must be an absolute path");
    }
    let image_ref = image::ImageRef::parse(args.image())?;

    let (img, layers) = ctx.block_on(async {
        let registry = crate::registry::Registry::open(ctx.config).await?;
        let repo = image_ref.local_repo();
        let reference = image_ref.reference();
        if image_ref.registry.is_some() && registry.get_manifest(&repo, &reference).await.is_err() {
            let credentials = (args.registry_user.clone(), args.registry_password.clone());
            pull::pull(&registry, &image_ref, credentials, args.ca_file.as_deref()).await?;
        }
        let img = image::resolve(&registry, &repo, &reference).await?;
        let layers = image::ensure_layers(&registry, &ctx.paths, &img).await?;
        Ok((img, layers))
    })?;

    let net = Net { mode: network, bridge, ports };
    let c = create(ctx, &args, &img, layers, volumes, memory, hardening, net)?;
    if args.detach {
        ctx.start_detached(&c)?;
        println!("{}", c.id);
        return Ok(0);
    }
    Err(ctx.exec_monitor(&c.id, true, args.interactive))
}

/// What `run`'s network flags decided.
struct Net {
    mode: network::Mode,
    bridge: Option<network::Bridge>,
    ports: Vec<ports::Port>,
}

/// What `run`'s security flags decided, checked before the image is read.
struct Security {
    options: security::SecurityOptions,
    capabilities: Vec<String>,
    tmpfs: Vec<spec::Tmpfs>,
}

#[allow(clippy::too_many_arguments)] // one value per group of `run`'s flags
fn create(
    ctx: &Ctx<'_>,
    args: &RunArgs,
    img: &image::Image,
    layers: Vec<String>,
    volumes: Vec<VolumeMount>,
    memory: Option<i64>,
    hardening: Security,
    net: Net,
) -> anyhow::Result<Container> {
    let paths = &ctx.paths;
    let cfg = &img.config;
    let id = state::new_id();
    let hostname = args.hostname.clone().unwrap_or_else(|| id[..12].to_string());

    let entrypoint: Vec<String> = match &args.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => cfg.entrypoint.clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !args.command().is_empty() {
        args.command().to_vec()
    } else if args.entrypoint.is_some() {
        Vec::new()
    } else {
        cfg.cmd.clone().unwrap_or_default()
    };
    let process_args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if process_args.is_empty() {
        bail!("no command: the image has no ENTRYPOINT or CMD, so give one after the image name");
    }
    let mut env = cfg.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    set_env(&mut env, format!("HOSTNAME={hostname}"));
    if args.tty {
        set_env(&mut env, "TERM=xterm".into());
    }
    for e in &args.env {
        if e.contains('=') {
            set_env(&mut env, e.clone());
        } else if let Ok(v) = std::env::var(e) {
            set_env(&mut env, format!("{e}={v}"));
        }
    }
    let cwd = args.workdir.clone().or_else(|| cfg.working_dir.clone().filter(|w| !w.is_empty())).unwrap_or("/".into());
    let layer_dirs: Vec<PathBuf> = layers.iter().map(|l| paths.layer(l)).collect();
    // `--user` or the image's User, from the image's own /etc/passwd and /etc/group (read
    // through its layers, links kept inside it: never the host's files).
    let user = args.user.as_deref().or(cfg.user.as_deref()).unwrap_or("");
    let (uid, gid, additional_gids) = spec::resolve_user(user, &layer_dirs)?;
    let seccomp = security::seccomp_for(&hardening.options.seccomp, &hardening.capabilities, args.privileged)?;
    let devices = if args.privileged { security::host_devices() } else { Vec::new() };

    let rootfs_mode = if rootfs::overlay_available() {
        "overlay"
    } else {
        eprintln!(
            "berth: overlayfs is not available here: the container gets a private copy of the image \
             (slower to create, uses more disk)"
        );
        "copy"
    };

    let _lock = paths.lock()?;
    // A prune (`image prune -a`, `system prune`, `rmi`) may have removed a layer between
    // `ensure_layers` and this lock; from here on the container's record protects them.
    if let Some(gone) = layers.iter().find(|l| !paths.layer(l).is_dir()) {
        bail!("layer {gone} was removed (a prune?) while the container was being created: run it again");
    }
    let all = state::list(paths)?;
    let name = args.name.clone().unwrap_or_else(|| state::default_name(&id));
    if all.iter().any(|c| c.name == name) {
        bail!("the container name {name:?} is already in use: remove that container or choose another name");
    }
    let dir = paths.container(&id);
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> anyhow::Result<Container> {
        let mut binds = Vec::new();
        for v in &volumes {
            let source = if v.is_bind() {
                let p = Path::new(&v.source);
                if !p.exists() {
                    bail!("bind mount source {} does not exist", v.source);
                }
                p.canonicalize()?
            } else {
                let data = paths.volume(&v.source).join("_data");
                std::fs::create_dir_all(&data)?;
                data
            };
            binds.push(spec::BindMount { source, target: v.target.clone(), read_only: v.read_only });
        }
        // `hosts` is written again with the address when a bridge container starts.
        std::fs::write(dir.join("hosts"), network::hosts_file(&hostname, args.name.as_deref(), None))?;
        std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
        std::fs::write(dir.join("resolv.conf"), network::resolv_conf(&net.mode))?;
        for f in ["hosts", "hostname", "resolv.conf"] {
            binds.push(spec::BindMount { source: dir.join(f), target: format!("/etc/{f}"), read_only: false });
        }
        let input = spec::SpecInput {
            id: id.clone(),
            rootfs: rootfs::rootfs_dir(paths, &id),
            args: process_args.clone(),
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            terminal: args.tty,
            hostname: hostname.clone(),
            host_network: net.mode == network::Mode::Host,
            netns: (net.mode != network::Mode::Host).then(|| network::netns_path(&id)),
            binds,
            memory_bytes: memory,
            pids_limit: args.pids_limit,
            tmpfs: hardening.tmpfs,
            capabilities: hardening.capabilities,
            seccomp,
            no_new_privileges: hardening.options.no_new_privileges,
            privileged: args.privileged,
            read_only: args.read_only,
            devices,
        };
        let config = spec::build(&input)?;
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
        let c = Container {
            id: id.clone(),
            name,
            image: args.image().to_string(),
            image_digest: img.manifest_digest.clone(),
            layers,
            command: process_args,
            tty: args.tty,
            auto_remove: args.rm,
            volumes,
            status: Status::Created,
            exit_code: None,
            pid: None,
            monitor_pid: None,
            monitor_start: None,
            rootfs_mode: rootfs_mode.to_string(),
            created: state::now(),
            started: None,
            finished: None,
            error: None,
            network: net.mode,
            bridge: net.bridge,
            address: None,
            ports: net.ports,
        };
        rootfs::prepare(paths, &c)?;
        state::save(paths, &c)?;
        Ok(c)
    })();
    if result.is_err() {
        image::remove_tree(&dir);
    }
    result
}
