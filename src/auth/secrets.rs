//! Secrets: argon2id password hashes, random passwords and access tokens (stored only as
//! SHA-256 hashes), and constant-time comparison.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use data_encoding::BASE64URL_NOPAD;
use sha2::Digest as _;

use crate::error::{RegistryError, Result};

/// Prefix of personal access tokens and refresh tokens, so they are recognisable in a
/// password field and in secret scanners.
pub const TOKEN_PREFIX: &str = "berth_";

/// Random bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    aws_lc_rs::rand::fill(&mut buf).expect("the system random generator failed");
    buf
}

/// A random password for generated accounts.
pub fn random_password() -> String {
    BASE64URL_NOPAD.encode(&random_bytes::<18>())
}

/// A new token secret: `berth_` and 256 random bits.
pub fn new_token_secret() -> String {
    format!("{TOKEN_PREFIX}{}", BASE64URL_NOPAD.encode(&random_bytes::<32>()))
}

/// How a token secret is stored and looked up.
pub fn token_hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// An argon2id PHC string for a password.
pub fn hash_password(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| RegistryError::internal("hashing a password", e))
}

/// Whether `password` matches the PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), phc).is_ok()
}

/// Spends the time of a password verification, for unknown accounts, so timing does not tell
/// which account names exist.
pub fn burn_verification(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default());
    let _ = verify_password(password, phc);
}

/// Constant-time equality of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token_secret();
        let b = new_token_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_eq!(token_hash(&a).len(), 64);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
