//! Secrets kept in the database, sealed: AES-256-GCM (aws-lc-rs) with a key that is never in
//! the database — a key file (by default `<data_dir>/secret.key`, made with mode 0600 the first
//! time a secret is sealed) or the environment (`BERTH_SECRET_KEY`, so several nodes share one
//! without a shared disk). A database dump alone gives no private key away.
//!
//! A sealed value is text: `v1.<key id>.<base64 of nonce ‖ ciphertext ‖ tag>`, with the
//! value's purpose (e.g. `acme-account`) as additional data, so a value sealed for one purpose
//! does not open as another. The key id (the first bytes of the key's SHA-256) lets a node
//! with another key say so instead of "decryption failed".
//!
//! Used by the ACME client (`crate::acme`: account key, certificate key) and replication
//! (`crate::replication`: the targets' passwords and tokens); made for any other secret that
//! has to live in the database.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use data_encoding::{BASE64, HEXLOWER};
use sha2::Digest as _;

/// The environment variable that holds the key itself (base64 of 32 bytes); it wins over the file.
pub const KEY_ENV: &str = "BERTH_SECRET_KEY";

/// A sealing key (32 bytes). Its `Debug` shows the key id only.
pub struct SealKey {
    key: LessSafeKey,
    id: String,
    /// Where it came from, for error messages.
    source: String,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey").field("id", &self.id).field("source", &self.source).finish_non_exhaustive()
    }
}

impl SealKey {
    /// The key from `env_value` (the content of [`KEY_ENV`], if set) or else the file at `path`,
    /// created (mode 0600, a fresh random key) when it does not exist.
    pub fn load_or_create(env_value: Option<&str>, path: &Path) -> anyhow::Result<SealKey> {
        if let Some(value) = env_value {
            let bytes = decode_key(value.trim()).with_context(|| format!("{KEY_ENV} is no valid key"))?;
            return SealKey::from_bytes(&bytes, KEY_ENV.to_string());
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes =
                    decode_key(text.trim()).with_context(|| format!("the secret key file {}", path.display()))?;
                SealKey::from_bytes(&bytes, path.display().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SealKey::create(path),
            Err(e) => Err(anyhow!("cannot read the secret key file {}: {e}", path.display())),
        }
    }

    /// A new random key written to `path` (refused if the file appeared meanwhile: then that
    /// one is read, so two processes starting at once agree).
    fn create(path: &Path) -> anyhow::Result<SealKey> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow!("no randomness for a secret key"))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating the secret key file {}", tmp.display()))?;
        file.write_all(format!("{}\n", BASE64.encode(&bytes)).as_bytes())?;
        file.sync_all()?;
        drop(file);
        // A hard link fails if the target exists: the first writer wins, the others read it.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created the secret key file that seals secrets kept in the database; nodes sharing the database need the same key");
                SealKey::from_bytes(&bytes, path.display().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => SealKey::load_or_create(None, path),
            Err(e) => Err(anyhow!("cannot create the secret key file {}: {e}", path.display())),
        }
    }

    fn from_bytes(bytes: &[u8], source: String) -> anyhow::Result<SealKey> {
        if bytes.len() != 32 {
            bail!("a secret key is 32 bytes (base64), not {}", bytes.len());
        }
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| anyhow!("unusable AES key"))?);
        let id = HEXLOWER.encode(&sha2::Sha256::digest(bytes)[..4]);
        Ok(SealKey { key, id, source })
    }

    /// Seals `plain` for `purpose`.
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| anyhow!("no randomness for a nonce"))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(purpose.as_bytes()), &mut buf)
            .map_err(|_| anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("v1.{}.{}", self.id, BASE64.encode(&out)))
    }

    /// Opens a value sealed for `purpose`; a clear error when another key sealed it.
    pub fn open(&self, purpose: &str, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("not a sealed value");
        };
        if id != self.id {
            bail!(
                "this secret was sealed with another secret key (id {id}; this node's, from {}, is {}): give every node the same key ({KEY_ENV} or secret_key_file)",
                self.source,
                self.id
            );
        }
        let raw = BASE64.decode(data.as_bytes()).map_err(|_| anyhow!("a sealed value that is no base64"))?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            bail!("a sealed value too short to hold anything");
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow!("bad nonce"))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf)
            .map_err(|_| anyhow!("a sealed {purpose} does not open: damaged, or sealed for another purpose"))?;
        Ok(plain.to_vec())
    }

    /// The key's id (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn decode_key(text: &str) -> anyhow::Result<Vec<u8>> {
    BASE64
        .decode(text.as_bytes())
        .map_err(|_| anyhow!("not base64 (expected 32 random bytes, e.g. `openssl rand -base64 32`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_refuses_what_it_must() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.key");
        let key = SealKey::load_or_create(None, &path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = key.seal("acme-account", b"private").unwrap();
        assert!(!sealed.contains("private"));
        assert_eq!(key.open("acme-account", &sealed).unwrap(), b"private");
        // Another purpose, a flipped byte, garbage: refused.
        assert!(key.open("acme-cert-key", &sealed).is_err());
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(key.open("acme-account", std::str::from_utf8(&bytes).unwrap()).is_err());
        assert!(key.open("acme-account", "v1.zz").is_err());
        // The same file gives the same key; the environment wins over the file.
        let again = SealKey::load_or_create(None, &path).unwrap();
        assert_eq!(again.open("acme-account", &sealed).unwrap(), b"private");
        let env = BASE64.encode(&[7u8; 32]);
        let other = SealKey::load_or_create(Some(&env), &path).unwrap();
        let err = other.open("acme-account", &sealed).unwrap_err().to_string();
        assert!(err.contains("another secret key") && err.contains(KEY_ENV), "{err}");
        assert!(SealKey::load_or_create(Some("c2hvcnQ="), &path).is_err());
        assert!(!format!("{key:?}").contains(&std::fs::read_to_string(&path).unwrap().trim().to_string()));
    }
}
