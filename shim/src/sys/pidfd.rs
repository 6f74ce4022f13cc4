//! Process file descriptors: a handle on one process that a later process
//! with the same pid can never be mistaken for (Linux ≥ 5.3).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;

use crate::error::{Error, Result};

/// A pidfd of a live child process.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`. Call it while `pid` is an unreaped child of
    /// this process, so the number cannot have been reused yet.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags, no pointers; on success it
        // returns a new descriptor that nothing else owns.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Sends signal number `signal` to the process, whose pid is `pid` (for
    /// messages): [`Error::NotFound`] once it has ended, as containerd expects.
    pub fn signal(&self, pid: u32, signal: u32) -> Result<()> {
        let sig = Signal::try_from(signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        match self.send_signal(sig as i32) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                Err(Error::NotFound(format!("process {pid} already finished")))
            }
            Err(e) => Err(Error::internal(
                format!("sending {sig} to process {pid}"),
                e,
            )),
        }
    }

    /// Waits until the process (a child of this process) ends, reaps it and
    /// returns its exit status as [`crate::exit`] defines it. Needs no
    /// thread: the pidfd becomes readable when the process exits.
    pub async fn wait(&self) -> u32 {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        /// The descriptor as tokio's reactor sees it; `self` keeps it open.
        struct Raw(std::os::fd::RawFd);
        impl AsRawFd for Raw {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.0
            }
        }
        // SAFETY: the descriptor stays open and unchanged while registered:
        // `self` owns it and outlives `readable`, a local of this function.
        let readable = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                Raw(self.0.as_raw_fd()),
                tokio::io::Interest::READABLE,
            )
        };
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
            match waitid(Id::PIDFd(self.0.as_fd()), flags) {
                Ok(WaitStatus::Exited(_, code)) => return code as u32,
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    return crate::exit::killed_by(signal as i32)
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("waiting for a worker process: {e}");
                    return crate::exit::UNKNOWN;
                }
            }
            match &readable {
                Ok(fd) => match fd.readable().await {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                },
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// Sends `signal` to the process; `ESRCH` once it has been reaped.
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: the descriptor is valid for the life of `self`; a null siginfo
        // asks the kernel to fill it in as kill(2) would; flags must be 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_reaches_the_child_and_never_a_reaped_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        fd.send_signal(libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(crate::exit::from_wait_status(status), 137);
        // Reaped: its pid may belong to someone else now, the pidfd does not.
        let err = fd.send_signal(libc::SIGKILL).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
