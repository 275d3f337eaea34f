//! Blob and upload endpoints.

use actix_web::body::SizedStream;
use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse};

use super::body::Body;
use super::{AppState, content_length, query_map, range_header};
use crate::auth::Identity;
use crate::error::{RegistryError, Result};
use crate::oci::Digest;
use crate::registry::{ByteRange, Registry, UploadStatus};

/// The range of a `Range` header: `bytes=start-end`, `bytes=start-` or `bytes=-suffix`;
/// `None` for no header or one served whole (several ranges, other units, syntax errors, which
/// RFC 9110 lets a server ignore).
fn parse_range(req: &HttpRequest) -> Result<Option<ByteRange>> {
    let Some(value) = req.headers().get(header::RANGE) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| RegistryError::BadRequest("invalid Range header".into()))?;
    Ok(range_of(value))
}

/// A `Range` header's value as [`parse_range`] reads it (public for the fuzz targets in `fuzz/`).
pub fn range_of(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let number = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        return Some(ByteRange::Suffix(number(end)?));
    }
    let start = number(start)?;
    let end = match end {
        "" => None,
        e => Some(number(e).filter(|&e| e >= start)?),
    };
    Some(ByteRange::From { start, end })
}

/// GET and HEAD of a blob.
pub async fn get(req: &HttpRequest, registry: &Registry, name: &str, digest: &Digest) -> Result<HttpResponse> {
    if req.method() == Method::HEAD {
        let size = registry.stat_blob(name, digest).await?;
        return Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
            .insert_header(("Docker-Content-Digest", digest.as_str()))
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .insert_header((header::ETAG, format!("\"{digest}\"")))
            .body(SizedStream::new(size, futures_util::stream::empty::<std::io::Result<bytes::Bytes>>())));
    }
    let range = parse_range(req)?;
    if range.is_none()
        && let Some(url) = registry.blob_redirect(name, digest).await?
    {
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, url))
            .insert_header(("Docker-Content-Digest", digest.as_str()))
            .finish());
    }
    let read = registry.read_blob(name, digest, range).await?;
    let (status, len) = match &read.range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
        None => (StatusCode::OK, read.size),
    };
    let mut resp = HttpResponse::build(status);
    resp.insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, format!("\"{digest}\"")))
        .insert_header((header::CACHE_CONTROL, "max-age=31536000"));
    if let Some(r) = &read.range {
        resp.insert_header((header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end - 1, read.size)));
    }
    Ok(resp.body(SizedStream::new(len, read.body)))
}

/// A blob streamed as the mirror fetches it.
pub fn live(digest: &Digest, blob: crate::mirror::LiveBlob) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .insert_header((header::ETAG, format!("\"{digest}\"")));
    match blob.size {
        Some(size) => resp.body(SizedStream::new(size, blob.body)),
        None => resp.streaming(blob.body),
    }
}

/// DELETE of a blob: unlinks it from the repository.
pub async fn delete(registry: &Registry, name: &str, digest: &Digest) -> Result<HttpResponse> {
    registry.delete_blob(name, digest).await?;
    Ok(HttpResponse::Accepted().insert_header((header::CONTENT_LENGTH, 0)).finish())
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// The answer for an upload in progress (202 after POST and PATCH, 204 for GET).
fn upload_response(status: StatusCode, name: &str, upload: &UploadStatus) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::LOCATION, upload_location(name, &upload.id)))
        .insert_header(("Docker-Upload-UUID", upload.id.as_str()))
        .insert_header((header::RANGE, range_header(upload.size)))
        .insert_header((header::CONTENT_LENGTH, 0))
        .finish()
}

/// The answer for a blob that is now in the repository.
fn created_blob(name: &str, digest: &Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v2/{name}/blobs/{digest}")))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .insert_header((header::CONTENT_LENGTH, 0))
        .finish()
}

fn digest_param(req: &HttpRequest) -> Result<Option<Digest>> {
    match query_map(req).get("digest") {
        Some(d) => Ok(Some(d.parse()?)),
        None => Ok(None),
    }
}

/// POST: starts an upload, mounts a blob from another repository, or takes a whole blob at once.
pub async fn start_upload(
    req: &HttpRequest,
    payload: Body,
    state: &AppState,
    who: &Identity,
    name: &str,
) -> Result<HttpResponse> {
    let registry = &state.registry;
    let query = query_map(req);
    if let Some(mount) = query.get("mount") {
        let digest: Digest = mount.parse()?;
        let source = match query.get("from") {
            Some(from) if state.auth.may_mount_from(who, from).await? => Some(from.clone()),
            Some(_) => None,
            None => {
                let mut found = None;
                for repo in registry.repositories_linking(&digest, 100).await? {
                    if state.auth.may_pull(who, &repo).await? {
                        found = Some(repo);
                        break;
                    }
                }
                found
            }
        };
        if let Some(source) = source
            && registry.mount_blob(name, &digest, &source).await?
        {
            return Ok(created_blob(name, &digest));
        }
    } else if let Some(digest) = digest_param(req)? {
        // Monolithic upload: the whole blob in the POST body.
        let upload = registry.start_upload(name).await?;
        if let Err(e) = registry.finish_upload(name, &upload.id, &digest, Some(payload)).await {
            // The client got no Location for this session and cannot go on with it: it goes now
            // with its bytes (on a full disk, with the space they took).
            match registry.cancel_upload(name, &upload.id).await {
                Ok(()) | Err(RegistryError::BlobUploadUnknown(_)) => {}
                Err(c) => tracing::warn!(upload = %upload.id, error = %c, "cannot drop a failed monolithic upload"),
            }
            return Err(e);
        }
        return Ok(created_blob(name, &digest));
    }
    let upload = registry.start_upload(name).await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, &upload))
}

/// GET of an upload: where it stands.
pub async fn upload_status(registry: &Registry, name: &str, id: &str) -> Result<HttpResponse> {
    let upload = registry.upload_status(name, id).await?;
    Ok(upload_response(StatusCode::NO_CONTENT, name, &upload))
}

/// Parses `Content-Range: start-end` (also accepting a `bytes ` or `bytes=` prefix).
fn content_range(req: &HttpRequest) -> Result<Option<(u64, u64)>> {
    let Some(value) = req.headers().get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| invalid_content_range())?;
    content_range_of(value).map(Some)
}

fn invalid_content_range() -> RegistryError {
    RegistryError::RangeInvalid { message: "invalid Content-Range".into(), upload_size: None }
}

/// A `Content-Range` header's value as (start, inclusive end), as [`content_range`] reads it
/// (public for the fuzz targets in `fuzz/`).
pub fn content_range_of(value: &str) -> Result<(u64, u64)> {
    let invalid = invalid_content_range;
    let value = value.trim();
    let spec = value.strip_prefix("bytes").map(|s| s.trim_start_matches([' ', '='])).unwrap_or(value);
    let spec = spec.split('/').next().unwrap_or(spec);
    let (start, end) = spec.split_once('-').ok_or_else(invalid)?;
    let start: u64 = start.trim().parse().map_err(|_| invalid())?;
    let end: u64 = end.trim().parse().map_err(|_| invalid())?;
    // Sizes are stored as i64: an end beyond that is no real upload (and `end - start + 1`
    // must not overflow).
    if end < start || end >= i64::MAX as u64 {
        return Err(invalid());
    }
    Ok((start, end))
}

/// The `Content-Range` of a chunk as (start, length), checked against its `Content-Length`.
fn chunk_range(req: &HttpRequest) -> Result<(Option<u64>, Option<u64>)> {
    let (start, len) = match content_range(req)? {
        Some((start, end)) => (Some(start), Some(end - start + 1)),
        None => (None, None),
    };
    if let (Some(len), Some(cl)) = (len, content_length(req))
        && len != cl
    {
        return Err(RegistryError::RangeInvalid {
            message: format!("Content-Range covers {len} bytes but Content-Length is {cl}"),
            upload_size: None,
        });
    }
    Ok((start, len))
}

/// A chunk out of place (PATCH or closing PUT): 416 with where the upload stands (`Range`) and
/// where to send the next chunk (`Location`); other errors as they are.
fn chunk_refused(e: RegistryError, name: &str, id: &str) -> Result<HttpResponse> {
    if !matches!(e, RegistryError::RangeInvalid { .. }) {
        return Err(e);
    }
    let mut resp = actix_web::ResponseError::error_response(&e);
    if let (Ok(location), Ok(uuid)) =
        (header::HeaderValue::from_str(&upload_location(name, id)), header::HeaderValue::from_str(id))
    {
        resp.headers_mut().insert(header::LOCATION, location);
        resp.headers_mut().insert(header::HeaderName::from_static("docker-upload-uuid"), uuid);
    }
    Ok(resp)
}

/// PATCH: appends a chunk (with `Content-Range`) or streams the body.
pub async fn patch_upload(
    req: &HttpRequest,
    payload: Body,
    registry: &Registry,
    name: &str,
    id: &str,
) -> Result<HttpResponse> {
    let (start, len) = chunk_range(req)?;
    match registry.append_upload(name, id, start, len, payload).await {
        Ok(upload) => Ok(upload_response(StatusCode::ACCEPTED, name, &upload)),
        Err(e) => chunk_refused(e, name, id),
    }
}

/// PUT: completes an upload, with or without a final chunk (whose `Content-Range`, if sent,
/// must start where the upload ends, as for PATCH).
pub async fn put_upload(
    req: &HttpRequest,
    payload: Body,
    registry: &Registry,
    name: &str,
    id: &str,
) -> Result<HttpResponse> {
    let digest = digest_param(req)?
        .ok_or_else(|| RegistryError::DigestInvalid("the digest query parameter is required".into()))?;
    let has_body = content_length(req).is_some_and(|l| l > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    let (start, len) = if has_body { chunk_range(req)? } else { (None, None) };
    let body = has_body.then_some(payload);
    match registry.finish_upload_at(name, id, &digest, start, len, body).await {
        Ok(_) => Ok(created_blob(name, &digest)),
        Err(e) => chunk_refused(e, name, id),
    }
}

/// DELETE of an upload: cancels it.
pub async fn cancel_upload(registry: &Registry, name: &str, id: &str) -> Result<HttpResponse> {
    registry.cancel_upload(name, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        let from = |start, end| Some(ByteRange::From { start, end });
        assert_eq!(range_of("bytes=4-7"), from(4, Some(7)));
        assert_eq!(range_of("bytes=10-"), from(10, None));
        assert_eq!(range_of("bytes=-6"), Some(ByteRange::Suffix(6)));
        assert_eq!(range_of("bytes=-0"), Some(ByteRange::Suffix(0)));
        // Served whole: several ranges, other units, nonsense, a backwards range.
        for whole in
            ["bytes=0-1,4-5", "items=0-1", "bytes=-", "bytes=--5", "bytes=a-b", "bytes=+1-2", "bytes=7-4", "0-4"]
        {
            assert_eq!(range_of(whole), None, "{whole}");
        }
    }
}
