//! The blob store: content-addressed, write-once objects behind `object_store` (the local
//! filesystem by default). Keys are `blobs/<algorithm>/<first two hex>/<hex>`. Uploads live
//! under their own keys until committed (see [`uploads`]); reads stream, with `Range` passed
//! down to the store.

mod direct;
mod open_files;
pub mod s3;
pub mod s3_copy;
pub mod uploads;

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::config::{AzureConfig, GcsConfig, S3Config};
use crate::error::{RegistryError, Result};
use crate::oci::Digest;
use s3::MultipartUploads;
use uploads::{LocalUploads, UploadBackend};

/// A stream of blob bytes.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Read size for blobs served from local files.
const READ_CHUNK: usize = 256 * 1024;

/// Read size for what is left of a local blob under [`READ_CHUNK`] (small blobs, tails): the
/// HTTP server's write buffer ([`HTTP_WRITE_BUFFER`](crate::config::HTTP_WRITE_BUFFER)).
///
/// Why: actix-http copies each body chunk into its connection's write buffer and keeps that
/// buffer's allocation for the life of the connection unless it grew past 128 KiB. A 64 KiB
/// blob sent in one chunk leaves every connection that served it holding about 80 KiB — 80 MB
/// for 1,000 pulling clients. In pieces of the write buffer's size it stays at about 16 KiB,
/// and a [`READ_CHUNK`] grows it past the limit, so it is released once it has been sent.
pub const SMALL_READ: usize = crate::config::HTTP_WRITE_BUFFER;

/// Blob storage plus the upload backend that belongs to it.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    uploads: Arc<dyn UploadBackend>,
    /// Key prefix (`""`, or e.g. `registry/`).
    prefix: String,
    /// Presigns blob GETs (S3 with `redirect` on).
    signer: Option<(Arc<AmazonS3>, Duration)>,
    /// A filesystem store's root, and its blob files kept open for a moment (see
    /// [`open_files`]): blobs are read from there, and synced after an import.
    local: Option<open_files::OpenFiles>,
}

impl BlobStore {
    /// A blob store on the local filesystem under `root`; uploads write full blocks with direct
    /// I/O when `direct_io` is set.
    pub fn filesystem(root: &FsPath, direct_io: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)?;
        let local = Arc::new(LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true));
        let uploads = Arc::new(LocalUploads::new(local.clone(), root, direct_io)?);
        Ok(BlobStore {
            store: local,
            uploads,
            prefix: String::new(),
            signer: None,
            local: Some(open_files::OpenFiles::new(root)),
        })
    }

    /// A blob store on S3 (or an S3-compatible server). Settings left empty come from the
    /// usual `AWS_*` environment variables and credential chain.
    pub fn s3(config: &S3Config) -> anyhow::Result<Self> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_allow_http(config.allow_http);
        if !config.region.is_empty() {
            builder = builder.with_region(&config.region);
        }
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(&config.endpoint);
        }
        if !config.access_key_id.is_empty() {
            builder =
                builder.with_access_key_id(&config.access_key_id).with_secret_access_key(&config.secret_access_key);
        }
        // Retried where safe (object_store retries idempotent requests and throttling).
        let retry = RetryConfig {
            max_retries: config.max_retries,
            retry_timeout: Duration::from_secs(config.retry_timeout_secs),
            ..Default::default()
        };
        let builder = builder.with_retry(retry).with_config(
            AmazonS3ConfigKey::Client(object_store::ClientConfigKey::Timeout),
            format!("{}s", config.request_timeout_secs.max(1)),
        );
        let address = s3_copy::BucketAddress::of(&builder)?;
        let s3 = Arc::new(builder.build()?);
        let prefix = match config.prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        // Blobs above the threshold are committed with a multipart copy (S3 refuses one copy
        // above 5 GiB).
        let large_copy = s3_copy::S3MultipartCopy::new(
            s3.clone(),
            address,
            config.multipart_copy_part_size,
            config.multipart_copy_concurrency,
            config.max_retries,
        )?;
        let uploads = Arc::new(
            MultipartUploads::new(s3.clone(), &prefix)
                .with_large_copy(Arc::new(large_copy), config.multipart_copy_threshold),
        );
        let signer = config.redirect.then(|| (s3.clone(), Duration::from_secs(config.redirect_expiry_secs)));
        Ok(BlobStore { store: s3, uploads, prefix, signer, local: None })
    }

    /// A blob store on Google Cloud Storage; empty settings come from the `GOOGLE_*`
    /// environment (service account) as `object_store` reads it.
    pub fn gcs(config: &GcsConfig) -> anyhow::Result<Self> {
        let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(&config.bucket);
        if !config.service_account_path.is_empty() {
            builder = builder.with_service_account_path(&config.service_account_path);
        }
        let store = Arc::new(builder.build()?);
        Ok(Self::multipart(store, &config.prefix))
    }

    /// A blob store on Azure Blob Storage; empty settings come from the `AZURE_*` environment.
    pub fn azure(config: &AzureConfig) -> anyhow::Result<Self> {
        let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(&config.container);
        if !config.account.is_empty() {
            builder = builder.with_account(&config.account);
        }
        if !config.access_key.is_empty() {
            builder = builder.with_access_key(&config.access_key);
        }
        let store = Arc::new(builder.build()?);
        Ok(Self::multipart(store, &config.prefix))
    }

    /// A blob store on any object store with multipart uploads, without redirects.
    pub fn multipart<T: s3::PartStore>(store: Arc<T>, prefix: &str) -> Self {
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let uploads = Arc::new(MultipartUploads::new(store.clone(), &prefix));
        BlobStore { store, uploads, prefix, signer: None, local: None }
    }

    /// The object key of a blob.
    pub fn blob_key(&self, digest: &Digest) -> Path {
        let hex = digest.hex();
        Path::from(format!("{}blobs/{}/{}/{}", self.prefix, digest.algorithm().as_str(), &hex[..2], hex))
    }

    /// A presigned URL to GET a blob straight from the object store, when redirects are on.
    pub async fn presigned_url(&self, digest: &Digest) -> Result<Option<String>> {
        let Some((s3, expiry)) = &self.signer else { return Ok(None) };
        let url = s3.signed_url(http::Method::GET, &self.blob_key(digest), *expiry).await?;
        Ok(Some(url.to_string()))
    }

    pub fn uploads(&self) -> &dyn UploadBackend {
        self.uploads.as_ref()
    }

    /// Whether the store answers (a lookup of a key that does not exist).
    pub async fn ping(&self) -> Result<()> {
        match self.store.head(&Path::from(format!("{}_health/probe", self.prefix))).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the object of a blob exists.
    pub async fn exists(&self, digest: &Digest) -> Result<bool> {
        match self.store.head(&self.blob_key(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a blob's object (garbage collection only); an absent object is not an error.
    pub async fn delete(&self, digest: &Digest) -> Result<()> {
        self.delete_object(self.blob_key(digest)).await
    }

    /// Deletes an object, closing its file if it is kept open; an absent one is not an error.
    async fn delete_object(&self, key: Path) -> Result<()> {
        if let Some(local) = &self.local {
            local.forget(key.as_ref());
        }
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `blobs/` (with `blobs = true`) or `_uploads/`, as
    /// `(key relative to the store's prefix, last modified in Unix seconds)`.
    pub fn list(&self, blobs: bool) -> BoxStream<'static, Result<(String, i64)>> {
        let prefix = Path::from(format!("{}{}", self.prefix, if blobs { "blobs" } else { "_uploads" }));
        let strip = self.prefix.clone();
        self.store
            .list(Some(&prefix))
            .filter(|m| std::future::ready(!matches!(m, Err(object_store::Error::NotFound { .. }))))
            .map(move |m| {
                let m = m?;
                let key = m.location.as_ref().strip_prefix(strip.as_str()).unwrap_or(m.location.as_ref()).to_string();
                Ok((key, m.last_modified.timestamp()))
            })
            .boxed()
    }

    /// When an object was last written (Unix seconds), if it exists.
    pub async fn modified(&self, key: &str) -> Result<Option<i64>> {
        match self.store.head(&Path::from(format!("{}{key}", self.prefix))).await {
            Ok(m) => Ok(Some(m.last_modified.timestamp())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// When a blob's object was last modified (Unix seconds), `None` if there is none.
    pub async fn blob_modified(&self, digest: &Digest) -> Result<Option<i64>> {
        match self.store.head(&self.blob_key(digest)).await {
            Ok(m) => Ok(Some(m.last_modified.timestamp())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object by key (garbage collection of leftovers only).
    pub async fn delete_key(&self, key: &str) -> Result<()> {
        self.delete_object(Path::from(format!("{}{key}", self.prefix))).await
    }

    /// Stores the blob `digest` from `data` (a restore), verifying as it streams: the object
    /// appears only when the bytes hash to `digest` and number `size`; on a filesystem store
    /// it is synced to the disk before this returns.
    pub async fn import(&self, digest: &Digest, size: u64, mut data: ByteStream) -> Result<()> {
        let key = self.blob_key(digest);
        let mut writer = object_store::WriteMultipart::new(self.store.put_multipart(&key).await?);
        let mut hasher = crate::oci::Hasher::new(digest.algorithm());
        let mut len = 0u64;
        let result = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                len += chunk.len() as u64;
                writer.wait_for_capacity(4).await?;
                writer.put(chunk);
            }
            Ok::<_, RegistryError>(())
        }
        .await;
        if let Err(e) = result {
            let _ = writer.abort().await;
            return Err(e);
        }
        let actual = hasher.finish();
        if &actual != digest || len != size {
            let _ = writer.abort().await;
            return Err(RegistryError::DigestInvalid(format!(
                "blob {digest}: the copy has digest {actual} and {len} bytes (expected {size})"
            )));
        }
        writer.finish().await?;
        if let Some(local) = &self.local {
            let path = local.root().join(key.as_ref());
            tokio::task::spawn_blocking(move || {
                std::fs::File::open(&path)?.sync_all()?;
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok::<_, std::io::Error>(())
            })
            .await
            .map_err(|e| RegistryError::internal("sync", e))??;
        }
        Ok(())
    }

    /// Streams a blob, or the byte range of it.
    pub async fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream> {
        if let Some(local) = &self.local {
            let open = local.open(self.blob_key(digest).as_ref()).await.map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    RegistryError::BlobUnknown(format!("blob {digest} is missing from storage"))
                }
                _ => RegistryError::internal("opening a blob", e),
            })?;
            let range = range.unwrap_or(0..open.len);
            if range.end > open.len {
                return Err(RegistryError::Internal(format!(
                    "blob {digest} holds {} bytes in storage, fewer than the {} asked for",
                    open.len, range.end
                )));
            }
            return Ok(file_stream(open.file, range));
        }
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let result = match self.store.get_opts(&self.blob_key(digest), options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RegistryError::BlobUnknown(format!("blob {digest} is missing from storage")));
            }
            Err(e) => return Err(e.into()),
        };
        // (an object store's stream: a filesystem store's files were read above)
        Ok(result.into_stream().map_err(std::io::Error::other).boxed())
    }
}

/// Streams `range` of a local file in chunks of [`READ_CHUNK`], and what is left under that in
/// pieces of [`SMALL_READ`].
///
/// A chunk already in the page cache is read at once on the server's own thread
/// (`preadv2(RWF_NOWAIT)`: it never waits for the disk): no thread hop, and the bytes are still
/// in this core's cache when the HTTP layer copies them to the socket. A chunk that would wait
/// for the disk is read on the blocking pool, after asking the kernel to read the next
/// [`COLD_READ_AHEAD`] bytes in the background, so the disk works while chunks are sent and no
/// server thread waits for the disk or for a slow client.
///
/// A stream reuses its chunk buffers: the HTTP layer copies a chunk into its socket buffer and
/// drops it, which hands the buffer back for the next read. Memory that is already mapped and
/// written once costs nothing to fill again, where a new buffer for every chunk costs page
/// faults and zeroing that showed as a third of a pull's CPU. The last chunk's buffer is not
/// kept: while it waits for a slow client, the stream holds no second one.
fn file_stream(file: Arc<std::fs::File>, range: Range<u64>) -> ByteStream {
    use std::os::unix::fs::FileExt;
    let pool: ChunkPool = Arc::default();
    let end = range.end;
    // (next offset, end of what the kernel was asked to read ahead)
    futures_util::stream::try_unfold((range.start, range.start), move |(pos, ahead)| {
        let (file, pool) = (file.clone(), pool.clone());
        async move {
            if pos >= end {
                return Ok(None);
            }
            let left = end - pos;
            let len = if left >= READ_CHUNK as u64 { READ_CHUNK } else { SMALL_READ.min(left as usize) };
            let mut buf = take_buffer(&pool, len);
            let mut new_ahead = ahead;
            let buf = match read_cached(&file, &mut buf, pos)? {
                Some(n) if n == len => buf,
                // None, or only the start was in the cache: the rest waits for the disk (a
                // chunk is always whole, so its size never falls between the two above).
                cached => {
                    let have = cached.unwrap_or(0);
                    // Ask again only once half of the last stretch is used up.
                    let advise = (ahead < (pos + COLD_READ_AHEAD / 2).min(end)).then(|| {
                        let from = ahead.max(pos);
                        new_ahead = (pos + COLD_READ_AHEAD).min(end);
                        (from, new_ahead - from)
                    });
                    tokio::task::spawn_blocking(move || {
                        if let Some((from, len)) = advise {
                            advise_willneed(&file, from, len);
                        }
                        file.read_exact_at(&mut buf[have..], pos + have as u64).map(|()| buf)
                    })
                    .await
                    .map_err(std::io::Error::other)??
                }
            };
            let next = pos + buf.len() as u64;
            // The last chunk's buffer is not kept: nothing will be read into it.
            let pool = (next < end).then_some(pool);
            Ok(Some((Bytes::from_owner(PooledChunk { buf, pool }), (next, new_ahead))))
        }
    })
    .boxed()
}

/// Bytes the disk is asked to read ahead when a blob read misses the page cache.
const COLD_READ_AHEAD: u64 = 8 * 1024 * 1024;

/// Starts reading `len` bytes at `pos` into the page cache in the background (a hint: errors
/// are ignored, the read that follows reports them).
fn advise_willneed(file: &std::fs::File, pos: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a hint on a descriptor we own.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), pos as libc::off_t, len as libc::off_t, libc::POSIX_FADV_WILLNEED) };
}

/// Reads what of `buf.len()` bytes at `pos` is in the page cache, without waiting for the
/// disk: `None` when nothing is, or the filesystem cannot tell. (`0` is `None` too: Linux 5.9
/// and 5.10 may return it before the end of the file; the blocking read that follows tells a
/// real end of file.)
fn read_cached(file: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<Option<usize>> {
    use std::os::unix::io::AsRawFd;
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: one iovec over `buf`, which outlives the call; the kernel writes at most its length.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, pos as libc::off_t, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Ok((n > 0).then_some(n as usize));
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => Ok(None),
        _ => Err(err),
    }
}

type ChunkPool = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// A buffer of `len` bytes from the pool, or a new one.
fn take_buffer(pool: &ChunkPool, len: usize) -> Vec<u8> {
    let mut buf = pool.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
    buf.resize(len, 0);
    buf
}

/// A chunk of a file stream; its buffer goes back to the stream's pool when dropped (`None`:
/// the stream's last chunk, whose buffer is freed).
struct PooledChunk {
    buf: Vec<u8>,
    pool: Option<ChunkPool>,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let Some(pool) = &self.pool else { return };
        let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
        // A reader and a chunk in flight need two; more would only be kept idle.
        if pool.len() < 2 {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Whether `dir` is on a disk filesystem that has direct I/O and a page cache the tests can
/// empty (ext4, XFS), not tmpfs (tests).
#[cfg(test)]
fn on_disk(dir: &FsPath) -> bool {
    let fs_type = nix::sys::statfs::statfs(dir).unwrap().filesystem_type();
    fs_type == nix::sys::statfs::EXT4_SUPER_MAGIC || fs_type == nix::sys::statfs::XFS_SUPER_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob comes in whole [`READ_CHUNK`]s, then its rest in [`SMALL_READ`] pieces: no chunk
    /// in between, which would leave the connection's write buffer large (see `SMALL_READ`),
    /// also when only part of a chunk is in the page cache.
    #[tokio::test]
    async fn file_stream_sends_big_chunks_then_small_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("blob");
        let data: Vec<u8> = (0..2 * READ_CHUNK + 2 * SMALL_READ + 100).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let sizes = |chunks: &[Bytes]| chunks.iter().map(Bytes::len).collect::<Vec<_>>();
        let chunks: Vec<Bytes> = file_stream(file.clone(), 0..data.len() as u64).try_collect().await.unwrap();
        assert_eq!(sizes(&chunks), [READ_CHUNK, READ_CHUNK, SMALL_READ, SMALL_READ, 100]);
        assert_eq!(chunks.concat(), data);
        let chunks: Vec<Bytes> =
            file_stream(file.clone(), 0..(READ_CHUNK + SMALL_READ) as u64).try_collect().await.unwrap();
        assert_eq!(sizes(&chunks), [READ_CHUNK, SMALL_READ]);
        // Only the start of a chunk in the page cache: the chunk still comes whole.
        {
            use std::os::unix::io::AsRawFd;
            // Out of the cache, then the first 100,000 bytes back in without read-ahead (a
            // large folio spanning the cut would survive dropping just the tail).
            file.sync_all().unwrap();
            // SAFETY: hints on descriptors we own.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            let warm = std::fs::File::open(&path).unwrap();
            unsafe { libc::posix_fadvise(warm.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
            std::os::unix::fs::FileExt::read_exact_at(&warm, &mut [0u8; 100_000], 0).unwrap();
            let partly = read_cached(&file, &mut vec![0u8; READ_CHUNK], 0).unwrap();
            // (On ext4 and XFS, as in the tests' data dir here, the setup must have worked.)
            if on_disk(tmp.path()) {
                assert!(matches!(partly, Some(n) if n < READ_CHUNK), "only part of a chunk cached: {partly:?}");
            }
            let chunks: Vec<Bytes> = file_stream(file.clone(), 0..data.len() as u64).try_collect().await.unwrap();
            assert_eq!(sizes(&chunks), [READ_CHUNK, READ_CHUNK, SMALL_READ, SMALL_READ, 100]);
            assert_eq!(chunks.concat(), data);
        }
        // A range under READ_CHUNK (a small blob) comes in pieces from its first byte.
        let chunks: Vec<Bytes> = file_stream(file, 5..5 + 3 * SMALL_READ as u64 - 1).try_collect().await.unwrap();
        assert_eq!(sizes(&chunks), [SMALL_READ, SMALL_READ, SMALL_READ - 1]);
        assert_eq!(chunks.concat(), data[5..5 + 3 * SMALL_READ - 1]);
    }

    async fn collect(stream: ByteStream) -> Vec<u8> {
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= READ_CHUNK));
        chunks.concat()
    }

    /// Whole files and ranges come back byte for byte, from the page cache (read in place) and
    /// after the file's pages were dropped from it (read on the blocking pool).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_stream_returns_exact_ranges_cached_or_not() {
        use std::os::unix::io::AsRawFd;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("blob");
        let data: Vec<u8> = (0..3 * READ_CHUNK + 12_345).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let len = data.len() as u64;
        let disk = on_disk(tmp.path());
        let ranges = [0..len, 1..len - 1, READ_CHUNK as u64 - 3..READ_CHUNK as u64 + 3, len - 1..len, 5..5];
        let mut uncached_reads = 0;
        for cached in [true, false] {
            for r in ranges.clone() {
                let file = std::fs::File::open(&path).unwrap();
                if !cached {
                    file.sync_all().unwrap();
                    // On a disk filesystem the pages go (the kernel may keep one now and then,
                    // so it is asked a few times): the stream must take the blocking path
                    // (tmpfs keeps its pages, and takes the cached one).
                    let mut probe = vec![0u8; 4096];
                    for _ in 0..20 {
                        // SAFETY: a hint on an open descriptor.
                        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                        if read_cached(&file, &mut probe, r.start.min(len - 1)).unwrap().is_none() {
                            uncached_reads += 1;
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
                let got = collect(file_stream(Arc::new(file), r.clone())).await;
                assert_eq!(got, &data[r.start as usize..r.end as usize], "range {r:?}, cached {cached}");
            }
        }
        if disk {
            assert!(uncached_reads >= ranges.len() - 1, "the blocking path was taken {uncached_reads} times");
        }
        // A file shorter than the range asked for is an error, not a short answer.
        let file = std::fs::File::open(&path).unwrap();
        let result: std::io::Result<Vec<Bytes>> = file_stream(Arc::new(file), 0..len + 10).try_collect().await;
        assert!(result.is_err());
    }
}
