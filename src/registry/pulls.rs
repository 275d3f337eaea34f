//! Pull times of manifests, for retention (`keep_pulled_days`) and the mirror's least recently
//! pulled eviction. A manifest GET only notes the pull in memory; a background task writes the
//! notes in one transaction every `gc.pull_record_secs`, so a manifest costs at most one
//! database write per period however often it is pulled, and none on the request path.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::Result;
use crate::meta::{Meta, now};

/// Pulls noted beyond this many distinct manifests per period are dropped (memory bound).
const MAX_PENDING: usize = 100_000;

#[derive(Default)]
pub struct PullTracker {
    pending: Mutex<HashMap<(String, String), i64>>,
}

impl PullTracker {
    /// Notes that `digest` of `repo` was pulled now.
    pub fn record(&self, repo: &str, digest: &str) {
        let t = now();
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(&(repo.to_string(), digest.to_string())) {
            *v = t;
        } else if map.len() < MAX_PENDING {
            map.insert((repo.to_string(), digest.to_string()), t);
        }
    }

    /// Writes the noted pulls; returns how many.
    pub async fn flush(&self, meta: &Meta) -> Result<usize> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let pulls: Vec<(String, String, i64)> = taken.into_iter().map(|((r, d), t)| (r, d, t)).collect();
        for chunk in pulls.chunks(500) {
            meta.record_pulls(chunk).await?;
        }
        Ok(pulls.len())
    }
}
