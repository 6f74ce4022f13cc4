//! [`TaskService`]: containerd's Task API, one entry per container id.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};

use super::events::{timestamp, EventSink};
use crate::error::{Error, Result};
use crate::instance::{Container, Status};
use crate::oci;
use crate::sys::{rootfs, Isolation, StdioPaths};

/// Version string reported by Connect.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The containers of this shim: `None` while one is being created.
type Containers = HashMap<String, Option<Arc<Container>>>;

/// containerd's Task service for every container this shim process serves.
pub struct TaskService {
    containers: Arc<Mutex<Containers>>,
    isolation: Arc<dyn Isolation>,
    events: Arc<dyn EventSink>,
    exit: Arc<ExitSignal>,
}

impl TaskService {
    /// A service that runs containers with `isolation` and reports to `events`;
    /// `exit` is signalled by Shutdown once no container is left.
    pub fn new(
        isolation: Arc<dyn Isolation>,
        events: Arc<dyn EventSink>,
        exit: Arc<ExitSignal>,
    ) -> Self {
        TaskService {
            containers: Arc::default(),
            isolation,
            events,
            exit,
        }
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, Containers> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str, exec_id: &str) -> Result<Arc<Container>> {
        if !exec_id.is_empty() {
            return Err(Error::NotFound(format!(
                "exec process {exec_id} not found: WebAssembly containers do not support exec"
            )));
        }
        match self.containers().get(id) {
            Some(Some(c)) => Ok(c.clone()),
            Some(None) => Err(Error::FailedPrecondition(format!(
                "container {id} is being created"
            ))),
            None => Err(Error::NotFound(format!("container {id} not found"))),
        }
    }

    async fn create_container(&self, req: &api::CreateTaskRequest) -> Result<u32> {
        let id = req.id.as_str();
        if id.is_empty() {
            return Err(Error::InvalidArgument("container id is empty".into()));
        }
        {
            let mut containers = self.containers();
            if containers.contains_key(id) {
                return Err(Error::AlreadyExists(format!(
                    "container {id} already exists"
                )));
            }
            containers.insert(id.to_string(), None);
        }
        let result = self.spawn_container(req).await;
        let mut containers = self.containers();
        match result {
            Ok(container) => {
                let pid = container.pid();
                containers.insert(id.to_string(), Some(container));
                Ok(pid)
            }
            Err(e) => {
                containers.remove(id);
                Err(e)
            }
        }
    }

    async fn spawn_container(&self, req: &api::CreateTaskRequest) -> Result<Arc<Container>> {
        if req.terminal {
            return Err(Error::InvalidArgument(
                "a terminal (tty) is not supported for WebAssembly containers".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let rootfs_dir = bundle.join("rootfs");
        if !req.rootfs.is_empty() {
            std::fs::create_dir_all(&rootfs_dir)
                .map_err(|e| Error::internal(format!("creating {}", rootfs_dir.display()), e))?;
            if let Err(e) = rootfs::mount(&req.rootfs, &rootfs_dir).await {
                let _ = rootfs::unmount(&rootfs_dir);
                return Err(e);
            }
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let spawned = match oci::load_bundle(&bundle) {
            Ok(spec) => self.isolation.create(&req.id, &bundle, &spec, &stdio).await,
            Err(e) => Err(e),
        };
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                log::warn!("container {}: create failed: {e}", req.id);
                if !req.rootfs.is_empty() {
                    if let Err(u) = rootfs::unmount(&rootfs_dir) {
                        log::error!("container {}: {u}", req.id);
                    }
                }
                return Err(e);
            }
        };
        let container = Arc::new(Container::new(
            &req.id,
            &bundle,
            stdio,
            spawned.pid,
            spawned.starter,
        ));
        let exit = spawned.exit;
        let events = self.events.clone();
        let watched = container.clone();
        tokio::spawn(async move {
            let exited = exit.await;
            if exited.oom_killed {
                // containerd expects the OOM event before the exit.
                events
                    .publish(
                        topics::TASK_OOM_EVENT_TOPIC,
                        Box::new(TaskOOM {
                            container_id: watched.id().to_string(),
                            ..Default::default()
                        }),
                    )
                    .await;
            }
            let status = exited.status;
            let info = watched.set_exited(status);
            log::info!("container {}: exited with status {status}", watched.id());
            events
                .publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id: watched.id().to_string(),
                        id: watched.id().to_string(),
                        pid: watched.pid(),
                        exit_status: info.status,
                        exited_at: MessageField::some(timestamp(info.at)),
                        ..Default::default()
                    }),
                )
                .await;
        });
        Ok(container)
    }

    async fn delete_container(&self, id: &str) -> Result<api::DeleteResponse> {
        let container = self.get(id, "")?;
        container.check_deletable()?;
        if container.status() == Status::Created {
            // A created process is waiting for Start: ending it is part of deleting it.
            let _ = container.kill(self.isolation.as_ref(), libc::SIGKILL as u32);
        }
        let exit = container.wait().await;
        self.isolation.delete(id).await;
        rootfs::unmount(&container.bundle().join("rootfs"))?;
        self.containers().remove(id);
        self.events
            .publish(
                topics::TASK_DELETE_EVENT_TOPIC,
                Box::new(TaskDelete {
                    container_id: id.to_string(),
                    id: id.to_string(),
                    pid: container.pid(),
                    exit_status: exit.status,
                    exited_at: MessageField::some(timestamp(exit.at)),
                    ..Default::default()
                }),
            )
            .await;
        Ok(api::DeleteResponse {
            pid: container.pid(),
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }
}

fn unsupported<T>(what: &str) -> TtrpcResult<T> {
    Err(Error::Unimplemented(format!(
        "{what} is not supported for WebAssembly containers"
    ))
    .into())
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        log::info!("create container {} from bundle {}", req.id, req.bundle);
        let pid = self.create_container(&req).await?;
        self.events
            .publish(
                topics::TASK_CREATE_EVENT_TOPIC,
                Box::new(TaskCreate {
                    container_id: req.id.clone(),
                    bundle: req.bundle.clone(),
                    rootfs: req.rootfs.clone(),
                    io: MessageField::some(TaskIO {
                        stdin: req.stdin.clone(),
                        stdout: req.stdout.clone(),
                        stderr: req.stderr.clone(),
                        terminal: req.terminal,
                        ..Default::default()
                    }),
                    pid,
                    ..Default::default()
                }),
            )
            .await;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let container = self.get(&req.id, &req.exec_id)?;
        let pid = container.start().await?;
        log::info!("container {}: started, pid {pid}", req.id);
        self.events
            .publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                }),
            )
            .await;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        self.get(&req.id, &req.exec_id)?;
        log::info!("delete container {}", req.id);
        Ok(self.delete_container(&req.id).await?)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let container = self.get(&req.id, &req.exec_id)?;
        log::info!("container {}: kill with signal {}", req.id, req.signal);
        container.kill(self.isolation.as_ref(), req.signal)?;
        Ok(api::Empty::default())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let container = self.get(&req.id, &req.exec_id)?;
        let exit = container.wait().await;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let container = self.get(&req.id, &req.exec_id)?;
        let status = match container.status() {
            Status::Created => api::Status::CREATED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        };
        let exit = container.exit();
        let stdio = container.stdio();
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: container.bundle().to_string_lossy().into_owned(),
            pid: container.pid(),
            status: status.into(),
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: false,
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: exit
                .map(|e| MessageField::some(timestamp(e.at)))
                .unwrap_or_default(),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let container = self.get(&req.id, "")?;
        Ok(api::PidsResponse {
            processes: vec![ProcessInfo {
                pid: container.pid(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.get(&req.id, "").map(|c| c.pid()).unwrap_or_default();
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: VERSION.to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        if self.containers().is_empty() {
            log::info!("no containers left: shutting down");
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        self.get(&req.id, "")?;
        let stats = self.isolation.stats(&req.id)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(super::metrics::to_any(&stats)?),
            ..Default::default()
        })
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        unsupported("exec")
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        unsupported("pause")
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        unsupported("resume")
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        unsupported("checkpoint")
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        _req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        unsupported("update")
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        unsupported("a terminal")
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        // The shim holds no writer on the stdin fifo: once containerd closes its end,
        // the module reads end-of-file by itself. Nothing to do.
        Ok(api::Empty::default())
    }
}
