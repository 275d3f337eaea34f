//! Storage management, once for every door: namespace quotas and usage, retention policies and
//! garbage-collection runs, each with its permission check and (for runs) its audit record.
//! `/api/v1` (`api/gc.rs`), the web UI (`ui/storage.rs`, the admin page) and the CLI
//! (`cli/gc.rs`) parse their input, call [`StorageAdmin`] and render what it answers.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::By;
use crate::auth::AuthService;
use crate::error::{RegistryError, Result};
use crate::events::Events;
use crate::gc::{Collector, GcReport, Progress};
use crate::meta::{Meta, RetentionPolicy};

/// A namespace's usage and quota.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub namespace: String,
    pub used_bytes: i64,
    pub quota_bytes: Option<i64>,
}

/// The last reports of the collector and its schedule.
#[derive(Debug, Clone, Serialize)]
pub struct GcStatus {
    pub last_run: Option<GcReport>,
    pub last_dry_run: Option<GcReport>,
    /// Whether the server collects on a schedule, and how often.
    pub enabled: bool,
    pub interval_secs: u64,
}

/// Quotas, retention and GC runs. Without a collector (the CLI's quota and retention commands)
/// runs and reports are refused.
pub struct StorageAdmin {
    meta: Meta,
    auth: Option<Arc<AuthService>>,
    events: Arc<Events>,
    collector: Option<Arc<Collector>>,
}

impl StorageAdmin {
    pub fn new(
        meta: Meta,
        auth: Option<Arc<AuthService>>,
        events: Arc<Events>,
        collector: Option<Arc<Collector>>,
    ) -> StorageAdmin {
        StorageAdmin { meta, auth, events, collector }
    }

    fn collector(&self) -> Result<&Arc<Collector>> {
        self.collector.as_ref().ok_or_else(|| RegistryError::Internal("the collector is not registered".into()))
    }

    /// A namespace's usage and quota, for whoever may see the namespace (`NotFound` for the
    /// rest, so a private namespace's existence does not show).
    pub async fn usage(&self, by: By<'_>, namespace: &str) -> Result<Usage> {
        if let By::Account(who, _) = by {
            // (An administrator's token limited to some repositories manages nothing.)
            let auth = self.auth.as_ref().ok_or_else(|| RegistryError::NotFound("authentication is off".into()))?;
            if !auth.may_see_namespace(who, namespace, false).await? {
                return Err(RegistryError::NotFound(format!("no namespace {namespace}")));
            }
        }
        Ok(Usage {
            namespace: namespace.to_string(),
            used_bytes: self.meta.namespace_usage(namespace).await?,
            quota_bytes: self.meta.quota(namespace).await?,
        })
    }

    /// Sets (or with `None` removes) a namespace's quota: administrators.
    pub async fn set_quota(&self, by: By<'_>, namespace: &str, max_bytes: Option<i64>) -> Result<Usage> {
        by.require_admin()?;
        if max_bytes.is_some_and(|b| b < 0) {
            return Err(RegistryError::Invalid("max_bytes must not be negative".into()));
        }
        crate::oci::validate_name(namespace)
            .map_err(|_| RegistryError::Invalid(format!("{namespace} is not a namespace name")))?;
        self.meta.set_quota(namespace, max_bytes).await?;
        Ok(Usage {
            namespace: namespace.to_string(),
            used_bytes: self.meta.namespace_usage(namespace).await?,
            quota_bytes: max_bytes,
        })
    }

    /// The retention policies: administrators.
    pub async fn retention_policies(&self, by: By<'_>) -> Result<Vec<RetentionPolicy>> {
        by.require_admin()?;
        self.meta.retention_policies().await
    }

    /// Creates or replaces the policy of its pattern: administrators.
    pub async fn set_retention(&self, by: By<'_>, policy: &RetentionPolicy) -> Result<()> {
        by.require_admin()?;
        crate::gc::retention::validate_policy(policy).map_err(RegistryError::Invalid)?;
        self.meta.set_retention_policy(policy).await
    }

    /// Removes the policy of a pattern: administrators.
    pub async fn delete_retention(&self, by: By<'_>, pattern: &str) -> Result<()> {
        by.require_admin()?;
        if !self.meta.delete_retention_policy(pattern).await? {
            return Err(RegistryError::NotFound(format!("no retention policy for {pattern}")));
        }
        Ok(())
    }

    /// The collector's last reports and schedule: administrators.
    pub async fn gc_status(&self, by: By<'_>) -> Result<GcStatus> {
        by.require_admin()?;
        let gc = self.collector()?;
        Ok(GcStatus {
            last_run: gc.last_report(false).await?,
            last_dry_run: gc.last_report(true).await?,
            enabled: gc.config.enabled,
            interval_secs: gc.config.interval_secs,
        })
    }

    /// Runs a collection now (a dry run changes nothing): administrators. A real run is
    /// recorded in the audit log as `gc.run`, with what it removed. `Conflict` when one is
    /// already running (here, or on another node for a real run). With `progress` (the CLI)
    /// the run is this call's; without (the HTTP doors) it is a task of its own, logged, which
    /// finishes and is recorded even if the client goes away.
    pub async fn run_gc(&self, by: By<'_>, dry_run: bool, progress: Option<Progress<'_>>) -> Result<GcReport> {
        by.require_admin()?;
        tracing::info!(by = by.actor(), dry_run, "garbage collection requested");
        let collector = self.collector()?.clone();
        if let Some(progress) = progress {
            let report = collector.run(dry_run, progress).await?;
            record_run(&self.events, by.actor(), by.addr(), &report).await;
            return Ok(report);
        }
        let (events, actor, addr) = (self.events.clone(), by.actor().to_string(), by.addr().map(str::to_string));
        let task = tokio::spawn(async move {
            let report = collector.run(dry_run, &|line| tracing::info!("gc: {line}")).await?;
            record_run(&events, &actor, addr.as_deref(), &report).await;
            Ok::<_, RegistryError>(report)
        });
        task.await.map_err(|e| RegistryError::internal("garbage collection task", e))?
    }
}

/// The audit record of a real run.
async fn record_run(events: &Events, actor: &str, addr: Option<&str>, report: &GcReport) {
    if report.dry_run {
        return;
    }
    let detail = json!({
        "blobs_deleted": report.blobs_deleted, "manifests_deleted": report.manifests_deleted,
        "tags_deleted": report.tags_deleted, "bytes_freed": report.bytes_freed,
    });
    events.audit(actor, "gc.run", None, detail, addr).await;
}
