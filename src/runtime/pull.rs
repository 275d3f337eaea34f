//! Pulling `host[:port]/repo:tag` from another registry into Berth's store, so the runtime can
//! run it: the manifest (an index narrowed to linux/amd64, the index itself kept under the tag as
//! the mirror keeps it), then config and layers streamed through the registry service's normal
//! upload path (hashed, committed only when the digest matches), with progress bars. HTTP and
//! Bearer challenges go through the mirror's upstream client; credentials come from the flags or
//! docker's `config.json` (`$DOCKER_CONFIG` or `~/.docker`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use reqwest::Method;

use super::image::{ImageRef, progress_bar};
use crate::config::UpstreamConfig;
use crate::error::RegistryError;
use crate::mirror::upstream::{MANIFEST_ACCEPT, Upstream};
use crate::oci::{Digest, Reference, manifest, media};
use crate::registry::Registry;

/// Credentials for a registry: user, password, and an OAuth2 refresh token.
type Credentials = (String, String, Option<String>);

/// What docker's config.json holds for `host`: `auth` (`user:password`) and/or `identitytoken`.
fn docker_credentials(host: &str) -> Option<Credentials> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))?;
    let bytes = std::fs::read(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let entry = v["auths"].as_object()?.iter().find_map(|(k, e)| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
        (k == host).then_some(e)
    })?;
    let identity = entry["identitytoken"].as_str().map(String::from);
    let pair = entry["auth"]
        .as_str()
        .and_then(|a| data_encoding::BASE64.decode(a.as_bytes()).ok())
        .and_then(|d| String::from_utf8(d).ok())
        .unwrap_or_default();
    let (u, p) = pair.split_once(':').unwrap_or(("", ""));
    if u.is_empty() && identity.is_none() {
        return None;
    }
    Some((u.to_string(), p.to_string(), identity))
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, _)| h);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

async fn fetch_manifest(up: &Upstream, repo: &str, reference: &str) -> anyhow::Result<(Vec<u8>, String)> {
    let resp = up.send(Method::GET, repo, &format!("manifests/{reference}"), Some(MANIFEST_ACCEPT)).await?;
    if !resp.status().is_success() {
        return Err(up.status_error(resp.status(), &format!("manifest {repo}:{reference}")).into());
    }
    let media_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|t| manifest::bare_media_type(t).to_string())
        .unwrap_or_default();
    let announced = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(String::from);
    let bytes = resp.bytes().await.context("reading the manifest")?;
    if bytes.len() > 4 * 1024 * 1024 {
        bail!("the manifest of {repo}:{reference} is larger than 4 MiB");
    }
    if let Some(d) = announced.and_then(|d| d.parse::<Digest>().ok()) {
        let actual = d.same_algorithm_of(&bytes);
        if actual != d {
            bail!("the registry sent a manifest hashing to {actual} for {d}");
        }
    }
    Ok((bytes.to_vec(), media_type))
}

/// TLS files for `host`, by docker's convention in `/etc/docker/certs.d/HOST/`: the CA file
/// given, else `ca.crt` there if it exists; a client certificate `client.cert` + `client.key`
/// there if both exist.
fn tls_files(host: &str, given: Option<&Path>) -> (Option<PathBuf>, Option<(PathBuf, PathBuf)>) {
    let dir = Path::new("/etc/docker/certs.d").join(host);
    let ca = given.map(Path::to_path_buf).or_else(|| Some(dir.join("ca.crt")).filter(|p| p.is_file()));
    let (cert, key) = (dir.join("client.cert"), dir.join("client.key"));
    let client = (cert.is_file() && key.is_file()).then_some((cert, key));
    (ca, client)
}

/// Pulls an image into the store under `ImageRef::local_repo`, with `(user, password)` from
/// the flags (else docker's config.json) and a CA file to trust for HTTPS.
pub async fn pull(
    registry: &Registry,
    image: &ImageRef,
    (user, password): (Option<String>, Option<String>),
    ca_file: Option<&Path>,
) -> anyhow::Result<()> {
    let host = image.registry.clone().context("not a remote image")?;
    let tls = tls_files(&host, ca_file);
    let (credentials, source) = match (user, password) {
        (Some(u), p) => ((u, p.unwrap_or_default(), None), "--registry-user"),
        _ => match docker_credentials(&host) {
            Some(c) => (c, "docker's config.json"),
            None => (Default::default(), "none (anonymous)"),
        },
    };
    pull_with(registry, image, &host, credentials, tls)
        .await
        .with_context(|| format!("cannot pull {host}/{}:{} (credentials: {source})", image.repo, image.reference))
}

async fn pull_with(
    registry: &Registry,
    image: &ImageRef,
    host: &str,
    (username, password, refresh_token): Credentials,
    (ca_file, client): (Option<PathBuf>, Option<(PathBuf, PathBuf)>),
) -> anyhow::Result<()> {
    let host = host.to_string();
    // Loopback registries are plain HTTP, as docker assumes, unless TLS files say otherwise.
    let scheme = if is_loopback(&host) && ca_file.is_none() && client.is_none() { "http" } else { "https" };
    let text = |p: Option<&PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let up = Upstream::new(UpstreamConfig {
        name: host.clone(),
        url: format!("{scheme}://{host}"),
        username,
        password,
        ca_file: text(ca_file.as_ref()),
        client_cert_file: text(client.as_ref().map(|c| &c.0)),
        client_key_file: text(client.as_ref().map(|c| &c.1)),
        ..Default::default()
    })?
    .with_refresh_token(refresh_token);
    let local = image.local_repo();
    eprintln!("Pulling {}:{} from {host}", image.repo, image.reference);
    let (top, top_type) = fetch_manifest(&up, &image.repo, &image.reference).await?;
    let top_parsed = manifest::parse(Some(&top_type), &top)?;
    let (bytes, media_type, child) = if media::is_index(&top_parsed.media_type) {
        let d = top_parsed
            .manifests
            .iter()
            .find(|d| super::image::is_linux_amd64(d))
            .with_context(|| format!("{host}/{}:{} has no linux/amd64 image", image.repo, image.reference))?;
        let (b, t) = fetch_manifest(&up, &image.repo, &d.digest).await?;
        (b, t, Some(d.digest.parse::<Digest>()?))
    } else {
        (top.clone(), top_type.clone(), None)
    };
    let parsed = manifest::parse(Some(&media_type), &bytes)?;
    for desc in parsed.config.iter().chain(parsed.layers.iter()) {
        let digest: Digest = desc.digest.parse()?;
        if registry.stat_blob(&local, &digest).await.is_ok() {
            continue;
        }
        let resp = up.send(Method::GET, &image.repo, &format!("blobs/{digest}"), None).await?;
        if !resp.status().is_success() {
            return Err(up.status_error(resp.status(), &format!("blob {digest}")).into());
        }
        let bar = progress_bar(
            resp.content_length().unwrap_or(desc.size.max(0) as u64),
            format!("pulling {}", &digest.hex()[..12]),
        );
        let upload = registry.start_upload(&local).await?;
        let bar2 = bar.clone();
        let body = resp.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(|e| RegistryError::Unavailable(format!("download failed: {e}")))?;
            bar2.inc(chunk.len() as u64);
            Ok::<_, RegistryError>(chunk)
        });
        let stored = registry.finish_upload(&local, &upload.id, &digest, Some(Box::pin(body))).await;
        bar.finish_and_clear();
        stored.with_context(|| format!("storing blob {digest}"))?;
    }
    match child {
        Some(child) => {
            registry.put_manifest(&local, &Reference::Digest(child), Some(&media_type), &bytes).await?;
            registry.store_manifest(&local, &image.reference(), Some(&top_type), &top, false).await?;
        }
        None => {
            registry.put_manifest(&local, &image.reference(), Some(&media_type), &bytes).await?;
        }
    }
    eprintln!("Pulled {host}/{}:{} into {local}", image.repo, image.reference);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_use_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("registry.example.com"));
    }
}
