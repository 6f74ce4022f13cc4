//! `wasmshim-oci`: a runc-compatible OCI runtime command line for the
//! clients that drive runtimes through runc's CLI — Docker 20.10, podman,
//! containerd's `io.containerd.runc.v2` (`BinaryName`). A container whose
//! entrypoint is a WebAssembly module runs with wasmtime in a worker process
//! of this binary, confined as the shim confines it; every other container
//! (and every command this binary does not parse) goes to runc unchanged.

mod cli;
mod console;
mod container;
mod logger;
mod runc;
mod state;

use std::ffi::OsString;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use state::StateDir;
use wasmshim::engine::wasmtime::WasmtimeEngine;

fn main() {
    if wasmshim::sys::worker::is_worker() {
        wasmshim::sys::worker::main(&WasmtimeEngine);
    }
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        // Not a command line we know: runc's (e.g. `run`, `checkpoint`).
        Err(_) => runc::exec(&argv),
    };
    logger::init(cli.log.as_deref(), cli.log_format, cli.debug);
    if let Err(e) = dispatch(&cli, &argv) {
        let message = format!("{e:#}");
        log::error!("{message}");
        eprintln!("wasmshim-oci: {message}");
        std::process::exit(1);
    }
}

/// Runs `cli`'s command on a Wasm container, or hands `argv` to runc.
fn dispatch(cli: &Cli, argv: &[OsString]) -> anyhow::Result<()> {
    let root = &cli.root;
    if let Command::Create {
        bundle,
        pid_file,
        console_socket,
        id,
        ..
    } = &cli.command
    {
        let bundle = bundle
            .canonicalize()
            .with_context(|| format!("bundle {}", bundle.display()))?;
        let spec = wasmshim::oci::load_spec(&bundle)?;
        if !container::is_wasm(&spec, &bundle) {
            runc::exec(argv);
        }
        return container::create(
            root,
            id,
            &bundle,
            &spec,
            pid_file.as_deref(),
            console_socket.as_deref(),
        );
    }
    let Some(id) = cli.command.container_id() else {
        runc::exec(argv); // features
    };
    let Some(state) = StateDir::open(root, id)? else {
        runc::exec(argv);
    };
    match &cli.command {
        Command::Start { .. } => container::start(state, id),
        Command::State { .. } => {
            println!("{:#}", container::state_json(&state)?);
            Ok(())
        }
        Command::Kill { signal, .. } => container::kill(&state, id, signal),
        Command::Delete { force, .. } => container::delete(state, id, *force),
        Command::Pause { .. } => container::pause(&state, id),
        Command::Resume { .. } => container::resume(&state, id),
        Command::Ps { format, .. } => {
            print!("{}", container::ps(&state, format)?);
            Ok(())
        }
        other => anyhow::bail!(
            "{} is not supported for WebAssembly containers (container {id})",
            other.name()
        ),
    }
}
