//! Linux containers under our runtime (issue 9): an entrypoint that is not a
//! Wasm module runs through runc, with the stdio, exit statuses, signals and
//! metrics it has under `io.containerd.runc.v2`. Each case runs for every
//! engine from the CASES table of `containerd.rs`.

use anyhow::ensure;
use wasmshim_integration::text;

use super::isolation::metrics_with_memory_usage;
use super::{expect_error, expect_output, image, kill_running, remove, run_detached, Env};

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
