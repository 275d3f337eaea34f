//! `Range` and `Content-Range` headers (`api::blobs`): what is accepted is a well-formed range,
//! prints back to itself, and resolves inside the blob for any size.
#![no_main]
use berth::api::blobs::{content_range_of, range_of};
use berth::registry::ByteRange;
use libfuzzer_sys::fuzz_target;

fn check_resolve(range: ByteRange, sizes: &[u64]) {
    for &size in sizes {
        if let Some(r) = range.resolve(size) {
            assert!(r.start < r.end && r.end <= size, "{range:?} of {size} resolved to {r:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let sizes = [0, 1, 2, 1000, i64::MAX as u64, u64::MAX, data.len() as u64];
    if let Some(range) = range_of(s) {
        let again = match range {
            ByteRange::From { start, end: Some(end) } => {
                assert!(end >= start);
                format!("bytes={start}-{end}")
            }
            ByteRange::From { start, end: None } => format!("bytes={start}-"),
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        };
        assert_eq!(range_of(&again), Some(range));
        check_resolve(range, &sizes);
        if let ByteRange::From { start, end } = range {
            check_resolve(
                range,
                &[start, start.saturating_add(1), end.unwrap_or(0), end.unwrap_or(0).saturating_add(1)],
            );
        }
    }
    if let Ok((start, end)) = content_range_of(s) {
        assert!(start <= end && end < i64::MAX as u64, "Content-Range {s:?}: {start}-{end}");
        assert_eq!(content_range_of(&format!("{start}-{end}")).ok(), Some((start, end)));
        // The length of the chunk, as the upload handlers compute it, cannot overflow.
        let _ = end - start + 1;
    }
});
