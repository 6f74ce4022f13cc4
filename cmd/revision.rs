//! Shared by the shim crates' build scripts: records the git revision the
//! binary is built from as `WASMSHIM_GIT_REVISION`, for `--version`.
//!
//! Only these small binary crates watch `.git`: a commit relinks the shims,
//! not the `wasmshim` library and everything built on it.

use std::path::Path;
use std::process::Command;

/// Sets `WASMSHIM_GIT_REVISION` for the crate being built, and has cargo
/// run the build script again when HEAD or the branch it names moves (not
/// when the index changes, which `git status` rewrites).
pub fn emit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut watched = vec![".git/HEAD".to_string(), ".git/packed-refs".to_string()];
    if let Ok(head) = std::fs::read_to_string(root.join(".git/HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            watched.push(format!(".git/{reference}"));
        }
    }
    for git in watched {
        if root.join(&git).exists() {
            println!("cargo:rerun-if-changed={}", root.join(git).display());
        }
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WASMSHIM_GIT_REVISION={revision}");
}
