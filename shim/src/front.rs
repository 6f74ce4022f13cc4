//! The front binary of an engine whose libraries are costly to load
//! (WasmEdge: libwasmedge and libLLVM, 23-35 ms of relocations and static
//! constructors per process on a 2-core machine).
//!
//! containerd runs the shim binary for every container (`start`) and waits
//! for the shim server it spawns to listen before it sends Create. The front
//! binary runs `start`, `delete` and the server without the engine's
//! libraries. Its server spawns the template (see [`crate::sys::template`])
//! from the *engine binary* beside it (`<front>-engine`), which loads the
//! engine while containerd connects and sends Create; the template forks
//! the workers, which run the modules. `-v`, `--help` and `-info` exec the
//! engine binary. Runs in the front binary's process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Suffix of the engine binary's name: `containerd-shim-wasmedge-v1-engine`
/// beside `containerd-shim-wasmedge-v1`.
pub const ENGINE_SUFFIX: &str = "-engine";

/// Whether the front binary runs containerd's `args` (without the program
/// name) itself: `start`, `delete` and the server (`-socket`), which need no
/// engine.
pub fn runs_itself(args: &[OsString]) -> bool {
    let serves = args.iter().any(|a| a == "-socket" || a == "--socket");
    serves
        || matches!(
            args.last().and_then(|a| a.to_str()),
            Some("start" | "delete")
        )
}

/// The engine binary of the front binary at `front`.
pub fn engine_binary_of(front: &Path) -> PathBuf {
    let mut name = front.as_os_str().to_owned();
    name.push(ENGINE_SUFFIX);
    PathBuf::from(name)
}

/// The binary this process starts workers from, when it is a front
/// binary's server (set by [`use_engine_binary`]).
static ENGINE_BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Makes the engine binary beside this front binary the one workers are
/// started from ([`worker_binary`]), and returns it.
pub fn use_engine_binary() -> std::io::Result<PathBuf> {
    let binary = engine_binary_of(&std::env::current_exe()?);
    Ok(ENGINE_BINARY.get_or_init(|| binary).clone())
}

/// The binary that runs the engine, which templates and workers are started
/// from: the engine binary in a front binary's server, else this binary.
pub fn worker_binary() -> std::io::Result<PathBuf> {
    match ENGINE_BINARY.get() {
        Some(binary) => Ok(binary.clone()),
        None => std::env::current_exe(),
    }
}

/// Whether `path` is the engine binary this front binary's server starts
/// workers from (see [`use_engine_binary`]).
pub fn is_engine_binary(path: &Path) -> bool {
    ENGINE_BINARY.get().is_some_and(|binary| binary == path)
}

/// What a front binary whose engine binary is missing says: the path it
/// looked for and where to install it.
pub fn missing_engine_binary(engine_binary: &Path, e: &std::io::Error) -> String {
    let front = engine_binary
        .to_str()
        .and_then(|s| s.strip_suffix(ENGINE_SUFFIX))
        .unwrap_or("the shim binary");
    format!(
        "running {}: {e} (install it beside {front})",
        engine_binary.display()
    )
}

/// Replaces this process with the engine binary, same arguments, same
/// environment, same descriptors, and the same `argv[0]`, so that `ps` and
/// `pgrep` show the shim by the name containerd ran; returns only with the
/// reason it could not.
pub fn exec_engine_binary(args: &[OsString]) -> String {
    let front = match std::env::current_exe() {
        Ok(front) => front,
        Err(e) => return format!("locating the shim binary: {e}"),
    };
    let engine = engine_binary_of(&front);
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| front.clone().into());
    let e = std::process::Command::new(&engine)
        .arg0(argv0)
        .args(args)
        .exec();
    missing_engine_binary(&engine, &e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn start_delete_and_the_server_run_in_the_front_the_rest_in_the_engine_binary() {
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
        assert!(runs_itself(&args(&serve)));
        for other in [&["-v"][..], &["--help"], &["-info"], &[]] {
            assert!(!runs_itself(&args(other)), "{other:?}");
        }
    }

    #[test]
    fn the_engine_binary_is_beside_the_front() {
        let engine = engine_binary_of(Path::new("/usr/local/bin/containerd-shim-wasmedge-v1"));
        assert_eq!(
            engine,
            PathBuf::from("/usr/local/bin/containerd-shim-wasmedge-v1-engine")
        );
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let said = missing_engine_binary(&engine, &missing);
        assert!(
            said.contains("/usr/local/bin/containerd-shim-wasmedge-v1-engine")
                && said.contains("install it beside /usr/local/bin/containerd-shim-wasmedge-v1"),
            "{said}"
        );
    }
}
