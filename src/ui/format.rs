//! Small text formatting for the pages: sizes, times, digests, query strings.

use crate::meta::now;

/// Bytes as docker shows them (decimal units): `4.2 MB`.
pub fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if b < 1000.0 {
        return format!("{bytes} B");
    }
    let mut v = b / 1000.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    if v < 10.0 { format!("{v:.2} {unit}") } else { format!("{v:.1} {unit}") }
}

/// A Unix time as `2026-11-28 03:10 UTC`.
pub fn time(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0).map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}

/// How long ago a Unix time was: `5 minutes ago`.
pub fn ago(ts: i64) -> String {
    let d = (now() - ts).max(0);
    let (n, unit) = match d {
        0..60 => return "just now".into(),
        60..3600 => (d / 60, "minute"),
        3600..86_400 => (d / 3600, "hour"),
        86_400..2_592_000 => (d / 86_400, "day"),
        2_592_000..31_536_000 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// `sha256:0123456789ab…` → `0123456789ab` (what docker shows as an image id).
pub fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// Percent-encodes a query string value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `os/arch[/variant]` of an index entry's platform object.
pub fn platform(p: &serde_json::Value) -> String {
    let get = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let mut s = format!("{}/{}", get("os"), get("architecture"));
    if !get("variant").is_empty() {
        s.push('/');
        s.push_str(get("variant"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1500), "1.50 kB");
        assert_eq!(size(4_260_000), "4.26 MB");
        assert_eq!(size(123_400_000), "123.4 MB");
    }

    #[test]
    fn digests_and_queries() {
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(query_escape("a b&c=<d>/e"), "a%20b%26c%3D%3Cd%3E/e");
        assert_eq!(
            platform(&serde_json::json!({"os":"linux","architecture":"arm64","variant":"v8"})),
            "linux/arm64/v8"
        );
    }
}
