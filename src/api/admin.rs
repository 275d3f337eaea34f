//! The JSON management API under `/api/v1`: the caller's account and tokens, users (admins),
//! robots, organisations, members and visibility. Authenticated like `/v2` (Basic with a
//! password, or `Bearer`/Basic with a personal access token for reading); changes to accounts,
//! tokens and namespaces need a password login, so a token can never widen itself.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::JsonBody;
use crate::auth::service::client_addr;
use crate::auth::{AuthService, Identity};
use crate::error::{RegistryError, Result};
use crate::meta::{Account, TokenRecord};
use crate::ops::Events;

/// Mounts `/api/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/me", web::get().to(me))
            .route("/me/password", web::put().to(change_own_password))
            .route("/users", web::get().to(list_users))
            .route("/users", web::post().to(create_user))
            .route("/users/{name}", web::patch().to(update_user))
            .route("/users/{name}", web::delete().to(delete_account))
            .route("/tokens", web::get().to(list_tokens))
            .route("/tokens", web::post().to(create_token))
            .route("/tokens/{id}", web::delete().to(revoke_token))
            .route("/namespaces", web::get().to(list_namespaces))
            .route("/namespaces", web::post().to(create_org))
            .route("/namespaces/{ns}", web::get().to(get_namespace))
            .route("/namespaces/{ns}/visibility", web::put().to(set_visibility))
            .route("/namespaces/{ns}/members/{account}", web::put().to(set_member))
            .route("/namespaces/{ns}/members/{account}", web::delete().to(remove_member))
            .route("/namespaces/{ns}/robots", web::post().to(create_robot))
            .route("/robots", web::get().to(list_robots))
            .route("/robots/{name}", web::delete().to(delete_robot))
            .route("/robots/{name}/tokens", web::post().to(create_robot_token))
            .route("/gc", web::post().to(super::gc::run))
            .route("/gc", web::get().to(super::gc::last))
            .route("/retention", web::get().to(super::gc::list_retention))
            .route("/retention", web::put().to(super::gc::set_retention))
            .route("/retention", web::delete().to(super::gc::delete_retention))
            .route("/namespaces/{ns}/usage", web::get().to(super::gc::usage))
            .route("/namespaces/{ns}/quota", web::put().to(super::gc::set_quota))
            .configure(super::ops::routes),
    );
}

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
        let actor = crate::ops::events::actor(who);
        events.audit(actor, action, Some(target), detail, Some(&client_addr(req))).await;
    }
}

/// The caller, logged in with a password or a personal access token (enough to read).
pub(crate) async fn reader(req: &HttpRequest, auth: &AuthService) -> Result<Identity> {
    let who = auth.identify(req).await?;
    if who.account.is_none() {
        return Err(RegistryError::Unauthorized {
            message: "log in first".into(),
            challenge: Some("Basic realm=\"berth\"".into()),
        });
    }
    if who.granted.is_some() {
        // A registry token (JWT) grants registry access only, never an API login.
        return Err(RegistryError::Unauthorized {
            message: "registry tokens are not accepted here".into(),
            challenge: Some("Basic realm=\"berth\"".into()),
        });
    }
    if who.limit.is_none()
        && let (Some(events), Some(name)) = (req.app_data::<web::Data<Events>>(), who.name())
    {
        events.login_succeeded(name, "api", &client_addr(req)).await;
    }
    Ok(who)
}

/// The caller, logged in with a password: changes to accounts, tokens and namespaces need
/// one, so a token can never mint a wider token or widen access.
pub(crate) async fn caller(req: &HttpRequest, auth: &AuthService) -> Result<Identity> {
    let who = reader(req, auth).await?;
    if who.limit.is_some() {
        return Err(RegistryError::Denied("this needs a password login, not a token".into()));
    }
    Ok(who)
}

pub(crate) async fn admin(req: &HttpRequest, auth: &AuthService) -> Result<Identity> {
    let who = caller(req, auth).await?;
    if !who.is_admin() {
        return Err(RegistryError::Denied("administrators only".into()));
    }
    Ok(who)
}

async fn manager(req: &HttpRequest, auth: &AuthService, namespace: &str) -> Result<Identity> {
    let who = caller(req, auth).await?;
    if !auth.may_manage(&who, namespace).await? {
        return Err(RegistryError::Denied(format!("you may not manage {namespace}")));
    }
    Ok(who)
}

fn me_name(who: &Identity) -> String {
    who.name().unwrap_or_default().to_string()
}

async fn me(req: HttpRequest, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let who = reader(&req, &auth).await?;
    Ok(HttpResponse::Ok().json(account_json(who.account.as_ref().expect("caller has an account"))))
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_own_password(
    req: HttpRequest,
    auth: web::Data<AuthService>,
    body: JsonBody<PasswordChange>,
) -> Result<HttpResponse> {
    let who = caller(&req, &auth).await?;
    let name = me_name(&who);
    auth.login(&name, &body.current_password, &crate::auth::service::client_addr(&req)).await?;
    auth.set_password(&name, &body.new_password, None).await?;
    record(&req, &who, "password.change", &name, Value::Null).await;
    Ok(HttpResponse::NoContent().finish())
}

async fn list_users(req: HttpRequest, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    admin(&req, &auth).await?;
    let users: Vec<Value> = auth.meta.accounts(Some("user")).await?.iter().map(account_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "users": users })))
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    password: Option<String>,
    #[serde(default)]
    admin: bool,
}

async fn create_user(req: HttpRequest, auth: web::Data<AuthService>, body: JsonBody<NewUser>) -> Result<HttpResponse> {
    let who = admin(&req, &auth).await?;
    let (account, generated) = auth.create_user(&body.name, body.password.as_deref(), body.admin).await?;
    record(&req, &who, "user.create", &account.name, json!({ "admin": body.admin })).await;
    let mut out = account_json(&account);
    if let Some(p) = generated {
        out["password"] = p.into();
    }
    Ok(HttpResponse::Created().json(out))
}

#[derive(Deserialize)]
struct UserUpdate {
    admin: Option<bool>,
    disabled: Option<bool>,
    password: Option<String>,
}

async fn update_user(
    req: HttpRequest,
    auth: web::Data<AuthService>,
    name: web::Path<String>,
    body: JsonBody<UserUpdate>,
) -> Result<HttpResponse> {
    let who = admin(&req, &auth).await?;
    if let Some(p) = &body.password {
        auth.set_password(&name, p, None).await?;
    }
    let account = auth.set_flags(&name, body.admin, body.disabled).await?;
    let detail = json!({ "admin": body.admin, "disabled": body.disabled, "password_changed": body.password.is_some() });
    record(&req, &who, "user.update", &name, detail).await;
    Ok(HttpResponse::Ok().json(account_json(&account)))
}

async fn delete_account(
    req: HttpRequest,
    auth: web::Data<AuthService>,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    let who = admin(&req, &auth).await?;
    if who.name() == Some(name.as_str()) {
        return Err(RegistryError::Invalid("you cannot delete your own account".into()));
    }
    auth.delete_account(&name).await?;
    record(&req, &who, "user.delete", &name, Value::Null).await;
    Ok(HttpResponse::NoContent().finish())
}

async fn list_tokens(req: HttpRequest, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let who = reader(&req, &auth).await?;
    let tokens: Vec<Value> = auth.tokens_of(&me_name(&who)).await?.iter().map(token_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    #[serde(default = "default_scope")]
    scope: String,
    repository_pattern: Option<String>,
    expires_days: Option<u32>,
}

fn default_scope() -> String {
    "pull".into()
}

/// What the audit log keeps of a new token (never its secret).
pub fn token_audit(t: &TokenRecord) -> Value {
    json!({ "id": t.id, "name": t.name, "scope": t.scope, "repository_pattern": t.repository_pattern, "expires_at": t.expires_at })
}

fn created_token(record: &TokenRecord, secret: String) -> HttpResponse {
    let mut out = token_json(record);
    out["token"] = secret.into();
    HttpResponse::Created().json(out)
}

async fn create_token(
    req: HttpRequest,
    auth: web::Data<AuthService>,
    body: JsonBody<NewToken>,
) -> Result<HttpResponse> {
    let who = caller(&req, &auth).await?;
    let (token, secret) = auth
        .create_token(&me_name(&who), &body.name, &body.scope, body.repository_pattern.as_deref(), body.expires_days)
        .await?;
    record(&req, &who, "token.create", &me_name(&who), token_audit(&token)).await;
    Ok(created_token(&token, secret))
}

async fn revoke_token(req: HttpRequest, auth: web::Data<AuthService>, id: web::Path<i64>) -> Result<HttpResponse> {
    let who = caller(&req, &auth).await?;
    let owner = if who.is_admin() { None } else { who.name() };
    auth.revoke_token(*id, owner).await?;
    record(&req, &who, "token.revoke", &id.to_string(), Value::Null).await;
    Ok(HttpResponse::NoContent().finish())
}

async fn list_namespaces(req: HttpRequest, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let who = reader(&req, &auth).await?;
    let mut out = Vec::new();
    for ns in auth.meta.namespaces().await? {
        if auth.may_see_namespace(&who, &ns.name, ns.public).await? {
            out.push(json!({ "name": ns.name, "kind": ns.kind, "public": ns.public }));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "namespaces": out })))
}

#[derive(Deserialize)]
struct NewOrg {
    name: String,
}

async fn create_org(req: HttpRequest, auth: web::Data<AuthService>, body: JsonBody<NewOrg>) -> Result<HttpResponse> {
    let who = caller(&req, &auth).await?;
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

async fn get_namespace(req: HttpRequest, auth: web::Data<AuthService>, ns: web::Path<String>) -> Result<HttpResponse> {
    let who = reader(&req, &auth).await?;
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
struct Visibility {
    public: bool,
}

async fn set_visibility(
    req: HttpRequest,
    auth: web::Data<AuthService>,
    ns: web::Path<String>,
    body: JsonBody<Visibility>,
) -> Result<HttpResponse> {
    let who = manager(&req, &auth, &ns).await?;
    auth.set_visibility(&ns, body.public).await?;
    record(&req, &who, "namespace.visibility", &ns, json!({ "public": body.public })).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct Role {
    role: String,
}

async fn set_member(
    req: HttpRequest,
    auth: web::Data<AuthService>,
    path: web::Path<(String, String)>,
    body: JsonBody<Role>,
) -> Result<HttpResponse> {
    let (ns, account) = path.into_inner();
    let who = manager(&req, &auth, &ns).await?;
    auth.set_member(&ns, &account, Some(&body.role)).await?;
    record(&req, &who, "member.set", &ns, json!({ "account": account, "role": body.role })).await;
    Ok(HttpResponse::NoContent().finish())
}

async fn remove_member(
    req: HttpRequest,
    auth: web::Data<AuthService>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (ns, account) = path.into_inner();
    let who = manager(&req, &auth, &ns).await?;
    auth.set_member(&ns, &account, None).await?;
    record(&req, &who, "member.remove", &ns, json!({ "account": account })).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct NewRobot {
    name: String,
    role: String,
}

async fn create_robot(
    req: HttpRequest,
    auth: web::Data<AuthService>,
    ns: web::Path<String>,
    body: JsonBody<NewRobot>,
) -> Result<HttpResponse> {
    let who = manager(&req, &auth, &ns).await?;
    let robot = auth.create_robot(&ns, &body.name, &body.role).await?;
    record(&req, &who, "robot.create", &robot.name, json!({ "role": body.role })).await;
    Ok(HttpResponse::Created().json(account_json(&robot)))
}

async fn list_robots(req: HttpRequest, auth: web::Data<AuthService>) -> Result<HttpResponse> {
    let who = reader(&req, &auth).await?;
    let mut out = Vec::new();
    for robot in auth.meta.accounts(Some("robot")).await? {
        if auth.may_manage(&who, robot.robot_namespace.as_deref().unwrap_or_default()).await? {
            out.push(account_json(&robot));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "robots": out })))
}

/// A robot the caller may manage.
async fn managed_robot(req: &HttpRequest, auth: &AuthService, name: &str) -> Result<(Account, Identity)> {
    let robot = auth.meta.account(name).await?.map(|a| a.account).filter(|a| a.kind == "robot");
    let robot = robot.ok_or_else(|| RegistryError::NotFound(format!("no robot {name}")))?;
    let who = manager(req, auth, robot.robot_namespace.as_deref().unwrap_or_default()).await?;
    Ok((robot, who))
}

async fn delete_robot(req: HttpRequest, auth: web::Data<AuthService>, name: web::Path<String>) -> Result<HttpResponse> {
    let (robot, who) = managed_robot(&req, &auth, &name).await?;
    auth.delete_account(&robot.name).await?;
    record(&req, &who, "robot.delete", &robot.name, Value::Null).await;
    Ok(HttpResponse::NoContent().finish())
}

async fn create_robot_token(
    req: HttpRequest,
    auth: web::Data<AuthService>,
    name: web::Path<String>,
    body: JsonBody<NewToken>,
) -> Result<HttpResponse> {
    let (robot, who) = managed_robot(&req, &auth, &name).await?;
    let (token, secret) = auth
        .create_token(&robot.name, &body.name, &body.scope, body.repository_pattern.as_deref(), body.expires_days)
        .await?;
    record(&req, &who, "token.create", &robot.name, token_audit(&token)).await;
    Ok(created_token(&token, secret))
}
