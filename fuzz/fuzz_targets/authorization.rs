//! The `Authorization` header (`auth::service::parse_authorization`: Basic, Bearer personal
//! tokens, Bearer JWTs checked by `auth::jwt::TokenKeys::verify`) and the `WWW-Authenticate`
//! challenges of other registries (`remote::challenge_params`).
//!
//! The JWTs are checked against a fixed test key, so the seed corpus holds a real token signed
//! with it (`BERTH_FUZZ_PRINT_JWT=1` prints one, see `fuzz/seeds.py`): the fuzzer mutates a
//! valid token. A
//! token that verifies must carry exactly the claims that were signed.
#![no_main]
use std::sync::LazyLock;

use berth::auth::jwt::{AccessEntry, Claims, TokenKeys};
use berth::auth::secrets::TOKEN_PREFIX;
use berth::auth::service::{Credentials, decode_basic, parse_authorization};
use data_encoding::BASE64;
use libfuzzer_sys::fuzz_target;

/// A P-256 key made for these fuzz targets only (PKCS#8, base64).
const TEST_KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOAesinNefAktgbRVl5LKThQOYa8hFCTFGm7s9smGmbihRANCAAQYUirj0z9Iu/ZizYJSbDBuk5O2Vt10G16BuGUgbGbL2K/Wd1BNP2d+TpSVYaH2ZlO60VDD9FNBfesZffDdzLOE";
const ISSUER: &str = "berth-fuzz";
const AUDIENCE: &str = "registry.fuzz";

/// The claims every seed token carries (valid until 2100).
fn claims() -> Claims {
    Claims {
        iss: ISSUER.into(),
        sub: "alice".into(),
        aud: AUDIENCE.into(),
        exp: 4_102_444_800,
        nbf: 1_700_000_000,
        iat: 1_700_000_000,
        jti: "fuzz".into(),
        access: vec![AccessEntry {
            kind: "repository".into(),
            name: "alice/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }],
        tid: Some(7),
    }
}

static KEYS: LazyLock<TokenKeys> = LazyLock::new(|| {
    let keys = TokenKeys::from_stored("FUZZ:KEY".into(), TEST_KEY, ISSUER).expect("the test key");
    if std::env::var_os("BERTH_FUZZ_PRINT_JWT").is_some() {
        eprintln!("Bearer {}", keys.sign(&claims()).expect("signing"));
    }
    keys
});
static SIGNED: LazyLock<serde_json::Value> = LazyLock::new(|| serde_json::to_value(claims()).unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match parse_authorization(s) {
        Some(Credentials::Basic { name, secret }) => {
            assert!(!name.contains(':'));
            let again = format!("Basic {}", BASE64.encode(format!("{name}:{secret}").as_bytes()));
            assert_eq!(parse_authorization(&again), Some(Credentials::Basic { name, secret }));
        }
        Some(Credentials::Token(t)) => assert!(t.starts_with(TOKEN_PREFIX)),
        Some(Credentials::Jwt(t)) => {
            if let Some(c) = KEYS.verify(t, AUDIENCE) {
                assert_eq!(serde_json::to_value(&c).unwrap(), *SIGNED, "a token verified with other claims: {t:?}");
            }
        }
        None => {}
    }
    let _ = decode_basic(s);
    if let Some(params) = berth::remote::challenge_params(s) {
        assert!(params.keys().all(|k| !k.contains('=')));
    }
});
