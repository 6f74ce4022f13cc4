//! `wasmshim precompile` and `wasmshim cache ls|prune`: fill, show and empty
//! the shims' module cache ([`wasmshim::engine::cache`]). Precompiling goes
//! through the engine's own [`Engine::precompile`], so the entry has exactly
//! the key a container start looks up.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use wasmshim::engine::cache::{self, ModuleCache};
use wasmshim::engine::Engine;

/// Where the cache is: the options every cache command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct CacheArgs {
    /// Cache directory [default: $WASMSHIM_CACHE_DIR, else /var/lib/wasmshim/cache].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Size cap (bytes, or with K, M, G) [default: $WASMSHIM_CACHE_MAX_SIZE, else 1G].
    #[arg(long, value_parser = parse_size)]
    pub max_size: Option<u64>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    cache::parse_size(text).ok_or_else(|| format!("{text:?} is not a size (e.g. 512M)"))
}

impl CacheArgs {
    /// Opens the cache the shims use, with the same checks.
    pub fn open(&self) -> anyhow::Result<ModuleCache> {
        let dir = self
            .cache_dir
            .clone()
            .or_else(|| std::env::var_os(cache::CACHE_DIR_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(cache::DEFAULT_DIR));
        if dir.as_os_str() == "off" {
            bail!("the module cache is off ({}=off)", cache::CACHE_DIR_ENV);
        }
        let max = match self.max_size {
            Some(max) => max,
            None => match std::env::var(cache::CACHE_MAX_SIZE_ENV) {
                Ok(v) => parse_size(&v).map_err(anyhow::Error::msg)?,
                Err(_) => cache::DEFAULT_MAX_BYTES,
            },
        };
        ModuleCache::open(&dir, max)
    }
}

/// Compiles `module` with `engine` into `cache`; returns the line to print.
pub fn precompile(
    engine: &dyn Engine,
    module: &Path,
    cache: &ModuleCache,
) -> anyhow::Result<String> {
    let wasm = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    if !wasmshim::engine::has_wasm_magic(&wasm) {
        bail!("{} is not a WebAssembly module", module.display());
    }
    let name = module.display().to_string();
    let done = engine
        .precompile(&wasm, &name, cache)
        .with_context(|| format!("precompiling {name}"))?;
    let what = if done.was_cached {
        "already cached"
    } else {
        "compiled"
    };
    Ok(format!(
        "{name}: {what} for {}, entry {} in {}",
        engine.name(),
        done.key.as_str(),
        cache.dir().display()
    ))
}

/// The table `wasmshim cache ls` prints, least recently used first.
pub fn list(cache: &ModuleCache) -> anyhow::Result<String> {
    let entries = cache.entries()?;
    let mut out = format!(
        "{:<16}  {:<8}  {:>10}  {:>9}  SOURCE\n",
        "KEY", "ENGINE", "BYTES", "USED"
    );
    let now = SystemTime::now();
    for e in &entries {
        let age = now.duration_since(e.last_used).map_or(0, |d| d.as_secs());
        out.push_str(&format!(
            "{:<16}  {:<8}  {:>10}  {:>9}  {}\n",
            &e.key[..16],
            e.engine,
            e.bytes,
            ago(age),
            e.source
        ));
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    out.push_str(&format!(
        "{} entries, {total} of {} bytes, in {}\n",
        entries.len(),
        cache.max_bytes(),
        cache.dir().display()
    ));
    Ok(out)
}

/// Empties the cache; returns the line to print.
pub fn prune(cache: &ModuleCache) -> anyhow::Result<String> {
    let n = cache.prune()?;
    Ok(format!(
        "removed {n} entries from {}",
        cache.dir().display()
    ))
}

fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmshim::engine::wasmtime::WasmtimeEngine;
    use wasmshim::engine::RunSpec;

    const HELLO: &str = r#"(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start") (call $exit (i32.const 5))))"#;

    #[test]
    fn precompiled_entry_is_what_the_shim_looks_up() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("app.wasm");
        let wasm = wat::parse_str(HELLO).unwrap();
        std::fs::write(&module, &wasm).unwrap();
        let args = CacheArgs {
            cache_dir: Some(dir.path().join("cache")),
            max_size: None,
        };
        let cache = args.open().unwrap();
        let line = precompile(&WasmtimeEngine::new(), &module, &cache).unwrap();
        assert!(line.contains("compiled for wasmtime"), "{line}");
        let line = precompile(&WasmtimeEngine::new(), &module, &cache).unwrap();
        assert!(line.contains("already cached"), "{line}");

        // A worker opening the same directory finds it: no compilation.
        let worker_cache = args.open().unwrap();
        let spec = RunSpec {
            module: module.clone(),
            module_name: "/app.wasm".into(),
            entry: "_start".into(),
            args: vec!["/app.wasm".into()],
            env: vec![],
            preopens: vec![],
        };
        let prepared = WasmtimeEngine::new()
            .prepare(&wasm, &spec, Some(&worker_cache))
            .unwrap();
        let hits = &worker_cache.stats.hits;
        assert_eq!(hits.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(prepared.run().exit_status(), 5);

        let table = list(&cache).unwrap();
        assert!(table.contains("wasmtime"), "{table}");
        assert!(table.contains(&module.display().to_string()), "{table}");
        assert!(table.contains("1 entries"), "{table}");
        assert_eq!(
            prune(&cache).unwrap(),
            format!("removed 1 entries from {}", cache.dir().display())
        );
        assert!(list(&cache).unwrap().contains("0 entries"));
    }

    #[test]
    fn refuses_a_world_writable_cache_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        std::fs::create_dir(&cache_dir).unwrap();
        std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let args = CacheArgs {
            cache_dir: Some(cache_dir),
            max_size: Some(1 << 20),
        };
        let err = args.open().unwrap_err();
        assert!(format!("{err:#}").contains("lets others write"), "{err:#}");
    }

    #[test]
    fn not_wasm_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("app.wasm");
        std::fs::write(&module, b"#!/bin/sh\n").unwrap();
        let cache = ModuleCache::open(&dir.path().join("cache"), 1 << 20).unwrap();
        let err = precompile(&WasmtimeEngine::new(), &module, &cache).unwrap_err();
        assert!(err.to_string().contains("is not a WebAssembly module"));
    }
}
