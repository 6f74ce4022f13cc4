//! Check 4: how cgroups are mounted (v1, hybrid or unified), which the shims
//! handle all of. Runs in the CLI process.

use std::path::Path;

use super::Finding;

/// Where the cgroup filesystem is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// v1 controllers only.
    V1,
    /// v1 controllers, and v2 at `unified/` (no controllers there).
    Hybrid,
    /// v2 only (the unified hierarchy).
    Unified,
}

/// The cgroup layout mounted at `root` (normally [`CGROUP_ROOT`]), if any.
pub fn cgroup_mode(root: &Path) -> Option<CgroupMode> {
    if root.join("cgroup.controllers").is_file() {
        return Some(CgroupMode::Unified);
    }
    if root.join("unified/cgroup.controllers").is_file() {
        return Some(CgroupMode::Hybrid);
    }
    let has_v1 = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .any(|e| e.path().join("cgroup.procs").is_file());
    has_v1.then_some(CgroupMode::V1)
}

/// Check 4: the cgroup mode (information: the shim handles all three).
pub fn check_cgroup(root: &Path) -> Finding {
    let what = format!("cgroups at {}", root.display());
    match cgroup_mode(root) {
        Some(CgroupMode::Unified) => Finding::ok(format!("{what}: v2 (unified)")),
        Some(CgroupMode::Hybrid) => {
            Finding::ok(format!("{what}: hybrid (v1 controllers, v2 at unified/)"))
        }
        Some(CgroupMode::V1) => Finding::ok(format!("{what}: v1")),
        None => Finding::fail(
            what,
            "no cgroup hierarchy mounted: containers with resource limits cannot start",
            format!(
                "mount one (`mount -t cgroup2 none {}`), as systemd does at boot",
                root.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fixtures::script;

    #[test]
    fn cgroup_mode_from_the_mounted_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!(cgroup_mode(root), None);
        assert!(check_cgroup(root).is_fail());
        script(&root.join("memory"), "cgroup.procs", "");
        assert_eq!(cgroup_mode(root), Some(CgroupMode::V1));
        script(&root.join("unified"), "cgroup.controllers", "");
        assert_eq!(cgroup_mode(root), Some(CgroupMode::Hybrid));
        script(root, "cgroup.controllers", "");
        assert_eq!(cgroup_mode(root), Some(CgroupMode::Unified));
        assert_eq!(
            check_cgroup(root).to_string(),
            format!("ok   cgroups at {}: v2 (unified)", root.display())
        );
    }
}
