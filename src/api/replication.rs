//! Replication over HTTP, under `/api/v1/replication`: targets (their secret write-only),
//! push and pull rules, running a rule on demand, its executions and job history. Administrators only; the rules
//! are [`ReplicationAdmin`]'s (`crate::manage::replication`).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::guards::Admin;
use super::json::JsonBody;
use crate::error::Result;
use crate::manage::replication::{
    ReplicationAdmin, RuleSpec, TargetSpec, execution_json, job_json, rule_json, target_json,
};

/// The `/api/v1` routes of this module (mounted by `super::configure_management`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/replication/targets", web::get().to(list_targets))
        .route("/replication/targets", web::post().to(create_target))
        .route("/replication/targets/{name}", web::delete().to(delete_target))
        .route("/replication/targets/{name}/test", web::post().to(test_target))
        .route("/replication/rules", web::get().to(list_rules))
        .route("/replication/rules", web::post().to(create_rule))
        .route("/replication/rules/{name}", web::delete().to(delete_rule))
        .route("/replication/rules/{name}/run", web::post().to(run_rule))
        .route("/replication/rules/{name}/jobs", web::get().to(list_jobs))
        .route("/replication/rules/{name}/executions", web::get().to(list_executions));
}

async fn list_targets(who: Admin, admin: web::Data<ReplicationAdmin>) -> Result<HttpResponse> {
    let targets: Vec<_> = admin.targets(who.by()).await?.iter().map(target_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "targets": targets })))
}

#[derive(Deserialize)]
pub(super) struct NewTarget {
    name: String,
    url: String,
    #[serde(default)]
    username: String,
    /// The password or token; never returned.
    #[serde(default)]
    secret: String,
    #[serde(default)]
    ca_file: String,
}

async fn create_target(
    who: Admin,
    admin: web::Data<ReplicationAdmin>,
    body: JsonBody<NewTarget>,
) -> Result<HttpResponse> {
    let spec = TargetSpec {
        name: &body.name,
        url: &body.url,
        username: &body.username,
        secret: &body.secret,
        ca_file: &body.ca_file,
    };
    let target = admin.create_target(who.by(), &spec).await?;
    Ok(HttpResponse::Created().json(target_json(&target)))
}

async fn delete_target(
    who: Admin,
    admin: web::Data<ReplicationAdmin>,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    admin.delete_target(who.by(), &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `200 {"ok": true}` when the target lets us in, else `{"ok": false, "error": …}`.
async fn test_target(who: Admin, admin: web::Data<ReplicationAdmin>, name: web::Path<String>) -> Result<HttpResponse> {
    match admin.test_target(who.by(), &name).await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({ "ok": true }))),
        Err(crate::error::RegistryError::NotFound(m)) => Err(crate::error::RegistryError::NotFound(m)),
        Err(e) => Ok(HttpResponse::Ok().json(json!({ "ok": false, "error": e.to_string() }))),
    }
}

async fn list_rules(who: Admin, admin: web::Data<ReplicationAdmin>) -> Result<HttpResponse> {
    let rules: Vec<_> = admin.rules(who.by()).await?.iter().map(rule_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "rules": rules })))
}

fn all() -> String {
    "*".into()
}

fn push() -> String {
    "push".into()
}

#[derive(Deserialize)]
pub(super) struct NewRule {
    name: String,
    target: String,
    #[serde(default = "all")]
    repositories: String,
    #[serde(default = "all")]
    tags: String,
    #[serde(default)]
    tags_regex: String,
    #[serde(default)]
    latest: i64,
    #[serde(default = "push")]
    direction: String,
    #[serde(default)]
    destination_prefix: String,
    #[serde(default)]
    replicate_deletes: bool,
    #[serde(default)]
    schedule: String,
}

impl NewRule {
    pub(super) fn spec(&self) -> RuleSpec<'_> {
        RuleSpec {
            name: &self.name,
            target: &self.target,
            direction: &self.direction,
            repositories: &self.repositories,
            tags: &self.tags,
            tags_regex: &self.tags_regex,
            latest: self.latest,
            destination_prefix: &self.destination_prefix,
            replicate_deletes: self.replicate_deletes,
            schedule: &self.schedule,
        }
    }
}

async fn create_rule(who: Admin, admin: web::Data<ReplicationAdmin>, body: JsonBody<NewRule>) -> Result<HttpResponse> {
    let rule = admin.create_rule(who.by(), &body.spec()).await?;
    Ok(HttpResponse::Created().json(rule_json(&rule)))
}

async fn delete_rule(who: Admin, admin: web::Data<ReplicationAdmin>, name: web::Path<String>) -> Result<HttpResponse> {
    admin.delete_rule(who.by(), &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn run_rule(who: Admin, admin: web::Data<ReplicationAdmin>, name: web::Path<String>) -> Result<HttpResponse> {
    let (execution, queued) = admin.run_rule(who.by(), &name).await?;
    Ok(HttpResponse::Accepted().json(json!({ "execution": execution, "queued": queued })))
}

#[derive(Deserialize)]
struct JobsQuery {
    n: Option<i64>,
    execution: Option<i64>,
}

async fn list_jobs(
    who: Admin,
    admin: web::Data<ReplicationAdmin>,
    name: web::Path<String>,
    q: web::Query<JobsQuery>,
) -> Result<HttpResponse> {
    let jobs: Vec<_> =
        admin.jobs(who.by(), &name, q.execution, q.n.unwrap_or(100)).await?.iter().map(job_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "jobs": jobs })))
}

async fn list_executions(
    who: Admin,
    admin: web::Data<ReplicationAdmin>,
    name: web::Path<String>,
    q: web::Query<JobsQuery>,
) -> Result<HttpResponse> {
    let executions: Vec<_> =
        admin.executions(who.by(), &name, q.n.unwrap_or(50)).await?.iter().map(execution_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "executions": executions })))
}
