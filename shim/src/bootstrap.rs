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
        remove_dead_socket(&self.bundle.join("address"));
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

/// Removes the unix socket named by the bundle's `address` file when no
/// server listens on it any more. A shim server removes its socket when it
/// shuts down; one that was killed leaves it in `/run/containerd/s`, one
/// file per crashed shim, forever. A socket that still accepts connections
/// (the shim of a pod, serving other containers) is kept.
fn remove_dead_socket(address_file: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(address) = std::fs::read_to_string(address_file) else {
        return;
    };
    let path = std::path::Path::new(address.trim().trim_start_matches("unix://"));
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("removing the dead shim's socket {}: {e}", path.display());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::remove_dead_socket;

    #[test]
    fn a_dead_shims_socket_is_removed_a_live_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (live, dead) = (dir.path().join("live"), dir.path().join("dead"));
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        // Dropping a listener closes it but leaves its file, as a killed shim does.
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        for socket in [&live, &dead] {
            let address = socket.with_extension("address");
            std::fs::write(&address, format!("unix://{}", socket.display())).unwrap();
            remove_dead_socket(&address);
        }
        assert!(live.exists(), "a socket with a server was removed");
        assert!(!dead.exists(), "the dead socket was kept");
        // No address file, or one naming nothing: nothing happens.
        remove_dead_socket(&dir.path().join("missing"));
    }
}
