//! Records the git revision for `--version` (see ../revision.rs), links the
//! shim and its engine position-dependent (see ../position_dependent.rs), and embeds
//! the directory of libwasmedge as an rpath, so the shim finds the library at
//! run time without LD_LIBRARY_PATH. Searches where `wasmedge-sys`
//! does: WASMEDGE_LIB_DIR, WASMEDGE_DIR/lib{64,}, ~/.wasmedge/lib{64,}, /usr/local/lib{64,}.

use std::path::PathBuf;

#[path = "../position_dependent.rs"]
mod position_dependent;
#[path = "../revision.rs"]
mod revision;

fn main() {
    revision::emit();
    position_dependent::emit();
    for var in ["WASMEDGE_LIB_DIR", "WASMEDGE_DIR", "HOME"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("WASMEDGE_LIB_DIR") {
        candidates.push(dir.into());
    }
    let mut prefixes: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("WASMEDGE_DIR") {
        prefixes.push(dir.into());
    }
    if let Some(home) = std::env::var_os("HOME") {
        prefixes.push(PathBuf::from(home).join(".wasmedge"));
    }
    prefixes.push("/usr/local".into());
    for prefix in prefixes {
        candidates.push(prefix.join("lib64"));
        candidates.push(prefix.join("lib"));
    }
    if let Some(dir) = candidates
        .into_iter()
        .find(|d| d.join("libwasmedge.so").exists() || d.join("libwasmedge.so.0").exists())
    {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
