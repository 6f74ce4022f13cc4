//! Integration tests: a private containerd runs Wasm images through the built
//! shims, driven with `ctr` as a user would. One table of cases runs for every
//! engine whose shim is built; `KNOWN_GAPS` lists cases an engine may fail.
//!
//! Needs root, containerd + runc, clang + wasi-libc and busybox-static (`make
//! test` installs them) and the release shims (`make build`).

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use libtest_mimic::{Arguments, Failed, Trial};
use wasmshim_integration::{
    busybox_image, engines, modules, runtime, text, wasm_image, Containerd,
};

mod isolation;

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
    ("error_not_wasm", error_not_wasm),
    ("error_missing_module", error_missing_module),
    ("error_missing_function", error_missing_function),
    ("error_corrupt_module", error_corrupt_module),
    ("oom_kill_exits_137", isolation::oom_kill_exits_137),
    (
        "cgroup_limits_and_metrics",
        isolation::cgroup_limits_and_metrics,
    ),
    ("network_namespace", isolation::network_namespace),
    ("user_owns_files", isolation::user_owns_files),
    ("seccomp_caps_nnp", isolation::seccomp_caps_nnp),
    (
        "hooks_get_state_and_fail_create",
        isolation::hooks_get_state_and_fail_create,
    ),
];

/// Cases for one engine only: (engine, name, case).
const ENGINE_CASES: &[(&str, &str, Case)] =
    &[("wasmedge", "reports_aot_or_interpreter", wasmedge_mode)];

fn main() {
    let args = Arguments::from_args();
    let (engines, skipped) = engines();
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
        // Statics are never dropped: stop containerd here, then check that no
        // shim or worker process outlived it.
        env.containerd.stop();
        let left: Vec<String> = ["containerd-shim-wasmtime-v1", "containerd-shim-wasmedge-v1"]
            .iter()
            .flat_map(|bin| wasmshim_integration::processes_mentioning(bin))
            .map(wasmshim_integration::cmdline)
            .collect();
        if !left.is_empty() {
            eprintln!("shim processes left behind after the run: {left:#?}");
            std::process::exit(1);
        }
    }
    conclusion.exit();
}

fn setup() -> anyhow::Result<()> {
    let containerd = Containerd::start()?;
    let modules = modules::build_all(&containerd.dir().join("modules"))?;
    for name in [
        "hello", "args", "exit", "files", "sleep", "loop", "trap", "greet", "alloc",
    ] {
        let module = modules.join(format!("{name}.wasm"));
        let env: &[&str] = if name == "args" {
            &["IMAGE_ENV=from-image"]
        } else {
            &[]
        };
        containerd.import(&wasm_image(&image(name), &module, env)?)?;
    }
    let corrupt = modules.join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x01\0\0\0\x01\xffgarbage")?;
    containerd.import(&wasm_image(&image("corrupt"), &corrupt, &[])?)?;
    containerd.import(&busybox_image(&image("busybox"))?)?;
    ENV.set(Env { containerd })
        .map_err(|_| anyhow::anyhow!("set up twice"))?;
    Ok(())
}

fn image(name: &str) -> String {
    format!("docker.io/wasmshim-test/{name}:latest")
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
    let out = env.containerd.run(
        Some(rt),
        &[
            "--env",
            "GREETING=hi there",
            &image("args"),
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
    let log = env.containerd.log();
    ensure!(
        log.contains(&format!("container {id}: module trapped")),
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
    let dir = host_dir(env, id)?;
    let mount = format!("type=bind,src={},dst=/data,options=rbind:ro", dir.display());
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
    let (stdout, stderr) = text(&out);
    ensure!(
        stdout.contains("content from the host"),
        "reading failed: {stdout:?} {stderr:?}"
    );
    ensure!(
        out.status.code() == Some(2),
        "the write was not refused: {:?} {stderr:?}",
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
            &image("loop"),
            id,
        ])
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

fn error_not_wasm(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env
        .containerd
        .run(Some(rt), &[&image("busybox"), id, "/bin/busybox", "true"]);
    expect_error(&out, "entrypoint /bin/busybox is not a WebAssembly module")
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

/// WasmEdge compiles ahead of time where its library has the LLVM compiler and
/// says which mode it runs in (debug level, in the shim log).
fn wasmedge_mode(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env.containerd.run(Some(rt), &[&image("hello"), id]);
    expect_output(&out, &["Hello from WebAssembly"])?;
    let log = env.containerd.log();
    let aot = format!("container {id}: WasmEdge: running the AOT-compiled module");
    let interpreter =
        format!("container {id}: WasmEdge AOT compilation unavailable, running the interpreter");
    ensure!(
        log.contains(&aot) || log.contains(&interpreter),
        "the shim log does not say how WasmEdge ran {id}"
    );
    Ok(())
}
