//! Digests (`oci::digest`): one that parses prints back as sent, its parts agree with it; a
//! saved hasher state (kept in the database between chunks) is only restored for the number of
//! bytes it hashed, and then finishes without a panic.
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
    // A saved state as the database holds it, restored for a few acknowledged sizes.
    for hashed in [0, 1, 64, 65, data.len() as u64, 1 << 40] {
        if let Some(mut h) = Hasher::restore(s, hashed) {
            h.update(data);
            let _ = h.finish();
        }
    }
    // What is saved restores, and goes on as if never saved.
    let alg = if data.first().is_some_and(|b| b & 1 == 1) { Algorithm::Sha512 } else { Algorithm::Sha256 };
    let mut h = Hasher::new(alg);
    h.update(data);
    let resumed = Hasher::restore(&h.save(), data.len() as u64).expect("a saved state restores");
    assert!(Hasher::restore(&h.save(), data.len() as u64 + 1).is_none());
    assert_eq!(resumed.finish(), h.finish());
});
