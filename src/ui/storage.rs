//! Storage as the UI shows it: garbage collection reports (for the administration page, whose
//! "dry run" / "collect now" action is in `account.rs`), a namespace's usage and quota (and the
//! quota form), and the mirror's counters since this node started. The same calls as the
//! management API (`src/api/gc.rs`) after the same checks: GC and quotas for administrators,
//! usage for whoever may read the namespace.

use actix_web::web;
use serde::Deserialize;

use super::format::{ago, size, time};
use super::{UiError, UiResult, Viewer, see_other};
use crate::error::RegistryError;
use crate::gc::GcReport;
use crate::metrics::{self, MirrorCounts};

/// A GC report as the page shows it.
pub struct GcRow {
    pub dry_run: bool,
    pub when: String,
    pub ago: String,
    pub duration: String,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub freed: String,
    pub manifests_deleted: u64,
    pub mirror_manifests_evicted: u64,
    pub uploads_removed: u64,
    pub tags_deleted: u64,
    pub links_removed: u64,
    pub orphans_deleted: u64,
    pub errors: u64,
}

impl From<&GcReport> for GcRow {
    fn from(r: &GcReport) -> Self {
        GcRow {
            dry_run: r.dry_run,
            when: time(r.started_at),
            ago: ago(r.started_at),
            duration: if r.duration_ms < 1000 {
                format!("{} ms", r.duration_ms)
            } else {
                format!("{:.1} s", r.duration_ms as f64 / 1000.0)
            },
            blobs_deleted: r.blobs_deleted,
            bytes_freed: r.bytes_freed,
            freed: size(r.bytes_freed.min(i64::MAX as u64) as i64),
            manifests_deleted: r.manifests_deleted,
            mirror_manifests_evicted: r.mirror_manifests_evicted,
            uploads_removed: r.uploads_removed,
            tags_deleted: r.tags_deleted,
            links_removed: r.links_removed,
            orphans_deleted: r.orphans_deleted,
            errors: r.errors,
        }
    }
}

/// The GC section of the administration page.
pub struct GcView {
    pub available: bool,
    pub last_run: Option<GcRow>,
    pub last_dry_run: Option<GcRow>,
    pub schedule: String,
    /// The report of the run this request just made.
    pub just_ran: Option<GcRow>,
}

pub async fn gc_view(v: &Viewer) -> Result<GcView, UiError> {
    let Some(gc) = &v.svc.gc else {
        return Ok(GcView {
            available: false,
            last_run: None,
            last_dry_run: None,
            schedule: String::new(),
            just_ran: None,
        });
    };
    let schedule = if gc.config.enabled {
        format!("every {}", interval(gc.config.interval_secs))
    } else {
        "off (on demand only)".to_string()
    };
    Ok(GcView {
        available: true,
        last_run: gc.last_report(false).await?.as_ref().map(GcRow::from),
        last_dry_run: gc.last_report(true).await?.as_ref().map(GcRow::from),
        schedule,
        just_ran: None,
    })
}

/// `86400` as `day`, `7200` as `2 hours`.
fn interval(secs: u64) -> String {
    let (n, unit) = match secs.max(1) {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3600 == 0 => (s / 3600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 { unit.to_string() } else { format!("{n} {unit}s") }
}

/// The mirror's counters, for the page.
pub struct MirrorStats {
    pub hits: u64,
    pub misses: u64,
    pub c: MirrorCounts,
    pub upstream: String,
}

pub fn mirror_stats() -> MirrorStats {
    let c = metrics::global().mirror_counts();
    MirrorStats {
        hits: c.manifest_hits + c.blob_hits,
        misses: c.manifest_misses + c.blob_misses,
        c,
        upstream: size(c.upstream_bytes.min(i64::MAX as u64) as i64),
    }
}

/// A namespace's storage: usage and quota, if the viewer may read them.
pub struct Storage {
    pub used_bytes: i64,
    pub used: String,
    pub quota_bytes: Option<i64>,
    pub quota: String,
    /// Percentage of the quota used (capped at 100 for the bar).
    pub percent: u32,
    pub bar: u32,
    pub over: bool,
}

/// Usage and quota of `ns` for viewers the API's `GET /namespaces/{ns}/usage` answers.
pub async fn storage(v: &Viewer, ns: &str) -> Result<Option<Storage>, UiError> {
    if v.svc.auth.is_none() || v.who.account.is_none() || v.who.granted.is_some() {
        return Ok(None);
    }
    let Some(admin) = &v.svc.storage else { return Ok(None) };
    let usage = match admin.usage(v.by(), ns).await {
        Ok(usage) => usage,
        // Not the viewer's to see.
        Err(RegistryError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (used_bytes, quota_bytes) = (usage.used_bytes, usage.quota_bytes);
    let percent = match quota_bytes {
        Some(q) if q > 0 => ((used_bytes as f64 / q as f64) * 100.0).round().min(u32::MAX as f64) as u32,
        Some(_) => 100,
        None => 0,
    };
    Ok(Some(Storage {
        used_bytes,
        used: size(used_bytes),
        quota_bytes,
        quota: quota_bytes.map(size).unwrap_or_else(|| "none".into()),
        percent,
        bar: percent.min(100),
        over: quota_bytes.is_some_and(|q| used_bytes > q),
    }))
}

#[derive(Deserialize)]
pub struct QuotaForm {
    #[serde(default)]
    csrf: String,
    /// The quota as a size (`500 MB`, `2GiB`, `1048576`); empty clears it.
    #[serde(default)]
    max: String,
    /// `clear` removes the quota whatever `max` says.
    #[serde(default)]
    action: String,
}

/// `POST /ns/{ns}/quota` (administrators, like `PUT /api/v1/namespaces/{ns}/quota`).
pub async fn set_quota(v: Viewer, ns: web::Path<String>, form: web::Form<QuotaForm>) -> UiResult {
    v.require_admin()?;
    v.check_csrf(&form.csrf)?;
    let max = if form.action == "clear" { None } else { crate::manage::parse_size(&form.max)? };
    let storage = v.svc.storage.as_ref().ok_or_else(|| RegistryError::Internal("storage is not registered".into()))?;
    storage.set_quota(v.by(), &ns, max).await?;
    Ok(see_other(&format!("/ns/{ns}?ok=quota")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(interval(86_400), "day");
        assert_eq!(interval(7200), "2 hours");
        assert_eq!(interval(90), "90 seconds");
    }
}
