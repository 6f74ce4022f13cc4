//! The engine layer: what a WebAssembly runtime must do for the shim.
//!
//! An engine sees a [`RunSpec`] (module path, entry function, argv, env,
//! preopened directories), never the OCI spec. It runs inside the per-container
//! worker process (see `docs/process-model.md`), so stdio are the process's own
//! file descriptors 0, 1 and 2 and stopping it is a signal to that process.
//! Adding an engine is one file implementing [`Engine`] and [`PreparedModule`],
//! a line in the repository's `engines.txt` and one in [`by_name`].
//! Compiled code is kept in a [`cache::ModuleCache`] so that a module is
//! compiled once, not at every container start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use cache::{CacheKey, ModuleCache};

pub mod cache;
#[cfg(test)]
mod conformance;
mod faults;
#[cfg(test)]
mod generated;
#[cfg(feature = "wasmedge")]
pub mod wasmedge;
#[cfg(feature = "wasmtime")]
pub mod wasmtime;

/// Environment variable by which a container declares the TCP listeners the
/// wasmtime engine binds in its network namespace and hands to its WASI
/// preview 1 module: comma-separated `IP:port` addresses (IPv6 in brackets),
/// e.g. `127.0.0.1:8080`. Engines that cannot hand them in refuse it.
pub const TCP_LISTEN_ENV: &str = "WASMSHIM_TCP_LISTEN";

/// Everything an engine needs to run one module, derived from the OCI bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Host path of the `.wasm` file (inside the mounted rootfs).
    pub module: PathBuf,
    /// The module's path as the container spec names it, for messages.
    pub module_name: String,
    /// Exported function to call; `_start` unless the entrypoint says `path#function`.
    pub entry: String,
    /// argv as the module sees it (argv\[0\] is the module path).
    pub args: Vec<String>,
    /// Environment as `(key, value)` pairs.
    pub env: Vec<(String, String)>,
    /// Host directories the module may open, and where it sees them.
    pub preopens: Vec<Preopen>,
}

impl RunSpec {
    /// The value of environment variable `key`, if the spec sets it.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One directory made visible to the module through WASI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    /// Directory on the host.
    pub host: PathBuf,
    /// Absolute path at which the module sees it.
    pub guest: String,
    /// Refuse writes through this directory.
    pub readonly: bool,
}

/// How a module run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The entry function returned (status 0) or the module called `proc_exit(n)`.
    Exited(i32),
    /// The module trapped or the engine failed while running it; the message says why.
    Trapped(String),
}

impl Outcome {
    /// The container exit status this outcome maps to.
    pub fn exit_status(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Trapped(_) => crate::exit::TRAP,
        }
    }
}

/// A WebAssembly runtime the shim can run modules with.
pub trait Engine: Send + Sync {
    /// Short name: the shim binary is `containerd-shim-<name>-v1`.
    fn name(&self) -> &'static str;

    /// The engine's exact version, e.g. `48.0.8`.
    fn version(&self) -> String;

    /// Compiles `wasm` (or loads its compiled code from `cache`), links WASI
    /// and checks that `spec.entry` is an exported function without
    /// parameters. `wasm` is a core module or, for an engine that runs them,
    /// a `wasi:cli/command` component (see [`WasmKind`]); an engine that
    /// cannot run components refuses one by name. Runs no guest code. Errors name the problem; a cache that
    /// fails is logged and bypassed, never an error.
    fn prepare(
        &self,
        wasm: &[u8],
        spec: &RunSpec,
        cache: Option<&ModuleCache>,
    ) -> anyhow::Result<Box<dyn PreparedModule>>;

    /// The key under which [`Engine::prepare`] caches `wasm`, or `None` when
    /// this engine caches nothing.
    fn cache_key(&self, wasm: &[u8]) -> anyhow::Result<Option<CacheKey>> {
        let _ = wasm;
        Ok(None)
    }

    /// Compiles `wasm` into `cache` under [`Engine::cache_key`], as the first
    /// container start would (`wasmshim precompile`). Returns the key and
    /// whether the entry was already there.
    /// `source` names the module in errors and in `wasmshim cache ls`.
    fn precompile(
        &self,
        wasm: &[u8],
        source: &str,
        cache: &ModuleCache,
    ) -> anyhow::Result<Precompiled> {
        let _ = (wasm, source, cache);
        anyhow::bail!("the {} engine has no precompile cache", self.name())
    }
}

/// What [`Engine::precompile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precompiled {
    /// The entry's key.
    pub key: CacheKey,
    /// True when the cache already held a valid entry (nothing was compiled).
    pub was_cached: bool,
}

/// A compiled and linked module, ready to run on the calling thread.
pub trait PreparedModule {
    /// Instantiates the module and calls the entry function to completion.
    fn run(self: Box<Self>) -> Outcome;

    /// As [`run`](Self::run), in a process that exits right after (a
    /// worker): it may leave what the run allocated for the kernel to free.
    fn run_then_exit(self: Box<Self>) -> Outcome {
        self.run()
    }
}

/// One line of the repository's `engines.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEntry {
    /// The engine's name, as [`Engine::name`] returns it.
    pub name: &'static str,
    /// The system library its shim needs to build and run, if any.
    pub needs: Option<&'static str>,
}

/// Every engine the project builds, from `engines.txt` (the one engine list).
pub fn table() -> Vec<EngineEntry> {
    include_str!("../../../engines.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or_default();
            let needs = words.next().filter(|w| *w != "-");
            EngineEntry { name, needs }
        })
        .collect()
}

/// The engine called `name`, if this build includes it.
pub fn by_name(name: &str) -> Option<Box<dyn Engine>> {
    match name {
        #[cfg(feature = "wasmtime")]
        "wasmtime" => Some(Box::new(wasmtime::WasmtimeEngine::new())),
        #[cfg(feature = "wasmedge")]
        "wasmedge" => Some(Box::new(wasmedge::WasmEdgeEngine::new())),
        _ => None,
    }
}

/// Every engine of [`table`] that this build includes, in table order.
pub fn built_in() -> Vec<Box<dyn Engine>> {
    table().iter().filter_map(|e| by_name(e.name)).collect()
}

/// The largest module file the shim reads (512 MiB). A bigger entrypoint is
/// refused before it is read, and the worker never reads more than this, so
/// a huge or sparse file cannot make it allocate gigabytes.
pub const MAX_MODULE_BYTES: u64 = 512 << 20;

/// True when `bytes` start with the WebAssembly magic number `\0asm`.
pub fn has_wasm_magic(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm")
}

/// What a WebAssembly binary holds, read from its 8-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module (version 1): WASI preview 1, `_start` or a named export.
    Module,
    /// A component (component-model layer 1): WASI preview 2 worlds such as
    /// `wasi:cli/command`.
    Component,
}

impl WasmKind {
    /// The kind of `bytes`, or `None` when they are not WebAssembly or of an
    /// unknown binary version.
    pub fn of(bytes: &[u8]) -> Option<WasmKind> {
        match bytes.get(..8)? {
            [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(WasmKind::Module),
            // Version 0x0d (the component model's pre-1.0 version), layer 1.
            [0, b'a', b's', b'm', _, _, 1, 0] => Some(WasmKind::Component),
            _ => None,
        }
    }
}

impl std::fmt::Display for WasmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WasmKind::Module => "module",
            WasmKind::Component => "component",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_detects_wasm_and_rejects_elf_and_text() {
        assert!(has_wasm_magic(b"\0asm\x01\0\0\0"));
        assert!(!has_wasm_magic(b"\x7fELF\x02\x01"));
        assert!(!has_wasm_magic(b"#!/bin/sh\n"));
        assert!(!has_wasm_magic(b"\0as"));
    }

    #[test]
    fn kind_tells_module_from_component() {
        assert_eq!(WasmKind::of(b"\0asm\x01\0\0\0"), Some(WasmKind::Module));
        assert_eq!(
            WasmKind::of(b"\0asm\x0d\0\x01\0"),
            Some(WasmKind::Component)
        );
        assert_eq!(WasmKind::of(b"\0asm\x02\0\0\0"), None);
        assert_eq!(WasmKind::of(b"\0asm\x01"), None);
        assert_eq!(WasmKind::of(b"\x7fELF\x02\x01\x01\0"), None);
    }

    #[test]
    fn outcome_maps_to_documented_status() {
        assert_eq!(Outcome::Exited(3).exit_status(), 3);
        assert_eq!(Outcome::Exited(0).exit_status(), 0);
        // docs/process-model.md and the README document 134 for a trap.
        assert_eq!(Outcome::Trapped("unreachable".into()).exit_status(), 134);
    }

    #[test]
    fn table_lists_every_engine_once_and_names_match() {
        let table = table();
        let names: Vec<&str> = table.iter().map(|e| e.name).collect();
        assert!(names.contains(&"wasmtime"), "{names:?}");
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(unique, names);
        for engine in built_in() {
            assert!(names.contains(&engine.name()));
            assert!(!engine.version().is_empty());
        }
        #[cfg(feature = "wasmtime")]
        assert!(built_in().iter().any(|e| e.name() == "wasmtime"));
        #[cfg(feature = "wasmedge")]
        assert!(built_in().iter().any(|e| e.name() == "wasmedge"));
    }
}
