//! The WasmEdge engine: WASI preview 1 modules through `wasmedge-sdk`.
//!
//! Runs in the worker process. WasmEdge's WASI uses the process's own fds 0-2,
//! which the worker has set to the container's fifos. Where libwasmedge was
//! built with its LLVM AOT compiler, `prepare` compiles the module ahead of time
//! (WasmEdge's universal Wasm: the module and its native code) and runs the
//! native code; otherwise it runs the interpreter. With a [`ModuleCache`] it
//! is compiled once, into the cache, and later starts load it from there.
//! [`engine_config`] is the one place the WasmEdge configuration is built;
//! [`native_code_config`] is the same with the run mode that executes
//! compiled native code, used only to load the shim's own output.

use std::collections::HashMap;

use anyhow::{bail, Context};
use wasmedge_sdk::config::{CommonConfigOptions, ConfigBuilder};
use wasmedge_sdk::error::{CoreCommonError, CoreError, WasmEdgeError};
use wasmedge_sdk::vm::SyncInst;
use wasmedge_sdk::wasi::WasiModule;
use wasmedge_sdk::{params, ExternalInstanceType, LogManager, Module, RunMode, Store, Vm};

use super::cache::{CacheKey, ModuleCache};
use super::{Engine, Outcome, Precompiled, PreparedModule, RunSpec, WasmKind, TCP_LISTEN_ENV};

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

/// [`engine_config`] in WasmEdge's AOT run mode, for loading the AOT output
/// the shim compiled (into its cache or a temporary directory of its own):
/// WasmEdge's universal Wasm, the module with its native code in a
/// `wasmedge` custom section.
///
/// Since WasmEdge 0.17 only this mode runs that native code: in the default
/// interpreter mode the loader ignores it, parses and validates every
/// function of the Wasm and interprets them (a 10 MB module: 0.4 s to load
/// and 450 MB of parsed code, against 2 ms). Never used for the container's
/// own bytes, which could carry such a section: the shim runs no native code
/// it did not compile itself.
pub fn native_code_config() -> anyhow::Result<wasmedge_sdk::config::Config> {
    ConfigBuilder::new(CommonConfigOptions::default().run_mode(RunMode::Aot))
        .build()
        .map_err(|e| anyhow::anyhow!("WasmEdge configuration: {e}"))
}

/// The cache key of `wasm` under `config`: WasmEdge's exact version and every
/// setting that changes the AOT output (it compiles for the host CPU, which
/// [`CacheKey::new`] adds).
fn key_for(config: &wasmedge_sdk::config::Config, wasm: &[u8]) -> CacheKey {
    let settings = format!(
        "opt={:?} format={:?} generic={} interruptible={} count={} cost={} time={} \
         simd={} relaxed_simd={} threads={} tail_call={} multi_memories={} \
         extended_const={} memory64={} exceptions={} gc={} func_refs={} \
         bulk={} ref_types={} multi_value={} sign_ext={} sat={} mut_globals={}",
        config.optimization_level(),
        config.out_format(),
        config.generic_binary_enabled(),
        config.interruptible_enabled(),
        config.instruction_counting_enabled(),
        config.cost_measuring_enabled(),
        config.time_measuring_enabled(),
        config.simd_enabled(),
        config.relax_simd_enabled(),
        config.threads_enabled(),
        config.tail_call_enabled(),
        config.multi_memories_enabled(),
        config.extended_const_enabled(),
        config.memory64_enabled(),
        config.exception_handling_enabled(),
        config.gc_enabled(),
        config.function_references_enabled(),
        config.bulk_memory_operations_enabled(),
        config.reference_types_enabled(),
        config.multi_value_enabled(),
        config.sign_extension_operators_enabled(),
        config.non_trap_conversions_enabled(),
        config.mutable_globals_enabled(),
    );
    CacheKey::new(
        "wasmedge",
        &format!(
            "wasmedge {} / wasmshim {}",
            wasmedge_sdk::utils::CoreVersion::version_string(),
            env!("CARGO_PKG_VERSION")
        ),
        settings.as_bytes(),
        wasm,
    )
}

/// The most functions a module may define: wasmtime's limit (wasmparser's
/// `MAX_WASM_FUNCTIONS`). WasmEdge 0.17 has none of its own and spends
/// minutes and gigabytes compiling a module past it.
pub const MAX_FUNCTIONS: u32 = 1_000_000;

/// Parses and validates `wasm`, naming the module in the error. A module
/// defining more than [`MAX_FUNCTIONS`] functions is refused before WasmEdge
/// reads it.
fn load(config: &wasmedge_sdk::config::Config, wasm: &[u8], name: &str) -> anyhow::Result<Module> {
    let module = match defined_functions(wasm) {
        Some(count) if count > MAX_FUNCTIONS => Err(anyhow::anyhow!(
            "it defines {count} functions, more than the {MAX_FUNCTIONS} the wasmedge engine accepts"
        )),
        _ => Module::from_bytes(Some(config), wasm).map_err(|e| anyhow::anyhow!("{e}")),
    };
    module.with_context(|| format!("{name} is not a valid WebAssembly module"))
}

/// The count the function section of `wasm` declares (0 without one), or
/// `None` when the sections up to it cannot be read (WasmEdge then names
/// the fault).
fn defined_functions(wasm: &[u8]) -> Option<u32> {
    /// An unsigned LEB128 `u32` at the start of `bytes`, and the rest.
    fn leb_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
        let mut value: u32 = 0;
        for (i, byte) in bytes.iter().take(5).enumerate() {
            value |= u32::from(byte & 0x7f).checked_shl(7 * i as u32)?;
            if byte & 0x80 == 0 {
                return Some((value, &bytes[i + 1..]));
            }
        }
        None
    }
    let mut rest = wasm.get(8..)?;
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, body) = leb_u32(after_id)?;
        let section = body.get(..size as usize)?;
        if id == 3 {
            return leb_u32(section).map(|(count, _)| count);
        }
        rest = &body[size as usize..];
    }
    Some(0)
}

/// Fails, naming `name`, when `wasm` is a component: this engine runs core
/// modules only.
fn refuse_component(wasm: &[u8], name: &str) -> anyhow::Result<()> {
    if WasmKind::of(wasm) == Some(WasmKind::Component) {
        bail!(
            "{name} is a WebAssembly component; the wasmedge engine runs only core modules \
             (run components with io.containerd.wasmtime.v1)"
        );
    }
    Ok(())
}

/// Refuses a container that declares listeners for the wasmtime engine to
/// hand in ([`TCP_LISTEN_ENV`]): WasmEdge modules open their own sockets.
fn refuse_listeners(spec: &RunSpec) -> anyhow::Result<()> {
    if spec.env_var(TCP_LISTEN_ENV).is_some() {
        bail!(
            "{TCP_LISTEN_ENV} declares listening sockets, which only the wasmtime engine hands to \
             modules; on wasmedge {} opens its own with WasmEdge's socket functions \
             (sock_open, sock_bind, sock_listen)",
            spec.module_name
        );
    }
    Ok(())
}

impl Engine for WasmEdgeEngine {
    fn name(&self) -> &'static str {
        "wasmedge"
    }

    fn version(&self) -> String {
        wasmedge_sdk::utils::CoreVersion::version_string()
    }

    fn cache_key(&self, wasm: &[u8]) -> anyhow::Result<Option<CacheKey>> {
        Ok(Some(key_for(&engine_config()?, wasm)))
    }

    fn precompile(
        &self,
        wasm: &[u8],
        source: &str,
        cache: &ModuleCache,
    ) -> anyhow::Result<Precompiled> {
        refuse_component(wasm, source)?;
        LogManager::log_error_info();
        let config = engine_config()?;
        let key = key_for(&config, wasm);
        if aot::load_cached(cache, &key).is_some() {
            return Ok(Precompiled {
                key,
                was_cached: true,
            });
        }
        load(&config, wasm, source)?;
        aot::compile_into_cache(wasm, source, &config, cache, &key)?;
        Ok(Precompiled {
            key,
            was_cached: false,
        })
    }

    fn prepare(
        &self,
        wasm: &[u8],
        spec: &RunSpec,
        cache: Option<&ModuleCache>,
    ) -> anyhow::Result<Box<dyn PreparedModule>> {
        refuse_component(wasm, &spec.module_name)?;
        refuse_listeners(spec)?;
        // WasmEdge logs compile progress at info level to stderr, which is the
        // container's: keep only its errors there.
        LogManager::log_error_info();
        load_plugins(spec);
        let config = engine_config()?;
        let key = cache.map(|_| key_for(&config, wasm));
        let cached = cache
            .zip(key.as_ref())
            .and_then(|(cache, key)| aot::load_cached(cache, key));
        let module = match cached {
            Some(module) => {
                log::debug!("WasmEdge: running the AOT-compiled module");
                if let Some(key) = &key {
                    log::debug!("cache hit: {key}");
                }
                module
            }
            None => {
                let module = load(&config, wasm, &spec.module_name)?;
                check_entry(&module, spec)?;
                let cache = cache.zip(key.as_ref());
                aot::compile(wasm, &spec.module_name, &config, cache).unwrap_or(module)
            }
        };
        check_entry(&module, spec)?;
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
            // WasmEdge opens a preopen with O_NOFOLLOW: through "/." a host path
            // that is a symlink to a directory (such as the `/proc/self/fd/N` of
            // `sys::confine::open_preopens`) is followed, as runc follows it.
            let host = dir.host.join(".");
            let host = host.to_string_lossy();
            if host.contains(':') || dir.guest.contains(':') {
                bail!(
                    "cannot mount {host} at {}: WasmEdge cannot preopen paths containing ':'",
                    dir.guest
                );
            }
            let mode = if dir.readonly { ":readonly" } else { "" };
            preopens.push(format!("{}:{host}{mode}", dir.guest));
        }
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // Bound now, while the worker may still open what the container's user
        // could not reach (see `sys::confine::open_preopens`).
        let wasi = WasiModule::create(
            Some(spec.args.iter().map(String::as_str).collect()),
            Some(env.iter().map(String::as_str).collect()),
            Some(preopens.iter().map(String::as_str).collect()),
        )
        .map_err(|e| anyhow::anyhow!("creating the WASI module: {e}"))?;
        check_imports(&module, &wasi)
            .with_context(|| format!("cannot link {}", spec.module_name))?;
        Ok(Box::new(PreparedWasmEdge {
            module,
            wasi,
            entry: spec.entry.clone(),
        }))
    }
}

/// Checks that `spec.entry` is an exported function without parameters.
fn check_entry(module: &Module, spec: &RunSpec) -> anyhow::Result<()> {
    match module.get_export(&spec.entry) {
        Some(ExternalInstanceType::Func(ty)) if ty.args().is_empty() => Ok(()),
        Some(ExternalInstanceType::Func(_)) => bail!(
            "function '{}' of {} takes parameters; only functions without parameters can be an entrypoint",
            spec.entry,
            spec.module_name
        ),
        _ => bail!("{} has no exported function '{}'", spec.module_name, spec.entry),
    }
}

/// Checks that every import of `module` is a function of `wasi` (WasmEdge's
/// `wasi_snapshot_preview1`, its socket functions included) of the same type:
/// the store the module is instantiated in holds nothing else. WasmEdge
/// itself links only when it instantiates, at start; this names the import
/// at Create, in wasmtime's words.
fn check_imports(module: &Module, wasi: &WasiModule) -> anyhow::Result<()> {
    use wasmedge_sdk::AsInstance;
    use wasmedge_sys::instance::function::AsFunc;
    for import in module.imports() {
        let (from, name) = (import.module_name(), import.name());
        let wanted = import.ty().map_err(|e| anyhow::anyhow!("{e}"))?;
        let provided = (from == wasi.name())
            .then(|| wasi.get_func(&name).ok())
            .flatten();
        let Some(provided) = provided else {
            bail!("unknown import: `{from}::{name}` has not been defined");
        };
        let provided = (*provided).ty();
        match wanted {
            ExternalInstanceType::Func(ty) if Some(&ty) == provided.as_ref() => {}
            ExternalInstanceType::Func(ty) => bail!(
                "incompatible import type for `{from}::{name}`: the module expects {ty:?}, \
                 WasmEdge provides {provided:?}"
            ),
            _ => {
                bail!("incompatible import type for `{from}::{name}`: WasmEdge provides a function")
            }
        }
    }
    Ok(())
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

/// A loaded (and, where possible, AOT-compiled) module with its WASI module.
struct PreparedWasmEdge {
    module: Module,
    wasi: WasiModule,
    entry: String,
}

impl PreparedModule for PreparedWasmEdge {
    fn run(self: Box<Self>) -> Outcome {
        self.run_entry(Teardown::Free)
    }

    fn run_then_exit(self: Box<Self>) -> Outcome {
        self.run_entry(Teardown::LeaveToExit)
    }
}

/// What becomes of the instance and its module once the entry returns.
#[derive(Clone, Copy, PartialEq)]
enum Teardown {
    /// Freed, as a process that goes on must.
    Free,
    /// Left for the kernel to free at exit: freeing WasmEdge's parsed code
    /// (hundreds of MiB for a 10 MB module; 17 of its 578 ms warm start)
    /// would only delay the exit status containerd waits for.
    LeaveToExit,
}

impl PreparedWasmEdge {
    fn run_entry(self, teardown: Teardown) -> Outcome {
        self.try_run_entry(teardown)
            .unwrap_or_else(|e| Outcome::Trapped(format!("{e:#}")))
    }

    fn try_run_entry(self, teardown: Teardown) -> anyhow::Result<Outcome> {
        // WasmEdge's AOT code takes the fault signals over while it runs.
        let _faults = super::faults::exclusive();
        let mut wasi = self.wasi;
        let mut instances: HashMap<String, &mut dyn SyncInst> = HashMap::new();
        instances.insert(wasi.name().to_string(), wasi.as_mut());
        let config = engine_config()?;
        let store =
            Store::new(Some(&config), instances).map_err(|e| anyhow::anyhow!("store: {e}"))?;
        let mut vm = Vm::new(store);
        vm.register_module(None, self.module)
            .map_err(|e| anyhow::anyhow!("instantiating: {e}"))?;
        // Instantiating frees about half of what it allocated (0.6 of 1.5 MiB
        // of heap for a 30 KB C module), resident until trimmed.
        crate::sys::worker::release_free_heap();
        let result = vm.run_func(None, &self.entry, params!());
        match teardown {
            Teardown::Free => drop(vm),
            Teardown::LeaveToExit => std::mem::forget(vm),
        }
        // `proc_exit` ends the run either way; the WASI module holds the code (0 if never called).
        let outcome = match result {
            Ok(_) => Outcome::Exited(wasi.exit_code() as i32),
            Err(e) if is_terminated(&e) => Outcome::Exited(wasi.exit_code() as i32),
            Err(e) => Outcome::Trapped(e.to_string()),
        };
        if teardown == Teardown::LeaveToExit {
            // The store left behind refers to it.
            std::mem::forget(wasi);
        }
        Ok(outcome)
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
    /// libwasmedge has no AOT compiler or compiling fails. With a cache, the
    /// shared object is compiled into it under the pair's key; if storing fails it is
    /// compiled into a temporary directory instead.
    pub fn compile(
        wasm: &[u8],
        name: &str,
        config: &wasmedge_sdk::config::Config,
        cache: Option<(&ModuleCache, &CacheKey)>,
    ) -> Option<Module> {
        let cached = cache.map(|(cache, key)| compile_into_cache(wasm, name, config, cache, key));
        let result = match cached {
            Some(Ok(module)) => Ok(module),
            Some(Err(e)) if e.is::<NoCompiler>() => Err(e),
            Some(Err(e)) => {
                log::warn!("cache miss: WasmEdge AOT output not stored, compiling without the cache: {e:#}");
                try_compile(wasm, config)
            }
            None => try_compile(wasm, config),
        };
        match result {
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

    /// This libwasmedge has no AOT compiler.
    #[derive(Debug)]
    struct NoCompiler(String);

    impl std::fmt::Display for NoCompiler {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "no AOT compiler: {}", self.0)
        }
    }

    impl std::error::Error for NoCompiler {}

    fn compiler(config: &wasmedge_sdk::config::Config) -> anyhow::Result<wasmedge_sdk::Compiler> {
        wasmedge_sdk::Compiler::new(Some(config)).map_err(|e| NoCompiler(e.to_string()).into())
    }

    /// Held while WasmEdge compiles. Its compiler links with lld as a
    /// library, which LLVM 16 does not make safe to call from two threads
    /// at once. A worker compiles one module and `wasmshim precompile` one
    /// at a time; the tests compile on many threads.
    static COMPILING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// `compiler.compile_from_bytes`, one at a time in this process, leaving
    /// the process's signal handlers as they were.
    ///
    /// LLVM installs its own handlers during the first compile (see
    /// [`crate::sys::signals`]). Left in place, they made a worker that had
    /// compiled its module ignore SIGUSR1 and swallow SIGQUIT; and in the
    /// library's tests a wasmtime trap on another thread ran LLVM's handler,
    /// which deleted the output lld was writing ("failed to write output
    /// …: No such file or directory", and lld ended the process). Put back
    /// after the first compile, they are never installed again, so only a
    /// fault on another thread during a process's first compile can still
    /// do that; the shim's processes compile with no module running.
    pub(super) fn compile_from_bytes(
        compiler: &wasmedge_sdk::Compiler,
        wasm: &[u8],
        name: &str,
        dir: &std::path::Path,
    ) -> anyhow::Result<std::path::PathBuf> {
        let _alone = COMPILING.lock().unwrap_or_else(|e| e.into_inner());
        let _handlers = crate::sys::signals::HandlersKept::for_llvm()
            .context("reading the signal dispositions")?;
        compiler
            .compile_from_bytes(wasm, name, dir)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The AOT-compiled module from `cache`, if it holds a loadable entry.
    pub fn load_cached(cache: &ModuleCache, key: &CacheKey) -> Option<Module> {
        // The payload was checksummed through `hit.file`; keeping it open while
        // WasmEdge loads the path pins that file. Only this user can write the
        // cache directory (checked by `ModuleCache::open`).
        let hit = cache.lookup(key)?;
        match native_code_config().and_then(|native| load_native(&native, &hit.path)) {
            Ok(module) => Some(module),
            Err(e) => {
                log::warn!("cache entry {key} does not load, compiling again: {e}");
                cache.discard(key);
                None
            }
        }
    }

    /// The AOT output at `path`, which the shim compiled, with its native
    /// code (`native` is [`native_code_config`]).
    fn load_native(
        native: &wasmedge_sdk::config::Config,
        path: &std::path::Path,
    ) -> anyhow::Result<Module> {
        Module::from_file(Some(native), path).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Compiles `wasm` into a new cache entry and loads it.
    pub fn compile_into_cache(
        wasm: &[u8],
        name: &str,
        config: &wasmedge_sdk::config::Config,
        cache: &ModuleCache,
        key: &CacheKey,
    ) -> anyhow::Result<Module> {
        let compiler = compiler(config)?;
        let path = cache.insert_with(key, name, |payload| {
            let dir = payload.parent().context("payload directory")?;
            let stem = payload
                .file_stem()
                .context("payload name")?
                .to_string_lossy();
            let out = compile_from_bytes(&compiler, wasm, &stem, dir)
                .map_err(|e| anyhow::anyhow!("WasmEdge's AOT compiler: {e}"))
                .map_err(|e| name_full_disk(e, dir, wasm.len(), cache.dir()))?;
            if out != payload {
                std::fs::rename(&out, payload)?;
            }
            Ok(())
        })?;
        log::debug!("cache miss: compiled {key} into {}", path.display());
        load_native(&native_code_config()?, &path)
    }

    /// `err`, or the full disk it hides: WasmEdge's compiler reports a write
    /// that fails for want of space as "Invalid file path". Its output holds
    /// the module's bytes, so when `dir` cannot take `wasm_len` more bytes
    /// (a probe written there, removed with the entry's temporary
    /// directory), the OS's error names the cause.
    fn name_full_disk(
        err: anyhow::Error,
        dir: &std::path::Path,
        wasm_len: usize,
        cache_dir: &std::path::Path,
    ) -> anyhow::Error {
        use std::io::Write;
        let probe = dir.join("space-probe");
        let written = std::fs::File::create(&probe).and_then(|mut file| {
            file.write_all(&vec![0; wasm_len.max(64 << 10)])?;
            file.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        match written {
            Err(io) if io.raw_os_error() == Some(libc::ENOSPC) => err.context(format!(
                "the cache dir {} is full ({io})",
                cache_dir.display()
            )),
            _ => err,
        }
    }

    fn try_compile(wasm: &[u8], config: &wasmedge_sdk::config::Config) -> anyhow::Result<Module> {
        let compiler = compiler(config)?;
        // The shared object is mapped once loaded; the directory goes when `dir` drops.
        let dir = tempfile::Builder::new()
            .prefix("wasmshim-aot.")
            .tempdir()
            .context("creating a directory for the AOT output")?;
        let so = compile_from_bytes(&compiler, wasm, "module", dir.path())?;
        load_native(&native_code_config()?, &so)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_section_count_is_read_without_loading() {
        let wasm = wat::parse_str("(module (func) (func) (func (export \"_start\")))").unwrap();
        assert_eq!(defined_functions(&wasm), Some(3));
        let wasm = wat::parse_str("(module (memory 1))").unwrap();
        assert_eq!(defined_functions(&wasm), Some(0));
        assert_eq!(defined_functions(b"\0asm\x01\0\0\0\x03\xff"), None);
        assert_eq!(defined_functions(b"\0asm"), None);
    }

    #[test]
    fn wasmedge_socket_functions_link() {
        let wasm = wat::parse_str(
            r#"(module
              (import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
              (func (export "_start")))"#,
        )
        .unwrap();
        let prepared = WasmEdgeEngine::new()
            .prepare(&wasm, &spec_for("/m.wasm"), None)
            .unwrap();
        assert_eq!(prepared.run(), Outcome::Exited(0));
    }

    /// A module whose `_start` calls `proc_exit(status)`.
    fn exits_with(status: u8) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module
              (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
              (func (export "_start") i32.const {status} call 0))"#
        ))
        .unwrap()
    }

    fn spec_for(name: &str) -> RunSpec {
        RunSpec {
            module: name.into(),
            module_name: name.into(),
            entry: "_start".into(),
            args: vec![name.into()],
            env: vec![],
            preopens: vec![],
        }
    }

    /// WasmEdge's AOT compiler, or `None` (said on stderr) when this
    /// libwasmedge was built without one.
    fn compiler_with(
        options: wasmedge_sdk::config::CompilerConfigOptions,
    ) -> Option<wasmedge_sdk::Compiler> {
        let config = ConfigBuilder::new(CommonConfigOptions::default())
            .with_compiler_config(options)
            .build()
            .unwrap();
        match wasmedge_sdk::Compiler::new(Some(&config)) {
            Ok(compiler) => Some(compiler),
            Err(e) => {
                eprintln!("SKIPPED: this libwasmedge has no AOT compiler ({e})");
                None
            }
        }
    }

    /// Runs `module` with an empty WASI, as a prepared module does.
    fn run_loaded(module: Module) -> Outcome {
        let wasi = WasiModule::create(Some(vec!["m"]), None, None).unwrap();
        Box::new(PreparedWasmEdge {
            module,
            wasi,
            entry: "_start".into(),
        })
        .run()
    }

    /// The custom section named `wanted` of `wasm`, encoded again as a section.
    fn custom_section(wasm: &[u8], wanted: &str) -> Option<Vec<u8>> {
        use wasmparser::{Parser, Payload};
        let data = Parser::new(0)
            .parse_all(wasm)
            .find_map(|payload| match payload {
                Ok(Payload::CustomSection(reader)) if reader.name() == wanted => {
                    Some(reader.data().to_vec())
                }
                _ => None,
            })?;
        let mut body = leb128(wanted.len());
        body.extend_from_slice(wanted.as_bytes());
        body.extend_from_slice(&data);
        let mut section = vec![0];
        section.extend(leb128(body.len()));
        section.extend(body);
        Some(section)
    }

    fn leb128(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    /// A module that exits 0 carrying, in a `wasmedge` custom section
    /// (WasmEdge's "universal Wasm" AOT format), the native code of one that
    /// exits 3: it exits 3 exactly when its native code runs. `None` without
    /// an AOT compiler.
    fn zero_with_the_native_code_of_three(dir: &std::path::Path) -> Option<Vec<u8>> {
        use wasmedge_sdk::{config::CompilerConfigOptions, CompilerOutputFormat};
        let universal =
            compiler_with(CompilerConfigOptions::default().out_format(CompilerOutputFormat::Wasm))?;
        let three = aot::compile_from_bytes(&universal, &exits_with(3), "three", dir).unwrap();
        let three = std::fs::read(three).unwrap();
        let mut grafted = exits_with(0);
        grafted.extend(custom_section(&three, "wasmedge").expect("an AOT section"));
        Some(grafted)
    }

    /// A cache hit runs the entry's compiled code, not the Wasm kept inside
    /// it (WasmEdge's default interpreter mode ignores the compiled code).
    /// The entry is made by hand, under the key of the module that exits 0,
    /// so only its native code exits 3.
    #[test]
    fn cache_hit_runs_the_compiled_code() {
        let dir = tempfile::tempdir().unwrap();
        let Some(entry) = zero_with_the_native_code_of_three(dir.path()) else {
            return;
        };
        let cache = ModuleCache::open(&dir.path().join("cache"), 1 << 30).unwrap();
        let engine = WasmEdgeEngine::new();
        let zero = exits_with(0);
        let key = engine.cache_key(&zero).unwrap().unwrap();
        cache.insert(&key, "/m.wasm", &entry).unwrap();
        let prepared = engine
            .prepare(&zero, &spec_for("/m.wasm"), Some(&cache))
            .unwrap();
        assert_eq!(
            prepared.run(),
            Outcome::Exited(3),
            "the cached code did not run"
        );
    }

    /// Native code inside a container's module (a `wasmedge` custom
    /// section, WasmEdge's "universal Wasm") never runs, from the bytes or
    /// through the cache: what runs is the module's own Wasm.
    #[test]
    fn native_code_in_the_module_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let Some(grafted) = zero_with_the_native_code_of_three(dir.path()) else {
            return;
        };

        // The fixture is what it claims: in AOT run mode WasmEdge runs the grafted code.
        let native = Module::from_bytes(Some(&native_code_config().unwrap()), &grafted).unwrap();
        assert_eq!(run_loaded(native), Outcome::Exited(3));

        let own = load(&engine_config().unwrap(), &grafted, "/m.wasm").unwrap();
        assert_eq!(run_loaded(own), Outcome::Exited(0), "loaded from the bytes");
        let engine = WasmEdgeEngine::new();
        let prepared = engine
            .prepare(&grafted, &spec_for("/m.wasm"), None)
            .unwrap();
        assert_eq!(prepared.run(), Outcome::Exited(0), "without a cache");
        let cache = ModuleCache::open(&dir.path().join("cache"), 1 << 30).unwrap();
        for start in ["miss", "hit"] {
            let prepared = engine
                .prepare(&grafted, &spec_for("/m.wasm"), Some(&cache))
                .unwrap();
            assert_eq!(prepared.run(), Outcome::Exited(0), "cache {start}");
        }
    }
}
