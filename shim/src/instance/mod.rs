//! The lifecycle of one container: the single state machine behind every
//! status the shim reports, and the steps that move it (create, start, kill,
//! wait, delete). Runs in the shim process; knows nothing of ttrpc or of
//! engines, reads bundles through [`crate::oci`] and reaches the OS only
//! through [`crate::sys`].

mod container;

/// A container's resource usage, for Stats.
pub use crate::sys::CgroupStats as Stats;
pub use crate::sys::StdioPaths;
pub use container::{Container, CreateRequest, ExitInfo, Launcher, Status};

/// The recording fake isolation, for the task service's unit tests (which
/// reach the OS layer only through `instance`).
#[cfg(test)]
pub(crate) use crate::sys::fake::{FakeIsolation, TestBundle};
