//! One set of engine tests, instantiated for every engine built in: what the
//! worker relies on (exit codes, traps, entry checks, bad modules).

/// WAT of a module whose `_start` calls `proc_exit(7)` and whose `ret` returns.
const EXIT_7: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 7)))
  (func (export "ret"))
  (func (export "takes") (param i32))
  (func (export "boom") unreachable))"#;

macro_rules! engine_conformance {
    ($name:ident, $engine:expr) => {
        mod $name {
            use crate::engine::{Engine, Outcome, RunSpec, EXIT_TRAP};

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

            fn run(entry: &str) -> Outcome {
                let wasm = wat::parse_str(super::EXIT_7).unwrap();
                $engine.prepare(&wasm, &spec(entry)).unwrap().run()
            }

            fn prepare_error(wasm: &[u8], entry: &str) -> String {
                match $engine.prepare(wasm, &spec(entry)) {
                    Ok(_) => panic!("prepare accepted a bad module or entry"),
                    Err(e) => format!("{e:#}"),
                }
            }

            #[test]
            fn proc_exit_sets_the_exit_code() {
                assert_eq!(run("_start"), Outcome::Exited(7));
            }

            #[test]
            fn returning_entry_exits_zero() {
                assert_eq!(run("ret"), Outcome::Exited(0));
            }

            #[test]
            fn trap_is_reported_with_its_reason() {
                let outcome = run("boom");
                assert_eq!(outcome.exit_status(), EXIT_TRAP);
                let Outcome::Trapped(message) = outcome else {
                    unreachable!()
                };
                assert!(message.contains("unreachable"), "{message}");
            }

            #[test]
            fn entry_must_exist_and_take_no_parameters() {
                let wasm = wat::parse_str(super::EXIT_7).unwrap();
                let err = prepare_error(&wasm, "nope");
                assert!(
                    err.contains("/m.wasm has no exported function 'nope'"),
                    "{err}"
                );
                let err = prepare_error(&wasm, "memory");
                assert!(err.contains("has no exported function 'memory'"), "{err}");
                let err = prepare_error(&wasm, "takes");
                assert!(err.contains("takes parameters"), "{err}");
            }

            #[test]
            fn corrupt_module_is_named() {
                let err = prepare_error(b"\0asm\x01\0\0\0\x01\xffgarbage", "_start");
                assert!(
                    err.contains("/m.wasm is not a valid WebAssembly module"),
                    "{err}"
                );
            }
        }
    };
}

#[cfg(feature = "wasmtime")]
engine_conformance!(wasmtime, crate::engine::wasmtime::WasmtimeEngine::new());
#[cfg(feature = "wasmedge")]
engine_conformance!(wasmedge, crate::engine::wasmedge::WasmEdgeEngine::new());
