//! The front binary of an engine whose libraries are costly to load
//! (WasmEdge: libwasmedge and libLLVM, 23-35 ms of relocations and static
//! constructors per process on a 2-core machine). containerd runs the shim
//! binary once per container for `start`, which only chooses a shim and
//! answers its address; the front binary does that, and `delete`, without
//! the engine's libraries, and turns into the engine's server binary
//! (`<front>-server`, beside it) for everything else: the ttrpc server,
//! `-v`, `--help`. Runs in the front binary's process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// Suffix of the server binary's name: `containerd-shim-wasmedge-v1-server`
/// beside `containerd-shim-wasmedge-v1`.
pub const SERVER_SUFFIX: &str = "-server";

/// Whether the front binary runs containerd's `args` (without the program
/// name) itself: `start` and `delete`, the commands that need no engine.
pub fn runs_itself(args: &[OsString]) -> bool {
    let socket = args.iter().any(|a| a == "-socket" || a == "--socket");
    !socket
        && matches!(
            args.last().and_then(|a| a.to_str()),
            Some("start" | "delete")
        )
}

/// The server binary of the front binary at `front`.
pub fn server_of(front: &std::path::Path) -> PathBuf {
    let mut name = front.as_os_str().to_owned();
    name.push(SERVER_SUFFIX);
    PathBuf::from(name)
}

/// Replaces this process with the server binary, same arguments, same
/// environment, same descriptors (the listening socket containerd-shim's
/// `start` hands over), and the same `argv[0]`, so that `ps` and `pgrep`
/// show the shim by the name containerd ran; returns only with the reason
/// it could not.
pub fn exec_server(args: &[OsString]) -> String {
    let front = match std::env::current_exe() {
        Ok(front) => front,
        Err(e) => return format!("locating the shim binary: {e}"),
    };
    let server = server_of(&front);
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| front.clone().into());
    let e = std::process::Command::new(&server)
        .arg0(argv0)
        .args(args)
        .exec();
    format!(
        "running {}: {e} (install it beside {})",
        server.display(),
        front.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn start_and_delete_run_in_the_front_everything_else_in_the_server() {
        let start = [
            "-namespace",
            "default",
            "-id",
            "c1",
            "-address",
            "/run/c.sock",
            "start",
        ];
        assert!(runs_itself(&args(&start)));
        let delete = [
            "-namespace",
            "default",
            "-id",
            "c1",
            "-bundle",
            "/b",
            "delete",
        ];
        assert!(runs_itself(&args(&delete)));
        let serve = [
            "-namespace",
            "default",
            "-id",
            "g1",
            "-address",
            "/a",
            "-socket",
            "unix:///s",
        ];
        assert!(!runs_itself(&args(&serve)));
        for other in [&["-v"][..], &["--help"], &["-info"], &[]] {
            assert!(!runs_itself(&args(other)), "{other:?}");
        }
    }

    #[test]
    fn the_server_is_beside_the_front() {
        assert_eq!(
            server_of(std::path::Path::new(
                "/usr/local/bin/containerd-shim-wasmedge-v1"
            )),
            PathBuf::from("/usr/local/bin/containerd-shim-wasmedge-v1-server")
        );
    }
}
