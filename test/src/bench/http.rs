//! The HTTP-function scenario of `make bench`: the hello handler
//! (`test/wasm/p2/http_hello.c`, a `wasi:http/proxy` component, one fresh
//! instance per request) against busybox's static `httpd` serving one small
//! file in a runc container, each in a network namespace of its own, loaded
//! by 16 concurrent clients there (one connection per request).

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use serde::Serialize;

use crate::http::{self, Reply};
use crate::{text, Containerd};

/// Where both servers listen, inside their namespaces.
pub const ADDR: &str = "127.0.0.1:8080";
/// Concurrent clients.
pub const CLIENTS: usize = 16;

/// A server to load: what runs it and how its answers look.
#[derive(Debug, Clone)]
pub struct Server {
    /// Label in tables: `runc+busybox` or the engine.
    pub label: String,
    /// `--runtime` for ctr; `None` is runc.
    pub runtime: Option<String>,
    /// Image, then the args after the container id.
    pub image: String,
    /// Args after the container id.
    pub args: Vec<String>,
    /// `--env` values.
    pub env: Vec<String>,
    /// Whether a reply is the right answer to a path.
    pub check: fn(&str, &Reply) -> bool,
    /// The signal that stops it: SIGTERM for ours (it then reports its
    /// instantiation time), SIGKILL for busybox (pid 1 ignores SIGTERM).
    pub stop_signal: &'static str,
}

/// What one kind achieved.
#[derive(Debug, Clone, Serialize)]
pub struct HttpLoad {
    /// Label of the kind.
    pub kind: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests sent.
    pub requests: usize,
    /// Requests answered correctly.
    pub answered: usize,
    /// Wrong, broken or refused answers.
    pub failures: usize,
    /// Answered requests per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Mean time to instantiate the component per request, µs, as the
    /// function reported it on SIGTERM (ours only).
    pub instantiate_us: Option<f64>,
}

/// busybox `httpd` serving `index.html`, whose text is [`busybox_ok`]'s.
pub fn busybox(image: &str) -> Server {
    Server {
        label: super::report::BASELINE.into(),
        runtime: None,
        image: image.into(),
        args: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "/bin/busybox mkdir -p /tmp/www && echo 'hello from busybox' > /tmp/www/index.html \
                 && exec /bin/busybox httpd -f -p {ADDR} -h /tmp/www"
            ),
        ],
        env: Vec::new(),
        check: busybox_ok,
        stop_signal: "SIGKILL",
    }
}

fn busybox_ok(_path: &str, reply: &Reply) -> bool {
    reply.status == 200 && reply.body == "hello from busybox\n"
}

/// The hello handler of `http_hello.c`.
pub fn hello_ok(path: &str, reply: &Reply) -> bool {
    reply.status == 200 && reply.body == format!("hello from wasm: GET {path} 0 bytes\n")
}

/// Runs `server` as container `id` in a network namespace made under `dir`,
/// sends 100 untimed requests, then `per_client` from each of [`CLIENTS`]
/// clients, and stops it.
pub fn load(
    cd: &Containerd,
    server: &Server,
    id: &str,
    dir: &Path,
    per_client: usize,
) -> anyhow::Result<HttpLoad> {
    let ns_file = dir.join(format!("{id}.netns"));
    http::make_netns(&ns_file)?;
    let result = load_in(cd, server, id, &ns_file, per_client);
    http::remove_netns(&ns_file);
    result
}

fn load_in(
    cd: &Containerd,
    server: &Server,
    id: &str,
    ns_file: &Path,
    per_client: usize,
) -> anyhow::Result<HttpLoad> {
    let fifo = cd.fifo_dir();
    let with = format!("network:{}", ns_file.display());
    let mut args = vec![
        "run",
        "--rm",
        "--fifo-dir",
        fifo.to_str().context("fifo dir")?,
        "--with-ns",
        &with,
    ];
    if let Some(runtime) = &server.runtime {
        args.extend(["--runtime", runtime]);
    }
    for env in &server.env {
        args.extend(["--env", env]);
    }
    args.extend([server.image.as_str(), id]);
    args.extend(server.args.iter().map(String::as_str));
    let mut run = cd
        .ctr_command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut err = run.stderr.take().context("ctr's stderr")?;
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let addr = ADDR.parse()?;
    let measured = http::wait_listening(ns_file, addr, Duration::from_secs(30)).and_then(|()| {
        let warm = http::load(
            ns_file,
            addr,
            1,
            100,
            false,
            Arc::new(AtomicU64::new(0)),
            server.check,
        )?;
        ensure!(
            warm.failures.is_empty(),
            "warm-up: {:?}",
            warm.failures.first()
        );
        http::load(
            ns_file,
            addr,
            CLIENTS,
            per_client,
            false,
            Arc::new(AtomicU64::new(0)),
            server.check,
        )
    });
    let killed = cd.ctr(&["task", "kill", "-s", server.stop_signal, id]);
    let status = run.wait()?;
    let stderr = stderr.join().unwrap_or_default();
    let report = measured.with_context(|| format!("{}: stderr {stderr:?}", server.label))?;
    ensure!(
        killed.status.success(),
        "ctr task kill: {:?}",
        text(&killed)
    );
    if server.stop_signal == "SIGTERM" {
        ensure!(
            status.success(),
            "{} ended with {status}: {stderr:?}",
            server.label
        );
    }
    Ok(HttpLoad {
        kind: server.label.clone(),
        clients: CLIENTS,
        requests: CLIENTS * per_client,
        answered: report.answered(),
        failures: report.failures.len(),
        per_second: report.per_second(),
        p50_ms: report.quantile(0.5).as_secs_f64() * 1e3,
        p99_ms: report.quantile(0.99).as_secs_f64() * 1e3,
        instantiate_us: instantiation_us(&stderr),
    })
}

/// The mean instantiation time the function printed on SIGTERM
/// (`instantiation: mean 123.4 µs over N requests`).
fn instantiation_us(stderr: &str) -> Option<f64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("instantiation: mean "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
}
