//! Prometheus metrics: one process-wide set ([`global`]), fed by the [`RequestMetrics`]
//! middleware (requests by route kind and status, latency, blob bytes out, uploads in flight),
//! the upload body stream (bytes in), the mirror (cache hits and misses, bytes fetched
//! upstream), the webhook sender, replication ([`Metrics::replication_job`]), garbage
//! collection ([`Metrics::record_gc_run`]) and, read when scraped, where the process's memory
//! sits (jemalloc's heap, and SQLite's memory, which glibc's malloc holds beside it).
//!
//! Labels are a small fixed vocabulary — a route *kind* such as `manifest_get`, a status code,
//! `manifest`/`blob` — never a repository name, tag or digest, so the number of series stays
//! bounded whatever the traffic.

use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::Error;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionResultLabels {
    direction: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// The mirror's counters, read back for the web UI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorCounts {
    pub manifest_hits: u64,
    pub manifest_misses: u64,
    pub blob_hits: u64,
    pub blob_misses: u64,
    /// Bytes fetched from upstreams (counted as they arrive, stored or not).
    pub upstream_bytes: u64,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms … about 65 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00025, 4.0, 10))
}

/// Every metric Berth exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabel>,
    bytes_in: Counter,
    bytes_out: Counter,
    uploads_in_flight: Gauge,
    mirror_hits: Family<KindLabel, Counter>,
    mirror_misses: Family<KindLabel, Counter>,
    mirror_upstream_bytes: Counter,
    webhook_attempts: Family<ResultLabel, Counter>,
    gc_runs: Counter,
    gc_freed_objects: Counter,
    gc_freed_bytes: Counter,
    gc_duration: Histogram,
    replication_jobs: Family<DirectionResultLabels, Counter>,
    replication_artifacts: Family<DirectionResultLabels, Counter>,
    replication_bytes: Family<DirectionLabel, Counter>,
    replication_pending: Gauge,
    heap_allocated: Gauge,
    heap_resident: Gauge,
    sqlite_memory: Gauge,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("berth_http_requests", "HTTP requests by route kind and status code", requests.clone());
        let latency: HistogramFamily<RouteLabel> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "berth_http_request_duration",
            "Time until the response head is ready, by route kind",
            Unit::Seconds,
            latency.clone(),
        );
        let bytes_in = Counter::default();
        registry.register_with_unit("berth_upload", "Blob upload body bytes received", Unit::Bytes, bytes_in.clone());
        let bytes_out = Counter::default();
        registry.register_with_unit("berth_blob_served", "Blob body bytes sent", Unit::Bytes, bytes_out.clone());
        let uploads_in_flight = Gauge::default();
        registry.register(
            "berth_uploads_in_flight",
            "Upload requests (POST, PATCH, PUT of blob uploads) being received",
            uploads_in_flight.clone(),
        );
        let mirror_hits = Family::<KindLabel, Counter>::default();
        registry.register(
            "berth_mirror_cache_hits",
            "Mirror reads served from the local cache (kind: manifest or blob)",
            mirror_hits.clone(),
        );
        let mirror_misses = Family::<KindLabel, Counter>::default();
        registry.register(
            "berth_mirror_cache_misses",
            "Mirror reads that had to fetch from the upstream (kind: manifest or blob)",
            mirror_misses.clone(),
        );
        let mirror_upstream_bytes = Counter::default();
        registry.register_with_unit(
            "berth_mirror_upstream",
            "Bytes fetched from upstream registries",
            Unit::Bytes,
            mirror_upstream_bytes.clone(),
        );
        let webhook_attempts = Family::<ResultLabel, Counter>::default();
        registry.register(
            "berth_webhook_attempts",
            "Webhook delivery attempts (result: delivered, retry, failed)",
            webhook_attempts.clone(),
        );
        let gc_runs = Counter::default();
        registry.register("berth_gc_runs", "Garbage collection runs", gc_runs.clone());
        let gc_freed_objects = Counter::default();
        registry.register(
            "berth_gc_freed_objects",
            "Blobs and manifests removed by garbage collection",
            gc_freed_objects.clone(),
        );
        let gc_freed_bytes = Counter::default();
        registry.register_with_unit(
            "berth_gc_freed",
            "Bytes freed by garbage collection",
            Unit::Bytes,
            gc_freed_bytes.clone(),
        );
        let gc_duration = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.01, 4.0, 10));
        registry.register_with_unit(
            "berth_gc_duration",
            "Duration of garbage collection runs",
            Unit::Seconds,
            gc_duration.clone(),
        );
        let replication_jobs = Family::<DirectionResultLabels, Counter>::default();
        registry.register(
            "berth_replication_jobs",
            "Replication job attempts (direction: push or pull; result: done, retry, failed)",
            replication_jobs.clone(),
        );
        let replication_artifacts = Family::<DirectionResultLabels, Counter>::default();
        registry.register(
            "berth_replication_artifacts",
            "Blobs and manifests replicated (result: copied) or found at the destination (result: skipped)",
            replication_artifacts.clone(),
        );
        let replication_bytes = Family::<DirectionLabel, Counter>::default();
        registry.register_with_unit(
            "berth_replication",
            "Blob bytes replicated (direction: push or pull)",
            Unit::Bytes,
            replication_bytes.clone(),
        );
        let replication_pending = Gauge::default();
        registry.register(
            "berth_replication_jobs_pending",
            "Replication jobs waiting or running, over every node (as this node last read the queue)",
            replication_pending.clone(),
        );
        let heap_allocated = Gauge::default();
        registry.register_with_unit(
            "berth_memory_heap_allocated",
            "Bytes the process holds in live heap allocations (jemalloc's stats.allocated)",
            Unit::Bytes,
            heap_allocated.clone(),
        );
        let heap_resident = Gauge::default();
        registry.register_with_unit(
            "berth_memory_heap_resident",
            "Bytes of physical memory the heap allocator has mapped (jemalloc's stats.resident)",
            Unit::Bytes,
            heap_resident.clone(),
        );
        let sqlite_memory = Gauge::default();
        registry.register_with_unit(
            "berth_memory_sqlite",
            "Bytes SQLite holds (sqlite3_memory_used: page caches, prepared statements), beside the jemalloc heap",
            Unit::Bytes,
            sqlite_memory.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            uploads_in_flight,
            mirror_hits,
            mirror_misses,
            mirror_upstream_bytes,
            webhook_attempts,
            gc_runs,
            gc_freed_objects,
            gc_freed_bytes,
            gc_duration,
            replication_jobs,
            replication_artifacts,
            replication_bytes,
            replication_pending,
            heap_allocated,
            heap_resident,
            sqlite_memory,
        }
    }

    /// A replication job's attempt: `result` done, retry or failed, with what it copied.
    pub fn replication_job(
        &self,
        direction: &'static str,
        result: &'static str,
        copied: u64,
        skipped: u64,
        bytes: u64,
    ) {
        self.replication_jobs.get_or_create(&DirectionResultLabels { direction, result }).inc();
        self.replication_artifacts.get_or_create(&DirectionResultLabels { direction, result: "copied" }).inc_by(copied);
        self.replication_artifacts
            .get_or_create(&DirectionResultLabels { direction, result: "skipped" })
            .inc_by(skipped);
        self.replication_bytes.get_or_create(&DirectionLabel { direction }).inc_by(bytes);
    }

    /// The replication jobs waiting or running.
    pub fn replication_pending(&self, n: i64) {
        self.replication_pending.set(n);
    }

    /// The metrics in the OpenMetrics text format (what Prometheus scrapes).
    pub fn render(&self) -> String {
        self.read_memory();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Reads the memory gauges. jemalloc's statistics are a snapshot taken at an `epoch`
    /// advance; they are zero where jemalloc is linked but not the allocator (unit tests).
    fn read_memory(&self) {
        use tikv_jemalloc_ctl::{epoch, stats};
        if epoch::advance().is_ok() {
            self.heap_allocated.set(stats::allocated::read().map_or(0, |n| n as i64));
            self.heap_resident.set(stats::resident::read().map_or(0, |n| n as i64));
        }
        // SAFETY: a plain read of SQLite's global counter; thread-safe, and 0 before SQLite
        // was first used.
        self.sqlite_memory.set(unsafe { libsqlite3_sys::sqlite3_memory_used() });
    }

    /// Upload body bytes received.
    pub fn upload_bytes(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }

    /// A mirrored manifest or blob (`kind`) served from the cache.
    pub fn mirror_hit(&self, kind: &'static str) {
        self.mirror_hits.get_or_create(&KindLabel { kind }).inc();
    }

    /// A mirrored manifest or blob (`kind`) fetched from the upstream.
    pub fn mirror_miss(&self, kind: &'static str) {
        self.mirror_misses.get_or_create(&KindLabel { kind }).inc();
    }

    /// Bytes fetched from an upstream (counted as they arrive, stored or not).
    pub fn mirror_upstream_bytes(&self, n: u64) {
        self.mirror_upstream_bytes.inc_by(n);
    }

    /// The mirror's counters since this process started (what `/metrics` exports).
    pub fn mirror_counts(&self) -> MirrorCounts {
        let hits = |kind| self.mirror_hits.get(&KindLabel { kind }).map(|c| c.get()).unwrap_or(0);
        let misses = |kind| self.mirror_misses.get(&KindLabel { kind }).map(|c| c.get()).unwrap_or(0);
        MirrorCounts {
            manifest_hits: hits("manifest"),
            manifest_misses: misses("manifest"),
            blob_hits: hits("blob"),
            blob_misses: misses("blob"),
            upstream_bytes: self.mirror_upstream_bytes.get(),
        }
    }

    /// One webhook delivery attempt: `delivered`, `retry` or `failed` (given up).
    pub fn webhook_attempt(&self, result: &'static str) {
        self.webhook_attempts.get_or_create(&ResultLabel { result }).inc();
    }

    /// One garbage collection run: how many blobs/manifests it removed, how many bytes that
    /// freed, how long it took. For the collector to call when a run ends.
    pub fn record_gc_run(&self, freed_count: u64, freed_bytes: u64, duration: Duration) {
        self.gc_runs.inc();
        self.gc_freed_objects.inc_by(freed_count);
        self.gc_freed_bytes.inc_by(freed_bytes);
        self.gc_duration.observe(duration.as_secs_f64());
    }
}

/// The route kind of a request: a label value from a fixed set, computed from the path's last
/// segments and the method without parsing names or digests.
pub fn route_kind(method: &Method, path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v2") else {
        return match path {
            "/token" => "token",
            "/metrics" => "metrics",
            "/healthz" | "/readyz" => "health",
            p if p.starts_with("/api/") => "api",
            _ => "other",
        };
    };
    if rest.is_empty() || rest == "/" {
        return "base";
    }
    if rest == "/_catalog" {
        return "catalog";
    }
    let mut segs = rest.rsplit('/');
    let last = segs.next().unwrap_or("");
    let prev = segs.next().unwrap_or("");
    let prev2 = segs.next().unwrap_or("");
    let by_method = |get, head, put, delete| match *method {
        Method::GET => get,
        Method::HEAD => head,
        Method::PUT => put,
        Method::DELETE => delete,
        _ => "other",
    };
    match (prev2, prev, last) {
        (_, "tags", "list") => "tags_list",
        (_, "manifests", r) if !r.is_empty() => {
            by_method("manifest_get", "manifest_head", "manifest_put", "manifest_delete")
        }
        ("blobs", "uploads", "") | (_, "blobs", "uploads") => "upload_start",
        ("blobs", "uploads", _) => match *method {
            Method::PATCH => "upload_patch",
            Method::PUT => "upload_put",
            Method::GET => "upload_status",
            Method::DELETE => "upload_cancel",
            _ => "other",
        },
        (_, "blobs", d) if !d.is_empty() => by_method("blob_get", "blob_head", "other", "blob_delete"),
        (_, "referrers", d) if !d.is_empty() => "referrers",
        _ => "other",
    }
}

/// Middleware that counts and times every request.
pub struct RequestMetrics;

impl<S, B> Transform<S, ServiceRequest> for RequestMetrics
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<Counted<B>>;
    type Error = Error;
    type Transform = RequestMetricsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestMetricsService { service }))
    }
}

pub struct RequestMetricsService<S> {
    service: S,
}

/// Decrements the uploads-in-flight gauge when the request ends, however it ends.
struct InFlight(&'static Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S, B> Service<ServiceRequest> for RequestMetricsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<Counted<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let start = Instant::now();
        let m = global();
        let route = route_kind(req.method(), req.path());
        let in_flight = matches!(route, "upload_start" | "upload_patch" | "upload_put").then(|| {
            m.uploads_in_flight.inc();
            InFlight(&m.uploads_in_flight)
        });
        let fut = self.service.call(req);
        Box::pin(async move {
            let res = fut.await;
            drop(in_flight);
            let res = res?;
            let status = res.status().as_u16();
            m.requests.get_or_create(&RequestLabels { route, status }).inc();
            m.latency.get_or_create(&RouteLabel { route }).observe(start.elapsed().as_secs_f64());
            let counter = (route == "blob_get").then_some(&m.bytes_out);
            Ok(res.map_body(|_, inner| Counted { inner, counter }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that adds the bytes it sends to a counter.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        counter: Option<&'static Counter>,
    }
}

impl<B: MessageBody> MessageBody for Counted<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_next(cx);
        if let (Some(counter), Poll::Ready(Some(Ok(chunk)))) = (this.counter, &polled) {
            counter.inc_by(chunk.len() as u64);
        }
        polled
    }

    fn try_into_bytes(self) -> Result<Bytes, Self> {
        match self.counter {
            Some(counter) => {
                let inner = self.inner.try_into_bytes().map_err(|inner| Counted { inner, counter: Some(counter) })?;
                counter.inc_by(inner.len() as u64);
                Ok(inner)
            }
            None => self.inner.try_into_bytes().map_err(|inner| Counted { inner, counter: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_kinds() {
        let d = format!("sha256:{}", "a".repeat(64));
        for (method, path, kind) in [
            (Method::GET, "/v2/".to_string(), "base"),
            (Method::GET, "/v2/_catalog".into(), "catalog"),
            (Method::GET, "/v2/a/b/tags/list".into(), "tags_list"),
            (Method::GET, "/v2/a/manifests/latest".into(), "manifest_get"),
            (Method::HEAD, "/v2/a/manifests/latest".into(), "manifest_head"),
            (Method::PUT, "/v2/a/manifests/latest".into(), "manifest_put"),
            (Method::DELETE, format!("/v2/a/manifests/{d}"), "manifest_delete"),
            (Method::GET, format!("/v2/a/b/blobs/{d}"), "blob_get"),
            (Method::HEAD, format!("/v2/a/blobs/{d}"), "blob_head"),
            (Method::DELETE, format!("/v2/a/blobs/{d}"), "blob_delete"),
            (Method::POST, "/v2/a/blobs/uploads/".into(), "upload_start"),
            (Method::PATCH, "/v2/a/blobs/uploads/1234".into(), "upload_patch"),
            (Method::PUT, "/v2/a/blobs/uploads/1234".into(), "upload_put"),
            (Method::GET, format!("/v2/a/referrers/{d}"), "referrers"),
            (Method::GET, "/token".into(), "token"),
            (Method::GET, "/api/v1/users".into(), "api"),
            (Method::GET, "/whatever".into(), "other"),
        ] {
            assert_eq!(route_kind(&method, &path), kind, "{method} {path}");
        }
    }

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.requests.get_or_create(&RequestLabels { route: "manifest_get", status: 200 }).inc();
        m.record_gc_run(3, 4096, Duration::from_millis(20));
        let text = m.render();
        assert!(text.contains("berth_http_requests_total{route=\"manifest_get\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("berth_gc_freed_bytes_total 4096"), "{text}");
        assert!(text.contains("berth_gc_runs_total 1"), "{text}");
    }

    #[test]
    fn mirror_counts_read_back() {
        let m = Metrics::new();
        assert_eq!(m.mirror_counts(), MirrorCounts::default());
        m.mirror_hit("blob");
        m.mirror_hit("blob");
        m.mirror_miss("manifest");
        m.mirror_upstream_bytes(1234);
        let c = m.mirror_counts();
        assert_eq!((c.blob_hits, c.blob_misses, c.manifest_hits, c.manifest_misses), (2, 0, 0, 1));
        assert_eq!(c.upstream_bytes, 1234);
    }
}
