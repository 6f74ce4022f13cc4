//! [`Freezable`]: pause and resume for the containers of another
//! [`Isolation`], through the freezer of the container's cgroup (cgroup v2
//! `cgroup.freeze`, or v1's `freezer` controller, both by youki's
//! `libcgroups`). Wasm containers get it: their worker and everything it
//! started sit in the container's cgroup. Runs in the shim process.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::cgroup::Cgroup;
use super::plan::CgroupPlan;
use super::{CgroupStats, ContainerProcess, ExecRequest, Isolation, ProcessRequest, Spawned};
use crate::error::{Error, Result};

/// Adds pause and resume by the cgroup freezer to `inner`'s containers.
pub struct Freezable {
    inner: Arc<dyn Isolation>,
}

impl Freezable {
    /// Containers of `inner`, pausable through their cgroup.
    pub fn new(inner: Arc<dyn Isolation>) -> Self {
        Freezable { inner }
    }
}

#[async_trait]
impl Isolation for Freezable {
    async fn create(&self, request: &ProcessRequest<'_>) -> Result<Spawned> {
        let plan = CgroupPlan::from_spec(request.spec, request.id)?;
        let spawned = self.inner.create(request).await?;
        // The cgroup the inner isolation made; none (an error): pause is refused.
        let cgroup = Cgroup::open(&plan, request.id).map_err(|e| e.message());
        Ok(Spawned {
            process: Box::new(FrozenOrNot {
                inner: spawned.process,
                cgroup,
            }),
            exit: spawned.exit,
        })
    }

    async fn release_orphan(
        &self,
        id: &str,
        bundle: &Path,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<()> {
        self.inner.release_orphan(id, bundle, spec).await
    }
}

/// A container process of the inner isolation, with its cgroup's freezer.
struct FrozenOrNot {
    inner: Box<dyn ContainerProcess>,
    /// The container's cgroup, or why it could not be opened.
    cgroup: std::result::Result<Cgroup, String>,
}

impl FrozenOrNot {
    fn freeze(&self, frozen: bool) -> Result<()> {
        match &self.cgroup {
            Ok(cgroup) => cgroup.freeze(frozen),
            Err(why) => Err(Error::FailedPrecondition(format!(
                "the container has no cgroup, so it cannot be paused: {why}"
            ))),
        }
    }
}

#[async_trait]
impl ContainerProcess for FrozenOrNot {
    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    async fn start(&self) -> Result<()> {
        self.inner.start().await
    }

    fn signal(&self, signal: u32) -> Result<()> {
        self.inner.signal(signal)
    }

    fn oom_killed(&self) -> bool {
        self.inner.oom_killed()
    }

    fn stats(&self) -> Result<CgroupStats> {
        self.inner.stats()
    }

    async fn release(&self) -> bool {
        self.inner.release().await
    }

    async fn pause(&self) -> Result<()> {
        self.freeze(true)
    }

    async fn resume(&self) -> Result<()> {
        self.freeze(false)
    }

    async fn exec(&self, request: &ExecRequest<'_>) -> Result<Spawned> {
        self.inner.exec(request).await
    }
}
