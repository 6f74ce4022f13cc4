//! A generated module with a lot of code, to measure what compilation costs
//! a container start.
//!
//! Many functions `(param i32) (result i32)` of straight-line integer
//! arithmetic; `_start` calls each once and returns, so the module exits 0 and
//! needs no imports. Only the size of the code matters, not what it computes.

use wasm_encoder::{
    CodeSection, ExportKind, ExportSection, Function, FunctionSection, Module, TypeSection, ValType,
};

/// Bytes of code in each generated function (approximately).
const FUNCTION_BYTES: usize = 2048;
/// Bytes one arithmetic step encodes to: see [`step`].
const STEP_BYTES: usize = 10;

/// A valid module whose code section holds at least `code_bytes` bytes.
pub fn generate(code_bytes: usize) -> Vec<u8> {
    let functions = code_bytes.div_ceil(FUNCTION_BYTES).max(1) as u32;
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]); // type 0: the workers
    types.ty().function([], []); // type 1: _start

    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    for i in 0..functions {
        funcs.function(0);
        let mut f = Function::new([]);
        for s in 0..FUNCTION_BYTES / STEP_BYTES {
            step(&mut f, i as i32 + s as i32);
        }
        f.instructions().local_get(0).end();
        code.function(&f);
    }
    funcs.function(1);
    let mut start = Function::new([]);
    let mut sink = start.instructions();
    sink.i32_const(1);
    for i in 0..functions {
        sink.call(i);
    }
    sink.drop().end();
    code.function(&start);

    let mut exports = ExportSection::new();
    exports.export("_start", ExportKind::Func, functions);

    let mut module = Module::new();
    module
        .section(&types)
        .section(&funcs)
        .section(&exports)
        .section(&code);
    module.finish()
}

/// `x = (x + k) * (k | 1)`: ten bytes when `k` encodes in one LEB byte.
fn step(f: &mut Function, seed: i32) {
    let k = seed % 61 + 1;
    f.instructions()
        .local_get(0)
        .i32_const(k)
        .i32_add()
        .i32_const(k | 1)
        .i32_mul()
        .local_set(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_reaches_requested_size_and_module_parses() {
        let wasm = generate(1 << 20);
        assert!(wasm.starts_with(b"\0asm"));
        assert!(wasm.len() >= 1 << 20, "only {} bytes", wasm.len());
        assert!(wasm.len() < (1 << 20) + (1 << 17), "{} bytes", wasm.len());
        wasmparser::Validator::new()
            .validate_all(&wasm)
            .expect("generated module validates");
    }
}
