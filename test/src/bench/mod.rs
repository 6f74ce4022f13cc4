//! `make bench`: start latency, memory per container, density and big-module
//! starts of our shims, each measured beside runc running a static busybox in
//! the same private containerd and the same run; and `docker run --rm`
//! through `wasmshim-oci` beside runc in one private Docker 20.10.

pub mod bigmodule;
pub mod chart;
pub mod docker;
pub mod http;
pub mod memory;
pub mod report;
pub mod scenarios;
pub mod stats;
