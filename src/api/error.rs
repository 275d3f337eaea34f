//! The one mapping of [`RegistryError`] to the spec's error codes, HTTP statuses, extra headers
//! and JSON body, used by every HTTP door (`/v2`, `/token`, `/api/v1`, the UI). Internal errors
//! are logged with their context and answered as a bare 500, so no path, query or secret
//! reaches a client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::error::RegistryError;

impl RegistryError {
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
            InsufficientStorage(_) => "INSUFFICIENT_STORAGE",
            RequestTimeout(_) => "REQUEST_TIMEOUT",
            UrlTooLong(_) => "URL_TOO_LONG",
            HeadersTooLarge(_) => "HEADERS_TOO_LARGE",
            Invalid(_) => "INVALID",
            NotFound(_) => "NOT_FOUND",
            Conflict(_) => "CONFLICT",
            Unavailable(_) | Unreachable(_) => "UNAVAILABLE",
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
            InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            UrlTooLong(_) => StatusCode::URI_TOO_LONG,
            HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            NotFound(_) => StatusCode::NOT_FOUND,
            Conflict(_) => StatusCode::CONFLICT,
            Unavailable(_) => StatusCode::BAD_GATEWAY,
            Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            RangeInvalid { .. } | RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Denied(_) => StatusCode::FORBIDDEN,
            TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see.
    pub(crate) fn public_message(&self) -> String {
        match self {
            RegistryError::Internal(_) => "internal server error".to_string(),
            other => other.to_string(),
        }
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
                resp.insert_header((header::RANGE, super::range_header(*size)));
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
            RegistryError::Unreachable(_) => {
                resp.insert_header((header::RETRY_AFTER, "5"));
            }
            // The body was not read to its end: the connection cannot carry another request.
            RegistryError::RequestTimeout(_) | RegistryError::UrlTooLong(_) | RegistryError::HeadersTooLarge(_) => {
                resp.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        resp.body(body.to_string())
    }
}

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
        let full = RegistryError::from(std::io::Error::from_raw_os_error(28));
        assert_eq!((full.status(), full.code()), (StatusCode::INSUFFICIENT_STORAGE, "INSUFFICIENT_STORAGE"));
        let gone = RegistryError::from(sqlx::Error::PoolTimedOut);
        assert_eq!((gone.status(), gone.code()), (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"));
    }
}
