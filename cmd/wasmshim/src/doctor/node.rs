//! The node: every input of the checks as this machine shows them
//! ([`Node::from_env`]), and every check run on them in the order of
//! `docs/doctor.md` ([`Node::check`]). Runs in the CLI process.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use wasmshim::engine::cache;
use wasmshim::engine::{self, EngineEntry};

use super::{
    cache_dir, check_cache, check_cgroup, check_config_file, check_containerd, check_library,
    check_missing_config, check_runc, check_runtime, check_shim, look_up, needs_library,
    search_dirs, shim_binary, with_dir, ContainerdConfig, ContainerdVersion, Declaration,
    DoctorArgs, Finding, Lookup, CGROUP_ROOT,
};

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
            // A front binary's engine binary may hold the library itself.
            if let Lookup::Found(front) = shim {
                let engine = wasmshim::front::engine_binary_of(front);
                if needs_library(&engine, lib) == Some(false) {
                    return Some(Finding::ok(format!(
                        "{lib} linked into {}",
                        engine.display()
                    )));
                }
            }
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
    use crate::doctor::fixtures::{
        script, why_and_fix, DEFAULT_1X, SHIM_VERSION, WASMEDGE, WASMTIME,
    };
    use crate::doctor::{exit_status, runtime_snippet, ConfigVersion};

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

    #[test]
    fn an_engine_binary_with_wasmedge_linked_in_needs_no_libwasmedge() {
        let tmp = tempfile::tempdir().unwrap();
        let node = healthy_node(tmp.path());
        let bin = &node.bin_dirs[0];
        script(bin, "containerd-shim-wasmedge-v1", SHIM_VERSION);
        // An ELF executable that loads no libwasmedge.so: this test binary.
        let engine = bin.join("containerd-shim-wasmedge-v1-engine");
        std::fs::copy(std::env::current_exe().unwrap(), &engine).unwrap();
        let library = |node: &Node| {
            let findings = node.check();
            let found = findings.iter().find(|f| f.what.starts_with("libwasmedge"));
            found.map(Finding::to_string).unwrap_or_default()
        };
        assert_eq!(
            library(&node),
            format!("ok   libwasmedge linked into {}", engine.display())
        );
        // An engine binary that is no ELF file (cannot be read) is checked as before.
        script(bin, "containerd-shim-wasmedge-v1-engine", "exit 0");
        assert!(
            library(&node).starts_with("FAIL libwasmedge"),
            "{}",
            library(&node)
        );
    }
}
