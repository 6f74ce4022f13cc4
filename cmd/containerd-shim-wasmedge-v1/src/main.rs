//! `containerd-shim-wasmedge-v1`: the shim binary behind `io.containerd.wasmedge.v1`.
//!
//! The front binary: it runs containerd's `start` and `delete` and the shim
//! server without loading libwasmedge and libLLVM; the server's template and
//! workers run `containerd-shim-wasmedge-v1-engine` (src/engine.rs).

fn main() {
    wasmshim::run_front("wasmedge");
}
