//! Events over HTTP, under `/api/v1`: the webhooks with their delivery history, and the audit
//! log. Who may see and change what is [`EventAdmin`]'s rule (`crate::manage::webhooks`):
//! administrators change webhooks and read the audit log; a namespace's managers see its
//! webhooks and deliveries. Secrets are write-only: given (or generated and shown once) at
//! creation, never returned afterwards.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::guards::{Admin, Caller};
use super::json::JsonBody;
use crate::error::Result;
use crate::manage::webhooks::EventAdmin;
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

async fn list_webhooks(who: Caller, admin: web::Data<EventAdmin>) -> Result<HttpResponse> {
    let out: Vec<Value> = admin.webhooks(who.by()).await?.iter().map(webhook_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "webhooks": out })))
}

#[derive(Deserialize)]
pub(super) struct NewWebhook {
    pub(super) url: String,
    namespace: Option<String>,
    pub(super) events: Option<Vec<String>>,
    secret: Option<String>,
}

async fn create_webhook(who: Admin, admin: web::Data<EventAdmin>, body: JsonBody<NewWebhook>) -> Result<HttpResponse> {
    let (hook, generated) = admin
        .create(who.by(), body.namespace.as_deref(), &body.url, body.events.as_deref(), body.secret.as_deref())
        .await?;
    let mut out = webhook_json(&hook);
    if let Some(secret) = generated {
        out["secret"] = secret.into();
    }
    Ok(HttpResponse::Created().json(out))
}

async fn delete_webhook(who: Admin, admin: web::Data<EventAdmin>, id: web::Path<i64>) -> Result<HttpResponse> {
    admin.delete(who.by(), *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub(super) struct WebhookUpdate {
    enabled: bool,
}

async fn update_webhook(
    who: Admin,
    admin: web::Data<EventAdmin>,
    id: web::Path<i64>,
    body: JsonBody<WebhookUpdate>,
) -> Result<HttpResponse> {
    let hook = admin.set_enabled(who.by(), *id, body.enabled).await?;
    Ok(HttpResponse::Ok().json(webhook_json(&hook)))
}

#[derive(Deserialize)]
struct Page {
    n: Option<i64>,
    before: Option<i64>,
    actor: Option<String>,
    action: Option<String>,
}

async fn list_deliveries(
    who: Caller,
    admin: web::Data<EventAdmin>,
    id: web::Path<i64>,
    page: web::Query<Page>,
) -> Result<HttpResponse> {
    let n = page.n.unwrap_or(100);
    let list = admin.deliveries(who.by(), *id, page.before, n).await?;
    let next = (list.len() as i64 == n).then(|| list.last().map(|d| d.id)).flatten();
    let out: Vec<Value> = list.iter().map(delivery_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "deliveries": out, "next_before": next })))
}

async fn audit(who: Admin, admin: web::Data<EventAdmin>, page: web::Query<Page>) -> Result<HttpResponse> {
    let n = page.n.unwrap_or(100);
    let list = admin.audit(who.by(), page.actor.as_deref(), page.action.as_deref(), page.before, n).await?;
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
