//! Linux containers under our runtime (issue 9): an entrypoint that is not a
//! Wasm module runs through runc, with the stdio, exit statuses, signals and
//! metrics it has under `io.containerd.runc.v2`, `ctr task exec` into it and
//! `ctr task pause`/`resume` (of Linux and of Wasm containers). Each case
//! runs for every engine from the CASES table of `containerd.rs`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use wasmshim_integration::text;

use super::isolation::metrics_with_memory_usage;
use super::{
    expect_error, expect_output, image, kill_running, remove, run_detached, wait_for_status, Env,
};

pub fn busybox_echo_and_exit_codes(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let busybox = image("busybox");
    let out = env.containerd.run(
        Some(rt),
        &[&busybox, id, "/bin/echo", "hello from a Linux container"],
    );
    expect_output(&out, &["hello from a Linux container"])?;
    // PATH lookup in the image, the shell, and an exit status through ctr.
    let out = env.containerd.run(
        Some(rt),
        &[&busybox, id, "sh", "-c", "echo $((6 * 7)) >&2; exit 3"],
    );
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.code() == Some(3),
        "exit 3 became {:?}: {stdout:?} {stderr:?}",
        out.status
    );
    ensure!(
        format!("{stdout}{stderr}").contains("42"),
        "the shell's output is missing: {stdout:?} {stderr:?}"
    );
    Ok(())
}

pub fn busybox_signals(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let busybox = image("busybox");
    // The shell traps SIGTERM itself: as pid 1 of its namespace it must.
    kill_running(
        env,
        rt,
        id,
        &[
            &busybox,
            id,
            "sh",
            "-c",
            "trap 'exit 143' TERM; while :; do :; done",
        ],
        "SIGTERM",
        143,
    )?;
    kill_running(env, rt, id, &[&busybox, id, "sleep", "600"], "SIGKILL", 137)
}

pub fn busybox_metrics(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let busybox = image("busybox");
    run_detached(
        env,
        rt,
        id,
        &["--memory-limit", "33554432", &busybox, id, "sleep", "600"],
    )?;
    let result = (|| {
        let stdout = metrics_with_memory_usage(env, id)?;
        ensure!(
            stdout.contains("33554432"),
            "the memory limit is not in the metrics: {stdout}"
        );
        Ok(())
    })();
    remove(env, id);
    result
}

pub fn missing_program_is_named(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env
        .containerd
        .run(Some(rt), &[&image("busybox"), id, "/bin/nope"]);
    expect_error(&out, "/bin/nope")?;
    // `ctr run` keeps the container record when its task fails to create.
    env.containerd.ctr(&["container", "rm", id]);
    Ok(())
}

/// `ctr task exec` into a running Linux container `id` as exec `exec_id`.
fn exec(env: &Env, id: &str, exec_id: &str, args: &[&str]) -> std::process::Output {
    let fifo = env.containerd.fifo_dir();
    let mut all = vec![
        "task",
        "exec",
        "--fifo-dir",
        fifo.to_str().unwrap(),
        "--exec-id",
        exec_id,
        id,
    ];
    all.extend(args);
    env.containerd.ctr(&all)
}

pub fn busybox_exec(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let busybox = image("busybox");
    run_detached(env, rt, id, &[&busybox, id, "sleep", "600"])?;
    let result = (|| {
        // Output and exit status of the exec'd shell, as with runc.
        let out = exec(env, id, "x", &["sh", "-c", "echo hi from exec; exit 3"]);
        let (stdout, stderr) = text(&out);
        ensure!(
            out.status.code() == Some(3),
            "exit 3 of the exec became {:?}: {stdout:?} {stderr:?}",
            out.status
        );
        ensure!(
            stdout.contains("hi from exec"),
            "the exec's output is missing: {stdout:?} {stderr:?}"
        );
        // The exec runs inside the container: it sees the container's init as
        // pid 1 (once runc's init has exec'd it: runc start does not wait).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = exec(env, id, "ps1", &["cat", "/proc/1/cmdline"]);
            let (stdout, _) = text(&out);
            if out.status.success() && stdout.starts_with("sleep") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "pid 1 of the exec's namespace is not the container's sleep: {:?}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A program that is not there is named, as runc names it.
        let out = exec(env, id, "nope", &["/bin/nope"]);
        expect_error(&out, "/bin/nope")?;
        // The same exec id again, once deleted, is a new process.
        let out = exec(env, id, "x", &["true"]);
        ensure!(out.status.success(), "second exec x: {:?}", text(&out));

        // An exec is signalled by (id, exec id); the container lives on.
        let fifo = env.containerd.fifo_dir();
        let long = env
            .containerd
            .ctr_command(&[
                "task",
                "exec",
                "--fifo-dir",
                fifo.to_str().unwrap(),
                "--exec-id",
                "long",
                id,
                "sleep",
                "600",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ps, _) = text(&env.containerd.ctr(&["task", "ps", id]));
            // `ctr task ps` lists the init and the exec.
            if ps
                .lines()
                .filter(|l| l.trim_start().starts_with(char::is_numeric))
                .count()
                >= 2
            {
                break;
            }
            ensure!(Instant::now() < deadline, "exec 'long' never started: {ps}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = env.containerd.ctr(&[
            "task",
            "kill",
            "--exec-id",
            "long",
            "--signal",
            "SIGKILL",
            id,
        ]);
        ensure!(
            out.status.success(),
            "ctr task kill --exec-id: {:?}",
            text(&out)
        );
        let out = wait_output(long, Duration::from_secs(10))?;
        ensure!(
            out.status.code() == Some(137),
            "the killed exec's status is {:?}, want 137: {:?}",
            out.status,
            text(&out)
        );
        let (ls, _) = text(&env.containerd.ctr(&["task", "ls"]));
        ensure!(
            ls.lines()
                .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING")),
            "killing the exec stopped the container: {ls}"
        );
        // An exec id that does not exist is named.
        let out = env
            .containerd
            .ctr(&["task", "kill", "--exec-id", "nope", id]);
        expect_error(&out, "nope")?;
        Ok(())
    })();
    remove(env, id);
    result
}

/// Waits for `child` at most `limit`, killing it past that.
fn wait_output(
    mut child: std::process::Child,
    limit: Duration,
) -> anyhow::Result<std::process::Output> {
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!(
                "still running after {limit:?}: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

pub fn busybox_pause_resume(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let script = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    pause_resume(env, rt, id, &[&image("busybox"), id, "sh", "-c", script])
}

pub fn wasm_pause_resume(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    pause_resume(env, rt, id, &[&image("ticker"), id])
}

/// Runs `image_and_args` (which prints a line every 100 ms) in the
/// foreground; pauses it (`ctr task ls` shows PAUSED, no line comes), resumes
/// it (RUNNING, lines come again), then kills it.
fn pause_resume(env: &Env, rt: &str, id: &str, image_and_args: &[&str]) -> anyhow::Result<()> {
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
        .stderr(Stdio::null())
        .spawn()?;
    let lines = Arc::new(Mutex::new(0usize));
    let reader = {
        let lines = lines.clone();
        let stdout = run.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if line.is_err() {
                    break;
                }
                *lines.lock().unwrap() += 1;
            }
        })
    };
    let count = || *lines.lock().unwrap();
    let result = (|| {
        wait_for_status(env, id, "RUNNING", Duration::from_secs(20))?;
        wait_for_more(count, 0, Duration::from_secs(10))?;
        let out = env.containerd.ctr(&["task", "pause", id]);
        ensure!(out.status.success(), "ctr task pause: {:?}", text(&out));
        wait_for_status(env, id, "PAUSED", Duration::from_secs(5))?;
        // What was written before the freeze may still be on its way.
        std::thread::sleep(Duration::from_millis(300));
        let frozen = count();
        std::thread::sleep(Duration::from_secs(1));
        ensure!(
            count() == frozen,
            "{} lines came while the container was paused",
            count() - frozen
        );
        let out = env.containerd.ctr(&["task", "resume", id]);
        ensure!(out.status.success(), "ctr task resume: {:?}", text(&out));
        wait_for_status(env, id, "RUNNING", Duration::from_secs(5))?;
        wait_for_more(count, frozen, Duration::from_secs(5))?;
        // Resuming what runs is refused with the reason.
        let out = env.containerd.ctr(&["task", "resume", id]);
        expect_error(&out, "not paused")?;
        Ok(())
    })();
    env.containerd
        .ctr(&["task", "kill", "--signal", "SIGKILL", id]);
    let exit = wait_output(run, Duration::from_secs(10));
    let _ = reader.join();
    if exit.is_err() {
        remove(env, id);
    }
    result?;
    exit.map(|_| ())
}

/// Waits until `count()` is past `seen`.
fn wait_for_more(count: impl Fn() -> usize, seen: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while count() <= seen {
        ensure!(
            Instant::now() < deadline,
            "no output for {limit:?} (still {seen} lines)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
