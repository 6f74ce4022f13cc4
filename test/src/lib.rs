//! Support for the integration tests and the benchmark: a private containerd
//! (own root, state, socket and fifo dir in a temp dir), the test modules
//! compiled from `test/wasm`, images imported with `ctr image import`, and
//! checks that a container left nothing behind.

pub mod bench;
pub mod modules;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use wasmshim_cli::image::{ImageSpec, LayerEntry};

/// containerd namespace the tests and benchmarks use.
pub const NAMESPACE: &str = "wasmshim-test";

/// Directory holding the built shims (`WASMSHIM_BIN_DIR`, default `target/release`).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("WASMSHIM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"))
}

/// Engines whose shim binary is in [`bin_dir`], and a line for each one skipped.
pub fn engines() -> (Vec<&'static str>, Vec<String>) {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for engine in ["wasmtime", "wasmedge"] {
        let bin = bin_dir().join(format!("containerd-shim-{engine}-v1"));
        if bin.is_file() {
            found.push(engine);
        } else {
            skipped.push(format!(
                "{engine}: {} not built, its tests are skipped",
                bin.display()
            ));
        }
    }
    (found, skipped)
}

/// The runtime name of `engine`'s shim.
pub fn runtime(engine: &str) -> String {
    format!("io.containerd.{engine}.v1")
}

/// A containerd daemon private to this process.
pub struct Containerd {
    dir: tempfile::TempDir,
    daemon: std::sync::Mutex<Child>,
    socket: PathBuf,
}

impl Containerd {
    /// Starts containerd with the shims of [`bin_dir`] first on its PATH,
    /// logging at debug level (shim logs included) for test diagnostics.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_log_level("debug")
    }

    /// Starts containerd as [`Containerd::start`] does, logging at `level`.
    pub fn start_with_log_level(level: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("wasmshim-containerd.")
            .tempdir()?;
        let root = dir.path();
        let socket = root.join("containerd.sock");
        let config = format!(
            "version = 2\n\
             root = \"{root}/root\"\n\
             state = \"{root}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [debug]\n  level = \"{level}\"\n",
            root = root.display(),
            sock = socket.display()
        );
        std::fs::write(root.join("config.toml"), config)?;
        std::fs::create_dir(root.join("fifo"))?;
        let log = std::fs::File::create(root.join("containerd.log"))?;
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(root.join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd (apt-get install containerd runc)")?;
        let containerd = Containerd {
            dir,
            daemon: std::sync::Mutex::new(daemon),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if containerd.socket.exists() && containerd.ctr(&["version"]).status.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!("containerd did not come up: {}", containerd.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(containerd)
    }

    /// The temp dir holding root, state, socket, fifos and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Directory for ctr's stdio fifos (`ctr run --fifo-dir`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// containerd's log, which includes the shims' logs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd, in [`NAMESPACE`].
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(NAMESPACE)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr` and returns what it printed and its status.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args)
            .output()
            .expect("running ctr (apt-get install containerd)")
    }

    /// `ctr run --rm --fifo-dir … [--runtime R] <extra…>`: the usual foreground run.
    pub fn run(&self, runtime: Option<&str>, extra: &[&str]) -> Output {
        let fifo = self.fifo_dir();
        let mut args = vec!["run", "--rm", "--fifo-dir", fifo.to_str().unwrap()];
        if let Some(r) = runtime {
            args.extend(["--runtime", r]);
        }
        args.extend(extra);
        self.ctr(&args)
    }

    /// Writes `image` as an archive and imports it.
    pub fn import(&self, image: &ImageSpec) -> anyhow::Result<()> {
        let tar = self.dir.path().join("image.tar");
        image.write_archive(std::fs::File::create(&tar)?)?;
        let out = self.ctr(&["image", "import", "--all-platforms", tar.to_str().unwrap()]);
        std::fs::remove_file(&tar)?;
        if !out.status.success() {
            bail!(
                "ctr image import {}: {}",
                image.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// What a finished container `id` left behind: processes, mounts, bundle, fifos.
    pub fn leftovers(&self, id: &str) -> Vec<String> {
        let mut found = Vec::new();
        for pid in processes_mentioning(id) {
            found.push(format!("process {pid}: {}", cmdline(pid)));
        }
        let bundle = self
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(NAMESPACE)
            .join(id);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts
            .lines()
            .filter(|l| l.contains(&*bundle.to_string_lossy()))
        {
            found.push(format!("mount: {line}"));
        }
        if bundle.exists() {
            found.push(format!("bundle dir {}", bundle.display()));
        }
        for entry in walk(&self.fifo_dir()) {
            if entry.to_string_lossy().contains(id) {
                found.push(format!("fifo {}", entry.display()));
            }
        }
        for dir in cgroup_dirs(id) {
            found.push(format!("cgroup {}", dir.display()));
        }
        found
    }
}

impl Containerd {
    /// Stops containerd, kills any shim or worker it left, unmounts whatever
    /// is mounted under its directory and removes the directory. Idempotent.
    pub fn stop(&self) {
        let mut daemon = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = daemon.try_wait() {
            // SIGTERM first so containerd shuts down cleanly; SIGKILL if it lingers.
            let _ = Command::new("kill").arg(daemon.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(daemon.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        for pid in processes_mentioning(&dir) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cgroup directories of container `id` (ctr's `/<namespace>/<id>`) in
/// every mounted hierarchy, v1 controllers and unified.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        hierarchies.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    hierarchies
        .into_iter()
        .map(|h| h.join(NAMESPACE).join(id))
        .filter(|d| d.is_dir())
        .collect()
}

/// Pids (other than ours) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && cmdline(pid).contains(needle))
        .collect()
}

/// A process's command line with spaces between arguments.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}

/// A single-layer Wasm image whose entrypoint is `module` at `/<file name>`.
pub fn wasm_image(name: &str, module: &Path, env: &[&str]) -> anyhow::Result<ImageSpec> {
    let path = format!(
        "/{}",
        module.file_name().context("module name")?.to_string_lossy()
    );
    Ok(ImageSpec {
        name: name.to_string(),
        os: "wasi".into(),
        architecture: "wasm".into(),
        entries: vec![LayerEntry::File {
            path: path.clone(),
            data: std::fs::read(module).with_context(|| format!("reading {}", module.display()))?,
            mode: 0o755,
        }],
        entrypoint: vec![path],
        cmd: Vec::new(),
        env: env.iter().map(|s| s.to_string()).collect(),
    })
}

/// A Linux image of Debian's static busybox (`apt-get install busybox-static`).
pub fn busybox_image(name: &str) -> anyhow::Result<ImageSpec> {
    let busybox = std::fs::read("/bin/busybox")
        .context("reading /bin/busybox (apt-get install busybox-static)")?;
    let mut entries = vec![LayerEntry::File {
        path: "/bin/busybox".into(),
        data: busybox,
        mode: 0o755,
    }];
    for applet in ["sh", "echo", "sleep", "cat", "true"] {
        entries.push(LayerEntry::Symlink {
            path: format!("/bin/{applet}"),
            target: "busybox".into(),
        });
    }
    Ok(ImageSpec {
        name: name.to_string(),
        os: "linux".into(),
        architecture: "amd64".into(),
        entries,
        entrypoint: vec!["/bin/sh".into()],
        cmd: Vec::new(),
        env: vec!["PATH=/bin".into()],
    })
}

/// Stdout and stderr of `out` as text, for assertion messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
