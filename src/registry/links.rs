//! Blob links served from memory: which blobs a repository links, with their sizes, as the
//! database confirmed them less than [`LINKS_RECHECK`] ago.
//!
//! Every blob GET and HEAD asks whether the repository links the blob (a blob is readable
//! only through a repository that links it). Asking the database each time cost a query on
//! SQLite's worker thread, with two thread switches, per request: a third of the server's CPU
//! under a thousand pullers. A link the database confirmed is kept for [`LINKS_RECHECK`], the
//! bound tag lists and tagged manifests have: a link this process removes (a blob DELETE,
//! garbage collection) is forgotten at once, one removed by another node or process is seen
//! within the bound. A link due for its refresh (`Registry::link_refresh_secs`) is not served
//! from here, so the database read that refreshes it still happens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a link the database confirmed is served from memory: as long as a tag list.
pub const LINKS_RECHECK: Duration = super::TAGS_RECHECK;
/// Links kept at most (all are dropped when full; the next reads fill it again).
const LINKS_CACHED: usize = 65_536;

#[derive(Default)]
pub(super) struct BlobLinks {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// repository → digest → link
    repos: HashMap<String, HashMap<String, Link>>,
    count: usize,
    /// Bumped by every forget, so a read that raced one is not kept.
    changes: u64,
}

#[derive(Clone, Copy)]
struct Link {
    size: u64,
    /// The link's `created_at` as the database had it (unix seconds).
    linked_at: i64,
    checked: Instant,
}

impl BlobLinks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The blob's size if the link was confirmed less than [`LINKS_RECHECK`] ago and is not
    /// older than `refresh_before` (then the database must refresh it).
    pub fn get(&self, repo: &str, digest: &str, refresh_before: i64) -> Option<u64> {
        let inner = self.lock();
        let link = inner.repos.get(repo)?.get(digest)?;
        (link.checked.elapsed() < LINKS_RECHECK && link.linked_at >= refresh_before).then_some(link.size)
    }

    /// What [`BlobLinks::insert`] is given back: read before the database is asked.
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Keeps a link the database confirmed at `checked`, unless a link was forgotten since
    /// `changes` was read (the read may predate the removal).
    pub fn insert(&self, changes: u64, repo: &str, digest: &str, size: u64, linked_at: i64, checked: Instant) {
        let mut inner = self.lock();
        if inner.changes != changes {
            return;
        }
        if inner.count >= LINKS_CACHED {
            inner.repos.clear();
            inner.count = 0;
        }
        let link = Link { size, linked_at, checked };
        let links = match inner.repos.get_mut(repo) {
            Some(l) => l,
            None => inner.repos.entry(repo.to_string()).or_default(),
        };
        if links.insert(digest.to_string(), link).is_none() {
            inner.count += 1;
        }
    }

    /// Forgets a link this process removed.
    pub fn forget(&self, repo: &str, digest: &str) {
        let mut inner = self.lock();
        inner.changes += 1;
        let removed = inner.repos.get_mut(repo).and_then(|l| l.remove(digest)).is_some();
        if removed {
            inner.count -= 1;
        }
    }

    /// Forgets every link (garbage collection removed some).
    pub fn forget_all(&self) {
        let mut inner = self.lock();
        inner.changes += 1;
        inner.repos.clear();
        inner.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aa";

    #[test]
    fn a_confirmed_link_is_served_until_forgotten() {
        let links = BlobLinks::default();
        assert_eq!(links.get("r", D, 0), None);
        let c = links.changes();
        links.insert(c, "r", D, 7, 100, Instant::now());
        assert_eq!(links.get("r", D, 100), Some(7));
        assert_eq!(links.get("other", D, 100), None);
        links.forget("r", D);
        assert_eq!(links.get("r", D, 100), None);
    }

    #[test]
    fn a_link_due_for_refresh_or_checked_too_long_ago_is_not_served() {
        let links = BlobLinks::default();
        let c = links.changes();
        links.insert(c, "r", D, 7, 100, Instant::now());
        assert_eq!(links.get("r", D, 101), None, "older than the refresh bound");
        let old = Instant::now() - LINKS_RECHECK - Duration::from_millis(1);
        links.insert(c, "r", D, 7, 100, old);
        assert_eq!(links.get("r", D, 100), None, "checked too long ago");
    }

    #[test]
    fn a_read_that_raced_a_removal_is_not_kept() {
        let links = BlobLinks::default();
        let c = links.changes();
        links.forget("r", "sha256:bb");
        links.insert(c, "r", D, 7, 100, Instant::now());
        assert_eq!(links.get("r", D, 100), None);
        let c = links.changes();
        links.forget_all();
        links.insert(c, "r", D, 7, 100, Instant::now());
        assert_eq!(links.get("r", D, 100), None);
    }
}
