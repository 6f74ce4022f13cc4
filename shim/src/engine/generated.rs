//! Generated input (issue 12): modules from `wasm-smith` through
//! [`Engine::prepare`] and [`PreparedModule::run`] of every engine this
//! build includes (as [`super::conformance`] does). Whatever the module,
//! the engine never panics or crashes the process: `prepare` accepts it or
//! fails naming the module, and `run` ends with an exit status or a trap.
//!
//! The modules are seeded deterministically (the same modules in every run)
//! and bounded: no imports (no WASI call reaches the test's own stdio),
//! a `_start` without parameters (found again in the module's exports, as
//! an engine would), at most 16 MiB of memory, and
//! wasm-smith's fuel on every loop head and function entry, so every run
//! ends (a trap when the fuel is gone). Most modules use only features both
//! engines support, so `prepare` must accept them; every fourth one may use
//! any proposal wasm-smith knows (GC, exceptions, threads, memory64, …),
//! which an engine may refuse, by name.

use std::time::{Duration, Instant};

use arbitrary::Unstructured;

use super::{built_in, Engine, Outcome, RunSpec};

/// Modules per engine. WasmEdge compiles each with LLVM, so it gets fewer.
fn count(engine: &dyn Engine) -> usize {
    match engine.name() {
        "wasmtime" => 300,
        _ => 60,
    }
}

/// Fuel: loop iterations plus function calls a run may make before it traps.
const FUEL: u32 = 2_000;

/// The longest one module may take to prepare and run (a stuck engine
/// fails the test instead of hanging CI).
const PER_MODULE: Duration = Duration::from_secs(20);

/// Deterministic bytes for module `i` (splitmix64): wasm-smith's choices.
fn seed_bytes(i: u64, len: usize) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The wasm-smith configuration of module `i`: see the module comment.
fn smith_config(i: u64) -> wasm_smith::Config {
    let mut config = wasm_smith::Config {
        max_imports: 0,
        // A `_start` without parameters, whose body wasm-smith makes.
        exports: Some(wat::parse_str(r#"(module (func (export "_start")))"#).unwrap()),
        min_funcs: 1,
        max_funcs: 30,
        max_memory32_bytes: 16 << 20,
        max_memory64_bytes: 16 << 20,
        max_table_elements: 10_000,
        max_data_segments: 10,
        max_element_segments: 10,
        ..wasm_smith::Config::default()
    };
    if !i.is_multiple_of(4) {
        // Proposals both engines enable by default. Not reference types:
        // wasmtime without its `gc` feature refuses `externref`.
        config.reference_types_enabled = false;
        config.extended_const_enabled = false;
        config.gc_enabled = false;
        config.exceptions_enabled = false;
        config.threads_enabled = false;
        config.memory64_enabled = false;
        config.relaxed_simd_enabled = false;
        config.tail_call_enabled = false;
        config.wide_arithmetic_enabled = false;
        config.custom_page_sizes_enabled = false;
        config.shared_everything_threads_enabled = false;
        config.max_memories = 1;
    }
    config
}

/// Module `i`: its bytes, and whether it uses only the common proposals.
fn module(i: u64) -> (Vec<u8>, bool) {
    let bytes = seed_bytes(i, 16 * 1024);
    let mut u = Unstructured::new(&bytes);
    let mut module = wasm_smith::Module::new(smith_config(i), &mut u).unwrap();
    module.ensure_termination(FUEL).unwrap();
    (module.to_bytes(), !i.is_multiple_of(4))
}

/// The first exported function of `wasm` without parameters, if any (the
/// module has no imports, so its functions are those it defines).
fn entry_of(wasm: &[u8]) -> Option<String> {
    use wasmparser::{CompositeInnerType, Payload};
    let (mut types, mut funcs, mut exports) = (Vec::new(), Vec::new(), Vec::new());
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for ty in group.ok()?.into_types() {
                        types.push(match &ty.composite_type.inner {
                            CompositeInnerType::Func(f) => f.params().is_empty(),
                            _ => false,
                        });
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    funcs.push(ty.ok()?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.ok()?;
                    if export.kind == wasmparser::ExternalKind::Func {
                        exports.push((export.name.to_string(), export.index));
                    }
                }
            }
            _ => {}
        }
    }
    exports.into_iter().find_map(|(name, index)| {
        let ty = *funcs.get(index as usize)?;
        types.get(ty as usize).copied()?.then_some(name)
    })
}

fn spec(entry: &str) -> RunSpec {
    RunSpec {
        module: "/smith.wasm".into(),
        module_name: "/smith.wasm".into(),
        entry: entry.into(),
        args: vec!["/smith.wasm".into()],
        env: vec![],
        preopens: vec![],
    }
}

/// What the modules did on one engine.
#[derive(Debug, Default)]
struct Tally {
    refused: usize,
    exited: usize,
    trapped: usize,
    /// Modules of the common proposals, with an entry, that were refused.
    wrongly_refused: Vec<String>,
}

fn run_all(engine: &dyn Engine) -> Tally {
    let mut tally = Tally::default();
    let started = Instant::now();
    for i in 0..count(engine) as u64 {
        let (wasm, common) = module(i);
        let entry = entry_of(&wasm);
        let begun = Instant::now();
        match engine.prepare(&wasm, &spec(entry.as_deref().unwrap_or("_start")), None) {
            Err(e) => {
                let text = format!("{e:#}");
                if common && entry.is_some() {
                    tally.wrongly_refused.push(format!("module {i}: {text}"));
                }
                assert!(
                    text.contains("/smith.wasm"),
                    "{}: module {i}: the error does not name the module: {text}",
                    engine.name()
                );
                tally.refused += 1;
            }
            Ok(prepared) => match prepared.run() {
                Outcome::Exited(code) => {
                    assert_eq!(code, 0, "{}: module {i} has no proc_exit", engine.name());
                    tally.exited += 1;
                }
                Outcome::Trapped(message) => {
                    assert!(
                        !message.trim().is_empty(),
                        "{}: module {i}: a trap without a message",
                        engine.name()
                    );
                    tally.trapped += 1;
                }
            },
        }
        assert!(
            begun.elapsed() < PER_MODULE,
            "{}: module {i} took {:?}",
            engine.name(),
            begun.elapsed()
        );
    }
    eprintln!(
        "{}: {} wasm-smith modules in {:.1?}: {} refused, {} exited, {} trapped",
        engine.name(),
        count(engine),
        started.elapsed(),
        tally.refused,
        tally.exited,
        tally.trapped
    );
    tally
}

#[test]
fn smith_modules_prepare_and_run_or_fail_cleanly() {
    let engines = built_in();
    assert!(!engines.is_empty(), "no engine is built in");
    for engine in engines {
        let tally = run_all(&*engine);
        assert!(
            tally.wrongly_refused.is_empty(),
            "{}: modules of the common proposals refused: {:#?}",
            engine.name(),
            tally.wrongly_refused
        );
        // The run would prove little if nothing ran to the end or trapped.
        assert!(tally.exited > 0, "{}: none exited", engine.name());
        assert!(tally.trapped > 0, "{}: none trapped", engine.name());
    }
}

#[test]
fn the_same_seed_makes_the_same_module() {
    assert_eq!(module(7).0, module(7).0);
    assert_ne!(module(7).0, module(8).0);
}
