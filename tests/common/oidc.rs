//! A real OpenID provider for the single sign-on tests: PyPI's `oidc-provider-mock` (discovery,
//! an authorization page where the test picks the user, signed ID tokens, JWKS, userinfo),
//! started per test on a port of its own; each start makes a new signing key. Users and their
//! claims are set through its `PUT /users/<sub>`; claims named like the ID token's own (`aud`,
//! `exp`, `nonce`) replace them, which is how the tests get tokens for another audience, expired
//! ones and ones with the wrong nonce from the real provider. [`sso_login`] walks the code flow
//! over HTTP (Berth → provider → Berth) without a browser.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::Value;

use super::html::{FormBody, set_cookie};
use super::{client, free_port};

pub const CLIENT_ID: &str = "berth-test";
pub const CLIENT_SECRET: &str = "berth-test-secret";

/// Fails with what to install when the provider is missing (never a skip).
pub fn require_provider() {
    let ok =
        Command::new("python3").args(["-c", "import oidc_provider_mock"]).output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the single sign-on tests need PyPI's oidc-provider-mock (pip install oidc-provider-mock; scripts/prereqs test does)"
    );
}

pub struct Provider {
    pub port: u16,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Provider {
    pub fn start() -> Provider {
        require_provider();
        let mut p = Provider { port: free_port(), child: None, log: tempfile::NamedTempFile::new().unwrap() };
        p.spawn();
        p
    }

    /// `http://127.0.0.1:PORT`, its issuer.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        // --require-nonce: an authorization request without a nonce is refused.
        let child = Command::new("python3")
            .args(["-m", "oidc_provider_mock", "-H", "127.0.0.1", "-p", &self.port.to_string(), "--require-nonce"])
            .stdout(Stdio::null())
            .stderr(self.log.reopen().unwrap())
            .spawn()
            .expect("start oidc_provider_mock");
        self.child = Some(child);
        // uvicorn listens once the application is loaded.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the OpenID provider did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Stops it and starts it again on the same port: users are forgotten and it signs with a
    /// new key (a key rotation, as far as Berth can tell).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sets the claims of the user `sub` (replacing what it had).
    pub async fn set_user(&self, sub: &str, claims: Value) {
        let r = client().put(format!("{}/users/{sub}", self.issuer())).json(&claims).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "setting the provider's user {sub}");
    }

    /// The `[auth.oidc]` section for a Berth that logs in here; `extra` adds lines to it.
    pub fn berth_section(&self, extra: &str) -> String {
        format!(
            "[auth.oidc]\nissuer = \"{}\"\ndisplay_name = \"Test IdP\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret = \"{CLIENT_SECRET}\"\n{extra}\n",
            self.issuer()
        )
    }

    /// The ID tokens the provider signed (its JWKS keys), for checks on rotation.
    pub async fn key_ids(&self) -> Vec<String> {
        let jwks: Value = client().get(format!("{}/jwks", self.issuer())).send().await.unwrap().json().await.unwrap();
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap_or_default().to_string()).collect()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a login through the provider ended at Berth's callback.
pub struct SsoOutcome {
    pub status: StatusCode,
    /// The session cookie's value when it succeeded.
    pub session: Option<String>,
    /// Where Berth sent the browser (success), or the page it showed (refusal).
    pub location_or_page: String,
}

/// What a test may do to the way back from the provider.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    Nothing,
    /// Another `state` than the one sent.
    State,
    /// The callback without the login's cookie (another browser).
    NoCookie,
    /// The same callback twice (a replay): the second answer is returned.
    Replay,
}

/// Logs in to Berth at `base` through the provider as the user `sub`, over HTTP: Berth's
/// `/login/oidc` (a redirect to the provider and a cookie), the provider's authorization form
/// (posted with `sub`), and Berth's callback with what the provider sent back.
pub async fn sso_login(base: &str, sub: &str, tamper: Tamper) -> SsoOutcome {
    let c = client();
    let start = c.get(format!("{base}/login/oidc?next=/settings")).send().await.unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER, "GET /login/oidc: {}", start.text().await.unwrap());
    let (secret, cookie_line) = set_cookie(&start, "berth_oidc").expect("a berth_oidc cookie");
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Lax"), "{cookie_line}");
    let authorize = start.headers()[LOCATION].to_str().unwrap().to_string();
    for want in ["code_challenge=", "code_challenge_method=S256", "nonce=", "state=", "scope=openid"] {
        assert!(authorize.contains(want), "the authorization request lacks {want}: {authorize}");
    }
    let answer = c.post(&authorize).form_body(&[("sub", sub)]).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND, "the provider's authorization: {}", answer.text().await.unwrap());
    let mut back = answer.headers()[LOCATION].to_str().unwrap().to_string();
    if tamper == Tamper::State {
        let at = back.find("state=").unwrap() + "state=".len();
        back.insert(at, 'x');
    }
    let call = |url: String| {
        let mut r = c.get(url);
        if tamper != Tamper::NoCookie {
            r = r.header(COOKIE, format!("berth_oidc={secret}"));
        }
        r.send()
    };
    let mut resp = call(back.clone()).await.unwrap();
    if tamper == Tamper::Replay {
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "the first use of the callback");
        resp = call(back).await.unwrap();
    }
    let status = resp.status();
    let session = set_cookie(&resp, "berth_session").map(|(v, _)| v).filter(|v| !v.is_empty());
    let location = resp.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string());
    let location_or_page = match location {
        Some(l) => l,
        None => resp.text().await.unwrap(),
    };
    SsoOutcome { status, session, location_or_page }
}
