//! Exit statuses, written down once: how the end of a container's process
//! becomes the number containerd (and `ctr`) report.
//!
//! - the module returned from its entry function → 0;
//! - the module called `proc_exit(n)` → n;
//! - the process was killed by signal n → 128 + n (SIGTERM 143, SIGKILL 137), as runc reports;
//! - the module trapped, or the engine failed while running it → [`TRAP`] (134).

use std::os::unix::process::ExitStatusExt;

/// Status of a process killed by `signal`: 128 + the signal number.
pub const fn killed_by(signal: i32) -> u32 {
    128 + signal as u32
}

/// Status of a container whose module trapped: 134, i.e. killed by SIGABRT,
/// as the wasmtime CLI reports a trap.
pub const TRAP: i32 = killed_by(libc::SIGABRT) as i32;

/// Status when the process's end cannot be known (its wait failed).
pub const UNKNOWN: u32 = 255;

/// The status containerd reports for a process that ended with `status`.
pub fn from_wait_status(status: std::process::ExitStatus) -> u32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u32,
        (None, Some(signal)) => killed_by(signal),
        (None, None) => UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::ExitStatus;

    #[test]
    fn documented_numbers() {
        assert_eq!(TRAP, 134);
        assert_eq!(killed_by(libc::SIGKILL), 137);
        assert_eq!(killed_by(libc::SIGTERM), 143);
    }

    #[test]
    fn wait_status_maps_code_and_signal() {
        // Raw wait statuses: exit code in the high byte, signal in the low bits.
        assert_eq!(from_wait_status(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(from_wait_status(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(from_wait_status(ExitStatus::from_raw(0)), 0);
    }
}
