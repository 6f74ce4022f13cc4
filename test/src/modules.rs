//! The test modules of `test/wasm`, compiled once per run: C with Debian's
//! clang + wasi-libc (`clang --target=wasm32-wasi --sysroot=/usr`), WAT with
//! the `wat` crate.

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
