//! The protocol layer: containerd's shim v2 Task service over ttrpc.
//!
//! [`service::TaskService`] keeps the containers of this shim process in a
//! map by container id, checks requests, turns them into calls on
//! [`crate::instance::Container`] and publishes the task events. It knows
//! neither the OCI spec nor the OS. Runs in the shim process.

pub mod events;
pub mod metrics;
pub mod service;
