//! The metadata store: repositories, blob links, manifests, tags and upload sessions, in SQLite
//! (the embedded default) or PostgreSQL, through sqlx's `Any` driver. The SQL is kept portable
//! (`$N` placeholders, `ON CONFLICT`, keyset pagination); the schemas live side by side in
//! `migrations/<database>/`. Everything that lists (catalog, tags, referrers) is an indexed
//! query with a `last` key, never a scan of storage.

mod accounts;
mod acme;
mod backup;
mod events;
mod gc;
mod mirror_cache;
mod quotas;
mod replication;
mod retention;
mod ui;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Connection, Executor, Row};

use crate::config::DatabaseConfig;

use crate::error::{RegistryError, Result};
use crate::oci::{Digest, ParsedManifest};

pub use accounts::{Account, AccountSecret, Namespace, NewAccount, TokenRecord};
pub use acme::AcmeCertificate;
pub use backup::{SnapshotInventory, sqlite_file};
pub use events::{AuditEntry, Delivery, Outcome, Webhook, now_millis};
pub use mirror_cache::CachedManifest;
pub use replication::{
    JobOutcome, NewRule, NewTarget, ReplicationExecution, ReplicationJob, ReplicationRule, ReplicationTarget,
};
pub use retention::{RetentionPolicy, TagInfo};
pub use ui::{PendingOidcLogin, RepositorySummary, TagSummary, UiSession, like_escape};

/// What [`Meta::link_blob`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    Done,
    /// Garbage collection is deleting the blob's object (its row is marked), or the row
    /// changed under the call: look again.
    Deleting,
    /// No blob row (for [`Meta::link_blob`]), or no object behind the row that
    /// [`Meta::link_stored_blob`] would write: nothing was linked.
    Absent,
    /// The blob would take the namespace over its quota (`usage` without it).
    OverQuota {
        quota: i64,
        usage: i64,
    },
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct ManifestRecord {
    pub digest: String,
    pub media_type: String,
    pub content: Vec<u8>,
}

/// A manifest that names another one as its `subject`.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// A stored upload session.
#[derive(Debug, Clone)]
pub struct UploadRecord {
    pub id: String,
    pub repository_id: i64,
    pub size: u64,
    /// The storage backend's resumable state.
    pub state: Option<String>,
    /// The running hash at `size` ([`crate::oci::Hasher::save`]).
    pub hash_state: Option<String>,
}

/// Handle on the metadata database; cheap to clone.
#[derive(Clone)]
pub struct Meta {
    pool: AnyPool,
    /// Connections whose commits are not waited onto the disk, for the one write that need
    /// not be: an upload chunk's acknowledgement ([`Meta::update_upload`]).
    acks: AnyPool,
    kind: DbKind,
    /// Grows with every change this process makes to what an identity rests on (an account's
    /// flags or existence, a token's existence): caches of verified identities compare it.
    identities: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The pool settings of [`Meta::connect_with`]. `durable`: every commit reaches the disk before
/// it returns. Off (the acknowledgement pool): SQLite `synchronous = NORMAL` (WAL: a commit is
/// atomic and seen by every connection at once, and it reaches the disk with the next durable
/// commit of any connection, or the next checkpoint), PostgreSQL `synchronous_commit = off`
/// (the same: visible at once to every session and node, flushed by the WAL writer within a
/// few hundred milliseconds or by the next durable commit).
fn pool_options(kind: DbKind, settings: &DatabaseConfig, durable: bool) -> AnyPoolOptions {
    // SQLite: readers in parallel (WAL), each connection with a 1 MiB page cache; every
    // commit reaches the disk before it returns (`synchronous = FULL`: with NORMAL, the
    // usual setting beside WAL, the last commits before a power loss could roll back, an
    // acknowledged push among them).
    let options = AnyPoolOptions::new()
        .max_connections(if kind == DbKind::Sqlite { 8 } else { 16 })
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs.max(1)))
        // A SQLite connection is a file in this process: it cannot drop the way a network
        // connection can, so it is not pinged before each use (a round trip to its worker
        // thread on every query). PostgreSQL's are, so a restarted server costs no request.
        .test_before_acquire(kind == DbKind::Postgres)
        // A connection still inside a transaction once its rollback has run (SQLite rolls
        // a transaction back by itself on a full disk or an I/O error, so sqlx's ROLLBACK
        // after the failed statement or COMMIT fails and sqlx keeps counting it as open)
        // is closed instead of going back to the pool, where every later `BEGIN` on it
        // would fail. Only a connection that was in a transaction (a rollback queued by a
        // dropped transaction counts until it ran) pays the ping that runs the rollback;
        // sqlx pings every released connection after this anyway.
        .after_release(|conn, _| {
            Box::pin(async move {
                if !conn.is_in_transaction() {
                    return Ok(true);
                }
                conn.ping().await?;
                if conn.is_in_transaction() {
                    tracing::warn!("closing a database connection left inside a transaction");
                    return Ok(false);
                }
                Ok(true)
            })
        });
    match kind {
        DbKind::Sqlite => {
            let busy_ms = settings.busy_timeout_secs.max(1) * 1000;
            let synchronous = if durable { "FULL" } else { "NORMAL" };
            options.after_connect(move |conn, _| {
                Box::pin(async move {
                    let pragmas = format!(
                        "PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = {busy_ms}; PRAGMA cache_size = -1024;"
                    );
                    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas))).await?;
                    Ok(())
                })
            })
        }
        DbKind::Postgres if !durable => options.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET synchronous_commit = off").await?;
                Ok(())
            })
        }),
        DbKind::Postgres => options,
    }
}

/// Current time in Unix seconds.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Meta {
    /// A SQLite database in `dir` (unit tests).
    #[cfg(test)]
    pub async fn temp_sqlite(dir: &std::path::Path) -> Self {
        Self::connect(&format!("sqlite://{}?mode=rwc", dir.join("t.db").display())).await.expect("test database")
    }

    /// Connects to `url` (`sqlite://...` or `postgres://...`) with the default
    /// [`DatabaseConfig`] settings and applies the migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, &DatabaseConfig::default()).await
    }

    /// Connects to `url` and applies the migrations. A request waits at most
    /// `acquire_timeout_secs` for a connection (on PostgreSQL that includes connecting, so a
    /// stopped server answers within it: `RegistryError::Unreachable`, 503), and on SQLite at
    /// most `busy_timeout_secs` for the write lock.
    pub async fn connect_with(url: &str, settings: &DatabaseConfig) -> anyhow::Result<Self> {
        install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DbKind::Postgres
        } else {
            anyhow::bail!("database.url must start with sqlite: or postgres:");
        };
        let pool = pool_options(kind, settings, true).connect(url).await?;
        if kind == DbKind::Sqlite {
            // WAL lets readers (the server, the runtime, the CLI) run beside one writer.
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let migrator = match kind {
            DbKind::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            DbKind::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator.run(&pool).await?;
        // Connected when first used (a CLI command that uploads nothing never opens it).
        let acks = pool_options(kind, settings, false).max_connections(4).connect_lazy(url)?;
        Ok(Meta { pool, acks, kind, identities: Default::default() })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// See [`Meta::identities_changed`].
    pub fn identities_generation(&self) -> u64 {
        self.identities.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records that an account was disabled, deleted or changed, or a token deleted, through
    /// this process (other processes' changes are seen when a cache re-reads the database).
    fn identities_changed(&self) {
        self.identities.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once, so a transaction
    /// that reads and then writes never fails on a lock upgrade.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.pool.begin().await?,
        })
    }

    // ---- repositories ----------------------------------------------------------------------

    /// The id of a repository, if it exists.
    pub async fn repository_id(&self, name: &str) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT id FROM repositories WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get::<i64, _>(0)))
    }

    /// The id of a repository, created if needed.
    pub async fn ensure_repository(&self, name: &str) -> Result<i64> {
        if let Some(id) = self.repository_id(name).await? {
            return Ok(id);
        }
        sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(now())
            .execute(&self.pool)
            .await?;
        self.repository_id(name)
            .await?
            .ok_or_else(|| RegistryError::Internal(format!("repository {name} vanished after insert")))
    }

    /// Repositories holding at least one manifest, after `last`, in byte order.
    pub async fn catalog(&self, last: Option<&str>, n: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT r.name FROM repositories r WHERE r.name > $1 \
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) \
             ORDER BY r.name LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    // ---- blobs ------------------------------------------------------------------------------

    /// The size of a blob if the repository links it.
    pub async fn linked_blob_size(&self, repository: &str, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size FROM repositories r \
             JOIN repository_blobs rb ON rb.repository_id = r.id \
             JOIN blobs b ON b.digest = rb.digest \
             WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repository)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    /// The size of a blob the registry holds, whatever links it.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    /// Repositories that link a blob (for a mount without `from`).
    pub async fn repositories_linking(&self, digest: &Digest, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
             WHERE rb.digest = $1 ORDER BY r.name LIMIT $2",
        )
        .bind(digest.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Links a blob the registry already records to a repository, refreshing its row
    /// (`created_at`, which garbage collection's grace period counts from) in the same
    /// transaction as the link, so GC cannot take the blob in between. Never records a blob:
    /// a row that is gone (GC took it, object and all, since the caller looked) is
    /// [`Linked::Absent`] — writing a new one here would point at nothing. Links nothing when GC
    /// is deleting the blob's object, or when the blob would take `namespace` over its quota:
    /// the quota is read (and on PostgreSQL locked) in the same transaction, so uploads
    /// finishing at the same time cannot together go over it.
    pub async fn link_blob(&self, repository_id: i64, digest: &Digest, size: u64, namespace: &str) -> Result<Linked> {
        self.link(repository_id, digest, size, namespace, None).await
    }

    /// Records a verified blob the caller has just made visible in the blob store (the row
    /// comes last) and links it, as [`Meta::link_blob`]. When no row exists, `object_exists`
    /// is asked inside the transaction that writes the new one, before it commits: GC deletes
    /// an object only under a row marked `deleting` and drops that row after the object is
    /// gone, so a collector that claimed and deleted this object since it was stored is seen
    /// here (no object: [`Linked::Absent`], nothing written), and one that comes after finds
    /// the row and leaves the object alone.
    pub async fn link_stored_blob<F>(
        &self,
        repository_id: i64,
        digest: &Digest,
        size: u64,
        namespace: &str,
        object_exists: F,
    ) -> Result<Linked>
    where
        F: std::future::Future<Output = Result<bool>> + Send,
    {
        self.link(repository_id, digest, size, namespace, Some(Box::pin(object_exists))).await
    }

    async fn link(
        &self,
        repository_id: i64,
        digest: &Digest,
        size: u64,
        namespace: &str,
        object_exists: Option<futures_util::future::BoxFuture<'_, Result<bool>>>,
    ) -> Result<Linked> {
        let mut tx = self.begin_write().await?;
        let quota_sql = match self.kind {
            DbKind::Postgres => "SELECT max_bytes FROM namespace_quotas WHERE namespace = $1 FOR UPDATE",
            DbKind::Sqlite => "SELECT max_bytes FROM namespace_quotas WHERE namespace = $1",
        };
        let quota: Option<i64> =
            sqlx::query(quota_sql).bind(namespace).fetch_optional(&mut *tx).await?.map(|r| r.get(0));
        if let Some(quota) = quota
            && !quotas::namespace_has_blob_on(&mut *tx, namespace, digest.as_str()).await?
        {
            let usage = quotas::namespace_usage_on(&mut *tx, namespace).await?;
            if usage.saturating_add(i64::try_from(size).unwrap_or(i64::MAX)) > quota {
                return Ok(Linked::OverQuota { quota, usage });
            }
        }
        let t = now();
        // A row that is not marked has its object (GC marks before it deletes): refresh it.
        let refresh = "UPDATE blobs SET created_at = $1 WHERE digest = $2 AND deleting IS NULL";
        let refreshed = sqlx::query(refresh).bind(t).bind(digest.as_str()).execute(&mut *tx).await?.rows_affected();
        if refreshed == 0 {
            let Some(object_exists) = object_exists else {
                let row = sqlx::query("SELECT 1 FROM blobs WHERE digest = $1")
                    .bind(digest.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                return Ok(if row.is_some() { Linked::Deleting } else { Linked::Absent });
            };
            let inserted = sqlx::query(
                "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
            )
            .bind(digest.as_str())
            .bind(size as i64)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                // A row is there: marked, or (PostgreSQL) committed by another push meanwhile.
                let again = sqlx::query(refresh).bind(t).bind(digest.as_str()).execute(&mut *tx).await?;
                if again.rows_affected() == 0 {
                    return Ok(Linked::Deleting);
                }
            } else if !object_exists.await? {
                // Collected between the caller's store and this transaction: write nothing.
                return Ok(Linked::Absent);
            }
        }
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repository_id)
        .bind(digest.as_str())
        .bind(t)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Linked::Done)
    }

    /// Removes a blob's link from a repository; false when it was not linked.
    pub async fn unlink_blob(&self, repository_id: i64, digest: &Digest) -> Result<bool> {
        let done = sqlx::query("DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2")
            .bind(repository_id)
            .bind(digest.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- manifests and tags -----------------------------------------------------------------

    /// Stores a manifest (and optionally points a tag at it) after checking, inside the same
    /// transaction, that every blob and child manifest it references is in the repository
    /// (unless `check_references` is off: the mirror caches manifests before their blobs).
    pub async fn put_manifest(
        &self,
        repository_id: i64,
        digest: &Digest,
        parsed: &ParsedManifest,
        content: &[u8],
        tag: Option<&str>,
        check_references: bool,
    ) -> Result<()> {
        let blobs = parsed.required_blobs()?;
        let children = parsed.required_manifests()?;
        let mut tx = self.begin_write().await?;
        if check_references {
            // Refreshing the rows this manifest depends on conflicts with garbage collection
            // deleting them (it re-checks their age): one of the two transactions wins.
            touch(&mut tx, "repository_blobs", repository_id, &blobs).await?;
            touch(&mut tx, "manifests", repository_id, &children).await?;
            if let Some(missing) = first_missing(&mut tx, "repository_blobs", repository_id, &blobs).await? {
                return Err(RegistryError::ManifestBlobUnknown(format!("blob {missing} is not in this repository")));
            }
            if let Some(missing) = first_missing(&mut tx, "manifests", repository_id, &children).await? {
                return Err(RegistryError::ManifestBlobUnknown(format!(
                    "manifest {missing} is not in this repository"
                )));
            }
        }
        let t = now();
        let annotations = parsed.annotations.as_ref().map(|a| serde_json::Value::Object(a.clone()).to_string());
        let config_digest = parsed.config.as_ref().map(|c| c.digest.clone());
        sqlx::query(
            "INSERT INTO manifests (repository_id, digest, media_type, size, content, artifact_type, \
             subject, config_digest, annotations, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repository_id)
        .bind(digest.as_str())
        .bind(parsed.media_type.as_str())
        .bind(content.len() as i64)
        .bind(content.to_vec())
        .bind(parsed.artifact_type.clone())
        .bind(parsed.subject.as_ref().map(|s| s.to_string()))
        .bind(config_digest)
        .bind(annotations)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        let refs = blobs.iter().map(|d| (d, "blob")).chain(children.iter().map(|d| (d, "manifest")));
        for (child, kind) in refs {
            sqlx::query(
                "INSERT INTO manifest_references (repository_id, parent_digest, child_digest, kind) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(repository_id)
            .bind(digest.as_str())
            .bind(child.as_str())
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(tag) = tag {
            sqlx::query(
                "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repository_id)
            .bind(tag)
            .bind(digest.as_str())
            .bind(t)
            .execute(&mut *tx)
            .await?;
            bump_tags_version(&mut tx, repository_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A manifest by tag.
    pub async fn manifest_by_tag(&self, repository: &str, tag: &str) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content FROM repositories r \
             JOIN tags t ON t.repository_id = r.id \
             JOIN manifests m ON m.repository_id = r.id AND m.digest = t.digest \
             WHERE r.name = $1 AND t.name = $2",
        )
        .bind(repository)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| ManifestRecord { digest: r.get(0), media_type: r.get(1), content: r.get(2) }))
    }

    /// Where a tag points and when it was last set or confirmed (Unix seconds).
    pub async fn tag_state(&self, repository: &str, tag: &str) -> Result<Option<(String, i64)>> {
        let row = sqlx::query(
            "SELECT t.digest, t.updated_at FROM repositories r JOIN tags t ON t.repository_id = r.id \
             WHERE r.name = $1 AND t.name = $2",
        )
        .bind(repository)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Records that a tag was confirmed now (the mirror revalidated it upstream).
    pub async fn touch_tag(&self, repository: &str, tag: &str) -> Result<()> {
        sqlx::query(
            "UPDATE tags SET updated_at = $1 WHERE name = $2 \
             AND repository_id = (SELECT id FROM repositories WHERE name = $3)",
        )
        .bind(now())
        .bind(tag)
        .bind(repository)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A manifest by digest.
    pub async fn manifest_by_digest(&self, repository: &str, digest: &Digest) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content FROM repositories r \
             JOIN manifests m ON m.repository_id = r.id \
             WHERE r.name = $1 AND m.digest = $2",
        )
        .bind(repository)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| ManifestRecord { digest: r.get(0), media_type: r.get(1), content: r.get(2) }))
    }

    /// Removes a tag; false when there was none.
    pub async fn delete_tag(&self, repository_id: i64, tag: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM tags WHERE repository_id = $1 AND name = $2")
            .bind(repository_id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        bump_tags_version(&mut tx, repository_id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a manifest, the tags that point at it and its reference rows; false when absent.
    pub async fn delete_manifest(&self, repository_id: i64, digest: &Digest) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(repository_id)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for sql in [
            "DELETE FROM tags WHERE repository_id = $1 AND digest = $2",
            "DELETE FROM manifest_references WHERE repository_id = $1 AND parent_digest = $2",
        ] {
            sqlx::query(sql).bind(repository_id).bind(digest.as_str()).execute(&mut *tx).await?;
        }
        // Its tags went with it: other nodes' caches of the repository's tags and of the
        // manifests they name see the change by the version.
        bump_tags_version(&mut tx, repository_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A repository's id and tags version.
    pub async fn repository_tags_version(&self, name: &str) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query("SELECT id, tags_version FROM repositories WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// All tags of a repository in byte order. They come back as one newline-joined value
    /// (tags cannot contain newlines), so thousands of tags cost one row.
    pub async fn all_tags(&self, repository_id: i64) -> Result<Vec<String>> {
        let sql = match self.kind {
            DbKind::Sqlite => "SELECT group_concat(name, char(10) ORDER BY name) FROM tags WHERE repository_id = $1",
            DbKind::Postgres => "SELECT string_agg(name, chr(10) ORDER BY name) FROM tags WHERE repository_id = $1",
        };
        let row = sqlx::query(sql).bind(repository_id).fetch_one(&self.pool).await?;
        let joined: Option<String> = row.get(0);
        Ok(joined.map(|j| j.split('\n').map(String::from).collect()).unwrap_or_default())
    }

    /// Manifests whose subject is `subject`, optionally only those of one artifact type.
    pub async fn referrers(
        &self,
        repository_id: i64,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests \
             WHERE repository_id = $1 AND subject = $2 AND ($3 = '' OR artifact_type = $3) \
             ORDER BY created_at, digest",
        )
        .bind(repository_id)
        .bind(subject.as_str())
        .bind(artifact_type.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Referrer {
                digest: r.get(0),
                media_type: r.get(1),
                size: r.get(2),
                artifact_type: r.get(3),
                annotations: r.get(4),
            })
            .collect())
    }

    // ---- uploads ----------------------------------------------------------------------------

    pub async fn create_upload(&self, id: &str, repository_id: i64, state: Option<&str>) -> Result<()> {
        let t = now();
        sqlx::query(
            "INSERT INTO uploads (id, repository_id, size, state, created_at, updated_at) \
             VALUES ($1, $2, 0, $3, $4, $4)",
        )
        .bind(id)
        .bind(repository_id)
        .bind(state)
        .bind(t)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An upload session of a repository.
    pub async fn upload(&self, repository: &str, id: &str) -> Result<Option<UploadRecord>> {
        let row = sqlx::query(
            "SELECT u.id, u.repository_id, u.size, u.state, u.hash_state FROM uploads u \
             JOIN repositories r ON r.id = u.repository_id WHERE r.name = $1 AND u.id = $2",
        )
        .bind(repository)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UploadRecord {
            id: r.get(0),
            repository_id: r.get(1),
            size: r.get::<i64, _>(2) as u64,
            state: r.get(3),
            hash_state: r.get(4),
        }))
    }

    /// Records the acknowledged size, backend state and hash state of an upload, if it still
    /// stands at `previous_size` (two writers of one upload on two nodes: one wins). False when
    /// it moved or is gone.
    ///
    /// Committed through the acknowledgement pool, without waiting for the disk: an upload
    /// chunk (a PATCH) costs no database flush. Safe because the spec only asks that a client
    /// can resume from what the server says it has: after a power loss this row may stand at
    /// an earlier chunk (size and hash state together, one atomic row), the upload file is cut
    /// back to that size by the next writer, and the client, answered 416 with the `Range` the
    /// server has, resumes from there (or, as today when the file lost acknowledged bytes,
    /// starts again). The chunk's data is not flushed either (it never was). What must be on
    /// the disk — the blob and its row once a push is answered 201 — still is: the final PUT
    /// fdatasyncs the data before the blob becomes visible and links it with a durable commit,
    /// which also carries every earlier relaxed commit to the disk (one WAL).
    pub async fn update_upload(
        &self,
        id: &str,
        previous_size: u64,
        size: u64,
        state: Option<&str>,
        hash_state: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET size = $1, state = $2, hash_state = $3, updated_at = $4 WHERE id = $5 AND size = $6",
        )
        .bind(size as i64)
        .bind(state)
        .bind(hash_state)
        .bind(now())
        .bind(id)
        .bind(previous_size as i64)
        .execute(&self.acks)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }
}

/// Marks a repository's tag list as changed (inside the transaction that changes it).
async fn bump_tags_version(tx: &mut sqlx::Transaction<'static, sqlx::Any>, repository_id: i64) -> Result<()> {
    sqlx::query("UPDATE repositories SET tags_version = tags_version + 1 WHERE id = $1")
        .bind(repository_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Sets `created_at` to now on the rows of `table` (repository_blobs or manifests) a new
/// manifest depends on, so garbage collection (which only takes rows older than its grace
/// period, re-checked when it deletes) leaves them alone.
async fn touch(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    repository_id: i64,
    digests: &[Digest],
) -> Result<()> {
    if digests.is_empty() {
        return Ok(());
    }
    let table = match table {
        "repository_blobs" => "repository_blobs",
        _ => "manifests",
    };
    let sql = format!(
        "UPDATE {table} SET created_at = $2 WHERE repository_id = $1 AND digest IN ({})",
        placeholders(3, digests.len())
    );
    // Only the fixed table names above and numbered placeholders are formatted in.
    let mut q = in_list_query(sql).bind(repository_id).bind(now());
    for d in digests {
        q = q.bind(d.as_str());
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// A query whose text has an `IN (...)` list of its bound values' length (see [`placeholders`];
/// only fixed SQL and numbered placeholders may be formatted into `sql`). It is prepared for this
/// one execution and not kept: sqlx keeps up to 100 prepared statements per connection, and
/// each list length is a statement of its own, so kept ones pile up on every connection — on
/// SQLite in this process's memory, which the soak saw creep up for an hour.
fn in_list_query(sql: String) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false)
}

/// `$first, $first+1, ...` for `n` bound values.
fn placeholders(first: usize, n: usize) -> String {
    (0..n).map(|i| format!("${}", first + i)).collect::<Vec<_>>().join(", ")
}

/// The first of `digests` that `table` (repository_blobs or manifests) lacks for a repository.
async fn first_missing(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    repository_id: i64,
    digests: &[Digest],
) -> Result<Option<Digest>> {
    if digests.is_empty() {
        return Ok(None);
    }
    let table = match table {
        "repository_blobs" => "repository_blobs",
        _ => "manifests",
    };
    let sql = format!(
        "SELECT digest FROM {table} WHERE repository_id = $1 AND digest IN ({})",
        placeholders(2, digests.len())
    );
    // Only the fixed table names above and numbered placeholders are formatted in.
    let mut q = in_list_query(sql).bind(repository_id);
    for d in digests {
        q = q.bind(d.as_str());
    }
    let found: std::collections::HashSet<String> =
        q.fetch_all(&mut **tx).await?.iter().map(|r| r.get::<String, _>(0)).collect();
    Ok(digests.iter().find(|d| !found.contains(d.as_str())).cloned())
}
