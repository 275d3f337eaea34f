//! Webhooks and the audit log, once for every door (`/api/v1/webhooks` and `/api/v1/audit` in
//! `api/events.rs`, `berth webhook|audit` in `cli/events.rs`).
//!
//! Only administrators create, change and delete webhooks — a webhook makes the server send
//! requests to an address of the creator's choosing, which must not be open to everyone who
//! manages a namespace (requests into the server's own network). The managers of a namespace
//! (its owner, an organisation's maintainers) see that namespace's webhooks (the URL's origin
//! only: a path or query can be a credential itself, as chat webhooks' are) and their
//! deliveries. The audit log is for administrators. Secrets are write-only: given (or
//! generated and shown once) at creation, never returned afterwards.

use std::sync::Arc;

use serde_json::{Value, json};

use super::By;
use crate::auth::AuthService;
use crate::error::{RegistryError, Result};
use crate::events::EVENT_KINDS;
use crate::events::Events;
use crate::meta::{AuditEntry, Delivery, Webhook};

/// Checks a webhook's URL and events; returns the events (default: push and delete).
pub fn validate_webhook(url: &str, events: Option<&[String]>) -> Result<Vec<String>> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => return Err(RegistryError::Invalid("the url must be an absolute http:// or https:// URL".into())),
    }
    let events = match events {
        None => vec!["push".to_string(), "delete".to_string()],
        Some(list) => list.to_vec(),
    };
    if events.is_empty() || events.iter().any(|e| !EVENT_KINDS.contains(&e.as_str())) {
        return Err(RegistryError::Invalid(format!("events must be a non-empty list of {EVENT_KINDS:?}")));
    }
    let mut events = events;
    events.sort();
    events.dedup();
    Ok(events)
}

/// Webhooks, their deliveries and the audit log.
pub struct EventAdmin {
    events: Arc<Events>,
    /// Who manages which namespace (without it, only administrators and the CLI see webhooks).
    auth: Option<Arc<AuthService>>,
}

/// The largest page of deliveries or audit entries.
pub const MAX_PAGE: i64 = 1000;

fn page_size(n: i64) -> Result<i64> {
    match n {
        1..=MAX_PAGE => Ok(n),
        _ => Err(RegistryError::Invalid(format!("n must be between 1 and {MAX_PAGE}"))),
    }
}

impl EventAdmin {
    pub fn new(events: Arc<Events>, auth: Option<Arc<AuthService>>) -> EventAdmin {
        EventAdmin { events, auth }
    }

    /// Whether `by` may see `hook` and its deliveries.
    async fn may_see(&self, by: By<'_>, hook: &Webhook) -> Result<bool> {
        let Some(who) = by.identity() else {
            return Ok(true);
        };
        Ok(match (&hook.namespace, &self.auth) {
            (None, _) | (Some(_), None) => who.is_admin(),
            (Some(ns), Some(auth)) => auth.may_manage(who, ns).await?,
        })
    }

    /// A webhook `by` may see; `NotFound` for the others.
    async fn visible(&self, by: By<'_>, id: i64) -> Result<Webhook> {
        let missing = || RegistryError::NotFound(format!("no webhook {id}"));
        let hook = self.events.meta().webhook(id).await?.ok_or_else(missing)?;
        if !self.may_see(by, &hook).await? {
            return Err(missing());
        }
        Ok(hook)
    }

    /// The webhooks `by` may see; for anyone but administrators and the CLI, with the URL cut
    /// to its origin (`scheme://host[:port]`).
    pub async fn webhooks(&self, by: By<'_>) -> Result<Vec<Webhook>> {
        by.password_login()?;
        let whole = by.identity().is_none_or(|who| who.is_admin());
        let mut out = Vec::new();
        for hook in self.events.meta().webhooks().await? {
            if self.may_see(by, &hook).await? {
                let mut hook = hook;
                if !whole {
                    hook.url =
                        reqwest::Url::parse(&hook.url).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
                }
                out.push(hook);
            }
        }
        Ok(out)
    }

    /// Creates a webhook: administrators. Returns it and the secret when one was generated.
    pub async fn create(
        &self,
        by: By<'_>,
        namespace: Option<&str>,
        url: &str,
        kinds: Option<&[String]>,
        secret: Option<&str>,
    ) -> Result<(Webhook, Option<String>)> {
        by.require_admin()?;
        let kinds = validate_webhook(url, kinds)?;
        let meta = self.events.meta();
        if let Some(ns) = namespace
            && meta.namespace(ns).await?.is_none()
        {
            return Err(RegistryError::NotFound(format!("no namespace {ns:?}")));
        }
        let generated = secret.is_none().then(|| hex::encode(crate::auth::secrets::random_bytes::<32>()));
        let secret = secret.or(generated.as_deref()).unwrap_or_default();
        if secret.len() < 16 {
            return Err(RegistryError::Invalid("a webhook secret has at least 16 characters".into()));
        }
        let id = meta.create_webhook(namespace, url, secret, &kinds, by.actor()).await?;
        self.events.webhooks_changed();
        let hook = meta.webhook(id).await?.ok_or_else(|| RegistryError::Internal("webhook vanished".into()))?;
        let detail = json!({ "namespace": namespace, "events": kinds });
        self.events.audit(by.actor(), "webhook.create", Some(&id.to_string()), detail, by.addr()).await;
        Ok((hook, generated))
    }

    /// Deletes a webhook: administrators.
    pub async fn delete(&self, by: By<'_>, id: i64) -> Result<()> {
        by.require_admin()?;
        let hook = self.visible(by, id).await?;
        self.events.meta().delete_webhook(hook.id).await?;
        self.events.webhooks_changed();
        self.events.audit(by.actor(), "webhook.delete", Some(&id.to_string()), Value::Null, by.addr()).await;
        Ok(())
    }

    /// Turns a webhook's deliveries on or off: administrators.
    pub async fn set_enabled(&self, by: By<'_>, id: i64, enabled: bool) -> Result<Webhook> {
        by.require_admin()?;
        let missing = || RegistryError::NotFound(format!("no webhook {id}"));
        if !self.events.meta().set_webhook_enabled(id, enabled).await? {
            return Err(missing());
        }
        self.events.webhooks_changed();
        let detail = json!({ "enabled": enabled });
        self.events.audit(by.actor(), "webhook.update", Some(&id.to_string()), detail, by.addr()).await;
        self.events.meta().webhook(id).await?.ok_or_else(missing)
    }

    /// A page of a webhook's deliveries, newest first, before the delivery id `before`: whoever
    /// may see the webhook.
    pub async fn deliveries(&self, by: By<'_>, id: i64, before: Option<i64>, n: i64) -> Result<Vec<Delivery>> {
        by.password_login()?;
        let hook = self.visible(by, id).await?;
        self.events.meta().deliveries(hook.id, before, page_size(n)?).await
    }

    /// A page of the audit log, newest first, optionally of one actor or action: administrators.
    pub async fn audit(
        &self,
        by: By<'_>,
        actor: Option<&str>,
        action: Option<&str>,
        before: Option<i64>,
        n: i64,
    ) -> Result<Vec<AuditEntry>> {
        by.require_admin()?;
        // The command line prints long logs at once; over HTTP they come in pages.
        let n = if by.identity().is_none() { n.clamp(1, 10 * MAX_PAGE) } else { page_size(n)? };
        self.events.meta().audit(actor, action, before, n).await
    }
}
