//! Management: what an admin or a namespace owner changes, each operation once with its checks
//! and its audit record, for every door (the `/api/v1` handlers, the web UI, the CLI) to call.
//! Accounts, tokens, robots, namespaces and members are `crate::auth::AuthService`'s; this
//! room holds what the doors shared by copying before: webhooks, the audit detail of a new
//! token, and reading a size as people type it.

pub mod accounts;
pub mod backup;
pub mod replication;
mod services;
pub mod storage;
pub mod webhooks;

pub use services::Services;

use serde_json::{Value, json};

use crate::auth::Identity;

use crate::error::{RegistryError, Result};
use crate::meta::{Account, TokenRecord};

/// Who asks for a management operation: an account through the API or the UI (with the
/// client's address, for the audit log), or the command line, which works on the server's own
/// database and so may do anything (whoever can run it owns the data); it is recorded as `cli`.
#[derive(Clone, Copy)]
pub enum By<'a> {
    Account(&'a Identity, &'a str),
    CommandLine,
}

impl<'a> By<'a> {
    /// The name the audit log gives the caller.
    pub fn actor(&self) -> &str {
        match self {
            By::Account(who, _) => who.actor(),
            By::CommandLine => "cli",
        }
    }

    /// The client's address, for the audit log.
    pub fn addr(&self) -> Option<&str> {
        match self {
            By::Account(_, addr) => Some(addr).filter(|a| !a.is_empty()).copied(),
            By::CommandLine => None,
        }
    }

    /// The caller's identity (none for the command line).
    pub fn identity(&self) -> Option<&'a Identity> {
        match self {
            By::Account(who, _) => Some(who),
            By::CommandLine => None,
        }
    }

    /// The caller's account, logged in with a password: changes to accounts, tokens and
    /// namespaces need one, so a token can never mint a wider token or widen access. `None`
    /// for the command line.
    pub fn password_login(&self) -> Result<Option<&'a Account>> {
        let By::Account(who, _) = self else {
            return Ok(None);
        };
        match &who.account {
            Some(account) if who.limit.is_none() && who.granted.is_none() => Ok(Some(account)),
            Some(_) => Err(RegistryError::Denied("this needs a password login, not a token".into())),
            None => Err(RegistryError::Unauthorized { message: "log in first".into(), challenge: None }),
        }
    }

    /// Administrators, logged in with a password (a personal access token or a registry token
    /// never manages), and the command line.
    pub fn require_admin(&self) -> Result<()> {
        match self.password_login()? {
            Some(account) if !account.is_admin => Err(RegistryError::Denied("administrators only".into())),
            _ => Ok(()),
        }
    }
}

/// What the audit log keeps of a new token (never its secret).
pub fn token_audit(t: &TokenRecord) -> Value {
    json!({ "id": t.id, "name": t.name, "scope": t.scope, "repository_pattern": t.repository_pattern, "expires_at": t.expires_at })
}

/// A size as people type it, in a form or on the command line: a number of bytes, or a number with a unit: kB, MB, GB, TB are
/// decimal (as the pages show sizes); KiB, MiB, GiB, TiB and the bare K, M, G, T of
/// `berth quota set` are powers of 1024. Empty: none.
pub fn parse_size(text: &str) -> Result<Option<i64>> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || RegistryError::Invalid(format!("{t:?} is not a size: write e.g. 500 MB, 2 GiB or 1048576"));
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0f64.powi(2),
        "g" | "gib" => 1024.0f64.powi(3),
        "t" | "tib" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    let bytes = (num * mult).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(Some(bytes as i64))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn sizes_typed_in_forms() {
        assert_eq!(parse_size("").unwrap(), None);
        assert_eq!(parse_size("1048576").unwrap(), Some(1_048_576));
        assert_eq!(parse_size("500 MB").unwrap(), Some(500_000_000));
        assert_eq!(parse_size("2GiB").unwrap(), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1.5 kB").unwrap(), Some(1500));
        assert_eq!(parse_size("50G").unwrap(), Some(50 << 30), "as `berth quota set` reads it");
        assert!(parse_size("-5").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MB").is_err());
        // `berth quota set`'s spellings, case-insensitive.
        assert_eq!(parse_size("123").unwrap(), Some(123));
        assert_eq!(parse_size("2K").unwrap(), Some(2048));
        assert_eq!(parse_size("1g").unwrap(), Some(1 << 30));
        assert!(parse_size("x").is_err());
    }
}
