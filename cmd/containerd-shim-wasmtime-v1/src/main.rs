//! `containerd-shim-wasmtime-v1`: the shim binary behind `io.containerd.wasmtime.v1`.

fn main() {
    wasmshim::run::<wasmshim::engine::wasmtime::WasmtimeEngine>(env!("WASMSHIM_GIT_REVISION"));
}
