//! `wasmshim`: the project's command line.
//!
//! - `wasmshim image build`: package a `.wasm` module as an OCI image archive
//!   that `ctr image import` accepts (platform `wasi/wasm`).
//! - `wasmshim check`: compile a module or component the way the shim will,
//!   name its kind and entry or world, and report problems.
//! - `wasmshim run`: run a module here, the way the shim's worker runs it.
//! - `wasmshim precompile`: compile a module into the shims' module cache.
//! - `wasmshim cache ls|prune`: show or empty that cache.
//! - `wasmshim doctor`: check this node for what the shims need, with fixes.

use wasmshim_cli::cache::{self, CacheArgs};
use wasmshim_cli::{doctor, image};

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wasmshim::engine::wasmtime::WasmtimeEngine;
use wasmshim::engine::{Engine, RunSpec, WasmKind};

#[derive(Parser)]
#[command(
    name = "wasmshim",
    version,
    about = "Tools for the wasmshim containerd shims"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// OCI images of WebAssembly modules.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Run a module here with wasmtime, as the shim would (the current directory preopened at `/`).
    Run {
        /// The .wasm file.
        module: PathBuf,
        /// Exported function to call.
        #[arg(long, default_value = "_start")]
        entry: String,
        /// Arguments for the module.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Compile a module or component with wasmtime as the shim would; print
    /// which it is, and its entry function or world.
    Check {
        /// The .wasm file.
        module: PathBuf,
        /// Exported function the container will call.
        #[arg(long, default_value = "_start")]
        entry: String,
    },
    /// Compile a module into the shims' module cache, so that no container start compiles it.
    Precompile {
        /// The .wasm file (the same bytes as the image's module).
        module: PathBuf,
        /// Engine whose shim will run it.
        #[arg(long, default_value = "wasmtime")]
        engine: String,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// The shims' module cache of compiled code.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Check this node for what the shims need, and print how to fix each problem.
    Doctor(doctor::DoctorArgs),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List the cache's entries, least recently used first.
    Ls(CacheArgs),
    /// Remove every entry.
    Prune(CacheArgs),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Write an OCI image archive holding one module as its entrypoint.
    Build(image::BuildArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Image {
            command: ImageCommand::Build(args),
        } => image::build(&args),
        Command::Check { module, entry } => check(module, entry).map(|_| ()),
        Command::Precompile {
            module,
            engine,
            cache: args,
        } => {
            let engine = engine_named(&engine)?;
            println!(
                "{}",
                cache::precompile(engine.as_ref(), &module, &args.open()?)?
            );
            Ok(())
        }
        Command::Cache { command } => {
            let out = match command {
                CacheCommand::Ls(args) => cache::list(&args.open()?)?,
                CacheCommand::Prune(args) => cache::prune(&args.open()?)? + "\n",
            };
            print!("{out}");
            Ok(())
        }
        Command::Doctor(args) => std::process::exit(doctor::run(&args)),
        Command::Run {
            module,
            entry,
            args,
        } => {
            let (wasm, mut spec) = load(module, entry)?;
            spec.args.extend(args);
            spec.preopens.push(wasmshim::engine::Preopen {
                host: std::env::current_dir()?,
                guest: "/".into(),
                readonly: false,
            });
            let outcome = WasmtimeEngine::new().prepare(&wasm, &spec, None)?.run();
            if let wasmshim::engine::Outcome::Trapped(message) = &outcome {
                eprintln!("{message}");
            }
            std::process::exit(outcome.exit_status());
        }
    }
}

/// The engine `name` if this build has it.
fn engine_named(name: &str) -> anyhow::Result<Box<dyn Engine>> {
    match name {
        "wasmtime" => Ok(Box::new(WasmtimeEngine::new())),
        #[cfg(feature = "wasmedge")]
        "wasmedge" => Ok(Box::new(wasmshim::engine::wasmedge::WasmEdgeEngine::new())),
        other => anyhow::bail!(
            "engine {other} is not in this build (wasmtime{})",
            if cfg!(feature = "wasmedge") {
                ", wasmedge"
            } else {
                "; build with --features wasmedge for WasmEdge"
            }
        ),
    }
}

fn load(module: PathBuf, entry: String) -> anyhow::Result<(Vec<u8>, RunSpec)> {
    let wasm = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
    anyhow::ensure!(
        wasmshim::engine::has_wasm_magic(&wasm),
        "{} is not a WebAssembly module",
        module.display()
    );
    let name = module.display().to_string();
    let spec = RunSpec {
        module: module.clone(),
        module_name: name.clone(),
        entry,
        args: vec![name.clone()],
        env: Vec::new(),
        preopens: Vec::new(),
    };
    Ok((wasm, spec))
}

fn check(module: PathBuf, entry: String) -> anyhow::Result<()> {
    let (wasm, spec) = load(module, entry)?;
    println!("{}", describe(&wasm, &spec)?);
    Ok(())
}

/// Compiles and links `wasm` as the wasmtime shim would; says whether it is a
/// core module (and its entry) or a component (and its world).
fn describe(wasm: &[u8], spec: &RunSpec) -> anyhow::Result<String> {
    let name = &spec.module_name;
    let kind = WasmKind::of(wasm)
        .with_context(|| format!("{name} is WebAssembly of an unknown binary version"))?;
    let what = match kind {
        WasmKind::Module => format!("core module, entry '{}'", spec.entry),
        WasmKind::Component => format!(
            "component, world {}",
            wasmshim::engine::wasmtime::component::world(wasm, name)?
        ),
    };
    WasmtimeEngine::new()
        .prepare(wasm, spec, None)
        .with_context(|| format!("checking {name} ({what})"))?;
    Ok(format!("{name}: ok ({what})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(entry: &str) -> RunSpec {
        RunSpec {
            module: "/m.wasm".into(),
            module_name: "/m.wasm".into(),
            entry: entry.into(),
            args: Vec::new(),
            env: Vec::new(),
            preopens: Vec::new(),
        }
    }

    #[test]
    fn check_names_module_entry_and_component_world() {
        let module = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
        assert_eq!(
            describe(&module, &spec("_start")).unwrap(),
            "/m.wasm: ok (core module, entry '_start')"
        );
        let command = wat::parse_str(
            r#"(component
                (core module $m (func (export "run") (result i32) (i32.const 0)))
                (core instance $i (instantiate $m))
                (func $run (result (result)) (canon lift (core func $i "run")))
                (instance $cli (export "run" (func $run)))
                (export "wasi:cli/run@0.2.0" (instance $cli)))"#,
        )
        .unwrap();
        assert_eq!(
            describe(&command, &spec("_start")).unwrap(),
            "/m.wasm: ok (component, world wasi:cli/command)"
        );
        let empty = wat::parse_str("(component)").unwrap();
        let err = format!("{:#}", describe(&empty, &spec("_start")).unwrap_err());
        assert!(
            err.contains("checking /m.wasm (component, world unknown (it exports nothing))"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            describe(b"\0asm\x02\0\0\0", &spec("_start")).unwrap_err()
        );
        assert!(err.contains("unknown binary version"), "{err}");
    }
}
