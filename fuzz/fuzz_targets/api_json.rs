//! The JSON bodies of `/api/v1` (`api::parse_management_body`): each input is read as every
//! handler's body type, through the nesting limit and serde, then the checks that need no
//! database (webhook URLs and events, replication rules with their tag expressions and
//! schedules, retention policies).
#![no_main]
use berth::api::{MANAGEMENT_BODIES, parse_management_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for body in MANAGEMENT_BODIES {
        let _ = parse_management_body(body, data);
    }
});
