//! Library side of the `wasmshim` command line, shared with the integration tests.

pub mod image;
