//! Real clients of the OCI runtime CLI (`wasmshim-oci`), each private to the
//! test run: Debian's Docker 20.10 (`dockerd` with its own data root, exec
//! root, socket and cgroup parent in a temp dir; no iptables, no bridge) and
//! podman 4.3 (its own storage root and run root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Name under which the clients know our runtime.
pub const RUNTIME: &str = "wasmshim";

/// cgroup parent of the private Docker's containers (`/sys/fs/cgroup/*/<this>/<id>`).
pub const DOCKER_CGROUP_PARENT: &str = "wasmshim-docker-test";

/// The OCI runtime CLI in [`crate::bin_dir`]; an error if missing or older than its sources.
pub fn oci_binary() -> anyhow::Result<PathBuf> {
    let bin = crate::bin_dir().join("wasmshim-oci");
    if !bin.is_file() {
        bail!("{} is missing: build it with `make build`", bin.display());
    }
    crate::check_fresh(&bin, "oci")?;
    Ok(bin)
}

/// A dockerd private to this process, with `wasmshim-oci` as runtime [`RUNTIME`].
pub struct Docker {
    dir: tempfile::TempDir,
    daemon: Mutex<Child>,
}

impl Docker {
    /// Starts dockerd (Debian's docker.io 20.10) in a temp dir.
    pub fn start(runtime: &Path) -> anyhow::Result<Docker> {
        let dir = tempfile::Builder::new()
            .prefix("wasmshim-docker.")
            .tempdir()?;
        let root = dir.path();
        let config = serde_json::json!({
            "runtimes": { RUNTIME: { "path": runtime } },
            "cgroup-parent": DOCKER_CGROUP_PARENT,
        });
        std::fs::write(root.join("daemon.json"), config.to_string())?;
        let log = std::fs::File::create(root.join("dockerd.log"))?;
        let daemon = Command::new("dockerd")
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", root.join("docker.sock").display()))
            .args(["--iptables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd (apt-get install docker.io)")?;
        let docker = Docker {
            dir,
            daemon: Mutex::new(daemon),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !docker.docker(&["version"]).status.success() {
            if Instant::now() > deadline {
                bail!("dockerd did not come up: {}", docker.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(docker)
    }

    /// The temp dir holding data root, exec root, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// dockerd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// The Docker 20.10 client (`/usr/bin/docker`) against this daemon.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("/usr/bin/docker");
        cmd.arg("-H")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the client and returns what it printed.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("running /usr/bin/docker (apt-get install docker.io)")
    }

    /// Stops dockerd (and the containerd it started), kills what is left,
    /// unmounts and removes its directory. Idempotent.
    pub fn stop(&self) {
        crate::stop_daemon(&self.daemon, Duration::from_secs(20));
        let dir = self.dir.path().to_string_lossy().into_owned();
        for pid in crate::processes_mentioning(&dir) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        crate::unmount_below(self.dir.path());
        let _ = std::fs::remove_dir_all(self.dir.path());
        remove_cgroup_parent(DOCKER_CGROUP_PARENT);
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// podman with its own storage and run root in a temp dir.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// A fresh podman root.
    pub fn new() -> anyhow::Result<Podman> {
        let dir = tempfile::Builder::new()
            .prefix("wasmshim-podman.")
            .tempdir()?;
        std::fs::create_dir(dir.path().join("tmp"))?;
        Ok(Podman { dir })
    }

    /// The temp dir holding podman's roots.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `podman` with this instance's roots (vfs storage, cgroupfs, file events).
    pub fn command(&self, args: &[&str]) -> Command {
        let root = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("run"))
            .arg("--tmpdir")
            .arg(root.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs podman and returns what it printed.
    pub fn podman(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("running podman (apt-get install podman)")
    }

    /// Removes every container, unmounts and removes the roots. Idempotent.
    pub fn stop(&self) {
        let _ = self.podman(&["rm", "--all", "--force"]);
        let dir = self.dir.path().to_string_lossy().into_owned();
        for pid in crate::processes_mentioning(&dir) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        crate::unmount_below(self.dir.path());
        let _ = std::fs::remove_dir_all(self.dir.path());
        // With cgroupfs, podman puts conmon in `libpod_parent/conmon` and leaves it.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join("libpod_parent/conmon"));
            }
        }
        remove_cgroup_parent("libpod_parent");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a Wasm container `id` left under `dir` (an OCI runtime root), in
/// the cgroup hierarchies, or as a worker process.
pub fn oci_leftovers(dir: &Path, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for state in crate::walk(dir) {
        let parent = state.parent().and_then(|p| p.file_name());
        if parent.is_some_and(|p| p == "wasmshim") && state.file_name().is_some_and(|n| n == id) {
            found.push(format!("state {}", state.display()));
        }
    }
    for pid in crate::processes_mentioning(&format!("__wasmshim_worker {id}")) {
        found.push(format!("worker {pid}: {}", crate::cmdline(pid)));
    }
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            // Docker's `<parent>/<id>`, podman's `libpod_parent/libpod-<id>`, ctr's `<namespace>/<id>`.
            for path in [
                h.path().join(DOCKER_CGROUP_PARENT).join(id),
                h.path().join("libpod_parent").join(format!("libpod-{id}")),
                h.path().join(crate::NAMESPACE).join(id),
            ] {
                if path.exists() {
                    found.push(format!("cgroup {}", path.display()));
                }
            }
        }
    }
    found
}

/// Removes the (empty) cgroup `parent` in every hierarchy.
fn remove_cgroup_parent(parent: &str) {
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            let _ = std::fs::remove_dir(h.path().join(parent));
        }
    }
}
