//! The container's terminal (`process.terminal`, `docker run -t`), as runc
//! provides it: `create` opens a pty, gives its slave to the worker as stdio
//! and controlling terminal, and sends its master over the caller's
//! `--console-socket` (SCM_RIGHTS, with runc's payload `/dev/ptmx`); the
//! caller (containerd's runc shim, conmon) then relays the master. Runs in
//! the `create` process, which closes its copies when it exits.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::pty::{openpty, Winsize};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use oci_spec::runtime::Spec;

/// What runc writes beside the master's descriptor (the name of its file).
const MASTER_NAME: &[u8] = b"/dev/ptmx";

/// A pty whose master is still to be sent to the console socket.
pub struct Console {
    socket: UnixStream,
    master: OwnedFd,
    slave: OwnedFd,
}

impl Console {
    /// The container's terminal, if its spec asks for one: connects to
    /// `console_socket` (required then, refused otherwise) and opens a pty
    /// of `process.consoleSize`. Nothing is left behind on error.
    pub fn for_spec(spec: &Spec, console_socket: Option<&Path>) -> anyhow::Result<Option<Console>> {
        let process = spec.process().as_ref();
        let terminal = process.and_then(|p| p.terminal()).unwrap_or(false);
        let socket_path = match (terminal, console_socket) {
            (false, None) => return Ok(None),
            (false, Some(path)) => bail!(
                "--console-socket {} given, but process.terminal is false",
                path.display()
            ),
            (true, None) => {
                bail!("process.terminal is true (docker run -t), but no --console-socket was given")
            }
            (true, Some(path)) => path,
        };
        let socket = UnixStream::connect(socket_path).with_context(|| {
            format!("connecting to the console socket {}", socket_path.display())
        })?;
        let size = process.and_then(|p| p.console_size()).map(|b| Winsize {
            ws_row: u16::try_from(b.height()).unwrap_or(u16::MAX),
            ws_col: u16::try_from(b.width()).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let pty = openpty(size.as_ref(), None).context("opening a pty for the terminal")?;
        // Neither end may leak into the worker beyond the slave it gets as stdio.
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .context("marking the pty close-on-exec")?;
        }
        Ok(Some(Console {
            socket,
            master: pty.master,
            slave: pty.slave,
        }))
    }

    /// The slave: the worker's stdio and controlling terminal.
    pub fn slave(&self) -> &OwnedFd {
        &self.slave
    }

    /// Sends the master to the console socket, then closes this process's
    /// copies of both ends and of the socket.
    pub fn send_master(self) -> anyhow::Result<()> {
        let fds = [self.master.as_raw_fd()];
        sendmsg::<UnixAddr>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(MASTER_NAME)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .context("sending the terminal's master to the console socket")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(terminal: bool) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"terminal": terminal, "args": ["/m.wasm"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0},
                        "consoleSize": {"height": 33, "width": 101}},
            "root": {"path": "rootfs"}
        }))
        .unwrap()
    }

    #[test]
    fn terminal_and_console_socket_go_together() {
        assert!(Console::for_spec(&spec(false), None).unwrap().is_none());
        let err = Console::for_spec(&spec(true), None).err().unwrap();
        assert!(
            format!("{err:#}").contains("no --console-socket"),
            "{err:#}"
        );
        let err = Console::for_spec(&spec(false), Some(Path::new("/tmp/x.sock")))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("terminal is false"), "{err:#}");
        let err = Console::for_spec(&spec(true), Some(Path::new("/nonexistent/c.sock")))
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/c.sock"),
            "{err:#}"
        );
    }

    #[test]
    fn the_master_arrives_with_runcs_payload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let console = Console::for_spec(&spec(true), Some(&path))
            .unwrap()
            .unwrap();
        console.send_master().unwrap();
        let (stream, _) = listener.accept().unwrap();
        let mut payload = [0u8; 64];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut payload)];
        let msg = nix::sys::socket::recvmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a descriptor");
        let len = msg.bytes;
        assert_eq!(&payload[..len], MASTER_NAME);
        // The descriptor that arrived is a pty master.
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        nix::unistd::close(fd).unwrap();
        assert_eq!(target, Path::new("/dev/ptmx"));
    }
}
