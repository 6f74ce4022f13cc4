//! [`ShimMain`]: the shim binary's life as containerd drives it: `start`
//! (fork the server and print its address), serve, `delete` (clean up after a
//! shim that died). This is where the layers are put together: the task
//! service gets a launcher of worker processes and containerd's event publisher.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Flags, StartOpts};

use crate::instance::Launcher;
use crate::sys::freezer::Freezable;
use crate::sys::process::ProcessIsolation;
use crate::sys::runc::RuncIsolation;
use crate::task::events::{timestamp, ContainerdEvents};
use crate::task::service::TaskService;
use crate::{exit, oci};

/// The shim's configuration of the `containerd-shim` crate.
pub fn shim_config() -> Config {
    Config {
        // Workers are tokio children; tokio reaps them and reports their status.
        no_reaper: true,
        ..Default::default()
    }
}

/// containerd's view of one shim process.
pub struct ShimMain {
    namespace: String,
    id: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

impl ShimMain {
    /// The composition of the lifecycle: Wasm containers in workers of this
    /// binary (paused by their cgroup's freezer), Linux containers through runc.
    fn launcher(&self) -> Launcher {
        let wasm = ProcessIsolation::current_exe().expect("the shim binary has a path");
        Launcher::new(Arc::new(Freezable::new(Arc::new(wasm))))
            .with_linux(Arc::new(RuncIsolation::new(&self.namespace)))
    }
}

#[async_trait]
impl Shim for ShimMain {
    type T = TaskService;

    async fn new(_runtime_id: &str, flags: &Flags, _config: &mut Config) -> Self {
        let bundle = if flags.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&flags.bundle)
        };
        ShimMain {
            namespace: flags.namespace.clone(),
            id: flags.id.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // Containers of one pod share a shim process, as with runc; others get their own.
        let grouping = oci::pod_sandbox_id(&self.bundle).unwrap_or_else(|| opts.id.clone());
        let address = spawn(opts, &grouping, Vec::new()).await?;
        containerd_shim::asynchronous::util::write_str_to_file(
            self.bundle.join("address"),
            &address,
        )
        .await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // The server of this container died. Its worker died with it
        // (PR_SET_PDEATHSIG); what it set up for the container must not outlive it.
        if let Err(e) = self.launcher().cleanup(&self.id, &self.bundle).await {
            log::error!("container {}: {}", self.id, e.message());
        }
        Ok(DeleteResponse {
            exit_status: exit::killed_by(libc::SIGKILL),
            exited_at: MessageField::some(timestamp(std::time::SystemTime::now())),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        TaskService::new(
            self.launcher(),
            Arc::new(ContainerdEvents::new(publisher, &self.namespace)),
            self.exit.clone(),
        )
    }
}
