//! Digests (`oci::digest`): one that parses prints back as sent, its parts agree with it, and a
//! saved hasher state (kept in the database between chunks) never panics when restored.
#![no_main]
use berth::oci::{Algorithm, Digest, Hasher};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.as_str(), s);
        assert_eq!(d.to_string(), s);
        assert_eq!(format!("{}:{}", d.algorithm().as_str(), d.hex()), s);
        let hex_len = match d.algorithm() {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        };
        assert_eq!(d.hex().len(), hex_len);
        assert!(d.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(d.same_algorithm_of(b"x").algorithm(), d.algorithm());
    }
    if let Some(mut h) = Hasher::restore(s) {
        h.update(data);
        let _ = h.finish();
    }
});
