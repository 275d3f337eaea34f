//! `/healthz` (the process serves) and `/readyz` (the database and the blob store answer), for
//! load balancers and orchestrators.

use actix_web::{HttpResponse, web};

use super::AppState;

/// Mounts `/healthz` and `/readyz`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz)).route("/readyz", web::get().to(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (database, storage) = state.registry.ping().await;
    // Details go to the log, not to whoever asks.
    if let Err(e) = &database {
        tracing::warn!(error = %e, "not ready: database");
    }
    if let Err(e) = &storage {
        tracing::warn!(error = %e, "not ready: blob store");
    }
    let word = |r: &crate::error::Result<()>| if r.is_ok() { "ok" } else { "unavailable" };
    let body = serde_json::json!({ "database": word(&database), "storage": word(&storage) });
    if database.is_ok() && storage.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
