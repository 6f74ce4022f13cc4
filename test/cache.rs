//! Integration cases of the module cache (`shim/src/engine/cache.rs`): each
//! runs a module no other case runs (hello world with a custom section naming
//! the case), so its cache entry is its own, and reads containerd's log, where
//! the workers say `cache hit` or `cache miss` at debug level.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context};
use wasmshim_integration::{bin_dir, text, wasm_image, Containerd};

use super::{expect_output, image, Env};

const HELLO: &str = "Hello from WebAssembly";

/// hello.wasm with a custom section holding `tag`: new bytes, so a new cache key.
fn variant(cd: &Containerd, modules: &Path, tag: &str) -> anyhow::Result<String> {
    variant_of(cd, modules, "hello.wasm", tag)
}

/// The module `base` with a custom section holding `tag`, as image `tag`.
fn variant_of(cd: &Containerd, modules: &Path, base: &str, tag: &str) -> anyhow::Result<String> {
    let mut wasm = std::fs::read(modules.join(base)).context(base.to_string())?;
    let name = b"wasmshim-test";
    let body_len = 1 + name.len() + tag.len();
    anyhow::ensure!(body_len < 128 && name.len() < 128, "tag too long");
    wasm.push(0); // custom section
    wasm.push(body_len as u8);
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(tag.as_bytes());
    let file = cd.dir().join(format!("{tag}.wasm"));
    std::fs::write(&file, &wasm)?;
    // Not `Containerd::import`: its one `image.tar` would race with the
    // imports of cases running at the same time.
    let tar = cd.dir().join(format!("{tag}.tar"));
    wasm_image(&image(tag), &file, &[])?.write_archive(std::fs::File::create(&tar)?)?;
    let out = cd.ctr(&[
        "image",
        "import",
        "--all-platforms",
        tar.to_str().context("path")?,
    ]);
    std::fs::remove_file(&tar)?;
    ensure!(
        out.status.success(),
        "ctr image import {tag}: {:?}",
        text(&out)
    );
    Ok(image(tag))
}

/// Entry directories of the cache whose module the containers named `/<tag>.wasm`.
fn entries_for(cache: &Path, tag: &str) -> Vec<PathBuf> {
    let source = format!("source /{tag}.wasm\n");
    std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("meta")).is_ok_and(|meta| meta.contains(&source))
        })
        .collect()
}

fn entry_bytes(entry: &Path) -> u64 {
    ["code.so", "meta"]
        .iter()
        .map(|f| std::fs::metadata(entry.join(f)).map_or(0, |m| m.len()))
        .sum()
}

/// True once containerd's log shows `text` (see [`Containerd::log_with`]).
fn log_shows(cd: &Containerd, text: &str) -> bool {
    cd.log_with(&[text]).contains(text)
}

/// True once the shim logged `what` for container `id` (see [`log_shows`]).
fn said(cd: &Containerd, id: &str, what: &str) -> bool {
    log_shows(cd, &format!("container {id}: {what}"))
}

/// True when the shim has already logged `what` for container `id`: for
/// "it did not say" checks, made after [`said`] saw that container's line
/// that comes with it.
fn said_already(cd: &Containerd, id: &str, what: &str) -> bool {
    cd.log().contains(&format!("container {id}: {what}"))
}

/// The second start of a module loads it from the cache: no compilation.
pub fn second_start_is_a_hit(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let cd = &env.containerd;
    let img = variant(cd, &cd.dir().join("modules"), id)?;
    expect_output(&cd.run(Some(rt), &[&img, id]), &[HELLO])?;
    ensure!(
        said(cd, id, "cache miss"),
        "first start of {id} was no miss"
    );
    let entries = entries_for(&cd.cache_dir(), id);
    ensure!(
        entries.len() == 1,
        "want one cache entry, found {entries:?}"
    );
    let second = format!("{id}-2");
    expect_output(&cd.run(Some(rt), &[&img, &second]), &[HELLO])?;
    ensure!(
        said(cd, &second, "cache hit"),
        "second start was no cache hit"
    );
    ensure!(
        !said_already(cd, &second, "cache miss"),
        "second start compiled"
    );
    ensure!(entries_for(&cd.cache_dir(), id).len() == 1);
    Ok(())
}

/// A signal ends a container whose module was compiled at its start just as
/// one whose module came from the cache: compiling leaves no signal handler
/// behind (WasmEdge's LLVM once made a worker ignore SIGUSR1 and swallow
/// SIGQUIT after a miss).
pub fn signals_end_a_miss_as_a_hit(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let cd = &env.containerd;
    for (signal, status) in [("SIGUSR1", 138), ("SIGQUIT", 131)] {
        let tag = format!("{id}-{}", signal.to_lowercase());
        let img = variant_of(cd, &cd.dir().join("modules"), "loop.wasm", &tag)?;
        for (start, said_what) in [("miss", "cache miss"), ("hit", "cache hit")] {
            let run = format!("{tag}-{start}");
            super::kill_running(env, rt, &run, &[&img, &run], signal, status)
                .with_context(|| format!("{signal} after a cache {start}"))?;
            ensure!(
                said(cd, &run, said_what),
                "the start of {run} was no {said_what}"
            );
        }
    }
    Ok(())
}

/// Bytes overwritten in a cache entry: detected, rebuilt, and the container runs.
pub fn corrupt_entry_is_rebuilt(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let cd = &env.containerd;
    let img = variant(cd, &cd.dir().join("modules"), id)?;
    expect_output(&cd.run(Some(rt), &[&img, id]), &[HELLO])?;
    let entries = entries_for(&cd.cache_dir(), id);
    ensure!(
        entries.len() == 1,
        "want one cache entry, found {entries:?}"
    );
    let payload = entries[0].join("code.so");
    let mut bytes = std::fs::read(&payload)?;
    let middle = bytes.len() / 2;
    bytes[middle..middle + 256].fill(0xcc);
    // Overwrite in place, as a bad disk would: same inode, same length.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&payload)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))?;

    let second = format!("{id}-2");
    expect_output(&cd.run(Some(rt), &[&img, &second]), &[HELLO])?;
    ensure!(
        said(cd, &second, "cache entry") && log_shows(cd, "is unusable, compiling again"),
        "the corrupt entry was not reported"
    );
    ensure!(said(cd, &second, "cache miss"), "the entry was not rebuilt");
    let third = format!("{id}-3");
    expect_output(&cd.run(Some(rt), &[&img, &third]), &[HELLO])?;
    ensure!(
        said(cd, &third, "cache hit"),
        "the rebuilt entry is not used"
    );
    ensure!(entries_for(&cd.cache_dir(), id).len() == 1);
    Ok(())
}

/// Ten first starts of one new module at once: all run, one entry results.
pub fn ten_concurrent_first_starts(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let cd = &env.containerd;
    let img = variant(cd, &cd.dir().join("modules"), id)?;
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let img = &img;
                s.spawn(move || {
                    let cid = format!("{id}-{i}");
                    expect_output(&cd.run(Some(rt), &[img, &cid]), &[HELLO]).map(|_| ())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    ensure!(
        failures.is_empty(),
        "{} of 10 failed: {failures:#?}",
        failures.len()
    );
    let entries = entries_for(&cd.cache_dir(), id);
    ensure!(
        entries.len() == 1,
        "want one cache entry, found {entries:?}"
    );
    Ok(())
}

/// Past a tiny cap, the least recently used entry is evicted.
pub fn eviction_past_the_cap(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    // The size of one entry of this kind, measured in the shared containerd.
    let cd = &env.containerd;
    let modules = cd.dir().join("modules");
    let measure = format!("{id}-m");
    let img = variant(cd, &modules, &measure)?;
    expect_output(&cd.run(Some(rt), &[&img, &measure]), &[HELLO])?;
    let entry = entries_for(&cd.cache_dir(), &measure);
    ensure!(entry.len() == 1, "no entry to measure: {entry:?}");
    let cap = entry_bytes(&entry[0]) * 5 / 2;

    // A containerd of its own whose shims keep at most two such entries.
    let small =
        Containerd::start_with_env("debug", &[("WASMSHIM_CACHE_MAX_SIZE", &cap.to_string())])?;
    let tags: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|t| format!("{id}-{t}"))
        .collect();
    let mut images = Vec::new();
    for tag in &tags {
        images.push(variant(&small, &modules, tag)?);
    }
    let run = |n: usize, cid: &str| -> anyhow::Result<()> {
        expect_output(&small.run(Some(rt), &[&images[n], cid]), &[HELLO]).map(|_| ())
    };
    let present = |n: usize| entries_for(&small.cache_dir(), &tags[n]).len() == 1;
    run(0, &format!("{id}-1"))?;
    std::thread::sleep(Duration::from_millis(20));
    run(1, &format!("{id}-2"))?;
    ensure!(present(0) && present(1), "two entries fit under the cap");
    std::thread::sleep(Duration::from_millis(20));
    // Using a again makes b the least recently used.
    run(0, &format!("{id}-3"))?;
    ensure!(
        said(&small, &format!("{id}-3"), "cache hit"),
        "a was no hit"
    );
    std::thread::sleep(Duration::from_millis(20));
    run(2, &format!("{id}-4"))?;
    ensure!(!present(1), "b (least recently used) was not evicted");
    ensure!(present(0) && present(2), "a or c was evicted instead of b");
    let total: u64 = std::fs::read_dir(small.cache_dir())?
        .flatten()
        .map(|e| entry_bytes(&e.path()))
        .sum();
    ensure!(total <= cap, "cache holds {total} bytes, cap {cap}");
    small.stop();
    Ok(())
}

/// `wasmshim precompile` of the module in an imported image (through `ctr
/// image mount`, as docs/configuration.md says) makes the first start a hit.
pub fn precompile_after_import(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let cd = &env.containerd;
    let img = variant(cd, &cd.dir().join("modules"), id)?;
    let mnt = cd.dir().join(format!("mnt-{id}"));
    std::fs::create_dir_all(&mnt)?;
    let mount = cd.ctr(&[
        "image",
        "mount",
        "--platform",
        "wasi/wasm",
        &img,
        mnt.to_str().context("path")?,
    ]);
    ensure!(
        mount.status.success(),
        "ctr image mount: {:?}",
        text(&mount)
    );
    let precompile = std::process::Command::new(bin_dir().join("wasmshim"))
        .arg("precompile")
        .arg(mnt.join(format!("{id}.wasm")))
        .arg("--cache-dir")
        .arg(cd.cache_dir())
        .output()?;
    let unmount = cd.ctr(&["image", "unmount", "--rm", mnt.to_str().context("path")?]);
    ensure!(
        precompile.status.success(),
        "wasmshim precompile: {:?}",
        text(&precompile)
    );
    ensure!(
        unmount.status.success(),
        "ctr image unmount: {:?}",
        text(&unmount)
    );
    ensure!(
        text(&precompile).0.contains("compiled for wasmtime"),
        "{:?}",
        text(&precompile)
    );
    expect_output(&cd.run(Some(rt), &[&img, id]), &[HELLO])?;
    ensure!(
        said(cd, id, "cache hit"),
        "the first start after precompile compiled"
    );
    ensure!(
        !said_already(cd, id, "cache miss"),
        "the first start after precompile compiled"
    );
    Ok(())
}
