//! A blob fetch in flight, shared with the requests that join it: the mirror's fetch puts each
//! chunk in as it hands it to its own client (the last one only once the digest checked out),
//! and every request that joined reads them from the first byte on, each at its own pace, while
//! the blob is still being fetched and stored.
//!
//! Only the last [`WINDOW`] bytes are kept, and only while a request reads them or may still
//! join (the fetch never waits for a joined request): a request that joins later than that
//! waits for the commit and reads the stored blob, and one that falls further behind is told
//! where it stopped ([`Next::Lagged`]) and reads the rest from the store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

/// Bytes of a fetch kept for the requests that joined it: at least this much, in whole chunks.
const WINDOW: usize = 8 << 20;

/// What a joined request reads next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The bytes from the asked offset on (part of one chunk).
    Chunk(Bytes),
    /// The whole blob was read, and it checked out.
    End,
    /// The fetch failed; why.
    Failed(String),
    /// The bytes at this offset are no longer kept: read the rest from the store once the
    /// fetch is committed.
    Lagged(u64),
}

#[derive(Default)]
struct State {
    /// Set once the upstream answered: its Content-Length, if it sent one.
    started: Option<Option<u64>>,
    /// Offset of the first kept chunk.
    first: u64,
    chunks: VecDeque<Bytes>,
    kept: usize,
    end: Option<Result<(), String>>,
    /// Requests reading (their [`Reader`]s).
    readers: usize,
}

/// One fetch's shared chunks.
pub struct Tap {
    state: Mutex<State>,
    changed: watch::Sender<()>,
}

impl Default for Tap {
    fn default() -> Self {
        Tap { state: Mutex::default(), changed: watch::channel(()).0 }
    }
}

impl Tap {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.send_replace(());
    }

    /// The upstream answered; `size` is its Content-Length, if it sent one.
    pub fn start(&self, size: Option<u64>) {
        self.update(|s| s.started = Some(size));
    }

    /// The next bytes of the blob, in order.
    pub fn push(&self, chunk: Bytes) {
        self.update(|s| {
            s.kept += chunk.len();
            s.chunks.push_back(chunk);
            while s.chunks.len() > 1 && s.kept - s.chunks[0].len() >= WINDOW {
                s.forget_first();
            }
            // Nobody can join any more and nobody reads: keep nothing.
            if s.first > 0 && s.readers == 0 {
                while !s.chunks.is_empty() {
                    s.forget_first();
                }
            }
        });
    }

    /// Every byte was pushed and the blob's digest checked out.
    pub fn complete(&self) {
        self.update(|s| {
            s.end.get_or_insert(Ok(()));
        });
    }

    /// The fetch ended without a verified blob (unless it already completed).
    pub fn fail(&self, why: &str) {
        self.update(|s| {
            s.end.get_or_insert_with(|| Err(why.to_string()));
        });
    }

    /// Waits for the upstream's answer. A reader from byte 0 on, which knows the upstream's
    /// Content-Length (if it sent one); `None` when the fetch failed or ended without starting,
    /// or its first bytes are no longer kept.
    pub async fn join(self: &Arc<Self>) -> Option<Reader> {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match (s.started, &s.end) {
                    (_, Some(Err(_))) => return None,
                    (Some(size), _) if s.first == 0 => {
                        s.readers += 1;
                        return Some(Reader { tap: self.clone(), size });
                    }
                    (Some(_), _) | (None, Some(_)) => return None,
                    (None, None) => {}
                }
            }
            changed.changed().await.ok()?;
        }
    }

    /// The bytes from offset `pos` on, waiting for the fetch when it has not got there yet.
    async fn next(&self, pos: u64) -> Next {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if pos < s.first {
                    return Next::Lagged(pos);
                }
                let mut start = s.first;
                for chunk in &s.chunks {
                    let end = start + chunk.len() as u64;
                    if pos < end {
                        return Next::Chunk(chunk.slice((pos - start) as usize..));
                    }
                    start = end;
                }
                match &s.end {
                    Some(Ok(())) => return Next::End,
                    Some(Err(why)) => return Next::Failed(why.clone()),
                    None => {}
                }
            }
            if changed.changed().await.is_err() {
                return Next::Failed("mirror fetch gone".into());
            }
        }
    }
}

impl State {
    fn forget_first(&mut self) {
        let gone = self.chunks.pop_front().map_or(0, |c| c.len());
        self.first += gone as u64;
        self.kept -= gone;
    }
}

/// One joined request's hold on a tap: its chunks are kept while a reader may need them.
pub struct Reader {
    tap: Arc<Tap>,
    /// The upstream's Content-Length, if it sent one.
    pub size: Option<u64>,
}

impl Reader {
    /// The bytes from offset `pos` on, waiting for the fetch when it has not got there yet.
    pub async fn next(&self, pos: u64) -> Next {
        self.tap.next(pos).await
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.tap.state.lock().unwrap_or_else(|p| p.into_inner()).readers -= 1;
    }
}

/// Fails the tap when dropped before the fetch ended it (an early return, a panic), so no
/// joined request waits for chunks that will never come.
pub struct EndGuard<'a>(pub &'a Tap);

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        self.0.fail("the mirror's upstream fetch ended without the blob");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn chunk(byte: u8, len: usize) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    #[tokio::test]
    async fn a_joined_reader_gets_every_byte_as_it_arrives_and_the_end_only_after_complete() {
        let tap = Arc::new(Tap::default());
        let t = tap.clone();
        let joined = tokio::spawn(async move { t.join().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!joined.is_finished(), "join waits for the upstream's answer");
        tap.start(Some(6));
        let reader = joined.await.unwrap().expect("a reader from byte 0");
        assert_eq!(reader.size, Some(6));

        tap.push(chunk(1, 4));
        assert_eq!(tap.next(0).await, Next::Chunk(chunk(1, 4)));
        assert_eq!(tap.next(3).await, Next::Chunk(chunk(1, 1)));
        let t = tap.clone();
        let waiting = tokio::spawn(async move { t.next(4).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a reader at the fetch's edge waits");
        tap.push(chunk(2, 2));
        assert_eq!(waiting.await.unwrap(), Next::Chunk(chunk(2, 2)));

        let t = tap.clone();
        let at_end = tokio::spawn(async move { t.next(6).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!at_end.is_finished(), "every byte read is not the end until the digest checked out");
        tap.complete();
        assert_eq!(at_end.await.unwrap(), Next::End);
        // A failure after completion changes nothing.
        tap.fail("late");
        assert_eq!(tap.next(6).await, Next::End);
    }

    #[tokio::test]
    async fn a_reader_behind_the_window_is_told_where_it_stopped() {
        let tap = Arc::new(Tap::default());
        tap.start(None);
        let reader = tap.join().await.unwrap();
        let piece = WINDOW / 4;
        for i in 0..6 {
            tap.push(chunk(i, piece));
        }
        // Four pieces make the window; the first two are gone.
        assert_eq!(tap.next(0).await, Next::Lagged(0));
        assert_eq!(tap.next(piece as u64 * 2 - 1).await, Next::Lagged(piece as u64 * 2 - 1));
        assert_eq!(tap.next(piece as u64 * 2).await, Next::Chunk(chunk(2, piece)));
        assert_eq!(tap.next(piece as u64 * 6 - 1).await, Next::Chunk(chunk(5, 1)));
        // Nobody can join from the start any more.
        assert!(tap.join().await.is_none());
        // Without a reader, the tap keeps nothing once the start is gone.
        drop(reader);
        tap.push(chunk(6, 1));
        assert_eq!(tap.next(piece as u64 * 6).await, Next::Lagged(piece as u64 * 6));
        assert_eq!(tap.state.lock().unwrap().kept, 0);
    }

    #[tokio::test]
    async fn a_failed_fetch_takes_no_new_readers() {
        let tap = Arc::new(Tap::default());
        tap.start(Some(1));
        tap.fail("digest mismatch");
        assert!(tap.join().await.is_none());
    }

    #[tokio::test]
    async fn failures_reach_every_reader_and_joiner() {
        let tap = Arc::new(Tap::default());
        let t = tap.clone();
        let joined = tokio::spawn(async move { t.join().await });
        {
            let _guard = EndGuard(&tap);
        }
        assert!(joined.await.unwrap().is_none(), "a fetch that never started lets joiners wait for the store");

        let tap = Arc::new(Tap::default());
        tap.start(Some(10));
        let _reader = tap.join().await.unwrap();
        tap.push(chunk(7, 3));
        tap.fail("digest mismatch");
        // The bytes before the failure still come, then the failure (never an end).
        assert_eq!(tap.next(0).await, Next::Chunk(chunk(7, 3)));
        assert_eq!(tap.next(3).await, Next::Failed("digest mismatch".into()));
    }
}
