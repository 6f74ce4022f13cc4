//! Components on wasmtime: a `wasi:cli/command` runs through its
//! `wasi:cli/run` export with WASI preview 2, seeing the same args, env,
//! preopened directories and stdio as a module, and the network of the
//! worker's network namespace (the container's). A `wasi:http/proxy`
//! component is served instead ([`super::http`]).

use anyhow::{bail, Context};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{outcome_of, wasi_builder};
use crate::engine::{Outcome, PreparedModule, RunSpec};

/// The interface a `wasi:cli/command` exports (any 0.2 version).
const CLI_RUN: &str = "wasi:cli/run@";
/// The interface a `wasi:http/proxy` exports.
const HTTP_HANDLER: &str = "wasi:http/incoming-handler@";

/// The world a component targets, told from what it exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum World {
    /// `wasi:cli/command`: exports `wasi:cli/run`; the shim runs it.
    Command,
    /// `wasi:http/proxy`: exports `wasi:http/incoming-handler`.
    HttpProxy,
    /// Anything else: its exports, as the component names them.
    Other(Vec<String>),
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            World::Command => f.write_str("wasi:cli/command"),
            World::HttpProxy => f.write_str("wasi:http/proxy"),
            World::Other(exports) if exports.is_empty() => {
                f.write_str("unknown (it exports nothing)")
            }
            World::Other(exports) => {
                write!(f, "unknown (it exports {})", exports.join(", "))
            }
        }
    }
}

/// The world `component` targets.
pub fn world_of(engine: &wasmtime::Engine, component: &Component) -> World {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.iter().any(|e| e.starts_with(CLI_RUN)) {
        World::Command
    } else if exports.iter().any(|e| e.starts_with(HTTP_HANDLER)) {
        World::HttpProxy
    } else {
        World::Other(exports)
    }
}

/// The world of the component `wasm` (compiled with the shim's settings),
/// for `wasmshim check`.
pub fn world(wasm: &[u8], name: &str) -> anyhow::Result<World> {
    let engine = super::engine_for(wasm.len())?;
    let component = <Component as super::Compiled>::compile(&engine, wasm, name)?;
    Ok(world_of(&engine, &component))
}

/// What a component's store holds: its WASI context and resource table.
struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Links `component` with WASI preview 2 and builds its store, or hands a
/// `wasi:http/proxy` to [`super::http`]; fails, naming the component, for
/// any other world.
pub(super) fn prepare(
    engine: &wasmtime::Engine,
    component: &Component,
    spec: &RunSpec,
) -> anyhow::Result<Box<dyn PreparedModule>> {
    let name = &spec.module_name;
    if spec.entry != "_start" {
        bail!(
            "{name} is a component: it runs through its wasi:cli/run export, so no entry \
             function ('#{}') can be named",
            spec.entry
        );
    }
    match world_of(engine, component) {
        World::Command => {}
        World::HttpProxy => return super::http::prepare(component, spec),
        other => bail!(
            "{name} is neither a wasi:cli/command nor a wasi:http/proxy component (world {other})"
        ),
    }
    let mut linker: Linker<ComponentState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot link {name}"))?;
    let pre = CommandPre::new(pre)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot link {name} as a wasi:cli/command"))?;
    let mut wasi = wasi_builder(spec)?;
    // The worker runs in the container's network namespace: the component
    // reaches exactly the network the spec gives the container.
    wasi.inherit_network()
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true);
    let store = Store::new(
        engine,
        ComponentState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
        },
    );
    Ok(Box::new(PreparedCommand { store, pre }))
}

/// A linked command component and its store, ready to instantiate.
struct PreparedCommand {
    store: Store<ComponentState>,
    pre: CommandPre<ComponentState>,
}

impl PreparedModule for PreparedCommand {
    fn run(self: Box<Self>) -> Outcome {
        let PreparedCommand { mut store, pre } = *self;
        let _faults = crate::engine::faults::shared();
        let result = pre.instantiate(&mut store).and_then(|command| {
            command
                .wasi_cli_run()
                .call_run(&mut store)?
                // `run` returning its error result is exit status 1, as
                // `wasmtime run` reports it.
                .map_err(|()| wasmtime_wasi::I32Exit(1).into())
        });
        outcome_of(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::wasmtime::WasmtimeEngine;
    use crate::engine::{Engine, ModuleCache, WasmKind};

    /// A `wasi:cli/command` in WAT whose `run` returns ok or err, importing nothing.
    fn command(ok: bool) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(component
                (core module $m (func (export "run") (result i32) (i32.const {})))
                (core instance $i (instantiate $m))
                (func $run (result (result)) (canon lift (core func $i "run")))
                (instance $cli (export "run" (func $run)))
                (export "wasi:cli/run@0.2.0" (instance $cli)))"#,
            if ok { 0 } else { 1 }
        ))
        .unwrap()
    }

    fn spec(entry: &str) -> RunSpec {
        RunSpec {
            module: "/c.wasm".into(),
            module_name: "/c.wasm".into(),
            entry: entry.into(),
            args: vec!["/c.wasm".into()],
            env: Vec::new(),
            preopens: Vec::new(),
        }
    }

    fn run(wasm: &[u8], entry: &str) -> anyhow::Result<Outcome> {
        Ok(WasmtimeEngine::new()
            .prepare(wasm, &spec(entry), None)?
            .run())
    }

    #[test]
    fn command_result_is_the_exit_status() {
        assert_eq!(WasmKind::of(&command(true)), Some(WasmKind::Component));
        assert_eq!(run(&command(true), "_start").unwrap(), Outcome::Exited(0));
        assert_eq!(run(&command(false), "_start").unwrap(), Outcome::Exited(1));
    }

    #[test]
    fn worlds_are_told_apart_and_only_commands_run() {
        assert_eq!(world(&command(true), "c").unwrap(), World::Command);
        let proxy = wat::parse_str(
            r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $h (export "handle" (func $f)))
                (export "wasi:http/incoming-handler@0.2.0" (instance $h)))"#,
        )
        .unwrap();
        assert_eq!(world(&proxy, "p").unwrap(), World::HttpProxy);
        // Its `handle` takes no request: refused before anything listens.
        let err = run(&proxy, "_start").unwrap_err();
        assert!(
            format!("{err:#}").contains(
                "/c.wasm cannot be served as a wasi:http/proxy: \
                 wasi:http/incoming-handler@0.2.0#handle does not take (incoming-request, \
                 response-outparam)"
            ),
            "{err:#}"
        );
        let empty = wat::parse_str("(component)").unwrap();
        let err = run(&empty, "_start").unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("nor a wasi:http/proxy component (world unknown (it exports nothing))"),
            "{err:#}"
        );
        let err = run(&command(true), "main").unwrap_err();
        assert!(
            format!("{err:#}").contains("no entry function ('#main')"),
            "{err:#}"
        );
    }

    #[test]
    fn a_component_is_compiled_once_into_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(&dir.path().join("cache"), 64 << 20).unwrap();
        let engine = WasmtimeEngine::new();
        let wasm = command(false);
        let first = engine.precompile(&wasm, "c", &cache).unwrap();
        assert!(!first.was_cached);
        assert!(engine.precompile(&wasm, "c", &cache).unwrap().was_cached);
        let outcome = engine
            .prepare(&wasm, &spec("_start"), Some(&cache))
            .unwrap()
            .run();
        assert_eq!(outcome, Outcome::Exited(1));
        assert_eq!(
            cache.stats.hits.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }
}
