//! Layer blobs as the runtime unpacks them (`runtime::layers::unpack`: gzip, zstd or plain tar;
//! paths, symlinks, hardlinks, whiteouts, PAX attributes), then read through
//! (`runtime::layers::read_image_file`, `runtime::spec::resolve_user`: `/etc/passwd` and
//! `/etc/group` with the image's links kept inside it).
//!
//! Each input is unpacked into `root/` of a fresh temporary directory (on /dev/shm) whose `outside/` holds a
//! sentinel file: afterwards nothing but `root/` and `outside/` may be there, the sentinel must
//! be untouched (same bytes, no second hard link), and the layer may hold no device node other
//! than overlayfs whiteouts (0/0 character devices).
#![no_main]
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth::oci::Digest;
use berth::runtime::layers::{read_image_file, unpack};
use berth::runtime::spec::resolve_user;
use libfuzzer_sys::fuzz_target;

const SENTINEL: &[u8] = b"outside the layer";

/// Where the temporary directories go: a tmpfs when there is one (ten times the inputs per
/// second of a disk), else the system's temporary directory.
static TMP: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
});

/// Walks `dir` without following links; panics on a device node that is no whiteout.
fn check_tree(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let m = fs::symlink_metadata(&path).expect("an entry just listed");
        let t = m.file_type();
        if t.is_block_device() || (t.is_char_device() && m.rdev() != 0) {
            panic!("device node {} in a layer", path.display());
        }
        if t.is_dir() {
            check_tree(&path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir_in(&*TMP).expect("a temporary directory");
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let sentinel = outside.join("sentinel");
    fs::write(&sentinel, SENTINEL).unwrap();
    let root = tmp.path().join("root");

    // Any diff_id: the entries are unpacked as they are read, before the digest is compared.
    let _ = unpack(data, &root, &Digest::sha256_of(b""));

    let mut names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["outside", "root"], "something was written next to the layer");
    let outside_names: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(outside_names, ["sentinel"], "something was written outside the layer");
    let m = fs::symlink_metadata(&sentinel).unwrap();
    assert!(m.is_file() && m.nlink() == 1, "the sentinel was linked into the layer");
    assert_eq!(fs::read(&sentinel).unwrap(), SENTINEL, "the sentinel was changed");
    check_tree(&root);

    if root.is_dir() {
        let layers: Vec<PathBuf> = vec![root.clone()];
        let _ = read_image_file(&layers, "/etc/passwd");
        let _ = read_image_file(&layers, "bin/sh");
        for user in ["", "root", "1000", "app:app", "nobody:1", "0:wheel"] {
            let _ = resolve_user(user, &layers);
        }
    }
    // Directories a layer made unwritable must not keep the temporary directory from going.
    make_removable(&root);
});

fn make_removable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = fs::symlink_metadata(dir) else { return };
    if !m.is_dir() {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            make_removable(&e.path());
        }
    }
}
