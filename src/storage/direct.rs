//! Appending to an upload file with direct I/O: whole aligned blocks go straight to the disk
//! (`O_DIRECT`), past the page cache; the short tail of each request is written through the
//! page cache.
//!
//! Why: a pushed layer is written once and read later, often much later. Through the page cache
//! every byte costs a copy into a newly allocated cache page (on a VM whose memory the host backs
//! lazily, about 2 µs per new 4 KiB page: a second per 512 MiB) and pushes hot blobs out of
//! the cache. With direct I/O the disk reads from our buffer; the CPU only copies the bytes once
//! into that aligned buffer. Small blobs (configs, manifests' blobs, anything under
//! [`BLOCK`]) never fill a block and stay on the cached path.
//!
//! A filesystem that refuses `O_DIRECT` (tmpfs on older kernels, some FUSE mounts) is written
//! through the page cache instead, with the same buffering.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Offset and address alignment for direct writes: covers every logical block size up to 4 KiB.
const ALIGN: usize = 4096;
/// Bytes gathered before one direct write.
pub const BLOCK: usize = 1024 * 1024;

/// A heap buffer aligned for direct I/O.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// The buffer is plain owned memory.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(BLOCK, ALIGN).expect("BLOCK and ALIGN are valid")
    }

    fn new() -> Self {
        let layout = Self::layout();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let ptr = std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len: 0 }
    }

    /// The filled part.
    fn filled(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written by `extend`/`fill_head`, `len <= BLOCK`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The first `n` bytes, zeroed, for reading into; they count as filled.
    fn fill_head(&mut self, n: usize) -> &mut [u8] {
        assert!(n <= BLOCK);
        // SAFETY: the allocation holds BLOCK >= n bytes, zeroed here before they are exposed.
        unsafe {
            std::ptr::write_bytes(self.ptr.as_ptr(), 0, n);
            self.len = n;
            std::slice::from_raw_parts_mut(self.ptr.as_ptr(), n)
        }
    }

    /// Copies as much of `data` as fits; returns how much.
    fn extend(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(BLOCK - self.len);
        // SAFETY: `n` bytes fit after `len`; `data` cannot overlap our own allocation.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(self.len), n) };
        self.len += n;
        n
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout()) }
    }
}

/// An upload file being appended to from `start + buf.len`.
pub struct AppendFile {
    file: File,
    /// `O_DIRECT` is set on `file`.
    direct: bool,
    /// The file's bytes from `start` on that are not yet written, after the ones read back
    /// from the file by `open`.
    buf: AlignedBuf,
    /// File offset of `buf[0]`; a multiple of [`ALIGN`] while `direct`.
    start: u64,
}

impl AppendFile {
    /// Opens `path` to append at `offset`, cutting off anything past it. The bytes between the
    /// 4 KiB boundary below `offset` and `offset` are read back into the buffer, so every direct
    /// write starts on a boundary.
    pub fn open(path: &Path, offset: u64, direct: bool) -> io::Result<Self> {
        let open = |flags: i32| std::fs::OpenOptions::new().write(true).custom_flags(flags).open(path);
        let (file, direct) = match direct {
            true => match open(libc::O_DIRECT) {
                Ok(file) => (file, true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
                Err(e) => return Err(e),
            },
            false => (open(0)?, false),
        };
        truncate_to(&file, offset)?;
        let start = offset - offset % ALIGN as u64;
        let mut buf = AlignedBuf::new();
        let partial = (offset - start) as usize;
        if partial > 0 {
            // Through the page cache: no alignment rules for a read of a few bytes.
            File::open(path)?.read_exact_at(buf.fill_head(partial), start)?;
        }
        Ok(AppendFile { file, direct, buf, start })
    }

    /// Appends `data`; full blocks are written as they fill.
    pub fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.buf.extend(data);
            data = &data[n..];
            if self.buf.len == BLOCK {
                self.write_buffer()?;
                self.start += BLOCK as u64;
                self.buf.len = 0;
            }
        }
        Ok(())
    }

    /// Writes what is left in the buffer (through the page cache: it may end anywhere). Later
    /// pushes go through the page cache as well.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.buf.len > 0 {
            self.set_direct(false)?;
            self.write_buffer()?;
            self.start += self.buf.len as u64;
            self.buf.len = 0;
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        match self.file.write_all_at(self.buf.filled(), self.start) {
            // A filesystem that took the flag but not the write: go on through the page cache.
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.set_direct(false)?;
                self.file.write_all_at(self.buf.filled(), self.start)
            }
            other => other,
        }
    }

    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        if self.direct == on {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: plain fcntl calls on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.direct = on;
        Ok(())
    }

    /// Whether full blocks go past the page cache (for tests).
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        self.direct
    }
}

/// Cuts a file back to `len` bytes; a file shorter than that lost acknowledged bytes, which is
/// an error (never padded with zeros).
pub(super) fn truncate_to(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    let have = file.metadata()?.len();
    if have < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("upload file has {have} bytes, {len} were acknowledged"),
        ));
    }
    file.set_len(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed).collect()
    }

    /// Appends in uneven pieces across several opens (chunked uploads), on the disk (direct
    /// I/O where the filesystem has it) and on tmpfs, and checks every byte.
    #[test]
    fn appends_across_reopens_byte_for_byte() {
        for dir in [std::env::temp_dir(), std::path::PathBuf::from("/dev/shm")] {
            if !dir.is_dir() {
                continue;
            }
            let tmp = tempfile::tempdir_in(&dir).unwrap();
            let path = tmp.path().join("upload");
            std::fs::write(&path, b"").unwrap();
            let mut want = Vec::new();
            // Each request ends at an odd offset; the next one starts there.
            for (i, len) in
                [5usize, BLOCK + 7, 3 * BLOCK, 4095, 1, 2 * BLOCK + ALIGN + 3, 0, 100_000].iter().enumerate()
            {
                let data = pattern(*len, i as u8);
                let mut f = AppendFile::open(&path, want.len() as u64, true).unwrap();
                for piece in data.chunks(8191 + i * 1000) {
                    f.push(piece).unwrap();
                }
                f.finish().unwrap();
                want.extend_from_slice(&data);
                assert_eq!(std::fs::read(&path).unwrap(), want, "after request {i} in {}", dir.display());
            }
            // Reopening at an earlier offset forgets what came after it.
            let keep = BLOCK as u64 + 12;
            let mut f = AppendFile::open(&path, keep, true).unwrap();
            f.push(b"tail").unwrap();
            f.finish().unwrap();
            want.truncate(keep as usize);
            want.extend_from_slice(b"tail");
            assert_eq!(std::fs::read(&path).unwrap(), want);
        }
    }

    /// The data dir of the tests is on a disk filesystem: there the big blocks really bypass
    /// the page cache.
    #[test]
    fn uses_direct_io_where_the_filesystem_has_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("upload");
        std::fs::write(&path, b"").unwrap();
        let f = AppendFile::open(&path, 0, true).unwrap();
        if super::super::on_disk(tmp.path()) {
            assert!(f.is_direct());
        }
        assert!(!AppendFile::open(&path, 0, false).unwrap().is_direct());
    }
}
