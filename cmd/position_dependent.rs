//! Shared by the shim crates' build scripts: links their binaries as
//! position-dependent executables (`-no-pie`), as Go links containerd's own
//! shims and runc.
//!
//! Every container start executes a shim binary several times (`start`, the
//! shim server, `delete`). As a PIE, the 47 MB wasmtime shim made the dynamic
//! loader apply 76,000 relative relocations at each exec and copy the pages
//! they touch (1.1 MB of `.data.rel.ro`) into the process; linked at a fixed
//! address it has 89, and those pages stay shared with the page cache.
//! Interleaved `ctr run --rm` of a 28 KB module: 104 → 92-97 ms
//! (docs/performance-history.md). The cost is that the executable's own
//! image is not randomized; its libraries, stack and heap still are.

/// Asks cargo to link this crate's binaries without `-pie`. rustc passes
/// `-pie` first, and the last of the two wins; the objects stay
/// position-independent, so only the link changes, not any dependency.
pub fn emit() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
