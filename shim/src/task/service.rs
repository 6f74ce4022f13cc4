//! [`TaskService`]: containerd's Task API, one entry per container id.
//!
//! Requests are checked here and carried out by [`Container`]; this file owns
//! the id map and the task events, published in the order containerd expects
//! for each container: `/tasks/create`, `/tasks/start`, `/tasks/exit`,
//! `/tasks/delete` (and `/tasks/paused`, `/tasks/resumed` between). Execs
//! (`service/exec.rs`) are entries of their container, with the events the
//! runc shim publishes for them: `/tasks/exec-added`, `/tasks/exec-started`,
//! `/tasks/exit` (whose `id` is the exec id), and no `/tasks/delete`.
//!
//! Shutdown ends the shim once no container is left, unless the shim serves a
//! shared group (see [`crate::group`]) that a `start` chose for a container
//! whose Create has not arrived yet. A shim with no container also looks
//! every 2 s whether it is still wanted ([`TaskService::watch_idle`]), so
//! that one whose Create never came (containerd died in between) does not
//! serve on for good. The log follows the live containers (`crate::logging`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused, TaskResumed,
    TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use tokio::task::JoinHandle;

use super::events::{timestamp, EventSink};
use crate::error::{Error, Result};
use crate::group::SharedGroup;
use crate::instance::{Container, CreateRequest, Launcher, Status};
use crate::logging;

/// Version string reported by Connect.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One container of the map, with what orders its events.
struct Entry {
    container: Arc<Container>,
    /// Held while an event of this container is being published, so that
    /// `/tasks/exit` never overtakes `/tasks/create` or `/tasks/start`.
    events: Arc<tokio::sync::Mutex<()>>,
    /// Publishes `/tasks/exit` once the process ends; Delete awaits it.
    exit_event: Mutex<Option<JoinHandle<()>>>,
    /// The container's execs by exec id (an exec's own map stays empty).
    execs: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Entry {
    /// The entry of `container`, whose `/tasks/exit` (for `container_id`) is
    /// published as soon as it exits, but not before the returned guard, held
    /// while the event of its creation goes out, is dropped.
    fn watched(
        events: &Arc<dyn EventSink>,
        container_id: &str,
        container: Arc<Container>,
    ) -> (Arc<Entry>, tokio::sync::OwnedMutexGuard<()>) {
        let order = Arc::new(tokio::sync::Mutex::new(()));
        let create_event = order.clone().try_lock_owned().expect("a new mutex is free");
        let exit_event = tokio::spawn(publish_exit(
            events.clone(),
            container_id.to_string(),
            container.clone(),
            order.clone(),
        ));
        let entry = Arc::new(Entry {
            container,
            events: order,
            exit_event: Mutex::new(Some(exit_event)),
            execs: Mutex::default(),
        });
        (entry, create_event)
    }

    fn execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `/tasks/exit` of this process was published.
    async fn exit_published(&self) {
        let exit_event = self
            .exit_event
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = exit_event {
            let _ = handle.await;
        }
    }
}

/// The containers of this shim: `None` while one is being created.
type Containers = HashMap<String, Option<Arc<Entry>>>;

/// How often a shim with no container looks whether it is still wanted.
pub const IDLE_CHECK: Duration = Duration::from_secs(2);

/// How long a shim waits, with no container, for a Create that should have
/// come right after its `start`: past this, containerd died in between and
/// the restarted one will not send it (see [`TaskService::watch_idle`]).
pub const IDLE_PATIENCE: Duration = Duration::from_secs(30);

/// What a shim serving a shared group knows of its containers.
#[derive(Default)]
struct Membership {
    /// The claim tokens of the containers whose Create arrived (pruned to
    /// the bundles that still exist).
    served: HashSet<String>,
    /// The shim is exiting (a shared group's socket is removed): no
    /// container may be created any more.
    closing: bool,
}

/// containerd's Task service for every container this shim process serves.
#[derive(Clone)]
pub struct TaskService {
    containers: Arc<Mutex<Containers>>,
    launcher: Launcher,
    events: Arc<dyn EventSink>,
    exit: Arc<ExitSignal>,
    /// The shared group this shim serves, if any (not a pod's, not alone).
    group: Option<Arc<SharedGroup>>,
    /// Locked after `containers` when both are.
    membership: Arc<Mutex<Membership>>,
    /// Requests in progress that change a container's state (see
    /// [`TaskService::to_the_end`]): the idle watch waits for none.
    busy: Arc<AtomicUsize>,
}

impl TaskService {
    /// A service that creates containers with `launcher` and reports to
    /// `events`; `exit` is signalled by Shutdown once no container is left.
    pub fn new(launcher: Launcher, events: Arc<dyn EventSink>, exit: Arc<ExitSignal>) -> Self {
        TaskService {
            containers: Arc::default(),
            launcher,
            events,
            exit,
            group: None,
            membership: Arc::default(),
            busy: Arc::default(),
        }
    }

    /// The service of a shim serving shared group `group` (None: a pod's
    /// shim or a shim of one container, which exits once it has none).
    pub fn with_group(mut self, group: Option<SharedGroup>) -> Self {
        self.group = group.map(Arc::new);
        self
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, Containers> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry of container `id`, or of its exec `exec_id` if not empty.
    fn entry(&self, id: &str, exec_id: &str) -> Result<Arc<Entry>> {
        let container = match self.containers().get(id) {
            Some(Some(entry)) => entry.clone(),
            Some(None) => {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is being created"
                )))
            }
            None => return Err(Error::NotFound(format!("container {id} not found"))),
        };
        if exec_id.is_empty() {
            return Ok(container);
        }
        let exec = container.execs().get(exec_id).cloned();
        exec.ok_or_else(|| {
            Error::NotFound(format!(
                "exec process {exec_id} of container {id} not found"
            ))
        })
    }

    fn get(&self, id: &str, exec_id: &str) -> Result<Arc<Container>> {
        Ok(self.entry(id, exec_id)?.container.clone())
    }

    async fn create_task(&self, req: &api::CreateTaskRequest) -> Result<u32> {
        let id = req.id.as_str();
        if id.is_empty() {
            return Err(Error::InvalidArgument("container id is empty".into()));
        }
        let token = self
            .group
            .as_ref()
            .and_then(|g| g.token_of(Path::new(&req.bundle)));
        {
            let mut containers = self.containers();
            if containers.contains_key(id) {
                return Err(Error::AlreadyExists(format!(
                    "container {id} already exists"
                )));
            }
            // With the map locked: Shutdown sees the container either in the
            // map or, until then, as a claimant.
            let mut membership = self.membership();
            if membership.closing {
                return Err(Error::FailedPrecondition(format!(
                    "container {id}: this shim is shutting down"
                )));
            }
            membership.served.extend(token);
            containers.insert(id.to_string(), None);
        }
        logging::register(id, Path::new(&req.bundle));
        let created = self
            .launcher
            .create(CreateRequest {
                id: id.to_string(),
                bundle: req.bundle.clone().into(),
                rootfs: req.rootfs.clone(),
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            })
            .await;
        let container = match created {
            Ok(container) => container,
            Err(e) => {
                self.containers().remove(id);
                logging::unregister(id);
                return Err(e);
            }
        };
        let pid = container.pid();
        let (entry, create_event) = Entry::watched(&self.events, id, container);
        self.containers().insert(id.to_string(), Some(entry));
        self.events
            .publish(
                topics::TASK_CREATE_EVENT_TOPIC,
                Box::new(TaskCreate {
                    container_id: id.to_string(),
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
        drop(create_event);
        Ok(pid)
    }

    async fn start_task(&self, id: &str, exec_id: &str) -> Result<u32> {
        let entry = self.entry(id, exec_id)?;
        let _order = entry.events.lock().await;
        let pid = entry.container.start().await?;
        if !exec_id.is_empty() {
            log::info!("container {id}: exec {exec_id} started, pid {pid}");
            self.events
                .publish(
                    topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                    Box::new(TaskExecStarted {
                        container_id: id.to_string(),
                        exec_id: exec_id.to_string(),
                        pid,
                        ..Default::default()
                    }),
                )
                .await;
            return Ok(pid);
        }
        log::info!("container {id}: started, pid {pid}");
        self.events
            .publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: id.to_string(),
                    pid,
                    ..Default::default()
                }),
            )
            .await;
        Ok(pid)
    }

    /// Pause (`frozen`) or Resume of container `id`, with its event.
    async fn freeze_task(&self, id: &str, frozen: bool) -> Result<()> {
        let entry = self.entry(id, "")?;
        let _order = entry.events.lock().await;
        if frozen {
            entry.container.pause().await?;
            log::info!("container {id}: paused");
            let event = TaskPaused {
                container_id: id.to_string(),
                ..Default::default()
            };
            self.events
                .publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event))
                .await;
        } else {
            entry.container.resume().await?;
            log::info!("container {id}: resumed");
            let event = TaskResumed {
                container_id: id.to_string(),
                ..Default::default()
            };
            self.events
                .publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event))
                .await;
        }
        Ok(())
    }

    async fn delete_task(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        if !exec_id.is_empty() {
            return self.delete_exec(id, exec_id).await;
        }
        let entry = self.entry(id, exec_id)?;
        let container = &entry.container;
        let exit = container.delete().await?;
        // `/tasks/exit` goes out before `/tasks/delete`.
        entry.exit_published().await;
        if self.containers().remove(id).is_none() {
            return Err(Error::NotFound(format!("container {id} not found")));
        }
        logging::unregister(id);
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

impl TaskService {
    /// Shutdown of a shim of a shared group with no container: exits unless
    /// a container chose it and has yet to be created (then
    /// [`TaskService::watch_idle`] looks again).
    async fn shutdown_shared(&self, group: Arc<SharedGroup>) {
        self.close_or_wait(group, IDLE_PATIENCE).await;
    }

    /// Looks every `every`, while the shim has no container, whether it is
    /// still wanted, and signals the exit when it is not. A shared group's
    /// shim runs Shutdown's check, waiting only for containers that chose it
    /// less than `patience` ago. Any other shim exits once `bundle`, the one
    /// it was started for, is gone, or after `patience` without a container.
    ///
    /// Either way no Create or Shutdown can come any more: containerd died
    /// between `start` and Create (or Delete and Shutdown), and the
    /// restarted one removed the bundle without a word to the shim, or keeps
    /// it, with its task hidden (State: not found), until the shim's
    /// connection closes; it then runs our `delete` command and removes the
    /// bundle.
    pub fn watch_idle(&self, bundle: PathBuf, every: Duration, patience: Duration) {
        let service = self.clone();
        tokio::spawn(async move {
            let mut idle_since = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                if service.membership().closing {
                    break;
                }
                let busy = service.busy.load(Ordering::SeqCst) > 0;
                if busy || !service.containers().is_empty() {
                    idle_since = tokio::time::Instant::now();
                    continue;
                }
                let exiting = match service.group.clone() {
                    Some(group) => service.close_or_wait(group, patience).await,
                    None => service.close_if_unwanted(&bundle, idle_since.elapsed(), patience),
                };
                if exiting {
                    break;
                }
            }
        });
    }

    /// Signals the exit and returns true if the shim has no container and
    /// `bundle` does not exist or it was `idle` for `patience`; false
    /// otherwise.
    fn close_if_unwanted(&self, bundle: &Path, idle: Duration, patience: Duration) -> bool {
        let containers = self.containers();
        let gone = !bundle.exists();
        if !containers.is_empty() || !(gone || idle >= patience) {
            return false;
        }
        self.membership().closing = true;
        if gone {
            log::info!(
                "no containers and bundle {} is gone: shutting down",
                bundle.display()
            );
        } else {
            log::info!("no container for {}s: shutting down", idle.as_secs());
        }
        self.exit.signal();
        true
    }

    /// Signals the exit and returns true if no container claims this shim
    /// and none is served (the socket is then removed); false otherwise.
    /// A container that chose this shim more than `patience` ago is not
    /// waited for.
    async fn close_or_wait(&self, group: Arc<SharedGroup>, patience: Duration) -> bool {
        let service = self.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let mut idle = false;
            let claimants = group.close_if_unclaimed(
                |found| {
                    let _containers = service.containers();
                    let mut membership = service.membership();
                    membership.served.retain(|t| found.contains(t));
                    membership.served.clone()
                },
                || {
                    let containers = service.containers();
                    idle = containers.is_empty();
                    if idle {
                        service.membership().closing = true;
                    }
                    idle
                },
                patience,
            )?;
            Ok::<_, std::io::Error>((claimants, idle))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match checked {
            Ok((claimants, idle)) if claimants.is_empty() => {
                if idle {
                    log::info!("no containers left: shutting down");
                    self.exit.signal();
                }
                idle
            }
            Ok((claimants, _)) => {
                log::info!(
                    "no containers left, serving on for {} that chose this shim",
                    claimants.join(", ")
                );
                false
            }
            Err(e) => {
                log::warn!("looking for containers that chose this shim: {e}");
                false
            }
        }
    }
}

/// Waits for the exit of `container` (container `container_id` itself or
/// one of its execs) and publishes `/tasks/exit`, after any event of it
/// being published.
async fn publish_exit(
    events: Arc<dyn EventSink>,
    container_id: String,
    container: Arc<Container>,
    order: Arc<tokio::sync::Mutex<()>>,
) {
    let exit = container.wait().await;
    let _order = order.lock().await;
    if exit.oom_killed {
        // containerd expects the OOM event before the exit.
        events
            .publish(
                topics::TASK_OOM_EVENT_TOPIC,
                Box::new(TaskOOM {
                    container_id: container_id.clone(),
                    ..Default::default()
                }),
            )
            .await;
    }
    events
        .publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id,
                id: container.id().to_string(),
                pid: container.pid(),
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }),
        )
        .await;
}

impl TaskService {
    /// Runs `request` to its end on a task of its own, whatever happens to the
    /// connection it came on. ttrpc drops a request's future when the client's
    /// connection closes (containerd killed or restarted): a Create cut off
    /// between forking the worker and recording the container left it "being
    /// created" for good, with its worker dead and unreaped. Requests that change
    /// a container's state finish, as runc's shim finishes them, and the
    /// containerd that comes back finds the state they left.
    async fn to_the_end<T: Send + 'static>(
        &self,
        request: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let busy = Busy::enter(&self.busy);
        tokio::spawn(async move {
            let _busy = busy;
            request.await
        })
        .await
        .map_err(|e| Error::internal("the request's task", e))?
    }
}

/// One request in progress, counted until dropped.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn unsupported<T>(what: &str) -> TtrpcResult<T> {
    Err(Error::Unimplemented(format!(
        "{what} is not supported by this shim (neither for WebAssembly nor for Linux containers)"
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
        let service = self.clone();
        let pid = self
            .to_the_end(async move { service.create_task(&req).await })
            .await?;
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
        let service = self.clone();
        let pid = self
            .to_the_end(async move { service.start_task(&req.id, &req.exec_id).await })
            .await?;
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
        log::info!("delete container {}", req.id);
        let service = self.clone();
        Ok(self
            .to_the_end(async move { service.delete_task(&req.id, &req.exec_id).await })
            .await?)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let container = self.get(&req.id, &req.exec_id)?;
        log::info!("container {}: kill with signal {}", req.id, req.signal);
        self.to_the_end(async move { container.kill(req.signal).await })
            .await?;
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
            Status::Paused => api::Status::PAUSED,
            Status::Stopped => api::Status::STOPPED,
        };
        let exit = container.exit();
        let stdio = container.stdio();
        Ok(api::StateResponse {
            // The exec id for an exec.
            id: container.id().to_string(),
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
        let entry = self.entry(&req.id, "")?;
        // The container's process, then its execs that run.
        let mut pids = vec![entry.container.pid()];
        pids.extend(
            entry
                .execs()
                .values()
                .filter(|exec| exec.container.status() == Status::Running)
                .map(|exec| exec.container.pid()),
        );
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
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
        let left = self.containers().len();
        if left > 0 {
            log::debug!("shutdown requested with {left} containers left: serving on");
        } else if let Some(group) = &self.group {
            self.shutdown_shared(group.clone()).await;
        } else {
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
        let stats = self.get(&req.id, "")?.stats()?;
        Ok(api::StatsResponse {
            stats: MessageField::some(super::metrics::to_any(&stats)?),
            ..Default::default()
        })
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        log::info!("container {}: exec {}", req.id, req.exec_id);
        let service = self.clone();
        self.to_the_end(async move { service.exec_task(&req).await })
            .await?;
        Ok(api::Empty::default())
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let service = self.clone();
        self.to_the_end(async move { service.freeze_task(&req.id, true).await })
            .await?;
        Ok(api::Empty::default())
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        let service = self.clone();
        self.to_the_end(async move { service.freeze_task(&req.id, false).await })
            .await?;
        Ok(api::Empty::default())
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

mod exec;
#[cfg(test)]
mod tests;
