//! `containerd-shim-wasmedge-v1`: the shim binary behind `io.containerd.wasmedge.v1`.
//!
//! The front binary: it runs containerd's `start` and `delete` without
//! loading libwasmedge and libLLVM, and turns into
//! `containerd-shim-wasmedge-v1-server` (src/server.rs) for the rest.

fn main() {
    wasmshim::run_front("wasmedge");
}
