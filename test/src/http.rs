//! HTTP clients for the HTTP-function tests and benchmark: plain HTTP/1.1
//! over `std::net`, one connection per request (`Connection: close`), from
//! threads that entered a network namespace the test made.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

/// Makes a network namespace bound at `file` with only `lo`, up.
pub fn make_netns(file: &Path) -> anyhow::Result<()> {
    std::fs::write(file, "")?;
    let made = std::process::Command::new("unshare")
        .arg(format!("--net={}", file.display()))
        .args(["ip", "link", "set", "lo", "up"])
        .status()?;
    ensure!(
        made.success(),
        "unshare --net={} ip link set lo up",
        file.display()
    );
    Ok(())
}

/// Unmounts (and so frees) the namespace [`make_netns`] bound at `file`.
pub fn remove_netns(file: &Path) {
    let _ = std::process::Command::new("umount").arg(file).status();
    let _ = std::fs::remove_file(file);
}

/// Runs `f` on a thread that entered the network namespace at `ns_file`.
pub fn in_netns<T: Send + 'static>(
    ns_file: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<T>> {
    let ns = std::fs::File::open(ns_file)?;
    Ok(std::thread::spawn(move || {
        // setns changes only this thread's network namespace.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into the server's network namespace");
        f()
    }))
}

/// A response: its status and its body (chunked transfer decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// How a request ended.
#[derive(Debug)]
pub enum Exchange {
    /// A complete response came back.
    Answered(Reply),
    /// The connection was refused, or closed before a single byte of
    /// response: the server did not take the request.
    NotTaken(std::io::Error),
    /// Anything else: a partial or malformed response, a timeout.
    Broken(anyhow::Error),
}

/// Sends one request (`Connection: close`) with `body` to `addr` and reads
/// the whole response.
pub fn exchange(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Exchange {
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(e) => return Exchange::NotTaken(e),
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .and_then(|()| stream.write_all(head.as_bytes()))
        .and_then(|()| stream.write_all(body));
    let mut raw = Vec::new();
    let read = sent.and_then(|()| stream.read_to_end(&mut raw));
    match read {
        Err(e) if raw.is_empty() => Exchange::NotTaken(e),
        Err(e) => Exchange::Broken(anyhow::anyhow!("{e} after {} bytes of response", raw.len())),
        Ok(0) => Exchange::NotTaken(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => match parse(&raw) {
            Ok(reply) => Exchange::Answered(reply),
            Err(e) => Exchange::Broken(e),
        },
    }
}

/// Sends the head of a request announcing a body of `body_len` bytes, and
/// nothing more: the server is then in the middle of this request until the
/// caller writes the body and reads the answer with [`finish`].
pub fn begin(addr: SocketAddr, path: &str, body_len: usize) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
    )?;
    Ok(stream)
}

/// Writes `body` on a request [`begin`] started and reads its response.
pub fn finish(mut stream: TcpStream, body: &[u8]) -> anyhow::Result<Reply> {
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse(&raw)
}

/// Parses an HTTP/1.1 response read to the end of its connection.
fn parse(raw: &[u8]) -> anyhow::Result<Reply> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).context("headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let mut body = &raw[split + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let end = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("truncated chunk size")?;
            let size_text = std::str::from_utf8(&body[..end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            body = &body[end + 2..];
            if size == 0 {
                break;
            }
            ensure!(body.len() >= size + 2, "truncated chunk");
            out.extend_from_slice(&body[..size]);
            body = &body[size + 2..];
        }
        out
    } else {
        body.to_vec()
    };
    Ok(Reply {
        status,
        body: String::from_utf8(body).context("body is not text")?,
    })
}

/// Waits until something accepts connections on `addr` (from a thread in
/// the namespace at `ns_file`), at most `timeout`.
pub fn wait_listening(ns_file: &Path, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    in_netns(ns_file, move || {
        while Instant::now() < deadline {
            if TcpStream::connect(addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("nothing listened on {addr} within {timeout:?}")
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("the waiting thread panicked"))?
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests answered as expected, with their latencies.
    pub latencies: Vec<Duration>,
    /// Requests the server did not take (refused, or closed unanswered).
    pub not_taken: u64,
    /// Every wrong or broken answer, described.
    pub failures: Vec<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Requests answered as expected.
    pub fn answered(&self) -> usize {
        self.latencies.len()
    }

    /// Answered requests per second.
    pub fn per_second(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q` (0.5 for the median).
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        match sorted.len() {
            0 => Duration::ZERO,
            n => sorted[((n - 1) as f64 * q).round() as usize],
        }
    }
}

/// `clients` threads in the namespace at `ns_file` each send `per_client`
/// requests to `addr` (`GET /?c=<client>&r=<n>`, or with `stop_when_refused`,
/// until the server stops taking them), one connection each; `check` says
/// whether a reply is the right one for its path. Answered requests are
/// counted in `answered` as they come, so that another thread can act on
/// the progress.
pub fn load(
    ns_file: &Path,
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    stop_when_refused: bool,
    answered: Arc<AtomicU64>,
    check: fn(&str, &Reply) -> bool,
) -> anyhow::Result<LoadReport> {
    let start = Instant::now();
    let mut threads = Vec::new();
    for client in 0..clients {
        let answered = answered.clone();
        threads.push(in_netns(ns_file, move || {
            let mut report = LoadReport::default();
            for n in 0..per_client {
                let path = format!("/?c={client}&r={n}");
                let sent = Instant::now();
                match exchange(addr, "GET", &path, b"") {
                    Exchange::Answered(reply) if check(&path, &reply) => {
                        report.latencies.push(sent.elapsed());
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Exchange::Answered(reply) => report
                        .failures
                        .push(format!("{path}: wrong answer {reply:?}")),
                    Exchange::NotTaken(_) if stop_when_refused => {
                        report.not_taken += 1;
                        break;
                    }
                    Exchange::NotTaken(e) => {
                        report.not_taken += 1;
                        report.failures.push(format!("{path}: not taken: {e}"))
                    }
                    Exchange::Broken(e) => report.failures.push(format!("{path}: {e:#}")),
                }
            }
            report
        })?);
    }
    let mut total = LoadReport::default();
    for thread in threads {
        let report = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        total.latencies.extend(report.latencies);
        total.not_taken += report.not_taken;
        total.failures.extend(report.failures);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}
