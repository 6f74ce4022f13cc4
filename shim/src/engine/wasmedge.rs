//! The WasmEdge engine (work in progress, see issue 4).

use super::{Engine, PreparedModule, RunSpec};

/// The WasmEdge engine (`io.containerd.wasmedge.v1`).
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmEdgeEngine;

impl Engine for WasmEdgeEngine {
    fn name(&self) -> &'static str {
        "wasmedge"
    }

    fn prepare(&self, _wasm: &[u8], _spec: &RunSpec) -> anyhow::Result<Box<dyn PreparedModule>> {
        anyhow::bail!("the WasmEdge engine is not implemented yet")
    }
}
