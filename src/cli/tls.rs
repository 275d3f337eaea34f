//! `berth tls renew`: asks for an early renewal of the ACME certificates stored in the
//! configured database (`[tls.acme]`). The serving node (any node, on a shared database) renews
//! at its next check (`tls.acme.check_interval_secs`), keeping the old certificate until the
//! new one is issued; with the CA unreachable it retries with growing waits.

use clap::Subcommand;

use crate::config::Config;
use crate::manage::Services;

#[derive(Subcommand)]
pub enum TlsCommand {
    /// Mark the stored ACME certificates due: the server renews them at its next check.
    Renew,
}

pub async fn tls(config: &Config, command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Renew => {
            let services = Services::open(config).await?;
            let lines = services.request_certificate_renewal().await?;
            if lines.is_empty() {
                anyhow::bail!(
                    "no ACME certificate is stored in this database yet: a server with [tls.acme] orders one when it starts"
                );
            }
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
    }
}
