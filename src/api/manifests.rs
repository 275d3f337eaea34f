//! Manifest endpoints.

use std::sync::Arc;

use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::content_length;
use crate::error::{RegistryError, Result};
use crate::oci::manifest::{self, Descriptor, bare_media_type, media};
use crate::oci::{Digest, Reference};
use crate::registry::{Registry, ServedManifest};

/// Whether the client's `Accept` allows `media_type`: it lists it, lists `*/*` or
/// `application/*`, or lists nothing (read in place, nothing allocated).
fn allows(req: &HttpRequest, media_type: &str) -> bool {
    let mut listed = false;
    for value in req.headers().get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for t in value.split(',') {
            let t = bare_media_type(t);
            if t == "*/*" || t == "application/*" || t == media_type {
                return true;
            }
            listed |= !t.is_empty();
        }
    }
    !listed
}

/// Picks what to serve for the client's `Accept`. A client that does not take indexes gets
/// the linux/amd64 image of an index requested by tag, as the reference registry does.
async fn negotiate(
    req: &HttpRequest,
    registry: &Registry,
    name: &str,
    reference: &Reference,
    found: Arc<ServedManifest>,
) -> Result<Arc<ServedManifest>> {
    if allows(req, &found.media_type) {
        return Ok(found);
    }
    if media::is_index(&found.media_type) && matches!(reference, Reference::Tag(_)) {
        let parsed = manifest::parse(Some(&found.media_type), &found.body)?;
        let pick = parsed.manifests.iter().find(|d: &&Descriptor| {
            d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                && allows(req, &d.media_type)
        });
        if let Some(d) = pick {
            let digest: Digest = d.digest.parse()?;
            return registry.serve_manifest(name, &Reference::Digest(digest)).await;
        }
    }
    Err(RegistryError::ManifestUnknown(format!(
        "manifest {reference} is a {} which the Accept header does not allow",
        found.media_type
    )))
}

/// GET and HEAD of a manifest: the stored bytes with their media type; also what was served
/// (for the pull event).
pub async fn get(
    req: &HttpRequest,
    registry: &Registry,
    name: &str,
    reference: &Reference,
) -> Result<(HttpResponse, Arc<ServedManifest>)> {
    let found = registry.serve_manifest(name, reference).await?;
    let found = negotiate(req, registry, name, reference, found).await?;
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::CONTENT_TYPE, found.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", found.digest.as_str()))
        .insert_header((header::ETAG, format!("\"{}\"", found.digest)));
    if req.method() == Method::HEAD {
        let len = found.body.len() as u64;
        let body =
            actix_web::body::SizedStream::new(len, futures_util::stream::empty::<std::io::Result<bytes::Bytes>>());
        return Ok((resp.body(body), found));
    }
    Ok((resp.body(found.body.clone()), found))
}

/// PUT of a manifest, by tag or digest.
pub async fn put(
    req: &HttpRequest,
    payload: super::body::Body,
    registry: &Registry,
    name: &str,
    reference: &Reference,
) -> Result<(HttpResponse, crate::registry::PushedManifest)> {
    let limit = registry.limits.max_manifest_bytes;
    let too_large = || RegistryError::TooLarge(format!("manifest larger than {limit} bytes"));
    if content_length(req).is_some_and(|l| l > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut payload = payload.uncounted();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let pushed = registry.put_manifest(name, reference, content_type, &body).await?;
    let mut resp = HttpResponse::Created();
    resp.insert_header((header::LOCATION, format!("/v2/{name}/manifests/{}", pushed.digest)))
        .insert_header(("Docker-Content-Digest", pushed.digest.as_str()))
        .insert_header((header::CONTENT_LENGTH, 0));
    if let Some(subject) = &pushed.subject {
        resp.insert_header(("OCI-Subject", subject.as_str()));
    }
    Ok((resp.finish(), pushed))
}

/// DELETE of a tag (the tag only) or of a manifest by digest.
pub async fn delete(registry: &Registry, name: &str, reference: &Reference) -> Result<HttpResponse> {
    registry.delete_manifest(name, reference).await?;
    Ok(HttpResponse::Accepted().insert_header((header::CONTENT_LENGTH, 0)).finish())
}
