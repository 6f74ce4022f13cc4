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
fn a_run_then_exit_reports_what_a_run_does() {
    // The worker's way to run: the outcome must not depend on what the
    // engine leaves for the process exit to free.
    let wasm = wat::parse_str(EXIT_7).unwrap();
    for engine in engines() {
        // One cache: the module compiles once, not six times.
        let (_dir, cache) = cache();
        for entry in ["_start", "ret", "boom"] {
            let prepare = || engine.prepare(&wasm, &spec(entry), Some(&cache)).unwrap();
            assert_eq!(
                prepare().run_then_exit(),
                prepare().run(),
                "{} {entry}",
                engine.name()
            );
        }
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

#[test]
fn unknown_or_mistyped_import_fails_prepare_naming_it() {
    let unknown =
        wat::parse_str(r#"(module (import "env" "nope" (func)) (func (export "_start")))"#)
            .unwrap();
    let mistyped = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i64)))
           (func (export "_start")))"#,
    )
    .unwrap();
    let memory = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "memory" (memory 1))
           (func (export "_start")))"#,
    )
    .unwrap();
    for engine in engines() {
        let engine = &*engine;
        let err = prepare_error(engine, &unknown, "_start");
        assert!(
            err.contains("cannot link /m.wasm"),
            "{}: {err}",
            engine.name()
        );
        assert!(err.contains("env::nope"), "{}: {err}", engine.name());
        let err = prepare_error(engine, &mistyped, "_start");
        assert!(
            err.contains("cannot link /m.wasm"),
            "{}: {err}",
            engine.name()
        );
        assert!(
            err.contains("wasi_snapshot_preview1::proc_exit"),
            "{}: {err}",
            engine.name()
        );
        let err = prepare_error(engine, &memory, "_start");
        assert!(
            err.contains("cannot link /m.wasm"),
            "{}: {err}",
            engine.name()
        );
    }
}

/// A valid module of `count` empty functions, the last exported as `_start`.
fn functions(count: u32) -> Vec<u8> {
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u32, out);
        out.extend_from_slice(body);
    }
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut wasm);
    let mut funcs = Vec::new();
    leb(count, &mut funcs);
    funcs.resize(funcs.len() + count as usize, 0);
    section(3, &funcs, &mut wasm);
    let mut exports = vec![1, 6];
    exports.extend_from_slice(b"_start");
    exports.push(0);
    leb(count - 1, &mut exports);
    section(7, &exports, &mut wasm);
    let mut code = Vec::new();
    leb(count, &mut code);
    for _ in 0..count {
        code.extend_from_slice(&[2, 0, 0x0b]);
    }
    section(10, &code, &mut wasm);
    wasm
}

#[test]
fn module_past_a_million_functions_is_refused_quickly() {
    for engine in engines() {
        let started = std::time::Instant::now();
        let err = prepare_error(&*engine, &functions(1_000_001), "_start");
        assert!(
            err.contains("/m.wasm is not a valid WebAssembly module"),
            "{}: {err}",
            engine.name()
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{}: {:?}",
            engine.name(),
            started.elapsed()
        );
        assert_eq!(
            engine
                .prepare(&functions(3), &spec("_start"), None)
                .unwrap()
                .run(),
            Outcome::Exited(0),
            "{}",
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
