//! Wasm modules on sockets (issue 13), inside a network namespace the test
//! makes, on loopback addresses only: WasmEdge's socket functions serve, and
//! an engine without them refuses the module naming the missing import; on
//! wasmtime, a WASI preview 1 module serves on the listener the shim binds
//! for it (`WASMSHIM_TCP_LISTEN`), and bad declarations fail Create.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context};
use wasmshim_integration::text;

use super::{expect_error, host_dir, image, wait_with_deadline, Env};

/// The port the echo server listens on, at 127.0.0.1 of its namespace.
const PORT: &str = "7072";

/// `echo_server.wasm` (WasmEdge's sock_bind/listen/accept) runs in a network
/// namespace the test made (`ctr run --with-ns network:…`, only `lo` up): a
/// client in that namespace gets back exactly what it sent, and the module
/// then reports the byte count and exits 0.
pub fn echo_server(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    echo_in_new_namespace(env, rt, id, &image("echo_server"), "/echo_server.wasm")
}

/// Runs the echo server `module` of `image_name` (argv: the port; prints
/// "listening on PORT", echoes one client, prints "echoed N bytes", exits 0)
/// in a network namespace made for it, and checks it with one client there.
pub fn echo_in_new_namespace(
    env: &Env,
    rt: &str,
    id: &str,
    image_name: &str,
    module: &str,
) -> anyhow::Result<()> {
    let server = Server {
        options: &[],
        image_name,
        argv: &[module, PORT],
        ready: format!("listening on {PORT}"),
    };
    in_new_namespace(env, id, |ns_file| {
        serve_one_client(env, rt, id, ns_file, &server)
    })
}

/// `p1_echo.wasm` (plain WASI preview 1: accept, recv and write on the
/// listener the wasmtime shim binds for `WASMSHIM_TCP_LISTEN` and names in
/// `WASMSHIM_LISTEN_FDS`) answers a client in a network namespace the test
/// made, like [`echo_server`].
pub fn p1_listener_echo(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let declared = format!("WASMSHIM_TCP_LISTEN=127.0.0.1:{PORT}");
    let server = Server {
        options: &["--env", &declared],
        image_name: &image("p1_echo"),
        argv: &["/p1_echo.wasm"],
        // The first listener is the first socket descriptor, 2^30.
        ready: "accepting on fd 1073741824".into(),
    };
    in_new_namespace(env, id, |ns_file| {
        serve_one_client(env, rt, id, ns_file, &server)
    })
}

/// Listeners that cannot be had fail Create, naming the declaration: an
/// address that does not parse, one that is declared twice (so in use when
/// it is bound the second time), and any declaration on an engine that does
/// not hand listeners in (`also_refused`: WasmEdge).
pub fn p1_listener_bad_declarations(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let run = |ns_file: &Path, declared: &str| {
        let with = format!("network:{}", ns_file.display());
        let declared = format!("WASMSHIM_TCP_LISTEN={declared}");
        env.containerd.run(
            Some(rt),
            &[
                "--with-ns",
                &with,
                "--env",
                &declared,
                &image("p1_echo"),
                id,
                "/p1_echo.wasm",
            ],
        )
    };
    in_new_namespace(env, id, |ns_file| {
        if rt.contains("wasmedge") {
            let out = run(ns_file, &format!("127.0.0.1:{PORT}"));
            return expect_error(&out, "WASMSHIM_TCP_LISTEN declares listening sockets");
        }
        let out = run(ns_file, &format!("localhost:{PORT}"));
        expect_error(
            &out,
            &format!("WASMSHIM_TCP_LISTEN: 'localhost:{PORT}' is not an address"),
        )?;
        let out = run(ns_file, &format!("127.0.0.1:{PORT},127.0.0.1:{PORT}"));
        expect_error(
            &out,
            &format!("WASMSHIM_TCP_LISTEN: cannot listen on 127.0.0.1:{PORT}"),
        )?;
        expect_error(&out, "in use")
    })
}

/// Makes a network namespace (bound at a file of the case's host dir, only
/// `lo` up), runs `case` with that file, and removes the namespace.
fn in_new_namespace(
    env: &Env,
    id: &str,
    case: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let ns_file = host_dir(env, id)?.join("netns");
    wasmshim_integration::http::make_netns(&ns_file)?;
    let result = case(&ns_file);
    wasmshim_integration::http::remove_netns(&ns_file);
    result
}

/// An echo server container: `ctr run` options, image, argv, and the first
/// line it prints once a client may connect.
struct Server<'a> {
    options: &'a [&'a str],
    image_name: &'a str,
    argv: &'a [&'a str],
    ready: String,
}

fn serve_one_client(
    env: &Env,
    rt: &str,
    id: &str,
    ns_file: &Path,
    server: &Server,
) -> anyhow::Result<()> {
    let fifo = env.containerd.fifo_dir();
    let with = format!("network:{}", ns_file.display());
    let mut args = vec![
        "run",
        "--rm",
        "--fifo-dir",
        fifo.to_str().unwrap(),
        "--runtime",
        rt,
        "--with-ns",
        &with,
    ];
    args.extend(server.options);
    args.extend([server.image_name, id]);
    args.extend(server.argv);
    let mut run = env
        .containerd
        .ctr_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(run.stdout.take().context("ctr's stdout")?);
    let mut first = String::new();
    stdout.read_line(&mut first)?;
    if first.trim() != server.ready {
        // A server that failed exits by itself: let `ctr run --rm` remove it.
        let out = wait_with_deadline(run, Duration::from_secs(20))?;
        anyhow::bail!(
            "the server printed {first:?} instead of {:?}: {:?}",
            server.ready,
            text(&out)
        );
    }

    let message = b"hello through the container's loopback\n".repeat(100);
    let echoed = client_in_namespace(ns_file, &message);
    // ctr returns once the module has exited (it does after this client).
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    let out = wait_with_deadline(run, Duration::from_secs(20))?;
    let echoed = echoed?;
    ensure!(
        echoed == message,
        "the client got {} bytes back, not its {} bytes",
        echoed.len(),
        message.len()
    );
    ensure!(
        out.status.success() && rest.trim() == format!("echoed {} bytes", message.len()),
        "the server ended with {} after printing {rest:?} (stderr {:?})",
        out.status,
        text(&out).1
    );
    Ok(())
}

/// Connects to 127.0.0.1:[`PORT`] of the namespace at `ns_file` from a thread
/// that entered it, sends `message`, closes its sending side and returns what
/// came back.
fn client_in_namespace(ns_file: &Path, message: &[u8]) -> anyhow::Result<Vec<u8>> {
    let ns = std::fs::File::open(ns_file)?;
    let message = message.to_vec();
    std::thread::spawn(move || {
        // setns changes only this thread's network namespace.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("setns into the server's network namespace")?;
        let mut stream = TcpStream::connect(format!("127.0.0.1:{PORT}"))
            .context("connecting to the echo server")?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(&message)?;
        stream.shutdown(Shutdown::Write)?;
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed)?;
        Ok(echoed)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
}

/// The same module on an engine without WasmEdge's socket functions fails
/// to start, and the error names the import it lacks.
pub fn socket_module_is_refused(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env.containerd.run(
        Some(rt),
        &[&image("echo_server"), id, "/echo_server.wasm", PORT],
    );
    expect_error(&out, "sock_open")
}
