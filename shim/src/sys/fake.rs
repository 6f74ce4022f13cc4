//! A recording fake of [`Isolation`] for the lifecycle's and the task
//! service's unit tests: no process is started, every request is recorded,
//! and the test decides when a "process" exits.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use super::{ContainerProcess, ExecRequest, Isolation, ProcessRequest, Spawned};
use crate::error::{Error, Result};
use crate::instance::CreateRequest;

/// Records creates; hands out [`FakeProcess`]es the test controls.
#[derive(Default)]
pub struct FakeIsolation {
    processes: Mutex<HashMap<String, Arc<FakeProcess>>>,
    fail_next: Mutex<Option<Error>>,
    next_pid: AtomicU32,
    hold_create: Mutex<bool>,
    create_called: Notify,
    create_released: Notify,
    orphans_released: AtomicU32,
}

impl FakeIsolation {
    /// The process created for container `id`.
    pub fn process(&self, id: &str) -> Arc<FakeProcess> {
        self.processes.lock().unwrap()[id].clone()
    }

    /// Ids of the containers whose process was created.
    pub fn created(&self) -> Vec<String> {
        self.processes.lock().unwrap().keys().cloned().collect()
    }

    /// Makes the next create fail with `err`.
    pub fn fail_next_create(&self, err: Error) {
        *self.fail_next.lock().unwrap() = Some(err);
    }

    /// Makes the next create wait for [`FakeIsolation::release_create`].
    pub fn hold_create(&self) {
        *self.hold_create.lock().unwrap() = true;
    }

    /// Resolves once a held create has been called.
    pub async fn wait_create_called(&self) {
        self.create_called.notified().await;
    }

    /// Lets a held create go on.
    pub fn release_create(&self) {
        self.create_released.notify_one();
    }

    /// How many times the cleanup after a dead shim released a container.
    pub fn orphans_released(&self) -> u32 {
        self.orphans_released.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Isolation for FakeIsolation {
    async fn release_orphan(
        &self,
        _id: &str,
        _bundle: &std::path::Path,
        _spec: &oci_spec::runtime::Spec,
    ) -> Result<()> {
        self.orphans_released.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn create(&self, request: &ProcessRequest<'_>) -> Result<Spawned> {
        let hold = std::mem::take(&mut *self.hold_create.lock().unwrap());
        if hold {
            self.create_called.notify_one();
            self.create_released.notified().await;
        }
        if let Some(err) = self.fail_next.lock().unwrap().take() {
            return Err(err);
        }
        let pid = 1000 + self.next_pid.fetch_add(1, Ordering::SeqCst);
        let (process, spawned) = spawned(pid);
        self.processes
            .lock()
            .unwrap()
            .insert(request.id.to_string(), process);
        Ok(spawned)
    }
}

/// A new fake process `pid` and what an isolation hands out for it.
fn spawned(pid: u32) -> (Arc<FakeProcess>, Spawned) {
    let process = Arc::new(FakeProcess {
        pid,
        exit: watch::channel(None).0,
        ..Default::default()
    });
    let mut rx = process.exit.subscribe();
    let exit = Box::pin(async move {
        let status = rx.wait_for(Option::is_some).await.expect("sender kept");
        status.expect("waited for Some")
    });
    let spawned = Spawned {
        process: Box::new(SharedProcess(process.clone())),
        exit,
    };
    (process, spawned)
}

/// A container "process" whose exit the test triggers.
#[derive(Default)]
pub struct FakeProcess {
    pid: u32,
    starts: AtomicU32,
    signals: Mutex<Vec<u32>>,
    exit: watch::Sender<Option<u32>>,
    hold: Mutex<bool>,
    start_called: Notify,
    released: Notify,
    /// Pause (true) and resume (false) requests that reached the process.
    freezes: Mutex<Vec<bool>>,
    /// Its execs by exec id, once execs are allowed (a Linux container);
    /// `None`: exec is refused as for a Wasm container.
    execs: Mutex<Option<HashMap<String, Arc<FakeProcess>>>>,
    /// Whether releasing its surroundings at Delete fails.
    release_fails: std::sync::atomic::AtomicBool,
}

impl FakeProcess {
    /// Ends the process with `status`.
    pub fn exit(&self, status: u32) {
        self.exit.send_replace(Some(status));
    }

    /// How many times Start reached the process.
    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::SeqCst)
    }

    /// Signals sent to the process while it lived.
    pub fn signals(&self) -> Vec<u32> {
        self.signals.lock().unwrap().clone()
    }

    /// Makes the next start wait for [`FakeProcess::release_start`].
    pub fn hold_start(&self) {
        *self.hold.lock().unwrap() = true;
    }

    /// Resolves once a held start has been called.
    pub async fn wait_start_called(&self) {
        self.start_called.notified().await;
    }

    /// Lets a held start return.
    pub fn release_start(&self) {
        self.released.notify_one();
    }

    /// Lets execs into this process's container be made, as runc's.
    pub fn allow_exec(&self) {
        self.execs.lock().unwrap().get_or_insert_with(HashMap::new);
    }

    /// The process of exec `exec_id`.
    pub fn exec_process(&self, exec_id: &str) -> Arc<FakeProcess> {
        self.execs.lock().unwrap().as_ref().expect("execs allowed")[exec_id].clone()
    }

    /// Makes releasing the process's surroundings at Delete fail.
    pub fn fail_release(&self) {
        self.release_fails.store(true, Ordering::SeqCst);
    }

    /// Pauses (true) and resumes (false) that reached the process, in order.
    pub fn freezes(&self) -> Vec<bool> {
        self.freezes.lock().unwrap().clone()
    }
}

struct SharedProcess(Arc<FakeProcess>);

#[async_trait]
impl ContainerProcess for SharedProcess {
    fn pid(&self) -> u32 {
        self.0.pid
    }

    async fn start(&self) -> Result<()> {
        self.0.starts.fetch_add(1, Ordering::SeqCst);
        let hold = std::mem::take(&mut *self.0.hold.lock().unwrap());
        if hold {
            self.0.start_called.notify_one();
            self.0.released.notified().await;
        }
        Ok(())
    }

    async fn exec(&self, request: &ExecRequest<'_>) -> Result<Spawned> {
        let mut execs = self.0.execs.lock().unwrap();
        let Some(execs) = execs.as_mut() else {
            return Err(Error::Unimplemented(
                "exec into a WebAssembly container is not supported".into(),
            ));
        };
        let (process, spawned) = spawned(self.0.pid + 100 + execs.len() as u32);
        execs.insert(request.exec_id.to_string(), process);
        Ok(spawned)
    }

    async fn release(&self) -> bool {
        !self.0.release_fails.load(Ordering::SeqCst)
    }

    async fn pause(&self) -> Result<()> {
        self.0.freezes.lock().unwrap().push(true);
        Ok(())
    }

    async fn resume(&self) -> Result<()> {
        self.0.freezes.lock().unwrap().push(false);
        Ok(())
    }

    fn signal(&self, signal: u32) -> Result<()> {
        if self.0.exit.borrow().is_some() {
            return Err(Error::NotFound("process already finished".into()));
        }
        self.0.signals.lock().unwrap().push(signal);
        if signal == libc::SIGKILL as u32 {
            self.0.exit(crate::exit::killed_by(libc::SIGKILL));
        }
        Ok(())
    }
}

/// A bundle in a temp dir: `config.json` whose entrypoint `/hello.wasm` is a
/// module (by its magic number) in `rootfs/`.
pub struct TestBundle {
    dir: tempfile::TempDir,
}

impl TestBundle {
    /// Writes the bundle.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        std::fs::write(rootfs.join("hello.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/hello.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        TestBundle { dir }
    }

    /// A bundle whose entrypoint `/bin/sh` is a Linux program (an ELF header).
    pub fn linux() -> Self {
        let bundle = TestBundle::new();
        let rootfs = bundle.path().join("rootfs");
        std::fs::create_dir(rootfs.join("bin")).unwrap();
        std::fs::write(rootfs.join("bin/sh"), b"\x7fELF\x02\x01\x01\0").unwrap();
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/bin/sh", "-c", "true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        });
        std::fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();
        bundle
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A Create request for container `id` of this bundle (rootfs already in place).
    pub fn request(&self, id: &str) -> CreateRequest {
        CreateRequest {
            id: id.to_string(),
            bundle: self.path().to_path_buf(),
            ..Default::default()
        }
    }
}
