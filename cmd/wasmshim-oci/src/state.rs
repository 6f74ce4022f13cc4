//! Where a Wasm container's state lives between invocations:
//! `<root>/wasmshim/<id>/` holds `state.json` and, until `start`, the start
//! fifo. Every command takes an exclusive lock on that directory first, so
//! two invocations on one container never interleave; files are replaced by
//! rename, never rewritten in place.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// What `create` records about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The container id.
    pub id: String,
    /// The worker process's pid.
    pub pid: u32,
    /// Its start time (clock ticks after boot, `/proc/<pid>/stat` field 22):
    /// a later process that reuses the pid is never taken for it.
    pub start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The rootfs directory.
    pub rootfs: PathBuf,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The spec's annotations.
    pub annotations: HashMap<String, String>,
}

/// A container's life stage, as the OCI runtime spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, its module loaded, waiting for `start`.
    Created,
    /// Its module runs.
    Running,
    /// Its cgroup's freezer holds it (`pause`); never stored, read from the
    /// kernel each time (see `container::status`).
    Paused,
    /// Its process has ended (or is gone).
    Stopped,
}

impl Status {
    /// The spec's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// The locked state directory of one container.
pub struct StateDir {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// The directory holding the Wasm containers' state under `root`.
pub fn wasm_root(root: &Path) -> PathBuf {
    root.join("wasmshim")
}

/// Refuses ids that could escape the state directory, with runc's rule.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    let valid = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if !valid {
        bail!("invalid container id {id:?}: use letters, digits and _ + - . only");
    }
    Ok(())
}

impl StateDir {
    /// Makes the state directory of a new container `id`; fails if the id is taken.
    pub fn create(root: &Path, id: &str) -> anyhow::Result<StateDir> {
        check_id(id)?;
        let parent = wasm_root(root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        if root.join(id).exists() {
            bail!("container with id {id} exists already");
        }
        let dir = parent.join(id);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("container with id {id} exists already")
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
        let lock = lock(&dir)?;
        Ok(StateDir { dir, _lock: lock })
    }

    /// Opens and locks the state of Wasm container `id`; `None` when this
    /// runtime has no Wasm container of that id (runc may have one).
    pub fn open(root: &Path, id: &str) -> anyhow::Result<Option<StateDir>> {
        if check_id(id).is_err() {
            return Ok(None);
        }
        let dir = wasm_root(root).join(id);
        if !dir.is_dir() {
            return Ok(None);
        }
        let lock = match lock(&dir) {
            Ok(lock) => lock,
            // Deleted meanwhile by another invocation.
            Err(_) if !dir.exists() => return Ok(None),
            Err(e) => return Err(e),
        };
        // The holder of the lock before us may have deleted it.
        if !dir.join("state.json").exists() {
            return Ok(None);
        }
        Ok(Some(StateDir { dir, _lock: lock }))
    }

    /// Path of the fifo on which the created worker waits for `start`.
    pub fn start_fifo(&self) -> PathBuf {
        self.dir.join("start.fifo")
    }

    /// Records `saved` (write to a temp file, then rename).
    pub fn save(&self, saved: &Saved) -> anyhow::Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(saved)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, self.dir.join("state.json")).context("saving the state")?;
        Ok(())
    }

    /// What `create` recorded.
    pub fn load(&self) -> anyhow::Result<Saved> {
        let path = self.dir.join("state.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("decoding {}", path.display()))
    }

    /// The status its process gives: stopped once it has ended (a zombie
    /// waiting for its parent counts as ended), created while the start fifo
    /// exists, running otherwise. Whether it is paused is the cgroup's to say.
    pub fn status(&self, saved: &Saved) -> Status {
        if !alive(saved.pid, saved.start_time) {
            Status::Stopped
        } else if self.start_fifo().exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// Removes the state directory and everything in it.
    pub fn remove(self) -> anyhow::Result<()> {
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))
    }
}

fn lock(dir: &Path) -> anyhow::Result<Flock<File>> {
    let file = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", dir.display()))
}

/// State and start time of process `pid` from `/proc/<pid>/stat`.
pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

/// Whether `pid` is still the process that started at `start_time`, and has not ended.
pub fn alive(pid: u32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some((state, start)) if start == start_time && state != 'Z' && state != 'X')
}

/// `time` as RFC 3339 in UTC with nanoseconds, as runc writes `created`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 5);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn ids_cannot_leave_the_state_directory() {
        for bad in ["", ".", "..", "../x", "a/b", "a b"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        check_id("abc_1.2-x+y").unwrap();
    }

    #[test]
    fn one_id_is_created_once_and_status_follows_the_process() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::create(root.path(), "c1").unwrap();
        assert!(StateDir::create(root.path(), "c1").is_err());
        let (_, start_time) = proc_stat(std::process::id()).unwrap();
        let mut saved = Saved {
            id: "c1".into(),
            pid: std::process::id(),
            start_time,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: rfc3339(SystemTime::now()),
            annotations: HashMap::new(),
        };
        state.save(&saved).unwrap();
        assert_eq!(state.load().unwrap(), saved);
        assert_eq!(state.status(&saved), Status::Running);
        std::fs::write(state.start_fifo(), "").unwrap();
        assert_eq!(state.status(&saved), Status::Created);
        // Same pid, another start time: not our process.
        saved.start_time += 1;
        assert_eq!(state.status(&saved), Status::Stopped);
        drop(state);
        let state = StateDir::open(root.path(), "c1").unwrap().unwrap();
        state.remove().unwrap();
        assert!(StateDir::open(root.path(), "c1").unwrap().is_none());
        assert!(StateDir::open(root.path(), "../etc").unwrap().is_none());
    }
}
