//! The web UI over plain HTTP: form posts, cookies, the CSRF token of a page's forms, the login
//! form, and [`Ui`], a logged-in session that posts forms with its token.

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};

/// Form posts (reqwest's `form` needs a feature the project does not enable).
pub trait FormBody {
    fn form_body(self, fields: &[(&str, &str)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body(self, fields: &[(&str, &str)]) -> Self {
        self.header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap())
    }
}

/// The value of `name` in the Set-Cookie headers, with the whole header line.
pub fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let line = v.to_str().ok()?.to_string();
        let value = line.strip_prefix(&format!("{name}="))?.split(';').next()?.to_string();
        Some((value, line))
    })
}

/// The CSRF token the forms of a page carry.
pub fn form_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

/// Logs in through the form (`next=/settings`; with `https`, as a TLS proxy would forward it);
/// returns the session cookie's value and its Set-Cookie line.
pub async fn ui_login(c: &Client, base: &str, name: &str, password: &str, https: bool) -> (String, String) {
    ui_login_at(c, base, "/login", name, password, https).await
}

/// [`ui_login`] with the form of the page at `login_path` (`/login?local`: the password form
/// when single sign-on hides it).
pub async fn ui_login_at(
    c: &Client,
    base: &str,
    login_path: &str,
    name: &str,
    password: &str,
    https: bool,
) -> (String, String) {
    let page = c.get(format!("{base}{login_path}")).send().await.unwrap();
    let (csrf_cookie, _) = set_cookie(&page, "berth_csrf").expect("a csrf cookie for the login form");
    let csrf = form_csrf(&page.text().await.unwrap());
    assert_eq!(csrf, csrf_cookie);
    let mut req = c.post(format!("{base}/login")).header(COOKIE, format!("berth_csrf={csrf_cookie}")).form_body(&[
        ("csrf", csrf.as_str()),
        ("name", name),
        ("password", password),
        ("next", "/settings"),
    ]);
    if https {
        req = req.header("X-Forwarded-Proto", "https");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "login of {name}");
    assert_eq!(resp.headers()[LOCATION], "/settings");
    set_cookie(&resp, "berth_session").expect("a session cookie")
}

/// A logged-in UI client: its session cookie and the CSRF token of its forms.
pub struct Ui {
    pub c: Client,
    pub base: String,
    pub cookie: String,
    pub csrf: String,
}

impl Ui {
    pub async fn login(base: &str, name: &str, password: &str) -> Ui {
        Self::login_at(base, "/login", name, password).await
    }

    /// Logs in through the password form of the page at `login_path`.
    pub async fn login_at(base: &str, login_path: &str, name: &str, password: &str) -> Ui {
        let c = super::client();
        let (session, _) = ui_login_at(&c, base, login_path, name, password, false).await;
        let mut ui = Ui { c, base: base.to_string(), cookie: format!("berth_session={session}"), csrf: String::new() };
        let (status, html) = ui.get("/settings").await;
        assert_eq!(status, StatusCode::OK);
        ui.csrf = form_csrf(&html);
        ui
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self.c.get(format!("{}{path}", self.base)).header(COOKIE, &self.cookie).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// Posts a form with the CSRF token; returns the status and the Location or the page.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        let r = self
            .c
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form_body(&all)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let location = r.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string());
        (status, location.unwrap_or(r.text().await.unwrap()))
    }

    /// Whether the session still opens the settings page.
    pub async fn alive(&self) -> bool {
        self.get("/settings").await.0 == StatusCode::OK
    }
}
