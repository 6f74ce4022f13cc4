//! OS effects: where and how a container's module actually runs.
//!
//! [`Isolation`] is the seam between the container lifecycle and the OS. The
//! real implementation, [`process::ProcessIsolation`], runs each container in a
//! worker process of its own (the shim binary re-executed, see
//! `docs/process-model.md`); tests of the lifecycle use a recording fake.
//! This module is the only place with `unsafe` code.

pub mod process;
pub mod rootfs;
pub mod stdio;
pub mod worker;

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use crate::engine::RunSpec;
use crate::error::Result;
pub use stdio::StdioPaths;

/// Resolves to the exit status once the container's process has ended.
pub type ExitFuture = Pin<Box<dyn Future<Output = u32> + Send>>;

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
    /// Creates the container's process: it loads and checks the module, then
    /// waits for [`Starter::start`]. Errors name what is wrong with the module.
    async fn create(&self, id: &str, spec: &RunSpec, stdio: &StdioPaths) -> Result<Spawned>;

    /// Sends `signal` to the container's process.
    fn signal(&self, pid: u32, signal: u32) -> Result<()>;
}
