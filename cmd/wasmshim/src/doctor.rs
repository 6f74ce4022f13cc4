//! `wasmshim doctor`: checks this node for what the shims need to start
//! containers, and prints every problem with its fix. Runs in the CLI process.
//!
//! Each check is a function of its inputs (directories to search, a config
//! file's text, a cgroup root, …) returning a [`Finding`], so the tests run
//! them against temporary directories; [`Node::from_env`] gathers the real
//! inputs and [`Node::check`] runs every check in order. What each check
//! means and how to fix what it reports: `docs/doctor.md`.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use wasmshim::engine::cache::{self, ModuleCache};
use wasmshim::engine::{self, EngineEntry};

/// Where containerd finds binaries besides its own PATH (a systemd unit's PATH).
pub const STANDARD_DIRS: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin"];
/// containerd's config file when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
/// Where the cgroup filesystem is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long a binary may take to answer `--version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// `[plugins]` keys of the CRI plugin, in any containerd version.
const CRI_PLUGIN_IDS: [&str; 4] = [
    "cri",
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.runtime",
    "io.containerd.cri.v1.images",
];

/// Arguments of `wasmshim doctor`.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    /// containerd's config file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Nothing to fix.
    Ok,
    /// A problem, and what to do about it.
    Fail {
        /// What is wrong.
        why: String,
        /// How to fix it.
        fix: String,
    },
    /// Not checked, or not relevant on this node.
    Skip {
        /// Why.
        why: String,
    },
}

/// One check's line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked (and, when it is fine, what was found).
    pub what: String,
    /// The outcome.
    pub status: Status,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Self {
        let what = what.into();
        Finding {
            what,
            status: Status::Ok,
        }
    }

    fn fail(what: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> Self {
        let (why, fix) = (why.into(), fix.into());
        Finding {
            what: what.into(),
            status: Status::Fail { why, fix },
        }
    }

    fn skip(what: impl Into<String>, why: impl Into<String>) -> Self {
        let why = why.into();
        Finding {
            what: what.into(),
            status: Status::Skip { why },
        }
    }

    /// True when this finding is a problem.
    pub fn is_fail(&self) -> bool {
        matches!(self.status, Status::Fail { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            Status::Ok => write!(f, "ok   {}", self.what),
            Status::Fail { why, fix } => write!(f, "FAIL {}: {why}. Fix: {fix}", self.what),
            Status::Skip { why } => write!(f, "skip {}: {why}", self.what),
        }
    }
}

/// The exit status for a report: 1 when a check failed, else 0.
pub fn exit_status(findings: &[Finding]) -> i32 {
    i32::from(findings.iter().any(Finding::is_fail))
}

/// Runs every check on this node, prints the report and returns the exit status.
pub fn run(args: &DoctorArgs) -> i32 {
    let findings = Node::from_env(args).check();
    for finding in &findings {
        println!("{finding}");
    }
    exit_status(&findings)
}

/// The shim binary of the engine called `engine`.
pub fn shim_binary(engine: &str) -> String {
    format!("containerd-shim-{engine}-v1")
}

/// The runtime name (CRI `runtime_type`) of the engine called `engine`.
pub fn runtime_type(engine: &str) -> String {
    format!("io.containerd.{engine}.v1")
}

fn indent(text: &str) -> String {
    let indent_line = |l: &str| match l {
        "" => String::new(),
        l => format!("    {l}"),
    };
    let lines: Vec<String> = text.lines().map(indent_line).collect();
    lines.join("\n")
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn show_dirs(dirs: &[PathBuf]) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    dirs.join(":")
}

// ---- Binaries --------------------------------------------------------------

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

// ---- 2. containerd and its config ------------------------------------------

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

/// The format of a containerd config file: its `version` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVersion {
    /// No `version` key: the old format, plugins under short names (`[plugins.cri]`).
    V1,
    /// `version = 2`: containerd 1.x's format.
    V2,
    /// `version = 3`: containerd 2.x's format.
    V3,
}

impl ConfigVersion {
    const ALL: [ConfigVersion; 3] = [ConfigVersion::V1, ConfigVersion::V2, ConfigVersion::V3];

    /// The format `containerd config default` of containerd `major` writes.
    pub fn for_containerd(major: u32) -> Self {
        if major >= 2 {
            ConfigVersion::V3
        } else {
            ConfigVersion::V2
        }
    }

    /// The `version` number.
    pub fn number(self) -> u8 {
        match self {
            ConfigVersion::V1 => 1,
            ConfigVersion::V2 => 2,
            ConfigVersion::V3 => 3,
        }
    }

    fn cri_plugin(self) -> &'static str {
        match self {
            ConfigVersion::V1 => "cri",
            ConfigVersion::V2 => "io.containerd.grpc.v1.cri",
            ConfigVersion::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ConfigVersion::V1 => "the section of old version 1 configs",
            ConfigVersion::V2 => "the containerd 1.x section",
            ConfigVersion::V3 => "the containerd 2.x section",
        }
    }

    /// The table header declaring CRI runtime `handler` in this format.
    pub fn runtime_header(self, handler: &str) -> String {
        let plugin = match self {
            ConfigVersion::V1 => "cri".to_string(),
            _ => format!("\"{}\"", self.cri_plugin()),
        };
        format!("[plugins.{plugin}.containerd.runtimes.{handler}]")
    }
}

/// The lines declaring `engine`'s runtime (handler: the engine's name) in a config of `version`.
pub fn runtime_snippet(version: ConfigVersion, engine: &str) -> String {
    format!(
        "{}\n  runtime_type = \"{}\"\n",
        version.runtime_header(engine),
        runtime_type(engine)
    )
}

/// A containerd config file, parsed.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// Where it is.
    pub path: PathBuf,
    /// Its format.
    pub version: ConfigVersion,
    table: toml::Table,
}

/// What a config declares for an engine's runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declaration {
    /// In the section containerd reads, with the right `runtime_type`: the handler.
    Declared(String),
    /// A handler named after the engine with another `runtime_type` (or none).
    WrongType(Option<String>),
    /// Only in the section of another config version.
    WrongSection(ConfigVersion),
    /// Nowhere.
    Missing,
}

impl ContainerdConfig {
    /// Parses `text`, the file at `path`, as containerd `containerd` reads it;
    /// a file containerd cannot read is a failed finding.
    pub fn parse(path: &Path, text: &str, containerd: &ContainerdVersion) -> Result<Self, Finding> {
        let what = format!("containerd config {}", path.display());
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let why = format!("not valid TOML ({})", e.message());
            Finding::fail(&what, why, "correct it: containerd does not start with it")
        })?;
        let version = match table.get("version") {
            None | Some(toml::Value::Integer(1)) => ConfigVersion::V1,
            Some(toml::Value::Integer(2)) => ConfigVersion::V2,
            Some(toml::Value::Integer(3)) => ConfigVersion::V3,
            Some(other) => {
                let want = ConfigVersion::for_containerd(containerd.major).number();
                let why = format!("`version = {other}` is not a config version {containerd} reads");
                return Err(Finding::fail(what, why, format!("set `version = {want}`")));
            }
        };
        if version == ConfigVersion::V3 && containerd.major < 2 {
            let why = format!(
                "`version = 3` is containerd 2.x's format: {containerd} does not start with it"
            );
            let fix = "write it in the version 2 format (`containerd config default` prints one), or install containerd 2.x";
            return Err(Finding::fail(what, why, fix));
        }
        Ok(ContainerdConfig {
            path: path.to_path_buf(),
            version,
            table,
        })
    }

    fn runtimes(&self, version: ConfigVersion) -> Option<&toml::Table> {
        let plugins = self.table.get("plugins")?.as_table()?;
        let cri = plugins.get(version.cri_plugin())?.as_table()?;
        cri.get("containerd")?
            .as_table()?
            .get("runtimes")?
            .as_table()
    }

    /// What this config declares for `engine`'s runtime.
    pub fn find_runtime(&self, engine: &str) -> Declaration {
        let wanted = runtime_type(engine);
        let type_of = |rt: &toml::Value| {
            rt.get("runtime_type")
                .and_then(toml::Value::as_str)
                .map(String::from)
        };
        if let Some(runtimes) = self.runtimes(self.version) {
            if let Some((handler, _)) = runtimes
                .iter()
                .find(|(_, rt)| type_of(rt).as_deref() == Some(&wanted))
            {
                return Declaration::Declared(handler.clone());
            }
            if let Some(rt) = runtimes.get(engine) {
                return Declaration::WrongType(type_of(rt));
            }
        }
        let elsewhere = |version: &ConfigVersion| {
            self.runtimes(*version).is_some_and(|runtimes| {
                runtimes.contains_key(engine)
                    || runtimes
                        .values()
                        .any(|rt| type_of(rt).as_deref() == Some(&wanted))
            })
        };
        ConfigVersion::ALL
            .into_iter()
            .filter(|v| *v != self.version)
            .find(elsewhere)
            .map_or(Declaration::Missing, Declaration::WrongSection)
    }

    /// The CRI plugin's name when `disabled_plugins` lists it.
    pub fn disabled_cri(&self) -> Option<&str> {
        let disabled = self.table.get("disabled_plugins")?.as_array()?;
        disabled
            .iter()
            .filter_map(toml::Value::as_str)
            .find(|name| CRI_PLUGIN_IDS.contains(name))
    }
}

/// Check 2b: the config file as containerd reads it: its format, the CRI plugin enabled.
pub fn check_config_file(config: &ContainerdConfig, containerd: &ContainerdVersion) -> Finding {
    let what = format!("containerd config {}", config.path.display());
    if let Some(name) = config.disabled_cri() {
        let why = format!("disabled_plugins lists \"{name}\": the CRI plugin is off, so Kubernetes can run no container here");
        let fix =
            format!("remove \"{name}\" from disabled_plugins, then `systemctl restart containerd`");
        return Finding::fail(what, why, fix);
    }
    let migrated = if containerd.major >= 2 && config.version != ConfigVersion::V3 {
        format!(", which {containerd} migrates to version 3 when it starts")
    } else {
        String::new()
    };
    Finding::ok(format!(
        "{what}: version {}{migrated}",
        config.version.number()
    ))
}

/// Check 2b when there is no config file: containerd's defaults declare no Wasm runtime.
pub fn check_missing_config(
    path: &Path,
    containerd: &ContainerdVersion,
    engines: &[&str],
) -> Finding {
    let version = ConfigVersion::for_containerd(containerd.major);
    let snippets: Vec<String> = engines
        .iter()
        .map(|e| runtime_snippet(version, e))
        .collect();
    let why = "does not exist: containerd runs with its defaults, which declare no Wasm runtime for Kubernetes (the CRI plugin)";
    let fix = format!(
        "`containerd config default > {0}`, append these lines to {0}, then `systemctl restart containerd`:\n{1}",
        path.display(),
        indent(&snippets.join("\n"))
    );
    Finding::fail(format!("containerd config {}", path.display()), why, fix)
}

/// Check 2c: the CRI runtime of `engine` in `config`. `wanted`: whether its absence is a problem.
pub fn check_runtime(
    config: &ContainerdConfig,
    containerd: &ContainerdVersion,
    engine: &str,
    wanted: bool,
) -> Finding {
    let what = format!("CRI runtime {}", runtime_type(engine));
    let path = config.path.display();
    let snippet = indent(&runtime_snippet(config.version, engine));
    match config.find_runtime(engine) {
        Declaration::Declared(handler) => {
            Finding::ok(format!("{what}: handler {handler} in {path}"))
        }
        Declaration::WrongType(found) => {
            let found = found.map_or("no runtime_type".to_string(), |t| {
                format!("runtime_type \"{t}\"")
            });
            let why = format!("handler {engine} in {path} has {found}");
            Finding::fail(what, why, format!("declare it as:\n{snippet}"))
        }
        Declaration::WrongSection(other) => {
            let why = format!(
                "declared under {} ({}), but {containerd} reads this version {} file's runtimes from {}",
                other.runtime_header(engine),
                other.label(),
                config.version.number(),
                config.version.runtime_header(engine)
            );
            Finding::fail(
                what,
                why,
                format!("move it there, then `systemctl restart containerd`:\n{snippet}"),
            )
        }
        Declaration::Missing if wanted => {
            let why = format!("not declared in {path}, so Kubernetes (the CRI plugin) cannot use it (`ctr run --runtime` can)");
            Finding::fail(
                what,
                why,
                format!("add to {path}, then `systemctl restart containerd`:\n{snippet}"),
            )
        }
        Declaration::Missing => Finding::skip(
            what,
            format!("not declared, and {} is not installed", shim_binary(engine)),
        ),
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

// ---- 4. cgroups ------------------------------------------------------------

/// How cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// v1 controllers only.
    V1,
    /// v1 controllers, and v2 at `unified/` (no controllers there).
    Hybrid,
    /// v2 only (the unified hierarchy).
    Unified,
}

/// The cgroup layout mounted at `root` (normally [`CGROUP_ROOT`]), if any.
pub fn cgroup_mode(root: &Path) -> Option<CgroupMode> {
    if root.join("cgroup.controllers").is_file() {
        return Some(CgroupMode::Unified);
    }
    if root.join("unified/cgroup.controllers").is_file() {
        return Some(CgroupMode::Hybrid);
    }
    let has_v1 = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .any(|e| e.path().join("cgroup.procs").is_file());
    has_v1.then_some(CgroupMode::V1)
}

/// Check 4: the cgroup mode (information: the shim handles all three).
pub fn check_cgroup(root: &Path) -> Finding {
    let what = format!("cgroups at {}", root.display());
    match cgroup_mode(root) {
        Some(CgroupMode::Unified) => Finding::ok(format!("{what}: v2 (unified)")),
        Some(CgroupMode::Hybrid) => {
            Finding::ok(format!("{what}: hybrid (v1 controllers, v2 at unified/)"))
        }
        Some(CgroupMode::V1) => Finding::ok(format!("{what}: v1")),
        None => Finding::fail(
            what,
            "no cgroup hierarchy mounted: containers with resource limits cannot start",
            format!(
                "mount one (`mount -t cgroup2 none {}`), as systemd does at boot",
                root.display()
            ),
        ),
    }
}

// ---- 5. Engine libraries ---------------------------------------------------

/// Where `lib` (e.g. `libwasmedge`) is: the first `<lib>.so*` in `dirs`,
/// else the first that `ldconfig -p` (its output `ldconfig`) lists.
pub fn find_library(lib: &str, dirs: &[PathBuf], ldconfig: &str) -> Option<PathBuf> {
    let prefix = format!("{lib}.so");
    let in_dirs = dirs.iter().find_map(|dir| {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        names.sort();
        names.into_iter().next()
    });
    in_dirs.or_else(|| {
        ldconfig.lines().find_map(|line| {
            let (name, path) = line.trim().split_once(" => ")?;
            name.starts_with(&prefix)
                .then(|| PathBuf::from(path.trim()))
        })
    })
}

/// Check 5: the system library `lib` that `engine`'s shim loads; a problem
/// only when that shim is installed (`shim_installed`).
pub fn check_library(
    lib: &str,
    engine: &str,
    shim_installed: bool,
    dirs: &[PathBuf],
    ldconfig: &str,
) -> Finding {
    let shim = shim_binary(engine);
    match find_library(lib, dirs, ldconfig) {
        Some(path) => Finding::ok(format!("{lib} at {}", path.display())),
        None if shim_installed => Finding::fail(
            lib,
            format!("not found in {} nor by `ldconfig -p`, so {shim} cannot start", show_dirs(dirs)),
            "install WasmEdge 0.17.1 into /usr/local (or set WASMEDGE_DIR to where it is), then run `ldconfig`",
        ),
        None => Finding::skip(lib, format!("not found; only {shim} needs it, and it is not installed")),
    }
}

// ---- 6. Module cache -------------------------------------------------------

/// The cache directory the shims use when `WASMSHIM_CACHE_DIR` is `env`; `None` when it is off.
pub fn cache_dir(env: Option<&OsStr>) -> Option<PathBuf> {
    match env {
        Some(v) if v == "off" || v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => Some(PathBuf::from(cache::DEFAULT_DIR)),
    }
}

/// Check 6: the module cache in `dir` (`None`: off) passes the shims' own
/// rule ([`ModuleCache::open`], which creates it if missing). `is_root`:
/// whether this process runs as the shims' user, whom the rule is about.
pub fn check_cache(dir: Option<&Path>, is_root: bool) -> Finding {
    let Some(dir) = dir else {
        return Finding::skip(
            "module cache",
            format!("off ({}=off): every start compiles", cache::CACHE_DIR_ENV),
        );
    };
    let what = format!("module cache {}", dir.display());
    let existed = dir.exists();
    match ModuleCache::open(dir, cache::DEFAULT_MAX_BYTES).and_then(|c| c.entries()) {
        Ok(_) if !existed => Finding::ok(format!(
            "{what}: created (mode 0700), as the first container start would"
        )),
        Ok(entries) => {
            let bytes: u64 = entries.iter().map(|e| e.bytes).sum();
            Finding::ok(format!("{what}: {} entries, {bytes} bytes", entries.len()))
        }
        Err(e) if !is_root => Finding::skip(
            what,
            format!("{e:#}; the shims run as root: run `wasmshim doctor` as root to check it"),
        ),
        Err(e) => Finding::fail(
            what,
            format!("{e:#}: the shims compile every module at every start"),
            format!(
                "`chown root:root {0} && chmod 0700 {0}`, or point {1} (containerd's environment) at a root-owned directory of mode 0700",
                dir.display(),
                cache::CACHE_DIR_ENV
            ),
        ),
    }
}

// ---- The node ----------------------------------------------------------------

/// Every input of the checks, as found on a node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Directories searched for containerd, the shims and runc.
    pub bin_dirs: Vec<PathBuf>,
    /// containerd's config file.
    pub config: PathBuf,
    /// Mount point of the cgroup filesystem.
    pub cgroup_root: PathBuf,
    /// Directories searched for the engines' libraries.
    pub lib_dirs: Vec<PathBuf>,
    /// Output of `ldconfig -p` (empty when it could not run).
    pub ldconfig: String,
    /// The module cache directory; `None` when the cache is off.
    pub cache_dir: Option<PathBuf>,
    /// True when running as root, the user the shims run as.
    pub is_root: bool,
    /// The engines to check: `engines.txt`.
    pub engines: Vec<EngineEntry>,
}

impl Node {
    /// The inputs of this machine, as this process's environment shows them.
    pub fn from_env(args: &DoctorArgs) -> Self {
        let bin_dirs = search_dirs(std::env::var_os("PATH").as_deref());
        let mut lib_dirs = Vec::new();
        if let Some(prefix) = std::env::var_os("WASMEDGE_DIR").map(PathBuf::from) {
            lib_dirs.extend([prefix.join("lib"), prefix.join("lib64")]);
        }
        lib_dirs.push(PathBuf::from("/usr/local/lib"));
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
            lib_dirs.push(home.join(".wasmedge/lib"));
        }
        let ldconfig_dirs = with_dir(bin_dirs.clone(), PathBuf::from("/sbin"));
        let ldconfig = match look_up("ldconfig", &ldconfig_dirs) {
            Lookup::Found(path) => ldconfig_output(&path),
            _ => String::new(),
        };
        Node {
            bin_dirs,
            config: args.config.clone(),
            cgroup_root: PathBuf::from(CGROUP_ROOT),
            lib_dirs,
            ldconfig,
            cache_dir: cache_dir(std::env::var_os(cache::CACHE_DIR_ENV).as_deref()),
            is_root: nix::unistd::geteuid().is_root(),
            engines: engine::table(),
        }
    }

    /// Runs every check, in the order of `docs/doctor.md`.
    pub fn check(&self) -> Vec<Finding> {
        let containerd_lookup = look_up("containerd", &self.bin_dirs);
        // containerd also looks next to its own binary.
        let shim_dirs = match &containerd_lookup {
            Lookup::Found(path) => match path.parent() {
                Some(dir) => with_dir(self.bin_dirs.clone(), dir.to_path_buf()),
                None => self.bin_dirs.clone(),
            },
            _ => self.bin_dirs.clone(),
        };
        let shims: Vec<Lookup> = self
            .engines
            .iter()
            .map(|e| look_up(&shim_binary(e.name), &shim_dirs))
            .collect();
        let (containerd_finding, containerd) = check_containerd(&containerd_lookup, &self.bin_dirs);
        let config = containerd.as_ref().map(|v| self.load_config(v));
        let loaded = match &config {
            Some(Ok(Some(config))) => Some(config),
            _ => None,
        };
        let wanted = self.wanted(&shims, loaded);

        let mut findings: Vec<Finding> = self
            .engines
            .iter()
            .zip(&shims)
            .zip(&wanted)
            .map(|((entry, lookup), wanted)| check_shim(entry, lookup, &shim_dirs, *wanted))
            .collect();
        findings.push(containerd_finding);
        findings.extend(self.config_findings(config, containerd.as_ref(), &wanted));
        findings.push(check_runc(&look_up("runc", &self.bin_dirs), &self.bin_dirs));
        findings.push(check_cgroup(&self.cgroup_root));
        findings.extend(self.library_findings(&shims));
        findings.push(check_cache(self.cache_dir.as_deref(), self.is_root));
        findings
    }

    /// Per engine: whether its absence is a problem. It is when its shim is
    /// installed, its runtime is declared, or no shim is installed at all.
    fn wanted(&self, shims: &[Lookup], config: Option<&ContainerdConfig>) -> Vec<bool> {
        let none_installed = !shims.iter().any(Lookup::is_present);
        let declared =
            |engine: &str| config.is_some_and(|c| c.find_runtime(engine) != Declaration::Missing);
        self.engines
            .iter()
            .zip(shims)
            .map(|(e, shim)| shim.is_present() || declared(e.name) || none_installed)
            .collect()
    }

    fn library_findings(&self, shims: &[Lookup]) -> Vec<Finding> {
        let libs = self.engines.iter().zip(shims);
        libs.filter_map(|(entry, shim)| {
            let lib = entry.needs?;
            let installed = shim.is_present();
            Some(check_library(
                lib,
                entry.name,
                installed,
                &self.lib_dirs,
                &self.ldconfig,
            ))
        })
        .collect()
    }

    /// The config file parsed; `Ok(None)` when there is none.
    fn load_config(
        &self,
        containerd: &ContainerdVersion,
    ) -> Result<Option<ContainerdConfig>, Finding> {
        match std::fs::read_to_string(&self.config) {
            Ok(text) => ContainerdConfig::parse(&self.config, &text, containerd).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Finding::fail(
                format!("containerd config {}", self.config.display()),
                format!("cannot read it: {e}"),
                "run `wasmshim doctor` as root",
            )),
        }
    }

    fn config_findings(
        &self,
        config: Option<Result<Option<ContainerdConfig>, Finding>>,
        containerd: Option<&ContainerdVersion>,
        wanted: &[bool],
    ) -> Vec<Finding> {
        let (Some(config), Some(containerd)) = (config, containerd) else {
            let what = format!("containerd config {}", self.config.display());
            return vec![Finding::skip(what, "containerd is not installed")];
        };
        match config {
            Err(finding) => vec![finding],
            Ok(None) => {
                let engines: Vec<&str> = self
                    .engines
                    .iter()
                    .zip(wanted)
                    .filter(|(_, w)| **w)
                    .map(|(e, _)| e.name)
                    .collect();
                vec![check_missing_config(&self.config, containerd, &engines)]
            }
            Ok(Some(config)) => {
                let mut findings = vec![check_config_file(&config, containerd)];
                for (entry, wanted) in self.engines.iter().zip(wanted) {
                    findings.push(check_runtime(&config, containerd, entry.name, *wanted));
                }
                findings
            }
        }
    }
}

fn ldconfig_output(ldconfig: &Path) -> String {
    Command::new(ldconfig)
        .arg("-p")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime part of `containerd config default` of containerd 1.6.
    const DEFAULT_1X: &str = r#"version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = false
"#;

    /// The runtime part of `containerd config default` of containerd 2.0.
    const DEFAULT_2X: &str = r#"version = 3
root = '/var/lib/containerd'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.runtime']
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
"#;

    const SHIM_VERSION: &str = "printf 'containerd-shim-wasmtime-v1:\\n  Runtime:  io.containerd.wasmtime.v1\\n  Version:  0.1.0\\n  Revision: abc1234\\n  Engine:   wasmtime 48.0.8\\n'";

    const WASMTIME: EngineEntry = EngineEntry {
        name: "wasmtime",
        needs: None,
    };
    const WASMEDGE: EngineEntry = EngineEntry {
        name: "wasmedge",
        needs: Some("libwasmedge"),
    };

    fn containerd(version: &str) -> ContainerdVersion {
        let out = format!("containerd github.com/containerd/containerd {version} 88bf19b\n");
        ContainerdVersion::parse(&out).unwrap()
    }

    fn config(text: &str, version: &str) -> ContainerdConfig {
        ContainerdConfig::parse(Path::new(DEFAULT_CONFIG), text, &containerd(version)).unwrap()
    }

    fn why_and_fix(finding: &Finding) -> (&str, &str) {
        match &finding.status {
            Status::Fail { why, fix } => (why, fix),
            _ => panic!("expected a failure: {finding}"),
        }
    }

    /// Writes an executable shell script `dir/name` running `body`.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn snippets_name_the_section_each_containerd_reads() {
        assert_eq!(ConfigVersion::for_containerd(1), ConfigVersion::V2);
        assert_eq!(ConfigVersion::for_containerd(2), ConfigVersion::V3);
        assert_eq!(
            runtime_snippet(ConfigVersion::V2, "wasmtime"),
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n"
        );
        assert_eq!(
            runtime_snippet(ConfigVersion::V3, "wasmedge"),
            "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmedge]\n  runtime_type = \"io.containerd.wasmedge.v1\"\n"
        );
    }

    #[test]
    fn missing_runtime_fails_and_appending_the_printed_snippet_fixes_it() {
        for (default, version) in [(DEFAULT_1X, "1.6.20~ds1"), (DEFAULT_2X, "v2.0.2")] {
            let before = config(default, version);
            assert_eq!(before.find_runtime("wasmtime"), Declaration::Missing);
            let finding = check_runtime(&before, &containerd(version), "wasmtime", true);
            let (why, fix) = why_and_fix(&finding);
            assert!(
                why.contains("not declared in /etc/containerd/config.toml"),
                "{finding}"
            );
            let snippet = runtime_snippet(before.version, "wasmtime");
            assert!(fix.ends_with(&indent(&snippet)), "{finding}");

            let after = config(&format!("{default}\n{snippet}"), version);
            let finding = check_runtime(&after, &containerd(version), "wasmtime", true);
            assert_eq!(
                finding.to_string(),
                "ok   CRI runtime io.containerd.wasmtime.v1: handler wasmtime in /etc/containerd/config.toml"
            );
        }
    }

    #[test]
    fn runtime_under_the_2x_section_fails_on_containerd_1x() {
        let text = format!(
            "{DEFAULT_1X}\n{}",
            runtime_snippet(ConfigVersion::V3, "wasmtime")
        );
        let config = config(&text, "1.7.2");
        assert_eq!(
            config.find_runtime("wasmtime"),
            Declaration::WrongSection(ConfigVersion::V3)
        );
        let finding = check_runtime(&config, &containerd("1.7.2"), "wasmtime", true);
        let (why, fix) = why_and_fix(&finding);
        assert!(
            why.contains(
                "(the containerd 2.x section), but containerd 1.7.2 reads this version 2 file"
            ),
            "{finding}"
        );
        assert!(
            fix.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]"),
            "{finding}"
        );
    }

    #[test]
    fn runtime_under_the_1x_section_fails_in_a_version_3_config() {
        let text = format!(
            "{DEFAULT_2X}\n{}",
            runtime_snippet(ConfigVersion::V2, "wasmtime")
        );
        let config = config(&text, "2.0.2");
        assert_eq!(
            config.find_runtime("wasmtime"),
            Declaration::WrongSection(ConfigVersion::V2)
        );
        let finding = check_runtime(&config, &containerd("2.0.2"), "wasmtime", true);
        let (why, fix) = why_and_fix(&finding);
        assert!(
            why.contains(
                "(the containerd 1.x section), but containerd 2.0.2 reads this version 3 file"
            ),
            "{finding}"
        );
        assert!(
            fix.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]"),
            "{finding}"
        );
    }

    #[test]
    fn containerd_2_reads_a_version_2_config_after_migrating_it() {
        let text = format!(
            "{DEFAULT_1X}\n{}",
            runtime_snippet(ConfigVersion::V2, "wasmtime")
        );
        let config = config(&text, "2.1.0");
        assert_eq!(
            config.find_runtime("wasmtime"),
            Declaration::Declared("wasmtime".into())
        );
        let finding = check_config_file(&config, &containerd("2.1.0"));
        assert_eq!(
            finding.to_string(),
            "ok   containerd config /etc/containerd/config.toml: version 2, which containerd 2.1.0 migrates to version 3 when it starts"
        );
    }

    #[test]
    fn config_containerd_cannot_read_fails() {
        let path = Path::new(DEFAULT_CONFIG);
        let err = ContainerdConfig::parse(path, DEFAULT_2X, &containerd("1.6.20")).unwrap_err();
        assert!(
            why_and_fix(&err)
                .0
                .contains("containerd 1.6.20 does not start with it"),
            "{err}"
        );
        let err = ContainerdConfig::parse(path, "version = 2\n[plugins", &containerd("1.6.20"))
            .unwrap_err();
        assert!(why_and_fix(&err).0.starts_with("not valid TOML"), "{err}");
        let err = ContainerdConfig::parse(path, "version = 7\n", &containerd("2.0.0")).unwrap_err();
        assert_eq!(why_and_fix(&err).1, "set `version = 3`");
        // No `version`: the old format, whose section is `[plugins.cri]`.
        let old = config(&runtime_snippet(ConfigVersion::V1, "wasmtime"), "1.6.20");
        assert_eq!(old.version, ConfigVersion::V1);
        assert_eq!(
            old.find_runtime("wasmtime"),
            Declaration::Declared("wasmtime".into())
        );
    }

    #[test]
    fn another_handler_name_counts_and_a_wrong_runtime_type_fails() {
        let text = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasm]
  runtime_type = "io.containerd.wasmtime.v1"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmedge]
  runtime_type = "io.containerd.runc.v2"
"#;
        let config = config(text, "1.6.20");
        assert_eq!(
            config.find_runtime("wasmtime"),
            Declaration::Declared("wasm".into())
        );
        let finding = check_runtime(&config, &containerd("1.6.20"), "wasmedge", true);
        let (why, _) = why_and_fix(&finding);
        assert_eq!(why, "handler wasmedge in /etc/containerd/config.toml has runtime_type \"io.containerd.runc.v2\"");
        let finding = check_runtime(&config, &containerd("1.6.20"), "other", false);
        assert!(matches!(finding.status, Status::Skip { .. }), "{finding}");
    }

    #[test]
    fn missing_config_file_fails_with_the_lines_to_add() {
        let path = Path::new(DEFAULT_CONFIG);
        for (version, header) in [
            (
                "1.6.20",
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]",
            ),
            (
                "2.0.2",
                "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]",
            ),
        ] {
            let finding =
                check_missing_config(path, &containerd(version), &["wasmtime", "wasmedge"]);
            let (why, fix) = why_and_fix(&finding);
            assert!(why.starts_with("does not exist"), "{finding}");
            assert!(
                fix.starts_with("`containerd config default > /etc/containerd/config.toml`"),
                "{finding}"
            );
            assert!(
                fix.contains(&format!(
                    "    {header}\n      runtime_type = \"io.containerd.wasmtime.v1\""
                )),
                "{finding}"
            );
            assert!(
                fix.contains("runtime_type = \"io.containerd.wasmedge.v1\""),
                "{finding}"
            );
            assert!(!fix.lines().any(|l| l.ends_with(' ')), "{finding}");
        }
    }

    #[test]
    fn disabled_cri_plugin_fails() {
        let disabled = config("version = 2\ndisabled_plugins = [\"cri\"]\n", "1.6.20");
        let finding = check_config_file(&disabled, &containerd("1.6.20"));
        assert_eq!(
            why_and_fix(&finding).1,
            "remove \"cri\" from disabled_plugins, then `systemctl restart containerd`"
        );
        let enabled = config("version = 2\ndisabled_plugins = [\"aufs\"]\n", "1.6.20");
        assert!(!check_config_file(&enabled, &containerd("1.6.20")).is_fail());
    }

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

    #[test]
    fn cgroup_mode_from_the_mounted_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!(cgroup_mode(root), None);
        assert!(check_cgroup(root).is_fail());
        script(&root.join("memory"), "cgroup.procs", "");
        assert_eq!(cgroup_mode(root), Some(CgroupMode::V1));
        script(&root.join("unified"), "cgroup.controllers", "");
        assert_eq!(cgroup_mode(root), Some(CgroupMode::Hybrid));
        script(root, "cgroup.controllers", "");
        assert_eq!(cgroup_mode(root), Some(CgroupMode::Unified));
        assert_eq!(
            check_cgroup(root).to_string(),
            format!("ok   cgroups at {}: v2 (unified)", root.display())
        );
    }

    #[test]
    fn library_from_a_dir_or_ldconfig_and_fails_only_for_an_installed_shim() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = [tmp.path().join("lib")];
        let none = check_library("libwasmedge", "wasmedge", false, &dirs, "");
        assert!(matches!(none.status, Status::Skip { .. }), "{none}");
        let missing = check_library("libwasmedge", "wasmedge", true, &dirs, "");
        assert!(
            why_and_fix(&missing)
                .0
                .ends_with("so containerd-shim-wasmedge-v1 cannot start"),
            "{missing}"
        );

        let ldconfig = "2 libs found in cache `/etc/ld.so.cache'\n\tlibwasmedge.so.0 (libc6,x86-64) => /opt/we/lib/libwasmedge.so.0\n\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6\n";
        assert_eq!(
            find_library("libwasmedge", &dirs, ldconfig),
            Some(PathBuf::from("/opt/we/lib/libwasmedge.so.0"))
        );
        script(&dirs[0], "libwasmedge.so.0", "");
        let found = check_library("libwasmedge", "wasmedge", true, &dirs, "");
        assert_eq!(
            found.to_string(),
            format!("ok   libwasmedge at {}/libwasmedge.so.0", dirs[0].display())
        );
    }

    #[test]
    fn cache_check_applies_the_shims_rule() {
        assert_eq!(cache_dir(Some(OsStr::new("off"))), None);
        assert_eq!(cache_dir(None), Some(PathBuf::from(cache::DEFAULT_DIR)));
        assert!(matches!(
            check_cache(None, true).status,
            Status::Skip { .. }
        ));

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let fresh = check_cache(Some(&dir), true);
        let created = "created (mode 0700), as the first container start would";
        assert_eq!(
            fresh.to_string(),
            format!("ok   module cache {}: {created}", dir.display())
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            check_cache(Some(&dir), true).to_string(),
            format!("ok   module cache {}: 0 entries, 0 bytes", dir.display())
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let open = check_cache(Some(&dir), true);
        assert!(
            why_and_fix(&open).0.contains("lets others write to it"),
            "{open}"
        );
        assert!(why_and_fix(&open).1.starts_with(&format!(
            "`chown root:root {0} && chmod 0700 {0}`",
            dir.display()
        )));
        let as_user = check_cache(Some(&dir), false);
        assert!(matches!(as_user.status, Status::Skip { .. }), "{as_user}");
    }

    #[test]
    fn exit_status_is_non_zero_only_with_a_failure() {
        let fine = vec![Finding::ok("a"), Finding::skip("b", "not here")];
        assert_eq!(exit_status(&fine), 0);
        let mut broken = fine.clone();
        broken.push(Finding::fail("c", "broken", "mend it"));
        assert_eq!(exit_status(&broken), 1);
        assert_eq!(broken[2].to_string(), "FAIL c: broken. Fix: mend it");
    }

    /// A node in a temp dir: containerd 1.7, runc, the wasmtime shim, a config declaring it.
    fn healthy_node(root: &Path) -> Node {
        let bin = root.join("bin");
        script(
            &bin,
            "containerd",
            "echo 'containerd github.com/containerd/containerd v1.7.24 88bf19b'",
        );
        script(
            &bin,
            "runc",
            "printf 'runc version 1.2.4\\ncommit: v1.2.4\\n'",
        );
        script(&bin, "containerd-shim-wasmtime-v1", SHIM_VERSION);
        let config = root.join("config.toml");
        let text = format!(
            "{DEFAULT_1X}\n{}",
            runtime_snippet(ConfigVersion::V2, "wasmtime")
        );
        std::fs::write(&config, text).unwrap();
        script(&root.join("cgroup"), "cgroup.controllers", "");
        Node {
            bin_dirs: vec![bin],
            config,
            cgroup_root: root.join("cgroup"),
            lib_dirs: vec![root.join("lib")],
            ldconfig: String::new(),
            cache_dir: Some(root.join("cache")),
            is_root: true,
            engines: vec![WASMTIME, WASMEDGE],
        }
    }

    #[test]
    fn healthy_node_passes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().display().to_string();
        let findings = healthy_node(tmp.path()).check();
        let report: Vec<String> = findings.iter().map(Finding::to_string).collect();
        assert_eq!(
            report,
            [
                format!("ok   containerd-shim-wasmtime-v1 0.1.0 (abc1234, wasmtime 48.0.8) at {root}/bin/containerd-shim-wasmtime-v1"),
                "skip containerd-shim-wasmedge-v1: not installed (needed only to run io.containerd.wasmedge.v1 containers)".into(),
                format!("ok   containerd 1.7.24 at {root}/bin/containerd"),
                format!("ok   containerd config {root}/config.toml: version 2"),
                format!("ok   CRI runtime io.containerd.wasmtime.v1: handler wasmtime in {root}/config.toml"),
                "skip CRI runtime io.containerd.wasmedge.v1: not declared, and containerd-shim-wasmedge-v1 is not installed".into(),
                format!("ok   runc 1.2.4 at {root}/bin/runc"),
                format!("ok   cgroups at {root}/cgroup: v2 (unified)"),
                "skip libwasmedge: not found; only containerd-shim-wasmedge-v1 needs it, and it is not installed".into(),
                format!("ok   module cache {root}/cache: created (mode 0700), as the first container start would"),
            ]
        );
        assert_eq!(exit_status(&findings), 0);
    }

    #[test]
    fn broken_node_fails_with_each_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let node = healthy_node(tmp.path());
        let failing = "echo 'error while loading shared libraries: libwasmedge.so.0' >&2; exit 127";
        script(&node.bin_dirs[0], "containerd-shim-wasmedge-v1", failing);
        std::fs::remove_file(node.bin_dirs[0].join("runc")).unwrap();
        let findings = node.check();
        let failed: Vec<&str> = findings
            .iter()
            .filter(|f| f.is_fail())
            .map(|f| f.what.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "containerd-shim-wasmedge-v1",
                "CRI runtime io.containerd.wasmedge.v1",
                "runc",
                "libwasmedge"
            ]
        );
        assert_eq!(exit_status(&findings), 1);

        // Without a config file, one failure names every runtime to declare.
        std::fs::remove_file(&node.config).unwrap();
        let findings = node.check();
        let config = findings
            .iter()
            .find(|f| f.what.starts_with("containerd config"))
            .unwrap();
        let (_, fix) = why_and_fix(config);
        assert!(
            fix.contains("runtimes.wasmtime]") && fix.contains("runtimes.wasmedge]"),
            "{config}"
        );
    }
}
