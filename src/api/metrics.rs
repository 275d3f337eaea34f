//! `GET /metrics`: the Prometheus exposition of `crate::metrics`, behind an optional bearer
//! token.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::config::MetricsConfig;

/// Mounts `GET /metrics`.
pub fn configure_metrics(cfg: &mut web::ServiceConfig, config: &MetricsConfig) {
    let token = web::Data::new(MetricsToken(config.token.clone()));
    cfg.service(web::resource("/metrics").app_data(token).route(web::get().to(metrics)));
}

struct MetricsToken(String);

async fn metrics(req: HttpRequest, token: web::Data<MetricsToken>) -> HttpResponse {
    if !token.0.is_empty() {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !crate::auth::secrets::constant_time_eq(presented.trim().as_bytes(), token.0.as_bytes()) {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\""))
                .body("metrics need the configured bearer token\n");
        }
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(crate::metrics::global().render())
}
