//! `berth replication ...`: replication targets, rules and their jobs on the configured
//! database, through `manage::replication::ReplicationAdmin` (as `/api/v1/replication`) as
//! `By::CommandLine`. Jobs queued here are run by the serving nodes.

use clap::Subcommand;

use super::accounts::{read_password, when};
use crate::config::Config;
use crate::manage::replication::{RuleSpec, TargetSpec};
use crate::manage::{By, Services};

const CLI: By<'static> = By::CommandLine;

#[derive(Subcommand)]
pub enum ReplicationCommand {
    /// Manage targets: other registries that receive copies.
    #[command(subcommand)]
    Target(TargetCommand),
    /// Manage rules: which repositories and tags go to which target.
    #[command(subcommand)]
    Rule(RuleCommand),
}

#[derive(Subcommand)]
pub enum TargetCommand {
    /// Add a target (the secret, a password or token, is read from standard input and sealed).
    Add {
        name: String,
        /// The registry's URL, e.g. https://registry-b.example.com.
        url: String,
        #[arg(long, default_value = "")]
        username: String,
        /// Read the password or token from standard input.
        #[arg(long)]
        secret_stdin: bool,
        /// PEM certificates to trust for its HTTPS (besides the system's roots).
        #[arg(long, default_value = "")]
        ca_file: String,
    },
    /// List targets.
    List,
    /// Log in to a target with its credentials.
    Test { name: String },
    /// Delete a target with its rules and their jobs.
    Rm { name: String },
}

#[derive(Subcommand)]
pub enum RuleCommand {
    /// Add a rule. A push rule sends matching pushes (and, with --deletes, deletes) to the
    /// target as they happen; a pull rule copies the target's matching tags here when run (on
    /// its --schedule or by `rule run`).
    Add {
        name: String,
        #[arg(long)]
        target: String,
        /// push (local → target) or pull (target → local).
        #[arg(long, default_value = "push")]
        direction: String,
        /// Repositories, a glob (e.g. 'team/*'): local ones for push, the target's for pull.
        #[arg(long, default_value = "*")]
        repositories: String,
        /// Tags, a glob (e.g. 'v*').
        #[arg(long, default_value = "*")]
        tags: String,
        /// Tags, a regular expression the whole tag must match (instead of --tags).
        #[arg(long, default_value = "")]
        tags_regex: String,
        /// Only the latest N tags (0: every one).
        #[arg(long, default_value_t = 0)]
        latest: i64,
        /// Prefix of the repository names at the destination (team/app goes to PREFIX/team/app).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Delete at the destination what is deleted at the source.
        #[arg(long)]
        deletes: bool,
        /// Run on a schedule: an interval (30s, 10m, 6h, 1d) or a cron expression (UTC).
        #[arg(long, default_value = "")]
        schedule: String,
    },
    /// List rules.
    List,
    /// Queue a copy of every matching tag now (run by the serving nodes).
    Run { name: String },
    /// Show a rule's recent executions (runs).
    Executions {
        name: String,
        #[arg(short, default_value_t = 20)]
        n: i64,
    },
    /// Show a rule's recent jobs.
    Jobs {
        name: String,
        #[arg(short, default_value_t = 20)]
        n: i64,
        /// Only the jobs of this execution.
        #[arg(long)]
        execution: Option<i64>,
    },
    /// Delete a rule and its jobs.
    Rm { name: String },
}

pub async fn replication(config: &Config, cmd: ReplicationCommand) -> anyhow::Result<()> {
    let admin = Services::open(config).await?.replication;
    match cmd {
        ReplicationCommand::Target(TargetCommand::Add { name, url, username, secret_stdin, ca_file }) => {
            let secret = if secret_stdin { read_password(true)?.0 } else { String::new() };
            let spec = TargetSpec { name: &name, url: &url, username: &username, secret: &secret, ca_file: &ca_file };
            let t = admin.create_target(CLI, &spec).await?;
            println!("target {} added ({})", t.name, t.url);
        }
        ReplicationCommand::Target(TargetCommand::List) => {
            println!("{:<20} {:<16} {:<8} URL", "NAME", "USERNAME", "SECRET");
            for t in admin.targets(CLI).await? {
                let secret = if t.secret_sealed.is_empty() { "no" } else { "sealed" };
                println!("{:<20} {:<16} {:<8} {}", t.name, t.username, secret, t.url);
            }
        }
        ReplicationCommand::Target(TargetCommand::Test { name }) => {
            admin.test_target(CLI, &name).await?;
            println!("target {name}: logged in");
        }
        ReplicationCommand::Target(TargetCommand::Rm { name }) => {
            admin.delete_target(CLI, &name).await?;
            println!("target {name} deleted");
        }
        ReplicationCommand::Rule(RuleCommand::Add {
            name,
            target,
            direction,
            repositories,
            tags,
            tags_regex,
            latest,
            prefix,
            deletes,
            schedule,
        }) => {
            let spec = RuleSpec {
                name: &name,
                target: &target,
                direction: &direction,
                repositories: &repositories,
                tags: &tags,
                tags_regex: &tags_regex,
                latest,
                destination_prefix: &prefix,
                replicate_deletes: deletes,
                schedule: &schedule,
            };
            let r = admin.create_rule(CLI, &spec).await?;
            let way = if r.direction == "pull" { "from" } else { "to" };
            println!("rule {} added: {}:{} {way} {}", r.name, r.repositories, r.tags, r.target_name);
        }
        ReplicationCommand::Rule(RuleCommand::List) => {
            println!(
                "{:<20} {:<5} {:<16} {:<20} {:<14} {:<6} {:<16} {:<8} SCHEDULE",
                "NAME", "WAY", "TARGET", "REPOSITORIES", "TAGS", "LATEST", "PREFIX", "DELETES"
            );
            for r in admin.rules(CLI).await? {
                let tags = if r.tags_regex.is_empty() { r.tags.clone() } else { format!("/{}/", r.tags_regex) };
                let latest = if r.latest > 0 { r.latest.to_string() } else { "all".into() };
                println!(
                    "{:<20} {:<5} {:<16} {:<20} {:<14} {:<6} {:<16} {:<8} {}",
                    r.name,
                    r.direction,
                    r.target_name,
                    r.repositories,
                    tags,
                    latest,
                    r.destination_prefix,
                    r.replicate_deletes,
                    r.schedule
                );
            }
        }
        ReplicationCommand::Rule(RuleCommand::Run { name }) => {
            let (execution, queued) = admin.run_rule(CLI, &name).await?;
            println!("rule {name}: execution {execution}, {queued} jobs queued");
        }
        ReplicationCommand::Rule(RuleCommand::Executions { name, n }) => {
            println!(
                "{:<8} {:<9} {:<8} {:<8} {:<6} {:<6} {:<7} {:<12} {:<20} ERROR",
                "ID", "TRIGGER", "QUEUED", "PENDING", "DONE", "FAILED", "SKIPPED", "BYTES", "STARTED"
            );
            for e in admin.executions(CLI, &name, n).await? {
                println!(
                    "{:<8} {:<9} {:<8} {:<8} {:<6} {:<6} {:<7} {:<12} {:<20} {}",
                    e.id,
                    e.trigger,
                    e.queued,
                    e.pending,
                    e.done,
                    e.failed,
                    e.skipped,
                    e.bytes,
                    when(Some(e.started_at / 1000)),
                    e.error.unwrap_or_default()
                );
            }
        }
        ReplicationCommand::Rule(RuleCommand::Jobs { name, n, execution }) => {
            println!(
                "{:<8} {:<7} {:<30} {:<10} {:<8} {:<6} {:<7} {:<12} {:<20} LAST ERROR",
                "ID", "ACTION", "REPOSITORY:REFERENCE", "STATUS", "ATTEMPTS", "SENT", "SKIPPED", "BYTES", "FINISHED"
            );
            for j in admin.jobs(CLI, &name, execution, n).await? {
                println!(
                    "{:<8} {:<7} {:<30} {:<10} {:<8} {:<6} {:<7} {:<12} {:<20} {}",
                    j.id,
                    j.action,
                    format!("{}:{}", j.repository, j.reference),
                    j.status,
                    j.attempts,
                    j.copied,
                    j.skipped,
                    j.bytes,
                    when(j.finished_at),
                    j.last_error.unwrap_or_default()
                );
            }
        }
        ReplicationCommand::Rule(RuleCommand::Rm { name }) => {
            admin.delete_rule(CLI, &name).await?;
            println!("rule {name} deleted");
        }
    }
    Ok(())
}
