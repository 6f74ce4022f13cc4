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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use runc::options::{CreateOpts, DeleteOpts, GlobalOpts};

use super::cgroup::Cgroup;
use super::pidfd::PidFd;
use super::plan::CgroupPlan;
use super::stdio::StdioFiles;
use super::{CgroupStats, ContainerProcess, Isolation, ProcessRequest, Spawned};
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

    async fn release(&self) {
        if let Err(e) = self
            .client
            .delete(&self.id, Some(&DeleteOpts::new().force(true)))
            .await
        {
            let error = runc_error("delete", &self.bundle, e);
            log::error!("container {}: {}", self.id, error.message());
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
