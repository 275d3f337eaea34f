//! Tag retention policies, applied at the start of each collection (a dry run lists what would
//! go). A policy applies to the repositories its glob `pattern` matches; when several match,
//! the longest pattern wins. A tag is removed when
//!
//! - it is not among the `keep_last` most recently pushed tags (if set), **and**
//! - it was pushed more than `older_than_days` ago (if set), **and**
//! - it matches none of the `keep_tags` globs (`|`-separated), **and**
//! - its manifest was not pulled within `keep_pulled_days` (if set).
//!
//! A policy without `keep_last` and `older_than_days` removes nothing. The manifest a removed
//! tag pointed at is deleted too once nothing else keeps it (another tag, an index, a kept
//! subject), subject to the grace period; its blobs go in the same run's sweep.

use super::{BATCH, Collector, GcReport, LISTED};
use crate::auth::policy::glob_match;
use crate::error::Result;
use crate::meta::{RetentionPolicy, TagInfo, now};

/// The policy that applies to a repository: the longest matching pattern.
pub fn policy_for<'a>(policies: &'a [RetentionPolicy], repo: &str) -> Option<&'a RetentionPolicy> {
    policies.iter().filter(|p| glob_match(&p.pattern, repo)).max_by_key(|p| p.pattern.len())
}

/// The tags (given most recent first) a policy removes, at time `t`.
pub fn doomed<'a>(policy: &RetentionPolicy, tags: &'a [TagInfo], t: i64) -> Vec<&'a TagInfo> {
    if policy.keep_last.is_none() && policy.older_than_days.is_none() {
        return Vec::new();
    }
    let keep_globs: Vec<&str> = policy
        .keep_tags
        .as_deref()
        .map(|k| k.split('|').map(str::trim).filter(|g| !g.is_empty()).collect())
        .unwrap_or_default();
    tags.iter()
        .enumerate()
        .filter(|(i, tag)| {
            let beyond_last = policy.keep_last.is_none_or(|n| *i as i64 >= n);
            let old = policy.older_than_days.is_none_or(|d| tag.updated_at < t - d * 86_400);
            let kept_by_name = keep_globs.iter().any(|g| glob_match(g, &tag.name));
            let pulled =
                policy.keep_pulled_days.is_some_and(|d| tag.last_pulled_at.is_some_and(|p| p >= t - d * 86_400));
            beyond_last && old && !kept_by_name && !pulled
        })
        .map(|(_, tag)| tag)
        .collect()
}

pub(super) async fn apply(gc: &Collector, report: &mut GcReport, cutoff: i64) -> Result<()> {
    let meta = &gc.registry.meta;
    let policies = meta.retention_policies().await?;
    if policies.is_empty() {
        return Ok(());
    }
    let t = now();
    let mut last = 0;
    loop {
        let page = meta.repositories_after(last, BATCH).await?;
        let Some((l, _)) = page.last() else { break };
        last = *l;
        for (id, name) in &page {
            let Some(policy) = policy_for(&policies, name) else { continue };
            let tags = meta.tag_infos(*id).await?;
            // The manifests the removed tags pointed at, deleted together once the tags are gone
            // (those another tag still reaches stay: the delete re-checks).
            let mut untagged: Vec<(i64, String)> = Vec::new();
            for tag in doomed(policy, &tags, t) {
                let gone = report.dry_run || gc.registry.retire_tag(name, *id, tag).await?;
                if !gone {
                    continue;
                }
                report.tags_deleted += 1;
                if report.retention.len() < LISTED {
                    report.retention.push(format!("{name}:{}", tag.name));
                }
                if !report.dry_run && !untagged.iter().any(|(_, d)| *d == tag.digest) {
                    untagged.push((*id, tag.digest.clone()));
                }
            }
            if !untagged.is_empty() {
                report.manifests_deleted += meta.delete_unreachable_manifests(&untagged, cutoff).await?.len() as u64;
            }
        }
        gc.renew(report.dry_run).await?;
    }
    Ok(())
}

/// Checks a policy's values.
pub fn validate_policy(p: &RetentionPolicy) -> Result<(), String> {
    if p.pattern.trim().is_empty() {
        return Err("pattern must not be empty".into());
    }
    for (name, v) in
        [("keep_last", p.keep_last), ("older_than_days", p.older_than_days), ("keep_pulled_days", p.keep_pulled_days)]
    {
        if v.is_some_and(|v| v < 0) {
            return Err(format!("{name} must not be negative"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, age_days: i64, pulled_days_ago: Option<i64>) -> TagInfo {
        let t = 1_000_000_000;
        TagInfo {
            name: name.into(),
            digest: format!("sha256:{name}"),
            updated_at: t - age_days * 86_400,
            last_pulled_at: pulled_days_ago.map(|d| t - d * 86_400),
        }
    }

    fn policy() -> RetentionPolicy {
        RetentionPolicy {
            pattern: "a/*".into(),
            keep_last: None,
            keep_tags: None,
            older_than_days: None,
            keep_pulled_days: None,
        }
    }

    fn names(v: Vec<&TagInfo>) -> Vec<&str> {
        v.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn each_rule() {
        let t = 1_000_000_000;
        let tags = vec![tag("new", 1, None), tag("mid", 10, Some(1)), tag("v1", 40, None), tag("old", 50, None)];
        assert!(doomed(&policy(), &tags, t).is_empty(), "no deleting rule: nothing goes");
        let p = RetentionPolicy { keep_last: Some(2), ..policy() };
        assert_eq!(names(doomed(&p, &tags, t)), ["v1", "old"]);
        let p = RetentionPolicy { older_than_days: Some(30), ..policy() };
        assert_eq!(names(doomed(&p, &tags, t)), ["v1", "old"]);
        let p = RetentionPolicy { keep_last: Some(1), keep_tags: Some("v*|x".into()), ..policy() };
        assert_eq!(names(doomed(&p, &tags, t)), ["mid", "old"]);
        let p = RetentionPolicy { keep_last: Some(1), keep_pulled_days: Some(7), ..policy() };
        assert_eq!(names(doomed(&p, &tags, t)), ["v1", "old"]);
        let p = RetentionPolicy { keep_last: Some(3), older_than_days: Some(5), ..policy() };
        assert_eq!(names(doomed(&p, &tags, t)), ["old"]);
    }

    /// `older_than_days` takes only tags pushed strictly longer ago than that; `keep_pulled_days`
    /// keeps a tag pulled within that many days, to the second, and never one that was not
    /// pulled.
    #[test]
    fn age_and_pull_limits_are_exact_to_the_second() {
        let t = 1_000_000_000;
        let at = |name: &str, pushed: i64, pulled: Option<i64>| TagInfo {
            name: name.into(),
            digest: format!("sha256:{name}"),
            updated_at: pushed,
            last_pulled_at: pulled,
        };
        let day = 86_400;
        let tags = vec![at("edge", t - 30 * day, None), at("past", t - 30 * day - 1, None)];
        let p = RetentionPolicy { older_than_days: Some(30), ..policy() };
        assert_eq!(names(doomed(&p, &tags, t)), ["past"]);

        let tags = vec![
            at("edge", t - 90 * day, Some(t - 7 * day)),
            at("past", t - 90 * day, Some(t - 7 * day - 1)),
            at("never", t - 90 * day, None),
            at("just", t - 90 * day, Some(t)),
        ];
        let p = RetentionPolicy { older_than_days: Some(30), keep_pulled_days: Some(7), ..policy() };
        assert_eq!(names(doomed(&p, &tags, t)), ["past", "never"]);
    }

    /// `keep_last` counts positions in the list as given (most recent first), not names;
    /// `keep_last: 0` keeps none by count, and a count past the end keeps all.
    #[test]
    fn keep_last_counts_the_most_recent() {
        let t = 1_000_000_000;
        let tags = vec![tag("z", 1, None), tag("a", 2, None), tag("m", 3, None)];
        let p = |n| RetentionPolicy { keep_last: Some(n), ..policy() };
        assert_eq!(names(doomed(&p(1), &tags, t)), ["a", "m"]);
        assert_eq!(names(doomed(&p(2), &tags, t)), ["m"]);
        assert_eq!(names(doomed(&p(0), &tags, t)), ["z", "a", "m"]);
        assert!(doomed(&p(3), &tags, t).is_empty());
        assert!(doomed(&p(100), &tags, t).is_empty());
        assert!(doomed(&p(0), &[], t).is_empty());
    }

    /// `keep_tags` is a `|`-separated list of globs, spaces around each and empty entries
    /// ignored; any match keeps a tag, whole names only. `keep_tags` and `keep_pulled_days`
    /// only keep: alone they remove nothing.
    #[test]
    fn keep_tags_globs_only_keep() {
        let t = 1_000_000_000;
        let tags = vec![
            tag("latest", 90, None),
            tag("v1.2", 90, None),
            tag("release-v1", 90, None),
            tag("stable", 90, None),
            tag("dev-1", 90, None),
        ];
        let keep = |globs: &str| RetentionPolicy { keep_last: Some(0), keep_tags: Some(globs.into()), ..policy() };
        assert_eq!(names(doomed(&keep(" v* | |latest "), &tags, t)), ["release-v1", "stable", "dev-1"]);
        assert_eq!(names(doomed(&keep("*v1*|stab"), &tags, t)), ["latest", "stable", "dev-1"]);
        assert_eq!(names(doomed(&keep("||"), &tags, t)).len(), 5, "no glob keeps nothing");
        assert!(doomed(&keep("*"), &tags, t).is_empty());
        let only_keep = RetentionPolicy { keep_tags: Some("v*".into()), keep_pulled_days: Some(1), ..policy() };
        assert!(doomed(&only_keep, &tags, t).is_empty());
    }

    /// All four rules together: a tag goes only when every one of them lets it go.
    #[test]
    fn every_rule_must_let_a_tag_go() {
        let t = 1_000_000_000;
        let tags = vec![
            tag("newest", 40, None),    // kept: among the last 1
            tag("young", 10, None),     // kept: not older than 30 days
            tag("v2", 50, None),        // kept: matches v*
            tag("pulled", 60, Some(3)), // kept: pulled within 7 days
            tag("stale", 60, Some(20)), // goes
            tag("forgotten", 70, None), // goes
        ];
        let p = RetentionPolicy {
            keep_last: Some(1),
            keep_tags: Some("v*".into()),
            older_than_days: Some(30),
            keep_pulled_days: Some(7),
            ..policy()
        };
        assert_eq!(names(doomed(&p, &tags, t)), ["stale", "forgotten"]);
    }

    #[test]
    fn policies_are_validated() {
        assert!(validate_policy(&policy()).is_ok());
        let zeros =
            RetentionPolicy { keep_last: Some(0), older_than_days: Some(0), keep_pulled_days: Some(0), ..policy() };
        assert!(validate_policy(&zeros).is_ok());
        assert!(validate_policy(&RetentionPolicy { pattern: "  ".into(), ..policy() }).is_err());
        for bad in [
            RetentionPolicy { keep_last: Some(-1), ..policy() },
            RetentionPolicy { older_than_days: Some(-1), ..policy() },
            RetentionPolicy { keep_pulled_days: Some(-1), ..policy() },
        ] {
            assert!(validate_policy(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn longest_pattern_wins() {
        let ps = vec![
            RetentionPolicy { pattern: "*".into(), ..policy() },
            RetentionPolicy { pattern: "team/*".into(), ..policy() },
            RetentionPolicy { pattern: "team/app".into(), ..policy() },
        ];
        assert_eq!(policy_for(&ps, "team/app").unwrap().pattern, "team/app");
        assert_eq!(policy_for(&ps, "team/web").unwrap().pattern, "team/*");
        assert_eq!(policy_for(&ps, "other").unwrap().pattern, "*");
        let narrow = vec![RetentionPolicy { pattern: "team/*".into(), ..policy() }];
        assert!(policy_for(&narrow, "other/app").is_none(), "no policy matches: none applies");
        assert!(policy_for(&narrow, "team").is_none());
    }
}
