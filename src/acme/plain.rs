//! The plain-HTTP listener of `tls.http_listen`, beside HTTPS: it answers ACME HTTP-01
//! challenges (`/.well-known/acme-challenge/TOKEN`, from this node or, through the database,
//! any other), tells registry clients (`/v2/…`) with a 400 and a registry-style JSON error to
//! use `https://` (a client must not silently downgrade, nor be redirected into a push over
//! another scheme), and redirects everything else (browsers) with a 308 to the same host and
//! path on the HTTPS port. Nothing else is served in plain text.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use super::Acme;
use crate::config::LimitsConfig;

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What the handler needs.
struct Plain {
    acme: Option<Arc<Acme>>,
    https_port: u16,
}

/// Binds `listen` and builds the server (run it with `.await` or spawn it). `https_port` is
/// the port redirects name (left out when 443). The `[limits]` of the main listener hold here
/// too: head timeout, keep-alive, disconnect timeout, connections per worker (no handler here
/// reads a body, and actix refuses heads over 96 headers or 128 KiB by itself).
pub fn server(
    listen: &str,
    https_port: u16,
    acme: Option<Arc<Acme>>,
    shutdown_timeout_secs: u64,
    limits: &LimitsConfig,
) -> anyhow::Result<(actix_web::dev::Server, Vec<std::net::SocketAddr>)> {
    let plain = web::Data::new(Plain { acme, https_port });
    let http = HttpServer::new(move || App::new().app_data(plain.clone()).default_service(web::to(answer)))
        .workers(1)
        .shutdown_timeout(shutdown_timeout_secs)
        .client_request_timeout(Duration::from_secs(limits.client_request_timeout_secs))
        .keep_alive(match limits.keep_alive_secs {
            0 => actix_web::http::KeepAlive::Disabled,
            secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
        })
        .client_disconnect_timeout(Duration::from_secs(limits.client_disconnect_timeout_secs))
        .max_connections(limits.max_connections.max(1))
        .bind(listen)
        .map_err(|e| anyhow::anyhow!("tls.http_listen {listen}: {e}"))?;
    let addrs = http.addrs();
    Ok((http.run(), addrs))
}

async fn answer(req: HttpRequest, plain: web::Data<Plain>) -> HttpResponse {
    let path = req.path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        let found = match &plain.acme {
            Some(acme) if !token.is_empty() && !token.contains('/') => acme.http01_answer(token).await,
            _ => None,
        };
        return match found {
            Some(key_authorization) => {
                tracing::info!(token, peer = ?req.peer_addr(), "answered an ACME HTTP-01 challenge");
                HttpResponse::Ok().content_type("text/plain").body(key_authorization)
            }
            None => HttpResponse::NotFound().content_type("text/plain").body("no such ACME challenge\n"),
        };
    }
    let Some(host) = request_host(&req) else {
        return HttpResponse::BadRequest()
            .content_type("text/plain")
            .body("this server speaks HTTPS: no Host header to redirect to\n");
    };
    let origin = if plain.https_port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{}", plain.https_port)
    };
    if path == "/v2" || path.starts_with("/v2/") {
        let body = serde_json::json!({"errors": [{
            "code": "UNSUPPORTED",
            "message": format!("this registry is served over HTTPS only: use {origin}"),
            "detail": {"https": origin},
        }]});
        return HttpResponse::BadRequest().content_type("application/json").body(body.to_string());
    }
    let target = match req.uri().path_and_query() {
        Some(pq) => format!("{origin}{pq}"),
        None => format!("{origin}{path}"),
    };
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, target)).finish()
}

/// The request's host name without its port (`[v6]` kept in brackets), if it is a plausible one.
fn request_host(req: &HttpRequest) -> Option<String> {
    let raw = req.headers().get(header::HOST)?.to_str().ok()?.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        format!("[{}]", rest.split(']').next()?)
    } else {
        raw.split(':').next()?.to_string()
    };
    let valid = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test;

    #[actix_web::test]
    async fn redirects_browsers_and_refuses_registry_clients() {
        let plain = web::Data::new(Plain { acme: None, https_port: 8443 });
        let app = test::init_service(App::new().app_data(plain).default_service(web::to(answer))).await;
        let req = test::TestRequest::get().uri("/ui/repos?q=a").insert_header(("host", "reg.example.com")).to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), 308);
        assert_eq!(resp.headers().get("location").unwrap(), "https://reg.example.com:8443/ui/repos?q=a");

        let req = test::TestRequest::get().uri("/v2/").insert_header(("host", "reg.example.com:80")).to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), 400);
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("https://reg.example.com:8443"));

        let req = test::TestRequest::get().uri("/").insert_header(("host", "evil\"<x>")).to_request();
        assert_eq!(test::call_service(&app, req).await.status(), 400);
        let req = test::TestRequest::get().uri("/.well-known/acme-challenge/nope").to_request();
        assert_eq!(test::call_service(&app, req).await.status(), 404);
    }
}
