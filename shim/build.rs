//! Records, for `containerd-shim-<engine>-v1 --version`, the wasmtime
//! version in the lock file. The git revision is the binary crates' (see
//! cmd/revision.rs): watching `.git` here rebuilt the library at every commit.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let wasmtime = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|lock| locked_version(&lock, "wasmtime"))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WASMSHIM_WASMTIME_VERSION={wasmtime}");
}

/// The version of package `name` in a Cargo.lock.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let marker = format!("name = \"{name}\"\n");
    let after = &lock[lock.find(&marker)? + marker.len()..];
    let line = after.lines().next()?;
    Some(
        line.strip_prefix("version = \"")?
            .trim_end_matches('"')
            .to_string(),
    )
}
