//! Which cgroup layout the host has (v1, v2 or hybrid: v1 controllers with an empty v2 tree at
//! `/sys/fs/cgroup/unified`) and whether the controllers a limit needs are there. libcontainer
//! (with systemd off) places each container at `/berth/<id>` in whichever layout it finds; the
//! runtime only sets limits when asked, and says clearly when the host cannot enforce them.

use std::path::Path;

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};

/// The host's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    V1,
    V2,
    Hybrid,
    Unavailable,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::V1 => "cgroup v1",
            Layout::V2 => "cgroup v2",
            Layout::Hybrid => "hybrid cgroups (v1 controllers, v2 tree without controllers)",
            Layout::Unavailable => "no cgroup filesystem",
        })
    }
}

const ROOT: &str = "/sys/fs/cgroup";

/// Detects the layout mounted at `/sys/fs/cgroup`.
pub fn detect() -> Layout {
    let Ok(root) = statfs(ROOT) else { return Layout::Unavailable };
    if root.filesystem_type() == CGROUP2_SUPER_MAGIC {
        return Layout::V2;
    }
    if root.filesystem_type() != TMPFS_MAGIC {
        return Layout::Unavailable;
    }
    let unified = Path::new(ROOT).join("unified");
    if statfs(&unified).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC) { Layout::Hybrid } else { Layout::V1 }
}

/// Whether `controller` (memory, pids) can be used to limit containers.
pub fn has_controller(layout: Layout, controller: &str) -> bool {
    match layout {
        Layout::V1 | Layout::Hybrid => Path::new(ROOT).join(controller).join("tasks").exists(),
        Layout::V2 => std::fs::read_to_string(Path::new(ROOT).join("cgroup.controllers"))
            .is_ok_and(|s| s.split_whitespace().any(|c| c == controller)),
        Layout::Unavailable => false,
    }
}

/// Fails with a clear message when a requested limit cannot be enforced on this host.
pub fn require(controller: &str, flag: &str) -> anyhow::Result<()> {
    let layout = detect();
    if !has_controller(layout, controller) {
        anyhow::bail!("{flag} needs the {controller} cgroup controller, which this host ({layout}) does not offer");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_something_consistent() {
        let layout = detect();
        if layout == Layout::V2 {
            assert!(Path::new(ROOT).join("cgroup.controllers").exists());
        }
        if layout == Layout::Hybrid || layout == Layout::V1 {
            assert!(!Path::new(ROOT).join("cgroup.controllers").exists());
        }
    }
}
