//! `berth backup DIR` and `berth restore DIR`.
//!
//! A backup, while the registry serves and pushes go on:
//! 1. garbage collection is paused on every node ([`Collector::pause`]: its own lease, waited
//!    for when a run is in progress), so nothing the snapshot references can be deleted before
//!    it is copied;
//! 2. a consistent snapshot of the database (`Meta::snapshot`: SQLite `VACUUM INTO`,
//!    PostgreSQL `pg_dump` in an exported snapshot) and the list of every blob it records;
//! 3. the blobs of that list (blobs are immutable: copying them after the snapshot is safe),
//!    each streamed from the blob store, hashed, written under a `.partial` name, synced and
//!    renamed — on S3 by default not (`--blobs copy` forces it): the bucket keeps them, and its
//!    versioning or replication is the backup of them (README, "Backup and restore");
//! 4. the key that seals the database's secrets (`secret.key`), when it is a file;
//! 5. `backup.json`, written last (synced, renamed into place): the counts, the database file's
//!    digest and the snapshot's blob list. A directory without it is an unfinished backup, which
//!    `berth restore` refuses.
//!
//! A restore goes into an empty data directory (and an empty PostgreSQL database, through
//! `pg_restore`): the database first, then every blob, verified against its digest while it
//! streams into the blob store, and at the end a check that every blob the restored database
//! records has its object.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::error::RegistryError;
use crate::gc::Collector;
use crate::meta::{DbKind, Meta, sqlite_file};
use crate::oci::{Digest, Hasher};
use crate::registry::Registry;

/// The file written last; its presence marks a finished backup.
pub const MANIFEST: &str = "backup.json";
const FORMAT: u32 = 1;
/// Blobs copied at the same time.
const CONCURRENCY: usize = 4;
/// How long a backup waits for a garbage collection run in progress.
const GC_WAIT: Duration = Duration::from_secs(30 * 60);

/// How a long copy reports (the command line draws a progress bar).
pub trait Progress: Send + Sync {
    /// A line for people.
    fn line(&self, text: &str);
    /// A copy of `blobs` blobs, `bytes` in all, starts.
    fn start(&self, blobs: u64, bytes: u64);
    /// `bytes` more were copied.
    fn advance(&self, bytes: u64);
    /// The copy ended.
    fn finish(&self);
}

/// Whether a backup copies the blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobCopy {
    /// On a filesystem store yes; on an object store (S3, GCS, Azure) no: the bucket's
    /// versioning or replication keeps them.
    Auto,
    Copy,
    Skip,
}

/// The database file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseFile {
    /// `sqlite` or `postgres`.
    pub kind: String,
    /// Its name in the backup directory.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A blob of the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobEntry {
    pub digest: String,
    pub size: u64,
}

/// `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    pub berth_version: String,
    /// Unix seconds.
    pub started_at: i64,
    pub finished_at: i64,
    pub database: DatabaseFile,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Whether the blobs are in `blobs/<algorithm>/<2 hex>/<hex>`.
    pub blobs_included: bool,
    pub blob_count: u64,
    pub blob_bytes: u64,
    /// Whether `secret.key` is in the backup.
    pub secret_key: bool,
    /// The garbage collection pause the snapshot holds (a restore removes it).
    pub gc_pause: String,
    /// Every blob the snapshot records (those being deleted by GC at the snapshot excepted).
    pub blobs: Vec<BlobEntry>,
    /// Blobs the snapshot records that could not be copied, with the reason.
    pub missing: Vec<String>,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    pub blobs_restored: u64,
    pub bytes_restored: u64,
    /// Blobs the restored database records whose object is not in the blob store.
    pub missing: Vec<String>,
    pub secret_key: bool,
    pub database: String,
    pub duration: Duration,
}

/// Backups of the configured registry.
pub struct Backups {
    registry: Arc<Registry>,
    collector: Arc<Collector>,
    database_url: String,
    secret_key: PathBuf,
    object_store: bool,
}

fn now() -> i64 {
    crate::meta::now()
}

/// Where a blob lives in a backup directory.
fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    dir.join("blobs").join(digest.algorithm().as_str()).join(&hex[..2]).join(hex)
}

/// A directory that does not exist or holds nothing.
fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", dir.display())),
    }
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// The SHA-256 and length of a file.
async fn file_digest(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Hasher::new(crate::oci::Algorithm::Sha256);
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finish().to_string(), len))
}

/// Copies `from` to `to` (through `to.partial`, synced, renamed), checking `sha256` when given.
async fn copy_file(from: &Path, to: &Path, sha256: Option<&str>) -> anyhow::Result<()> {
    let partial = to.with_extension("partial");
    tokio::fs::copy(from, &partial).await?;
    tokio::fs::File::open(&partial).await?.sync_all().await?;
    if let Some(want) = sha256 {
        let (got, _) = file_digest(&partial).await?;
        if got != want {
            let _ = tokio::fs::remove_file(&partial).await;
            anyhow::bail!("{} has digest {got}, backup.json says {want}: the backup is damaged", from.display());
        }
    }
    tokio::fs::rename(&partial, to).await?;
    if let Some(dir) = to.parent() {
        sync_dir(dir).await?;
    }
    Ok(())
}

/// A file as a stream of chunks.
fn file_stream(file: tokio::fs::File) -> crate::storage::ByteStream {
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 20];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), file)))
    })
    .boxed()
}

impl Backups {
    pub fn new(registry: Arc<Registry>, collector: Arc<Collector>, config: &Config) -> Self {
        Backups {
            registry,
            collector,
            database_url: config.database_url(),
            secret_key: config.secret_key_path(),
            object_store: config.storage.kind != "filesystem",
        }
    }

    /// Backs the registry up into `dir` (absent or empty).
    pub async fn backup(&self, dir: &Path, blobs: BlobCopy, progress: &dyn Progress) -> anyhow::Result<BackupManifest> {
        if !is_empty_dir(dir)? {
            anyhow::bail!("{} is not empty: a backup goes into a new directory", dir.display());
        }
        tokio::fs::create_dir_all(dir).await?;
        let copy_blobs = match blobs {
            BlobCopy::Auto => !self.object_store,
            BlobCopy::Copy => true,
            BlobCopy::Skip => false,
        };
        let started_at = now();
        let pause = self.collector.pause(GC_WAIT, &|line| progress.line(line)).await?;
        progress.line("garbage collection paused on every node until the blobs are copied");
        let result = self.backup_paused(dir, copy_blobs, pause.holder(), started_at, progress).await;
        pause.release().await;
        result
    }

    async fn backup_paused(
        &self,
        dir: &Path,
        copy_blobs: bool,
        holder: &str,
        started_at: i64,
        progress: &dyn Progress,
    ) -> anyhow::Result<BackupManifest> {
        let meta = &self.registry.meta;
        let (kind, file) = match meta.kind() {
            DbKind::Sqlite => ("sqlite", "database.sqlite"),
            DbKind::Postgres => ("postgres", "database.pgdump"),
        };
        let db_path = dir.join(file);
        let t = Instant::now();
        let inventory = meta.snapshot(&self.database_url, &db_path).await?;
        tokio::fs::File::open(&db_path).await?.sync_all().await?;
        let (sha256, bytes) = file_digest(&db_path).await?;
        progress.line(&format!(
            "database snapshot ({kind}, {}): {} repositories, {} manifests, {} tags, {} blobs, in {:.1} s",
            if kind == "sqlite" { "VACUUM INTO" } else { "pg_dump" },
            inventory.repositories,
            inventory.manifests,
            inventory.tags,
            inventory.blobs.len(),
            t.elapsed().as_secs_f64()
        ));
        let mut missing = Vec::new();
        let mut entries = Vec::new();
        for (digest, size, deleting) in &inventory.blobs {
            if *deleting {
                // Marked by a run that stopped half-way: unreferenced, its object may be gone.
                // The restored database keeps the mark; the next run there finishes it.
                continue;
            }
            entries.push(BlobEntry { digest: digest.clone(), size: *size });
        }
        let blob_bytes = entries.iter().map(|b| b.size).sum();
        if copy_blobs {
            missing = self.copy_blobs_out(dir, &entries, blob_bytes, progress).await?;
        } else {
            progress.line(&format!(
                "blobs not copied ({} blobs, {} bytes stay in the object store: its versioning or replication keeps them)",
                entries.len(),
                blob_bytes
            ));
        }
        let secret_key = match tokio::fs::metadata(&self.secret_key).await {
            Ok(_) => {
                copy_file(&self.secret_key, &dir.join("secret.key"), None).await?;
                set_private(&dir.join("secret.key")).await?;
                true
            }
            Err(_) => false,
        };
        let manifest = BackupManifest {
            format: FORMAT,
            berth_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at,
            finished_at: now(),
            database: DatabaseFile { kind: kind.into(), file: file.into(), bytes, sha256 },
            repositories: inventory.repositories,
            manifests: inventory.manifests,
            tags: inventory.tags,
            blobs_included: copy_blobs,
            blob_count: entries.len() as u64,
            blob_bytes,
            secret_key,
            gc_pause: holder.to_string(),
            blobs: entries,
            missing,
        };
        // Written last, in one rename: its presence says the backup finished.
        let json = serde_json::to_vec_pretty(&manifest)?;
        let partial = dir.join("backup.json.partial");
        let mut f = tokio::fs::File::create(&partial).await?;
        f.write_all(&json).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&partial, dir.join(MANIFEST)).await?;
        sync_dir(dir).await?;
        Ok(manifest)
    }

    /// Copies the blobs into `dir`; the ones that could not be, with the reason.
    async fn copy_blobs_out(
        &self,
        dir: &Path,
        entries: &[BlobEntry],
        bytes: u64,
        progress: &dyn Progress,
    ) -> anyhow::Result<Vec<String>> {
        progress.start(entries.len() as u64, bytes);
        let dirs = std::sync::Mutex::new(BTreeSet::new());
        let results: Vec<Option<String>> = futures_util::stream::iter(entries)
            .map(|entry| {
                let dirs = &dirs;
                async move {
                    match self.copy_blob_out(dir, entry, progress).await {
                        Ok(parent) => {
                            dirs.lock().unwrap_or_else(|p| p.into_inner()).insert(parent);
                            Ok(None)
                        }
                        Err(BlobProblem::Missing(why)) => Ok(Some(format!("{}: {why}", entry.digest))),
                        Err(BlobProblem::Fatal(e)) => Err(e),
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        progress.finish();
        let dirs = std::mem::take(&mut *dirs.lock().unwrap_or_else(|p| p.into_inner()));
        let mut parents = BTreeSet::new();
        for d in &dirs {
            sync_dir(d).await?;
            if let Some(p) = d.parent() {
                parents.insert(p.to_path_buf());
            }
        }
        for p in parents {
            sync_dir(&p).await?;
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// One blob into `dir`: its directory.
    async fn copy_blob_out(
        &self,
        dir: &Path,
        entry: &BlobEntry,
        progress: &dyn Progress,
    ) -> Result<PathBuf, BlobProblem> {
        let fatal = |e: &dyn std::fmt::Display| BlobProblem::Fatal(anyhow::anyhow!("blob {}: {e}", entry.digest));
        let digest: Digest = entry.digest.parse().map_err(|e| fatal(&e))?;
        let path = blob_path(dir, &digest);
        let parent = path.parent().expect("a blob path has a parent").to_path_buf();
        tokio::fs::create_dir_all(&parent).await.map_err(|e| fatal(&e))?;
        let mut stream = match self.registry.blobs.read(&digest, None).await {
            Ok(s) => s,
            Err(RegistryError::BlobUnknown(_)) => {
                return Err(BlobProblem::Missing("the blob store has no object for it".into()));
            }
            Err(e) => return Err(fatal(&e)),
        };
        let partial = path.with_extension("partial");
        let mut file = tokio::fs::File::create(&partial).await.map_err(|e| fatal(&e))?;
        let mut hasher = Hasher::new(digest.algorithm());
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| fatal(&e))?;
            hasher.update(&chunk);
            len += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(|e| fatal(&e))?;
            progress.advance(chunk.len() as u64);
        }
        file.sync_all().await.map_err(|e| fatal(&e))?;
        drop(file);
        let actual = hasher.finish();
        if actual != digest || len != entry.size {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(BlobProblem::Missing(format!(
                "the stored object is damaged: it hashes to {actual} with {len} bytes (expected {} bytes)",
                entry.size
            )));
        }
        tokio::fs::rename(&partial, &path).await.map_err(|e| fatal(&e))?;
        Ok(parent)
    }
}

enum BlobProblem {
    /// Recorded in the backup's `missing` list; the backup goes on.
    Missing(String),
    Fatal(anyhow::Error),
}

async fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).await
}

/// Reads and checks a backup's `backup.json`.
pub fn read_manifest(dir: &Path) -> anyhow::Result<BackupManifest> {
    let path = dir.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("database.sqlite").exists() || dir.join("database.pgdump").exists() {
                anyhow::bail!(
                    "{} is an unfinished backup (no {MANIFEST}, which a backup writes last): take another",
                    dir.display()
                );
            }
            anyhow::bail!("{} is not a backup (no {MANIFEST})", dir.display());
        }
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let manifest: BackupManifest = serde_json::from_slice(&bytes)?;
    if manifest.format != FORMAT {
        anyhow::bail!("{} is a backup of format {}; this berth reads format {FORMAT}", dir.display(), manifest.format);
    }
    Ok(manifest)
}

/// Restores the backup in `dir` into the configured data directory (which must be empty),
/// database and blob store.
pub async fn restore(config: &Config, dir: &Path, progress: &dyn Progress) -> anyhow::Result<RestoreReport> {
    let started = Instant::now();
    let manifest = read_manifest(dir)?;
    let url = config.database_url();
    let target_kind = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    if manifest.database.kind != target_kind {
        anyhow::bail!(
            "the backup holds a {} database and the configuration names a {target_kind} one: restore into the same kind",
            manifest.database.kind
        );
    }
    // Into nothing but empty places.
    if !is_empty_dir(&config.data_dir)? {
        anyhow::bail!(
            "the data directory {} is not empty: a restore goes into an empty one",
            config.data_dir.display()
        );
    }
    let filesystem = config.storage.kind == "filesystem";
    if filesystem && !is_empty_dir(&config.storage_path())? {
        anyhow::bail!("the blob store {} is not empty", config.storage_path().display());
    }
    if filesystem && !manifest.blobs_included {
        anyhow::bail!(
            "the backup holds no blobs (it was taken on an object store, whose versioning or replication keeps them): \
             restore with storage.kind and its bucket configured, after restoring the bucket"
        );
    }
    let sqlite_target = sqlite_file(&url);
    if let Some(file) = &sqlite_target
        && file.exists()
    {
        anyhow::bail!("the database {} already exists", file.display());
    }
    if target_kind == "postgres" {
        let tables = Meta::tables_at(&url).await?;
        if !tables.is_empty() {
            anyhow::bail!(
                "the PostgreSQL database is not empty ({} tables): restore into a new database",
                tables.len()
            );
        }
    }

    // The database.
    std::fs::create_dir_all(&config.data_dir)?;
    let db_file = dir.join(&manifest.database.file);
    let (sha256, _) = file_digest(&db_file).await?;
    if sha256 != manifest.database.sha256 {
        anyhow::bail!(
            "{} has digest {sha256}, backup.json says {}: the backup is damaged",
            db_file.display(),
            manifest.database.sha256
        );
    }
    let database = match &sqlite_target {
        Some(file) => {
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(parent).await?;
            }
            copy_file(&db_file, file, Some(&manifest.database.sha256)).await?;
            format!("SQLite database {}", file.display())
        }
        None => {
            Meta::restore_postgres(&url, &db_file).await?;
            "PostgreSQL database (pg_restore)".to_string()
        }
    };
    progress.line(&format!("database restored: {database}"));

    // The key that seals the database's secrets.
    let mut secret_key = false;
    if manifest.secret_key {
        let target = config.secret_key_path();
        if target.exists() {
            progress
                .line(&format!("{} exists and was kept (the backup's secret.key was not restored)", target.display()));
        } else {
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            copy_file(&dir.join("secret.key"), &target, None).await?;
            set_private(&target).await?;
            secret_key = true;
        }
    }

    let registry = Registry::open(config).await?;
    crate::gc::release_restored_pause(&registry, &manifest.gc_pause).await?;
    let mut report = RestoreReport {
        repositories: manifest.repositories,
        manifests: manifest.manifests,
        tags: manifest.tags,
        secret_key,
        database,
        ..Default::default()
    };

    // The blobs, each verified as it streams into the store.
    if manifest.blobs_included {
        progress.start(manifest.blob_count, manifest.blob_bytes);
        let copied = AtomicU64::new(0);
        let problems: Vec<String> = futures_util::stream::iter(&manifest.blobs)
            .map(|entry| {
                let (registry, copied) = (&registry, &copied);
                async move {
                    let digest: Digest = match entry.digest.parse() {
                        Ok(d) => d,
                        Err(e) => return Some(format!("{}: {e}", entry.digest)),
                    };
                    let file = match tokio::fs::File::open(blob_path(dir, &digest)).await {
                        Ok(f) => f,
                        Err(e) => return Some(format!("{}: {e}", entry.digest)),
                    };
                    match registry.blobs.import(&digest, entry.size, file_stream(file)).await {
                        Ok(()) => {
                            progress.advance(entry.size);
                            copied.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Err(e) => Some(format!("{}: {e}", entry.digest)),
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(|p| async move { p })
            .collect()
            .await;
        progress.finish();
        if !problems.is_empty() {
            anyhow::bail!(
                "{} blobs could not be restored (the data directory holds a partial restore: empty it before trying again):\n  {}",
                problems.len(),
                problems.join("\n  ")
            );
        }
        report.blobs_restored = copied.into_inner();
        report.bytes_restored = manifest.blob_bytes;
    }

    // Every blob the restored database records has its object.
    let recorded = registry.meta.all_blobs().await?;
    progress.line(&format!("checking that the blob store holds the {} blobs the database records", recorded.len()));
    let missing: Vec<String> = futures_util::stream::iter(recorded)
        .map(|(digest, _)| {
            let registry = &registry;
            async move {
                let d: Digest = digest.parse().ok()?;
                match registry.blobs.exists(&d).await {
                    Ok(true) => None,
                    Ok(false) => Some(digest),
                    Err(e) => Some(format!("{digest}: {e}")),
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    report.missing = missing;
    report.duration = started.elapsed();
    Ok(report)
}
