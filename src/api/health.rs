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
    let registry = &state.registry;
    let database = registry.meta.ping().await;
    let storage = registry.blobs.ping().await;
    let body = serde_json::json!({
        "database": database.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string()),
        "storage": storage.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string()),
    });
    if database.is_ok() && storage.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        tracing::warn!(%body, "not ready");
        HttpResponse::ServiceUnavailable().json(body)
    }
}
