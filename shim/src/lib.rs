//! wasmshim: a containerd shim (runtime v2) that runs OCI bundles as
//! WebAssembly modules.
//!
//! Layers, with dependencies pointing one way (see `docs/architecture.md`):
//! [`task`] (containerd's Task API) → [`instance`] (one container's state
//! machine) → [`oci`] (bundle → [`engine::RunSpec`]) and [`sys`] (processes,
//! mounts, stdio) → [`engine`] (wasmtime, WasmEdge).
//!
//! A shim binary is one line: `wasmshim::run::<SomeEngine>()`.

pub mod engine;
pub mod error;
pub mod instance;
pub mod oci;
pub mod sys;
pub mod task;

pub use error::{Error, Result};

use engine::Engine;

/// The runtime name containerd knows a shim by, e.g. `io.containerd.wasmtime.v1`.
pub fn runtime_name(engine: &dyn Engine) -> String {
    format!("io.containerd.{}.v1", engine.name())
}

/// Entry point of a `containerd-shim-<engine>-v1` binary.
///
/// Runs as containerd's shim (`start`, `delete`, or the ttrpc server), or,
/// when re-executed by the shim for a container, as that container's worker.
pub fn run<E: Engine + Default>() {
    let engine = E::default();
    if sys::worker::is_worker() {
        sys::worker::main(&engine);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let name = runtime_name(&engine);
    runtime.block_on(containerd_shim::asynchronous::run::<
        task::bootstrap::ShimMain,
    >(&name, Some(task::bootstrap::shim_config())));
}
