//! JSON read without a configuration: the nesting limit (`oci::json::check_nesting`) agrees
//! with the depth serde_json sees, and image configs as the runtime reads them
//! (`runtime::image::parse_config`, its diff_ids parsed as digests).
#![no_main]
use berth::oci::Digest;
use berth::oci::json::{MAX_DEPTH, check_nesting};
use libfuzzer_sys::fuzz_target;

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let checked = check_nesting(data);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        assert_eq!(checked.is_ok(), depth(&value) <= MAX_DEPTH, "nesting check disagrees");
    }
    if let Ok(config) = berth::runtime::image::parse_config(data) {
        assert!(checked.is_ok());
        for d in &config.rootfs.diff_ids {
            let _ = d.parse::<Digest>();
        }
    }
});
