//! Reads for people rather than clients: the repository list, a repository's tags with their
//! sizes, the tags of one manifest, the referrers of a manifest as records, a namespace's
//! summary, which repositories link a blob, and whether both stores answer. The web UI, the `/v2`
//! mount without `from=` and the health check read through these instead of the store.

use super::Registry;
use crate::error::Result;
use crate::meta::{Referrer, RepositorySummary, TagSummary};
use crate::oci::Digest;

impl Registry {
    /// Names of repositories holding at least one manifest, after `after` in byte order, whose
    /// name contains `search` (when not empty) and lies in `namespace` (when not empty).
    pub async fn repository_names(&self, after: &str, search: &str, namespace: &str, n: i64) -> Result<Vec<String>> {
        self.meta.ui_repository_names(after, search, namespace, n).await
    }

    /// Tag count, last push and size of each named repository.
    pub async fn repository_summaries(&self, names: &[String]) -> Result<Vec<RepositorySummary>> {
        self.meta.ui_repository_summaries(names).await
    }

    /// A page of a repository's tags with their sizes; `None` when the repository does not exist.
    pub async fn tag_summaries(&self, repo: &str, after: &str, limit: i64) -> Result<Option<Vec<TagSummary>>> {
        match self.repository_id(repo).await? {
            Some(id) => Ok(Some(self.meta.ui_tags(id, after, limit).await?)),
            None => Ok(None),
        }
    }

    /// The tags pointing at a manifest of `repo` (empty when the repository does not exist).
    pub async fn tags_of(&self, repo: &str, digest: &str) -> Result<Vec<String>> {
        match self.repository_id(repo).await? {
            Some(id) => self.meta.ui_tags_of(id, digest).await,
            None => Ok(Vec::new()),
        }
    }

    /// The manifests of `repo` whose subject is `subject`, as records.
    pub async fn referrer_records(&self, repo: &str, subject: &Digest) -> Result<Vec<Referrer>> {
        match self.repository_id(repo).await? {
            Some(id) => self.meta.referrers(id, subject, None).await,
            None => Ok(Vec::new()),
        }
    }

    /// Repositories in a namespace, and the bytes of the distinct blobs they link.
    pub async fn namespace_summary(&self, namespace: &str) -> Result<(i64, i64)> {
        self.meta.ui_namespace_usage(namespace).await
    }

    /// Up to `n` repositories that link `digest` (a mount without `from=` looks for one the
    /// client may pull).
    pub async fn repositories_linking(&self, digest: &Digest, n: i64) -> Result<Vec<String>> {
        self.meta.repositories_linking(digest, n).await
    }

    /// Whether the metadata database and the blob store answer (the readiness check).
    pub async fn ping(&self) -> (Result<()>, Result<()>) {
        (self.meta.ping().await, self.blobs.ping().await)
    }
}
