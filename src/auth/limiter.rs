//! Failed-login throttling per account and per client address.
//!
//! After `max_failures` failures within `window`, further attempts for that account or from that
//! address are refused (429) until the window has passed since the first failure. A success
//! clears the account's and the address's counts. Kept in memory: each node throttles on its
//! own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        LoginLimiter { max_failures, window, failures: Mutex::new(HashMap::new()) }
    }

    /// The counters an attempt touches: the address's, and the account's when one is named
    /// (a refresh token names none; one shared "account" for those would let a few bad
    /// refresh tokens from anywhere lock out every client's refresh tokens).
    fn keys(account: &str, addr: &str) -> Vec<String> {
        let mut keys = vec![format!("addr:{addr}")];
        if !account.is_empty() {
            keys.push(format!("account:{account}"));
        }
        keys
    }

    /// Whether an attempt may go ahead.
    pub fn allowed(&self, account: &str, addr: &str) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, since)| now.duration_since(*since) < self.window);
        Self::keys(account, addr).iter().all(|k| map.get(k).is_none_or(|(n, _)| *n < self.max_failures))
    }

    pub fn failed(&self, account: &str, addr: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for k in Self::keys(account, addr) {
            map.entry(k).or_insert((0, now)).0 += 1;
        }
    }

    pub fn succeeded(&self, account: &str, addr: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in Self::keys(account, addr) {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_failures() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.allowed("alice", "1.2.3.4"));
            l.failed("alice", "1.2.3.4");
        }
        assert!(!l.allowed("alice", "5.6.7.8"), "per account");
        assert!(!l.allowed("bob", "1.2.3.4"), "per address");
        assert!(l.allowed("bob", "5.6.7.8"));
        l.succeeded("alice", "1.2.3.4");
        assert!(l.allowed("alice", "1.2.3.4"));
    }

    #[test]
    fn attempts_without_an_account_count_per_address_only() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            l.failed("", "1.2.3.4");
        }
        assert!(!l.allowed("", "1.2.3.4"));
        assert!(l.allowed("", "5.6.7.8"), "another address's refresh tokens still work");
    }
}
