//! `berth logs [-f] [-n N] CONTAINER`: the container's log (records the monitor appends, see
//! `monitor::LogWriter`) replayed to stdout and stderr; `--tail N` keeps the last N lines;
//! `--follow` goes on printing what the container writes until it exits — that is, until its
//! monitor, the log's only writer, is gone (it writes the last output before it records the
//! exit, so one more read after that sees everything).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use super::args::LogsArgs;
use super::state::{self, Paths};

const STDERR: u8 = 2;

/// How often a follower looks for new output.
const POLL: Duration = Duration::from_millis(50);

/// Reads whole records `[stream: u8][length: u32 BE][bytes]` from a log, leaving a record that
/// is being written for the next call.
struct LogReader {
    file: File,
    pos: u64,
}

impl LogReader {
    fn next(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        let mut header = [0u8; 5];
        let mut data = Vec::new();
        let whole = match self.file.read_exact(&mut header) {
            Ok(()) => {
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                data.resize(len, 0);
                match self.file.read_exact(&mut data) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(e),
        };
        if !whole {
            self.file.seek(SeekFrom::Start(self.pos))?;
            return Ok(None);
        }
        self.pos += 5 + data.len() as u64;
        Ok(Some((header[0], data)))
    }
}

/// `--tail`: `all` or a number of lines.
fn parse_tail(s: &str) -> anyhow::Result<Option<usize>> {
    if s == "all" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| anyhow::anyhow!("invalid --tail {s:?}: give a number of lines or `all`"))
}

/// The last `n` lines of what `reader` holds now (lines of each stream put together across
/// records; an unfinished last line counts as a line).
fn last_lines(reader: &mut LogReader, n: usize) -> io::Result<VecDeque<(u8, Vec<u8>)>> {
    let mut lines: VecDeque<(u8, Vec<u8>)> = VecDeque::new();
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let push = |lines: &mut VecDeque<(u8, Vec<u8>)>, line: (u8, Vec<u8>)| {
        if n == 0 {
            return;
        }
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(line);
    };
    while let Some((stream, data)) = reader.next()? {
        let slot = usize::from(stream == STDERR);
        for piece in data.split_inclusive(|&b| b == b'\n') {
            pending[slot].extend_from_slice(piece);
            if piece.ends_with(b"\n") {
                let line = std::mem::take(&mut pending[slot]);
                push(&mut lines, (stream, line));
            }
        }
    }
    for (slot, rest) in pending.into_iter().enumerate() {
        if !rest.is_empty() {
            push(&mut lines, (if slot == 1 { STDERR } else { 1 }, rest));
        }
    }
    Ok(lines)
}

fn write_record(out: &mut dyn Write, err: &mut dyn Write, stream: u8, data: &[u8]) -> io::Result<()> {
    if stream == STDERR { err.write_all(data) } else { out.write_all(data) }
}

/// Whether anything may still write to the container's log: its monitor lives.
fn writer_alive(paths: &Paths, id: &str) -> bool {
    state::load(paths, id).is_ok_and(|c| state::monitor_alive(&c))
}

/// `berth logs`.
pub fn logs(paths: &Paths, a: &LogsArgs) -> anyhow::Result<()> {
    let tail = parse_tail(&a.tail)?;
    let c = state::resolve(paths, &a.container)?;
    let path = paths.container(&c.id).join("log");
    let (stdout, stderr) = (io::stdout(), io::stderr());
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let Some(file) = open_log(paths, &c.id, &path, a.follow)? else { return Ok(()) };
    let mut reader = LogReader { file, pos: 0 };
    if let Some(n) = tail {
        for (stream, line) in last_lines(&mut reader, n)? {
            write_record(&mut out, &mut err, stream, &line)?;
        }
    }
    loop {
        // Before reading: output written before the monitor ended is in the file by then.
        let alive = a.follow && writer_alive(paths, &c.id);
        while let Some((stream, data)) = reader.next()? {
            write_record(&mut out, &mut err, stream, &data)?;
        }
        out.flush()?;
        err.flush()?;
        if !alive {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Opens the log; while following a container that has not written one yet, waits for it.
fn open_log(paths: &Paths, id: &str, path: &Path, follow: bool) -> anyhow::Result<Option<File>> {
    loop {
        let alive = follow && writer_alive(paths, id);
        match File::open(path) {
            Ok(f) => return Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !alive => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::thread::sleep(POLL),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(records: &[(u8, &[u8])]) -> LogReader {
        let mut file = tempfile::tempfile().unwrap();
        for (stream, data) in records {
            file.write_all(&[*stream]).unwrap();
            file.write_all(&(data.len() as u32).to_be_bytes()).unwrap();
            file.write_all(data).unwrap();
        }
        file.seek(SeekFrom::Start(0)).unwrap();
        LogReader { file, pos: 0 }
    }

    #[test]
    fn tail_counts_lines_across_records_and_streams() {
        let records: &[(u8, &[u8])] = &[(1, b"a\nb"), (2, b"e1\n"), (1, b"c\nd\n"), (1, b"part")];
        let lines: Vec<(u8, String)> = last_lines(&mut log_of(records), 3)
            .unwrap()
            .into_iter()
            .map(|(s, l)| (s, String::from_utf8(l).unwrap()))
            .collect();
        assert_eq!(lines, [(1, "bc\n".to_string()), (1, "d\n".to_string()), (1, "part".to_string())]);
        assert!(last_lines(&mut log_of(records), 0).unwrap().is_empty());
        assert_eq!(last_lines(&mut log_of(records), 100).unwrap().len(), 5);
        assert_eq!(parse_tail("all").unwrap(), None);
        assert!(parse_tail("x").is_err());
    }

    #[test]
    fn a_record_being_written_waits_for_the_next_read() {
        let mut r = log_of(&[(1, b"one\n")]);
        r.file.seek(SeekFrom::End(0)).unwrap();
        r.file.write_all(&[1, 0, 0, 0, 4, b't']).unwrap();
        r.file.seek(SeekFrom::Start(0)).unwrap();
        assert_eq!(r.next().unwrap().unwrap().1, b"one\n");
        assert!(r.next().unwrap().is_none());
        r.file.seek(SeekFrom::End(0)).unwrap();
        r.file.write_all(b"wo\n").unwrap();
        r.file.seek(SeekFrom::Start(r.pos)).unwrap();
        assert_eq!(r.next().unwrap().unwrap().1, b"two\n");
    }
}
