//! Who may call a management handler, as types: a handler of `/api/v1` takes a [`Reader`],
//! [`Caller`] or [`Admin`] argument, and actix-web runs the check before the handler's body,
//! so a handler cannot forget it. (actix polls a handler's extractors together: a malformed
//! JSON body may be answered 400 before a slow credential check finishes; it reveals nothing
//! and changes nothing.) What a caller may
//! then do with a namespace, an account or a webhook is the management services' to decide
//! (`crate::manage`), which every door calls with the guard's [`By`](crate::manage::By).

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use crate::auth::service::client_addr;
use crate::auth::{AuthService, Identity};
use crate::error::{RegistryError, Result};
use crate::events::Events;
use crate::manage::By;

/// Logged in with a password or a personal access token (enough to read).
pub struct Reader(pub Identity, String);

/// Logged in with a password: changes to accounts, tokens and namespaces need one, so a token
/// can never mint a wider token or widen access.
pub struct Caller(pub Identity, String);

/// An administrator logged in with a password.
pub struct Admin(pub Identity, String);

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
                Box::pin(async move { $check(&req).await.map(|who| $ty(who, client_addr(&req))) })
            }
        }

        impl $ty {
            /// The caller, for the management services (with its address, for the audit log).
            pub fn by(&self) -> By<'_> {
                By::Account(&self.0, &self.1)
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
