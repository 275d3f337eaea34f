//! `berth ps`: the default table, `-q`, `-s` (the writable layer's size) and `--format` with
//! docker's placeholders (`{{.ID}} {{.Names}} {{.Image}} {{.Command}} {{.CreatedAt}}
//! {{.RunningFor}} {{.Status}} {{.State}} {{.Size}} {{.Mounts}} {{.Ports}}`, `{{json .}}`), the
//! `table` prefix (a header and columns aligned at `\t` as docker's tabwriter does) and
//! `--format json`. Not Go templates: only placeholders, no functions or conditions.

use std::collections::BTreeMap;

use anyhow::bail;

use super::args::PsArgs;
use super::housekeeping::{content_size, human_size};
use super::state::{self, Container, Paths, Status};

fn ago(rfc3339: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else { return "?".into() };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        0..=1 => "Less than a second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=3599 => format!("{} minutes", secs / 60),
        3600..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

/// The placeholders, their table headers.
const FIELDS: [(&str, &str); 11] = [
    ("ID", "CONTAINER ID"),
    ("Names", "NAMES"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Size", "SIZE"),
    ("Mounts", "MOUNTS"),
    ("Ports", "PORTS"),
];

const DEFAULT_FORMAT: &str = "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Names}}";

/// A piece of a template: text, or a placeholder (`.` for `{{json .}}`).
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Field(String),
    Json,
}

/// Parses a template: `\t` and `\n` written as escapes become tabs and newlines, as in docker.
fn parse(template: &str) -> anyhow::Result<Vec<Piece>> {
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = Vec::new();
    let mut rest = template.as_str();
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Text(rest[..start].to_string()));
        }
        let Some(end) = rest[start..].find("}}") else { bail!("template: unclosed action in {template:?}") };
        let action = rest[start + 2..start + end].trim().trim_start_matches('-').trim_end_matches('-').trim();
        if action == "json ." {
            out.push(Piece::Json);
        } else if let Some(field) = action.strip_prefix('.')
            && let Some((name, _)) = FIELDS.iter().find(|(n, _)| *n == field)
        {
            out.push(Piece::Field(name.to_string()));
        } else {
            let known: Vec<String> = FIELDS.iter().map(|(n, _)| format!("{{{{.{n}}}}}")).collect();
            bail!("template: unsupported {{{{{action}}}}} (berth knows {} and {{{{json .}}}})", known.join(" "));
        }
        rest = &rest[start + end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// One container's values.
fn values(paths: &Paths, c: &Container, no_trunc: bool, size: bool) -> BTreeMap<&'static str, String> {
    let mut command = format!("\"{}\"", c.command.join(" "));
    if !no_trunc && command.chars().count() > 22 {
        command = format!("{}…\"", command.chars().take(20).collect::<String>());
    }
    let running = state::running(c);
    let status = match c.status {
        Status::Created => "Created".to_string(),
        Status::Running if running => format!("Up {}", ago(c.started.as_deref().unwrap_or(&c.created))),
        _ => format!(
            "Exited ({}) {} ago",
            c.exit_code.map_or("?".to_string(), |e| e.to_string()),
            ago(c.finished.as_deref().unwrap_or(&c.created))
        ),
    };
    let state = match c.status {
        Status::Created => "created",
        Status::Running if running => "running",
        _ => "exited",
    };
    let created_at = chrono::DateTime::parse_from_rfc3339(&c.created)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default();
    let mut v = BTreeMap::new();
    v.insert("ID", if no_trunc { c.id.clone() } else { c.short_id().to_string() });
    v.insert("Names", c.name.clone());
    v.insert("Image", c.image.clone());
    v.insert("Command", command);
    v.insert("CreatedAt", created_at);
    v.insert("RunningFor", format!("{} ago", ago(&c.created)));
    v.insert("Status", status);
    v.insert("State", state.to_string());
    v.insert("Mounts", c.volumes.iter().map(|m| m.source.as_str()).collect::<Vec<_>>().join(","));
    v.insert("Ports", String::new());
    if size {
        // The writable layer (a private copy's whole root), and with the image's layers.
        let dir = paths.container(&c.id);
        let own = if c.rootfs_mode == "overlay" {
            content_size(&dir.join("upper"))
        } else {
            content_size(&dir.join("rootfs"))
        };
        let image: u64 =
            if c.rootfs_mode == "overlay" { c.layers.iter().map(|l| content_size(&paths.layer(l))).sum() } else { 0 };
        v.insert("Size", format!("{} (virtual {})", human_size(own), human_size(own + image)));
    } else {
        v.insert("Size", String::new());
    }
    v
}

fn render(pieces: &[Piece], v: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(f) => out.push_str(v.get(f.as_str()).map_or("", |s| s.as_str())),
            Piece::Json => out.push_str(&serde_json::to_string(v).unwrap_or_default()),
        }
    }
    out
}

/// Aligns `\t`-separated cells as docker's tabwriter (minimum width 10, padding 3); the last
/// cell of a line is not padded.
fn tabulate(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = (cell.chars().count() + 3).max(10);
            if widths.len() <= i {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// `berth ps`.
pub fn ps(paths: &Paths, a: PsArgs) -> anyhow::Result<()> {
    let mut all = state::list(paths)?;
    if a.latest {
        all = all.pop().into_iter().collect();
    } else if !a.all {
        all.retain(state::running);
    }
    if a.quiet {
        for c in &all {
            println!("{}", if a.no_trunc { c.id.as_str() } else { c.short_id() });
        }
        return Ok(());
    }
    let format = match a.format.as_deref() {
        Some("json") => "{{json .}}".to_string(),
        Some("table") => DEFAULT_FORMAT.to_string(),
        Some(f) => f.to_string(),
        None if a.size => format!("{DEFAULT_FORMAT}\\t{{{{.Size}}}}"),
        None => DEFAULT_FORMAT.to_string(),
    };
    let (table, template) = match format.strip_prefix("table") {
        Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest.trim_start()),
        _ => (false, format.as_str()),
    };
    let pieces = parse(template)?;
    let size = a.size || pieces.iter().any(|p| matches!(p, Piece::Field(f) if f == "Size") || *p == Piece::Json);
    let mut lines = Vec::new();
    if table {
        let headers: BTreeMap<&'static str, String> = FIELDS.iter().map(|(n, h)| (*n, h.to_string())).collect();
        lines.push(render(&pieces, &headers));
    }
    for c in &all {
        lines.push(render(&pieces, &values(paths, c, a.no_trunc, size)));
    }
    if table {
        print!("{}", tabulate(&lines));
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_tables() {
        let pieces = parse("{{.ID}}\\t{{ .Names }}|{{json .}}").unwrap();
        assert_eq!(
            pieces,
            [
                Piece::Field("ID".into()),
                Piece::Text("\t".into()),
                Piece::Field("Names".into()),
                Piece::Text("|".into()),
                Piece::Json
            ]
        );
        assert!(parse("{{.Nope}}").is_err());
        assert!(parse("{{.ID").is_err());
        let table = tabulate(&["CONTAINER ID\tNAMES".to_string(), "abc\tweb".to_string()]);
        assert_eq!(table, "CONTAINER ID   NAMES\nabc            web\n");
    }
}
