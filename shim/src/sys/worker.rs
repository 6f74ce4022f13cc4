//! The worker process: the child side of [`super::process`].
//!
//! Runs as `<shim> __wasmshim_worker <id>`, single-threaded, with the
//! container's stdio on fds 0-2 and the control socket on fd 3. It loads the
//! module (reporting `ok` or `err <kind> <why>`, and `log <level> <msg>` lines
//! for the shim's log), waits for `start`, runs the module, and exits with its
//! status as [`crate::exit`] defines it.
//!
//! A *detached* worker (the OCI runtime CLI's, whose `create` exits) is told
//! `detach` instead of `start`: it then waits for one byte on the start fifo
//! it holds as fd 4 ([`START_FD`]), which the CLI's `start` writes.
//! Compiled code comes from the module cache the shim's environment names
//! ([`crate::engine::cache`]) when it is usable.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::confine;
use super::plan::Confinement;
use crate::engine::{Engine, ModuleCache, Outcome, PreparedModule, RunSpec, MAX_MODULE_BYTES};

/// The worker's first line: what to run and how to confine it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRequest {
    /// The module and its WASI view, for the engine.
    pub run: RunSpec,
    /// Namespaces, identity, seccomp: applied by the worker to itself.
    pub confine: Confinement,
}

/// First argument that turns the shim binary into a worker.
pub const WORKER_ARG: &str = "__wasmshim_worker";

/// File descriptor of the control socket in the worker.
pub const CONTROL_FD: i32 = 3;

/// File descriptor of the start fifo in a detached worker (opened read-write
/// by its creator, so that reading blocks until `start` writes).
pub const START_FD: i32 = 4;

/// Environment variable through which the shim passes its log level to a worker.
pub const LOG_LEVEL_ENV: &str = "WASMSHIM_LOG_LEVEL";

/// Is this process a worker (started with [`WORKER_ARG`])?
pub fn is_worker() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == WORKER_ARG)
}

/// The worker's main: never returns.
pub fn main(engine: &dyn Engine) -> ! {
    // SAFETY: the shim dup2'd its end of a socketpair onto CONTROL_FD before
    // exec (see process.rs); nothing else in this process owns that fd.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let mut reply = match control.try_clone() {
        Ok(c) => c,
        Err(_) => std::process::exit(255),
    };
    if let Ok(socket) = reply.try_clone() {
        relay_logs(socket);
    }
    let mut lines = BufReader::new(control).lines();

    let prepared = load(&mut lines, engine).and_then(|(prepared, plan)| {
        release_free_heap();
        // Last before `ok`: the worker runs nothing but the module after this.
        confine::drop_privileges(&plan).map_err(LoadError::Worker)?;
        Ok(prepared)
    });
    let prepared = match prepared {
        Ok(p) => {
            let _ = reply.write_all(b"ok\n");
            p
        }
        Err(failure) => {
            let (kind, err) = match failure {
                LoadError::Module(e) => ("invalid", e),
                LoadError::Worker(e) => ("internal", e),
            };
            let message = format!("{err:#}").replace('\n', " ");
            let _ = writeln!(reply, "err {kind} {message}");
            std::process::exit(1);
        }
    };

    match lines.next() {
        Some(Ok(line)) if line == "start" => {}
        Some(Ok(line)) if line == "detach" => {
            drop(lines);
            if !await_start_fifo() {
                std::process::exit(0);
            }
        }
        // The shim went away or deleted the container before starting it.
        _ => std::process::exit(0),
    }
    let outcome = prepared.run_then_exit();
    let _ = std::io::stdout().flush();
    if let Outcome::Trapped(message) = &outcome {
        eprintln!("{}: {message}", engine.name());
        let _ = writeln!(reply, "trap {}", message.replace('\n', " | "));
    }
    std::process::exit(outcome.exit_status());
}

/// Blocks until the OCI CLI's `start` writes a byte to the start fifo;
/// false if the fifo is not there or fails.
fn await_start_fifo() -> bool {
    use std::io::Read;
    // SAFETY: the creator dup2'd the fifo onto START_FD before exec (see
    // process.rs, `create_detached`); nothing else in this process owns it.
    let mut fifo = unsafe { std::fs::File::from_raw_fd(START_FD) };
    let mut byte = [0u8; 1];
    loop {
        match fifo.read(&mut byte) {
            Ok(1) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => return false,
        }
    }
}

/// Why a worker could not prepare its module.
enum LoadError {
    /// The module or the spec is at fault (Create fails with InvalidArgument).
    Module(anyhow::Error),
    /// The worker itself failed (Create fails with Internal).
    Worker(anyhow::Error),
}

/// Reads the request from the shim, enters the container's namespaces (the
/// worker still has one thread), then reads and prepares the module.
fn load(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    engine: &dyn Engine,
) -> Result<(Box<dyn PreparedModule>, Confinement), LoadError> {
    let line = lines
        .next()
        .context("no RunSpec from the shim")
        .and_then(|line| Ok(line?))
        .map_err(LoadError::Worker)?;
    let WorkerRequest {
        run: mut spec,
        confine: plan,
    } = serde_json::from_str(&line)
        .context("decoding the RunSpec")
        .map_err(LoadError::Worker)?;
    confine::enter_namespaces(&plan)
        .and_then(|()| confine::open_preopens(&mut spec, &plan))
        .map_err(LoadError::Worker)?;
    let wasm = read_module(&spec)?;
    // The cache is opened as the shim's user, before privileges are dropped.
    let cache = ModuleCache::from_env();
    let prepared = engine
        .prepare(&wasm, &spec, cache.as_ref())
        .map_err(LoadError::Module)?;
    Ok((prepared, plan))
}

/// Reads the module, never more than [`MAX_MODULE_BYTES`] (the shim checked
/// its size, but the file may have grown since).
fn read_module(spec: &RunSpec) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let mut wasm = Vec::new();
    std::fs::File::open(&spec.module)
        .and_then(|file| file.take(MAX_MODULE_BYTES + 1).read_to_end(&mut wasm))
        .with_context(|| format!("cannot read {}", spec.module_name))
        .map_err(LoadError::Worker)?;
    if wasm.len() as u64 > MAX_MODULE_BYTES {
        return Err(LoadError::Module(anyhow::anyhow!(
            "{} is more than the {MAX_MODULE_BYTES} bytes a module may have",
            spec.module_name
        )));
    }
    Ok(wasm)
}

/// Returns the heap that compiling used and freed to the kernel.
///
/// Compiling frees most of what it allocates, but glibc keeps freed memory in
/// its malloc arenas (one more per compiling thread), resident for the
/// container's whole life. Trimming once, before the module starts, keeps a
/// running container closer to the memory its instance really uses. An
/// engine whose instantiation frees much of what it allocated (WasmEdge)
/// calls it again just before the entry function runs.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own arenas,
    // under their locks, so it is safe while other threads allocate.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sends the worker's `log` records to the shim as `log <level> <message>`
/// lines; the shim writes them to its own log with the container id.
fn relay_logs(socket: UnixStream) {
    struct ControlLogger {
        socket: Mutex<UnixStream>,
        max: log::LevelFilter,
    }

    impl log::Log for ControlLogger {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            relayed(metadata, self.max)
        }

        fn log(&self, record: &log::Record) {
            if !self.enabled(record.metadata()) {
                return;
            }
            let line = format!("{}", record.args()).replace('\n', " ");
            if let Ok(mut socket) = self.socket.lock() {
                let _ = writeln!(socket, "log {} {line}", record.level());
            }
        }

        fn flush(&self) {}
    }

    let max = std::env::var(LOG_LEVEL_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    let logger = ControlLogger {
        socket: Mutex::new(socket),
        max,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
}

/// Whether a worker sends a record to the shim's log: ours up to the shim's
/// level, the engines' and other crates' only up to info. Their debug output
/// (cranelift logs every function it compiles) would cost seconds on a big
/// module and bury our own lines.
fn relayed(metadata: &log::Metadata, max: log::LevelFilter) -> bool {
    let ours = metadata.target().starts_with("wasmshim");
    metadata.level() <= max && (ours || metadata.level() <= log::Level::Info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::{Level, LevelFilter, MetadataBuilder};

    fn relays(target: &str, level: Level, max: LevelFilter) -> bool {
        relayed(
            &MetadataBuilder::new().target(target).level(level).build(),
            max,
        )
    }

    #[test]
    fn debug_of_our_crate_follows_the_shim_level() {
        assert!(relays(
            "wasmshim::engine::wasmedge",
            Level::Debug,
            LevelFilter::Debug
        ));
        assert!(!relays(
            "wasmshim::engine::wasmedge",
            Level::Debug,
            LevelFilter::Info
        ));
        assert!(relays(
            "wasmshim::sys::worker",
            Level::Warn,
            LevelFilter::Info
        ));
    }

    #[test]
    fn engine_internals_stop_at_info() {
        assert!(!relays(
            "cranelift_codegen::timing",
            Level::Debug,
            LevelFilter::Debug
        ));
        assert!(!relays(
            "wasmtime::runtime",
            Level::Trace,
            LevelFilter::Trace
        ));
        assert!(relays("wasmtime::runtime", Level::Warn, LevelFilter::Debug));
        assert!(!relays("wasmtime::runtime", Level::Info, LevelFilter::Warn));
    }
}
