//! A server-side copy of objects over S3's 5 GiB limit for one `CopyObject`: a multipart
//! upload at the destination whose parts are ranges of the source (`UploadPartCopy` with
//! `x-amz-copy-source-range`), copied a few at a time, then completed. Nothing is visible at
//! the destination until `CompleteMultipartUpload` succeeds; any failure aborts the upload, so
//! the object appears whole or not at all.
//!
//! `object_store` 0.14 has no ranged part copy (its `MultipartStore` uploads parts from
//! bytes; the single-part copy it uses for `copy_if_not_exists` sends no range), so the part
//! requests are made here: signed with `object_store`'s own SigV4 signer
//! ([`AwsAuthorizer`], the code that signs every other request to the bucket — no second
//! signing implementation, no new dependency), with the credentials of the store's own
//! provider (so keys from the configuration, the `AWS_*` environment, web identity or instance
//! metadata keep working, refreshed as they expire), sent with the reqwest already in the
//! tree. Creating, completing and aborting the multipart upload go through `object_store`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer, AwsCredentialProvider};
use object_store::client::HttpRequestBody;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::s3::LargeCopy;
use crate::error::{RegistryError, Result};

/// S3's most parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// S3's smallest part (all but the last).
const MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's largest part.
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// What S3 leaves unescaped in a key and a query value (as `object_store` encodes them).
const STRICT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
const STRICT_PATH: &AsciiSet = &STRICT.remove(b'/');

/// Multipart copies within one bucket.
pub struct S3MultipartCopy {
    s3: Arc<AmazonS3>,
    credentials: AwsCredentialProvider,
    http: reqwest::Client,
    /// `https://bucket.s3.region.amazonaws.com`, or `endpoint/bucket` (path style).
    bucket_endpoint: String,
    bucket: String,
    region: String,
    part_size: u64,
    concurrency: usize,
    retries: usize,
}

/// Where the bucket is, as `object_store`'s builder works it out (its own field is private).
pub struct BucketAddress {
    pub bucket_endpoint: String,
    pub bucket: String,
    pub region: String,
}

impl BucketAddress {
    /// The address the built store uses: `builder` is the one it was built from.
    pub fn of(builder: &AmazonS3Builder) -> anyhow::Result<BucketAddress> {
        let get = |key| builder.get_config_value(&key).filter(|v: &String| !v.is_empty());
        let bucket = get(AmazonS3ConfigKey::Bucket).ok_or_else(|| anyhow::anyhow!("storage.s3.bucket is empty"))?;
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
        let bucket_endpoint = match (get(AmazonS3ConfigKey::Endpoint), virtual_hosted) {
            (Some(endpoint), true) => endpoint,
            (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        Ok(BucketAddress { bucket_endpoint: bucket_endpoint.trim_end_matches('/').to_string(), bucket, region })
    }
}

/// The answer to `UploadPartCopy`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CopyPartResult {
    #[serde(rename = "ETag")]
    e_tag: String,
}

/// A part of the copy: its index and the source's bytes `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Part {
    index: usize,
    start: u64,
    end: u64,
}

/// The parts of a copy of `len` bytes in parts of `part_size` (raised so that at most
/// [`MAX_PARTS`] are needed).
fn plan(len: u64, part_size: u64) -> Vec<Part> {
    let size = part_size.clamp(MIN_PART, MAX_PART).max(len.div_ceil(MAX_PARTS));
    (0..len.div_ceil(size))
        .map(|i| Part { index: i as usize, start: i * size, end: ((i + 1) * size).min(len) - 1 })
        .collect()
}

impl S3MultipartCopy {
    /// Copies on `s3` (built at `address`), in parts of `part_size` bytes, `concurrency` at a
    /// time, each part request tried up to `retries` more times. `allow_http` as the store's.
    pub fn new(
        s3: Arc<AmazonS3>,
        address: BucketAddress,
        part_size: u64,
        concurrency: usize,
        retries: usize,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A part of 1 GiB is copied inside S3 in well under a minute; a request that takes
            // longer is retried.
            .timeout(Duration::from_secs(600))
            .build()?;
        Ok(S3MultipartCopy {
            credentials: s3.credentials().clone(),
            s3,
            http,
            bucket_endpoint: address.bucket_endpoint,
            bucket: address.bucket,
            region: address.region,
            part_size,
            concurrency: concurrency.max(1),
            retries,
        })
    }

    /// One `UploadPartCopy`: the ETag of the part.
    async fn copy_part(&self, from: &Path, to: &Path, upload_id: &str, part: Part) -> Result<String> {
        let url = format!(
            "{}/{}?partNumber={}&uploadId={}",
            self.bucket_endpoint,
            utf8_percent_encode(to.as_ref(), STRICT_PATH),
            part.index + 1,
            utf8_percent_encode(upload_id, STRICT)
        );
        let source = format!("{}/{}", self.bucket, utf8_percent_encode(from.as_ref(), STRICT_PATH));
        let range = format!("bytes={}-{}", part.start, part.end);
        let mut attempt = 0;
        loop {
            match self.send_part(&url, &source, &range).await {
                Ok(etag) => return Ok(etag),
                Err(PartError::Retry(e)) if attempt < self.retries => {
                    attempt += 1;
                    tracing::warn!(key = %to, part = part.index + 1, attempt, error = %e, "part copy failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
                }
                Err(PartError::Retry(e) | PartError::Fail(e)) => return Err(e),
            }
        }
    }

    async fn send_part(&self, url: &str, source: &str, range: &str) -> std::result::Result<String, PartError> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| RegistryError::Internal(format!("S3 part copy: {what}: {e}"));
        let credential = self.credentials.get_credential().await.map_err(|e| PartError::Fail(e.into()))?;
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(url)
            .header("x-amz-copy-source", source)
            .header("x-amz-copy-source-range", range)
            .body(HttpRequestBody::empty())
            .map_err(|e| PartError::Fail(fail("request", &e)))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| PartError::Fail(e.into()))?;
        let response = self
            .http
            .put(url)
            .headers(request.headers().clone())
            .body(Vec::<u8>::new())
            .send()
            .await
            .map_err(|e| PartError::Retry(fail("sending", &e)))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| PartError::Retry(fail("reading the answer", &e)))?;
        // S3 may answer 200 and put the error in the body (a copy that failed after the
        // answer started).
        if status.is_success()
            && let Ok(result) = quick_xml::de::from_str::<CopyPartResult>(&body)
        {
            return Ok(result.e_tag);
        }
        let error = fail(&format!("{status}"), &body.chars().take(500).collect::<String>());
        let transient = status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || ["InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"]
                .iter()
                .any(|code| body.contains(&format!("<Code>{code}</Code>")));
        Err(if transient { PartError::Retry(error) } else { PartError::Fail(error) })
    }

    async fn copy_parts(&self, from: &Path, to: &Path, upload_id: &str, len: u64) -> Result<Vec<PartId>> {
        let parts = plan(len, self.part_size);
        futures_util::stream::iter(parts)
            .map(|part| async move {
                let content_id = self.copy_part(from, to, upload_id, part).await?;
                Ok::<_, RegistryError>(PartId { content_id })
            })
            .buffered(self.concurrency)
            .try_collect()
            .await
    }
}

enum PartError {
    /// Worth another try (the network, a 5xx, throttling).
    Retry(RegistryError),
    Fail(RegistryError),
}

#[async_trait]
impl LargeCopy for S3MultipartCopy {
    async fn copy(&self, from: &Path, to: &Path, len: u64) -> Result<()> {
        let started = std::time::Instant::now();
        let upload_id = self.s3.create_multipart(to).await?;
        let result = async {
            let parts = self.copy_parts(from, to, &upload_id, len).await?;
            let count = parts.len();
            self.s3.complete_multipart(to, &upload_id, parts).await?;
            Ok::<_, RegistryError>(count)
        }
        .await;
        match result {
            Ok(parts) => {
                tracing::info!(key = %to, bytes = len, parts, ms = started.elapsed().as_millis() as u64, "multipart copy done");
                Ok(())
            }
            Err(e) => {
                // Nothing was published: the parts copied so far go with the upload.
                if let Err(abort) = self.s3.abort_multipart(to, &upload_id).await {
                    tracing::warn!(key = %to, error = %abort, "could not abort a failed multipart copy");
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn parts_cover_the_object_exactly() {
        for (len, part) in [(20 * MIB, 5 * MIB), (20 * MIB + 1, 5 * MIB), (5 * MIB, 5 * MIB), (1, 512 * MIB)] {
            let parts = plan(len, part);
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts.last().unwrap().end, len - 1);
            for w in parts.windows(2) {
                assert_eq!(w[0].end + 1, w[1].start);
                assert_eq!(w[1].index, w[0].index + 1);
            }
            assert!(parts.iter().rev().skip(1).all(|p| p.end - p.start + 1 == part));
        }
        assert_eq!(plan(20 * MIB + 1, 5 * MIB).len(), 5);
        // Parts too small for S3 are raised to 5 MiB; too many are made larger.
        assert_eq!(plan(20 * MIB, 1).len(), 4);
        let huge = plan(6 * 1024 * 1024 * MIB, 5 * MIB);
        assert!(huge.len() as u64 <= MAX_PARTS, "{}", huge.len());
    }

    #[test]
    fn the_bucket_address_follows_object_store() {
        let b = AmazonS3Builder::new().with_bucket_name("bkt").with_region("eu-west-1");
        let a = BucketAddress::of(&b.clone().with_virtual_hosted_style_request(true)).unwrap();
        assert_eq!(a.bucket_endpoint, "https://bkt.s3.eu-west-1.amazonaws.com");
        let a = BucketAddress::of(&b.clone().with_virtual_hosted_style_request(false)).unwrap();
        assert_eq!(a.bucket_endpoint, "https://s3.eu-west-1.amazonaws.com/bkt");
        let a = BucketAddress::of(&b.with_endpoint("http://127.0.0.1:9000/").with_virtual_hosted_style_request(false))
            .unwrap();
        assert_eq!((a.bucket_endpoint.as_str(), a.region.as_str()), ("http://127.0.0.1:9000/bkt", "eu-west-1"));
    }

    #[test]
    fn a_copy_part_answer_is_read() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<CopyPartResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyPartResult>"#;
        let r: CopyPartResult = quick_xml::de::from_str(body).unwrap();
        assert_eq!(r.e_tag, "\"9b2cf535f27731c974343645a3985328\"");
        assert!(quick_xml::de::from_str::<CopyPartResult>("<Error><Code>InternalError</Code></Error>").is_err());
    }
}
