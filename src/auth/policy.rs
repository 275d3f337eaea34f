//! Who may do what: namespaces, roles, public visibility, admins, robots and the limits of a
//! personal access token. The one place that answers "which actions on this repository".

use super::Action;
use crate::error::Result;
use crate::meta::{Account, Meta};

/// A set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PULL_PUSH: Actions = Actions(3);
    pub const ALL: Actions = Actions(7);

    fn bit(a: Action) -> u8 {
        match a {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & Self::bit(a) != 0
    }

    pub fn union(self, o: Actions) -> Actions {
        Actions(self.0 | o.0)
    }

    pub fn intersect(self, o: Actions) -> Actions {
        Actions(self.0 & o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions of a role (`reader`, `writer`, `maintainer`) or of a token scope (`pull`,
    /// `push`, `delete`, each including the ones before).
    pub fn of_level(level: &str) -> Actions {
        match level {
            "reader" | "pull" => Actions::PULL,
            "writer" | "push" => Actions::PULL_PUSH,
            "maintainer" | "delete" => Actions::ALL,
            _ => Actions::NONE,
        }
    }

    /// Parses a comma-separated action list; unknown actions (and `*`) grant nothing.
    pub fn parse_list(list: &str) -> Actions {
        list.split(',').fold(Actions::NONE, |acc, a| match a.trim() {
            "pull" => acc.union(Actions(1)),
            "push" => acc.union(Actions(2)),
            "delete" => acc.union(Actions(4)),
            _ => acc,
        })
    }

    pub fn names(self) -> Vec<String> {
        [Action::Pull, Action::Push, Action::Delete]
            .into_iter()
            .filter(|a| self.contains(*a))
            .map(|a| a.as_str().to_string())
            .collect()
    }
}

/// What a personal access token lets its bearer do, at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLimit {
    pub token_id: i64,
    pub actions: Actions,
    pub repository_pattern: Option<String>,
}

impl TokenLimit {
    pub fn apply(&self, repository: &str, actions: Actions) -> Actions {
        match &self.repository_pattern {
            Some(p) if !glob_match(p, repository) => Actions::NONE,
            _ => actions.intersect(self.actions),
        }
    }
}

/// `*` matches any run of characters (slashes included); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The namespace of a repository: its first path component.
pub fn namespace_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// The actions `account` (anonymous when `None`) may take on `repository`.
pub async fn allowed(
    meta: &Meta,
    anonymous_pull: bool,
    account: Option<&Account>,
    limit: Option<&TokenLimit>,
    repository: &str,
) -> Result<Actions> {
    let ns = namespace_of(repository);
    let mut actions = Actions::NONE;
    if let Some(a) = account {
        if a.disabled {
            return Ok(Actions::NONE);
        }
        if a.is_admin {
            actions = Actions::ALL;
        } else if a.kind == "robot" {
            if a.robot_namespace.as_deref() == Some(ns) {
                actions = Actions::of_level(a.robot_role.as_deref().unwrap_or(""));
            }
        } else if a.name == ns {
            actions = Actions::ALL;
        }
    }
    if actions != Actions::ALL
        && let Some((public, role)) = meta.namespace_access(ns, account.map(|a| a.id)).await?
    {
        if account.is_some_and(|a| a.kind == "user")
            && let Some(role) = role
        {
            actions = actions.union(Actions::of_level(&role));
        }
        if public && (account.is_some() || anonymous_pull) {
            actions = actions.union(Actions::PULL);
        }
    }
    Ok(match limit {
        Some(l) => l.apply(repository, actions),
        None => actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("team/*", "team/app/api"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("team/app", "team/app"));
        assert!(!glob_match("team/app", "team/app2"));
        assert!(glob_match("*/api", "team/app/api"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c"));
        assert!(!glob_match("team/*", "other/app"));
    }

    #[test]
    fn levels() {
        assert_eq!(Actions::of_level("writer"), Actions::PULL_PUSH);
        assert_eq!(Actions::parse_list("pull,push,*"), Actions::PULL_PUSH);
        assert_eq!(Actions::ALL.names(), ["pull", "push", "delete"]);
        let l = TokenLimit { token_id: 1, actions: Actions::PULL, repository_pattern: Some("a/*".into()) };
        assert_eq!(l.apply("a/b", Actions::ALL), Actions::PULL);
        assert_eq!(l.apply("b/c", Actions::ALL), Actions::NONE);
    }
}
