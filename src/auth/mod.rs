//! Access control: what a request needs, who is asking, and whether that is allowed.
//!
//! Every API route declares the [`Need`]s it has (an action on a repository, or the catalog);
//! one [`Authorizer`] decides. An open registry is the same code with [`AllowAll`], so token
//! authentication slots in without touching handlers.

use actix_web::HttpRequest;
use async_trait::async_trait;

use crate::error::Result;

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
    /// Account name; `None` for anonymous.
    pub subject: Option<String>,
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
