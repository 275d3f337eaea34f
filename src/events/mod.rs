//! Registry events and the audit log, emitted from one place; the [`webhooks`] sender
//! delivers the events. The HTTP side (`/api/v1/webhooks`, `/api/v1/audit`) is
//! `crate::api::events`, the storage `crate::meta::events`.
//!
//! The API handlers call [`Events`] after an operation succeeded, where the caller's identity
//! is known: a manifest push, pull (GET) or delete, and the mirror when it stores new content.
//! Each event becomes one JSON document, queued in the database once per webhook that wants it
//! (sent later by [`webhooks`], never on the request path). Pushes and deletes also go
//! to the audit log, with logins and every change of accounts, tokens and permissions.
//!
//! Webhooks are cached for two seconds (and reloaded at once when this node changes them), so
//! a pull costs no database access unless some webhook asked for pull events.

pub mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::error::Result;
use crate::meta::{Meta, Webhook};

/// The kinds of events webhooks can ask for.
pub const EVENT_KINDS: [&str; 5] = ["push", "pull", "delete", "mirror", "replication"];

/// How long the webhook list is trusted before it is read again.
const HOOKS_TTL: Duration = Duration::from_secs(2);
/// A successful login of one account from one address (through one door) is recorded once
/// in this period: docker asks `/token` with the password for every push and pull.
const LOGIN_DEDUP: Duration = Duration::from_secs(300);

/// A manifest event.
#[derive(Debug, Clone, Default)]
pub struct RepoEvent<'a> {
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub media_type: Option<&'a str>,
    /// What the mirror stored: `manifest` or `blob`.
    pub kind: Option<&'a str>,
    /// `scheme://host` of the registry as the request named it (`https://…` over TLS): the
    /// payload's `url` links to the manifest from there.
    pub base_url: Option<&'a str>,
    /// Why a replication failed (`replication` events).
    pub error: Option<&'a str>,
}

impl<'a> RepoEvent<'a> {
    /// The deletion of a manifest (by digest) or of a tag, as every door reports it.
    pub fn deletion(repository: &'a str, reference: &'a crate::oci::Reference) -> RepoEvent<'a> {
        let (tag, digest) = match reference {
            crate::oci::Reference::Tag(t) => (Some(t.as_str()), None),
            crate::oci::Reference::Digest(d) => (None, Some(d.as_str())),
        };
        RepoEvent { repository, tag, digest, ..Default::default() }
    }
}

/// Hears pushes and deletes once they happened (replication queues its copies there). Called
/// on the request's path: it must only queue work, never do it.
pub trait RepoListener: Send + Sync {
    fn pushed(&self, repository: &str, tag: Option<&str>, digest: Option<&str>);
    fn deleted(&self, repository: &str, tag: Option<&str>, digest: Option<&str>);
}

struct Cached {
    hooks: Arc<Vec<Webhook>>,
    loaded: Option<Instant>,
}

pub struct Events {
    meta: Meta,
    hooks: Mutex<Cached>,
    /// Wakes this node's sender when something was queued.
    pub(crate) wake: Arc<Notify>,
    logins: Mutex<HashMap<(String, &'static str, String), Instant>>,
    listener: std::sync::OnceLock<Arc<dyn RepoListener>>,
}

impl Events {
    pub fn new(meta: Meta) -> Events {
        Events {
            meta,
            hooks: Mutex::new(Cached { hooks: Arc::new(Vec::new()), loaded: None }),
            wake: Arc::new(Notify::new()),
            logins: Mutex::new(HashMap::new()),
            listener: std::sync::OnceLock::new(),
        }
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The webhooks, from the cache when it is fresh.
    pub async fn webhooks(&self) -> Result<Arc<Vec<Webhook>>> {
        {
            let cached = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
            if cached.loaded.is_some_and(|t| t.elapsed() < HOOKS_TTL) {
                return Ok(cached.hooks.clone());
            }
        }
        let hooks = Arc::new(self.meta.webhooks().await?);
        let mut cached = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        *cached = Cached { hooks: hooks.clone(), loaded: Some(Instant::now()) };
        Ok(hooks)
    }

    /// Forgets the cached webhooks (after this node changed them).
    pub fn webhooks_changed(&self) {
        self.hooks.lock().unwrap_or_else(|p| p.into_inner()).loaded = None;
    }

    /// Queues `action` for every webhook that wants it. Failures are logged, not returned: the
    /// operation the event reports has already happened.
    async fn emit(&self, action: &'static str, actor: &str, ev: &RepoEvent<'_>) {
        if self.try_emit(action, actor, ev).await.is_ok() {
            return;
        }
        // A webhook deleted (by another node or the CLI) while cached fails the insert: reload
        // the webhooks and try once more.
        self.webhooks_changed();
        if let Err(e) = self.try_emit(action, actor, ev).await {
            tracing::error!(action, repository = ev.repository, error = %e, "could not queue a webhook event");
        }
    }

    async fn try_emit(&self, action: &'static str, actor: &str, ev: &RepoEvent<'_>) -> Result<()> {
        let hooks = self.webhooks().await?;
        let ids: Vec<i64> = hooks.iter().filter(|h| h.wants(action, ev.repository)).map(|h| h.id).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut payload = json!({
            "id": id,
            "action": action,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "repository": ev.repository,
            "tag": ev.tag,
            "digest": ev.digest,
            "media_type": ev.media_type,
            "actor": actor,
        });
        if let Some(kind) = ev.kind {
            payload["kind"] = kind.into();
        }
        if let Some(error) = ev.error {
            payload["error"] = error.into();
        }
        if let (Some(base), Some(reference)) = (ev.base_url, ev.digest.or(ev.tag)) {
            payload["url"] = format!("{base}/v2/{}/manifests/{reference}", ev.repository).into();
        }
        self.meta.enqueue_deliveries(&ids, &id, action, &payload.to_string()).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Sets the one listener of pushes and deletes.
    pub fn set_listener(&self, listener: Arc<dyn RepoListener>) {
        let _ = self.listener.set(listener);
    }

    /// A manifest was pushed by `actor` (an account's name, or `anonymous`).
    pub async fn pushed(&self, actor: &str, addr: &str, ev: RepoEvent<'_>) {
        if let Some(l) = self.listener.get() {
            l.pushed(ev.repository, ev.tag, ev.digest);
        }
        let detail = json!({ "tag": ev.tag, "digest": ev.digest, "media_type": ev.media_type });
        self.audit(actor, "push", Some(ev.repository), detail, Some(addr)).await;
        self.emit("push", actor, &ev).await;
    }

    /// A manifest was served (GET).
    pub async fn pulled(&self, actor: &str, ev: RepoEvent<'_>) {
        self.emit("pull", actor, &ev).await;
    }

    /// A tag or a manifest was deleted.
    pub async fn deleted(&self, actor: &str, addr: &str, ev: RepoEvent<'_>) {
        if let Some(l) = self.listener.get() {
            l.deleted(ev.repository, ev.tag, ev.digest);
        }
        let detail = json!({ "tag": ev.tag, "digest": ev.digest });
        self.audit(actor, "delete", Some(ev.repository), detail, Some(addr)).await;
        self.emit("delete", actor, &ev).await;
    }

    /// A replication job gave up (`detail`: the rule, the target, the error).
    pub async fn replication_failed(&self, repository: &str, reference: &str, detail: &str) {
        let ev = RepoEvent { repository, tag: Some(reference), error: Some(detail), ..Default::default() };
        self.emit("replication", "replication", &ev).await;
    }

    /// The mirror stored content it fetched from an upstream.
    pub async fn mirrored(&self, ev: RepoEvent<'_>) {
        self.emit("mirror", "mirror", &ev).await;
    }

    /// Adds a line to the audit log (`detail`: a JSON object, never a secret). Failures are
    /// logged: the change it records has already happened.
    pub async fn audit(&self, actor: &str, action: &str, target: Option<&str>, detail: Value, addr: Option<&str>) {
        let detail = (!detail.is_null()).then(|| detail.to_string());
        let addr = addr.filter(|a| !a.is_empty());
        if let Err(e) = self.meta.add_audit(actor, action, target, detail.as_deref(), addr).await {
            tracing::error!(actor, action, error = %e, "could not write the audit log");
        }
    }

    /// A successful login (`via`: `token` for `/token`, `api` for `/api/v1`), recorded once per
    /// account, door and address in five minutes.
    pub async fn login_succeeded(&self, account: &str, via: &'static str, addr: &str) {
        {
            let mut seen = self.logins.lock().unwrap_or_else(|p| p.into_inner());
            let key = (account.to_string(), via, addr.to_string());
            if seen.get(&key).is_some_and(|t| t.elapsed() < LOGIN_DEDUP) {
                return;
            }
            if seen.len() > 10_000 {
                seen.retain(|_, t| t.elapsed() < LOGIN_DEDUP);
            }
            seen.insert(key, Instant::now());
        }
        self.audit(account, "login", None, json!({ "via": via }), Some(addr)).await;
    }

    /// A refused login: wrong password or token, unknown or disabled account.
    pub async fn login_failed(&self, account: &str, addr: &str) {
        self.audit(account, "login.failed", None, Value::Null, Some(addr)).await;
    }
}
