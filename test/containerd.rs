//! Integration tests: a private containerd runs Wasm images through the built
//! shims, driven with `ctr` as a user would. One table of cases runs for every
//! engine whose shim is built; `KNOWN_GAPS` lists cases an engine may fail.
//!
//! Needs root, containerd + runc, clang + wasi-libc and busybox-static (`make
//! test` installs them) and the release shims (`make build`).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use libtest_mimic::{Arguments, Failed, Trial};
use wasmshim_integration::{
    busybox_image, engines, image, modules, parent_of, runtime, text, wasm_image, Containerd,
};

mod artifacts;
#[path = "cache.rs"]
mod cache;
mod components;
mod http;
mod isolation;
mod linux;
mod sockets;

/// Cases an engine is known not to pass yet: (engine, case).
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// Shared by every case: one containerd, images imported once.
struct Env {
    containerd: Containerd,
}

static ENV: OnceLock<Env> = OnceLock::new();

fn env() -> &'static Env {
    ENV.get().expect("set up before the trials run")
}

type Case = fn(&Env, &str, &str) -> anyhow::Result<()>;

const CASES: &[(&str, Case)] = &[
    ("hello_world", hello_world),
    ("args_and_env", args_and_env),
    ("exit_codes", exit_codes),
    ("trap", trap),
    ("entry_function", entry_function),
    ("bind_mount_read_write", bind_mount_read_write),
    ("bind_mount_read_only", bind_mount_read_only),
    ("sigterm_stops_loop", sigterm_stops_loop),
    ("sigkill_stops_loop", sigkill_stops_loop),
    ("detached_then_attach", detached_then_attach),
    ("twenty_in_parallel", twenty_in_parallel),
    ("runc_beside_wasm", runc_beside_wasm),
    (
        "linux_echo_and_exit_codes",
        linux::busybox_echo_and_exit_codes,
    ),
    ("linux_signals", linux::busybox_signals),
    ("linux_metrics", linux::busybox_metrics),
    ("linux_missing_program", linux::missing_program_is_named),
    ("linux_exec", linux::busybox_exec),
    ("linux_pause_resume", linux::busybox_pause_resume),
    ("wasm_pause_resume", linux::wasm_pause_resume),
    ("error_missing_module", error_missing_module),
    ("error_missing_function", error_missing_function),
    ("error_corrupt_module", error_corrupt_module),
    ("artifact_image_runs", artifacts::module_from_the_image_runs),
    (
        "artifact_bad_layers_are_refused",
        artifacts::bad_layers_are_refused,
    ),
    ("cache_second_start_is_a_hit", cache::second_start_is_a_hit),
    (
        "cache_corrupt_entry_is_rebuilt",
        cache::corrupt_entry_is_rebuilt,
    ),
    (
        "cache_ten_concurrent_first_starts",
        cache::ten_concurrent_first_starts,
    ),
    ("cache_eviction_past_the_cap", cache::eviction_past_the_cap),
    (
        "cache_signals_end_a_miss_as_a_hit",
        cache::signals_end_a_miss_as_a_hit,
    ),
    ("stdin_to_end_of_file", stdin_to_end_of_file),
    ("sigterm_during_host_sleep", sigterm_during_host_sleep),
    (
        "pod_containers_share_one_shim",
        pod_containers_share_one_shim,
    ),
    ("delete_after_shim_crash", delete_after_shim_crash),
    (
        "workers_fork_from_the_shims_template",
        workers_fork_from_the_shims_template,
    ),
    ("refusals_name_their_reason", refusals_name_their_reason),
    ("shim_prints_its_version", shim_prints_its_version),
    ("oom_kill_exits_137", isolation::oom_kill_exits_137),
    (
        "cgroup_limits_and_metrics",
        isolation::cgroup_limits_and_metrics,
    ),
    ("network_namespace", isolation::network_namespace),
    (
        "rootfs_mounts_stay_in_the_shim",
        isolation::rootfs_mounts_stay_in_the_shim,
    ),
    ("user_owns_files", isolation::user_owns_files),
    ("seccomp_caps_nnp", isolation::seccomp_caps_nnp),
    (
        "hooks_get_state_and_fail_create",
        isolation::hooks_get_state_and_fail_create,
    ),
    (
        "docker_spec_runs_a_module",
        isolation::docker_spec_runs_a_module,
    ),
];

/// Cases for one engine only: (engine, name, case).
const ENGINE_CASES: &[(&str, &str, Case)] = &[
    ("wasmedge", "reports_aot_or_interpreter", wasmedge_mode),
    (
        "wasmedge",
        "front_binary_starts_without_the_engine",
        wasmedge_front_binary,
    ),
    ("wasmedge", "echo_server", sockets::echo_server),
    // wasmtime gives WASI preview 1 modules no sockets of their own (issue 13),
    // only the listeners a container declares (WASMSHIM_TCP_LISTEN).
    (
        "wasmtime",
        "socket_module_is_refused",
        sockets::socket_module_is_refused,
    ),
    ("wasmtime", "p1_listener_echo", sockets::p1_listener_echo),
    (
        "wasmtime",
        "p1_listener_bad_declarations",
        sockets::p1_listener_bad_declarations,
    ),
    (
        "wasmedge",
        "p1_listener_is_refused",
        sockets::p1_listener_bad_declarations,
    ),
    // Components (`wasi:cli/command`) run on wasmtime; WasmEdge refuses them.
    (
        "wasmtime",
        "component_args_env_and_exit",
        components::args_env_and_exit,
    ),
    (
        "wasmtime",
        "component_read_only_mount",
        components::read_only_mount,
    ),
    (
        "wasmtime",
        "component_killed_like_a_module",
        components::killed_like_a_module,
    ),
    (
        "wasmtime",
        "component_serves_on_wasi_sockets",
        components::serves_on_wasi_sockets,
    ),
    (
        "wasmtime",
        "component_entry_function_is_refused",
        components::entry_function_is_refused,
    ),
    (
        "wasmedge",
        "component_is_refused",
        components::refused_by_wasmedge,
    ),
    // HTTP functions (`wasi:http/proxy` components) are served by wasmtime.
    (
        "wasmtime",
        "http_function_answers_concurrent_clients",
        http::answers_concurrent_clients,
    ),
    (
        "wasmtime",
        "http_function_sigterm_loses_no_request",
        http::sigterm_during_load_loses_no_request,
    ),
    (
        "wasmtime",
        "http_function_bad_address_is_refused",
        http::bad_address_is_refused,
    ),
    // The CLI precompiles with wasmtime (WasmEdge only when built with its feature).
    (
        "wasmtime",
        "cache_precompile_after_import",
        cache::precompile_after_import,
    ),
];

fn main() {
    let args = Arguments::from_args();
    let (engines, skipped) = match engines() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("integration tests cannot run: {e:#}");
            std::process::exit(1);
        }
    };
    for line in &skipped {
        eprintln!("SKIPPED {line}");
    }
    let mut trials = Vec::new();
    for engine in &engines {
        for (name, case) in CASES {
            let engine = engine.to_string();
            let case = *case;
            let gap = KNOWN_GAPS.contains(&(engine.as_str(), *name));
            let id = format!("{engine}-{}", name.replace('_', "-"));
            trials.push(
                Trial::test(format!("{engine}::{name}"), move || {
                    run_case(case, &engine, &id)
                })
                .with_ignored_flag(gap),
            );
        }
    }
    for (engine, name, case) in ENGINE_CASES {
        if engines.contains(engine) {
            let engine = engine.to_string();
            let case = *case;
            let id = format!("{engine}-{}", name.replace('_', "-"));
            trials.push(Trial::test(format!("{engine}::{name}"), move || {
                run_case(case, &engine, &id)
            }));
        }
    }
    let needs_containerd = trials.iter().any(|t| !args.is_filtered_out(t));
    if needs_containerd && !args.list {
        if let Err(e) = setup() {
            eprintln!("integration setup failed: {e:#}");
            std::process::exit(1);
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(env) = ENV.get() {
        // Every case removed its containers: no shim or worker of this
        // containerd may be alive now, before stop() kills whatever is left.
        let left: Vec<String> = env
            .containerd
            .processes()
            .into_iter()
            .map(wasmshim_integration::cmdline)
            .collect();
        // Statics are never dropped: stop containerd here.
        env.containerd.stop();
        if !left.is_empty() {
            eprintln!("shim or worker processes left behind after the run: {left:#?}");
            std::process::exit(1);
        }
    }
    conclusion.exit();
}

fn setup() -> anyhow::Result<()> {
    let containerd = Containerd::start()?;
    let modules = modules::build_all(&containerd.dir().join("modules"))?;
    for name in [
        "hello",
        "args",
        "exit",
        "files",
        "sleep",
        "loop",
        "trap",
        "greet",
        "cat",
        "alloc",
        "ticker",
        "echo_server",
        "p1_echo",
    ] {
        let module = modules.join(format!("{name}.wasm"));
        containerd.import(&wasm_image(&image(name), &module, image_env(name))?)?;
    }
    components::import(&containerd, &modules)?;
    artifacts::import(&containerd, &modules)?;
    let corrupt = modules.join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x01\0\0\0\x01\xffgarbage")?;
    containerd.import(&wasm_image(&image("corrupt"), &corrupt, &[])?)?;
    containerd.import(&busybox_image(&image("busybox"))?)?;
    ENV.set(Env { containerd })
        .map_err(|_| anyhow::anyhow!("set up twice"))?;
    Ok(())
}

/// Runs one case, then checks that its container left nothing behind.
fn run_case(case: Case, engine: &str, id: &str) -> Result<(), Failed> {
    let env = env();
    let result = case(env, &runtime(engine), id);
    // Give containerd a moment to finish deleting after ctr returned.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut leftovers = env.containerd.leftovers(id);
    while !leftovers.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        leftovers = env.containerd.leftovers(id);
    }
    result.map_err(|e| Failed::from(format!("{e:#}")))?;
    if !leftovers.is_empty() {
        return Err(format!("container {id} left behind:\n{}", leftovers.join("\n")).into());
    }
    Ok(())
}

/// Asserts a successful run whose stdout contains every one of `expected`.
fn expect_output(out: &Output, expected: &[&str]) -> anyhow::Result<String> {
    let (stdout, stderr) = text(out);
    ensure!(
        out.status.success(),
        "ctr failed with {}: stdout {stdout:?} stderr {stderr:?}",
        out.status
    );
    for e in expected {
        ensure!(
            stdout.contains(e),
            "stdout lacks {e:?}: {stdout:?} (stderr {stderr:?})"
        );
    }
    Ok(stdout)
}

/// Asserts a failed run whose stderr contains `message`.
fn expect_error(out: &Output, message: &str) -> anyhow::Result<()> {
    let (stdout, stderr) = text(out);
    ensure!(!out.status.success(), "ctr succeeded: stdout {stdout:?}");
    ensure!(
        stderr.contains(message),
        "ctr's error does not say {message:?}: {stderr:?}"
    );
    Ok(())
}

fn hello_world(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env.containerd.run(Some(rt), &[&image("hello"), id]);
    expect_output(&out, &["Hello from WebAssembly"])?;
    Ok(())
}

fn args_and_env(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    check_args_and_env(env, rt, id, &image("args"))
}

/// Runs `image_name` (the `args` program, as a module or a component) with
/// two args and an env var, and checks that it printed them all, the
/// image's own env var too.
fn check_args_and_env(env: &Env, rt: &str, id: &str, image_name: &str) -> anyhow::Result<()> {
    let out = env.containerd.run(
        Some(rt),
        &[
            "--env",
            "GREETING=hi there",
            image_name,
            id,
            "/args.wasm",
            "one",
            "two words",
        ],
    );
    expect_output(
        &out,
        &[
            "arg 0=/args.wasm\n",
            "arg 1=one\n",
            "arg 2=two words\n",
            "env GREETING=hi there\n",
            "env IMAGE_ENV=from-image\n",
        ],
    )?;
    Ok(())
}

/// The env an image of test program `name` carries: `args` prints it.
fn image_env(name: &str) -> &'static [&'static str] {
    if name == "args" {
        &["IMAGE_ENV=from-image"]
    } else {
        &[]
    }
}

fn exit_codes(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env
        .containerd
        .run(Some(rt), &[&image("exit"), id, "/exit.wasm", "0"]);
    expect_output(&out, &["exiting with 0"])?;
    let out = env
        .containerd
        .run(Some(rt), &[&image("exit"), id, "/exit.wasm", "3"]);
    ensure!(
        out.status.code() == Some(3),
        "exit 3 became {:?}: {:?}",
        out.status,
        text(&out)
    );
    Ok(())
}

fn trap(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env.containerd.run(Some(rt), &[&image("trap"), id]);
    let (_, stderr) = text(&out);
    ensure!(
        out.status.code() == Some(134),
        "a trap exits 134, got {:?}: {stderr}",
        out.status
    );
    ensure!(
        stderr.contains("unreachable"),
        "the trap is not shown: {stderr:?}"
    );
    let trapped = format!("container {id}: module trapped");
    let log = env.containerd.log_with(&[&trapped]);
    ensure!(
        log.contains(&trapped),
        "the shim log does not record the trap"
    );
    Ok(())
}

fn entry_function(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env
        .containerd
        .run(Some(rt), &[&image("greet"), id, "/greet.wasm#greet"]);
    let stdout = expect_output(&out, &["greet called"])?;
    ensure!(
        !stdout.contains("start called"),
        "_start ran too: {stdout:?}"
    );
    let out = env.containerd.run(Some(rt), &[&image("greet"), id]);
    expect_output(&out, &["start called"])?;
    Ok(())
}

fn host_dir(env: &Env, id: &str) -> anyhow::Result<PathBuf> {
    let dir = env.containerd.dir().join("host").join(id);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("in.txt"), "content from the host\n")?;
    Ok(dir)
}

fn bind_mount_read_write(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let dir = host_dir(env, id)?;
    let mount = format!("type=bind,src={},dst=/data,options=rbind:rw", dir.display());
    let out = env.containerd.run(
        Some(rt),
        &[
            "--mount",
            &mount,
            &image("files"),
            id,
            "/files.wasm",
            "/data/in.txt",
            "/data/out.txt",
        ],
    );
    expect_output(&out, &["content from the host", "wrote /data/out.txt"])?;
    let written = std::fs::read_to_string(dir.join("out.txt")).context("out.txt on the host")?;
    ensure!(
        written == "written by wasm\n",
        "host file holds {written:?}"
    );
    Ok(())
}

fn bind_mount_read_only(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    check_read_only_mount(env, rt, id, &image("files"), 2)
}

/// Runs `image_name` (the `files` program, as a module or a component) with
/// a read-only bind mount at `/data`: it reads the host's file, its write is
/// refused with a message and exit status `status`, and nothing is written.
fn check_read_only_mount(
    env: &Env,
    rt: &str,
    id: &str,
    image_name: &str,
    status: i32,
) -> anyhow::Result<()> {
    let dir = host_dir(env, id)?;
    let mount = format!("type=bind,src={},dst=/data,options=rbind:ro", dir.display());
    let out = env.containerd.run(
        Some(rt),
        &[
            "--mount",
            &mount,
            image_name,
            id,
            "/files.wasm",
            "/data/in.txt",
            "/data/out.txt",
        ],
    );
    let (stdout, stderr) = text(&out);
    ensure!(
        stdout.contains("content from the host"),
        "reading failed: {stdout:?} {stderr:?}"
    );
    ensure!(
        out.status.code() == Some(status),
        "the write was not refused with {status}: {:?} {stderr:?}",
        out.status
    );
    ensure!(
        stderr.contains("write /data/out.txt"),
        "no write error shown: {stderr:?}"
    );
    ensure!(
        !dir.join("out.txt").exists(),
        "a read-only mount was written"
    );
    Ok(())
}

/// Starts a looping module in the foreground, kills it with `signal`, and checks
/// that `ctr run` ends within a second with status 128+signal.
fn kill_loop(env: &Env, rt: &str, id: &str, signal: &str, status: i32) -> anyhow::Result<()> {
    kill_running(env, rt, id, &[&image("loop"), id], signal, status)
}

/// Runs `image_and_args` in the foreground, kills it with `signal` once it
/// runs, and checks that `ctr run` ends within a second with `status`.
fn kill_running(
    env: &Env,
    rt: &str,
    id: &str,
    image_and_args: &[&str],
    signal: &str,
    status: i32,
) -> anyhow::Result<()> {
    let fifo = env.containerd.fifo_dir();
    let mut args = vec![
        "run",
        "--rm",
        "--fifo-dir",
        fifo.to_str().unwrap(),
        "--runtime",
        rt,
    ];
    args.extend(image_and_args);
    let mut run = env
        .containerd
        .ctr_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_for_status(env, id, "RUNNING", Duration::from_secs(20))?;
    let killed = Instant::now();
    let out = env
        .containerd
        .ctr(&["task", "kill", "--signal", signal, id]);
    ensure!(out.status.success(), "ctr task kill: {:?}", text(&out));
    let deadline = killed + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = run.try_wait()? {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            anyhow::bail!("ctr run still running 10 s after {signal}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = killed.elapsed();
    let out = run.wait_with_output()?;
    ensure!(
        exit.code() == Some(status),
        "{signal} gave {exit:?}, want {status}: {:?}",
        text(&out)
    );
    ensure!(
        took < Duration::from_secs(1),
        "{signal} took {took:?} to stop the module"
    );
    Ok(())
}

fn wait_for_status(env: &Env, id: &str, status: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let out = env.containerd.ctr(&["task", "ls"]);
        let (stdout, _) = text(&out);
        if stdout
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains(status))
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "task {id} never reached {status}: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm_stops_loop(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    kill_loop(env, rt, id, "SIGTERM", 143)
}

fn sigkill_stops_loop(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    kill_loop(env, rt, id, "SIGKILL", 137)
}

fn detached_then_attach(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let fifo = env.containerd.fifo_dir();
    let out = env.containerd.ctr(&[
        "run",
        "-d",
        "--fifo-dir",
        fifo.to_str().unwrap(),
        "--runtime",
        rt,
        &image("sleep"),
        id,
        "/sleep.wasm",
        "2",
    ]);
    ensure!(out.status.success(), "ctr run -d: {:?}", text(&out));
    // `ctr task attach` streams the running module's output, waits for its exit
    // and deletes the task, as it does for runc.
    let attach = env.containerd.ctr(&["task", "attach", id]);
    let (stdout, stderr) = text(&attach);
    let rm = env.containerd.ctr(&["container", "rm", id]);
    ensure!(
        attach.status.success(),
        "ctr task attach: {stdout:?} {stderr:?}"
    );
    ensure!(
        stdout.contains("done"),
        "attach did not show the module's output: {stdout:?} {stderr:?}"
    );
    ensure!(rm.status.success(), "ctr container rm: {:?}", text(&rm));
    Ok(())
}

fn twenty_in_parallel(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let env = Arc::new(env);
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let env = env.clone();
                s.spawn(move || {
                    let cid = format!("{id}-{i}");
                    let marker = format!("container number {i}");
                    let out = env
                        .containerd
                        .run(Some(rt), &[&image("args"), &cid, "/args.wasm", &marker]);
                    expect_output(&out, &[&format!("arg 1={marker}\n")])?;
                    let left = env.containerd.leftovers(&cid);
                    let deadline = Instant::now() + Duration::from_secs(5);
                    let mut left = left;
                    while !left.is_empty() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(100));
                        left = env.containerd.leftovers(&cid);
                    }
                    ensure!(left.is_empty(), "{cid} left behind {left:?}");
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err())
        .map(|e| format!("{e:#}"))
        .collect();
    ensure!(
        failures.is_empty(),
        "{} of 20 failed: {failures:#?}",
        failures.len()
    );
    Ok(())
}

fn runc_beside_wasm(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    // A Wasm container runs while a Linux container runs under runc in the same containerd.
    let linux_id = format!("{id}-runc");
    let fifo = env.containerd.fifo_dir();
    let out = env.containerd.ctr(&[
        "run",
        "-d",
        "--fifo-dir",
        fifo.to_str().unwrap(),
        &image("busybox"),
        &linux_id,
        "/bin/sleep",
        "30",
    ]);
    ensure!(out.status.success(), "busybox under runc: {:?}", text(&out));
    let wasm = env.containerd.run(Some(rt), &[&image("hello"), id]);
    let echo = env.containerd.run(
        None,
        &[
            &image("busybox"),
            &format!("{id}-echo"),
            "/bin/echo",
            "hi from runc",
        ],
    );
    env.containerd
        .ctr(&["task", "kill", "--signal", "SIGKILL", &linux_id]);
    let _ = wait_for_status(env, &linux_id, "STOPPED", Duration::from_secs(10));
    env.containerd.ctr(&["task", "rm", &linux_id]);
    env.containerd.ctr(&["container", "rm", &linux_id]);
    expect_output(&wasm, &["Hello from WebAssembly"])?;
    expect_output(&echo, &["hi from runc"])?;
    Ok(())
}

fn error_missing_module(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env
        .containerd
        .run(Some(rt), &[&image("hello"), id, "/missing.wasm"]);
    expect_error(&out, "WebAssembly module /missing.wasm not found")
}

fn error_missing_function(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env
        .containerd
        .run(Some(rt), &[&image("greet"), id, "/greet.wasm#nope"]);
    expect_error(&out, "/greet.wasm has no exported function 'nope'")
}

fn error_corrupt_module(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env.containerd.run(Some(rt), &[&image("corrupt"), id]);
    expect_error(&out, "/corrupt.wasm is not a valid WebAssembly module")
}

/// WasmEdge compiles ahead of time where its library has the LLVM compiler,
/// and runs the interpreter where it has not; the shim log says which, and it
/// must be the mode this machine's WasmEdge supports: a libwasmedge.so with
/// the AOT compiler links libLLVM (told by `ldd`), or holds LLVM itself; an
/// engine binary with WasmEdge linked in holds LLVM where the compiler is.
fn wasmedge_mode(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env.containerd.run(Some(rt), &[&image("hello"), id]);
    expect_output(&out, &["Hello from WebAssembly"])?;
    let lib = wasmedge_of_engine_binary()?;
    let aot_available = ldd(&lib)?.contains("libLLVM") || contains_llvm(&lib)?;
    let lib = lib.display();
    let (expected, other) = (
        format!("container {id}: WasmEdge: running the AOT-compiled module"),
        format!("container {id}: WasmEdge AOT compilation unavailable, running the interpreter"),
    );
    let (expected, other) = if aot_available {
        (expected, other)
    } else {
        (other, expected)
    };
    let log = env.containerd.log_with(&[&expected]);
    ensure!(
        log.contains(&expected) && !log.contains(&other),
        "the shim log does not say {expected:?} for {id} (libwasmedge {lib}, AOT available: {aot_available})"
    );
    Ok(())
}

/// The file that holds WasmEdge for the WasmEdge engine binary: the
/// libwasmedge.so it loads (as `ldd` shows it), or the binary itself when
/// it was linked with a static libwasmedge (`make`, where
/// `$WASMEDGE_DIR/lib/libwasmedge.a` exists).
fn wasmedge_of_engine_binary() -> anyhow::Result<std::path::PathBuf> {
    let engine = wasmshim_integration::engine_binary("wasmedge");
    let libs = ldd(&engine)?;
    let shared = libs
        .lines()
        .find(|l| l.contains("libwasmedge"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|l| l.split_whitespace().next());
    match shared {
        Some(lib) => Ok(lib.into()),
        None => {
            ensure!(
                contains_wasmedge(&engine)?,
                "{} neither loads libwasmedge ({libs}) nor holds WasmEdge",
                engine.display()
            );
            Ok(engine)
        }
    }
}

/// Whether the file at `path` holds LLVM's code (its fatal-error text).
fn contains_llvm(path: &std::path::Path) -> anyhow::Result<bool> {
    contains_bytes(path, b"LLVM ERROR: ")
}

/// Whether the file at `path` holds WasmEdge's C API (its version function).
fn contains_wasmedge(path: &std::path::Path) -> anyhow::Result<bool> {
    contains_bytes(path, b"WasmEdge_VersionGet")
}

fn contains_bytes(path: &std::path::Path, needle: &[u8]) -> anyhow::Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(data.windows(needle.len()).any(|w| w == needle))
}

/// The shared libraries `path` loads, as `ldd` lists them.
fn ldd(path: &std::path::Path) -> anyhow::Result<String> {
    let out = std::process::Command::new("ldd").arg(path).output()?;
    let (libs, stderr) = text(&out);
    ensure!(out.status.success(), "ldd {}: {stderr}", path.display());
    Ok(libs)
}

/// containerd runs `containerd-shim-wasmedge-v1` once per container (`start`)
/// and waits for its server: neither may load libwasmedge (and libLLVM),
/// which only the template and the workers, run from the engine binary,
/// need; without that engine binary beside it, the front says what is
/// missing, to `-v` and at Create.
fn wasmedge_front_binary(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let front = wasmshim_integration::shim_binary("wasmedge");
    let engine_libraries = |text: &str| text.contains("libwasmedge") || text.contains("libLLVM");
    let libs = ldd(&front)?;
    ensure!(
        !engine_libraries(&libs) && !contains_wasmedge(&front)?,
        "{} loads or holds the engine: {libs}",
        front.display()
    );
    // With WasmEdge linked into the engine binary, the worker maps it as its executable.
    let wasmedge = wasmedge_of_engine_binary()?;
    let wasmedge_name = wasmedge
        .file_name()
        .context("WasmEdge's file")?
        .to_string_lossy()
        .into_owned();
    let engine = wasmshim_integration::engine_binary("wasmedge");
    ensure!(
        engine != front,
        "no engine binary beside {}",
        front.display()
    );
    // A running container: its shim server is the front binary, its worker
    // (forked from the template) the engine binary.
    let worker = run_sleeper(env, rt, id, &[])?;
    let result = (|| {
        let shim = parent_of(worker)?;
        let maps = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/maps"));
        let (shim_maps, worker_maps) = (maps(shim)?, maps(worker)?);
        ensure!(
            !engine_libraries(&shim_maps),
            "the shim server {shim} maps the engine's libraries"
        );
        ensure!(
            worker_maps.contains(&wasmedge_name),
            "the worker {worker} does not map WasmEdge ({wasmedge_name})"
        );
        let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe"));
        ensure!(
            exe(shim)? == front.canonicalize()? && exe(worker)? == engine.canonicalize()?,
            "shim {shim} runs {:?}, worker {worker} {:?}",
            exe(shim),
            exe(worker)
        );
        Ok(())
    })();
    remove(env, id);
    result?;
    // A front binary installed alone.
    let alone = tempfile::tempdir()?;
    let copy = alone.path().join("containerd-shim-wasmedge-v1");
    std::fs::copy(&front, &copy)?;
    // Fails, naming the missing engine binary and where it belongs.
    let says_what_is_missing = |out: &Output, what: &str| {
        let (_, stderr) = text(out);
        ensure!(
            !out.status.success()
                && stderr.contains(&format!("{}-engine", copy.display()))
                && stderr.contains("install it beside"),
            "{what} without the engine binary: {:?} {stderr:?}",
            out.status
        );
        Ok(())
    };
    let out = std::process::Command::new(&copy).arg("-v").output()?;
    says_what_is_missing(&out, "-v")?;
    // containerd runs it by its path: Create fails with the same words, and
    // the container leaves nothing behind (checked by `run_case`).
    let runtime = copy.to_str().context("temporary path")?;
    let out = env.containerd.run(Some(runtime), &[&image("hello"), id]);
    says_what_is_missing(&out, "a container")
}

fn stdin_to_end_of_file(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let fifo = env.containerd.fifo_dir();
    let mut run = env
        .containerd
        .ctr_command(&[
            "run",
            "--rm",
            "--fifo-dir",
            fifo.to_str().unwrap(),
            "--runtime",
            rt,
            &image("cat"),
            id,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = run.stdin.take().context("ctr's stdin")?;
    stdin.write_all(b"hello stdin\n")?;
    // Closing our end is end-of-file for ctr, which closes the fifo: the module must see it.
    drop(stdin);
    let out = wait_with_deadline(run, Duration::from_secs(20))?;
    expect_output(&out, &["read 12 bytes: hello stdin\n"])?;
    Ok(())
}

/// Waits for `child`, killing it after `limit`.
fn wait_with_deadline(mut child: std::process::Child, limit: Duration) -> anyhow::Result<Output> {
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            anyhow::bail!("still running after {limit:?}: {:?}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

fn sigterm_during_host_sleep(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    // The module waits inside a host call (poll_oneoff), not in Wasm code.
    kill_running(env, rt, id, &[&image("sleep"), id], "SIGTERM", 143)
}

/// `ctr run -d --runtime rt` of `args` (flags, then image and id, or `--config`
/// and id), waits until container `id` runs and returns its worker's pid.
fn run_detached(env: &Env, rt: &str, id: &str, args: &[&str]) -> anyhow::Result<u32> {
    let fifo = env.containerd.fifo_dir();
    let mut all = vec![
        "run",
        "-d",
        "--fifo-dir",
        fifo.to_str().unwrap(),
        "--runtime",
        rt,
    ];
    all.extend(args);
    let out = env.containerd.ctr(&all);
    ensure!(out.status.success(), "ctr run -d {id}: {:?}", text(&out));
    wait_for_status(env, id, "RUNNING", Duration::from_secs(20))?;
    task_pid(env, id)
}

/// `ctr run -d` of the sleep module as container `id`, with `extra` flags.
fn run_sleeper(env: &Env, rt: &str, id: &str, extra: &[&str]) -> anyhow::Result<u32> {
    let sleep = image("sleep");
    let mut args = extra.to_vec();
    args.extend([sleep.as_str(), id, "/sleep.wasm", "600"]);
    run_detached(env, rt, id, &args)
}

/// Kills, waits for and removes container `id` (best effort, for cleanup).
fn remove(env: &Env, id: &str) {
    env.containerd
        .ctr(&["task", "kill", "--signal", "SIGKILL", id]);
    let _ = wait_for_status(env, id, "STOPPED", Duration::from_secs(10));
    env.containerd.ctr(&["task", "rm", id]);
    env.containerd.ctr(&["container", "rm", id]);
}

/// The pid `ctr task ls` shows for task `id`: the container's worker.
fn task_pid(env: &Env, id: &str) -> anyhow::Result<u32> {
    let (stdout, _) = text(&env.containerd.ctr(&["task", "ls"]));
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|pid| pid.parse().ok())
        .with_context(|| format!("task {id} not in ctr task ls: {stdout}"))
}

fn pod_containers_share_one_shim(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let pod = format!("io.kubernetes.cri.sandbox-id={id}-pod");
    let (a, b) = (format!("{id}-a"), format!("{id}-b"));
    let result = (|| {
        run_sleeper(env, rt, &a, &["--annotation", &pod])?;
        run_sleeper(env, rt, &b, &["--annotation", &pod])?;
        let (shim_a, shim_b) = (
            parent_of(task_pid(env, &a)?)?,
            parent_of(task_pid(env, &b)?)?,
        );
        ensure!(
            shim_a == shim_b,
            "the two containers of one pod have different shims: {shim_a} and {shim_b}"
        );
        // Deleting the first container makes containerd ask the shim to shut
        // down: it must keep serving the second.
        remove(env, &a);
        std::thread::sleep(Duration::from_millis(300));
        ensure!(
            Path::new(&format!("/proc/{shim_b}")).exists(),
            "the pod's shim exited with a container left"
        );
        wait_for_status(env, &b, "RUNNING", Duration::from_secs(1))?;
        let out = env
            .containerd
            .ctr(&["task", "kill", "--signal", "SIGTERM", &b]);
        ensure!(out.status.success(), "kill {b}: {:?}", text(&out));
        wait_for_status(env, &b, "STOPPED", Duration::from_secs(10))?;
        Ok(())
    })();
    remove(env, &a);
    remove(env, &b);
    result?;
    for c in [&a, &b] {
        ensure!(
            env.containerd.leftovers(c).is_empty(),
            "{c} left behind {:?}",
            env.containerd.leftovers(c)
        );
    }
    Ok(())
}

/// The children of `shim` whose command line contains `marker`.
fn children_named(shim: u32, marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid).is_ok_and(|p| p == shim))
        .filter(|pid| wasmshim_integration::cmdline(*pid).contains(marker))
        .collect()
}

/// A shim forks its workers from one template process (sys/template.rs):
/// each worker is still the shim's child and reads `__wasmshim_worker <id>`
/// in `ps`; a template killed under running containers takes none of them
/// along, and the next container starts all the same (exec'd); the
/// template is gone once the shim's last container is.
fn workers_fork_from_the_shims_template(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let pod = format!("io.kubernetes.cri.sandbox-id={id}-pod");
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|s| format!("{id}-{s}"))
        .collect();
    let mut shim = 0;
    let mut template = 0;
    let result = (|| {
        let a = run_sleeper(env, rt, &ids[0], &["--annotation", &pod])?;
        let b = run_sleeper(env, rt, &ids[1], &["--annotation", &pod])?;
        shim = parent_of(a)?;
        ensure!(
            parent_of(b)? == shim,
            "the pod's workers have different parents"
        );
        for (worker, cid) in [(a, &ids[0]), (b, &ids[1])] {
            let line = wasmshim_integration::cmdline(worker);
            ensure!(
                line.contains(&format!("__wasmshim_worker {cid}")),
                "worker {worker} of {cid} reads {line:?}"
            );
        }
        let templates = children_named(shim, "__wasmshim_template");
        ensure!(
            templates.len() == 1,
            "templates of shim {shim}: {templates:?}"
        );
        template = templates[0];
        // Forked, not exec'd: the worker maps the very binary file the template does.
        let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        ensure!(
            exe(a).is_some() && exe(a) == exe(template),
            "worker and template run different binaries"
        );

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(template as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        std::thread::sleep(Duration::from_millis(300));
        wait_for_status(env, &ids[0], "RUNNING", Duration::from_secs(1))?;
        wait_for_status(env, &ids[1], "RUNNING", Duration::from_secs(1))?;
        let c = run_sleeper(env, rt, &ids[2], &["--annotation", &pod])?;
        ensure!(
            parent_of(c)? == shim,
            "the third worker is not the shim's child"
        );
        let log = env
            .containerd
            .log_with(&["no worker from the template process"]);
        ensure!(
            log.contains(&format!(
                "container {}: no worker from the template process",
                ids[2]
            )),
            "the shim did not log that it exec'd the worker without its template"
        );
        Ok(())
    })();
    for c in &ids {
        remove(env, c);
    }
    result?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while [shim, template]
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        ensure!(
            Instant::now() < deadline,
            "shim {shim} or template {template} outlived the last container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A container's shim SIGKILLed: the worker dies with it and the container
/// deletes. The shim must serve that container alone, so the case runs in a
/// containerd of its own with one container per shim: in the suite's, shims
/// are shared (up to 32 containers), and the kill would end other cases'
/// containers. `density.rs` kills a shared shim.
fn delete_after_shim_crash(suite: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let containerd =
        Containerd::start_with_env("debug", &[(wasmshim::group::CONTAINERS_PER_SHIM_ENV, "1")])?;
    let sleep = suite.containerd.dir().join("modules/sleep.wasm");
    containerd.import(&wasm_image(&image("sleep"), &sleep, &[])?)?;
    let own = Env { containerd };
    let env = &own;
    crashed_shim_then_delete(env, rt, id)?;
    // What run_case checks in the suite's containerd, checked in this one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut leftovers = env.containerd.leftovers(id);
    while !leftovers.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        leftovers = env.containerd.leftovers(id);
    }
    ensure!(
        leftovers.is_empty(),
        "container {id} left behind:\n{}",
        leftovers.join("\n")
    );
    let processes = env.containerd.processes();
    ensure!(
        processes.is_empty(),
        "shim or worker processes left: {:?}",
        processes
            .into_iter()
            .map(wasmshim_integration::cmdline)
            .collect::<Vec<_>>()
    );
    Ok(())
}

fn crashed_shim_then_delete(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let result = (|| {
        let worker = run_sleeper(env, rt, id, &[])?;
        let shim = parent_of(worker)?;
        ensure!(
            wasmshim_integration::cmdline(shim).contains("containerd-shim-"),
            "the worker's parent is not a shim: {}",
            wasmshim_integration::cmdline(shim)
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        // The worker dies with its shim; containerd runs the shim's `delete`,
        // which unmounts the rootfs, and reports the task stopped.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{worker}")).exists() {
            ensure!(
                Instant::now() < deadline,
                "worker {worker} outlived its shim"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })();
    env.containerd.ctr(&["task", "rm", "--force", id]);
    let rm = env.containerd.ctr(&["container", "rm", id]);
    // containerd deleted the dead shim's task itself, so `ctr` never closed
    // the stdio fifos it made for `run -d`: they are the client's, removed
    // here as `ctr task rm` would have. Everything of the shim's is checked.
    for fifo in ["stdin", "stdout", "stderr"] {
        for dir in std::fs::read_dir(env.containerd.fifo_dir())?.flatten() {
            let _ = std::fs::remove_file(dir.path().join(format!("{id}-{fifo}")));
        }
    }
    result?;
    ensure!(
        rm.status.success(),
        "ctr container rm after a shim crash: {:?}",
        text(&rm)
    );
    Ok(())
}

fn refusals_name_their_reason(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let result = (|| {
        run_sleeper(env, rt, id, &[])?;
        let exec = env
            .containerd
            .ctr(&["task", "exec", "--exec-id", "e1", id, "/sleep.wasm", "1"]);
        expect_error(&exec, "exec into a WebAssembly container is not supported")?;
        wait_for_status(env, id, "RUNNING", Duration::from_secs(1))
    })();
    remove(env, id);
    result?;
    // ctr allocates a terminal only when it has one: give it a pseudo-terminal.
    let fifo = env.containerd.fifo_dir();
    let socket = env.containerd.dir().join("containerd.sock");
    let command = format!(
        "ctr --address {} --namespace {} run --rm -t --fifo-dir {} --runtime {rt} {} {id}",
        socket.display(),
        wasmshim_integration::NAMESPACE,
        fifo.display(),
        image("hello")
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .context("running script (bsdutils)")?;
    let (stdout, stderr) = text(&tty);
    ensure!(!tty.status.success(), "ctr run -t succeeded: {stdout:?}");
    ensure!(
        stdout.contains("a terminal (tty) is not supported")
            || stderr.contains("a terminal (tty) is not supported"),
        "ctr run -t does not say why: {stdout:?} {stderr:?}"
    );
    env.containerd.ctr(&["container", "rm", id]);
    Ok(())
}

fn shim_prints_its_version(_env: &Env, rt: &str, _id: &str) -> anyhow::Result<()> {
    let engine = rt
        .strip_prefix("io.containerd.")
        .and_then(|r| r.strip_suffix(".v1"))
        .context("runtime name")?;
    let shim = wasmshim_integration::shim_binary(engine);
    for flag in ["-v", "--version"] {
        let out = std::process::Command::new(&shim).arg(flag).output()?;
        let (stdout, stderr) = text(&out);
        ensure!(out.status.success(), "{flag}: {:?} {stderr}", out.status);
        for expected in [
            format!("containerd-shim-{engine}-v1:"),
            format!("Runtime:  {rt}"),
            format!("Version:  {}", env!("CARGO_PKG_VERSION")),
            format!("Engine:   {engine} "),
        ] {
            ensure!(
                stdout.contains(&expected),
                "{flag} lacks {expected:?}: {stdout}"
            );
        }
        let engine_version = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("Engine:   {engine} ")))
            .unwrap_or_default();
        ensure!(
            engine_version
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit()),
            "{flag}: no engine version: {stdout}"
        );
    }
    let out = std::process::Command::new(&shim).arg("-h").output()?;
    let (stdout, _) = text(&out);
    ensure!(
        out.status.success() && stdout.contains("containerd starts this binary"),
        "-h: {stdout}"
    );
    Ok(())
}
