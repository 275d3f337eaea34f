//! Online garbage collection: mark and sweep from the metadata database while pushes and
//! pulls go on, plus tag retention and the mirror's cache size cap, which only delete tags and
//! manifests and leave the freeing of data to the same sweep.
//!
//! A run, in order: expired upload sessions (row, then their stored bytes); retention policies
//! (tags, and the manifests they leave unreachable); mirror eviction above
//! `mirror.max_cache_bytes` (least recently pulled mirrored manifests); unreachable manifests
//! (with `gc.delete_untagged`); repository↔blob links no manifest references; blobs no
//! repository links (row marked, object deleted, row deleted); objects the database does not
//! know (crash leftovers), once older than the grace period.
//!
//! **Safety rule.** Nothing younger than the grace period (`gc.grace_secs`, counted from the
//! row's `created_at`) is collected, and every delete re-checks its condition — still old,
//! still unreferenced — inside the transaction that deletes. Every write a push depends on
//! refreshes the rows it relies on in its own transaction: linking a blob refreshes the blob
//! row (and refuses if GC has marked it), a manifest push refreshes the links and child
//! manifests it references, `HEAD` on an old link refreshes it. Either the push's transaction
//! commits first (the row is young again and GC's re-check skips it) or GC's does (the push
//! sees the row gone or marked and answers as if it never existed, or waits and stores the
//! blob again). Blob objects are deleted only after their row is marked `deleting` in a
//! committed transaction, and the row goes after the object: a row never points at nothing.
//! So a push writes a blob row anew only from the transaction that has just seen the object
//! in the store (`Meta::link_stored_blob`: an upload that stored it); linking a recorded blob
//! (a mount, an upload of a blob the registry has) only refreshes its row and links nothing if
//! the row went since the push looked — GC took the object first.
//! On PostgreSQL the two writers meet on the same row lock and the loser's re-check sees the
//! winner's `created_at`.
//!
//! One run at a time across every node sharing the database: a lease row (`gc_lease`),
//! renewed between batches. Every table is walked in keyset pages of [`BATCH`] rows, each
//! delete a short transaction, so SQLite's write lock is never held for long.

pub mod retention;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::GcConfig;
use crate::error::{RegistryError, Result};
use crate::meta::now;
use crate::oci::Digest;
use crate::registry::Registry;

/// The name of the lease a run (or a [`GcPause`]) holds.
const LEASE: &str = "gc";
/// Rows per page and per deleting transaction.
pub const BATCH: i64 = 500;
/// Lifetime of the lease; renewed between batches.
const LEASE_SECS: i64 = 300;
/// Blob objects deleted at the same time.
const DELETE_CONCURRENCY: usize = 32;
/// Most entries kept in a report's list of retention decisions.
const LISTED: usize = 1000;

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Unix seconds.
    pub started_at: i64,
    pub duration_ms: u64,
    pub uploads_removed: u64,
    /// Tags removed by retention policies.
    pub tags_deleted: u64,
    pub manifests_deleted: u64,
    /// Mirrored manifests evicted by the cache size cap.
    pub mirror_manifests_evicted: u64,
    pub links_removed: u64,
    pub blobs_deleted: u64,
    /// Bytes of the deleted blobs.
    pub bytes_freed: u64,
    /// Objects the database did not know (a blob object without its row, upload data without
    /// its session: leftovers of crashes), deleted once older than the grace period.
    pub orphans_deleted: u64,
    /// Objects that could not be deleted (kept, retried next run).
    pub errors: u64,
    /// `repository:tag` removed by retention (at most 1,000 listed).
    pub retention: Vec<String>,
    /// Mirrored `repository@digest` evicted (at most 1,000 listed).
    pub evicted: Vec<String>,
}

/// Garbage collection held off on every node ([`Collector::pause`]) until [`GcPause::release`].
pub struct GcPause {
    meta: crate::meta::Meta,
    holder: String,
    renew: tokio::task::JoinHandle<()>,
}

impl GcPause {
    /// The lease holder's name (a database snapshot taken during the pause holds its lease
    /// row; a restore removes it with [`release_restored_pause`]).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub async fn release(self) {
        self.renew.abort();
        if let Err(e) = self.meta.release_lease(LEASE, &self.holder).await {
            tracing::warn!(error = %e, "could not release the garbage collection pause (it expires by itself)");
        }
    }
}

/// Removes the pause `holder` that a restored database snapshot still holds.
pub async fn release_restored_pause(registry: &Registry, holder: &str) -> Result<()> {
    registry.meta.release_lease(LEASE, holder).await
}

/// Reports progress of a run (the CLI prints it; the server logs).
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Runs garbage collection for one node.
pub struct Collector {
    pub registry: Arc<Registry>,
    pub config: GcConfig,
    /// Names of the mirror's upstreams (their repositories are `<name>/...`).
    pub mirror_upstreams: Vec<String>,
    /// The mirror's cache cap in bytes (0: none).
    pub max_cache_bytes: u64,
    /// How often the background task checks the cap (`mirror.cap_check_secs`).
    cap_check_secs: u64,
    holder: String,
    running: tokio::sync::Mutex<()>,
}

impl Collector {
    pub fn new(registry: Arc<Registry>, config: GcConfig, mirror_upstreams: Vec<String>, max_cache_bytes: u64) -> Self {
        // A client told "this blob exists" has half the grace period to reference it.
        registry.link_refresh_secs.store((config.grace_secs / 2) as i64, std::sync::atomic::Ordering::Relaxed);
        Collector {
            registry,
            config,
            mirror_upstreams,
            max_cache_bytes,
            cap_check_secs: 300,
            holder: uuid::Uuid::new_v4().to_string(),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The last report of a real run (`dry = false`) or a dry run.
    pub async fn last_report(&self, dry: bool) -> Result<Option<GcReport>> {
        let kind = if dry { "dry_run" } else { "run" };
        match self.registry.meta.gc_report(kind).await? {
            Some(json) => Ok(serde_json::from_str(&json).ok()),
            None => Ok(None),
        }
    }

    /// Keeps garbage collection from running on every node sharing the database until the
    /// pause is released (a backup copies the blobs of a database snapshot, which a run could
    /// delete meanwhile): the pause holds the collectors' own lease, renewed in the background.
    /// A run in progress is waited for, up to `wait`; then `Conflict`.
    pub async fn pause(&self, wait: Duration, progress: Progress<'_>) -> Result<GcPause> {
        let meta = self.registry.meta.clone();
        let holder = format!("pause-{}", uuid::Uuid::new_v4().simple());
        let deadline = Instant::now() + wait;
        let mut told = false;
        while !meta.acquire_lease(LEASE, &holder, LEASE_SECS).await? {
            if Instant::now() > deadline {
                return Err(RegistryError::Conflict(
                    "garbage collection is running (or a pause is held) and did not finish in time".into(),
                ));
            }
            if !told {
                progress("waiting for the garbage collection run in progress to finish");
                told = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let (m, h) = (meta.clone(), holder.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(LEASE_SECS as u64 / 5)).await;
                match m.acquire_lease(LEASE, &h, LEASE_SECS).await {
                    Ok(true) => {}
                    Ok(false) => tracing::error!("the garbage collection pause lost its lease"),
                    Err(e) => tracing::warn!(error = %e, "could not renew the garbage collection pause"),
                }
            }
        });
        Ok(GcPause { meta, holder, renew })
    }

    /// Sets how often [`Collector::spawn_background`] checks the mirror's cache against its cap.
    pub fn with_cap_check_secs(mut self, secs: u64) -> Self {
        self.cap_check_secs = secs;
        self
    }

    /// Runs the scheduled collection every `interval_secs` (and sooner when the mirror's cache
    /// is over its cap, checked every `cap_check_secs`), and writes recorded pull times every
    /// `pull_record_secs`, until the process ends.
    pub fn spawn_background(self: &Arc<Self>) {
        let this = self.clone();
        let every = Duration::from_secs(self.config.pull_record_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = this.registry.pulls.flush(&this.registry.meta).await {
                    tracing::warn!(error = %e, "could not record pull times");
                }
            }
        });
        if !self.config.enabled {
            return;
        }
        let this = self.clone();
        let every = Duration::from_secs(self.config.interval_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                this.scheduled_run("scheduled").await;
            }
        });
        if self.max_cache_bytes == 0 || self.mirror_upstreams.is_empty() {
            return;
        }
        // The mirror's cap between scheduled runs: a busy mirror can cache far more than its
        // cap in a day.
        let this = self.clone();
        let every = Duration::from_secs(self.cap_check_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match this.mirror_over_cap().await {
                    Ok(0) => {}
                    Ok(over) => {
                        tracing::info!(over_bytes = over, "mirror cache over its cap: collecting now");
                        this.scheduled_run("mirror cap").await;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not measure the mirror cache"),
                }
            }
        });
    }

    async fn scheduled_run(&self, why: &str) {
        match self.run(false, &|_| {}).await {
            Ok(_) => {}
            Err(RegistryError::Conflict(m)) => tracing::info!(why, "garbage collection skipped: {m}"),
            Err(e) => tracing::warn!(why, error = %e, "garbage collection failed"),
        }
    }

    /// One collection. A real run needs the cluster-wide lease (else `Conflict`); a dry run
    /// changes nothing and needs none.
    pub async fn run(&self, dry_run: bool, progress: Progress<'_>) -> Result<GcReport> {
        let _local = self
            .running
            .try_lock()
            .map_err(|_| RegistryError::Conflict("garbage collection is already running on this node".into()))?;
        let meta = &self.registry.meta;
        if !dry_run && !meta.acquire_lease(LEASE, &self.holder, LEASE_SECS).await? {
            return Err(RegistryError::Conflict(
                "garbage collection is already running on another node (or a backup holds it off)".into(),
            ));
        }
        let started = Instant::now();
        let mut report = GcReport { dry_run, started_at: now(), ..Default::default() };
        let result = self.phases(&mut report, progress).await;
        if !dry_run {
            let _ = meta.release_lease(LEASE, &self.holder).await;
        }
        result?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        let json = serde_json::to_string(&report).map_err(|e| RegistryError::internal("gc report", e))?;
        meta.save_gc_report(if dry_run { "dry_run" } else { "run" }, &json).await?;
        if !dry_run {
            crate::metrics::global().record_gc_run(
                report.blobs_deleted + report.manifests_deleted,
                report.bytes_freed,
                started.elapsed(),
            );
        }
        tracing::info!(
            dry_run,
            uploads = report.uploads_removed,
            tags = report.tags_deleted,
            manifests = report.manifests_deleted,
            evicted = report.mirror_manifests_evicted,
            links = report.links_removed,
            blobs = report.blobs_deleted,
            orphans = report.orphans_deleted,
            bytes = report.bytes_freed,
            errors = report.errors,
            ms = report.duration_ms,
            "garbage collection finished"
        );
        Ok(report)
    }

    async fn renew(&self, dry_run: bool) -> Result<()> {
        if !dry_run && !self.registry.meta.acquire_lease(LEASE, &self.holder, LEASE_SECS).await? {
            return Err(RegistryError::Conflict("the garbage collection lease was lost".into()));
        }
        Ok(())
    }

    async fn phases(&self, report: &mut GcReport, progress: Progress<'_>) -> Result<()> {
        let dry = report.dry_run;
        let cutoff = now() - self.config.grace_secs as i64;
        self.expire_uploads(report).await?;
        progress(&format!("upload sessions expired: {}", report.uploads_removed));
        retention::apply(self, report, cutoff).await?;
        progress(&format!("tags removed by retention: {}", report.tags_deleted));
        // Over the mirror's cap: evict, sweep, measure again (shared layers make the first
        // estimate short).
        let mut swept = false;
        for _ in 0..3 {
            let over = self.mirror_over_cap().await?;
            if over == 0 {
                break;
            }
            self.evict(report, over).await?;
            progress(&format!("mirrored manifests evicted: {}", report.mirror_manifests_evicted));
            self.sweep(report, cutoff, progress).await?;
            swept = true;
            if dry {
                break;
            }
        }
        if !swept {
            self.sweep(report, cutoff, progress).await?;
        }
        Ok(())
    }

    /// Unreachable manifests, unreferenced links, unlinked blobs.
    async fn sweep(&self, report: &mut GcReport, cutoff: i64, progress: Progress<'_>) -> Result<()> {
        if self.config.delete_untagged {
            self.untagged(report, cutoff).await?;
            progress(&format!("untagged manifests deleted: {}", report.manifests_deleted));
        }
        self.links(report, cutoff).await?;
        progress(&format!("unreferenced blob links removed: {}", report.links_removed));
        self.blobs(report, cutoff, progress).await?;
        progress(&format!("blobs deleted: {} ({} bytes)", report.blobs_deleted, report.bytes_freed));
        self.orphans(report, cutoff).await?;
        progress(&format!("leftover objects deleted: {}", report.orphans_deleted));
        Ok(())
    }

    /// Objects the database does not know: blob objects without a row (a crash between storing
    /// and recording) once older than the grace period, upload data without a session once
    /// older than the upload expiry (a push writes the row right after the object, and an
    /// upload's object is dated at its commit). A blob object is claimed first with a row
    /// marked `deleting` (a push of the same blob waits for it), and deleted only if it was not
    /// rewritten meanwhile; a push that stored it just before records its row only if the
    /// object is still there once the claim is gone.
    async fn orphans(&self, report: &mut GcReport, cutoff: i64) -> Result<()> {
        let meta = &self.registry.meta;
        let blobs = &self.registry.blobs;
        let run = format!("gc-{}", self.holder);
        let mut listing = blobs.list(true).chunks(BATCH as usize);
        while let Some(page) = listing.next().await {
            let mut found: Vec<(String, String)> = Vec::new(); // (digest, key)
            for item in page {
                let (key, modified) = item?;
                if modified >= cutoff {
                    continue;
                }
                let parts: Vec<&str> = key.split('/').collect();
                if let [_, alg, _, hex] = parts[..]
                    && let Ok(d) = format!("{alg}:{hex}").parse::<Digest>()
                {
                    found.push((d.to_string(), key.clone()));
                }
            }
            let digests: Vec<String> = found.iter().map(|(d, _)| d.clone()).collect();
            let known = meta.known_blobs(&digests).await?;
            for (digest, key) in found.into_iter().filter(|(d, _)| !known.contains(d)) {
                if report.dry_run {
                    report.orphans_deleted += 1;
                    continue;
                }
                if !meta.claim_orphan(&digest, &run).await? {
                    continue;
                }
                if let Some(modified) = blobs.modified(&key).await?
                    && modified < cutoff
                {
                    match blobs.delete_key(&key).await {
                        Ok(()) => report.orphans_deleted += 1,
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "could not delete a leftover object");
                            report.errors += 1;
                        }
                    }
                }
                meta.delete_marked_blobs(&[digest], &run).await?;
            }
            self.renew(report.dry_run).await?;
        }
        let upload_cutoff = now() - self.config.upload_expiry_secs as i64;
        let mut listing = blobs.list(false).chunks(BATCH as usize);
        while let Some(page) = listing.next().await {
            let mut found: Vec<(String, String)> = Vec::new(); // (upload id, key)
            for item in page {
                let (key, modified) = item?;
                if let Some(id) = key.strip_prefix("_uploads/").and_then(|k| k.split('/').next())
                    && modified < upload_cutoff
                {
                    found.push((id.to_string(), key.clone()));
                }
            }
            let ids: Vec<String> = found.iter().map(|(i, _)| i.clone()).collect();
            let known = meta.known_uploads(&ids).await?;
            for (_, key) in found.into_iter().filter(|(i, _)| !known.contains(i)) {
                if !report.dry_run
                    && let Err(e) = blobs.delete_key(&key).await
                {
                    tracing::warn!(%key, error = %e, "could not delete a leftover upload object");
                    report.errors += 1;
                    continue;
                }
                report.orphans_deleted += 1;
            }
            self.renew(report.dry_run).await?;
        }
        Ok(())
    }

    async fn expire_uploads(&self, report: &mut GcReport) -> Result<()> {
        let meta = &self.registry.meta;
        let cutoff = now() - self.config.upload_expiry_secs as i64;
        let mut last = String::new();
        loop {
            let page = meta.stale_uploads(cutoff, &last, BATCH).await?;
            let Some((id, _)) = page.last() else { break };
            last = id.clone();
            for (id, state) in &page {
                if report.dry_run {
                    report.uploads_removed += 1;
                } else if meta.delete_stale_upload(id, cutoff).await? {
                    // The row first: no request can continue the session once its bytes go.
                    report.uploads_removed += 1;
                    self.registry.forget_upload(id);
                    if let Err(e) = self.registry.blobs.uploads().abort(id, state.as_deref()).await {
                        tracing::warn!(upload = %id, error = %e, "could not remove an expired upload's data");
                        report.errors += 1;
                    }
                }
            }
            self.renew(report.dry_run).await?;
        }
        Ok(())
    }

    /// Deletes unreachable manifests in rounds: deleting an index or a subject can make its
    /// children or referrers unreachable in the next round.
    async fn untagged(&self, report: &mut GcReport, cutoff: i64) -> Result<()> {
        let meta = &self.registry.meta;
        for _ in 0..8 {
            let mut deleted_this_round = 0;
            let mut last = (0i64, String::new());
            loop {
                let page = meta.unreachable_manifests(cutoff, &last, BATCH).await?;
                let Some(l) = page.last() else { break };
                last = l.clone();
                if report.dry_run {
                    report.manifests_deleted += page.len() as u64;
                    continue;
                }
                let deleted = meta.delete_unreachable_manifests(&page, cutoff).await?;
                deleted_this_round += deleted.len();
                report.manifests_deleted += deleted.len() as u64;
                self.renew(false).await?;
            }
            if report.dry_run || deleted_this_round == 0 {
                break;
            }
        }
        Ok(())
    }

    async fn links(&self, report: &mut GcReport, cutoff: i64) -> Result<()> {
        let meta = &self.registry.meta;
        let mut last = (0i64, String::new());
        loop {
            let page = meta.unreferenced_links(cutoff, &last, BATCH).await?;
            let Some(l) = page.last() else { break };
            last = l.clone();
            if report.dry_run {
                report.links_removed += page.len() as u64;
                continue;
            }
            report.links_removed += self.registry.delete_unreferenced_links(&page, cutoff).await?;
            self.renew(false).await?;
        }
        Ok(())
    }

    async fn blobs(&self, report: &mut GcReport, cutoff: i64, progress: Progress<'_>) -> Result<()> {
        let meta = &self.registry.meta;
        let run = format!("gc-{}", self.holder);
        if !report.dry_run {
            self.finish_stale_marks(report, cutoff).await?;
        }
        let mut last = String::new();
        let mut pages = 0u64;
        loop {
            let page = if report.dry_run {
                meta.collectable_blobs(cutoff, &last, BATCH).await?
            } else {
                meta.unlinked_blobs(cutoff, &last, BATCH).await?
            };
            let Some((l, _)) = page.last() else { break };
            last = l.clone();
            pages += 1;
            if pages.is_multiple_of(20) {
                progress(&format!("  … {} blobs so far", report.blobs_deleted + page.len() as u64));
            }
            if report.dry_run {
                report.blobs_deleted += page.len() as u64;
                report.bytes_freed += page.iter().map(|(_, s)| *s as u64).sum::<u64>();
                continue;
            }
            let digests: Vec<String> = page.into_iter().map(|(d, _)| d).collect();
            let marked = meta.mark_blobs_deleting(&digests, cutoff, &run).await?;
            // Objects go only once their rows are marked (committed): a push that links one of
            // these now waits for the row to disappear and stores the blob again.
            let blobs = &self.registry.blobs;
            let results: Vec<(String, i64, Result<()>)> = futures_util::stream::iter(marked)
                .map(|(digest, size)| async move {
                    let r = match digest.parse::<Digest>() {
                        Ok(d) => blobs.delete(&d).await,
                        Err(e) => Err(e),
                    };
                    (digest, size, r)
                })
                .buffer_unordered(DELETE_CONCURRENCY)
                .collect()
                .await;
            let mut gone = Vec::new();
            for (digest, size, r) in results {
                match r {
                    Ok(()) => {
                        report.bytes_freed += size as u64;
                        gone.push(digest);
                    }
                    Err(e) => {
                        tracing::warn!(%digest, error = %e, "could not delete a blob object; kept");
                        report.errors += 1;
                        meta.unmark_blob(&digest, &run).await?;
                    }
                }
            }
            report.blobs_deleted += meta.delete_marked_blobs(&gone, &run).await?;
            self.renew(false).await?;
        }
        Ok(())
    }

    /// Finishes what an interrupted run left marked `deleting` (such rows are invisible to
    /// later marks, and a push of their digest waits for them to go). We hold the lease, so no
    /// other run is working on them. A mark was set only on an unlinked blob (or, with size 0,
    /// as a claim on a leftover object), and a marked row cannot be linked, so the object goes
    /// when it is older than the grace period; a younger one (an upload may be committing it)
    /// stays and is judged again as a leftover by a later run. The row goes either way.
    async fn finish_stale_marks(&self, report: &mut GcReport, cutoff: i64) -> Result<()> {
        let meta = &self.registry.meta;
        loop {
            let stale = meta.stale_marked_blobs(BATCH).await?;
            if stale.is_empty() {
                return Ok(());
            }
            for (digest, size) in stale {
                let Ok(d) = digest.parse::<Digest>() else {
                    meta.drop_marked_blob(&digest).await?;
                    continue;
                };
                let old = matches!(self.registry.blobs.blob_modified(&d).await?, Some(m) if m < cutoff);
                if old {
                    self.registry.blobs.delete(&d).await?;
                }
                if meta.drop_marked_blob(&digest).await? > 0 && old {
                    report.blobs_deleted += 1;
                    report.bytes_freed += size as u64;
                }
            }
            tracing::info!("finished the blob deletions an interrupted garbage collection left marked");
        }
    }

    /// The upstream names whose repositories are mirrored content (an upstream a local
    /// namespace shadows is left alone: the mirror stays out of it).
    async fn mirror_prefixes(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for name in &self.mirror_upstreams {
            if self.registry.meta.namespace(name).await?.is_none() {
                out.push(format!("{name}/"));
            }
        }
        Ok(out)
    }

    /// Bytes the mirror's cache is over its cap (0 when under or uncapped).
    async fn mirror_over_cap(&self) -> Result<u64> {
        if self.max_cache_bytes == 0 || self.mirror_upstreams.is_empty() {
            return Ok(0);
        }
        let usage = self.registry.meta.prefix_usage(&self.mirror_prefixes().await?).await? as u64;
        Ok(usage.saturating_sub(self.max_cache_bytes))
    }

    /// Evicts least recently pulled mirrored manifests until the bytes they reference reach
    /// `target` (an estimate: a layer shared with a kept manifest stays; the sweep frees what
    /// is really unreferenced and the caller measures again).
    async fn evict(&self, report: &mut GcReport, target: u64) -> Result<()> {
        let meta = &self.registry.meta;
        let mut candidates = Vec::new();
        for prefix in self.mirror_prefixes().await? {
            candidates.extend(meta.least_recently_pulled(&prefix, 10_000).await?);
        }
        candidates.sort_by_key(|c| c.last_used);
        let mut freed = 0u64;
        for c in candidates {
            if freed >= target {
                break;
            }
            let evicted =
                report.dry_run || self.registry.evict_manifest(&c.repository, c.repository_id, &c.digest).await?;
            if evicted {
                freed += c.bytes as u64;
                report.mirror_manifests_evicted += 1;
                if report.evicted.len() < LISTED {
                    report.evicted.push(format!("{}@{}", c.repository, c.digest));
                }
            }
        }
        Ok(())
    }
}
