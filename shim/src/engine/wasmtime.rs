//! The wasmtime engine: WASI preview 1 modules through `wasmtime-wasi`.
//!
//! Runs in the worker process. [`engine_config`] is the one place the
//! wasmtime configuration is built, so that anything compiled ahead of time
//! later uses exactly the settings modules are run with.

use anyhow::{bail, Context};
use wasmtime::{ExternType, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::{Engine, Outcome, PreparedModule, RunSpec};

/// The wasmtime engine (`io.containerd.wasmtime.v1`).
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmtimeEngine;

impl WasmtimeEngine {
    /// Creates the engine; cheap, nothing is allocated until a module is prepared.
    pub fn new() -> Self {
        WasmtimeEngine
    }
}

/// Modules at least this big are compiled on several threads.
pub const PARALLEL_COMPILE_MIN_BYTES: usize = 256 * 1024;

/// The wasmtime configuration every module is compiled and run with.
pub fn engine_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    config
}

impl Engine for WasmtimeEngine {
    fn name(&self) -> &'static str {
        "wasmtime"
    }

    fn version(&self) -> String {
        env!("WASMSHIM_WASMTIME_VERSION").to_string()
    }

    fn prepare(&self, wasm: &[u8], spec: &RunSpec) -> anyhow::Result<Box<dyn PreparedModule>> {
        let mut config = engine_config();
        // Threads pay off only for big modules. A small one compiles as fast on
        // this thread, and the worker then keeps no per-thread heaps for the
        // container's whole life.
        config.parallel_compilation(wasm.len() >= PARALLEL_COMPILE_MIN_BYTES);
        let engine = wasmtime::Engine::new(&config)?;
        let module = Module::new(&engine, wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{} is not a valid WebAssembly module", spec.module_name))?;
        match module.get_export(&spec.entry) {
            Some(ExternType::Func(ty)) if ty.params().len() == 0 => {}
            Some(ExternType::Func(_)) => bail!(
                "function '{}' of {} takes parameters; only functions without parameters can be an entrypoint",
                spec.entry,
                spec.module_name
            ),
            _ => bail!(
                "{} has no exported function '{}'",
                spec.module_name,
                spec.entry
            ),
        }

        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot link {}", spec.module_name))?;

        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdio().args(&spec.args).envs(&spec.env);
        for dir in &spec.preopens {
            let perms = if dir.readonly {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "cannot open {} to mount it at {}",
                        dir.host.display(),
                        dir.guest
                    )
                })?;
        }
        let store = Store::new(&engine, wasi.build_p1());
        Ok(Box::new(PreparedWasmtime {
            store,
            pre,
            entry: spec.entry.clone(),
        }))
    }
}

/// A linked module and its store, ready to instantiate.
struct PreparedWasmtime {
    store: Store<WasiP1Ctx>,
    pre: InstancePre<WasiP1Ctx>,
    entry: String,
}

impl PreparedModule for PreparedWasmtime {
    fn run(self: Box<Self>) -> Outcome {
        let PreparedWasmtime {
            mut store,
            pre,
            entry,
        } = *self;
        let result = pre.instantiate(&mut store).and_then(|instance| {
            let func = instance
                .get_func(&mut store, &entry)
                .ok_or_else(|| wasmtime::format_err!("entry function disappeared"))?;
            let mut results = vec![wasmtime::Val::I32(0); func.ty(&store).results().len()];
            func.call(&mut store, &[], &mut results)
        });
        match result {
            Ok(()) => Outcome::Exited(0),
            Err(err) => match err.downcast_ref::<I32Exit>() {
                Some(exit) => Outcome::Exited(exit.0),
                None => Outcome::Trapped(format!("{err:?}")),
            },
        }
    }
}
