//! The protocol layer: containerd's shim v2 Task service over ttrpc.
//!
//! [`service::TaskService`] maps requests onto [`crate::instance::Container`]s
//! kept in a map by container id (one shim process can serve several
//! containers); [`bootstrap::ShimMain`] implements the shim binary's `start`
//! and `delete` commands. Runs in the shim process.

pub mod bootstrap;
pub mod events;
pub mod metrics;
pub mod service;
