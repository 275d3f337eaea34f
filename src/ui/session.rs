//! Who is looking at a page: the login session (cookie `berth_session`, a random secret whose
//! SHA-256 is the database key), the CSRF token forms must carry, login and logout.
//!
//! Logged in, the CSRF token is the session's (stored with it). Without a session (the login
//! form; every form when auth is off) it is a random value in the HttpOnly cookie `berth_csrf`
//! that the form must repeat (double submit): another site can neither read nor set it.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use askama::Template;
use data_encoding::BASE64URL_NOPAD;
use serde::Deserialize;

use super::{Layout, Services, UiError, UiResult, notice_for, page, see_other};
use crate::auth::Identity;
use crate::auth::secrets::{constant_time_eq, random_bytes, token_hash};
use crate::auth::service::client_addr;
use crate::error::RegistryError;
use crate::manage::By;
use crate::manage::accounts::AccountAdmin;

const SESSION_COOKIE: &str = "berth_session";
const CSRF_COOKIE: &str = "berth_csrf";
/// The secret of a single sign-on login on its way to the provider and back.
const OIDC_COOKIE: &str = "berth_oidc";
const OIDC_COOKIE_PATH: &str = "/login/oidc";
/// How long a login lasts.
pub const SESSION_TTL_SECS: i64 = 12 * 3600;

/// The viewer of a page: identity, session and CSRF token, and the services pages use.
pub struct Viewer {
    pub who: Identity,
    pub svc: Services,
    /// The CSRF token forms of this page carry.
    pub csrf: String,
    /// The stored hash of the session's secret, when logged in.
    session_hash: Option<String>,
    /// A fresh `berth_csrf` cookie to set (the visitor had none).
    new_csrf_cookie: bool,
    /// The request came over TLS (directly or per `X-Forwarded-Proto`/`Forwarded`).
    pub secure: bool,
    /// `host[:port]` as the client named this server.
    pub host: String,
    /// The path and query asked for (where a login returns to).
    pub path: String,
}

fn random_secret() -> String {
    BASE64URL_NOPAD.encode(&random_bytes::<32>())
}

/// A cookie's value from the `Cookie` header.
fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    for value in req.headers().get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == name
            {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// Whether a value looks like one of our secrets (43 base64url characters).
fn well_formed(secret: &str) -> bool {
    secret.len() == 43 && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    set_cookie_at(name, "/", value, max_age, secure)
}

/// Lax, so the cookie comes along when the provider sends the browser back (a top-level GET).
fn set_cookie_at(name: &str, path: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&v).expect("cookie values are base64url")
}

impl Viewer {
    async fn load(req: HttpRequest) -> Result<Viewer, UiError> {
        let svc = Services::from_request(&req)?;
        let info = req.connection_info().clone();
        let secure = info.scheme() == "https";
        let host = info.host().to_string();
        let path = req.uri().path_and_query().map_or("/".to_string(), |p| p.to_string());
        let mut who = Identity::default();
        let mut csrf = None;
        let mut session_hash = None;
        if let Some(auth) = &svc.auth
            && let Some(secret) = cookie(&req, SESSION_COOKIE).filter(|s| well_formed(s))
        {
            let hash = token_hash(&secret);
            if let Some((account, session_csrf)) = auth.ui_session(&hash).await? {
                who.account = Some(account);
                csrf = Some(session_csrf);
                session_hash = Some(hash);
            }
        }
        let mut new_csrf_cookie = false;
        let csrf = match csrf {
            Some(c) => c,
            None => match cookie(&req, CSRF_COOKIE).filter(|c| well_formed(c)) {
                Some(c) => c,
                None => {
                    new_csrf_cookie = true;
                    random_secret()
                }
            },
        };
        Ok(Viewer { who, svc, csrf, session_hash, new_csrf_cookie, secure, host, path })
    }

    pub fn auth_on(&self) -> bool {
        self.svc.auth.is_some()
    }

    pub fn name(&self) -> Option<&str> {
        self.who.name()
    }

    /// The layout of a page titled `title`, with the notice `?ok=` asks for.
    pub fn layout(&self, title: impl Into<String>, ok: Option<&str>) -> Layout {
        Layout {
            title: title.into(),
            user: self.name().map(String::from),
            admin: self.who.is_admin(),
            auth_on: self.auth_on(),
            csrf: self.csrf.clone(),
            notice: notice_for(ok),
        }
    }

    /// Refuses a form whose token is not this viewer's.
    pub fn check_csrf(&self, sent: &str) -> Result<(), UiError> {
        if sent.is_empty() || !constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            return Err(UiError::Csrf);
        }
        // A token from the cookie only counts if the cookie was sent (not one made just now).
        if self.new_csrf_cookie {
            return Err(UiError::Csrf);
        }
        Ok(())
    }

    /// The account name of a logged-in viewer; anonymous viewers go to the login page.
    pub fn require_login(&self) -> Result<&str, UiError> {
        if self.svc.auth.is_none() {
            return Err(RegistryError::NotFound("there are no accounts: authentication is off".into()).into());
        }
        self.name().ok_or_else(|| UiError::Login(self.path.clone()))
    }

    /// Refuses anyone but a logged-in administrator.
    pub fn require_admin(&self) -> Result<(), UiError> {
        self.require_login()?;
        if !self.who.is_admin() {
            return Err(RegistryError::Denied("administrators only".into()).into());
        }
        Ok(())
    }

    /// The session's hash (to keep it when ending the account's other sessions).
    pub fn session_hash(&self) -> &str {
        self.session_hash.as_deref().unwrap_or("")
    }

    /// The viewer, for the management services (with its address, for the audit log).
    pub fn by(&self) -> By<'_> {
        By::Account(&self.who, &self.svc.addr)
    }

    /// The accounts service; `NotFound` with authentication off.
    pub fn accounts(&self) -> Result<&AccountAdmin, UiError> {
        self.svc.accounts.as_deref().ok_or_else(|| RegistryError::NotFound("authentication is off".into()).into())
    }

    pub fn auth(&self) -> Result<&crate::auth::AuthService, UiError> {
        self.svc.auth.as_deref().ok_or_else(|| RegistryError::NotFound("authentication is off".into()).into())
    }

    pub(super) fn set_cookies(&self, h: &mut HeaderMap) {
        if self.new_csrf_cookie {
            h.append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, &self.csrf, SESSION_TTL_SECS, self.secure));
        }
    }

    /// Answers "not found" to viewers who may not see a thing (so its existence does not
    /// leak), after sending anonymous viewers to the login page first.
    pub fn hidden(&self, what: &str) -> UiError {
        if self.svc.auth.is_some() && self.who.account.is_none() {
            return UiError::Login(self.path.clone());
        }
        RegistryError::NotFound(format!("{what} does not exist or you may not see it")).into()
    }
}

impl FromRequest for Viewer {
    type Error = UiError;
    type Future = Pin<Box<dyn Future<Output = Result<Viewer, UiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(Viewer::load(req.clone()))
    }
}

/// Only local paths are followed after a login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    l: Layout,
    next: String,
    name: String,
    error: Option<String>,
    /// "Log in with <sso>" when single sign-on is on.
    sso: Option<String>,
    /// The password form is shown (else only a link to it, for local administrators).
    password_form: bool,
}

impl LoginPage {
    fn new(v: &Viewer, next: String, name: String, error: Option<String>, local: bool) -> LoginPage {
        let oidc = v.svc.auth.as_deref().and_then(|a| a.oidc());
        LoginPage {
            l: v.layout("Log in", None),
            next,
            name,
            error,
            sso: oidc.map(|o| o.display_name().to_string()),
            password_form: local || oidc.is_none_or(|o| o.local_login()),
        }
    }
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
    /// `?local`: the password form, when single sign-on hides it.
    local: Option<String>,
}

pub async fn login_page(v: Viewer, q: web::Query<NextQuery>) -> UiResult {
    if v.svc.auth.is_none() || v.who.account.is_some() {
        return Ok(see_other(&safe_next(q.next.as_deref())));
    }
    let p = LoginPage::new(&v, safe_next(q.next.as_deref()), String::new(), None, q.local.is_some());
    page(&v, StatusCode::OK, &p)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

pub async fn login(v: Viewer, req: HttpRequest, form: web::Form<LoginForm>) -> UiResult {
    let auth = v.auth()?;
    v.check_csrf(&form.csrf)?;
    let next = safe_next(form.next.as_deref());
    let failed = |status: StatusCode, message: &str| {
        let p = LoginPage::new(&v, next.clone(), form.name.clone(), Some(message.to_string()), true);
        page(&v, status, &p)
    };
    let who = match auth.login(&form.name, &form.password, &client_addr(&req)).await {
        Ok(who) => who,
        Err(RegistryError::TooManyRequests(m)) => return failed(StatusCode::TOO_MANY_REQUESTS, &m),
        Err(RegistryError::Denied(m)) => return failed(StatusCode::FORBIDDEN, &m),
        Err(RegistryError::Unreachable(m)) => return failed(StatusCode::SERVICE_UNAVAILABLE, &m),
        Err(RegistryError::Unauthorized { .. }) => {
            return failed(StatusCode::UNAUTHORIZED, "Invalid name or password.");
        }
        Err(e) => return Err(e.into()),
    };
    // A personal access token is a narrower login than the account: not for the UI.
    let Some(account) = who.account.filter(|_| who.limit.is_none()) else {
        return failed(StatusCode::UNAUTHORIZED, "Log in with your password, not a token.");
    };
    v.svc.events.login_succeeded(&account.name, "ui", &client_addr(&req)).await;
    start_session(&v, &account, &next).await
}

/// Logs `account` in: a new session, its cookie, and the way to `next`.
async fn start_session(v: &Viewer, account: &crate::meta::Account, next: &str) -> UiResult {
    let secret = random_secret();
    let hash = token_hash(&secret);
    v.auth()?.start_ui_session(&hash, account, &random_secret(), SESSION_TTL_SECS).await?;
    let mut resp = see_other(next);
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &secret, SESSION_TTL_SECS, v.secure));
    Ok(resp)
}

/// `GET /login/oidc`: to the identity provider, with a fresh `state`, `nonce` and PKCE
/// challenge; the browser keeps the login's secret in a cookie.
pub async fn oidc_start(v: Viewer, q: web::Query<NextQuery>) -> UiResult {
    let auth = v.auth()?;
    let Some(oidc) = auth.oidc() else {
        return Err(RegistryError::NotFound("single sign-on is off".into()).into());
    };
    let redirect = oidc.redirect_url(if v.secure { "https" } else { "http" }, &v.host);
    let next = safe_next(q.next.as_deref());
    let (url, secret) = match auth.begin_oidc_login(&redirect, &next).await {
        Ok(started) => started,
        Err(RegistryError::Unreachable(m)) => {
            let p = LoginPage::new(&v, next, String::new(), Some(m), false);
            return page(&v, StatusCode::SERVICE_UNAVAILABLE, &p);
        }
        Err(e) => return Err(e.into()),
    };
    let mut resp = see_other(&url);
    resp.headers_mut().append(header::SET_COOKIE, set_cookie_at(OIDC_COOKIE, OIDC_COOKIE_PATH, &secret, 600, v.secure));
    Ok(resp)
}

#[derive(Deserialize)]
pub struct OidcCallback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/oidc/callback`: the provider sends the browser back; the `state` must be the
/// one this browser's login sent, the ID token must check out; then a session starts.
pub async fn oidc_callback(v: Viewer, req: HttpRequest, q: web::Query<OidcCallback>) -> UiResult {
    let auth = v.auth()?;
    let secret = cookie(&req, OIDC_COOKIE).filter(|s| well_formed(s));
    let failed = |status: StatusCode, message: &str| {
        let p = LoginPage::new(&v, "/".into(), String::new(), Some(message.to_string()), false);
        let mut resp = page(&v, status, &p)?;
        resp.headers_mut().append(header::SET_COOKIE, set_cookie_at(OIDC_COOKIE, OIDC_COOKIE_PATH, "", 0, v.secure));
        Ok(resp)
    };
    if let Some(error) = &q.error {
        let detail = q.error_description.as_deref().unwrap_or(error);
        return failed(StatusCode::UNAUTHORIZED, &format!("The identity provider did not log you in: {detail}"));
    }
    let (Some(secret), Some(state), Some(code)) = (secret, q.state.as_deref(), q.code.as_deref()) else {
        return failed(StatusCode::BAD_REQUEST, "This login was not started here, or has expired: start again.");
    };
    let addr = client_addr(&req);
    match auth.finish_oidc_login(&secret, state, code, &addr).await {
        Ok((account, next)) => {
            let mut resp = start_session(&v, &account, &safe_next(Some(&next))).await?;
            resp.headers_mut()
                .append(header::SET_COOKIE, set_cookie_at(OIDC_COOKIE, OIDC_COOKIE_PATH, "", 0, v.secure));
            Ok(resp)
        }
        Err(RegistryError::Unauthorized { message, .. }) => failed(StatusCode::UNAUTHORIZED, &message),
        Err(RegistryError::Denied(m)) => failed(StatusCode::FORBIDDEN, &m),
        Err(RegistryError::Unreachable(m)) => failed(StatusCode::SERVICE_UNAVAILABLE, &m),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(v: Viewer, form: web::Form<CsrfForm>) -> UiResult {
    v.check_csrf(&form.csrf)?;
    if let (Some(auth), Some(hash)) = (&v.svc.auth, &v.session_hash) {
        auth.end_ui_session(hash).await?;
    }
    let mut resp: HttpResponse = see_other("/");
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0, v.secure));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_local() {
        assert_eq!(safe_next(Some("/r/team/app")), "/r/team/app");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some("/a\r\nSet-Cookie: x=1")), "/");
    }

    #[test]
    fn secrets_are_well_formed() {
        let s = random_secret();
        assert!(well_formed(&s), "{s}");
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}=", &s[..42])));
    }
}
