//! The input layer: an OCI bundle's `config.json` becomes a [`RunSpec`], or
//! is found to run a Linux program ([`Workload`]).
//!
//! Runs in the shim process at Create, after the rootfs is mounted. Follows
//! runwasi's entrypoint convention: `process.args[0]` is the module's path in
//! the rootfs (absolute, or relative to `process.cwd`), optionally suffixed
//! `#function`; the rest of the args and `process.env` go to WASI; the rootfs is
//! preopened at `/`, each bind mount at its destination. An image whose
//! layers are Wasm modules rather than rootfs tars gives the module instead
//! ([`image`]).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};

use crate::engine::{has_wasm_magic, Preopen, RunSpec, MAX_MODULE_BYTES};
use crate::error::{Error, Result};
use image::ImageModule;

pub mod image;

/// The function a module runs when the entrypoint names none.
pub const DEFAULT_ENTRY: &str = "_start";

/// Annotation with which the CRI plugin names a container's pod sandbox.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// What a container runs.
#[derive(Debug, Clone)]
pub enum Workload {
    /// A WebAssembly module, and how to run it.
    Wasm(RunSpec),
    /// A Linux program (the entrypoint is not a module): runc runs it.
    Linux,
}

/// A bundle's OCI spec and what it runs.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The whole spec, for what the OS must apply (user, namespaces, cgroups).
    pub spec: Spec,
    /// The module, or a Linux program.
    pub workload: Workload,
}

/// Reads `<bundle>/config.json`. A field that does not parse is named by
/// its path in the error (`process.user.uid: invalid type: …`).
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let config = bundle.join("config.json");
    let invalid = |why: String| {
        Error::InvalidArgument(format!("cannot read OCI spec {}: {why}", config.display()))
    };
    let json = std::fs::read(&config).map_err(|e| invalid(e.to_string()))?;
    parse_spec(&json).map_err(invalid)
}

/// Parses a `config.json`; the error starts with the path of the field that
/// does not parse, when there is one.
fn parse_spec(json: &[u8]) -> std::result::Result<Spec, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let field = e.path().to_string();
        match field.as_str() {
            "." => e.into_inner().to_string(),
            _ => format!("{field}: {}", e.into_inner()),
        }
    })
}

/// Reads `<bundle>/config.json` and tells what it runs: a module (resolved
/// into a [`RunSpec`]) or a Linux program.
///
/// The entrypoint is a module when it says so (a `#function` suffix or a
/// `.wasm` name) or when the file it names starts with the Wasm magic number;
/// a module is then checked as far as it can be without an engine (it exists
/// inside the rootfs and is WebAssembly). Anything else is a Linux program.
pub fn load_bundle(bundle: &Path) -> Result<Bundle> {
    bundle_of(load_spec(bundle)?, bundle, None)
}

/// What `spec` (of `bundle`) runs, as [`load_bundle`] tells it; with
/// `from_image`, the module of the container's artifact image, whatever
/// the rootfs holds.
pub fn bundle_of(spec: Spec, bundle: &Path, from_image: Option<&ImageModule>) -> Result<Bundle> {
    let rootfs = rootfs_of(&spec, bundle)?;
    let workload = if from_image.is_some() || is_wasm_entrypoint(&spec, &rootfs) {
        // The shim has no terminal to give a module (the OCI CLI has: its
        // caller passes a console socket).
        check_no_terminal(
            spec.process()
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false),
        )?;
        Workload::Wasm(module_run_spec(&spec, &rootfs, from_image)?)
    } else {
        Workload::Linux
    };
    Ok(Bundle { spec, workload })
}

/// Whether the entrypoint of `spec` (of `bundle`) names no file in the
/// rootfs, or there is none: the module may then be in the container's
/// image ([`image`]). A program found through `PATH` counts as missing.
pub fn entrypoint_missing(spec: &Spec, bundle: &Path) -> bool {
    let Some(first) = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first())
    else {
        return true;
    };
    let Ok(rootfs) = rootfs_of(spec, bundle) else {
        return false;
    };
    let Ok(root) = cap_std::fs::Dir::open_ambient_dir(&rootfs, cap_std::ambient_authority()) else {
        return false;
    };
    let cwd = spec
        .process()
        .as_ref()
        .map(|p| p.cwd().clone())
        .unwrap_or_default();
    let (name, _) = split_entrypoint(first);
    !root.exists(path_in_rootfs(&cwd, Path::new(name)))
}

/// The rootfs directory of `spec` (`root.path`, relative to `bundle`).
pub fn rootfs_of(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("OCI spec has no root".into()))?;
    Ok(if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    })
}

/// Whether `spec` (of `bundle`) runs a WebAssembly module rather than a Linux
/// program, by the rule of [`load_bundle`], or ran its image's module.
pub fn runs_wasm(spec: &Spec, bundle: &Path) -> bool {
    bundle.join(image::MODULE_FILE).is_file()
        || rootfs_of(spec, bundle).is_ok_and(|rootfs| is_wasm_entrypoint(spec, &rootfs))
}

/// Whether the spec's entrypoint names a WebAssembly module (see [`load_bundle`]).
/// A spec without args counts as one, so that [`run_spec`] names what is missing.
fn is_wasm_entrypoint(spec: &Spec, rootfs: &Path) -> bool {
    let Some(process) = spec.process() else {
        return true;
    };
    let Some(first) = process.args().as_ref().and_then(|a| a.first()) else {
        return true;
    };
    let (name, _) = split_entrypoint(first);
    if first.contains('#') || name.ends_with(".wasm") {
        return true;
    }
    let relative = path_in_rootfs(process.cwd(), Path::new(name));
    let Ok(root) = cap_std::fs::Dir::open_ambient_dir(rootfs, cap_std::ambient_authority()) else {
        return false;
    };
    let mut magic = [0u8; 4];
    open_entrypoint(&root, &relative)
        .and_then(|mut file| {
            if !file.metadata()?.is_file() {
                return Ok(0);
            }
            file.read(&mut magic)
        })
        .is_ok_and(|n| has_wasm_magic(&magic[..n]))
}

/// Opens `relative` inside `root` for reading. Non-blocking, so that a fifo
/// (which would block until a writer comes) opens at once and is then
/// refused for what it is; never as a controlling terminal.
fn open_entrypoint(root: &cap_std::fs::Dir, relative: &Path) -> std::io::Result<cap_std::fs::File> {
    use cap_std::fs::OpenOptionsExt;
    let mut options = cap_std::fs::OpenOptions::new();
    options
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    root.open_with(relative, &options)
}

/// The pod sandbox id the CRI plugin put in the bundle's annotations, if any.
/// Containers of one pod share a shim process.
pub fn pod_sandbox_id(bundle: &Path) -> Option<String> {
    load_spec(bundle)
        .ok()?
        .annotations()
        .as_ref()?
        .get(SANDBOX_ID_ANNOTATION)
        .cloned()
}

/// Refuses a terminal: the one place of that rule, for the Create request's
/// flag and the spec's `process.terminal` alike.
pub fn check_no_terminal(terminal: bool) -> Result<()> {
    if terminal {
        return Err(Error::InvalidArgument(
            "a terminal (tty) is not supported by this shim".into(),
        ));
    }
    Ok(())
}

/// The process of an Exec request: the runtime-spec `process` JSON that
/// containerd sends (`ExecProcessRequest.spec`).
pub fn parse_process(json: &[u8]) -> Result<oci_spec::runtime::Process> {
    let process: oci_spec::runtime::Process = serde_json::from_slice(json)
        .map_err(|e| Error::InvalidArgument(format!("the exec's process spec: {e}")))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::InvalidArgument(
            "the exec's process spec has no args: nothing to run".into(),
        ));
    }
    Ok(process)
}

/// Builds the [`RunSpec`] of `spec` whose root filesystem is at `rootfs` on
/// the host. `process.terminal` is the caller's to check ([`load_bundle`]
/// refuses it for the shim).
pub fn run_spec(spec: &Spec, rootfs: &Path) -> Result<RunSpec> {
    module_run_spec(spec, rootfs, None)
}

/// [`run_spec`], with the module of the container's image when there is one:
/// `process.args[0]`, if given, then names the module only for the module
/// itself (argv\[0\]) and may give its `#function`.
fn module_run_spec(
    spec: &Spec,
    rootfs: &Path,
    from_image: Option<&ImageModule>,
) -> Result<RunSpec> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("OCI spec has no process".into()))?;
    let args = process.args().clone().unwrap_or_default();
    let (module, module_name, entry) = match (from_image, args.first()) {
        (Some(image), first) => {
            let (name, entry) = first.map_or(("", DEFAULT_ENTRY), |a| split_entrypoint(a));
            let name = if name.is_empty() { &image.name } else { name };
            (image.path.clone(), name.to_string(), entry)
        }
        (None, None) => {
            return Err(Error::InvalidArgument(
                "OCI spec has no process.args: the first arg must name the .wasm module".into(),
            ))
        }
        (None, Some(first)) => {
            let (module_name, entry) = split_entrypoint(first);
            if module_name.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "entrypoint '{first}' names no module"
                )));
            }
            let relative = path_in_rootfs(process.cwd(), Path::new(module_name));
            check_module_file(rootfs, &relative, module_name)?;
            (rootfs.join(&relative), module_name.to_string(), entry)
        }
    };

    let env = process
        .env()
        .iter()
        .flatten()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();

    let root_readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let mut preopens = vec![Preopen {
        host: rootfs.to_path_buf(),
        guest: "/".into(),
        readonly: root_readonly,
    }];
    for mount in spec.mounts().iter().flatten() {
        check_mount_destination(mount)?;
        preopens.extend(bind_preopen(mount)?);
    }

    let mut wasi_args = vec![module_name.clone()];
    wasi_args.extend(args.iter().skip(1).cloned());
    Ok(RunSpec {
        module,
        module_name,
        entry: entry.to_string(),
        args: wasi_args,
        env,
        preopens,
    })
}

/// Splits `path#function` into the path and the function (default `_start`).
pub fn split_entrypoint(arg: &str) -> (&str, &str) {
    match arg.rsplit_once('#') {
        Some((path, func)) if !func.is_empty() => (path, func),
        Some((path, _)) => (path, DEFAULT_ENTRY),
        None => (arg, DEFAULT_ENTRY),
    }
}

/// The path, relative to the rootfs, of `path` (absolute, or relative to `cwd`).
/// Purely lexical: symlinks and `..` are resolved by `check_module_file`.
pub fn path_in_rootfs(cwd: &Path, path: &Path) -> PathBuf {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        Path::new("/").join(cwd).join(path)
    };
    full.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect()
}

/// Checks that `relative` names, inside `rootfs`, a regular file starting with
/// `\0asm`. Symlinks are followed inside the rootfs only (cap-std): a path that
/// leads out of it is refused.
fn check_module_file(rootfs: &Path, relative: &Path, name: &str) -> Result<()> {
    let root = cap_std::fs::Dir::open_ambient_dir(rootfs, cap_std::ambient_authority())
        .map_err(|e| Error::internal(format!("opening the rootfs {}", rootfs.display()), e))?;
    let mut file = open_entrypoint(&root, relative).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!(
            "WebAssembly module {name} not found in the container's rootfs"
        )),
        std::io::ErrorKind::PermissionDenied => Error::InvalidArgument(format!(
            "entrypoint {name} resolves outside the container's rootfs ({e})"
        )),
        _ => Error::InvalidArgument(format!("cannot open entrypoint {name}: {e}")),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::InvalidArgument(format!("cannot read entrypoint {name}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "entrypoint {name} is not a regular file"
        )));
    }
    if meta.len() > MAX_MODULE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "entrypoint {name} is {} bytes, more than the {MAX_MODULE_BYTES} a module may have",
            meta.len()
        )));
    }
    let mut magic = [0u8; 4];
    let n = file
        .read(&mut magic)
        .map_err(|e| Error::InvalidArgument(format!("cannot read entrypoint {name}: {e}")))?;
    if !has_wasm_magic(&magic[..n]) {
        return Err(Error::InvalidArgument(format!(
            "entrypoint {name} is not a WebAssembly module (it does not start with the \\0asm magic number)"
        )));
    }
    Ok(())
}

/// Refuses a mount destination that is relative or holds `..`: the module
/// would see its preopen under a name no path of its own can reach.
fn check_mount_destination(mount: &Mount) -> Result<()> {
    let destination = mount.destination();
    if !destination.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "mounts: the destination {} of a mount must be absolute",
            destination.display()
        )));
    }
    if destination
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(Error::InvalidArgument(format!(
            "mounts: the destination {} of a mount must not contain '..'",
            destination.display()
        )));
    }
    Ok(())
}

/// The preopen for a bind mount; `None` for every other kind of mount, and
/// for a bind mount of a file (WASI preopens only directories). A missing
/// source is an error, as runc makes it.
fn bind_preopen(mount: &Mount) -> Result<Option<Preopen>> {
    let options = mount.options().clone().unwrap_or_default();
    let is_bind = mount.typ().as_deref() == Some("bind")
        || options.iter().any(|o| o == "bind" || o == "rbind");
    if !is_bind {
        return Ok(None);
    }
    let Some(source) = mount.source().as_ref() else {
        return Ok(None);
    };
    if !source.exists() {
        return Err(Error::NotFound(format!(
            "the source {} of the bind mount at {} does not exist",
            source.display(),
            mount.destination().display()
        )));
    }
    if !source.is_dir() {
        log::warn!(
            "bind mount {} is not a directory; WASI can only preopen directories, skipping it",
            source.display()
        );
        return Ok(None);
    }
    Ok(Some(Preopen {
        host: source.clone(),
        guest: mount.destination().to_string_lossy().into_owned(),
        readonly: options.iter().any(|o| o == "ro"),
    }))
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, ProcessBuilder, RootBuilder, SpecBuilder};

    fn spec_with(args: &[&str], mounts: Vec<Mount>) -> Spec {
        SpecBuilder::default()
            .root(
                RootBuilder::default()
                    .path("rootfs")
                    .readonly(false)
                    .build()
                    .unwrap(),
            )
            .process(
                ProcessBuilder::default()
                    .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .env(vec!["A=1".to_string(), "B=x=y".to_string()])
                    .cwd("/app")
                    .build()
                    .unwrap(),
            )
            .mounts(mounts)
            .build()
            .unwrap()
    }

    fn rootfs_with(path: &str, bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
        dir
    }

    #[test]
    fn wasm_or_linux_by_name_then_by_magic() {
        let rootfs = tempfile::tempdir().unwrap();
        for (path, bytes) in [
            ("bin/sh", &b"\x7fELF\x02"[..]),
            ("app/module", &b"\0asm\x01\0\0\0"[..]),
            ("app/elf.wasm", &b"\x7fELF\x02"[..]),
        ] {
            let file = rootfs.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, bytes).unwrap();
        }
        let wasm = |arg: &str| is_wasm_entrypoint(&spec_with(&[arg], vec![]), rootfs.path());
        assert!(!wasm("/bin/sh"), "an ELF program is a Linux program");
        assert!(!wasm("sh"), "a name for the PATH is a Linux program");
        assert!(!wasm("/bin/nope"), "runc names a missing program");
        assert!(
            wasm("module"),
            "the magic number makes a module (relative to cwd /app)"
        );
        assert!(
            wasm("/app/elf.wasm"),
            "a .wasm name is a module, checked as one"
        );
        assert!(wasm("/bin/sh#main"), "a #function names a module function");
        let err = run_spec(&spec_with(&["/app/elf.wasm"], vec![]), rootfs.path()).unwrap_err();
        assert!(
            err.to_string().contains("is not a WebAssembly module"),
            "{err}"
        );
    }

    #[test]
    fn an_artifact_images_module_runs_whatever_the_rootfs_holds() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bundle.path().join("rootfs/bin")).unwrap();
        std::fs::write(bundle.path().join("rootfs/bin/sh"), b"\x7fELF\x02").unwrap();
        let missing = |args: &[&str]| entrypoint_missing(&spec_with(args, vec![]), bundle.path());
        assert!(missing(&[]), "no args: the image may give the module");
        assert!(missing(&["/app.wasm#run"]));
        assert!(missing(&["sh"]), "a PATH name is not a file at cwd /app");
        assert!(!missing(&["/bin/sh"]));

        let from_image = ImageModule {
            path: bundle.path().join(image::MODULE_FILE),
            name: "hello.wasm".into(),
        };
        let run = |args: &[&str]| match bundle_of(
            spec_with(args, vec![]),
            bundle.path(),
            Some(&from_image),
        )
        .unwrap()
        {
            Bundle {
                workload: Workload::Wasm(run),
                ..
            } => run,
            Bundle { .. } => panic!("an artifact image's container runs Linux"),
        };
        let bare = run(&[]);
        assert_eq!(bare.module, from_image.path);
        assert_eq!(
            (bare.module_name.as_str(), bare.entry.as_str()),
            ("hello.wasm", "_start")
        );
        assert_eq!(bare.args, ["hello.wasm"]);
        let named = run(&["/app.wasm#run", "x"]);
        assert_eq!(
            named.module, from_image.path,
            "args[0] names, the image gives"
        );
        assert_eq!(
            (named.entry.as_str(), named.args),
            ("run", vec!["/app.wasm".to_string(), "x".into()])
        );

        // A later `delete` of a crashed shim tells the container ran Wasm.
        let spec = spec_with(&["/bin/sh"], vec![]);
        assert!(!runs_wasm(&spec, bundle.path()));
        std::fs::write(&from_image.path, b"\0asm\x01\0\0\0").unwrap();
        assert!(runs_wasm(&spec, bundle.path()));
    }

    #[test]
    fn entrypoint_splits_function() {
        assert_eq!(split_entrypoint("/a.wasm"), ("/a.wasm", "_start"));
        assert_eq!(split_entrypoint("/a.wasm#run"), ("/a.wasm", "run"));
        assert_eq!(split_entrypoint("a.wasm#"), ("a.wasm", "_start"));
    }

    #[test]
    fn relative_module_resolves_against_cwd() {
        assert_eq!(
            path_in_rootfs(Path::new("/app"), Path::new("m.wasm")),
            PathBuf::from("app/m.wasm")
        );
        assert_eq!(
            path_in_rootfs(Path::new("/app"), Path::new("/m.wasm")),
            PathBuf::from("m.wasm")
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs_and_never_escape() {
        let rootfs = rootfs_with("/app/real.wasm", b"\0asm\x01\0\0\0");
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("host.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let link = |name: &str, target: &Path| {
            std::os::unix::fs::symlink(target, rootfs.path().join(name)).unwrap()
        };
        link("inside.wasm", Path::new("app/real.wasm"));
        link("absolute.wasm", &outside.path().join("host.wasm"));
        link("up.wasm", Path::new("../../../../../../tmp"));

        let run = run_spec(&spec_with(&["/inside.wasm"], vec![]), rootfs.path()).unwrap();
        assert_eq!(std::fs::read(&run.module).unwrap(), b"\0asm\x01\0\0\0");
        for escaping in ["/absolute.wasm", "/up.wasm", "../../etc/passwd"] {
            let err = run_spec(&spec_with(&[escaping], vec![]), rootfs.path()).unwrap_err();
            assert!(
                err.to_string()
                    .contains("resolves outside the container's rootfs"),
                "{escaping}: {err}"
            );
        }
    }

    #[test]
    fn spec_becomes_run_spec() {
        let rootfs = rootfs_with("/app/m.wasm", b"\0asm\x01\0\0\0");
        let data = tempfile::tempdir().unwrap();
        let mounts = vec![
            MountBuilder::default()
                .destination("/data")
                .typ("bind")
                .source(data.path())
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .unwrap(),
            MountBuilder::default()
                .destination("/proc")
                .typ("proc")
                .source("proc")
                .build()
                .unwrap(),
        ];
        let spec = spec_with(&["m.wasm#main", "x", "y"], mounts);
        let run = run_spec(&spec, rootfs.path()).unwrap();
        assert_eq!(run.module, rootfs.path().join("app/m.wasm"));
        assert_eq!(run.entry, "main");
        assert_eq!(run.args, vec!["m.wasm", "x", "y"]);
        assert_eq!(run.env_var("B"), Some("x=y"));
        assert_eq!(run.preopens.len(), 2);
        assert_eq!(run.preopens[0].guest, "/");
        assert!(!run.preopens[0].readonly);
        assert_eq!(run.preopens[1].guest, "/data");
        assert_eq!(run.preopens[1].host, data.path());
        assert!(run.preopens[1].readonly);
    }

    #[test]
    fn bad_entrypoints_are_named() {
        let rootfs = rootfs_with("/bin/sh", b"\x7fELF\x02\x01\x01");
        let err = run_spec(&spec_with(&["/bin/sh"], vec![]), rootfs.path()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(
            err.to_string()
                .contains("/bin/sh is not a WebAssembly module"),
            "{err}"
        );

        let err = run_spec(&spec_with(&["/missing.wasm"], vec![]), rootfs.path()).unwrap_err();
        assert!(matches!(err, Error::NotFound(_)));
        assert!(err.to_string().contains("/missing.wasm not found"), "{err}");

        let err = run_spec(&spec_with(&[], vec![]), rootfs.path()).unwrap_err();
        assert!(err.to_string().contains("no process.args"), "{err}");

        let err = run_spec(&spec_with(&["/bin"], vec![]), rootfs.path()).unwrap_err();
        assert!(
            err.to_string().contains("/bin is not a regular file"),
            "{err}"
        );

        // A fifo is refused at once (opening it must not wait for a writer).
        nix::unistd::mkfifo(
            &rootfs.path().join("pipe.wasm"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = run_spec(&spec_with(&["/pipe.wasm"], vec![]), rootfs.path()).unwrap_err();
        assert!(err.to_string().contains("is not a regular file"), "{err}");
        assert!(!is_wasm_entrypoint(
            &spec_with(&["/pipe"], vec![]),
            rootfs.path()
        ));

        // A file past the size limit is refused before it is read.
        let big = std::fs::File::create(rootfs.path().join("big.wasm")).unwrap();
        std::io::Write::write_all(&mut &big, b"\0asm\x01\0\0\0").unwrap();
        big.set_len(MAX_MODULE_BYTES + 1).unwrap();
        let err = run_spec(&spec_with(&["/big.wasm"], vec![]), rootfs.path()).unwrap_err();
        assert!(err.to_string().contains("a module may have"), "{err}");
    }

    #[test]
    fn bad_mounts_are_named() {
        let rootfs = rootfs_with("/app/m.wasm", b"\0asm\x01\0\0\0");
        let bind = |source: &str, destination: &str| {
            MountBuilder::default()
                .destination(destination)
                .typ("bind")
                .source(source)
                .options(vec!["rbind".to_string()])
                .build()
                .unwrap()
        };
        for (mount, expected) in [
            (
                bind("/tmp", "data"),
                "destination data of a mount must be absolute",
            ),
            (bind("/tmp", "/data/../etc"), "must not contain '..'"),
            (bind("/nonexistent-source", "/data"), "does not exist"),
        ] {
            let err = run_spec(&spec_with(&["m.wasm"], vec![mount]), rootfs.path()).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let err = run_spec(
            &spec_with(&["m.wasm"], vec![bind("/nonexistent-source", "/data")]),
            rootfs.path(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }

    /// The shim refuses a spec asking for a terminal (the OCI CLI's
    /// `run_spec` callers handle it themselves).
    #[test]
    fn shim_refuses_a_terminal_in_the_spec() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bundle.path().join("rootfs")).unwrap();
        std::fs::write(bundle.path().join("rootfs/m.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let mut spec = spec_with(&["/m.wasm"], vec![]);
        let mut process = spec.process().clone().unwrap();
        process.set_terminal(Some(true)).set_cwd("/".into());
        spec.set_process(Some(process));
        std::fs::write(
            bundle.path().join("config.json"),
            serde_json::to_string(&spec).unwrap(),
        )
        .unwrap();
        let err = load_bundle(bundle.path()).err().unwrap();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains("terminal"), "{err}");
        let rootfs = bundle.path().join("rootfs");
        assert!(run_spec(&spec, &rootfs).is_ok());
    }
}
