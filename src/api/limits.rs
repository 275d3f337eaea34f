//! Request heads refused before any handler runs: a request target longer than
//! `limits.max_url_bytes` gets 414, more headers than `limits.max_header_count` or more header
//! bytes than `limits.max_header_bytes` get 431, each with the registry's JSON error body and
//! the connection closed. Beyond these, actix-web's HTTP/1 parser stops at 96 headers or a
//! 128 KiB head by itself (431, connection closed), so no request head costs more than that.

use std::sync::OnceLock;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

use crate::config::LimitsConfig;
use crate::error::RegistryError;

/// The limits of request heads, set once when the server is built.
#[derive(Debug, Clone, Copy)]
struct HeadLimits {
    url: usize,
    count: usize,
    bytes: usize,
}

static LIMITS: OnceLock<HeadLimits> = OnceLock::new();

/// Sets the limits from the configuration (the first call wins).
pub fn init(config: &LimitsConfig) {
    let _ = LIMITS.set(HeadLimits {
        url: config.max_url_bytes,
        count: config.max_header_count,
        bytes: config.max_header_bytes,
    });
}

/// What is wrong with a request head, if anything.
fn check(limits: &HeadLimits, req: &ServiceRequest) -> Option<RegistryError> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > limits.url {
        return Some(RegistryError::UrlTooLong(format!(
            "the request target has {target} bytes; at most {} are accepted",
            limits.url
        )));
    }
    let headers = req.headers();
    if headers.len() > limits.count {
        return Some(RegistryError::HeadersTooLarge(format!(
            "the request has {} headers; at most {} are accepted",
            headers.len(),
            limits.count
        )));
    }
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if bytes > limits.bytes {
        return Some(RegistryError::HeadersTooLarge(format!(
            "the request's headers have {bytes} bytes; at most {} are accepted",
            limits.bytes
        )));
    }
    None
}

/// Middleware (`actix_web::middleware::from_fn`): refuses heads over the limits.
pub async fn check_head(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(limits) = LIMITS.get()
        && let Some(e) = check(limits, &req)
    {
        return Err(e.into());
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn heads_over_the_limits_are_refused() {
        let limits = HeadLimits { url: 32, count: 3, bytes: 40 };
        let ok = TestRequest::get().uri("/v2/a/b/manifests/latest").to_srv_request();
        assert!(check(&limits, &ok).is_none());
        let long = TestRequest::get().uri(&format!("/v2/{}", "a".repeat(40))).to_srv_request();
        assert!(matches!(check(&limits, &long), Some(RegistryError::UrlTooLong(_))));
        let mut many = TestRequest::get().uri("/v2/");
        for i in 0..4 {
            many = many.insert_header((format!("x-h{i}"), "v"));
        }
        assert!(matches!(check(&limits, &many.to_srv_request()), Some(RegistryError::HeadersTooLarge(_))));
        let big = TestRequest::get().uri("/v2/").insert_header(("x-big", "v".repeat(50))).to_srv_request();
        assert!(matches!(check(&limits, &big), Some(RegistryError::HeadersTooLarge(_))));
    }
}
