//! Wiring: the services (`manage::Services`, built from the configuration), the access policy
//! and the background tasks; the actix-web server with the HTTP doors.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, middleware, web};

use crate::api;
use crate::auth::{AllowAll, Authorizer, TokenAuth};
use crate::config::Config;
use crate::manage::Services;
use crate::state::AppState;

/// A bound, ready-to-run server.
pub struct Server {
    pub server: actix_web::dev::Server,
    pub addrs: Vec<std::net::SocketAddr>,
}

/// What SQLite may hold (page caches, prepared statements; through glibc's malloc, beside the
/// jemalloc heap) before its page caches give way (a soft limit: a query never fails on it).
/// Above the pools' page caches together (12 connections of 1 MiB, `meta::pool_options`), so
/// it binds only if something else in SQLite grows.
const SQLITE_SOFT_HEAP_LIMIT: i64 = 16 << 20;

/// A long-running server's memory settings, process-wide: jemalloc returns freed pages from a
/// background thread (otherwise only new allocations in the same arena purge, and a burst's
/// pages stay resident until that arena is busy again), and SQLite is held to
/// [`SQLITE_SOFT_HEAP_LIMIT`]. Only for `serve`: the runtime's monitor process must stay
/// single-threaded, so the other commands keep jemalloc's default (no background thread).
fn hold_memory_down() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::debug!(error = %e, "jemalloc's background purging is not available");
    }
    // SAFETY: sets a process-wide SQLite setting; thread-safe, callable at any time.
    unsafe { libsqlite3_sys::sqlite3_soft_heap_limit64(SQLITE_SOFT_HEAP_LIMIT) };
}

/// Binds the listener and builds the server; `.server.await` runs it.
pub async fn build(config: &Config) -> anyhow::Result<Server> {
    crate::client_ip::init(&config.trusted_proxies)?;
    hold_memory_down();
    // HTTPS first: a bad certificate stops the start before anything else is opened.
    let https = crate::tls::Https::from_config(&config.tls)?;
    let services = Services::open(config).await?;
    let auth_service = services.access().cloned();
    match &auth_service {
        Some(auth) => auth.bootstrap_admin().await?,
        None => tracing::warn!("authentication is OFF (auth.enabled = false): anyone can push, pull and delete"),
    }
    if config.webhooks.deliver {
        crate::events::webhooks::spawn(services.events.clone(), config.webhooks.clone())?;
    }
    let authorizer: Arc<dyn Authorizer> = match &auth_service {
        Some(s) => Arc::new(TokenAuth(s.clone())),
        None => Arc::new(AllowAll),
    };
    if services.mirror.is_some() {
        for name in services.namespaces_shadowing_upstreams(config).await? {
            tracing::warn!(upstream = name, "a local namespace has this upstream's name: the mirror stays out of it");
        }
        let names: Vec<&str> = config.mirror.upstreams.iter().map(|u| u.name.as_str()).collect();
        tracing::info!(upstreams = ?names, default = %config.mirror.default_upstream, "pull-through mirror on");
    }
    services.collector.spawn_background();
    if config.replication.enabled {
        services.replicator.spawn();
    }
    // ACME: the stored certificate replaces the placeholder before the first connection.
    if let (Some(acme), Some(https)) = (&services.acme, &https) {
        acme.start(https.resolver.clone()).await?;
    }
    let storage_admin = web::Data::from(services.storage.clone());
    let account_admin = web::Data::from(services.accounts.clone());
    let event_admin = web::Data::from(services.webhooks.clone());
    let replication_admin = web::Data::from(services.replication.clone());
    let collector = web::Data::from(services.collector.clone());
    let state = web::Data::new(AppState {
        registry: services.registry.clone(),
        auth: authorizer,
        mirror: services.mirror.clone(),
        events: services.events.clone(),
        body_timeout: std::time::Duration::from_secs(config.limits.body_timeout_secs),
    });
    let events_data = web::Data::from(services.events.clone());
    api::limits::init(&config.limits);
    let auth_data = auth_service.map(web::Data::from);
    let access = config.log.access;
    let metrics = config.metrics.clone();
    let http = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(events_data.clone())
            .app_data(collector.clone())
            .app_data(storage_admin.clone())
            .app_data(account_admin.clone())
            .app_data(event_admin.clone())
            .app_data(replication_admin.clone())
            // Bodies read by extractors (forms, JSON) stall at most `limits.body_timeout_secs`.
            .wrap(middleware::from_fn(api::body::guard_bodies))
            // Inside logging and metrics: refused heads are still logged and counted.
            .wrap(middleware::from_fn(api::limits::check_head))
            .wrap(middleware::Condition::new(access, crate::access_log::AccessLog))
            .wrap(middleware::Condition::new(metrics.enabled, crate::metrics::RequestMetrics))
            // Outermost: forwarding headers from anyone but a trusted proxy are dropped before
            // anything reads the scheme or host they claim.
            .wrap(middleware::from_fn(crate::client_ip::drop_untrusted_forwarding))
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
    .shutdown_timeout(config.shutdown_timeout_secs)
    // Slow and idle clients (`[limits]`): a request head must arrive within its timeout, an
    // idle connection is closed after keep-alive, and connections per worker are capped.
    .client_request_timeout(Duration::from_secs(config.limits.client_request_timeout_secs))
    .keep_alive(match config.limits.keep_alive_secs {
        0 => actix_web::http::KeepAlive::Disabled,
        secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
    })
    .client_disconnect_timeout(Duration::from_secs(config.limits.client_disconnect_timeout_secs))
    .max_connections(config.limits.max_connections.max(1))
    // A connection's write buffer keeps its allocation up to 128 KiB: small, so that 1,000
    // keep-alive clients cost little (small blobs are sent in pieces of this size).
    .h1_write_buffer_size(crate::config::HTTP_WRITE_BUFFER)
    .worker_max_blocking_threads(config.limits.max_blocking_threads.max(1));
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
    if !config.tls.http_listen.is_empty() {
        // The plain-HTTP listener beside HTTPS (ACME HTTP-01, redirects); SIGTERM stops it too.
        let https_port = addrs.first().map(|a| a.port()).unwrap_or(443);
        let (plain, plain_addrs) = crate::acme::plain::server(
            &config.tls.http_listen,
            https_port,
            services.acme.clone(),
            config.shutdown_timeout_secs,
            &config.limits,
        )?;
        tracing::info!(listen = ?plain_addrs, "plain HTTP: ACME HTTP-01 challenges, redirects to HTTPS");
        actix_web::rt::spawn(plain);
    }
    tracing::info!(listen = ?addrs, scheme, data_dir = %config.data_dir.display(), auth = config.auth.enabled, "berth is serving");
    Ok(Server { server: http.run(), addrs })
}
