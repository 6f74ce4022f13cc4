//! Isolation cases (issue 7): cgroup limits, OOM, metrics, namespaces, user,
//! hooks. Each runs for every engine from the CASES table of `containerd.rs`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use wasmshim_integration::{text, NAMESPACE};

use super::{expect_output, host_dir, image, remove, run_detached, Env};

/// The directory of the container's cgroup in the v1 `controller`, or in the
/// unified hierarchy when that is all there is.
fn cgroup_dir(controller: &str, id: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup").join(controller);
    let base = if v1.is_dir() {
        v1
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    base.join(NAMESPACE).join(id)
}

/// `ctr task metrics` of a running container: its output, once it has
/// succeeded and shows a memory usage above 0 (v1 or v2 field names).
pub fn metrics_with_memory_usage(env: &Env, id: &str) -> anyhow::Result<String> {
    let out = env.containerd.ctr(&["task", "metrics", id]);
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.success(),
        "ctr task metrics: {stdout:?} {stderr:?}"
    );
    let usage = stdout
        .lines()
        .find_map(|l| {
            let mut cols = l.split_whitespace();
            matches!(cols.next(), Some("memory.usage_in_bytes" | "memory.usage"))
                .then(|| cols.next()?.parse::<u64>().ok())?
        })
        .with_context(|| format!("no memory usage in ctr task metrics: {stdout}"))?;
    ensure!(usage > 0, "memory usage is 0: {stdout}");
    Ok(stdout)
}

/// The value of `name:` in the text of a `/proc/PID/status` file ("" if absent).
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn read_trimmed(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

pub fn oom_kill_exits_137(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let mut events = env
        .containerd
        .ctr_command(&["events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // Give `ctr events` time to subscribe.
    std::thread::sleep(Duration::from_millis(300));
    let out = env.containerd.run(
        Some(rt),
        &[
            "--memory-limit",
            "20971520",
            &image("alloc"),
            id,
            "/alloc.wasm",
            "200",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let events = events.wait_with_output()?;
    let events = String::from_utf8_lossy(&events.stdout);
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.code() == Some(137),
        "allocating past the limit gave {:?}: {stdout:?} {stderr:?}",
        out.status
    );
    ensure!(
        !stdout.contains("allocated all"),
        "the module got all its memory: {stdout:?}"
    );
    ensure!(
        events
            .lines()
            .any(|l| l.contains("/tasks/oom") && l.contains(id)),
        "no /tasks/oom event for {id}: {events}"
    );
    // The same module within its limit is not killed.
    let out = env.containerd.run(
        Some(rt),
        &[
            "--memory-limit",
            "104857600",
            &image("alloc"),
            id,
            "/alloc.wasm",
            "16",
        ],
    );
    expect_output(&out, &["allocated all 16 MiB"])?;
    Ok(())
}

pub fn cgroup_limits_and_metrics(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let pid = run_detached(
        env,
        rt,
        id,
        &[
            "--cpus",
            "0.5",
            "--memory-limit",
            "33554432",
            &image("sleep"),
            id,
            "/sleep.wasm",
            "30",
        ],
    )?;
    let result = (|| {
        let memory = cgroup_dir("memory", id);
        let cpu = cgroup_dir("cpu", id);
        let procs = read_trimmed(&memory.join("cgroup.procs"))?;
        ensure!(
            procs.lines().any(|l| l == pid.to_string()),
            "worker {pid} is not in {}: {procs:?}",
            memory.display()
        );
        if memory.join("memory.limit_in_bytes").exists() {
            ensure!(read_trimmed(&memory.join("memory.limit_in_bytes"))? == "33554432");
            ensure!(read_trimmed(&cpu.join("cpu.cfs_quota_us"))? == "50000");
            ensure!(read_trimmed(&cpu.join("cpu.cfs_period_us"))? == "100000");
        } else {
            ensure!(read_trimmed(&memory.join("memory.max"))? == "33554432");
            ensure!(read_trimmed(&cpu.join("cpu.max"))? == "50000 100000");
        }
        let stdout = metrics_with_memory_usage(env, id)?;
        ensure!(
            stdout.contains("pids.current") && stdout.contains("33554432"),
            "ctr task metrics lacks pids or the limit: {stdout}"
        );
        Ok(())
    })();
    remove(env, id);
    result
}

fn ns_inode(link: &str) -> Option<u64> {
    // "net:[4026531840]"
    link.split('[').nth(1)?.trim_end_matches(']').parse().ok()
}

pub fn network_namespace(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    // Without --with-ns: a network namespace of its own.
    let pid = run_detached(env, rt, id, &[&image("sleep"), id, "/sleep.wasm", "30"])?;
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"));
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    remove(env, id);
    let theirs = theirs?;
    ensure!(
        theirs != ours,
        "the container shares the host's network namespace {ours:?}"
    );

    // With --with-ns network:<path>: that namespace.
    let dir = host_dir(env, id)?;
    let ns_file = dir.join("netns");
    std::fs::write(&ns_file, "")?;
    let made = std::process::Command::new("unshare")
        .arg(format!("--net={}", ns_file.display()))
        .arg("true")
        .status()?;
    ensure!(made.success(), "unshare --net={}", ns_file.display());
    let result = (|| {
        let want = std::fs::metadata(&ns_file)?.ino();
        let with = format!("network:{}", ns_file.display());
        let pid = run_detached(
            env,
            rt,
            id,
            &["--with-ns", &with, &image("sleep"), id, "/sleep.wasm", "30"],
        )?;
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"));
        remove(env, id);
        let theirs = theirs?;
        ensure!(
            ns_inode(&theirs.to_string_lossy()) == Some(want),
            "the worker is in {theirs:?}, not in the namespace {} (inode {want})",
            ns_file.display()
        );
        Ok(())
    })();
    let _ = std::process::Command::new("umount").arg(&ns_file).status();
    result
}

/// A whole spec for `ctr run --config` (`Containerd::write_spec`) running
/// `module`, copied from the test modules into the spec's rootfs, with `args`.
fn write_spec(
    env: &Env,
    id: &str,
    module: &str,
    args: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> anyhow::Result<PathBuf> {
    std::fs::copy(
        env.containerd.dir().join("modules").join(module),
        env.containerd.spec_rootfs(id)?.join(module),
    )?;
    let entry = format!("/{module}");
    let mut argv = vec![entry.as_str()];
    argv.extend(args);
    env.containerd.write_spec(id, &argv, edit)
}

/// `ctr run --rm --config <spec> <id>`.
fn run_spec(env: &Env, rt: &str, id: &str, spec: &Path) -> std::process::Output {
    env.containerd
        .run(Some(rt), &["--config", spec.to_str().unwrap(), id])
}

pub fn user_owns_files(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let dir = host_dir(env, id)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    // Without CAP_DAC_OVERRIDE and CAP_FOWNER, as Docker runs non-root users.
    let spec = write_spec(
        env,
        id,
        "files.wasm",
        &["/data/in.txt", "/data/out.txt"],
        |s| {
            s["process"]["user"] =
                serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [1000]});
            let caps = serde_json::json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
            s["process"]["capabilities"] =
                serde_json::json!({"bounding": caps, "effective": caps, "permitted": caps});
            s["mounts"] = serde_json::json!([{
                "destination": "/data", "type": "bind", "source": dir, "options": ["rbind", "rw"]
            }]);
        },
    )?;
    let out = run_spec(env, rt, id, &spec);
    expect_output(&out, &["content from the host", "wrote /data/out.txt"])?;
    let meta = std::fs::metadata(dir.join("out.txt"))?;
    ensure!(
        (meta.uid(), meta.gid()) == (1000, 1000),
        "out.txt belongs to {}:{}, not 1000:1000",
        meta.uid(),
        meta.gid()
    );

    // A directory only root may write: the module gets EACCES through WASI.
    std::fs::remove_file(dir.join("out.txt"))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let out = run_spec(env, rt, id, &spec);
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.code() == Some(2),
        "the module was not refused: {:?} {stdout:?} {stderr:?}",
        out.status
    );
    ensure!(
        stderr.contains("write /data/out.txt: Permission denied"),
        "the module did not report EACCES: {stderr:?}"
    );
    ensure!(
        !dir.join("out.txt").exists(),
        "uid 1000 wrote a root-only directory"
    );
    Ok(())
}

/// containerd's default seccomp profile (`ctr run --seccomp`), no_new_privs
/// and ctr's capability set, as the kernel shows them for the worker.
pub fn seccomp_caps_nnp(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let pid = run_detached(
        env,
        rt,
        id,
        &["--seccomp", &image("sleep"), id, "/sleep.wasm", "30"],
    )?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
    let still_running = still_running(env, id);
    remove(env, id);
    let status = status?;
    let field = |name: &str| status_field(&status, name);
    ensure!(field("Seccomp") == "2", "no seccomp filter: {status}");
    ensure!(field("NoNewPrivs") == "1", "no_new_privs not set: {status}");
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE
    // NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP: Docker's well-known mask.
    ensure!(
        field("CapBnd") == "00000000a80425fb",
        "bounding set: {status}"
    );
    ensure!(
        field("CapEff") == "00000000a80425fb",
        "effective set: {status}"
    );
    still_running
}

/// The module still runs (the filter did not kill it).
fn still_running(env: &Env, id: &str) -> anyhow::Result<()> {
    let out = env.containerd.ctr(&["task", "ls"]);
    let (stdout, _) = text(&out);
    ensure!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING")),
        "the module died under seccomp: {stdout}"
    );
    Ok(())
}

/// The hooks get the container's state on stdin, `poststop` runs once (also
/// after containerd's `delete` of the shim that follows every Delete), and a
/// failing `createRuntime` hook fails Create with its message.
pub fn hooks_get_state_and_fail_create(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let dir = host_dir(env, id)?;
    let state = dir.join("state.json");
    let poststop = dir.join("poststop.log");
    let spec = write_spec(env, id, "hello.wasm", &[], |s| {
        s["hooks"] = serde_json::json!({
            "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", state.display())]}],
            "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", format!("touch {}.prestart", state.display())]}],
            "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", format!("echo ran >> {}", poststop.display())]}]
        });
    })?;
    let out = run_spec(env, rt, id, &spec);
    expect_output(&out, &["Hello from WebAssembly"])?;
    // containerd awaits its `delete` of the shim before `ctr run --rm`
    // returns; the pause only makes a late second run visible.
    std::thread::sleep(Duration::from_millis(200));
    let runs = std::fs::read_to_string(&poststop).context("the poststop hook did not run")?;
    ensure!(
        runs.lines().count() == 1,
        "the poststop hook ran {} times",
        runs.lines().count()
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&state).context("the createRuntime hook wrote no state")?,
    )?;
    ensure!(json["id"] == id, "state id: {json}");
    ensure!(json["status"] == "creating", "state status: {json}");
    ensure!(
        json["pid"].as_u64().is_some_and(|p| p > 0),
        "state pid: {json}"
    );
    ensure!(
        json["bundle"].as_str().is_some_and(|b| b.ends_with(id)),
        "state bundle: {json}"
    );
    ensure!(
        dir.join("state.json.prestart").exists(),
        "the prestart hook did not run"
    );

    let spec = write_spec(env, id, "hello.wasm", &[], |s| {
        s["hooks"] = serde_json::json!({
            "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo 'hook says no' >&2; exit 1"]}]
        });
    })?;
    let started = Instant::now();
    let out = run_spec(env, rt, id, &spec);
    let (stdout, stderr) = text(&out);
    ensure!(!out.status.success(), "ctr run succeeded: {stdout:?}");
    ensure!(
        stderr.contains("createRuntime hook /bin/sh") && stderr.contains("hook says no"),
        "ctr's error does not carry the hook's message: {stderr:?}"
    );
    ensure!(
        !stdout.contains("Hello"),
        "the module ran although a hook failed"
    );
    ensure!(started.elapsed() < Duration::from_secs(20));
    // `ctr run` leaves the container record when the task fails to create.
    env.containerd.ctr(&["container", "rm", id]);
    Ok(())
}

/// The spec Debian's Docker 20.10 wrote for `docker run --network none` of a
/// busybox image (captured with a runc wrapper that copied `config.json`):
/// its seccomp profile, capabilities, namespaces, sysctls, masked paths and
/// its `libnetwork-setkey` prestart hook.
const DOCKER_SPEC: &str = include_str!("fixtures/docker-20.10-config.json");

pub fn docker_spec_runs_a_module(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let dir = env.containerd.dir().join("specs").join(id);
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    std::fs::copy(
        env.containerd.dir().join("modules").join("sleep.wasm"),
        rootfs.join("sleep.wasm"),
    )?;
    let mut spec: serde_json::Value = serde_json::from_str(DOCKER_SPEC)?;
    let hostname = spec["hostname"]
        .as_str()
        .context("no hostname")?
        .to_string();
    let docker_id = spec["linux"]["cgroupsPath"]
        .as_str()
        .and_then(|p| p.strip_prefix("/docker/"))
        .context("no /docker/<id> cgroupsPath")?
        .to_string();
    // Only what names the capturing host changes: the rootfs, the command,
    // the files Docker bind-mounted, the cgroup (below ours, so the leftover
    // check sees it) and the hook binary (dockerd's /proc/PID/exe).
    spec["root"]["path"] = serde_json::json!(rootfs);
    spec["process"]["args"] = serde_json::json!(["/sleep.wasm", "600"]);
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NAMESPACE}/{id}"));
    for mount in spec["mounts"].as_array_mut().context("no mounts")? {
        if mount["type"] == "bind" {
            let source = PathBuf::from(mount["source"].as_str().unwrap_or_default());
            let copy = dir.join(source.file_name().context("bind source")?);
            std::fs::write(&copy, "")?;
            mount["source"] = serde_json::json!(copy);
        }
    }
    let recorder = dir.join("setkey-hook");
    let (args_file, state_file) = (dir.join("hook-args"), dir.join("hook-state"));
    std::fs::write(
        &recorder,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\ncat > {}\n",
            args_file.display(),
            state_file.display()
        ),
    )?;
    std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755))?;
    spec["hooks"]["prestart"][0]["path"] = serde_json::json!(recorder);
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;

    let pid = run_detached(env, rt, id, &["--config", path.to_str().unwrap(), id])?;
    let checked = (|| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| status_field(&status, name);
        ensure!(
            field("Seccomp") == "2",
            "Docker's seccomp profile is not loaded: {status}"
        );
        ensure!(
            field("CapEff") == "00000000a80425fb",
            "not Docker's capabilities: {status}"
        );
        for ns in ["net", "ipc", "uts", "mnt"] {
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}"))?;
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))?;
            ensure!(
                ours != theirs,
                "the container shares the host's {ns} namespace"
            );
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        ensure!(
            cgroup.contains(&format!("/{NAMESPACE}/{id}")),
            "the worker is not in its cgroup: {cgroup}"
        );
        let inside = |flag: &str, cmd: &[&str]| -> anyhow::Result<String> {
            let out = std::process::Command::new("nsenter")
                .args(["--target", &pid.to_string(), flag])
                .args(cmd)
                .output()?;
            ensure!(
                out.status.success(),
                "nsenter {flag} {cmd:?}: {:?}",
                text(&out)
            );
            Ok(text(&out).0.trim().to_string())
        };
        ensure!(
            inside("--uts", &["hostname"])? == hostname,
            "hostname not set"
        );
        let port_start = inside(
            "--net",
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
        )?;
        ensure!(port_start == "0", "sysctl not applied: {port_start}");
        let args = std::fs::read_to_string(&args_file).context("the prestart hook did not run")?;
        ensure!(
            args.contains("-exec-root=") && args.contains(&docker_id),
            "the hook lost its arguments: {args}"
        );
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_file)?)?;
        ensure!(
            state["id"] == id && state["pid"] == pid,
            "hook state: {state}"
        );
        still_running(env, id)
    })();
    remove(env, id);
    checked
}

/// Whether `/proc/<pid>/mountinfo` lists a mount whose mount point ends
/// with `/<id>/rootfs` (container `id`'s rootfs in its bundle).
fn has_rootfs_mount(pid: &str, id: &str) -> anyhow::Result<bool> {
    let suffix = format!("/{id}/rootfs");
    Ok(std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?
        .lines()
        .any(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|m| m.ends_with(&suffix))
        }))
}

/// The shim keeps its containers' rootfs mounts in a mount namespace of its
/// own (the host's `/` is shared here, as systemd makes it): the host's
/// mount table does not grow with containers. A mount the host makes after
/// the shim started (a tmpfs, as a volume would be) still reaches the
/// shim's next container through a bind mount, both ways. Once the pod is
/// gone, nothing of it is mounted anywhere.
pub fn rootfs_mounts_stay_in_the_shim(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let pod = format!("io.kubernetes.cri.sandbox-id={id}-pod");
    let (first, second) = (format!("{id}-a"), format!("{id}-b"));
    let volume = env
        .containerd
        .dir()
        .join("host")
        .join(format!("{id}-volume"));
    let result = (|| {
        let sleep = image("sleep");
        let worker = run_detached(
            env,
            rt,
            &first,
            &["--annotation", &pod, &sleep, &first, "/sleep.wasm", "600"],
        )?;
        let shim = wasmshim_integration::parent_of(worker)?.to_string();
        ensure!(
            has_rootfs_mount(&shim, &first)?,
            "the shim {shim} does not have {first}'s rootfs mounted"
        );
        ensure!(
            !has_rootfs_mount("self", &first)?,
            "{first}'s rootfs is mounted in the host's mount namespace"
        );
        ensure!(
            std::fs::read_link(format!("/proc/{shim}/ns/mnt"))?
                != std::fs::read_link("/proc/self/ns/mnt")?,
            "the shim shares the host's mount namespace"
        );
        // A volume mounted on the host now, after the shim started.
        std::fs::create_dir_all(&volume)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&volume)
            .status()?;
        ensure!(status.success(), "mount tmpfs on {}", volume.display());
        std::fs::write(volume.join("in.txt"), "content from the host\n")?;
        let mount = format!(
            "type=bind,src={},dst=/data,options=rbind:rw",
            volume.display()
        );
        let out = env.containerd.run(
            Some(rt),
            &[
                "--annotation",
                &pod,
                "--mount",
                &mount,
                &image("files"),
                &second,
                "/files.wasm",
                "/data/in.txt",
                "/data/out.txt",
            ],
        );
        expect_output(&out, &["content from the host", "wrote /data/out.txt"])?;
        let written = std::fs::read_to_string(volume.join("out.txt"))
            .context("out.txt on the host's tmpfs")?;
        ensure!(
            written == "written by wasm\n",
            "the volume holds {written:?}"
        );
        ensure!(
            wasmshim_integration::alive(shim.parse()?)
                && wasmshim_integration::parent_of(worker)?.to_string() == shim,
            "the pod's shim {shim} did not serve its second container"
        );
        Ok(())
    })();
    remove(env, &first);
    remove(env, &second);
    let _ = nix::mount::umount2(&volume, nix::mount::MntFlags::MNT_DETACH);
    result
}
