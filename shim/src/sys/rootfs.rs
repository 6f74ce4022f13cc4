//! The container's root filesystem: containerd hands the shim the snapshot
//! mounts, the shim mounts them at `<bundle>/rootfs` and unmounts at Delete.

use std::path::Path;

use containerd_shim::protos::types::mount::Mount;

use crate::error::{Error, Result};

/// Mounts containerd's rootfs mounts at `target`, in order.
pub async fn mount(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        containerd_shim::asynchronous::util::mount_rootfs(m, target)
            .await
            .map_err(|e| {
                Error::internal(
                    format!(
                        "mounting the rootfs ({} {}) at {}",
                        m.type_,
                        m.source,
                        target.display()
                    ),
                    e,
                )
            })?;
    }
    Ok(())
}

/// Unmounts everything at and below `target`; nothing mounted is no error.
pub fn unmount(target: &Path) -> Result<()> {
    let path = target.to_string_lossy();
    containerd_shim::mount::umount_recursive(Some(&path), libc::MNT_DETACH)
        .map_err(|e| Error::internal(format!("unmounting {path}"), e))
}
