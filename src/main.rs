//! The `berth` binary: everything is in the library's `cli` module.
//!
//! Its allocator is jemalloc (`tikv-jemallocator`), not glibc's malloc: a server that runs for
//! weeks with many threads touching short-lived buffers (uploads, S3 and database clients)
//! fragments glibc's per-thread arenas, and its resident size creeps up for hours after the
//! working set has stopped growing; jemalloc gives unused pages back as they decay.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start (`malloc_conf`; the crate's symbols carry the `_rjem_`
/// prefix): freed pages are returned after about a second instead of ten (`dirty_decay_ms`),
/// and at once rather than kept as lazily-freed (`muzzy_decay_ms`), so the resident size
/// follows what is allocated rather than how much was freed in the last ten seconds — which
/// under a busy registry's buffer churn is tens of megabytes that come and go with the load.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: a pointer to a static, immutable C string.
unsafe impl Sync for MallocConf {}
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

fn main() -> anyhow::Result<()> {
    berth::cli::main()
}
