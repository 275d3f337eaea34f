//! Account pages: settings (password, personal access tokens), namespaces (visibility,
//! members, robots) and administration (users, robots, organisations, the mirror). Every read
//! and change goes through `manage::accounts::AccountAdmin`, which the API and the CLI call
//! too: it checks who may (administrators; managers of a namespace) and writes the audit
//! record; these handlers check the form's CSRF token, call it and render.

use actix_web::http::StatusCode;
use actix_web::web;
use askama::Template;
use serde::Deserialize;

use super::format::{ago, size, time};
use super::session::CsrfForm;
use super::storage::{GcRow, GcView, MirrorStats, Storage, gc_view, mirror_stats, storage};
use super::{Layout, UiError, UiResult, Viewer, page, see_other};
use crate::error::RegistryError;
use crate::manage::accounts::{ROLES, SCOPES, TokenSpec, UserChange};
use crate::meta::{Account, TokenRecord};

pub struct TokenRow {
    id: i64,
    name: String,
    scope: String,
    pattern: String,
    created: String,
    expires: String,
    last_used: String,
}

fn token_row(t: &TokenRecord) -> TokenRow {
    TokenRow {
        id: t.id,
        name: t.name.clone(),
        scope: t.scope.clone(),
        pattern: t.repository_pattern.clone().unwrap_or_default(),
        created: time(t.created_at),
        expires: t.expires_at.map(time).unwrap_or_else(|| "never".into()),
        last_used: t.last_used_at.map(ago).unwrap_or_else(|| "never".into()),
    }
}

/// A secret shown once, right after it was made.
pub struct Shown {
    what: String,
    account: String,
    secret: String,
    /// The registry, for the `docker login` hint.
    host: String,
}

pub struct NsRow {
    name: String,
    kind: String,
    public: bool,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    l: Layout,
    host: String,
    account: Account,
    tokens: Vec<TokenRow>,
    namespaces: Vec<NsRow>,
    shown: Option<Shown>,
    scopes: &'static [&'static str],
    /// Days tokens of single sign-on accounts may live (0: no limit).
    max_token_days: u64,
}

#[derive(Deserialize)]
pub struct OkQuery {
    ok: Option<String>,
}

async fn visible_namespaces(v: &Viewer) -> Result<Vec<NsRow>, UiError> {
    let namespaces = v.accounts()?.namespaces(v.by()).await?;
    Ok(namespaces.into_iter().map(|ns| NsRow { name: ns.name, kind: ns.kind, public: ns.public }).collect())
}

async fn settings_page(v: &Viewer, ok: Option<&str>, shown: Option<Shown>) -> UiResult {
    v.require_login()?;
    let account = v.who.account.clone().ok_or_else(|| UiError::Login(v.path.clone()))?;
    let tokens = v.accounts()?.tokens(v.by(), None).await?.iter().map(token_row).collect();
    let p = SettingsPage {
        l: v.layout("Account settings", ok),
        host: v.host.clone(),
        account,
        tokens,
        namespaces: visible_namespaces(v).await?,
        shown,
        scopes: &SCOPES,
        max_token_days: v.auth()?.config.sso_token_max_days,
    };
    page(v, StatusCode::OK, &p)
}

pub async fn settings(v: Viewer, q: web::Query<OkQuery>) -> UiResult {
    settings_page(&v, q.ok.as_deref(), None).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

pub async fn change_password(v: Viewer, form: web::Form<PasswordForm>) -> UiResult {
    v.require_login()?;
    v.check_csrf(&form.csrf)?;
    if form.new != form.confirm {
        return Err(RegistryError::Invalid("the new password and its confirmation differ".into()).into());
    }
    // Ends the account's other UI sessions, keeping this one.
    v.accounts()?.change_own_password(v.by(), &form.current, &form.new, Some(v.session_hash())).await?;
    Ok(see_other("/settings?ok=password"))
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    pattern: String,
    #[serde(default)]
    expires_days: String,
}

fn expires(days: &str) -> Result<Option<u32>, UiError> {
    let days = days.trim();
    if days.is_empty() || days == "0" {
        return Ok(None);
    }
    days.parse::<u32>()
        .ok()
        .filter(|d| *d <= 3650)
        .map(Some)
        .ok_or_else(|| RegistryError::Invalid("expiry: a number of days up to 3650, or empty for never".into()).into())
}

impl TokenForm {
    fn spec(&self) -> Result<TokenSpec<'_>, UiError> {
        Ok(TokenSpec {
            name: self.name.trim(),
            scope: &self.scope,
            repository_pattern: Some(self.pattern.trim()),
            expires_days: expires(&self.expires_days)?,
        })
    }
}

pub async fn create_token(v: Viewer, form: web::Form<TokenForm>) -> UiResult {
    let name = v.require_login()?.to_string();
    v.check_csrf(&form.csrf)?;
    let (record, secret) = v.accounts()?.create_token(v.by(), &name, &form.spec()?).await?;
    let shown = Shown { what: format!("Token {:?}", record.name), account: name, secret, host: v.host.clone() };
    settings_page(&v, None, Some(shown)).await
}

pub async fn revoke_token(v: Viewer, id: web::Path<i64>, form: web::Form<CsrfForm>) -> UiResult {
    v.require_login()?;
    v.check_csrf(&form.csrf)?;
    v.accounts()?.revoke_token(v.by(), *id).await?;
    Ok(see_other("/settings?ok=revoked"))
}

// ---- namespaces -----------------------------------------------------------------------------

pub struct RobotRow {
    name: String,
    namespace: String,
    role: String,
    disabled: bool,
    tokens: Vec<TokenRow>,
}

#[derive(Template)]
#[template(path = "namespace.html")]
struct NamespacePage {
    l: Layout,
    name: String,
    kind: String,
    public: bool,
    members: Vec<(String, String)>,
    robots: Vec<RobotRow>,
    may_manage: bool,
    repositories: i64,
    size: String,
    shown: Option<Shown>,
    roles: &'static [&'static str],
    scopes: &'static [&'static str],
    /// Usage and quota, for viewers the usage API answers.
    storage: Option<Storage>,
    /// Administrators set quotas.
    may_set_quota: bool,
}

async fn robots_in(v: &Viewer, namespace: Option<&str>) -> Result<Vec<RobotRow>, UiError> {
    let accounts = v.accounts()?;
    let mut out = Vec::new();
    for r in accounts.robots(v.by(), namespace).await? {
        let ns = r.robot_namespace.clone().unwrap_or_default();
        let tokens = accounts.tokens(v.by(), Some(&r.name)).await?.iter().map(token_row).collect();
        out.push(RobotRow {
            name: r.name,
            namespace: ns,
            role: r.robot_role.unwrap_or_default(),
            disabled: r.disabled,
            tokens,
        });
    }
    Ok(out)
}

async fn namespace_page(v: &Viewer, ns: &str, ok: Option<&str>, shown: Option<Shown>) -> UiResult {
    let view = match v.accounts()?.namespace(v.by(), ns).await {
        Err(RegistryError::NotFound(_)) => return Err(v.hidden(&format!("the namespace {ns}"))),
        other => other?,
    };
    let may_manage = view.may_manage;
    let (repositories, bytes) = v.svc.registry.namespace_summary(ns).await?;
    let p = NamespacePage {
        l: v.layout(format!("Namespace {ns}"), ok),
        name: view.namespace.name,
        kind: view.namespace.kind,
        public: view.namespace.public,
        members: view.members,
        robots: if may_manage { robots_in(v, Some(ns)).await? } else { Vec::new() },
        may_manage,
        repositories,
        size: size(bytes),
        shown,
        roles: &ROLES,
        scopes: &SCOPES,
        storage: storage(v, ns).await?,
        may_set_quota: v.who.is_admin(),
    };
    page(v, StatusCode::OK, &p)
}

pub async fn namespace(v: Viewer, ns: web::Path<String>, q: web::Query<OkQuery>) -> UiResult {
    namespace_page(&v, &ns, q.ok.as_deref(), None).await
}

/// A logged-in viewer sending a form of this site (the service checks what it may do).
fn form_of_user(v: &Viewer, csrf: &str) -> Result<(), UiError> {
    v.require_login()?;
    v.check_csrf(csrf)
}

#[derive(Deserialize)]
pub struct VisibilityForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    public: String,
}

pub async fn set_visibility(v: Viewer, ns: web::Path<String>, form: web::Form<VisibilityForm>) -> UiResult {
    form_of_user(&v, &form.csrf)?;
    v.accounts()?.set_visibility(v.by(), &ns, form.public == "true").await?;
    Ok(see_other(&format!("/ns/{ns}?ok=visibility")))
}

#[derive(Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    account: String,
    /// A role, or `remove`.
    #[serde(default)]
    role: String,
}

pub async fn set_member(v: Viewer, ns: web::Path<String>, form: web::Form<MemberForm>) -> UiResult {
    form_of_user(&v, &form.csrf)?;
    let role = (form.role != "remove").then_some(form.role.as_str());
    v.accounts()?.set_member(v.by(), &ns, form.account.trim(), role).await?;
    Ok(see_other(&format!("/ns/{ns}?ok=member")))
}

#[derive(Deserialize)]
pub struct RobotForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    /// Where to go back to: `admin` or the namespace page.
    #[serde(default)]
    back: String,
}

pub async fn create_robot(v: Viewer, form: web::Form<RobotForm>) -> UiResult {
    let ns = form.namespace.trim();
    form_of_user(&v, &form.csrf)?;
    v.accounts()?.create_robot(v.by(), ns, form.name.trim(), &form.role).await?;
    Ok(see_other(&if form.back == "admin" { "/admin?ok=robot".to_string() } else { format!("/ns/{ns}?ok=robot") }))
}

pub async fn create_robot_token(v: Viewer, name: web::Path<String>, form: web::Form<TokenForm>) -> UiResult {
    form_of_user(&v, &form.csrf)?;
    let accounts = v.accounts()?;
    let robot = accounts.managed_robot(v.by(), &name).await?;
    let (record, secret) = accounts.create_token(v.by(), &robot.name, &form.spec()?).await?;
    let shown = Shown {
        what: format!("Token {:?} of the robot {}", record.name, robot.name),
        account: robot.name.clone(),
        secret,
        host: v.host.clone(),
    };
    namespace_page(&v, robot.robot_namespace.as_deref().unwrap_or_default(), None, Some(shown)).await
}

pub async fn delete_robot(v: Viewer, name: web::Path<String>, form: web::Form<CsrfForm>) -> UiResult {
    form_of_user(&v, &form.csrf)?;
    let robot = v.accounts()?.delete_robot(v.by(), &name).await?;
    Ok(see_other(&format!("/ns/{}?ok=robot-deleted", robot.robot_namespace.unwrap_or_default())))
}

// ---- administration -------------------------------------------------------------------------

pub struct UserRow {
    name: String,
    admin: bool,
    disabled: bool,
    created: String,
    last_login: String,
    is_me: bool,
    /// `local`, or the directory or provider it logs in through.
    origin: String,
}

pub struct UpstreamRow {
    name: String,
    url: String,
    default: bool,
    tag_ttl: u64,
    repositories: i64,
    size: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    l: Layout,
    users: Vec<UserRow>,
    robots: Vec<RobotRow>,
    orgs: Vec<NsRow>,
    mirror_on: bool,
    upstreams: Vec<UpstreamRow>,
    shown: Option<Shown>,
    roles: &'static [&'static str],
    gc: GcView,
    mirror: MirrorStats,
}

async fn admin_page(v: &Viewer, ok: Option<&str>, shown: Option<Shown>) -> UiResult {
    admin_page_with(v, StatusCode::OK, ok, None, shown.map(Err).unwrap_or(Ok(None))).await
}

/// The administration page with `status`, a notice (a fixed `ok` code, or a text) and either
/// a secret to show once or the report of a collection just run.
pub(super) async fn admin_page_with(
    v: &Viewer,
    status: StatusCode,
    ok: Option<&str>,
    notice: Option<String>,
    extra: Result<Option<GcRow>, Shown>,
) -> UiResult {
    v.require_admin()?;
    let (shown, just_ran) = match extra {
        Ok(report) => (None, report),
        Err(shown) => (Some(shown), None),
    };
    let accounts = v.accounts()?;
    let me = v.name().unwrap_or_default();
    let users = accounts
        .users(v.by())
        .await?
        .into_iter()
        .map(|a| UserRow {
            is_me: a.name == me,
            created: time(a.created_at),
            last_login: a.last_login_at.map(ago).unwrap_or_else(|| "never".into()),
            name: a.name,
            admin: a.is_admin,
            disabled: a.disabled,
            origin: a.origin,
        })
        .collect();
    let orgs = accounts
        .namespaces(v.by())
        .await?
        .into_iter()
        .filter(|n| n.kind == "org")
        .map(|n| NsRow { name: n.name, kind: n.kind, public: n.public })
        .collect();
    let mut upstreams = Vec::new();
    if let Some(m) = &v.svc.mirror {
        for u in &m.config.upstreams {
            let (repositories, bytes) = v.svc.registry.namespace_summary(&u.name).await?;
            upstreams.push(UpstreamRow {
                name: u.name.clone(),
                url: u.url.clone(),
                default: m.config.default_upstream == u.name,
                tag_ttl: u.tag_ttl_secs,
                repositories,
                size: size(bytes),
            });
        }
    }
    let mut gc = gc_view(v).await?;
    gc.just_ran = just_ran;
    let mut l = v.layout("Administration", ok);
    if notice.is_some() {
        l.notice = notice;
    }
    let p = AdminPage {
        l,
        users,
        robots: robots_in(v, None).await?,
        orgs,
        mirror_on: v.svc.mirror.is_some(),
        upstreams,
        shown,
        roles: &ROLES,
        gc,
        mirror: mirror_stats(),
    };
    page(v, status, &p)
}

pub async fn admin(v: Viewer, q: web::Query<OkQuery>) -> UiResult {
    admin_page(&v, q.ok.as_deref(), None).await
}

#[derive(Deserialize)]
pub struct NewUserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    admin: Option<String>,
}

pub async fn create_user(v: Viewer, form: web::Form<NewUserForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    let password = Some(form.password.as_str()).filter(|p| !p.is_empty());
    let (account, generated) =
        v.accounts()?.create_user(v.by(), form.name.trim(), password, form.admin.is_some()).await?;
    let shown = generated.map(|secret| Shown {
        what: format!("The generated password of {}", account.name),
        account: account.name.clone(),
        secret,
        host: v.host.clone(),
    });
    admin_page(&v, Some("user-created"), shown).await
}

#[derive(Deserialize)]
pub struct UserUpdateForm {
    #[serde(default)]
    csrf: String,
    /// `disable`, `enable`, `make-admin`, `remove-admin` or `password`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    password: String,
}

pub async fn update_user(v: Viewer, name: web::Path<String>, form: web::Form<UserUpdateForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    let change = match form.action.as_str() {
        "disable" => UserChange { disabled: Some(true), ..Default::default() },
        "enable" => UserChange { disabled: Some(false), ..Default::default() },
        "make-admin" => UserChange { admin: Some(true), ..Default::default() },
        "remove-admin" => UserChange { admin: Some(false), ..Default::default() },
        "password" => UserChange { password: Some(&form.password), ..Default::default() },
        _ => return Err(RegistryError::Invalid("unknown action".into()).into()),
    };
    // A new password ends the account's UI sessions (an admin resetting their own keeps this one).
    v.accounts()?.update_user(v.by(), &name, &change, Some(v.session_hash())).await?;
    Ok(see_other("/admin?ok=user"))
}

#[derive(Deserialize)]
pub struct OrgForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn create_org(v: Viewer, form: web::Form<OrgForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    v.accounts()?.create_org(v.by(), form.name.trim()).await?;
    Ok(see_other("/admin?ok=org"))
}

#[derive(Deserialize)]
pub struct GcForm {
    #[serde(default)]
    csrf: String,
    /// `dry-run` or `collect`.
    #[serde(default)]
    action: String,
}

/// `POST /admin/gc`: a dry run or a real collection, then the administration page with its report.
pub async fn run_gc(v: Viewer, form: web::Form<GcForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    let dry_run = match form.action.as_str() {
        "dry-run" => true,
        "collect" => false,
        _ => return Err(RegistryError::Invalid("unknown action".into()).into()),
    };
    let storage = v.svc.storage.clone().ok_or_else(|| RegistryError::Internal("storage is not registered".into()))?;
    match storage.run_gc(v.by(), dry_run, None).await {
        Ok(report) => {
            let code = if dry_run { "gc-dry" } else { "gc" };
            admin_page_with(&v, StatusCode::OK, Some(code), None, Ok(Some(GcRow::from(&report)))).await
        }
        Err(RegistryError::Conflict(m)) => {
            let notice = format!("Nothing was done: {m}. Try again when it has finished.");
            admin_page_with(&v, StatusCode::CONFLICT, None, Some(notice), Ok(None)).await
        }
        Err(e) => Err(e.into()),
    }
}
