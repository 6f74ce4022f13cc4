//! The shim server's own mount namespace: its containers' rootfs mounts stay
//! out of the host's mount table.
//!
//! Every container's rootfs is a mount. In the host's namespace, 1,000
//! containers make `/proc/self/mountinfo` 1,000 lines longer for every
//! process on the node, and whatever reads it pays for each line: `libcgroups`
//! (cgroup v1) reads it to the end once per controller the kernel does not
//! mount, at every container's Create, and unmounting a rootfs reads it too.
//! So the server, before it has a thread, enters a mount namespace of its
//! own and makes it a *slave* of the host's: mounts the host makes later
//! (network namespaces, volumes, a cache filesystem) still appear in it, and
//! the rootfs mounts the server makes appear nowhere else. When the last
//! process of the shim ends, the kernel drops its mounts with the namespace.
//!
//! Only done when the host's `/` is a shared mount (systemd makes it so on
//! every boot). On a host whose `/` is private, a slave would never see a
//! mount made after the shim started, so the server stays in the host's
//! namespace, as before.

use std::sync::OnceLock;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Where the server's mounts go: what [`enter_own`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountNamespace {
    /// A namespace of the server's own, a slave of the host's.
    Own,
    /// The host's: its `/` is not shared, so a slave would miss later mounts.
    HostNotShared,
    /// The host's: entering one failed (the error).
    HostFailed(String),
}

static OUTCOME: OnceLock<MountNamespace> = OnceLock::new();

/// Enters a mount namespace of this process's own, a slave of the current
/// one, if `/` is shared. Call it first thing in the server, while the
/// process has a single thread (a thread created before would stay behind).
pub fn enter_own() -> &'static MountNamespace {
    OUTCOME.get_or_init(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if !root_is_shared(&mountinfo) {
            return MountNamespace::HostNotShared;
        }
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
            return MountNamespace::HostFailed(format!("unshare(CLONE_NEWNS): {e}"));
        }
        // Until this, the copies are still peers of the host's mounts.
        match mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => MountNamespace::Own,
            Err(e) => MountNamespace::HostFailed(format!("making / a slave: {e}")),
        }
    })
}

/// What [`enter_own`] did, if it ran in this process.
pub fn outcome() -> Option<&'static MountNamespace> {
    OUTCOME.get()
}

/// Whether the mount at `/` (the last one listed there: the one on top) is
/// shared, per `/proc/self/mountinfo`: `ID PARENT MAJ:MIN ROOT MOUNTPOINT
/// OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER`, with `shared:N` among the
/// optional fields.
fn root_is_shared(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .rfind(|line| line.split_whitespace().nth(4) == Some("/"))
        .is_some_and(|line| {
            line.split_whitespace()
                .skip(6)
                .take_while(|field| *field != "-")
                .any(|field| field.starts_with("shared:"))
        })
}

#[cfg(test)]
mod tests {
    use super::root_is_shared;

    #[test]
    fn a_shared_root_is_told_from_a_private_one() {
        let shared = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                      23 22 0:21 / /proc rw,relatime shared:12 - proc proc rw\n";
        assert!(root_is_shared(shared));
        let private = "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n\
                       23 22 0:21 / /proc rw,relatime shared:12 - proc proc rw\n";
        assert!(!root_is_shared(private));
        // A slave of a shared root receives, but is not shared itself.
        let slave = "22 1 8:1 / / rw,relatime master:1 - ext4 /dev/vda rw\n";
        assert!(!root_is_shared(slave));
        // The mount on top of `/` counts, not the one it hides.
        let stacked = "22 1 8:1 / / rw shared:1 - ext4 /dev/vda rw\n\
                       40 22 0:50 / / rw - overlay overlay rw\n";
        assert!(!root_is_shared(stacked));
        assert!(!root_is_shared(""));
    }
}
