//! Repository names, tags, references and `/v2` paths (`oci::name`, `api::routes::Route::parse`):
//! what is accepted matches the distribution spec's grammar, and a reference prints back as sent.
#![no_main]
use std::sync::LazyLock;

use berth::api::routes::Route;
use berth::oci::{Reference, namespace_of, validate_name, validate_tag};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

/// The spec's grammar of names and tags (the regular expressions of the distribution spec).
static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$").unwrap());
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let name_ok = validate_name(s).is_ok();
    assert_eq!(name_ok, s.len() <= 255 && NAME.is_match(s), "name {s:?}");
    if name_ok {
        let ns = namespace_of(s);
        assert!(!ns.is_empty() && s.starts_with(ns) && !ns.contains('/'));
    }
    assert_eq!(validate_tag(s).is_ok(), TAG.is_match(s), "tag {s:?}");
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s);
        if let Reference::Digest(d) = &r {
            assert_eq!(d.as_str(), s);
        }
    }
    // The path after `/v2`, as `api::dispatch` hands it over.
    if let Ok(route) = Route::parse(s) {
        if let Some(repo) = route.repository() {
            assert!(validate_name(repo).is_ok(), "route {s:?} names the repository {repo:?}");
        }
    }
});
