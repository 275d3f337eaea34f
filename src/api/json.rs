//! [`JsonBody`]: the extractor of every JSON request body under `/api/v1` (instead of actix's
//! `web::Json`), so each one goes through the nesting limit ([`crate::oci::json`]) before it is
//! deserialised, and every refusal is a Berth error (`400 INVALID`, `413`) in the API's JSON.

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::RegistryError;

/// A JSON request body, checked for nesting, then deserialised into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for JsonBody<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Whether a request's Content-Type is JSON (`application/json` or `*/*+json`). A body without
/// one is refused, as actix's `web::Json` does: a browser sends such a body across sites
/// without asking first.
fn json_content_type(req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else { return false };
    let Ok(value) = value.to_str() else { return false };
    let bare = crate::oci::manifest::bare_media_type(value).to_ascii_lowercase();
    bare == "application/json" || bare.ends_with("+json")
}

/// Parses a JSON body: the nesting limit first, then serde.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RegistryError> {
    crate::oci::json::check_nesting(bytes).map_err(|e| RegistryError::Invalid(format!("request body: {e}")))?;
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Invalid(format!("request body: {e}")))
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = json_content_type(req);
        // The body within actix's payload limit (256 KiB; 413 beyond).
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !json {
                return Err(
                    RegistryError::Invalid("the body must be JSON (Content-Type: application/json)".into()).into()
                );
            }
            let bytes = body.await?;
            Ok(JsonBody(parse(&bytes)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Name {
        name: String,
    }

    #[test]
    fn nesting_is_checked_before_serde() {
        let ok: Name = parse(br#"{"name":"x","extra":[[[]]]}"#).unwrap();
        assert_eq!(ok.name, "x");
        let deep = format!(r#"{{"name":"x","extra":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        // serde alone takes it (the unknown field is skipped at any depth) ...
        assert!(serde_json::from_str::<Name>(&deep).is_ok());
        // ... the extractor's parse does not.
        assert!(matches!(parse::<Name>(deep.as_bytes()), Err(RegistryError::Invalid(m)) if m.contains("nested")));
        assert!(matches!(parse::<Name>(b"{oops"), Err(RegistryError::Invalid(_))));
    }
}
