//! The lifecycle of one container: the single state machine behind every
//! status the shim reports. Runs in the shim process; knows nothing of ttrpc
//! or of engines, and reaches the OS only through [`crate::sys::Isolation`].

mod container;

pub use container::{Container, ExitInfo, Status};
