//! Mutual TLS as a login: a request without an `Authorization` header, on a connection whose
//! client certificate was verified (`crate::tls::client`), is the account the certificate
//! names — a user or a robot (`namespace+name`) — with that account's own rights. A name that
//! is no account, or a disabled one, leaves the request anonymous.

use actix_web::HttpRequest;

use super::Identity;
use super::service::AuthService;
use crate::error::Result;
use crate::tls::client::ClientCert;

impl AuthService {
    /// The identity of a request without credentials: its connection's client certificate's
    /// account, else anonymous.
    pub(super) async fn certificate_identity(&self, req: &HttpRequest) -> Result<Identity> {
        let Some(cert) = req.conn_data::<ClientCert>() else {
            return Ok(Identity::default());
        };
        let Some(name) = cert.account.as_deref() else {
            return Ok(Identity::default());
        };
        match self.meta.account(name).await? {
            Some(found) if !found.account.disabled => {
                Ok(Identity { account: Some(found.account), limit: None, granted: None })
            }
            _ => {
                tracing::debug!(subject = %cert.subject, account = name, "a client certificate names no active account");
                Ok(Identity::default())
            }
        }
    }
}
