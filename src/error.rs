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
    fn from(e: sqlx::Error) -> Self {
        RegistryError::internal("database", e)
    }
}

impl From<object_store::Error> for RegistryError {
    fn from(e: object_store::Error) -> Self {
        RegistryError::internal("blob store", e)
    }
}

impl From<std::io::Error> for RegistryError {
    fn from(e: std::io::Error) -> Self {
        RegistryError::internal("i/o", e)
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
