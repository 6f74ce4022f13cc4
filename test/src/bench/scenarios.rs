//! The scenarios of `make bench`, each run for our shims and for runc with a
//! static busybox, interleaved (A B A B …) so that machine noise hits all alike.

use std::io::Read;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use super::memory::{containers_pss, meminfo_kib};
use crate::{text, Containerd};

/// What runs a container: runc with busybox, or one of our shims with Wasm modules.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Label in tables and charts: `runc+busybox`, `wasmtime`, `wasmedge`.
    pub label: String,
    /// `--runtime` for ctr; `None` is containerd's default, runc.
    pub runtime: Option<String>,
    /// Image and args of a container that prints one line and exits.
    pub hello: (String, Vec<String>),
    /// What `hello` prints.
    pub hello_output: String,
    /// Image and args of a container that runs until killed.
    pub sleeper: (String, Vec<String>),
}

impl Kind {
    /// True for our shims, false for the runc baseline.
    pub fn is_wasm(&self) -> bool {
        self.runtime.is_some()
    }

    /// `ctr <command…> [--runtime R] <image> <id> <args…>`.
    fn ctr_args(
        &self,
        command: &[&str],
        (image, args): (&str, &[String]),
        id: &str,
    ) -> Vec<String> {
        let mut all: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        if let Some(r) = &self.runtime {
            all.extend(["--runtime".into(), r.clone()]);
        }
        all.extend([image.to_string(), id.to_string()]);
        all.extend(args.iter().cloned());
        all
    }

    fn hello(&self) -> (&str, &[String]) {
        (&self.hello.0, &self.hello.1)
    }
}

fn ctr(cd: &Containerd, args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cd.ctr(&args)
}

fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    if !out.status.success() {
        let (stdout, stderr) = text(out);
        bail!("{what}: {}: {stdout}{stderr}", out.status);
    }
    Ok(())
}

/// Wall times in milliseconds, one list per kind.
#[derive(Debug, Clone, Serialize)]
pub struct Samples {
    /// Kind label.
    pub kind: String,
    /// Raw samples, ms, in the order they were taken.
    pub ms: Vec<f64>,
}

/// Cold start: `ctr run --rm` of the hello container, `n` rounds of every kind.
pub fn cold_start(cd: &Containerd, kinds: &[Kind], n: usize) -> anyhow::Result<Vec<Samples>> {
    let mut samples: Vec<Samples> = kinds.iter().map(samples_for).collect();
    let fifo = cd.fifo_dir().to_string_lossy().into_owned();
    for round in 0..n {
        for (kind, out) in kinds.iter().zip(samples.iter_mut()) {
            let id = format!("cold-{}-{round}", kind.label.replace('+', "-"));
            let args = kind.ctr_args(&["run", "--rm", "--fifo-dir", &fifo], kind.hello(), &id);
            let started = Instant::now();
            let result = ctr(cd, &args);
            let elapsed = started.elapsed();
            check(&result, &format!("{}: ctr run --rm {id}", kind.label))?;
            if !String::from_utf8_lossy(&result.stdout).contains(&kind.hello_output) {
                bail!("{}: {id} printed {:?}", kind.label, text(&result).0);
            }
            out.ms.push(ms(elapsed));
        }
    }
    Ok(samples)
}

/// From spawning `ctr task start` of a created hello container to the first
/// byte of its stdout reaching ctr's stdout.
pub fn first_byte(cd: &Containerd, kinds: &[Kind], n: usize) -> anyhow::Result<Vec<Samples>> {
    let mut samples: Vec<Samples> = kinds.iter().map(samples_for).collect();
    let fifo = cd.fifo_dir().to_string_lossy().into_owned();
    for round in 0..n {
        for (kind, out) in kinds.iter().zip(samples.iter_mut()) {
            let id = format!("ttfb-{}-{round}", kind.label.replace('+', "-"));
            let create = kind.ctr_args(&["container", "create"], kind.hello(), &id);
            check(&ctr(cd, &create), &format!("ctr container create {id}"))?;

            let started = Instant::now();
            let mut child = cd
                .ctr_command(&["task", "start", "--fifo-dir", &fifo, &id])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let mut stdout = child.stdout.take().context("ctr stdout")?;
            let mut first = [0u8; 1];
            let got = stdout.read(&mut first)?;
            let elapsed = started.elapsed();
            let mut rest = Vec::new();
            stdout.read_to_end(&mut rest)?;
            let status = child.wait()?;
            let removed = ctr(cd, &["container".into(), "rm".into(), id.clone()]);
            if !status.success() || got == 0 {
                let mut err = String::new();
                child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                bail!("{}: ctr task start {id}: {status}: {err}", kind.label);
            }
            check(&removed, &format!("ctr container rm {id}"))?;
            out.ms.push(ms(elapsed));
        }
    }
    Ok(samples)
}

/// Memory of `n` running containers of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Kind label.
    pub kind: String,
    /// Containers running when measured.
    pub containers: usize,
    /// Processes that belong to them (shims, workers, container processes).
    pub processes: usize,
    /// Sum of their PSS, bytes.
    pub pss_bytes: u64,
}

impl Memory {
    /// PSS per container, MiB.
    pub fn mib_per_container(&self) -> f64 {
        self.pss_bytes as f64 / self.containers.max(1) as f64 / (1024.0 * 1024.0)
    }
}

/// Starts `n` long-running containers of every kind (alternating), measures
/// their PSS, and removes them.
pub fn memory(cd: &Containerd, kinds: &[Kind], n: usize) -> anyhow::Result<Vec<Memory>> {
    let ids: Vec<Vec<String>> = kinds
        .iter()
        .map(|k| {
            (0..n)
                .map(|i| format!("mem-{}-{i:04}", k.label.replace('+', "-")))
                .collect()
        })
        .collect();
    let order: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..kinds.len()).map(move |k| (k, i)))
        .collect();
    let started = parallel(&order, 2, |&(k, i)| {
        start_detached(cd, &kinds[k], &ids[k][i])
    });
    let result = (|| {
        for r in started {
            r?;
        }
        for (kind, ids) in kinds.iter().zip(&ids) {
            wait_running(cd, ids).with_context(|| kind.label.clone())?;
        }
        // Let lazily touched pages settle before measuring.
        std::thread::sleep(Duration::from_secs(1));
        Ok(kinds
            .iter()
            .zip(&ids)
            .map(|(kind, ids)| {
                let (pss_bytes, processes) = containers_pss(ids);
                Memory {
                    kind: kind.label.clone(),
                    containers: ids.len(),
                    processes,
                    pss_bytes,
                }
            })
            .collect())
    })();
    remove(cd, &ids.concat());
    result
}

/// How far one kind got towards `target` concurrently running containers.
#[derive(Debug, Clone, Serialize)]
pub struct Density {
    /// Kind label.
    pub kind: String,
    /// Containers the run aimed for.
    pub target: usize,
    /// Containers running at once when the run stopped.
    pub running: usize,
    /// Seconds spent starting them.
    pub start_seconds: f64,
    /// PSS of all their processes at the end, bytes.
    pub pss_bytes: u64,
    /// After each batch: (containers running, seconds since the start, PSS bytes).
    pub batches: Vec<(usize, f64, u64)>,
    /// The first error, if a start failed.
    pub failure: Option<String>,
}

impl Density {
    /// Containers started per second.
    pub fn rate(&self) -> f64 {
        self.running as f64 / self.start_seconds.max(f64::EPSILON)
    }
}

/// Starts long-running containers of `kind` in batches of `batch` until
/// `target` run at once or a start fails; then removes them all.
pub fn density(cd: &Containerd, kind: &Kind, target: usize, batch: usize) -> Density {
    let mut result = Density {
        kind: kind.label.clone(),
        target,
        running: 0,
        start_seconds: 0.0,
        pss_bytes: 0,
        batches: Vec::new(),
        failure: None,
    };
    let mut ids: Vec<String> = Vec::new();
    let began = Instant::now();
    while ids.len() < target && result.failure.is_none() {
        if let Some(short) = memory_running_out() {
            result.failure = Some(format!("stopped before starting more: {short}"));
            break;
        }
        let batch_ids: Vec<String> = (ids.len()..(ids.len() + batch).min(target))
            .map(|i| format!("dens-{}-{i:04}", kind.label.replace('+', "-")))
            .collect();
        let outcomes = parallel(&batch_ids, 4, |id| start_detached(cd, kind, id));
        ids.extend(batch_ids.iter().cloned());
        if let Some(err) = outcomes.into_iter().find_map(Result::err) {
            result.failure = Some(format!("{err:#}"));
        } else if let Err(err) = wait_running(cd, &ids) {
            result.failure = Some(format!("{err:#}"));
        }
        result.start_seconds = began.elapsed().as_secs_f64();
        result.running = running_tasks(cd)
            .map(|r| ids.iter().filter(|id| r.contains(id)).count())
            .unwrap_or(0);
        let (pss, _) = containers_pss(&ids);
        result.pss_bytes = pss;
        result
            .batches
            .push((result.running, result.start_seconds, pss));
        eprintln!(
            "bench: density {}: {} running after {:.1} s",
            kind.label, result.running, result.start_seconds
        );
    }
    remove(cd, &ids);
    result
}

/// Wall times of two successive `ctr run --rm` of one big-module image.
#[derive(Debug, Clone, Serialize)]
pub struct BigModule {
    /// Kind label.
    pub kind: String,
    /// Size of the module file, bytes.
    pub module_bytes: usize,
    /// First start, ms.
    pub first_ms: f64,
    /// Second start of the same image, ms.
    pub second_ms: f64,
}

/// Runs `image` (a module that exits 0) twice through `kind`.
pub fn big_module(
    cd: &Containerd,
    kind: &Kind,
    image: &str,
    module_bytes: usize,
) -> anyhow::Result<BigModule> {
    let fifo = cd.fifo_dir().to_string_lossy().into_owned();
    let mut times = Vec::new();
    for round in 0..2 {
        let id = format!("big-{}-{round}", kind.label);
        let args = kind.ctr_args(&["run", "--rm", "--fifo-dir", &fifo], (image, &[]), &id);
        let started = Instant::now();
        let out = ctr(cd, &args);
        times.push(ms(started.elapsed()));
        check(&out, &format!("{}: ctr run --rm {id}", kind.label))?;
    }
    Ok(BigModule {
        kind: kind.label.clone(),
        module_bytes,
        first_ms: times[0],
        second_ms: times[1],
    })
}

/// Why the machine cannot take another batch safely: less than 2 GiB or 10%
/// of its memory available. The density run stops there rather than let the
/// kernel's OOM killer pick processes.
fn memory_running_out() -> Option<String> {
    let (available, total) = (meminfo_kib("MemAvailable")?, meminfo_kib("MemTotal")?);
    let floor = (2 << 20).max(total / 10);
    (available < floor).then(|| {
        format!(
            "only {:.1} GiB of {:.1} GiB memory available",
            available as f64 / 1048576.0,
            total as f64 / 1048576.0
        )
    })
}

fn samples_for(kind: &Kind) -> Samples {
    Samples {
        kind: kind.label.clone(),
        ms: Vec::new(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `ctr run -d --null-io` of `kind`'s long-running container.
fn start_detached(cd: &Containerd, kind: &Kind, id: &str) -> anyhow::Result<()> {
    let sleeper = (kind.sleeper.0.as_str(), kind.sleeper.1.as_slice());
    let args = kind.ctr_args(&["run", "-d", "--null-io"], sleeper, id);
    check(&ctr(cd, &args), &format!("{}: ctr run -d {id}", kind.label))
}

/// Task ids `ctr task ls` reports as RUNNING.
fn running_tasks(cd: &Containerd) -> anyhow::Result<Vec<String>> {
    let out = cd.ctr(&["task", "ls"]);
    check(&out, "ctr task ls")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 3 && cols[2] == "RUNNING").then(|| cols[0].to_string())
        })
        .collect())
}

/// Waits up to 10 s until every one of `ids` is RUNNING.
fn wait_running(cd: &Containerd, ids: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running = running_tasks(cd)?;
        let missing: Vec<&String> = ids.iter().filter(|id| !running.contains(id)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} containers not running, e.g. {}",
                missing.len(),
                ids.len(),
                missing[0]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills and deletes the tasks and containers `ids` (whichever exist).
pub fn remove(cd: &Containerd, ids: &[String]) {
    parallel(ids, 4, |id| {
        let _ = cd.ctr(&["task", "delete", "--force", id]);
        let _ = cd.ctr(&["container", "delete", id]);
    });
}

/// `f` over `items` on `threads` threads; results in the order of `items`.
fn parallel<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}
