//! Who may do what: namespaces, roles, public visibility, admins, robots and the limits of a
//! personal access token. The one place that answers "which actions on this repository".

use super::Action;
use crate::error::Result;
use crate::meta::{Account, Meta};
use crate::oci::namespace_of;

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

/// The actions `account` (anonymous when `None`) may take on `repository`.
///
/// A personal access token's `limit` narrows what the account may do as itself (its own
/// namespace, robot binding, membership, admin), never what anyone may: a public namespace
/// stays pullable, so a credential never has fewer rights than an anonymous client (or a robot
/// of another namespace).
pub async fn allowed(
    meta: &Meta,
    anonymous_pull: bool,
    account: Option<&Account>,
    limit: Option<&TokenLimit>,
    repository: &str,
) -> Result<Actions> {
    let ns = namespace_of(repository);
    let mut own = Actions::NONE;
    if let Some(a) = account {
        if a.disabled {
            return Ok(Actions::NONE);
        }
        if a.is_admin {
            own = Actions::ALL;
        } else if a.kind == "robot" {
            if a.robot_namespace.as_deref() == Some(ns) {
                own = Actions::of_level(a.robot_role.as_deref().unwrap_or(""));
            }
        } else if a.name == ns {
            own = Actions::ALL;
        }
    }
    let mut public = Actions::NONE;
    // An account that may do everything here needs no lookup, unless a token limit may take
    // that away and leave only what is public.
    if (own != Actions::ALL || limit.is_some())
        && let Some((is_public, role)) = meta.namespace_access(ns, account.map(|a| a.id)).await?
    {
        if account.is_some_and(|a| a.kind == "user")
            && let Some(role) = role
        {
            own = own.union(Actions::of_level(&role));
        }
        if is_public && (account.is_some() || anonymous_pull) {
            public = Actions::PULL;
        }
    }
    let own = match limit {
        Some(l) => l.apply(repository, own),
        None => own,
    };
    Ok(own.union(public))
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

    /// A credential never has fewer rights than anonymous: a limited token of any account
    /// (admin, owner, member) and a robot of another namespace may all pull a public
    /// namespace's repositories, and nothing more there.
    #[tokio::test]
    async fn limits_never_hide_what_is_public() {
        use crate::meta::NewAccount;
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::temp_sqlite(dir.path()).await;
        let user = |name: &'static str, is_admin| NewAccount {
            name,
            kind: "user",
            password_hash: None,
            is_admin,
            robot_namespace: None,
            robot_role: None,
            origin: "local",
        };
        let alice = meta.create_account(&user("alice", false)).await.unwrap().unwrap();
        let root = meta.create_account(&user("root", true)).await.unwrap().unwrap();
        assert!(meta.create_org("pub").await.unwrap());
        assert!(meta.set_namespace_public("pub", true).await.unwrap());
        assert!(meta.create_org("team").await.unwrap());
        meta.set_member("team", alice.id, "writer").await.unwrap();
        let robot = NewAccount {
            name: "team+ci",
            kind: "robot",
            password_hash: None,
            is_admin: false,
            robot_namespace: Some("team"),
            robot_role: Some("writer"),
            origin: "local",
        };
        let robot = meta.create_account(&robot).await.unwrap().unwrap();
        let limit = TokenLimit { token_id: 1, actions: Actions::PULL_PUSH, repository_pattern: Some("team/*".into()) };
        let limited = Some(&limit);
        for who in [&alice, &root] {
            // Inside the limit: the account's rights, cut to the token's scope.
            assert_eq!(allowed(&meta, false, Some(who), limited, "team/app").await.unwrap(), Actions::PULL_PUSH);
            // Outside it: what is public, as for anyone logged in.
            assert_eq!(allowed(&meta, false, Some(who), limited, "pub/app").await.unwrap(), Actions::PULL);
            assert_eq!(allowed(&meta, false, Some(who), limited, "alice/app").await.unwrap(), Actions::NONE);
        }
        assert_eq!(allowed(&meta, false, Some(&robot), None, "pub/app").await.unwrap(), Actions::PULL);
        assert_eq!(allowed(&meta, false, Some(&robot), None, "alice/app").await.unwrap(), Actions::NONE);
        // Anonymous, with anonymous pulls off and on.
        assert_eq!(allowed(&meta, false, None, None, "pub/app").await.unwrap(), Actions::NONE);
        assert_eq!(allowed(&meta, true, None, None, "pub/app").await.unwrap(), Actions::PULL);
        // Without a limit, the owner's own namespace is everything.
        assert_eq!(allowed(&meta, false, Some(&alice), None, "alice/app").await.unwrap(), Actions::ALL);
    }

    /// The rights each kind of account has, without token limits: an admin everything
    /// everywhere; a user everything in their own namespace; a member what their role gives in
    /// that namespace only (reader: pull, writer: pull and push, maintainer: all); a robot its
    /// role in its own namespace only (a membership elsewhere gives a robot nothing); anyone
    /// logged in pulls a public namespace; a disabled account has nothing at all, not even what
    /// is public.
    #[tokio::test]
    async fn rights_by_admin_owner_role_robot_and_disabled() {
        use crate::meta::NewAccount;
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::temp_sqlite(dir.path()).await;
        let new = |name: &'static str, kind: &'static str, is_admin, robot: Option<(&'static str, &'static str)>| {
            NewAccount {
                name,
                kind,
                password_hash: None,
                is_admin,
                robot_namespace: robot.map(|r| r.0),
                robot_role: robot.map(|r| r.1),
                origin: "local",
            }
        };
        let mut accounts = std::collections::HashMap::new();
        for a in [
            new("root", "user", true, None),
            new("alice", "user", false, None),
            new("rita", "user", false, None),
            new("will", "user", false, None),
            new("mae", "user", false, None),
            new("team+ci", "robot", false, Some(("team", "writer"))),
            new("team+ro", "robot", false, Some(("team", "reader"))),
        ] {
            accounts.insert(a.name, meta.create_account(&a).await.unwrap().unwrap());
        }
        assert!(meta.create_org("team").await.unwrap());
        assert!(meta.create_org("lab").await.unwrap());
        assert!(meta.create_org("pub").await.unwrap());
        assert!(meta.set_namespace_public("pub", true).await.unwrap());
        for (who, role) in [("rita", "reader"), ("will", "writer"), ("mae", "maintainer")] {
            meta.set_member("team", accounts[who].id, role).await.unwrap();
        }
        meta.set_member("lab", accounts["team+ci"].id, "maintainer").await.unwrap();

        let (none, pull, push, all) = (Actions::NONE, Actions::PULL, Actions::PULL_PUSH, Actions::ALL);
        // (account, team/app, lab/app, alice/app, pub/app)
        let table = [
            ("root", [all, all, all, all]),
            ("alice", [none, none, all, pull]),
            ("rita", [pull, none, none, pull]),
            ("will", [push, none, none, pull]),
            ("mae", [all, none, none, pull]),
            ("team+ci", [push, none, none, pull]),
            ("team+ro", [pull, none, none, pull]),
        ];
        let repos = ["team/app", "lab/app", "alice/app", "pub/app"];
        for (who, want) in table {
            for (repo, want) in repos.iter().zip(want) {
                let got = allowed(&meta, true, Some(&accounts[who]), None, repo).await.unwrap();
                assert_eq!(got, want, "{who} on {repo}");
            }
        }
        // The namespace itself is a repository name of it; an admin needs no namespace row.
        assert_eq!(allowed(&meta, false, Some(&accounts["alice"]), None, "alice").await.unwrap(), all);
        assert_eq!(allowed(&meta, false, Some(&accounts["root"]), None, "nowhere/app").await.unwrap(), all);
        assert_eq!(allowed(&meta, true, None, None, "team/app").await.unwrap(), none, "private stays private");

        // Disabled: nothing, whatever the account was.
        for who in ["root", "alice", "mae", "team+ci"] {
            meta.set_account_flags(accounts[who].id, None, Some(true)).await.unwrap();
            let disabled = meta.account(who).await.unwrap().unwrap().account;
            assert!(disabled.disabled);
            for repo in repos.iter().chain(&["alice", "nowhere/app"]) {
                assert_eq!(allowed(&meta, true, Some(&disabled), None, repo).await.unwrap(), none, "{who} on {repo}");
            }
        }
    }
}
