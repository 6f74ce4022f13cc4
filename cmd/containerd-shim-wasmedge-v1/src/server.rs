//! `containerd-shim-wasmedge-v1-server`: the shim server and workers of
//! `io.containerd.wasmedge.v1`, with WasmEdge; started by
//! `containerd-shim-wasmedge-v1`, never by containerd directly.

fn main() {
    wasmshim::run::<wasmshim::engine::wasmedge::WasmEdgeEngine>();
}
