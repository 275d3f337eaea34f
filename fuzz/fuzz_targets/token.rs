//! `/token` requests (`api::token`): the query of a `GET` (its `scope` parameters) and the OAuth2
//! form of a `POST`, each scope read by `auth::service::parse_scope`. Every input is tried as both.
#![no_main]
use berth::api::token::{form_scopes, parse_form, query_scopes};
use berth::auth::service::parse_scope;
use libfuzzer_sys::fuzz_target;

fn check_scope(s: &str) {
    if let Some(scope) = parse_scope(s) {
        assert!(!scope.name.is_empty());
        assert!(!scope.kind.contains('('));
        assert!(scope.actions.iter().all(|a| !a.is_empty() && !a.contains(',')));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data) {
        for scope in query_scopes(query) {
            check_scope(&scope);
        }
    }
    if let Ok(form) = parse_form(data) {
        for scope in form_scopes(&form.scope) {
            assert!(!scope.is_empty() && !scope.contains(' '));
            check_scope(&scope);
        }
    }
});
