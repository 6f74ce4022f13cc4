//! The WasmEdge engine: WASI preview 1 modules through `wasmedge-sdk`.
//!
//! Runs in the worker process. WasmEdge's WASI uses the process's own fds 0-2,
//! which the worker has set to the container's fifos. Where libwasmedge was
//! built with its LLVM AOT compiler, `prepare` compiles the module ahead of time
//! into a shared object and runs that; otherwise it runs the interpreter.
//! [`engine_config`] is the one place the WasmEdge configuration is built.

use std::collections::HashMap;

use anyhow::{bail, Context};
use wasmedge_sdk::config::{CommonConfigOptions, ConfigBuilder};
use wasmedge_sdk::error::{CoreCommonError, CoreError, WasmEdgeError};
use wasmedge_sdk::vm::SyncInst;
use wasmedge_sdk::wasi::WasiModule;
use wasmedge_sdk::{params, ExternalInstanceType, LogManager, Module, Store, Vm};

use super::{Engine, Outcome, PreparedModule, RunSpec};

/// The WasmEdge engine (`io.containerd.wasmedge.v1`).
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmEdgeEngine;

impl WasmEdgeEngine {
    /// Creates the engine; cheap, WasmEdge is touched only when a module is prepared.
    pub fn new() -> Self {
        WasmEdgeEngine
    }
}

/// The WasmEdge configuration every module is compiled and run with.
pub fn engine_config() -> anyhow::Result<wasmedge_sdk::config::Config> {
    ConfigBuilder::new(CommonConfigOptions::default())
        .build()
        .map_err(|e| anyhow::anyhow!("WasmEdge configuration: {e}"))
}

impl Engine for WasmEdgeEngine {
    fn name(&self) -> &'static str {
        "wasmedge"
    }

    fn version(&self) -> String {
        wasmedge_sdk::utils::CoreVersion::version_string()
    }

    fn prepare(&self, wasm: &[u8], spec: &RunSpec) -> anyhow::Result<Box<dyn PreparedModule>> {
        // WasmEdge logs compile progress at info level to stderr, which is the
        // container's: keep only its errors there.
        LogManager::log_error_info();
        load_plugins(spec);
        let config = engine_config()?;
        let mut module = Module::from_bytes(Some(&config), wasm)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("{} is not a valid WebAssembly module", spec.module_name))?;
        match module.get_export(&spec.entry) {
            Some(ExternalInstanceType::Func(ty)) if ty.args().is_empty() => {}
            Some(ExternalInstanceType::Func(_)) => bail!(
                "function '{}' of {} takes parameters; only functions without parameters can be an entrypoint",
                spec.entry,
                spec.module_name
            ),
            _ => bail!("{} has no exported function '{}'", spec.module_name, spec.entry),
        }
        if let Some(compiled) = aot::compile(wasm, &config) {
            module = compiled;
        }
        let mut preopens = Vec::with_capacity(spec.preopens.len());
        for dir in &spec.preopens {
            // WasmEdge only logs a directory it cannot bind; fail here with a clear message instead.
            if !dir.host.is_dir() {
                bail!(
                    "cannot open {} to mount it at {}: not a directory",
                    dir.host.display(),
                    dir.guest
                );
            }
            let host = dir.host.to_string_lossy();
            if host.contains(':') || dir.guest.contains(':') {
                bail!(
                    "cannot mount {host} at {}: WasmEdge cannot preopen paths containing ':'",
                    dir.guest
                );
            }
            let mode = if dir.readonly { ":readonly" } else { "" };
            preopens.push(format!("{}:{host}{mode}", dir.guest));
        }
        let env = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Ok(Box::new(PreparedWasmEdge {
            module,
            args: spec.args.clone(),
            env,
            preopens,
            entry: spec.entry.clone(),
        }))
    }
}

/// Loads the WasmEdge plugins of the directories the spec's
/// `WASMEDGE_PLUGIN_PATH` lists (colon-separated), as the `wasmedge` CLI does.
fn load_plugins(spec: &RunSpec) {
    let Some(paths) = spec.env_var("WASMEDGE_PLUGIN_PATH") else {
        return;
    };
    for dir in paths.split(':').filter(|d| !d.is_empty()) {
        if let Err(e) = wasmedge_sdk::plugin::PluginManager::load(Some(std::path::Path::new(dir))) {
            log::warn!("loading WasmEdge plugins from {dir}: {e}");
        }
    }
}

/// A loaded (and, where possible, AOT-compiled) module with its WASI settings.
struct PreparedWasmEdge {
    module: Module,
    args: Vec<String>,
    env: Vec<String>,
    preopens: Vec<String>,
    entry: String,
}

impl PreparedModule for PreparedWasmEdge {
    fn run(self: Box<Self>) -> Outcome {
        match self.run_entry() {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Trapped(format!("{e:#}")),
        }
    }
}

impl PreparedWasmEdge {
    fn run_entry(self) -> anyhow::Result<Outcome> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<&str> = self.env.iter().map(String::as_str).collect();
        let preopens: Vec<&str> = self.preopens.iter().map(String::as_str).collect();
        let mut wasi = WasiModule::create(Some(args), Some(env), Some(preopens))
            .map_err(|e| anyhow::anyhow!("creating the WASI module: {e}"))?;
        let mut instances: HashMap<String, &mut dyn SyncInst> = HashMap::new();
        instances.insert(wasi.name().to_string(), wasi.as_mut());
        let config = engine_config()?;
        let store =
            Store::new(Some(&config), instances).map_err(|e| anyhow::anyhow!("store: {e}"))?;
        let mut vm = Vm::new(store);
        vm.register_module(None, self.module)
            .map_err(|e| anyhow::anyhow!("instantiating: {e}"))?;
        let result = vm.run_func(None, &self.entry, params!());
        drop(vm);
        // `proc_exit` ends the run either way; the WASI module holds the code (0 if never called).
        Ok(match result {
            Ok(_) => Outcome::Exited(wasi.exit_code() as i32),
            Err(e) if is_terminated(&e) => Outcome::Exited(wasi.exit_code() as i32),
            Err(e) => Outcome::Trapped(e.to_string()),
        })
    }
}

/// `proc_exit` ends a WasmEdge run with the "terminated" error.
fn is_terminated(err: &WasmEdgeError) -> bool {
    matches!(
        err,
        WasmEdgeError::Core(CoreError::Common(CoreCommonError::Terminated))
    )
}

/// Ahead-of-time compilation through WasmEdge's LLVM compiler, when it has one.
mod aot {
    use super::*;

    /// The module compiled to native code, or `None` (interpreter) when this
    /// libwasmedge has no AOT compiler or compiling fails.
    pub fn compile(wasm: &[u8], config: &wasmedge_sdk::config::Config) -> Option<Module> {
        match try_compile(wasm, config) {
            Ok(module) => {
                log::debug!("WasmEdge: running the AOT-compiled module");
                Some(module)
            }
            Err(e) => {
                log::debug!("WasmEdge AOT compilation unavailable, running the interpreter: {e:#}");
                None
            }
        }
    }

    fn try_compile(wasm: &[u8], config: &wasmedge_sdk::config::Config) -> anyhow::Result<Module> {
        let compiler =
            wasmedge_sdk::Compiler::new(Some(config)).map_err(|e| anyhow::anyhow!("{e}"))?;
        // The shared object is mapped once loaded; the directory goes when `dir` drops.
        let dir = tempfile::Builder::new()
            .prefix("wasmshim-aot.")
            .tempdir()
            .context("creating a directory for the AOT output")?;
        let so = compiler
            .compile_from_bytes(wasm, "module", dir.path())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Module::from_file(Some(config), &so).map_err(|e| anyhow::anyhow!("{e}"))
    }
}
