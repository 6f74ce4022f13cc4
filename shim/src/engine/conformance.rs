//! One set of engine tests, run for every engine of `engines.txt` that this
//! build includes ([`super::built_in`]): what the worker relies on (exit
//! codes, traps, entry checks, bad modules). A new engine needs no edit here.

use super::{built_in, Engine, Outcome, RunSpec};

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
    engine.prepare(&wasm, &spec(entry)).unwrap().run()
}

fn prepare_error(engine: &dyn Engine, wasm: &[u8], entry: &str) -> String {
    match engine.prepare(wasm, &spec(entry)) {
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
