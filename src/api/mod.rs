//! The HTTP API: `/v2` by the OCI Distribution spec and Docker's Registry HTTP API V2.
//!
//! Handlers are thin: parse the route ([`routes`]), ask the [`Authorizer`](crate::auth::Authorizer)
//! whether the route's needs are allowed, call the [`Registry`] service, and write the spec's
//! headers. Errors become spec JSON in one place, [`RegistryError`]'s `ResponseError` impl.

pub mod accounts;
pub mod blobs;
pub mod body;
pub mod error;
pub mod events;
mod gc;
pub mod guards;
pub mod health;
pub mod json;
pub mod limits;
mod listing;
mod manifests;
pub mod metrics;
pub mod replication;
pub mod routes;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::{Method, header};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::{RegistryError, Result};
use crate::events::RepoEvent;
use crate::mirror::{Mirror, Target};
use crate::oci::Reference;
pub use crate::state::AppState;
use routes::Route;

/// The repository a read of `name` is served from: the mirrored copy (fetched or revalidated
/// first by `ensure`) or `name` itself.
async fn mirrored(state: &AppState, req: &HttpRequest, name: &str) -> Result<Option<(Arc<Mirror>, Target)>> {
    let Some(mirror) = &state.mirror else { return Ok(None) };
    let ns = query_map(req).get("ns").cloned();
    Ok(mirror.resolve(name, ns.as_deref()).await?.map(|t| (mirror.clone(), t)))
}

/// The JSON bodies of `/api/v1`, by the name of the handler's type.
#[doc(hidden)]
pub const MANAGEMENT_BODIES: &[&str] = &[
    "PasswordChange",
    "NewUser",
    "UserUpdate",
    "NewToken",
    "NewOrg",
    "Visibility",
    "Role",
    "NewRobot",
    "NewTarget",
    "NewRule",
    "NewWebhook",
    "WebhookUpdate",
    "RetentionPolicy",
    "Quota",
];

/// Reads a `/api/v1` JSON body into its handler's type as the handler's [`json::JsonBody`] does,
/// then makes the checks of its values that need no database (for the fuzz targets in `fuzz/`).
#[doc(hidden)]
pub fn parse_management_body(body: &str, bytes: &[u8]) -> Result<()> {
    use json::parse;
    match body {
        "PasswordChange" => parse::<accounts::PasswordChange>(bytes).map(drop),
        "NewUser" => parse::<accounts::NewUser>(bytes).map(drop),
        "UserUpdate" => parse::<accounts::UserUpdate>(bytes).map(drop),
        "NewToken" => parse::<accounts::NewToken>(bytes).map(drop),
        "NewOrg" => parse::<accounts::NewOrg>(bytes).map(drop),
        "Visibility" => parse::<accounts::Visibility>(bytes).map(drop),
        "Role" => parse::<accounts::Role>(bytes).map(drop),
        "NewRobot" => parse::<accounts::NewRobot>(bytes).map(drop),
        "NewTarget" => parse::<replication::NewTarget>(bytes).map(drop),
        "NewRule" => parse::<replication::NewRule>(bytes)?.spec().check().map(drop),
        "NewWebhook" => {
            let hook: events::NewWebhook = parse(bytes)?;
            crate::manage::webhooks::validate_webhook(&hook.url, hook.events.as_deref()).map(drop)
        }
        "WebhookUpdate" => parse::<events::WebhookUpdate>(bytes).map(drop),
        "RetentionPolicy" => crate::gc::retention::validate_policy(&parse(bytes)?).map_err(RegistryError::Invalid),
        "Quota" => parse::<gc::Quota>(bytes).map(drop),
        other => Err(RegistryError::Invalid(format!("no /api/v1 body {other:?}"))),
    }
}

/// Mounts the `/v2` API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v2")
            .wrap(DefaultHeaders::new().add(("Docker-Distribution-API-Version", "registry/2.0")))
            .default_service(web::to(dispatch)),
    );
}

/// Mounts the management API, `/api/v1` (with authentication on).
pub fn configure_management(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/me", web::get().to(accounts::me))
            .route("/me/password", web::put().to(accounts::change_own_password))
            .route("/users", web::get().to(accounts::list_users))
            .route("/users", web::post().to(accounts::create_user))
            .route("/users/{name}", web::patch().to(accounts::update_user))
            .route("/users/{name}", web::delete().to(accounts::delete_account))
            .route("/tokens", web::get().to(accounts::list_tokens))
            .route("/tokens", web::post().to(accounts::create_token))
            .route("/tokens/{id}", web::delete().to(accounts::revoke_token))
            .route("/namespaces", web::get().to(accounts::list_namespaces))
            .route("/namespaces", web::post().to(accounts::create_org))
            .route("/namespaces/{ns}", web::get().to(accounts::get_namespace))
            .route("/namespaces/{ns}/visibility", web::put().to(accounts::set_visibility))
            .route("/namespaces/{ns}/members/{account}", web::put().to(accounts::set_member))
            .route("/namespaces/{ns}/members/{account}", web::delete().to(accounts::remove_member))
            .route("/namespaces/{ns}/robots", web::post().to(accounts::create_robot))
            .route("/robots", web::get().to(accounts::list_robots))
            .route("/robots/{name}", web::delete().to(accounts::delete_robot))
            .route("/robots/{name}/tokens", web::post().to(accounts::create_robot_token))
            .route("/gc", web::post().to(gc::run))
            .route("/gc", web::get().to(gc::last))
            .route("/retention", web::get().to(gc::list_retention))
            .route("/retention", web::put().to(gc::set_retention))
            .route("/retention", web::delete().to(gc::delete_retention))
            .route("/namespaces/{ns}/usage", web::get().to(gc::usage))
            .route("/namespaces/{ns}/quota", web::put().to(gc::set_quota))
            .configure(events::routes)
            .configure(replication::routes),
    );
}

/// The value of an upload's `Range` header for `size` bytes received.
pub fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// The query string as a map (the first value of each key).
pub(crate) fn query_map(req: &HttpRequest) -> HashMap<String, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let mut map = HashMap::new();
    for (k, v) in pairs {
        map.entry(k).or_insert(v);
    }
    map
}

fn method_not_allowed(method: &Method) -> RegistryError {
    RegistryError::Unsupported(format!("method {method} is not supported here"))
}

/// The one handler behind `/v2`: route, authorise, serve.
async fn dispatch(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> Result<HttpResponse> {
    // Read only by the handlers that take a body; its stall timer starts at the first read.
    let payload = body::stream(payload, state.body_timeout);
    let path = req.path().strip_prefix("/v2").unwrap_or("");
    let route = Route::parse(path)?;
    let method = req.method().clone();
    let who = state.auth.authorize(&req, &route.needs(&method)).await?;
    let registry = &state.registry;
    match route {
        Route::Base => match method {
            Method::GET | Method::HEAD => Ok(HttpResponse::Ok().content_type("application/json").body("{}")),
            _ => Err(method_not_allowed(&method)),
        },
        Route::Catalog => match method {
            Method::GET => listing::catalog(&req, &state, &who).await,
            _ => Err(method_not_allowed(&method)),
        },
        Route::Tags { name } => match method {
            Method::GET => listing::tags(&req, registry, &name).await,
            _ => Err(method_not_allowed(&method)),
        },
        Route::Referrers { name, digest } => match method {
            Method::GET => listing::referrers(&req, registry, &name, &digest).await,
            _ => Err(method_not_allowed(&method)),
        },
        Route::Manifest { name, reference } => {
            let tag = match &reference {
                Reference::Tag(t) => Some(t.as_str()),
                Reference::Digest(_) => None,
            };
            let addr = || crate::auth::service::client_addr(&req);
            let info = req.connection_info().clone();
            let base_url = format!("{}://{}", info.scheme(), info.host());
            match method {
                Method::GET | Method::HEAD => {
                    let (resp, served) = match mirrored(&state, &req, &name).await? {
                        Some((mirror, target)) => {
                            mirror.ensure_manifest(&target, &reference).await?;
                            manifests::get(&req, registry, &target.local, &reference).await?
                        }
                        None => manifests::get(&req, registry, &name, &reference).await?,
                    };
                    if method == Method::GET {
                        let ev = RepoEvent {
                            repository: &name,
                            tag,
                            digest: Some(&served.digest),
                            media_type: Some(&served.media_type),
                            base_url: Some(&base_url),
                            ..RepoEvent::default()
                        };
                        state.events.pulled(who.actor(), ev).await;
                    }
                    Ok(resp)
                }
                Method::PUT => {
                    let (resp, pushed) = manifests::put(&req, payload, registry, &name, &reference).await?;
                    let ev = RepoEvent {
                        repository: &name,
                        tag,
                        digest: Some(pushed.digest.as_str()),
                        media_type: Some(&pushed.media_type),
                        base_url: Some(&base_url),
                        ..RepoEvent::default()
                    };
                    state.events.pushed(who.actor(), &addr(), ev).await;
                    Ok(resp)
                }
                Method::DELETE => {
                    let resp = manifests::delete(registry, &name, &reference).await?;
                    let ev = RepoEvent { base_url: Some(base_url.as_str()), ..RepoEvent::deletion(&name, &reference) };
                    state.events.deleted(who.actor(), &addr(), ev).await;
                    Ok(resp)
                }
                _ => Err(method_not_allowed(&method)),
            }
        }
        Route::InvalidReference { name, raw } => match method {
            Method::GET | Method::HEAD => Err(RegistryError::ManifestUnknown(format!(
                "no manifest of {name} has the reference {:?}: it is not a valid tag or digest",
                crate::oci::digest::truncate(&raw)
            ))),
            // The parse error: MANIFEST_INVALID for a bad tag, DIGEST_INVALID for a bad digest.
            Method::PUT | Method::DELETE => Err(Reference::parse(&raw).err().unwrap_or_else(|| {
                RegistryError::ManifestInvalid(format!("invalid reference {:?}", crate::oci::digest::truncate(&raw)))
            })),
            _ => Err(method_not_allowed(&method)),
        },
        Route::Blob { name, digest } => match method {
            Method::GET | Method::HEAD => match mirrored(&state, &req, &name).await? {
                Some((mirror, target)) => {
                    // A plain GET that starts the upstream fetch is answered as the bytes arrive.
                    let live = method == Method::GET && !req.headers().contains_key(header::RANGE);
                    match mirror.blob(&target, &digest, live).await? {
                        Some(live) => Ok(blobs::live(&digest, live)),
                        None => blobs::get(&req, registry, &target.local, &digest).await,
                    }
                }
                None => blobs::get(&req, registry, &name, &digest).await,
            },
            Method::DELETE => blobs::delete(registry, &name, &digest).await,
            _ => Err(method_not_allowed(&method)),
        },
        Route::UploadStart { name } => match method {
            Method::POST => blobs::start_upload(&req, payload, &state, &who, &name).await,
            _ => Err(method_not_allowed(&method)),
        },
        Route::Upload { name, id } => match method {
            Method::GET => blobs::upload_status(registry, &name, &id).await,
            Method::PATCH => blobs::patch_upload(&req, payload, registry, &name, &id).await,
            Method::PUT => blobs::put_upload(&req, payload, registry, &name, &id).await,
            Method::DELETE => blobs::cancel_upload(registry, &name, &id).await,
            _ => Err(method_not_allowed(&method)),
        },
    }
}

/// The `Content-Length` of a request, if it sent one.
pub(crate) fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}
