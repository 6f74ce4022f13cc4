//! `wasmshim doctor`: checks this node for what the shims need to start
//! containers, and prints every problem with its fix. Runs in the CLI process.
//!
//! Each check is a function of its inputs (directories to search, a config
//! file's text, a cgroup root, …) returning a [`Finding`], so the tests run
//! them against temporary directories; [`Node::from_env`] gathers the real
//! inputs and [`Node::check`] runs every check in order. What each check
//! means and how to fix what it reports: `docs/doctor.md`.
//!
//! This file holds the report (a [`Finding`] per check, the exit status) and
//! [`run`]; the checks are in `binaries` (containerd, the shims, runc),
//! `config` (containerd's config file), `cgroups`, `libraries` (the engines'
//! system libraries) and `module_cache`; `node` gathers their inputs and runs
//! them in order.

use std::fmt;
use std::path::PathBuf;

mod binaries;
mod cgroups;
mod config;
#[cfg(test)]
mod fixtures;
mod libraries;
mod module_cache;
mod node;

pub use binaries::{
    check_containerd, check_runc, check_shim, look_up, search_dirs, shim_version_summary,
    version_output, with_dir, ContainerdVersion, Lookup, STANDARD_DIRS,
};
pub use cgroups::{cgroup_mode, check_cgroup, CgroupMode, CGROUP_ROOT};
pub use config::{
    check_config_file, check_missing_config, check_runtime, runtime_snippet, ConfigVersion,
    ContainerdConfig, Declaration,
};
pub use libraries::{check_library, find_library, needs_library};
pub use module_cache::{cache_dir, check_cache};
pub use node::Node;

/// containerd's config file when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";

/// Arguments of `wasmshim doctor`.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    /// containerd's config file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Nothing to fix.
    Ok,
    /// A problem, and what to do about it.
    Fail {
        /// What is wrong.
        why: String,
        /// How to fix it.
        fix: String,
    },
    /// Not checked, or not relevant on this node.
    Skip {
        /// Why.
        why: String,
    },
}

/// One check's line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked (and, when it is fine, what was found).
    pub what: String,
    /// The outcome.
    pub status: Status,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Self {
        let what = what.into();
        Finding {
            what,
            status: Status::Ok,
        }
    }

    fn fail(what: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> Self {
        let (why, fix) = (why.into(), fix.into());
        Finding {
            what: what.into(),
            status: Status::Fail { why, fix },
        }
    }

    fn skip(what: impl Into<String>, why: impl Into<String>) -> Self {
        let why = why.into();
        Finding {
            what: what.into(),
            status: Status::Skip { why },
        }
    }

    /// True when this finding is a problem.
    pub fn is_fail(&self) -> bool {
        matches!(self.status, Status::Fail { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            Status::Ok => write!(f, "ok   {}", self.what),
            Status::Fail { why, fix } => write!(f, "FAIL {}: {why}. Fix: {fix}", self.what),
            Status::Skip { why } => write!(f, "skip {}: {why}", self.what),
        }
    }
}

/// The exit status for a report: 1 when a check failed, else 0.
pub fn exit_status(findings: &[Finding]) -> i32 {
    i32::from(findings.iter().any(Finding::is_fail))
}

/// Runs every check on this node, prints the report and returns the exit status.
pub fn run(args: &DoctorArgs) -> i32 {
    let findings = Node::from_env(args).check();
    for finding in &findings {
        println!("{finding}");
    }
    exit_status(&findings)
}

/// The shim binary of the engine called `engine`.
pub fn shim_binary(engine: &str) -> String {
    format!("containerd-shim-{engine}-v1")
}

/// The runtime name (CRI `runtime_type`) of the engine called `engine`.
pub fn runtime_type(engine: &str) -> String {
    format!("io.containerd.{engine}.v1")
}

fn indent(text: &str) -> String {
    let indent_line = |l: &str| match l {
        "" => String::new(),
        l => format!("    {l}"),
    };
    let lines: Vec<String> = text.lines().map(indent_line).collect();
    lines.join("\n")
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn show_dirs(dirs: &[PathBuf]) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    dirs.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_non_zero_only_with_a_failure() {
        let fine = vec![Finding::ok("a"), Finding::skip("b", "not here")];
        assert_eq!(exit_status(&fine), 0);
        let mut broken = fine.clone();
        broken.push(Finding::fail("c", "broken", "mend it"));
        assert_eq!(exit_status(&broken), 1);
        assert_eq!(broken[2].to_string(), "FAIL c: broken. Fix: mend it");
    }
}
