//! [`Template`]: a warm, single-threaded copy of the shim that forks one
//! worker per container.
//!
//! Exec'ing the shim binary for every worker costs each container its own
//! copy of everything the dynamic loader relocates (the binary's
//! `.data.rel.ro`, and for WasmEdge libwasmedge and libLLVM: tens of MiB),
//! besides the time to map and relocate it. Instead, the shim forks a
//! *template* at its very start, while it still has one thread and has
//! touched nothing; the template forks a worker for each Create. Every page
//! the worker does not write stays shared with the template and the shim.
//!
//! ```text
//! shim ──(SOCK_SEQPACKET: "<level> <id>" + fds stdin, stdout, stderr, control)──▶ template
//! shim ◀──────────────────────────("ok <pid>" | "err <message>")──────────────── template
//! ```
//!
//! The template forks twice (template → intermediate → worker) and reaps the
//! intermediate before it replies, so by then the worker has been reparented
//! to the shim (containerd-shim makes the shim a child subreaper): the shim
//! is the worker's parent, opens its pidfd, waits for it and receives its
//! `SIGCHLD`, exactly as for a worker it spawned itself. The worker then
//! continues as [`super::worker::main`], with the same fds 0-3, environment
//! and command line (`<shim> __wasmshim_worker <id>`) an exec'd worker has.
//!
//! The template never runs a module, opens no container file and starts no
//! thread. It ends with the shim (parent-death signal, and end-of-file on its
//! socket). If it is gone, the shim falls back to exec'ing workers.
//!
//! A front binary's server (see [`crate::front`]) has no engine to fork:
//! it *spawns* its template from the engine binary instead
//! ([`spawn_template`]), which loads the engine while the shim serves
//! containerd. Everything else is the same.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::unistd::{fork, getppid, ForkResult, Pid};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::worker::{CONTROL_FD, LOG_LEVEL_ENV, WORKER_ARG};
use crate::engine::Engine;

/// The descriptors a worker gets, in the order they become its fds 0-3.
pub struct WorkerFds<'a> {
    /// The container's stdin, stdout and stderr.
    pub stdio: [BorrowedFd<'a>; 3],
    /// The worker's end of its control socket (its fd [`CONTROL_FD`]).
    pub control: BorrowedFd<'a>,
}

/// The shim's handle on its template process.
pub struct Template {
    /// The template's pid (a child of the shim), reaped if it fails.
    pid: Pid,
    /// The shim's end of the socket; wrapped for tokio on first use (the
    /// template is forked before the runtime exists).
    socket: Mutex<Option<OwnedFd>>,
    /// The same socket, registered with the runtime; one request at a time.
    registered: tokio::sync::Mutex<Option<AsyncFd<OwnedFd>>>,
}

static TEMPLATE: OnceLock<Template> = OnceLock::new();

/// The argument a spawned template runs with: `<engine binary>
/// __wasmshim_template <shim pid> <the shim's arguments>`; also its title
/// once forked.
pub const TEMPLATE_ARG: &str = "__wasmshim_template";

/// The template this shim forked at its start, if it did and it still answers.
pub fn installed() -> Option<&'static Template> {
    TEMPLATE.get()
}

/// Forks the template of this shim process. Call it first thing in `main`,
/// while the process has a single thread, and only in the process that
/// serves containerd (not for `start`, `delete` or a worker). On failure
/// the shim runs without a template: workers are exec'd.
pub fn fork_template(engine: &dyn Engine) {
    let Some((ours, theirs)) = socket_pair() else {
        return;
    };
    let shim = nix::unistd::getpid();
    // SAFETY: the process has one thread (this is called before any runtime
    // or thread is started), so the child may run any code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(ours);
            // What the loader touched is the shim's: the template holds none of it.
            serve(theirs, shim, engine, StartupCode::Released)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(theirs);
            install(child, ours);
        }
        Err(_) => {}
    }
}

/// The shim's and the template's ends of the socket between them.
fn socket_pair() -> Option<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ok()
}

/// Records the template `pid`, whose socket's other end is `ours`.
fn install(pid: Pid, ours: OwnedFd) {
    let _ = TEMPLATE.set(Template {
        pid,
        socket: Mutex::new(Some(ours)),
        registered: tokio::sync::Mutex::new(None),
    });
}

/// Starts the template of this shim process from `binary`, the engine
/// binary of a front binary (see [`crate::front`]), with its end of the
/// socket as fd [`CONTROL_FD`]; called where [`fork_template`] would be.
/// The template loads the engine while the shim goes on. On failure (no
/// such binary) the shim runs without a template: workers are exec'd, and
/// their failure names the binary.
pub fn spawn_template(binary: &Path) {
    let Some((ours, theirs)) = socket_pair() else {
        return;
    };
    let theirs_raw = theirs.as_raw_fd();
    let mut command = std::process::Command::new(binary);
    command
        .arg0(exe_name())
        .arg(TEMPLATE_ARG)
        .arg(nix::unistd::getpid().to_string())
        // The shim's own arguments after these: the workers' command lines
        // are written over the template's (see `set_title`), which must be
        // as long as a forked template's.
        .args(std::env::args_os().skip(1))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .current_dir("/");
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only async-signal-safe calls (dup2, fcntl, prctl, close_range).
    unsafe {
        command.pre_exec(move || {
            let placed = if theirs_raw == CONTROL_FD {
                libc::fcntl(CONTROL_FD, libc::F_SETFD, 0)
            } else {
                libc::dup2(theirs_raw, CONTROL_FD)
            };
            if placed < 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing else of the shim's reaches the template.
            libc::close_range(
                (CONTROL_FD + 1) as u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            );
            Ok(())
        });
    }
    if let Ok(child) = command.spawn() {
        install(Pid::from_raw(child.id() as i32), ours);
    }
}

/// The shim's pid, when this process is a template the shim spawned
/// ([`spawn_template`]).
pub fn spawned_by() -> Option<Pid> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != TEMPLATE_ARG {
        return None;
    }
    let pid = args.next()?.to_str()?.parse().ok()?;
    Some(Pid::from_raw(pid))
}

/// The main of a spawned template: serves `shim` on fd [`CONTROL_FD`]
/// until the shim goes away.
pub fn serve_spawned(shim: Pid, engine: &dyn Engine) -> ! {
    // SAFETY: fd 3 is the template's end of the socket, placed there by
    // `spawn_template`; nothing else in this process owns it. (Anything
    // else there fails the first recvmsg, and the template exits.)
    let socket = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    serve(socket, shim, engine, StartupCode::Held)
}

/// Whether the template still maps the code its start touched, which
/// [`super::code_pages::release_startup_code`] drops.
#[derive(Clone, Copy, PartialEq)]
enum StartupCode {
    /// Dropped already (a forked template never had it).
    Released,
    /// Held (a spawned template, whose loader ran the engine's
    /// constructors): dropped once the first worker is forked and no
    /// request waits. Reading `/proc/self/smaps` and dropping 36 MiB of
    /// libLLVM takes 10 ms, which the first container would wait for.
    Held,
}

/// Whether a request waits on the template's `socket` (or it is closed).
fn request_waits(socket: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    !matches!(
        nix::sys::socket::recv(
            socket.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ),
        Err(nix::errno::Errno::EAGAIN)
    )
}

impl Template {
    /// Asks the template for a worker of container `id` with `fds` as its
    /// fds 0-3: the pid of the new worker, now a child of this process
    /// (waiting for its first line on the control socket). An error means
    /// the template is gone; the caller then spawns the worker itself.
    pub async fn fork_worker(&self, id: &str, fds: &WorkerFds<'_>) -> std::io::Result<u32> {
        let mut registered = self.registered.lock().await;
        if registered.is_none() {
            let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(socket) = socket else {
                return Err(std::io::Error::other("the template process is gone"));
            };
            nix::fcntl::fcntl(
                socket.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )?;
            // SAFETY: the AsyncFd owns the descriptor; nothing else closes
            // or replaces it while it is registered.
            *registered = Some(unsafe {
                AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::WRITABLE)?
            });
        }
        let socket = registered.as_ref().expect("registered above");
        let result = request(socket, id, fds).await;
        if result.is_err() {
            // A template that failed once is not asked again; if it died,
            // reap it (nothing else waits for it).
            *registered = None;
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
        result
    }
}

/// One request and its reply over the registered socket.
async fn request(socket: &AsyncFd<OwnedFd>, id: &str, fds: &WorkerFds<'_>) -> std::io::Result<u32> {
    let message = format!("{} {id}", log::max_level());
    let raw: [RawFd; 4] = [
        fds.stdio[0].as_raw_fd(),
        fds.stdio[1].as_raw_fd(),
        fds.stdio[2].as_raw_fd(),
        fds.control.as_raw_fd(),
    ];
    loop {
        let mut guard = socket.writable().await?;
        let sent = guard.try_io(|fd| {
            sendmsg::<()>(
                fd.as_raw_fd(),
                &[IoSlice::new(message.as_bytes())],
                &[ControlMessage::ScmRights(&raw)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(result) => {
                result?;
                break;
            }
            Err(_would_block) => continue,
        }
    }
    let mut reply = [0u8; 4096];
    let n = loop {
        let mut guard = socket.readable().await?;
        match guard.try_io(|fd| {
            nix::sys::socket::recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty())
                .map_err(std::io::Error::from)
        }) {
            Ok(result) => break result?,
            Err(_would_block) => continue,
        }
    };
    let reply = String::from_utf8_lossy(&reply[..n]);
    match reply.split_once(' ') {
        Some(("ok", pid)) => pid
            .parse()
            .map_err(|_| std::io::Error::other(format!("template replied {reply:?}"))),
        Some(("err", message)) => Err(std::io::Error::other(message.to_string())),
        _ if n == 0 => Err(std::io::Error::other("the template process is gone")),
        _ => Err(std::io::Error::other(format!("template replied {reply:?}"))),
    }
}

/// The template's loop: one worker per request, until the shim goes away.
fn serve(socket: OwnedFd, shim: Pid, engine: &dyn Engine, mut startup_code: StartupCode) -> ! {
    // The template dies with the shim (its main thread forked us), and exits
    // at end-of-file on its socket.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != shim {
        // SAFETY: _exit ends this process at once; nothing to clean up.
        unsafe { libc::_exit(1) };
    }
    let Ok(socket) = keep_only(socket) else {
        // SAFETY: as above.
        unsafe { libc::_exit(1) };
    };
    let exe = exe_name();
    set_title(&format!("{exe} {TEMPLATE_ARG}"));
    loop {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let received = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let (len, fds) = match received {
            Err(nix::errno::Errno::EINTR) => continue,
            // SAFETY: _exit ends the template at once: its socket failed.
            Err(_) => unsafe { libc::_exit(1) },
            Ok(msg) => {
                let mut fds = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(received) = c {
                            // SAFETY: SCM_RIGHTS gave this process new
                            // descriptors that nothing else owns.
                            fds.extend(
                                received
                                    .into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                }
                (msg.bytes, fds)
            }
        };
        if len == 0 {
            // The shim closed its end: it is exiting.
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        let reply = match (text.split_once(' '), <[OwnedFd; 4]>::try_from(fds)) {
            (Some((level, id)), Ok(fds)) => {
                let worker = Worker {
                    exe: &exe,
                    level,
                    id,
                };
                match fork_worker(socket.as_raw_fd(), shim, &worker, fds, engine) {
                    Ok(pid) => format!("ok {pid}"),
                    Err(e) => format!("err forking a worker: {e}"),
                }
            }
            _ => format!("err malformed request {text:?}"),
        };
        let _ =
            nix::sys::socket::send(socket.as_raw_fd(), reply.as_bytes(), MsgFlags::MSG_NOSIGNAL);
        if startup_code == StartupCode::Held && !request_waits(&socket) {
            super::code_pages::release_startup_code();
            startup_code = StartupCode::Released;
        }
    }
}

/// Lets go of every descriptor the template inherited from the shim but
/// `socket`, which becomes fd 3; fds 0-2 become `/dev/null`. The shim's
/// stdout is the pipe `start` reads until end-of-file: a template holding
/// it would keep `ctr run` waiting forever.
fn keep_only(socket: OwnedFd) -> nix::Result<OwnedFd> {
    let high = nix::fcntl::fcntl(
        socket.as_raw_fd(),
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(CONTROL_FD + 1),
    )?;
    drop(socket);
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )?;
    for fd in 0..3 {
        nix::unistd::dup2(null, fd)?;
    }
    nix::unistd::dup2(high, CONTROL_FD)?;
    // Not the bundle the shim started in, which may be deleted long before.
    let _ = std::env::set_current_dir("/");
    // SAFETY: close_range takes no pointers; the template owns every
    // descriptor above 3 (copies of the shim's) and uses none of them.
    unsafe { libc::close_range((CONTROL_FD + 1) as u32, u32::MAX, 0) };
    // SAFETY: fd 3 was just made a copy of the socket, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(CONTROL_FD) })
}

/// What a forked worker is told: its binary's path (for its command line),
/// the shim's log level and the container id.
struct Worker<'a> {
    exe: &'a str,
    level: &'a str,
    id: &'a str,
}

/// Forks the worker through an intermediate process that exits at once, and
/// reaps that intermediate: the worker is then the shim's child. Returns
/// the worker's pid.
fn fork_worker(
    socket: RawFd,
    shim: Pid,
    worker: &Worker<'_>,
    fds: [OwnedFd; 4],
    engine: &dyn Engine,
) -> nix::Result<i32> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the template has one thread.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(read);
            // Known before the fork: the worker cannot ask getppid() for it,
            // as this process may be gone by the time it asks.
            let intermediate = nix::unistd::getpid();
            // SAFETY: the intermediate has one thread.
            let code = match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    drop(write);
                    become_worker(socket, shim, intermediate, worker, fds, engine)
                }
                Ok(ForkResult::Parent { child }) => {
                    let pid = child.as_raw().to_ne_bytes();
                    if nix::unistd::write(&write, &pid) == Ok(pid.len()) {
                        0
                    } else {
                        1
                    }
                }
                Err(_) => 1,
            };
            // SAFETY: _exit ends the intermediate without running anything
            // of the template's (no destructors, no atexit handlers).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write);
            drop(fds);
            let mut pid = [0u8; 4];
            let read_result = read_exact(&read, &mut pid);
            // Reaping the intermediate completes the worker's reparenting.
            while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
            read_result?;
            Ok(i32::from_ne_bytes(pid))
        }
    }
}

fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[done..]) {
            Ok(0) => return Err(nix::errno::Errno::EPIPE),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The worker's side of the fork: waits until it is the shim's child, takes
/// the worker's fds, environment and command line, and runs the worker.
fn become_worker(
    socket: RawFd,
    shim: Pid,
    intermediate: Pid,
    worker: &Worker<'_>,
    fds: [OwnedFd; 4],
    engine: &dyn Engine,
) -> ! {
    // SAFETY: closing the template's socket, which this process inherited
    // and never uses (a worker must not be able to ask for workers).
    unsafe { libc::close(socket) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while getppid() == intermediate && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(50));
    }
    // Set only now: the intermediate's exit would have fired it.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != shim {
        // SAFETY: _exit ends this process at once.
        unsafe { libc::_exit(1) };
    }
    if install_fds(fds).is_err() {
        // SAFETY: as above.
        unsafe { libc::_exit(1) };
    }
    worker_environment(worker.level);
    set_title(&format!("{} {WORKER_ARG} {}", worker.exe, worker.id));
    super::worker::main(engine)
}

/// Makes `fds` the process's fds 0-3 and closes every other descriptor.
fn install_fds(fds: [OwnedFd; 4]) -> nix::Result<()> {
    // First above 3, so that no dup2 below overwrites one still to be moved.
    let mut high = Vec::with_capacity(4);
    for fd in &fds {
        let dup = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(CONTROL_FD + 1),
        )?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor owned by no one else.
        high.push(unsafe { OwnedFd::from_raw_fd(dup) });
    }
    drop(fds);
    for (target, fd) in high.iter().enumerate() {
        nix::unistd::dup2(fd.as_raw_fd(), target as RawFd)?;
    }
    drop(high);
    // SAFETY: close_range takes no pointers; nothing in this process uses a
    // descriptor above 3 (the worker opens its own later).
    unsafe { libc::close_range((CONTROL_FD + 1) as u32, u32::MAX, 0) };
    Ok(())
}

/// The environment an exec'd worker would get: only the log level and the
/// module cache's settings, as the shim has them.
fn worker_environment(level: &str) {
    let kept: Vec<(&str, std::ffi::OsString)> = crate::engine::cache::ENV_VARS
        .iter()
        .filter_map(|k| Some((*k, std::env::var_os(k)?)))
        .collect();
    let all: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    // The process has one thread: changing the environment races with nothing.
    for key in all {
        std::env::remove_var(key);
    }
    for (key, value) in kept {
        std::env::set_var(key, value);
    }
    std::env::set_var(LOG_LEVEL_ENV, level);
}

/// The path of the running binary, as `/proc/<pid>/cmdline` shows argv[0].
fn exe_name() -> String {
    std::env::args().next().unwrap_or_default()
}

/// Rewrites the command line `ps` shows for this process (the argument area
/// of its initial stack), so that a worker reads `<shim> __wasmshim_worker
/// <id>` like an exec'd one. A title longer than the area is cut.
fn set_title(title: &str) {
    let Some((start, end)) = argument_area() else {
        return;
    };
    if end <= start {
        return;
    }
    let len = end - start;
    // SAFETY: [start, end) is this process's argument strings, on its
    // initial stack, mapped read-write for the life of the process. Nothing
    // reads them after this but the kernel (for /proc/<pid>/cmdline) and
    // `std::env::args`, which this process no longer calls.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    area.fill(0);
    // Arguments are NUL-separated; keep the last byte NUL.
    for (slot, byte) in area[..len - 1].iter_mut().zip(title.bytes()) {
        *slot = if byte == b' ' { 0 } else { byte };
    }
}

/// `arg_start` and `arg_end` of this process (fields 48 and 49 of `/proc/self/stat`).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may contain spaces: from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_area_is_found() {
        let (start, end) = argument_area().expect("arg_start/arg_end in /proc/self/stat");
        assert!(end > start, "{start:#x}..{end:#x}");
        // The area holds this process's argv[0].
        // SAFETY: the range is this process's argument strings, mapped for
        // its whole life; the test only reads it.
        let area = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
        let first = area.split(|b| *b == 0).next().unwrap();
        assert_eq!(
            std::str::from_utf8(first).unwrap(),
            std::env::args().next().unwrap()
        );
    }
}
