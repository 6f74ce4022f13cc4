//! Process file descriptors: a handle on one process that a later process
//! with the same pid can never be mistaken for (Linux ≥ 5.3).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
