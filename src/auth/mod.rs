//! Access control: what a request needs, who is asking, and whether that is allowed.
//!
//! Every API route declares the [`Need`]s it has (an action on a repository, the catalog, or
//! just a login); one [`Authorizer`] decides. [`AllowAll`] is the open registry;
//! [`TokenAuth`] is Docker token authentication over the accounts in the metadata database
//! ([`service::AuthService`]), with the rules of [`policy`].

mod client_cert;
pub mod directory;
pub mod groups;
pub mod jwt;
pub mod limiter;
pub mod oidc;
pub mod policy;
mod provider;
pub mod secrets;
pub mod service;

use std::sync::Arc;

use actix_web::HttpRequest;
use async_trait::async_trait;

use crate::error::{RegistryError, Result};
use crate::meta::Account;
pub use jwt::AccessEntry;
pub use policy::{Actions, TokenLimit};
pub use service::AuthService;

/// Checks an account name: what a repository name's first component may be (lowercase letters,
/// digits, single separators), at most 64 characters.
pub fn validate_account_name(name: &str) -> crate::error::Result<()> {
    if name.contains('/') || crate::oci::validate_name(name).is_err() || name.len() > 64 {
        return Err(crate::error::RegistryError::Invalid(format!(
            "invalid name {name:?}: lowercase letters, digits and single '.', '_' or '-' between them, at most 64"
        )));
    }
    Ok(())
}

/// An action on a repository, as in Docker token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// One thing a request needs to be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing but a valid identity (the `/v2/` base check).
    Login,
    Repository {
        name: String,
        action: Action,
    },
    Catalog,
}

/// Who is asking.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The account; `None` for anonymous.
    pub account: Option<Account>,
    /// Limits of the personal access token the caller used, if any.
    pub limit: Option<TokenLimit>,
    /// What a registry token (JWT) granted, when the request carried one.
    pub granted: Option<Vec<AccessEntry>>,
}

impl Identity {
    pub fn name(&self) -> Option<&str> {
        self.account.as_ref().map(|a| a.name.as_str())
    }

    /// The name events and the audit log give this caller: the account's, or `anonymous`.
    pub fn actor(&self) -> &str {
        self.name().unwrap_or("anonymous")
    }

    pub fn is_admin(&self) -> bool {
        self.account.as_ref().is_some_and(|a| a.is_admin)
    }
}

/// Repositories served by a part of Berth with its own pull rule: the pull-through mirror
/// (which implements this, so access control need not know the mirror).
#[async_trait(?Send)]
pub trait PullSource: Send + Sync {
    /// Whether anonymous clients may pull what it serves (accounts always may).
    fn anonymous_pull(&self) -> bool;
    /// Whether it serves `repository`.
    async fn may_serve(&self, repository: &str) -> Result<bool>;
}

/// Decides whether a request may do what it needs.
#[async_trait(?Send)]
pub trait Authorizer: Send + Sync {
    /// Identifies the caller and checks every need, or answers the error to send (401 with a
    /// challenge, 403).
    async fn authorize(&self, req: &HttpRequest, needs: &[Need]) -> Result<Identity>;

    /// Whether `who` may pull from `repository` (to filter listings, and to mount a blob
    /// without naming its source).
    async fn may_pull(&self, who: &Identity, repository: &str) -> Result<bool>;

    /// Whether `who` may mount a blob from `repository` it names as the source (`from=`): it
    /// may pull there and, with a registry token, the token grants that pull (else the client
    /// gets an upload session instead, as the spec allows).
    async fn may_mount_from(&self, who: &Identity, repository: &str) -> Result<bool> {
        let in_token = who.granted.as_deref().is_none_or(|g| token_grants(g, "repository", repository, "pull"));
        Ok(in_token && self.may_pull(who, repository).await?)
    }
}

/// The open registry: everyone may do everything.
pub struct AllowAll;

#[async_trait(?Send)]
impl Authorizer for AllowAll {
    async fn authorize(&self, _req: &HttpRequest, _needs: &[Need]) -> Result<Identity> {
        Ok(Identity::default())
    }

    async fn may_pull(&self, _who: &Identity, _repository: &str) -> Result<bool> {
        Ok(true)
    }
}

/// Docker token authentication: Bearer JWTs from `/token`, or Basic credentials (password or
/// personal access token) sent directly.
pub struct TokenAuth(pub Arc<AuthService>);

/// The scope string a challenge names for a need.
fn challenge_scope(need: &Need) -> Option<String> {
    match need {
        Need::Login => None,
        Need::Catalog => Some("registry:catalog:*".into()),
        Need::Repository { name, action } => Some(match action {
            Action::Pull => format!("repository:{name}:pull"),
            Action::Push => format!("repository:{name}:pull,push"),
            Action::Delete => format!("repository:{name}:delete"),
        }),
    }
}

/// What a need asks for, in error messages: `push team/app`.
///
/// Messages also must differ from the error code's standard text: docker's error parser turns
/// an error whose message is the standard one and whose detail is null into a bare code, which
/// its retry logic does not recognise — `docker push` then retries a refused upload for about
/// a minute instead of failing at once.
fn need_text(need: &Need) -> String {
    match need {
        Need::Login => "log in".into(),
        Need::Catalog => "catalog".into(),
        Need::Repository { name, action } => format!("{} {name}", action.as_str()),
    }
}

/// Whether a registry token's access list grants `action` on a resource. A resource may be
/// named by several entries (containerd asks for `pull` and `pull,push` of one repository in
/// one token request): any of them grants.
fn token_grants(granted: &[AccessEntry], kind: &str, name: &str, action: &str) -> bool {
    granted
        .iter()
        .filter(|e| e.kind == kind && e.name == name)
        .any(|e| e.actions.iter().any(|a| a == action || a == "*"))
}

/// Whether a wider registry token would let its bearer do `need`: the bearer itself (the
/// account, or anonymous) may do it. Otherwise the refusal stays what it would be without a
/// token: `403 DENIED` for an account, `401` asking for a login for anonymous.
async fn wider_token_helps(auth: &AuthService, who: &Identity, need: &Need) -> Result<bool> {
    let bearer = Identity { granted: None, ..who.clone() };
    Ok(match need {
        Need::Login => bearer.account.is_some(),
        Need::Catalog => auth.may_list_catalog(&bearer),
        Need::Repository { name, action } => auth.allowed(&bearer, name).await?.contains(*action),
    })
}

#[async_trait(?Send)]
impl Authorizer for TokenAuth {
    async fn authorize(&self, req: &HttpRequest, needs: &[Need]) -> Result<Identity> {
        let auth = &self.0;
        let who = auth.identify(req).await?;
        for need in needs {
            let decision = match &who.granted {
                None => match need {
                    Need::Login => who.account.is_some(),
                    Need::Catalog => auth.may_list_catalog(&who),
                    Need::Repository { name, action } => auth.allowed(&who, name).await?.contains(*action),
                },
                Some(granted) => {
                    let in_token = match need {
                        Need::Login => true,
                        Need::Catalog => token_grants(granted, "registry", "catalog", "*"),
                        Need::Repository { name, action } => token_grants(granted, "repository", name, action.as_str()),
                    };
                    if in_token {
                        true
                    } else if wider_token_helps(auth, &who, need).await? {
                        // A registry token is a subset of what its bearer may do: when the
                        // bearer may do this, a token for the right scope would do; say which
                        // (containerd, BuildKit and oras ask for the narrowest scope first and
                        // widen it on this challenge).
                        return Err(RegistryError::Unauthorized {
                            message: format!("the registry token does not grant {}", need_text(need)),
                            challenge: Some(auth.challenge_insufficient(req, challenge_scope(need).as_deref())),
                        });
                    } else {
                        false
                    }
                }
            };
            if !decision {
                return Err(if who.account.is_none() {
                    RegistryError::Unauthorized {
                        message: format!("authentication required ({})", need_text(need)),
                        challenge: Some(auth.challenge(req, challenge_scope(need).as_deref())),
                    }
                } else {
                    RegistryError::Denied(format!("requested access to the resource is denied ({})", need_text(need)))
                });
            }
        }
        Ok(who)
    }

    async fn may_pull(&self, who: &Identity, repository: &str) -> Result<bool> {
        Ok(self.0.allowed(who, repository).await?.contains(Action::Pull))
    }
}
