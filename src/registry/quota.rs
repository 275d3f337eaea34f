//! Storage quotas per namespace (the first component of a repository name). A push that would
//! take a namespace over its quota is refused with `DENIED` naming the quota, before the bytes
//! are stored: at upload start (already full), before and while each chunk streams, at commit
//! and for a mount. A blob the namespace already holds does not count twice. Uploads running
//! at the same time each see the usage without the others' unfinished bytes, so together they
//! may hold more in upload sessions than the quota leaves; the final check, in the transaction
//! that links the blob (`Meta::link_blob`), lets only those that fit become blobs.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::Registry;
use crate::error::{RegistryError, Result};
use crate::oci::Digest;

/// What a chunk may still add, and the error to give when it goes over.
#[derive(Debug, Clone)]
pub struct Allowance {
    pub bytes: u64,
    pub message: String,
}

use crate::oci::namespace_of;

fn message(ns: &str, quota: i64, usage: i64, tail: std::fmt::Arguments) -> String {
    format!("storage quota of namespace {ns} exceeded: quota {quota} bytes, {usage} bytes used, {tail}")
}

/// The refusal of a blob that does not fit.
pub(super) fn over_quota(repo: &str, quota: i64, usage: i64, needs: u64) -> RegistryError {
    RegistryError::Denied(message(namespace_of(repo), quota, usage, format_args!("this push needs {needs} more")))
}

impl Registry {
    /// Checks that `repo`'s namespace can take `adding` more bytes (none when `digest` is
    /// already in the namespace). Returns what is left beyond that, when a quota applies.
    pub async fn check_quota(&self, repo: &str, adding: u64, digest: Option<&Digest>) -> Result<Option<Allowance>> {
        let ns = namespace_of(repo);
        let Some(quota) = self.meta.quota(ns).await? else { return Ok(None) };
        if let Some(d) = digest
            && self.meta.namespace_has_blob(ns, d.as_str()).await?
        {
            return Ok(None);
        }
        let usage = self.meta.namespace_usage(ns).await?;
        let full = adding == 0 && digest.is_none() && usage >= quota;
        if full || usage.saturating_add(i64::try_from(adding).unwrap_or(i64::MAX)) > quota {
            let needs = adding.max(1);
            return Err(RegistryError::Denied(message(ns, quota, usage, format_args!("this push needs {needs} more"))));
        }
        let left = (quota - usage) as u64 - adding;
        Ok(Some(Allowance { bytes: left, message: message(ns, quota, usage, format_args!("{left} bytes left")) }))
    }
}

/// `body`, failing with `DENIED` as soon as it carries more than the allowance.
pub(super) fn limited<S>(body: S, allowance: Option<Allowance>) -> impl Stream<Item = Result<Bytes>> + Unpin
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    let mut seen = 0u64;
    body.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        match &allowance {
            Some(a) if seen > a.bytes => Err(RegistryError::Denied(a.message.clone())),
            _ => Ok(chunk),
        }
    })
}
