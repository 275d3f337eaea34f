//! OpenID Connect, the relying party's side (`[auth.oidc]`), on the `openidconnect` crate:
//! the provider's metadata from discovery (kept, its keys fetched again when an ID token names
//! a key they lack, as providers rotate), the authorization request (code flow with PKCE,
//! `state` and `nonce`), and the way back: the code exchanged, the ID token's signature,
//! issuer, audience, expiry and nonce checked, and the user read from its claims (the userinfo
//! endpoint when the ID token lacks the name or the groups). What the user becomes here is
//! `provider.rs`'s; the pages are the UI's.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySet, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError, TokenResponse,
};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::groups::GroupRules;
use crate::config::OidcConfig;
use crate::error::{RegistryError, Result};
use crate::meta::PendingOidcLogin;

/// The longest answer read from the provider (discovery, keys, tokens, userinfo).
const MAX_ANSWER: usize = 1 << 20;
/// Keys are fetched again at most this often (an ID token with an unknown key cannot make
/// Berth hammer the provider).
const KEYS_REFETCH_EVERY: Duration = Duration::from_secs(10);

/// The client as discovery builds it: an authorization endpoint, maybe a token endpoint and
/// a userinfo endpoint.
type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// The provider's user, as its checked ID token (and userinfo) say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUser {
    /// `issuer subject`: who the user is at the provider, whatever its name.
    pub external_id: String,
    /// The account name (from `username_claim`, in lower case).
    pub name: String,
    pub groups: Vec<String>,
}

/// What went wrong with the provider: unreachable (503) or a refused answer.
fn unreachable(what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unreachable(format!("the identity provider does not answer ({what}): {e}"))
}

fn refused(message: impl Into<String>) -> RegistryError {
    RegistryError::Unauthorized { message: message.into(), challenge: None }
}

/// The HTTP client the crate's requests go through: Berth's reqwest (rustls, the provider's
/// CA file), no redirects followed, answers of at most [`MAX_ANSWER`] bytes.
pub struct Http(reqwest::Client);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Request(#[from] reqwest::Error),
    #[error("the answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
    #[error(transparent)]
    Http(#[from] http::Error),
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut response =
                self.0.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let mut out = http::Response::builder().status(response.status());
            if let Some(h) = out.headers_mut() {
                *h = std::mem::take(response.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(HttpError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(out.body(body)?)
        })
    }
}

/// The provider's metadata, and when its keys were last fetched again.
struct Known {
    metadata: CoreProviderMetadata,
    keys_refetched: Option<Instant>,
}

/// The relying party of one provider.
pub struct Oidc {
    config: OidcConfig,
    http: Http,
    issuer: IssuerUrl,
    rules: GroupRules,
    known: Mutex<Option<Known>>,
}

impl Oidc {
    /// The client `[auth.oidc]` asks for; `None` while `issuer` is empty. Bad settings are an
    /// error at start, not at the first login.
    pub fn new(config: &OidcConfig) -> Result<Option<Oidc>> {
        if !config.enabled() {
            return Ok(None);
        }
        let bad = |m: String| RegistryError::Invalid(format!("auth.oidc: {m}"));
        let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|e| bad(format!("issuer: {e}")))?;
        if config.client_id.is_empty() {
            return Err(bad("client_id is empty".into()));
        }
        if config.username_claim.is_empty() {
            return Err(bad("username_claim is empty".into()));
        }
        if !config.redirect_url.is_empty() {
            RedirectUrl::new(config.redirect_url.clone()).map_err(|e| bad(format!("redirect_url: {e}")))?;
        }
        let rules = GroupRules::new(&config.admin_groups, &config.group_roles)?;
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let roots = crate::tls::certs::reqwest_roots(ca).map_err(|e| bad(format!("ca_file: {e:#}")))?;
            builder = builder.tls_certs_merge(roots);
        }
        let http = builder.build().map_err(|e| bad(format!("HTTP client: {e}")))?;
        Ok(Some(Oidc { config: config.clone(), http: Http(http), issuer, rules, known: Mutex::new(None) }))
    }

    /// The name on the login button.
    pub fn display_name(&self) -> &str {
        &self.config.display_name
    }

    /// Whether password logins stay open to everyone (else to local administrators only).
    pub fn local_login(&self) -> bool {
        self.config.local_login
    }

    pub fn rules(&self) -> &GroupRules {
        &self.rules
    }

    /// The redirect URL: the configured one, or this server's callback as the request named it.
    pub fn redirect_url(&self, scheme: &str, host: &str) -> String {
        if self.config.redirect_url.is_empty() {
            format!("{scheme}://{host}/login/oidc/callback")
        } else {
            self.config.redirect_url.clone()
        }
    }

    /// The provider's metadata: from discovery the first time (and again after a failure).
    async fn metadata(&self) -> Result<CoreProviderMetadata> {
        let mut known = self.known.lock().await;
        if let Some(k) = known.as_ref() {
            return Ok(k.metadata.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| unreachable("discovery", error_chain(&e)))?;
        tracing::info!(issuer = %self.issuer.as_str(), keys = metadata.jwks().keys().len(), "identity provider discovered");
        *known = Some(Known { metadata: metadata.clone(), keys_refetched: None });
        Ok(metadata)
    }

    /// The provider's keys fetched again (a rotation); `None` when they were fetched moments
    /// ago.
    async fn refetch_keys(&self) -> Result<Option<CoreProviderMetadata>> {
        let mut known = self.known.lock().await;
        let Some(k) = known.as_mut() else { return Ok(None) };
        if k.keys_refetched.is_some_and(|t| t.elapsed() < KEYS_REFETCH_EVERY) {
            return Ok(None);
        }
        let keys = JsonWebKeySet::fetch_async(k.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| unreachable("keys", error_chain(&e)))?;
        tracing::info!(issuer = %self.issuer.as_str(), keys = keys.keys().len(), "identity provider's keys fetched again");
        k.metadata = k.metadata.clone().set_jwks(keys);
        k.keys_refetched = Some(Instant::now());
        Ok(Some(k.metadata.clone()))
    }

    fn client(&self, metadata: CoreProviderMetadata, redirect_url: &str) -> Result<Client> {
        let secret =
            (!self.config.client_secret.is_empty()).then(|| ClientSecret::new(self.config.client_secret.clone()));
        let redirect = RedirectUrl::new(redirect_url.to_string())
            .map_err(|e| RegistryError::Invalid(format!("redirect URL {redirect_url:?}: {e}")))?;
        Ok(CoreClient::from_provider_metadata(metadata, ClientId::new(self.config.client_id.clone()), secret)
            .set_redirect_uri(redirect))
    }

    /// Starts a login: the provider's URL to send the browser to, and what must be kept until
    /// it comes back.
    pub async fn begin(&self, redirect_url: &str, next: &str) -> Result<(String, PendingOidcLogin)> {
        let client = self.client(self.metadata().await?, redirect_url)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for scope in self.config.scopes.iter().filter(|s| !s.is_empty() && *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let pending = PendingOidcLogin {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            redirect_url: redirect_url.to_string(),
            next: next.to_string(),
        };
        Ok((url.to_string(), pending))
    }

    /// Finishes a login whose `state` was checked: exchanges the code, checks the ID token and
    /// reads the user.
    pub async fn finish(&self, pending: &PendingOidcLogin, code: &str) -> Result<ProviderUser> {
        let client = self.client(self.metadata().await?, &pending.redirect_url)?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| RegistryError::Invalid(format!("the identity provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    refused(format!("the identity provider refused the code: {}", r.error()))
                }
                openidconnect::RequestTokenError::Request(e) => unreachable("token", e),
                other => refused(format!("the identity provider's token answer is unusable: {}", error_chain(&other))),
            })?;
        let id_token =
            token.id_token().ok_or_else(|| refused("the identity provider's answer carries no ID token"))?.clone();
        let nonce = Nonce::new(pending.nonce.clone());
        let checked = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => Ok(claims.subject().to_string()),
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey | SignatureVerificationError::CryptoError(_),
            )) => match self.refetch_keys().await? {
                // The provider may have rotated its keys since they were fetched.
                Some(metadata) => {
                    let client = self.client(metadata, &pending.redirect_url)?;
                    id_token.claims(&client.id_token_verifier(), &nonce).map(|c| c.subject().to_string())
                }
                None => id_token.claims(&client.id_token_verifier(), &nonce).map(|c| c.subject().to_string()),
            },
            Err(e) => Err(e),
        };
        let subject = checked.map_err(|e| {
            tracing::warn!(issuer = %self.issuer.as_str(), error = %error_chain(&e), "ID token refused");
            refused(format!("the identity provider's ID token is refused: {e}"))
        })?;
        // Signature, issuer, audience, expiry and nonce are checked: its other claims count.
        let mut claims = payload(&id_token.to_string())?;
        let wanted = [self.config.username_claim.as_str(), self.config.groups_claim.as_str()];
        if wanted.iter().any(|c| !c.is_empty() && !claims.contains_key(*c))
            && let Some(url) = client.user_info_url()
        {
            let info = self.userinfo(url.as_str(), token.access_token().secret()).await?;
            if info.get("sub").and_then(Value::as_str) != Some(subject.as_str()) {
                return Err(refused("the identity provider's userinfo is about somebody else"));
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        self.user(&subject, &claims)
    }

    async fn userinfo(&self, url: &str, access_token: &str) -> Result<Map<String, Value>> {
        let response =
            self.http.0.get(url).bearer_auth(access_token).send().await.map_err(|e| unreachable("userinfo", e))?;
        if !response.status().is_success() {
            return Err(refused(format!("the identity provider's userinfo answered {}", response.status())));
        }
        let body = response.bytes().await.map_err(|e| unreachable("userinfo", e))?;
        if body.len() > MAX_ANSWER {
            return Err(refused("the identity provider's userinfo is too large"));
        }
        json_object(&body).ok_or_else(|| refused("the identity provider's userinfo is not a JSON object"))
    }

    /// The user the claims describe.
    fn user(&self, subject: &str, claims: &Map<String, Value>) -> Result<ProviderUser> {
        let claim = &self.config.username_claim;
        let name = claims
            .get(claim)
            .and_then(Value::as_str)
            .ok_or_else(|| refused(format!("the identity provider gave no {claim} claim to name the account")))?
            .to_lowercase();
        if super::validate_account_name(&name).is_err() {
            return Err(refused(format!(
                "the identity provider's {claim} {name:?} is not a usable account name (lower-case letters, digits, \
                 '.', '_', '-'); set auth.oidc.username_claim to another claim"
            )));
        }
        let groups = match claims.get(&self.config.groups_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(String::from).collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(ProviderUser { external_id: format!("{} {subject}", self.issuer.as_str()), name, groups })
    }
}

/// The claims of a compact JWT (its signature checked before).
fn payload(jwt: &str) -> Result<Map<String, Value>> {
    let unusable = || refused("the identity provider's ID token is unreadable");
    let part = jwt.split('.').nth(1).ok_or_else(unusable)?;
    let bytes = BASE64URL_NOPAD.decode(part.trim_end_matches('=').as_bytes()).map_err(|_| unusable())?;
    json_object(&bytes).ok_or_else(unusable)
}

fn json_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    crate::oci::json::check_nesting(bytes).ok()?;
    match serde_json::from_slice(bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// An error with its causes, for logs and messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc(username_claim: &str) -> Oidc {
        let config = OidcConfig {
            issuer: "http://127.0.0.1:1/".into(),
            client_id: "berth".into(),
            username_claim: username_claim.into(),
            ..OidcConfig::default()
        };
        Oidc::new(&config).unwrap().unwrap()
    }

    #[test]
    fn the_user_comes_from_the_claims() {
        let o = oidc("preferred_username");
        let claims = json_object(br#"{"preferred_username":"Alice","groups":["devs","ops"]}"#).unwrap();
        let user = o.user("abc", &claims).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["devs", "ops"]);
        assert_eq!(user.external_id, "http://127.0.0.1:1/ abc");
        let one = json_object(br#"{"preferred_username":"bob","groups":"devs"}"#).unwrap();
        assert_eq!(o.user("b", &one).unwrap().groups, ["devs"]);
        let none = json_object(br#"{"preferred_username":"bob"}"#).unwrap();
        assert!(o.user("b", &none).unwrap().groups.is_empty());
    }

    #[test]
    fn unusable_names_are_refused() {
        let o = oidc("email");
        for claims in [r#"{"email":"alice@example.com"}"#, r#"{"email":""}"#, r#"{"email":7}"#, r#"{}"#] {
            let claims = json_object(claims.as_bytes()).unwrap();
            assert!(matches!(o.user("x", &claims), Err(RegistryError::Unauthorized { .. })), "{claims:?}");
        }
    }

    #[test]
    fn payloads_are_read_and_bad_ones_refused() {
        let body = BASE64URL_NOPAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(payload(&format!("h.{body}.s")).unwrap()["sub"], "x");
        assert!(payload("nodots").is_err());
        assert!(payload("h.!!!.s").is_err());
        let array = BASE64URL_NOPAD.encode(b"[1]");
        assert!(payload(&format!("h.{array}.s")).is_err());
        let deep = BASE64URL_NOPAD.encode(format!("{}{}", "[".repeat(100), "]".repeat(100)).as_bytes());
        assert!(payload(&format!("h.{deep}.s")).is_err());
    }

    #[test]
    fn settings_are_checked_at_start() {
        assert!(Oidc::new(&OidcConfig::default()).unwrap().is_none());
        let no_client = OidcConfig { issuer: "http://127.0.0.1:1/".into(), ..OidcConfig::default() };
        assert!(Oidc::new(&no_client).is_err());
        let bad_issuer = OidcConfig { issuer: "not a url".into(), client_id: "c".into(), ..OidcConfig::default() };
        assert!(Oidc::new(&bad_issuer).is_err());
        let bad_rule = OidcConfig {
            issuer: "http://127.0.0.1:1/".into(),
            client_id: "c".into(),
            group_roles: [("g".to_string(), "team:owner".to_string())].into(),
            ..OidcConfig::default()
        };
        assert!(Oidc::new(&bad_rule).is_err());
    }
}
