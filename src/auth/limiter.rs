//! Failed-login throttling, built so that strangers cannot turn it against an account's owner.
//!
//! Three counters, each counting failures within `window` from its first failure:
//!
//! - per client address (`max_failures`): one address guessing many names;
//! - per account and address (`max_failures`): one address guessing one account — not reset
//!   when the address logs in to another account, so an attacker cannot clear it with an
//!   account of their own;
//! - per account across all addresses (`max_account_failures`, NIST SP 800-63B's 100 by
//!   default): the backstop against guesses spread over many addresses.
//!
//! An attempt is refused (429) while any of its counters is at its limit. Bad guesses from one
//! address therefore lock that address out, and the account only for that address: the owner
//! logs in from anywhere else until the backstop is reached. A success clears the address's
//! counter and the account's counter at that address; the backstop only expires with the
//! window, so the owner's logins cannot reset guesses made elsewhere. Kept in memory: each node
//! throttles on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LoginLimiter {
    max_failures: u32,
    max_account_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, max_account_failures: u32, window: Duration) -> Self {
        LoginLimiter { max_failures, max_account_failures, window, failures: Mutex::new(HashMap::new()) }
    }

    /// The counters an attempt touches with their limits: the address's, and, when an account
    /// is named, the account's at this address and its backstop (a refresh token names none;
    /// one shared "account" for those would let a few bad refresh tokens from anywhere lock out
    /// every client's refresh tokens).
    fn keys(&self, account: &str, addr: &str) -> Vec<(String, u32)> {
        let mut keys = vec![(format!("addr:{addr}"), self.max_failures)];
        if !account.is_empty() {
            keys.push((format!("pair:{account}\0{addr}"), self.max_failures));
            keys.push((format!("account:{account}"), self.max_account_failures));
        }
        keys
    }

    /// Whether an attempt may go ahead.
    pub fn allowed(&self, account: &str, addr: &str) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, since)| now.duration_since(*since) < self.window);
        self.keys(account, addr).iter().all(|(k, max)| map.get(k).is_none_or(|(n, _)| n < max))
    }

    pub fn failed(&self, account: &str, addr: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for (k, _) in self.keys(account, addr) {
            map.entry(k).or_insert((0, now)).0 += 1;
        }
    }

    /// Clears the address's counter and the account's at this address (not its backstop).
    pub fn succeeded(&self, account: &str, addr: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for (k, _) in self.keys(account, addr) {
            if !k.starts_with("account:") {
                map.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_the_address_and_the_pair_not_the_account_elsewhere() {
        let l = LoginLimiter::new(3, 100, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.allowed("alice", "1.2.3.4"));
            l.failed("alice", "1.2.3.4");
        }
        assert!(!l.allowed("alice", "1.2.3.4"), "per account and address");
        assert!(!l.allowed("bob", "1.2.3.4"), "per address");
        assert!(l.allowed("alice", "5.6.7.8"), "the owner elsewhere");
        assert!(l.allowed("bob", "5.6.7.8"));
        l.succeeded("alice", "5.6.7.8");
        assert!(!l.allowed("alice", "1.2.3.4"), "a success elsewhere clears nothing here");
    }

    #[test]
    fn a_success_on_another_account_does_not_clear_the_guessed_one() {
        let l = LoginLimiter::new(3, 100, Duration::from_secs(60));
        for _ in 0..3 {
            l.failed("alice", "1.2.3.4");
        }
        l.succeeded("mallory", "1.2.3.4");
        assert!(l.allowed("mallory", "1.2.3.4"), "the address is cleared");
        assert!(!l.allowed("alice", "1.2.3.4"), "alice at this address is not");
    }

    #[test]
    fn the_backstop_counts_across_addresses() {
        let l = LoginLimiter::new(3, 7, Duration::from_secs(60));
        for i in 0..7 {
            l.failed("alice", &format!("10.0.0.{}", i / 3));
        }
        assert!(!l.allowed("alice", "5.6.7.8"), "past the backstop, everywhere");
        l.succeeded("alice", "5.6.7.8");
        assert!(!l.allowed("alice", "5.6.7.8"), "a success does not reset the backstop");
        assert!(l.allowed("bob", "5.6.7.8"));
    }

    #[test]
    fn attempts_without_an_account_count_per_address_only() {
        let l = LoginLimiter::new(3, 100, Duration::from_secs(60));
        for _ in 0..3 {
            l.failed("", "1.2.3.4");
        }
        assert!(!l.allowed("", "1.2.3.4"));
        assert!(l.allowed("", "5.6.7.8"), "another address's refresh tokens still work");
    }
}
