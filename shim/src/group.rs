//! Shared shim processes: which shim serves a container that is not in a
//! pod, and when a shared shim may exit. Runs in the shim binary: `start`
//! chooses ([`join_or_found`]), the server checks before exiting
//! ([`SharedGroup::close_if_unclaimed`]).
//!
//! Up to [`CONTAINERS_PER_SHIM_ENV`] containers of one containerd namespace
//! share a shim process (a *group*). Each bundle of a group holds our own
//! file [`CLAIM_FILE`] (the group, its shim binary, its socket and a token
//! unique to that container's `start`) next to containerd's `address`, and
//! goes away with the bundle. Both sides take an exclusive `flock` on the
//! namespace directory (the bundles' parent, containerd's): `start` counts
//! the live groups' bundles and writes the new bundle's files under it; a
//! shim whose last container was deleted checks under it that no `start`
//! chose it since (a *claimant*) and removes its socket before it exits, so
//! that no later `start` chooses it. Group names are never reused.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// containerd's environment variable that sets how many containers (not in
/// a pod) one shim process serves at most; 1: a shim per container.
pub const CONTAINERS_PER_SHIM_ENV: &str = "WASMSHIM_CONTAINERS_PER_SHIM";

/// Containers per shim when [`CONTAINERS_PER_SHIM_ENV`] is not set.
pub const DEFAULT_CONTAINERS_PER_SHIM: usize = 32;

/// Our file in a bundle of a shared group.
pub const CLAIM_FILE: &str = "wasmshim-group";

/// The limit of containers per shim from the environment, or an error naming
/// the variable.
pub fn containers_per_shim() -> Result<usize, String> {
    match std::env::var(CONTAINERS_PER_SHIM_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_CONTAINERS_PER_SHIM),
        Err(e) => Err(format!("{CONTAINERS_PER_SHIM_ENV}: {e}")),
        Ok(value) => parse_containers_per_shim(&value),
    }
}

fn parse_containers_per_shim(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{CONTAINERS_PER_SHIM_ENV}={value:?}: want a whole number of containers per shim, 1 or more"
        )),
    }
}

/// What [`CLAIM_FILE`] says: this bundle's container belongs to `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The group's name, never reused.
    pub group: String,
    /// The shim binary serving the group (a group never mixes engines).
    pub shim: PathBuf,
    /// The group's ttrpc address (`unix://…`).
    pub address: String,
    /// Unique to this container's `start`: tells a new container from an
    /// earlier one of the same id.
    pub token: String,
}

impl Claim {
    /// The claim written in `bundle`, if any.
    pub fn read(bundle: &Path) -> Option<Claim> {
        let text = std::fs::read_to_string(bundle.join(CLAIM_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write(&self, bundle: &Path) -> io::Result<()> {
        let text = serde_json::to_string(self).map_err(io::Error::other)?;
        std::fs::write(bundle.join(CLAIM_FILE), text)
    }
}

/// A name and token never used before: the time in nanoseconds and our pid.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}-{nanos}-{}", std::process::id())
}

/// The exclusive lock of a namespace directory, held until dropped.
pub struct NamespaceLock {
    _lock: Flock<File>,
}

impl NamespaceLock {
    /// Waits for the exclusive `flock` of directory `dir`.
    pub fn take(dir: &Path) -> io::Result<NamespaceLock> {
        let file = File::open(dir)?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e)?;
        Ok(NamespaceLock { _lock: lock })
    }
}

/// The claims of the bundles in `namespace_dir` (with their bundle's name),
/// other than `except`.
fn claims(namespace_dir: &Path, except: Option<&Path>) -> io::Result<Vec<(String, Claim)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(namespace_dir)? {
        let entry = entry?;
        let path = entry.path();
        if except.is_some_and(|e| e == path) {
            continue;
        }
        if let Some(claim) = Claim::read(&path) {
            found.push((entry.file_name().to_string_lossy().into_owned(), claim));
        }
    }
    Ok(found)
}

/// How long ago the claim in `bundle` was written (zero if unknown or in
/// the future).
fn claim_age(bundle: &Path) -> Duration {
    std::fs::metadata(bundle.join(CLAIM_FILE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .unwrap_or_default()
}

/// The path of a `unix://` address.
pub fn socket_path(address: &str) -> PathBuf {
    PathBuf::from(address.trim().trim_start_matches("unix://"))
}

fn alive(address: &str) -> bool {
    std::os::unix::net::UnixStream::connect(socket_path(address)).is_ok()
}

/// Where `start` put a new container.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// In the live group of that claim: nothing to spawn.
    Joined(Claim),
    /// In a new group: its shim must be spawned (the lock still held).
    Founded(Claim),
}

/// Chooses the group of the container in `bundle` (whose parent is the
/// namespace directory, locked by the caller) served by binary `shim`: the
/// fullest live group of that binary with fewer than `max` containers, else
/// a new group whose address is `address_of(group)`. Writes the bundle's
/// [`CLAIM_FILE`] and `address`.
pub fn join_or_found(
    _lock: &NamespaceLock,
    bundle: &Path,
    shim: &Path,
    max: usize,
    address_of: impl Fn(&str) -> String,
) -> io::Result<Placement> {
    let namespace_dir = bundle
        .parent()
        .ok_or_else(|| io::Error::other(format!("bundle {} has no parent", bundle.display())))?;
    let mut count: BTreeMap<String, (usize, Claim)> = BTreeMap::new();
    for (_, claim) in claims(namespace_dir, Some(bundle))? {
        if claim.shim == shim {
            count.entry(claim.group.clone()).or_insert((0, claim)).0 += 1;
        }
    }
    let mut open: Vec<(usize, Claim)> = count.into_values().filter(|(n, _)| *n < max).collect();
    // The fullest first: containers pack into as few shims as possible.
    open.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.group.cmp(&b.1.group)));
    let token = unique_name("start");
    let placement = match open.into_iter().find(|(_, c)| alive(&c.address)) {
        Some((_, claim)) => Placement::Joined(Claim { token, ..claim }),
        None => {
            let group = unique_name("wasmshim");
            Placement::Founded(Claim {
                address: address_of(&group),
                group,
                shim: shim.to_path_buf(),
                token,
            })
        }
    };
    let (Placement::Joined(claim) | Placement::Founded(claim)) = &placement;
    claim.write(bundle)?;
    std::fs::write(bundle.join("address"), &claim.address)?;
    Ok(placement)
}

/// A shim process serving a shared group: what it needs to exit without
/// leaving a container that chose it unserved.
#[derive(Debug, Clone)]
pub struct SharedGroup {
    namespace_dir: PathBuf,
    group: String,
    socket: PathBuf,
}

impl SharedGroup {
    /// The group of the shim started in `bundle` and listening on `address`,
    /// if `bundle`'s claim names that address (a shared group's shim).
    pub fn of_bundle(bundle: &Path, address: &str) -> Option<SharedGroup> {
        let claim = Claim::read(bundle)?;
        if socket_path(&claim.address) != socket_path(address) {
            return None;
        }
        Some(SharedGroup {
            namespace_dir: bundle.parent()?.to_path_buf(),
            group: claim.group,
            socket: socket_path(address),
        })
    }

    /// The token of the container in `bundle` if it belongs to this group.
    pub fn token_of(&self, bundle: &Path) -> Option<String> {
        Claim::read(bundle)
            .filter(|c| c.group == self.group)
            .map(|c| c.token)
    }

    /// Under the namespace lock: the tokens of the bundles of this group
    /// (`served` ones included) and, when none of them is a claimant (a token
    /// not in `served`, claimed less than `patience` ago) and `idle()` still
    /// holds, removes the socket so that no `start` chooses this shim again.
    /// Returns the claimants' bundle names. `served` is called first, under
    /// the lock, and gets the tokens found.
    ///
    /// containerd sends Create right after `start`; a claim older than
    /// `patience` whose Create never came was abandoned (containerd died in
    /// between), and containerd removes its bundle once this shim is gone.
    pub fn close_if_unclaimed(
        &self,
        served: impl FnOnce(&HashSet<String>) -> HashSet<String>,
        idle: impl FnOnce() -> bool,
        patience: Duration,
    ) -> io::Result<Vec<String>> {
        // No namespace directory any more: no bundle, so no claimant.
        let (_lock, all) = match NamespaceLock::take(&self.namespace_dir) {
            Ok(lock) => {
                let all = claims(&self.namespace_dir, None)?;
                (Some(lock), all)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, Vec::new()),
            Err(e) => return Err(e),
        };
        let ours: Vec<(String, Claim)> = all
            .into_iter()
            .filter(|(_, c)| c.group == self.group)
            .collect();
        let tokens: HashSet<String> = ours.iter().map(|(_, c)| c.token.clone()).collect();
        let served = served(&tokens);
        let claimants: Vec<String> = ours
            .into_iter()
            .filter(|(_, c)| !served.contains(&c.token))
            .map(|(name, _)| name)
            .filter(|name| {
                let age = claim_age(&self.namespace_dir.join(name));
                if age < patience {
                    return true;
                }
                log::info!(
                    "{name} chose this shim {}s ago and was never created: not waiting for it",
                    age.as_secs()
                );
                false
            })
            .collect();
        if claimants.is_empty() && idle() {
            match std::fs::remove_file(&self.socket) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(claimants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(60);

    fn bundle(ns: &Path, id: &str) -> PathBuf {
        let b = ns.join(id);
        std::fs::create_dir(&b).unwrap();
        b
    }

    /// A namespace directory and a socket directory in a temp dir.
    struct Dirs {
        _root: tempfile::TempDir,
        ns: PathBuf,
        sockets: PathBuf,
    }

    impl Dirs {
        fn new() -> Dirs {
            let root = tempfile::tempdir().unwrap();
            let (ns, sockets) = (root.path().join("ns"), root.path().join("s"));
            std::fs::create_dir_all(&ns).unwrap();
            std::fs::create_dir_all(&sockets).unwrap();
            Dirs {
                _root: root,
                ns,
                sockets,
            }
        }

        /// Places `id` with limit `max`; new groups get sockets in `sockets`.
        fn place(&self, id: &str, shim: &str, max: usize) -> Placement {
            let b = bundle(&self.ns, id);
            let lock = NamespaceLock::take(&self.ns).unwrap();
            join_or_found(&lock, &b, Path::new(shim), max, |g| {
                format!("unix://{}", self.sockets.join(g).display())
            })
            .unwrap()
        }

        /// Places `id`, which must found a new group (limit 8).
        fn found(&self, id: &str) -> Claim {
            match self.place(id, "/shim", 8) {
                Placement::Founded(claim) => claim,
                other => panic!("{id} did not found a group: {other:?}"),
            }
        }
    }

    fn listen(claim: &Claim) -> std::os::unix::net::UnixListener {
        std::os::unix::net::UnixListener::bind(socket_path(&claim.address)).unwrap()
    }

    #[test]
    fn the_limit_is_read_and_checked() {
        assert_eq!(parse_containers_per_shim("1"), Ok(1));
        assert_eq!(parse_containers_per_shim(" 32\n"), Ok(32));
        for bad in ["0", "-1", "many", ""] {
            let e = parse_containers_per_shim(bad).unwrap_err();
            assert!(e.contains(CONTAINERS_PER_SHIM_ENV), "{e}");
        }
    }

    #[test]
    fn groups_fill_up_to_the_limit_then_a_new_one_is_founded() {
        let dirs = Dirs::new();
        let ns = &dirs.ns;
        let Placement::Founded(first) = dirs.place("a", "/shim", 3) else {
            panic!("the first container joined a group")
        };
        let _server = listen(&first);
        for id in ["b", "c"] {
            match dirs.place(id, "/shim", 3) {
                Placement::Joined(c) => {
                    assert_eq!((&c.group, &c.address), (&first.group, &first.address));
                    assert_ne!(c.token, first.token);
                    assert_eq!(
                        std::fs::read_to_string(ns.join(id).join("address")).unwrap(),
                        first.address
                    );
                }
                other => panic!("{id} did not join: {other:?}"),
            }
        }
        // Three in the group: the fourth founds a second one.
        let Placement::Founded(second) = dirs.place("d", "/shim", 3) else {
            panic!("a full group was joined")
        };
        assert_ne!(second.group, first.group);
        assert_ne!(second.address, first.address);
        // Another shim binary (engine) never joins this one's groups.
        assert!(matches!(
            dirs.place("e", "/other-shim", 3),
            Placement::Founded(_)
        ));
    }

    #[test]
    fn a_dead_groups_socket_is_skipped() {
        let dirs = Dirs::new();
        let dead = dirs.found("a");
        // Killed: its socket file is left, nobody accepts.
        drop(listen(&dead));
        match dirs.place("b", "/shim", 8) {
            Placement::Founded(c) => assert_ne!(c.group, dead.group),
            other => panic!("joined a dead shim: {other:?}"),
        }
    }

    #[test]
    fn pods_are_not_candidates() {
        let dirs = Dirs::new();
        let ns = &dirs.ns;
        // A pod's bundle: only containerd's address file, its shim alive.
        let pod = bundle(ns, "pod-container");
        let pod_socket = dirs.sockets.join("pod");
        let _pod_server = std::os::unix::net::UnixListener::bind(&pod_socket).unwrap();
        std::fs::write(
            pod.join("address"),
            format!("unix://{}", pod_socket.display()),
        )
        .unwrap();
        match dirs.place("a", "/shim", 8) {
            Placement::Founded(c) => assert_ne!(socket_path(&c.address), pod_socket),
            other => panic!("joined a pod's shim: {other:?}"),
        }
    }

    #[test]
    fn a_shim_with_a_claimant_stays_and_one_without_removes_its_socket() {
        let dirs = Dirs::new();
        let ns = &dirs.ns;
        let first = dirs.found("a");
        let _server = listen(&first);
        let group = SharedGroup::of_bundle(&ns.join("a"), &first.address).unwrap();
        assert_eq!(group.token_of(&ns.join("a")), Some(first.token.clone()));
        // "b" chose the shim, its Create has not arrived.
        let Placement::Joined(second) = dirs.place("b", "/shim", 8) else {
            panic!()
        };
        let served = HashSet::from([first.token.clone()]);
        let claimants = group
            .close_if_unclaimed(|_| served.clone(), || true, PATIENCE)
            .unwrap();
        assert_eq!(claimants, vec!["b".to_string()]);
        assert!(
            socket_path(&first.address).exists(),
            "removed with a claimant"
        );
        // "b" was served (and deleted), "a"'s bundle removed: nothing claims it.
        std::fs::remove_dir_all(ns.join("a")).unwrap();
        let served = HashSet::from([first.token, second.token]);
        let claimants = group
            .close_if_unclaimed(
                |found| found.intersection(&served).cloned().collect(),
                || true,
                PATIENCE,
            )
            .unwrap();
        assert!(claimants.is_empty());
        assert!(!socket_path(&first.address).exists(), "the socket was kept");
    }

    #[test]
    fn a_claim_older_than_the_patience_is_not_waited_for() {
        let dirs = Dirs::new();
        let ns = &dirs.ns;
        let claim = dirs.found("a");
        let _server = listen(&claim);
        let group = SharedGroup::of_bundle(&ns.join("a"), &claim.address).unwrap();
        let claimants = group
            .close_if_unclaimed(|_| HashSet::new(), || true, PATIENCE)
            .unwrap();
        assert_eq!(claimants, vec!["a".to_string()], "a fresh claim");
        // "a" chose the shim two minutes ago; its Create never came.
        let file = File::options()
            .write(true)
            .open(ns.join("a").join(CLAIM_FILE))
            .unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(120);
        file.set_modified(long_ago).unwrap();
        let claimants = group
            .close_if_unclaimed(|_| HashSet::new(), || true, PATIENCE)
            .unwrap();
        assert!(claimants.is_empty(), "waiting for {claimants:?}");
        assert!(!socket_path(&claim.address).exists(), "the socket was kept");
    }
}
