//! Blob files of a filesystem store kept open for a few seconds, so a blob many clients pull at
//! once is opened once, not once per request.
//!
//! Opening a file may wait for the disk (its directory entry and inode may not be cached), so
//! a server thread never opens one itself: the open goes to the blocking pool, and that hop —
//! a thread switch there and back per request — cost a fifth of the throughput of a thousand
//! clients pulling the same small image. A blob is immutable under its digest, so a descriptor
//! opened once serves every read of it. Entries are kept for [`KEPT_FOR`] at most, and at most
//! [`KEPT`] of them (descriptors are a limited resource), and garbage collection forgets a
//! blob's entry when it deletes the file, so the disk space is freed at once.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Blob files kept open at most.
const KEPT: usize = 128;
/// How long a file stays open after it was opened.
const KEPT_FOR: Duration = Duration::from_secs(5);

/// An open blob file and its length.
#[derive(Clone)]
pub(super) struct OpenFile {
    pub file: Arc<File>,
    pub len: u64,
}

#[derive(Default)]
pub(super) struct OpenFiles {
    files: Mutex<HashMap<String, (OpenFile, Instant)>>,
}

impl OpenFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (OpenFile, Instant)>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file of the blob at `key` under `root`: kept open, or opened on the blocking pool
    /// and kept.
    pub async fn open(&self, root: &Path, key: &str) -> std::io::Result<OpenFile> {
        if let Some(open) = self.get(key) {
            return Ok(open);
        }
        let opened = Instant::now();
        let path = root.join(key);
        let open = tokio::task::spawn_blocking(move || {
            let file = File::open(path)?;
            let len = file.metadata()?.len();
            Ok::<_, std::io::Error>(OpenFile { file: Arc::new(file), len })
        })
        .await
        .map_err(std::io::Error::other)??;
        self.insert(key, open.clone(), opened);
        Ok(open)
    }

    /// The open file of a blob, if one was opened less than [`KEPT_FOR`] ago.
    fn get(&self, key: &str) -> Option<OpenFile> {
        let files = self.lock();
        let (file, opened) = files.get(key)?;
        (opened.elapsed() < KEPT_FOR).then(|| file.clone())
    }

    /// Keeps a blob's file open; when [`KEPT`] are, the expired ones go first, then all.
    fn insert(&self, key: &str, file: OpenFile, opened: Instant) {
        let mut files = self.lock();
        if files.len() >= KEPT && !files.contains_key(key) {
            files.retain(|_, (_, t)| t.elapsed() < KEPT_FOR);
            if files.len() >= KEPT {
                files.clear();
            }
        }
        files.insert(key.to_string(), (file, opened));
    }

    /// Closes a blob's file (it is being deleted).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> OpenFile {
        OpenFile { file: Arc::new(tempfile::tempfile().unwrap()), len: 0 }
    }

    #[test]
    fn a_file_is_served_until_it_expires_or_is_forgotten() {
        let files = OpenFiles::default();
        assert!(files.get("a").is_none());
        files.insert("a", open(), Instant::now());
        assert!(files.get("a").is_some());
        files.forget("a");
        assert!(files.get("a").is_none());
        files.insert("b", open(), Instant::now() - KEPT_FOR);
        assert!(files.get("b").is_none(), "expired");
    }

    /// A file is opened once and then served open, also after its name is gone (a blob is
    /// immutable; garbage collection forgets the entry when it deletes the file); a missing
    /// one is an error and is not kept.
    #[tokio::test]
    async fn a_blob_is_opened_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), b"12345").unwrap();
        let files = OpenFiles::default();
        let first = files.open(dir.path(), "k").await.unwrap();
        assert_eq!(first.len, 5);
        std::fs::remove_file(dir.path().join("k")).unwrap();
        let again = files.open(dir.path(), "k").await.unwrap();
        assert!(Arc::ptr_eq(&first.file, &again.file));
        files.forget("k");
        let gone = files.open(dir.path(), "k").await.err().unwrap();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
        assert!(files.get("k").is_none());
    }

    #[test]
    fn no_more_than_kept_stay_open() {
        let files = OpenFiles::default();
        for i in 0..KEPT * 3 {
            files.insert(&i.to_string(), open(), Instant::now());
            assert!(files.lock().len() <= KEPT);
        }
        assert!(files.get(&(KEPT * 3 - 1).to_string()).is_some(), "the newest is kept");
    }
}
