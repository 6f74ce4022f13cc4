//! The container's cgroup, managed by the shim with youki's `libcgroups`.
//!
//! Runs in the shim process. Right after spawning a worker, and before the
//! worker has read its first line (so before it compiles anything), the shim
//! creates the cgroup named by `linux.cgroupsPath`, moves the worker into it
//! and applies `linux.resources`. The cgroup gives the container's statistics,
//! tells whether the kernel's OOM killer ended it, and is removed at Delete or
//! when Create fails. cgroup v1, hybrid (v1 controllers) and v2 are handled by
//! `libcgroups`; the systemd form `slice:prefix:name` goes through systemd on
//! v2 and is expanded to the path systemd would use on v1.

use std::path::{Path, PathBuf};

use libcgroups::common::{
    self, AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup, ControllerOpt, FreezerState,
};
use nix::unistd::Pid;

use super::plan::{CgroupPlan, CgroupsPath};
use crate::error::{Error, Result};

/// How long [`Cgroup::remove`] waits for killed processes to leave the cgroup.
const REMOVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Statistics of a container's cgroup.
#[derive(Debug, Default)]
pub struct CgroupStats {
    /// True on the unified (v2) hierarchy, false on v1 controllers.
    pub unified: bool,
    /// What `libcgroups` read from the controllers.
    pub stats: libcgroups::stats::Stats,
}

/// A container's cgroup, holding its worker.
pub struct Cgroup {
    manager: AnyCgroupManager,
    /// Directory of the memory controller's cgroup, where the OOM kill count is.
    memory_dir: Option<PathBuf>,
    /// Directory of the freezer's cgroup (v1 `freezer` controller, or unified).
    freezer_dir: Option<PathBuf>,
    unified: bool,
    name: String,
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup").field("name", &self.name).finish()
    }
}

impl Cgroup {
    /// Creates the cgroup of `plan`, moves process `pid` into it and applies the
    /// limits. On failure nothing is left: the cgroup is removed again.
    pub fn join(plan: &CgroupPlan, id: &str, pid: u32) -> Result<Cgroup> {
        let cgroup = Cgroup::open(plan, id)?;
        let resources = &plan.resources;
        let options = ControllerOpt {
            resources,
            disable_oom_killer: resources
                .memory()
                .as_ref()
                .and_then(|m| m.disable_oom_killer())
                .unwrap_or(false),
            oom_score_adj: None,
            freezer_state: None,
        };
        let joined = cgroup
            .manager
            .add_task(Pid::from_raw(pid as i32))
            .map_err(|e| {
                Error::internal(
                    format!("moving process {pid} into cgroup {}", cgroup.name),
                    e,
                )
            })
            .and_then(|()| {
                cgroup.manager.apply(&options).map_err(|e| {
                    Error::internal(
                        format!("applying linux.resources to cgroup {}", cgroup.name),
                        e,
                    )
                })
            });
        match joined {
            Ok(()) => Ok(cgroup),
            Err(e) => {
                if let Err(r) = cgroup.remove() {
                    log::error!("container {id}: {r}");
                }
                Err(e)
            }
        }
    }

    /// The cgroup of `plan`, as it is: nothing is created or moved. Used to
    /// remove what a container left when its shim died.
    pub fn open(plan: &CgroupPlan, id: &str) -> Result<Cgroup> {
        let setup = common::get_cgroup_setup()
            .map_err(|e| Error::internal("detecting the cgroup hierarchy", e))?;
        let unified = matches!(setup, CgroupSetup::Unified);
        let fs_path = plan.path.fs_path();
        let (cgroup_path, systemd_cgroup, name) = match (&plan.path, unified) {
            (
                CgroupsPath::Systemd {
                    slice,
                    prefix,
                    name,
                },
                true,
            ) => (
                PathBuf::from(format!("{slice}:{prefix}:{name}")),
                true,
                format!("{slice}:{prefix}:{name}"),
            ),
            _ => (fs_path.clone(), false, fs_path.display().to_string()),
        };
        let manager = common::create_cgroup_manager(CgroupConfig {
            cgroup_path,
            systemd_cgroup,
            container_name: id.to_string(),
        })
        .map_err(|e| Error::internal(format!("cgroup {name}"), e))?;
        let memory_dir = memory_dir(unified, &fs_path);
        let freezer_dir = freezer_dir(unified, &fs_path);
        Ok(Cgroup {
            manager,
            memory_dir,
            freezer_dir,
            unified,
            name,
        })
    }

    /// The cgroup's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Memory, CPU, pids and I/O statistics.
    pub fn stats(&self) -> Result<CgroupStats> {
        let stats = self.manager.stats().map_err(|e| {
            Error::internal(format!("reading the statistics of cgroup {}", self.name), e)
        })?;
        Ok(CgroupStats {
            unified: self.unified,
            stats,
        })
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        let file = if self.unified {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(dir.join(file))
            .map(|text| oom_kill_count(&text))
            .unwrap_or(0)
    }

    /// Freezes every process of the cgroup (`frozen`) or thaws them: pause
    /// and resume. A cgroup that does not exist (or no freezer) is refused.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        if !self.freezer_dir.as_ref().is_some_and(|d| d.is_dir()) {
            return Err(Error::FailedPrecondition(format!(
                "the container has no cgroup with a freezer (cgroup {}): it cannot be paused",
                self.name
            )));
        }
        let (state, what) = if frozen {
            (FreezerState::Frozen, "freezing")
        } else {
            (FreezerState::Thawed, "thawing")
        };
        self.manager
            .freeze(state)
            .map_err(|e| Error::internal(format!("{what} cgroup {}", self.name), e))
    }

    /// Whether the cgroup's freezer holds its processes, read from the
    /// kernel as runc reads it: v1 `freezer.state` is `FROZEN`, v2
    /// `cgroup.freeze` is `1`. No cgroup or no freezer: not frozen.
    pub fn frozen(&self) -> bool {
        let Some(dir) = &self.freezer_dir else {
            return false;
        };
        let (file, frozen) = if self.unified {
            ("cgroup.freeze", "1")
        } else {
            ("freezer.state", "FROZEN")
        };
        std::fs::read_to_string(dir.join(file)).is_ok_and(|state| state.trim() == frozen)
    }

    /// Removes the cgroup, killing anything still in it, and waits up to
    /// `REMOVE_PATIENCE` for what it killed to leave. `libcgroups` kills
    /// and then retries `rmdir` for about 100 ms; a process killed a moment
    /// before (a worker whose shim was SIGKILLed, unmapping its memory on a
    /// busy node) can take longer, and the cgroup would be left behind.
    pub fn remove(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + REMOVE_PATIENCE;
        loop {
            match self.manager.remove() {
                Ok(()) => return Ok(()),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(Error::internal(format!("removing cgroup {}", self.name), e)),
            }
        }
    }
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Where the memory controller keeps the cgroup at `path`.
fn memory_dir(unified: bool, path: &Path) -> Option<PathBuf> {
    let root = if unified {
        libcgroups::v2::util::get_unified_mount_point().ok()?
    } else {
        libcgroups::v1::util::get_subsystem_mount_point(&libcgroups::v1::ControllerType::Memory)
            .ok()?
    };
    Some(root.join(path.strip_prefix("/").unwrap_or(path)))
}

/// Where the freezer keeps the cgroup at `path`.
fn freezer_dir(unified: bool, path: &Path) -> Option<PathBuf> {
    let root = if unified {
        libcgroups::v2::util::get_unified_mount_point().ok()?
    } else {
        libcgroups::v1::util::get_subsystem_mount_point(&libcgroups::v1::ControllerType::Freezer)
            .ok()?
    };
    Some(root.join(path.strip_prefix("/").unwrap_or(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counter_of_v1_and_v2() {
        assert_eq!(
            oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            oom_kill_count("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"),
            1
        );
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }

    /// Needs root and a cgroup hierarchy: creates a real cgroup for this test
    /// process's child, limits its memory, reads the limit back and removes it.
    #[test]
    fn real_cgroup_limits_and_is_removed() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let id = format!("wasmshim-unit-{}", std::process::id());
        let plan: CgroupPlan = CgroupPlan {
            path: CgroupsPath::parse(&format!("/wasmshim-unit/{id}"), &id).unwrap(),
            resources: serde_json::from_value(serde_json::json!({
                "memory": {"limit": 33554432},
                "pids": {"limit": 10}
            }))
            .unwrap(),
        };
        let cgroup = Cgroup::join(&plan, &id, child.id()).unwrap();
        let limit = cgroup.stats().unwrap().stats.memory.memory.limit;
        let pids = cgroup.stats().unwrap().stats.pids;
        let dir = cgroup.memory_dir.clone().unwrap();
        assert!(dir.exists(), "{}", dir.display());
        cgroup.remove().unwrap();
        let _ = child.wait();
        assert_eq!(limit, 33554432);
        assert_eq!(pids.limit, 10);
        assert!(!dir.exists(), "{} is left", dir.display());
        // The parent `/wasmshim-unit`, in every controller that has it.
        for controller in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let _ = std::fs::remove_dir(controller.path().join("wasmshim-unit"));
        }
        let _ = std::fs::remove_dir("/sys/fs/cgroup/wasmshim-unit");
    }

    /// Needs root and a cgroup hierarchy: freezes a real cgroup holding a
    /// child (the freezer says FROZEN), thaws it; a cgroup that does not
    /// exist is refused with the reason. Its parent is its own: the other
    /// real-cgroup test removes `/wasmshim-unit` when it ends.
    #[test]
    fn real_cgroup_freezes_and_thaws_and_none_is_refused() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let id = format!("wasmshim-unit-freeze-{}", std::process::id());
        let plan = |id: &str| CgroupPlan {
            path: CgroupsPath::parse(&format!("/wasmshim-unit-freezer/{id}"), id).unwrap(),
            resources: Default::default(),
        };
        let missing = Cgroup::open(&plan("no-such-container"), "no-such-container").unwrap();
        let err = missing.freeze(true).unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
        assert!(
            err.message().contains("cannot be paused"),
            "{}",
            err.message()
        );

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let cgroup = Cgroup::join(&plan(&id), &id, child.id()).unwrap();
        let dir = cgroup.freezer_dir.clone().unwrap();
        let state = || {
            if cgroup.unified {
                std::fs::read_to_string(dir.join("cgroup.events"))
                    .unwrap()
                    .lines()
                    .find(|l| l.starts_with("frozen "))
                    .map(|l| if l == "frozen 1" { "FROZEN" } else { "THAWED" })
                    .unwrap()
                    .to_string()
            } else {
                std::fs::read_to_string(dir.join("freezer.state"))
                    .unwrap()
                    .trim()
                    .to_string()
            }
        };
        let before = cgroup.frozen();
        cgroup.freeze(true).unwrap();
        let frozen = (state(), cgroup.frozen());
        cgroup.freeze(false).unwrap();
        let thawed = (state(), cgroup.frozen());
        let _ = child.kill();
        let _ = child.wait();
        cgroup.remove().unwrap();
        for controller in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let _ = std::fs::remove_dir(controller.path().join("wasmshim-unit-freezer"));
        }
        let _ = std::fs::remove_dir("/sys/fs/cgroup/wasmshim-unit-freezer");
        assert!(!before, "a new cgroup reads as frozen");
        assert_eq!(frozen, ("FROZEN".to_string(), true));
        assert_eq!(thawed, ("THAWED".to_string(), false));
    }
}
