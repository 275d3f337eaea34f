//! `berth backup DIR` and `berth restore DIR`: `manage::backup` on the configured database and
//! blob store, with a progress bar on standard error for the blob copies.

use std::path::Path;
use std::sync::Mutex;

use clap::ValueEnum;

use crate::config::Config;
use crate::manage::Services;
use crate::manage::backup::{self, BlobCopy, Progress};

/// `--blobs`.
#[derive(Clone, Copy, ValueEnum)]
pub enum BlobsArg {
    /// Copy them from a filesystem store; leave them in an object store (S3, GCS, Azure), whose
    /// versioning or replication keeps them.
    Auto,
    /// Always copy them (streamed out of the object store too).
    Copy,
    /// Only the database (and the secret key).
    Skip,
}

/// Lines on standard output; the copy's bar on standard error (drawn on a terminal only).
struct Bar(Mutex<Option<indicatif::ProgressBar>>);

impl Progress for Bar {
    fn line(&self, text: &str) {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(bar) => bar.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    fn start(&self, blobs: u64, bytes: u64) {
        println!("copying {blobs} blobs ({})", indicatif::HumanBytes(bytes));
        let bar = indicatif::ProgressBar::with_draw_target(Some(bytes), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "[{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

pub async fn backup(config: &Config, dir: &Path, blobs: BlobsArg) -> anyhow::Result<()> {
    let services = Services::open(config).await?;
    let blobs = match blobs {
        BlobsArg::Auto => BlobCopy::Auto,
        BlobsArg::Copy => BlobCopy::Copy,
        BlobsArg::Skip => BlobCopy::Skip,
    };
    let started = std::time::Instant::now();
    let m = services.backups.backup(dir, blobs, &Bar(Mutex::new(None))).await?;
    println!("backup written to {} in {:.1} s", dir.display(), started.elapsed().as_secs_f64());
    println!(
        "  database: {} ({}, {} bytes, {})",
        m.database.file,
        if m.database.kind == "sqlite" { "SQLite, VACUUM INTO" } else { "PostgreSQL, pg_dump custom format" },
        m.database.bytes,
        m.database.sha256
    );
    println!("  {} repositories, {} manifests, {} tags", m.repositories, m.manifests, m.tags);
    if m.blobs_included {
        println!("  {} blobs, {} copied", m.blob_count, indicatif::HumanBytes(m.blob_bytes));
    } else {
        println!(
            "  {} blobs ({}) referenced, not copied: they stay in the object store",
            m.blob_count,
            indicatif::HumanBytes(m.blob_bytes)
        );
    }
    if m.secret_key {
        println!("  secret.key (keep the backup private: it unseals the database's secrets)");
    }
    if !m.missing.is_empty() {
        for line in &m.missing {
            eprintln!("  missing: {line}");
        }
        anyhow::bail!(
            "{} blobs the snapshot records could not be copied (listed in {}); the rest of the backup is complete",
            m.missing.len(),
            backup::MANIFEST
        );
    }
    Ok(())
}

pub async fn restore(config: &Config, dir: &Path) -> anyhow::Result<()> {
    let r = backup::restore(config, dir, &Bar(Mutex::new(None))).await?;
    println!("restored {} into {} in {:.1} s", dir.display(), config.data_dir.display(), r.duration.as_secs_f64());
    println!("  {}", r.database);
    println!("  {} repositories, {} manifests, {} tags", r.repositories, r.manifests, r.tags);
    println!("  {} blobs restored and verified ({})", r.blobs_restored, indicatif::HumanBytes(r.bytes_restored));
    if r.secret_key {
        println!("  secret.key restored");
    }
    if !r.missing.is_empty() {
        for d in &r.missing {
            eprintln!("  missing: {d}");
        }
        anyhow::bail!("{} blobs the restored database records are not in the blob store", r.missing.len());
    }
    println!("  every blob the database records is in the blob store");
    Ok(())
}
