//! Browsing: the repository list, a repository's tags, a tag or manifest (config, layers
//! beside the history that made them, platforms, referrers), and deletes with a confirmation
//! page (so they work without JavaScript). Reads go through [`crate::registry::Registry`]; each
//! page first asks the API's permission rule.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::web;
use askama::Template;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::format::{self, ago, platform, short_digest, size, time};
use super::{Layout, UiError, UiResult, Viewer, page, see_other};
use crate::auth::Action;
use crate::error::RegistryError;
use crate::oci::namespace_of;
use crate::oci::{Digest, Reference, manifest::media, validate_name};

/// Repositories per page of the list.
const REPOS_PER_PAGE: usize = 30;
/// Tags per page of a repository.
const TAGS_PER_PAGE: i64 = 50;
/// Rows read per query while filtering the list by permission, and at most how many queries
/// one page makes before it offers "more" (someone who may see little of a big registry).
const SCAN_BATCH: i64 = 200;
const SCAN_BATCHES: usize = 25;
/// Largest image config read for the manifest page.
const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

pub struct RepoRow {
    name: String,
    namespace: String,
    /// The name after `namespace/` (empty for a one-component name).
    rest: String,
    tags: i64,
    last_push: String,
    last_push_at: String,
    size: String,
}

#[derive(Template)]
#[template(path = "repositories.html")]
struct RepositoriesPage {
    l: Layout,
    host: String,
    q: String,
    ns: String,
    rows: Vec<RepoRow>,
    /// The `after` of the next page, if there is one.
    next: Option<String>,
    /// Whether this is a later page (a link back to the first).
    paged: bool,
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    ns: String,
    #[serde(default)]
    after: String,
    ok: Option<String>,
}

impl RepositoriesPage {
    fn next_link(&self) -> String {
        let next = self.next.as_deref().unwrap_or("");
        format!(
            "/?q={}&ns={}&after={}",
            format::query_escape(&self.q),
            format::query_escape(&self.ns),
            format::query_escape(next)
        )
    }
}

/// `GET /`: the repositories the viewer may pull, filtered and paged by name.
pub async fn repositories(v: Viewer, q: web::Query<ListQuery>) -> UiResult {
    let search = q.q.trim().to_lowercase();
    let ns = q.ns.trim().to_lowercase();
    let registry = &v.svc.registry;
    let mut names: Vec<String> = Vec::new();
    let mut cursor = q.after.clone();
    let mut visible: HashMap<String, bool> = HashMap::new();
    let mut next = None;
    'scan: for batch_no in 0..SCAN_BATCHES {
        let batch = registry.repository_names(&cursor, &search, &ns, SCAN_BATCH).await?;
        let full = batch.len() as i64 == SCAN_BATCH;
        for name in batch {
            cursor = name.clone();
            let namespace = namespace_of(&name).to_string();
            // Without a mirror the rule depends on the namespace only (UI sessions carry no
            // token limits), so one check per namespace; the mirror's rule is per name.
            let ok = match (v.svc.mirror.is_none(), visible.get(&namespace)) {
                (true, Some(ok)) => *ok,
                _ => {
                    let ok = v.svc.actions(&v.who, &name).await?.contains(Action::Pull);
                    visible.insert(namespace, ok);
                    ok
                }
            };
            if !ok {
                continue;
            }
            if names.len() == REPOS_PER_PAGE {
                next = names.last().cloned();
                break 'scan;
            }
            names.push(name);
        }
        if !full {
            break;
        }
        if batch_no + 1 == SCAN_BATCHES {
            next = Some(cursor.clone()); // scanned enough for one page: offer to go on
        }
    }
    let rows: Vec<RepoRow> = registry
        .repository_summaries(&names)
        .await?
        .into_iter()
        .map(|r| {
            let namespace = namespace_of(&r.name).to_string();
            RepoRow {
                rest: r.name.get(namespace.len() + 1..).unwrap_or("").to_string(),
                namespace,
                tags: r.tag_count,
                last_push: r.last_push.map(ago).unwrap_or_default(),
                last_push_at: r.last_push.map(time).unwrap_or_default(),
                size: size(r.size),
                name: r.name,
            }
        })
        .collect();
    let p = RepositoriesPage {
        l: v.layout("Repositories", q.ok.as_deref()),
        host: v.host.clone(),
        q: search,
        ns,
        rows,
        next,
        paged: !q.after.is_empty(),
    };
    page(&v, StatusCode::OK, &p)
}

/// What `/r/<tail>` names: a repository, one of its manifests, or a delete.
enum RepoPath {
    Repository(String),
    Manifest(String, String),
    Delete(String),
}

/// `name`, `name/-/manifest/<reference>` or `name/-/delete` (`-` is no legal name component).
fn parse_tail(tail: &str) -> Result<RepoPath, UiError> {
    let (name, rest) = match tail.split_once("/-/") {
        Some((n, r)) => (n, Some(r)),
        None => (tail.trim_end_matches('/'), None),
    };
    validate_name(name)?;
    Ok(match rest {
        None => RepoPath::Repository(name.to_string()),
        Some("delete") => RepoPath::Delete(name.to_string()),
        Some(r) if r.starts_with("manifest/") => {
            RepoPath::Manifest(name.to_string(), r["manifest/".len()..].to_string())
        }
        Some(_) => return Err(RegistryError::NotFound("no such page".into()).into()),
    })
}

#[derive(Deserialize)]
pub struct RepoQuery {
    #[serde(default)]
    after: String,
    reference: Option<String>,
    ok: Option<String>,
}

/// `GET /r/...`.
pub async fn repository_get(v: Viewer, tail: web::Path<String>, q: web::Query<RepoQuery>) -> UiResult {
    match parse_tail(&tail)? {
        RepoPath::Repository(name) => repository(v, &name, &q).await,
        RepoPath::Manifest(name, reference) => manifest_page(v, &name, &reference).await,
        RepoPath::Delete(name) => confirm_delete(v, &name, q.reference.as_deref().unwrap_or("")).await,
    }
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reference: String,
}

/// `POST /r/<name>/-/delete`.
pub async fn repository_post(v: Viewer, tail: web::Path<String>, form: web::Form<DeleteForm>) -> UiResult {
    let RepoPath::Delete(name) = parse_tail(&tail)? else {
        return Err(RegistryError::NotFound("no such form".into()).into());
    };
    v.check_csrf(&form.csrf)?;
    let reference = Reference::parse(&form.reference)?;
    if !v.svc.actions(&v.who, &name).await?.contains(Action::Delete) {
        return Err(RegistryError::Denied(format!("you may not delete in {name}")).into());
    }
    v.svc.registry.delete_manifest(&name, &reference).await?;
    let ev = crate::events::RepoEvent::deletion(&name, &reference);
    v.svc.events.deleted(v.who.actor(), &v.svc.addr, ev).await;
    tracing::info!(repository = %name, reference = %reference, account = v.name().unwrap_or("-"), "deleted in the UI");
    Ok(see_other(&format!("/r/{name}?ok=deleted")))
}

/// The viewer's actions on a repository, or the error that hides it.
async fn may_see(v: &Viewer, name: &str) -> Result<crate::auth::Actions, UiError> {
    let actions = v.svc.actions(&v.who, name).await?;
    if !actions.contains(Action::Pull) {
        return Err(v.hidden(&format!("the repository {name}")));
    }
    Ok(actions)
}

pub struct TagRow {
    name: String,
    digest: String,
    short: String,
    kind: &'static str,
    platforms: String,
    size: String,
    pushed: String,
    pushed_at: String,
}

#[derive(Template)]
#[template(path = "repository.html")]
struct RepositoryPage {
    l: Layout,
    name: String,
    namespace: String,
    host: String,
    tags: Vec<TagRow>,
    pull_tag: String,
    can_delete: bool,
    next: Option<String>,
    paged: bool,
}

fn manifest_kind(media_type: &str) -> &'static str {
    if media::is_index(media_type) { "index" } else { "image" }
}

async fn repository(v: Viewer, name: &str, q: &RepoQuery) -> UiResult {
    let actions = may_see(&v, name).await?;
    let mut tags = v
        .svc
        .registry
        .tag_summaries(name, &q.after, TAGS_PER_PAGE + 1)
        .await?
        .ok_or_else(|| v.hidden(&format!("the repository {name}")))?;
    let next = (tags.len() as i64 > TAGS_PER_PAGE).then(|| {
        tags.truncate(TAGS_PER_PAGE as usize);
        tags.last().map(|t| t.name.clone()).unwrap_or_default()
    });
    let rows: Vec<TagRow> = tags
        .into_iter()
        .map(|t| {
            let platforms = if media::is_index(&t.media_type) {
                serde_json::from_slice::<Value>(&t.content)
                    .ok()
                    .and_then(|m| m.get("manifests").and_then(|a| a.as_array()).cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|d| d.get("platform").map(platform))
                    .filter(|p| p != "unknown/unknown")
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                String::new()
            };
            TagRow {
                short: short_digest(&t.digest),
                kind: manifest_kind(&t.media_type),
                platforms,
                size: size(t.size),
                pushed: ago(t.pushed_at),
                pushed_at: time(t.pushed_at),
                name: t.name,
                digest: t.digest,
            }
        })
        .collect();
    let pull_tag = rows
        .iter()
        .find(|t| t.name == "latest")
        .or(rows.first())
        .map(|t| t.name.clone())
        .unwrap_or_else(|| "TAG".into());
    let p = RepositoryPage {
        l: v.layout(name, q.ok.as_deref()),
        name: name.to_string(),
        namespace: namespace_of(name).to_string(),
        host: v.host.clone(),
        tags: rows,
        pull_tag,
        can_delete: actions.contains(Action::Delete),
        next,
        paged: !q.after.is_empty(),
    };
    page(&v, StatusCode::OK, &p)
}

pub struct Entry {
    digest: String,
    short: String,
    media_type: String,
    platform: String,
    size: String,
}

pub struct LayerRow {
    /// Whether a history entry stands for this row (not a layer left over).
    has_history: bool,
    /// The history line (`created_by`).
    created_by: String,
    created: String,
    comment: String,
    /// The layer it made: empty for a line that made none (`ENV`, `CMD`, ...).
    digest: String,
    short: String,
    size: String,
}

pub struct Referrer {
    digest: String,
    short: String,
    artifact_type: String,
    size: String,
}

#[derive(Template)]
#[template(path = "manifest.html")]
struct ManifestPage {
    l: Layout,
    name: String,
    reference: String,
    host: String,
    digest: String,
    media_type: String,
    size: String,
    tags: Vec<String>,
    is_index: bool,
    children: Vec<Entry>,
    config_note: Option<String>,
    os_arch: String,
    created: String,
    entrypoint: String,
    cmd: String,
    env: Vec<String>,
    workdir: String,
    user: String,
    ports: Vec<String>,
    labels: Vec<(String, String)>,
    layers: Vec<LayerRow>,
    total_size: String,
    layer_count: usize,
    subject: Option<String>,
    annotations: Vec<(String, String)>,
    referrers: Vec<Referrer>,
    can_delete: bool,
}

fn string_of(v: Option<&Value>) -> String {
    v.and_then(|v| v.as_str()).unwrap_or("").to_string()
}

/// A JSON string list as docker prints it: `["sh","-c","…"]`; empty when absent.
fn list_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::Array(a)) if !a.is_empty() => Value::Array(a.clone()).to_string(),
        _ => String::new(),
    }
}

fn sorted_pairs(v: Option<&Value>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .and_then(|v| v.as_object())
        .map(|m| {
            m.iter().map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))).collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Pairs each history line with the layer it made, in order: lines marked `empty_layer` made
/// none; every other line made the next layer (what `docker history` shows). Layers left over
/// (a config without history) get rows of their own.
pub fn layers_with_history(history: &[Value], layers: &[Value]) -> Vec<LayerRow> {
    let mut out = Vec::new();
    let mut next_layer = layers.iter();
    let layer_row = |has_history: bool, created_by: String, created: String, comment: String, layer: Option<&Value>| {
        let digest = layer.map(|l| string_of(l.get("digest"))).unwrap_or_default();
        let size = layer.map(|l| format::size(l.get("size").and_then(|s| s.as_i64()).unwrap_or(0))).unwrap_or_default();
        LayerRow { has_history, created_by, created, comment, short: short_digest(&digest), digest, size }
    };
    for h in history {
        let empty = h.get("empty_layer").and_then(|e| e.as_bool()).unwrap_or(false);
        let layer = if empty { None } else { next_layer.next() };
        let created = h
            .get("created")
            .and_then(|c| c.as_str())
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map(|t| time(t.timestamp()))
            .unwrap_or_default();
        out.push(layer_row(true, string_of(h.get("created_by")), created, string_of(h.get("comment")), layer));
    }
    for layer in next_layer {
        out.push(layer_row(false, String::new(), String::new(), String::new(), Some(layer)));
    }
    out
}

/// Reads a blob through the registry, refusing anything over `limit` bytes.
async fn read_small_blob(v: &Viewer, name: &str, digest: &Digest, limit: usize) -> Result<Option<Vec<u8>>, UiError> {
    let mut read = v.svc.registry.read_blob(name, digest, None).await?;
    if read.size as usize > limit {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(read.size as usize);
    while let Some(chunk) = read.body.next().await {
        out.extend_from_slice(&chunk.map_err(|e| RegistryError::internal("reading an image config", e))?);
        if out.len() > limit {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

const IMAGE_CONFIGS: [&str; 2] =
    ["application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json"];

async fn manifest_page(v: Viewer, name: &str, reference: &str) -> UiResult {
    let actions = may_see(&v, name).await?;
    let parsed_ref = Reference::parse(reference)?;
    let record = v.svc.registry.get_manifest(name, &parsed_ref).await?;
    let m: Value = serde_json::from_slice(&record.content)
        .map_err(|e| RegistryError::ManifestInvalid(format!("the stored manifest is not JSON: {e}")))?;
    let registry = &v.svc.registry;
    let is_index = media::is_index(&record.media_type);
    let mut p = ManifestPage {
        l: v.layout(format!("{name}:{reference}"), None),
        name: name.to_string(),
        reference: reference.to_string(),
        host: v.host.clone(),
        digest: record.digest.clone(),
        media_type: record.media_type.clone(),
        size: size(record.content.len() as i64),
        tags: registry.tags_of(name, &record.digest).await?,
        is_index,
        children: Vec::new(),
        config_note: None,
        os_arch: String::new(),
        created: String::new(),
        entrypoint: String::new(),
        cmd: String::new(),
        env: Vec::new(),
        workdir: String::new(),
        user: String::new(),
        ports: Vec::new(),
        labels: Vec::new(),
        layers: Vec::new(),
        total_size: String::new(),
        layer_count: 0,
        subject: m.get("subject").map(|s| string_of(s.get("digest"))),
        annotations: sorted_pairs(m.get("annotations")),
        referrers: Vec::new(),
        can_delete: actions.contains(Action::Delete),
    };
    if is_index {
        for d in m.get("manifests").and_then(|a| a.as_array()).into_iter().flatten() {
            let digest = string_of(d.get("digest"));
            p.children.push(Entry {
                short: short_digest(&digest),
                digest,
                media_type: string_of(d.get("mediaType")),
                platform: d.get("platform").map(platform).unwrap_or_default(),
                size: size(d.get("size").and_then(|s| s.as_i64()).unwrap_or(0)),
            });
        }
    } else {
        let layers = m.get("layers").and_then(|l| l.as_array()).cloned().unwrap_or_default();
        let layer_bytes: i64 = layers.iter().filter_map(|l| l.get("size").and_then(|s| s.as_i64())).sum();
        p.total_size = size(layer_bytes);
        p.layer_count = layers.len();
        let config = m.get("config");
        let config_type = string_of(config.and_then(|c| c.get("mediaType")));
        let config_digest = string_of(config.and_then(|c| c.get("digest")));
        let mut history = Vec::new();
        if IMAGE_CONFIGS.contains(&config_type.as_str()) {
            let digest: Digest = config_digest
                .parse()
                .map_err(|_| RegistryError::ManifestInvalid("the manifest's config digest is invalid".into()))?;
            match read_small_blob(&v, name, &digest, MAX_CONFIG_BYTES).await {
                Ok(Some(bytes)) if crate::oci::json::check_nesting(&bytes).is_err() => {
                    p.config_note = Some(format!("The image config is not shown: {}.", crate::oci::json::TooDeep))
                }
                Ok(Some(bytes)) => match serde_json::from_slice::<Value>(&bytes) {
                    Ok(c) => {
                        let cc = c.get("config");
                        let get = |k: &str| cc.and_then(|x| x.get(k));
                        p.entrypoint = list_of(get("Entrypoint"));
                        p.cmd = list_of(get("Cmd"));
                        p.env = get("Env")
                            .and_then(|e| e.as_array())
                            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                            .unwrap_or_default();
                        p.workdir = string_of(get("WorkingDir"));
                        p.user = string_of(get("User"));
                        p.ports = sorted_pairs(get("ExposedPorts")).into_iter().map(|(k, _)| k).collect();
                        p.labels = sorted_pairs(get("Labels"));
                        p.os_arch = format!("{}/{}", string_of(c.get("os")), string_of(c.get("architecture")));
                        p.created = c
                            .get("created")
                            .and_then(|c| c.as_str())
                            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                            .map(|t| time(t.timestamp()))
                            .unwrap_or_default();
                        history = c.get("history").and_then(|h| h.as_array()).cloned().unwrap_or_default();
                    }
                    Err(_) => p.config_note = Some("The image config is not valid JSON.".into()),
                },
                Ok(None) => p.config_note = Some("The image config is too large to show.".into()),
                Err(UiError::Registry(RegistryError::BlobUnknown(_))) => {
                    p.config_note = Some("The image config is not in this repository (not pulled yet?).".into())
                }
                Err(e) => return Err(e),
            }
        } else if !config_type.is_empty() {
            p.config_note = Some(format!("An artifact: its config has the media type {config_type}."));
        }
        p.layers = layers_with_history(&history, &layers);
    }
    let digest: Digest =
        record.digest.parse().map_err(|_| RegistryError::Internal("a stored digest does not parse".into()))?;
    for r in registry.referrer_records(name, &digest).await? {
        p.referrers.push(Referrer {
            short: short_digest(&r.digest),
            digest: r.digest,
            artifact_type: r.artifact_type.unwrap_or(r.media_type),
            size: size(r.size),
        });
    }
    page(&v, StatusCode::OK, &p)
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
struct ConfirmDelete {
    l: Layout,
    name: String,
    reference: String,
    is_digest: bool,
    /// Tags that go with a manifest deleted by digest.
    tags: Vec<String>,
}

async fn confirm_delete(v: Viewer, name: &str, reference: &str) -> UiResult {
    let actions = may_see(&v, name).await?;
    if !actions.contains(Action::Delete) {
        return Err(RegistryError::Denied(format!("you may not delete in {name}")).into());
    }
    let parsed = Reference::parse(reference)?;
    let record = v.svc.registry.get_manifest(name, &parsed).await?;
    let is_digest = matches!(parsed, Reference::Digest(_));
    let tags = if is_digest { v.svc.registry.tags_of(name, &record.digest).await? } else { Vec::new() };
    let p = ConfirmDelete {
        l: v.layout(format!("Delete {name}:{reference}"), None),
        name: name.to_string(),
        reference: reference.to_string(),
        is_digest,
        tags,
    };
    page(&v, StatusCode::OK, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_lines_get_their_layers() {
        let history = vec![
            json!({"created_by": "ADD rootfs.tar /"}),
            json!({"created_by": "ENV A=1", "empty_layer": true}),
            json!({"created_by": "COPY x /x"}),
            json!({"created_by": "CMD [\"sh\"]", "empty_layer": true}),
        ];
        let layers = vec![
            json!({"digest": "sha256:aaaaaaaaaaaaaaaa", "size": 1000}),
            json!({"digest": "sha256:bbbbbbbbbbbbbbbb", "size": 20}),
        ];
        let rows = layers_with_history(&history, &layers);
        assert_eq!(rows.len(), 4);
        assert_eq!((rows[0].short.as_str(), rows[0].size.as_str()), ("aaaaaaaaaaaa", "1.00 kB"));
        assert_eq!(rows[1].digest, "");
        assert_eq!((rows[2].created_by.as_str(), rows[2].short.as_str()), ("COPY x /x", "bbbbbbbbbbbb"));
        assert_eq!(rows[3].digest, "");
        // No history: one row per layer.
        assert_eq!(layers_with_history(&[], &layers).len(), 2);
    }

    #[test]
    fn tails() {
        assert!(matches!(parse_tail("team/app").unwrap(), RepoPath::Repository(n) if n == "team/app"));
        assert!(
            matches!(parse_tail("team/app/-/manifest/v1").unwrap(), RepoPath::Manifest(n, r) if n == "team/app" && r == "v1")
        );
        assert!(matches!(parse_tail("a/-/delete").unwrap(), RepoPath::Delete(n) if n == "a"));
        assert!(parse_tail("Bad/Name").is_err());
        assert!(parse_tail("a/-/nothing").is_err());
    }
}
