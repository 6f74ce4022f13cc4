//! OS effects: where and how a container's module actually runs.
//!
//! [`Isolation`] is the seam between the container lifecycle
//! ([`crate::instance`]) and the OS. [`process::ProcessIsolation`] runs each
//! Wasm container in a worker process of its own (the shim binary
//! re-executed, see `docs/process-model.md`); [`runc::RuncIsolation`] hands
//! Linux containers (a pod's `pause`, sidecars) to runc; the lifecycle's unit
//! tests use the recording fake of `sys::fake`. This module
//! is the only place with `unsafe` code.

pub mod attach_lock;
pub mod cgroup;
pub mod code_pages;
pub mod confine;
pub mod enclosure;
pub mod freezer;
pub mod hooks;
pub mod mount_ns;
pub mod pidfd;
pub mod plan;
pub mod process;
pub mod rootfs;
pub mod runc;
pub mod seccomp;
pub mod signals;
pub mod stdio;
pub mod template;
pub mod worker;

#[cfg(test)]
pub(crate) mod fake;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;

use crate::error::Result;
use crate::oci::Workload;
pub use cgroup::CgroupStats;
pub use stdio::StdioPaths;

/// Resolves to the exit status once the container's process has ended
/// (see [`crate::exit`] for the numbers).
pub type ExitFuture = Pin<Box<dyn Future<Output = u32> + Send>>;

/// What [`Isolation::create`] needs to know about one container.
pub struct ProcessRequest<'a> {
    /// The container id.
    pub id: &'a str,
    /// The bundle directory (holding `config.json` and the mounted rootfs).
    pub bundle: &'a Path,
    /// The bundle's OCI spec, for what the OS must apply (user, namespaces, cgroups).
    pub spec: &'a oci_spec::runtime::Spec,
    /// What the container runs: a module, or a Linux program.
    pub workload: &'a Workload,
    /// The container's stdio fifos.
    pub stdio: &'a StdioPaths,
}

/// What [`ContainerProcess::exec`] needs: one more process in a running container.
pub struct ExecRequest<'a> {
    /// The exec id containerd gave (`ctr task exec --exec-id`).
    pub exec_id: &'a str,
    /// The process to run: args, env, cwd, user (the runtime-spec `process`).
    pub process: &'a oci_spec::runtime::Process,
    /// The exec's own stdio fifos.
    pub stdio: &'a StdioPaths,
}

/// A created, not yet started, container process.
pub struct Spawned {
    /// The handle the container keeps for its whole life.
    pub process: Box<dyn ContainerProcess>,
    /// Resolves when the process ends, with its exit status.
    pub exit: ExitFuture,
}

/// One container's process, as the lifecycle sees it.
#[async_trait]
pub trait ContainerProcess: Send + Sync {
    /// The process id containerd reports for the task.
    fn pid(&self) -> u32;

    /// Lets the created process run its module. The lifecycle calls it at most once.
    async fn start(&self) -> Result<()>;

    /// Sends `signal` to the process. Once the process has ended this is
    /// [`crate::Error::NotFound`]: a signal never reaches a process that reused its pid.
    fn signal(&self, signal: u32) -> Result<()>;

    /// Whether the kernel's OOM killer killed the process (its cgroup's memory limit).
    fn oom_killed(&self) -> bool {
        false
    }

    /// Resource usage of the process's cgroup.
    fn stats(&self) -> Result<CgroupStats> {
        Err(crate::Error::Unimplemented(
            "stats are not available for this container".into(),
        ))
    }

    /// Releases what surrounds the ended process (its cgroup) and runs its
    /// poststop hooks. The lifecycle calls it once, at Delete. Returns whether
    /// nothing is left (a failure is logged): only then may the shim's
    /// `delete` skip the cleanup after a dead shim.
    async fn release(&self) -> bool {
        true
    }

    /// Stops every process of the container where it is, until [`ContainerProcess::resume`].
    async fn pause(&self) -> Result<()> {
        Err(crate::Error::Unimplemented(
            "pause is not supported for this container".into(),
        ))
    }

    /// Lets the processes stopped by [`ContainerProcess::pause`] run again.
    async fn resume(&self) -> Result<()> {
        Err(crate::Error::Unimplemented(
            "resume is not supported for this container".into(),
        ))
    }

    /// Prepares one more process in this container (`ctr task exec`); it
    /// runs when the returned process is started.
    async fn exec(&self, _request: &ExecRequest<'_>) -> Result<Spawned> {
        Err(crate::Error::Unimplemented(
            "exec into a WebAssembly container is not supported: a module is a single program, \
             the container has no other program to run"
                .into(),
        ))
    }
}

/// Where and how containers run.
#[async_trait]
pub trait Isolation: Send + Sync {
    /// Creates the container's process: it loads and checks the module, then
    /// waits for [`ContainerProcess::start`]. Errors name what is wrong with the module.
    async fn create(&self, request: &ProcessRequest<'_>) -> Result<Spawned>;

    /// Releases what container `id` (of `bundle`, with `spec`) still holds
    /// when its shim died before Delete: its remaining processes, cgroup and
    /// state; runs its `poststop` hooks.
    async fn release_orphan(
        &self,
        id: &str,
        bundle: &Path,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<()>;
}
