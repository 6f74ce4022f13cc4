//! OS effects: where and how a container's module actually runs.
//!
//! [`Isolation`] is the seam between the container lifecycle and the OS. The
//! real implementation, [`process::ProcessIsolation`], runs each container in a
//! worker process of its own (the shim binary re-executed, see
//! `docs/process-model.md`); tests of the lifecycle use a recording fake.
//! This module is the only place with `unsafe` code.

pub mod cgroup;
pub mod confine;
pub mod enclosure;
pub mod hooks;
pub mod plan;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod stdio;
pub mod worker;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;

use crate::engine::RunSpec;
use crate::error::Result;
pub use cgroup::CgroupStats;
pub use stdio::StdioPaths;

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    /// Exit status (128+n when killed by signal n).
    pub status: u32,
    /// The kernel's OOM killer killed it (its cgroup hit its memory limit).
    pub oom_killed: bool,
}

/// Resolves once the container's process has ended.
pub type ExitFuture = Pin<Box<dyn Future<Output = Exited> + Send>>;

/// A created, not yet started, container process.
pub struct Spawned {
    /// The process id containerd reports for the task.
    pub pid: u32,
    /// Lets the process run its module.
    pub starter: Box<dyn Starter>,
    /// Resolves when the process ends, with its exit status (128+n when killed by signal n).
    pub exit: ExitFuture,
}

/// Releases a created process to run its module.
#[async_trait]
pub trait Starter: Send {
    /// Tells the process to run the module's entry function.
    async fn start(self: Box<Self>) -> Result<()>;
}

/// Where and how a container runs.
#[async_trait]
pub trait Isolation: Send + Sync {
    /// Creates the container's process, confined as the bundle's spec says
    /// (cgroup, namespaces, user, seccomp, hooks): it loads and checks the
    /// module, then waits for [`Starter::start`]. Errors name what is wrong.
    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        spec: &RunSpec,
        stdio: &StdioPaths,
    ) -> Result<Spawned>;

    /// Sends `signal` to the container's process.
    fn signal(&self, pid: u32, signal: u32) -> Result<()>;

    /// Resource usage of container `id` (its cgroup).
    fn stats(&self, id: &str) -> Result<CgroupStats>;

    /// Removes what Create set up around container `id`'s process (its
    /// cgroup) and runs its poststop hooks; the process must have exited.
    async fn delete(&self, id: &str);
}
