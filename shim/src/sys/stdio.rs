//! The container's stdio: the fifos containerd creates, opened for the worker.
//!
//! stdout and stderr are opened read-write so that opening never blocks and a
//! write never fails for want of a reader (`ctr run -d`, then `ctr task attach`);
//! the shim closes its copies when the process exits, which is what gives the
//! reader its end-of-file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// The fifo paths of one container, as containerd sends them (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Path of the stdin fifo, or empty.
    pub stdin: String,
    /// Path of the stdout fifo, or empty.
    pub stdout: String,
    /// Path of the stderr fifo, or empty.
    pub stderr: String,
}

/// Opened stdio files, handed to the worker process as fds 0, 1 and 2.
#[derive(Debug)]
pub struct StdioFiles {
    /// The container's stdin (`/dev/null` when none).
    pub stdin: File,
    /// The container's stdout (`/dev/null` when none).
    pub stdout: File,
    /// The container's stderr (`/dev/null` when none).
    pub stderr: File,
}

impl StdioPaths {
    /// Opens the fifos; a path left empty becomes `/dev/null`.
    pub fn open(&self) -> io::Result<StdioFiles> {
        Ok(StdioFiles {
            stdin: open_input(&self.stdin)?,
            stdout: open_output(&self.stdout)?,
            stderr: open_output(&self.stderr)?,
        })
    }
}

fn open_input(path: &str) -> io::Result<File> {
    if path.is_empty() {
        return File::open("/dev/null");
    }
    // O_NONBLOCK so that opening does not wait for a writer; reads block again after.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| with_path(e, "stdin", path))?;
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty())).map_err(io::Error::from)?;
    Ok(file)
}

fn open_output(path: &str) -> io::Result<File> {
    if path.is_empty() {
        return OpenOptions::new().write(true).open("/dev/null");
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| with_path(e, "stdout/stderr", path))
}

fn with_path(err: io::Error, what: &str, path: &str) -> io::Error {
    io::Error::new(err.kind(), format!("cannot open {what} {path}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn empty_paths_are_dev_null_and_fifos_do_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        nix::unistd::mkfifo(&out, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let paths = StdioPaths {
            stdout: out.to_string_lossy().into_owned(),
            ..Default::default()
        };
        // No reader is open: opening and writing must still not block.
        let mut files = paths.open().unwrap();
        files.stdout.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        files.stdout.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        let mut empty = Vec::new();
        files.stdin.read_to_end(&mut empty).unwrap();
        assert!(empty.is_empty());
    }
}
