//! The registry service: the operations of the distribution spec in domain terms, over the
//! metadata store and the blob store. HTTP handlers, the CLI, the UI, the mirror and the runtime
//! all call this, so no rule of the spec lives in two places.

mod browse;
mod links;
mod pulls;
pub mod quota;
mod uploads;

use bytes::Bytes;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{RegistryError, Result};
use crate::meta::{Linked, ManifestRecord, Meta};
use crate::oci::{Digest, Reference, manifest, validate_name};
use crate::storage::{BlobStore, ByteStream};

pub use pulls::PullTracker;
pub use uploads::UploadStatus;

/// Limits on what clients may send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_manifest_bytes: 4 * 1024 * 1024 }
    }
}

/// The outcome of a manifest push.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub media_type: String,
}

/// A byte range asked of a blob, as an HTTP `Range` header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-end` (`end` inclusive) or `bytes=start-` (to the end).
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last `n` bytes (the whole blob if it is shorter).
    Suffix(u64),
}

impl ByteRange {
    /// The bytes of a blob of `size` this range selects (half-open), or `None` when none can be
    /// served (RFC 9110: a start at or past the end, a suffix of 0 bytes, an empty blob).
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            ByteRange::From { start, end } => {
                let end = end.map_or(size, |e| e.saturating_add(1).min(size));
                (start < end).then_some(start..end)
            }
            ByteRange::Suffix(n) => (n > 0 && size > 0).then(|| size - n.min(size)..size),
        }
    }
}

/// A blob ready to stream.
pub struct BlobRead {
    pub size: u64,
    /// The byte range served, when a range was asked for.
    pub range: Option<Range<u64>>,
    pub body: ByteStream,
}

/// The registry service.
pub struct Registry {
    pub(crate) meta: Meta,
    pub(crate) blobs: BlobStore,
    pub limits: Limits,
    /// Running hash state of the uploads this process is serving, with a lock per upload.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<uploads::HashState>>>>>,
    /// Tag lists by repository name.
    tag_lists: Mutex<HashMap<String, TagList>>,
    /// Counts this process's tag changes, so a list or manifest read while one landed is not
    /// cached.
    tag_changes: std::sync::atomic::AtomicU64,
    /// Manifests served by tag, by repository, validated as the tag lists are.
    tagged_manifests: Mutex<TaggedManifests>,
    /// Manifest pulls not yet written to the database (retention, mirror eviction).
    pub pulls: PullTracker,
    /// Blob links the database confirmed a moment ago.
    links: links::BlobLinks,
    /// A blob link older than this many seconds is refreshed when a client asks for it, so
    /// garbage collection (grace period: twice this) cannot remove a blob a client was just
    /// told it need not upload.
    pub link_refresh_secs: std::sync::atomic::AtomicI64,
}

/// A repository's tags as read at a tags version.
#[derive(Clone)]
struct TagList {
    version: i64,
    list: Arc<Tags>,
    checked: Instant,
}

/// A repository's tags, sorted, with the tags/list document of all of them, rendered once on
/// first use: a repeated full listing costs one reference count.
struct Tags {
    names: Vec<String>,
    json: std::sync::OnceLock<Bytes>,
}

/// One page of `GET /v2/<name>/tags/list`.
pub struct TagsPage {
    /// `{"name":…,"tags":[…]}`
    pub body: Bytes,
    /// The last tag on the page when more follow (for the `Link` header).
    pub next_after: Option<String>,
}

/// The tags/list document. Names and tags are plain ASCII by their grammars (no quotes, no
/// backslashes), so the JSON is written directly.
fn tags_document(repo: &str, tags: &[String]) -> Bytes {
    let mut body = Vec::with_capacity(32 + repo.len() + tags.iter().map(|t| t.len() + 3).sum::<usize>());
    body.extend_from_slice(b"{\"name\":\"");
    body.extend_from_slice(repo.as_bytes());
    body.extend_from_slice(b"\",\"tags\":[");
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'"');
        body.extend_from_slice(t.as_bytes());
        body.push(b'"');
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

/// A manifest as a GET serves it: its body is shared, so serving a cached one copies nothing.
#[derive(Debug, Clone)]
pub struct ServedManifest {
    pub digest: String,
    pub media_type: String,
    pub body: Bytes,
}

impl From<ManifestRecord> for ServedManifest {
    fn from(r: ManifestRecord) -> Self {
        ServedManifest { digest: r.digest, media_type: r.media_type, body: Bytes::from(r.content) }
    }
}

/// The manifests of tags served from memory ([`Registry::serve_manifest`]), per repository
/// with the repository's tags version they were read at (every tag change bumps it, on any
/// node) and when that version was last checked.
#[derive(Default)]
struct TaggedManifests {
    repos: HashMap<String, RepoManifests>,
    /// Body bytes held, bounded by [`MANIFEST_CACHE_BYTES`].
    bytes: usize,
}

struct RepoManifests {
    version: i64,
    checked: Instant,
    tags: HashMap<String, Arc<ServedManifest>>,
}

/// Body bytes of tagged manifests kept in memory at most (all are dropped when full).
const MANIFEST_CACHE_BYTES: usize = 16 << 20;
/// A manifest larger than this is never kept (read from the database each time).
const MANIFEST_CACHE_LARGEST: usize = 256 << 10;

impl TaggedManifests {
    /// The manifest of `tag` if its repository's version was checked less than
    /// [`TAGS_RECHECK`] ago; else the version it was read at and the manifest, if any.
    fn get(
        &self,
        repo: &str,
        tag: &str,
    ) -> std::result::Result<Arc<ServedManifest>, Option<(i64, Arc<ServedManifest>)>> {
        let Some(r) = self.repos.get(repo) else { return Err(None) };
        match r.tags.get(tag) {
            Some(m) if r.checked.elapsed() < TAGS_RECHECK => Ok(m.clone()),
            Some(m) => Err(Some((r.version, m.clone()))),
            None => Err(None),
        }
    }

    /// Keeps `m` as `tag`'s manifest at `version`, checked at `checked`. A version older than
    /// the one kept is not stored (a slower reader); a newer one drops the repository's
    /// other manifests, which were read at the older version.
    fn insert(&mut self, repo: &str, tag: &str, version: i64, checked: Instant, m: Arc<ServedManifest>) {
        if m.body.len() > MANIFEST_CACHE_LARGEST {
            return;
        }
        if self.bytes + m.body.len() > MANIFEST_CACHE_BYTES || self.repos.len() >= TAG_LISTS_CACHED {
            self.repos.clear();
            self.bytes = 0;
        }
        let r = self.repos.entry(repo.to_string()).or_insert_with(|| RepoManifests {
            version,
            checked,
            tags: HashMap::new(),
        });
        if version < r.version {
            return;
        }
        if version > r.version {
            self.bytes -= r.tags.values().map(|m| m.body.len()).sum::<usize>();
            r.tags.clear();
            r.version = version;
            r.checked = checked;
        }
        r.checked = r.checked.max(checked);
        self.bytes += m.body.len();
        if let Some(old) = r.tags.insert(tag.to_string(), m) {
            self.bytes -= old.body.len();
        }
    }

    fn remove(&mut self, repo: &str) {
        if let Some(r) = self.repos.remove(repo) {
            self.bytes -= r.tags.values().map(|m| m.body.len()).sum::<usize>();
        }
    }
}

/// Repositories whose tag lists are kept in memory at most.
const TAG_LISTS_CACHED: usize = 4096;
/// How long a cached tag list is served before it is checked against the database again.
pub const TAGS_RECHECK: Duration = Duration::from_millis(500);

impl Registry {
    /// Opens the metadata and blob stores the configuration names (the server, the CLI and the
    /// runtime all start here).
    pub async fn open(config: &Config) -> anyhow::Result<Registry> {
        std::fs::create_dir_all(&config.data_dir)?;
        let meta = Meta::connect_with(&config.database_url(), &config.database).await?;
        let blobs = match config.storage.kind.as_str() {
            "filesystem" => BlobStore::filesystem(&config.storage_path(), config.storage.direct_io)?,
            "s3" => BlobStore::s3(&config.storage.s3)?,
            "gcs" => BlobStore::gcs(&config.storage.gcs)?,
            "azure" => BlobStore::azure(&config.storage.azure)?,
            other => anyhow::bail!("unknown storage.kind {other:?} (expected filesystem, s3, gcs or azure)"),
        };
        let limits = Limits { max_manifest_bytes: config.limits.max_manifest_bytes };
        Ok(Registry::new(meta, blobs, limits))
    }

    pub fn new(meta: Meta, blobs: BlobStore, limits: Limits) -> Self {
        Registry {
            meta,
            blobs,
            limits,
            uploads: Mutex::new(HashMap::new()),
            tag_lists: Mutex::new(HashMap::new()),
            tag_changes: Default::default(),
            tagged_manifests: Default::default(),
            pulls: Default::default(),
            links: Default::default(),
            link_refresh_secs: std::sync::atomic::AtomicI64::new(1800),
        }
    }

    async fn repository_id(&self, name: &str) -> Result<Option<i64>> {
        validate_name(name)?;
        self.meta.repository_id(name).await
    }

    // ---- blobs ------------------------------------------------------------------------------

    /// The size of a blob readable through `repo`. A link the database confirmed less than
    /// [`links::LINKS_RECHECK`] ago is answered from memory (see [`links`]).
    pub async fn stat_blob(&self, repo: &str, digest: &Digest) -> Result<u64> {
        validate_name(repo)?;
        let refresh = self.link_refresh_secs.load(std::sync::atomic::Ordering::Relaxed);
        let refresh_before = crate::meta::now() - refresh;
        if let Some(size) = self.links.get(repo, digest.as_str(), refresh_before) {
            return Ok(size);
        }
        let changes = self.links.changes();
        let checked = Instant::now();
        let (size, linked_at) = self
            .meta
            .linked_blob_refreshed(repo, digest, refresh)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(format!("blob {digest} unknown to repository {repo}")))?;
        self.links.insert(changes, repo, digest.as_str(), size, linked_at, checked);
        Ok(size)
    }

    /// Opens a blob readable through `repo`, whole or a range of it.
    pub async fn read_blob(&self, repo: &str, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead> {
        let size = self.stat_blob(repo, digest).await?;
        let range = match range {
            None => None,
            Some(r) => Some(r.resolve(size).ok_or(RegistryError::RangeNotSatisfiable { blob_size: size })?),
        };
        let body = self.blobs.read(digest, range.clone()).await?;
        Ok(BlobRead { size, range, body })
    }

    /// A presigned object-store URL for a blob readable through `repo`, when the store
    /// redirects reads.
    pub async fn blob_redirect(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        self.stat_blob(repo, digest).await?;
        self.blobs.presigned_url(digest).await
    }

    /// Unlinks a blob from a repository (the data goes at garbage collection).
    pub async fn delete_blob(&self, repo: &str, digest: &Digest) -> Result<()> {
        let unknown = || RegistryError::BlobUnknown(format!("blob {digest} unknown to repository {repo}"));
        let id = self.repository_id(repo).await?.ok_or_else(unknown)?;
        let unlinked = self.meta.unlink_blob(id, digest).await;
        self.links.forget(repo, digest.as_str());
        if unlinked? { Ok(()) } else { Err(unknown()) }
    }

    /// Links a blob that `from` links into `repo` without moving data. Returns false when
    /// `from` does not link it (the caller then starts a normal upload).
    pub async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        validate_name(repo)?;
        if validate_name(from).is_err() {
            return Ok(false);
        }
        let Some(size) = self.meta.linked_blob_size(from, digest).await? else {
            return Ok(false);
        };
        // (before a repository row is made for the mount; `link_blob` checks again, atomically)
        self.check_quota(repo, size, Some(digest)).await?;
        let id = self.meta.ensure_repository(repo).await?;
        match self.meta.link_blob(id, digest, size, crate::oci::namespace_of(repo)).await? {
            Linked::Done => Ok(true),
            // Garbage collection is deleting the blob, or took it since `from` was read: the
            // client uploads it instead.
            Linked::Deleting | Linked::Absent => Ok(false),
            Linked::OverQuota { quota, usage } => Err(quota::over_quota(repo, quota, usage, size)),
        }
    }

    // ---- manifests --------------------------------------------------------------------------

    /// Stores a manifest under a tag or a digest, byte for byte.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        content: &[u8],
    ) -> Result<PushedManifest> {
        self.store_manifest(repo, reference, content_type, content, true).await
    }

    /// Stores a manifest; `check_references` off lets the mirror cache a manifest before the
    /// blobs it references (they are fetched when asked for).
    pub async fn store_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        content: &[u8],
        check_references: bool,
    ) -> Result<PushedManifest> {
        validate_name(repo)?;
        if content.len() > self.limits.max_manifest_bytes {
            return Err(RegistryError::TooLarge(format!(
                "manifest larger than {} bytes",
                self.limits.max_manifest_bytes
            )));
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = expected.same_algorithm_of(content);
                if &actual != expected {
                    return Err(RegistryError::DigestInvalid(format!("manifest digest is {actual}, not {expected}")));
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(content),
        };
        let parsed = manifest::parse(content_type, content)?;
        let id = self.meta.ensure_repository(repo).await?;
        let tag = match reference {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        self.meta.put_manifest(id, &digest, &parsed, content, tag, check_references).await?;
        if tag.is_some() {
            self.tags_changed(repo);
        }
        tracing::info!(repository = repo, %digest, reference = %reference, "manifest pushed");
        Ok(PushedManifest { digest, subject: parsed.subject, media_type: parsed.media_type })
    }

    /// A manifest by tag or digest, served to a client (its pull is recorded).
    pub async fn get_manifest(&self, repo: &str, reference: &Reference) -> Result<ManifestRecord> {
        let found = self.read_manifest(repo, reference).await?;
        self.pulls.record(repo, &found.digest);
        Ok(found)
    }

    /// A manifest by tag or digest as a GET serves it (its pull is recorded).
    ///
    /// By tag it comes from memory, validated as the tag lists are ([`Registry::tags`]): a
    /// manifest whose repository's tags version was checked less than [`TAGS_RECHECK`] ago is
    /// served as is; after that the version (one indexed row) is read again and the manifest
    /// re-read only if it moved. Every tag change bumps the version in the same transaction, on
    /// whichever node makes it, and a change made through this process drops the repository's
    /// manifests at once; so a tag moved or deleted on another node is seen within
    /// `TAGS_RECHECK`, the same bound as its tag list. By digest (content that never changes
    /// under its digest, but may be deleted) it is read from the database each time.
    pub async fn serve_manifest(&self, repo: &str, reference: &Reference) -> Result<Arc<ServedManifest>> {
        let found = match reference {
            Reference::Tag(tag) => self.manifest_by_tag(repo, tag).await?,
            Reference::Digest(_) => Arc::new(ServedManifest::from(self.read_manifest(repo, reference).await?)),
        };
        self.pulls.record(repo, &found.digest);
        Ok(found)
    }

    async fn manifest_by_tag(&self, repo: &str, tag: &str) -> Result<Arc<ServedManifest>> {
        validate_name(repo)?;
        let unknown = || RegistryError::ManifestUnknown(format!("manifest {tag} unknown to repository {repo}"));
        let kept = match self.tagged_manifests.lock().unwrap_or_else(|p| p.into_inner()).get(repo, tag) {
            Ok(fresh) => return Ok(fresh),
            Err(kept) => kept,
        };
        // Read in this order — the changes counter, the version, then the manifest — what is
        // kept is never older than the version it is kept under.
        let changes = self.tag_changes.load(std::sync::atomic::Ordering::SeqCst);
        let checked = Instant::now();
        let (_, version) = self.meta.repository_tags_version(repo).await?.ok_or_else(unknown)?;
        let found = match kept {
            Some((v, m)) if v == version => m,
            _ => Arc::new(ServedManifest::from(self.meta.manifest_by_tag(repo, tag).await?.ok_or_else(unknown)?)),
        };
        let mut cache = self.tagged_manifests.lock().unwrap_or_else(|p| p.into_inner());
        // A tag change of this process that landed meanwhile may be missing from what was
        // read: serve it, but do not keep it (`tags_changed` counts under this lock).
        if self.tag_changes.load(std::sync::atomic::Ordering::SeqCst) == changes {
            cache.insert(repo, tag, version, checked, found.clone());
        }
        Ok(found)
    }

    /// A manifest by tag or digest, read by Berth itself (replication): no pull is recorded,
    /// so retention's pull times stay the clients'.
    pub async fn read_manifest(&self, repo: &str, reference: &Reference) -> Result<ManifestRecord> {
        validate_name(repo)?;
        let found = match reference {
            Reference::Tag(t) => self.meta.manifest_by_tag(repo, t).await?,
            Reference::Digest(d) => self.meta.manifest_by_digest(repo, d).await?,
        };
        found
            .ok_or_else(|| RegistryError::ManifestUnknown(format!("manifest {reference} unknown to repository {repo}")))
    }

    /// Deletes a tag (by tag) or a manifest and the tags pointing at it (by digest).
    pub async fn delete_manifest(&self, repo: &str, reference: &Reference) -> Result<()> {
        let unknown = || RegistryError::ManifestUnknown(format!("manifest {reference} unknown to repository {repo}"));
        let id = self.repository_id(repo).await?.ok_or_else(unknown)?;
        let deleted = match reference {
            Reference::Tag(t) => self.meta.delete_tag(id, t).await?,
            Reference::Digest(d) => self.meta.delete_manifest(id, d).await?,
        };
        if !deleted {
            return Err(unknown());
        }
        self.tags_changed(repo);
        tracing::info!(repository = repo, reference = %reference, "manifest deleted");
        Ok(())
    }

    // ---- listings ---------------------------------------------------------------------------

    /// Up to `n` tags after `last`.
    ///
    /// The full list is kept in memory per repository with the repository's tags version (a
    /// counter the database bumps with every tag change). A list checked less than
    /// [`TAGS_RECHECK`] ago is served as is; an older one is checked against the version (one
    /// indexed row) and re-read only if it moved. Changes made through this process drop the
    /// entry at once, so only changes made by another node can take up to `TAGS_RECHECK` to
    /// show.
    pub async fn tags(&self, repo: &str, last: Option<&str>, n: i64) -> Result<Vec<String>> {
        validate_name(repo)?;
        let all = self.tag_list(repo).await?;
        Ok(Self::page(&all.names, last, n).to_vec())
    }

    /// The tags/list document of up to `n` tags after `last` (see [`Registry::tags`]).
    pub async fn tags_page(&self, repo: &str, last: Option<&str>, n: i64) -> Result<TagsPage> {
        validate_name(repo)?;
        let all = self.tag_list(repo).await?;
        let page = Self::page(&all.names, last, n);
        let more = page.last().is_some_and(|l| all.names.last() != Some(l));
        let body = if page.len() == all.names.len() {
            all.json.get_or_init(|| tags_document(repo, &all.names)).clone()
        } else {
            tags_document(repo, page)
        };
        Ok(TagsPage { body, next_after: more.then(|| page.last().cloned()).flatten() })
    }

    fn page<'a>(all: &'a [String], last: Option<&str>, n: i64) -> &'a [String] {
        let start = last.map_or(0, |l| all.partition_point(|t| t.as_str() <= l));
        let end = start.saturating_add(n.max(0) as usize).min(all.len());
        &all[start..end]
    }

    async fn tag_list(&self, repo: &str) -> Result<Arc<Tags>> {
        let cached = self.tag_lists.lock().unwrap_or_else(|p| p.into_inner()).get(repo).cloned();
        if let Some(c) = &cached
            && c.checked.elapsed() < TAGS_RECHECK
        {
            return Ok(c.list.clone());
        }
        let changes = self.tag_changes.load(std::sync::atomic::Ordering::SeqCst);
        let (id, version) = self
            .meta
            .repository_tags_version(repo)
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(format!("repository {repo} unknown")))?;
        let list = match cached {
            Some(c) if c.version == version => c.list,
            _ => Arc::new(Tags { names: self.meta.all_tags(id).await?, json: Default::default() }),
        };
        let mut map = self.tag_lists.lock().unwrap_or_else(|p| p.into_inner());
        // A tag change that landed meanwhile may be missing from what was read: serve it, but
        // do not keep it.
        if self.tag_changes.load(std::sync::atomic::Ordering::SeqCst) == changes {
            if map.len() >= TAG_LISTS_CACHED {
                map.clear();
            }
            map.insert(repo.to_string(), TagList { version, list: list.clone(), checked: Instant::now() });
        }
        Ok(list)
    }

    /// Removes `tag` of `repo` (id `repository_id`) for a retention policy, if it still points
    /// where it did and was not pushed since; this node's caches forget the repository's tags.
    pub(crate) async fn retire_tag(&self, repo: &str, repository_id: i64, tag: &crate::meta::TagInfo) -> Result<bool> {
        let gone = self.meta.delete_tag_if_unchanged(repository_id, tag).await?;
        if gone {
            self.tags_changed(repo);
        }
        Ok(gone)
    }

    /// Evicts a mirrored manifest of `repo` (id `repository_id`) with its tags; this node's
    /// caches forget the repository's tags.
    pub(crate) async fn evict_manifest(&self, repo: &str, repository_id: i64, digest: &str) -> Result<bool> {
        let evicted = self.meta.evict_manifest(repository_id, digest).await?;
        if evicted {
            self.tags_changed(repo);
        }
        Ok(evicted)
    }

    /// Removes links that garbage collection found old and unreferenced; returns how many
    /// went. This node forgets every link it kept in memory.
    pub(crate) async fn delete_unreferenced_links(&self, links: &[(i64, String)], cutoff: i64) -> Result<u64> {
        let removed = self.meta.delete_unreferenced_links(links, cutoff).await;
        self.links.forget_all();
        removed
    }

    /// Forgets the cached tag list and tagged manifests of a repository whose tags this
    /// process changed (called once the change is committed).
    fn tags_changed(&self, repo: &str) {
        let mut map = self.tag_lists.lock().unwrap_or_else(|p| p.into_inner());
        let mut manifests = self.tagged_manifests.lock().unwrap_or_else(|p| p.into_inner());
        self.tag_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        map.remove(repo);
        manifests.remove(repo);
    }

    /// Up to `n` repository names after `last`.
    pub async fn catalog(&self, last: Option<&str>, n: i64) -> Result<Vec<String>> {
        self.meta.catalog(last, n).await
    }

    /// The referrers of `subject` as an OCI image index.
    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<serde_json::Value> {
        let referrers = match self.repository_id(repo).await? {
            Some(id) => self.meta.referrers(id, subject, artifact_type).await?,
            None => Vec::new(),
        };
        let manifests: Vec<serde_json::Value> = referrers
            .into_iter()
            .map(|r| {
                let mut d = serde_json::json!({
                    "mediaType": r.media_type,
                    "digest": r.digest,
                    "size": r.size,
                });
                if let Some(t) = r.artifact_type {
                    d["artifactType"] = t.into();
                }
                if let Some(a) = r.annotations.and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok()) {
                    d["annotations"] = a;
                }
                d
            })
            .collect();
        Ok(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::media::OCI_INDEX,
            "manifests": manifests,
        }))
    }
}

#[cfg(test)]
mod tests;
