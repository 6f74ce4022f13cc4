//! Check 5: the system libraries the engines' shims load (`libwasmedge`),
//! found in a list of directories or by `ldconfig -p`. Runs in the CLI process.

use std::path::{Path, PathBuf};

use super::{shim_binary, show_dirs, Finding};

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

/// Whether the ELF executable at `binary` loads `lib` (a `DT_NEEDED` entry
/// `<lib>.so*`); `None` when it cannot be read or is no 64-bit ELF file. An
/// engine binary built with a static libwasmedge needs no libwasmedge.so.
pub fn needs_library(binary: &Path, lib: &str) -> Option<bool> {
    use object::elf::{FileHeader64, DT_NEEDED};
    use object::read::elf::{Dyn, FileHeader};
    let data = std::fs::read(binary).ok()?;
    let data = data.as_slice();
    let header = FileHeader64::<object::Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let Some((entries, link)) = sections.dynamic(endian, data).ok()? else {
        return Some(false);
    };
    let strings = sections.strings(endian, data, link).ok()?;
    let prefix = format!("{lib}.so");
    Some(entries.iter().any(|entry| {
        entry.d_tag(endian) == DT_NEEDED
            && entry
                .string(endian, strings)
                .is_ok_and(|name| name.starts_with(prefix.as_bytes()))
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fixtures::{script, why_and_fix};
    use crate::doctor::Status;

    #[test]
    fn needed_libraries_are_read_from_the_elf_dynamic_section() {
        let libc = std::env::current_exe().unwrap();
        assert_eq!(needs_library(&libc, "libc"), Some(true));
        assert_eq!(needs_library(&libc, "libwasmedge"), Some(false));
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("not-elf");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(needs_library(&script, "libc"), None);
        assert_eq!(needs_library(&tmp.path().join("missing"), "libc"), None);
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
}
