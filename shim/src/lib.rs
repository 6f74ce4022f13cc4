//! wasmshim: a containerd shim (runtime v2) that runs OCI bundles as
//! WebAssembly modules.
//!
//! Layers, with dependencies pointing one way (see `docs/architecture.md`):
//! [`task`] (containerd's Task API) → [`instance`] (one container's life) →
//! [`oci`] (bundle → [`engine::RunSpec`]) and [`sys`] (processes, mounts,
//! stdio) → [`engine`] (wasmtime, WasmEdge). [`bootstrap`] puts them together.
//!
//! A shim binary is one line: `wasmshim::run::<SomeEngine>(revision)`. An
//! engine whose libraries are costly to load has two: a front binary,
//! `wasmshim::run_front("name")`, which serves containerd, and its engine
//! binary, `wasmshim::run::<…>(revision)`, which runs the modules (see
//! [`front`]).

pub mod bootstrap;
pub mod engine;
pub mod error;
pub mod exit;
pub mod front;
pub mod group;
pub mod instance;
pub mod logging;
pub mod oci;
pub mod sys;
pub mod task;

pub use error::{Error, Result};

use engine::Engine;

/// The runtime name containerd knows a shim by, e.g. `io.containerd.wasmtime.v1`.
pub fn runtime_name(engine: &dyn Engine) -> String {
    runtime_name_of(engine.name())
}

/// The runtime name of the engine called `engine`.
fn runtime_name_of(engine: &str) -> String {
    format!("io.containerd.{engine}.v1")
}

/// The shim binary's name for `engine`, e.g. `containerd-shim-wasmtime-v1`.
pub fn binary_name(engine: &dyn Engine) -> String {
    format!("containerd-shim-{}-v1", engine.name())
}

/// What `containerd-shim-<engine>-v1 --version` prints, in the shape of
/// containerd's own shims; `revision` is the git revision the binary was
/// built from.
pub fn version_text(engine: &dyn Engine, revision: &str) -> String {
    format!(
        "{binary}:\n  Runtime:  {runtime}\n  Version:  {version}\n  Revision: {revision}\n  Engine:   {engine} {engine_version}\n",
        binary = binary_name(engine),
        runtime = runtime_name(engine),
        version = env!("CARGO_PKG_VERSION"),
        engine = engine.name(),
        engine_version = engine.version(),
    )
}

/// What `containerd-shim-<engine>-v1 --help` prints.
pub fn help_text(engine: &dyn Engine) -> String {
    format!(
        "{binary}: the containerd shim (runtime v2) of the {runtime} runtime.\n\
         It runs WebAssembly modules with {engine}, one container per OCI bundle.\n\n\
         containerd starts this binary itself (`ctr run --runtime {runtime} ...`):\n\
         put it on containerd's PATH; there is nothing to run by hand.\n\n\
         Options:\n  -v, --version  print the version of the shim and of {engine}\n  -h, --help     print this help\n",
        binary = binary_name(engine),
        runtime = runtime_name(engine),
        engine = engine.name(),
    )
}

/// Entry point of a `containerd-shim-<engine>-v1` binary built from git
/// revision `revision` (for `--version`).
///
/// Runs as containerd's shim (`start`, `delete`, or the ttrpc server), or,
/// when started by a shim, as its template or as a container's worker.
pub fn run<E: Engine + Default>(revision: &str) {
    warm_if_starting();
    let engine = E::default();
    if sys::worker::is_worker() {
        sys::worker::main(&engine);
    }
    if let Some(shim) = sys::template::spawned_by() {
        // The template a front binary's server spawned (see `run_front`).
        sys::template::serve_spawned(shim, &engine);
    }
    if serves_containerd() {
        // First, while this process has one thread: see sys/mount_ns.rs and
        // sys/template.rs (the template and its workers share the namespace).
        sys::mount_ns::enter_own();
        sys::template::fork_template(&engine);
        sys::code_pages::release_startup_code();
        sys::attach_lock::AttachLockWarmer::once();
    }
    match std::env::args().nth(1).as_deref() {
        Some("-v" | "--version" | "-version") => {
            print!("{}", version_text(&engine, revision));
            return;
        }
        Some("-h" | "--help" | "-help") => {
            print!("{}", help_text(&engine));
            return;
        }
        _ => {}
    }
    run_containerd_shim(&runtime_name(&engine));
}

/// Entry point of the front binary of the engine called `engine` (see
/// [`front`]): runs `start`, `delete` and the server, whose template it
/// spawns from the engine binary beside it, and turns into that engine
/// binary for everything else.
pub fn run_front(engine: &str) {
    warm_if_starting();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !front::runs_itself(&args) {
        eprintln!("{}", front::exec_engine_binary(&args));
        std::process::exit(1);
    }
    if serves_containerd() {
        // As in `run`, while this process has one thread.
        sys::mount_ns::enter_own();
        match front::use_engine_binary() {
            Ok(binary) => sys::template::spawn_template(&binary),
            // Workers are exec'd then, and fail naming the binary.
            Err(e) => eprintln!("{e}"),
        }
        // The shim's own start touched 5 MiB of its code (measured).
        sys::code_pages::release_startup_code();
        sys::attach_lock::AttachLockWarmer::once();
    }
    run_containerd_shim(&runtime_name_of(engine));
}

/// For containerd's `start` (its action comes last), which precedes the
/// new shim's first Create by 8-10 ms: begins the cgroup attach lock's
/// grace period now (see `sys/attach_lock.rs`). First in `main`, while the
/// process has one thread.
fn warm_if_starting() {
    if std::env::args_os()
        .last()
        .is_some_and(|action| action == "start")
    {
        // The child ends by itself; whoever inherits it reaps it.
        let _ = sys::attach_lock::warm_from_child();
    }
}

/// Runs containerd-shim's command line (`start`, `delete`, or the server)
/// as the shim of runtime `name`.
fn run_containerd_shim(name: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    runtime.block_on(containerd_shim::asynchronous::run::<bootstrap::ShimMain>(
        name,
        Some(bootstrap::shim_config()),
    ));
}

/// Whether this process is the shim server containerd talks to (started
/// with `-socket`), rather than `start`, `delete`, `-v` or `-info`.
fn serves_containerd() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter().any(|a| a == "-socket" || a == "--socket")
        && !args.iter().any(|a| {
            matches!(
                a.as_str(),
                "start" | "delete" | "-info" | "--info" | "-v" | "--version"
            )
        })
}
