//! Which tags a rule takes: a glob (`v1.*`), or a regular expression the whole tag must match
//! (`v[0-9]+\.[0-9]+`), then, when the rule asks for the latest N, the N most recently pushed
//! (locally: when the tag was set; at a remote: the image's `created` time).

use regex::{Regex, RegexBuilder};

use crate::auth::policy::glob_match;
use crate::error::{RegistryError, Result};
use crate::meta::ReplicationRule;

/// The most a tag expression may compile to (bytes): a rule cannot make matching costly.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// A rule's tag filter.
pub struct TagFilter {
    glob: String,
    regex: Option<Regex>,
}

/// Compiles a tag expression, anchored at both ends.
pub fn compile(expression: &str) -> Result<Regex> {
    if expression.len() > 255 {
        return Err(RegistryError::Invalid("a tag expression is at most 255 characters".into()));
    }
    RegexBuilder::new(&format!("^(?:{expression})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| RegistryError::Invalid(format!("tag expression {expression:?}: {e}")))
}

impl TagFilter {
    pub fn new(rule: &ReplicationRule) -> Result<TagFilter> {
        let regex = (!rule.tags_regex.is_empty()).then(|| compile(&rule.tags_regex)).transpose()?;
        Ok(TagFilter { glob: rule.tags.clone(), regex })
    }

    pub fn matches(&self, tag: &str) -> bool {
        match &self.regex {
            Some(re) => re.is_match(tag),
            None => glob_match(&self.glob, tag),
        }
    }

    /// Whether every tag passes (a manifest pushed by digest alone then goes too).
    pub fn takes_all(&self) -> bool {
        self.regex.is_none() && self.glob == "*"
    }
}

/// The `n` newest of `(tag, time)` (newer first; a tie goes to the greater name); every one
/// when `n` is 0.
pub fn latest(mut tags: Vec<(String, i64)>, n: i64) -> Vec<String> {
    tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    if n > 0 {
        tags.truncate(n as usize);
    }
    tags.into_iter().map(|(t, _)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(tags: &str, re: &str) -> ReplicationRule {
        ReplicationRule {
            id: 1,
            name: "r".into(),
            target_id: 1,
            target_name: "t".into(),
            direction: "push".into(),
            repositories: "*".into(),
            tags: tags.into(),
            destination_prefix: String::new(),
            replicate_deletes: false,
            enabled: true,
            created_by: "admin".into(),
            created_at: 0,
            tags_regex: re.into(),
            latest: 0,
            schedule: String::new(),
            next_run_at: None,
            last_run_at: None,
        }
    }

    #[test]
    fn globs_and_expressions() {
        let f = TagFilter::new(&rule("v1.*", "")).unwrap();
        assert!(f.matches("v1.2") && !f.matches("v2.0") && !f.takes_all());
        let f = TagFilter::new(&rule("*", r"v[0-9]+\.[0-9]+")).unwrap();
        assert!(f.matches("v1.2") && f.matches("v10.20"));
        assert!(!f.matches("v1.2-rc1"), "anchored at the end");
        assert!(!f.matches("xv1.2"), "anchored at the start");
        assert!(!f.takes_all());
        assert!(TagFilter::new(&rule("*", "")).unwrap().takes_all());
        assert!(compile("(").is_err());
        assert!(compile(&"a".repeat(300)).is_err());
        assert!(compile("(a{1000}){1000}").is_err(), "too large a program");
    }

    #[test]
    fn latest_n() {
        let tags = vec![("a".to_string(), 1), ("b".to_string(), 3), ("c".to_string(), 2), ("d".to_string(), 3)];
        assert_eq!(latest(tags.clone(), 2), ["d", "b"]);
        assert_eq!(latest(tags, 0).len(), 4);
    }
}
