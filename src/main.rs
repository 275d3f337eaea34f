//! The `berth` binary: everything is in the library's `cli` module.
//!
//! Its allocator is jemalloc (`tikv-jemallocator`), not glibc's malloc: a server that runs for
//! weeks with many threads touching short-lived buffers (uploads, S3 and database clients)
//! fragments glibc's per-thread arenas, and its resident size creeps up for hours after the
//! working set has stopped growing; jemalloc gives unused pages back as they decay.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    berth::cli::main()
}
