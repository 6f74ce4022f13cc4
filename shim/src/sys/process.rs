//! [`ProcessIsolation`]: one worker process per container.
//!
//! The shim re-executes its own binary as `<shim> __wasmshim_worker <id>` with
//! the container's stdio on fds 0-2 and a control socket on fd 3, over which
//! it speaks a line protocol (see [`super::worker`]):
//!
//! ```text
//! shim -> worker   {"run": RunSpec, "confine": Confinement} as JSON\n
//!                  (sent once the worker is in its cgroup)
//! worker -> shim   ok\n  |  err <message>\n  |  fail <message>\n
//!                  (confined and module loaded; or a bad module; or an OS failure)
//! shim -> worker   start\n                        (Start; EOF instead ends the worker)
//! worker -> shim   trap <message>\n               (only if the module trapped)
//! worker -> shim   log <LEVEL> <message>\n       (any time: for the shim's log)
//! ```

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;

use super::enclosure::Enclosure;
use super::plan::Plan;
use super::worker::{WorkerRequest, CONTROL_FD, LOG_LEVEL_ENV, WORKER_ARG};
use super::{CgroupStats, Exited, Isolation, Spawned, Starter, StdioPaths};
use crate::engine::RunSpec;
use crate::error::{Error, Result};

/// Runs every container in a worker process started from `exe`.
#[derive(Debug)]
pub struct ProcessIsolation {
    exe: PathBuf,
    /// Cgroup and hooks of every created, not yet deleted, container.
    enclosures: Mutex<HashMap<String, Arc<Enclosure>>>,
}

impl ProcessIsolation {
    /// Workers are started from the running shim binary.
    pub fn current_exe() -> Result<Self> {
        let exe =
            std::env::current_exe().map_err(|e| Error::internal("locating the shim binary", e))?;
        Ok(ProcessIsolation {
            exe,
            enclosures: Mutex::default(),
        })
    }
}

#[async_trait]
impl Isolation for ProcessIsolation {
    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        spec: &RunSpec,
        stdio: &StdioPaths,
    ) -> Result<Spawned> {
        let plan = Plan::load(bundle, id)?;
        plan.log_unsupported(id);
        let files = stdio
            .open()
            .map_err(|e| Error::internal("opening the container's stdio", e))?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::internal("creating the worker's control socket", e))?;
        let theirs_fd = theirs.as_raw_fd();

        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg(WORKER_ARG)
            .arg(id)
            .env_clear()
            .env(LOG_LEVEL_ENV, log::max_level().as_str())
            .stdin(Stdio::from(clone(&files.stdin)?))
            .stdout(Stdio::from(clone(&files.stdout)?))
            .stderr(Stdio::from(clone(&files.stderr)?));
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe functions (dup2, prctl) on descriptors that stay open.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(theirs_fd, CONTROL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The worker dies with the thread that forked it (the shim's runtime thread).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| Error::internal(format!("starting worker {}", self.exe.display()), e))?;
        drop(theirs);
        let pid = child.id().unwrap_or_default();
        // The worker waits for its first line: nothing runs before it is in its cgroup.
        let enclosure = match Enclosure::enter(id, bundle, plan, pid) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                let _ = child.kill().await;
                return Err(e);
            }
        };

        ours.set_nonblocking(true)
            .map_err(|e| Error::internal("control socket", e))?;
        let stream =
            UnixStream::from_std(ours).map_err(|e| Error::internal("control socket", e))?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();

        let request = WorkerRequest {
            run: spec.clone(),
            confine: enclosure.plan().confine.clone(),
        };
        let mut request =
            serde_json::to_string(&request).map_err(|e| Error::internal("encoding RunSpec", e))?;
        request.push('\n');
        // A worker that died early closes the socket: its exit status tells more than EPIPE.
        let _ = write.write_all(request.as_bytes()).await;
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
            Some(line) => Some(match line.strip_prefix("fail ") {
                Some(message) => {
                    Error::internal("confining the worker", anyhow::anyhow!("{message}"))
                }
                None => Error::InvalidArgument(line.strip_prefix("err ").unwrap_or(line).into()),
            }),
            None => {
                let status = child.wait().await.map(exit_status).unwrap_or(255);
                Some(Error::internal(
                    "worker process",
                    anyhow::anyhow!("exited with status {status} before loading the module"),
                ))
            }
        };
        if let Some(e) = failed {
            // Nothing of a failed Create remains: no process, no cgroup.
            let _ = child.kill().await;
            enclosure.delete().await;
            return Err(e);
        }
        self.enclosures().insert(id.to_string(), enclosure.clone());

        let id = id.to_string();
        let watched = enclosure.clone();
        let exit = Box::pin(async move {
            let mut trap = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(message) = line.strip_prefix("trap ") {
                    trap = Some(message.to_string());
                } else if let Some(record) = line.strip_prefix("log ") {
                    relay_log(&id, record);
                }
            }
            let status = match child.wait().await {
                Ok(status) => exit_status(status),
                Err(e) => {
                    log::error!("container {id}: waiting for worker {pid}: {e}");
                    255
                }
            };
            if let Some(message) = trap {
                log::error!("container {id}: module trapped: {message}");
            }
            let oom_killed = watched.oom_killed();
            if oom_killed {
                log::warn!("container {id}: killed by the OOM killer (memory limit)");
            }
            // Closing the shim's copies of the fifos gives their readers end-of-file.
            drop(files);
            Exited { status, oom_killed }
        });
        Ok(Spawned {
            pid,
            starter: Box::new(ProcessStarter {
                control: write,
                enclosure,
            }),
            exit,
        })
    }

    fn signal(&self, pid: u32, signal: u32) -> Result<()> {
        let sig = Signal::try_from(signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        kill(Pid::from_raw(pid as i32), sig)
            .map_err(|e| Error::internal(format!("sending {sig} to process {pid}"), e))
    }

    fn stats(&self, id: &str) -> Result<CgroupStats> {
        self.enclosure(id)?.stats()
    }

    async fn delete(&self, id: &str) {
        let enclosure = self.enclosures().remove(id);
        if let Some(enclosure) = enclosure {
            enclosure.delete().await;
        }
    }
}

impl ProcessIsolation {
    fn enclosures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Enclosure>>> {
        self.enclosures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enclosure(&self, id: &str) -> Result<Arc<Enclosure>> {
        self.enclosures()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }
}

/// Tells a worker to start by writing `start` on its control socket.
struct ProcessStarter {
    control: OwnedWriteHalf,
    enclosure: Arc<Enclosure>,
}

#[async_trait]
impl Starter for ProcessStarter {
    async fn start(mut self: Box<Self>) -> Result<()> {
        self.enclosure.starting().await?;
        self.control.write_all(b"start\n").await.map_err(|e| {
            Error::FailedPrecondition(format!("the container's process is gone: {e}"))
        })?;
        self.enclosure.started().await;
        Ok(())
    }
}

/// Writes a worker's `<LEVEL> <message>` log record to the shim's log.
fn relay_log(id: &str, record: &str) {
    let (level, message) = record.split_once(' ').unwrap_or(("INFO", record));
    let level = level.parse().unwrap_or(log::Level::Info);
    log::log!(level, "container {id}: {message}");
}

/// Exit status as containerd reports it: the code, or 128+n when killed by signal n.
fn exit_status(status: std::process::ExitStatus) -> u32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u32,
        (None, Some(signal)) => 128 + signal as u32,
        (None, None) => 255,
    }
}

fn clone(file: &std::fs::File) -> Result<std::fs::File> {
    file.try_clone()
        .map_err(|e| Error::internal("duplicating a stdio descriptor", e))
}
