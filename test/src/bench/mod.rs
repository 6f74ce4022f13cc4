//! `make bench`: start latency, memory per container, density and big-module
//! starts of our shims, each measured beside runc running a static busybox in
//! the same private containerd and the same run.

pub mod bigmodule;
pub mod chart;
pub mod memory;
pub mod report;
pub mod scenarios;
pub mod stats;
