//! Blob files of a filesystem store kept open for a moment, so a blob many clients pull is
//! opened once, not once per request.
//!
//! Opening a file may wait for the disk (its directory entry and inode may not be cached), so
//! a server thread never opens one itself: the open goes to the blocking pool, and that hop —
//! a thread switch there and back per request — cost a fifth of the throughput of a thousand
//! clients pulling the same small image. A blob is immutable under its digest, so a file
//! opened for one read serves the next ones. A file is kept open [`KEPT_FOR`] after it was
//! opened, [`KEPT`] files at most; a sweeper task closes expired files, so a file deleted by
//! another process (`berth gc` from the CLI) keeps its disk space for at most twice
//! [`KEPT_FOR`], and garbage collection in this process closes a file when it deletes it.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Blob files kept open at most.
const KEPT: usize = 128;
/// How long a file stays open after it was opened.
const KEPT_FOR: Duration = Duration::from_secs(2);

/// An open blob file and its length.
#[derive(Clone)]
pub(super) struct OpenFile {
    pub file: Arc<File>,
    pub len: u64,
}

/// A filesystem store's root and the blob files kept open under it (cheap to clone: shared).
#[derive(Clone)]
pub(super) struct OpenFiles {
    root: Arc<Path>,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, (OpenFile, Instant)>,
    /// A sweeper task is running.
    sweeping: bool,
}

impl Inner {
    fn sweep(&mut self) {
        self.files.retain(|_, (_, opened)| opened.elapsed() < KEPT_FOR);
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl OpenFiles {
    pub fn new(root: &Path) -> Self {
        OpenFiles { root: root.into(), inner: Arc::default() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of the blob at `key` (relative to the root): kept open, or opened on the
    /// blocking pool and kept.
    pub async fn open(&self, key: &str) -> std::io::Result<OpenFile> {
        if let Some(open) = self.get(key) {
            return Ok(open);
        }
        let opened = Instant::now();
        let path = self.root.join(key);
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

    /// The file of a blob, if it was opened less than [`KEPT_FOR`] ago.
    fn get(&self, key: &str) -> Option<OpenFile> {
        let mut inner = lock(&self.inner);
        let (file, opened) = inner.files.get(key)?;
        if opened.elapsed() < KEPT_FOR {
            return Some(file.clone());
        }
        inner.files.remove(key);
        None
    }

    /// Keeps a file open (expired ones go first when [`KEPT`] are; all, if none had), and
    /// starts the sweeper if it is not running.
    fn insert(&self, key: &str, file: OpenFile, opened: Instant) {
        let mut inner = lock(&self.inner);
        if inner.files.len() >= KEPT && !inner.files.contains_key(key) {
            inner.sweep();
            if inner.files.len() >= KEPT {
                inner.files.clear();
            }
        }
        inner.files.insert(key.to_string(), (file, opened));
        if !inner.sweeping {
            inner.sweeping = true;
            tokio::spawn(sweeper(Arc::downgrade(&self.inner)));
        }
    }

    /// Closes a blob's file (it is being deleted; reads in flight keep theirs).
    pub fn forget(&self, key: &str) {
        lock(&self.inner).files.remove(key);
    }
}

/// Closes expired files every [`KEPT_FOR`] until none is open.
async fn sweeper(files: Weak<Mutex<Inner>>) {
    loop {
        tokio::time::sleep(KEPT_FOR).await;
        let Some(files) = files.upgrade() else { return };
        let mut inner = lock(&files);
        inner.sweep();
        if inner.files.is_empty() {
            // (under the lock: the next insert sees this and starts a new sweeper)
            inner.sweeping = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> OpenFile {
        OpenFile { file: Arc::new(tempfile::tempfile().unwrap()), len: 0 }
    }

    /// A file is opened once and then served open, also after its name is gone (a blob is
    /// immutable); forgotten, it is opened again, and a missing one is an error.
    #[tokio::test]
    async fn a_blob_is_opened_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), b"12345").unwrap();
        let files = OpenFiles::new(dir.path());
        let first = files.open("k").await.unwrap();
        assert_eq!(first.len, 5);
        std::fs::remove_file(dir.path().join("k")).unwrap();
        let again = files.open("k").await.unwrap();
        assert!(Arc::ptr_eq(&first.file, &again.file));
        files.forget("k");
        let gone = files.open("k").await.err().unwrap();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
    }

    /// Expired files are closed by the sweeper without any further read, which then stops.
    #[tokio::test]
    async fn the_sweeper_closes_expired_files() {
        let files = OpenFiles::new(Path::new("/nonexistent"));
        let f = file();
        let weak = Arc::downgrade(&f.file);
        files.insert("a", f, Instant::now() - KEPT_FOR);
        assert!(lock(&files.inner).sweeping);
        tokio::time::sleep(KEPT_FOR).await;
        // (the sweeper's turn comes at about the same moment: wait for it, a busy machine may
        // run it late)
        for _ in 0..50 {
            if weak.upgrade().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(weak.upgrade().is_none(), "the file was closed");
        assert!(!lock(&files.inner).sweeping, "the sweeper stopped");
    }

    #[tokio::test]
    async fn no_more_than_kept_stay_open() {
        let files = OpenFiles::new(Path::new("/nonexistent"));
        for i in 0..KEPT * 3 {
            files.insert(&i.to_string(), file(), Instant::now());
            assert!(lock(&files.inner).files.len() <= KEPT);
        }
        assert!(files.get(&(KEPT * 3 - 1).to_string()).is_some(), "the newest is kept");
        files.insert("old", file(), Instant::now() - KEPT_FOR);
        assert!(files.get("old").is_none(), "expired");
    }
}
