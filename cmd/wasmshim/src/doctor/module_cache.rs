//! Check 6: the shims' compiled-module cache directory, held to the shims' own
//! rule ([`ModuleCache::open`]). Runs in the CLI process.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use wasmshim::engine::cache::{self, ModuleCache};

use super::Finding;

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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::doctor::fixtures::why_and_fix;
    use crate::doctor::Status;

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
}
