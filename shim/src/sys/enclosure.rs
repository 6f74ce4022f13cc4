//! [`Enclosure`]: what surrounds one container's worker on the shim's side,
//! its cgroup and its hooks, from Create to Delete.
//!
//! Runs in the shim process. The worker itself applies the rest of the plan
//! (namespaces, identity, seccomp: [`super::confine`]).

use std::path::{Path, PathBuf};

use super::cgroup::{Cgroup, CgroupStats};
use super::hooks::{self, HookContext, HookKind};
use super::plan::Plan;
use crate::error::Result;

/// A container's cgroup and hooks, for the life of the container.
#[derive(Debug)]
pub struct Enclosure {
    id: String,
    bundle: PathBuf,
    plan: Plan,
    pid: u32,
    cgroup: Cgroup,
}

impl Enclosure {
    /// Puts the just-spawned worker `pid` in the container's cgroup, with its
    /// limits, before the worker does anything.
    pub fn enter(id: &str, bundle: &Path, plan: Plan, pid: u32) -> Result<Self> {
        let cgroup = Cgroup::join(&plan.cgroup, id, pid)?;
        log::debug!("container {id}: worker {pid} in cgroup {}", cgroup.name());
        Ok(Enclosure {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            plan,
            pid,
            cgroup,
        })
    }

    /// The enclosure of container `id` found again from its plan by a later
    /// process: the OCI CLI's `start` and `delete` (worker `pid`), or the
    /// shim's `delete` after the shim died (pid 0).
    pub fn reopen(id: &str, bundle: &Path, plan: Plan, pid: u32) -> Result<Self> {
        let cgroup = Cgroup::open(&plan.cgroup, id)?;
        Ok(Enclosure {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            plan,
            pid,
            cgroup,
        })
    }

    /// The plan this container was created with.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn context(&self, pid: u32) -> HookContext<'_> {
        HookContext {
            id: &self.id,
            bundle: &self.bundle,
            pid,
            annotations: &self.plan.annotations,
        }
    }

    /// Create's hooks, once the worker is confined and has loaded the module:
    /// `prestart`, `createRuntime`, then `createContainer`.
    pub async fn created(&self) -> Result<()> {
        let context = self.context(self.pid);
        for kind in [
            HookKind::Prestart,
            HookKind::CreateRuntime,
            HookKind::CreateContainer,
        ] {
            hooks::run(kind, &self.plan.hooks, &context).await?;
        }
        Ok(())
    }

    /// `startContainer` hooks, before the worker is told to run the module.
    pub async fn starting(&self) -> Result<()> {
        hooks::run(
            HookKind::StartContainer,
            &self.plan.hooks,
            &self.context(self.pid),
        )
        .await
    }

    /// `poststart` hooks, once the worker was told to run the module.
    pub async fn started(&self) {
        hooks::run_logged(
            HookKind::Poststart,
            &self.plan.hooks,
            &self.context(self.pid),
        )
        .await;
    }

    /// Whether the kernel's OOM killer killed something in the container.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.oom_kills() > 0
    }

    /// Statistics of the container's cgroup.
    pub fn stats(&self) -> Result<CgroupStats> {
        self.cgroup.stats()
    }

    /// Freezes (`frozen`) or thaws every process of the container's cgroup:
    /// pause and resume. Refused with the reason when there is no freezer.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        self.cgroup.freeze(frozen)
    }

    /// Whether the container's cgroup is frozen (read from the kernel).
    pub fn frozen(&self) -> bool {
        self.cgroup.frozen()
    }

    /// Removes the cgroup (the worker must be gone), or logs why not and
    /// returns false. Failed Create uses this.
    pub fn remove(&self) -> bool {
        match self.cgroup.remove() {
            Ok(()) => true,
            Err(e) => {
                log::error!("container {}: {e}", self.id);
                false
            }
        }
    }

    /// Delete: removes the cgroup, then runs the `poststop` hooks (whose
    /// failures are logged, as the runtime spec asks). Returns whether the
    /// cgroup is gone.
    pub async fn delete(&self) -> bool {
        let removed = self.remove();
        hooks::run_logged(HookKind::Poststop, &self.plan.hooks, &self.context(0)).await;
        removed
    }
}

/// Releases what surrounds container `id` when its shim died before Delete:
/// removes its cgroup (killing anything left in it) and runs its `poststop`
/// hooks, as runc's `delete --force` does.
pub async fn release_orphan(id: &str, bundle: &Path, spec: &oci_spec::runtime::Spec) -> Result<()> {
    let plan = Plan::from_spec(spec, id)?;
    Enclosure::reopen(id, bundle, plan, 0)?.delete().await;
    Ok(())
}
