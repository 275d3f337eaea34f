//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and a streaming hasher for them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::RegistryError;

/// A digest algorithm the registry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest: algorithm plus lowercase hex of the right length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") { Algorithm::Sha512 } else { Algorithm::Sha256 }
    }

    /// The hex part after the colon.
    pub fn hex(&self) -> &str {
        &self.0[self.0.find(':').map_or(0, |i| i + 1)..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SHA-256 digest of a byte slice.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))))
    }

    /// The digest of `bytes` computed with this digest's algorithm.
    pub fn same_algorithm_of(&self, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(self.algorithm());
        h.update(bytes);
        h.finish()
    }
}

impl FromStr for Digest {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || RegistryError::DigestInvalid(format!("invalid digest {:?}", truncate(s)));
        let (alg, hex) = s.split_once(':').ok_or_else(invalid)?;
        let alg = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => {
                return Err(RegistryError::DigestInvalid(format!("unsupported digest algorithm {:?}", truncate(alg))));
            }
        };
        if hex.len() != alg.hex_len() || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid());
        }
        Ok(Digest(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Cut user input down before echoing it in an error message.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(140).collect()
}

/// A streaming hasher for one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The internal state, to resume hashing elsewhere: `<algorithm>:<base64>`.
    pub fn save(&self) -> String {
        use sha2::digest::common::hazmat::SerializableState;
        let state = match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        };
        format!("{}:{}", self.algorithm().as_str(), data_encoding::BASE64.encode(&state))
    }

    /// Restores a state made by [`Hasher::save`] after `hashed` bytes: `None` unless it is one,
    /// of exactly that many bytes. (sha2 restores any block count, and finishing a count whose
    /// length in bits overflows panics with overflow checks on and gives a wrong digest
    /// without them: a damaged state must not get that far.)
    pub fn restore(saved: &str, hashed: u64) -> Option<Hasher> {
        use sha2::digest::common::hazmat::{SerializableState, SerializedState};
        let (alg, b64) = saved.split_once(':')?;
        let bytes = data_encoding::BASE64.decode(b64.as_bytes()).ok()?;
        // sha2 0.11's serialization: the state words (32 or 64 bytes), the number of whole blocks
        // (u64 or u128, little-endian), the number of bytes buffered, the buffer (64 or 128).
        let (words, count_len, block) = match alg {
            "sha256" => (32, 8, 64u128),
            "sha512" => (64, 16, 128u128),
            _ => return None,
        };
        let count = bytes.get(words..words + count_len)?;
        let mut le = [0u8; 16];
        le[..count_len].copy_from_slice(count);
        let buffered = u128::from(*bytes.get(words + count_len)?);
        let total = u128::from_le_bytes(le).checked_mul(block)?.checked_add(buffered)?;
        // SHA-256 counts the message in bits in 64 bits.
        if total != u128::from(hashed) || (alg == "sha256" && hashed > u64::MAX / 8) {
            return None;
        }
        match alg {
            "sha256" => {
                let state = SerializedState::<sha2::Sha256>::try_from(bytes.as_slice()).ok()?;
                sha2::Sha256::deserialize(&state).ok().map(Hasher::Sha256)
            }
            "sha512" => {
                let state = SerializedState::<sha2::Sha512>::try_from(bytes.as_slice()).ok()?;
                sha2::Sha512::deserialize(&state).ok().map(Hasher::Sha512)
            }
            _ => None,
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(format!("sha256:{}", hex::encode(h.finalize()))),
            Hasher::Sha512(h) => Digest(format!("sha512:{}", hex::encode(h.finalize()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_digests() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d, Digest::sha256_of(b""));
        let d512 = format!("sha512:{}", "a".repeat(128));
        assert_eq!(d512.parse::<Digest>().unwrap().algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn rejects_invalid_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd000000000000000000000000000000000000000000",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hasher_state_survives_save_and_restore() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(&[7u8; 100]);
        let mut resumed = Hasher::restore(&h.save(), 100).unwrap();
        resumed.update(b"tail");
        h.update(b"tail");
        assert_eq!(resumed.finish(), h.finish());
        assert!(Hasher::restore("sha256:bm90IGEgc3RhdGU=", 0).is_none());
        assert!(Hasher::restore("md5:AAAA", 0).is_none());
        // A state is only taken for the number of bytes it hashed.
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(&[1u8; 300]);
        assert!(Hasher::restore(&h.save(), 300).is_some());
        assert!(Hasher::restore(&h.save(), 299).is_none());
        assert!(Hasher::restore(&Hasher::new(Algorithm::Sha256).save(), 0).is_some());
    }

    #[test]
    fn a_damaged_state_is_refused_not_finished() {
        // Found by fuzz/fuzz_targets/digest.rs: a block count whose length in bits overflows
        // (2^55 blocks and more) was restored, and finishing it panicked on the overflow.
        let mut state = vec![0u8; 32 + 8 + 1 + 64];
        state[32..40].copy_from_slice(&(1u64 << 55).to_le_bytes());
        let saved = format!("sha256:{}", data_encoding::BASE64.encode(&state));
        for hashed in [0, 1 << 61, u64::MAX] {
            assert!(Hasher::restore(&saved, hashed).is_none());
        }
        let crash = "sha256:agPBbsq7ZWnKhMMcvPCpFMMcvPCJJJJJPXQ=F7NCB6SH3jYRPXQ=mMvMPCcpFMMcF7NCB6SH3jYRPXQ=mqHJjkgAAAQAAAAAAAQ=mqHJjkgAAAQAAAAAAAQ=mqH/TZOCoNw0jkgAAAQAAAAAAA==";
        for hashed in [0, 64, u64::MAX / 8, u64::MAX] {
            if let Some(h) = Hasher::restore(crash, hashed) {
                h.finish();
            }
        }
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), Digest::sha256_of(b"hello world"));
    }
}
