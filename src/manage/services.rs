//! The services built once from the configuration, for the server and the CLI alike: the
//! registry on its two stores, access control, events, the mirror, the collector and the
//! management services. Nothing runs in the background until the server starts it; the stores
//! stay inside the services.

use std::sync::Arc;

use super::accounts::AccountAdmin;
use super::backup::Backups;
use super::replication::ReplicationAdmin;
use super::storage::StorageAdmin;
use super::webhooks::EventAdmin;
use crate::acme::Acme;
use crate::auth::AuthService;
use crate::config::Config;
use crate::events::Events;
use crate::gc::Collector;
use crate::mirror::Mirror;
use crate::registry::Registry;
use crate::replication::Replicator;

/// Every service, wired.
pub struct Services {
    pub registry: Arc<Registry>,
    /// Accounts and tokens. Built even with `auth.enabled = false` (the CLI manages accounts
    /// before authentication is turned on); [`Services::access`] says whether requests use it.
    pub auth: Arc<AuthService>,
    pub events: Arc<Events>,
    /// The pull-through mirror, when configured.
    pub mirror: Option<Arc<Mirror>>,
    pub collector: Arc<Collector>,
    pub accounts: Arc<AccountAdmin>,
    pub storage: Arc<StorageAdmin>,
    pub webhooks: Arc<EventAdmin>,
    /// Copies to other registries: the worker (started by the server) and its management.
    pub replicator: Arc<Replicator>,
    pub replication: Arc<ReplicationAdmin>,
    /// Backups of the database and the blobs (`berth backup`).
    pub backups: Arc<Backups>,
    /// The ACME client, with `[tls.acme]` (the server starts it).
    pub acme: Option<Arc<Acme>>,
    auth_enabled: bool,
}

impl Services {
    /// Opens the stores named by the configuration and builds the services on them.
    pub async fn open(config: &Config) -> anyhow::Result<Services> {
        let registry = Arc::new(Registry::open(config).await?);
        let meta = registry.meta.clone();
        let auth = Arc::new(AuthService::new(meta.clone(), config.auth.clone()).await?);
        let events = Arc::new(Events::new(meta.clone()));
        auth.set_events(events.clone());
        let mirror = if config.mirror.enabled {
            let mirror = Arc::new(Mirror::new(config.mirror.clone(), registry.clone())?);
            mirror.set_events(events.clone());
            auth.set_mirror(mirror.clone());
            Some(mirror)
        } else {
            None
        };
        let upstreams = match &mirror {
            Some(_) => config.mirror.upstreams.iter().map(|u| u.name.clone()).collect(),
            None => Vec::new(),
        };
        let collector = Arc::new(
            Collector::new(registry.clone(), config.gc.clone(), upstreams, config.mirror.max_cache_bytes)
                .with_cap_check_secs(config.mirror.cap_check_secs),
        );
        let access = config.auth.enabled.then(|| auth.clone());
        let acme = Acme::new(meta.clone(), config)?.map(Arc::new);
        let replicator = Arc::new(Replicator::new(
            registry.clone(),
            events.clone(),
            config.replication.clone(),
            config.secret_key_path(),
        ));
        Replicator::listen(&replicator);
        Ok(Services {
            backups: Arc::new(Backups::new(registry.clone(), collector.clone(), config)),
            acme,
            replication: Arc::new(ReplicationAdmin::new(replicator.clone(), events.clone())),
            replicator,
            accounts: Arc::new(AccountAdmin::new(meta.clone(), auth.clone(), events.clone())),
            storage: Arc::new(StorageAdmin::new(meta, access.clone(), events.clone(), Some(collector.clone()))),
            webhooks: Arc::new(EventAdmin::new(events.clone(), access)),
            registry,
            auth,
            events,
            mirror,
            collector,
            auth_enabled: config.auth.enabled,
        })
    }

    /// The accounts service when requests are authenticated (`auth.enabled`), else `None`:
    /// the registry is open and there is nobody to manage.
    pub fn access(&self) -> Option<&Arc<AuthService>> {
        self.auth_enabled.then_some(&self.auth)
    }

    /// Marks the stored ACME certificates due, so the serving node renews them at its next
    /// check (`berth tls renew`); a line per certificate.
    pub async fn request_certificate_renewal(&self) -> anyhow::Result<Vec<String>> {
        crate::acme::request_renewal(&self.registry.meta).await
    }

    /// Whether a local namespace has the name of one of the mirror's upstreams (the mirror then
    /// stays out of it).
    pub async fn namespaces_shadowing_upstreams(&self, config: &Config) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        if self.mirror.is_some() {
            for u in &config.mirror.upstreams {
                if self.registry.meta.namespace(&u.name).await?.is_some() {
                    out.push(u.name.clone());
                }
            }
        }
        Ok(out)
    }
}
