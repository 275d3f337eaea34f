//! The one error type of the registry and its single mapping to the spec's error codes and HTTP
//! statuses. Internal errors are logged with their context and answered as a bare 500, so no
//! path, query or secret reaches a client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

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

    /// The spec error code.
    pub fn code(&self) -> &'static str {
        use RegistryError::*;
        match self {
            BlobUnknown(_) => "BLOB_UNKNOWN",
            BlobUploadInvalid(_) | RangeInvalid { .. } => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid(_) => "DIGEST_INVALID",
            ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid(_) => "MANIFEST_INVALID",
            ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            NameInvalid(_) => "NAME_INVALID",
            NameUnknown(_) => "NAME_UNKNOWN",
            SizeInvalid(_) | TooLarge(_) => "SIZE_INVALID",
            Unsupported(_) => "UNSUPPORTED",
            PaginationInvalid(_) => "PAGINATION_NUMBER_INVALID",
            RangeNotSatisfiable { .. } => "RANGE_INVALID",
            Unauthorized { .. } => "UNAUTHORIZED",
            Denied(_) => "DENIED",
            TooManyRequests(_) => "TOOMANYREQUESTS",
            BadRequest(_) => "BLOB_UPLOAD_INVALID",
            Invalid(_) => "INVALID",
            NotFound(_) => "NOT_FOUND",
            Conflict(_) => "CONFLICT",
            Unavailable(_) => "UNAVAILABLE",
            Internal(_) => "UNKNOWN",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        use RegistryError::*;
        match self {
            BlobUnknown(_) | BlobUploadUnknown(_) | ManifestUnknown(_) | NameUnknown(_) => StatusCode::NOT_FOUND,
            BlobUploadInvalid(_)
            | DigestInvalid(_)
            | ManifestBlobUnknown(_)
            | ManifestInvalid(_)
            | NameInvalid(_)
            | SizeInvalid(_)
            | PaginationInvalid(_)
            | BadRequest(_)
            | Invalid(_) => StatusCode::BAD_REQUEST,
            TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            NotFound(_) => StatusCode::NOT_FOUND,
            Conflict(_) => StatusCode::CONFLICT,
            Unavailable(_) => StatusCode::BAD_GATEWAY,
            Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            RangeInvalid { .. } | RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Denied(_) => StatusCode::FORBIDDEN,
            TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see.
    fn public_message(&self) -> String {
        match self {
            RegistryError::Internal(_) => "internal server error".to_string(),
            other => other.to_string(),
        }
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

impl ResponseError for RegistryError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        if let RegistryError::Internal(detail) = self {
            tracing::error!(error = %detail, "request failed");
        }
        let body = serde_json::json!({
            "errors": [{ "code": self.code(), "message": self.public_message(), "detail": null }]
        });
        let mut resp = HttpResponse::build(self.status());
        resp.insert_header((header::CONTENT_TYPE, "application/json"));
        match self {
            RegistryError::RangeInvalid { upload_size: Some(size), .. } => {
                resp.insert_header((header::RANGE, crate::api::range_header(*size)));
            }
            RegistryError::RangeNotSatisfiable { blob_size } => {
                resp.insert_header((header::CONTENT_RANGE, format!("bytes */{blob_size}")));
            }
            RegistryError::Unauthorized { challenge: Some(c), .. } => {
                if let Ok(v) = HeaderValue::from_str(c) {
                    resp.insert_header((header::WWW_AUTHENTICATE, v));
                }
            }
            RegistryError::TooManyRequests(_) => {
                resp.insert_header((header::RETRY_AFTER, "60"));
            }
            _ => {}
        }
        resp.body(body.to_string())
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak() {
        let e = RegistryError::internal("blob store", "/secret/path/data");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.public_message().contains("secret"));
    }

    #[test]
    fn codes_and_statuses() {
        assert_eq!(RegistryError::BlobUnknown(String::new()).status(), StatusCode::NOT_FOUND);
        assert_eq!(RegistryError::DigestInvalid(String::new()).code(), "DIGEST_INVALID");
        assert_eq!(RegistryError::TooLarge(String::new()).status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
