//! Uploads as multipart uploads (S3; also GCS and Azure, which `object_store` gives the same
//! multipart interface), whatever chunk sizes the client sends.
//!
//! A session's bytes live in two places: completed multipart parts (at least
//! [`PART_SIZE`] each) and a *tail* object holding the bytes not yet in a part (less than
//! `PART_SIZE`). A writer reads the tail back (at most `PART_SIZE` in memory), appends the new
//! bytes, sends every full `PART_SIZE` as a part and writes what is left as a new tail object
//! under a key of its own (generation and a random writer id). The state (multipart id, part ETags, tail key and length) is
//! JSON in the database and only changes once a chunk is stored, by a conditional update on
//! the previous size, so a crash or a competing writer leaves the recorded state intact: parts
//! it does not list are dropped by `CompleteMultipartUpload` (a part overwritten by a losing
//! writer has another ETag, so completion fails instead of publishing it), and its tail object
//! is still there under its own key. No blob is held whole in memory or on local disk.
//!
//! Commit sends the tail as the last part, completes the upload at `_uploads/<id>/data` and
//! copies that object to the blob's key (copy is atomic: the blob appears whole or not at
//! all). S3 refuses a single copy above 5 GiB: above a threshold the copy goes to a
//! [`LargeCopy`] (`super::s3_copy`: a multipart copy, which also publishes the object only when
//! it completes). Abort aborts the multipart upload and deletes the tail.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use object_store::ObjectStore;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::ByteStream;
use super::uploads::{UploadBackend, UploadWriter};
use crate::error::{RegistryError, Result};

/// Size of the parts sent to S3 (S3 wants at least 5 MiB for all but the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// What the database keeps of an S3 upload session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct S3State {
    /// Multipart upload id, once the first part was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<String>,
    /// ETags of the parts sent, in order.
    #[serde(default)]
    parts: Vec<String>,
    /// Generation of the tail object (`_uploads/<id>/tail-<n>-<writer>`).
    #[serde(default)]
    tail_generation: u64,
    /// The writer that wrote that tail (random per writer, so two writers that start from the
    /// same state never share a key).
    #[serde(default)]
    tail_writer: String,
    /// Bytes in the tail object (0: no tail object).
    #[serde(default)]
    tail_len: usize,
}

impl S3State {
    fn parse(state: Option<&str>) -> Result<S3State> {
        match state {
            None | Some("") => Ok(S3State::default()),
            Some(s) => serde_json::from_str(s).map_err(|e| RegistryError::internal("upload state", e)),
        }
    }
}

/// A multipart upload the bucket no longer knows (aborted by a lifecycle rule or by hand: S3's
/// `NoSuchUpload`, a 404) is an upload whose acknowledged bytes are gone: the client must start
/// again (`BLOB_UPLOAD_UNKNOWN`), as when the tail object is gone.
fn gone_upload(e: object_store::Error) -> RegistryError {
    let gone = matches!(e, object_store::Error::NotFound { .. }) || e.to_string().contains("NoSuchUpload");
    if gone {
        tracing::warn!(error = %e, "an upload's multipart upload is gone from the bucket");
        return RegistryError::BlobUploadUnknown("upload data is gone".into());
    }
    e.into()
}

/// An object store with a multipart upload interface (S3, GCS, Azure, in-memory).
pub trait PartStore: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> PartStore for T {}

/// A server-side copy of an object too large for the store's single copy request, that
/// publishes `to` whole or not at all.
#[async_trait]
pub trait LargeCopy: Send + Sync {
    /// Copies the `len` bytes of `from` to `to`.
    async fn copy(&self, from: &Path, to: &Path, len: u64) -> Result<()>;
}

/// Upload sessions as multipart uploads.
pub struct MultipartUploads {
    s3: Arc<dyn PartStore>,
    prefix: String,
    /// Commits of blobs larger than the threshold go through this copy.
    large_copy: Option<(Arc<dyn LargeCopy>, u64)>,
}

impl MultipartUploads {
    pub fn new(s3: Arc<dyn PartStore>, prefix: &str) -> Self {
        MultipartUploads { s3, prefix: prefix.to_string(), large_copy: None }
    }

    /// Commits blobs larger than `threshold` bytes with `copy` instead of one copy request.
    pub fn with_large_copy(mut self, copy: Arc<dyn LargeCopy>, threshold: u64) -> Self {
        self.large_copy = Some((copy, threshold));
        self
    }

    fn key(&self, id: &str, name: &str) -> Result<Path> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(RegistryError::BlobUploadUnknown("upload unknown".into()));
        }
        Ok(Path::from(format!("{}_uploads/{id}/{name}", self.prefix)))
    }

    fn tail_key(&self, id: &str, generation: u64, writer: &str) -> Result<Path> {
        self.key(id, &format!("tail-{generation}-{writer}"))
    }

    fn current_tail(&self, id: &str, state: &S3State) -> Result<Path> {
        self.tail_key(id, state.tail_generation, &state.tail_writer)
    }

    /// The bytes of the current tail object.
    async fn read_tail(&self, id: &str, state: &S3State) -> Result<Bytes> {
        if state.tail_len == 0 {
            return Ok(Bytes::new());
        }
        let key = self.current_tail(id, state)?;
        let bytes = match self.s3.get(&key).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RegistryError::BlobUploadUnknown("upload data is gone".into()));
            }
            Err(e) => return Err(e.into()),
        };
        if bytes.len() < state.tail_len {
            return Err(RegistryError::Internal(format!(
                "upload {id}: tail has {} of {} bytes",
                bytes.len(),
                state.tail_len
            )));
        }
        Ok(bytes.slice(..state.tail_len))
    }

    async fn delete_quietly(&self, key: &Path) {
        if let Err(e) = self.s3.delete(key).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!(key = %key, error = %e, "could not delete an upload object");
        }
    }
}

/// Appends to a multipart upload session.
struct S3Writer {
    s3: Arc<dyn PartStore>,
    data_key: Path,
    next_tail: Path,
    writer: String,
    state: S3State,
    buffer: BytesMut,
}

impl S3Writer {
    async fn send_part(&mut self, part: Bytes) -> Result<()> {
        let mp = match &self.state.multipart {
            Some(mp) => mp.clone(),
            None => {
                let mp = self.s3.create_multipart(&self.data_key).await?;
                self.state.multipart = Some(mp.clone());
                mp
            }
        };
        let idx = self.state.parts.len();
        let part = self.s3.put_part(&self.data_key, &mp, idx, PutPayload::from(part)).await.map_err(gone_upload)?;
        self.state.parts.push(part.content_id);
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for S3Writer {
    async fn write(&mut self, data: Vec<Bytes>) -> Result<()> {
        for chunk in data {
            self.buffer.extend_from_slice(&chunk);
            while self.buffer.len() >= PART_SIZE {
                let part = self.buffer.split_to(PART_SIZE).freeze();
                self.send_part(part).await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<Option<String>> {
        let tail = self.buffer.split().freeze();
        self.state.tail_len = tail.len();
        self.state.tail_generation += 1;
        self.state.tail_writer = self.writer.clone();
        if !tail.is_empty() {
            self.s3.put(&self.next_tail, PutPayload::from(tail)).await?;
        }
        // The previous tail stays until the new state is saved (`acknowledged`).
        Ok(Some(serde_json::to_string(&self.state).map_err(|e| RegistryError::internal("upload state", e))?))
    }
}

#[async_trait]
impl UploadBackend for MultipartUploads {
    async fn create(&self, _id: &str) -> Result<Option<String>> {
        Ok(Some(serde_json::to_string(&S3State::default()).map_err(|e| RegistryError::internal("upload state", e))?))
    }

    async fn writer(&self, id: &str, offset: u64, state: Option<&str>) -> Result<Box<dyn UploadWriter>> {
        let state = S3State::parse(state)?;
        let stored = state.parts.len() as u64 * PART_SIZE as u64 + state.tail_len as u64;
        if stored != offset {
            return Err(RegistryError::Internal(format!("upload {id}: state holds {stored} bytes, database {offset}")));
        }
        let tail = self.read_tail(id, &state).await?;
        let mut buffer = BytesMut::with_capacity(PART_SIZE + 256 * 1024);
        buffer.extend_from_slice(&tail);
        let writer = uuid::Uuid::new_v4().simple().to_string();
        Ok(Box::new(S3Writer {
            s3: self.s3.clone(),
            data_key: self.key(id, "data")?,
            next_tail: self.tail_key(id, state.tail_generation + 1, &writer)?,
            writer,
            state,
            buffer,
        }))
    }

    async fn acknowledged(&self, id: &str, previous: Option<&str>) -> Result<()> {
        let previous = S3State::parse(previous)?;
        if previous.tail_len > 0 {
            self.delete_quietly(&self.current_tail(id, &previous)?).await;
        }
        Ok(())
    }

    async fn read(&self, _id: &str, _len: u64, _state: Option<&str>) -> Result<ByteStream> {
        // Parts of an unfinished multipart upload cannot be read back; the hash state is kept
        // in the database instead.
        Err(RegistryError::DigestInvalid(
            "on S3 storage a chunked upload is hashed with sha256 as it arrives; complete it with a sha256 digest \
             (sha512 works for monolithic uploads)"
                .into(),
        ))
    }

    async fn commit(&self, id: &str, len: u64, state: Option<&str>, dest: &Path) -> Result<()> {
        let state = S3State::parse(state)?;
        let stored = state.parts.len() as u64 * PART_SIZE as u64 + state.tail_len as u64;
        if stored != len {
            return Err(RegistryError::Internal(format!("upload {id}: state holds {stored} bytes, expected {len}")));
        }
        let tail = self.read_tail(id, &state).await?;
        let tail_key = self.current_tail(id, &state)?;
        match &state.multipart {
            None => {
                // Smaller than one part: the tail is the blob.
                self.s3.put(dest, PutPayload::from(tail)).await?;
            }
            Some(mp) => {
                let data_key = self.key(id, "data")?;
                let mut parts: Vec<PartId> = state.parts.iter().map(|e| PartId { content_id: e.clone() }).collect();
                if !tail.is_empty() {
                    let last = self
                        .s3
                        .put_part(&data_key, mp, parts.len(), PutPayload::from(tail))
                        .await
                        .map_err(gone_upload)?;
                    parts.push(last);
                }
                self.s3.complete_multipart(&data_key, mp, parts).await.map_err(gone_upload)?;
                match &self.large_copy {
                    Some((large, threshold)) if len > *threshold => large.copy(&data_key, dest, len).await?,
                    _ => self.s3.copy(&data_key, dest).await?,
                }
                self.delete_quietly(&data_key).await;
            }
        }
        self.delete_quietly(&tail_key).await;
        Ok(())
    }

    async fn abort(&self, id: &str, state: Option<&str>) -> Result<()> {
        let state = S3State::parse(state)?;
        if let Some(mp) = &state.multipart
            && let Err(e) = self.s3.abort_multipart(&self.key(id, "data")?, mp).await
        {
            tracing::warn!(upload = id, error = %e, "could not abort a multipart upload");
        }
        if state.tail_len > 0 {
            self.delete_quietly(&self.current_tail(id, &state)?).await;
        }
        self.delete_quietly(&self.key(id, "data")?).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn bytes(len: usize, seed: u8) -> Bytes {
        Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
    }

    /// Appends `chunks` as one writer session, as the registry does; returns the new state.
    async fn append(up: &MultipartUploads, id: &str, offset: u64, state: Option<String>, chunks: Vec<Bytes>) -> String {
        let mut w = up.writer(id, offset, state.as_deref()).await.unwrap();
        w.write(chunks).await.unwrap();
        let new = w.finish().await.unwrap().unwrap();
        up.acknowledged(id, state.as_deref()).await.unwrap();
        new
    }

    #[tokio::test]
    async fn small_chunks_become_parts_and_commit_whole() {
        let store = Arc::new(InMemory::new());
        let up = MultipartUploads::new(store.clone(), "pfx/");
        let state = up.create("u1").await.unwrap();
        // 3 MiB, then 9 MiB in odd pieces, then 1 byte: parts of 8 MiB and a tail between.
        let a = bytes(3 * 1024 * 1024, 1);
        let b1 = bytes(4 * 1024 * 1024 + 5, 2);
        let b2 = bytes(5 * 1024 * 1024 - 5, 3);
        let c = bytes(1, 4);
        let s1 = append(&up, "u1", 0, state, vec![a.clone()]).await;
        let parsed: S3State = serde_json::from_str(&s1).unwrap();
        assert_eq!((parsed.parts.len(), parsed.tail_len), (0, a.len()));
        let s2 = append(&up, "u1", a.len() as u64, Some(s1.clone()), vec![b1.clone(), b2.clone()]).await;
        let parsed: S3State = serde_json::from_str(&s2).unwrap();
        assert_eq!(parsed.parts.len(), 1, "one 8 MiB part sent");
        let total = (a.len() + b1.len() + b2.len()) as u64;
        // A writer that starts from a stale offset is refused.
        assert!(up.writer("u1", 1, Some(&s2)).await.is_err());
        let s3 = append(&up, "u1", total, Some(s2), vec![c.clone()]).await;
        let dest = Path::from("pfx/blobs/x");
        up.commit("u1", total + 1, Some(&s3), &dest).await.unwrap();
        let got = store.get(&dest).await.unwrap().bytes().await.unwrap();
        let mut want = Vec::new();
        for part in [&a, &b1, &b2, &c] {
            want.extend_from_slice(part);
        }
        assert_eq!(got.len(), want.len());
        assert!(got == want, "committed bytes differ");
        // Nothing of the session is left.
        let left: Vec<_> =
            futures_util::StreamExt::collect::<Vec<_>>(store.list(Some(&Path::from("pfx/_uploads")))).await;
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_blob_smaller_than_a_part_and_abort() {
        let store = Arc::new(InMemory::new());
        let up = MultipartUploads::new(store.clone(), "");
        let state = up.create("u2").await.unwrap();
        let data = bytes(1000, 9);
        let s1 = append(&up, "u2", 0, state, vec![data.clone()]).await;
        up.commit("u2", 1000, Some(&s1), &Path::from("blob")).await.unwrap();
        assert!(store.get(&Path::from("blob")).await.unwrap().bytes().await.unwrap() == data);

        let state = up.create("u3").await.unwrap();
        let s1 = append(&up, "u3", 0, state, vec![bytes(9 * 1024 * 1024, 1)]).await;
        up.abort("u3", Some(&s1)).await.unwrap();
        let left: Vec<_> = futures_util::StreamExt::collect::<Vec<_>>(store.list(Some(&Path::from("_uploads")))).await;
        assert!(left.is_empty(), "{left:?}");
    }

    /// Records the copies it makes (with get + put on the same store).
    struct CountingCopy(Arc<InMemory>, std::sync::Mutex<Vec<u64>>);

    #[async_trait]
    impl LargeCopy for CountingCopy {
        async fn copy(&self, from: &Path, to: &Path, len: u64) -> Result<()> {
            self.1.lock().unwrap().push(len);
            let bytes = self.0.get(from).await?.bytes().await?;
            self.0.put(to, PutPayload::from(bytes)).await?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn blobs_above_the_threshold_take_the_large_copy() {
        let store = Arc::new(InMemory::new());
        let large = Arc::new(CountingCopy(store.clone(), Default::default()));
        let up = MultipartUploads::new(store.clone(), "").with_large_copy(large.clone(), 10 * 1024 * 1024);
        for (id, len) in [("small", 9 * 1024 * 1024), ("large", 10 * 1024 * 1024 + 1)] {
            let state = up.create(id).await.unwrap();
            let data = bytes(len, 3);
            let s1 = append(&up, id, 0, state, vec![data.clone()]).await;
            let dest = Path::from(format!("blobs/{id}"));
            up.commit(id, len as u64, Some(&s1), &dest).await.unwrap();
            assert!(store.get(&dest).await.unwrap().bytes().await.unwrap() == data);
        }
        assert_eq!(*large.1.lock().unwrap(), vec![10 * 1024 * 1024 + 1], "only the large blob");
    }
}
