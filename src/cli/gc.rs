//! `berth gc`, `berth retention ...` and `berth quota ...`: garbage collection, retention
//! policies and namespace quotas on the configured database and blob store (the same
//! collector the server schedules; the lease keeps it from running beside a server's), through
//! `manage::storage::StorageAdmin` as `By::CommandLine`.

use std::sync::Arc;

use clap::Subcommand;

use crate::config::Config;
use crate::gc::GcReport;
use crate::manage::storage::StorageAdmin;
use crate::manage::{By, Services};
use crate::meta::RetentionPolicy;

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// List the policies.
    List,
    /// Create or replace the policy of a repository glob (e.g. `team/*`).
    Set {
        pattern: String,
        /// Keep the N most recently pushed tags.
        #[arg(long)]
        keep_last: Option<i64>,
        /// Keep tags matching these globs (`|`-separated, e.g. `v*|latest`).
        #[arg(long)]
        keep_tags: Option<String>,
        /// Only tags pushed more than D days ago may go.
        #[arg(long)]
        older_than_days: Option<i64>,
        /// Keep tags pulled within D days.
        #[arg(long)]
        keep_pulled_days: Option<i64>,
    },
    /// Remove the policy of a pattern.
    Remove { pattern: String },
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Show a namespace's usage and quota.
    Show { namespace: String },
    /// Set a namespace's quota, in bytes (suffixes K, M, G, T: powers of 1024).
    Set { namespace: String, size: String },
    /// Remove a namespace's quota.
    Remove { namespace: String },
}

pub fn print_report(r: &GcReport) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    println!("garbage collection {}finished in {} ms", if r.dry_run { "(dry run) " } else { "" }, r.duration_ms);
    println!("  {verb} {} expired upload sessions", r.uploads_removed);
    println!("  {verb} {} tags by retention", r.tags_deleted);
    for t in &r.retention {
        println!("    {t}");
    }
    println!("  {verb} {} mirrored manifests over the cache cap", r.mirror_manifests_evicted);
    println!("  {verb} {} manifests", r.manifests_deleted);
    println!("  {verb} {} blob links", r.links_removed);
    println!("  {verb} {} blobs, {} bytes", r.blobs_deleted, r.bytes_freed);
    println!("  {verb} {} leftover objects (no database row)", r.orphans_deleted);
    if r.errors > 0 {
        println!("  {} objects could not be deleted (kept; see the log)", r.errors);
    }
}

/// The storage service on the configured database and blob store, with the same [`Collector`]
/// the server schedules (its lease keeps it from running beside a server's).
async fn storage_admin(config: &Config) -> anyhow::Result<Arc<StorageAdmin>> {
    Ok(Services::open(config).await?.storage)
}

pub async fn gc(config: &Config, dry_run: bool) -> anyhow::Result<()> {
    let storage = storage_admin(config).await?;
    let report = storage.run_gc(By::CommandLine, dry_run, Some(&|line| println!("{line}"))).await?;
    print_report(&report);
    Ok(())
}

pub async fn retention(config: &Config, cmd: RetentionCommand) -> anyhow::Result<()> {
    let storage = storage_admin(config).await?;
    match cmd {
        RetentionCommand::List => {
            println!(
                "{:<24} {:<9} {:<16} {:<10} KEEP PULLED (DAYS)",
                "PATTERN", "KEEP LAST", "KEEP TAGS", "OLDER THAN"
            );
            let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            for p in storage.retention_policies(By::CommandLine).await? {
                println!(
                    "{:<24} {:<9} {:<16} {:<10} {}",
                    p.pattern,
                    opt(p.keep_last),
                    p.keep_tags.clone().unwrap_or_else(|| "-".into()),
                    opt(p.older_than_days),
                    opt(p.keep_pulled_days)
                );
            }
        }
        RetentionCommand::Set { pattern, keep_last, keep_tags, older_than_days, keep_pulled_days } => {
            let p = RetentionPolicy { pattern, keep_last, keep_tags, older_than_days, keep_pulled_days };
            storage.set_retention(By::CommandLine, &p).await?;
            println!("retention policy for {} saved (applied at the next garbage collection)", p.pattern);
        }
        RetentionCommand::Remove { pattern } => {
            storage.delete_retention(By::CommandLine, &pattern).await?;
            println!("retention policy for {pattern} removed");
        }
    }
    Ok(())
}

pub async fn quota(config: &Config, cmd: QuotaCommand) -> anyhow::Result<()> {
    let storage = storage_admin(config).await?;
    match cmd {
        QuotaCommand::Show { namespace } => {
            let usage = storage.usage(By::CommandLine, &namespace).await?;
            match usage.quota_bytes {
                Some(q) => println!("{namespace}: {} of {q} bytes used", usage.used_bytes),
                None => println!("{namespace}: {} bytes used, no quota", usage.used_bytes),
            }
        }
        QuotaCommand::Set { namespace, size } => {
            let bytes = crate::manage::parse_size(&size)?
                .ok_or_else(|| anyhow::anyhow!("a size is needed, e.g. 500M or 2G"))?;
            storage.set_quota(By::CommandLine, &namespace, Some(bytes)).await?;
            println!("quota of {namespace} set to {bytes} bytes");
        }
        QuotaCommand::Remove { namespace } => {
            storage.set_quota(By::CommandLine, &namespace, None).await?;
            println!("quota of {namespace} removed");
        }
    }
    Ok(())
}
