//! In-process micro-benchmarks of the steps of a container start: bundle →
//! RunSpec, compiling a big module, instantiating and running hello world.
//!
//! The modules come from `$WASMSHIM_BENCH_MODULES` (`hello.wasm`, `big.wasm`),
//! which `make bench` fills; run it through `make bench`, not on its own.

use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use wasmshim::engine::{Engine, Outcome, RunSpec};

fn modules_dir() -> PathBuf {
    std::env::var_os("WASMSHIM_BENCH_MODULES")
        .map(PathBuf::from)
        .expect("WASMSHIM_BENCH_MODULES is not set: run these benchmarks with `make bench`")
}

fn module(name: &str) -> Vec<u8> {
    let path = modules_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every engine of `engines.txt` built into this benchmark.
fn engines() -> Vec<Box<dyn Engine>> {
    wasmshim::engine::built_in()
}

fn spec(name: &str) -> RunSpec {
    RunSpec {
        module: modules_dir().join(name),
        module_name: format!("/{name}"),
        entry: "_start".into(),
        args: vec![format!("/{name}")],
        env: vec![("PATH".into(), "/".into())],
        preopens: Vec::new(),
    }
}

/// `config.json` + rootfs as containerd hands them to the shim, read back into a RunSpec.
fn bundle_to_runspec(c: &mut Criterion) {
    let bundle = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::write(rootfs.join("hello.wasm"), module("hello.wasm")).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": ["/hello.wasm", "a", "b"],
            "env": ["PATH=/usr/bin:/bin", "GREETING=hi"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
        },
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]}],
    });
    std::fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();
    c.bench_function("bundle_to_runspec", |b| {
        b.iter(|| wasmshim::oci::load_bundle(bundle.path()).unwrap())
    });
}

/// Compile + link of the generated big module: what every start pays today.
fn compile_big_module(c: &mut Criterion) {
    let wasm = module("big.wasm");
    let spec = spec("big.wasm");
    let mut group = c.benchmark_group("compile_big_module");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    // WasmEdge's AOT compile of the 10 MiB module takes about 15 s: eleven of
    // them would double `make bench`. Its cost shows in the big-module
    // scenario's start times instead.
    for engine in engines().into_iter().filter(|e| e.name() != "wasmedge") {
        group.bench_function(engine.name(), |b| {
            b.iter(|| engine.prepare(&wasm, &spec, None).unwrap())
        });
    }
    group.finish();
}

/// Load + link of the big module from a warm module cache: what every start
/// after the first pays.
fn load_cached_big_module(c: &mut Criterion) {
    let wasm = module("big.wasm");
    let spec = spec("big.wasm");
    let dir = tempfile::tempdir().unwrap();
    let cache = wasmshim::engine::ModuleCache::open(&dir.path().join("cache"), u64::MAX).unwrap();
    let mut group = c.benchmark_group("load_cached_big_module");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for engine in engines().into_iter().filter(|e| e.name() != "wasmedge") {
        engine.precompile(&wasm, "big.wasm", &cache).unwrap();
        group.bench_function(engine.name(), |b| {
            b.iter(|| engine.prepare(&wasm, &spec, Some(&cache)).unwrap())
        });
    }
    group.finish();
}

/// Instantiate + run of a prepared hello world (compilation not timed).
///
/// Every iteration compiles untimed first, and criterion sizes its runs by the
/// timed part only: short, fixed warm-up and measurement times keep the number
/// of (slow, untimed) compilations near 200 per engine.
fn run_hello(c: &mut Criterion) {
    let wasm = module("hello.wasm");
    let spec = spec("hello.wasm");
    let mut group = c.benchmark_group("run_hello");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(20))
        .measurement_time(Duration::from_millis(50));
    for engine in engines() {
        group.bench_function(engine.name(), |b| {
            b.iter_custom(|iters| {
                let _quiet = StdoutToNull::new();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let prepared = engine.prepare(&wasm, &spec, None).unwrap();
                    let started = Instant::now();
                    let outcome = prepared.run();
                    total += started.elapsed();
                    assert_eq!(outcome, Outcome::Exited(0));
                }
                total
            })
        });
    }
    group.finish();
}

/// Points fd 1 at /dev/null while alive, so hello's greetings do not flood the report.
struct StdoutToNull {
    saved: RawFd,
    _null: std::fs::File,
}

impl StdoutToNull {
    fn new() -> Self {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let saved = nix::unistd::dup(1).unwrap();
        nix::unistd::dup2(null.as_raw_fd(), 1).unwrap();
        StdoutToNull { saved, _null: null }
    }
}

impl Drop for StdoutToNull {
    fn drop(&mut self) {
        let _ = nix::unistd::dup2(self.saved, 1);
        let _ = nix::unistd::close(self.saved);
    }
}

criterion_group!(
    benches,
    bundle_to_runspec,
    compile_big_module,
    load_cached_big_module,
    run_hello
);
criterion_main!(benches);
