//! `containerd-shim-wasmedge-v1-engine`: the engine binary of
//! `io.containerd.wasmedge.v1`, linked with WasmEdge. The shim's template
//! and workers run it; containerd never runs it directly (see
//! `wasmshim::front`).

fn main() {
    wasmshim::run::<wasmshim::engine::wasmedge::WasmEdgeEngine>(env!("WASMSHIM_GIT_REVISION"));
}
