//! One set of engine tests, run for every engine of `engines.txt` that this
//! build includes ([`super::built_in`]): what the worker relies on (exit
//! codes, traps, entry checks, bad modules, the module cache). A new engine
//! needs no edit here.

use std::sync::atomic::Ordering;

use super::{built_in, Engine, ModuleCache, Outcome, RunSpec};

/// WAT of a module whose `_start` calls `proc_exit(7)` and whose `ret` returns.
const EXIT_7: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 7)))
  (func (export "ret"))
  (func (export "takes") (param i32))
  (func (export "boom") unreachable))"#;

fn spec(entry: &str) -> RunSpec {
    RunSpec {
        module: "/m.wasm".into(),
        module_name: "/m.wasm".into(),
        entry: entry.into(),
        args: vec!["/m.wasm".into()],
        env: vec![],
        preopens: vec![],
    }
}

/// Every engine of this build; fails when there is none, so the tests cannot pass empty.
fn engines() -> Vec<Box<dyn Engine>> {
    let engines = built_in();
    assert!(!engines.is_empty(), "no engine is built in");
    engines
}

fn run(engine: &dyn Engine, entry: &str) -> Outcome {
    let wasm = wat::parse_str(EXIT_7).unwrap();
    engine.prepare(&wasm, &spec(entry), None).unwrap().run()
}

fn prepare_error(engine: &dyn Engine, wasm: &[u8], entry: &str) -> String {
    match engine.prepare(wasm, &spec(entry), None) {
        Ok(_) => panic!("{}: prepare accepted a bad module or entry", engine.name()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn proc_exit_sets_the_exit_code() {
    for engine in engines() {
        assert_eq!(
            run(&*engine, "_start"),
            Outcome::Exited(7),
            "{}",
            engine.name()
        );
    }
}

#[test]
fn returning_entry_exits_zero() {
    for engine in engines() {
        assert_eq!(
            run(&*engine, "ret"),
            Outcome::Exited(0),
            "{}",
            engine.name()
        );
    }
}

#[test]
fn trap_is_reported_with_its_reason() {
    for engine in engines() {
        let outcome = run(&*engine, "boom");
        assert_eq!(outcome.exit_status(), 134, "{}", engine.name());
        let Outcome::Trapped(message) = outcome else {
            unreachable!()
        };
        assert!(
            message.contains("unreachable"),
            "{}: {message}",
            engine.name()
        );
    }
}

#[test]
fn entry_must_exist_and_take_no_parameters() {
    let wasm = wat::parse_str(EXIT_7).unwrap();
    for engine in engines() {
        let engine = &*engine;
        let err = prepare_error(engine, &wasm, "nope");
        assert!(
            err.contains("/m.wasm has no exported function 'nope'"),
            "{}: {err}",
            engine.name()
        );
        let err = prepare_error(engine, &wasm, "memory");
        assert!(err.contains("has no exported function 'memory'"), "{err}");
        let err = prepare_error(engine, &wasm, "takes");
        assert!(err.contains("takes parameters"), "{}: {err}", engine.name());
    }
}

#[test]
fn corrupt_module_is_named() {
    for engine in engines() {
        let err = prepare_error(&*engine, b"\0asm\x01\0\0\0\x01\xffgarbage", "_start");
        assert!(
            err.contains("/m.wasm is not a valid WebAssembly module"),
            "{}: {err}",
            engine.name()
        );
    }
}

fn cache() -> (tempfile::TempDir, ModuleCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModuleCache::open(&dir.path().join("cache"), u64::MAX).unwrap();
    (dir, cache)
}

/// Runs `_start` of EXIT_7 through `cache`; false when this engine stored
/// nothing (WasmEdge without its AOT compiler).
fn run_cached(engine: &dyn Engine, cache: &ModuleCache) -> bool {
    let wasm = wat::parse_str(EXIT_7).unwrap();
    let prepared = engine.prepare(&wasm, &spec("_start"), Some(cache));
    assert_eq!(
        prepared.unwrap().run(),
        Outcome::Exited(7),
        "{}",
        engine.name()
    );
    !cache.entries().unwrap().is_empty()
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[test]
fn second_start_loads_from_the_cache() {
    for engine in engines() {
        let (_dir, cache) = cache();
        if !run_cached(&*engine, &cache) {
            continue;
        }
        assert_eq!(count(&cache.stats.hits), 0);
        assert_eq!(count(&cache.stats.stored), 1);
        assert!(run_cached(&*engine, &cache));
        assert_eq!(count(&cache.stats.hits), 1, "{}", engine.name());
        assert_eq!(count(&cache.stats.stored), 1);
        assert_eq!(cache.entries().unwrap().len(), 1);
    }
}

#[test]
fn precompile_fills_the_key_that_prepare_uses() {
    for engine in engines() {
        let (_dir, cache) = cache();
        let wasm = wat::parse_str(EXIT_7).unwrap();
        let done = engine.precompile(&wasm, "/m.wasm", &cache).unwrap();
        if cache.entries().unwrap().is_empty() {
            continue;
        }
        assert!(!done.was_cached);
        assert_eq!(Some(done.key.clone()), engine.cache_key(&wasm).unwrap());
        assert_eq!(cache.entries().unwrap()[0].key, done.key.as_str());
        assert!(run_cached(&*engine, &cache));
        assert_eq!(count(&cache.stats.hits), 1, "{}", engine.name());
        let again = engine.precompile(&wasm, "/m.wasm", &cache).unwrap();
        assert!(again.was_cached);
        assert_eq!(count(&cache.stats.stored), 1);
    }
}

#[test]
fn corrupt_entry_is_rebuilt_and_the_module_still_runs() {
    use std::os::unix::fs::PermissionsExt;
    for engine in engines() {
        let (_dir, cache) = cache();
        if !run_cached(&*engine, &cache) {
            continue;
        }
        let entry = &cache.entries().unwrap()[0];
        let payload = cache
            .dir()
            .join(&entry.key)
            .join(crate::engine::cache::PAYLOAD_FILE);
        let mut bytes = std::fs::read(&payload).unwrap();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 64] {
            *b = 0xcc;
        }
        std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&payload, &bytes).unwrap();
        assert!(run_cached(&*engine, &cache));
        assert_eq!(count(&cache.stats.discarded), 1, "{}", engine.name());
        assert_eq!(count(&cache.stats.stored), 2);
        assert!(std::fs::read(&payload).unwrap() != bytes, "not rebuilt");
        assert!(run_cached(&*engine, &cache));
        assert_eq!(count(&cache.stats.hits), 1);
    }
}

#[test]
fn invalid_module_is_named_and_not_cached() {
    for engine in engines() {
        let (_dir, cache) = cache();
        let bad = b"\0asm\x01\0\0\0\x01\xffgarbage";
        let err = match engine.prepare(bad, &spec("_start"), Some(&cache)) {
            Ok(_) => panic!("{}: accepted a corrupt module", engine.name()),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("is not a valid WebAssembly module"), "{err}");
        assert!(cache.entries().unwrap().is_empty());
    }
}
