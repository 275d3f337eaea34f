//! Wiring: builds the stores, the registry service and the access policy from the
//! configuration, and runs the HTTP server.

use std::sync::Arc;

use actix_web::{App, HttpServer, middleware, web};

use crate::api;
use crate::auth::{AllowAll, AuthService, Authorizer, TokenAuth};
use crate::config::Config;
use crate::events::Events;
use crate::gc::Collector;
use crate::manage::storage::StorageAdmin;
use crate::mirror::Mirror;
use crate::registry::Registry;
use crate::state::AppState;

/// A bound, ready-to-run server.
pub struct Server {
    pub server: actix_web::dev::Server,
    pub addrs: Vec<std::net::SocketAddr>,
}

/// Binds the listener and builds the server; `.server.await` runs it.
pub async fn build(config: &Config) -> anyhow::Result<Server> {
    crate::client_ip::init(&config.trusted_proxies)?;
    // HTTPS first: a bad certificate stops the start before anything else is opened.
    let https = crate::tls::Https::from_config(&config.tls)?;
    let registry = Arc::new(Registry::open(config).await?);
    let auth_service = if config.auth.enabled {
        let service = Arc::new(AuthService::new(registry.meta.clone(), config.auth.clone()).await?);
        service.bootstrap_admin().await?;
        Some(service)
    } else {
        tracing::warn!("authentication is OFF (auth.enabled = false): anyone can push, pull and delete");
        None
    };
    let events = Arc::new(Events::new(registry.meta.clone()));
    if let Some(auth) = &auth_service {
        auth.set_events(events.clone());
    }
    if config.webhooks.deliver {
        crate::events::webhooks::spawn(events.clone(), config.webhooks.clone())?;
    }
    let authorizer: Arc<dyn Authorizer> = match &auth_service {
        Some(s) => Arc::new(TokenAuth(s.clone())),
        None => Arc::new(AllowAll),
    };
    let mirror = if config.mirror.enabled {
        let mirror = Arc::new(Mirror::new(config.mirror.clone(), registry.clone())?);
        mirror.set_events(events.clone());
        if let Some(auth) = &auth_service {
            auth.set_mirror(mirror.clone());
        }
        let names: Vec<&str> = config.mirror.upstreams.iter().map(|u| u.name.as_str()).collect();
        for name in &names {
            if registry.meta.namespace(name).await?.is_some() {
                tracing::warn!(
                    upstream = name,
                    "a local namespace has this upstream's name: the mirror stays out of it"
                );
            }
        }
        tracing::info!(upstreams = ?names, default = %config.mirror.default_upstream, "pull-through mirror on");
        Some(mirror)
    } else {
        None
    };
    let upstreams = if config.mirror.enabled {
        config.mirror.upstreams.iter().map(|u| u.name.clone()).collect()
    } else {
        Vec::new()
    };
    let collector = Arc::new(
        Collector::new(registry.clone(), config.gc.clone(), upstreams, config.mirror.max_cache_bytes)
            .with_cap_check_secs(config.mirror.cap_check_secs),
    );
    collector.spawn_background();
    let storage_admin = web::Data::new(StorageAdmin::new(
        registry.meta.clone(),
        auth_service.clone(),
        events.clone(),
        Some(collector.clone()),
    ));
    let collector = web::Data::from(collector);
    let state = web::Data::new(AppState { registry, auth: authorizer, mirror, events: events.clone() });
    let events_data = web::Data::from(events);
    let auth_data = auth_service.map(web::Data::from);
    let access = config.log.access;
    let metrics = config.metrics.clone();
    let http = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(events_data.clone())
            .app_data(collector.clone())
            .app_data(storage_admin.clone())
            .wrap(middleware::Condition::new(access, crate::access_log::AccessLog))
            .wrap(middleware::Condition::new(metrics.enabled, crate::metrics::RequestMetrics))
            .configure(api::configure)
            .configure(api::health::configure);
        if metrics.enabled {
            app = app.configure(|cfg| api::metrics::configure_metrics(cfg, &metrics));
        }
        if let Some(auth) = &auth_data {
            app = app.app_data(auth.clone()).configure(api::token::configure).configure(api::configure_management);
        }
        // The web UI at `/`, after the API so `/v2`, `/token` and `/api/v1` keep their routes.
        app.configure(crate::ui::configure)
    })
    // SIGTERM/SIGINT: stop accepting, let requests in flight finish (up to this), then return.
    .shutdown_timeout(config.shutdown_timeout_secs);
    let http = match &https {
        Some(https) => {
            https.watch()?;
            let http = match https.on_connect() {
                Some(keep_client_cert) => http.on_connect(keep_client_cert),
                None => http,
            };
            http.bind_rustls_0_23(&config.listen, https.server_config.clone())?
        }
        None => http.bind(&config.listen)?,
    };
    let addrs = http.addrs();
    let scheme = if https.is_some() { "https" } else { "http" };
    tracing::info!(listen = ?addrs, scheme, data_dir = %config.data_dir.display(), auth = config.auth.enabled, "berth is serving");
    Ok(Server { server: http.run(), addrs })
}
