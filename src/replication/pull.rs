//! One copy from a target into Berth (a pull rule): the remote manifest byte for byte (checked
//! against its digest before anything is stored), an index's children first, each image's
//! blobs before it — streamed from the remote into Berth's normal upload path, so a blob
//! becomes visible only once its digest checks out (a corrupted byte is refused, never
//! stored) — and the manifests that refer to any of them. What Berth has already is skipped,
//! so a retried copy resumes. A delete (the tag gone at the source) is carried out only if the
//! source still lacks the tag.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use super::Copied;
use crate::error::{RegistryError, Result};
use crate::oci::manifest;
use crate::oci::{Digest, Reference};
use crate::registry::Registry;
use crate::remote::{MANIFEST_ACCEPT, Remote};

struct Pull<'a> {
    registry: &'a Registry,
    remote: &'a Remote,
    /// Remote and local repository.
    from: &'a str,
    to: &'a str,
    done: Copied,
    seen: HashSet<String>,
}

/// Copies `reference` (a tag or digest) of the remote `repository` into the local `destination`.
pub async fn pull(
    registry: &Registry,
    remote: &Remote,
    repository: &str,
    reference: &str,
    destination: &str,
) -> Result<Copied> {
    let parsed = Reference::parse(reference)?;
    let max = registry.limits.max_manifest_bytes;
    if let Reference::Tag(tag) = &parsed {
        // A HEAD first (a GET counts as a pull at some registries): nothing to do when the tag
        // here already names what the source announces.
        match remote.source_manifest(repository, tag, MANIFEST_ACCEPT).await? {
            None => return Ok(Copied::default()),
            Some(Some(d)) if registry.meta.tag_state(destination, tag).await?.is_some_and(|(here, _)| here == d) => {
                return Ok(Copied { skipped: 1, ..Copied::default() });
            }
            Some(_) => {}
        }
    }
    let Some((media_type, digest, bytes)) = remote.get_manifest(repository, reference, MANIFEST_ACCEPT, max).await?
    else {
        // Gone at the source since it was queued.
        return Ok(Copied::default());
    };
    let mut p =
        Pull { registry, remote, from: repository, to: destination, done: Copied::default(), seen: HashSet::new() };
    p.manifest(digest.clone(), media_type.clone(), bytes.clone()).await?;
    if let Reference::Tag(tag) = &parsed {
        let here = registry.meta.tag_state(destination, tag).await?.map(|(d, _)| d);
        if here.as_deref() == Some(digest.as_str()) {
            p.done.skipped += 1;
        } else {
            let ct = (!media_type.is_empty()).then_some(media_type.as_str());
            registry.put_manifest(destination, &parsed, ct, &bytes).await?;
            p.done.sent += 1;
        }
    }
    Ok(p.done)
}

impl Pull<'_> {
    /// A manifest by digest, with what it needs and what refers to it.
    fn manifest(
        &mut self,
        digest: String,
        media_type: String,
        bytes: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(async move {
            if !self.seen.insert(digest.clone()) {
                return Ok(());
            }
            let parsed = digest.parse::<Digest>()?;
            if self.registry.meta.manifest_by_digest(self.to, &parsed).await?.is_some() {
                self.done.skipped += 1;
            } else {
                let ct = (!media_type.is_empty()).then_some(media_type.as_str());
                let m = manifest::parse(ct, &bytes)?;
                for child in &m.manifests {
                    let (t, d, b) = self.fetch(&child.digest).await?;
                    self.manifest(d, t, b).await?;
                }
                for blob in m.config.iter().chain(&m.layers) {
                    self.blob(&blob.digest, blob.urls.is_some()).await?;
                }
                self.registry.put_manifest(self.to, &Reference::Digest(parsed), ct, &bytes).await?;
                self.done.sent += 1;
            }
            let max = self.registry.limits.max_manifest_bytes;
            for referrer in self.remote.referrers(self.from, &digest, max).await? {
                let (t, d, b) = self.fetch(&referrer).await?;
                self.manifest(d, t, b).await?;
            }
            Ok(())
        })
    }

    /// A manifest of the source by digest (checked against it).
    async fn fetch(&self, digest: &str) -> Result<(String, String, Vec<u8>)> {
        let max = self.registry.limits.max_manifest_bytes;
        self.remote.get_manifest(self.from, digest, MANIFEST_ACCEPT, max).await?.ok_or_else(|| {
            RegistryError::Unavailable(format!("{}: manifest {digest} of {} is missing", self.remote.base(), self.from))
        })
    }

    /// A blob, unless Berth has it in the destination: streamed through an upload that is
    /// committed only if the digest matches. A non-distributable layer the source does not
    /// serve is left to its URLs.
    async fn blob(&mut self, digest: &str, foreign: bool) -> Result<()> {
        if !self.seen.insert(digest.to_string()) {
            return Ok(());
        }
        let parsed = digest.parse::<Digest>()?;
        if self.registry.meta.linked_blob_size(self.to, &parsed).await?.is_some() {
            self.done.skipped += 1;
            return Ok(());
        }
        let (_, body) = match self.remote.get_blob(self.from, digest).await {
            Ok(b) => b,
            Err(_) if foreign => return Ok(()),
            Err(e) => return Err(e),
        };
        self.registry.meta.ensure_repository(self.to).await?;
        let upload = self.registry.start_upload(self.to).await?;
        let stored = self.registry.finish_upload(self.to, &upload.id, &parsed, Some(body)).await;
        match stored {
            Ok(size) => {
                self.done.sent += 1;
                self.done.bytes += size as i64;
                Ok(())
            }
            Err(RegistryError::DigestInvalid(m)) => Err(RegistryError::DigestInvalid(format!(
                "{}: blob {digest} of {} did not match its digest and was not stored ({m})",
                self.remote.base(),
                self.from
            ))),
            Err(e) => {
                let _ = self.registry.cancel_upload(self.to, &upload.id).await;
                Err(e)
            }
        }
    }
}

/// Deletes the local `tag` of `destination` when the source no longer has it.
pub async fn delete(
    registry: &Registry,
    remote: &Remote,
    repository: &str,
    destination: &str,
    tag: &str,
) -> Result<Copied> {
    // Only a 404 at the source means gone (a HEAD without a digest header still means there).
    if remote.source_manifest(repository, tag, MANIFEST_ACCEPT).await?.is_some() {
        return Ok(Copied { skipped: 1, ..Copied::default() });
    }
    match registry.delete_manifest(destination, &Reference::Tag(tag.to_string())).await {
        Ok(()) => Ok(Copied { sent: 1, ..Copied::default() }),
        Err(RegistryError::ManifestUnknown(_) | RegistryError::NameUnknown(_)) => {
            Ok(Copied { skipped: 1, ..Copied::default() })
        }
        Err(e) => Err(e),
    }
}

/// When the image a remote tag names was built (ms; 0 when it cannot tell): its config's
/// `created`, or for an index the first image's. What "the latest N tags" of a source sorts by.
pub async fn created(remote: &Remote, repository: &str, tag: &str) -> i64 {
    const CONFIG_MAX: usize = 1024 * 1024;
    async fn read(remote: &Remote, repository: &str, tag: &str) -> Result<i64> {
        use futures_util::StreamExt;
        let Some((t, _, bytes)) = remote.get_manifest(repository, tag, MANIFEST_ACCEPT, 4 << 20).await? else {
            return Ok(0);
        };
        let mut m = manifest::parse((!t.is_empty()).then_some(t.as_str()), &bytes)?;
        if let Some(first) = m.manifests.first() {
            let Some((t, _, bytes)) = remote.get_manifest(repository, &first.digest, MANIFEST_ACCEPT, 4 << 20).await?
            else {
                return Ok(0);
            };
            m = manifest::parse((!t.is_empty()).then_some(t.as_str()), &bytes)?;
        }
        let Some(config) = m.config else { return Ok(0) };
        let (_, mut body) = remote.get_blob(repository, &config.digest).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() > CONFIG_MAX {
                return Ok(0);
            }
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(value["created"]
            .as_str()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map_or(0, |t| t.timestamp_millis()))
    }
    read(remote, repository, tag).await.unwrap_or(0)
}
