//! [`ModuleCache`]: native code compiled once per module, reused by every
//! later container start. Engine-agnostic: an engine computes a [`CacheKey`]
//! and stores or loads one payload file (wasmtime's serialised module,
//! WasmEdge's AOT shared object).
//!
//! Runs in the worker process (and in `wasmshim precompile`/`cache`). The
//! payload is native code that the worker maps executable, so the cache only
//! ever loads what a shim wrote into a directory no container can write: the
//! directory must be owned by the user the shim runs as (root) and not be
//! group- or world-writable, or the cache is not used at all.
//!
//! Layout: one directory per entry, `<dir>/<key>/`, holding [`PAYLOAD_FILE`]
//! and [`META_FILE`] (format version, payload length and sha256, what was
//! compiled). An entry is built in `<dir>/.tmp-…` and renamed into place, so
//! it appears whole or not at all; when two workers race, the first rename
//! wins and the other discards its copy. A lookup checks the payload against
//! the recorded length and checksum: a truncated or corrupt entry is removed
//! and compiled again. The meta file's mtime is the entry's last use; past
//! the size cap the least recently used entries are evicted.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context};
use sha2::{Digest, Sha256};

/// Environment variable naming the cache directory; `off` disables the cache.
pub const CACHE_DIR_ENV: &str = "WASMSHIM_CACHE_DIR";
/// Environment variable with the cache's size cap: bytes, or a number with `K`, `M` or `G`.
pub const CACHE_MAX_SIZE_ENV: &str = "WASMSHIM_CACHE_MAX_SIZE";
/// Every variable the cache reads: the shim passes these to its workers.
pub const ENV_VARS: [&str; 2] = [CACHE_DIR_ENV, CACHE_MAX_SIZE_ENV];
/// Cache directory when [`CACHE_DIR_ENV`] is not set.
pub const DEFAULT_DIR: &str = "/var/lib/wasmshim/cache";
/// Size cap when [`CACHE_MAX_SIZE_ENV`] is not set: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Name of the compiled code inside an entry directory.
pub const PAYLOAD_FILE: &str = "code.so";
/// Name of the entry's description and checksum inside an entry directory.
pub const META_FILE: &str = "meta";
/// First line of every meta file; a new layout changes it (and so every key).
const FORMAT: &str = "wasmshim-cache 1";
/// Temporary directories older than this are leftovers of a killed writer.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Identifies one compiled artifact: a sha256 over everything that changes
/// the compiled code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    hex: String,
    engine: String,
    module_sha256: String,
}

impl CacheKey {
    /// The key of `wasm` compiled by `engine` at `engine_version`, with the
    /// engine configuration summarised by `config` (any bytes that change
    /// whenever the compiled code would) for the CPU described by
    /// [`host_cpu`].
    pub fn new(engine: &str, engine_version: &str, config: &[u8], wasm: &[u8]) -> Self {
        let module_sha256 = hex(&Sha256::digest(wasm));
        let mut h = Sha256::new();
        for part in [
            FORMAT.as_bytes(),
            engine.as_bytes(),
            engine_version.as_bytes(),
            config,
            host_cpu().as_bytes(),
            module_sha256.as_bytes(),
        ] {
            // Length-prefixed, so that no two different lists of parts hash alike.
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        CacheKey {
            hex: hex(&h.finalize()),
            engine: engine.to_string(),
            module_sha256,
        }
    }

    /// The key as 64 hex digits: the entry's directory name.
    pub fn as_str(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (module sha256 {}…, {})",
            &self.hex[..16],
            &self.module_sha256[..16],
            self.engine
        )
    }
}

/// A [`Hasher`] that feeds sha256, for engines whose configuration digest is a
/// [`std::hash::Hash`] value (wasmtime's `precompile_compatibility_hash`).
#[derive(Default)]
pub struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    /// The sha256 of everything hashed so far.
    pub fn digest(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The host CPU as compiled code depends on it: architecture and the kernel's
/// CPU feature flags (engines compile for the features of the CPU they run on).
pub fn host_cpu() -> String {
    let flags = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("flags") || l.starts_with("Features"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    format!("{} {flags}", std::env::consts::ARCH)
}

/// Counts of what the cache did, for logs and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups that found a valid entry.
    pub hits: AtomicU64,
    /// Lookups that found nothing.
    pub misses: AtomicU64,
    /// Entries removed as corrupt, truncated or unloadable.
    pub discarded: AtomicU64,
    /// Entries written.
    pub stored: AtomicU64,
}

/// A cache directory checked to be safe to load native code from.
#[derive(Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    max_bytes: u64,
    /// What this handle did so far.
    pub stats: CacheStats,
}

/// A valid entry found by [`ModuleCache::lookup`].
#[derive(Debug)]
pub struct Hit {
    /// The payload, opened and verified: load this file, not the path, so that
    /// what is loaded is what was checked.
    pub file: File,
    /// Path of the payload, for engines that load by path.
    pub path: PathBuf,
}

/// One entry as [`ModuleCache::entries`] lists it.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    /// The key (directory name).
    pub key: String,
    /// Engine that compiled it.
    pub engine: String,
    /// The module the first container named, e.g. `/app.wasm`.
    pub source: String,
    /// Bytes on disk (payload and meta).
    pub bytes: u64,
    /// Last time a container used it (or it was written).
    pub last_used: SystemTime,
}

/// What an entry's meta file records.
#[derive(Debug, Default, PartialEq)]
struct Meta {
    engine: String,
    module_sha256: String,
    source: String,
    payload_len: u64,
    payload_sha256: String,
}

impl Meta {
    fn render(&self) -> String {
        format!(
            "{FORMAT}\nengine {}\nmodule_sha256 {}\nsource {}\npayload_len {}\npayload_sha256 {}\n",
            self.engine,
            self.module_sha256,
            self.source.replace('\n', " "),
            self.payload_len,
            self.payload_sha256
        )
    }

    fn parse(text: &str) -> anyhow::Result<Meta> {
        let mut lines = text.lines();
        ensure!(lines.next() == Some(FORMAT), "unknown format");
        let mut meta = Meta::default();
        for line in lines {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "engine" => meta.engine = v.into(),
                "module_sha256" => meta.module_sha256 = v.into(),
                "source" => meta.source = v.into(),
                "payload_len" => meta.payload_len = v.parse().context("payload_len")?,
                "payload_sha256" => meta.payload_sha256 = v.into(),
                _ => {}
            }
        }
        ensure!(meta.payload_sha256.len() == 64, "no payload checksum");
        Ok(meta)
    }
}

impl ModuleCache {
    /// The cache the environment asks for ([`CACHE_DIR_ENV`],
    /// [`CACHE_MAX_SIZE_ENV`], else the defaults), or `None` (logged) when it
    /// is switched off, unusable or unsafe: modules are then compiled every time.
    pub fn from_env() -> Option<ModuleCache> {
        let dir = std::env::var_os(CACHE_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        if dir.as_os_str() == "off" || dir.as_os_str().is_empty() {
            return None;
        }
        let max_bytes = match std::env::var(CACHE_MAX_SIZE_ENV) {
            Ok(v) => match parse_size(&v) {
                Some(n) => n,
                None => {
                    log::warn!("{CACHE_MAX_SIZE_ENV}={v} is not a size; using the default");
                    DEFAULT_MAX_BYTES
                }
            },
            Err(_) => DEFAULT_MAX_BYTES,
        };
        match ModuleCache::open(&dir, max_bytes) {
            Ok(cache) => Some(cache),
            Err(e) => {
                log::warn!("module cache disabled, compiling without it: {e:#}");
                None
            }
        }
    }

    /// Opens (creating it mode 0700 if missing) the cache in `dir`, capped at
    /// `max_bytes`. Refuses a directory not owned by this process's user or
    /// writable by its group or others.
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<ModuleCache> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating cache directory {}", dir.display()))?;
        }
        check_dir(dir, nix::unistd::geteuid().as_raw())?;
        // Reading it now turns an unreadable directory into a logged fallback.
        fs::read_dir(dir).with_context(|| format!("reading cache directory {}", dir.display()))?;
        Ok(ModuleCache {
            dir: dir.to_path_buf(),
            max_bytes,
            stats: CacheStats::default(),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size cap in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn entry_dir(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(key.as_str())
    }

    /// The verified payload for `key`, or `None`. A corrupt, truncated or
    /// unreadable entry is removed (and logged), so the caller compiles and
    /// stores it again. A hit marks the entry as just used.
    pub fn lookup(&self, key: &CacheKey) -> Option<Hit> {
        let entry = self.entry_dir(key);
        if !entry.exists() {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match verify(&entry) {
            Ok(file) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                touch(&entry.join(META_FILE));
                Some(Hit {
                    file,
                    path: entry.join(PAYLOAD_FILE),
                })
            }
            Err(e) => {
                log::warn!("cache entry {key} is unusable, compiling again: {e:#}");
                self.discard(key);
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Removes the entry for `key`, e.g. one the engine could not load.
    pub fn discard(&self, key: &CacheKey) {
        self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = remove_entry(&self.dir, &self.entry_dir(key)) {
            log::warn!("removing cache entry {key}: {e:#}");
        }
    }

    /// Stores `payload` under `key`; see [`ModuleCache::insert_with`].
    pub fn insert(&self, key: &CacheKey, source: &str, payload: &[u8]) -> anyhow::Result<PathBuf> {
        self.insert_with(key, source, |path| {
            let mut file = File::create(path)?;
            file.write_all(payload)?;
            file.sync_all()?;
            Ok(())
        })
    }

    /// Builds an entry for `key`: `write` creates the payload at the path it
    /// is given (inside a temporary directory of the cache), then the entry
    /// is checksummed and renamed into place. If another process stored the
    /// same key first, its entry is kept. Returns the entry's payload path.
    /// On any error nothing is left behind. Afterwards, least recently used
    /// entries are evicted until the cache fits its cap.
    pub fn insert_with(
        &self,
        key: &CacheKey,
        source: &str,
        write: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        let tmp = TempEntry::new(&self.dir)?;
        let payload = tmp.path.join(PAYLOAD_FILE);
        write(&payload).context("writing the compiled module")?;
        let (payload_len, payload_sha256) = checksum(&mut File::open(&payload)?)?;
        ensure!(
            payload_len <= self.max_bytes,
            "compiled module ({payload_len} bytes) is larger than the cache's cap ({} bytes)",
            self.max_bytes
        );
        let meta = Meta {
            engine: key.engine.clone(),
            module_sha256: key.module_sha256.clone(),
            source: source.to_string(),
            payload_len,
            payload_sha256,
        };
        let mut file = File::create(tmp.path.join(META_FILE))?;
        file.write_all(meta.render().as_bytes())?;
        file.sync_all()?;
        drop(file);
        // Make the entry read-only: it is never changed in place.
        fs::set_permissions(&payload, fs::Permissions::from_mode(0o500))?;
        let entry = self.entry_dir(key);
        match fs::rename(&tmp.path, &entry) {
            Ok(()) => {
                tmp.keep();
                self.stats.stored.fetch_add(1, Ordering::Relaxed);
            }
            // rename(2) refuses to replace a non-empty directory: another
            // worker stored this key first, and its entry is as good as ours.
            Err(e) if entry.join(META_FILE).exists() => {
                log::debug!("cache entry {key} was stored concurrently ({e}); keeping that one")
            }
            Err(e) => {
                return Err(e).with_context(|| format!("renaming into {}", entry.display()));
            }
        }
        if let Err(e) = self.evict(Some(key)) {
            log::warn!("evicting cache entries: {e:#}");
        }
        Ok(entry.join(PAYLOAD_FILE))
    }

    /// Every entry, least recently used first.
    pub fn entries(&self) -> anyhow::Result<Vec<EntryInfo>> {
        let mut found = Vec::new();
        let listing = fs::read_dir(&self.dir)
            .with_context(|| format!("reading cache directory {}", self.dir.display()))?;
        for item in listing {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if !is_key(&name) {
                continue;
            }
            let entry = item.path();
            let meta_path = entry.join(META_FILE);
            let (Ok(stat), Ok(text)) = (fs::metadata(&meta_path), fs::read_to_string(&meta_path))
            else {
                continue;
            };
            let meta = Meta::parse(&text).unwrap_or_default();
            let payload = fs::metadata(entry.join(PAYLOAD_FILE)).map_or(0, |m| m.len());
            found.push(EntryInfo {
                key: name,
                engine: meta.engine,
                source: meta.source,
                bytes: payload + stat.len(),
                last_used: stat.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        found.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.key.cmp(&b.key)));
        Ok(found)
    }

    /// Evicts least recently used entries (never `keep`) until the cache fits
    /// its cap, and removes temporary leftovers of killed writers. Returns the
    /// number of entries evicted.
    pub fn evict(&self, keep: Option<&CacheKey>) -> anyhow::Result<usize> {
        self.remove_stale_tmp();
        let entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut evicted = 0;
        for entry in entries {
            if total <= self.max_bytes {
                break;
            }
            if keep.is_some_and(|k| k.as_str() == entry.key) {
                continue;
            }
            remove_entry(&self.dir, &self.dir.join(&entry.key))?;
            log::debug!(
                "cache: evicted {} ({}, {} bytes)",
                entry.key,
                entry.source,
                entry.bytes
            );
            total = total.saturating_sub(entry.bytes);
            evicted += 1;
        }
        Ok(evicted)
    }

    /// Removes every entry; returns how many there were.
    pub fn prune(&self) -> anyhow::Result<usize> {
        let entries = self.entries()?;
        for entry in &entries {
            remove_entry(&self.dir, &self.dir.join(&entry.key))?;
        }
        self.remove_stale_tmp();
        Ok(entries.len())
    }

    fn remove_stale_tmp(&self) {
        let Ok(listing) = fs::read_dir(&self.dir) else {
            return;
        };
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let old = item
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if name.starts_with(".trash-") || (name.starts_with(".tmp-") && old) {
                let _ = fs::remove_dir_all(item.path());
            }
        }
    }
}

/// Refuses `dir` unless it is a directory owned by `owner` that neither its
/// group nor others may write.
fn check_dir(dir: &Path, owner: u32) -> anyhow::Result<()> {
    let stat = fs::metadata(dir).with_context(|| format!("cache directory {}", dir.display()))?;
    ensure!(stat.is_dir(), "{} is not a directory", dir.display());
    if stat.uid() != owner {
        bail!(
            "refusing cache directory {}: owned by uid {}, not {owner}",
            dir.display(),
            stat.uid()
        );
    }
    let mode = stat.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "refusing cache directory {}: mode {mode:o} lets others write to it (want 0700)",
            dir.display()
        );
    }
    Ok(())
}

/// Opens the entry's payload and checks it against its meta file.
fn verify(entry: &Path) -> anyhow::Result<File> {
    let text = fs::read_to_string(entry.join(META_FILE)).context("reading the meta file")?;
    let meta = Meta::parse(&text).context("parsing the meta file")?;
    let mut file = File::open(entry.join(PAYLOAD_FILE)).context("opening the payload")?;
    let (len, sha) = checksum(&mut file)?;
    ensure!(
        len == meta.payload_len,
        "payload is {len} bytes, {} were written",
        meta.payload_len
    );
    ensure!(sha == meta.payload_sha256, "payload checksum mismatch");
    Ok(file)
}

/// Length and sha256 of what `file` holds from its current offset.
fn checksum(file: &mut File) -> anyhow::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).context("reading the payload")?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hex(&h.finalize())))
}

/// Marks a file as just used (its mtime is the entry's LRU time).
fn touch(path: &Path) {
    if let Ok(file) = OpenOptions::new().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Takes an entry out of view atomically (rename), then deletes it. A worker
/// that has the payload mapped keeps its copy until it exits.
fn remove_entry(dir: &Path, entry: &Path) -> anyhow::Result<()> {
    let trash = dir.join(format!(".trash-{}", unique()));
    match fs::rename(entry, &trash) {
        Ok(()) => fs::remove_dir_all(&trash).context("deleting a removed entry"),
        // Someone else removed it first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", entry.display())),
    }
}

/// A temporary entry directory in the cache, removed on drop unless kept.
struct TempEntry {
    path: PathBuf,
    keep: bool,
}

impl TempEntry {
    fn new(dir: &Path) -> anyhow::Result<TempEntry> {
        let path = dir.join(format!(".tmp-{}", unique()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(TempEntry { path, keep: false })
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A name no other process or thread uses at the same time.
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn is_key(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `1048576`, `512K`, `64M`, `2G` (binary units).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.chars().last()?.to_ascii_uppercase() {
        'K' => (&text[..text.len() - 1], 10),
        'M' => (&text[..text.len() - 1], 20),
        'G' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::chown;

    fn cache(max: u64) -> (tempfile::TempDir, ModuleCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(&dir.path().join("cache"), max).unwrap();
        (dir, cache)
    }

    fn key(wasm: &[u8]) -> CacheKey {
        CacheKey::new("test", "1.0", b"config", wasm)
    }

    fn payload(hit: Hit) -> Vec<u8> {
        let mut hit = hit;
        let mut bytes = Vec::new();
        use std::io::Seek;
        hit.file.rewind().unwrap();
        hit.file.read_to_end(&mut bytes).unwrap();
        assert_eq!(fs::read(&hit.path).unwrap(), bytes);
        bytes
    }

    #[test]
    fn key_changes_with_module_engine_version_and_config() {
        let base = CacheKey::new("wasmtime", "48.0.8", b"opt=speed", b"\0asm module a");
        assert_eq!(
            base,
            CacheKey::new("wasmtime", "48.0.8", b"opt=speed", b"\0asm module a")
        );
        let others = [
            CacheKey::new("wasmtime", "48.0.8", b"opt=speed", b"\0asm module b"),
            CacheKey::new("wasmtime", "48.0.9", b"opt=speed", b"\0asm module a"),
            CacheKey::new("wasmtime", "48.0.8", b"opt=none", b"\0asm module a"),
            CacheKey::new("wasmedge", "48.0.8", b"opt=speed", b"\0asm module a"),
            // Parts are length-prefixed: moving a byte between them changes the key.
            CacheKey::new("wasmtime", "48.0.8o", b"pt=speed", b"\0asm module a"),
        ];
        for other in &others {
            assert_ne!(base.as_str(), other.as_str());
        }
        assert!(is_key(base.as_str()));
    }

    #[test]
    fn store_then_hit_returns_the_payload() {
        let (_d, cache) = cache(1 << 20);
        let k = key(b"m");
        assert!(cache.lookup(&k).is_none());
        let path = cache.insert(&k, "/m.wasm", b"native code").unwrap();
        assert_eq!(path, cache.dir().join(k.as_str()).join(PAYLOAD_FILE));
        assert_eq!(payload(cache.lookup(&k).unwrap()), b"native code");
        assert_eq!(cache.stats.hits.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats.misses.load(Ordering::Relaxed), 1);
        let entries = cache.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].source, "/m.wasm");
        assert_eq!(entries[0].engine, "test");
    }

    /// Overwrites bytes in place (as disk corruption would) or truncates.
    fn damage(path: &Path, how: &str) {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
        let mut bytes = fs::read(path).unwrap();
        match how {
            "corrupt" => bytes[3] ^= 0xff,
            "truncate" => bytes.truncate(bytes.len() / 2),
            _ => unreachable!(),
        }
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn corrupt_and_truncated_entries_are_rejected_and_rebuilt() {
        for how in ["corrupt", "truncate"] {
            let (_d, cache) = cache(1 << 20);
            let k = key(how.as_bytes());
            let path = cache
                .insert(&k, "/m.wasm", b"native code 0123456789")
                .unwrap();
            damage(&path, how);
            assert!(cache.lookup(&k).is_none(), "{how} entry was accepted");
            assert!(!cache.dir().join(k.as_str()).exists(), "{how} entry kept");
            assert_eq!(cache.stats.discarded.load(Ordering::Relaxed), 1);
            cache
                .insert(&k, "/m.wasm", b"native code 0123456789")
                .unwrap();
            assert_eq!(
                payload(cache.lookup(&k).unwrap()),
                b"native code 0123456789"
            );
        }
    }

    #[test]
    fn corrupt_meta_is_rejected() {
        let (_d, cache) = cache(1 << 20);
        let k = key(b"m");
        cache.insert(&k, "/m.wasm", b"code").unwrap();
        fs::write(cache.dir().join(k.as_str()).join(META_FILE), "garbage").unwrap();
        assert!(cache.lookup(&k).is_none());
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let (_d, cache) = cache(1 << 20);
        let k = key(b"m");
        let err = cache
            .insert_with(&k, "/m.wasm", |path| {
                fs::write(path, b"half of it")?;
                bail!("No space left on device")
            })
            .unwrap_err();
        assert!(format!("{err:#}").contains("No space left"), "{err:#}");
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 0);
        assert!(cache.lookup(&k).is_none());
    }

    #[test]
    fn entry_appears_whole_or_not_at_all() {
        let (_d, cache) = cache(1 << 20);
        let k = key(b"m");
        let entry = cache.dir().join(k.as_str());
        cache
            .insert_with(&k, "/m.wasm", |path| {
                fs::write(path, b"code")?;
                // While the payload is being written, the entry is not visible.
                assert!(!entry.exists());
                assert!(path.starts_with(cache.dir()));
                Ok(())
            })
            .unwrap();
        assert!(entry.join(META_FILE).exists());
        let names: Vec<String> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![k.as_str().to_string()]);
    }

    #[test]
    fn concurrent_inserts_of_one_key_give_one_entry() {
        let (_d, cache) = cache(1 << 20);
        let k = key(b"m");
        std::thread::scope(|s| {
            for i in 0..8 {
                let (cache, k) = (&cache, &k);
                s.spawn(move || {
                    cache
                        .insert_with(k, "/m.wasm", |path| {
                            std::thread::sleep(Duration::from_millis(20 * (i % 2)));
                            fs::write(path, b"same code")?;
                            Ok(())
                        })
                        .unwrap()
                });
            }
        });
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 1);
        assert_eq!(payload(cache.lookup(&k).unwrap()), b"same code");
    }

    #[test]
    fn evicts_least_recently_used_past_the_cap() {
        // Room for two 1000-byte payloads (plus meta files), not three.
        let (_d, cache) = cache(2500);
        let (a, b, c) = (key(b"a"), key(b"b"), key(b"c"));
        let set_used = |k: &CacheKey, secs: u64| {
            let meta = File::options()
                .write(true)
                .open(cache.dir().join(k.as_str()).join(META_FILE))
                .unwrap();
            meta.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .unwrap();
        };
        cache.insert(&a, "a", &[1; 1000]).unwrap();
        set_used(&a, 1000);
        cache.insert(&b, "b", &[2; 1000]).unwrap();
        set_used(&b, 2000);
        // Using a makes b the least recently used.
        assert!(cache.lookup(&a).is_some());
        cache.insert(&c, "c", &[3; 1000]).unwrap();
        assert!(cache.lookup(&b).is_none(), "b should have been evicted");
        assert!(cache.lookup(&a).is_some());
        assert!(cache.lookup(&c).is_some());
        let total: u64 = cache.entries().unwrap().iter().map(|e| e.bytes).sum();
        assert!(total <= 2500, "{total} bytes over the cap");
    }

    #[test]
    fn payload_larger_than_the_cap_is_not_stored() {
        let (_d, cache) = cache(10);
        let k = key(b"m");
        assert!(cache.insert(&k, "m", &[0; 100]).is_err());
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 0);
    }

    #[test]
    fn prune_empties_the_cache() {
        let (_d, cache) = cache(1 << 20);
        cache.insert(&key(b"a"), "a", b"1").unwrap();
        cache.insert(&key(b"b"), "b", b"2").unwrap();
        assert_eq!(cache.prune().unwrap(), 2);
        assert!(cache.entries().unwrap().is_empty());
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 0);
    }

    #[test]
    fn creates_a_private_directory() {
        let (_d, cache) = cache(1);
        let mode = fs::metadata(cache.dir()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn refuses_writable_or_foreign_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        fs::DirBuilder::new().mode(0o700).create(&path).unwrap();
        assert!(ModuleCache::open(&path, 1).is_ok());
        for mode in [0o770, 0o707, 0o777] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = ModuleCache::open(&path, 1).unwrap_err();
            assert!(format!("{err:#}").contains("lets others write"), "{err:#}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        // Owned by someone else: as root, chown it; otherwise ask for root.
        let err = if me == 0 {
            chown(&path, Some(65534), None).unwrap();
            ModuleCache::open(&path, 1).unwrap_err()
        } else {
            check_dir(&path, 0).unwrap_err()
        };
        assert!(format!("{err:#}").contains("owned by uid"), "{err:#}");
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(check_dir(&file, me).is_err());
    }

    #[test]
    fn stale_temporary_directories_are_removed() {
        let (_d, cache) = cache(1 << 20);
        let stale = cache.dir().join(".tmp-killed-writer");
        let fresh = cache.dir().join(".tmp-busy-writer");
        fs::create_dir(&stale).unwrap();
        fs::create_dir(&fresh).unwrap();
        File::open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - STALE_TMP * 2)
            .unwrap();
        cache.evict(None).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size(""), None);
    }
}
