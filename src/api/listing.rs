//! Listings: tags, the catalog and referrers, paginated with `n` and `last`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use super::{AppState, query_map};
use crate::auth::Identity;
use crate::error::{RegistryError, Result};
use crate::oci::Digest;
use crate::oci::manifest::media;
use crate::registry::Registry;

/// Largest page served.
const MAX_PAGE: i64 = 10_000;
/// Catalog page size when the client names none (the reference registry's default).
const DEFAULT_CATALOG_PAGE: i64 = 1_000;

/// `n` and `last` from the query.
fn pagination(req: &HttpRequest, default_n: i64) -> Result<(i64, Option<String>)> {
    let q = query_map(req);
    let n = match q.get("n") {
        None => default_n,
        Some(n) => n
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| RegistryError::PaginationInvalid("n must be a non-negative integer".into()))?
            .min(MAX_PAGE),
    };
    Ok((n, q.get("last").cloned()))
}

/// Adds `Link: <...>; rel="next"` when a page is full.
fn with_next(resp: &mut actix_web::HttpResponseBuilder, base: &str, items: &[String], n: i64, more: bool) {
    if let (true, Some(last)) = (more, items.last()) {
        resp.insert_header((header::LINK, format!("<{base}?last={last}&n={n}>; rel=\"next\"")));
    }
}

/// Fetches a page of `n` plus one more item to learn whether there is a next page.
fn split_page(mut items: Vec<String>, n: i64) -> (Vec<String>, bool) {
    let more = items.len() as i64 > n;
    items.truncate(n as usize);
    (items, more)
}

pub async fn tags(req: &HttpRequest, registry: &Registry, name: &str) -> Result<HttpResponse> {
    let (n, last) = pagination(req, MAX_PAGE)?;
    // n = 0 still answers NAME_UNKNOWN for an unknown repository.
    let page = registry.tags_page(name, last.as_deref(), n).await?;
    let mut resp = HttpResponse::Ok();
    if let Some(after) = &page.next_after {
        resp.insert_header((header::LINK, format!("</v2/{name}/tags/list?last={after}&n={n}>; rel=\"next\"")));
    }
    Ok(resp.content_type("application/json").body(page.body))
}

pub async fn catalog(req: &HttpRequest, state: &AppState, who: &Identity) -> Result<HttpResponse> {
    let (n, mut last) = pagination(req, DEFAULT_CATALOG_PAGE)?;
    let mut repos = Vec::new();
    let mut more = false;
    // Rights are decided per namespace unless a token limits repositories by pattern, so one
    // check per namespace serves every repository in it.
    let per_namespace = who.limit.as_ref().is_none_or(|l| l.repository_pattern.is_none());
    let mut decided: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    // Keep reading pages until `n` repositories the caller may pull are found.
    while (repos.len() as i64) < n {
        let want = n - repos.len() as i64;
        let (page, page_more) = split_page(state.registry.catalog(last.as_deref(), want + 1).await?, want);
        last = page.last().cloned();
        for repo in page {
            let namespace = repo.split('/').next().unwrap_or(&repo).to_string();
            let allowed = match decided.get(&namespace) {
                Some(allowed) if per_namespace => *allowed,
                _ => {
                    let allowed = state.auth.may_pull(who, &repo).await?;
                    decided.insert(namespace, allowed);
                    allowed
                }
            };
            if allowed {
                repos.push(repo);
            }
        }
        more = page_more;
        if !page_more {
            break;
        }
    }
    let mut resp = HttpResponse::Ok();
    with_next(&mut resp, "/v2/_catalog", &repos, n, more);
    Ok(resp.json(serde_json::json!({ "repositories": repos })))
}

pub async fn referrers(req: &HttpRequest, registry: &Registry, name: &str, digest: &Digest) -> Result<HttpResponse> {
    let q = query_map(req);
    let artifact_type = q.get("artifactType").filter(|t| !t.is_empty());
    let index = registry.referrers(name, digest, artifact_type.map(String::as_str)).await?;
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::CONTENT_TYPE, media::OCI_INDEX));
    if artifact_type.is_some() {
        resp.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    Ok(resp.body(index.to_string()))
}
