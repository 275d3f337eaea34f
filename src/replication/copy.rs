//! One copy to a target (a push rule): a manifest byte for byte (its digest never changes), an
//! index with every child manifest first, the blobs of each image manifest before it, and the
//! manifests that name any of them as their `subject` (signatures, SBOMs, attestations). What
//! the target has already (a `HEAD`) is skipped, so a retried copy resumes. Blobs stream from
//! Berth's store to the target; the target verifies their digests.
//!
//! Jobs of the same tag may run out of order (a retry of an older push after a newer one):
//! the tag is put last, and only if it still names what was copied (else the newer manifest is
//! copied instead); a delete is carried out only if the reference is still gone here.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use super::Copied;
use super::select::TagFilter;
use crate::auth::policy::glob_match;
use crate::error::{RegistryError, Result};
use crate::meta::{ManifestRecord, ReplicationRule};
use crate::oci::manifest;
use crate::oci::{Digest, Reference};
use crate::registry::Registry;
use crate::remote::{Deleted, MANIFEST_ACCEPT, Remote};

/// Times a copy starts over with the newer manifest of a tag that moved while it ran.
const MOVED_RETRIES: usize = 3;

struct Copy<'a> {
    registry: &'a Registry,
    remote: &'a Remote,
    rule: &'a ReplicationRule,
    /// Local and remote repository.
    from: &'a str,
    to: &'a str,
    done: Copied,
    seen: HashSet<String>,
}

/// Copies `reference` (a tag, or a manifest pushed by digest) of `repository` to `destination`.
pub async fn copy(
    registry: &Registry,
    remote: &Remote,
    rule: &ReplicationRule,
    repository: &str,
    reference: &str,
    destination: &str,
) -> Result<Copied> {
    let parsed = Reference::parse(reference)?;
    let mut c = Copy {
        registry,
        remote,
        rule,
        from: repository,
        to: destination,
        done: Copied::default(),
        seen: HashSet::new(),
    };
    let mut record = match registry.read_manifest(repository, &parsed).await {
        Ok(r) => r,
        // Deleted since it was queued: nothing to copy (a delete job follows if asked for).
        Err(RegistryError::ManifestUnknown(_)) => return Ok(Copied::default()),
        Err(e) => return Err(e),
    };
    let tag = match &parsed {
        Reference::Tag(tag) => tag,
        Reference::Digest(_) => {
            // Pushed by digest: a referrer follows its subject; anything else goes with its tags.
            let m = manifest::parse(Some(&record.media_type), &record.content)?;
            if m.subject.is_none() && !TagFilter::new(rule)?.takes_all() {
                return Ok(Copied::default());
            }
            c.manifest(record).await?;
            return Ok(c.done);
        }
    };
    for _ in 0..MOVED_RETRIES {
        c.manifest(record.clone()).await?;
        // The tag may have moved while the copy ran: put it only if it still names this one.
        match registry.read_manifest(repository, &parsed).await {
            Ok(now) if now.digest == record.digest => {
                remote.put_manifest(destination, tag, &record.media_type, &record.content).await?;
                c.done.sent += 1;
                return Ok(c.done);
            }
            Ok(now) => record = now,
            // Deleted meanwhile: its delete job (if any) takes it from here.
            Err(RegistryError::ManifestUnknown(_)) => return Ok(c.done),
            Err(e) => return Err(e),
        }
    }
    Err(RegistryError::Unavailable(format!("{repository}:{tag} kept moving while it was copied; tried again later")))
}

impl Copy<'_> {
    /// A manifest by digest, with what it needs and what refers to it.
    fn manifest(&mut self, record: ManifestRecord) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(async move {
            if !self.seen.insert(record.digest.clone()) {
                return Ok(());
            }
            let digest = record.digest.parse::<Digest>()?;
            let there = self.remote.manifest_digest(self.to, &record.digest, MANIFEST_ACCEPT).await?.is_some();
            if there {
                self.done.skipped += 1;
            } else {
                let m = manifest::parse(Some(&record.media_type), &record.content)?;
                for child in &m.manifests {
                    let child_digest = child.digest.parse::<Digest>()?;
                    let child_record = self.registry.read_manifest(self.from, &Reference::Digest(child_digest)).await?;
                    self.manifest(child_record).await?;
                }
                for blob in m.config.iter().chain(&m.layers) {
                    self.blob(&blob.digest, blob.urls.is_some()).await?;
                }
                self.remote.put_manifest(self.to, &record.digest, &record.media_type, &record.content).await?;
                self.done.sent += 1;
            }
            for referrer in self.registry.referrer_records(self.from, &digest).await? {
                let d = referrer.digest.parse::<Digest>()?;
                let r = self.registry.read_manifest(self.from, &Reference::Digest(d)).await?;
                self.manifest(r).await?;
            }
            Ok(())
        })
    }

    /// A blob, unless the target has it: mounted from another repository this rule copied it
    /// to where the target allows, else streamed. A non-distributable layer (with `urls`) that
    /// Berth does not hold is the target's to fetch from those URLs.
    async fn blob(&mut self, digest: &str, foreign: bool) -> Result<()> {
        if !self.seen.insert(digest.to_string()) {
            return Ok(());
        }
        if self.remote.has_blob(self.to, digest).await? {
            self.done.skipped += 1;
            return Ok(());
        }
        let parsed = digest.parse::<Digest>()?;
        let read = match self.registry.read_blob(self.from, &parsed, None).await {
            Ok(r) => r,
            Err(RegistryError::BlobUnknown(_)) if foreign => return Ok(()),
            Err(e) => return Err(e),
        };
        // Another local repository of this rule holding the blob has (likely) sent it already.
        let mount_from = self
            .registry
            .repositories_linking(&parsed, 20)
            .await?
            .into_iter()
            .find(|r| r != self.from && glob_match(&self.rule.repositories, r))
            .map(|r| super::destination(&self.rule.destination_prefix, &r));
        let Some(location) = self.remote.start_upload(self.to, digest, mount_from.as_deref()).await? else {
            self.done.skipped += 1;
            return Ok(());
        };
        self.remote.finish_upload(self.to, &location, digest, read.size, read.body).await?;
        self.done.sent += 1;
        self.done.bytes += read.size as i64;
        Ok(())
    }
}

/// Deletes `reference` at the target, unless it is here again (pushed after the delete): a
/// tag by tag where the target allows it, else the manifest it names — but not when a tag
/// here still names that manifest (the target's copy of that tag would go with it).
pub async fn delete(
    registry: &Registry,
    remote: &Remote,
    repository: &str,
    destination: &str,
    reference: &str,
) -> Result<Copied> {
    let skipped = Ok(Copied { skipped: 1, ..Copied::default() });
    let sent = Ok(Copied { sent: 1, ..Copied::default() });
    let parsed = Reference::parse(reference)?;
    match registry.read_manifest(repository, &parsed).await {
        Ok(_) => return skipped,
        Err(RegistryError::ManifestUnknown(_) | RegistryError::NameUnknown(_)) => {}
        Err(e) => return Err(e),
    }
    let digest = match &parsed {
        Reference::Digest(d) => d.to_string(),
        Reference::Tag(tag) => match remote.delete_manifest(destination, tag).await? {
            Deleted::Yes => return sent,
            Deleted::Absent => return skipped,
            Deleted::Unsupported => match remote.manifest_digest(destination, tag, MANIFEST_ACCEPT).await? {
                Some(d) => {
                    if !registry.tags_of(repository, &d).await?.is_empty() {
                        tracing::info!(repository, tag, digest = %d, "replication: not deleting a manifest another tag still names");
                        return skipped;
                    }
                    d
                }
                None => return skipped,
            },
        },
    };
    match remote.delete_manifest(destination, &digest).await? {
        Deleted::Yes => sent,
        _ => skipped,
    }
}
