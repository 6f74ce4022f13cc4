//! Churn (issue 12): thousands of create/start/wait/delete cycles through
//! `ctr`, mixing success, a non-zero exit, a trap, a kill and bad input,
//! through shim-per-container and through one long-lived shim (a pod whose
//! first container runs throughout), for every engine under test. Before,
//! every 500 cycles and at the end it compares with a baseline: containerd's
//! open fds, threads and RSS, the pod shim's fds, threads and RSS, our mounts,
//! cgroup directories, bundles, fifos, zombies, shim and worker processes,
//! and containerd's task and container lists.
//!
//! `WASMSHIM_CHURN_CYCLES` (default 2,000; `make soak`: 20,000) cycles per
//! engine, `WASMSHIM_CHURN_PARALLEL` (default 4) at once.
//!
//! Needs root, containerd + runc, clang + wasi-libc and the release shims
//! (`make build`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use libtest_mimic::{Arguments, Failed, Trial};
use wasmshim_integration::{
    cmdline, engines, image, modules, runtime, text, wasm_image, Containerd, NAMESPACE,
};

/// Cycles between two checks against the baseline.
const CHECK_EVERY: usize = 500;

/// Growth of containerd's RSS over the baseline that is not a leak: Go's
/// heap grows and shrinks in steps. Measured: see docs/reliability.md.
const CONTAINERD_RSS_SLACK_KIB: u64 = 32 * 1024;

/// Growth of the long-lived pod shim's RSS over its baseline (allocator
/// caches; a leak of one page per cycle would exceed it within 1,100 cycles).
const SHIM_RSS_SLACK_KIB: u64 = 4 * 1024;

/// Extra threads containerd may start under load and keep (Go never ends
/// an idle OS thread); the baseline is taken after a warm-up at the same
/// parallelism.
const CONTAINERD_THREAD_SLACK: usize = 4;

/// The kinds of cycle, in turn.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `exit.wasm 0`: exit 0 with its output.
    Success,
    /// `exit.wasm 3`: exit 3.
    Failure,
    /// `trap.wasm`: 134.
    Trap,
    /// `sleep.wasm`, killed with SIGTERM once it printed: 143.
    Kill,
    /// A corrupt module: `ctr run` fails naming it; the container record is removed.
    BadInput,
}

const KINDS: [Kind; 5] = [
    Kind::Success,
    Kind::Failure,
    Kind::Trap,
    Kind::Kill,
    Kind::BadInput,
];

fn main() {
    let args = Arguments::from_args();
    let (engines, skipped) = match engines() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("churn test cannot run: {e:#}");
            std::process::exit(1);
        }
    };
    for line in &skipped {
        eprintln!("SKIPPED {line}");
    }
    let cycles = env_number("WASMSHIM_CHURN_CYCLES", 2_000);
    let parallel = env_number("WASMSHIM_CHURN_PARALLEL", 4).max(1);
    let mut args = args;
    // One engine at a time: the figures are per engine.
    args.test_threads.get_or_insert(1);
    let trials = engines
        .iter()
        .map(|engine| {
            let engine: &'static str = engine;
            Trial::test(format!("{engine}::churn_{cycles}_cycles"), move || {
                churn(engine, cycles, parallel).map_err(|e| Failed::from(format!("{e:#}")))
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One engine's churn against a containerd of its own.
fn churn(engine: &str, cycles: usize, parallel: usize) -> anyhow::Result<()> {
    let containerd = Containerd::start_with_log_level("info")?;
    let modules = modules::build_all(&containerd.dir().join("modules"))?;
    for name in ["exit", "trap", "sleep"] {
        let module = modules.join(format!("{name}.wasm"));
        containerd.import(&wasm_image(&image(name), &module, &[])?)?;
    }
    let corrupt = modules.join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x01\0\0\0\x01\xffgarbage")?;
    containerd.import(&wasm_image(&image("corrupt"), &corrupt, &[])?)?;
    let rt = runtime(engine);
    let churn = Churn {
        containerd: &containerd,
        rt: &rt,
        prefix: format!("{engine}-churn"),
        pod: format!("io.kubernetes.cri.sandbox-id={engine}-churn-pod"),
    };
    let result = churn.run(cycles, parallel);
    let log = containerd.log();
    containerd.stop();
    result.with_context(|| {
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("level=error"))
            .take(20)
            .collect();
        format!("containerd's errors:\n{}", errors.join("\n"))
    })
}

struct Churn<'a> {
    containerd: &'a Containerd,
    rt: &'a str,
    prefix: String,
    /// The pod annotation of the long-lived shim's containers.
    pod: String,
}

impl Churn<'_> {
    fn run(&self, cycles: usize, parallel: usize) -> anyhow::Result<()> {
        let sandbox = format!("{}-sandbox", self.prefix);
        let fifo = self.containerd.fifo_dir();
        let out = self.ctr(&[
            "run",
            "-d",
            "--fifo-dir",
            fifo.to_str().context("fifo dir")?,
            "--runtime",
            self.rt,
            "--annotation",
            &self.pod,
            &image("sleep"),
            &sandbox,
            "/sleep.wasm",
        ]);
        ensure!(
            out.status.success(),
            "the pod's first container: {:?}",
            text(&out)
        );
        let result = (|| -> anyhow::Result<()> {
            let shim = self.pod_shim(&sandbox)?;
            // Warm-up at full parallelism: containerd's threads and caches, the module cache.
            let warmup = (KINDS.len() * 2 * parallel).min(cycles.max(1));
            self.batch(0, warmup, parallel)?;
            let baseline = Snapshot::take(self, shim)?;
            eprintln!(
                "{}: baseline after {warmup} warm-up cycles: {baseline}",
                self.rt
            );
            let started = Instant::now();
            let mut done = 0;
            while done < cycles {
                let n = CHECK_EVERY.min(cycles - done);
                self.batch(warmup + done, n, parallel)?;
                done += n;
                let now = settle(|| Snapshot::take(self, shim), &baseline)?;
                eprintln!(
                    "{}: {done} cycles in {:.1?}: {now}",
                    self.rt,
                    started.elapsed()
                );
                now.compare(&baseline)
                    .with_context(|| format!("after {done} cycles"))?;
            }
            eprintln!(
                "{}: {cycles} cycles ({parallel} at once) in {:.1?}",
                self.rt,
                started.elapsed()
            );
            Ok(())
        })();
        self.ctr(&["task", "kill", "--signal", "SIGKILL", &sandbox]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ctr(&["task", "delete", &sandbox]).status.success() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.ctr(&["container", "delete", &sandbox]);
        result?;
        let left = self.containerd.processes();
        ensure!(
            left.is_empty(),
            "processes left after the pod was removed: {:?}",
            left.iter().map(|p| cmdline(*p)).collect::<Vec<_>>()
        );
        Ok(())
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.containerd.ctr(args)
    }

    /// The shim serving the pod: the parent of its first container's worker.
    fn pod_shim(&self, sandbox: &str) -> anyhow::Result<u32> {
        let (stdout, _) = text(&self.ctr(&["task", "ls"]));
        let worker: u32 = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(sandbox))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("{sandbox} not in ctr task ls: {stdout}"))?;
        let status = std::fs::read_to_string(format!("/proc/{worker}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse().ok())
            .context("the pod's shim")
    }

    /// Cycles `first .. first + count`, `parallel` at a time.
    fn batch(&self, first: usize, count: usize, parallel: usize) -> anyhow::Result<()> {
        let next = AtomicUsize::new(first);
        let end = first + count;
        let failures: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..parallel)
                .map(|_| {
                    s.spawn(|| {
                        let mut failures = Vec::new();
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= end {
                                return failures;
                            }
                            if let Err(e) = self.cycle(n) {
                                failures.push(format!("cycle {n}: {e:#}"));
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("churn thread"))
                .collect()
        });
        ensure!(
            failures.is_empty(),
            "{} of {count} cycles failed, the first: {:#?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        Ok(())
    }

    /// Cycle `n`: kind `n % 5`, through the pod's shim when `n / 5` is odd.
    fn cycle(&self, n: usize) -> anyhow::Result<()> {
        let kind = KINDS[n % KINDS.len()];
        let in_pod = (n / KINDS.len()) % 2 == 1;
        let id = format!("{}-{n}", self.prefix);
        let fifo = self.containerd.fifo_dir();
        let mut args = vec![
            "run",
            "--rm",
            "--fifo-dir",
            fifo.to_str().context("fifo dir")?,
            "--runtime",
            self.rt,
        ];
        if in_pod {
            args.extend(["--annotation", &self.pod]);
        }
        let (exit, trap, sleep, corrupt) = (
            image("exit"),
            image("trap"),
            image("sleep"),
            image("corrupt"),
        );
        let (want, output): (i32, &str) = match kind {
            Kind::Success => {
                args.extend([exit.as_str(), &id, "/exit.wasm", "0"]);
                (0, "exiting with 0")
            }
            Kind::Failure => {
                args.extend([exit.as_str(), &id, "/exit.wasm", "3"]);
                (3, "exiting with 3")
            }
            Kind::Trap => {
                args.extend([trap.as_str(), &id]);
                (134, "")
            }
            Kind::Kill => {
                args.extend([sleep.as_str(), &id, "/sleep.wasm"]);
                (143, "sleeping")
            }
            Kind::BadInput => {
                args.extend([corrupt.as_str(), &id]);
                (1, "not a valid WebAssembly module")
            }
        };
        let out = match kind {
            Kind::Kill => self.run_and_kill(&args, &id)?,
            _ => self.ctr(&args),
        };
        if matches!(kind, Kind::BadInput) {
            // `ctr run --rm` leaves the container record when Create fails.
            self.ctr(&["container", "delete", &id]);
        }
        let (stdout, stderr) = text(&out);
        ensure!(
            out.status.code() == Some(want),
            "{kind:?} {id}{}: exit {:?}, want {want}: {stdout:?} {stderr:?}",
            if in_pod { " (pod)" } else { "" },
            out.status
        );
        ensure!(
            stdout.contains(output) || stderr.contains(output),
            "{kind:?} {id}: output lacks {output:?}: {stdout:?} {stderr:?}"
        );
        Ok(())
    }

    /// `ctr run --rm` of a sleeping module, SIGTERMed once it printed.
    fn run_and_kill(&self, args: &[&str], id: &str) -> anyhow::Result<Output> {
        let mut child = self
            .containerd
            .ctr_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().context("stdout")?).read_line(&mut first)?;
        let kill = self.ctr(&["task", "kill", "--signal", "SIGTERM", id]);
        let out = child.wait_with_output()?;
        ensure!(
            kill.status.success(),
            "ctr task kill {id}: {:?}",
            text(&kill)
        );
        Ok(Output {
            stdout: [first.into_bytes(), out.stdout].concat(),
            ..out
        })
    }
}

/// Takes snapshots until one matches `baseline` or 10 s passed (containerd
/// finishes deleting asynchronously); returns the last.
fn settle(
    take: impl Fn() -> anyhow::Result<Snapshot>,
    baseline: &Snapshot,
) -> anyhow::Result<Snapshot> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = take()?;
        if now.compare(baseline).is_ok() || Instant::now() > deadline {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What must not grow with churn.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    counts: BTreeMap<&'static str, usize>,
    containerd_threads: usize,
    containerd_rss_kib: u64,
    shim_rss_kib: u64,
    tasks: Vec<String>,
    containers: Vec<String>,
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, n) in &self.counts {
            write!(f, "{name} {n}, ")?;
        }
        write!(
            f,
            "containerd threads {}, containerd RSS {} KiB, pod shim RSS {} KiB, tasks {}, containers {}",
            self.containerd_threads,
            self.containerd_rss_kib,
            self.shim_rss_kib,
            self.tasks.len(),
            self.containers.len()
        )
    }
}

impl Snapshot {
    fn take(churn: &Churn, shim: u32) -> anyhow::Result<Snapshot> {
        let cd = churn.containerd;
        let daemon = cd.pid();
        let dir = cd.dir().to_string_lossy().into_owned();
        let mut counts = BTreeMap::new();
        counts.insert("containerd fds", count_dir(&format!("/proc/{daemon}/fd")));
        counts.insert("pod shim fds", count_dir(&format!("/proc/{shim}/fd")));
        counts.insert("pod shim threads", count_dir(&format!("/proc/{shim}/task")));
        // Shims mount their containers' rootfs in a namespace of their own.
        let mounts = |pid: &str| -> anyhow::Result<usize> {
            Ok(std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?
                .lines()
                .filter(|l| l.contains(&dir))
                .count())
        };
        counts.insert("host mounts", mounts("self")?);
        counts.insert("pod shim mounts", mounts(&shim.to_string())?);
        counts.insert("cgroup dirs", cgroup_dirs(&churn.prefix));
        counts.insert(
            "bundles",
            count_dir(&format!(
                "{dir}/state/io.containerd.runtime.v2.task/{NAMESPACE}"
            )),
        );
        counts.insert("fifo dir entries", count_dir(&format!("{dir}/fifo")));
        let processes = cd.processes();
        counts.insert("shims and workers", processes.len());
        let mut family = processes.clone();
        family.push(daemon);
        counts.insert(
            "zombies",
            processes.iter().filter(|p| state(**p) == Some('Z')).count() + zombie_children(&family),
        );
        let list = |args: &[&str]| -> Vec<String> {
            let mut ids: Vec<String> = text(&cd.ctr(args)).0.lines().map(str::to_string).collect();
            ids.sort();
            ids
        };
        let (stdout, _) = text(&cd.ctr(&["task", "ls"]));
        let mut tasks: Vec<String> = stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        tasks.sort();
        Ok(Snapshot {
            counts,
            containerd_threads: count_dir(&format!("/proc/{daemon}/task")),
            containerd_rss_kib: rss_kib(daemon),
            shim_rss_kib: rss_kib(shim),
            tasks,
            containers: list(&["container", "ls", "-q"]),
        })
    }

    /// Fails naming what grew past `baseline` (and its tolerance).
    fn compare(&self, baseline: &Snapshot) -> anyhow::Result<()> {
        let mut grew = Vec::new();
        for (name, n) in &self.counts {
            let before = baseline.counts.get(name).copied().unwrap_or_default();
            if *n > before {
                grew.push(format!("{name}: {before} -> {n}"));
            }
        }
        if self.containerd_threads > baseline.containerd_threads + CONTAINERD_THREAD_SLACK {
            grew.push(format!(
                "containerd threads: {} -> {}",
                baseline.containerd_threads, self.containerd_threads
            ));
        }
        if self.containerd_rss_kib > baseline.containerd_rss_kib + CONTAINERD_RSS_SLACK_KIB {
            grew.push(format!(
                "containerd RSS: {} -> {} KiB",
                baseline.containerd_rss_kib, self.containerd_rss_kib
            ));
        }
        if self.shim_rss_kib > baseline.shim_rss_kib + SHIM_RSS_SLACK_KIB {
            grew.push(format!(
                "pod shim RSS: {} -> {} KiB",
                baseline.shim_rss_kib, self.shim_rss_kib
            ));
        }
        if self.tasks != baseline.tasks {
            grew.push(format!("tasks: {:?} -> {:?}", baseline.tasks, self.tasks));
        }
        if self.containers != baseline.containers {
            grew.push(format!(
                "containers: {:?} -> {:?}",
                baseline.containers, self.containers
            ));
        }
        ensure!(
            grew.is_empty(),
            "grew past the baseline: {}",
            grew.join("; ")
        );
        Ok(())
    }
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// Cgroup directories of the churn's containers (`<prefix>-…`) in every hierarchy.
fn cgroup_dirs(prefix: &str) -> usize {
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        hierarchies.extend(entries.flatten().map(|e| e.path()));
    }
    hierarchies
        .iter()
        .filter_map(|h| std::fs::read_dir(h.join(NAMESPACE)).ok())
        .flat_map(|d| d.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .count()
}

/// The state letter of `pid` (`Z`: a zombie).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Zombies whose parent is one of `parents`.
fn zombie_children(parents: &[u32]) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| state(*pid) == Some('Z'))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("PPid:"))
                        .and_then(|p| p.trim().parse::<u32>().ok())
                })
                .is_some_and(|ppid| parents.contains(&ppid))
        })
        .count()
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
