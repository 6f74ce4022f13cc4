//! [`ShimMain`]: the shim binary's life as containerd drives it: `start`
//! (fork the server and print its address), serve, `delete` (clean up after a
//! shim that died). This is where the layers are put together: the task
//! service gets a launcher of worker processes, containerd's images (for
//! artifact images) and containerd's event publisher.
//!
//! `start` places a container: with the others of its pod (CRI sandbox id),
//! else in a shared shim of up to `WASMSHIM_CONTAINERS_PER_SHIM` containers
//! ([`crate::group`]), or in one of its own when that limit is 1.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Flags, StartOpts};

use crate::group::{self, NamespaceLock, Placement, SharedGroup};
use crate::instance::Launcher;
use crate::oci::image::ContainerdImages;
use crate::sys::freezer::Freezable;
use crate::sys::mount_ns::MountNamespace;
use crate::sys::process::ProcessIsolation;
use crate::sys::runc::RuncIsolation;
use crate::task::events::{timestamp, ContainerdEvents};
use crate::task::service::{TaskService, IDLE_CHECK, IDLE_PATIENCE};
use crate::{exit, logging, oci};

/// The shim's configuration of the `containerd-shim` crate.
pub fn shim_config() -> Config {
    Config {
        // Workers are tokio children; tokio reaps them and reports their status.
        no_reaper: true,
        // `logging` writes to a live container's log fifo, not only the first one's.
        no_setup_logger: true,
        ..Default::default()
    }
}

/// containerd's view of one shim process.
pub struct ShimMain {
    namespace: String,
    /// containerd's gRPC address (`-address`), where artifact images are read.
    containerd: String,
    id: String,
    bundle: PathBuf,
    /// The ttrpc address this server listens on (`-socket`).
    socket: String,
    exit: Arc<ExitSignal>,
}

impl ShimMain {
    /// The composition of the lifecycle: Wasm containers in workers of the
    /// engine's binary (paused by their cgroup's freezer), Linux containers
    /// through runc.
    fn launcher(&self) -> Launcher {
        let wasm = ProcessIsolation::worker_binary().expect("the shim binary has a path");
        Launcher::new(Arc::new(Freezable::new(Arc::new(wasm))))
            .with_linux(Arc::new(RuncIsolation::new(&self.namespace)))
            .with_images(ContainerdImages::new(&self.containerd, &self.namespace))
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
        if !matches!(flags.action.as_str(), "start" | "delete") {
            // The server: the crate's logger is off (`no_setup_logger`).
            logging::init(&bundle, flags.debug);
            match crate::sys::mount_ns::outcome() {
                Some(MountNamespace::Own) => {
                    log::debug!("rootfs mounts go to this shim's own mount namespace")
                }
                Some(MountNamespace::HostNotShared) => log::debug!(
                    "the host's / is not a shared mount: rootfs mounts go to the host's namespace"
                ),
                Some(MountNamespace::HostFailed(e)) => log::warn!(
                    "no mount namespace of the shim's own ({e}): rootfs mounts go to the host's"
                ),
                None => {}
            }
        }
        ShimMain {
            namespace: flags.namespace.clone(),
            containerd: flags.address.clone(),
            id: flags.id.clone(),
            bundle,
            socket: flags.socket.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        use containerd_shim::Error::InvalidArgument;
        // Containers of one pod share a shim process, as with runc.
        let alone = match oci::pod_sandbox_id(&self.bundle) {
            Some(pod) => Some(pod),
            None => (group::containers_per_shim().map_err(InvalidArgument)? == 1)
                .then(|| opts.id.clone()),
        };
        if let Some(grouping) = alone {
            let address = spawn(opts, &grouping, Vec::new()).await?;
            containerd_shim::asynchronous::util::write_str_to_file(
                self.bundle.join("address"),
                &address,
            )
            .await?;
            return Ok(address);
        }
        self.start_in_shared_group(opts).await
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
        // The server started in its first container's bundle, which a shared
        // shim outlives: runc and path lookups fail in a deleted directory.
        let _ = std::env::set_current_dir("/");
        self.exit.wait().await;
        // containerd-shim removes the socket named by `address` in the
        // working directory after this returns (pods, one-container shims).
        // A bundle removed before its Create came has no `address` any more.
        if std::env::set_current_dir(&self.bundle).is_err() {
            let _ = std::fs::remove_file(group::socket_path(&self.socket));
        }
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let service = TaskService::new(
            self.launcher(),
            Arc::new(ContainerdEvents::new(publisher, &self.namespace)),
            self.exit.clone(),
        )
        .with_group(SharedGroup::of_bundle(&self.bundle, &self.socket));
        service.watch_idle(self.bundle.clone(), IDLE_CHECK, IDLE_PATIENCE);
        service
    }
}

impl ShimMain {
    /// Places a container outside any pod in the fullest live shared shim
    /// with room, or spawns a shim for a new group (see [`crate::group`]).
    async fn start_in_shared_group(&self, opts: StartOpts) -> containerd_shim::Result<String> {
        let io_error = |what: &str, e: std::io::Error| containerd_shim::Error::IoError {
            context: format!("{what} for container {}", opts.id),
            err: e,
        };
        let max = group::containers_per_shim().map_err(containerd_shim::Error::InvalidArgument)?;
        let namespace_dir = self.bundle.parent().unwrap_or(&self.bundle).to_path_buf();
        let shim = std::env::current_exe().map_err(|e| io_error("the shim binary's path", e))?;
        let (address, namespace) = (opts.address.clone(), opts.namespace.clone());
        let bundle = self.bundle.clone();
        // Blocking: the lock waits for other starts and shims of the namespace.
        let (lock, placement) = tokio::task::spawn_blocking(move || {
            let lock = NamespaceLock::take(&namespace_dir)?;
            let placement = group::join_or_found(&lock, &bundle, &shim, max, |group| {
                containerd_shim::socket_address(&address, &namespace, group)
            })?;
            Ok((lock, placement))
        })
        .await
        .map_err(|e| io_error("choosing a shim", std::io::Error::other(e)))?
        .map_err(|e| io_error("choosing a shim", e))?;
        match placement {
            // The `start` process has no log: where the container went is
            // in its bundle's claim file.
            Placement::Joined(claim) => Ok(claim.address),
            Placement::Founded(claim) => {
                // The lock is held until the new shim listens: a start that
                // waits for it then sees a live group to join.
                let group = claim.group.clone();
                // The server's `-id` is the group's: no container's id names
                // a process that outlives that container.
                let address = spawn(
                    StartOpts {
                        id: group.clone(),
                        ..opts
                    },
                    &group,
                    Vec::new(),
                )
                .await?;
                drop(lock);
                Ok(address)
            }
        }
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
