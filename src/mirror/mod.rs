//! Pull-through mirror: a read of a mirrored repository that misses (or whose tag is older than
//! its TTL) goes to the upstream registry, whose answer is verified and stored through the
//! registry service's normal paths, then served from local storage.
//!
//! Naming: mirrored content lives in repositories named `<upstream>/<name>` (so the catalog
//! shows where it came from). A request reaches an upstream by that prefix
//! (`docker pull mirror:5000/docker.io/library/busybox`), by containerd's `?ns=<host>`, or —
//! for Docker daemons using `registry-mirrors`, which ask for `library/busybox` — through the
//! default upstream, when the name is neither a local repository nor in a local namespace.
//!
//! Concurrent misses for one manifest or blob share one upstream fetch (single flight): the
//! first request starts the fetch as a task of its own (so it completes even if that client
//! goes away) and every request for the same thing waits for it. A blob GET that joins a fetch
//! gets the bytes as they arrive, from the fetch's [`tap`], rather than after the commit.

mod tap;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use reqwest::Method;

use crate::config::MirrorConfig;
use crate::error::{RegistryError, Result};
use crate::events::{Events, RepoEvent};
use crate::meta::now;
use crate::metrics;
use crate::oci::{Digest, Reference};
use crate::registry::{ByteRange, Registry};
use crate::storage::ByteStream;
use tap::{EndGuard, Next, Reader, Tap};
pub use upstream::Upstream;
use upstream::{MANIFEST_ACCEPT, is_manifest_type};

/// Bytes gathered from the upstream before they go on to storage and the client.
const COALESCE: usize = 512 * 1024;

/// A request's mirrored repository: which upstream, the local name, the upstream name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub upstream: usize,
    pub local: String,
    pub remote: String,
}

/// A fetch every concurrent request for one thing waits for; its error is shared by them all.
type Flight = Shared<BoxFuture<'static, std::result::Result<(), Arc<RegistryError>>>>;

/// What each waiter of a flight answers: the fetch's own error where it is the upstream's
/// answer (unknown, denied, rate limited) or an internal failure (a bare 500), an upstream
/// failure (502) for the rest, e.g. content that did not verify.
fn flight_result(result: std::result::Result<(), Arc<RegistryError>>) -> Result<()> {
    use RegistryError::*;
    result.map_err(|e| match &*e {
        ManifestUnknown(m) => ManifestUnknown(m.clone()),
        BlobUnknown(m) => BlobUnknown(m.clone()),
        Denied(m) => Denied(m.clone()),
        TooManyRequests(m) => TooManyRequests(m.clone()),
        Internal(m) => Internal(m.clone()),
        other => Unavailable(other.to_string()),
    })
}

/// A fetch in flight, and for a blob the tap its joiners read.
type InFlight = (Flight, Option<Arc<Tap>>);

/// A blob being fetched, streamed to a client that asked for it while it is stored.
pub struct LiveBlob {
    /// The upstream's Content-Length, if it sent one.
    pub size: Option<u64>,
    pub body: ByteStream,
}

pub struct Mirror {
    pub config: MirrorConfig,
    upstreams: Vec<Upstream>,
    default: Option<usize>,
    registry: Arc<Registry>,
    inflight: Mutex<HashMap<String, InFlight>>,
    /// Where "mirror stored new content" events go.
    events: std::sync::OnceLock<Arc<Events>>,
}

impl Mirror {
    pub fn new(config: MirrorConfig, registry: Arc<Registry>) -> anyhow::Result<Mirror> {
        let mut upstreams = Vec::new();
        for u in &config.upstreams {
            crate::oci::validate_name(&u.name).map_err(|_| {
                anyhow::anyhow!("mirror upstream name {:?} must be a valid repository path component", u.name)
            })?;
            if u.name.contains('/') {
                anyhow::bail!("mirror upstream name {:?} must be one path component", u.name);
            }
            upstreams.push(Upstream::new(u.clone())?);
        }
        let default = match config.default_upstream.as_str() {
            "" => None,
            name => Some(
                upstreams
                    .iter()
                    .position(|u| u.config.name == name)
                    .ok_or_else(|| anyhow::anyhow!("mirror.default_upstream {name:?} is not an upstream"))?,
            ),
        };
        Ok(Mirror {
            config,
            upstreams,
            default,
            registry,
            inflight: Mutex::new(HashMap::new()),
            events: std::sync::OnceLock::new(),
        })
    }

    /// Sends "mirror stored new content" events to `events`.
    pub fn set_events(&self, events: Arc<Events>) {
        let _ = self.events.set(events);
    }

    fn by_host(&self, host: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| {
            u.config.name == host
                || reqwest::Url::parse(&u.config.url).ok().is_some_and(|url| {
                    let h = url.host_str().unwrap_or("");
                    host == h || url.port().is_some_and(|p| host == format!("{h}:{p}"))
                })
        })
    }

    /// Whether a local namespace took an upstream's name: the mirror then stays out of it, so
    /// it can neither expose that namespace nor be written through it.
    async fn shadowed(&self, upstream: usize) -> Result<bool> {
        Ok(self.registry.meta.namespace(&self.upstreams[upstream].config.name).await?.is_some())
    }

    /// Whether a name is a local repository or in a local namespace.
    async fn is_local(&self, name: &str) -> Result<bool> {
        let meta = &self.registry.meta;
        let first = name.split('/').next().unwrap_or(name);
        Ok(meta.repository_id(name).await?.is_some() || meta.namespace(first).await?.is_some())
    }

    fn target(&self, upstream: usize, local: String, remote: &str) -> Target {
        Target { upstream, local, remote: self.upstreams[upstream].remote_name(remote) }
    }

    /// Whether, and where, a repository name is mirrored. `ns` is containerd's `?ns=`.
    pub async fn resolve(&self, name: &str, ns: Option<&str>) -> Result<Option<Target>> {
        if let Some(ns) = ns
            && let Some(i) = self.by_host(ns)
            && !self.shadowed(i).await?
        {
            return Ok(Some(self.target(i, format!("{}/{name}", self.upstreams[i].config.name), name)));
        }
        if let Some((first, rest)) = name.split_once('/')
            && let Some(i) = self.upstreams.iter().position(|u| u.config.name == first)
            && !self.shadowed(i).await?
        {
            return Ok(Some(self.target(i, name.to_string(), rest)));
        }
        let Some(i) = self.default else { return Ok(None) };
        if self.shadowed(i).await? || self.is_local(name).await? {
            return Ok(None);
        }
        Ok(Some(self.target(i, format!("{}/{name}", self.upstreams[i].config.name), name)))
    }

    /// Whether some request for `name` may be served by the mirror: its prefix or the default
    /// upstream resolve it, or (for containerd's `?ns=`, which token requests do not carry) it
    /// is not local at all. Pull rights through the mirror are granted on exactly these names.
    pub async fn may_serve(&self, name: &str) -> Result<bool> {
        if self.resolve(name, None).await?.is_some() {
            return Ok(true);
        }
        if self.is_local(name).await? {
            return Ok(false);
        }
        for i in 0..self.upstreams.len() {
            if !self.shadowed(i).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs the fetch `make` builds once for `key` however many requests ask at the same
    /// time; only the first caller's `make` runs, and its `tap` is the one the flight keeps.
    /// Returns the shared flight, its tap, and whether this caller started it.
    fn join_flight(
        self: &Arc<Self>,
        key: &str,
        tap: Option<Arc<Tap>>,
        make: impl FnOnce() -> BoxFuture<'static, Result<()>>,
    ) -> (Flight, Option<Arc<Tap>>, bool) {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((f, tap)) = map.get(key) {
            return (f.clone(), tap.clone(), false);
        }
        /// Takes the flight out of the map when the fetch ends, also by a panic.
        struct Landed(Arc<Mirror>, String);
        impl Drop for Landed {
            fn drop(&mut self) {
                self.0.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
            }
        }
        let fetch = make();
        let (this, k) = (self.clone(), key.to_string());
        // (Made inside the task: a task dropped unpolled, by a runtime shutting down, must not
        // take the map's lock here, where this thread holds it.)
        let task = tokio::spawn(async move {
            let _landed = Landed(this, k);
            fetch.await.map_err(Arc::new)
        });
        let f: Flight = async move {
            task.await.unwrap_or_else(|e| Err(Arc::new(RegistryError::internal("mirror fetch task", e))))
        }
        .boxed()
        .shared();
        map.insert(key.to_string(), (f.clone(), tap.clone()));
        (f, tap, true)
    }

    async fn single_flight(
        self: &Arc<Self>,
        key: String,
        make: impl FnOnce() -> BoxFuture<'static, Result<()>>,
    ) -> Result<()> {
        let (flight, _, _) = self.join_flight(&key, None, make);
        flight_result(flight.await)
    }

    /// Makes sure the manifest `reference` of a mirrored repository is cached and fresh enough;
    /// serves stale content when the upstream cannot be reached.
    pub async fn ensure_manifest(self: &Arc<Self>, target: &Target, reference: &Reference) -> Result<()> {
        let up = &self.upstreams[target.upstream];
        let meta = &self.registry.meta;
        match reference {
            Reference::Digest(d) => {
                if meta.manifest_by_digest(&target.local, d).await?.is_some() {
                    tracing::info!(target: "berth::mirror", repository = %target.local, reference = %d, "cache hit");
                    metrics::global().mirror_hit("manifest");
                    return Ok(());
                }
            }
            Reference::Tag(tag) => {
                if let Some((digest, confirmed)) = meta.tag_state(&target.local, tag).await? {
                    if now() - confirmed < up.config.tag_ttl_secs as i64 {
                        tracing::info!(target: "berth::mirror", repository = %target.local, reference = %tag, "cache hit");
                        metrics::global().mirror_hit("manifest");
                        return Ok(());
                    }
                    // Stale: ask upstream whether the tag moved (a HEAD is not a pull on Docker Hub).
                    match up
                        .send(Method::HEAD, &target.remote, &format!("manifests/{tag}"), Some(MANIFEST_ACCEPT))
                        .await
                    {
                        Ok(resp) if resp.status().is_success() => {
                            let upstream_digest =
                                resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok());
                            if upstream_digest == Some(digest.as_str()) {
                                meta.touch_tag(&target.local, tag).await?;
                                tracing::info!(target: "berth::mirror", repository = %target.local, reference = %tag, "revalidated");
                                metrics::global().mirror_hit("manifest");
                                return Ok(());
                            }
                        }
                        Ok(resp) => {
                            tracing::warn!(target: "berth::mirror", repository = %target.local, reference = %tag, status = %resp.status(), "upstream refused revalidation; serving the cached tag");
                            metrics::global().mirror_hit("manifest");
                            return Ok(());
                        }
                        Err(e) => {
                            tracing::warn!(target: "berth::mirror", repository = %target.local, reference = %tag, error = %e, "upstream unreachable; serving the cached tag");
                            metrics::global().mirror_hit("manifest");
                            return Ok(());
                        }
                    }
                }
            }
        }
        tracing::info!(target: "berth::mirror", repository = %target.local, reference = %reference, "cache miss");
        metrics::global().mirror_miss("manifest");
        let key = format!("manifest {} {}", target.local, reference);
        let (this, target, reference) = (self.clone(), target.clone(), reference.clone());
        self.single_flight(key, move || async move { this.fetch_manifest(&target, &reference).await }.boxed()).await
    }

    async fn fetch_manifest(&self, target: &Target, reference: &Reference) -> Result<()> {
        let up = &self.upstreams[target.upstream];
        let what = format!("manifest {}:{reference}", target.remote);
        let resp =
            up.send(Method::GET, &target.remote, &format!("manifests/{reference}"), Some(MANIFEST_ACCEPT)).await?;
        if !resp.status().is_success() {
            return Err(up.status_error(resp.status(), &what));
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| crate::oci::manifest::bare_media_type(v).to_string())
            .filter(|t| is_manifest_type(t));
        let claimed = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(String::from);
        let limit = self.registry.limits.max_manifest_bytes;
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Unavailable(format!("{what}: {e}")))?;
            // Counted as it arrives, as a blob's chunks are: fetched, whether or not it is stored.
            metrics::global().mirror_upstream_bytes(chunk.len() as u64);
            if body.len() + chunk.len() > limit {
                return Err(RegistryError::Unavailable(format!("{what} is larger than {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        // Verify what arrived: against the digest asked for, or the one upstream announced.
        let expected = match (reference, claimed) {
            (Reference::Digest(d), _) => Some(d.clone()),
            (Reference::Tag(_), Some(c)) => Some(c.parse::<Digest>()?),
            (Reference::Tag(_), None) => None,
        };
        if let Some(expected) = &expected
            && &expected.same_algorithm_of(&body) != expected
        {
            return Err(RegistryError::Unavailable(format!("{what}: content does not match digest {expected}")));
        }
        let pushed =
            self.registry.store_manifest(&target.local, reference, content_type.as_deref(), &body, false).await?;
        tracing::info!(target: "berth::mirror", repository = %target.local, reference = %reference, digest = %pushed.digest, bytes = body.len(), "cached manifest from upstream");
        if let Some(events) = self.events.get() {
            let tag = match reference {
                Reference::Tag(t) => Some(t.as_str()),
                Reference::Digest(_) => None,
            };
            let ev = RepoEvent {
                repository: &target.local,
                tag,
                digest: Some(pushed.digest.as_str()),
                media_type: Some(&pushed.media_type),
                kind: Some("manifest"),
                ..RepoEvent::default()
            };
            events.mirrored(ev).await;
        }
        Ok(())
    }

    /// A blob of a mirrored repository: `None` when it is (now) stored locally; with `live`, the
    /// request that starts an upstream fetch, and any that joins it in time for its first
    /// bytes, instead gets the bytes as they arrive, while they are stored and verified (the
    /// last chunk is held back until the digest checks out, so a client never receives a
    /// complete blob that was not verified; it is not held for the flush and commit that
    /// follow). The fetch goes at the pace of the client that started it and of storage; the
    /// ones that joined never slow it.
    pub async fn blob(self: &Arc<Self>, target: &Target, digest: &Digest, live: bool) -> Result<Option<LiveBlob>> {
        let meta = &self.registry.meta;
        if meta.linked_blob_size(&target.local, digest).await?.is_some() {
            tracing::info!(target: "berth::mirror", repository = %target.local, %digest, "cache hit");
            metrics::global().mirror_hit("blob");
            return Ok(None);
        }
        // Stored already through another mirrored repository of the same upstream: link it.
        let up_prefix = format!("{}/", self.upstreams[target.upstream].config.name);
        for repo in meta.repositories_linking(digest, 20).await? {
            if repo.starts_with(&up_prefix) && self.registry.mount_blob(&target.local, digest, &repo).await? {
                tracing::info!(target: "berth::mirror", repository = %target.local, %digest, "cache hit (linked)");
                metrics::global().mirror_hit("blob");
                return Ok(None);
            }
        }
        let key = format!("blob {} {digest}", target.local);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tap = Arc::new(Tap::default());
        let (this, t, d, feed) = (self.clone(), target.clone(), digest.clone(), tap.clone());
        let (flight, tap, leader) = self.join_flight(&key, Some(tap), move || {
            async move {
                // (`fetch_blob` fails the tap with its error once the tap started; before that,
                // joiners only need to know it ended, and wait for the flight's error.)
                let _end = EndGuard(&feed);
                this.fetch_blob(&t, &d, live.then_some(tx), &feed).await
            }
            .boxed()
        });
        // A miss is a fetch from the upstream; a GET that joins one in flight reads its bytes
        // as they arrive, and any other joiner (or a GET that came too late for the fetch's
        // first bytes) is served from the cache once that fetch succeeded.
        if leader {
            // (counted by `fetch_blob`, which knows whether it fetched)
            if live && let Ok(stream) = rx.await {
                return Ok(Some(stream));
            }
            return flight_result(flight.await).map(|()| None);
        }
        if live
            && let Some(tap) = tap
            && let Some(reader) = tap.join().await
        {
            tracing::info!(target: "berth::mirror", repository = %target.local, %digest, "cache hit (streamed from the fetch in flight)");
            metrics::global().mirror_hit("blob");
            let size = reader.size;
            let body = self.joined_body(reader, flight, target.local.clone(), digest.clone());
            return Ok(Some(LiveBlob { size, body }));
        }
        flight_result(flight.await)?;
        tracing::info!(target: "berth::mirror", repository = %target.local, %digest, "cache hit (fetch in flight)");
        metrics::global().mirror_hit("blob");
        Ok(None)
    }

    /// A joined GET's body: the fetch's bytes from its tap, and once the tap no longer keeps
    /// the next ones (this client fell behind), the rest from the store after the commit.
    fn joined_body(self: &Arc<Self>, reader: Reader, flight: Flight, repository: String, digest: Digest) -> ByteStream {
        /// Where the next bytes come from; what the tap needs is let go once the store takes over.
        enum From {
            Tap { reader: Reader, pos: u64, flight: Flight, this: Arc<Mirror>, repository: String, digest: Digest },
            Store(ByteStream),
            Done,
        }
        let failed = |why: String| Some((Err(std::io::Error::other(why)), From::Done));
        let start = From::Tap { reader, pos: 0, flight, this: self.clone(), repository, digest };
        futures_util::stream::unfold(start, move |from| async move {
            match from {
                From::Tap { reader, pos, flight, this, repository, digest } => match reader.next(pos).await {
                    Next::Chunk(c) => {
                        let pos = pos + c.len() as u64;
                        Some((Ok(c), From::Tap { reader, pos, flight, this, repository, digest }))
                    }
                    Next::End => None,
                    Next::Failed(why) => failed(format!("upstream fetch failed: {why}")),
                    Next::Lagged(pos) => {
                        drop(reader);
                        tracing::info!(target: "berth::mirror", %repository, %digest, pos, "joined client fell behind the fetch; reading the rest from the store");
                        if let Err(e) = flight_result(flight.await) {
                            return failed(format!("the mirror fetch this request joined did not store the blob: {e}"));
                        }
                        let range = Some(ByteRange::From { start: pos, end: None });
                        let mut body = match this.registry.read_blob(&repository, &digest, range).await {
                            Ok(read) => read.body,
                            Err(e) => return failed(format!("reading the stored blob: {e}")),
                        };
                        let item = body.next().await?;
                        Some((item, From::Store(body)))
                    }
                },
                From::Store(mut body) => body.next().await.map(|item| (item, From::Store(body))),
                From::Done => None,
            }
        })
        .boxed()
    }

    async fn fetch_blob(
        &self,
        target: &Target,
        digest: &Digest,
        client: Option<tokio::sync::oneshot::Sender<LiveBlob>>,
        tap: &Tap,
    ) -> Result<()> {
        // Stored meanwhile (a fetch that just ended: its first client may ask again before its
        // flight is gone): nothing to fetch; the caller serves it from the store.
        if self.registry.meta.linked_blob_size(&target.local, digest).await?.is_some() {
            tracing::info!(target: "berth::mirror", repository = %target.local, %digest, "cache hit");
            metrics::global().mirror_hit("blob");
            return Ok(());
        }
        tracing::info!(target: "berth::mirror", repository = %target.local, %digest, "cache miss");
        metrics::global().mirror_miss("blob");
        let up = &self.upstreams[target.upstream];
        let what = format!("blob {digest}");
        let resp = up.send(Method::GET, &target.remote, &format!("blobs/{digest}"), None).await?;
        if !resp.status().is_success() {
            return Err(up.status_error(resp.status(), &what));
        }
        let announced = resp.content_length();
        let upload = self.registry.start_upload(&target.local).await?;
        tap.start(announced);
        let (store_tx, store_rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(16);
        let (client_tx, client_rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
        let mut client_tx = match client {
            Some(live) => {
                let body =
                    futures_util::stream::unfold(client_rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
                live.send(LiveBlob { size: announced, body: body.boxed() }).ok().map(|()| client_tx)
            }
            None => None,
        };
        let store_body =
            futures_util::stream::unfold(store_rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        // The normal commit path: streamed to storage, hashed, visible only if the digest matches.
        let (verified_tx, verified_rx) = tokio::sync::oneshot::channel();
        let store = self.registry.finish_upload_verified(
            &target.local,
            &upload.id,
            digest,
            Some(Box::pin(store_body)),
            verified_tx,
        );
        let name = up.config.name.clone();
        let pump = async move {
            let mut upstream = resp.bytes_stream();
            let mut held: Option<Bytes> = None;
            // The upstream's reads come in small pieces (often 16 KiB); passing them on in
            // batches of COALESCE bytes costs one copy and saves most of the per-chunk work
            // (channel hand-offs, hash calls, writes, socket sends) on both sides.
            let mut batch = BytesMut::new();
            let mut ended = false;
            while !ended {
                let next = upstream.next().await;
                if let Some(Ok(c)) = &next {
                    // Counted as it arrives (a fetch that fails later still cost the upstream
                    // these bytes), so the count is whole before the client has the last chunk.
                    metrics::global().mirror_upstream_bytes(c.len() as u64);
                }
                let chunk = match next {
                    Some(Ok(c)) if batch.is_empty() && c.len() >= COALESCE => c,
                    // A piece that does not fit sends the batch as it is and starts the next
                    // one: growing the batch would copy it once more (measured: 3% of the
                    // mirror's CPU on an unthrottled cold pull).
                    Some(Ok(c)) if batch.len() + c.len() > COALESCE => {
                        let full = batch.split().freeze();
                        batch.reserve(COALESCE.max(c.len()));
                        batch.extend_from_slice(&c);
                        full
                    }
                    Some(Ok(c)) => {
                        if batch.is_empty() {
                            batch.reserve(COALESCE);
                        }
                        batch.extend_from_slice(&c);
                        if batch.len() < COALESCE {
                            continue;
                        }
                        batch.split().freeze()
                    }
                    None if !batch.is_empty() => {
                        ended = true;
                        batch.split().freeze()
                    }
                    None => break,
                    Some(Err(e)) => {
                        let _ = store_tx.send(Err(RegistryError::Unavailable(format!("upstream {name}: {e}")))).await;
                        break;
                    }
                };
                if store_tx.send(Ok(chunk.clone())).await.is_err() {
                    break; // storing failed; its error says why
                }
                if let Some(prev) = held.replace(chunk) {
                    tap.push(prev.clone());
                    if let Some(tx) = &client_tx
                        && tx.send(Ok(prev)).await.is_err()
                    {
                        client_tx = None; // the client went away; the fetch goes on
                    }
                }
            }
            drop(store_tx);
            (client_tx, held)
        };
        // The last chunk goes to the client once the content checked out, while the blob is
        // still being flushed and committed: the client's pull does not wait for the disk. If
        // the commit then fails, the client has a verified blob and the mirror stores it again
        // on the next pull. Without the check passing, the client gets the error instead.
        let release = async move {
            let (client_tx, held) = pump.await;
            if verified_rx.await.is_err() {
                return client_tx;
            }
            if let Some(last) = &held {
                tap.push(last.clone());
            }
            tap.complete();
            if let (Some(tx), Some(last)) = (client_tx, held) {
                let _ = tx.send(Ok(last)).await;
            }
            None
        };
        let (stored, client_tx) = tokio::join!(store, release);
        match stored {
            Ok(size) => {
                tracing::info!(target: "berth::mirror", repository = %target.local, %digest, upstream_bytes = size, "cached blob from upstream");
                if let Some(events) = self.events.get() {
                    let ev = RepoEvent {
                        repository: &target.local,
                        digest: Some(digest.as_str()),
                        kind: Some("blob"),
                        ..RepoEvent::default()
                    };
                    events.mirrored(ev).await;
                }
                if announced.is_some_and(|a| a != size) {
                    tracing::warn!(target: "berth::mirror", %digest, ?announced, size, "upstream Content-Length differed");
                }
                Ok(())
            }
            Err(e) => {
                tap.fail(&e.to_string());
                if let Some(tx) = client_tx {
                    let _ = tx.send(Err(std::io::Error::other(format!("upstream fetch failed: {e}")))).await;
                }
                let _ = self.registry.cancel_upload(&target.local, &upload.id).await;
                tracing::warn!(target: "berth::mirror", repository = %target.local, %digest, error = %e, "upstream fetch failed");
                Err(e)
            }
        }
    }
}

/// Access control grants pull on the names the mirror serves, by the mirror's own rule.
#[async_trait::async_trait(?Send)]
impl crate::auth::PullSource for Mirror {
    fn anonymous_pull(&self) -> bool {
        self.config.anonymous_pull
    }

    async fn may_serve(&self, repository: &str) -> Result<bool> {
        Mirror::may_serve(self, repository).await
    }
}
