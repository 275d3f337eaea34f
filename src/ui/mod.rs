//! The web UI: server-rendered pages (askama templates in `templates/`, escaped by default)
//! served at `/` beside the `/v2` API, with a small embedded stylesheet and script.
//!
//! Nothing here re-implements a rule: logins go through [`AuthService::login`] (argon2,
//! disabled accounts, throttling), every permission through [`AuthService::allowed`] and
//! [`AuthService::may_manage`] (what the API checks), account changes through the
//! `AuthService` management functions, registry reads and deletes through [`Registry`].
//! Sessions ([`session`]) are rows in the database holding the SHA-256 of the cookie's secret
//! and the per-session CSRF token every form echoes; single sign-on (`/login/oidc` and its
//! callback) goes through [`AuthService::begin_oidc_login`] and
//! [`AuthService::finish_oidc_login`]. With `auth.enabled = false` the UI
//! browses and deletes like the open API, without account pages.
//!
//! Pages: [`browse`] (repositories, tags, manifests, deletes), [`account`] (settings,
//! namespaces, robots, administration), [`ops`] (garbage collection, quotas and usage, the
//! mirror's counters), [`replication`] (targets, rules, executions and jobs).

mod account;
mod browse;
mod format;
mod replication;
mod session;
mod storage;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use askama::Template;

use crate::auth::{Actions, AuthService, Identity};
use crate::error::RegistryError;
use crate::gc::Collector;
use crate::manage::accounts::AccountAdmin;
use crate::manage::replication::ReplicationAdmin;
use crate::manage::storage::StorageAdmin;
use crate::mirror::Mirror;
use crate::registry::Registry;
use crate::state::AppState;
pub use session::Viewer;

/// Mounts the UI. Register it after the API so `/v2`, `/token`, `/api/v1` and the health
/// routes keep their handlers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(browse::repositories))
        .route("/static/berth.css", web::get().to(stylesheet))
        .route("/static/berth.js", web::get().to(script))
        .route("/login", web::get().to(session::login_page))
        .route("/login", web::post().to(session::login))
        .route("/login/oidc", web::get().to(session::oidc_start))
        .route("/login/oidc/callback", web::get().to(session::oidc_callback))
        .route("/logout", web::post().to(session::logout))
        .route("/r/{tail:.+}", web::get().to(browse::repository_get))
        .route("/r/{tail:.+}", web::post().to(browse::repository_post))
        .route("/settings", web::get().to(account::settings))
        .route("/settings/password", web::post().to(account::change_password))
        .route("/settings/tokens", web::post().to(account::create_token))
        .route("/settings/tokens/{id}/revoke", web::post().to(account::revoke_token))
        .route("/ns/{ns}", web::get().to(account::namespace))
        .route("/ns/{ns}/visibility", web::post().to(account::set_visibility))
        .route("/ns/{ns}/members", web::post().to(account::set_member))
        .route("/ns/{ns}/quota", web::post().to(storage::set_quota))
        .route("/robots", web::post().to(account::create_robot))
        .route("/robots/{name}/tokens", web::post().to(account::create_robot_token))
        .route("/robots/{name}/delete", web::post().to(account::delete_robot))
        .route("/admin", web::get().to(account::admin))
        .route("/admin/users", web::post().to(account::create_user))
        .route("/admin/users/{name}", web::post().to(account::update_user))
        .route("/admin/orgs", web::post().to(account::create_org))
        .route("/admin/gc", web::post().to(account::run_gc))
        .route("/admin/replication", web::get().to(replication::replication))
        .route("/admin/replication/targets", web::post().to(replication::create_target))
        .route("/admin/replication/targets/{name}/test", web::post().to(replication::test_target))
        .route("/admin/replication/targets/{name}/delete", web::post().to(replication::delete_target))
        .route("/admin/replication/rules", web::post().to(replication::create_rule))
        .route("/admin/replication/rules/{name}", web::get().to(replication::rule))
        .route("/admin/replication/rules/{name}/run", web::post().to(replication::run_rule))
        .route("/admin/replication/rules/{name}/delete", web::post().to(replication::delete_rule));
}

const CSS: &str = include_str!("static/berth.css");
const JS: &str = include_str!("static/berth.js");

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(CSS)
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(JS)
}

/// What the shared layout shows: who is logged in, the navigation and a notice.
pub struct Layout {
    pub title: String,
    pub user: Option<String>,
    pub admin: bool,
    pub auth_on: bool,
    /// The token every form of the page carries.
    pub csrf: String,
    /// A confirmation of what was just done.
    pub notice: Option<String>,
}

/// The services the pages use, from the app data the server registered.
pub struct Services {
    pub registry: Arc<Registry>,
    pub auth: Option<Arc<AuthService>>,
    pub mirror: Option<Arc<Mirror>>,
    /// The garbage collector the server runs.
    pub gc: Option<Arc<Collector>>,
    /// Quotas, retention and GC runs.
    pub storage: Option<Arc<StorageAdmin>>,
    /// Accounts, tokens, robots and namespaces (with authentication on).
    pub accounts: Option<Arc<AccountAdmin>>,
    /// Webhook events and the audit log.
    pub events: Arc<crate::events::Events>,
    /// Replication targets, rules and their history.
    pub replication: Option<Arc<ReplicationAdmin>>,
    /// The client's address (for the audit log).
    pub addr: String,
}

impl Services {
    fn from_request(req: &HttpRequest) -> Result<Services, UiError> {
        let state = req
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| RegistryError::Internal("the UI needs the API state".into()))?;
        let auth = req.app_data::<web::Data<AuthService>>().map(|d| d.clone().into_inner());
        let accounts = auth.as_ref().and(req.app_data::<web::Data<AccountAdmin>>()).map(|d| d.clone().into_inner());
        Ok(Services {
            registry: state.registry.clone(),
            auth,
            accounts,
            mirror: state.mirror.clone(),
            gc: req.app_data::<web::Data<Collector>>().map(|d| d.clone().into_inner()),
            storage: req.app_data::<web::Data<StorageAdmin>>().map(|d| d.clone().into_inner()),
            events: state.events.clone(),
            replication: req.app_data::<web::Data<ReplicationAdmin>>().map(|d| d.clone().into_inner()),
            addr: crate::auth::service::client_addr(req),
        })
    }

    /// What `who` may do on `repository`: the API's rule, or everything on an open registry.
    pub async fn actions(&self, who: &Identity, repository: &str) -> Result<Actions, RegistryError> {
        match &self.auth {
            Some(auth) => auth.allowed(who, repository).await,
            None => Ok(Actions::ALL),
        }
    }
}

/// A failed page: rendered as a readable HTML error page.
#[derive(Debug)]
pub enum UiError {
    Registry(RegistryError),
    /// A form without the right CSRF token.
    Csrf,
    /// A page that needs a login, asked for anonymously: the login page, then `next`.
    Login(String),
    Render(askama::Error),
}

impl From<RegistryError> for UiError {
    fn from(e: RegistryError) -> Self {
        UiError::Registry(e)
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> Self {
        UiError::Render(e)
    }
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UiError::Registry(e) => write!(f, "{e}"),
            UiError::Csrf => f.write_str("the form's security token is missing or stale"),
            UiError::Login(_) => f.write_str("log in first"),
            UiError::Render(e) => write!(f, "rendering a page: {e}"),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    heading: String,
    message: String,
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::Registry(e) => e.status(),
            UiError::Csrf => StatusCode::FORBIDDEN,
            UiError::Login(_) => StatusCode::SEE_OTHER,
            UiError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (heading, message) = match self {
            UiError::Login(next) => {
                return see_other(&format!("/login?next={}", format::query_escape(next)));
            }
            UiError::Csrf => (
                "Form expired".to_string(),
                "This form's security token is missing or does not match your session. Reload the page and try again."
                    .to_string(),
            ),
            UiError::Render(e) => {
                tracing::error!(error = %e, "rendering a UI page");
                ("Something went wrong".to_string(), "The page could not be rendered.".to_string())
            }
            UiError::Registry(RegistryError::Internal(m)) => {
                tracing::error!(error = %m, "UI request failed");
                ("Something went wrong".to_string(), "An internal error occurred; it has been logged.".to_string())
            }
            UiError::Registry(e) => {
                let heading = match status {
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
                    StatusCode::CONFLICT => "Already exists",
                    StatusCode::UNAUTHORIZED => "Not logged in",
                    _ => "That did not work",
                };
                (heading.to_string(), e.to_string())
            }
        };
        let page = ErrorPage { status: status.as_u16(), heading, message };
        let body = page.render().unwrap_or_else(|_| "error".into());
        let mut resp = HttpResponse::build(status).content_type("text/html; charset=utf-8").body(body);
        security_headers(resp.headers_mut());
        resp
    }
}

pub type UiResult = Result<HttpResponse, UiError>;

/// Headers every page gets: no framing, no inline or foreign scripts, no caching of pages
/// that may show secrets.
fn security_headers(h: &mut actix_web::http::header::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A rendered page with the viewer's cookies and the security headers.
pub fn page(v: &Viewer, status: StatusCode, t: &impl Template) -> UiResult {
    let body = t.render()?;
    let mut resp = HttpResponse::build(status).content_type("text/html; charset=utf-8").body(body);
    security_headers(resp.headers_mut());
    v.set_cookies(resp.headers_mut());
    Ok(resp)
}

/// `303 See Other` to a path of this site.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location.to_string())).finish()
}

/// The fixed confirmation texts a redirect may ask for (`?ok=<code>`); anything else shows none,
/// so a link cannot put words on the page.
pub fn notice_for(code: Option<&str>) -> Option<String> {
    let text = match code? {
        "deleted" => "Deleted.",
        "password" => "Your password was changed. Other sessions of your account were ended.",
        "revoked" => "The token was revoked.",
        "visibility" => "Visibility changed.",
        "member" => "Membership changed.",
        "robot" => "Robot created.",
        "robot-deleted" => "Robot deleted.",
        "user" => "Account updated.",
        "user-created" => "User created.",
        "org" => "Organisation created.",
        "quota" => "Quota changed.",
        "gc" => "Garbage collection done.",
        "gc-dry" => "Dry run done: nothing was deleted.",
        _ => return None,
    };
    Some(text.to_string())
}
