//! Events over HTTP, under `/api/v1`: the webhooks with their delivery history, and the audit
//! log.
//!
//! Webhooks: only administrators create and delete them — a webhook makes the server send
//! requests to an address of the creator's choosing, which must not be open to everyone who
//! manages a namespace (requests into the server's own network). The managers of a namespace
//! (its owner, an organisation's maintainers) see that namespace's webhooks and deliveries.
//! The audit log is for administrators only. Secrets are write-only: given (or generated and
//! shown once) at creation, never returned afterwards.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::guards::{Admin, Caller};
use super::json::JsonBody;
use crate::auth::{AuthService, Identity};
use crate::error::{RegistryError, Result};
use crate::events::Events;
use crate::manage::webhooks;
use crate::meta::{Delivery, Webhook};

/// The `/api/v1` routes of this module (mounted by `super::configure_management`, inside its scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks", web::get().to(list_webhooks))
        .route("/webhooks", web::post().to(create_webhook))
        .route("/webhooks/{id}", web::delete().to(delete_webhook))
        .route("/webhooks/{id}", web::patch().to(update_webhook))
        .route("/webhooks/{id}/deliveries", web::get().to(list_deliveries))
        .route("/audit", web::get().to(audit));
}

fn events(req: &HttpRequest) -> Result<web::Data<Events>> {
    req.app_data::<web::Data<Events>>().cloned().ok_or_else(|| RegistryError::Internal("events are not wired".into()))
}

pub fn webhook_json(h: &Webhook) -> Value {
    json!({
        "id": h.id, "namespace": h.namespace, "url": h.url, "events": h.events,
        "enabled": h.enabled, "created_by": h.created_by, "created_at": h.created_at,
    })
}

fn delivery_json(d: &Delivery) -> Value {
    let payload: Value = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
    json!({
        "id": d.id, "webhook_id": d.webhook_id, "event_id": d.event_id, "action": d.action,
        "status": d.status, "attempts": d.attempts, "next_attempt_at_ms": d.next_attempt_at,
        "last_status_code": d.last_status_code, "last_error": d.last_error,
        "created_at": d.created_at, "finished_at": d.finished_at, "payload": payload,
    })
}

/// Whether `who` may see `hook` and its deliveries.
async fn may_manage_hook(auth: &AuthService, who: &Identity, hook: &Webhook) -> Result<bool> {
    Ok(match &hook.namespace {
        None => who.is_admin(),
        Some(ns) => auth.may_manage(who, ns).await?,
    })
}

async fn managed_hook(req: &HttpRequest, auth: &AuthService, id: i64, who: &Identity) -> Result<Webhook> {
    let missing = || RegistryError::NotFound(format!("no webhook {id}"));
    let hook = events(req)?.meta().webhook(id).await?.ok_or_else(missing)?;
    if !may_manage_hook(auth, who, &hook).await? {
        return Err(missing());
    }
    Ok(hook)
}

async fn list_webhooks(who: Caller, req: HttpRequest, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let mut out = Vec::new();
    for hook in events(&req)?.meta().webhooks().await? {
        if may_manage_hook(&auth, &who, &hook).await? {
            let mut json = webhook_json(&hook);
            if !who.is_admin() {
                // A URL's path or query can be a credential itself (chat webhooks): only the
                // administrators who set it see it whole.
                json["url"] = url_origin(&hook.url).into();
            }
            out.push(json);
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "webhooks": out })))
}

/// `scheme://host[:port]` of a URL.
fn url_origin(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| u.origin().ascii_serialization()).unwrap_or_default()
}

#[derive(Deserialize)]
struct NewWebhook {
    url: String,
    namespace: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<String>,
}

async fn create_webhook(who: Admin, req: HttpRequest, body: JsonBody<NewWebhook>) -> Result<HttpResponse> {
    let events = events(&req)?;
    let (hook, generated) = webhooks::create(
        &events,
        who.actor(),
        body.namespace.as_deref(),
        &body.url,
        body.events.as_deref(),
        body.secret.as_deref(),
    )
    .await?;
    let mut out = webhook_json(&hook);
    if let Some(secret) = generated {
        out["secret"] = secret.into();
    }
    Ok(HttpResponse::Created().json(out))
}

async fn delete_webhook(
    who: Admin,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    id: web::Path<i64>,
) -> Result<HttpResponse> {
    let hook = managed_hook(&req, &auth, *id, &who).await?;
    let events = events(&req)?;
    events.meta().delete_webhook(hook.id).await?;
    events.webhooks_changed();
    events.audit(who.actor(), "webhook.delete", Some(&hook.id.to_string()), Value::Null, None).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct WebhookUpdate {
    enabled: bool,
}

async fn update_webhook(
    who: Admin,
    req: HttpRequest,
    id: web::Path<i64>,
    body: JsonBody<WebhookUpdate>,
) -> Result<HttpResponse> {
    let events = events(&req)?;
    if !events.meta().set_webhook_enabled(*id, body.enabled).await? {
        return Err(RegistryError::NotFound(format!("no webhook {id}")));
    }
    events.webhooks_changed();
    let detail = json!({ "enabled": body.enabled });
    events.audit(who.actor(), "webhook.update", Some(&id.to_string()), detail, None).await;
    let hook = events.meta().webhook(*id).await?.ok_or_else(|| RegistryError::NotFound(format!("no webhook {id}")))?;
    Ok(HttpResponse::Ok().json(webhook_json(&hook)))
}

#[derive(Deserialize)]
struct Page {
    n: Option<i64>,
    before: Option<i64>,
    actor: Option<String>,
    action: Option<String>,
}

fn page_size(n: Option<i64>) -> Result<i64> {
    match n.unwrap_or(100) {
        n @ 1..=1000 => Ok(n),
        _ => Err(RegistryError::Invalid("n must be between 1 and 1000".into())),
    }
}

async fn list_deliveries(
    who: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    id: web::Path<i64>,
    page: web::Query<Page>,
) -> Result<HttpResponse> {
    let hook = managed_hook(&req, &auth, *id, &who).await?;
    let n = page_size(page.n)?;
    let list = events(&req)?.meta().deliveries(hook.id, page.before, n).await?;
    let next = (list.len() as i64 == n).then(|| list.last().map(|d| d.id)).flatten();
    let out: Vec<Value> = list.iter().map(delivery_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "deliveries": out, "next_before": next })))
}

async fn audit(_: Admin, req: HttpRequest, page: web::Query<Page>) -> Result<HttpResponse> {
    let n = page_size(page.n)?;
    let list = events(&req)?.meta().audit(page.actor.as_deref(), page.action.as_deref(), page.before, n).await?;
    let next = (list.len() as i64 == n).then(|| list.last().map(|e| e.id)).flatten();
    let out: Vec<Value> = list
        .iter()
        .map(|e| {
            let detail: Value = e.detail.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null);
            let at = chrono::DateTime::from_timestamp(e.at, 0).map(|t| t.to_rfc3339()).unwrap_or_default();
            json!({
                "id": e.id, "at": at, "actor": e.actor, "action": e.action,
                "target": e.target, "detail": detail, "addr": e.addr,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "entries": out, "next_before": next })))
}
