//! The JSON management API under `/api/v1`: the caller's account and tokens, users (admins),
//! robots, organisations, members and visibility. Authenticated like `/v2` (Basic with a
//! password, or `Bearer`/Basic with a personal access token for reading); changes to accounts,
//! tokens and namespaces need a password login, so a token can never widen itself. Each
//! handler parses, calls [`AccountAdmin`] (which checks and records) and renders JSON.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::guards::{Admin, Caller, Reader};
use super::json::JsonBody;
use crate::error::Result;
use crate::manage::accounts::{AccountAdmin, TokenSpec, UserChange};
use crate::meta::{Account, TokenRecord};

pub fn account_json(a: &Account) -> Value {
    json!({
        "name": a.name, "kind": a.kind, "origin": a.origin, "admin": a.is_admin, "disabled": a.disabled,
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
    admin: web::Data<AccountAdmin>,
    body: JsonBody<PasswordChange>,
) -> Result<HttpResponse> {
    admin.change_own_password(who.by(), &body.current_password, &body.new_password, None).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn list_users(who: Admin, admin: web::Data<AccountAdmin>) -> Result<HttpResponse> {
    let users: Vec<Value> = admin.users(who.by()).await?.iter().map(account_json).collect();
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
    admin: web::Data<AccountAdmin>,
    body: JsonBody<NewUser>,
) -> Result<HttpResponse> {
    let (account, generated) = admin.create_user(who.by(), &body.name, body.password.as_deref(), body.admin).await?;
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
    admin: web::Data<AccountAdmin>,
    name: web::Path<String>,
    body: JsonBody<UserUpdate>,
) -> Result<HttpResponse> {
    let change = UserChange { admin: body.admin, disabled: body.disabled, password: body.password.as_deref() };
    let account = admin.update_user(who.by(), &name, &change, None).await?;
    Ok(HttpResponse::Ok().json(account_json(&account)))
}

pub(super) async fn delete_account(
    who: Admin,
    admin: web::Data<AccountAdmin>,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    admin.delete_user(who.by(), &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn list_tokens(who: Reader, admin: web::Data<AccountAdmin>) -> Result<HttpResponse> {
    let tokens: Vec<Value> = admin.tokens(who.by(), None).await?.iter().map(token_json).collect();
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

impl NewToken {
    fn spec(&self) -> TokenSpec<'_> {
        TokenSpec {
            name: &self.name,
            scope: &self.scope,
            repository_pattern: self.repository_pattern.as_deref(),
            expires_days: self.expires_days,
        }
    }
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
    admin: web::Data<AccountAdmin>,
    body: JsonBody<NewToken>,
) -> Result<HttpResponse> {
    let me = who.name().unwrap_or_default().to_string();
    let (token, secret) = admin.create_token(who.by(), &me, &body.spec()).await?;
    Ok(created_token(&token, secret))
}

pub(super) async fn revoke_token(
    who: Caller,
    admin: web::Data<AccountAdmin>,
    id: web::Path<i64>,
) -> Result<HttpResponse> {
    admin.revoke_token(who.by(), *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn list_namespaces(who: Reader, admin: web::Data<AccountAdmin>) -> Result<HttpResponse> {
    let out: Vec<Value> = admin
        .namespaces(who.by())
        .await?
        .into_iter()
        .map(|ns| json!({ "name": ns.name, "kind": ns.kind, "public": ns.public }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "namespaces": out })))
}

#[derive(Deserialize)]
pub(super) struct NewOrg {
    name: String,
}

pub(super) async fn create_org(
    who: Caller,
    admin: web::Data<AccountAdmin>,
    body: JsonBody<NewOrg>,
) -> Result<HttpResponse> {
    admin.create_org(who.by(), &body.name).await?;
    Ok(HttpResponse::Created().json(json!({ "name": body.name, "kind": "org", "public": false })))
}

pub(super) async fn get_namespace(
    who: Reader,
    admin: web::Data<AccountAdmin>,
    ns: web::Path<String>,
) -> Result<HttpResponse> {
    let view = admin.namespace(who.by(), &ns).await?;
    let members: Vec<Value> = view.members.iter().map(|(n, r)| json!({ "account": n, "role": r })).collect();
    Ok(HttpResponse::Ok().json(json!({
        "name": view.namespace.name, "kind": view.namespace.kind, "public": view.namespace.public,
        "members": members, "may_manage": view.may_manage,
    })))
}

#[derive(Deserialize)]
pub(super) struct Visibility {
    public: bool,
}

pub(super) async fn set_visibility(
    who: Caller,
    admin: web::Data<AccountAdmin>,
    ns: web::Path<String>,
    body: JsonBody<Visibility>,
) -> Result<HttpResponse> {
    admin.set_visibility(who.by(), &ns, body.public).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub(super) struct Role {
    role: String,
}

pub(super) async fn set_member(
    who: Caller,
    admin: web::Data<AccountAdmin>,
    path: web::Path<(String, String)>,
    body: JsonBody<Role>,
) -> Result<HttpResponse> {
    let (ns, account) = path.into_inner();
    admin.set_member(who.by(), &ns, &account, Some(&body.role)).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn remove_member(
    who: Caller,
    admin: web::Data<AccountAdmin>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (ns, account) = path.into_inner();
    admin.set_member(who.by(), &ns, &account, None).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub(super) struct NewRobot {
    name: String,
    role: String,
}

pub(super) async fn create_robot(
    who: Caller,
    admin: web::Data<AccountAdmin>,
    ns: web::Path<String>,
    body: JsonBody<NewRobot>,
) -> Result<HttpResponse> {
    let robot = admin.create_robot(who.by(), &ns, &body.name, &body.role).await?;
    Ok(HttpResponse::Created().json(account_json(&robot)))
}

pub(super) async fn list_robots(who: Reader, admin: web::Data<AccountAdmin>) -> Result<HttpResponse> {
    let robots: Vec<Value> = admin.robots(who.by(), None).await?.iter().map(account_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "robots": robots })))
}

pub(super) async fn delete_robot(
    who: Caller,
    admin: web::Data<AccountAdmin>,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    admin.delete_robot(who.by(), &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn create_robot_token(
    who: Caller,
    admin: web::Data<AccountAdmin>,
    name: web::Path<String>,
    body: JsonBody<NewToken>,
) -> Result<HttpResponse> {
    let robot = admin.managed_robot(who.by(), &name).await?;
    let (token, secret) = admin.create_token(who.by(), &robot.name, &body.spec()).await?;
    Ok(created_token(&token, secret))
}
