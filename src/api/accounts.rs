//! The JSON management API under `/api/v1`: the caller's account and tokens, users (admins),
//! robots, organisations, members and visibility. Authenticated like `/v2` (Basic with a
//! password, or `Bearer`/Basic with a personal access token for reading); changes to accounts,
//! tokens and namespaces need a password login, so a token can never widen itself.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::guards::{Admin, Caller, Reader};
use super::json::JsonBody;
use crate::auth::service::client_addr;
use crate::auth::{AuthService, Identity};
use crate::error::{RegistryError, Result};
use crate::events::Events;
use crate::meta::{Account, TokenRecord};

pub fn account_json(a: &Account) -> Value {
    json!({
        "name": a.name, "kind": a.kind, "admin": a.is_admin, "disabled": a.disabled,
        "namespace": a.robot_namespace, "role": a.robot_role,
        "created_at": a.created_at, "last_login_at": a.last_login_at,
    })
}

pub fn token_json(t: &TokenRecord) -> Value {
    json!({
        "id": t.id, "account": t.account_name, "name": t.name, "scope": t.scope,
        "repository_pattern": t.repository_pattern, "expires_at": t.expires_at,
        "last_used_at": t.last_used_at, "created_at": t.created_at,
    })
}

/// Records a change in the audit log, as done by `who`.
async fn record(req: &HttpRequest, who: &Identity, action: &str, target: &str, detail: Value) {
    if let Some(events) = req.app_data::<web::Data<Events>>() {
        let actor = who.actor();
        events.audit(actor, action, Some(target), detail, Some(&client_addr(req))).await;
    }
}

fn me_name(who: &Identity) -> String {
    who.name().unwrap_or_default().to_string()
}

pub(super) async fn me(who: Reader) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(account_json(who.account.as_ref().expect("caller has an account"))))
}

#[derive(Deserialize)]
pub(super) struct PasswordChange {
    current_password: String,
    new_password: String,
}

pub(super) async fn change_own_password(
    who: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    body: JsonBody<PasswordChange>,
) -> Result<HttpResponse> {
    let name = me_name(&who);
    auth.login(&name, &body.current_password, &crate::auth::service::client_addr(&req)).await?;
    auth.set_password(&name, &body.new_password, None).await?;
    record(&req, &who, "password.change", &name, Value::Null).await;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn list_users(_: Admin, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let users: Vec<Value> = auth.meta.accounts(Some("user")).await?.iter().map(account_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "users": users })))
}

#[derive(Deserialize)]
pub(super) struct NewUser {
    name: String,
    password: Option<String>,
    #[serde(default)]
    admin: bool,
}

pub(super) async fn create_user(
    who: Admin,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    body: JsonBody<NewUser>,
) -> Result<HttpResponse> {
    let (account, generated) = auth.create_user(&body.name, body.password.as_deref(), body.admin).await?;
    record(&req, &who, "user.create", &account.name, json!({ "admin": body.admin })).await;
    let mut out = account_json(&account);
    if let Some(p) = generated {
        out["password"] = p.into();
    }
    Ok(HttpResponse::Created().json(out))
}

#[derive(Deserialize)]
pub(super) struct UserUpdate {
    admin: Option<bool>,
    disabled: Option<bool>,
    password: Option<String>,
}

pub(super) async fn update_user(
    who: Admin,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    name: web::Path<String>,
    body: JsonBody<UserUpdate>,
) -> Result<HttpResponse> {
    if let Some(p) = &body.password {
        auth.set_password(&name, p, None).await?;
    }
    let account = auth.set_flags(&name, body.admin, body.disabled).await?;
    let detail = json!({ "admin": body.admin, "disabled": body.disabled, "password_changed": body.password.is_some() });
    record(&req, &who, "user.update", &name, detail).await;
    Ok(HttpResponse::Ok().json(account_json(&account)))
}

pub(super) async fn delete_account(
    who: Admin,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    if who.name() == Some(name.as_str()) {
        return Err(RegistryError::Invalid("you cannot delete your own account".into()));
    }
    auth.delete_account(&name).await?;
    record(&req, &who, "user.delete", &name, Value::Null).await;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn list_tokens(who: Reader, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let tokens: Vec<Value> = auth.tokens_of(&me_name(&who)).await?.iter().map(token_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
pub(super) struct NewToken {
    name: String,
    #[serde(default = "default_scope")]
    scope: String,
    repository_pattern: Option<String>,
    expires_days: Option<u32>,
}

fn default_scope() -> String {
    "pull".into()
}

fn created_token(record: &TokenRecord, secret: String) -> HttpResponse {
    let mut out = token_json(record);
    out["token"] = secret.into();
    HttpResponse::Created().json(out)
}

pub(super) async fn create_token(
    who: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    body: JsonBody<NewToken>,
) -> Result<HttpResponse> {
    let (token, secret) = auth
        .create_token(&me_name(&who), &body.name, &body.scope, body.repository_pattern.as_deref(), body.expires_days)
        .await?;
    record(&req, &who, "token.create", &me_name(&who), crate::manage::token_audit(&token)).await;
    Ok(created_token(&token, secret))
}

pub(super) async fn revoke_token(
    who: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    id: web::Path<i64>,
) -> Result<HttpResponse> {
    let owner = if who.is_admin() { None } else { who.name() };
    auth.revoke_token(*id, owner).await?;
    record(&req, &who, "token.revoke", &id.to_string(), Value::Null).await;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn list_namespaces(who: Reader, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let mut out = Vec::new();
    for ns in auth.meta.namespaces().await? {
        if auth.may_see_namespace(&who, &ns.name, ns.public).await? {
            out.push(json!({ "name": ns.name, "kind": ns.kind, "public": ns.public }));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "namespaces": out })))
}

#[derive(Deserialize)]
pub(super) struct NewOrg {
    name: String,
}

pub(super) async fn create_org(
    who: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    body: JsonBody<NewOrg>,
) -> Result<HttpResponse> {
    let account = who.account.as_ref().expect("caller has an account");
    if account.kind != "user" {
        return Err(RegistryError::Denied("robots cannot create organisations".into()));
    }
    auth.create_org(&body.name).await?;
    if !account.is_admin {
        auth.set_member(&body.name, &account.name, Some("maintainer")).await?;
    }
    record(&req, &who, "namespace.create", &body.name, Value::Null).await;
    Ok(HttpResponse::Created().json(json!({ "name": body.name, "kind": "org", "public": false })))
}

pub(super) async fn get_namespace(
    who: Reader,
    auth: web::Data<AuthService>,
    ns: web::Path<String>,
) -> Result<HttpResponse> {
    let namespace =
        auth.meta.namespace(&ns).await?.ok_or_else(|| RegistryError::NotFound(format!("no namespace {ns}")))?;
    let manage = auth.may_manage(&who, &ns).await?;
    if !manage && !namespace.public && !auth.may_pull_in(&who, &ns).await? {
        return Err(RegistryError::NotFound(format!("no namespace {ns}")));
    }
    let members: Vec<Value> =
        auth.meta.members(&ns).await?.into_iter().map(|(n, r)| json!({ "account": n, "role": r })).collect();
    Ok(HttpResponse::Ok().json(json!({
        "name": namespace.name, "kind": namespace.kind, "public": namespace.public,
        "members": members, "may_manage": manage,
    })))
}

#[derive(Deserialize)]
pub(super) struct Visibility {
    public: bool,
}

pub(super) async fn set_visibility(
    caller: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    ns: web::Path<String>,
    body: JsonBody<Visibility>,
) -> Result<HttpResponse> {
    let who = caller.manage(&auth, &ns).await?;
    auth.set_visibility(&ns, body.public).await?;
    record(&req, who, "namespace.visibility", &ns, json!({ "public": body.public })).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub(super) struct Role {
    role: String,
}

pub(super) async fn set_member(
    caller: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    path: web::Path<(String, String)>,
    body: JsonBody<Role>,
) -> Result<HttpResponse> {
    let (ns, account) = path.into_inner();
    let who = caller.manage(&auth, &ns).await?;
    auth.set_member(&ns, &account, Some(&body.role)).await?;
    record(&req, who, "member.set", &ns, json!({ "account": account, "role": body.role })).await;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn remove_member(
    caller: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (ns, account) = path.into_inner();
    let who = caller.manage(&auth, &ns).await?;
    auth.set_member(&ns, &account, None).await?;
    record(&req, who, "member.remove", &ns, json!({ "account": account })).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub(super) struct NewRobot {
    name: String,
    role: String,
}

pub(super) async fn create_robot(
    caller: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    ns: web::Path<String>,
    body: JsonBody<NewRobot>,
) -> Result<HttpResponse> {
    let who = caller.manage(&auth, &ns).await?;
    let robot = auth.create_robot(&ns, &body.name, &body.role).await?;
    record(&req, who, "robot.create", &robot.name, json!({ "role": body.role })).await;
    Ok(HttpResponse::Created().json(account_json(&robot)))
}

pub(super) async fn list_robots(who: Reader, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let mut out = Vec::new();
    for robot in auth.meta.accounts(Some("robot")).await? {
        if auth.may_manage(&who, robot.robot_namespace.as_deref().unwrap_or_default()).await? {
            out.push(account_json(&robot));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "robots": out })))
}

/// A robot the caller may manage.
async fn managed_robot<'a>(caller: &'a Caller, auth: &AuthService, name: &str) -> Result<(Account, &'a Identity)> {
    let robot = auth.meta.account(name).await?.map(|a| a.account).filter(|a| a.kind == "robot");
    let robot = robot.ok_or_else(|| RegistryError::NotFound(format!("no robot {name}")))?;
    let who = caller.manage(auth, robot.robot_namespace.as_deref().unwrap_or_default()).await?;
    Ok((robot, who))
}

pub(super) async fn delete_robot(
    caller: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    let (robot, who) = managed_robot(&caller, &auth, &name).await?;
    auth.delete_account(&robot.name).await?;
    record(&req, who, "robot.delete", &robot.name, Value::Null).await;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn create_robot_token(
    caller: Caller,
    req: HttpRequest,
    auth: web::Data<AuthService>,
    name: web::Path<String>,
    body: JsonBody<NewToken>,
) -> Result<HttpResponse> {
    let (robot, who) = managed_robot(&caller, &auth, &name).await?;
    let (token, secret) = auth
        .create_token(&robot.name, &body.name, &body.scope, body.repository_pattern.as_deref(), body.expires_days)
        .await?;
    record(&req, who, "token.create", &robot.name, crate::manage::token_audit(&token)).await;
    Ok(created_token(&token, secret))
}
