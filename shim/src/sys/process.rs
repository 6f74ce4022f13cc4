//! [`ProcessIsolation`]: one worker process per container.
//!
//! The shim re-executes its own binary as `<shim> __wasmshim_worker <id>` with
//! the container's stdio on fds 0-2 and a control socket on fd 3, over which
//! it speaks a line protocol (see [`super::worker`]):
//!
//! ```text
//! shim -> worker   {"run": RunSpec, "confine": Confinement} as JSON\n
//!                  (sent once the worker is in its cgroup)
//! worker -> shim   ok\n  |  err <kind> <message>\n   (confined and module loaded,
//!                                                     or why not; kind: invalid | internal)
//! shim -> worker   start\n                        (Start; EOF instead ends the worker)
//! worker -> shim   trap <message>\n               (only if the module trapped)
//! worker -> shim   log <LEVEL> <message>\n       (any time: for the shim's log)
//! ```

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::enclosure::Enclosure;
use super::pidfd::PidFd;
use super::plan::Plan;
use super::stdio::StdioFiles;
use super::template::WorkerFds;
use super::worker::{WorkerRequest, CONTROL_FD, LOG_LEVEL_ENV, START_FD, WORKER_ARG};
use super::{CgroupStats, ContainerProcess, Isolation, ProcessRequest, Spawned};
use crate::engine::RunSpec;
use crate::error::{Error, Result};
use crate::exit;
use crate::oci::Workload;

/// Runs every container in a worker process started from `exe`.
#[derive(Debug, Clone)]
pub struct ProcessIsolation {
    exe: PathBuf,
}

impl ProcessIsolation {
    /// Workers are started from the binary that runs the engine: this shim
    /// binary, or the engine binary beside a front binary (see [`crate::front`]).
    pub fn worker_binary() -> Result<Self> {
        let exe = crate::front::worker_binary()
            .map_err(|e| Error::internal("locating the shim binary", e))?;
        Ok(ProcessIsolation { exe })
    }
}

#[async_trait]
impl Isolation for ProcessIsolation {
    async fn release_orphan(
        &self,
        id: &str,
        bundle: &std::path::Path,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<()> {
        // The worker died with its shim (PR_SET_PDEATHSIG); its enclosure is left.
        super::enclosure::release_orphan(id, bundle, spec).await
    }

    async fn create(&self, request: &ProcessRequest<'_>) -> Result<Spawned> {
        let id = request.id;
        let Workload::Wasm(run) = request.workload else {
            return Err(Error::InvalidArgument(format!(
                "container {id}: its entrypoint is not a WebAssembly module"
            )));
        };
        let plan = Plan::from_spec(request.spec, id)?;
        plan.log_unsupported(id);
        let files = request
            .stdio
            .open()
            .map_err(|e| Error::internal("opening the container's stdio", e))?;
        let Loaded {
            mut child,
            pid,
            pidfd,
            enclosure,
            mut lines,
            write,
        } = spawn_loaded(
            &self.exe,
            id,
            request.bundle,
            plan,
            run,
            Attachment::Shim(&files),
        )
        .await?;

        let id = id.to_string();
        let exit = Box::pin(async move {
            let mut trap = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(message) = line.strip_prefix("trap ") {
                    trap = Some(message.to_string());
                } else if let Some(record) = line.strip_prefix("log ") {
                    relay_log(&id, record);
                }
            }
            let status = child.wait().await;
            if let Some(message) = trap {
                log::error!("container {id}: module trapped: {message}");
            }
            // Closing the shim's copies of the fifos gives their readers end-of-file.
            drop(files);
            status
        });
        Ok(Spawned {
            process: Box::new(WorkerProcess {
                pid,
                pidfd,
                control: Mutex::new(Some(write)),
                enclosure,
            }),
            exit,
        })
    }
}

/// How a worker hangs on to the process that spawned it.
enum Attachment<'a> {
    /// The shim's worker: the container's fifos as stdio; it dies with the shim.
    Shim(&'a StdioFiles),
    /// The OCI runtime CLI's worker: it outlives `create` and waits for
    /// `start` on `start_fifo` (its fd [`START_FD`]).
    Detached {
        /// Read-write fifo: one byte in it starts the module.
        start_fifo: &'a OwnedFd,
        /// The slave of the container's pty (`process.terminal`): the
        /// worker's stdio and controlling terminal. None: the worker
        /// inherits the CLI's stdio.
        terminal: Option<&'a OwnedFd>,
    },
}

/// A worker in its cgroup, confined, with its module loaded and Create's
/// hooks run: waiting for `start` (or `detach`) on its control socket.
struct Loaded {
    child: WorkerChild,
    pid: u32,
    pidfd: PidFd,
    enclosure: Arc<Enclosure>,
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

/// The first half of Create, shared by the shim and the OCI CLI: spawns a
/// worker from `exe`, puts it in its cgroup, sends it its request and waits
/// for `ok`, then runs Create's hooks. On any failure nothing remains: no
/// process, no cgroup.
async fn spawn_loaded(
    exe: &Path,
    id: &str,
    bundle: &Path,
    plan: Plan,
    run: &RunSpec,
    attachment: Attachment<'_>,
) -> Result<Loaded> {
    // Until the worker is in its cgroup (see attach_lock.rs).
    let warmer = super::attach_lock::AttachLockWarmer::start();
    let (ours, pair_end) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Error::internal("creating the worker's control socket", e))?;
    // Above the fds the child's pre_exec dup2s onto, so that none is
    // overwritten. The original is closed at once: no copy of the worker's end
    // may stay here, or a worker that dies before replying would never give
    // the reply loop below its end-of-file.
    let theirs = above_fixed_fds(&pair_end)?;
    drop(pair_end);
    let (start_fd, terminal) = match attachment {
        Attachment::Detached {
            start_fifo,
            terminal,
        } => (Some(above_fixed_fds(start_fifo)?), terminal),
        Attachment::Shim(_) => (None, None),
    };
    let forked = match (&attachment, super::template::installed()) {
        (Attachment::Shim(files), Some(template)) => {
            let fds = WorkerFds {
                stdio: [
                    files.stdin.as_fd(),
                    files.stdout.as_fd(),
                    files.stderr.as_fd(),
                ],
                control: theirs.as_fd(),
            };
            match template.fork_worker(id, &fds).await {
                Ok(pid) => Some(pid),
                Err(e) => {
                    log::warn!(
                        "container {id}: no worker from the template process ({e}); \
                         starting the worker from the binary"
                    );
                    None
                }
            }
        }
        _ => None,
    };
    let (mut child, pid) = match forked {
        // The worker is our unreaped child (see template.rs): its pid is ours.
        Some(pid) => match PidFd::open(pid) {
            Ok(fd) => (WorkerChild::Forked(fd), pid),
            Err(e) => {
                return Err(Error::internal(
                    format!("opening a pidfd for worker {pid}"),
                    e,
                ))
            }
        },
        None => {
            let child = exec_worker(
                exe,
                id,
                &attachment,
                terminal,
                theirs.as_raw_fd(),
                start_fd.as_ref(),
            )?;
            let pid = child.id().unwrap_or_default();
            (WorkerChild::Exec(child), pid)
        }
    };
    drop(theirs);
    drop(start_fd);
    // The child is not reaped before anyone waits for it, so `pid` is still ours.
    let pidfd = match PidFd::open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            child.kill().await;
            return Err(Error::internal(
                format!("opening a pidfd for worker {pid}"),
                e,
            ));
        }
    };
    // The worker waits for its first line: nothing runs before it is in its cgroup.
    let enclosure = match Enclosure::enter(id, bundle, plan, pid) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            child.kill().await;
            return Err(e);
        }
    };
    drop(warmer);

    ours.set_nonblocking(true)
        .map_err(|e| Error::internal("control socket", e))?;
    let stream = UnixStream::from_std(ours).map_err(|e| Error::internal("control socket", e))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();

    let worker_request = WorkerRequest {
        run: run.clone(),
        confine: enclosure.plan().confine.clone(),
    };
    let mut line = serde_json::to_string(&worker_request)
        .map_err(|e| Error::internal("encoding RunSpec", e))?;
    line.push('\n');
    // A worker that died early closes the socket: its exit status tells more than EPIPE.
    let _ = write.write_all(line.as_bytes()).await;
    let reply = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match line.strip_prefix("log ") {
                Some(record) => relay_log(id, record),
                None => break Some(line),
            },
            _ => break None,
        }
    };
    let failed = match reply.as_deref() {
        Some("ok") => enclosure.created().await.err(),
        Some(line) => Some(worker_error(line)),
        None => {
            let status = child.wait().await;
            Some(Error::internal(
                "worker process",
                anyhow::anyhow!(died_loading(status, &enclosure)),
            ))
        }
    };
    if let Some(e) = failed {
        child.kill().await;
        enclosure.delete().await;
        return Err(e);
    }
    Ok(Loaded {
        child,
        pid,
        pidfd,
        enclosure,
        lines,
        write,
    })
}

/// Starts a worker by exec'ing `exe` (the OCI CLI's workers, and the shim's
/// when it has no template process), with `control` as its fd 3 and, for a
/// detached worker, `start_fd` as its fd 4.
fn exec_worker(
    exe: &Path,
    id: &str,
    attachment: &Attachment<'_>,
    terminal: Option<&OwnedFd>,
    control: std::os::fd::RawFd,
    start_fd: Option<&OwnedFd>,
) -> Result<tokio::process::Child> {
    let controlling_terminal = terminal.is_some();
    let start_raw = start_fd.map(|fd| fd.as_raw_fd());
    let mut command = tokio::process::Command::new(exe);
    command
        .arg(WORKER_ARG)
        .arg(id)
        .env_clear()
        .env(LOG_LEVEL_ENV, log::max_level().as_str())
        .envs(
            crate::engine::cache::ENV_VARS
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        );
    if let Attachment::Shim(files) = attachment {
        command
            .stdin(Stdio::from(clone(&files.stdin)?))
            .stdout(Stdio::from(clone(&files.stdout)?))
            .stderr(Stdio::from(clone(&files.stderr)?));
    }
    if let Some(slave) = terminal {
        let dup = || {
            slave
                .try_clone()
                .map_err(|e| Error::internal("duplicating the terminal's descriptor", e))
        };
        command
            .stdin(Stdio::from(dup()?))
            .stdout(Stdio::from(dup()?))
            .stderr(Stdio::from(dup()?));
    }
    // SAFETY: the closure runs in the forked child before exec (after the
    // stdio redirection) and only makes async-signal-safe system calls
    // (dup2, prctl, setsid, ioctl) on descriptors that stay open.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::dup2(control, CONTROL_FD)?;
            match start_raw {
                Some(fifo) => {
                    nix::unistd::dup2(fifo, START_FD)?;
                }
                // The worker dies with the thread that forked it (the shim's runtime thread).
                None => nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?,
            }
            if controlling_terminal {
                take_stdin_as_controlling_terminal()?;
            }
            Ok(())
        });
    }
    command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && crate::front::is_engine_binary(exe) {
            let said = crate::front::missing_engine_binary(exe, &e);
            return Error::internal("starting the worker", anyhow::anyhow!(said));
        }
        Error::internal(format!("starting worker {}", exe.display()), e)
    })
}

/// A worker process as the process that created it holds it.
enum WorkerChild {
    /// Exec'd by this process; tokio reaps it.
    Exec(tokio::process::Child),
    /// Forked by the template and reparented to this process; reaped through its pidfd.
    Forked(PidFd),
}

impl WorkerChild {
    /// Waits for the worker to end: its exit status.
    async fn wait(&mut self) -> u32 {
        match self {
            WorkerChild::Exec(child) => match child.wait().await {
                Ok(status) => exit::from_wait_status(status),
                Err(e) => {
                    log::error!("waiting for a worker: {e}");
                    exit::UNKNOWN
                }
            },
            WorkerChild::Forked(pidfd) => pidfd.wait().await,
        }
    }

    /// Kills the worker and reaps it.
    async fn kill(&mut self) {
        match self {
            WorkerChild::Exec(child) => {
                let _ = child.kill().await;
            }
            WorkerChild::Forked(pidfd) => {
                // ESRCH: already reaped, nothing to wait for.
                if pidfd.send_signal(libc::SIGKILL).is_ok() {
                    pidfd.wait().await;
                }
            }
        }
    }
}

/// Why a worker with exit `status` died before it replied: the OOM killer
/// at the container's memory limit (the cgroup's `oom_kill` counter rose),
/// or only the status.
fn died_loading(status: u32, enclosure: &Enclosure) -> String {
    if !enclosure.oom_killed() {
        return format!("exited with status {status} before loading the module");
    }
    let limit = enclosure
        .plan()
        .cgroup
        .resources
        .memory()
        .as_ref()
        .and_then(|m| m.limit());
    match limit {
        Some(bytes) if bytes > 0 => format!(
            "killed by the OOM killer at the container's memory limit of {} while \
             loading the module (exit status {status}); raise the limit or use a smaller module",
            human_bytes(bytes as u64)
        ),
        _ => format!("killed by the OOM killer while loading the module (exit status {status})"),
    }
}

/// `bytes` as `256 MiB`, or exact bytes when it is not a whole number of KiB.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| bytes.is_multiple_of(*unit))
        .map(|(unit, name)| format!("{} {name}", bytes / unit))
        .unwrap_or_else(|| format!("{bytes} bytes"))
}

/// Create for the OCI runtime CLI: a worker for container `id` of `bundle`,
/// loaded and confined as in the shim, that then waits for one byte on
/// `start_fifo` (opened read-write by the caller, who writes it at `start`).
/// Its stdio is this process's, or with `terminal` (a pty's slave) that
/// terminal, which also becomes its controlling terminal in a new session.
/// Returns the worker's pid; the worker outlives this process, whose parent
/// (a subreaper) reaps it.
pub async fn create_detached(
    exe: &Path,
    id: &str,
    bundle: &Path,
    spec: &oci_spec::runtime::Spec,
    run: &RunSpec,
    start_fifo: &OwnedFd,
    terminal: Option<&OwnedFd>,
) -> Result<u32> {
    let plan = Plan::from_spec(spec, id)?;
    plan.log_unsupported(id);
    let attachment = Attachment::Detached {
        start_fifo,
        terminal,
    };
    let mut loaded = spawn_loaded(exe, id, bundle, plan, run, attachment).await?;
    if let Err(e) = loaded.write.write_all(b"detach\n").await {
        loaded.child.kill().await;
        loaded.enclosure.delete().await;
        return Err(Error::internal("detaching the worker", e));
    }
    Ok(loaded.pid)
}

/// In a forked child whose stdin is a pty's slave: starts a new session
/// and makes that terminal its controlling terminal, as runc's init does.
/// Only async-signal-safe calls.
fn take_stdin_as_controlling_terminal() -> std::io::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal the
    // terminal from another session); no memory is passed to the kernel.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A close-on-exec duplicate of `fd` numbered above [`START_FD`].
fn above_fixed_fds(fd: &impl AsFd) -> Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(
        fd.as_fd().as_raw_fd(),
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(START_FD + 1),
    )
    .map_err(|e| Error::internal("duplicating a worker descriptor", e))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The shim's handle on one worker: its pidfd and the control socket's writing half.
struct WorkerProcess {
    pid: u32,
    pidfd: PidFd,
    control: Mutex<Option<OwnedWriteHalf>>,
    /// The worker's cgroup and hooks.
    enclosure: Arc<Enclosure>,
}

#[async_trait]
impl ContainerProcess for WorkerProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn start(&self) -> Result<()> {
        let control = self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut control) = control else {
            return Err(Error::FailedPrecondition(
                "the container's process was already started".into(),
            ));
        };
        // A failing startContainer hook drops the socket: the worker then exits.
        self.enclosure.starting().await?;
        let result = control.write_all(b"start\n").await;
        // Keep the socket open: closing it before the worker read `start` would end it.
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(control);
        result.map_err(|e| {
            Error::FailedPrecondition(format!("the container's process is gone: {e}"))
        })?;
        self.enclosure.started().await;
        Ok(())
    }

    fn oom_killed(&self) -> bool {
        self.enclosure.oom_killed()
    }

    fn stats(&self) -> Result<CgroupStats> {
        self.enclosure.stats()
    }

    async fn release(&self) -> bool {
        self.enclosure.delete().await
    }

    fn signal(&self, signal: u32) -> Result<()> {
        self.pidfd.signal(self.pid, signal)
    }
}

/// The error of a worker's `err <kind> <message>` reply.
fn worker_error(line: &str) -> Error {
    let rest = line.strip_prefix("err ").unwrap_or(line);
    match rest.split_once(' ') {
        Some(("invalid", message)) => Error::InvalidArgument(message.to_string()),
        Some(("internal", message)) => {
            Error::internal("worker process", anyhow::anyhow!(message.to_string()))
        }
        _ => Error::internal(
            "worker process",
            anyhow::anyhow!("unexpected reply {line:?}"),
        ),
    }
}

/// Writes a worker's `<LEVEL> <message>` log record to the shim's log.
fn relay_log(id: &str, record: &str) {
    let (level, message) = record.split_once(' ').unwrap_or(("INFO", record));
    let level = level.parse().unwrap_or(log::Level::Info);
    log::log!(level, "container {id}: {message}");
}

fn clone(file: &std::fs::File) -> Result<std::fs::File> {
    file.try_clone()
        .map_err(|e| Error::internal("duplicating a stdio descriptor", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that exits before replying (here `/bin/true` in its place)
    /// fails Create with its status, and leaves no cgroup; it never hangs.
    #[tokio::test]
    async fn a_worker_dead_before_replying_fails_create_without_hanging() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let id = format!("wasmshim-unit-early-{}", std::process::id());
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"cgroupsPath": format!("/wasmshim-unit/{id}")}
        }))
        .unwrap();
        let plan = Plan::from_spec(&spec, &id).unwrap();
        let run = RunSpec {
            module: "/nonexistent.wasm".into(),
            module_name: "/nonexistent.wasm".into(),
            entry: "_start".into(),
            args: vec![],
            env: vec![],
            preopens: vec![],
        };
        let fifo: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let bundle = std::env::temp_dir();
        let spawned = spawn_loaded(
            Path::new("/bin/true"),
            &id,
            &bundle,
            plan,
            &run,
            Attachment::Detached {
                start_fifo: &fifo,
                terminal: None,
            },
        );
        let result = tokio::time::timeout(std::time::Duration::from_secs(20), spawned)
            .await
            .expect("Create hung on a worker that had died");
        let err = result.err().expect("Create failed");
        assert!(
            err.message().contains("before loading the module"),
            "{}",
            err.message()
        );
        let memory = Path::new("/sys/fs/cgroup/memory/wasmshim-unit").join(&id);
        assert!(!memory.exists(), "{} left", memory.display());
        let _ = std::fs::remove_dir(memory.parent().unwrap());
    }

    #[test]
    fn memory_limits_read_as_people_write_them() {
        assert_eq!(human_bytes(256 << 20), "256 MiB");
        assert_eq!(human_bytes(2 << 30), "2 GiB");
        assert_eq!(human_bytes(1536 << 10), "1536 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }

    #[test]
    fn worker_errors_keep_their_class() {
        let err = worker_error("err invalid /m.wasm has no exported function 'x'");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert_eq!(err.message(), "/m.wasm has no exported function 'x'");
        let err = worker_error("err internal cannot read /m.wasm: EIO");
        assert!(matches!(err, Error::Internal { .. }), "{err:?}");
        assert_eq!(err.message(), "worker process: cannot read /m.wasm: EIO");
    }
}
