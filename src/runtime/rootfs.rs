//! A container's root filesystem: an overlay of the cached image layers (read-only, below) and
//! the container's own writable layer (`upper/`, with overlay's `work/`), mounted at `rootfs/`
//! while the container runs. When the kernel has no overlayfs (or `BERTH_RUNTIME_NO_OVERLAY=1`),
//! the layers are copied once into a private `rootfs/` directory instead, whiteouts applied.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::mount::{MntFlags, MsFlags};

use super::state::{Container, Paths};

/// Whether overlay mounts are to be used on this host.
pub fn overlay_available() -> bool {
    if std::env::var("BERTH_RUNTIME_NO_OVERLAY").is_ok_and(|v| v == "1") {
        return false;
    }
    fs::read_to_string("/proc/filesystems").is_ok_and(|s| s.lines().any(|l| l.trim_end().ends_with("\toverlay")))
}

pub fn rootfs_dir(paths: &Paths, id: &str) -> PathBuf {
    paths.container(id).join("rootfs")
}

/// Whether `path` is a mount point (per `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.as_os_str().as_bytes();
    info.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m).as_slice() == want))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Prepares a new container's directories: the writable layer for overlay, or the private copy.
pub fn prepare(paths: &Paths, c: &Container) -> anyhow::Result<()> {
    let dir = paths.container(&c.id);
    fs::create_dir_all(rootfs_dir(paths, &c.id))?;
    if c.rootfs_mode == "overlay" {
        fs::create_dir_all(dir.join("upper"))?;
        fs::create_dir_all(dir.join("work"))?;
        fs::create_dir_all(dir.join("empty"))?;
    } else {
        let target = rootfs_dir(paths, &c.id);
        for layer in &c.layers {
            copy_layer(&paths.layer(layer), &target)
                .with_context(|| format!("cannot copy layer {layer} into the container's private root"))?;
        }
    }
    Ok(())
}

/// Mounts the container's overlay (nothing to do for a private copy, or when mounted).
pub fn mount(paths: &Paths, c: &Container) -> anyhow::Result<()> {
    if c.rootfs_mode != "overlay" {
        return Ok(());
    }
    let target = rootfs_dir(paths, &c.id);
    if is_mounted(&target) {
        return Ok(());
    }
    let dir = paths.container(&c.id);
    // Layer paths are given relative to the layer cache (the mount options must fit in a page).
    let lower = if c.layers.is_empty() {
        dir.join("empty").display().to_string()
    } else {
        c.layers.iter().rev().cloned().collect::<Vec<_>>().join(":")
    };
    let options =
        format!("lowerdir={lower},upperdir={},workdir={}", dir.join("upper").display(), dir.join("work").display());
    if options.len() > 4000 {
        bail!("the image has too many layers ({}) for one overlay mount", c.layers.len());
    }
    let cwd = std::env::current_dir()?;
    std::env::set_current_dir(paths.layers())?;
    let mut result = Err(nix::errno::Errno::EINVAL);
    if c.auto_remove {
        // A `--rm` container's writable layer is thrown away when it exits: `volatile` spares
        // the sync of the whole upper filesystem that unmounting an overlay otherwise does
        // (7-60 ms here, more on a busy disk). Overlay marks the work dir of a volatile mount
        // (`work/incompat/volatile`) and refuses it later; that mark is ours to clear, as the
        // layer's contents do not matter. Kernels before 5.10 refuse the option: mount without.
        let _ = fs::remove_dir_all(dir.join("work").join("work").join("incompat"));
        let volatile = format!("{options},volatile");
        result =
            nix::mount::mount(Some("overlay"), &target, Some("overlay"), MsFlags::empty(), Some(volatile.as_str()));
    }
    if result == Err(nix::errno::Errno::EINVAL) {
        result = nix::mount::mount(Some("overlay"), &target, Some("overlay"), MsFlags::empty(), Some(options.as_str()));
    }
    std::env::set_current_dir(cwd)?;
    result.with_context(|| {
        format!(
            "cannot mount the overlay root of container {} (the data dir's filesystem must support overlayfs \
             upper layers; set BERTH_RUNTIME_NO_OVERLAY=1 to use private copies instead)",
            c.short_id()
        )
    })?;
    Ok(())
}

/// Unmounts the container's overlay if it is mounted.
pub fn unmount(paths: &Paths, id: &str) -> anyhow::Result<()> {
    let target = rootfs_dir(paths, id);
    if is_mounted(&target) {
        nix::mount::umount2(&target, MntFlags::MNT_DETACH)
            .with_context(|| format!("cannot unmount {}", target.display()))?;
    }
    Ok(())
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = super::layers::cstring(path).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: valid strings and a buffer of the given length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (rc >= 0).then(|| buf[..rc as usize].to_vec())
}

/// Applies one unpacked layer onto a private root: whiteouts delete, opaque directories replace.
fn copy_layer(src: &Path, dst: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            super::layers::remove_existing(&to)?; // whiteout
        } else if ft.is_dir() {
            let opaque = lgetxattr(&from, "trusted.overlay.opaque").is_some_and(|v| v == b"y");
            match fs::symlink_metadata(&to) {
                Ok(m) if m.is_dir() && opaque => {
                    fs::remove_dir_all(&to)?;
                    fs::create_dir(&to)?;
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&to)?;
                    fs::create_dir(&to)?;
                }
                Err(_) => fs::create_dir(&to)?,
            }
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            copy_layer(&from, &to)?;
        } else if ft.is_symlink() {
            super::layers::remove_existing(&to)?;
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
        } else if ft.is_fifo() {
            super::layers::remove_existing(&to)?;
            nix::unistd::mkfifo(&to, nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777))?;
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
        } else if ft.is_file() {
            super::layers::remove_existing(&to)?;
            fs::copy(&from, &to)?;
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescapes() {
        assert_eq!(unescape(r"/a\040b"), b"/a b");
        assert_eq!(unescape("/plain"), b"/plain");
        assert!(is_mounted(Path::new("/")) || !Path::new("/proc/self/mountinfo").exists());
    }
}
