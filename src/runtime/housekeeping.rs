//! The runtime's disk: `berth rmi`, `berth image prune`, `berth system prune`, and the sizes
//! `ps -s` shows.
//!
//! What an image is here: the runtime keeps no images of its own. It runs the images of Berth's
//! registry store (what `berth images` lists: the store's tags) and unpacks their layers once
//! into the layer cache `runtime/layers/<diff_id>`, shared by every image and container that
//! has the layer. So the runtime's copy of an image is its unpacked layers, and that is what
//! `rmi` and the prunes remove. They never change the registry store: it is shared with the
//! server, where other people and machines push and pull, and `docker rmi` never deletes
//! anything from a registry either — untagging or deleting there is for the API, the web UI,
//! retention and `berth gc`. An image whose layers were removed stays listed by `berth images`
//! (with fewer layers unpacked) and `berth run` unpacks it again from the store.
//!
//! Safety: a layer that a container (running or stopped) has is never removed — its overlay
//! needs it; the containers are read under `runtime/lock`, which `berth run` also holds while it
//! creates a container (and it checks its layers are still there). A layer directory is renamed
//! away first (`.tmp-rm-…`) and then deleted, so a half-deleted layer is never taken for a
//! cached one.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};

use super::image::{self, ImageRef};
use super::state::{self, Container, Paths, Status};
use crate::oci::Reference;
use crate::registry::Registry;

/// A tagged image of the store the runtime can run.
pub struct StoreImage {
    /// `repo:tag`.
    pub name: String,
    /// The manifest digest it runs (the linux/amd64 one of an index), as containers record it.
    pub digest: String,
    /// diff_id hex of its layers, as the layer cache names them.
    pub layers: Vec<String>,
}

/// Every tagged image of the store that the runtime could run (tags of other artifacts are
/// skipped); a store that cannot be read is an error — never a guess that nothing uses a layer.
pub async fn store_images(registry: &Registry) -> anyhow::Result<Vec<StoreImage>> {
    let mut out = Vec::new();
    for (repo, tag) in store_tags(registry).await? {
        let reference = Reference::Tag(tag.clone());
        match image::resolve(registry, &repo, &reference).await {
            Ok(img) => out.push(StoreImage {
                name: format!("{repo}:{tag}"),
                digest: img.manifest_digest,
                layers: img.layers.iter().map(|(_, d)| d.hex().to_string()).collect(),
            }),
            // Readable, but no image the runtime runs (a Helm chart, a signature…).
            Err(_) if registry.get_manifest(&repo, &reference).await.is_ok() => {}
            Err(e) => return Err(e.context(format!("cannot read {repo}:{tag} from the store"))),
        }
    }
    Ok(out)
}

/// Every (repository, tag) of the store, walked page by page through the catalog and each
/// repository's tag list (`berth images` and the housekeeping commands).
pub async fn store_tags(registry: &Registry) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let repos = registry.catalog(last.as_deref(), 1000).await?;
        let Some(end) = repos.last().cloned() else { break };
        for repo in repos {
            let mut last_tag: Option<String> = None;
            loop {
                let tags = registry.tags(&repo, last_tag.as_deref(), 1000).await?;
                let Some(end_tag) = tags.last().cloned() else { break };
                out.extend(tags.into_iter().map(|t| (repo.clone(), t)));
                last_tag = Some(end_tag);
            }
        }
        last = Some(end);
    }
    Ok(out)
}

/// The cache's layers (diff_id hex), in name order.
fn cached_layers(paths: &Paths) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = fs::read_dir(paths.layers())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}

/// The layers the given containers have.
fn layers_of(containers: &[Container]) -> BTreeSet<String> {
    containers.iter().flat_map(|c| c.layers.iter().cloned()).collect()
}

/// Bytes on the disk under `path` (allocated blocks, each inode once, this filesystem only —
/// so a running container's mounted root is not counted again), as `du -sx` counts.
pub fn disk_usage(path: &Path) -> u64 {
    fn walk(path: &Path, dev: u64, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(m) = fs::symlink_metadata(path) else { return 0 };
        if m.dev() != dev || !seen.insert((m.dev(), m.ino())) {
            return 0;
        }
        let mut total = m.blocks() * 512;
        if m.is_dir()
            && let Ok(entries) = fs::read_dir(path)
        {
            for e in entries.flatten() {
                total += walk(&e.path(), dev, seen);
            }
        }
        total
    }
    match fs::symlink_metadata(path) {
        Ok(m) => walk(path, m.dev(), &mut HashSet::new()),
        Err(_) => 0,
    }
}

/// The bytes of the files under `path` (not folders; each inode once, this filesystem only),
/// as docker sizes a container's writable layer.
pub fn content_size(path: &Path) -> u64 {
    fn walk(path: &Path, dev: u64, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(m) = fs::symlink_metadata(path) else { return 0 };
        if m.dev() != dev || !seen.insert((m.dev(), m.ino())) {
            return 0;
        }
        if !m.is_dir() {
            return m.len();
        }
        let Ok(entries) = fs::read_dir(path) else { return 0 };
        entries.flatten().map(|e| walk(&e.path(), dev, seen)).sum()
    }
    match fs::symlink_metadata(path) {
        Ok(m) => walk(path, m.dev(), &mut HashSet::new()),
        Err(_) => 0,
    }
}

/// A size as docker prints it: decimal units, four significant digits (`1.153MB`, `0B`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    // %.4g: four significant digits, trailing zeros dropped.
    let decimals = match size {
        s if s >= 1000.0 => 0,
        s if s >= 100.0 => 1,
        s if s >= 10.0 => 2,
        _ => 3,
    };
    let mut text = format!("{size:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

/// Removes one cached layer: renamed out of the cache first, then deleted. Returns the disk it
/// freed.
fn remove_layer(paths: &Paths, hex: &str) -> anyhow::Result<u64> {
    let dir = paths.layer(hex);
    let size = disk_usage(&dir);
    let trash = paths.layers().join(format!(".tmp-rm-{}", uuid::Uuid::new_v4().simple()));
    fs::rename(&dir, &trash).with_context(|| format!("cannot remove the layer {}", dir.display()))?;
    fs::remove_dir_all(&trash).with_context(|| format!("cannot remove {}", trash.display()))?;
    Ok(size)
}

/// Leftovers in the layer cache: layers whose removal was interrupted, and unpacks that died
/// (older than an hour: a younger one may be a `berth run` unpacking right now).
fn remove_leftovers(paths: &Paths) -> u64 {
    let mut freed = 0;
    let Ok(entries) = fs::read_dir(paths.layers()) else { return 0 };
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = name.starts_with(".tmp-rm-")
            || (name.starts_with(".tmp-") && e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < hour_ago));
        if stale {
            let size = disk_usage(&e.path());
            if fs::remove_dir_all(e.path()).is_ok() {
                freed += size;
            }
        }
    }
    freed
}

/// Removes every cached layer not in `keep`; returns the removed layers and the disk freed.
/// The caller holds the runtime lock, and `keep` has every container's layers.
fn prune_layers(paths: &Paths, keep: &BTreeSet<String>) -> anyhow::Result<(Vec<String>, u64)> {
    let mut removed = Vec::new();
    let mut freed = remove_leftovers(paths);
    for hex in cached_layers(paths)? {
        if !keep.contains(&hex) {
            freed += remove_layer(paths, &hex)?;
            removed.push(hex);
        }
    }
    Ok((removed, freed))
}

/// docker's question before a prune, unless `-f`; the answer is read from stdin, also when it
/// is no terminal, as docker does: no `y`, no prune.
fn confirm(force: bool, warning: &str) -> anyhow::Result<bool> {
    if force {
        return Ok(true);
    }
    eprint!("WARNING! {warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer)? == 0 {
        eprintln!();
    }
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// The layers the store's tagged images have (for a prune without `-a`).
fn store_layers(images: &[StoreImage]) -> BTreeSet<String> {
    images.iter().flat_map(|i| i.layers.iter().cloned()).collect()
}

/// `berth image prune [-a] [-f]`: cached layers no tagged image of the store and no container
/// has (`-a`: no container has).
pub fn image_prune(paths: &Paths, store: Option<&[StoreImage]>, force: bool) -> anyhow::Result<i32> {
    let warning = if store.is_none() {
        "This will remove the unpacked layers of all images without at least one container associated to them."
    } else {
        "This will remove all dangling unpacked layers (no image in the store and no container uses them)."
    };
    if !confirm(force, warning)? {
        return Ok(1);
    }
    let _lock = paths.lock()?;
    let mut keep = layers_of(&state::list(paths)?);
    keep.extend(store.map(store_layers).unwrap_or_default());
    let (removed, freed) = prune_layers(paths, &keep)?;
    if !removed.is_empty() {
        println!("Deleted Images:");
        for hex in &removed {
            println!("deleted: sha256:{hex}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(0)
}

/// Whether `system prune` takes the container: stopped, its monitor gone, and not a container
/// `berth run` created a moment ago and is about to start (its monitor is not up yet).
fn prunable(c: &Container) -> bool {
    if state::running(c) || state::monitor_alive(c) {
        return false;
    }
    let young = chrono::DateTime::parse_from_rfc3339(&c.created)
        .is_ok_and(|t| chrono::Utc::now() - t.with_timezone(&chrono::Utc) < chrono::Duration::seconds(60));
    !(c.status == Status::Created && young)
}

/// `berth system prune [-a] [--volumes] [-f]`: stopped containers (their writable layers and
/// logs), then cached layers no remaining container and (without `-a`) no tagged image of the
/// store has; with `--volumes` the volumes no remaining container uses.
pub fn system_prune(paths: &Paths, store: Option<&[StoreImage]>, volumes: bool, force: bool) -> anyhow::Result<i32> {
    let mut warning = String::from("This will remove:\n  - all stopped containers\n");
    if volumes {
        warning.push_str("  - all volumes not used by at least one container\n");
    }
    warning.push_str(if store.is_none() {
        "  - the unpacked layers of all images without at least one container associated to them"
    } else {
        "  - all dangling unpacked layers"
    });
    if !confirm(force, &warning)? {
        return Ok(1);
    }
    let _lock = paths.lock()?;
    let mut freed = 0;
    let mut remaining = Vec::new();
    let mut deleted_containers = Vec::new();
    for c in state::list(paths)? {
        if !prunable(&c) {
            remaining.push(c);
            continue;
        }
        let size = disk_usage(&paths.container(&c.id));
        super::remove_container_files(paths, &c.id)?;
        freed += size;
        deleted_containers.push(c.id);
    }
    let mut deleted_volumes = Vec::new();
    if volumes {
        let used: BTreeSet<&str> = remaining
            .iter()
            .flat_map(|c| c.volumes.iter().filter(|v| !v.is_bind()).map(|v| v.source.as_str()))
            .collect();
        let mut names: Vec<String> = fs::read_dir(paths.volumes())?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && !used.contains(n.as_str()))
            .collect();
        names.sort();
        for name in names {
            let dir = paths.volume(&name);
            let size = disk_usage(&dir);
            fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            freed += size;
            deleted_volumes.push(name);
        }
    }
    let mut keep = layers_of(&remaining);
    keep.extend(store.map(store_layers).unwrap_or_default());
    let (deleted_layers, layers_freed) = prune_layers(paths, &keep)?;
    freed += layers_freed;
    for (title, list, prefix) in [
        ("Deleted Containers:", &deleted_containers, ""),
        ("Deleted Volumes:", &deleted_volumes, ""),
        ("Deleted Images:", &deleted_layers, "deleted: sha256:"),
    ] {
        if !list.is_empty() {
            println!("{title}");
            for item in list {
                println!("{prefix}{item}");
            }
            println!();
        }
    }
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(0)
}

/// `berth rmi [-f] IMAGE…`: removes the runtime's unpacked copy of each image (see the module's
/// comment: the registry store keeps the image). Refused while a container — running or
/// stopped — was created from it, unless `-f`; even then the layers a container has stay, as
/// do the layers another image with all its layers unpacked shares. Returns 1 if any image
/// failed, as docker does.
pub async fn rmi(paths: &Paths, registry: &Registry, names: &[String], force: bool) -> anyhow::Result<i32> {
    let store = store_images(registry).await?;
    let mut status = 0;
    for name in names {
        if let Err(e) = rmi_one(paths, registry, &store, name, force).await {
            eprintln!("berth: {e:#}");
            status = 1;
        }
    }
    Ok(status)
}

async fn rmi_one(
    paths: &Paths,
    registry: &Registry,
    store: &[StoreImage],
    name: &str,
    force: bool,
) -> anyhow::Result<()> {
    let r = ImageRef::parse(name)?;
    let img = image::resolve(registry, &r.local_repo(), &r.reference())
        .await
        .map_err(|e| anyhow::anyhow!("no such image: {name} ({e:#})"))?;
    let layers: Vec<String> = img.layers.iter().map(|(_, d)| d.hex().to_string()).collect();
    let _lock = paths.lock()?;
    let containers = state::list(paths)?;
    if let Some(c) = containers.iter().find(|c| c.image_digest == img.manifest_digest)
        && !force
    {
        let what = if state::running(c) { "running" } else { "stopped" };
        bail!(
            "image {name} is in use by {what} container {} ({}): remove the container first, or use rmi -f",
            c.short_id(),
            c.name
        );
    }
    // Kept: what containers have, and what other images that are unpacked whole share.
    let mut keep = layers_of(&containers);
    for other in store.iter().filter(|o| o.digest != img.manifest_digest) {
        if other.layers.iter().all(|l| paths.layer(l).is_dir()) {
            keep.extend(other.layers.iter().cloned());
        }
    }
    let mut removed = 0;
    for hex in &layers {
        if paths.layer(hex).is_dir() && !keep.contains(hex) {
            remove_layer(paths, hex)?;
            println!("Deleted: sha256:{hex}");
            removed += 1;
        }
    }
    let kept = layers.iter().filter(|l| paths.layer(l).is_dir()).count();
    let mut note = format!("{name}: {removed} unpacked layer(s) removed");
    if kept > 0 {
        note.push_str(&format!(", {kept} kept (a container or another unpacked image has them)"));
    }
    eprintln!("{note}; the image stays in the registry store (`berth run` unpacks it again)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1_153_433), "1.153MB");
        assert_eq!(human_size(12_345_678), "12.35MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
        assert_eq!(human_size(5_000_000_000), "5GB");
    }

    #[test]
    fn disk_usage_counts_hardlinks_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        let one = disk_usage(dir.path());
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(disk_usage(dir.path()), one);
        assert_eq!(content_size(dir.path()), 100_000);
        assert!(one >= 100_000);
    }
}
