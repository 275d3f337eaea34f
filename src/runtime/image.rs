//! Images for the runtime: parsing `repo[:tag|@digest]` and `host[:port]/repo[:tag]`, resolving
//! them through the registry service (`Registry`: metadata and blob store directly, no HTTP) to a
//! manifest (an index is narrowed to linux/amd64), its config (Entrypoint, Cmd, Env, WorkingDir,
//! User, diff_ids) and layers, and making sure every layer is in the layer cache.

use std::path::Path;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Deserialize;

use super::layers;
use super::state::Paths;
use crate::oci::{Descriptor, Digest, Reference, manifest, media, validate_name};
use crate::registry::Registry;

/// An image reference as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]` of another registry, or `None` for Berth's own store.
    pub registry: Option<String>,
    pub repo: String,
    pub reference: String,
}

impl ImageRef {
    /// Parses `repo`, `repo:tag`, `repo@sha256:...`, `host:port/repo:tag`.
    pub fn parse(s: &str) -> anyhow::Result<ImageRef> {
        let (name, reference) = if let Some((n, d)) = s.split_once('@') {
            (n, d.to_string())
        } else {
            let last_slash = s.rfind('/').map_or(0, |i| i + 1);
            match s[last_slash..].rfind(':') {
                Some(i) => (&s[..last_slash + i], s[last_slash + i + 1..].to_string()),
                None => (s, "latest".to_string()),
            }
        };
        let (registry, repo) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first.to_string()), rest.to_string())
            }
            _ => (None, name.to_string()),
        };
        validate_name(&repo).map_err(|e| anyhow::anyhow!("invalid image name {s:?}: {e}"))?;
        Reference::parse(&reference).map_err(|e| anyhow::anyhow!("invalid image reference {s:?}: {e}"))?;
        Ok(ImageRef { registry, repo, reference })
    }

    /// The repository in Berth's store: the name itself, or `host-port/name` for an image
    /// pulled from another registry.
    pub fn local_repo(&self) -> String {
        match &self.registry {
            None => self.repo.clone(),
            Some(host) => format!("{}/{}", host.replace(':', "-").to_ascii_lowercase(), self.repo),
        }
    }

    pub fn reference(&self) -> Reference {
        Reference::parse(&self.reference).expect("checked in parse")
    }
}

/// The parts of an image config the runtime applies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// Reads an image config: the nesting limit, then its JSON (public for the fuzz targets in
/// `fuzz/`).
pub fn parse_config(bytes: &[u8]) -> anyhow::Result<ImageConfig> {
    crate::oci::json::check_nesting(bytes)?;
    serde_json::from_slice(bytes).context("not an image config")
}

/// What the runtime reads of an image config.
#[derive(Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Image {
    pub repo: String,
    pub manifest_digest: String,
    pub config: RunConfig,
    /// (layer blob, diff_id), lowest first.
    pub layers: Vec<(Descriptor, Digest)>,
}

/// Largest image config read.
const MAX_CONFIG_BYTES: usize = 8 * 1024 * 1024;

/// Reads a small blob (a config) whole, refusing anything larger than `max`.
async fn read_small_blob(registry: &Registry, repo: &str, digest: &Digest, max: usize) -> anyhow::Result<Vec<u8>> {
    let blob = registry.read_blob(repo, digest, None).await?;
    if blob.size as usize > max {
        bail!("blob {digest} is {} bytes; an image config is at most {max}", blob.size);
    }
    let mut out = Vec::with_capacity(blob.size as usize);
    let mut body = blob.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
        if out.len() > max {
            bail!("blob {digest} is larger than {max} bytes");
        }
    }
    let actual = digest.same_algorithm_of(&out);
    if &actual != digest {
        bail!("blob {digest} in the store hashes to {actual}: the store is damaged");
    }
    Ok(out)
}

pub(crate) fn is_linux_amd64(d: &Descriptor) -> bool {
    d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
}

/// Resolves a reference in Berth's store to a runnable image.
pub async fn resolve(registry: &Registry, repo: &str, reference: &Reference) -> anyhow::Result<Image> {
    let record = registry.get_manifest(repo, reference).await.map_err(|e| match e {
        crate::error::RegistryError::ManifestUnknown(_) | crate::error::RegistryError::NameUnknown(_) => {
            anyhow::anyhow!("image {repo}:{reference} is not in the store (push it, or name it host:port/{repo})")
        }
        other => other.into(),
    })?;
    let mut digest = record.digest.clone();
    let mut parsed = manifest::parse(Some(&record.media_type), &record.content)?;
    if media::is_index(&parsed.media_type) {
        let Some(child) = parsed.manifests.iter().find(|d| is_linux_amd64(d)) else {
            let platforms: Vec<String> = parsed
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)))
                .collect();
            bail!("image {repo}:{reference} has no linux/amd64 variant (it has: {})", platforms.join(", "));
        };
        let child_digest: Digest = child.digest.parse()?;
        let record = registry.get_manifest(repo, &Reference::Digest(child_digest)).await.with_context(|| {
            format!("the linux/amd64 manifest {} of {repo}:{reference} is not in the store", child.digest)
        })?;
        digest = record.digest.clone();
        parsed = manifest::parse(Some(&record.media_type), &record.content)?;
    }
    let config_desc = parsed.config.as_ref().ok_or_else(|| anyhow::anyhow!("{repo}@{digest} is not an image"))?;
    let config_digest: Digest = config_desc.digest.parse()?;
    let bytes = read_small_blob(registry, repo, &config_digest, MAX_CONFIG_BYTES).await?;
    let config = parse_config(&bytes).with_context(|| format!("the config of {repo}@{digest}"))?;
    if config.rootfs.diff_ids.len() != parsed.layers.len() {
        bail!(
            "{repo}@{digest}: the manifest lists {} layers but the config {} diff_ids",
            parsed.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    let mut layers = Vec::new();
    for (desc, diff_id) in parsed.layers.iter().zip(&config.rootfs.diff_ids) {
        let t = desc.media_type.as_str();
        let known = t.is_empty()
            || t.starts_with("application/vnd.oci.image.layer.v1.tar")
            || t.starts_with("application/vnd.docker.image.rootfs.diff.tar");
        if !known || t.contains("foreign") {
            bail!("{repo}@{digest}: layer {} has media type {t:?}, which the runtime cannot unpack", desc.digest);
        }
        let diff_id: Digest =
            diff_id.parse().map_err(|_| anyhow::anyhow!("{repo}@{digest}: invalid diff_id {diff_id:?}"))?;
        layers.push((desc.clone(), diff_id));
    }
    Ok(Image { repo: repo.to_string(), manifest_digest: digest, config: config.config.unwrap_or_default(), layers })
}

/// A blocking reader over chunks an async task sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
    progress: indicatif::ProgressBar,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.progress.inc(chunk.len() as u64);
                    self.current = chunk;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, message: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Makes sure every layer of `image` is unpacked in the layer cache; returns their directories'
/// names (diff_id hex), lowest first.
pub async fn ensure_layers(registry: &Registry, paths: &Paths, image: &Image) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (desc, diff_id) in &image.layers {
        let hex = diff_id.hex().to_string();
        let dir = paths.layer(&hex);
        if !dir.is_dir() {
            let started = std::time::Instant::now();
            let blob: Digest = desc.digest.parse()?;
            let read = registry.read_blob(&image.repo, &blob, None).await?;
            let bar = progress_bar(read.size, format!("unpacking {}", &blob.hex()[..12]));
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            let tmp = paths.layers().join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
            let reader = ChannelReader { rx, current: bytes::Bytes::new(), progress: bar.clone() };
            let (tmp2, diff2) = (tmp.clone(), diff_id.clone());
            let unpacking = tokio::task::spawn_blocking(move || layers::unpack(reader, &tmp2, &diff2));
            let mut body = read.body;
            while let Some(chunk) = body.next().await {
                if tx.send(chunk).await.is_err() {
                    break; // the unpacker stopped (an error it reports below)
                }
            }
            drop(tx);
            let result = unpacking.await?;
            bar.finish_and_clear();
            match result {
                Ok(bytes) => {
                    if let Err(e) = std::fs::rename(&tmp, &dir) {
                        // Another berth unpacked the same layer at the same time: keep theirs.
                        remove_tree(&tmp);
                        if !dir.is_dir() {
                            return Err(e).context("cannot move the unpacked layer into the cache");
                        }
                    }
                    tracing::info!(layer = %diff_id, bytes, ms = started.elapsed().as_millis() as u64, "layer unpacked");
                }
                Err(e) => {
                    remove_tree(&tmp);
                    return Err(e.context(format!("image {} rejected: layer {}", image.repo, desc.digest)));
                }
            }
        }
        out.push(hex);
    }
    Ok(out)
}

/// Removes a directory tree, logging (not failing) when it cannot.
pub fn remove_tree(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!((r.registry.as_deref(), r.repo.as_str(), r.reference.as_str()), (None, "busybox", "latest"));
        let r = ImageRef::parse("team/app:v1").unwrap();
        assert_eq!((r.repo.as_str(), r.reference.as_str()), ("team/app", "v1"));
        let r = ImageRef::parse("127.0.0.1:5000/team/app:v2").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!((r.repo.as_str(), r.reference.as_str()), ("team/app", "v2"));
        assert_eq!(r.local_repo(), "127.0.0.1-5000/team/app");
        let r = ImageRef::parse("localhost/app").unwrap();
        assert_eq!((r.registry.as_deref(), r.reference.as_str()), (Some("localhost"), "latest"));
        let d = format!("app@sha256:{}", "a".repeat(64));
        assert_eq!(ImageRef::parse(&d).unwrap().reference, format!("sha256:{}", "a".repeat(64)));
        assert!(ImageRef::parse("UPPER").is_err());
        assert!(ImageRef::parse("app@sha256:short").is_err());
    }
}
