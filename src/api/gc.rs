//! Management API for garbage collection, retention and quotas (under `/api/v1`, mounted by
//! [`super::admin`]): `POST /gc?dry_run=true|false` runs a collection and answers its report,
//! `GET /gc` the last reports; `GET|PUT|DELETE /retention` the policies (administrators);
//! `GET /namespaces/{ns}/usage` (anyone who may see the namespace) and
//! `PUT /namespaces/{ns}/quota` (administrators).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::guards::{Admin, Reader};
use super::json::JsonBody;
use crate::auth::AuthService;
use crate::error::{RegistryError, Result};
use crate::gc::Collector;
use crate::meta::RetentionPolicy;

#[derive(Deserialize)]
pub struct RunQuery {
    #[serde(default)]
    dry_run: bool,
}

pub async fn run(
    who: Admin,
    req: HttpRequest,
    gc: web::Data<Collector>,
    q: web::Query<RunQuery>,
) -> Result<HttpResponse> {
    tracing::info!(by = who.name().unwrap_or_default(), dry_run = q.dry_run, "garbage collection requested");
    let report = gc.into_inner().run_detached(q.dry_run).await?;
    if !q.dry_run
        && let Some(events) = req.app_data::<web::Data<crate::events::Events>>()
    {
        let detail = json!({
            "blobs_deleted": report.blobs_deleted, "manifests_deleted": report.manifests_deleted,
            "tags_deleted": report.tags_deleted, "bytes_freed": report.bytes_freed,
        });
        let addr = crate::auth::service::client_addr(&req);
        events.audit(who.actor(), "gc.run", None, detail, Some(&addr)).await;
    }
    Ok(HttpResponse::Ok().json(report))
}

pub async fn last(_: Admin, gc: web::Data<Collector>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(json!({
        "last_run": gc.last_report(false).await?,
        "last_dry_run": gc.last_report(true).await?,
        "schedule": { "enabled": gc.config.enabled, "interval_secs": gc.config.interval_secs },
    })))
}

pub async fn list_retention(_: Admin, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(json!({ "policies": auth.meta.retention_policies().await? })))
}

pub async fn set_retention(
    _: Admin,
    auth: web::Data<AuthService>,
    body: JsonBody<RetentionPolicy>,
) -> Result<HttpResponse> {
    crate::gc::retention::validate_policy(&body).map_err(RegistryError::Invalid)?;
    auth.meta.set_retention_policy(&body).await?;
    Ok(HttpResponse::Ok().json(&*body))
}

#[derive(Deserialize)]
pub struct PatternQuery {
    pattern: String,
}

pub async fn delete_retention(
    _: Admin,
    auth: web::Data<AuthService>,
    q: web::Query<PatternQuery>,
) -> Result<HttpResponse> {
    if !auth.meta.delete_retention_policy(&q.pattern).await? {
        return Err(RegistryError::NotFound(format!("no retention policy for {}", q.pattern)));
    }
    Ok(HttpResponse::NoContent().finish())
}

pub async fn usage(who: Reader, auth: web::Data<AuthService>, ns: web::Path<String>) -> Result<HttpResponse> {
    // (An administrator's token limited to some repositories manages nothing: may_manage.)
    if !auth.may_see_namespace(&who, &ns, false).await? {
        return Err(RegistryError::NotFound(format!("no namespace {ns}")));
    }
    Ok(HttpResponse::Ok().json(json!({
        "namespace": *ns,
        "used_bytes": auth.meta.namespace_usage(&ns).await?,
        "quota_bytes": auth.meta.quota(&ns).await?,
    })))
}

#[derive(Deserialize)]
pub struct Quota {
    /// Bytes; `null` removes the quota.
    max_bytes: Option<i64>,
}

pub async fn set_quota(
    _: Admin,
    auth: web::Data<AuthService>,
    ns: web::Path<String>,
    body: JsonBody<Quota>,
) -> Result<HttpResponse> {
    if body.max_bytes.is_some_and(|b| b < 0) {
        return Err(RegistryError::Invalid("max_bytes must not be negative".into()));
    }
    crate::oci::validate_name(&ns).map_err(|_| RegistryError::Invalid(format!("{ns} is not a namespace name")))?;
    auth.meta.set_quota(&ns, body.max_bytes).await?;
    Ok(HttpResponse::Ok().json(json!({
        "namespace": *ns,
        "used_bytes": auth.meta.namespace_usage(&ns).await?,
        "quota_bytes": body.max_bytes,
    })))
}
