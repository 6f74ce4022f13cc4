//! The test modules of `test/wasm`, compiled once per run: C with Debian's
//! clang + wasi-libc (`clang --target=wasm32-wasi --sysroot=/usr`), WAT with
//! the `wat` crate. [`componentize`] wraps such a module into a
//! `wasi:cli/command` component with wasmtime's preview-1 adapter, as
//! `wasm-tools component new --adapt` does.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Source directory of the test modules.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm")
}

/// Compiles every module in [`source_dir`] into `out`; returns `out`.
pub fn build_all(out: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    for entry in std::fs::read_dir(source_dir())? {
        let path = entry?.path();
        let stem = path
            .file_stem()
            .context("file name")?
            .to_string_lossy()
            .into_owned();
        let target = out.join(format!("{stem}.wasm"));
        match path.extension().and_then(|e| e.to_str()) {
            Some("c") => compile_c(&path, &target)?,
            Some("wat") => std::fs::write(&target, wat::parse_file(&path)?)?,
            _ => {}
        }
    }
    Ok(out.to_path_buf())
}

/// Compiles the one test module `name` (`test/wasm/<name>.c`) into `out`;
/// returns the module's path.
pub fn build_c(name: &str, out: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let target = out.join(format!("{name}.wasm"));
    compile_c(&source_dir().join(format!("{name}.c")), &target)?;
    Ok(target)
}

/// What a component built from C is: a program with a `main`, or a library
/// whose exports the host calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    /// A `wasi:cli/command`: `main` runs through `wasi:cli/run`.
    Command,
    /// No `main` (`-mexec-model=reactor`): only the world's exports, such as
    /// `wasi:http/incoming-handler`.
    Reactor,
}

/// Wraps the WASI preview 1 command module `module` into a `wasi:cli/command`
/// component at `target` (the same program, its WASI calls adapted to
/// preview 2 by wasmtime's command adapter); returns `target`.
pub fn componentize(module: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    componentize_as(module, target, Exec::Command)
}

fn componentize_as(module: &Path, target: &Path, exec: Exec) -> anyhow::Result<PathBuf> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let adapter = match exec {
        Exec::Command => WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        Exec::Reactor => WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let core = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&core)?
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter)?
        .validate(true)
        .encode()
        .with_context(|| format!("making a component of {}", module.display()))?;
    std::fs::write(target, component)?;
    Ok(target.to_path_buf())
}

/// Builds `test/wasm/p2/<name>.c`, a program that calls WASI preview 2
/// interfaces directly, into a `wasi:cli/command` component at
/// `out/<name>.wasm`: C bindings for `world` of `test/wit` are generated
/// with wit-bindgen, compiled in, and the module is then componentized.
pub fn build_p2_component(name: &str, world: &str, out: &Path) -> anyhow::Result<PathBuf> {
    build_p2(name, world, out, Exec::Command)
}

/// Builds `test/wasm/p2/<name>.c` as [`build_p2_component`] does, as a
/// component of `exec` kind.
pub fn build_p2(name: &str, world: &str, out: &Path, exec: Exec) -> anyhow::Result<PathBuf> {
    let bindings = out.join(format!("{name}-bindings"));
    std::fs::create_dir_all(&bindings)?;
    let mut resolve = wit_parser::Resolve::default();
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit");
    let (package, _) = resolve
        .push_dir(&wit)
        .with_context(|| format!("reading {}", wit.display()))?;
    let world_id = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world_id, &mut files)?;
    let mut inputs = vec![source_dir().join("p2").join(format!("{name}.c"))];
    for (file, contents) in files.iter() {
        let path = bindings.join(file);
        std::fs::write(&path, contents)?;
        if file.ends_with(".c") || file.ends_with(".o") {
            inputs.push(path);
        }
    }
    let core = bindings.join(format!("{name}.core.wasm"));
    let mut clang = Command::new("clang");
    clang.args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2"]);
    if exec == Exec::Reactor {
        clang.arg("-mexec-model=reactor");
    }
    let status = clang
        .arg("-I")
        .arg(&bindings)
        .arg("-o")
        .arg(&core)
        .args(&inputs)
        .status()
        .context("running clang (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)")?;
    if !status.success() {
        bail!("clang failed on {name}.c with its {world} bindings");
    }
    componentize_as(&core, &out.join(format!("{name}.wasm")), exec)
}

fn compile_c(source: &Path, target: &Path) -> anyhow::Result<()> {
    let status = Command::new("clang")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-s", "-o"])
        .arg(target)
        .arg(source)
        .status()
        .context("running clang (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)")?;
    if !status.success() {
        bail!("clang failed on {}", source.display());
    }
    Ok(())
}
