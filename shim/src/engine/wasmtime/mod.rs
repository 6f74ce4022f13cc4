//! The wasmtime engine: WASI preview 1 modules and `wasi:cli/command`
//! components (WASI preview 2, in [`component`]) through `wasmtime-wasi`,
//! and HTTP functions (`wasi:http/proxy` components, in [`http`]) through
//! `wasmtime-wasi-http`.
//!
//! Runs in the worker process. [`engine_config`] is the one place the
//! wasmtime configuration is built, so that anything compiled ahead of time
//! later uses exactly the settings modules are run with. With a
//! [`ModuleCache`], a module is compiled once and serialised; later starts
//! map the serialised code (`Module::deserialize_open_file`), which the page
//! cache shares between containers.

use std::hash::Hash;
use std::os::fd::AsRawFd;

use anyhow::{bail, Context};
use wasmtime::component::Component;
use wasmtime::{ExternType, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::cache::{CacheKey, ModuleCache, Sha256Hasher};
use super::{Engine, Outcome, Precompiled, PreparedModule, RunSpec, WasmKind};

pub mod component;
pub mod http;
pub mod p1_sockets;

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

/// The engine a module of `wasm_len` bytes is compiled and run with:
/// [`engine_config`] plus the number of compiling threads, which does not
/// change the compiled code (nor the cache key).
fn engine_for(wasm_len: usize) -> anyhow::Result<wasmtime::Engine> {
    let mut config = engine_config();
    // Threads pay off only for big modules. A small one compiles as fast on
    // this thread, and the worker then keeps no per-thread heaps for the
    // container's whole life.
    config.parallel_compilation(wasm_len >= PARALLEL_COMPILE_MIN_BYTES);
    new_engine(&config)
}

/// `wasmtime::Engine::new`, never during a WasmEdge run: the first engine
/// installs wasmtime's trap handlers, which that run would reset (see
/// `engine::faults`). Every wasmtime engine of the library is made here.
fn new_engine(config: &wasmtime::Config) -> anyhow::Result<wasmtime::Engine> {
    let _faults = crate::engine::faults::shared();
    Ok(wasmtime::Engine::new(config)?)
}

/// The cache key of `wasm` for `engine`: wasmtime's precompile compatibility
/// hash covers its exact version, the target and its CPU features, and every
/// setting that changes the compiled code.
fn key_for(engine: &wasmtime::Engine, wasm: &[u8]) -> CacheKey {
    let mut config = Sha256Hasher::default();
    engine.precompile_compatibility_hash().hash(&mut config);
    CacheKey::new(
        "wasmtime",
        concat!("wasmtime 48 / wasmshim ", env!("CARGO_PKG_VERSION")),
        &config.digest(),
        wasm,
    )
}

/// Compiled code wasmtime can cache: a core [`Module`] or a [`Component`].
trait Compiled: Sized {
    /// Compiles `wasm`, naming it in the error.
    fn compile(engine: &wasmtime::Engine, wasm: &[u8], name: &str) -> anyhow::Result<Self>;
    /// The compiled code, as [`Compiled::load`] reads it back.
    fn serialize(&self) -> anyhow::Result<Vec<u8>>;
    /// Maps a payload [`Compiled::serialize`] wrote.
    ///
    /// # Safety
    /// `file` must hold a payload this wasmtime version serialised, unmodified.
    unsafe fn load(engine: &wasmtime::Engine, file: &std::fs::File) -> anyhow::Result<Self>;
}

impl Compiled for Module {
    fn compile(engine: &wasmtime::Engine, wasm: &[u8], name: &str) -> anyhow::Result<Self> {
        Module::new(engine, wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{name} is not a valid WebAssembly module"))
    }

    fn serialize(&self) -> anyhow::Result<Vec<u8>> {
        Ok(Module::serialize(self)?)
    }

    unsafe fn load(engine: &wasmtime::Engine, file: &std::fs::File) -> anyhow::Result<Self> {
        let file = file.try_clone()?;
        // SAFETY: the caller vouches for the payload (this function's contract).
        Ok(unsafe { Module::deserialize_open_file(engine, file) }?)
    }
}

impl Compiled for Component {
    fn compile(engine: &wasmtime::Engine, wasm: &[u8], name: &str) -> anyhow::Result<Self> {
        Component::new(engine, wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{name} is not a valid WebAssembly component"))
    }

    fn serialize(&self) -> anyhow::Result<Vec<u8>> {
        Ok(Component::serialize(self)?)
    }

    unsafe fn load(engine: &wasmtime::Engine, file: &std::fs::File) -> anyhow::Result<Self> {
        // wasmtime maps components by path only: this descriptor's own path,
        // so that what is mapped is the very file that was checksummed.
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        // SAFETY: the caller vouches for the payload (this function's contract).
        Ok(unsafe { Component::deserialize_file(engine, path) }?)
    }
}

/// The compiled code of `key` from `cache`, if it holds a loadable entry.
fn load_cached<C: Compiled>(
    engine: &wasmtime::Engine,
    cache: &ModuleCache,
    key: &CacheKey,
) -> Option<C> {
    let hit = cache.lookup(key)?;
    // SAFETY: the file is a payload this shim wrote with `Compiled::serialize`
    // into a cache directory only this user can write (checked by
    // `ModuleCache::open`), checksummed right now from this very descriptor;
    // entries are never modified in place (a removed one stays mapped intact).
    match unsafe { C::load(engine, &hit.file) } {
        Ok(compiled) => Some(compiled),
        Err(e) => {
            log::warn!("cache entry {key} does not load, compiling again: {e:#}");
            cache.discard(key);
            None
        }
    }
}

/// Loads `wasm`'s compiled code from `cache`, or compiles it and stores it.
/// Returns the code and whether it came from the cache.
fn compile_cached<C: Compiled>(
    engine: &wasmtime::Engine,
    wasm: &[u8],
    name: &str,
    cache: &ModuleCache,
) -> anyhow::Result<(C, bool)> {
    let key = key_for(engine, wasm);
    if let Some(compiled) = load_cached(engine, cache, &key) {
        log::debug!("cache hit: {key}");
        return Ok((compiled, true));
    }
    let compiled = C::compile(engine, wasm, name)?;
    let stored = compiled
        .serialize()
        .and_then(|code| cache.insert(&key, name, &code));
    match stored {
        Ok(path) => log::debug!("cache miss: compiled {key} into {}", path.display()),
        Err(e) => log::warn!("cache miss: compiled {key}, not stored: {e:#}"),
    }
    Ok((compiled, false))
}

/// Compiles `wasm` as a `C`, through `cache` when there is one.
fn compile_maybe_cached<C: Compiled>(
    engine: &wasmtime::Engine,
    wasm: &[u8],
    name: &str,
    cache: Option<&ModuleCache>,
) -> anyhow::Result<C> {
    match cache {
        Some(cache) => Ok(compile_cached(engine, wasm, name, cache)?.0),
        None => C::compile(engine, wasm, name),
    }
}

/// The WASI context of `spec` as both WASI versions share it: args, env,
/// stdio (the worker's own), and the preopened directories.
fn wasi_builder(spec: &RunSpec) -> anyhow::Result<WasiCtxBuilder> {
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
    Ok(wasi)
}

impl Engine for WasmtimeEngine {
    fn name(&self) -> &'static str {
        "wasmtime"
    }

    fn version(&self) -> String {
        env!("WASMSHIM_WASMTIME_VERSION").to_string()
    }

    fn cache_key(&self, wasm: &[u8]) -> anyhow::Result<Option<CacheKey>> {
        Ok(Some(key_for(&engine_for(wasm.len())?, wasm)))
    }

    fn precompile(
        &self,
        wasm: &[u8],
        source: &str,
        cache: &ModuleCache,
    ) -> anyhow::Result<Precompiled> {
        let engine = engine_for(wasm.len())?;
        let was_cached = match WasmKind::of(wasm) {
            Some(WasmKind::Component) => {
                compile_cached::<Component>(&engine, wasm, source, cache)?.1
            }
            _ => compile_cached::<Module>(&engine, wasm, source, cache)?.1,
        };
        Ok(Precompiled {
            key: key_for(&engine, wasm),
            was_cached,
        })
    }

    fn prepare(
        &self,
        wasm: &[u8],
        spec: &RunSpec,
        cache: Option<&ModuleCache>,
    ) -> anyhow::Result<Box<dyn PreparedModule>> {
        let engine = engine_for(wasm.len())?;
        if WasmKind::of(wasm) == Some(WasmKind::Component) {
            p1_sockets::refuse_declared(spec, "a component (it opens its own with wasi:sockets)")?;
            let compiled = compile_maybe_cached(&engine, wasm, &spec.module_name, cache)?;
            return component::prepare(&engine, &compiled, spec);
        }
        let module: Module = compile_maybe_cached(&engine, wasm, &spec.module_name, cache)?;
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
        // Declared listeners: bound here, in the container's network namespace.
        let listeners = p1_sockets::Listeners::declared(spec)?;
        let announced = listeners.as_ref().map(|l| l.announce(spec));
        if let Some(listeners) = listeners {
            listeners.link(&mut linker)?;
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot link {}", spec.module_name))?;
        let wasi = wasi_builder(announced.as_ref().unwrap_or(spec))?.build_p1();
        let store = Store::new(&engine, wasi);
        Ok(Box::new(PreparedWasmtime {
            store,
            pre,
            entry: spec.entry.clone(),
        }))
    }
}

/// How a run through wasmtime ended: `proc_exit`/`wasi:cli/exit` with a
/// status, or a trap.
fn outcome_of(result: wasmtime::Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Exited(0),
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(exit) => Outcome::Exited(exit.0),
            None => Outcome::Trapped(format!("{err:?}")),
        },
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
        let _faults = crate::engine::faults::shared();
        let result = pre.instantiate(&mut store).and_then(|instance| {
            let func = instance
                .get_func(&mut store, &entry)
                .ok_or_else(|| wasmtime::format_err!("entry function disappeared"))?;
            let mut results = vec![wasmtime::Val::I32(0); func.ty(&store).results().len()];
            func.call(&mut store, &[], &mut results)
        });
        outcome_of(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_follows_the_config_but_not_the_thread_count() {
        let wasm = b"\0asm\x01\0\0\0";
        let small = key_for(&engine_for(1).unwrap(), wasm);
        let big = key_for(&engine_for(PARALLEL_COMPILE_MIN_BYTES).unwrap(), wasm);
        assert_eq!(small, big);
        let mut config = engine_config();
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        let other = key_for(&new_engine(&config).unwrap(), wasm);
        assert_ne!(small, other);
        let mut config = engine_config();
        config.wasm_simd(false).wasm_relaxed_simd(false);
        let other = key_for(&new_engine(&config).unwrap(), wasm);
        assert_ne!(small, other);
        assert_eq!(WasmtimeEngine::new().cache_key(wasm).unwrap(), Some(small));
    }
}
