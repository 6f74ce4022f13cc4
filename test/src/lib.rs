//! Support for the integration tests and the benchmark: a private containerd
//! (own root, state, socket and fifo dir in a temp dir), the test modules
//! compiled from `test/wasm`, images imported with `ctr image import`, and
//! checks that a container left nothing behind.

pub mod bench;
pub mod clients;
pub mod http;
pub mod modules;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wasmshim_cli::image::{ImageSpec, LayerEntry};

/// containerd namespace the tests and benchmarks use.
pub const NAMESPACE: &str = "wasmshim-test";

/// Directory holding the built shims (`WASMSHIM_BIN_DIR`, default `target/release`).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("WASMSHIM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"))
}

/// The engines under test, from the one engine list (`engines.txt`).
///
/// `WASMSHIM_ENGINES` (set by `make`, space-separated) names the engines whose
/// shims must be there; without it, every engine that needs no system library
/// must be there. A required shim that is missing or older than its sources is
/// an error, never a silent skip. Returns the engines to test and a line for
/// each optional engine skipped.
pub fn engines() -> anyhow::Result<(Vec<&'static str>, Vec<String>)> {
    let table = wasmshim::engine::table();
    let required: Vec<String> = match std::env::var("WASMSHIM_ENGINES") {
        Ok(list) => list.split_whitespace().map(String::from).collect(),
        Err(_) => table
            .iter()
            .filter(|e| e.needs.is_none())
            .map(|e| e.name.to_string())
            .collect(),
    };
    for name in &required {
        if !table.iter().any(|e| e.name == name) {
            bail!("WASMSHIM_ENGINES names {name}, which is not in engines.txt");
        }
    }
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for entry in &table {
        let bin = shim_binary(entry.name);
        let needed = required.iter().any(|r| r == entry.name);
        if !bin.is_file() {
            if needed {
                bail!(
                    "{} is missing: build it with `make build` (engines under test: {})",
                    bin.display(),
                    required.join(" ")
                );
            }
            skipped.push(format!(
                "{}: {} not built (it needs {}), its tests are skipped",
                entry.name,
                bin.display(),
                entry.needs.unwrap_or("nothing")
            ));
            continue;
        }
        check_fresh(&bin, entry.name)?;
        // A front binary's engine binary (WasmEdge's) is run as much as the front.
        let engine = wasmshim::front::engine_binary_of(&bin);
        if engine.exists() {
            check_fresh(&engine, entry.name)?;
        }
        found.push(entry.name);
    }
    Ok((found, skipped))
}

/// The shim binary of `engine` in [`bin_dir`].
pub fn shim_binary(engine: &str) -> PathBuf {
    bin_dir().join(format!("containerd-shim-{engine}-v1"))
}

/// The binary of `engine` that loads the engine's libraries: the engine
/// binary beside a front binary (WasmEdge's, see `shim/src/front.rs`), else
/// the shim binary itself.
pub fn engine_binary(engine: &str) -> PathBuf {
    let shim = shim_binary(engine);
    let binary = wasmshim::front::engine_binary_of(&shim);
    if binary.exists() {
        binary
    } else {
        shim
    }
}

/// Fails when `bin` is older than a source it is built from, so that tests
/// never pass against a stale binary.
pub(crate) fn check_fresh(bin: &Path, engine: &str) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = std::fs::metadata(bin)?.modified()?;
    // cargo's dep-info file names exactly the sources the binary was built
    // from (not, say, another engine's module); without it, every source.
    let files = match dep_info(bin) {
        Some(mut files) => {
            files.push(root.join("Cargo.lock"));
            files
        }
        None => [
            root.join("shim"),
            root.join(format!("cmd/containerd-shim-{engine}-v1")),
            root.join("Cargo.lock"),
            root.join("engines.txt"),
        ]
        .iter()
        .flat_map(|s| {
            let mut files = walk(s);
            files.push(s.clone());
            files
        })
        .collect(),
    };
    for source in files {
        let Ok(meta) = std::fs::metadata(&source) else {
            continue;
        };
        if meta.is_file() && meta.modified()? > built {
            bail!(
                "{} is older than {}: rebuild it with `make build`",
                bin.display(),
                source.display()
            );
        }
    }
    Ok(())
}

/// The sources cargo recorded for `bin` in `<bin>.d` (`bin: src1 src2 …`,
/// spaces in names escaped with a backslash).
fn dep_info(bin: &Path) -> Option<Vec<PathBuf>> {
    let text = std::fs::read_to_string(bin.with_extension("d")).ok()?;
    let (_, deps) = text.lines().next()?.split_once(": ")?;
    let mut files = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => files
                .extend((!current.is_empty()).then(|| PathBuf::from(std::mem::take(&mut current)))),
            c => current.push(c),
        }
    }
    files.extend((!current.is_empty()).then(|| PathBuf::from(current)));
    (!files.is_empty()).then_some(files)
}

/// Removes the namespace's parent cgroups (`/sys/fs/cgroup/*/wasmshim-test`)
/// that runc and our shims create for `/<namespace>/<id>` paths. rmdir only
/// succeeds on an empty cgroup: one still used by another containerd stays.
fn remove_namespace_cgroups() {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(NAMESPACE)];
    dirs.extend(controllers.flatten().map(|c| c.path().join(NAMESPACE)));
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The runtime name of `engine`'s shim.
pub fn runtime(engine: &str) -> String {
    format!("io.containerd.{engine}.v1")
}

/// How [`Containerd::start_with`] starts the daemon.
#[derive(Debug, Clone)]
pub struct Options {
    /// containerd's log level (shim logs included at `debug`).
    pub level: String,
    /// Added to the daemon's environment, which its shims inherit.
    pub env: Vec<(String, String)>,
    /// TOML appended to the daemon's config. `Some`: the CRI plugin stays
    /// enabled (else it is disabled).
    pub cri_config: Option<String>,
    /// Runs the daemon, and so its shims and host-network pods, in a network
    /// namespace of its own where only `lo` is up.
    pub private_network: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            level: "debug".into(),
            env: Vec::new(),
            cri_config: None,
            private_network: false,
        }
    }
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
        Self::start_with_env(level, &[])
    }

    /// Starts containerd logging at `level`, with `env` added to its
    /// environment (which its shims inherit). The shims' module cache is
    /// [`Containerd::cache_dir`], private to this containerd.
    pub fn start_with_env(level: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(&Options {
            level: level.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Options::default()
        })
    }

    /// Starts containerd as `options` say.
    pub fn start_with(options: &Options) -> anyhow::Result<Self> {
        shared_root()?;
        let dir = tempfile::Builder::new()
            .prefix("wasmshim-containerd.")
            .tempdir()?;
        let root = dir.path();
        let socket = root.join("containerd.sock");
        let mut config = format!(
            "version = 2\n\
             root = \"{root}/root\"\n\
             state = \"{root}/state\"\n\
             [grpc]\n  address = \"{sock}\"\n\
             [debug]\n  level = \"{level}\"\n",
            root = root.display(),
            sock = socket.display(),
            level = options.level,
        );
        match &options.cri_config {
            Some(cri) => config.push_str(cri),
            None => config.insert_str(
                config.find("[grpc]").expect("in the config"),
                "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
            ),
        }
        std::fs::write(root.join("config.toml"), config)?;
        std::fs::create_dir(root.join("fifo"))?;
        let log = std::fs::File::create(root.join("containerd.log"))?;
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = if options.private_network {
            // unshare and sh exec containerd: the child's pid is the daemon's.
            let mut command = Command::new("unshare");
            command.args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$@\"",
                "containerd",
            ]);
            command
        } else {
            Command::new("containerd")
        };
        let daemon = command
            .arg("--config")
            .arg(root.join("config.toml"))
            .env("PATH", path)
            .env("WASMSHIM_CACHE_DIR", root.join("cache"))
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd (apt-get install containerd runc iproute2)")?;
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

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.daemon
            .lock()
            .map(|d| d.id())
            .unwrap_or_else(|e| e.into_inner().id())
    }

    /// containerd's socket (gRPC: its own API and, when enabled, the CRI).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temp dir holding root, state, socket, fifos and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The shims' module cache (`WASMSHIM_CACHE_DIR`), created by the first start.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Directory for ctr's stdio fifos (`ctr run --fifo-dir`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// containerd's log, which includes the shims' logs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Waits up to 5 s until containerd's log contains every one of `needles`.
    ///
    /// containerd copies a shim's log into its own asynchronously, so a line the
    /// shim wrote before `ctr run` returned can reach this log a moment later.
    /// Returns the log as last read; the caller checks what it expects in it.
    pub fn log_with(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if needles.iter().all(|n| log.contains(n)) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ctr` against this containerd, in [`NAMESPACE`].
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        self.ctr_command_in(NAMESPACE, args)
    }

    /// `ctr` against this containerd, in containerd namespace `namespace`.
    pub fn ctr_command_in(&self, namespace: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(namespace)
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
        self.import_into(NAMESPACE, image)
    }

    /// Writes `image` as an archive and imports it into containerd namespace
    /// `namespace` (`k8s.io` for the CRI).
    pub fn import_into(&self, namespace: &str, image: &ImageSpec) -> anyhow::Result<()> {
        let tar = self.dir.path().join("image.tar");
        image.write_archive(std::fs::File::create(&tar)?)?;
        let out = self
            .ctr_command_in(
                namespace,
                &["image", "import", "--all-platforms", tar.to_str().unwrap()],
            )
            .output()
            .context("running ctr (apt-get install containerd)")?;
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
            .filter(|l| mentions(l, &bundle.to_string_lossy()))
        {
            found.push(format!("mount: {line}"));
        }
        if bundle.exists() {
            found.push(format!("bundle dir {}", bundle.display()));
        }
        for entry in walk(&self.fifo_dir()) {
            let name = entry.file_name().unwrap_or_default().to_string_lossy();
            let is_ours = ["stdin", "stdout", "stderr"]
                .iter()
                .any(|s| name == format!("{id}-{s}"));
            if is_ours {
                found.push(format!("fifo {}", entry.display()));
            }
        }
        for dir in cgroup_dirs(id) {
            found.push(format!("cgroup {}", dir.display()));
        }
        found
    }

    /// What the containers whose ids start with `prefix-` left behind (see
    /// [`Containerd::leftovers`]): each id found in a bundle, cgroup, fifo or
    /// process command line.
    pub fn leftovers_of_all(&self, prefix: &str) -> Vec<String> {
        let start = format!("{prefix}-");
        let ours = |name: &str| name.starts_with(&start);
        let mut ids = std::collections::BTreeSet::new();
        let bundles = self
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(NAMESPACE);
        let cgroups = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path().join(NAMESPACE));
        for dir in std::iter::once(bundles).chain(cgroups) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                ids.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        for fifo in walk(&self.fifo_dir()) {
            let name = fifo.file_name().unwrap_or_default().to_string_lossy();
            if let Some((id, _)) = name.rsplit_once('-') {
                ids.insert(id.to_string());
            }
        }
        for pid in self.processes() {
            let line = cmdline(pid);
            let words = line.split(|c: char| c.is_whitespace() || matches!(c, '/' | '='));
            ids.extend(words.map(str::to_string));
        }
        ids.into_iter()
            .filter(|id| ours(id))
            .flat_map(|id| self.leftovers(&id))
            .collect()
    }
}

/// Stops the daemon `daemon` if it still runs: SIGTERM so that it shuts
/// down cleanly, SIGKILL if it lingers past `grace`; then reaps it.
pub(crate) fn stop_daemon(daemon: &std::sync::Mutex<Child>, grace: Duration) {
    let mut daemon = daemon.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(None) = daemon.try_wait() {
        let _ = kill(Pid::from_raw(daemon.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && matches!(daemon.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}

/// Unmounts (lazily, deepest first) everything mounted at or below `dir`.
pub(crate) fn unmount_below(dir: &Path) {
    let dir = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = umount2(point, MntFlags::MNT_DETACH);
    }
}

impl Containerd {
    /// The rootfs directory of [`Containerd::write_spec`]'s spec for `id`
    /// (created empty; put the module and any other file there).
    pub fn spec_rootfs(&self, id: &str) -> anyhow::Result<PathBuf> {
        let rootfs = self.dir.path().join("specs").join(id).join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        Ok(rootfs)
    }

    /// Writes a whole spec for `ctr run --config` (ctr then adds nothing):
    /// `args` in the rootfs of [`Containerd::spec_rootfs`], ctr's cgroup path
    /// (`/<namespace>/<id>`, so the leftover checks see it), the namespaces
    /// and capabilities ctr would give; `edit` changes the rest.
    pub fn write_spec(
        &self,
        id: &str,
        args: &[&str],
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> anyhow::Result<PathBuf> {
        let rootfs = self.spec_rootfs(id)?;
        let caps = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ];
        let mut spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "cwd": "/",
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/"],
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": true
            },
            "root": {"path": rootfs},
            "mounts": [],
            "linux": {
                "cgroupsPath": format!("/{NAMESPACE}/{id}"),
                "namespaces": [{"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}]
            }
        });
        edit(&mut spec);
        let path = rootfs.with_file_name("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
        Ok(path)
    }
}

impl Containerd {
    /// Stops containerd, kills any shim or worker it left, unmounts whatever
    /// is mounted under its directory and removes the directory. Idempotent.
    pub fn stop(&self) {
        stop_daemon(&self.daemon, Duration::from_secs(10));
        for pid in self.processes() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        unmount_below(self.dir.path());
        let _ = std::fs::remove_dir_all(self.dir.path());
        remove_namespace_cgroups();
    }

    /// Processes of this containerd other than the daemon: shims (whose
    /// command line names our socket) and their workers.
    pub fn processes(&self) -> Vec<u32> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let daemon = self.pid();
        let mut found: Vec<u32> = processes_mentioning(&dir)
            .into_iter()
            .filter(|&pid| pid != daemon)
            .collect();
        // Workers name only their container; find them as children of the shims.
        let mut i = 0;
        while i < found.len() {
            for child in children(found[i]) {
                if !found.contains(&child) {
                    found.push(child);
                }
            }
            i += 1;
        }
        found
    }
}

/// Direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
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

/// Whether `text` contains `needle` as a whole name: not followed by a
/// character that could continue a container id, so that `c-1` is not found
/// in `c-19` (nor a bundle path in a longer one).
pub fn mentions(text: &str, needle: &str) -> bool {
    let continues = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    text.match_indices(needle)
        .any(|(at, _)| !text[at + needle.len()..].starts_with(continues))
}

/// Pids (other than ours) whose command line mentions `needle` (see [`mentions`]).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && mentions(&cmdline(pid), needle))
        .collect()
}

/// Makes `/` a shared mount, recursively, as systemd makes it at every boot
/// (Kubernetes nodes rely on it for volume propagation). A shim then keeps
/// its containers' rootfs mounts in a mount namespace of its own
/// (`shim/src/sys/mount_ns.rs`); on a machine booted without systemd, `/`
/// is private and the shims would stay in the host's namespace. Done once
/// per test process.
pub fn shared_root() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let status = Command::new("mount")
            .args(["--make-rshared", "/"])
            .status()
            .map_err(|e| format!("running mount --make-rshared /: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("mount --make-rshared / failed: {status}"))
        }
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A process's command line with spaces between arguments.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
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

/// Fault injection on the daemon itself (issue 12's fault suite): kill it
/// without warning and start it again on the same root, state and socket.
impl Containerd {
    /// SIGKILLs the daemon (no shutdown of any kind) and reaps it. Its shims
    /// and their containers live on.
    pub fn kill_daemon(&self) {
        let mut daemon = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        let _ = daemon.kill();
        let _ = daemon.wait();
    }

    /// Starts containerd again with the config, root, state, socket and log
    /// of the first start (the log is appended to), and `env` as `options.env`
    /// gave it, after [`Containerd::kill_daemon`]. Waits until it answers.
    /// Not for a daemon started with `private_network`.
    pub fn restart(&self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("containerd.log"))?;
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(root.join("config.toml"))
            .env("PATH", path)
            .env("WASMSHIM_CACHE_DIR", root.join("cache"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd again")?;
        *self.daemon.lock().unwrap_or_else(|e| e.into_inner()) = child;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ctr(&["version"]).status.success() {
            if Instant::now() > deadline {
                bail!("containerd did not come back: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// The reference of the test image `name` (as the suites import it).
pub fn image(name: &str) -> String {
    format!("docker.io/wasmshim-test/{name}:latest")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What `find` reports, once it is empty or 10 s passed.
pub fn settled(find: impl Fn() -> Vec<String>) -> Vec<String> {
    settled_within(Duration::from_secs(10), find)
}

/// What `find` reports, once it is empty or `limit` passed.
pub fn settled_within(limit: Duration, find: impl Fn() -> Vec<String>) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut left = find();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = find();
    }
    left
}

/// Polls `ready` every 20 ms until it holds; fails naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, ready: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        anyhow::ensure!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether process `pid` exists and is not a zombie (a zombie only waits
/// for its parent).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

/// The parent pid of `pid`, from /proc.
pub fn parent_of(pid: u32) -> anyhow::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("no PPid for {pid}"))
}

#[cfg(test)]
mod mention_tests {
    use super::mentions;

    #[test]
    fn an_id_is_not_found_inside_a_longer_one() {
        assert!(mentions("ctr run img c-1 /m.wasm", "c-1"));
        assert!(mentions("ctr run img c-1", "c-1"));
        assert!(!mentions("ctr run img c-19 /m.wasm", "c-1"));
        assert!(mentions("/state/ns/c-1/rootfs rw", "/state/ns/c-1"));
        assert!(!mentions("/state/ns/c-19/rootfs rw", "/state/ns/c-1"));
    }
}
