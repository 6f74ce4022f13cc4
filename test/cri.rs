//! The CRI test (issue 9): containerd's own CRI plugin (no fake) runs a
//! Kubernetes pod under our runtime, driven by a CRI client over containerd's
//! unix socket as the kubelet would drive it.
//!
//! A private containerd, with the CRI plugin enabled and our runtimes
//! declared as RuntimeClass handlers, runs in a network namespace this test
//! creates (only `lo` up): the pods use the host network, which is that
//! namespace, never the machine's. For every engine whose shim is built, one
//! pod with runtime handler = engine: the sandbox (a static C `pause`), two
//! Wasm containers and a busybox sidecar. Checked as a user of Kubernetes sees
//! it: CRI log files, exit code, memory statistics, the namespaces the Wasm
//! container shares with the sandbox, and nothing left after the pod is removed.
//! On WasmEdge, whose modules can open sockets, a Wasm client also talks to a
//! server a second sidecar listens on at 127.0.0.1 in the pod.
//!
//! Needs root, containerd + runc, clang + wasi-libc, busybox-static, iproute2
//! and containernetworking-plugins (`make test` installs them).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use k8s_cri::v1 as cri;
use libtest_mimic::{Arguments, Failed, Trial};
use wasmshim_cli::image::{ImageSpec, LayerEntry};
use wasmshim_integration::{
    busybox_image, cmdline, engines, image, modules, parent_of, processes_mentioning, runtime,
    tail, wasm_image, Containerd, Options,
};

#[path = "cri/client.rs"]
mod client;

use client::{cri_log, info_pid, namespace, wait_for_log_line, Cri};

/// The containerd namespace of the CRI plugin.
const K8S_NAMESPACE: &str = "k8s.io";

/// The CRI plugin's config: what the README's Kubernetes section documents.
/// `{runtimes}` is one table per engine under test.
const CRI_CONFIG: &str = r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_tcp_service = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  # The default handler, which the CRI plugin requires to be declared.
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
{runtimes}"#;

/// A CNI config of the `loopback` plugin only: nothing routes beyond 127.0.0.1.
const LOOPBACK_CNI: &str =
    r#"{"cniVersion": "0.4.0", "name": "wasmshim-loopback", "plugins": [{"type": "loopback"}]}"#;

/// Shared by the trials: the daemon, its CRI client, a dir for CRI logs.
struct Env {
    containerd: Containerd,
    client: Cri,
    /// Holds the CNI config and the pods' log directories.
    dir: tempfile::TempDir,
}

static ENV: OnceLock<Env> = OnceLock::new();

fn main() {
    let args = Arguments::from_args();
    let (engines, skipped) = match engines() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("CRI tests cannot run: {e:#}");
            std::process::exit(1);
        }
    };
    for line in &skipped {
        eprintln!("SKIPPED {line}");
    }
    type Case = fn(&Env, &str) -> anyhow::Result<()>;
    let cases: [(&str, Case); 2] = [
        ("pod_with_wasm_and_sidecar", pod_with_wasm_and_sidecar),
        ("pod_shim_sigkill", pod_shim_sigkill),
    ];
    let trials: Vec<Trial> = engines
        .iter()
        .flat_map(|engine| cases.iter().map(move |case| (engine.to_string(), *case)))
        .map(|(engine, (name, case))| {
            Trial::test(format!("{engine}::{name}"), move || {
                let env = ENV.get().expect("set up before the trials run");
                case(env, &engine).map_err(|e| {
                    Failed::from(format!(
                        "{e:#}\ncontainerd's log ends:\n{}",
                        tail(&env.containerd.log(), 40)
                    ))
                })
            })
        })
        .collect();
    let needed = trials.iter().any(|t| !args.is_filtered_out(t));
    if needed && !args.list {
        match setup(&engines) {
            Ok(env) => {
                let _ = ENV.set(env);
            }
            Err(e) => {
                eprintln!("CRI test setup failed: {e:#}");
                std::process::exit(1);
            }
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(env) = ENV.get() {
        env.containerd.stop();
        // Statics are never dropped: remove the CNI config and logs here.
        let _ = std::fs::remove_dir_all(env.dir.path());
    }
    conclusion.exit();
}

/// Starts the private containerd with the CRI plugin and imports the images.
fn setup(engines: &[&str]) -> anyhow::Result<Env> {
    let dir = tempfile::Builder::new().prefix("wasmshim-cri.").tempdir()?;
    let cni = dir.path().join("cni");
    std::fs::create_dir(&cni)?;
    std::fs::write(cni.join("10-loopback.conflist"), LOOPBACK_CNI)?;
    let runtimes: String = engines
        .iter()
        .map(|engine| {
            format!(
                "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{engine}]\n    \
                 runtime_type = \"{}\"\n",
                runtime(engine)
            )
        })
        .collect();
    let config = CRI_CONFIG
        .replace("{pause}", &image("pause"))
        .replace("{cni}", &cni.to_string_lossy())
        .replace("{runtimes}", &runtimes);
    let containerd = Containerd::start_with(&Options {
        cri_config: Some(config),
        private_network: true,
        ..Options::default()
    })?;
    let modules = modules::build_all(&containerd.dir().join("modules"))?;
    for name in ["exit", "sleep", "connect"] {
        let module = modules.join(format!("{name}.wasm"));
        containerd.import_into(K8S_NAMESPACE, &wasm_image(&image(name), &module, &[])?)?;
    }
    containerd.import_into(K8S_NAMESPACE, &busybox_image(&image("busybox"))?)?;
    containerd.import_into(K8S_NAMESPACE, &pause_image(dir.path())?)?;
    let client = Cri::connect(containerd.socket())?;
    Ok(Env {
        containerd,
        client,
        dir,
    })
}

/// A linux/amd64 image whose `/pause` is `fixtures/pause.c`, built static.
fn pause_image(dir: &Path) -> anyhow::Result<ImageSpec> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pause.c");
    let binary = dir.join("pause");
    let status = std::process::Command::new("clang")
        .args(["-static", "-O2", "-s", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .context("running clang (apt-get install clang)")?;
    ensure!(
        status.success(),
        "clang -static failed on {}",
        source.display()
    );
    Ok(ImageSpec {
        name: image("pause"),
        os: "linux".into(),
        architecture: "amd64".into(),
        entries: vec![LayerEntry::File {
            path: "/pause".into(),
            data: std::fs::read(&binary)?,
            mode: 0o755,
        }],
        entrypoint: vec!["/pause".into()],
        cmd: Vec::new(),
        env: Vec::new(),
    })
}

/// The config of a pod named `name`, whose containers' logs go to `logs`
/// and whose cgroups go below `cgroup_parent`, in the host network (the
/// namespace this test made for containerd).
fn sandbox_config(name: &str, logs: &Path, cgroup_parent: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    // The host network: the namespace this test made for containerd.
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// RunPodSandbox of `config` with runtime handler `engine`: the pod's id.
fn run_pod(cri: &Cri, config: &cri::PodSandboxConfig, engine: &str) -> anyhow::Result<String> {
    let request = cri::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: engine.to_string(),
    };
    Ok(cri
        .call("RunPodSandbox", |mut c| async move {
            c.run_pod_sandbox(request).await
        })?
        .pod_sandbox_id)
}

/// Stops and removes pod `pod` (both must succeed).
fn remove_pod(cri: &Cri, pod: &str) -> anyhow::Result<()> {
    let request = cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    };
    cri.call("StopPodSandbox", |mut c| async move {
        c.stop_pod_sandbox(request).await
    })?;
    let request = cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    };
    cri.call("RemovePodSandbox", |mut c| async move {
        c.remove_pod_sandbox(request).await
    })?;
    Ok(())
}

/// Removes pod `pod` after its checks gave `result`; if both succeeded,
/// waits until nothing of it is left (`pids`, mounts, cgroups of
/// `containers`). The pod's parent cgroup is the test's own (the kubelet
/// makes it) and is removed here when empty. The first error wins.
fn remove_and_check(
    cri: &Cri,
    pod: &str,
    result: anyhow::Result<()>,
    pids: &[u32],
    cgroup_parent: &str,
    containers: &[String],
) -> anyhow::Result<()> {
    let removed = remove_pod(cri, pod);
    let left = if result.is_ok() && removed.is_ok() {
        wait_for_nothing_left(pod, pids, cgroup_parent, containers)
    } else {
        Ok(())
    };
    for dir in cgroup_dirs(cgroup_parent, "") {
        let _ = std::fs::remove_dir(dir);
    }
    result?;
    removed?;
    left
}

/// CreateContainer + StartContainer of `name` from `image_name` in `pod`,
/// with `command` and `args`, logging to `<name>.log`: the container's id.
fn start_container(
    cri: &Cri,
    pod: &str,
    sandbox_config: &cri::PodSandboxConfig,
    (name, image_name, command, args): (&str, &str, &[&str], &[&str]),
) -> anyhow::Result<String> {
    let request = cri::CreateContainerRequest {
        pod_sandbox_id: pod.to_string(),
        config: Some(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image(image_name),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        }),
        sandbox_config: Some(sandbox_config.clone()),
    };
    let id = cri
        .call("CreateContainer", |mut c| async move {
            c.create_container(request).await
        })?
        .container_id;
    let request = cri::StartContainerRequest {
        container_id: id.clone(),
    };
    cri.call(&format!("StartContainer {name}"), |mut c| async move {
        c.start_container(request).await
    })?;
    Ok(id)
}

fn pod_with_wasm_and_sidecar(env: &Env, engine: &str) -> anyhow::Result<()> {
    let cri = &env.client;
    let logs = env.dir.path().join(format!("logs-{engine}"));
    std::fs::create_dir_all(&logs)?;
    let cgroup_parent = format!("/wasmshim-cri-{engine}");
    let netns_before = list_dir("/run/netns");
    let sandbox_config = sandbox_config(&format!("pod-{engine}"), &logs, &cgroup_parent);
    let pod = run_pod(cri, &sandbox_config, engine)?;
    let mut pids = Vec::new();
    let mut containers = vec![pod.clone()];
    let result = pod_checks(
        env,
        engine,
        &pod,
        &sandbox_config,
        &logs,
        &mut pids,
        &mut containers,
    );
    remove_and_check(cri, &pod, result, &pids, &cgroup_parent, &containers)?;
    let netns_after = list_dir("/run/netns");
    ensure!(
        netns_after == netns_before,
        "network namespaces were left: {netns_before:?} before, {netns_after:?} after"
    );
    Ok(())
}

/// The shim of a running pod SIGKILLed, as an OOM kill or a crash would end
/// it: the CRI reports each of the pod's containers exited (the Wasm one,
/// whose worker dies with the shim, and the busybox sidecar, which runc ran
/// and the shim's `delete` command kills) and the sandbox not ready;
/// stopping and removing the pod then works and leaves no process (pause,
/// sidecar, worker, shim), mount or cgroup. The exit code is 255: containerd
/// 1.6's CRI plugin reports that "unknown" code whenever its wait on a task
/// ends because the connection to the task's shim closed, whatever the shim
/// (runc's included), before the shim's `delete` command runs.
fn pod_shim_sigkill(env: &Env, engine: &str) -> anyhow::Result<()> {
    let cri = &env.client;
    let name = format!("killed-{engine}");
    let logs = env.dir.path().join(format!("logs-{name}"));
    std::fs::create_dir_all(&logs)?;
    let cgroup_parent = format!("/wasmshim-cri-{name}");
    let config = sandbox_config(&name, &logs, &cgroup_parent);
    let pod = run_pod(cri, &config, engine)?;
    let mut pids = Vec::new();
    let mut containers = vec![pod.clone()];
    let result = (|| {
        let sandbox = cri.pod_status(&pod, true)?;
        pids.push(info_pid(&sandbox.info)?);
        let sidecar = start_container(
            cri,
            &pod,
            &config,
            ("sidecar", "busybox", &["sleep", "600"], &[]),
        )?;
        containers.push(sidecar.clone());
        let sleeper = start_container(cri, &pod, &config, ("sleeper", "sleep", &[], &["600"]))?;
        containers.push(sleeper.clone());
        for id in [&sidecar, &sleeper] {
            let status = cri.wait_for_state(
                id,
                cri::ContainerState::ContainerRunning,
                Duration::from_secs(20),
            )?;
            pids.push(info_pid(&status.info)?);
        }
        let worker = *pids.last().context("the worker's pid")?;
        let shim = parent_of(worker)?;
        ensure!(
            cmdline(shim).contains("containerd-shim-"),
            "the Wasm worker's parent {shim} is not a shim: {}",
            cmdline(shim)
        );
        pids.push(shim);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        for id in [&sidecar, &sleeper] {
            let status = cri.wait_for_state(
                id,
                cri::ContainerState::ContainerExited,
                Duration::from_secs(20),
            )?;
            let code = status.status.context("no status")?.exit_code;
            ensure!(
                code == UNKNOWN_EXIT_CODE,
                "container {id} exited with {code} after its shim was killed, want \
                 {UNKNOWN_EXIT_CODE} (the CRI's unknown exit code)"
            );
        }
        let sandbox = cri.pod_status(&pod, false)?;
        let state = sandbox.status.context("no sandbox status")?.state;
        ensure!(
            state == cri::PodSandboxState::SandboxNotready as i32,
            "the sandbox is in state {state} after its shim was killed, want NOTREADY"
        );
        Ok(())
    })();
    remove_and_check(cri, &pod, result, &pids, &cgroup_parent, &containers)
}

/// The exit code containerd's CRI plugin gives a container whose shim died.
const UNKNOWN_EXIT_CODE: i32 = 255;

/// The checks on the running pod; `pids` and `containers` collect what must
/// be gone once it is removed.
fn pod_checks(
    env: &Env,
    engine: &str,
    pod: &str,
    sandbox_config: &cri::PodSandboxConfig,
    logs: &Path,
    pids: &mut Vec<u32>,
    containers: &mut Vec<String>,
) -> anyhow::Result<()> {
    let cri = &env.client;
    let sandbox = cri.pod_status(pod, true)?;
    let pause = info_pid(&sandbox.info)?;
    pids.push(pause);
    // runc start returns before runc's init has exec'd the program.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read(format!("/proc/{pause}/cmdline"))?.starts_with(b"/pause") {
        ensure!(
            Instant::now() < deadline,
            "the sandbox's process {pause} is not /pause"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let start = |name: &str, image_name: &str, command: &[&str], args: &[&str]| {
        start_container(cri, pod, sandbox_config, (name, image_name, command, args))
    };
    let sidecar = start(
        "sidecar",
        "busybox",
        &["sh", "-c", "echo sidecar up; exec sleep 600"],
        &[],
    )?;
    containers.push(sidecar.clone());
    let sleeper = start("sleeper", "sleep", &[], &["600"])?;
    containers.push(sleeper.clone());
    let exiter = start("exiter", "exit", &[], &["7"])?;
    containers.push(exiter.clone());

    // Both run; their pids are what must be gone at the end.
    let running = |id: &str| {
        let status = cri.wait_for_state(
            id,
            cri::ContainerState::ContainerRunning,
            Duration::from_secs(20),
        )?;
        info_pid(&status.info)
    };
    pids.push(running(&sidecar)?);
    let worker = running(&sleeper)?;
    pids.push(worker);
    let (worker, pause) = (worker.to_string(), pause.to_string());
    // The Wasm container is in the sandbox's IPC and network namespaces; the
    // network is the private one this test made, not the test's own.
    for kind in ["ipc", "net"] {
        ensure!(
            namespace(&worker, kind)? == namespace(&pause, kind)?,
            "the Wasm container's {kind} namespace is not the sandbox's"
        );
    }
    // It sits under the pod's cgroup parent, beside the sandbox.
    for pid in [&worker, &pause] {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        ensure!(
            cgroups.lines().filter_map(|l| l.splitn(3, ':').nth(2)).any(
                |path| path.starts_with(&format!("{}/", sandbox_cgroup_parent(sandbox_config)))
            ),
            "process {pid} is not under the pod's cgroup parent: {cgroups}"
        );
    }
    // ... which are the pod's own, not the machine's (the test's).
    ensure!(
        namespace(&worker, "ipc")? != namespace("self", "ipc")?,
        "the pod shares the machine's IPC namespace"
    );
    ensure!(
        namespace(&worker, "net")? != namespace("self", "net")?,
        "the pod runs in the machine's network namespace, not the test's private one"
    );

    // Output in the CRI log format, in the log files the CRI named.
    wait_for_log_line(
        &logs.join("sidecar.log"),
        "sidecar up",
        Duration::from_secs(10),
    )?;
    wait_for_log_line(
        &logs.join("sleeper.log"),
        "sleeping 600",
        Duration::from_secs(10),
    )?;

    // Memory of the running Wasm container, as `kubectl top` would read it.
    let request = cri::ContainerStatsRequest {
        container_id: sleeper.clone(),
    };
    let stats = cri.call("ContainerStats", |mut c| async move {
        c.container_stats(request).await
    })?;
    let memory = stats
        .stats
        .and_then(|s| s.memory)
        .context("ContainerStats has no memory")?;
    let used = memory
        .usage_bytes
        .or(memory.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or_default();
    ensure!(
        used > 0,
        "ContainerStats reports no memory in use: {memory:?}"
    );

    // The short Wasm container's exit code and output.
    let status = cri.wait_for_state(
        &exiter,
        cri::ContainerState::ContainerExited,
        Duration::from_secs(20),
    )?;
    let status = status.status.context("no status")?;
    ensure!(
        status.exit_code == 7,
        "ContainerStatus reports exit code {}, the module exited with 7",
        status.exit_code
    );
    let lines = cri_log(&logs.join("exiter.log"))?;
    ensure!(
        lines == ["exiting with 7"],
        "exiter.log holds {lines:?}, not the module's output"
    );
    if SOCKET_ENGINES.contains(&engine) {
        reaches_sidecar_server(cri, engine, logs, &start, pids, containers)?;
    } else {
        eprintln!(
            "SKIPPED {engine}::pod_with_wasm_and_sidecar's socket check: this engine's WASI \
             preview 1 has no client sockets; the shared namespaces are checked instead"
        );
    }
    eprintln!(
        "pod {pod}: pause {pause}, Wasm worker {worker} in {}, {used} bytes of memory, exit code {}",
        namespace(&worker, "ipc")?.display(),
        status.exit_code
    );
    Ok(())
}

/// Engines whose modules can open sockets: WasmEdge's socket functions.
/// wasmtime gives WASI preview 1 modules no client sockets (issue 13).
const SOCKET_ENGINES: &[&str] = &["wasmedge"];

/// The port the sidecar's server listens on at 127.0.0.1 in the pod.
const SERVER_PORT: u16 = 7070;

/// Starts a container of the pod: (name, image, command, args) → its id.
type StartContainer<'a> = &'a dyn Fn(&str, &str, &[&str], &[&str]) -> anyhow::Result<String>;

/// A Wasm container reaches a server a busybox sidecar listens on at
/// 127.0.0.1 of the pod's network namespace: the module's message shows in
/// the sidecar's log and the sidecar's reply in the module's.
fn reaches_sidecar_server(
    cri: &Cri,
    engine: &str,
    logs: &Path,
    start: StartContainer<'_>,
    pids: &mut Vec<u32>,
    containers: &mut Vec<String>,
) -> anyhow::Result<()> {
    let serve = format!("echo pong | busybox nc -l -p {SERVER_PORT}");
    let server = start("server", "busybox", &["sh", "-c", &serve], &[])?;
    containers.push(server.clone());
    let status = cri.wait_for_state(
        &server,
        cri::ContainerState::ContainerRunning,
        Duration::from_secs(20),
    )?;
    let server_pid = info_pid(&status.info)?;
    pids.push(server_pid);
    wait_for_listener(server_pid, SERVER_PORT).with_context(|| {
        let log = std::fs::read_to_string(logs.join("server.log")).unwrap_or_default();
        format!("the sidecar's server.log:\n{log}")
    })?;

    let message = format!("ping from {engine}");
    let port = SERVER_PORT.to_string();
    let client = start("client", "connect", &[], &["127.0.0.1", &port, &message])?;
    containers.push(client.clone());
    let status = cri.wait_for_state(
        &client,
        cri::ContainerState::ContainerExited,
        Duration::from_secs(20),
    )?;
    let lines = cri_log(&logs.join("client.log"))?;
    let exit_code = status.status.context("no status")?.exit_code;
    ensure!(
        exit_code == 0 && lines == ["reply: pong"],
        "the Wasm client exited with {exit_code} and printed {lines:?}, not the server's reply"
    );
    wait_for_log_line(&logs.join("server.log"), &message, Duration::from_secs(10))
}

/// Waits until a socket of `pid`'s network namespace listens on TCP `port`.
fn wait_for_listener(pid: u32, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let local = format!(":{port:04X}");
    loop {
        // `/proc/<pid>/net/tcp{,6}`: `sl local_address rem_address st ...`,
        // with addresses as hex `IP:PORT` and state 0A for LISTEN.
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))?
            + &std::fs::read_to_string(format!("/proc/{pid}/net/tcp6"))?;
        let listening = table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "0A"
        });
        if listening {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "nothing listens on port {port} in the pod's network namespace:\n{table}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cgroup parent the pod was configured with.
fn sandbox_cgroup_parent(config: &cri::PodSandboxConfig) -> &str {
    config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.as_str())
        .unwrap_or_default()
}

/// Waits (a few seconds at most) until the removed pod left nothing: no shim
/// of the pod, none of its processes, no mount under containerd's dirs, no
/// cgroup of its containers.
fn wait_for_nothing_left(
    pod: &str,
    pids: &[u32],
    cgroup_parent: &str,
    containers: &[String],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = Vec::new();
        for pid in processes_mentioning(pod) {
            left.push(format!("process {pid} (the pod's shim?)"));
        }
        for &pid in pids {
            if Path::new(&format!("/proc/{pid}")).exists() {
                left.push(format!("process {pid} of the pod"));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        for line in mounts
            .lines()
            .filter(|l| containers.iter().any(|id| l.contains(id.as_str())))
        {
            left.push(format!("mount {line}"));
        }
        for id in containers {
            for dir in cgroup_dirs(cgroup_parent, id) {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the removed pod left:\n{}", left.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `<hierarchy>/<parent>/<id>` in every cgroup hierarchy where it exists.
fn cgroup_dirs(parent: &str, id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        hierarchies.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    let relative = Path::new(parent.trim_start_matches('/')).join(id);
    hierarchies
        .into_iter()
        .map(|h| h.join(&relative))
        .filter(|d| d.is_dir())
        .collect()
}

/// The names in `dir` (none if it does not exist), sorted.
fn list_dir(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
