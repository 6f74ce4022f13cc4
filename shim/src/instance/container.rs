//! [`Container`]: one container's life, created → running (⇄ paused) →
//! stopped, and the steps that move it: create (mount the rootfs, read the
//! bundle, create the process), start, pause/resume, kill, wait and delete
//! (unmount, release). An exec (`ctr task exec`) is a [`Container`] too, made
//! by [`Container::exec`]: the same states for its one process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use containerd_shim::protos::types::mount::Mount;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::oci;
use crate::oci::image::ContainerdImages;
use crate::sys::{
    rootfs, CgroupStats as Stats, ContainerProcess, ExecRequest, Isolation, ProcessRequest,
    Spawned, StdioPaths,
};

/// The file a container's Delete writes in its bundle once nothing of the
/// container is left: its process's surroundings released, its rootfs
/// unmounted. [`Launcher::cleanup`] then has nothing to do.
const RELEASED_FILE: &str = "wasmshim-released";

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The module is loaded; the entry function has not been called.
    Created,
    /// The module is running.
    Running,
    /// Its processes are frozen (Pause) until Resume.
    Paused,
    /// The process has exited.
    Stopped,
}

/// How and when a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit status, as [`crate::exit`] defines it.
    pub status: u32,
    /// When the exit was observed.
    pub at: SystemTime,
    /// The kernel's OOM killer ended it (its memory limit).
    pub oom_killed: bool,
}

/// What creating a container takes: containerd's Create request, in our words.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The container id.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Mounts that make up the rootfs (none: the bundle's rootfs is already there).
    pub rootfs: Vec<Mount>,
    /// Path of the stdin fifo, or empty.
    pub stdin: String,
    /// Path of the stdout fifo, or empty.
    pub stdout: String,
    /// Path of the stderr fifo, or empty.
    pub stderr: String,
    /// containerd asked for a terminal.
    pub terminal: bool,
}

/// Creates containers: Wasm containers in a process of one [`Isolation`],
/// Linux containers in another (if there is one).
#[derive(Clone)]
pub struct Launcher {
    isolation: Arc<dyn Isolation>,
    linux: Option<Arc<dyn Isolation>>,
    images: Option<ContainerdImages>,
}

impl Launcher {
    /// A launcher whose containers run with `isolation`.
    pub fn new(isolation: Arc<dyn Isolation>) -> Self {
        Launcher {
            isolation,
            linux: None,
            images: None,
        }
    }

    /// Runs containers whose entrypoint is a Linux program with `linux`.
    pub fn with_linux(mut self, linux: Arc<dyn Isolation>) -> Self {
        self.linux = Some(linux);
        self
    }

    /// Looks for the module of a container whose entrypoint is not in its
    /// rootfs in its image's Wasm layers, in `images` (artifact images).
    pub fn with_images(mut self, images: ContainerdImages) -> Self {
        self.images = Some(images);
        self
    }

    /// Reads the bundle of container `id`: its spec, and what it runs, from
    /// the rootfs or, for an artifact image, from the image.
    async fn read_bundle(&self, id: &str, bundle: &Path) -> Result<oci::Bundle> {
        let spec = oci::load_spec(bundle)?;
        let from_image = match &self.images {
            Some(images) if oci::entrypoint_missing(&spec, bundle) => {
                images.module_of(id, bundle).await?
            }
            _ => None,
        };
        oci::bundle_of(spec, bundle, from_image.as_ref())
    }

    /// Cleans up after the shim of container `id` died: what it set up for
    /// the bundle (the process's surroundings, the rootfs mount) must not
    /// outlive it. containerd asks for this whenever a shim's connection
    /// closes, also after a Delete that released everything already: then
    /// there is nothing to do, and the `poststop` hooks must not run twice.
    pub async fn cleanup(&self, id: &str, bundle: &Path) -> Result<()> {
        if bundle.join(RELEASED_FILE).exists() {
            log::debug!("container {id}: released at its Delete, nothing to clean up");
            return Ok(());
        }
        let released = match oci::load_spec(bundle) {
            Ok(spec) => {
                let isolation = match (oci::runs_wasm(&spec, bundle), &self.linux) {
                    (false, Some(linux)) => linux,
                    _ => &self.isolation,
                };
                isolation.release_orphan(id, bundle, &spec).await
            }
            Err(e) => Err(e),
        };
        rootfs::unmount(&bundle.join("rootfs"))?;
        released
    }

    /// The isolation for what `bundle` runs.
    fn isolation_for(&self, bundle: &oci::Bundle) -> Result<&Arc<dyn Isolation>> {
        match (&bundle.workload, &self.linux) {
            (oci::Workload::Wasm(_), _) => Ok(&self.isolation),
            (oci::Workload::Linux, Some(linux)) => Ok(linux),
            (oci::Workload::Linux, None) => Err(Error::InvalidArgument(
                "the entrypoint is not a WebAssembly module, and this shim runs no Linux containers"
                    .into(),
            )),
        }
    }

    /// Creates a container: mounts its rootfs, reads its bundle and creates
    /// its process, which then waits for [`Container::start`]. On error
    /// nothing is left mounted or running.
    pub async fn create(&self, request: CreateRequest) -> Result<Arc<Container>> {
        oci::check_no_terminal(request.terminal)?;
        let rootfs = if request.rootfs.is_empty() {
            None
        } else {
            let dir = request.bundle.join("rootfs");
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
            if let Err(e) = rootfs::mount(&request.rootfs, &dir).await {
                let _ = rootfs::unmount(&dir);
                return Err(e);
            }
            Some(dir)
        };
        let stdio = StdioPaths {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        };
        let spawned = async {
            let bundle = self.read_bundle(&request.id, &request.bundle).await?;
            self.isolation_for(&bundle)?
                .create(&ProcessRequest {
                    id: &request.id,
                    bundle: &request.bundle,
                    spec: &bundle.spec,
                    workload: &bundle.workload,
                    stdio: &stdio,
                })
                .await
        }
        .await;
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                log::warn!("container {}: create failed: {}", request.id, e.message());
                let _ = std::fs::remove_file(request.bundle.join(oci::image::MODULE_FILE));
                if let Some(dir) = &rootfs {
                    if let Err(u) = rootfs::unmount(dir) {
                        log::error!("container {}: {}", request.id, u.message());
                    }
                }
                return Err(e);
            }
        };
        Ok(Container::watched(
            request.id,
            request.bundle,
            true,
            rootfs,
            stdio,
            spawned,
        ))
    }
}

enum State {
    Created,
    /// A Start request is handing control to the process.
    Starting,
    Running,
    /// A Pause or Resume request is under way (from running or paused).
    Freezing,
    Paused,
    Stopped,
}

/// One container of this shim.
pub struct Container {
    id: String,
    bundle: PathBuf,
    /// The container's own process, not an exec: its Delete releases what
    /// surrounds the bundle's container.
    init: bool,
    /// The rootfs this container mounted, unmounted at delete.
    rootfs: Option<PathBuf>,
    stdio: StdioPaths,
    process: Box<dyn ContainerProcess>,
    state: Mutex<State>,
    exit: watch::Sender<Option<ExitInfo>>,
}

impl Container {
    fn new(
        id: String,
        bundle: PathBuf,
        init: bool,
        rootfs: Option<PathBuf>,
        stdio: StdioPaths,
        process: Box<dyn ContainerProcess>,
    ) -> Self {
        Container {
            id,
            bundle,
            init,
            rootfs,
            stdio,
            process,
            state: Mutex::new(State::Created),
            exit: watch::channel(None).0,
        }
    }

    /// A container of `spawned` (`init`: the container's own process, not an
    /// exec), whose exit is recorded as soon as it happens.
    fn watched(
        id: String,
        bundle: PathBuf,
        init: bool,
        rootfs: Option<PathBuf>,
        stdio: StdioPaths,
        spawned: Spawned,
    ) -> Arc<Container> {
        let container = Arc::new(Container::new(
            id,
            bundle,
            init,
            rootfs,
            stdio,
            spawned.process,
        ));
        let watched = container.clone();
        let exit = spawned.exit;
        tokio::spawn(async move {
            let status = exit.await;
            watched.set_exited(status);
            log::info!("process {}: exited with status {status}", watched.id());
        });
        container
    }

    /// Prepares process `exec_id` (`ctr task exec`) in this running
    /// container, with its own stdio; it runs at its [`Container::start`].
    /// `process_spec` is the runtime-spec `process` JSON containerd sends.
    /// Its id is `exec_id`.
    pub async fn exec(
        &self,
        exec_id: &str,
        process_spec: &[u8],
        stdio: StdioPaths,
        terminal: bool,
    ) -> Result<Arc<Container>> {
        let process = oci::parse_process(process_spec)?;
        oci::check_no_terminal(terminal)?;
        if self.status() != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running: cannot exec into it",
                self.id
            )));
        }
        let spawned = self
            .process
            .exec(&ExecRequest {
                exec_id,
                process: &process,
                stdio: &stdio,
            })
            .await?;
        Ok(Container::watched(
            exec_id.to_string(),
            self.bundle.clone(),
            false,
            None,
            stdio,
            spawned,
        ))
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bundle directory.
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// The stdio fifo paths containerd gave at Create.
    pub fn stdio(&self) -> &StdioPaths {
        &self.stdio
    }

    /// The process id of the container's process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        match &*self.lock() {
            State::Created | State::Starting => Status::Created,
            State::Running | State::Freezing => Status::Running,
            State::Paused => Status::Paused,
            State::Stopped => Status::Stopped,
        }
    }

    /// The exit, once the process has ended.
    pub fn exit(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// Runs the module: created → running.
    pub async fn start(&self) -> Result<u32> {
        {
            let mut state = self.lock();
            let refusal = match &*state {
                State::Created => None,
                State::Starting => Some("is already starting"),
                State::Running | State::Freezing | State::Paused => Some("is already running"),
                State::Stopped => Some("has already exited"),
            };
            if let Some(why) = refusal {
                return Err(Error::FailedPrecondition(format!(
                    "container {} {why}",
                    self.id
                )));
            }
            *state = State::Starting;
        }
        let result = self.process.start().await;
        let mut state = self.lock();
        // The process may have exited meanwhile; its exit wins.
        if let State::Starting = &*state {
            *state = if result.is_ok() {
                State::Running
            } else {
                State::Created
            };
        }
        result.map(|()| self.pid())
    }

    /// Freezes every process of the container: running → paused.
    pub async fn pause(&self) -> Result<()> {
        self.freeze(true).await
    }

    /// Thaws a paused container: paused → running.
    pub async fn resume(&self) -> Result<()> {
        self.freeze(false).await
    }

    async fn freeze(&self, pause: bool) -> Result<()> {
        {
            let mut state = self.lock();
            let refusal = match (&*state, pause) {
                (State::Running, true) | (State::Paused, false) => None,
                (State::Paused, true) => Some("is already paused"),
                (State::Running, false) => Some("is not paused"),
                (State::Freezing, _) => Some("is being paused or resumed"),
                (State::Created | State::Starting, _) => Some("is not running"),
                (State::Stopped, _) => Some("has already exited"),
            };
            if let Some(why) = refusal {
                return Err(Error::FailedPrecondition(format!(
                    "container {} {why}",
                    self.id
                )));
            }
            *state = State::Freezing;
        }
        let result = if pause {
            self.process.pause().await
        } else {
            self.process.resume().await
        };
        let mut state = self.lock();
        // The process may have exited meanwhile; its exit wins.
        if let State::Freezing = &*state {
            *state = match (result.is_ok(), pause) {
                (true, true) | (false, false) => State::Paused,
                (true, false) | (false, true) => State::Running,
            };
        }
        result
    }

    /// Records the process's exit (any state → stopped) and wakes every waiter.
    fn set_exited(&self, status: u32) -> ExitInfo {
        let info = ExitInfo {
            status,
            at: SystemTime::now(),
            oom_killed: self.process.oom_killed(),
        };
        *self.lock() = State::Stopped;
        self.exit.send_replace(Some(info));
        info
    }

    /// Sends `signal` to the process unless it has already exited. SIGKILL
    /// to a paused container thaws it too, as runc does: a frozen process
    /// cannot die.
    pub async fn kill(&self, signal: u32) -> Result<()> {
        let paused = match &*self.lock() {
            State::Stopped => {
                return Err(Error::NotFound(format!(
                    "container {}: process already finished",
                    self.id
                )))
            }
            State::Paused => true,
            _ => false,
        };
        // The process handle signals through a pidfd: should the exit be recorded
        // meanwhile, the signal still cannot reach another process.
        self.process.signal(signal)?;
        if paused && signal == libc::SIGKILL as u32 {
            if let Err(e) = self.process.resume().await {
                log::warn!(
                    "container {}: thawing after SIGKILL: {}",
                    self.id,
                    e.message()
                );
            }
        }
        Ok(())
    }

    /// Waits until the process has exited.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.subscribe();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in self");
        exit.expect("waited for Some")
    }

    /// Deletes a container that is not running: ends a process that was never
    /// started, waits for its exit and unmounts the rootfs.
    pub async fn delete(&self) -> Result<ExitInfo> {
        match self.status() {
            Status::Running | Status::Paused => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot delete running container {}: kill it first",
                    self.id
                )))
            }
            Status::Created => {
                // A created process waits for Start: ending it is part of deleting it.
                match self.kill(libc::SIGKILL as u32).await {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Status::Stopped => {}
        }
        let exit = self.wait().await;
        // The cgroup and the poststop hooks, once the process is gone.
        let released = self.process.release().await;
        if let Some(dir) = &self.rootfs {
            rootfs::unmount(dir)?;
        }
        if released && self.init {
            let file = self.bundle.join(RELEASED_FILE);
            if let Err(e) = std::fs::write(&file, b"") {
                log::warn!("container {}: writing {}: {e}", self.id, file.display());
            }
        }
        Ok(exit)
    }

    /// Resource usage of the container (its cgroup).
    pub fn stats(&self) -> Result<Stats> {
        self.process.stats()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{FakeIsolation, TestBundle};

    async fn created(iso: &Arc<FakeIsolation>) -> (Arc<Container>, TestBundle) {
        let bundle = TestBundle::new();
        let launcher = Launcher::new(iso.clone());
        let c = launcher.create(bundle.request("c1")).await.unwrap();
        (c, bundle)
    }

    #[tokio::test]
    async fn linux_programs_go_to_the_linux_isolation_and_modules_do_not() {
        let wasm = Arc::new(FakeIsolation::default());
        let linux = Arc::new(FakeIsolation::default());
        let launcher = Launcher::new(wasm.clone()).with_linux(linux.clone());
        let (module, program) = (TestBundle::new(), TestBundle::linux());
        launcher.create(module.request("m")).await.unwrap();
        launcher.create(program.request("p")).await.unwrap();
        assert_eq!(wasm.created(), vec!["m".to_string()]);
        assert_eq!(linux.created(), vec!["p".to_string()]);

        // Without a Linux isolation, a Linux program is refused with the reason.
        let Err(err) = Launcher::new(wasm.clone())
            .create(program.request("p2"))
            .await
        else {
            panic!("a Linux program was created without a Linux isolation");
        };
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(
            err.message().contains("not a WebAssembly module"),
            "{}",
            err.message()
        );
    }

    #[tokio::test]
    async fn lifecycle_created_running_stopped() {
        let iso = Arc::new(FakeIsolation::default());
        let (c, _bundle) = created(&iso).await;
        assert_eq!(c.status(), Status::Created);
        assert_eq!(c.start().await.unwrap(), c.pid());
        assert_eq!(iso.process("c1").starts(), 1);
        assert_eq!(c.status(), Status::Running);
        assert!(matches!(c.start().await, Err(Error::FailedPrecondition(_))));
        assert!(matches!(
            c.delete().await,
            Err(Error::FailedPrecondition(_))
        ));

        iso.process("c1").exit(3);
        let exit = c.wait().await;
        assert_eq!(exit.status, 3);
        assert_eq!(c.status(), Status::Stopped);
        assert_eq!(c.exit(), Some(exit));
        assert!(matches!(c.start().await, Err(Error::FailedPrecondition(_))));
        assert_eq!(c.delete().await.unwrap(), exit);
    }

    #[tokio::test]
    async fn kill_after_exit_is_not_found_and_sends_nothing() {
        let iso = Arc::new(FakeIsolation::default());
        let (c, _bundle) = created(&iso).await;
        c.start().await.unwrap();
        c.kill(15).await.unwrap();
        assert_eq!(iso.process("c1").signals(), vec![15]);
        iso.process("c1").exit(143);
        assert_eq!(c.wait().await.status, 143);
        assert!(matches!(c.kill(9).await, Err(Error::NotFound(_))));
        assert_eq!(iso.process("c1").signals(), vec![15]);
    }

    #[tokio::test]
    async fn exit_during_start_is_not_overwritten() {
        let iso = Arc::new(FakeIsolation::default());
        let (c, _bundle) = created(&iso).await;
        // The process exits while Start is still handing it control.
        let process = iso.process("c1");
        process.hold_start();
        let starting = tokio::spawn({
            let c = c.clone();
            async move { c.start().await }
        });
        process.wait_start_called().await;
        process.exit(0);
        c.wait().await;
        process.release_start();
        starting.await.unwrap().unwrap();
        assert_eq!(c.status(), Status::Stopped);
        assert_eq!(c.exit().unwrap().status, 0);
    }

    #[tokio::test]
    async fn delete_of_a_created_container_kills_it() {
        let iso = Arc::new(FakeIsolation::default());
        let (c, _bundle) = created(&iso).await;
        let exit = c.delete().await.unwrap();
        assert_eq!(iso.process("c1").signals(), vec![9]);
        assert_eq!(exit.status, 137);
        assert_eq!(iso.process("c1").starts(), 0);
    }

    /// containerd runs the shim's `delete` whenever a shim's connection
    /// closes: after a Delete that released everything, it must not release
    /// the container again (its `poststop` hooks would run twice).
    #[tokio::test]
    async fn cleanup_after_a_complete_delete_does_nothing() {
        let iso = Arc::new(FakeIsolation::default());
        let (c, bundle) = created(&iso).await;
        c.delete().await.unwrap();
        let launcher = Launcher::new(iso.clone());
        launcher.cleanup("c1", bundle.path()).await.unwrap();
        assert_eq!(iso.orphans_released(), 0);
    }

    /// Without a complete Delete (none, or one that left the cgroup) the
    /// cleanup releases the container.
    #[tokio::test]
    async fn cleanup_without_a_complete_delete_releases() {
        let iso = Arc::new(FakeIsolation::default());
        let (_, crashed) = created(&iso).await;
        let launcher = Launcher::new(iso.clone());
        launcher.cleanup("c1", crashed.path()).await.unwrap();
        assert_eq!(iso.orphans_released(), 1);

        let iso = Arc::new(FakeIsolation::default());
        let (c, bundle) = created(&iso).await;
        iso.process("c1").fail_release();
        c.delete().await.unwrap();
        let launcher = Launcher::new(iso.clone());
        launcher.cleanup("c1", bundle.path()).await.unwrap();
        assert_eq!(iso.orphans_released(), 1);
    }

    /// An exec's Delete releases nothing of its container's.
    #[tokio::test]
    async fn an_exec_delete_leaves_the_container_to_clean_up() {
        let iso = Arc::new(FakeIsolation::default());
        let (c, bundle) = created(&iso).await;
        c.start().await.unwrap();
        iso.process("c1").allow_exec();
        let spec = br#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}"#;
        let exec = c
            .exec("e1", spec, StdioPaths::default(), false)
            .await
            .unwrap();
        iso.process("c1").exec_process("e1").exit(0);
        exec.delete().await.unwrap();
        let launcher = Launcher::new(iso.clone());
        launcher.cleanup("c1", bundle.path()).await.unwrap();
        assert_eq!(iso.orphans_released(), 1);
    }

    #[tokio::test]
    async fn failed_create_names_the_problem() {
        let iso = Arc::new(FakeIsolation::default());
        let bundle = TestBundle::new();
        let launcher = Launcher::new(iso.clone());
        let mut request = bundle.request("c1");
        request.terminal = true;
        let err = launcher.create(request).await.err().unwrap();
        assert!(
            err.message().contains("terminal (tty) is not supported"),
            "{err}"
        );
        iso.fail_next_create(Error::InvalidArgument("bad module".into()));
        let err = launcher.create(bundle.request("c1")).await.err().unwrap();
        assert_eq!(err.message(), "bad module");
        assert!(iso.created().is_empty());
    }
}
