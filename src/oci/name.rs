//! Repository names and manifest references, by the grammar of the distribution spec:
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*` for names and
//! `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` for tags.

use std::fmt;

use super::digest::{Digest, truncate};
use crate::error::RegistryError;

/// Longest repository name accepted (the reference registry's limit).
pub const MAX_NAME_LEN: usize = 255;

/// Checks a repository name against the spec grammar.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let invalid =
        |why: &str| RegistryError::NameInvalid(format!("invalid repository name {:?}: {why}", truncate(name)));
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("longer than 255 characters"));
    }
    for component in name.split('/') {
        if !valid_component(component) {
            return Err(invalid("components are lowercase letters and digits, separated by '.', '_', '__' or '-'"));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        let sep = b[i];
        while i < b.len() && b[i] == sep {
            i += 1;
        }
        let run = i - start;
        let ok = match sep {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        // A letter or digit must follow: two separators in a row ("a-_b", "a._b") are no name.
        if !ok || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// The namespace of a repository: its first path component (`team` in `team/app/api`).
pub fn namespace_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// Checks a tag against the spec grammar.
pub fn validate_tag(tag: &str) -> Result<(), RegistryError> {
    let b = tag.as_bytes();
    let first_ok = b.first().is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
    let rest_ok = b.iter().skip(1).all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if first_ok && rest_ok && b.len() <= 128 {
        Ok(())
    } else {
        Err(RegistryError::ManifestInvalid(format!("invalid tag {:?}", truncate(tag))))
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// Parses a reference: anything with a colon must be a valid digest, anything else a tag.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            validate_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "team/app/api", "a.b_c__d---e/f0", "library/busybox", "x1-2"] {
            assert!(validate_name(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "",
            "A",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "../etc",
            "a/../b",
            "a b",
            "a%2fb",
            &"a".repeat(256),
            // Found by fuzz/fuzz_targets/name.rs: separators of different kinds in a row.
            "a.bc__d-_--e/f0",
            "a-_b",
            "a._b",
            "a_.b",
            "a__-b",
            "a.-b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "1.0", "_x", "v1.2.3-rc_1", &"a".repeat(128)] {
            assert!(validate_tag(ok).is_ok(), "{ok} refused");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn references() {
        assert_eq!(Reference::parse("v1").unwrap(), Reference::Tag("v1".into()));
        assert!(matches!(Reference::parse(&format!("sha256:{}", "0".repeat(64))).unwrap(), Reference::Digest(_)));
        assert!(Reference::parse("sha256:zz").is_err());
    }
}
