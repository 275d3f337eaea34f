//! Wiring: builds the stores, the registry service and the access policy from the
//! configuration, and runs the HTTP server.

use std::sync::Arc;

use actix_web::{App, HttpServer, middleware, web};

use crate::api::{self, AppState};
use crate::auth::AllowAll;
use crate::config::Config;
use crate::meta::Meta;
use crate::registry::{Limits, Registry};
use crate::storage::BlobStore;

/// Opens the metadata and blob stores the configuration names.
pub async fn open_registry(config: &Config) -> anyhow::Result<Registry> {
    std::fs::create_dir_all(&config.data_dir)?;
    let meta = Meta::connect(&config.database_url()).await?;
    let blobs = match config.storage.kind.as_str() {
        "filesystem" => BlobStore::filesystem(&config.storage_path())?,
        other => anyhow::bail!("unknown storage.kind {other:?} (expected \"filesystem\")"),
    };
    let limits = Limits {
        max_manifest_bytes: config.limits.max_manifest_bytes,
    };
    Ok(Registry::new(meta, blobs, limits))
}

/// A bound, ready-to-run server.
pub struct Server {
    pub server: actix_web::dev::Server,
    pub addrs: Vec<std::net::SocketAddr>,
}

/// Binds the listener and builds the server; `.server.await` runs it.
pub async fn build(config: &Config) -> anyhow::Result<Server> {
    let registry = Arc::new(open_registry(config).await?);
    let state = web::Data::new(AppState {
        registry,
        auth: Arc::new(AllowAll),
    });
    let access = config.log.access;
    let http = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::Condition::new(
                access,
                crate::access_log::AccessLog,
            ))
            .configure(api::configure)
    })
    .bind(&config.listen)?;
    let addrs = http.addrs();
    tracing::info!(listen = ?addrs, data_dir = %config.data_dir.display(), "berth is serving");
    Ok(Server {
        server: http.run(),
        addrs,
    })
}
