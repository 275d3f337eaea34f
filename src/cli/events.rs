//! `berth webhook ...` and `berth audit`: webhooks and the audit log on the configured
//! database, through `manage::webhooks::EventAdmin` (as `/api/v1/webhooks` and `/api/v1/audit`)
//! as `By::CommandLine`.

use clap::Subcommand;

use super::accounts::{read_password, when};
use crate::config::Config;
use crate::manage::webhooks::MAX_PAGE;
use crate::manage::{By, Services};

const CLI: By<'static> = By::CommandLine;

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Add a webhook (prints a generated secret unless --secret-stdin).
    Add {
        /// Where events are POSTed (http:// or https://).
        url: String,
        /// Only events of this namespace's repositories (default: every repository).
        #[arg(long)]
        namespace: Option<String>,
        /// Comma list of push, pull, delete, mirror, replication.
        #[arg(long, default_value = "push,delete")]
        events: String,
        /// Read the signing secret from standard input.
        #[arg(long)]
        secret_stdin: bool,
    },
    /// List webhooks.
    List,
    /// Delete a webhook and its delivery history.
    Delete { id: i64 },
    /// Stop queueing events for a webhook.
    Disable { id: i64 },
    /// Undo `disable`.
    Enable { id: i64 },
    /// Show a webhook's recent deliveries.
    Deliveries {
        id: i64,
        #[arg(long, default_value_t = 20)]
        n: i64,
    },
}

pub async fn webhook(config: &Config, cmd: WebhookCommand) -> anyhow::Result<()> {
    let admin = Services::open(config).await?.webhooks;
    match cmd {
        WebhookCommand::Add { url, namespace, events: kinds, secret_stdin } => {
            let kinds: Vec<String> = kinds.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
            let secret = if secret_stdin { Some(read_password(true)?.0) } else { None };
            let (hook, generated) =
                admin.create(CLI, namespace.as_deref(), &url, Some(&kinds), secret.as_deref()).await?;
            println!("webhook {} added ({})", hook.id, hook.events.join(","));
            if let Some(secret) = generated {
                println!("secret (shown only now): {secret}");
            }
        }
        WebhookCommand::List => {
            println!("{:<6} {:<20} {:<24} {:<8} URL", "ID", "NAMESPACE", "EVENTS", "ENABLED");
            for h in admin.webhooks(CLI).await? {
                println!(
                    "{:<6} {:<20} {:<24} {:<8} {}",
                    h.id,
                    h.namespace.as_deref().unwrap_or("*"),
                    h.events.join(","),
                    h.enabled,
                    h.url
                );
            }
        }
        WebhookCommand::Delete { id } => {
            admin.delete(CLI, id).await?;
            println!("webhook {id} deleted");
        }
        WebhookCommand::Disable { id } | WebhookCommand::Enable { id } => {
            let enabled = matches!(cmd, WebhookCommand::Enable { .. });
            admin.set_enabled(CLI, id, enabled).await?;
            println!("webhook {id} {}", if enabled { "enabled" } else { "disabled" });
        }
        WebhookCommand::Deliveries { id, n } => {
            println!("{:<8} {:<8} {:<10} {:<8} {:<6} LAST ERROR", "ID", "ACTION", "STATUS", "ATTEMPTS", "CODE");
            for d in admin.deliveries(CLI, id, None, n.clamp(1, MAX_PAGE)).await? {
                println!(
                    "{:<8} {:<8} {:<10} {:<8} {:<6} {}",
                    d.id,
                    d.action,
                    d.status,
                    d.attempts,
                    d.last_status_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    d.last_error.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// `berth audit`: the newest audit entries.
pub async fn audit_log(config: &Config, actor: Option<String>, action: Option<String>, n: i64) -> anyhow::Result<()> {
    let admin = Services::open(config).await?.webhooks;
    println!("{:<20} {:<16} {:<20} {:<24} DETAIL", "TIME", "ACTOR", "ACTION", "TARGET");
    for e in admin.audit(CLI, actor.as_deref(), action.as_deref(), None, n).await? {
        println!(
            "{:<20} {:<16} {:<20} {:<24} {}",
            when(Some(e.at)),
            e.actor,
            e.action,
            e.target.unwrap_or_default(),
            e.detail.unwrap_or_default()
        );
    }
    Ok(())
}
