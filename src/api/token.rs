//! The Docker token endpoint (`/token`): `GET` with Basic credentials or none (anonymous), as
//! docker and skopeo use it, and `POST` with the OAuth2 form (`grant_type=password` or
//! `refresh_token`) that containerd sends first.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::auth::AuthService;
use crate::auth::service::client_addr;
use crate::error::{RegistryError, Result};

/// Mounts `/token`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/token").route(web::get().to(get_token)).route(web::post().to(post_token)));
}

fn token_response(token: crate::auth::service::IssuedToken, refresh: Option<String>) -> HttpResponse {
    let issued_at = chrono::DateTime::from_timestamp(token.issued_at, 0).map(|t| t.to_rfc3339()).unwrap_or_default();
    let mut body = serde_json::json!({
        "token": token.token,
        "access_token": token.token,
        "expires_in": token.expires_in,
        "issued_at": issued_at,
    });
    if let Some(r) = refresh {
        body["refresh_token"] = r.into();
    }
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(body)
}

/// The values of every `scope` parameter.
fn scopes(req: &HttpRequest) -> Vec<String> {
    query_scopes(req.query_string())
}

/// The values of every `scope` parameter of a query string (public for the fuzz targets in
/// `fuzz/`).
pub fn query_scopes(query: &str) -> Vec<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs.into_iter().filter(|(k, _)| k == "scope").map(|(_, v)| v).collect()
}

/// The scopes of the OAuth2 form's `scope` field (space-separated).
pub fn form_scopes(scope: &str) -> Vec<String> {
    scope.split(' ').filter(|s| !s.is_empty()).map(String::from).collect()
}

/// The OAuth2 form of a `POST /token` body, read as actix's `web::Form` reads it (public for the
/// fuzz targets in `fuzz/`).
pub fn parse_form(body: &[u8]) -> std::result::Result<OAuthForm, serde_urlencoded::de::Error> {
    serde_urlencoded::from_bytes(body)
}

async fn get_token(req: HttpRequest, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let who = auth.identify(&req).await?;
    if who.granted.is_some() {
        // A registry token is not a login: exchanging it would widen its scope to everything
        // its subject may do and renew it forever.
        return Err(RegistryError::Unauthorized {
            message: "log in with a password or access token, not a registry token".into(),
            challenge: None,
        });
    }
    if let (Some(name), Some(events)) = (who.name(), req.app_data::<web::Data<crate::events::Events>>()) {
        events.login_succeeded(name, "token", &client_addr(&req)).await;
    }
    let query = super::query_map(&req);
    let token = auth.issue(&who, &scopes(&req)).await?;
    // A login by client certificate (no Authorization header) gets no refresh token: the
    // certificate is the long-lived credential.
    let by_header = req.headers().contains_key(actix_web::http::header::AUTHORIZATION);
    let refresh = if by_header && query.get("offline_token").is_some_and(|v| v == "true") {
        let presented = presented_secret(&req).unwrap_or_default();
        auth.refresh_token_for(&who, &presented).await?
    } else {
        None
    };
    Ok(token_response(token, refresh))
}

/// The password or token of a Basic header (to hand a personal access token back as the
/// refresh token).
fn presented_secret(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    crate::auth::service::decode_basic(b64).map(|(_, secret)| secret)
}

/// The OAuth2 form containerd posts.
#[derive(Debug, Deserialize)]
pub struct OAuthForm {
    pub grant_type: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub refresh_token: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub access_type: String,
}

async fn post_token(
    req: HttpRequest,
    form: web::Form<OAuthForm>,
    auth: web::Data<AuthService>,
) -> Result<HttpResponse> {
    let addr = client_addr(&req);
    let scopes = form_scopes(&form.scope);
    match form.grant_type.as_str() {
        "password" => {
            let who = auth.login(&form.username, &form.password, &addr).await?;
            if let (Some(name), Some(events)) = (who.name(), req.app_data::<web::Data<crate::events::Events>>()) {
                events.login_succeeded(name, "token", &addr).await;
            }
            let token = auth.issue(&who, &scopes).await?;
            let refresh =
                if form.access_type == "offline" { auth.refresh_token_for(&who, &form.password).await? } else { None };
            Ok(token_response(token, refresh))
        }
        "refresh_token" => {
            let who = auth.refresh(&form.refresh_token, &addr).await?;
            let token = auth.issue(&who, &scopes).await?;
            Ok(token_response(token, Some(form.refresh_token.clone())))
        }
        other => Err(RegistryError::Invalid(format!("unsupported grant_type {other:?}"))),
    }
}
