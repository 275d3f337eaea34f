//! The one error type of every service. It knows nothing of HTTP: its single mapping to the
//! spec's error codes and HTTP statuses is `crate::api::error`, the doors' floor.

/// Every failure a registry operation can report.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    BlobUnknown(String),
    #[error("{0}")]
    BlobUploadInvalid(String),
    #[error("{0}")]
    BlobUploadUnknown(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    ManifestBlobUnknown(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("{0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    NameUnknown(String),
    #[error("{0}")]
    SizeInvalid(String),
    /// A body larger than the registry accepts (413).
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    PaginationInvalid(String),
    /// A chunk that does not continue the upload where it ends (416).
    #[error("{message}")]
    RangeInvalid {
        message: String,
        /// Bytes already received, for the `Range` header of the answer.
        upload_size: Option<u64>,
    },
    /// A blob `Range` request outside the blob (416).
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { blob_size: u64 },
    #[error("{message}")]
    Unauthorized {
        message: String,
        /// The `WWW-Authenticate` challenge to send.
        challenge: Option<String>,
    },
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// Management API: a request that is not valid (400).
    #[error("{0}")]
    Invalid(String),
    /// Management API: no such thing (404).
    #[error("{0}")]
    NotFound(String),
    /// Management API: the name is taken (409).
    #[error("{0}")]
    Conflict(String),
    /// The mirror's upstream failed and nothing is cached (502).
    #[error("{0}")]
    Unavailable(String),
    /// A service Berth needs for this request does not answer (the directory; 503).
    #[error("{0}")]
    Unreachable(String),
    /// The storage (the blob store's disk, or the database's) is full (507).
    #[error("{0}")]
    InsufficientStorage(String),
    /// The request body stalled longer than `limits.body_timeout_secs` (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// A request target longer than `limits.max_url_bytes` (414).
    #[error("{0}")]
    UrlTooLong(String),
    /// More or larger headers than `limits.max_header_count` / `max_header_bytes` (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The client went away or sent a broken body.
    #[error("{0}")]
    BadRequest(String),
    /// Anything unexpected: logged in full, answered as a bare 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// Wraps an unexpected error with what was being done.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        RegistryError::Internal(format!("{context}: {err}"))
    }
}

impl From<sqlx::Error> for RegistryError {
    /// A database that does not answer (no connection within `database.acquire_timeout_secs`,
    /// a lost connection, PostgreSQL shutting down or refusing connections, SQLite's file
    /// locked or read-only) is 503 with a readable message; a full disk is 507; the rest is
    /// internal. The outage itself goes to the log with its detail.
    fn from(e: sqlx::Error) -> Self {
        match database_fault(&e) {
            Some(DbFault::Unavailable(what)) => {
                tracing::error!(error = %e, "database unavailable");
                RegistryError::Unreachable(format!("the metadata database {what}; try again later"))
            }
            Some(DbFault::Full) => {
                tracing::error!(error = %e, "database: out of space");
                RegistryError::InsufficientStorage("the registry's database has no space left".into())
            }
            None => RegistryError::internal("database", e),
        }
    }
}

/// What kind of outage a database error is, if it is one.
enum DbFault {
    /// Says what happened, for the client's message.
    Unavailable(&'static str),
    Full,
}

fn database_fault(e: &sqlx::Error) -> Option<DbFault> {
    use sqlx::Error;
    match e {
        Error::PoolTimedOut => Some(DbFault::Unavailable("did not answer in time")),
        Error::PoolClosed | Error::WorkerCrashed => Some(DbFault::Unavailable("is not available")),
        Error::Io(io) if is_storage_full(io) => Some(DbFault::Full),
        Error::Io(_) | Error::Tls(_) => Some(DbFault::Unavailable("cannot be reached")),
        Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                // SQLSTATE: disk full; connection exceptions (class 08); shutting down, crashed
                // or starting (57P01-57P03); too many connections; a read-only transaction.
                return match pg.code() {
                    "53100" => Some(DbFault::Full),
                    c if c.starts_with("08") => Some(DbFault::Unavailable("cannot be reached")),
                    "57P01" | "57P02" | "57P03" | "53300" => Some(DbFault::Unavailable("is not available")),
                    "25006" => Some(DbFault::Unavailable("is read-only")),
                    _ => None,
                };
            }
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
            // SQLite's extended result code: the primary code is the low byte.
            match db.code()?.parse::<i32>().ok()? & 0xff {
                5 | 6 => Some(DbFault::Unavailable("is locked by another process")), // BUSY, LOCKED
                8 => Some(DbFault::Unavailable("is read-only")),                     // READONLY
                10 | 14 => Some(DbFault::Unavailable("cannot be read or written")),  // IOERR, CANTOPEN
                13 => Some(DbFault::Full),                                           // FULL
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether an I/O error says the disk (or the user's quota on it) is full.
pub fn is_storage_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(28 | 122)) // ENOSPC, EDQUOT
}

/// Whether an error, or any error it was caused by, is a full disk.
fn caused_by_full_storage(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.downcast_ref::<std::io::Error>().is_some_and(is_storage_full) {
            return true;
        }
        next = err.source();
    }
    false
}

fn storage_full() -> RegistryError {
    RegistryError::InsufficientStorage(
        "the registry's storage is full: nothing was stored; try again when space has been freed".into(),
    )
}

impl From<object_store::Error> for RegistryError {
    fn from(e: object_store::Error) -> Self {
        if caused_by_full_storage(&e) {
            tracing::error!(error = %e, "blob store: out of space");
            return storage_full();
        }
        RegistryError::internal("blob store", e)
    }
}

impl From<std::io::Error> for RegistryError {
    fn from(e: std::io::Error) -> Self {
        if caused_by_full_storage(&e) {
            tracing::error!(error = %e, "blob store: out of space");
            return storage_full();
        }
        RegistryError::internal("i/o", e)
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
