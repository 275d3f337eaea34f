//! `berth user|token|robot|namespace ...`: the same management service the `/api/v1` API and
//! the web UI call (`manage::accounts::AccountAdmin`), run directly on the configured database
//! as `By::CommandLine`. Changes are recorded in the audit log with the actor `cli`.

use std::io::Read;
use std::sync::Arc;

use clap::Subcommand;

use crate::config::Config;
use crate::manage::accounts::{AccountAdmin, TokenSpec, UserChange};
use crate::manage::{By, Services};

const CLI: By<'static> = By::CommandLine;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (prints a generated password unless --password-stdin).
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Set a user's password (generated and printed unless --password-stdin).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Refuse every login and token of a user.
    Disable { name: String },
    /// Undo `disable`.
    Enable { name: String },
    /// Grant (`true`) or remove (`false`) administrator rights.
    Admin { name: String, value: bool },
    /// Delete a user or robot with its tokens and memberships.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a personal access token for an account (printed once).
    Create {
        /// The account (user, or robot `<namespace>+<name>`).
        #[arg(long)]
        user: String,
        /// A name to recognise the token by.
        #[arg(long)]
        name: String,
        /// pull, push (pull+push) or delete (pull+push+delete).
        #[arg(long, default_value = "pull")]
        scope: String,
        /// Limit to repositories matching a glob, e.g. `team/*`.
        #[arg(long)]
        repository: Option<String>,
        /// Expire after this many days.
        #[arg(long)]
        expires_days: Option<u32>,
    },
    /// List personal access tokens (of one account, or all).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by id.
    Revoke { id: i64 },
}

#[derive(Subcommand)]
pub enum RobotCommand {
    /// Create a robot `<namespace>+<name>` with a role in that namespace.
    Create {
        namespace: String,
        name: String,
        /// reader, writer or maintainer.
        #[arg(long, default_value = "reader")]
        role: String,
    },
    /// List robots.
    List,
    /// Delete a robot (by its full name) and its tokens.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum NamespaceCommand {
    /// Create an organisation.
    Create { name: String },
    /// List namespaces.
    List,
    /// Set a member's role (reader, writer, maintainer), or `remove` it.
    Member { namespace: String, account: String, role: String },
    /// List the members of an organisation.
    Members { namespace: String },
    /// Make a namespace `public` or `private`.
    Visibility { namespace: String, visibility: String },
}

pub(super) fn read_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((crate::auth::secrets::random_password(), true));
    }
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    Ok((s.trim_end_matches(['\n', '\r']).to_string(), false))
}

pub(super) fn when(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

async fn service(config: &Config) -> anyhow::Result<Arc<AccountAdmin>> {
    Ok(Services::open(config).await?.accounts)
}

pub async fn user(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    let auth = service(config).await?;
    match cmd {
        UserCommand::Add { name, admin, password_stdin } => {
            let (password, generated) = read_password(password_stdin)?;
            auth.create_user(CLI, &name, Some(&password), admin).await?;
            println!("created user {name}{}", if admin { " (admin)" } else { "" });
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List => {
            println!("{:<24} {:<6} {:<9} {:<17} LAST LOGIN", "NAME", "ADMIN", "DISABLED", "CREATED");
            for a in auth.users(CLI).await? {
                println!(
                    "{:<24} {:<6} {:<9} {:<17} {}",
                    a.name,
                    a.is_admin,
                    a.disabled,
                    when(Some(a.created_at)),
                    when(a.last_login_at)
                );
            }
        }
        UserCommand::Passwd { name, password_stdin } => {
            let (password, generated) = read_password(password_stdin)?;
            let change = UserChange { password: Some(&password), ..Default::default() };
            auth.update_user(CLI, &name, &change, None).await?;
            println!("password of {name} changed");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Disable { name } => {
            auth.update_user(CLI, &name, &UserChange { disabled: Some(true), ..Default::default() }, None).await?;
            println!("{name} disabled");
        }
        UserCommand::Enable { name } => {
            auth.update_user(CLI, &name, &UserChange { disabled: Some(false), ..Default::default() }, None).await?;
            println!("{name} enabled");
        }
        UserCommand::Admin { name, value } => {
            auth.update_user(CLI, &name, &UserChange { admin: Some(value), ..Default::default() }, None).await?;
            println!("{name} admin: {value}");
        }
        UserCommand::Delete { name } => {
            auth.delete_user(CLI, &name).await?;
            println!("{name} deleted");
        }
    }
    Ok(())
}

pub async fn token(config: &Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let auth = service(config).await?;
    match cmd {
        TokenCommand::Create { user, name, scope, repository, expires_days } => {
            let spec =
                TokenSpec { name: &name, scope: &scope, repository_pattern: repository.as_deref(), expires_days };
            let (record, secret) = auth.create_token(CLI, &user, &spec).await?;
            println!("token {} for {user} (scope {scope}); it is shown only now:", record.id);
            println!("{secret}");
        }
        TokenCommand::List { user } => {
            let tokens = auth.tokens(CLI, user.as_deref()).await?;
            println!(
                "{:<6} {:<24} {:<20} {:<7} {:<16} {:<17} LAST USED",
                "ID", "ACCOUNT", "NAME", "SCOPE", "REPOSITORIES", "EXPIRES"
            );
            for t in tokens {
                println!(
                    "{:<6} {:<24} {:<20} {:<7} {:<16} {:<17} {}",
                    t.id,
                    t.account_name,
                    t.name,
                    t.scope,
                    t.repository_pattern.as_deref().unwrap_or("*"),
                    when(t.expires_at),
                    when(t.last_used_at)
                );
            }
        }
        TokenCommand::Revoke { id } => {
            auth.revoke_token(CLI, id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

pub async fn robot(config: &Config, cmd: RobotCommand) -> anyhow::Result<()> {
    let auth = service(config).await?;
    match cmd {
        RobotCommand::Create { namespace, name, role } => {
            let robot = auth.create_robot(CLI, &namespace, &name, &role).await?;
            println!("created robot {} ({role} in {namespace}); give it a token with:", robot.name);
            println!("  berth token create --user '{}' --name ci --scope push", robot.name);
        }
        RobotCommand::List => {
            println!("{:<32} {:<20} ROLE", "NAME", "NAMESPACE");
            for r in auth.robots(CLI, None).await? {
                println!(
                    "{:<32} {:<20} {}",
                    r.name,
                    r.robot_namespace.unwrap_or_default(),
                    r.robot_role.unwrap_or_default()
                );
            }
        }
        RobotCommand::Delete { name } => {
            auth.delete_robot(CLI, &name).await?;
            println!("{name} deleted");
        }
    }
    Ok(())
}

pub async fn namespace(config: &Config, cmd: NamespaceCommand) -> anyhow::Result<()> {
    let auth = service(config).await?;
    match cmd {
        NamespaceCommand::Create { name } => {
            auth.create_org(CLI, &name).await?;
            println!("created organisation {name} (private)");
        }
        NamespaceCommand::List => {
            println!("{:<24} {:<5} VISIBILITY", "NAME", "KIND");
            for ns in auth.namespaces(CLI).await? {
                println!("{:<24} {:<5} {}", ns.name, ns.kind, if ns.public { "public" } else { "private" });
            }
        }
        NamespaceCommand::Member { namespace, account, role } => {
            if role == "remove" {
                auth.set_member(CLI, &namespace, &account, None).await?;
                println!("{account} removed from {namespace}");
            } else {
                auth.set_member(CLI, &namespace, &account, Some(&role)).await?;
                println!("{account} is {role} of {namespace}");
            }
        }
        NamespaceCommand::Members { namespace } => {
            for (account, role) in auth.namespace(CLI, &namespace).await?.members {
                println!("{account:<24} {role}");
            }
        }
        NamespaceCommand::Visibility { namespace, visibility } => {
            let public = match visibility.as_str() {
                "public" => true,
                "private" => false,
                _ => anyhow::bail!("visibility is public or private"),
            };
            auth.set_visibility(CLI, &namespace, public).await?;
            println!("{namespace} is {visibility}");
        }
    }
    Ok(())
}
