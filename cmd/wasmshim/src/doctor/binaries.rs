//! The binaries containerd runs: finding containerd, the shims and runc where
//! containerd looks for them, asking each for its `--version` (with a
//! timeout), and checks 1 (shims), 2a (containerd) and 3 (runc). Runs in the
//! CLI process.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use wasmshim::engine::EngineEntry;

use super::{first_line, runtime_type, shim_binary, show_dirs, Finding};

/// Where containerd finds binaries besides its own PATH (a systemd unit's PATH).
pub const STANDARD_DIRS: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin"];
/// How long a binary may take to answer `--version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Where containerd looks for shims and runc: the directories of `path_var`
/// (absolute ones), then [`STANDARD_DIRS`], each once.
pub fn search_dirs(path_var: Option<&OsStr>) -> Vec<PathBuf> {
    let from_path = path_var.map(std::env::split_paths).into_iter().flatten();
    let standard = STANDARD_DIRS.iter().map(PathBuf::from);
    from_path
        .chain(standard)
        .filter(|d| d.is_absolute())
        .fold(Vec::new(), with_dir)
}

/// `dirs` with `dir` appended unless it is there already.
pub fn with_dir(mut dirs: Vec<PathBuf>, dir: PathBuf) -> Vec<PathBuf> {
    if !dirs.contains(&dir) {
        dirs.push(dir);
    }
    dirs
}

/// What looking a binary up in a list of directories found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The first executable file of that name.
    Found(PathBuf),
    /// Only a file that is not executable (which containerd skips).
    NotExecutable(PathBuf),
    /// Nothing.
    Missing,
}

impl Lookup {
    /// True when a file of that name exists, executable or not.
    pub fn is_present(&self) -> bool {
        !matches!(self, Lookup::Missing)
    }
}

/// Looks `name` up in `dirs` the way `exec.LookPath` does.
pub fn look_up(name: &str, dirs: &[PathBuf]) -> Lookup {
    let files: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .collect();
    match files.iter().find(|p| is_executable(p)) {
        Some(path) => Lookup::Found(path.clone()),
        None => files
            .first()
            .cloned()
            .map_or(Lookup::Missing, Lookup::NotExecutable),
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Runs `binary --version` for at most 5 s: its standard output, or why there is none.
pub fn version_output(binary: &Path) -> Result<String, String> {
    let child =
        spawn_version(binary).map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = match rx.recv_timeout(VERSION_TIMEOUT) {
        Ok(output) => output.map_err(|e| format!("running {}: {e}", binary.display()))?,
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                // The waiting thread reaps it.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(format!(
                "`{} --version` gave no answer in {} s",
                binary.display(),
                VERSION_TIMEOUT.as_secs()
            ));
        }
    };
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(format!(
        "`{} --version` failed ({}): {}",
        binary.display(),
        output.status,
        first_line(&String::from_utf8_lossy(&output.stderr))
    ))
}

fn spawn_version(binary: &Path) -> io::Result<Child> {
    let mut busy = 0;
    loop {
        let spawned = Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            // A binary being written right now (`make install`, a test's script).
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && busy < 20 => {
                busy += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

// ---- 1. Shims --------------------------------------------------------------

/// `containerd-shim-<engine>-v1 --version` in a few words, e.g. `0.1.0 (abc1234, wasmtime 48.0.8)`.
pub fn shim_version_summary(output: &str) -> String {
    let field = |name: &str| {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    match (field("Version:"), field("Revision:"), field("Engine:")) {
        (Some(v), Some(r), Some(e)) => format!("{v} ({r}, {e})"),
        _ => first_line(output).to_string(),
    }
}

/// Check 1: the shim of `engine` where containerd looks (`dirs`), executable,
/// answering `--version`. `wanted`: whether its absence is a problem.
pub fn check_shim(
    engine: &EngineEntry,
    lookup: &Lookup,
    dirs: &[PathBuf],
    wanted: bool,
) -> Finding {
    let name = shim_binary(engine.name);
    match lookup {
        Lookup::Found(path) => match version_output(path) {
            Ok(out) => Finding::ok(format!(
                "{name} {} at {}",
                shim_version_summary(&out),
                path.display()
            )),
            Err(why) => {
                let fix = match engine.needs {
                    Some(lib) => format!("install {lib} (see its line below), or rebuild and reinstall the shim (`make install`)"),
                    None => "rebuild and reinstall it (`make install` in a wasmshim checkout)".into(),
                };
                Finding::fail(name, why, fix)
            }
        },
        Lookup::NotExecutable(path) => Finding::fail(
            name,
            format!("{} is not executable, so containerd skips it", path.display()),
            format!("chmod 0755 {}", path.display()),
        ),
        Lookup::Missing if wanted => Finding::fail(
            name,
            format!("not found where containerd looks ({})", show_dirs(dirs)),
            "`make install` in a wasmshim checkout (puts it in /usr/local/bin), or copy the binary into one of those directories",
        ),
        Lookup::Missing => Finding::skip(
            name,
            format!("not installed (needed only to run {} containers)", runtime_type(engine.name)),
        ),
    }
}

// ---- 2a. containerd ------------------------------------------------------

/// containerd's version, from `containerd --version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdVersion {
    /// The version as printed, without a leading `v`, e.g. `1.6.20~ds1`.
    pub version: String,
    /// The major version: 1 or 2.
    pub major: u32,
}

impl ContainerdVersion {
    /// Reads `containerd --version` output, e.g.
    /// `containerd github.com/containerd/containerd/v2 v2.0.2 c507a02`.
    pub fn parse(output: &str) -> Option<Self> {
        first_line(output).split_whitespace().find_map(|word| {
            let version = word.strip_prefix('v').unwrap_or(word);
            let (major, _) = version.split_once('.')?;
            let major = major.parse().ok()?;
            Some(ContainerdVersion {
                version: version.to_string(),
                major,
            })
        })
    }
}

impl fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "containerd {}", self.version)
    }
}

/// Check 2a: containerd is installed; its version when it is.
pub fn check_containerd(lookup: &Lookup, dirs: &[PathBuf]) -> (Finding, Option<ContainerdVersion>) {
    let path = match lookup {
        Lookup::Found(path) => path,
        _ => {
            let why = format!("containerd not found in {}", show_dirs(dirs));
            return (
                Finding::fail("containerd", why, "apt-get install containerd"),
                None,
            );
        }
    };
    let fix = "reinstall it (apt-get install --reinstall containerd)";
    match version_output(path).map(|out| (ContainerdVersion::parse(&out), out)) {
        Ok((Some(version), _)) => (
            Finding::ok(format!("{version} at {}", path.display())),
            Some(version),
        ),
        Ok((None, out)) => {
            let why = format!(
                "`containerd --version` printed {:?}, no version",
                first_line(&out)
            );
            (Finding::fail("containerd", why, fix), None)
        }
        Err(why) => (Finding::fail("containerd", why, fix), None),
    }
}

// ---- 3. runc ---------------------------------------------------------------

/// Check 3: runc, which runs the Linux containers of a pod (its pause container too).
pub fn check_runc(lookup: &Lookup, dirs: &[PathBuf]) -> Finding {
    let Lookup::Found(path) = lookup else {
        let why = format!(
            "not found in {}: pods cannot start their Linux containers",
            show_dirs(dirs)
        );
        return Finding::fail("runc", why, "apt-get install runc");
    };
    match version_output(path) {
        Ok(out) => {
            let line = first_line(&out);
            let version = line.strip_prefix("runc version ").unwrap_or(line);
            Finding::ok(format!("runc {version} at {}", path.display()))
        }
        Err(why) => Finding::fail("runc", why, "apt-get install --reinstall runc"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fixtures::{script, why_and_fix, SHIM_VERSION, WASMEDGE, WASMTIME};
    use crate::doctor::Status;

    #[test]
    fn parses_containerd_versions() {
        let debian =
            "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n";
        let parsed = ContainerdVersion::parse(debian).unwrap();
        assert_eq!((parsed.version.as_str(), parsed.major), ("1.6.20~ds1", 1));
        let upstream = "containerd github.com/containerd/containerd/v2 v2.0.2 c507a0257ea6462fbd6f5ba4f5c74facb04021f4\n";
        let parsed = ContainerdVersion::parse(upstream).unwrap();
        assert_eq!((parsed.version.as_str(), parsed.major), ("2.0.2", 2));
        assert_eq!(ContainerdVersion::parse("containerd: unknown flag\n"), None);
    }

    #[test]
    fn shim_in_a_path_dir_is_found_and_answers_version() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        let dirs = vec![tmp.path().join("empty"), bin.clone()];
        let lookup = look_up("containerd-shim-wasmtime-v1", &dirs);
        assert_eq!(lookup, Lookup::Missing);
        let finding = check_shim(&WASMTIME, &lookup, &dirs, true);
        let (why, _) = why_and_fix(&finding);
        assert_eq!(
            why,
            format!(
                "not found where containerd looks ({}/empty:{})",
                tmp.path().display(),
                bin.display()
            )
        );
        assert!(matches!(
            check_shim(&WASMTIME, &lookup, &dirs, false).status,
            Status::Skip { .. }
        ));

        let path = script(&bin, "containerd-shim-wasmtime-v1", SHIM_VERSION);
        let lookup = look_up("containerd-shim-wasmtime-v1", &dirs);
        assert_eq!(lookup, Lookup::Found(path.clone()));
        assert_eq!(
            check_shim(&WASMTIME, &lookup, &dirs, true).to_string(),
            format!(
                "ok   containerd-shim-wasmtime-v1 0.1.0 (abc1234, wasmtime 48.0.8) at {}",
                path.display()
            )
        );
    }

    #[test]
    fn shim_that_cannot_start_or_is_not_executable_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        let body = "echo 'error while loading shared libraries: libwasmedge.so.0: cannot open shared object file' >&2; exit 127";
        let path = script(&bin, "containerd-shim-wasmedge-v1", body);
        let finding = check_shim(
            &WASMEDGE,
            &Lookup::Found(path),
            std::slice::from_ref(&bin),
            true,
        );
        let (why, fix) = why_and_fix(&finding);
        assert!(why.ends_with("error while loading shared libraries: libwasmedge.so.0: cannot open shared object file"), "{finding}");
        assert!(fix.starts_with("install libwasmedge"), "{finding}");

        let plain = tmp.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("containerd-shim-wasmtime-v1"), "#!/bin/sh\n").unwrap();
        let lookup = look_up("containerd-shim-wasmtime-v1", std::slice::from_ref(&plain));
        assert_eq!(
            lookup,
            Lookup::NotExecutable(plain.join("containerd-shim-wasmtime-v1"))
        );
        let finding = check_shim(&WASMTIME, &lookup, std::slice::from_ref(&plain), true);
        assert_eq!(
            why_and_fix(&finding).1,
            format!("chmod 0755 {}/containerd-shim-wasmtime-v1", plain.display())
        );
        // Like containerd, skip the file that is not executable for a later one that is.
        let good = script(&bin, "containerd-shim-wasmtime-v1", SHIM_VERSION);
        assert_eq!(
            look_up("containerd-shim-wasmtime-v1", &[plain, bin]),
            Lookup::Found(good)
        );
    }

    #[test]
    fn version_that_never_answers_is_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let path = script(tmp.path(), "containerd", "exec sleep 60");
        let started = std::time::Instant::now();
        let err = version_output(&path).unwrap_err();
        assert!(err.ends_with("gave no answer in 5 s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn search_dirs_keep_path_order_and_add_the_standard_ones_once() {
        let dirs = search_dirs(Some(OsStr::new("/opt/bin:/usr/bin:relative::/opt/bin")));
        let want = [
            "/opt/bin",
            "/usr/bin",
            "/usr/local/bin",
            "/usr/local/sbin",
            "/usr/sbin",
        ];
        assert_eq!(dirs, want.map(PathBuf::from));
        assert_eq!(search_dirs(None), STANDARD_DIRS.map(PathBuf::from));
    }
}
