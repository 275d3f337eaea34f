//! The replication pages (administrators only): targets with a connection test, push and pull
//! rules with "run now", and per rule its executions and per-artifact jobs (copied, skipped,
//! failed with why). Every action goes through [`ReplicationAdmin`], as `/api/v1/replication`
//! and `berth replication` do.

use actix_web::http::StatusCode;
use actix_web::web;
use askama::Template;
use serde::Deserialize;

use super::format::{ago, size};
use super::{Layout, UiResult, Viewer, page, see_other};
use crate::error::RegistryError;
use crate::manage::replication::{ReplicationAdmin, RuleSpec, TargetSpec};

pub struct TargetRow {
    name: String,
    url: String,
    username: String,
    has_secret: bool,
}

pub struct RuleRow {
    name: String,
    direction: String,
    target: String,
    repositories: String,
    tags: String,
    latest: String,
    prefix: String,
    deletes: bool,
    schedule: String,
    next_run: String,
    last: String,
}

#[derive(Template)]
#[template(path = "replication.html")]
struct ReplicationPage {
    l: Layout,
    targets: Vec<TargetRow>,
    rules: Vec<RuleRow>,
}

pub struct ExecutionRow {
    id: i64,
    trigger: String,
    status: String,
    started: String,
    queued: i64,
    pending: i64,
    done: i64,
    failed: i64,
    copied: i64,
    skipped: i64,
    bytes: String,
    error: String,
}

pub struct JobRow {
    id: i64,
    action: String,
    artifact: String,
    status: String,
    attempts: i64,
    copied: i64,
    skipped: i64,
    bytes: String,
    finished: String,
    error: String,
}

#[derive(Template)]
#[template(path = "replication_rule.html")]
struct RulePage {
    l: Layout,
    rule: RuleRow,
    executions: Vec<ExecutionRow>,
    execution: Option<i64>,
    jobs: Vec<JobRow>,
}

fn admin(v: &Viewer) -> Result<&ReplicationAdmin, RegistryError> {
    v.svc.replication.as_deref().ok_or_else(|| RegistryError::Internal("replication is not registered".into()))
}

fn rule_row(r: &crate::meta::ReplicationRule) -> RuleRow {
    RuleRow {
        name: r.name.clone(),
        direction: r.direction.clone(),
        target: r.target_name.clone(),
        repositories: r.repositories.clone(),
        tags: if r.tags_regex.is_empty() { r.tags.clone() } else { format!("/{}/", r.tags_regex) },
        latest: if r.latest > 0 { format!("latest {}", r.latest) } else { "all".into() },
        prefix: r.destination_prefix.clone(),
        deletes: r.replicate_deletes,
        schedule: if r.schedule.is_empty() {
            if r.direction == "push" { "on push".into() } else { "on demand".into() }
        } else {
            r.schedule.clone()
        },
        next_run: r.next_run_at.map(|t| super::format::time(t / 1000)).unwrap_or_default(),
        last: r.last_run_at.map(|t| ago(t / 1000)).unwrap_or_else(|| "never".into()),
    }
}

async fn overview(v: &Viewer, status: StatusCode, notice: Option<String>) -> UiResult {
    v.require_admin()?;
    let admin = admin(v)?;
    let targets = admin
        .targets(v.by())
        .await?
        .into_iter()
        .map(|t| TargetRow { has_secret: !t.secret_sealed.is_empty(), name: t.name, url: t.url, username: t.username })
        .collect();
    let rules = admin.rules(v.by()).await?.iter().map(rule_row).collect();
    let mut l = v.layout("Replication", None);
    l.notice = notice;
    page(v, status, &ReplicationPage { l, targets, rules })
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    ok: Option<String>,
}

pub async fn replication(v: Viewer, q: web::Query<NoticeQuery>) -> UiResult {
    let notice = match q.ok.as_deref() {
        Some("target") => Some("Target added.".to_string()),
        Some("rule") => Some("Rule added.".to_string()),
        Some("deleted") => Some("Deleted.".to_string()),
        _ => None,
    };
    overview(&v, StatusCode::OK, notice).await
}

#[derive(Deserialize)]
pub struct TargetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

pub async fn create_target(v: Viewer, form: web::Form<TargetForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    let spec = TargetSpec {
        name: form.name.trim(),
        url: form.url.trim(),
        username: form.username.trim(),
        secret: &form.secret,
        ca_file: "",
    };
    admin(&v)?.create_target(v.by(), &spec).await?;
    Ok(see_other("/admin/replication?ok=target"))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn test_target(v: Viewer, name: web::Path<String>, form: web::Form<CsrfForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    let notice = match admin(&v)?.test_target(v.by(), &name).await {
        Ok(()) => format!("Target {name}: connected and logged in."),
        Err(RegistryError::NotFound(m)) => return Err(RegistryError::NotFound(m).into()),
        Err(e) => format!("Target {name}: the test failed: {e}"),
    };
    overview(&v, StatusCode::OK, Some(notice)).await
}

pub async fn delete_target(v: Viewer, name: web::Path<String>, form: web::Form<CsrfForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    admin(&v)?.delete_target(v.by(), &name).await?;
    Ok(see_other("/admin/replication?ok=deleted"))
}

#[derive(Deserialize)]
pub struct RuleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    repositories: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    tags_regex: String,
    #[serde(default)]
    latest: String,
    #[serde(default)]
    prefix: String,
    deletes: Option<String>,
    #[serde(default)]
    schedule: String,
}

pub async fn create_rule(v: Viewer, form: web::Form<RuleForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    let latest = match form.latest.trim() {
        "" => 0,
        n => n.parse().map_err(|_| RegistryError::Invalid(format!("latest {n:?}: a number")))?,
    };
    let or_all = |s: &str| if s.trim().is_empty() { "*".to_string() } else { s.trim().to_string() };
    let (repositories, tags) = (or_all(&form.repositories), or_all(&form.tags));
    let spec = RuleSpec {
        name: form.name.trim(),
        target: form.target.trim(),
        direction: form.direction.trim(),
        repositories: &repositories,
        tags: &tags,
        tags_regex: form.tags_regex.trim(),
        latest,
        destination_prefix: form.prefix.trim(),
        replicate_deletes: form.deletes.is_some(),
        schedule: form.schedule.trim(),
    };
    admin(&v)?.create_rule(v.by(), &spec).await?;
    Ok(see_other("/admin/replication?ok=rule"))
}

pub async fn run_rule(v: Viewer, name: web::Path<String>, form: web::Form<CsrfForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    let (execution, _) = admin(&v)?.run_rule(v.by(), &name).await?;
    Ok(see_other(&format!("/admin/replication/rules/{name}?execution={execution}")))
}

pub async fn delete_rule(v: Viewer, name: web::Path<String>, form: web::Form<CsrfForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    admin(&v)?.delete_rule(v.by(), &name).await?;
    Ok(see_other("/admin/replication?ok=deleted"))
}

#[derive(Deserialize)]
pub struct RuleQuery {
    execution: Option<i64>,
}

pub async fn rule(v: Viewer, name: web::Path<String>, q: web::Query<RuleQuery>) -> UiResult {
    v.require_admin()?;
    let admin = admin(&v)?;
    let rule = admin
        .rules(v.by())
        .await?
        .into_iter()
        .find(|r| r.name == *name)
        .ok_or_else(|| RegistryError::NotFound(format!("no replication rule {name}")))?;
    let executions = admin
        .executions(v.by(), &name, 20)
        .await?
        .into_iter()
        .map(|e| ExecutionRow {
            id: e.id,
            status: e.status().to_string(),
            trigger: e.trigger,
            started: ago(e.started_at / 1000),
            queued: e.queued,
            pending: e.pending,
            done: e.done,
            failed: e.failed,
            copied: e.copied,
            skipped: e.skipped,
            bytes: size(e.bytes),
            error: e.error.unwrap_or_default(),
        })
        .collect();
    let jobs = admin
        .jobs(v.by(), &name, q.execution, 200)
        .await?
        .into_iter()
        .map(|j| JobRow {
            id: j.id,
            action: j.action,
            artifact: format!("{}:{}", j.repository, j.reference),
            status: j.status,
            attempts: j.attempts,
            copied: j.copied,
            skipped: j.skipped,
            bytes: size(j.bytes),
            finished: j.finished_at.map(ago).unwrap_or_default(),
            error: j.last_error.unwrap_or_default(),
        })
        .collect();
    let l = v.layout(format!("Replication rule {name}"), None);
    page(&v, StatusCode::OK, &RulePage { l, rule: rule_row(&rule), executions, execution: q.execution, jobs })
}
