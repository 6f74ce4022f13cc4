//! HTTP functions (issue 13): `p2/http_hello.c`, a `wasi:http/proxy`
//! component, is served by the wasmtime shim on 127.0.0.1:8080 of a network
//! namespace the test made, to clients in that namespace: one fresh instance
//! per request, concurrent clients, and a SIGTERM that loses no request the
//! server took.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use wasmshim_integration::http::{self, Exchange, Reply};
use wasmshim_integration::text;

use super::{components, expect_error, host_dir, wait_with_deadline, Env};

/// Where the function serves, in its namespace.
const ADDR: &str = "127.0.0.1:8080";

/// The HTTP function's image.
fn image() -> String {
    components::image("p2-http_hello")
}

/// The answer `http_hello.c` gives a GET of `path`.
fn hello_ok(path: &str, reply: &Reply) -> bool {
    reply.status == 200 && reply.body == format!("hello from wasm: GET {path} 0 bytes\n")
}

/// A function serving in its own network namespace through `ctr run`.
struct Serving {
    run: Child,
    ns_file: PathBuf,
    stderr: std::thread::JoinHandle<String>,
    addr: SocketAddr,
}

impl Serving {
    /// Starts the function as container `id` and waits until it listens.
    fn start(env: &Env, rt: &str, id: &str) -> anyhow::Result<Serving> {
        let ns_file = host_dir(env, id)?.join("netns");
        http::make_netns(&ns_file)?;
        let fifo = env.containerd.fifo_dir();
        let with = format!("network:{}", ns_file.display());
        let listen = format!("WASMTIME_HTTP_PROXY_SOCKET_ADDR={ADDR}");
        let mut run = env
            .containerd
            .ctr_command(&[
                "run",
                "--rm",
                "--fifo-dir",
                fifo.to_str().unwrap(),
                "--runtime",
                rt,
                "--with-ns",
                &with,
                "--env",
                &listen,
                &image(),
                id,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut err = run.stderr.take().context("ctr's stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        let addr = ADDR.parse()?;
        let serving = Serving {
            run,
            ns_file,
            stderr,
            addr,
        };
        if let Err(e) = http::wait_listening(&serving.ns_file, addr, Duration::from_secs(30)) {
            let (status, stderr) = serving.end(env, id)?;
            anyhow::bail!("{e:#}; ctr ended with {status}, stderr {stderr:?}");
        }
        Ok(serving)
    }

    /// Sends SIGTERM to the function and waits for `ctr run` to return its
    /// status and the container's stderr.
    fn stop(self, env: &Env, id: &str) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let out = env.containerd.ctr(&["task", "kill", "-s", "SIGTERM", id]);
        ensure!(out.status.success(), "ctr task kill: {:?}", text(&out));
        self.end(env, id)
    }

    fn end(self, env: &Env, id: &str) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let result = wait_with_deadline(self.run, Duration::from_secs(30));
        if result.is_err() {
            let _ = env.containerd.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        }
        http::remove_netns(&self.ns_file);
        let out = result?;
        let stderr = self.stderr.join().unwrap_or_default();
        Ok((out.status, stderr))
    }
}

/// 1,008 GETs from 16 concurrent clients and a 100 KB POST are each
/// answered by a fresh instance, correctly; SIGTERM then stops the function
/// with status 0 and a count of the requests it answered.
pub fn answers_concurrent_clients(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let serving = Serving::start(env, rt, id)?;
    let report = http::load(
        &serving.ns_file,
        serving.addr,
        16,
        63,
        false,
        Arc::new(AtomicU64::new(0)),
        hello_ok,
    );
    let upload = http::in_netns(&serving.ns_file, {
        let addr = serving.addr;
        move || http::exchange(addr, "POST", "/upload?x=1", &vec![b'x'; 100_000])
    })?
    .join();
    let (status, stderr) = serving.stop(env, id)?;
    let report = report?;
    ensure!(
        report.failures.is_empty(),
        "{} of 1008 requests failed, first: {:?} (stderr {stderr:?})",
        report.failures.len(),
        report.failures.first()
    );
    ensure!(report.answered() == 1008, "{report:?}");
    match upload {
        Ok(Exchange::Answered(reply)) => ensure!(
            reply.status == 200 && reply.body == "hello from wasm: POST /upload?x=1 100000 bytes\n",
            "the POST got {reply:?}"
        ),
        other => anyhow::bail!("the POST ended as {other:?}"),
    }
    ensure!(
        status.success(),
        "SIGTERM ended the function with {status} ({stderr:?})"
    );
    let summary =
        "stopped on SIGTERM: 1009 requests answered, 0 connections closed with no request";
    ensure!(
        stderr.contains(summary),
        "stderr does not say {summary:?}: {stderr:?}"
    );
    Ok(())
}

/// SIGTERM while 16 clients keep sending: every request the function took
/// is answered in full (the clients' count equals the function's), later
/// connections are refused (within 5 s of the signal), a request in
/// progress (its body not yet sent) still gets its answer, and the
/// function exits 0.
pub fn sigterm_during_load_loses_no_request(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let serving = Serving::start(env, rt, id)?;
    let (ns_file, addr) = (serving.ns_file.clone(), serving.addr);
    let answered = Arc::new(AtomicU64::new(0));
    let load = std::thread::spawn({
        let (ns_file, answered) = (ns_file.clone(), answered.clone());
        move || http::load(&ns_file, addr, 16, 1_000_000, true, answered, hello_ok)
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::Relaxed) < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let slow = http::in_netns(&ns_file, move || http::begin(addr, "/slow", 5))?
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    // Let the function read the request's head and start its instance.
    std::thread::sleep(Duration::from_millis(200));
    let out = env.containerd.ctr(&["task", "kill", "-s", "SIGTERM", id]);
    ensure!(out.status.success(), "ctr task kill: {:?}", text(&out));
    // The signal reaches the function asynchronously, on a loaded machine
    // after a while: within 5 s a new connection must be refused. A try
    // answered before is a request the function took, counted below.
    let refuse_by = Instant::now() + Duration::from_secs(5);
    let mut answered_late = 0;
    let late = loop {
        std::thread::sleep(Duration::from_millis(300));
        let late = http::in_netns(&ns_file, move || http::exchange(addr, "GET", "/late", b""))?
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
        match late {
            Exchange::Answered(_) if Instant::now() < refuse_by => answered_late += 1,
            other => break other,
        }
    };
    let slow_reply = http::finish(slow, b"12345");
    let report = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let (status, stderr) = serving.end(env, id)?;

    ensure!(
        matches!(late, Exchange::NotTaken(_)),
        "a connection after SIGTERM was not refused: {late:?}"
    );
    let slow_reply = slow_reply.context("the request in progress at SIGTERM")?;
    ensure!(
        slow_reply.status == 200 && slow_reply.body == "hello from wasm: POST /slow 5 bytes\n",
        "the request in progress at SIGTERM got {slow_reply:?}"
    );
    ensure!(
        report.failures.is_empty(),
        "{} requests failed around SIGTERM, first: {:?}",
        report.failures.len(),
        report.failures.first()
    );
    ensure!(report.answered() >= 300, "{report:?}");
    ensure!(
        status.success(),
        "SIGTERM ended the function with {status} ({stderr:?})"
    );
    let summary = format!(
        "stopped on SIGTERM: {} requests answered, 0 connections closed with no request",
        report.answered() + 1 + answered_late
    );
    ensure!(
        stderr.contains(&summary),
        "stderr does not say {summary:?}: {stderr:?}"
    );
    Ok(())
}

/// An address that does not parse fails `ctr run`, naming the variable.
pub fn bad_address_is_refused(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env.containerd.run(
        Some(rt),
        &[
            "--env",
            "WASMTIME_HTTP_PROXY_SOCKET_ADDR=localhost",
            &image(),
            id,
        ],
    );
    expect_error(
        &out,
        "WASMTIME_HTTP_PROXY_SOCKET_ADDR=\"localhost\" is not an address",
    )
}
