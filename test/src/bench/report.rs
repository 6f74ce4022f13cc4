//! What a bench run found: the machine, every raw sample, summaries, ratios
//! against runc and the PASS/MISS verdict of each target; printed as a table,
//! written as JSON and as `docs/performance.md`.

use std::fmt::Write as _;
use std::process::Command;

use serde::Serialize;

use super::docker::OURS as DOCKER_OURS;
use super::http::HttpLoad;
use super::scenarios::{BigModule, Density, Memory, Samples};
use super::stats::Summary;

/// The label of the baseline kind.
pub const BASELINE: &str = "runc+busybox";

/// The machine the run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores available to the run.
    pub cores: usize,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Operating system.
    pub os: String,
    /// `containerd --version`.
    pub containerd: String,
    /// `runc --version`, first line.
    pub runc: String,
    /// `/usr/bin/docker --version` (the Docker scenario's client).
    pub docker: String,
    /// cgroup version the host runs.
    pub cgroup: String,
}

impl Machine {
    /// Reads this machine's facts.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| {
                    v.trim_start_matches([' ', '\t', ':', '='])
                        .trim()
                        .trim_matches('"')
                        .to_string()
                })
                .unwrap_or_default()
        };
        let mem_kb = super::memory::meminfo_kib("MemTotal").unwrap_or(0) as f64;
        let version = |cmd: &str| {
            Command::new(cmd)
                .arg("--version")
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_else(|_| "not found".into())
        };
        Machine {
            cpu: field(&cpuinfo, "model name"),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            os: field(&os_release, "PRETTY_NAME"),
            containerd: version("containerd"),
            runc: version("runc"),
            docker: version("/usr/bin/docker"),
            cgroup: if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                "v2".into()
            } else {
                "v1".into()
            },
        }
    }
}

/// One criterion micro-benchmark: its id and median time.
#[derive(Debug, Clone, Serialize)]
pub struct Micro {
    /// Criterion's full id, e.g. `compile/wasmtime`.
    pub id: String,
    /// Median time per iteration, ns.
    pub median_ns: f64,
}

/// A goal the project set itself, and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured, for which kind.
    pub name: String,
    /// The goal, e.g. `<= 0.70 x runc`.
    pub goal: String,
    /// What this run measured.
    pub measured: String,
    /// Met or not; `None` when this run could not tell (a quick run, an error).
    pub met: Option<bool>,
}

impl Target {
    /// `PASS`, `MISS` or `SKIP`.
    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "SKIP",
        }
    }
}

/// Everything one run of `make bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command that produced it.
    pub command: String,
    /// A quick run (`QUICK=1`): fewer samples, smaller sizes.
    pub quick: bool,
    /// When, UTC.
    pub date: String,
    /// Where.
    pub machine: Machine,
    /// Cold start, `ctr run --rm`, ms.
    pub cold_start: Vec<Samples>,
    /// Cold start of the 28 KB C module with a warm module cache (busybox for runc), ms.
    pub cold_start_c: Vec<Samples>,
    /// `ctr task start` to the first stdout byte, ms.
    pub first_byte: Vec<Samples>,
    /// Memory of running containers.
    pub memory: Vec<Memory>,
    /// Density runs.
    pub density: Vec<Density>,
    /// Big module first and second start.
    pub big_module: Vec<BigModule>,
    /// `docker run --rm` in a private Docker 20.10: hello through
    /// `wasmshim-oci`, busybox `echo hi` through runc, ms.
    pub docker_run: Vec<Samples>,
    /// HTTP function against busybox httpd under 16 concurrent clients.
    pub http: Vec<HttpLoad>,
    /// Criterion micro-benchmarks.
    pub micro: Vec<Micro>,
    /// Targets and verdicts.
    pub targets: Vec<Target>,
    /// Errors that stopped a scenario.
    pub errors: Vec<String>,
}

fn summary(samples: &[Samples], kind: &str) -> Option<Summary> {
    samples
        .iter()
        .find(|s| s.kind == kind)
        .and_then(|s| Summary::of(&s.ms))
}

fn ratio(ours: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| ours / base)
}

impl Report {
    /// Fills in [`Report::targets`] from the measurements.
    pub fn judge(&mut self, density_target: usize) {
        let mut targets = Vec::new();
        let wasm_kinds: Vec<String> = self
            .cold_start
            .iter()
            .chain(self.first_byte.iter())
            .map(|s| s.kind.clone())
            .chain(self.memory.iter().map(|m| m.kind.clone()))
            .chain(self.density.iter().map(|d| d.kind.clone()))
            .filter(|k| k != BASELINE)
            .fold(Vec::new(), |mut v, k| {
                if !v.contains(&k) {
                    v.push(k);
                }
                v
            });
        for kind in &wasm_kinds {
            let base = summary(&self.cold_start, BASELINE);
            let ours = summary(&self.cold_start, kind);
            let r = base.zip(ours).and_then(|(b, o)| ratio(o.median, b.median));
            targets.push(Target {
                name: format!("cold start median, {kind}"),
                goal: "<= 0.70 x runc".into(),
                measured: r.map_or("not measured".into(), |r| format!("{r:.2} x runc")),
                met: r.map(|r| r <= 0.70),
            });

            let base = summary(&self.cold_start_c, BASELINE);
            let ours = summary(&self.cold_start_c, kind);
            let r = base.zip(ours).and_then(|(b, o)| ratio(o.median, b.median));
            // The precompile issue's goals: wasmtime 0.60, WasmEdge 0.70.
            let goal = if kind == "wasmedge" { 0.70 } else { 0.60 };
            targets.push(Target {
                name: format!("cold start median, 28 KB C module, warm cache, {kind}"),
                goal: format!("<= {goal:.2} x runc"),
                measured: r.map_or("not measured".into(), |r| format!("{r:.2} x runc")),
                met: r.map(|r| r <= goal),
            });

            let base = self.memory.iter().find(|m| m.kind == BASELINE);
            let ours = self.memory.iter().find(|m| &m.kind == kind);
            let r = base
                .zip(ours)
                .and_then(|(b, o)| ratio(o.mib_per_container(), b.mib_per_container()));
            targets.push(Target {
                name: format!("memory per running container, {kind}"),
                goal: "<= 0.50 x runc".into(),
                measured: r.map_or("not measured".into(), |r| format!("{r:.2} x runc")),
                met: r.map(|r| r <= 0.50),
            });

            let d = self.density.iter().find(|d| &d.kind == kind);
            targets.push(Target {
                name: format!("density, {kind}"),
                goal: format!("{density_target} concurrent, no failure"),
                measured: d.map_or("not measured".into(), |d| {
                    format!(
                        "{} of {} running{}",
                        d.running,
                        d.target,
                        if d.failure.is_some() { ", failed" } else { "" }
                    )
                }),
                met: d.and_then(|d| {
                    (d.target >= density_target)
                        .then_some(d.running >= density_target && d.failure.is_none())
                }),
            });

            let b = self.big_module.iter().find(|b| &b.kind == kind);
            let r = b.and_then(|b| ratio(b.second_ms, b.first_ms));
            targets.push(Target {
                name: format!("big module second start, {kind}"),
                goal: "<= 0.10 x first start".into(),
                measured: r.map_or("not measured".into(), |r| format!("{r:.2} x first")),
                met: r.map(|r| r <= 0.10),
            });

            // Start time must not grow with module size once the code is cached.
            let hello = summary(&self.cold_start, kind);
            let r = b.zip(hello).and_then(|(b, h)| ratio(b.second_ms, h.median));
            targets.push(Target {
                name: format!("big module warm start vs hello cold start, {kind}"),
                goal: "<= 2.00 x hello".into(),
                measured: r.map_or("not measured".into(), |r| format!("{r:.2} x hello")),
                met: r.map(|r| r <= 2.0),
            });
        }
        // Docker's own work (API, image, network namespace, shim) is in both sides.
        // Named even when the scenario did not run, so a failed run shows it.
        let mut docker_kinds: Vec<&str> = self
            .docker_run
            .iter()
            .map(|s| s.kind.as_str())
            .filter(|k| *k != BASELINE)
            .collect();
        if docker_kinds.is_empty() {
            docker_kinds.push(DOCKER_OURS);
        }
        let base = summary(&self.docker_run, BASELINE);
        for kind in docker_kinds {
            let ours = summary(&self.docker_run, kind);
            let r = base.zip(ours).and_then(|(b, o)| ratio(o.median, b.median));
            targets.push(Target {
                name: format!("docker run --rm hello, {kind}"),
                goal: "<= 0.80 x runc".into(),
                measured: r.map_or("not measured".into(), |r| format!("{r:.2} x runc")),
                met: r.map(|r| r <= 0.80),
            });
        }
        if self.quick {
            for t in &mut targets {
                t.measured.push_str(" (quick run)");
                t.met = None;
            }
        }
        self.targets = targets;
    }

    /// The result tables and target verdicts, as Markdown tables (also readable on a terminal).
    pub fn tables(&self) -> String {
        let mut s = String::new();
        for (title, samples) in [
            (
                "Cold start: `ctr run --rm`, hello world / busybox `echo hi`",
                &self.cold_start,
            ),
            (
                "Cold start with a warm module cache: `ctr run --rm`, 28 KB C module (`args.c`) / busybox `echo hi`",
                &self.cold_start_c,
            ),
            (
                "Start to first byte: `ctr task start` to the first stdout byte",
                &self.first_byte,
            ),
            (
                "Docker 20.10: `docker run --rm --network none`, hello world via `--runtime wasmshim` (wasmshim-oci) / busybox `echo hi` via `--runtime runc`",
                &self.docker_run,
            ),
        ] {
            let _ = writeln!(s, "### {title}\n");
            let _ = writeln!(
                s,
                "| kind | n | min ms | median ms | p95 ms | median vs runc |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
            let base = summary(samples, BASELINE);
            for sample in samples.iter() {
                if let Some(sum) = Summary::of(&sample.ms) {
                    let r = base.and_then(|b| ratio(sum.median, b.median));
                    let _ = writeln!(
                        s,
                        "| {} | {} | {:.1} | {:.1} | {:.1} | {} |",
                        sample.kind,
                        sum.n,
                        sum.min,
                        sum.median,
                        sum.p95,
                        r.map_or("-".into(), |r| format!("{r:.2}"))
                    );
                }
            }
            s.push('\n');
        }
        if !self.memory.is_empty() {
            let _ = writeln!(
                s,
                "### Memory per running container (PSS of shim + its descendants)\n"
            );
            let _ = writeln!(
                s,
                "| kind | containers | processes | MiB per container | vs runc |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            let base = self.memory.iter().find(|m| m.kind == BASELINE);
            for m in &self.memory {
                let r = base.and_then(|b| ratio(m.mib_per_container(), b.mib_per_container()));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.2} | {} |",
                    m.kind,
                    m.containers,
                    m.processes,
                    m.mib_per_container(),
                    r.map_or("-".into(), |r| format!("{r:.2}"))
                );
            }
            s.push('\n');
        }
        if !self.density.is_empty() {
            let _ = writeln!(
                s,
                "### Density: long-running containers started in batches\n"
            );
            let _ = writeln!(s, "| kind | target | running | start s | containers/s | total PSS MiB | first failure |");
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|");
            for d in &self.density {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} | {:.1} | {:.0} | {} |",
                    d.kind,
                    d.target,
                    d.running,
                    d.start_seconds,
                    d.rate(),
                    d.pss_bytes as f64 / 1048576.0,
                    d.failure
                        .as_deref()
                        .unwrap_or("none")
                        .replace('|', "/")
                        .replace('\n', " ")
                );
            }
            s.push('\n');
        }
        if !self.big_module.is_empty() {
            let _ = writeln!(
                s,
                "### Big module: two successive `ctr run --rm` of one image\n"
            );
            let _ = writeln!(
                s,
                "| kind | module MB | first start ms | second start ms | second / first |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            for b in &self.big_module {
                let _ = writeln!(
                    s,
                    "| {} | {:.1} | {:.0} | {:.0} | {:.2} |",
                    b.kind,
                    b.module_bytes as f64 / 1e6,
                    b.first_ms,
                    b.second_ms,
                    b.second_ms / b.first_ms
                );
            }
            s.push('\n');
        }
        self.http_table(&mut s);
        if !self.micro.is_empty() {
            let _ = writeln!(
                s,
                "### In-process micro-benchmarks (criterion, `shim/benches/engine.rs`)\n"
            );
            let _ = writeln!(s, "| benchmark | median |");
            let _ = writeln!(s, "|---|---:|");
            for m in &self.micro {
                let _ = writeln!(s, "| {} | {} |", m.id, human_ns(m.median_ns));
            }
            s.push('\n');
        }
        let _ = writeln!(s, "### Targets\n");
        let _ = writeln!(s, "| verdict | target | goal | measured |");
        let _ = writeln!(s, "|---|---|---|---|");
        for t in &self.targets {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.verdict(),
                t.name,
                t.goal,
                t.measured
            );
        }
        s
    }

    /// The HTTP-function table (nothing when the scenario did not run).
    fn http_table(&self, s: &mut String) {
        if !self.http.is_empty() {
            let _ = writeln!(
            s,
            "### HTTP: hello handler (`wasi:http/proxy` component, one instance per request) / busybox `httpd` static file, {} concurrent clients, one connection per request\n",
            super::http::CLIENTS
        );
            let _ = writeln!(
            s,
            "| kind | requests | answered | failures | requests/s | vs runc | p50 ms | p99 ms | instantiation µs |"
        );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            let base = self.http.iter().find(|h| h.kind == BASELINE);
            for h in &self.http {
                let r = base.and_then(|b| ratio(h.per_second, b.per_second));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {} |",
                    h.kind,
                    h.requests,
                    h.answered,
                    h.failures,
                    h.per_second,
                    r.map_or("-".into(), |r| format!("{r:.2}")),
                    h.p50_ms,
                    h.p99_ms,
                    h.instantiate_us.map_or("-".into(), |us| format!("{us:.1}"))
                );
            }
            s.push('\n');
        }
    }

    /// `docs/performance-http.md`: the HTTP-function scenario alone, as
    /// `make bench HTTP_ONLY=1` measures it.
    pub fn http_markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# Performance: HTTP functions\n");
        let _ = writeln!(
            s,
            "Generated by `{}` on {}; do not edit by hand. How the scenario works: \
             [testing.md](testing.md#benchmarks); the other scenarios: \
             [performance.md](performance.md).\n",
            self.command, self.date
        );
        let _ = writeln!(
            s,
            "Machine: {} ({} cores), {:.1} GiB, {}, kernel {}, cgroup {}; {}; {}.\n",
            m.cpu, m.cores, m.memory_gib, m.os, m.kernel, m.cgroup, m.containerd, m.runc
        );
        self.http_table(&mut s);
        for e in &self.errors {
            let _ = writeln!(s, "- error: {e}");
        }
        s
    }

    /// `docs/performance.md`: how to reproduce, the machine, the tables, the chart.
    pub fn markdown(&self, chart: &str) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# Performance\n");
        let _ = writeln!(
            s,
            "Generated by `{}` on {}; do not edit by hand. Raw samples: \
             `target/bench/results.json` of that run. How the scenarios work: \
             [testing.md](testing.md#benchmarks).\n",
            self.command, self.date
        );
        let _ = writeln!(
            s,
            "Machine: {} ({} cores), {:.1} GiB, {}, kernel {}, cgroup {}; {}; {}; {}.\n",
            m.cpu, m.cores, m.memory_gib, m.os, m.kernel, m.cgroup, m.containerd, m.runc, m.docker
        );
        let _ = writeln!(s, "![start latency and memory per container]({chart})\n");
        s.push_str(&self.tables());
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\n### Errors\n");
            for e in &self.errors {
                let _ = writeln!(s, "- {e}");
            }
        }
        s
    }
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(runc: &[f64], ours: &[f64], quick: bool) -> Report {
        Report {
            command: "make bench".into(),
            quick,
            date: "today".into(),
            machine: Machine::detect(),
            cold_start: vec![
                Samples {
                    kind: BASELINE.into(),
                    ms: runc.to_vec(),
                },
                Samples {
                    kind: "wasmtime".into(),
                    ms: ours.to_vec(),
                },
            ],
            cold_start_c: Vec::new(),
            first_byte: Vec::new(),
            memory: vec![
                Memory {
                    kind: BASELINE.into(),
                    containers: 2,
                    processes: 4,
                    pss_bytes: 8 << 20,
                },
                Memory {
                    kind: "wasmtime".into(),
                    containers: 2,
                    processes: 4,
                    pss_bytes: 2 << 20,
                },
            ],
            density: Vec::new(),
            big_module: vec![BigModule {
                kind: "wasmtime".into(),
                module_bytes: 1,
                first_ms: 100.0,
                second_ms: 90.0,
            }],
            docker_run: Vec::new(),
            http: Vec::new(),
            micro: Vec::new(),
            targets: Vec::new(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn verdicts_follow_the_ratios() {
        let mut r = report(&[100.0, 100.0, 100.0], &[60.0, 80.0, 50.0], false);
        r.judge(1000);
        let verdict = |prefix: &str| {
            r.targets
                .iter()
                .find(|t| t.name.starts_with(prefix))
                .map(|t| t.verdict())
                .unwrap()
        };
        assert_eq!(verdict("cold start"), "PASS", "median 60 vs 100");
        assert_eq!(verdict("memory"), "PASS", "0.5 vs 4 MiB");
        assert_eq!(verdict("density"), "SKIP", "not measured");
        assert_eq!(verdict("big module second"), "MISS", "0.9 x first");
        assert_eq!(
            verdict("big module warm"),
            "PASS",
            "90 ms vs hello's 60: 1.5 x"
        );

        let mut slow = report(&[100.0], &[71.0], false);
        slow.judge(1000);
        assert_eq!(slow.targets[0].verdict(), "MISS");
    }

    #[test]
    fn docker_target_is_the_median_ratio() {
        let docker = |ours: &[f64]| {
            vec![
                Samples {
                    kind: BASELINE.into(),
                    ms: vec![200.0, 300.0, 250.0],
                },
                Samples {
                    kind: "wasmshim-oci".into(),
                    ms: ours.to_vec(),
                },
            ]
        };
        let target = |r: &Report| {
            r.targets
                .iter()
                .find(|t| t.name == "docker run --rm hello, wasmshim-oci")
                .cloned()
                .unwrap()
        };
        let mut r = report(&[100.0], &[60.0], false);
        r.docker_run = docker(&[190.0, 200.0, 500.0]);
        r.judge(1000);
        let t = target(&r);
        assert_eq!((t.verdict(), t.measured.as_str()), ("PASS", "0.80 x runc"));
        assert!(r
            .tables()
            .contains("| wasmshim-oci | 3 | 190.0 | 200.0 | 500.0 | 0.80 |"));

        r.docker_run = docker(&[201.0, 210.0, 220.0]);
        r.judge(1000);
        assert_eq!(target(&r).verdict(), "MISS", "median 210 vs 250");

        r.docker_run = docker(&[]);
        r.judge(1000);
        assert_eq!(target(&r).verdict(), "SKIP", "not measured");
        r.docker_run = Vec::new();
        r.judge(1000);
        assert_eq!(target(&r).measured, "not measured", "dockerd did not start");

        let mut quick = report(&[100.0], &[60.0], true);
        quick.docker_run = docker(&[10.0]);
        quick.judge(1000);
        assert_eq!(target(&quick).verdict(), "SKIP");
    }

    #[test]
    fn quick_runs_judge_nothing() {
        let mut r = report(&[100.0], &[10.0], true);
        r.judge(1000);
        assert!(r.targets.iter().all(|t| t.verdict() == "SKIP"));
        assert!(r
            .tables()
            .contains("| SKIP | cold start median, wasmtime |"));
    }
}
