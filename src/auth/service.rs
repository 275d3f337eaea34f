//! The credentials and token service: verifies passwords and personal access tokens, issues and
//! checks registry tokens, keeps web UI sessions, and answers what an identity may do and which
//! namespaces it manages. Changes to accounts, tokens and namespaces are
//! `crate::manage::accounts`'s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header;
use data_encoding::BASE64;
use sha2::Digest as _;

use super::jwt::{AccessEntry, Claims, TokenKeys};
use super::limiter::LoginLimiter;
use super::policy::{self, Actions, TokenLimit};
use super::secrets::{self, TOKEN_PREFIX};
use super::{Identity, PullSource};
use crate::config::AuthConfig;
use crate::error::{RegistryError, Result};
use crate::meta::{Account, Meta, NewAccount, TokenRecord, now};
use crate::oci::validate_name;
use std::sync::Arc;

/// A freshly issued registry token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: i64,
    pub issued_at: i64,
}

pub struct AuthService {
    pub(super) meta: Meta,
    pub config: AuthConfig,
    keys: TokenKeys,
    limiter: LoginLimiter,
    /// Passwords verified recently: hash of (name, password) → the PHC string they matched.
    /// Saves an argon2 run per request for clients that send Basic credentials every time; after
    /// a password change the cached PHC no longer matches and the password is verified again.
    verified: Mutex<HashMap<[u8; 32], String>>,
    /// Registry tokens (JWTs) verified lately, by their SHA-256, and whom they name: see
    /// [`KnownJwt`].
    known_jwts: Mutex<HashMap<[u8; 32], KnownJwt>>,
    /// The pull-through mirror, whose repositories follow its own pull rule.
    mirror: std::sync::OnceLock<Arc<dyn PullSource>>,
    /// Where refused logins are recorded (the audit log).
    pub(super) events: std::sync::OnceLock<Arc<crate::events::Events>>,
    /// The directory (LDAP), when configured, with what its groups give and what it confirmed
    /// lately (`provider.rs`).
    pub(super) directory: Option<super::directory::Directory>,
    pub(super) group_rules: super::groups::GroupRules,
    pub(super) remembered: super::directory::Remembered,
    /// The OpenID Connect provider, when configured (`oidc.rs`, `provider.rs`).
    pub(super) oidc: Option<super::oidc::Oidc>,
}

/// How long the identity of a registry token, once read, is used without reading its account
/// (and personal access token) again: a change made by another node or process shows within it.
const JWT_RECHECK: Duration = Duration::from_millis(500);

/// Registry tokens remembered at most; beyond, the cache starts afresh.
const KNOWN_JWTS_KEPT: usize = 4096;

/// Registry tokens longer than this are verified on every request, never remembered: `/token`
/// signs whatever scopes it is asked for, so a stranger could otherwise fill the cache with
/// tokens of a hundred kilobytes each (what Berth issues for a handful of scopes is well below).
const KNOWN_JWT_MAX_LEN: usize = 4096;

/// A registry token whose signature, issuer, audience and dates were checked, with the identity
/// read for it. Clients send the same token on every request until it expires, so this saves an
/// ECDSA verification and one or two database reads per request. Used only while all hold:
/// read within [`JWT_RECHECK`], before the token's (and its personal access token's) expiry,
/// and no account or token changed through this process since (`Meta::identities_generation`)
/// — so revoking a token or disabling an account here takes effect at once, and elsewhere
/// within [`JWT_RECHECK`].
struct KnownJwt {
    who: Arc<Identity>,
    read_at: Instant,
    generation: u64,
    /// Unix seconds: the earlier of the JWT's `exp` and its personal access token's expiry.
    valid_until: i64,
}

/// Spends a password verification's time on the blocking pool (unknown or unusable accounts).
pub(super) async fn burn(secret: &str) {
    let secret = secret.to_string();
    let _ = tokio::task::spawn_blocking(move || secrets::burn_verification(&secret)).await;
}

fn invalid_credentials() -> RegistryError {
    RegistryError::Unauthorized { message: "invalid username, password or token".into(), challenge: None }
}

/// The name and secret of Basic credentials (`base64(name:secret)`).
pub fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(BASE64.decode(encoded.trim().as_bytes()).ok()?).ok()?;
    let (name, secret) = decoded.split_once(':')?;
    Some((name.to_string(), secret.to_string()))
}

/// What an `Authorization` header presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// Basic: an account name and its password or a personal access token.
    Basic { name: String, secret: String },
    /// Bearer with a personal access token.
    Token(&'a str),
    /// Bearer with anything else: a registry JWT, still to be verified.
    Jwt(&'a str),
}

/// Reads an `Authorization` header's value (`Basic base64(name:secret)`, `Bearer <token>`, the
/// scheme in any case); `None` for other schemes and Basic credentials that do not decode.
pub fn parse_authorization(value: &str) -> Option<Credentials<'_>> {
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let (name, secret) = decode_basic(rest)?;
        return Some(Credentials::Basic { name, secret });
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(if rest.starts_with(TOKEN_PREFIX) { Credentials::Token(rest) } else { Credentials::Jwt(rest) })
}

/// The client address used for throttling (behind trusted proxies, from `X-Forwarded-For`).
pub fn client_addr(req: &HttpRequest) -> String {
    crate::client_ip::client_ip(req)
}

/// A parsed scope request: `type:name:actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRequest {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Parses `repository:team/app:pull,push` (a type may carry a class, `repository(plugin)`).
pub fn parse_scope(s: &str) -> Option<ScopeRequest> {
    let (kind, rest) = s.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let kind = kind.split('(').next().unwrap_or(kind);
    if name.is_empty() {
        return None;
    }
    Some(ScopeRequest {
        kind: kind.to_string(),
        name: name.to_string(),
        actions: actions.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
    })
}

impl AuthService {
    pub async fn new(meta: Meta, config: AuthConfig) -> Result<AuthService> {
        let keys = TokenKeys::load(&meta, &config.issuer).await?;
        let limiter = LoginLimiter::new(
            config.max_failed_logins,
            config.max_failed_logins_per_account,
            Duration::from_secs(config.lockout_secs),
        );
        let directory = super::directory::Directory::new(&config.ldap)?;
        let group_rules = super::groups::GroupRules::new(&config.ldap.admin_groups, &config.ldap.group_roles)?;
        let oidc = super::oidc::Oidc::new(&config.oidc)?;
        Ok(AuthService {
            oidc,
            directory,
            group_rules,
            remembered: Default::default(),
            meta,
            config,
            keys,
            limiter,
            verified: Mutex::new(HashMap::new()),
            known_jwts: Mutex::new(HashMap::new()),
            mirror: std::sync::OnceLock::new(),
            events: std::sync::OnceLock::new(),
        })
    }

    /// On first start with no account: creates `admin` with `BERTH_ADMIN_PASSWORD`, or with a
    /// generated password printed once to the log.
    pub async fn bootstrap_admin(&self) -> Result<()> {
        if self.meta.count_accounts().await? > 0 {
            return Ok(());
        }
        let (password, generated) = match std::env::var("BERTH_ADMIN_PASSWORD") {
            Ok(p) if !p.is_empty() => (p, false),
            _ => (secrets::random_password(), true),
        };
        let hash = secrets::hash_password(&password)?;
        let new = NewAccount {
            name: "admin",
            kind: "user",
            password_hash: Some(&hash),
            is_admin: true,
            robot_namespace: None,
            robot_role: None,
            origin: "local",
        };
        if self.meta.create_account(&new).await?.is_none() {
            return Ok(()); // another node made it first
        }
        if generated {
            tracing::warn!(
                "created the account 'admin' with the password {password} (shown once; change it with `berth user passwd admin`)"
            );
        } else {
            tracing::info!("created the account 'admin' with the password from BERTH_ADMIN_PASSWORD");
        }
        Ok(())
    }

    // ---- credentials ------------------------------------------------------------------------

    /// Verifies a name and a password or personal access token.
    pub async fn login(&self, name: &str, secret: &str, addr: &str) -> Result<Identity> {
        // A valid token (256 random bits, not guessable) is never throttled, so nobody can lock
        // a robot out by failing logins in its name.
        if secret.starts_with(TOKEN_PREFIX)
            && let Some(who) = self.check_credentials(name, secret, addr).await?
        {
            return Ok(who);
        }
        if !self.limiter.allowed(name, addr) {
            return Err(RegistryError::TooManyRequests("too many failed logins; try again later".into()));
        }
        match self.check_credentials(name, secret, addr).await? {
            Some(who) => {
                self.limiter.succeeded(name, addr);
                Ok(who)
            }
            None => {
                self.limiter.failed(name, addr);
                tracing::warn!(account = name, addr, "failed login");
                if let Some(events) = self.events.get() {
                    events.login_failed(name, addr).await;
                }
                Err(invalid_credentials())
            }
        }
    }

    async fn check_credentials(&self, name: &str, secret: &str, addr: &str) -> Result<Option<Identity>> {
        if secret.starts_with(TOKEN_PREFIX) {
            let Some(token) = self.usable_token(secret, &["personal"]).await? else {
                return Ok(None);
            };
            if !secrets::constant_time_eq(token.account_name.as_bytes(), name.as_bytes()) {
                return Ok(None);
            }
            return self.token_identity(&token, addr).await;
        }
        let found = self.meta.account(name).await?;
        // Names without a local account (and the accounts it made) are the directory's.
        if self.directory.is_some() && found.as_ref().is_none_or(|f| f.account.origin == "ldap") {
            return self.directory_login(name, secret, found.map(|f| f.account), addr).await;
        }
        let Some(found) = found else {
            burn(secret).await;
            return Ok(None);
        };
        let (Some(phc), false, "user") =
            (found.password_hash.as_deref(), found.account.disabled, found.account.kind.as_str())
        else {
            burn(secret).await;
            return Ok(None);
        };
        let key: [u8; 32] = sha2::Sha256::digest(format!("{name}\0{secret}").as_bytes()).into();
        let cached = self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        // A cached entry for an older hash (the password was changed, perhaps back to this
        // one) proves nothing either way: verify again.
        let ok = match cached {
            Some(c) if secrets::constant_time_eq(c.as_bytes(), phc.as_bytes()) => true,
            _ => {
                let (secret, phc_owned) = (secret.to_string(), phc.to_string());
                let ok = tokio::task::spawn_blocking(move || secrets::verify_password(&secret, &phc_owned))
                    .await
                    .map_err(|e| RegistryError::internal("verifying a password", e))?;
                if ok {
                    let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                    if map.len() > 10_000 {
                        map.clear();
                    }
                    map.insert(key, phc.to_string());
                }
                ok
            }
        };
        if !ok {
            return Ok(None);
        }
        if self.oidc.as_ref().is_some_and(|o| !o.local_login()) && !found.account.is_admin {
            // Said only to whoever knows the password.
            return Err(RegistryError::Denied(
                "password logins are for administrators here: log in through single sign-on, and use a personal \
                 access token for docker login"
                    .into(),
            ));
        }
        if found.account.last_login_at.is_none_or(|t| now() - t > 60) {
            self.meta.touch_login(found.account.id).await?;
        }
        Ok(Some(Identity { account: Some(found.account), limit: None, granted: None }))
    }

    /// A token by its secret, if it exists, is of one of `kinds` and has not expired.
    async fn usable_token(&self, secret: &str, kinds: &[&str]) -> Result<Option<TokenRecord>> {
        let Some(token) = self.meta.token_by_hash(&secrets::token_hash(secret)).await? else {
            return Ok(None);
        };
        if !kinds.contains(&token.kind.as_str()) || token.expires_at.is_some_and(|e| e <= now()) {
            return Ok(None);
        }
        Ok(Some(token))
    }

    /// The identity a token stands for (`None` if its account is disabled or gone, or, for a
    /// directory's account, gone from the directory).
    async fn token_identity(&self, token: &TokenRecord, addr: &str) -> Result<Option<Identity>> {
        let Some(mut found) = self.meta.account(&token.account_name).await? else {
            return Ok(None);
        };
        if found.account.disabled {
            return Ok(None);
        }
        if found.account.origin == "ldap" {
            // Its groups may have changed since the password login: read them again.
            match self.directory_recheck(found.account, addr).await? {
                Some(account) => found.account = account,
                None => return Ok(None),
            }
        }
        if found.account.disabled {
            return Ok(None);
        }
        if token.last_used_at.is_none_or(|t| now() - t > 60) {
            self.meta.touch_token(token.id).await?;
        }
        let limit = (token.kind == "personal").then(|| TokenLimit {
            token_id: token.id,
            actions: Actions::of_level(&token.scope),
            repository_pattern: token.repository_pattern.clone(),
        });
        Ok(Some(Identity { account: Some(found.account), limit, granted: None }))
    }

    /// Exchanges a refresh token (or a personal access token, which docker may store as its
    /// identity token) for an identity.
    pub async fn refresh(&self, secret: &str, addr: &str) -> Result<Identity> {
        if !self.limiter.allowed("", addr) {
            return Err(RegistryError::TooManyRequests("too many failed logins; try again later".into()));
        }
        let found = match self.usable_token(secret, &["refresh", "personal"]).await? {
            Some(t) => self.token_identity(&t, addr).await?,
            None => None,
        };
        found.ok_or_else(|| {
            self.limiter.failed("", addr);
            invalid_credentials()
        })
    }

    /// A long-lived refresh token for an identity (docker and containerd store it instead of
    /// the password). A login by personal access token gets that token back.
    pub async fn refresh_token_for(&self, who: &Identity, presented: &str) -> Result<Option<String>> {
        let Some(account) = &who.account else {
            return Ok(None);
        };
        if presented.starts_with(TOKEN_PREFIX) {
            return Ok(Some(presented.to_string()));
        }
        let secret = secrets::new_token_secret();
        let expires = now() + self.config.refresh_token_days as i64 * 86_400;
        self.meta
            .create_token(account.id, "refresh", "login", &secrets::token_hash(&secret), "delete", None, Some(expires))
            .await?;
        Ok(Some(secret))
    }

    /// Who sent a request: from its `Authorization` header (Basic, or Bearer JWT or personal
    /// access token); without one, the account of a verified client certificate, or anonymous.
    pub async fn identify(&self, req: &HttpRequest) -> Result<Identity> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return self.certificate_identity(req).await;
        };
        let bad = || RegistryError::Unauthorized {
            message: "invalid or expired credentials".into(),
            challenge: Some(self.challenge(req, None)),
        };
        let value = value.to_str().map_err(|_| bad())?;
        let jwt = match parse_authorization(value).ok_or_else(bad)? {
            Credentials::Basic { name, secret } => {
                return self.login(&name, &secret, &client_addr(req)).await.map_err(|e| match e {
                    RegistryError::Unauthorized { message, .. } => {
                        RegistryError::Unauthorized { message, challenge: Some(self.challenge(req, None)) }
                    }
                    other => other,
                });
            }
            Credentials::Token(secret) => {
                let token = self.usable_token(secret, &["personal"]).await?.ok_or_else(bad)?;
                return self.token_identity(&token, &client_addr(req)).await?.ok_or_else(bad);
            }
            Credentials::Jwt(jwt) => jwt,
        };
        let key: Option<[u8; 32]> = (jwt.len() <= KNOWN_JWT_MAX_LEN).then(|| sha2::Sha256::digest(jwt).into());
        if let Some(who) = key.and_then(|key| self.known_jwt(&key)) {
            return Ok(Identity::clone(&who));
        }
        // Both taken before the database is read: a change made meanwhile keeps this read out
        // of use, and the recheck window counts from before the read.
        let (generation, read_at) = (self.meta.identities_generation(), Instant::now());
        let (who, valid_until) = self.jwt_identity(jwt).await?.ok_or_else(bad)?;
        if let Some(key) = key {
            let mut known = self.known_jwts.lock().unwrap_or_else(|e| e.into_inner());
            if known.len() >= KNOWN_JWTS_KEPT {
                known.clear();
            }
            known.insert(key, KnownJwt { who: Arc::new(who.clone()), read_at, generation, valid_until });
        }
        Ok(who)
    }

    /// The identity of a registry token verified lately, while it may still be used.
    fn known_jwt(&self, key: &[u8; 32]) -> Option<Arc<Identity>> {
        let known = self.known_jwts.lock().unwrap_or_else(|e| e.into_inner());
        let k = known.get(key)?;
        (k.read_at.elapsed() < JWT_RECHECK
            && k.generation == self.meta.identities_generation()
            && now() < k.valid_until)
            .then(|| k.who.clone())
    }

    /// Verifies a registry token and reads whom it names: `None` when the token is not valid,
    /// its account is gone or disabled, or its personal access token revoked or expired. With
    /// the identity, until when it holds (Unix seconds).
    async fn jwt_identity(&self, jwt: &str) -> Result<Option<(Identity, i64)>> {
        let Some(claims) = self.keys.verify(jwt, &self.config.service) else { return Ok(None) };
        let mut valid_until = claims.exp;
        let mut who = Identity { account: None, limit: None, granted: Some(claims.access) };
        if !claims.sub.is_empty() {
            let Some(found) = self.meta.account(&claims.sub).await? else { return Ok(None) };
            if found.account.disabled {
                return Ok(None);
            }
            who.account = Some(found.account);
        }
        if let Some(tid) = claims.tid {
            // Revoking or expiring the personal access token ends its registry tokens at once.
            let Some(token) = self.meta.token_by_id(tid).await? else { return Ok(None) };
            if let Some(expires) = token.expires_at {
                if expires <= now() {
                    return Ok(None);
                }
                valid_until = valid_until.min(expires);
            }
            who.limit = Some(TokenLimit {
                token_id: tid,
                actions: Actions::of_level(&token.scope),
                repository_pattern: token.repository_pattern,
            });
        }
        Ok(Some((who, valid_until)))
    }

    /// The `WWW-Authenticate` value that sends a client to the token endpoint.
    pub fn challenge(&self, req: &HttpRequest, scope: Option<&str>) -> String {
        let realm = if self.config.realm.is_empty() {
            let info = req.connection_info();
            format!("{}://{}/token", info.scheme(), info.host())
        } else {
            self.config.realm.clone()
        };
        let mut c = format!("Bearer realm=\"{realm}\",service=\"{}\"", self.config.service);
        if let Some(scope) = scope {
            c.push_str(&format!(",scope=\"{scope}\""));
        }
        c
    }

    /// The challenge for a registry token that lacks the scope a request needs: the same as
    /// [`AuthService::challenge`] with `error="insufficient_scope"`, as the reference registry
    /// answers, so the client fetches a token for `scope` and retries.
    pub fn challenge_insufficient(&self, req: &HttpRequest, scope: Option<&str>) -> String {
        format!("{},error=\"insufficient_scope\"", self.challenge(req, scope))
    }

    /// Whether `who` may list the catalog (which shows only what it may pull).
    pub fn may_list_catalog(&self, who: &Identity) -> bool {
        who.account.is_some() || self.config.anonymous_pull
    }

    // ---- web UI sessions ---------------------------------------------------------------------

    /// The account and CSRF token of a live web UI session, found by the hash of its secret;
    /// `None` when it expired, was ended, or its account is disabled.
    pub async fn ui_session(&self, hash: &str) -> Result<Option<(Account, String)>> {
        let Some(session) = self.meta.ui_session(hash).await? else {
            return Ok(None);
        };
        let Some(found) = self.meta.account(&session.account_name).await? else {
            return Ok(None);
        };
        let mut account = found.account;
        if account.disabled {
            return Ok(None);
        }
        if account.origin == "ldap" {
            // A session outlives the remembered groups: read them again (cached).
            match self.directory_recheck(account, "").await? {
                Some(fresh) if !fresh.disabled => account = fresh,
                _ => return Ok(None),
            }
        }
        Ok(Some((account, session.csrf)))
    }

    /// Starts a web UI session stored under the hash of its secret.
    pub async fn start_ui_session(&self, hash: &str, account: &Account, csrf: &str, ttl_secs: i64) -> Result<()> {
        self.meta.create_ui_session(hash, account.id, csrf, ttl_secs).await?;
        tracing::info!(account = %account.name, "UI login");
        Ok(())
    }

    /// Ends a web UI session.
    pub async fn end_ui_session(&self, hash: &str) -> Result<()> {
        self.meta.delete_ui_session(hash).await
    }

    // ---- permissions and tokens -------------------------------------------------------------

    /// What `who` may do on `repository`.
    pub async fn allowed(&self, who: &Identity, repository: &str) -> Result<Actions> {
        let mut actions = policy::allowed(
            &self.meta,
            self.config.anonymous_pull,
            who.account.as_ref(),
            who.limit.as_ref(),
            repository,
        )
        .await?;
        // Names the mirror serves may be pulled by whoever the mirror lets pull.
        if let Some(mirror) = self.mirror.get()
            && (who.account.as_ref().is_some_and(|a| !a.disabled) || mirror.anonymous_pull())
            && mirror.may_serve(repository).await?
        {
            // With anonymous mirror pulls on, the mirror's names are public: a token's
            // repository limit does not take away what anyone may pull. Otherwise they are an
            // account's right, which the limit narrows (the upstream may be private).
            let pull = match &who.limit {
                Some(limit) if !mirror.anonymous_pull() => limit.apply(repository, Actions::PULL),
                _ => Actions::PULL,
            };
            actions = actions.union(pull);
        }
        Ok(actions)
    }

    /// Records refused logins in the audit log.
    pub fn set_events(&self, events: Arc<crate::events::Events>) {
        let _ = self.events.set(events);
    }

    /// Lets the mirror's repositories follow the mirror's pull rule.
    pub fn set_mirror(&self, mirror: Arc<dyn PullSource>) {
        let _ = self.mirror.set(mirror);
    }

    /// Issues a registry token granting, for each requested scope, what was asked intersected
    /// with what `who` may do. Asking for more is not an error.
    pub async fn issue(&self, who: &Identity, scopes: &[String]) -> Result<IssuedToken> {
        let mut access = Vec::new();
        for scope in scopes.iter().flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()) {
            let Some(req) = parse_scope(scope) else {
                continue;
            };
            let granted = match req.kind.as_str() {
                "repository" if validate_name(&req.name).is_ok() => {
                    let wanted = if req.actions.iter().any(|a| a == "*") {
                        Actions::ALL
                    } else {
                        Actions::parse_list(&req.actions.join(","))
                    };
                    let allowed = self.allowed(who, &req.name).await?.intersect(wanted);
                    let mut names = allowed.names();
                    if allowed == Actions::ALL && req.actions.iter().any(|a| a == "*") {
                        names.push("*".into());
                    }
                    names
                }
                "registry" if req.name == "catalog" => {
                    if self.may_list_catalog(who) {
                        vec!["*".to_string()]
                    } else {
                        Vec::new()
                    }
                }
                _ => Vec::new(),
            };
            access.push(AccessEntry { kind: req.kind, name: req.name, actions: granted });
        }
        let issued_at = now();
        let ttl = self.config.token_ttl_secs as i64;
        let claims = Claims {
            iss: self.keys.issuer().to_string(),
            sub: who.name().unwrap_or("").to_string(),
            aud: self.config.service.clone(),
            exp: issued_at + ttl,
            nbf: issued_at - 1,
            iat: issued_at,
            jti: hex::encode(secrets::random_bytes::<16>()),
            access,
            tid: who.limit.as_ref().map(|l| l.token_id),
        };
        Ok(IssuedToken { token: self.keys.sign(&claims)?, expires_in: ttl, issued_at })
    }

    /// Whether `who` may pull something in `namespace` (the policy asked for a repository in it).
    pub async fn may_pull_in(&self, who: &Identity, namespace: &str) -> Result<bool> {
        Ok(self.allowed(who, &format!("{namespace}/x")).await?.contains(super::Action::Pull))
    }

    /// Whether `who` may see `namespace` (its page, members, usage): it is `public`, `who`
    /// manages it, or may pull in it.
    pub async fn may_see_namespace(&self, who: &Identity, namespace: &str, public: bool) -> Result<bool> {
        Ok(public || self.may_manage(who, namespace).await? || self.may_pull_in(who, namespace).await?)
    }

    /// Whether `who` may manage a namespace (visibility, members, robots): admins, the owning
    /// user, and maintainers of an organisation.
    pub async fn may_manage(&self, who: &Identity, namespace: &str) -> Result<bool> {
        let Some(account) = &who.account else {
            return Ok(false);
        };
        if who.limit.is_some() {
            return Ok(false); // tokens never manage
        }
        if account.is_admin || (account.kind == "user" && account.name == namespace) {
            return Ok(true);
        }
        if account.kind != "user" {
            return Ok(false);
        }
        Ok(
            matches!(self.meta.namespace_access(namespace, Some(account.id)).await?, Some((_, Some(r))) if r == "maintainer"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(
            parse_scope("repository:team/app:pull,push"),
            Some(ScopeRequest {
                kind: "repository".into(),
                name: "team/app".into(),
                actions: vec!["pull".into(), "push".into()]
            })
        );
        assert_eq!(parse_scope("repository(plugin):x:pull").unwrap().kind, "repository");
        assert_eq!(parse_scope("registry:catalog:*").unwrap().actions, vec!["*"]);
        assert_eq!(parse_scope("nonsense"), None);
        assert_eq!(parse_scope("repository::pull"), None);
    }

    #[test]
    fn authorization_headers() {
        let basic = |name: &str, secret: &str| Some(Credentials::Basic { name: name.into(), secret: secret.into() });
        assert_eq!(parse_authorization("Basic YWxpY2U6c2VjcmV0"), basic("alice", "secret"));
        // The secret may hold colons; the scheme is case-insensitive.
        assert_eq!(parse_authorization("basic  Ym9iOnA6YXNz "), basic("bob", "p:ass"));
        assert_eq!(parse_authorization("Bearer berth_abc"), Some(Credentials::Token("berth_abc")));
        assert_eq!(parse_authorization("BEARER a.b.c"), Some(Credentials::Jwt("a.b.c")));
        for bad in ["", "Basic", "Basic !!!", "Basic bm9jb2xvbg==", "Negotiate abc", "Bearer"] {
            assert_eq!(parse_authorization(bad), None, "{bad:?}");
        }
    }
}
