//! Keeps the kernel's cgroup attach lock ready while a worker is about to
//! join its cgroup.
//!
//! Runs in the shim process. Any write that moves a process or a thread
//! between cgroups (`cgroup.procs`, `tasks`, `cgroup.threads`) takes the
//! kernel's global `cgroup_threadgroup_rwsem` for writing, and after an idle
//! spell that write first waits for an RCU grace period (`rcu_sync_enter`):
//! 7-24 ms on this project's 2-core test machine, where the rest of a
//! Create takes about 3 ms. A write that comes within a grace period of the
//! previous one does not wait (0.1 ms measured). So while a Create is under
//! way, a thread of the shim (one per process, [`AttachLockWarmer`])
//! writes, every few milliseconds, its own thread id to its own cgroup
//! (`tasks` on v1, `cgroup.threads` on v2), which takes the same lock and
//! moves nothing: the thread is already there.
//!
//! Naming the thread, not the process, matters: containerd may move the
//! shim into another cgroup (`shim_cgroup`) just after it starts, and a
//! process written back into its old cgroup would undo that move; a thread
//! written back there is only the warmer, which ends soon (v2 refuses to
//! split a process anyway). The worker's real move into its container's
//! cgroup then finds the lock ready, or waits for the same grace period
//! that was already running. The shim server also writes once at startup,
//! so that the first Create of a new shim does not pay that wait alone.
//! Where the kernel does not wait (cgroup v2 mounted with `favordynmods`)
//! the writes cost microseconds; where no cgroup file of the thread can be
//! written, the warmer does nothing. The cgroup files are found from
//! `/proc/thread-self/cgroup` and the usual mount points under
//! `/sys/fs/cgroup`, not from `/proc/self/mountinfo` as `libcgroups` finds
//! them: reading that costs milliseconds where a host has many mounts.
//!
//! containerd's `start`, the first process of a new shim, begins the wait
//! earliest, 8-10 ms before the server's first Create: [`warm_from_child`]
//! writes from a child process that exits once its write returns, since a
//! write that waits would hold `start` itself, whose exit containerd awaits.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Time between two writes: less than the shortest grace period measured
/// (7 ms), so that the lock never goes idle in between.
const INTERVAL: Duration = Duration::from_millis(4);

/// The process's one warmer thread, shared by every Create under way.
struct Shared {
    /// Live [`AttachLockWarmer`]s.
    holders: usize,
    /// Whether the thread runs.
    running: bool,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    holders: 0,
    running: false,
});

fn shared() -> MutexGuard<'static, Shared> {
    SHARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps the lock warm while it lives. However many Creates run at once, a
/// process has one warmer thread: it writes once when started, then every
/// 4 ms until no `AttachLockWarmer` is left.
#[derive(Debug)]
pub struct AttachLockWarmer {
    _private: (),
}

impl AttachLockWarmer {
    /// Starts warming, or joins the thread already warming. Never fails:
    /// without a writable cgroup file (or a thread) there is nothing to warm
    /// and the shim goes on without.
    pub fn start() -> Self {
        let mut shared = shared();
        shared.holders += 1;
        if !shared.running {
            match std::thread::Builder::new()
                .name("cgroup-warmer".into())
                .spawn(warm)
            {
                Ok(_) => shared.running = true,
                Err(e) => log::debug!("cgroup attach lock not warmed: {e}"),
            }
        }
        AttachLockWarmer { _private: () }
    }

    /// Writes once (unless a warmer runs already): for the shim server's
    /// startup, a few milliseconds before its first Create.
    pub fn once() {
        drop(Self::start());
    }
}

impl Drop for AttachLockWarmer {
    fn drop(&mut self) {
        shared().holders -= 1;
    }
}

/// Begins the grace period's wait from a child process, for containerd's
/// `start`: the child closes every file it inherited (containerd reads
/// `start`'s output until no process holds it), writes its own pid to its
/// own cgroup, which moves nothing, and exits when the write returns, a
/// grace period later at most. `start` goes on at once. Returns the child's
/// pid, or `None` where no cgroup file can be written or no process forked.
/// Call it while the process has one thread.
pub fn warm_from_child() -> Option<nix::unistd::Pid> {
    let file = own_cgroup_file()?;
    // SAFETY: the child calls only async-signal-safe functions (close,
    // close_range, getpid, write, _exit) before it exits, on memory of its
    // own; the parent goes on as before.
    match unsafe { libc::fork() } {
        // SAFETY: this is the child just forked.
        0 => unsafe { write_own_pid_and_exit(file.as_raw_fd()) },
        -1 => None,
        pid => Some(nix::unistd::Pid::from_raw(pid)),
    }
}

/// The child of [`warm_from_child`]: closes every file but `fd`, writes its
/// pid to `fd` and exits.
///
/// # Safety
/// Only in a child just forked: the files closed are the process's.
unsafe fn write_own_pid_and_exit(fd: RawFd) -> ! {
    // SAFETY: see above; `pid` is a live buffer of the length given.
    unsafe {
        for other in 0..fd {
            libc::close(other);
        }
        let first_after = (fd + 1) as libc::c_uint;
        libc::syscall(libc::SYS_close_range, first_after, libc::c_uint::MAX, 0);
        let mut buffer = [0u8; 10];
        let pid = decimal(libc::getpid() as u32, &mut buffer);
        // Refused or not, the kernel took the lock first (see `warm`).
        libc::write(fd, pid.as_ptr().cast(), pid.len());
        libc::_exit(0)
    }
}

/// `n` in decimal digits, written to the end of `buffer`, without allocating
/// (for the child of [`warm_from_child`]).
fn decimal(mut n: u32, buffer: &mut [u8; 10]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buffer[start..];
        }
    }
}

/// The warmer thread: one write, then one every [`INTERVAL`] while an
/// [`AttachLockWarmer`] lives.
fn warm() {
    let Some(mut file) = own_cgroup_file() else {
        log::debug!("cgroup attach lock not warmed: no writable cgroup file of this thread");
        shared().running = false;
        return;
    };
    let tid = nix::unistd::gettid().to_string();
    loop {
        // An error (v2 refuses to move one thread of a process) comes after
        // the kernel took the lock: it warms all the same.
        let _ = file.write_all(tid.as_bytes());
        {
            let mut shared = shared();
            if shared.holders == 0 {
                shared.running = false;
                return;
            }
        }
        std::thread::sleep(INTERVAL);
    }
}

/// The first cgroup file of the calling thread (see [`candidates`]) that
/// opens for writing, if any: what both warmers write to.
fn own_cgroup_file() -> Option<std::fs::File> {
    let text = std::fs::read_to_string("/proc/thread-self/cgroup").unwrap_or_default();
    candidates(&text)
        .into_iter()
        .find_map(|path| std::fs::OpenOptions::new().write(true).open(path).ok())
}

/// Where a thread's cgroups usually are, for the `text` of its
/// `/proc/thread-self/cgroup`: for a v1 line `N:cpu,cpuacct:/path`, the
/// `tasks` file of `/sys/fs/cgroup/cpu,cpuacct/path` and of one directory
/// per controller; for the v2 line `0::/path`, `cgroup.threads` of
/// `/sys/fs/cgroup/path` and `/sys/fs/cgroup/unified/path`.
fn candidates(text: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        let mut dirs: Vec<String> = Vec::new();
        let file = if controllers.is_empty() {
            dirs.extend(["".to_string(), "unified".to_string()]);
            "cgroup.threads"
        } else {
            dirs.push(controllers.trim_start_matches("name=").to_string());
            if controllers.contains(',') {
                dirs.extend(controllers.split(',').map(str::to_string));
            }
            "tasks"
        };
        for dir in dirs {
            paths.push(
                PathBuf::from("/sys/fs/cgroup")
                    .join(dir)
                    .join(path)
                    .join(file),
            );
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_v1_and_v2_lines() {
        let text = "9:name=systemd:/\n4:cpu,cpuacct:/a/b\n0::/user.slice/x\n";
        let paths: Vec<String> = candidates(text)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/sys/fs/cgroup/systemd/tasks",
                "/sys/fs/cgroup/cpu,cpuacct/a/b/tasks",
                "/sys/fs/cgroup/cpu/a/b/tasks",
                "/sys/fs/cgroup/cpuacct/a/b/tasks",
                "/sys/fs/cgroup/user.slice/x/cgroup.threads",
                "/sys/fs/cgroup/unified/user.slice/x/cgroup.threads",
            ]
        );
        assert!(candidates("garbage\n").is_empty());
    }

    #[test]
    fn decimal_writes_digits() {
        let mut buffer = [0u8; 10];
        assert_eq!(decimal(0, &mut buffer), b"0");
        assert_eq!(decimal(4_194_304, &mut buffer), b"4194304");
        assert_eq!(decimal(u32::MAX, &mut buffer), b"4294967295");
    }

    /// The child moves nothing, ends by itself (a grace period at most) and
    /// exits 0; without a writable cgroup file (not root) there is none.
    #[test]
    fn warming_from_a_child_moves_nothing_and_ends() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let writable = candidates(&before)
            .iter()
            .any(|path| std::fs::OpenOptions::new().write(true).open(path).is_ok());
        let child = warm_from_child();
        assert_eq!(child.is_some(), writable);
        if let Some(pid) = child {
            let status = nix::sys::wait::waitpid(pid, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
        }
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
    }

    /// The warmer moves nothing: this test process stays in the cgroups it
    /// was in, and the warmer's thread ends once no warmer is left.
    #[test]
    fn warming_moves_nothing_and_stops() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let (first, second) = (AttachLockWarmer::start(), AttachLockWarmer::start());
        std::thread::sleep(INTERVAL * 3);
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
        drop(first);
        std::thread::sleep(INTERVAL * 3);
        let text = std::fs::read_to_string("/proc/thread-self/cgroup").unwrap();
        let writable = candidates(&text)
            .iter()
            .any(|path| std::fs::OpenOptions::new().write(true).open(path).is_ok());
        // Without a writable cgroup file (not root) the thread ends at once.
        assert_eq!(shared().running, writable, "one warmer is left");
        drop(second);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while shared().running && std::time::Instant::now() < deadline {
            std::thread::sleep(INTERVAL);
        }
        assert!(!shared().running, "the warmer thread did not end");
    }
}
