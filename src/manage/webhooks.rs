//! Webhooks: checking and creating them, for every door (`/api/v1/webhooks`, `berth webhook`).

use serde_json::json;

use crate::error::{RegistryError, Result};
use crate::events::EVENT_KINDS;
use crate::events::Events;
use crate::meta::Webhook;

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

/// Creates a webhook as `actor`; returns it and the secret when one was generated.
pub async fn create(
    events: &Events,
    actor: &str,
    namespace: Option<&str>,
    url: &str,
    kinds: Option<&[String]>,
    secret: Option<&str>,
) -> Result<(Webhook, Option<String>)> {
    let kinds = validate_webhook(url, kinds)?;
    if let Some(ns) = namespace
        && events.meta().namespace(ns).await?.is_none()
    {
        return Err(RegistryError::NotFound(format!("no namespace {ns:?}")));
    }
    let generated = secret.is_none().then(|| hex::encode(crate::auth::secrets::random_bytes::<32>()));
    let secret = secret.or(generated.as_deref()).unwrap_or_default();
    if secret.len() < 16 {
        return Err(RegistryError::Invalid("a webhook secret has at least 16 characters".into()));
    }
    let id = events.meta().create_webhook(namespace, url, secret, &kinds, actor).await?;
    events.webhooks_changed();
    let hook = events.meta().webhook(id).await?.ok_or_else(|| RegistryError::Internal("webhook vanished".into()))?;
    events
        .audit(actor, "webhook.create", Some(&id.to_string()), json!({ "namespace": namespace, "events": kinds }), None)
        .await;
    Ok((hook, generated))
}
