//! Parsing of `/v2/...` paths into routes, and what each route needs from access control.
//!
//! Repository names may contain slashes (`team/app/api`), so a path is read from its end:
//! the last segments say what is asked for, everything before is the name.

use actix_web::http::Method;

use crate::auth::{Action, Need};
use crate::error::{RegistryError, Result};
use crate::oci::{Digest, Reference, validate_name};

/// An API endpoint with its parsed parameters. `InvalidReference` is `/manifests/<raw>` where
/// `raw` is no valid tag or digest: no manifest can have it, so a GET or HEAD is
/// `404 MANIFEST_UNKNOWN` (as the OCI conformance suite expects) while a PUT or DELETE gets the
/// parse error (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: Reference },
    InvalidReference { name: String, raw: String },
    Blob { name: String, digest: Digest },
    UploadStart { name: String },
    Upload { name: String, id: String },
    Referrers { name: String, digest: Digest },
}

/// Unknown path under `/v2`.
fn not_found(path: &str) -> RegistryError {
    RegistryError::NameUnknown(format!("no such endpoint: {}", crate::oci::digest::truncate(path)))
}

fn decode_colon(s: &str) -> String {
    s.replace("%3A", ":").replace("%3a", ":")
}

impl Route {
    /// Parses the part of the path after `/v2`.
    pub fn parse(path: &str) -> Result<Route> {
        let rest = path.strip_prefix('/').unwrap_or(path);
        if rest.is_empty() {
            return Ok(Route::Base);
        }
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name_of = |k: usize| -> Result<String> {
            if n <= k {
                return Err(not_found(path));
            }
            let name = segs[..n - k].join("/");
            validate_name(&name)?;
            Ok(name)
        };
        let tail = |k: usize| -> &str { if n >= k { segs[n - k] } else { "" } };
        match (tail(3), tail(2), tail(1)) {
            (_, "tags", "list") => Ok(Route::Tags { name: name_of(2)? }),
            (_, "manifests", r) if !r.is_empty() => {
                let name = name_of(2)?;
                let raw = decode_colon(r);
                Ok(match Reference::parse(&raw) {
                    Ok(reference) => Route::Manifest { name, reference },
                    Err(_) => Route::InvalidReference { name, raw },
                })
            }
            ("blobs", "uploads", "") => Ok(Route::UploadStart { name: name_of(3)? }),
            (_, "blobs", "uploads") => Ok(Route::UploadStart { name: name_of(2)? }),
            ("blobs", "uploads", id) => Ok(Route::Upload { name: name_of(3)?, id: id.to_string() }),
            (_, "blobs", d) if !d.is_empty() => {
                let digest = decode_colon(d).parse()?;
                Ok(Route::Blob { name: name_of(2)?, digest })
            }
            (_, "referrers", d) if !d.is_empty() => {
                let digest = decode_colon(d).parse()?;
                Ok(Route::Referrers { name: name_of(2)?, digest })
            }
            _ => Err(not_found(path)),
        }
    }

    /// The repository a route is about.
    pub fn repository(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::InvalidReference { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }

    /// What access the route needs for a method: pull to read, push to write, delete to delete.
    pub fn needs(&self, method: &Method) -> Vec<Need> {
        match self {
            Route::Base => vec![Need::Login],
            Route::Catalog => vec![Need::Catalog],
            _ => {
                let action = match *method {
                    Method::GET | Method::HEAD => Action::Pull,
                    Method::DELETE => Action::Delete,
                    _ => Action::Push,
                };
                let name = self.repository().unwrap_or_default().to_string();
                vec![Need::Repository { name, action }]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    #[test]
    fn parses_routes() {
        assert_eq!(Route::parse("/").unwrap(), Route::Base);
        assert_eq!(Route::parse("").unwrap(), Route::Base);
        assert_eq!(Route::parse("/_catalog").unwrap(), Route::Catalog);
        assert_eq!(Route::parse("/team/app/api/tags/list").unwrap(), Route::Tags { name: "team/app/api".into() });
        assert_eq!(
            Route::parse("/a/manifests/b/manifests/latest").unwrap(),
            Route::Manifest { name: "a/manifests/b".into(), reference: Reference::Tag("latest".into()) }
        );
        assert_eq!(Route::parse("/x/blobs/uploads/").unwrap(), Route::UploadStart { name: "x".into() });
        assert_eq!(Route::parse("/x/blobs/uploads").unwrap(), Route::UploadStart { name: "x".into() });
        assert_eq!(Route::parse("/x/blobs/blobs/uploads/").unwrap(), Route::UploadStart { name: "x/blobs".into() });
        assert_eq!(
            Route::parse("/x/blobs/uploads/abc-1").unwrap(),
            Route::Upload { name: "x".into(), id: "abc-1".into() }
        );
        assert!(matches!(Route::parse(&format!("/x/y/blobs/{}", d())).unwrap(), Route::Blob { .. }));
        assert!(matches!(Route::parse(&format!("/x/blobs/{}", d().replace(':', "%3A"))).unwrap(), Route::Blob { .. }));
        assert!(matches!(Route::parse(&format!("/x/referrers/{}", d())).unwrap(), Route::Referrers { .. }));
    }

    #[test]
    fn rejects_bad_paths() {
        for (path, code) in [
            ("/UPPER/tags/list", "NAME_INVALID"),
            ("/../etc/tags/list", "NAME_INVALID"),
            ("/tags/list", "NAME_UNKNOWN"),
            ("/x/blobs/sha256:zz", "DIGEST_INVALID"),
            ("/x/whatever", "NAME_UNKNOWN"),
        ] {
            let err = Route::parse(path).unwrap_err();
            assert_eq!(err.code(), code, "{path}");
        }
    }

    #[test]
    fn invalid_references_are_routed_for_the_method_to_decide() {
        for raw in ["bad*tag", ".INVALID", "sha256:zz"] {
            assert_eq!(
                Route::parse(&format!("/x/y/manifests/{raw}")).unwrap(),
                Route::InvalidReference { name: "x/y".into(), raw: raw.into() }
            );
        }
        // The name is still checked first.
        assert_eq!(Route::parse("/UPPER/manifests/.INVALID").unwrap_err().code(), "NAME_INVALID");
    }
}
