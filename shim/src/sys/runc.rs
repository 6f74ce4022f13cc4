//! [`RuncIsolation`]: Linux containers (a pod's `pause`, sidecars, any
//! entrypoint that is not a Wasm module) run by `runc`, the runtime
//! `io.containerd.runc.v2` runs them with, driven through containerd's `runc`
//! crate.
//!
//! The shim runs `runc create` with the container's stdio fifos as runc's
//! stdio (the container's process inherits them), reads the init pid from the
//! pid file and, as the child subreaper it is (containerd-shim sets it), waits
//! for that process itself once runc has exited. Start is `runc start`;
//! signals go through a pidfd; statistics come from the cgroup runc made
//! (`linux.cgroupsPath`, read with the same code as for Wasm containers);
//! Delete is `runc delete --force`, which runs the `poststop` hooks and
//! removes the cgroup. runc's own messages go to `<bundle>/log.json`; an error
//! carries runc's last one.
//!
//! Pause and resume are `runc pause`/`runc resume`. An exec (`ctr task exec`)
//! is prepared at Exec and run at its Start with `runc exec --detach
//! --pid-file`, its stdio being the exec's fifos; the shim waits for the
//! exec'd process as it waits for the init.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use runc::options::{CreateOpts, DeleteOpts, ExecOpts, GlobalOpts};
use tokio::sync::oneshot;

use super::cgroup::Cgroup;
use super::pidfd::PidFd;
use super::plan::CgroupPlan;
use super::stdio::{StdioFiles, StdioPaths};
use super::{CgroupStats, ContainerProcess, ExecRequest, Isolation, ProcessRequest, Spawned};
use crate::error::{Error, Result};
use crate::exit;
use crate::oci::Workload;

/// Where runc keeps the state of our Linux containers, per containerd namespace.
pub const STATE_ROOT: &str = "/run/containerd/wasmshim-runc";

/// Runs Linux containers with the `runc` binary found on the PATH.
#[derive(Debug, Clone)]
pub struct RuncIsolation {
    root: PathBuf,
}

impl RuncIsolation {
    /// Keeps runc's state for containerd namespace `namespace` under [`STATE_ROOT`].
    pub fn new(namespace: &str) -> Self {
        RuncIsolation {
            root: state_dir(namespace),
        }
    }
}

/// runc's state directory for containerd namespace `namespace`.
pub fn state_dir(namespace: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(namespace)
}

/// A runc client for the containers of `root` that logs (JSON) into `bundle`.
fn client(root: &Path, bundle: &Path) -> Result<runc::Runc> {
    GlobalOpts::new()
        .root(root)
        .log(bundle.join("log.json"))
        .log_json()
        .build()
        .map_err(|e| Error::internal("finding the runc binary", anyhow::anyhow!("{e}")))
}

#[async_trait]
impl Isolation for RuncIsolation {
    async fn release_orphan(
        &self,
        id: &str,
        bundle: &Path,
        _spec: &oci_spec::runtime::Spec,
    ) -> Result<()> {
        // Kills what is left of the container, runs its poststop hooks, removes its cgroup.
        client(&self.root, bundle)?
            .delete(id, Some(&DeleteOpts::new().force(true)))
            .await
            .map_err(|e| runc_error("delete", bundle, e))
    }

    async fn create(&self, request: &ProcessRequest<'_>) -> Result<Spawned> {
        let id = request.id;
        if !matches!(request.workload, Workload::Linux) {
            return Err(Error::InvalidArgument(format!(
                "container {id}: runc runs Linux programs, not WebAssembly modules"
            )));
        }
        let cgroup_plan = CgroupPlan::from_spec(request.spec, id)?;
        let client = client(&self.root, request.bundle)?;
        let files = request
            .stdio
            .open()
            .map_err(|e| Error::internal("opening the container's stdio", e))?;
        let pid_file = request.bundle.join("init.pid");
        let opts = CreateOpts::new()
            .pid_file(&pid_file)
            .io(Arc::new(FifoIo(Mutex::new(Some(files)))));
        if let Err(e) = client.create(id, request.bundle, Some(&opts)).await {
            let error = runc_error("create", request.bundle, e);
            // runc leaves a half-made container (and its cgroup) when create fails late.
            let _ = client
                .delete(id, Some(&DeleteOpts::new().force(true)))
                .await;
            return Err(error);
        }
        let created = read_pid(&pid_file).and_then(|pid| {
            // runc has exited: its init is now our (the subreaper's) unreaped child.
            let pidfd = PidFd::open(pid)
                .map_err(|e| Error::internal(format!("opening a pidfd for process {pid}"), e))?;
            // The cgroup runc made, for statistics and the OOM count.
            let cgroup = Cgroup::open(&cgroup_plan, id)?;
            Ok((pid, pidfd, cgroup))
        });
        let (pid, pidfd, cgroup) = match created {
            Ok(created) => created,
            Err(e) => {
                let _ = client
                    .delete(id, Some(&DeleteOpts::new().force(true)))
                    .await;
                return Err(e);
            }
        };
        let exit = Box::pin(async move {
            tokio::task::spawn_blocking(move || wait_for(pid))
                .await
                .unwrap_or(exit::UNKNOWN)
        });
        Ok(Spawned {
            process: Box::new(RuncProcess {
                id: id.to_string(),
                bundle: request.bundle.to_path_buf(),
                pid,
                pidfd,
                client,
                cgroup,
            }),
            exit,
        })
    }
}

/// Hands the container's stdio to `runc create`, which the container inherits.
#[derive(Debug)]
struct FifoIo(Mutex<Option<StdioFiles>>);

#[async_trait]
impl runc::Io for FifoIo {
    async fn set(&self, cmd: &mut runc::Command) -> std::io::Result<()> {
        let files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let files = files.as_ref().ok_or_else(|| {
            std::io::Error::other("the container's stdio was already handed over")
        })?;
        cmd.stdin(files.stdin.try_clone()?)
            .stdout(files.stdout.try_clone()?)
            .stderr(files.stderr.try_clone()?);
        Ok(())
    }

    async fn close_after_start(&self) {
        // The container holds its own copies now.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Waits for process `pid` (a child of this process) and returns its exit status.
fn wait_for(pid: u32) -> u32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid as i32), None) {
            Ok(WaitStatus::Exited(_, code)) => return code as u32,
            Ok(WaitStatus::Signaled(_, signal, _)) => return exit::killed_by(signal as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("waiting for process {pid}: {e}");
                return exit::UNKNOWN;
            }
        }
    }
}

/// The pid runc wrote into `pid_file`.
fn read_pid(pid_file: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| Error::internal(format!("reading {}", pid_file.display()), e))?;
    text.trim().parse().map_err(|_| {
        Error::internal(
            format!("reading {}", pid_file.display()),
            anyhow::anyhow!("{text:?} is not a pid"),
        )
    })
}

/// The error of a failed `runc <command>`, with runc's last message from its log.
fn runc_error(command: &str, bundle: &Path, error: runc::error::Error) -> Error {
    let logged = std::fs::read_to_string(bundle.join("log.json"))
        .ok()
        .and_then(|log| last_error(&log));
    match logged {
        // runc's messages usually say which command failed; add it when not.
        Some(message) if message.starts_with("runc ") => Error::InvalidArgument(message),
        Some(message) => Error::InvalidArgument(format!("runc {command} failed: {message}")),
        // runc's error is not Sync (it may hold a boxed error): keep its text.
        None => Error::internal(format!("runc {command}"), anyhow::anyhow!("{error}")),
    }
}

/// The message of the last `"level":"error"` line of runc's JSON log.
fn last_error(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let record: serde_json::Value = serde_json::from_str(line).ok()?;
        (record["level"] == "error").then(|| record["msg"].as_str().map(str::to_string))?
    })
}

/// The shim's handle on one runc container.
struct RuncProcess {
    id: String,
    bundle: PathBuf,
    pid: u32,
    pidfd: PidFd,
    client: runc::Runc,
    cgroup: Cgroup,
}

#[async_trait]
impl ContainerProcess for RuncProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn start(&self) -> Result<()> {
        self.client
            .start(&self.id)
            .await
            .map_err(|e| runc_error("start", &self.bundle, e))
    }

    fn signal(&self, signal: u32) -> Result<()> {
        self.pidfd.signal(self.pid, signal)
    }

    fn oom_killed(&self) -> bool {
        self.cgroup.oom_kills() > 0
    }

    fn stats(&self) -> Result<CgroupStats> {
        self.cgroup.stats()
    }

    async fn release(&self) -> bool {
        match self
            .client
            .delete(&self.id, Some(&DeleteOpts::new().force(true)))
            .await
        {
            Ok(_) => true,
            Err(e) => {
                let error = runc_error("delete", &self.bundle, e);
                log::error!("container {}: {}", self.id, error.message());
                false
            }
        }
    }

    async fn pause(&self) -> Result<()> {
        self.client
            .pause(&self.id)
            .await
            .map_err(|e| runc_error("pause", &self.bundle, e))
    }

    async fn resume(&self) -> Result<()> {
        self.client
            .resume(&self.id)
            .await
            .map_err(|e| runc_error("resume", &self.bundle, e))
    }

    async fn exec(&self, request: &ExecRequest<'_>) -> Result<Spawned> {
        let (started, exited) = oneshot::channel();
        let exec_id = request.exec_id.to_string();
        let exit = Box::pin(async move {
            match exited.await {
                Ok(Started::Pid(pid)) => tokio::task::spawn_blocking(move || wait_for(pid))
                    .await
                    .unwrap_or(exit::UNKNOWN),
                Ok(Started::Never(status)) => status,
                Err(_) => exit::UNKNOWN,
            }
        });
        Ok(Spawned {
            process: Box::new(RuncExec {
                container_id: self.id.clone(),
                exec_id,
                bundle: self.bundle.clone(),
                client: self.client.clone(),
                process: request.process.clone(),
                stdio: request.stdio.clone(),
                started: Mutex::new(Some(started)),
                running: std::sync::OnceLock::new(),
            }),
            exit,
        })
    }
}

/// How an exec's process began, for the future that waits for its exit.
enum Started {
    /// `runc exec` started it: wait for this pid.
    Pid(u32),
    /// It was ended (signalled) before it was started: this is its status.
    Never(u32),
}

/// One exec (`ctr task exec`) of a runc container: prepared at Exec, run at Start.
struct RuncExec {
    container_id: String,
    exec_id: String,
    bundle: PathBuf,
    client: runc::Runc,
    process: oci_spec::runtime::Process,
    stdio: StdioPaths,
    /// Tells the exit future how the process began; taken by Start (or a signal before it).
    started: Mutex<Option<oneshot::Sender<Started>>>,
    /// The running process: its pid and pidfd, once started.
    running: std::sync::OnceLock<(u32, PidFd)>,
}

impl RuncExec {
    /// `runc exec --detach`: the process runs with the exec's fifos as stdio.
    async fn run(&self) -> Result<u32> {
        // runc's client speaks the runtime-spec version it was built with: the
        // same JSON, another type.
        let process = serde_json::to_value(&self.process)
            .and_then(serde_json::from_value)
            .map_err(|e| Error::internal("converting the exec's process spec", e))?;
        let files = self
            .stdio
            .open()
            .map_err(|e| Error::internal("opening the exec's stdio", e))?;
        let pid_file = self.bundle.join(format!("exec-{}.pid", self.exec_id));
        let opts = ExecOpts::new()
            .pid_file(&pid_file)
            .detach(true)
            .io(Arc::new(FifoIo(Mutex::new(Some(files)))));
        self.client
            .exec(&self.container_id, &process, Some(&opts))
            .await
            .map_err(|e| runc_error("exec", &self.bundle, e))?;
        let pid = read_pid(&pid_file);
        let _ = std::fs::remove_file(&pid_file);
        pid
    }
}

#[async_trait]
impl ContainerProcess for RuncExec {
    fn pid(&self) -> u32 {
        self.running.get().map(|(pid, _)| *pid).unwrap_or_default()
    }

    async fn start(&self) -> Result<()> {
        let sender = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(sender) = sender else {
            return Err(Error::FailedPrecondition(format!(
                "exec {} was already started or ended",
                self.exec_id
            )));
        };
        let pidfd = self.run().await.and_then(|pid| {
            // Exited or not, the process is our unreaped child: the pidfd is its.
            let pidfd = PidFd::open(pid)
                .map_err(|e| Error::internal(format!("opening a pidfd for process {pid}"), e))?;
            Ok((pid, pidfd))
        });
        match pidfd {
            Ok((pid, pidfd)) => {
                let _ = self.running.set((pid, pidfd));
                let _ = sender.send(Started::Pid(pid));
                Ok(())
            }
            Err(e) => {
                // Not started: a later Start may try again, a Delete ends it.
                *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
                Err(e)
            }
        }
    }

    fn signal(&self, signal: u32) -> Result<()> {
        if let Some((pid, pidfd)) = self.running.get() {
            return pidfd.signal(*pid, signal);
        }
        let sender = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match sender {
            // Never started: the signal ends it.
            Some(sender) => {
                let _ = sender.send(Started::Never(exit::killed_by(signal as i32)));
                Ok(())
            }
            None => Err(Error::FailedPrecondition(format!(
                "exec {} is being started",
                self.exec_id
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_of_runcs_log_is_the_message() {
        let log = concat!(
            r#"{"level":"warning","msg":"something minor","time":"2026-11-27T08:00:00Z"}"#,
            "\n",
            r#"{"level":"error","msg":"first","time":"2026-11-27T08:00:01Z"}"#,
            "\n",
            r#"{"level":"error","msg":"runc create failed: unable to start container process: exec: \"/nope\": stat /nope: no such file or directory","time":"2026-11-27T08:00:02Z"}"#,
            "\n",
            r#"{"level":"info","msg":"done","time":"2026-11-27T08:00:03Z"}"#,
            "\n"
        );
        assert_eq!(
            last_error(log).as_deref(),
            Some("runc create failed: unable to start container process: exec: \"/nope\": stat /nope: no such file or directory")
        );
        assert_eq!(last_error("not json\n"), None);
    }
}
