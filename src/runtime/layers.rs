//! The layer cache: each image layer unpacked once into `runtime/layers/<diff_id hex>`, shared by
//! every container of every image that uses it.
//!
//! Unpacking is Berth's own loop over the `tar` crate's entries (gzip through `flate2`, zstd through
//! `ruzstd`, or plain tar, told apart by their magic bytes), so every path is checked before
//! anything is written: entries with `..`, absolute paths, a parent that is a symlink, hardlinks
//! that leave the layer, and device nodes are refused and the whole layer is dropped — nothing is
//! ever written outside the layer's directory. OCI whiteouts become overlayfs whiteouts: `.wh.x` a
//! 0/0 character device `x`, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory.
//! The uncompressed stream is hashed while it is read and must equal the image config's diff_id.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

use crate::oci::{Digest, Hasher};

/// Why a layer was refused.
#[derive(Debug, thiserror::Error)]
#[error("unsafe layer entry {entry:?}: {reason}")]
pub struct UnsafeEntry {
    pub entry: String,
    pub reason: &'static str,
}

fn unsafe_entry(entry: &Path, reason: &'static str) -> anyhow::Error {
    UnsafeEntry { entry: entry.display().to_string(), reason }.into()
}

/// A reader that hashes what passes through it and counts the bytes.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The decompressed stream of a layer blob, whatever its compression.
fn decompress<'a>(reader: impl Read + 'a) -> anyhow::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(buffered)
            .map_err(|e| anyhow::anyhow!("invalid zstd layer: {e}"))?;
        Box::new(decoder)
    } else {
        Box::new(buffered)
    })
}

/// Unpacks one layer blob (`reader`, compressed or not) into the new directory `dest`, checking
/// every entry and the uncompressed digest against `diff_id`. On error `dest` may hold part of
/// the layer; the caller removes it.
pub fn unpack(reader: impl Read, dest: &Path, diff_id: &Digest) -> anyhow::Result<u64> {
    fs::create_dir(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))?;
    let mut hashing = HashingReader { inner: decompress(reader)?, hasher: Hasher::new(diff_id.algorithm()), bytes: 0 };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().context("the layer is not a tar archive")? {
            let mut entry = entry.context("the layer's tar stream is damaged")?;
            unpack_entry(&mut entry, dest)?;
        }
    }
    // The tar reader stops at the end-of-archive blocks; the digest covers everything after too.
    io::copy(&mut hashing, &mut io::sink()).context("the layer's stream is damaged")?;
    let actual = hashing.hasher.finish();
    if &actual != diff_id {
        bail!("layer content is {actual}, but the image config says {diff_id}: the image is damaged");
    }
    Ok(hashing.bytes)
}

/// The entry's path as normal components, refusing absolute paths and `..`.
fn clean_path(raw: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry(raw, "path contains `..`")),
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_entry(raw, "absolute path")),
        }
    }
    Ok(out)
}

/// Makes sure every parent of `rel` inside `dest` is a real directory (creating missing ones),
/// never a symlink, so nothing written at `rel` can land outside `dest`.
fn prepare_parents(dest: &Path, rel: &Path, raw: &Path) -> anyhow::Result<()> {
    let mut at = dest.to_path_buf();
    let parents: Vec<_> = rel.parent().map(|p| p.components().collect()).unwrap_or_default();
    for c in parents {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Err(unsafe_entry(raw, "a parent directory is a symlink")),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(unsafe_entry(raw, "a parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at)?;
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (never following a symlink).
pub(crate) fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cstring(path)?;
    let n = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in xattr name"))?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn mknod_whiteout(path: &Path) -> io::Result<()> {
    let p = cstring(path)?;
    // SAFETY: a valid path; a 0/0 character device is overlayfs's whiteout.
    let rc = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR, 0) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Whether a directory of a layer is opaque (hides what lower layers have under it).
fn is_opaque(dir: &Path) -> bool {
    let Ok(p) = cstring(dir) else { return false };
    let mut buf = [0u8; 4];
    // SAFETY: a valid path and a buffer of the given length.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), c"trusted.overlay.opaque".as_ptr(), buf.as_mut_ptr().cast(), 4) };
    n == 1 && buf[0] == b'y'
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    m.file_type().is_char_device() && m.rdev() == 0
}

/// What the merged view of the layers has at a path (its components already resolved).
enum Entry {
    Dir,
    File(PathBuf),
    Link(PathBuf),
}

/// The entry at `rel` in the merged view of `layers` (lowest first), as overlayfs would show
/// it: the topmost layer that has it wins; a whiteout, or a non-directory or an opaque directory
/// on the way in some layer, hides the layers below. Never follows a symbolic link of a layer.
fn merged_entry(layers: &[PathBuf], rel: &[std::ffi::OsString]) -> Option<Entry> {
    'layers: for layer in layers.iter().rev() {
        let mut dir = layer.clone();
        for (i, part) in rel.iter().enumerate() {
            let path = dir.join(part);
            let Ok(m) = fs::symlink_metadata(&path) else {
                if is_opaque(&dir) {
                    return None;
                }
                continue 'layers;
            };
            if is_whiteout(&m) {
                return None;
            }
            let last = i + 1 == rel.len();
            if last {
                return Some(if m.file_type().is_symlink() {
                    Entry::Link(fs::read_link(&path).ok()?)
                } else if m.is_dir() {
                    Entry::Dir
                } else {
                    Entry::File(path)
                });
            }
            if !m.is_dir() {
                return None; // a file or a link here hides the path in the layers below
            }
            dir = path;
        }
        return Some(Entry::Dir); // the root
    }
    None
}

/// Reads a file of the image's root as the container will see it: through the merged view of
/// `layers` (lowest first), symbolic links followed inside that root only — an absolute target
/// starts again at the image's root and `..` stops there, so a layer's `etc -> /etc` never
/// reaches the host's files; at most 40 links. `None` when it is not there.
pub fn read_image_file(layers: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    let split = |p: &Path| -> Vec<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect()
    };
    let mut todo: VecDeque<OsString> = split(Path::new(path)).into();
    let mut at: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            at.pop();
            continue;
        }
        at.push(part);
        match merged_entry(layers, &at)? {
            Entry::Dir => {}
            Entry::File(file) => {
                return if todo.is_empty() { fs::read(file).ok() } else { None };
            }
            Entry::Link(target) => {
                links += 1;
                if links > 40 {
                    return None;
                }
                at.pop();
                if target.is_absolute() {
                    at.clear();
                }
                for c in split(&target).into_iter().rev() {
                    todo.push_front(c);
                }
            }
        }
    }
    None
}

fn unpack_entry<R: Read>(entry: &mut tar::Entry<'_, R>, dest: &Path) -> anyhow::Result<()> {
    let raw = entry.path().context("unreadable entry path")?.into_owned();
    let rel = clean_path(&raw)?;
    let kind = entry.header().entry_type();
    if rel.as_os_str().is_empty() {
        // "./": the layer's root itself.
        return if kind.is_dir() { Ok(()) } else { Err(unsafe_entry(&raw, "a non-directory at the layer root")) };
    }
    prepare_parents(dest, &rel, &raw)?;
    let target = dest.join(&rel);
    let file_name = rel.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();

    // Whiteouts.
    if let Some(hidden) = file_name.strip_prefix(b".wh.") {
        let parent = target.parent().unwrap_or(dest);
        if hidden == b".wh..opq" {
            lsetxattr(parent, "trusted.overlay.opaque", b"y")
                .with_context(|| format!("cannot mark {} opaque (overlay xattrs need root)", parent.display()))?;
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Err(unsafe_entry(&raw, "invalid whiteout name"));
        }
        let hidden_path = parent.join(std::ffi::OsStr::from_bytes(hidden));
        remove_existing(&hidden_path)?;
        mknod_whiteout(&hidden_path).with_context(|| format!("cannot create whiteout {}", hidden_path.display()))?;
        return Ok(());
    }

    let header = entry.header();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let uid = header.uid().unwrap_or(0) as u32;
    let gid = header.gid().unwrap_or(0) as u32;
    let mtime = header.mtime().unwrap_or(0);

    match kind {
        tar::EntryType::Directory => {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&target)?;
                    fs::create_dir(&target)?;
                }
                Err(_) => fs::create_dir(&target)?,
            }
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        }
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            remove_existing(&target)?;
            let mut file = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            io::copy(entry, &mut file).context("the layer's tar stream is damaged")?;
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
            // After chown: chown clears set-id bits.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
            file.set_modified(when)?;
        }
        tar::EntryType::Symlink => {
            // The link's target is not followed here (and is resolved inside the container's root
            // at run time), so any target is harmless.
            let link = entry.link_name()?.ok_or_else(|| unsafe_entry(&raw, "symlink without a target"))?;
            remove_existing(&target)?;
            std::os::unix::fs::symlink(&*link, &target)?;
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid))?;
        }
        tar::EntryType::Link => {
            let link = entry.link_name()?.ok_or_else(|| unsafe_entry(&raw, "hardlink without a target"))?;
            let link_rel = clean_path(&link).map_err(|_| unsafe_entry(&raw, "hardlink target outside the layer"))?;
            if link_rel.as_os_str().is_empty() {
                return Err(unsafe_entry(&raw, "hardlink to the layer root"));
            }
            // Every parent of the link's target must be a real directory inside the layer.
            let mut at = dest.to_path_buf();
            for c in link_rel.parent().into_iter().flat_map(|p| p.components()) {
                at.push(c);
                let m =
                    fs::symlink_metadata(&at).map_err(|_| unsafe_entry(&raw, "hardlink target not in the layer"))?;
                if !m.is_dir() {
                    return Err(unsafe_entry(&raw, "hardlink target passes through a symlink"));
                }
            }
            let source = dest.join(&link_rel);
            let m =
                fs::symlink_metadata(&source).map_err(|_| unsafe_entry(&raw, "hardlink target not in the layer"))?;
            if m.is_dir() {
                return Err(unsafe_entry(&raw, "hardlink to a directory"));
            }
            if source == target {
                return Ok(());
            }
            remove_existing(&target)?;
            fs::hard_link(&source, &target)?;
        }
        tar::EntryType::Fifo => {
            remove_existing(&target)?;
            nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(mode))?;
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid))?;
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            return Err(unsafe_entry(&raw, "device nodes are not allowed in layers"));
        }
        // PAX/GNU metadata records are consumed by the tar crate; anything else is ignored.
        other => {
            tracing::debug!(entry = %raw.display(), kind = ?other, "skipping a tar entry of an unsupported kind");
            return Ok(());
        }
    }

    // Extended attributes from PAX headers (file capabilities, for instance). Overlay's own
    // `trusted.*` attributes would change how the layers combine: never from a layer.
    if let Some(pax) = entry.pax_extensions()? {
        let mut xattrs = Vec::new();
        for ext in pax {
            let ext = ext?;
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
                && !name.starts_with("trusted.")
            {
                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
        for (name, value) in xattrs {
            if let Err(e) = lsetxattr(&target, &name, &value) {
                tracing::debug!(entry = %raw.display(), xattr = name, error = %e, "extended attribute not set");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<&mut Vec<u8>>)) -> (Vec<u8>, Digest) {
        let mut bytes = Vec::new();
        {
            let mut b = tar::Builder::new(&mut bytes);
            build(&mut b);
            b.finish().unwrap();
        }
        let d = Digest::sha256_of(&bytes);
        (bytes, d)
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    /// Writes a raw name into the header (the tar crate's setters refuse `..` and absolute paths).
    fn raw_name(h: &mut tar::Header, name: &str) {
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
    }

    #[test]
    fn unpacks_files_dirs_links_and_checks_the_digest() {
        let (bytes, diff_id) = layer(|b| {
            let mut h = header(tar::EntryType::Directory, 0);
            h.set_mode(0o755);
            b.append_data(&mut h, "etc/", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Regular, 5);
            b.append_data(&mut h, "etc/hello", &b"hello"[..]).unwrap();
            let mut h = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut h, "bin-sh", "/bin/busybox").unwrap();
            let mut h = header(tar::EntryType::Link, 0);
            b.append_link(&mut h, "etc/hello2", "etc/hello").unwrap();
        });
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("l");
        unpack(&bytes[..], &dest, &diff_id).unwrap();
        assert_eq!(fs::read_to_string(dest.join("etc/hello")).unwrap(), "hello");
        assert_eq!(fs::read_to_string(dest.join("etc/hello2")).unwrap(), "hello");
        assert_eq!(fs::read_link(dest.join("bin-sh")).unwrap(), Path::new("/bin/busybox"));

        let wrong = Digest::sha256_of(b"other");
        let err = unpack(&bytes[..], &tmp.path().join("m"), &wrong).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn gzip_layers_are_hashed_uncompressed() {
        let (bytes, diff_id) = layer(|b| {
            let mut h = header(tar::EntryType::Regular, 2);
            b.append_data(&mut h, "a", &b"hi"[..]).unwrap();
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &bytes).unwrap();
        let gz = gz.finish().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        unpack(&gz[..], &tmp.path().join("l"), &diff_id).unwrap();
        assert_eq!(fs::read_to_string(tmp.path().join("l/a")).unwrap(), "hi");
    }

    #[test]
    fn zstd_layers_are_hashed_uncompressed() {
        let (bytes, diff_id) = layer(|b| {
            let mut h = header(tar::EntryType::Regular, 4);
            b.append_data(&mut h, "z", &b"zstd"[..]).unwrap();
        });
        let zst = ruzstd::encoding::compress_to_vec(&bytes[..], ruzstd::encoding::CompressionLevel::Fastest);
        assert_eq!(&zst[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        let tmp = tempfile::tempdir().unwrap();
        unpack(&zst[..], &tmp.path().join("l"), &diff_id).unwrap();
        assert_eq!(fs::read_to_string(tmp.path().join("l/z")).unwrap(), "zstd");
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let (bytes, diff_id) = layer(|b| {
            let mut h = header(tar::EntryType::Regular, 0);
            b.append_data(&mut h, ".wh.gone", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Directory, 0);
            b.append_data(&mut h, "d/", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Regular, 0);
            b.append_data(&mut h, "d/.wh..wh..opq", io::empty()).unwrap();
        });
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("l");
        unpack(&bytes[..], &dest, &diff_id).unwrap();
        let m = fs::symlink_metadata(dest.join("gone")).unwrap();
        assert!(m.file_type().is_char_device() && m.rdev() == 0);
        assert!(!dest.join(".wh.gone").exists() && !dest.join("d/.wh..wh..opq").exists());
        let mut buf = [0u8; 4];
        let p = CString::new(dest.join("d").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid strings and buffer.
        let n = unsafe { libc::lgetxattr(p.as_ptr(), c"trusted.overlay.opaque".as_ptr(), buf.as_mut_ptr().cast(), 4) };
        assert_eq!(&buf[..n as usize], b"y");
    }

    #[test]
    fn refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        type Build = Box<dyn Fn(&mut tar::Builder<&mut Vec<u8>>)>;
        let cases: Vec<(&str, Build)> = vec![
            (
                "dotdot",
                Box::new(|b| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    raw_name(&mut h, "../escape");
                    b.append(&h, &b"x"[..]).unwrap();
                }),
            ),
            (
                "absolute",
                Box::new(|b| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    raw_name(&mut h, "/abs/path");
                    b.append(&h, &b"x"[..]).unwrap();
                }),
            ),
            (
                "through a symlink",
                Box::new(|b| {
                    let mut h = header(tar::EntryType::Symlink, 0);
                    b.append_link(&mut h, "etc", "/nonexistent-outside").unwrap();
                    let mut h = header(tar::EntryType::Regular, 1);
                    b.append_data(&mut h, "etc/file", &b"x"[..]).unwrap();
                }),
            ),
            (
                "hardlink out",
                Box::new(|b| {
                    let mut h = header(tar::EntryType::Link, 0);
                    raw_name(&mut h, "passwd");
                    h.set_link_name_literal("/etc/passwd").unwrap();
                    h.set_cksum();
                    b.append(&h, io::empty()).unwrap();
                }),
            ),
            (
                "device",
                Box::new(|b| {
                    let mut h = header(tar::EntryType::Char, 0);
                    h.set_device_major(1).unwrap();
                    h.set_device_minor(3).unwrap();
                    b.append_data(&mut h, "null", io::empty()).unwrap();
                }),
            ),
        ];
        for (i, (what, build)) in cases.iter().enumerate() {
            let (bytes, diff_id) = layer(|b| build(b));
            let dest = tmp.path().join(format!("case{i}/layer"));
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            let err = unpack(&bytes[..], &dest, &diff_id).expect_err(what);
            assert!(err.downcast_ref::<UnsafeEntry>().is_some(), "{what}: {err:#}");
            assert!(!dest.parent().unwrap().join("escape").exists(), "{what}");
        }
        assert!(!Path::new("/nonexistent-outside").exists());
    }
}
