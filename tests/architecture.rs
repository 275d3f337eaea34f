//! The layering of `src/`, checked from the sources: every `crate::ROOM` reference in a room
//! (a top-level module: a folder or a file of `src/`) must point to a room on a lower layer of
//! the list in ARCHITECTURE.md ("Layers"), and the files of one room must not import each other
//! in a loop. A new room must be placed in that list before it builds a green test run.
//!
//! Comments are skipped; `#[cfg(test)]` code counts like any other (a test module that reaches
//! up is an upward import too). `src/main.rs` is the binary on top of everything and is not
//! checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers from ARCHITECTURE.md: the numbered lines under `## Layers`, bottom first, each
/// naming its rooms in backquotes.
fn layers(architecture: &str) -> BTreeMap<String, usize> {
    let section = architecture.split("\n## Layers").nth(1).expect("ARCHITECTURE.md has a '## Layers' section");
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines() {
        let Some((num, rest)) = line.split_once(". ") else { continue };
        let Ok(level) = num.trim().parse::<usize>() else { continue };
        let rooms = rest.split(" — ").next().unwrap_or(rest);
        for (i, part) in rooms.split('`').enumerate() {
            if i % 2 == 1 {
                assert!(out.insert(part.to_string(), level).is_none(), "{part} is listed twice");
            }
        }
    }
    assert!(!out.is_empty(), "no layers found in ARCHITECTURE.md");
    out
}

/// A source file: its room, its file name within the room (`mod` for the room's root) and its
/// code without comments.
struct Source {
    room: String,
    file: String,
    code: String,
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| match l.find(" // ") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sources(src: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            let mut stack = vec![path.clone()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        let file = p.strip_prefix(&path).unwrap().with_extension("").to_string_lossy().to_string();
                        let code = strip_comments(&std::fs::read_to_string(&p).unwrap());
                        out.push(Source { room: name.clone(), file, code });
                    }
                }
            }
        } else if let Some(stem) = name.strip_suffix(".rs")
            && stem != "main"
            && stem != "lib"
        {
            let code = strip_comments(&std::fs::read_to_string(&path).unwrap());
            out.push(Source { room: stem.to_string(), file: "mod".into(), code });
        }
    }
    out
}

/// The paths a file names after `crate::`, with `use crate::{a::x, b}` groups expanded:
/// `["api::error", "oci"]`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `mycrate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()));
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            out.push(rest[..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// Every violation of the layering in `sources`, one line each.
fn violations(layers: &BTreeMap<String, usize>, sources: &[Source]) -> Vec<String> {
    let mut bad = Vec::new();
    let rooms: BTreeSet<&str> = sources.iter().map(|s| s.room.as_str()).collect();
    for room in &rooms {
        if !layers.contains_key(*room) {
            bad.push(format!("room `{room}` is not placed in ARCHITECTURE.md's layers"));
        }
    }
    // Files of one room and what they import of their siblings.
    let mut sibling_edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        let mine = layers.get(&s.room).copied().unwrap_or(0);
        for path in crate_paths(&s.code) {
            let mut parts = path.split("::");
            let target = parts.next().unwrap_or_default();
            if target == s.room {
                if let Some(sibling) = parts.next() {
                    sibling_edges.entry((s.room.clone(), s.file.clone())).or_default().insert(sibling.to_string());
                }
                continue;
            }
            if !rooms.contains(target) {
                continue;
            }
            let theirs = layers.get(target).copied().unwrap_or(0);
            if theirs >= mine {
                bad.push(format!(
                    "{}/{}: imports crate::{path} (layer {theirs}) from layer {mine}: imports must point down",
                    s.room, s.file
                ));
            }
        }
        for sibling in super_paths(&s.code) {
            sibling_edges.entry((s.room.clone(), s.file.clone())).or_default().insert(sibling);
        }
    }
    // Loops among the files of a room (a file's root `mod.rs` is where its siblings hang and
    // may re-export them, so it takes no part).
    for room in &rooms {
        let files: BTreeSet<&str> =
            sources.iter().filter(|s| s.room == *room && s.file != "mod").map(|s| s.file.as_str()).collect();
        let edges = |f: &str| -> Vec<String> {
            sibling_edges
                .get(&(room.to_string(), f.to_string()))
                .map(|t| t.iter().filter(|t| files.contains(t.as_str()) && *t != f).cloned().collect())
                .unwrap_or_default()
        };
        for start in &files {
            // Is `start` reachable from itself?
            let mut seen = BTreeSet::new();
            let mut stack = edges(start);
            while let Some(f) = stack.pop() {
                if f == *start {
                    bad.push(format!("{room}/{start}: its imports lead back to it (an import loop inside `{room}`)"));
                    break;
                }
                if seen.insert(f.clone()) {
                    stack.extend(edges(&f));
                }
            }
        }
    }
    bad
}

/// The sibling modules a file names through `super::x` (for a file directly in its room).
fn super_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("super::") {
        rest = &rest[i + "super::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').filter_map(|p| p.trim().split("::").next()).map(str::to_string));
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn imports_point_down_and_close_no_loop() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = layers(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let sources = sources(&root.join("src"));
    assert!(sources.len() > 50, "read only {} source files", sources.len());
    let bad = violations(&layers, &sources);
    assert!(bad.is_empty(), "the layering of ARCHITECTURE.md is broken:\n{}", bad.join("\n"));
}

/// The checker itself finds what it must: an upward import, an unplaced room, a loop.
#[test]
fn the_checker_sees_upward_imports_unplaced_rooms_and_loops() {
    let layers = layers(
        "x\n## Layers\n1. `error`\n2. `oci`, `meta`\n3. `registry` — the service\n4. `api`\n## Next\n5. `late`\n",
    );
    assert_eq!(layers.get("registry"), Some(&3));
    assert_eq!(layers.get("late"), None, "a later section is not the layers");
    let src = |room: &str, file: &str, code: &str| Source {
        room: room.into(),
        file: file.into(),
        code: strip_comments(code),
    };
    let clean = [
        src("error", "mod", ""),
        src("oci", "name", "use crate::error::RegistryError;"),
        src("registry", "mod", "use crate::{oci::Digest, error};\nuse super::uploads::X;"),
        src("registry", "uploads", "use super::quota::Y;"),
        src("registry", "quota", "use crate::registry::mod_item;"),
        src("api", "mod", "use crate::registry::Registry;"),
    ];
    assert!(violations(&layers, &clean).is_empty(), "{:?}", violations(&layers, &clean));
    let bad = [
        src("error", "mod", "    crate::api::range_header(1) // crate::ui in a comment does not count"),
        src("oci", "name", "// use crate::api;"),
        src("registry", "uploads", "use super::quota::Y;"),
        src("registry", "quota", "use crate::registry::uploads::Z;"),
        src("api", "mod", "use crate::{oci, registry};"),
        src("meta", "mod", "use crate::oci::Digest;"),
        src("ui", "mod", ""),
    ];
    let found = violations(&layers, &bad);
    let has = |text: &str| found.iter().any(|v| v.contains(text));
    assert!(has("error/mod: imports crate::api"), "{found:?}");
    assert!(!has("crate::ui"), "{found:?}");
    assert!(!has("oci/name"), "{found:?}");
    assert!(has("room `ui` is not placed"), "{found:?}");
    assert!(has("registry/uploads: its imports lead back"), "{found:?}");
    assert!(has("registry/quota: its imports lead back"), "{found:?}");
    assert!(has("meta/mod: imports crate::oci::Digest"), "a room on its own layer: {found:?}");
    assert_eq!(found.len(), 5, "{found:?}");
}

/// The rooms that face people and clients (and the wiring above them): they reach the stores
/// only through the services, never `Meta` or the blob store themselves.
const DOORS: [&str; 6] = ["api", "ui", "access_log", "state", "server", "cli"];

/// What reaching a store looks like in code.
const STORE_HANDLES: [&str; 7] =
    ["Meta::", "meta::Meta", ".meta.", ".meta()", ".blobs.", "BlobStore", "crate::storage"];

fn store_reaches(sources: &[Source]) -> Vec<String> {
    let mut bad = Vec::new();
    for s in sources.iter().filter(|s| DOORS.contains(&s.room.as_str())) {
        for handle in STORE_HANDLES {
            if s.code.contains(handle) {
                bad.push(format!("{}/{}: reaches a store ({handle})", s.room, s.file));
            }
        }
    }
    bad
}

#[test]
fn doors_reach_the_stores_only_through_services() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bad = store_reaches(&sources(&root.join("src")));
    assert!(bad.is_empty(), "the stores are the services' (ARCHITECTURE.md, Layers):\n{}", bad.join("\n"));
}

#[test]
fn the_store_check_sees_a_door_reaching_a_store() {
    let src = |room: &str, code: &str| Source { room: room.into(), file: "mod".into(), code: strip_comments(code) };
    let sources = [
        src("ui", "let n = v.svc.registry.meta.namespaces().await?;"),
        src("cli", "let meta = Meta::connect(url).await?;"),
        src("api", "// registry.meta.ping() in a comment\nuse crate::meta::Account;"),
        src("gc", "let meta = &self.registry.meta;"),
    ];
    let found = store_reaches(&sources);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("ui/mod") && found[1].starts_with("cli/mod"), "{found:?}");
}
