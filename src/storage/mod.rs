//! The blob store: content-addressed, write-once objects behind `object_store` (the local
//! filesystem by default). Keys are `blobs/<algorithm>/<first two hex>/<hex>`. Uploads live
//! under their own keys until committed (see [`uploads`]); reads stream, with `Range` passed
//! down to the store.

pub mod uploads;

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt};

use crate::error::{RegistryError, Result};
use crate::oci::Digest;
use uploads::{LocalUploads, UploadBackend};

/// A stream of blob bytes.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Read size for blobs served from local files.
const READ_CHUNK: usize = 1024 * 1024;

/// Blob storage plus the upload backend that belongs to it.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    uploads: Arc<dyn UploadBackend>,
}

/// The object key of a blob.
pub fn blob_key(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!(
        "blobs/{}/{}/{}",
        digest.algorithm().as_str(),
        &hex[..2],
        hex
    ))
}

impl BlobStore {
    /// A blob store on the local filesystem under `root`.
    pub fn filesystem(root: &FsPath) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)?;
        let local = Arc::new(LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true));
        let uploads = Arc::new(LocalUploads::new(local.clone(), root)?);
        Ok(BlobStore {
            store: local,
            uploads,
        })
    }

    pub fn uploads(&self) -> &dyn UploadBackend {
        self.uploads.as_ref()
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Whether the object of a blob exists.
    pub async fn exists(&self, digest: &Digest) -> Result<bool> {
        match self.store.head(&blob_key(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams a blob, or the byte range of it.
    pub async fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let result = match self.store.get_opts(&blob_key(digest), options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RegistryError::BlobUnknown(format!(
                    "blob {digest} is missing from storage"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let range = result.range.clone();
        Ok(match result.payload {
            GetResultPayload::File(file, _) => file_stream(file, range),
            GetResultPayload::Stream(s) => s.map_err(std::io::Error::other).boxed(),
        })
    }

    /// Deletes a blob's object (garbage collection only).
    pub async fn delete(&self, digest: &Digest) -> Result<()> {
        match self.store.delete(&blob_key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Streams `range` of a local file in large chunks, each read on the blocking pool.
fn file_stream(file: std::fs::File, range: Range<u64>) -> ByteStream {
    use std::os::unix::fs::FileExt;
    let state = (Some(file), range.start, range.end);
    futures_util::stream::try_unfold(state, |(file, pos, end)| async move {
        let Some(file) = file else { return Ok(None) };
        if pos >= end {
            return Ok(None);
        }
        let (file, chunk) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let len = READ_CHUNK.min((end - pos) as usize);
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, pos)?;
            Ok((file, Bytes::from(buf)))
        })
        .await
        .map_err(std::io::Error::other)??;
        let next = pos + chunk.len() as u64;
        Ok(Some((chunk, (Some(file), next, end))))
    })
    .boxed()
}
