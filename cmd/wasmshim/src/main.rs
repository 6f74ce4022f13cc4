//! `wasmshim`: the project's command line.
//!
//! - `wasmshim image build`: package a `.wasm` module as an OCI image archive
//!   that `ctr image import` accepts (platform `wasi/wasm`).
//! - `wasmshim check`: compile a module the way the shim will and report problems.
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
use wasmshim::engine::{Engine, RunSpec};

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
    /// Compile a module with wasmtime and check its entry function.
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
    WasmtimeEngine::new()
        .prepare(&wasm, &spec, None)
        .with_context(|| format!("checking {}", spec.module_name))?;
    println!("{}: ok (entry '{}')", spec.module_name, spec.entry);
    Ok(())
}
