//! Management API for garbage collection, retention and quotas (under `/api/v1`, mounted by
//! [`super::configure_management`]): `POST /gc?dry_run=true|false` runs a collection and
//! answers its report, `GET /gc` the last reports; `GET|PUT|DELETE /retention` the policies
//! (administrators); `GET /namespaces/{ns}/usage` (anyone who may see the namespace) and
//! `PUT /namespaces/{ns}/quota` (administrators). The rules are
//! [`StorageAdmin`](crate::manage::storage::StorageAdmin)'s.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::guards::{Admin, Reader};
use super::json::JsonBody;
use crate::error::Result;
use crate::manage::storage::StorageAdmin;
use crate::meta::RetentionPolicy;

#[derive(Deserialize)]
pub struct RunQuery {
    #[serde(default)]
    dry_run: bool,
}

pub async fn run(who: Admin, storage: web::Data<StorageAdmin>, q: web::Query<RunQuery>) -> Result<HttpResponse> {
    let report = storage.run_gc(who.by(), q.dry_run, None).await?;
    Ok(HttpResponse::Ok().json(report))
}

pub async fn last(who: Admin, storage: web::Data<StorageAdmin>) -> Result<HttpResponse> {
    let status = storage.gc_status(who.by()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "last_run": status.last_run,
        "last_dry_run": status.last_dry_run,
        "schedule": { "enabled": status.enabled, "interval_secs": status.interval_secs },
    })))
}

pub async fn list_retention(who: Admin, storage: web::Data<StorageAdmin>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(json!({ "policies": storage.retention_policies(who.by()).await? })))
}

pub async fn set_retention(
    who: Admin,
    storage: web::Data<StorageAdmin>,
    body: JsonBody<RetentionPolicy>,
) -> Result<HttpResponse> {
    storage.set_retention(who.by(), &body).await?;
    Ok(HttpResponse::Ok().json(&*body))
}

#[derive(Deserialize)]
pub struct PatternQuery {
    pattern: String,
}

pub async fn delete_retention(
    who: Admin,
    storage: web::Data<StorageAdmin>,
    q: web::Query<PatternQuery>,
) -> Result<HttpResponse> {
    storage.delete_retention(who.by(), &q.pattern).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn usage(who: Reader, storage: web::Data<StorageAdmin>, ns: web::Path<String>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(storage.usage(who.by(), &ns).await?))
}

#[derive(Deserialize)]
pub struct Quota {
    /// Bytes; `null` removes the quota.
    max_bytes: Option<i64>,
}

pub async fn set_quota(
    who: Admin,
    storage: web::Data<StorageAdmin>,
    ns: web::Path<String>,
    body: JsonBody<Quota>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(storage.set_quota(who.by(), &ns, body.max_bytes).await?))
}
