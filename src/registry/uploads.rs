//! Blob uploads: sessions that stream to storage while the running digest is computed.
//!
//! The acknowledged size of a session is the one in the database, with the running hash state
//! at that size; the process that served the last chunk also keeps the hash in memory. Any
//! other process (after a restart, or another node) restores it from the database, so a
//! session survives restarts and moves between nodes. A failed or cut-off chunk is never acknowledged:
//! its bytes are discarded at once (or, after a crash, by the next writer) and the in-memory hash
//! is dropped.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::Registry;
use crate::error::{RegistryError, Result};
use crate::meta::{Linked, UploadRecord};
use crate::oci::{Algorithm, Digest, Hasher, validate_name};

/// Bytes gathered before hashing and handing them to storage.
const BATCH: usize = 1024 * 1024;

/// Hashes batches on the blocking pool, one at a time and in order, while the caller goes on
/// receiving. A thread is busy only while it hashes, never while a slow client sends.
struct HashPipe {
    idle: Option<Hasher>,
    busy: Option<tokio::task::JoinHandle<Hasher>>,
}

impl HashPipe {
    fn new(hasher: Hasher) -> Self {
        HashPipe { idle: Some(hasher), busy: None }
    }

    async fn take(&mut self) -> Result<Hasher> {
        match (self.idle.take(), self.busy.take()) {
            (Some(h), _) => Ok(h),
            (None, Some(job)) => job.await.map_err(|e| RegistryError::internal("hashing", e)),
            (None, None) => Err(RegistryError::Internal("hash state lost".into())),
        }
    }

    /// Starts hashing `batch` once the previous batch is hashed.
    async fn feed(&mut self, batch: Vec<Bytes>) -> Result<()> {
        let mut h = self.take().await?;
        self.busy = Some(tokio::task::spawn_blocking(move || {
            batch.iter().for_each(|part| h.update(part));
            h
        }));
        Ok(())
    }

    async fn finish(mut self) -> Result<Hasher> {
        self.take().await
    }
}

/// The running hash of an upload at a given size.
pub(super) struct HashState {
    offset: u64,
    hasher: Hasher,
}

/// Where an upload session stands.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    pub id: String,
    pub size: u64,
}

/// Running hash states kept in memory before idle ones are dropped.
const UPLOAD_STATES_KEPT: usize = 4096;

type Guard<'a> = tokio::sync::MutexGuard<'a, Option<HashState>>;

impl Registry {
    fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<Option<HashState>>> {
        let mut map = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= UPLOAD_STATES_KEPT && !map.contains_key(id) {
            // Sessions abandoned by their clients (or finished on another node) would otherwise
            // stay here for good: drop the states no request holds; a later request restores
            // its state from the database.
            map.retain(|_, state| Arc::strong_count(state) > 1);
        }
        map.entry(id.to_string()).or_default().clone()
    }

    /// Forgets this process's running hash state of an upload (finished, cancelled or expired).
    pub(crate) fn forget_upload(&self, id: &str) {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    async fn upload_record(&self, repo: &str, id: &str) -> Result<UploadRecord> {
        validate_name(repo)?;
        self.meta.upload(repo, id).await?.ok_or_else(|| {
            RegistryError::BlobUploadUnknown(format!("upload {} unknown", crate::oci::digest::truncate(id)))
        })
    }

    /// Opens a new upload session in `repo`.
    pub async fn start_upload(&self, repo: &str) -> Result<UploadStatus> {
        validate_name(repo)?;
        self.check_quota(repo, 0, None).await?;
        let repository_id = self.meta.ensure_repository(repo).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let state = self.blobs.uploads().create(&id).await?;
        self.meta.create_upload(&id, repository_id, state.as_deref()).await?;
        Ok(UploadStatus { id, size: 0 })
    }

    /// Where an upload stands.
    pub async fn upload_status(&self, repo: &str, id: &str) -> Result<UploadStatus> {
        let rec = self.upload_record(repo, id).await?;
        Ok(UploadStatus { id: rec.id, size: rec.size })
    }

    /// Appends a chunk. `start` is where the client says it begins (`Content-Range`), which must
    /// be where the upload ends; `len`, when known, is how long the client says it is.
    pub async fn append_upload<S>(
        &self,
        repo: &str,
        id: &str,
        start: Option<u64>,
        len: Option<u64>,
        body: S,
    ) -> Result<UploadStatus>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        self.upload_record(repo, id).await?;
        let lock = self.upload_lock(id);
        let mut guard = lock.lock().await;
        let rec = self.upload_record(repo, id).await?; // what the previous holder acknowledged
        if let Some(start) = start
            && start != rec.size
        {
            return Err(RegistryError::RangeInvalid {
                message: format!("chunk starts at {start} but the upload has {} bytes", rec.size),
                upload_size: Some(rec.size),
            });
        }
        let size = self.append_locked(repo, &mut guard, &rec, len, body, None).await?;
        Ok(UploadStatus { id: rec.id, size })
    }

    /// Appends under the upload's lock. `digest` is the final digest when the client already
    /// named it (a monolithic upload): an empty session is then hashed with its algorithm.
    async fn append_locked<S>(
        &self,
        repo: &str,
        guard: &mut Guard<'_>,
        rec: &UploadRecord,
        len: Option<u64>,
        body: S,
        digest: Option<&Digest>,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        let alg = match digest {
            Some(d) if rec.size == 0 => d.algorithm(),
            _ => rec
                .hash_state
                .as_deref()
                .and_then(|s| Hasher::restore(s, rec.size))
                .map_or(Algorithm::Sha256, |h| h.algorithm()),
        };
        // A namespace quota bounds what this chunk may add, checked before anything is stored
        // (against the announced length) and while it streams.
        let allowance = self.check_quota(repo, rec.size, None).await?;
        if let (Some(len), Some(a)) = (len, &allowance)
            && len > a.bytes
        {
            return Err(RegistryError::Denied(a.message.clone()));
        }
        let body = super::quota::limited(body, allowance);
        let hasher = self.running_hash(guard, rec, alg).await?;
        match self.write_body(rec, hasher, len, body).await {
            Ok((size, hasher, state)) => {
                if !self.meta.update_upload(&rec.id, rec.size, size, state.as_deref(), &hasher.save()).await? {
                    return Err(RegistryError::RangeInvalid {
                        message: "the upload moved on (another request wrote to it at the same time)".into(),
                        upload_size: None,
                    });
                }
                self.blobs.uploads().acknowledged(&rec.id, rec.state.as_deref()).await?;
                **guard = Some(HashState { offset: size, hasher });
                Ok(size)
            }
            Err(e) => {
                **guard = None;
                // Not acknowledged: its bytes go now (on a full disk, so does the space they took).
                if let Err(d) =
                    self.blobs.uploads().discard_unacknowledged(&rec.id, rec.size, rec.state.as_deref()).await
                {
                    tracing::warn!(upload = %rec.id, error = %d, "cannot cut off a failed chunk");
                }
                Err(e)
            }
        }
    }

    /// The hash of the acknowledged bytes: from memory, or rebuilt from storage.
    async fn running_hash(&self, guard: &mut Guard<'_>, rec: &UploadRecord, alg: Algorithm) -> Result<Hasher> {
        if let Some(state) = guard.take()
            && state.offset == rec.size
            && state.hasher.algorithm() == alg
        {
            return Ok(state.hasher);
        }
        if let Some(saved) = rec.hash_state.as_deref().and_then(|s| Hasher::restore(s, rec.size))
            && saved.algorithm() == alg
        {
            return Ok(saved);
        }
        // No saved state for this algorithm (a sha512 digest was asked for at the end): hash
        // what was stored.
        let mut hasher = Hasher::new(alg);
        if rec.size > 0 {
            let mut stream = self.blobs.uploads().read(&rec.id, rec.size, rec.state.as_deref()).await?;
            let mut seen = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                seen += chunk.len() as u64;
                hasher.update(&chunk);
            }
            if seen != rec.size {
                return Err(RegistryError::Internal(format!("upload {} has {seen} of {} bytes", rec.id, rec.size)));
            }
        }
        Ok(hasher)
    }

    /// Streams `body` to storage, hashing it on the way. Returns the new size, the hash state
    /// and the backend state.
    ///
    /// Three stages overlap: this task receives the next batch while one blocking thread
    /// hashes the previous batch and the writer stores it.
    async fn write_body<S>(
        &self,
        rec: &UploadRecord,
        hasher: Hasher,
        len: Option<u64>,
        mut body: S,
    ) -> Result<(u64, Hasher, Option<String>)>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        let mut writer = self.blobs.uploads().writer(&rec.id, rec.size, rec.state.as_deref()).await?;
        let mut hashing = HashPipe::new(hasher);
        let mut written = 0u64;
        // Chunks are gathered by reference (no copy) until a batch is big enough to hand over.
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0usize;
        loop {
            let chunk = body.next().await.transpose()?;
            if let Some(chunk) = &chunk {
                written += chunk.len() as u64;
                batch_len += chunk.len();
                batch.push(chunk.clone());
            }
            if batch_len >= BATCH || (chunk.is_none() && batch_len > 0) {
                let full = std::mem::take(&mut batch);
                batch_len = 0;
                hashing.feed(full.clone()).await?;
                writer.write(full).await?;
            }
            if chunk.is_none() {
                break;
            }
        }
        let hasher = hashing.finish().await?;
        let state = writer.finish().await?;
        if let Some(len) = len
            && len != written
        {
            return Err(RegistryError::RangeInvalid {
                message: format!("chunk announced {len} bytes but carried {written}"),
                upload_size: Some(rec.size),
            });
        }
        Ok((rec.size + written, hasher, state))
    }

    /// Completes an upload: appends the final chunk if any, verifies the digest, makes the blob
    /// visible and links it to the repository. A wrong digest drops the session.
    pub async fn finish_upload<S>(&self, repo: &str, id: &str, digest: &Digest, body: Option<S>) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        self.finish_upload_at(repo, id, digest, None, None, body).await
    }

    /// [`finish_upload`](Self::finish_upload) that also says when the content checked out
    /// (digest and quota), before it is made durable and visible: the mirror hands a client the
    /// last bytes of a verified blob then, instead of after the flush and the commit.
    pub async fn finish_upload_verified<S>(
        &self,
        repo: &str,
        id: &str,
        digest: &Digest,
        body: Option<S>,
        verified: tokio::sync::oneshot::Sender<()>,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        self.finish(repo, id, digest, None, None, body, Some(verified)).await
    }

    /// [`finish_upload`](Self::finish_upload) with where the client says the final chunk starts
    /// and how long it is (its `Content-Range`): a chunk that does not start where the upload
    /// ends is refused as [`append_upload`](Self::append_upload) refuses it (416, nothing
    /// stored, the session stays as it was).
    pub async fn finish_upload_at<S>(
        &self,
        repo: &str,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        len: Option<u64>,
        body: Option<S>,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        self.finish(repo, id, digest, start, len, body, None).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish<S>(
        &self,
        repo: &str,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        len: Option<u64>,
        body: Option<S>,
        verified: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        self.upload_record(repo, id).await?;
        let lock = self.upload_lock(id);
        let mut guard = lock.lock().await;
        let mut rec = self.upload_record(repo, id).await?;
        if let Some(body) = body {
            if let Some(start) = start
                && start != rec.size
            {
                return Err(RegistryError::RangeInvalid {
                    message: format!("the final chunk starts at {start} but the upload has {} bytes", rec.size),
                    upload_size: Some(rec.size),
                });
            }
            self.append_locked(repo, &mut guard, &rec, len, body, Some(digest)).await?;
            rec = self.upload_record(repo, id).await?; // size, backend and hash state moved on
        }
        let hasher = self.running_hash(&mut guard, &rec, digest.algorithm()).await?;
        let actual = hasher.finish();
        if &actual != digest {
            self.drop_upload(&rec).await?;
            return Err(RegistryError::DigestInvalid(format!("uploaded content has digest {actual}, not {digest}")));
        }
        // Refused here, nothing reaches the blob store; the check that holds against uploads
        // finishing at the same time is the one inside `Meta::link_blob`.
        if let Err(e) = self.check_quota(repo, rec.size, Some(digest)).await {
            self.drop_upload(&rec).await?;
            return Err(e);
        }
        if let Some(verified) = verified {
            let _ = verified.send(());
        }
        if let Err(e) = self.commit_blob(repo, &rec, digest).await {
            if matches!(e, RegistryError::Denied(_)) {
                // Over the quota after all (another upload finished first): the session ends.
                self.drop_upload(&rec).await?;
            }
            return Err(e);
        }
        self.meta.delete_upload(&rec.id).await?;
        drop(guard);
        self.forget_upload(&rec.id);
        tracing::info!(repository = repo, %digest, size = rec.size, "blob pushed");
        Ok(rec.size)
    }

    /// Makes a verified upload the blob `digest` and links it. Visibility order: the object
    /// first, the database rows last. A blob already recorded is only linked (which refreshes
    /// its row in the same transaction, so garbage collection cannot take it meanwhile) and the
    /// session's copy dropped — unless its row went since we looked (GC took the object and
    /// then the row): then we go round and store ours. A blob garbage collection is deleting
    /// right now is waited for, then stored again from the session. A new row is written only
    /// once the transaction writing it has seen our object in the store.
    async fn commit_blob(&self, repo: &str, rec: &UploadRecord, digest: &Digest) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let namespace = crate::oci::namespace_of(repo);
        let mut in_session = true;
        loop {
            if std::time::Instant::now() > deadline {
                return Err(RegistryError::Internal(format!("blob {digest} stays marked for deletion")));
            }
            let (linked, stored_here) = match self.meta.blob_deleting(digest.as_str()).await? {
                Some(true) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                // Recorded: link it (refreshing the row), never record it again.
                Some(false) => (self.meta.link_blob(rec.repository_id, digest, rec.size, namespace).await?, false),
                None => {
                    if in_session {
                        // Not recorded (new, or an object left without its row by a crash): store ours.
                        let key = self.blobs.blob_key(digest);
                        self.blobs.uploads().commit(&rec.id, rec.size, rec.state.as_deref(), &key).await?;
                        in_session = false;
                    }
                    let exists = self.blobs.exists(digest);
                    (self.meta.link_stored_blob(rec.repository_id, digest, rec.size, namespace, exists).await?, true)
                }
            };
            match linked {
                Linked::Done => {
                    if in_session {
                        self.blobs.uploads().abort(&rec.id, rec.state.as_deref()).await?;
                    }
                    return Ok(());
                }
                Linked::Deleting => {}
                // The row went since we looked: round again (ours gets stored, or checked).
                Linked::Absent if !stored_here => {}
                Linked::Absent => {
                    // Our object was stored, then a collector claimed it as a leftover and deleted it.
                    return Err(RegistryError::BlobUploadInvalid(format!(
                        "blob {digest} was removed by garbage collection while it was stored; push it again"
                    )));
                }
                // The object may stay without a row: garbage collection takes it after the
                // grace period, unless a push links it first.
                Linked::OverQuota { quota, usage } => {
                    return Err(super::quota::over_quota(repo, quota, usage, rec.size));
                }
            }
        }
    }

    /// Cancels an upload session.
    pub async fn cancel_upload(&self, repo: &str, id: &str) -> Result<()> {
        self.upload_record(repo, id).await?;
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let rec = self.upload_record(repo, id).await?;
        self.drop_upload(&rec).await
    }

    async fn drop_upload(&self, rec: &UploadRecord) -> Result<()> {
        self.blobs.uploads().abort(&rec.id, rec.state.as_deref()).await?;
        self.meta.delete_upload(&rec.id).await?;
        self.forget_upload(&rec.id);
        Ok(())
    }
}
