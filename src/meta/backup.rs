//! The database's part of a backup and a restore (`crate::manage::backup` drives them).
//!
//! SQLite: `VACUUM INTO` writes a consistent copy of the live database (a read transaction:
//! pushes go on meanwhile) into one standalone file; the blobs it references are then read
//! from that copy. PostgreSQL: `pg_dump` (custom format) inside a snapshot this connection
//! exports (`pg_export_snapshot` in a `REPEATABLE READ` transaction), and the blob list read in
//! the same transaction, so the dump and the list are the same instant. `pg_dump` rather than
//! a dump through sqlx: it is the tool that knows every type, sequence and constraint, and its
//! file is restored with the standard `pg_restore` (by `berth restore` or by hand).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use super::{DbKind, Meta};

/// What a database snapshot holds.
#[derive(Debug, Clone, Default)]
pub struct SnapshotInventory {
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Every blob row, `(digest, size, being deleted by GC)`, sorted by digest.
    pub blobs: Vec<(String, u64, bool)>,
}

/// The file of a SQLite URL (`sqlite://PATH?mode=rwc`, `sqlite:PATH`).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// A PostgreSQL URL without its password, and the password (for `PGPASSWORD`, so it does not
/// show in the process list).
fn split_password(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let mut parsed = reqwest::Url::parse(url)?;
    let password = parsed.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
    let _ = parsed.set_password(None);
    Ok((parsed.to_string(), password))
}

/// Runs a PostgreSQL client tool (`pg_dump`, `pg_restore`) on `url`.
async fn pg_tool(tool: &str, args: &[&str], url: &str) -> anyhow::Result<()> {
    let (url, password) = split_password(url)?;
    let mut cmd = tokio::process::Command::new(tool);
    cmd.args(args).arg(format!("--dbname={url}")).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().await.map_err(|e| anyhow::anyhow!("cannot run {tool} (PostgreSQL's client tools): {e}"))?;
    if !out.status.success() {
        anyhow::bail!("{tool} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Counts and blobs, read through `conn` (a snapshot).
async fn inventory(conn: &mut sqlx::AnyConnection) -> anyhow::Result<SnapshotInventory> {
    let mut counts = [0u64; 3];
    for (n, table) in ["repositories", "manifests", "tags"].iter().enumerate() {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(&mut *conn).await?;
        counts[n] = row.try_get::<i64, _>(0)? as u64;
    }
    let mut inv =
        SnapshotInventory { repositories: counts[0], manifests: counts[1], tags: counts[2], blobs: Vec::new() };
    let rows = sqlx::query("SELECT digest, size, deleting FROM blobs ORDER BY digest").fetch_all(&mut *conn).await?;
    for r in rows {
        let deleting: Option<String> = r.try_get(2)?;
        inv.blobs.push((r.try_get(0)?, r.try_get::<i64, _>(1)? as u64, deleting.is_some()));
    }
    Ok(inv)
}

/// [`inventory`] of a SQLite file.
async fn inventory_of_file(file: &Path) -> anyhow::Result<SnapshotInventory> {
    let pool = open_sqlite_read_only(file).await?;
    let inv = match pool.acquire().await {
        Ok(mut conn) => inventory(&mut conn).await,
        Err(e) => Err(e.into()),
    };
    pool.close().await;
    inv
}

impl Meta {
    /// Writes a consistent copy of the database to `file` (SQLite: a database file;
    /// PostgreSQL: a `pg_dump` archive of `url`) while the registry serves; what it holds.
    pub async fn snapshot(&self, url: &str, file: &Path) -> anyhow::Result<SnapshotInventory> {
        match self.kind {
            DbKind::Sqlite => {
                let target = file.to_str().ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", file.display()))?;
                let sql = format!("VACUUM INTO '{}'", target.replace('\'', "''"));
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(self.pool()).await?;
                inventory_of_file(file).await
            }
            DbKind::Postgres => {
                let mut conn = self.pool().acquire().await?;
                sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *conn).await?;
                let result = async {
                    let id: String =
                        sqlx::query("SELECT pg_export_snapshot()").fetch_one(&mut *conn).await?.try_get(0)?;
                    let target = file.to_str().ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", file.display()))?;
                    pg_tool("pg_dump", &["--format=custom", &format!("--snapshot={id}"), "--file", target], url)
                        .await?;
                    inventory(&mut conn).await
                }
                .await;
                let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
                result
            }
        }
    }

    /// What a SQLite backup file holds (to check it before a restore).
    pub async fn inspect_sqlite_file(file: &Path) -> anyhow::Result<SnapshotInventory> {
        inventory_of_file(file).await
    }

    /// Loads a `pg_dump` archive into the (empty) PostgreSQL database at `url` with
    /// `pg_restore`, in one transaction.
    pub async fn restore_postgres(url: &str, file: &Path) -> anyhow::Result<()> {
        let target = file.to_str().ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", file.display()))?;
        pg_tool("pg_restore", &["--no-owner", "--exit-on-error", "--single-transaction", target], url).await
    }

    /// The tables of the database at `url` (without applying migrations): empty for a database
    /// nothing was restored into.
    pub async fn tables_at(url: &str) -> anyhow::Result<Vec<String>> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new().max_connections(1).connect(url).await?;
        let sql = if url.starts_with("sqlite:") {
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        } else {
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
        };
        let rows = sqlx::query(sql).fetch_all(&pool).await?;
        pool.close().await;
        Ok(rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
    }

    /// Every blob row `(digest, size)` (to check a restore: each must have its object).
    pub async fn all_blobs(&self) -> crate::error::Result<Vec<(String, u64)>> {
        let rows = sqlx::query("SELECT digest, size FROM blobs WHERE deleting IS NULL ORDER BY digest")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? as u64))).collect()
    }
}

async fn open_sqlite_read_only(file: &Path) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=ro", file.display());
    Ok(AnyPoolOptions::new().max_connections(1).connect(&url).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(sqlite_file("sqlite:///srv/b.db?mode=rwc"), Some(PathBuf::from("/srv/b.db")));
        assert_eq!(sqlite_file("sqlite:rel.db"), Some(PathBuf::from("rel.db")));
        assert_eq!(sqlite_file("postgres://x/y"), None);
        let (url, pw) = split_password("postgres://berth:s%40cret@127.0.0.1:5432/db").unwrap();
        assert_eq!((url.as_str(), pw.as_deref()), ("postgres://berth@127.0.0.1:5432/db", Some("s@cret")));
    }

    /// A snapshot of a live database holds its rows; the blob list comes from the copy.
    #[tokio::test]
    async fn a_sqlite_snapshot_lists_its_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = Meta::temp_sqlite(tmp.path()).await;
        let repo = meta.ensure_repository("a/b").await.unwrap();
        let digest = crate::oci::Digest::sha256_of(b"x");
        meta.link_stored_blob(repo, &digest, 1, "a", async { Ok(true) }).await.unwrap();
        let file = tmp.path().join("copy.db");
        let inv = meta.snapshot("", &file).await.unwrap();
        assert_eq!(inv.repositories, 1);
        assert_eq!(inv.blobs, vec![(digest.to_string(), 1, false)]);
        // Rows written after the snapshot are not in it.
        meta.link_stored_blob(repo, &crate::oci::Digest::sha256_of(b"y"), 1, "a", async { Ok(true) }).await.unwrap();
        assert_eq!(Meta::inspect_sqlite_file(&file).await.unwrap().blobs.len(), 1);
        assert_eq!(meta.all_blobs().await.unwrap().len(), 2);
        assert!(
            Meta::tables_at(&format!("sqlite://{}?mode=ro", file.display())).await.unwrap().contains(&"blobs".into())
        );
    }
}
