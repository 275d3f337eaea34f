//! The nesting limit every JSON body Berth parses goes through: manifests, `/api/v1` bodies
//! (webhooks among them), image configs read by the runtime, the mirror's upstream answers.
//!
//! serde_json stops at 128 levels while building values, but it skips unknown fields without
//! any limit, so a 10,000-deep array under a field nobody reads would be stored byte for byte
//! and blow the stack of the next client that parses it whole. [`check_nesting`] is a cheap
//! byte scanner run before deserialising: it counts `[`/`{` outside strings (honouring `\"`
//! escapes) and refuses anything deeper than [`MAX_DEPTH`]. It does not validate the JSON
//! otherwise: that stays the parser's job.

use std::fmt;

/// The deepest nesting of arrays and objects accepted (`{}` is one level, `{"a":[]}` two).
pub const MAX_DEPTH: usize = 64;

/// A JSON document nested deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep;

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON nested deeper than {MAX_DEPTH} levels")
    }
}

impl std::error::Error for TooDeep {}

/// Refuses `bytes` if its arrays and objects nest deeper than [`MAX_DEPTH`].
pub fn check_nesting(bytes: &[u8]) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize, open: &str, close: &str) -> String {
        format!("{}{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn accepts_up_to_the_limit_and_refuses_beyond() {
        assert_eq!(check_nesting(nested(MAX_DEPTH, "[", "]").as_bytes()), Ok(()));
        assert_eq!(check_nesting(nested(MAX_DEPTH + 1, "[", "]").as_bytes()), Err(TooDeep));
        assert_eq!(check_nesting(nested(10_000, "[", "]").as_bytes()), Err(TooDeep));
        // Objects count as arrays do, mixed too.
        let objects = format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH + 1), "}".repeat(MAX_DEPTH + 1));
        assert_eq!(check_nesting(objects.as_bytes()), Err(TooDeep));
        let mixed = format!("{}{}", r#"{"a":["#.repeat(33), "]}".repeat(33));
        assert_eq!(check_nesting(mixed.as_bytes()), Err(TooDeep)); // 66 levels
        let mixed = format!("{}{}", r#"{"a":["#.repeat(32), "]}".repeat(32));
        assert_eq!(check_nesting(mixed.as_bytes()), Ok(())); // 64 levels
        // Depth is the deepest point, not the number of brackets.
        let wide = format!("[{}]", vec!["[[]]"; 10_000].join(","));
        assert_eq!(check_nesting(wide.as_bytes()), Ok(()));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let s = format!(r#"{{"x":"{}"}}"#, "[{".repeat(1000));
        assert_eq!(check_nesting(s.as_bytes()), Ok(()));
        // An escaped quote does not end the string ...
        let s = format!(r#"{{"x":"\"{}"}}"#, "[".repeat(1000));
        assert_eq!(check_nesting(s.as_bytes()), Ok(()));
        // ... but an escaped backslash before the quote does.
        let s = format!(r#"{{"x":"\\"{}"#, "[".repeat(MAX_DEPTH));
        assert_eq!(check_nesting(s.as_bytes()), Err(TooDeep));
        // Keys are strings too.
        let s = format!(r#"{{"{}":1}}"#, "{".repeat(1000));
        assert_eq!(check_nesting(s.as_bytes()), Ok(()));
    }

    #[test]
    fn what_serde_json_skips_is_caught() {
        // serde_json ignores unknown fields at any depth: this is why the scan exists.
        #[derive(serde::Deserialize)]
        struct Small {
            #[allow(dead_code)]
            a: u8,
        }
        let deep = format!(r#"{{"a":1,"junk":{}}}"#, nested(10_000, "[", "]"));
        assert!(serde_json::from_str::<Small>(&deep).is_ok());
        assert_eq!(check_nesting(deep.as_bytes()), Err(TooDeep));
    }
}
