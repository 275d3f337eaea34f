//! The runtime's subcommands and docker's flags for them (clap). `crate::cli` flattens
//! [`RuntimeCommand`] into Berth's command line; the work is in `runtime::*`.

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum RuntimeCommand {
    /// Run a command in a new container from an image in the store (or `host:port/repo:tag`).
    Run(Box<RunArgs>),
    /// List containers.
    Ps(PsArgs),
    /// Stop running containers (SIGTERM, then SIGKILL after the timeout).
    Stop(StopArgs),
    /// Remove containers and their writable layers.
    Rm(RmArgs),
    /// Start stopped containers again, on their own writable layer.
    Start(StartArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Print a container's output (`-f`: and what it writes next, until it exits).
    Logs(LogsArgs),
    /// List the images in the store and whether their layers are unpacked.
    Images,
    /// Remove the runtime's unpacked copy of images (the registry store keeps them).
    Rmi(RmiArgs),
    /// Manage images: prune (unpacked layers no image or container uses), ls, rm.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The runtime's disk: prune (stopped containers, unused layers and volumes).
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Internal: the monitor process of one container.
    #[command(name = "runtime-monitor", hide = true)]
    Monitor(MonitorArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Keep STDIN open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Name the container.
    #[arg(long)]
    pub name: Option<String>,
    /// HOST_PATH:CTR_PATH[:ro|rw] (bind mount) or VOLUME:CTR_PATH[:ro|rw] (named volume).
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// K=V (or K: the value of K here).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Overwrite the image's ENTRYPOINT.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// bridge (default: a veth on the `berth0` bridge, outbound NAT), host (the host's network)
    /// or none (only `lo`).
    #[arg(long, default_value = "bridge")]
    pub network: String,
    /// Publish a container port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp] (repeatable; IP
    /// defaults to 0.0.0.0). Served by a proxy in the container's monitor.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Memory limit (e.g. 256m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Process limit.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// User (name or UID, from the image's /etc/passwd) and group: <name|uid>[:<group|gid>].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// seccomp=unconfined, seccomp=PROFILE.json (docker's format), no-new-privileges[=true|false].
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Add a capability (NET_ADMIN, CAP_SYS_ADMIN…, or ALL).
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL).
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Every capability, no seccomp filter, no masked paths, the host's devices.
    #[arg(long)]
    pub privileged: bool,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Mount a tmpfs: PATH[:OPTIONS] (default options noexec,nosuid,nodev; e.g. /tmp:size=64m,exec).
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// User for pulling from another registry (default: docker's config.json).
    #[arg(long)]
    pub registry_user: Option<String>,
    /// Password for pulling from another registry.
    #[arg(long, env = "BERTH_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<String>,
    /// PEM CA certificates to trust, besides the system's, when pulling from another registry
    /// over HTTPS (default: docker's `/etc/docker/certs.d/HOST:PORT/ca.crt` if there is one;
    /// a `client.cert` + `client.key` there is presented to registries that ask for one).
    /// With a CA, a loopback registry is reached over HTTPS too.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The image (repo[:tag], repo@digest, or host:port/repo[:tag]), then the command and its
    /// arguments (default: the image's). As with docker, everything after the image is the
    /// command's, also what looks like one of run's own flags.
    #[arg(value_names = ["IMAGE", "COMMAND"], required = true, num_args = 1.., trailing_var_arg = true)]
    pub image_and_command: Vec<String>,
}

impl RunArgs {
    /// The image named on the command line.
    pub fn image(&self) -> &str {
        &self.image_and_command[0]
    }

    /// The command and its arguments after the image (empty: the image's).
    pub fn command(&self) -> &[String] {
        &self.image_and_command[1..]
    }
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Only the latest created container (of any status).
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Do not truncate IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Format the output with placeholders: `{{.ID}} {{.Names}} {{.Image}} {{.Command}}
    /// {{.CreatedAt}} {{.RunningFor}} {{.Status}} {{.State}} {{.Size}} {{.Mounts}}`, `{{json .}}`;
    /// `table …` prints a header and aligns columns at `\t`; `json`: one JSON object a line.
    #[arg(long)]
    pub format: Option<String>,
    /// Show the size of each container's writable layer (and with its image: "virtual").
    #[arg(short = 's', long)]
    pub size: bool,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Containers to remove (volumes outlive them).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to the output and wait; the exit status is the container's.
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach STDIN.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep STDIN open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// K=V (or K: the value of K here), besides the container's environment.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container (default: the container's).
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User (name or UID from the image's /etc/passwd) and group: <name|uid>[:<group|gid>].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// The container (id, unique id prefix or name).
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow: go on printing the container's output until it exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (`all`: everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Also when a container was created from the image (the layers it has stay).
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Images (repo[:tag], repo@digest, host:port/repo[:tag]).
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Also the layers of images no container uses (not only those no image in the store has).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Remove unpacked layers no image in the store and no container has (`-a`: no container).
    Prune(PruneArgs),
    /// List the images in the store (as `berth images`).
    Ls,
    /// Remove the runtime's unpacked copy of images (as `berth rmi`).
    Rm(RmiArgs),
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Remove stopped containers and unpacked layers no image in the store and no container
    /// has (`-a`: no container); `--volumes`: also volumes no container uses.
    Prune {
        #[command(flatten)]
        prune: PruneArgs,
        /// Also remove volumes no container uses.
        #[arg(long)]
        volumes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// List volumes.
    Ls {
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Remove volumes (refused while a container uses them).
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    pub id: String,
    #[arg(long)]
    pub attach: bool,
    #[arg(long)]
    pub interactive: bool,
}
