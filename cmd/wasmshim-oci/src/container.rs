//! The commands on a WebAssembly container, with runc's semantics: the
//! worker process, its cgroup, hooks and confinement are the shim's own
//! (`wasmshim::sys`); this module keeps them between invocations.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use oci_spec::runtime::Spec;
use wasmshim::oci;
use wasmshim::sys::enclosure::Enclosure;
use wasmshim::sys::pidfd::PidFd;
use wasmshim::sys::plan::Plan;

use crate::console::Console;
use crate::state::{self, Saved, StateDir, Status};

/// crun's annotation for Wasm images: `compat` means the entrypoint is a
/// module; `compat-smart` (like no annotation) looks at the entrypoint file.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";

/// Whether the bundle's container runs as WebAssembly (else runc runs it).
pub fn is_wasm(spec: &Spec, bundle: &Path) -> bool {
    let variant = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(VARIANT_ANNOTATION));
    variant.is_some_and(|v| v == "compat") || oci::runs_wasm(spec, bundle)
}

/// `create`: a worker with the module loaded, confined and in its cgroup,
/// blocked until `start`; its pid in `pid_file`. With `process.terminal`,
/// its stdio is a pty whose master goes to `console_socket`.
pub fn create(
    root: &Path,
    id: &str,
    bundle: &Path,
    spec: &Spec,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
) -> anyhow::Result<()> {
    let rootfs = oci::rootfs_of(spec, bundle)?;
    let run = oci::run_spec(spec, &rootfs)?;
    // Before anything exists: an unreachable socket leaves nothing behind.
    let console = Console::for_spec(spec, console_socket)?;
    let state = StateDir::create(root, id)?;
    let terminal = console.as_ref().map(Console::slave);
    let made = make_worker(&state, id, bundle, &rootfs, spec, &run, terminal);
    let saved = match made {
        Ok(saved) => saved,
        Err(e) => {
            let _ = state.remove();
            return Err(e);
        }
    };
    if let Some(console) = console {
        if let Err(e) = console.send_master() {
            let _ = destroy(state, &saved);
            return Err(e);
        }
    }
    if let Some(pid_file) = pid_file {
        if let Err(e) = write_pid_file(pid_file, saved.pid) {
            let _ = destroy(state, &saved);
            return Err(e);
        }
    }
    Ok(())
}

fn make_worker(
    state: &StateDir,
    id: &str,
    bundle: &Path,
    rootfs: &Path,
    spec: &Spec,
    run: &wasmshim::engine::RunSpec,
    terminal: Option<&OwnedFd>,
) -> anyhow::Result<Saved> {
    let fifo_path = state.start_fifo();
    nix::unistd::mkfifo(
        &fifo_path,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .context("creating the start fifo")?;
    // Read-write, so that the worker's read blocks until `start` writes.
    let fifo: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&fifo_path)
        .context("opening the start fifo")?
        .into();
    let exe = std::env::current_exe().context("locating this binary")?;
    let pid = runtime()?.block_on(wasmshim::sys::process::create_detached(
        &exe, id, bundle, spec, run, &fifo, terminal,
    ))?;
    let Some((_, start_time)) = state::proc_stat(pid) else {
        // It ended (and was reaped) after replying: its cgroup and hooks remain.
        release(id, bundle, pid);
        bail!("container {id}: the worker ended during create");
    };
    let saved = Saved {
        id: id.to_string(),
        pid,
        start_time,
        bundle: bundle.to_path_buf(),
        rootfs: rootfs.to_path_buf(),
        created: state::rfc3339(SystemTime::now()),
        annotations: spec.annotations().clone().unwrap_or_default(),
    };
    if let Err(e) = state.save(&saved) {
        kill_and_release(&saved);
        return Err(e);
    }
    Ok(saved)
}

/// `start`: runs the `startContainer` hooks, lets the worker run its module,
/// then runs the `poststart` hooks.
pub fn start(state: StateDir, id: &str) -> anyhow::Result<()> {
    let saved = state.load()?;
    match status(&state, &saved) {
        Status::Created => {}
        Status::Running => bail!("cannot start an already running container {id}"),
        Status::Paused => bail!("cannot start container {id}: it is paused"),
        Status::Stopped => bail!("cannot start container {id}: it has stopped"),
    }
    let enclosure = enclosure(&saved)?;
    let rt = runtime()?;
    if let Err(e) = rt.block_on(enclosure.starting()) {
        kill_and_release(&saved);
        return Err(e.into());
    }
    let mut fifo = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(state.start_fifo())
        .with_context(|| format!("container {id}: its process is gone"))?;
    fifo.write_all(&[0])
        .with_context(|| format!("container {id}: starting its process"))?;
    std::fs::remove_file(state.start_fifo()).context("removing the start fifo")?;
    rt.block_on(enclosure.started());
    Ok(())
}

/// `state`: the OCI state JSON, with runc's extra fields.
pub fn state_json(state: &StateDir) -> anyhow::Result<serde_json::Value> {
    let saved = state.load()?;
    let status = status(state, &saved);
    let pid = if status == Status::Stopped {
        0
    } else {
        saved.pid
    };
    Ok(serde_json::json!({
        "ociVersion": "1.0.2",
        "id": saved.id,
        "pid": pid,
        "status": status.as_str(),
        "bundle": saved.bundle,
        "rootfs": saved.rootfs,
        "created": saved.created,
        "owner": "",
        "annotations": saved.annotations,
    }))
}

/// `kill`: sends `signal` to the worker (the container's only process, so
/// `--all` is the same).
pub fn kill(state: &StateDir, id: &str, signal: &str) -> anyhow::Result<()> {
    let saved = state.load()?;
    let signal = parse_signal(signal)?;
    let pidfd = open_live(&saved).with_context(|| format!("container {id} not running"))?;
    pidfd
        .send_signal(signal)
        .with_context(|| format!("container {id} not running"))?;
    if signal == libc::SIGKILL {
        // A frozen process cannot die: thaw it, as runc does.
        thaw_if_frozen(&saved);
    }
    Ok(())
}

/// `pause`: freezes the container's cgroup (a created or running container).
pub fn pause(state: &StateDir, id: &str) -> anyhow::Result<()> {
    let saved = state.load()?;
    match status(state, &saved) {
        Status::Created | Status::Running => {}
        Status::Paused => bail!("container {id} is already paused"),
        Status::Stopped => bail!("cannot pause container {id}: it is not running"),
    }
    enclosure(&saved)?
        .freeze(true)
        .with_context(|| format!("pausing container {id}"))
}

/// `resume`: thaws the cgroup of a paused container.
pub fn resume(state: &StateDir, id: &str) -> anyhow::Result<()> {
    let saved = state.load()?;
    if status(state, &saved) != Status::Paused {
        bail!("container {id} is not paused");
    }
    enclosure(&saved)?
        .freeze(false)
        .with_context(|| format!("resuming container {id}"))
}

/// The container's status: its process's ([`StateDir::status`]), or paused
/// while its cgroup's freezer holds a live process. Read each time, never stored.
pub fn status(state: &StateDir, saved: &Saved) -> Status {
    let status = state.status(saved);
    if status != Status::Stopped && enclosure(saved).is_ok_and(|e| e.frozen()) {
        Status::Paused
    } else {
        status
    }
}

/// `delete`: kills a created container (or, with `force`, a running one),
/// removes its cgroup, runs its `poststop` hooks and removes its state.
pub fn delete(state: StateDir, id: &str, force: bool) -> anyhow::Result<()> {
    let saved = state.load()?;
    let status = status(&state, &saved);
    if matches!(status, Status::Running | Status::Paused) && !force {
        bail!(
            "cannot delete container {id} that is not stopped: {} (use --force)",
            status.as_str()
        );
    }
    destroy(state, &saved)
}

/// `ps`: the container's processes (its worker, while it lives).
pub fn ps(state: &StateDir, format: &str) -> anyhow::Result<String> {
    let saved = state.load()?;
    let pids: Vec<u32> = if status(state, &saved) == Status::Stopped {
        Vec::new()
    } else {
        vec![saved.pid]
    };
    Ok(match format {
        "json" => serde_json::to_string(&pids)?,
        _ => {
            let mut table = String::from("PID\n");
            for pid in pids {
                table.push_str(&format!("{pid}\n"));
            }
            table
        }
    })
}

/// Kills the worker if it lives, releases its cgroup and hooks, removes the state.
fn destroy(state: StateDir, saved: &Saved) -> anyhow::Result<()> {
    kill_and_release(saved);
    state.remove()
}

/// SIGKILLs the worker and waits until it has ended, then removes its cgroup
/// and runs the `poststop` hooks. Failures are logged: the caller goes on
/// removing what it can.
fn kill_and_release(saved: &Saved) {
    if let Some(pidfd) = open_live(saved) {
        let _ = pidfd.send_signal(libc::SIGKILL);
        thaw_if_frozen(saved);
        wait_ended(saved, Duration::from_secs(10));
    }
    release(&saved.id, &saved.bundle, saved.pid);
}

/// Thaws the container's cgroup if it is frozen, so that a SIGKILL sent to
/// its process takes effect. Failures are logged.
fn thaw_if_frozen(saved: &Saved) {
    match enclosure(saved) {
        Ok(enclosure) if enclosure.frozen() => {
            if let Err(e) = enclosure.freeze(false) {
                log::error!("container {}: {e:#}", saved.id);
            }
        }
        Ok(_) => {}
        Err(e) => log::error!("container {}: {e:#}", saved.id),
    }
}

/// Removes the cgroup of container `id` (worker `pid`, which must be gone)
/// and runs its `poststop` hooks. Failures are logged.
fn release(id: &str, bundle: &Path, pid: u32) {
    match reopen(id, bundle, pid) {
        Ok(enclosure) => match runtime() {
            Ok(rt) => {
                // A cgroup left behind is logged by `delete`.
                rt.block_on(enclosure.delete());
            }
            Err(e) => log::error!("container {id}: {e:#}"),
        },
        Err(e) => log::error!("container {id}: {e:#}"),
    }
}

/// The enclosure (cgroup, hooks) of the container, found again from its bundle.
fn enclosure(saved: &Saved) -> anyhow::Result<Enclosure> {
    reopen(&saved.id, &saved.bundle, saved.pid)
}

fn reopen(id: &str, bundle: &Path, pid: u32) -> anyhow::Result<Enclosure> {
    let spec = oci::load_spec(bundle)?;
    let plan = Plan::from_spec(&spec, id)?;
    Ok(Enclosure::reopen(id, bundle, plan, pid)?)
}

/// A pidfd of the worker if it still is the process `create` started.
fn open_live(saved: &Saved) -> Option<PidFd> {
    let pidfd = PidFd::open(saved.pid).ok()?;
    // Checked after opening: the pidfd now pins this very process.
    state::alive(saved.pid, saved.start_time).then_some(pidfd)
}

fn wait_ended(saved: &Saved, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while state::alive(saved.pid, saved.start_time) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A signal by number (`9`) or name (`KILL`, `SIGKILL`).
pub fn parse_signal(signal: &str) -> anyhow::Result<i32> {
    if let Ok(n) = signal.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| anyhow::anyhow!("invalid signal {signal:?}"));
    }
    let name = signal.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| anyhow::anyhow!("invalid signal {signal:?}"))
}

fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&tmp, pid.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("9").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("term").unwrap(), libc::SIGTERM);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
