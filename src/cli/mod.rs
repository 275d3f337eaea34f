//! The command line, the third door beside the HTTP API and the web UI: `berth serve` starts
//! the server; the management commands (`accounts.rs`: users, tokens, robots, namespaces;
//! `events.rs`: webhooks and the audit log; `gc.rs`: collection, retention, quotas; `tls.rs`:
//! an early renewal of ACME certificates; `backup.rs`: backup and restore) call the
//! same services on the configured database, while the server runs or not; the runtime's
//! commands (`crate::runtime::args`) go to `crate::runtime`. `src/main.rs` only calls
//! [`main`].

mod accounts;
mod backup;
mod events;
mod gc;
mod replication;
mod tls;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

#[derive(Parser)]
#[command(name = "berth", version, about = "A self-hostable Docker/OCI registry")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    Serve {
        /// Address to listen on (overrides the configuration), e.g. 0.0.0.0:5000.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Manage users.
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// Manage personal access tokens.
    #[command(subcommand)]
    Token(accounts::TokenCommand),
    /// Manage robot accounts.
    #[command(subcommand)]
    Robot(accounts::RobotCommand),
    /// Manage namespaces: organisations, members, visibility.
    #[command(subcommand)]
    Namespace(accounts::NamespaceCommand),
    /// Manage webhooks (events: push, pull, delete, mirror, replication).
    #[command(subcommand)]
    Webhook(events::WebhookCommand),
    /// Replication to other registries: targets, rules, jobs.
    #[command(subcommand)]
    Replication(replication::ReplicationCommand),
    /// Show the audit log, newest first.
    Audit {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(short, default_value_t = 50)]
        n: i64,
    },
    /// Collect garbage now: expired uploads, retention, unreferenced manifests and blobs.
    Gc {
        /// Report what would go without deleting anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage tag retention policies.
    #[command(subcommand)]
    Retention(gc::RetentionCommand),
    /// Manage namespace storage quotas.
    #[command(subcommand)]
    Quota(gc::QuotaCommand),
    /// Back up the database and the blobs it references into DIR (absent or empty) while the
    /// registry serves.
    Backup {
        dir: PathBuf,
        /// Whether the blobs are copied (auto: from a filesystem store, not from S3).
        #[arg(long, value_enum, default_value = "auto")]
        blobs: backup::BlobsArg,
    },
    /// Restore a backup into an empty data directory (and an empty database).
    Restore { dir: PathBuf },
    /// HTTPS certificates obtained over ACME ([tls.acme]).
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// The bundled runtime: run, ps, stop, rm, start, exec, logs, images, rmi, image, system, volume.
    #[command(flatten)]
    Runtime(crate::runtime::args::RuntimeCommand),
}

fn init_logging(config: &Config, default_level: &str) {
    let mut directives = std::env::var("BERTH_LOG").unwrap_or_else(|_| default_level.to_string());
    // Clients probing HTTPS on a plain-HTTP port (docker and skopeo do, before falling back)
    // make actix log a parse error per probe; that is client noise, not a server error.
    if !directives.contains("actix_http") {
        directives.push_str(",actix_http::h1::dispatcher=off");
    }
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// glibc gives each thread that allocates its own malloc arena; the blocking pool's threads
/// (hashing, file I/O) would each keep megabytes. Two arenas are plenty for this workload.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Whether the command line names one of the runtime's subcommands (`run`, `start`, `ps`…),
/// skipping the global options before it.
fn runtime_subcommand(args: &[String]) -> bool {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "--data-dir" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => return <crate::runtime::args::RuntimeCommand as clap::Subcommand>::has_subcommand(a),
        }
    }
    false
}

/// The command line; a usage error of a runtime subcommand exits 125, as docker's do (clap's
/// own status for usage errors is 2).
fn parse_cli() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let args: Vec<String> = std::env::args().collect();
            if e.use_stderr() && runtime_subcommand(&args) {
                let _ = e.print();
                std::process::exit(crate::runtime::command::EXIT_BERTH);
            }
            e.exit()
        }
    }
}

/// The `berth` program: parses the command line and runs the command.
pub fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    let cli = parse_cli();
    if let Command::Runtime(command) = &cli.command {
        // The runtime's failures are one line. `run`, `start` and `exec` exit with docker's statuses
        // (125 for Berth's own failure, 126/127 for a command that cannot be run, the
        // container's status otherwise); the other commands (`rm`, `stop`, `ps`…) exit 1 on a
        // failure, as docker's do.
        use crate::runtime::args::RuntimeCommand as R;
        let docker_statuses = matches!(command, R::Run(_) | R::Start(_) | R::Exec(_) | R::Monitor(_));
        let code = run(cli).unwrap_or_else(|e| {
            eprintln!("berth: {e:#}");
            if docker_statuses { crate::runtime::command::exit_status(&e) } else { 1 }
        });
        std::process::exit(code);
    }
    run(cli).map(|_| ())
}

/// Runs a command; returns the exit status of a runtime command (0 for the others).
fn run(cli: Cli) -> anyhow::Result<i32> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    // The runtime's commands print for people; its logs are warnings unless BERTH_LOG asks.
    // libcontainer logs each failure on its way up (from the container's processes too): the
    // monitor reports it once, as one line, so its own logs are off.
    let level = if matches!(cli.command, Command::Runtime(_)) {
        "warn,libcgroups=error,libcontainer=off".to_string()
    } else {
        config.log.level.clone()
    };
    init_logging(&config, &level);
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            // The main runtime (background tasks: GC, webhooks, replication) gets the same
            // bounded blocking pool as every HTTP worker's (`limits.max_blocking_threads`).
            let blocking = config.limits.max_blocking_threads.max(1);
            let system = actix_web::rt::System::with_tokio_rt(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .max_blocking_threads(blocking)
                    .build()
                    .expect("a tokio runtime")
            });
            system.block_on(async move {
                let server = crate::server::build(&config).await?;
                server.server.await?;
                Ok(0)
            })
        }
        // No tokio runtime here: the runtime's monitor must stay single-threaded (libcontainer forks).
        Command::Runtime(command) => crate::runtime::main(&config, cli.config.as_deref(), command),
        command => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                match command {
                    Command::User(c) => accounts::user(&config, c).await,
                    Command::Token(c) => accounts::token(&config, c).await,
                    Command::Robot(c) => accounts::robot(&config, c).await,
                    Command::Namespace(c) => accounts::namespace(&config, c).await,
                    Command::Webhook(c) => events::webhook(&config, c).await,
                    Command::Replication(c) => replication::replication(&config, c).await,
                    Command::Audit { actor, action, n } => events::audit_log(&config, actor, action, n).await,
                    Command::Gc { dry_run } => gc::gc(&config, dry_run).await,
                    Command::Retention(c) => gc::retention(&config, c).await,
                    Command::Quota(c) => gc::quota(&config, c).await,
                    Command::Tls(c) => tls::tls(&config, c).await,
                    Command::Backup { dir, blobs } => backup::backup(&config, &dir, blobs).await,
                    Command::Restore { dir } => backup::restore(&config, &dir).await,
                    Command::Serve { .. } | Command::Runtime(_) => unreachable!("handled above"),
                }
            })
            .map(|()| 0)
        }
    }
}
