//! `containerd-shim-wasmedge-v1`: the shim binary behind `io.containerd.wasmedge.v1`.

fn main() {
    wasmshim::run::<wasmshim::engine::wasmedge::WasmEdgeEngine>();
}
