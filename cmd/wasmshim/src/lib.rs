//! Library side of the `wasmshim` command line, shared with the integration tests.

pub mod cache;
pub mod doctor;
pub mod image;
