//! `wasmshim`: the project's command line.
//!
//! - `wasmshim image build`: package a `.wasm` module as an OCI image archive
//!   that `ctr image import` accepts (platform `wasi/wasm`).
//! - `wasmshim check`: compile a module the way the shim will and report problems.

mod image;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Compile a module with wasmtime and check its entry function.
    Check {
        /// The .wasm file.
        module: PathBuf,
        /// Exported function the container will call.
        #[arg(long, default_value = "_start")]
        entry: String,
    },
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
        Command::Check { module, entry } => check(module, entry),
    }
}

fn check(module: PathBuf, entry: String) -> anyhow::Result<()> {
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
    wasmshim::engine::wasmtime::WasmtimeEngine::new()
        .prepare(&wasm, &spec)
        .with_context(|| format!("checking {name}"))?;
    println!("{name}: ok (entry '{}')", spec.entry);
    Ok(())
}
