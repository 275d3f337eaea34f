//! Who may call a management handler, as types: a handler of `/api/v1` takes a [`Reader`],
//! [`Caller`] or [`Admin`] argument, and actix-web runs the check before the handler's body,
//! so a handler cannot forget it. (actix polls a handler's extractors together: a malformed
//! JSON body may be answered 400 before a slow credential check finishes; it reveals nothing
//! and changes nothing.) Namespace managers are
//! checked with [`Caller::manage`] once the namespace is known (it may come from a robot).

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use crate::auth::service::client_addr;
use crate::auth::{AuthService, Identity};
use crate::error::{RegistryError, Result};
use crate::events::Events;

/// Logged in with a password or a personal access token (enough to read).
pub struct Reader(pub Identity);

/// Logged in with a password: changes to accounts, tokens and namespaces need one, so a token
/// can never mint a wider token or widen access.
pub struct Caller(pub Identity);

/// An administrator logged in with a password.
pub struct Admin(pub Identity);

fn login_required(message: &str) -> RegistryError {
    RegistryError::Unauthorized { message: message.into(), challenge: Some("Basic realm=\"berth\"".into()) }
}

async fn reader(req: &HttpRequest) -> Result<Identity> {
    let auth = req
        .app_data::<web::Data<AuthService>>()
        .ok_or_else(|| RegistryError::NotFound("there are no accounts: authentication is off".into()))?;
    let who = auth.identify(req).await?;
    if who.account.is_none() {
        return Err(login_required("log in first"));
    }
    if who.granted.is_some() {
        // A registry token (JWT) grants registry access only, never an API login.
        return Err(login_required("registry tokens are not accepted here"));
    }
    if who.limit.is_none()
        && let (Some(events), Some(name)) = (req.app_data::<web::Data<Events>>(), who.name())
    {
        events.login_succeeded(name, "api", &client_addr(req)).await;
    }
    Ok(who)
}

async fn caller(req: &HttpRequest) -> Result<Identity> {
    let who = reader(req).await?;
    if who.limit.is_some() {
        return Err(RegistryError::Denied("this needs a password login, not a token".into()));
    }
    Ok(who)
}

async fn admin(req: &HttpRequest) -> Result<Identity> {
    let who = caller(req).await?;
    if !who.is_admin() {
        return Err(RegistryError::Denied("administrators only".into()));
    }
    Ok(who)
}

macro_rules! guard {
    ($ty:ident, $check:ident) => {
        impl FromRequest for $ty {
            type Error = RegistryError;
            type Future = LocalBoxFuture<'static, Result<Self>>;

            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                let req = req.clone();
                Box::pin(async move { $check(&req).await.map($ty) })
            }
        }

        impl Deref for $ty {
            type Target = Identity;

            fn deref(&self) -> &Identity {
                &self.0
            }
        }
    };
}

guard!(Reader, reader);
guard!(Caller, caller);
guard!(Admin, admin);

impl Caller {
    /// The caller as a manager of `namespace` (a maintainer, its owner or an administrator).
    pub async fn manage(&self, auth: &AuthService, namespace: &str) -> Result<&Identity> {
        if !auth.may_manage(&self.0, namespace).await? {
            return Err(RegistryError::Denied(format!("you may not manage {namespace}")));
        }
        Ok(&self.0)
    }
}
