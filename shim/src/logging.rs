//! The shim server's log: the lines of `containerd-shim`'s own logger
//! (`time="…" level=… msg="…"`), written to the `log` fifo of a live
//! container of this shim. Runs in the shim process.
//!
//! containerd reads a bundle's `log` fifo only until that container is
//! deleted, and a shim serves several containers (a pod, a shared group):
//! the task service registers each container's bundle at Create and
//! unregisters it at Delete. The lines go to the newest live container's
//! fifo: a Create switches to its own, and when the container whose fifo
//! receives the lines goes, the next lines go to the newest one left. With
//! no container left they are dropped (nobody reads a deleted container's
//! fifo) until the next Create.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use containerd_shim::logger::{FifoLogger, LOG_ENV};
use log::{LevelFilter, Log, Metadata, Record};

/// Where the lines go and which bundles could take them next.
struct Sinks {
    /// The fifo written to now, and its bundle.
    current: Option<(PathBuf, FifoLogger)>,
    /// The live containers' bundles, by container id.
    bundles: Vec<(String, PathBuf)>,
}

static SINKS: Mutex<Sinks> = Mutex::new(Sinks {
    current: None,
    bundles: Vec::new(),
});

fn sinks() -> std::sync::MutexGuard<'static, Sinks> {
    SINKS.lock().unwrap_or_else(|e| e.into_inner())
}

struct ShimLogger;

impl Log for ShimLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if let Some((_, sink)) = &sinks().current {
            sink.log(record);
        }
    }

    fn flush(&self) {
        if let Some((_, sink)) = &sinks().current {
            sink.flush();
        }
    }
}

/// The level `containerd-shim` would set: `RUST_LOG` (else `info`), raised
/// to debug by containerd's `-debug`.
fn level(debug: bool, rust_log: Option<&str>) -> LevelFilter {
    let level = rust_log
        .and_then(|l| LevelFilter::from_str(l).ok())
        .unwrap_or(LevelFilter::Info);
    if debug && level < LevelFilter::Debug {
        LevelFilter::Debug
    } else {
        level
    }
}

/// The absolute form of `bundle`, as the registry compares bundles.
fn canonical(bundle: &Path) -> PathBuf {
    std::fs::canonicalize(bundle).unwrap_or_else(|_| bundle.to_path_buf())
}

/// Opens the `log` fifo of `bundle` for writing, never blocking: fails when
/// containerd no longer reads it.
fn open_fifo(bundle: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))?;
    // Writes block like the crate's logger's (no line lost to a full pipe).
    let fd = file.as_raw_fd();
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(file)
}

/// Installs the shim's logger, writing to the `log` fifo of `bundle` (the
/// bundle the shim started in). Without that fifo the shim logs nothing.
pub fn init(bundle: &Path, debug: bool) {
    let rust_log = std::env::var(LOG_ENV).ok();
    log::set_max_level(level(debug, rust_log.as_deref()));
    match open_fifo(bundle) {
        Ok(file) => sinks().current = Some((canonical(bundle), FifoLogger::with_file(file))),
        Err(e) => eprintln!("opening the shim log of {}: {e}", bundle.display()),
    }
    if log::set_logger(&ShimLogger).is_err() {
        eprintln!("a logger was already installed");
    }
}

impl Sinks {
    /// Container `id`, in `bundle`, is served: the lines go to its fifo
    /// (kept where they go when it cannot be opened).
    fn register(&mut self, id: &str, bundle: PathBuf) {
        self.bundles.push((id.to_string(), bundle.clone()));
        let already = self.current.as_ref().is_some_and(|(b, _)| *b == bundle);
        if !already {
            if let Ok(file) = open_fifo(&bundle) {
                self.current = Some((bundle, FifoLogger::with_file(file)));
            }
        }
    }

    /// Container `id` is deleted: if the lines went to its fifo, they go to
    /// the newest live container's from now on, or nowhere.
    fn unregister(&mut self, id: &str) {
        let Some(at) = self.bundles.iter().position(|(i, _)| i == id) else {
            return;
        };
        let (_, gone) = self.bundles.remove(at);
        if self.current.as_ref().is_some_and(|(b, _)| *b == gone) {
            self.current =
                self.bundles.iter().rev().find_map(|(_, b)| {
                    Some((b.clone(), FifoLogger::with_file(open_fifo(b).ok()?)))
                });
        }
    }

    /// The bundle whose fifo takes the lines now.
    #[cfg(test)]
    fn current(&self) -> Option<&Path> {
        self.current.as_ref().map(|(b, _)| b.as_path())
    }
}

/// Container `id`, in `bundle`, is served: the lines go to its fifo.
pub fn register(id: &str, bundle: &Path) {
    sinks().register(id, canonical(bundle));
}

/// Container `id` is deleted: if the lines went to its fifo, they go to
/// the newest live container's from now on, or nowhere.
pub fn unregister(id: &str) {
    sinks().unregister(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_follows_the_crates_rule() {
        assert_eq!(level(false, None), LevelFilter::Info);
        assert_eq!(level(true, None), LevelFilter::Debug);
        assert_eq!(level(false, Some("error")), LevelFilter::Error);
        assert_eq!(level(true, Some("warn")), LevelFilter::Debug);
        assert_eq!(level(true, Some("trace")), LevelFilter::Trace);
        assert_eq!(level(false, Some("nonsense")), LevelFilter::Info);
    }

    #[test]
    fn a_fifo_without_a_reader_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join("log"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(open_fifo(dir.path()).is_err(), "opened with no reader");
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir.path().join("log"))
            .unwrap();
        assert!(open_fifo(dir.path()).is_ok());
    }

    /// A bundle directory with a `log` fifo that has a reader, as containerd
    /// keeps one for each of its tasks; the reader is returned too.
    fn read_bundle(root: &Path, name: &str) -> (PathBuf, File) {
        let bundle = root.join(name);
        std::fs::create_dir(&bundle).unwrap();
        nix::unistd::mkfifo(&bundle.join("log"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(bundle.join("log"))
            .unwrap();
        (bundle, reader)
    }

    fn empty() -> Sinks {
        Sinks {
            current: None,
            bundles: Vec::new(),
        }
    }

    #[test]
    fn the_lines_follow_the_newest_live_container() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _ra) = read_bundle(dir.path(), "a");
        let (b, _rb) = read_bundle(dir.path(), "b");
        let (c, _rc) = read_bundle(dir.path(), "c");
        let mut sinks = empty();
        sinks.register("a", a.clone());
        sinks.register("b", b.clone());
        assert_eq!(sinks.current(), Some(b.as_path()));
        sinks.register("c", c.clone());
        sinks.unregister("a");
        assert_eq!(sinks.current(), Some(c.as_path()), "a was not current");
        sinks.unregister("c");
        assert_eq!(sinks.current(), Some(b.as_path()));
    }

    /// A container that comes after the last one went gets the lines: before,
    /// they went on to the deleted container's fifo, which nobody read.
    #[test]
    fn a_container_after_an_empty_spell_gets_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _ra) = read_bundle(dir.path(), "a");
        let (d, _rd) = read_bundle(dir.path(), "d");
        let mut sinks = empty();
        sinks.register("a", a.clone());
        sinks.unregister("a");
        assert_eq!(sinks.current(), None, "lines still go to a deleted fifo");
        sinks.register("d", d.clone());
        assert_eq!(sinks.current(), Some(d.as_path()));
    }

    /// A fifo nobody reads is never chosen.
    #[test]
    fn a_fifo_without_a_reader_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _ra) = read_bundle(dir.path(), "a");
        let (b, rb) = read_bundle(dir.path(), "b");
        drop(rb);
        let mut sinks = empty();
        sinks.register("a", a.clone());
        sinks.register("b", b.clone());
        assert_eq!(sinks.current(), Some(a.as_path()));
    }
}
