//! [`Container`]: created → running → stopped, and nothing else.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::sys::{Isolation, Starter, StdioPaths};

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The module is loaded; the entry function has not been called.
    Created,
    /// The module is running.
    Running,
    /// The process has exited.
    Stopped,
}

/// How and when a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit status: the module's exit code, or 128+n when killed by signal n.
    pub status: u32,
    /// When the exit was observed.
    pub at: SystemTime,
}

enum State {
    /// `None` while a Start request is handing the starter to the process.
    Created(Option<Box<dyn Starter>>),
    Running,
    Stopped,
}

/// One container of this shim.
pub struct Container {
    id: String,
    bundle: PathBuf,
    stdio: StdioPaths,
    pid: u32,
    state: Mutex<State>,
    exit: watch::Sender<Option<ExitInfo>>,
}

impl Container {
    /// A container whose process `pid` is created and waits for `starter`.
    pub fn new(
        id: &str,
        bundle: &Path,
        stdio: StdioPaths,
        pid: u32,
        starter: Box<dyn Starter>,
    ) -> Self {
        Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            stdio,
            pid,
            state: Mutex::new(State::Created(Some(starter))),
            exit: watch::channel(None).0,
        }
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
        self.pid
    }

    /// The current status.
    pub fn status(&self) -> Status {
        match &*self.lock() {
            State::Created(_) => Status::Created,
            State::Running => Status::Running,
            State::Stopped => Status::Stopped,
        }
    }

    /// The exit, once the process has ended.
    pub fn exit(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// Runs the module: created → running.
    pub async fn start(&self) -> Result<u32> {
        let starter = {
            let mut state = self.lock();
            match &mut *state {
                State::Created(starter) => starter.take().ok_or_else(|| {
                    Error::FailedPrecondition(format!("container {} is already starting", self.id))
                })?,
                State::Running => {
                    return Err(Error::FailedPrecondition(format!(
                        "container {} is already running",
                        self.id
                    )))
                }
                State::Stopped => {
                    return Err(Error::FailedPrecondition(format!(
                        "container {} has already exited",
                        self.id
                    )))
                }
            }
        };
        starter.start().await?;
        let mut state = self.lock();
        // The process may have exited already; its exit wins.
        if let State::Created(None) = &*state {
            *state = State::Running;
        }
        Ok(self.pid)
    }

    /// Records the process's exit (any state → stopped) and wakes every waiter.
    pub fn set_exited(&self, status: u32) -> ExitInfo {
        let info = ExitInfo {
            status,
            at: SystemTime::now(),
        };
        *self.lock() = State::Stopped;
        self.exit.send_replace(Some(info));
        info
    }

    /// Sends `signal` to the process unless it has already exited.
    pub fn kill(&self, isolation: &dyn Isolation, signal: u32) -> Result<()> {
        let state = self.lock();
        if let State::Stopped = &*state {
            return Err(Error::NotFound(format!(
                "container {}: process already finished",
                self.id
            )));
        }
        // Holding the lock keeps the exit from being recorded (and the pid reused) meanwhile.
        isolation.signal(self.pid, signal)
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

    /// Checks that the container may be deleted: it must not be running.
    pub fn check_deletable(&self) -> Result<()> {
        match self.status() {
            Status::Running => Err(Error::FailedPrecondition(format!(
                "cannot delete running container {}: kill it first",
                self.id
            ))),
            Status::Created | Status::Stopped => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::RunSpec;
    use crate::sys::Spawned;
    use async_trait::async_trait;
    use std::sync::Arc;

    /// Records what the lifecycle asked of the OS.
    #[derive(Default)]
    pub(crate) struct FakeIsolation {
        pub signals: Mutex<Vec<(u32, u32)>>,
    }

    struct FakeStarter(Arc<Mutex<bool>>);

    #[async_trait]
    impl Starter for FakeStarter {
        async fn start(self: Box<Self>) -> Result<()> {
            *self.0.lock().unwrap() = true;
            Ok(())
        }
    }

    #[async_trait]
    impl Isolation for FakeIsolation {
        async fn create(
            &self,
            _id: &str,
            _bundle: &Path,
            _spec: &RunSpec,
            _stdio: &StdioPaths,
        ) -> Result<Spawned> {
            Ok(Spawned {
                pid: 42,
                starter: Box::new(FakeStarter(Arc::default())),
                exit: Box::pin(std::future::pending()),
            })
        }

        fn signal(&self, pid: u32, signal: u32) -> Result<()> {
            self.signals.lock().unwrap().push((pid, signal));
            Ok(())
        }

        fn stats(&self, _id: &str) -> Result<crate::sys::CgroupStats> {
            Ok(Default::default())
        }

        async fn delete(&self, _id: &str) {}
    }

    fn container() -> (Container, Arc<Mutex<bool>>) {
        let started = Arc::new(Mutex::new(false));
        let c = Container::new(
            "c1",
            Path::new("/b"),
            StdioPaths::default(),
            42,
            Box::new(FakeStarter(started.clone())),
        );
        (c, started)
    }

    #[tokio::test]
    async fn lifecycle_created_running_stopped() {
        let (c, started) = container();
        assert_eq!(c.status(), Status::Created);
        assert!(c.check_deletable().is_ok());
        assert_eq!(c.start().await.unwrap(), 42);
        assert!(*started.lock().unwrap());
        assert_eq!(c.status(), Status::Running);
        assert!(matches!(c.start().await, Err(Error::FailedPrecondition(_))));
        assert!(matches!(
            c.check_deletable(),
            Err(Error::FailedPrecondition(_))
        ));

        let exit = c.set_exited(3);
        assert_eq!(c.status(), Status::Stopped);
        assert_eq!(c.wait().await, exit);
        assert_eq!(c.exit().unwrap().status, 3);
        assert!(c.check_deletable().is_ok());
        assert!(matches!(c.start().await, Err(Error::FailedPrecondition(_))));
    }

    #[tokio::test]
    async fn wait_wakes_on_exit_and_kill_after_exit_is_not_found() {
        let (c, _) = container();
        let c = Arc::new(c);
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait().await.status }
        });
        let iso = FakeIsolation::default();
        c.kill(&iso, 15).unwrap();
        assert_eq!(*iso.signals.lock().unwrap(), vec![(42, 15)]);
        c.set_exited(143);
        assert_eq!(waiter.await.unwrap(), 143);
        assert!(matches!(c.kill(&iso, 9), Err(Error::NotFound(_))));
        assert_eq!(iso.signals.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn exit_during_start_is_not_overwritten() {
        let (c, _) = container();
        c.set_exited(0);
        assert!(matches!(c.start().await, Err(Error::FailedPrecondition(_))));
        assert_eq!(c.status(), Status::Stopped);
    }
}
