//! The OCI runtime CLI (`wasmshim-oci`) under the real clients that drive
//! runtimes through runc's command line: Docker 20.10 (`docker run
//! --runtime wasmshim`), podman 4.3 (`podman --runtime <path>`) and
//! containerd's `io.containerd.runc.v2` (`ctr run --runc-binary <path>`).
//! Each client is private to the run (own roots and sockets in temp dirs);
//! containers run with `--network none`.
//!
//! Needs root, docker.io, podman, containerd + runc, clang + wasi-libc,
//! busybox-static (`make test` installs them) and `make build`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use libtest_mimic::{Arguments, Failed, Trial};
use wasmshim_cli::image::ImageSpec;
use wasmshim_integration::clients::{oci_binary, oci_leftovers, Docker, Podman, RUNTIME};
use wasmshim_integration::{
    busybox_image, image, modules, text, wasm_image, Containerd, NAMESPACE,
};

/// The clients and what they share, set up once.
struct Env {
    oci: PathBuf,
    docker: Docker,
    podman: Podman,
    containerd: Containerd,
    /// Compiled test modules and scratch space.
    work: tempfile::TempDir,
}

static ENV: OnceLock<Env> = OnceLock::new();

type Case = fn(&Env) -> anyhow::Result<()>;

const CASES: &[(&str, Case)] = &[
    ("docker_loaded_image_args_and_env", docker_loaded_image),
    ("docker_exit_code", docker_exit_code),
    ("docker_run_with_terminal", docker_run_with_terminal),
    ("docker_build_from_scratch", docker_build_from_scratch),
    ("docker_bind_mounts", docker_bind_mounts),
    ("docker_stop_looping_module", docker_stop_looping_module),
    ("docker_detached_then_logs", docker_detached_then_logs),
    ("docker_pause_and_unpause", docker_pause_and_unpause),
    (
        "docker_memory_limit_oom_kills",
        docker_memory_limit_oom_kills,
    ),
    (
        "docker_linux_image_through_runc",
        docker_linux_image_through_runc,
    ),
    ("docker_bad_input_named", docker_bad_input_named),
    ("podman_args_and_exit_code", podman_args_and_exit_code),
    ("podman_bad_input_named", podman_bad_input_named),
    (
        "ctr_runc_binary_wasm_and_linux",
        ctr_runc_binary_wasm_and_linux,
    ),
    (
        "ctr_runc_binary_bad_input_named",
        ctr_runc_binary_bad_input_named,
    ),
];

fn main() {
    let args = Arguments::from_args();
    let trials: Vec<Trial> = CASES
        .iter()
        .map(|&(name, case)| {
            Trial::test(name, move || {
                let env = ENV.get().expect("set up before the trials run");
                case(env).map_err(|e| Failed::from(format!("{e:#}")))
            })
        })
        .collect();
    if trials.iter().any(|t| !args.is_filtered_out(t)) && !args.list {
        if let Err(e) = setup() {
            eprintln!("OCI CLI tests: setup failed: {e:#}");
            std::process::exit(1);
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(env) = ENV.get() {
        // Statics are never dropped.
        env.docker.stop();
        env.podman.stop();
        env.containerd.stop();
        let _ = std::fs::remove_dir_all(env.work.path());
        // The runc shim's root for the namespace, empty once every container is deleted.
        let _ = std::fs::remove_dir(runc_shim_root().join("wasmshim"));
        let _ = std::fs::remove_dir(runc_shim_root());
    }
    conclusion.exit();
}

fn setup() -> anyhow::Result<()> {
    let oci = oci_binary()?;
    let work = tempfile::Builder::new()
        .prefix("wasmshim-oci-test.")
        .tempdir()?;
    let modules = modules::build_all(&work.path().join("modules"))?;
    let docker = Docker::start(&oci)?;
    let podman = Podman::new()?;
    let containerd = Containerd::start()?;

    let mut images = Vec::new();
    for name in ["hello", "args", "exit", "files", "loop", "alloc", "ticker"] {
        let env: &[&str] = if name == "args" {
            &["IMAGE_ENV=from-image"]
        } else {
            &[]
        };
        images.push(linux_platform(wasm_image(
            &image(name),
            &modules.join(format!("{name}.wasm")),
            env,
        )?));
    }
    let corrupt = modules.join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x01\0\0\0\x01\xffgarbage")?;
    images.push(linux_platform(wasm_image(
        &image("corrupt"),
        &corrupt,
        &[],
    )?));
    // The entrypoint names a module the image does not have.
    let mut missing = wasm_image(&image("missing"), &modules.join("hello.wasm"), &[])?;
    missing.entrypoint = vec!["/missing.wasm".into()];
    images.push(linux_platform(missing));
    images.push(busybox_image(&image("busybox"))?);

    for spec in &images {
        let tar = work.path().join("image.tar");
        spec.write_archive(std::fs::File::create(&tar)?)?;
        let tar_arg = tar.to_str().context("temp path")?;
        expect_ok(&docker.docker(&["load", "-i", tar_arg]), "docker load")?;
        expect_ok(&podman.podman(&["load", "-i", tar_arg]), "podman load")?;
        expect_ok(
            &containerd.ctr(&["image", "import", "--all-platforms", tar_arg]),
            "ctr image import",
        )?;
    }
    ENV.set(Env {
        oci,
        docker,
        podman,
        containerd,
        work,
    })
    .map_err(|_| anyhow::anyhow!("set up twice"))
}

/// Docker 20.10 loads only `linux` images: `wasmshim image build --platform linux/amd64`.
fn linux_platform(mut spec: ImageSpec) -> ImageSpec {
    spec.os = "linux".into();
    spec.architecture = "amd64".into();
    spec
}

fn expect_ok(out: &Output, what: &str) -> anyhow::Result<()> {
    ensure!(out.status.success(), "{what} failed: {:?}", text(out));
    Ok(())
}

fn expect_output(out: &Output, needles: &[&str]) -> anyhow::Result<()> {
    let (stdout, stderr) = text(out);
    ensure!(
        out.status.success(),
        "failed: {:?}: {stdout:?} {stderr:?}",
        out.status
    );
    for needle in needles {
        ensure!(
            stdout.contains(needle),
            "{needle:?} not in {stdout:?} (stderr {stderr:?})"
        );
    }
    Ok(())
}

/// `docker run --rm --network none --runtime wasmshim <extra…>`.
fn docker_run(env: &Env, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--rm", "--network", "none", "--runtime", RUNTIME];
    args.extend(extra);
    env.docker.docker(&args)
}

/// `docker run -d --name <name> --network none --runtime wasmshim` of test
/// image `image`: the container is left for the caller to remove.
fn docker_run_detached(env: &Env, name: &str, image_name: &str) -> Output {
    env.docker.docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--runtime",
        RUNTIME,
        &image(image_name),
    ])
}

fn docker_loaded_image(env: &Env) -> anyhow::Result<()> {
    let out = docker_run(
        env,
        &["-e", "FROM_RUN=yes", &image("args"), "one", "two words"],
    );
    expect_output(
        &out,
        &[
            "arg 0=/args.wasm",
            "arg 1=one",
            "arg 2=two words",
            "env FROM_RUN=yes",
            "env IMAGE_ENV=from-image",
        ],
    )
}

fn docker_exit_code(env: &Env) -> anyhow::Result<()> {
    let out = docker_run(env, &[&image("exit"), "3"]);
    ensure!(
        out.status.code() == Some(3),
        "exit status {:?}: {:?}",
        out.status,
        text(&out)
    );
    ensure!(text(&out).0.contains("exiting with 3"), "{:?}", text(&out));
    Ok(())
}

/// `docker run -t`: containerd's runc shim passes `--console-socket`, the
/// module writes to the pty, the client prints what came through it. No
/// `-i`, so the client needs no terminal of its own.
fn docker_run_with_terminal(env: &Env) -> anyhow::Result<()> {
    let out = docker_run(env, &["-t", &image("exit"), "3"]);
    ensure!(
        out.status.code() == Some(3),
        "exit status {:?}: {:?}",
        out.status,
        text(&out)
    );
    // The pty turns the module's \n into \r\n: the output went through it.
    ensure!(
        text(&out).0.contains("exiting with 3\r\n"),
        "{:?}",
        text(&out)
    );
    Ok(())
}

fn docker_build_from_scratch(env: &Env) -> anyhow::Result<()> {
    let context = env.work.path().join("build-context");
    std::fs::create_dir_all(&context)?;
    std::fs::copy(
        env.work.path().join("modules/args.wasm"),
        context.join("app.wasm"),
    )?;
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY app.wasm /app.wasm\nENTRYPOINT [\"/app.wasm\"]\n",
    )?;
    let tag = "wasmshim-test/built:latest";
    let built = env
        .docker
        .docker(&["build", "-q", "-t", tag, context.to_str().unwrap()]);
    expect_ok(&built, "docker build")?;
    let out = docker_run(env, &[tag, "built-by-docker"]);
    expect_output(&out, &["arg 0=/app.wasm", "arg 1=built-by-docker"])
}

fn docker_bind_mounts(env: &Env) -> anyhow::Result<()> {
    let dir = env.work.path().join("bind");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("in.txt"), "content from the host\n")?;
    let _ = std::fs::remove_file(dir.join("out.txt"));
    let rw = format!("{}:/data", dir.display());
    let out = docker_run(
        env,
        &["-v", &rw, &image("files"), "/data/in.txt", "/data/out.txt"],
    );
    expect_output(&out, &["content from the host", "wrote /data/out.txt"])?;
    let written = std::fs::read_to_string(dir.join("out.txt"))?;
    ensure!(written == "written by wasm\n", "out.txt holds {written:?}");

    std::fs::remove_file(dir.join("out.txt"))?;
    let ro = format!("{}:/data:ro", dir.display());
    let out = docker_run(
        env,
        &["-v", &ro, &image("files"), "/data/in.txt", "/data/out.txt"],
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
        !dir.join("out.txt").exists(),
        "a read-only mount was written"
    );
    Ok(())
}

/// Polls `docker inspect -f <format> <name>` until it prints `want`.
fn docker_wait_for(env: &Env, name: &str, format: &str, want: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = env.docker.docker(&["inspect", "-f", format, name]);
        if text(&out).0.trim() == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{name}: {format} never became {want}: {:?}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn docker_inspect(env: &Env, name: &str, format: &str) -> String {
    text(&env.docker.docker(&["inspect", "-f", format, name]))
        .0
        .trim()
        .to_string()
}

fn docker_stop_looping_module(env: &Env) -> anyhow::Result<()> {
    let name = "oci-stop";
    let started = docker_run_detached(env, name, "loop");
    expect_ok(&started, "docker run -d")?;
    let result = (|| {
        docker_wait_for(env, name, "{{.State.Status}}", "running")?;
        let begin = Instant::now();
        expect_ok(
            &env.docker.docker(&["stop", "-t", "10", name]),
            "docker stop",
        )?;
        // The module dies of SIGTERM at once: no wait for the SIGKILL timeout.
        ensure!(
            begin.elapsed() < Duration::from_secs(8),
            "docker stop took {:?}",
            begin.elapsed()
        );
        let code = docker_inspect(env, name, "{{.State.ExitCode}}");
        ensure!(
            code == "143",
            "exit code {code} after docker stop, runc reports 143 for SIGTERM"
        );
        Ok(())
    })();
    let _ = env.docker.docker(&["rm", "-f", name]);
    result
}

fn docker_detached_then_logs(env: &Env) -> anyhow::Result<()> {
    let name = "oci-logs";
    let started = docker_run_detached(env, name, "hello");
    expect_ok(&started, "docker run -d")?;
    let result = (|| {
        let waited = env.docker.docker(&["wait", name]);
        ensure!(
            text(&waited).0.trim() == "0",
            "docker wait: {:?}",
            text(&waited)
        );
        let logs = env.docker.docker(&["logs", name]);
        expect_output(&logs, &["Hello from WebAssembly"])
    })();
    let _ = env.docker.docker(&["rm", "-f", name]);
    result
}

/// How many `tick N` lines `docker logs` shows for the ticker container `name`.
fn docker_ticks(env: &Env, name: &str) -> usize {
    text(&env.docker.docker(&["logs", name]))
        .0
        .lines()
        .filter(|l| l.starts_with("tick "))
        .count()
}

/// Polls until the ticker container `name` has printed at least `n` ticks.
fn docker_wait_ticks(env: &Env, name: &str, n: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ticks = docker_ticks(env, name);
        if ticks >= n {
            return Ok(ticks);
        }
        ensure!(Instant::now() < deadline, "{name}: {ticks} ticks, want {n}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn docker_pause_and_unpause(env: &Env) -> anyhow::Result<()> {
    let name = "oci-pause";
    let started = docker_run_detached(env, name, "ticker");
    expect_ok(&started, "docker run -d")?;
    let id = text(&started).0.trim().to_string();
    let result = (|| {
        docker_wait_ticks(env, name, 2)?;
        expect_ok(&env.docker.docker(&["pause", name]), "docker pause")?;
        ensure!(
            docker_inspect(env, name, "{{.State.Status}}") == "paused",
            "docker inspect after pause: {}",
            docker_inspect(env, name, "{{.State.Status}}")
        );
        // The ticker prints every 100 ms: a second of silence means it is frozen.
        let before = docker_ticks(env, name);
        std::thread::sleep(Duration::from_secs(1));
        let after = docker_ticks(env, name);
        ensure!(before == after, "ticked while paused: {before} -> {after}");
        expect_ok(&env.docker.docker(&["unpause", name]), "docker unpause")?;
        docker_wait_for(env, name, "{{.State.Status}}", "running")?;
        docker_wait_ticks(env, name, after + 3)?;
        // Removing a paused container kills it.
        expect_ok(&env.docker.docker(&["pause", name]), "docker pause")?;
        expect_ok(&env.docker.docker(&["rm", "-f", name]), "docker rm -f")?;
        let left = oci_leftovers(env.docker.dir(), &id);
        ensure!(left.is_empty(), "a removed paused container left {left:?}");
        Ok(())
    })();
    let _ = env.docker.docker(&["rm", "-f", name]);
    result
}

fn docker_memory_limit_oom_kills(env: &Env) -> anyhow::Result<()> {
    let name = "oci-oom";
    let out = env.docker.docker(&[
        "run",
        "--name",
        name,
        "--network",
        "none",
        "--runtime",
        RUNTIME,
        "--memory",
        "20m",
        "--memory-swap",
        "20m",
        &image("alloc"),
        "64",
    ]);
    let result = (|| {
        ensure!(
            out.status.code() == Some(137),
            "status {:?}: {:?}",
            out.status,
            text(&out)
        );
        ensure!(
            !text(&out).0.contains("allocated all"),
            "the limit was not applied: {:?}",
            text(&out)
        );
        // containerd's OOM event and the exit event reach dockerd separately,
        // in either order (as with runc): OOMKilled may show a moment later.
        docker_wait_for(
            env,
            name,
            "{{.State.OOMKilled}} {{.State.ExitCode}}",
            "true 137",
        )
    })();
    let _ = env.docker.docker(&["rm", "-f", name]);
    result
}

fn docker_linux_image_through_runc(env: &Env) -> anyhow::Result<()> {
    let out = docker_run(env, &[&image("busybox"), "-c", "echo hi from runc; exit 5"]);
    ensure!(
        out.status.code() == Some(5),
        "status {:?}: {:?}",
        out.status,
        text(&out)
    );
    ensure!(text(&out).0.contains("hi from runc"), "{:?}", text(&out));
    Ok(())
}

/// The message each bad image must produce, through every client.
const BAD_INPUT: &[(&str, &str)] = &[
    ("corrupt", "/corrupt.wasm is not a valid WebAssembly module"),
    ("missing", "WebAssembly module /missing.wasm not found"),
];

fn docker_bad_input_named(env: &Env) -> anyhow::Result<()> {
    for (name, message) in BAD_INPUT {
        let container = format!("oci-bad-{name}");
        let out = env.docker.docker(&[
            "run",
            "--name",
            &container,
            "--network",
            "none",
            "--runtime",
            RUNTIME,
            &image(name),
        ]);
        let id = docker_inspect(env, &container, "{{.Id}}");
        let _ = env.docker.docker(&["rm", "-f", &container]);
        ensure!(!id.is_empty(), "{name}: no container id");
        refused_leaving_nothing(&out, name, message, oci_leftovers(env.docker.dir(), &id))?;
    }
    Ok(())
}

/// A client's run of bad input `name` failed showing `message`, and `left`
/// (what is left of the container once the client removed it) is empty.
fn refused_leaving_nothing(
    out: &Output,
    name: &str,
    message: &str,
    left: Vec<String>,
) -> anyhow::Result<()> {
    let (_, stderr) = text(out);
    ensure!(!out.status.success(), "{name}: the run succeeded");
    ensure!(
        stderr.contains(message),
        "{name}: {message:?} not in {stderr:?}"
    );
    ensure!(left.is_empty(), "{name} left {left:?}");
    Ok(())
}

/// podman's default RLIMIT_NOFILE/NPROC for root containers (1048576) are
/// above this machine's hard limits, and raising them needs CAP_SYS_RESOURCE,
/// which these machines lack: runc refuses those specs as well.
const PODMAN_ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:4096",
    "--ulimit",
    "nproc=4096:4096",
];

fn podman_run(env: &Env, extra: &[&str]) -> Output {
    let runtime = env.oci.to_str().expect("utf-8 path");
    let mut args = vec!["--runtime", runtime, "run", "--network", "none"];
    args.extend(PODMAN_ULIMITS);
    args.extend(extra);
    env.podman.podman(&args)
}

fn podman_args_and_exit_code(env: &Env) -> anyhow::Result<()> {
    let out = podman_run(
        env,
        &["--rm", "-e", "FROM_RUN=yes", &image("args"), "one", "two"],
    );
    expect_output(
        &out,
        &[
            "arg 0=/args.wasm",
            "arg 1=one",
            "arg 2=two",
            "env FROM_RUN=yes",
        ],
    )?;
    let out = podman_run(env, &["--rm", &image("exit"), "3"]);
    ensure!(
        out.status.code() == Some(3),
        "status {:?}: {:?}",
        out.status,
        text(&out)
    );
    let out = podman_run(
        env,
        &["--rm", &image("busybox"), "-c", "echo linux under podman"],
    );
    expect_output(&out, &["linux under podman"])
}

fn podman_bad_input_named(env: &Env) -> anyhow::Result<()> {
    for (name, message) in BAD_INPUT {
        let container = format!("oci-bad-{name}");
        let out = podman_run(env, &["--name", &container, &image(name)]);
        let inspect = env.podman.podman(&["inspect", "-f", "{{.Id}}", &container]);
        let id = text(&inspect).0.trim().to_string();
        let _ = env.podman.podman(&["rm", "-f", &container]);
        ensure!(!id.is_empty(), "{name}: no container id");
        refused_leaving_nothing(&out, name, message, oci_leftovers(env.podman.dir(), &id))?;
    }
    Ok(())
}

/// containerd's runc shim keeps runc's state here (`--root`), whatever containerd's own root.
fn runc_shim_root() -> PathBuf {
    Path::new("/run/containerd/runc").join(NAMESPACE)
}

fn ctr_run(env: &Env, id: &str, image_args: &[&str]) -> Output {
    let fifo = env.containerd.fifo_dir();
    let runtime = env.oci.to_str().expect("utf-8 path");
    let mut args = vec![
        "run",
        "--rm",
        "--fifo-dir",
        fifo.to_str().unwrap(),
        "--runc-binary",
        runtime,
    ];
    args.push(image_args[0]);
    args.push(id);
    args.extend(&image_args[1..]);
    env.containerd.ctr(&args)
}

fn ctr_runc_binary_wasm_and_linux(env: &Env) -> anyhow::Result<()> {
    let out = ctr_run(
        env,
        "oci-ctr-wasm",
        &[&image("args"), "/args.wasm", "via-runc-v2"],
    );
    expect_output(&out, &["arg 1=via-runc-v2"])?;
    let out = ctr_run(env, "oci-ctr-exit", &[&image("exit"), "/exit.wasm", "3"]);
    ensure!(
        out.status.code() == Some(3),
        "status {:?}: {:?}",
        out.status,
        text(&out)
    );
    let out = ctr_run(
        env,
        "oci-ctr-linux",
        &[&image("busybox"), "/bin/echo", "linux via runc-v2"],
    );
    expect_output(&out, &["linux via runc-v2"])?;
    for id in ["oci-ctr-wasm", "oci-ctr-exit", "oci-ctr-linux"] {
        let mut left = env.containerd.leftovers(id);
        left.extend(oci_leftovers(&runc_shim_root(), id));
        ensure!(left.is_empty(), "{id} left {left:?}");
    }
    Ok(())
}

fn ctr_runc_binary_bad_input_named(env: &Env) -> anyhow::Result<()> {
    for (name, message) in BAD_INPUT {
        let id = format!("oci-ctr-bad-{name}");
        let out = ctr_run(env, &id, &[&image(name)]);
        let _ = env.containerd.ctr(&["container", "rm", &id]);
        let mut left = env.containerd.leftovers(&id);
        left.extend(oci_leftovers(&runc_shim_root(), &id));
        refused_leaving_nothing(&out, name, message, left)?;
    }
    Ok(())
}
