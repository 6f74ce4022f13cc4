//! `make bench [QUICK=1]`: our shims against runc + busybox in one private containerd.
//!
//! Scenarios (see `wasmshim_integration::bench`): cold start, start to first
//! byte, memory per running container, density, big-module first and second
//! start, `docker run --rm` through `wasmshim-oci` against runc in a private
//! Docker 20.10, and the criterion micro-benchmarks of `shim/benches/engine.rs`.
//! Prints the tables and one PASS/MISS/SKIP line per target; writes every raw
//! sample to `target/bench/results.json`. A full run also regenerates
//! `docs/performance.md` and `docs/performance.svg`; a quick run writes those
//! two under `target/bench/` instead, as does `--docker-only` (`make bench
//! DOCKER_ONLY=1`), which runs the Docker scenario alone, and `--memory-only`
//! (`make bench MEMORY_ONLY=1`): memory per container and density alone.
//! Exits non-zero only when a scenario failed to run (a missed target is
//! reported, not an error).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use wasmshim_cli::image::ImageSpec;
use wasmshim_integration::bench::docker::{self, DockerKind};
use wasmshim_integration::bench::report::{Machine, Micro, Report, BASELINE};
use wasmshim_integration::bench::scenarios::{self, Kind, Samples};
use wasmshim_integration::bench::{bigmodule, chart, http};
use wasmshim_integration::clients::{oci_binary, Docker, RUNTIME};
use wasmshim_integration::{
    busybox_image, cmdline, engines, modules, runtime, wasm_image, Containerd,
};

/// Sizes of one run.
struct Plan {
    rounds: usize,
    memory_containers: usize,
    density_target: usize,
    density_batch: usize,
    big_module_bytes: usize,
    docker_rounds: usize,
    http_requests_per_client: usize,
}

const FULL: Plan = Plan {
    rounds: 30,
    memory_containers: 50,
    density_target: 1000,
    density_batch: 100,
    big_module_bytes: 10 << 20,
    docker_rounds: 30,
    http_requests_per_client: 500,
};

const QUICK: Plan = Plan {
    rounds: 5,
    memory_containers: 5,
    density_target: 20,
    density_batch: 10,
    big_module_bytes: 1 << 20,
    docker_rounds: 5,
    http_requests_per_client: 20,
};

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--docker-only`: only the Docker scenario (it needs no containerd
    // scenario before it), reported under target/bench like a quick run.
    let docker_only = std::env::args().any(|a| a == "--docker-only");
    // `--http-only`: only the HTTP-function scenario (`make bench HTTP_ONLY=1`),
    // reported under target/bench like a quick run.
    let http_only = std::env::args().any(|a| a == "--http-only");
    // `--memory-only`: only memory per container and density (`make bench
    // MEMORY_ONLY=1`), reported under target/bench like a quick run.
    let memory_only = std::env::args().any(|a| a == "--memory-only");
    let all = !docker_only && !http_only && !memory_only;
    let plan = if quick { QUICK } else { FULL };
    let began = Instant::now();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out_dir = workspace.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    raise_open_files_limit();

    let (found, skipped) = engines()?;
    for line in &skipped {
        eprintln!("bench: {line}");
    }
    if found.is_empty() {
        bail!(
            "no shim built in {}: run make build",
            wasmshim_integration::bin_dir().display()
        );
    }

    let containerd = Arc::new(
        Containerd::start_with_log_level("info").context("starting a private containerd")?,
    );
    stop_on_signal(Arc::clone(&containerd))?;
    let modules_dir = modules::build_all(&containerd.dir().join("modules"))?;
    let big = bigmodule::generate(plan.big_module_bytes);
    std::fs::write(modules_dir.join("big.wasm"), &big)?;
    let bench_modules = modules_dir_copy(&modules_dir, &out_dir)?;
    containerd.import(&busybox_image("docker.io/wasmshim/busybox:bench")?)?;
    for (name, file) in [
        ("hello", "hello.wasm"),
        ("args", "args.wasm"),
        ("sleep", "sleep.wasm"),
        ("big", "big.wasm"),
    ] {
        let image = format!("docker.io/wasmshim/{name}:bench");
        containerd.import(&wasm_image(&image, &modules_dir.join(file), &[])?)?;
    }
    // Built now: the modules live in containerd's temp dir.
    let docker_images = [
        docker::linux_platform(wasm_image(
            "docker.io/wasmshim/hello:bench",
            &modules_dir.join("hello.wasm"),
            &[],
        )?),
        busybox_image("docker.io/wasmshim/busybox:bench")?,
    ];

    let mut kinds = vec![Kind {
        label: BASELINE.into(),
        runtime: None,
        hello: (
            "docker.io/wasmshim/busybox:bench".into(),
            vec!["/bin/echo".into(), "hi".into()],
        ),
        hello_output: "hi".into(),
        sleeper: (
            "docker.io/wasmshim/busybox:bench".into(),
            vec!["/bin/sleep".into(), "3600".into()],
        ),
    }];
    for engine in &found {
        kinds.push(Kind {
            label: engine.to_string(),
            runtime: Some(runtime(engine)),
            hello: ("docker.io/wasmshim/hello:bench".into(), Vec::new()),
            hello_output: "Hello from WebAssembly".into(),
            sleeper: ("docker.io/wasmshim/sleep:bench".into(), Vec::new()),
        });
    }

    let mut report = Report {
        command: match (quick, docker_only, http_only) {
            _ if memory_only => "make bench MEMORY_ONLY=1",
            (_, _, true) => "make bench HTTP_ONLY=1",
            (true, true, _) => "make bench QUICK=1 DOCKER_ONLY=1",
            (true, false, _) => "make bench QUICK=1",
            (false, true, _) => "make bench DOCKER_ONLY=1",
            (false, false, _) => "make bench",
        }
        .into(),
        quick,
        date: utc_now(),
        machine: Machine::detect(),
        cold_start: Vec::new(),
        cold_start_c: Vec::new(),
        first_byte: Vec::new(),
        memory: Vec::new(),
        density: Vec::new(),
        big_module: Vec::new(),
        docker_run: Vec::new(),
        http: Vec::new(),
        micro: Vec::new(),
        targets: Vec::new(),
        errors: Vec::new(),
    };

    // Written after every scenario, so an interrupted run keeps what it measured.
    let json = out_dir.join("results.json");
    let save = |report: &Report| {
        if let Ok(text) = serde_json::to_string_pretty(report) {
            let _ = std::fs::write(&json, text);
        }
    };

    if all {
        eprintln!("bench: cold start, {} rounds", plan.rounds);
        match scenarios::cold_start(&containerd, &kinds, plan.rounds) {
            Ok(s) => report.cold_start = s,
            Err(e) => report.errors.push(format!("cold start: {e:#}")),
        }
        save(&report);
        // The same with a C module of 28 KB, after one untimed run of each kind,
        // so that every timed start of ours loads compiled code from the cache.
        let c_kinds: Vec<Kind> = kinds
            .iter()
            .map(|k| {
                let mut k = k.clone();
                if k.is_wasm() {
                    k.hello = (
                        "docker.io/wasmshim/args:bench".into(),
                        vec!["/args.wasm".into(), "hi".into()],
                    );
                    k.hello_output = "arg 1=hi".into();
                }
                k
            })
            .collect();
        eprintln!(
            "bench: cold start, C module, warm cache, {} rounds",
            plan.rounds
        );
        match scenarios::cold_start(&containerd, &c_kinds, 1)
            .and_then(|_| scenarios::cold_start(&containerd, &c_kinds, plan.rounds))
        {
            Ok(s) => report.cold_start_c = s,
            Err(e) => report.errors.push(format!("cold start, C module: {e:#}")),
        }
        save(&report);
        eprintln!("bench: start to first byte, {} rounds", plan.rounds);
        match scenarios::first_byte(&containerd, &kinds, plan.rounds) {
            Ok(s) => report.first_byte = s,
            Err(e) => report.errors.push(format!("first byte: {e:#}")),
        }
        save(&report);
    }
    if all || memory_only {
        eprintln!(
            "bench: memory, {} containers of each kind",
            plan.memory_containers
        );
        match scenarios::memory(&containerd, &kinds, plan.memory_containers) {
            Ok(m) => report.memory = m,
            Err(e) => report.errors.push(format!("memory: {e:#}")),
        }
        save(&report);
        // Ours first: the density target is about Wasm containers.
        for kind in kinds.iter().skip(1).chain(kinds.iter().take(1)) {
            eprintln!(
                "bench: density {}, up to {}",
                kind.label, plan.density_target
            );
            let d = scenarios::density(&containerd, kind, plan.density_target, plan.density_batch);
            report.density.push(d);
            save(&report);
        }
    }
    if all {
        for kind in kinds.iter().filter(|k| k.is_wasm()) {
            eprintln!("bench: big module ({} bytes), {}", big.len(), kind.label);
            match scenarios::big_module(
                &containerd,
                kind,
                "docker.io/wasmshim/big:bench",
                big.len(),
            ) {
                Ok(b) => report.big_module.push(b),
                Err(e) => report.errors.push(format!("big module: {e:#}")),
            }
            save(&report);
        }
    }
    if !docker_only && !memory_only && found.contains(&"wasmtime") {
        eprintln!(
            "bench: HTTP function, {} clients x {} requests",
            http::CLIENTS,
            plan.http_requests_per_client
        );
        match http_scenario(&containerd, plan.http_requests_per_client) {
            Ok(loads) => report.http = loads,
            Err(e) => report.errors.push(format!("HTTP function: {e:#}")),
        }
        save(&report);
    }
    report.errors.extend(leftovers(&containerd));
    containerd.stop();

    // After containerd's scenarios: neither daemon's containers run beside the other's.
    if !http_only && !memory_only {
        eprintln!("bench: docker run --rm, {} rounds", plan.docker_rounds);
        match docker_scenario(&docker_images, plan.docker_rounds) {
            Ok(s) => report.docker_run = s,
            Err(e) => report.errors.push(format!("docker run: {e:#}")),
        }
        save(&report);
    }

    if all {
        eprintln!("bench: criterion micro-benchmarks");
        match criterion(&workspace, &bench_modules, &found, quick) {
            Ok(m) => report.micro = m,
            Err(e) => report.errors.push(format!("criterion: {e:#}")),
        }
    }

    report.judge(FULL.density_target);
    save(&report);
    let docs = if quick || !all {
        out_dir.clone()
    } else {
        workspace.join("docs")
    };
    if http_only && !quick {
        // Its own page: a full run's performance.md stays as that run wrote it.
        std::fs::write(
            workspace.join("docs/performance-http.md"),
            report.http_markdown(),
        )?;
    }
    chart::draw(&report, &docs.join("performance.svg"))?;
    std::fs::write(
        docs.join("performance.md"),
        report.markdown("performance.svg"),
    )?;

    println!("{}", report.tables());
    for t in &report.targets {
        println!(
            "{} {}: {} (goal {})",
            t.verdict(),
            t.name,
            t.measured,
            t.goal
        );
    }
    eprintln!(
        "bench: done in {:.0} s; raw samples in {}, report in {}",
        began.elapsed().as_secs_f64(),
        json.display(),
        docs.join("performance.md").display()
    );
    if !report.errors.is_empty() {
        for e in &report.errors {
            eprintln!("bench: ERROR {e}");
        }
        bail!("{} scenario(s) failed", report.errors.len());
    }
    Ok(())
}

/// The hello HTTP function on wasmtime against busybox `httpd` under runc,
/// interleaved (runc, wasmtime, runc, wasmtime), each run of each kind
/// reported.
fn http_scenario(
    containerd: &Containerd,
    per_client: usize,
) -> anyhow::Result<Vec<http::HttpLoad>> {
    let dir = containerd.dir().join("http");
    let component = modules::build_p2("http_hello", "http-hello", &dir, modules::Exec::Reactor)?;
    let image = "docker.io/wasmshim/http-hello:bench";
    containerd.import(&wasm_image(image, &component, &[])?)?;
    let ours = http::Server {
        label: "wasmtime".into(),
        runtime: Some(runtime("wasmtime")),
        image: image.into(),
        args: Vec::new(),
        env: vec![format!("WASMTIME_HTTP_PROXY_SOCKET_ADDR={}", http::ADDR)],
        check: http::hello_ok,
        stop_signal: "SIGTERM",
    };
    let baseline = http::busybox("docker.io/wasmshim/busybox:bench");
    let mut loads = Vec::new();
    for round in 0..2 {
        for server in [&baseline, &ours] {
            let id = format!("bench-http-{}-{round}", server.label.replace('+', "-"));
            loads.push(http::load(containerd, server, &id, &dir, per_client)?);
        }
    }
    Ok(loads)
}

/// The private dockerd while the Docker scenario runs, for [`stop_on_signal`].
static DOCKER: Mutex<Option<Arc<Docker>>> = Mutex::new(None);

/// The Docker scenario in a dockerd of its own, stopped on the way out
/// whatever happened: `images` are hello (Wasm) and busybox.
fn docker_scenario(images: &[ImageSpec; 2], rounds: usize) -> anyhow::Result<Vec<Samples>> {
    let [hello, busybox] = images;
    let daemon = Arc::new(docker::start(&oci_binary()?)?);
    *DOCKER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&daemon));
    let kinds = [
        DockerKind {
            label: BASELINE.into(),
            runtime: "runc".into(),
            image: busybox.name.clone(),
            entrypoint: Some("/bin/echo".into()),
            args: vec!["hi".into()],
            output: "hi".into(),
        },
        DockerKind {
            label: docker::OURS.into(),
            runtime: RUNTIME.into(),
            image: hello.name.clone(),
            entrypoint: None,
            args: Vec::new(),
            output: "Hello from WebAssembly".into(),
        },
    ];
    let result = images
        .iter()
        .try_for_each(|image| docker::load(&daemon, image))
        .and_then(|()| docker::docker_run(&daemon, &kinds, rounds))
        .map_err(|e| {
            let log = daemon.log();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow!("{e:#} (dockerd log ends: {})", tail.join(" | "))
        });
    DOCKER.lock().unwrap_or_else(|e| e.into_inner()).take();
    daemon.stop();
    result
}

/// Ctrl-C (or SIGTERM, SIGHUP) stops containerd, the Docker scenario's
/// dockerd and every container before the bench exits, so an interrupted
/// run leaves nothing running either.
fn stop_on_signal(containerd: Arc<Containerd>) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    // Blocked here, in the main thread, before any other thread exists: every
    // thread inherits the mask, so only the waiter below sees these signals.
    // (Children do not: std resets the mask before exec.)
    signals.thread_block()?;
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            eprintln!("bench: {signal}: stopping containerd, dockerd and their containers");
            containerd.stop();
            let docker = DOCKER.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(docker) = docker {
                docker.stop();
            }
            std::process::exit(130);
        }
    });
    Ok(())
}

/// Shims or workers still alive after every scenario removed its containers.
fn leftovers(containerd: &Containerd) -> Vec<String> {
    containerd
        .processes()
        .into_iter()
        .map(|pid| format!("left running after the scenarios: {}", cmdline(pid)))
        .collect()
}

/// A copy of the modules that outlives containerd's temp dir, for criterion.
fn modules_dir_copy(modules: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = out_dir.join("modules");
    std::fs::create_dir_all(&dir)?;
    for file in ["hello.wasm", "big.wasm"] {
        std::fs::copy(modules.join(file), dir.join(file))?;
    }
    Ok(dir)
}

/// Runs `shim/benches/engine.rs` for every built engine and reads criterion's medians.
fn criterion(
    workspace: &Path,
    modules: &Path,
    engines: &[&str],
    quick: bool,
) -> anyhow::Result<Vec<Micro>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The Makefile's package selection, so that cargo reuses what `make
    // build` compiled instead of compiling wasmtime again with other
    // features; the WasmEdge engine is in it where its shim is.
    let selection = std::env::var("WASMSHIM_CARGO_SELECTION").unwrap_or_else(|_| {
        let wasmedge = engines.contains(&"wasmedge");
        let exclude = if wasmedge {
            ""
        } else {
            "--exclude containerd-shim-wasmedge-v1"
        };
        format!("--workspace {exclude}")
    });
    cmd.current_dir(workspace)
        .args(["bench", "-q"])
        .args(selection.split_whitespace())
        .args(["--bench", "engine"])
        .env("WASMSHIM_BENCH_MODULES", modules);
    cmd.arg("--");
    if quick {
        cmd.args([
            "--warm-up-time",
            "0.2",
            "--measurement-time",
            "0.5",
            "--sample-size",
            "10",
        ]);
    }
    let started = std::time::SystemTime::now();
    let status = cmd.status().context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench {selection} --bench engine: {status}");
    }
    let mut found = Vec::new();
    collect_estimates(&workspace.join("target/criterion"), started, &mut found)?;
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// Criterion's `new/benchmark.json` + `new/estimates.json` written since `since`.
fn collect_estimates(
    dir: &Path,
    since: std::time::SystemTime,
    found: &mut Vec<Micro>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let estimates = path.join("new/estimates.json");
        let fresh = std::fs::metadata(&estimates)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if fresh {
            let bench: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path.join("new/benchmark.json"))?)?;
            let est: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&estimates)?)?;
            found.push(Micro {
                id: bench["full_id"].as_str().unwrap_or_default().to_string(),
                median_ns: est["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN),
            });
        } else {
            collect_estimates(&path, since, found)?;
        }
    }
    Ok(())
}

/// Containers, shims and sockets add up: let containerd (our child) open
/// as many files as the hard limit allows.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
