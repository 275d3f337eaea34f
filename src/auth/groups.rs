//! Groups to rights: what a directory's or an identity provider's groups give an account —
//! administrator rights and a role per namespace (the highest role wins when several groups
//! name the same namespace). Pure rules; `directory.rs` applies them at login.

use std::collections::BTreeMap;

use crate::error::{RegistryError, Result};

/// Roles from the lowest to the highest.
const ROLE_ORDER: [&str; 3] = ["reader", "writer", "maintainer"];

/// The rules: which groups make administrators, and which give which roles.
#[derive(Debug, Clone, Default)]
pub struct GroupRules {
    admin_groups: Vec<String>,
    /// (group, namespace, role)
    roles: Vec<(String, String, String)>,
}

/// What an account's groups give it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    pub admin: bool,
    /// Namespace → role.
    pub roles: BTreeMap<String, String>,
}

/// Whether `group` is `wanted`, compared without case and whole: a name (from a group search
/// under `group_base`) matches a name, a DN (from `memberOf`) matches only the same DN — a group
/// of the same name elsewhere in the directory (a self-service OU) gives nothing.
fn same_group(group: &str, wanted: &str) -> bool {
    group.trim().eq_ignore_ascii_case(wanted.trim())
}

impl GroupRules {
    /// Reads `admin_groups` and `group → "namespace:role[, namespace:role]"`.
    pub fn new(admin_groups: &[String], group_roles: &BTreeMap<String, String>) -> Result<GroupRules> {
        let mut roles = Vec::new();
        for (group, spec) in group_roles {
            for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let bad = || {
                    RegistryError::Invalid(format!(
                        "group {group:?}: {item:?} is not namespace:role (role: reader, writer or maintainer)"
                    ))
                };
                let (namespace, role) = item.split_once(':').ok_or_else(bad)?;
                let (namespace, role) = (namespace.trim(), role.trim());
                if !ROLE_ORDER.contains(&role)
                    || crate::oci::validate_name(namespace).is_err()
                    || namespace.contains('/')
                {
                    return Err(bad());
                }
                roles.push((group.clone(), namespace.to_string(), role.to_string()));
            }
        }
        Ok(GroupRules { admin_groups: admin_groups.to_vec(), roles })
    }

    /// What `groups` give.
    pub fn grant(&self, groups: &[String]) -> Granted {
        let member = |wanted: &str| groups.iter().any(|g| same_group(g, wanted));
        let mut granted = Granted { admin: self.admin_groups.iter().any(|g| member(g)), roles: BTreeMap::new() };
        for (group, namespace, role) in &self.roles {
            if !member(group) {
                continue;
            }
            let rank = |r: &str| ROLE_ORDER.iter().position(|x| *x == r).unwrap_or(0);
            let entry = granted.roles.entry(namespace.clone()).or_insert_with(|| role.clone());
            if rank(role) > rank(entry) {
                *entry = role.clone();
            }
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> GroupRules {
        let roles = BTreeMap::from([
            ("team-devs".to_string(), "team:writer".to_string()),
            ("team-leads".to_string(), "team:maintainer, lab:reader".to_string()),
            ("readers".to_string(), "team:reader".to_string()),
        ]);
        GroupRules::new(&["registry-admins".to_string()], &roles).unwrap()
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_highest_role_wins_whatever_the_order() {
        let r = rules();
        for g in [["readers", "team-devs", "team-leads"], ["team-leads", "readers", "team-devs"]] {
            let granted = r.grant(&groups(&g));
            assert_eq!(granted.roles.get("team").map(String::as_str), Some("maintainer"));
            assert_eq!(granted.roles.get("lab").map(String::as_str), Some("reader"));
            assert!(!granted.admin);
        }
        assert_eq!(r.grant(&groups(&["readers", "team-devs"])).roles["team"], "writer");
        assert_eq!(r.grant(&groups(&["readers"])).roles["team"], "reader");
    }

    #[test]
    fn admin_groups_and_no_groups() {
        let r = rules();
        assert!(r.grant(&groups(&["Registry-Admins"])).admin, "names compare without case");
        assert!(!r.grant(&groups(&["cn=registry-admins,ou=selfservice,dc=x"])).admin, "a DN is not its name");
        let by_dn = GroupRules::new(&["cn=registry-admins,ou=groups,dc=x".to_string()], &BTreeMap::new()).unwrap();
        assert!(by_dn.grant(&groups(&["CN=Registry-Admins,ou=groups,dc=x"])).admin, "the same DN, other case");
        assert!(!by_dn.grant(&groups(&["cn=registry-admins,ou=other,dc=x"])).admin);
        assert_eq!(r.grant(&[]), Granted::default());
        assert_eq!(r.grant(&groups(&["cn=team-devs-old,ou=groups,dc=x"])), Granted::default(), "no prefix match");
    }

    #[test]
    fn bad_rules_are_refused() {
        for spec in ["team", "team:owner", "Team:writer", "a/b:reader", ":reader"] {
            let roles = BTreeMap::from([("g".to_string(), spec.to_string())]);
            assert!(GroupRules::new(&[], &roles).is_err(), "{spec}");
        }
    }
}
