//! Handing a command to runc: every container that is not WebAssembly, and
//! every command line this runtime does not parse, goes to runc unchanged.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Environment variable naming the runc binary (default: `runc` on the PATH).
pub const RUNC_ENV: &str = "WASMSHIM_RUNC";

/// Replaces this process with runc, given this process's arguments.
pub fn exec(argv: &[OsString]) -> ! {
    let runc = match find() {
        Ok(runc) => runc,
        Err(e) => {
            log::error!("{e}");
            eprintln!("wasmshim-oci: {e}");
            std::process::exit(1);
        }
    };
    let err = std::process::Command::new(&runc).args(&argv[1..]).exec();
    let message = format!("cannot run {}: {err}", runc.display());
    log::error!("{message}");
    eprintln!("wasmshim-oci: {message}");
    std::process::exit(1);
}

/// The runc binary: [`RUNC_ENV`], or the first `runc` on the PATH that is not this binary.
pub fn find() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(RUNC_ENV) {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().and_then(|p| p.canonicalize()).ok();
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join("runc"))
        .find(|candidate| is_other_executable(candidate, me.as_deref()))
        .ok_or_else(|| {
            "runc not found on the PATH: Linux containers need it (apt-get install runc, or set WASMSHIM_RUNC)".to_string()
        })
}

fn is_other_executable(path: &Path, me: Option<&Path>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = path.metadata() else {
        return false;
    };
    meta.is_file()
        && meta.permissions().mode() & 0o111 != 0
        && path.canonicalize().ok().as_deref() != me
}
