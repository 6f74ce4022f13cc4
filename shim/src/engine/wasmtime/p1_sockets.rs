//! WASI preview 1 listeners on wasmtime: TCP sockets the worker binds for a
//! container that declares them in [`TCP_LISTEN_ENV`], handed to its module
//! as preopened descriptors (as `wasmtime run --tcplisten` does), for modules
//! that serve with `sock_accept`.
//!
//! Runs in the worker, inside the container's network namespace: the
//! listeners are bound while the module is prepared (at Create, before the
//! worker drops its privileges), so an address that does not parse or cannot
//! be bound fails Create with a message naming it.
//!
//! `wasmtime-wasi`'s preview 1 has no sockets (its `sock_*` functions return
//! ENOTSOCK) and keeps its descriptor table private, so this module keeps its
//! own table of sockets, numbered from [`SOCKET_FD_BASE`], and shadows the
//! preview 1 functions that act on descriptors: on a socket they act on the
//! socket, on any other descriptor they call wasmtime-wasi's own function.
//! wasmtime-wasi numbers its descriptors from 0 up (one past the highest in
//! use, or a freed one), so they never reach this range. The listeners are
//! [`SOCKET_FD_BASE`], [`SOCKET_FD_BASE`]` + 1`, … in declaration order, and
//! the module reads them from [`LISTEN_FDS_ENV`]. Sockets block unless the
//! module asks for `O_NONBLOCK`; `poll_oneoff` does not know them.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1 as _};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::runtime::in_tokio;
use wiggle::GuestMemory;

use crate::engine::{RunSpec, TCP_LISTEN_ENV};

/// The first socket descriptor: the first declared listener's number.
/// Sockets are numbered from here up to `i32::MAX`.
pub const SOCKET_FD_BASE: u32 = 1 << 30;

/// Environment variable the shim sets for the module: its listeners'
/// descriptors, comma-separated, in the order [`TCP_LISTEN_ENV`] names them
/// (e.g. `1073741824,1073741825`). A value the spec gives is replaced.
pub const LISTEN_FDS_ENV: &str = "WASMSHIM_LISTEN_FDS";

/// The import module of WASI preview 1.
const P1: &str = "wasi_snapshot_preview1";

/// The sockets a container declared, bound and listening.
#[derive(Debug)]
pub struct Listeners {
    bound: Vec<TcpListener>,
}

impl Listeners {
    /// Binds the listeners `spec` declares in [`TCP_LISTEN_ENV`] (a
    /// comma-separated list of `IP:port`, IPv6 in brackets); `None` when it
    /// declares none. Fails naming the address that does not parse or bind.
    pub fn declared(spec: &RunSpec) -> anyhow::Result<Option<Listeners>> {
        let Some(value) = spec.env_var(TCP_LISTEN_ENV) else {
            return Ok(None);
        };
        let mut bound = Vec::new();
        for address in parse_addresses(value)? {
            let listener = TcpListener::bind(address)
                .with_context(|| format!("{TCP_LISTEN_ENV}: cannot listen on {address}"))?;
            bound.push(listener);
        }
        Ok(Some(Listeners { bound }))
    }

    /// The addresses the listeners are bound to (a declared port 0 is the
    /// port the kernel chose).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The value of [`LISTEN_FDS_ENV`]: the listeners' descriptors.
    pub fn fds(&self) -> String {
        (0..self.bound.len() as u32)
            .map(|i| (SOCKET_FD_BASE + i).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `spec` with [`LISTEN_FDS_ENV`] set to [`Listeners::fds`].
    pub fn announce(&self, spec: &RunSpec) -> RunSpec {
        let mut spec = spec.clone();
        spec.env.retain(|(k, _)| k != LISTEN_FDS_ENV);
        spec.env.push((LISTEN_FDS_ENV.to_string(), self.fds()));
        spec
    }

    /// Hands the listeners to the module `linker` links: shadows
    /// the preview 1 functions that act on descriptors with ones that know
    /// the sockets. `linker` must already hold wasmtime-wasi's preview 1.
    pub fn link(self, linker: &mut Linker<WasiP1Ctx>) -> anyhow::Result<()> {
        for (fd, listener) in (SOCKET_FD_BASE..).zip(&self.bound) {
            if let Ok(address) = listener.local_addr() {
                log::info!("listening on {address} for the module, as its fd {fd}");
            }
        }
        let mut table = SocketTable::default();
        for listener in self.bound {
            table.insert(Socket::Listener(listener)).map_err(|errno| {
                anyhow::anyhow!("no socket descriptor left (WASI errno {errno})")
            })?;
        }
        shadow(linker, Arc::new(Mutex::new(table)))
    }
}

/// Parses the value of [`TCP_LISTEN_ENV`].
fn parse_addresses(value: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addresses = Vec::new();
    for entry in value.split(',').map(str::trim) {
        if entry.is_empty() {
            bail!("{TCP_LISTEN_ENV}={value:?} has an empty entry; it lists IP:port addresses, comma-separated");
        }
        let address = entry.parse().map_err(|_| {
            anyhow::anyhow!(
                "{TCP_LISTEN_ENV}: '{entry}' is not an address to listen on \
                 (IP:port, e.g. 127.0.0.1:8080 or [::1]:8080)"
            )
        })?;
        addresses.push(address);
    }
    Ok(addresses)
}

/// Refuses a declaration of listeners for `what`, which cannot take them.
pub fn refuse_declared(spec: &RunSpec, what: &str) -> anyhow::Result<()> {
    if spec.env_var(TCP_LISTEN_ENV).is_some() {
        bail!(
            "{TCP_LISTEN_ENV} declares listening sockets, which are handed only to WASI preview 1 \
             modules; {} is {what}",
            spec.module_name
        );
    }
    Ok(())
}

/// WASI errno values (`typenames.witx`) this module returns.
mod errno {
    pub const SUCCESS: u16 = 0;
    pub const ACCES: u16 = 2;
    pub const AGAIN: u16 = 6;
    pub const BADF: u16 = 8;
    pub const CONNABORTED: u16 = 13;
    pub const CONNRESET: u16 = 15;
    pub const FAULT: u16 = 21;
    pub const INTR: u16 = 27;
    pub const INVAL: u16 = 28;
    pub const IO: u16 = 29;
    pub const MFILE: u16 = 33;
    pub const NETDOWN: u16 = 38;
    pub const NFILE: u16 = 41;
    pub const NOBUFS: u16 = 42;
    pub const NOMEM: u16 = 48;
    pub const NOTCONN: u16 = 53;
    pub const PERM: u16 = 63;
    pub const PIPE: u16 = 64;
    pub const TIMEDOUT: u16 = 73;
}

/// A WASI errno: the result of a call that failed.
type Errno = u16;

/// The WASI errno of an OS error.
fn errno_of(e: &std::io::Error) -> Errno {
    if e.kind() == ErrorKind::WouldBlock {
        return errno::AGAIN;
    }
    match e.raw_os_error() {
        Some(libc::EACCES) => errno::ACCES,
        Some(libc::EBADF) => errno::BADF,
        Some(libc::ECONNABORTED) => errno::CONNABORTED,
        Some(libc::ECONNRESET) => errno::CONNRESET,
        Some(libc::EINTR) => errno::INTR,
        Some(libc::EINVAL) => errno::INVAL,
        Some(libc::EMFILE) => errno::MFILE,
        Some(libc::ENETDOWN) => errno::NETDOWN,
        Some(libc::ENFILE) => errno::NFILE,
        Some(libc::ENOBUFS) => errno::NOBUFS,
        Some(libc::ENOMEM) => errno::NOMEM,
        Some(libc::ENOTCONN) => errno::NOTCONN,
        Some(libc::EPERM) => errno::PERM,
        Some(libc::EPIPE) => errno::PIPE,
        Some(libc::ETIMEDOUT) => errno::TIMEDOUT,
        _ => errno::IO,
    }
}

/// `fdflags.nonblock`.
const FDFLAGS_NONBLOCK: u16 = 1 << 2;
/// `riflags.recv_peek`.
const RIFLAGS_PEEK: u16 = 1 << 0;
/// `riflags.recv_waitall`.
const RIFLAGS_WAITALL: u16 = 1 << 1;
/// `filetype.socket_stream`.
const FILETYPE_SOCKET_STREAM: u8 = 6;
/// Rights of a connected socket: fd_read, fd_fdstat_set_flags, fd_write,
/// poll_fd_readwrite, sock_shutdown.
const STREAM_RIGHTS: u64 = 1 << 1 | 1 << 3 | 1 << 6 | 1 << 27 | 1 << 28;
/// Rights of a listener: fd_fdstat_set_flags, poll_fd_readwrite, sock_accept.
const LISTENER_RIGHTS: u64 = 1 << 3 | 1 << 27 | 1 << 29;

/// One socket of the module's.
#[derive(Debug)]
enum Socket {
    /// A declared listener.
    Listener(TcpListener),
    /// A connection `sock_accept` returned.
    Stream(TcpStream),
}

impl Socket {
    /// Makes the socket's calls return EAGAIN instead of blocking, or block.
    fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
        match self {
            Socket::Listener(l) => l.set_nonblocking(nonblocking),
            Socket::Stream(s) => s.set_nonblocking(nonblocking),
        }
    }
}

/// A socket and its descriptor flags.
#[derive(Debug)]
struct Entry {
    socket: Socket,
    nonblocking: bool,
}

/// The module's sockets by descriptor, from [`SOCKET_FD_BASE`] up.
#[derive(Debug, Default)]
struct SocketTable {
    entries: BTreeMap<u32, Entry>,
}

impl SocketTable {
    /// Adds `socket` (blocking) under the lowest free socket descriptor.
    fn insert(&mut self, socket: Socket) -> Result<u32, Errno> {
        let mut fd = SOCKET_FD_BASE;
        for &used in self.entries.keys() {
            if used != fd {
                break;
            }
            fd += 1;
        }
        if fd > i32::MAX as u32 {
            return Err(errno::MFILE);
        }
        let entry = Entry {
            socket,
            nonblocking: false,
        };
        self.entries.insert(fd, entry);
        Ok(fd)
    }

    /// The entry of `fd`, or EBADF.
    fn get(&mut self, fd: u32) -> Result<&mut Entry, Errno> {
        self.entries.get_mut(&fd).ok_or(errno::BADF)
    }

    /// The connection of `fd`: EBADF when there is none, ENOTCONN for a listener.
    fn stream(&mut self, fd: u32) -> Result<&mut TcpStream, Errno> {
        match &mut self.get(fd)?.socket {
            Socket::Stream(stream) => Ok(stream),
            Socket::Listener(_) => Err(errno::NOTCONN),
        }
    }
}

/// Is `fd` in the socket range (whether or not it is open)?
fn is_socket_fd(fd: i32) -> bool {
    fd as u32 >= SOCKET_FD_BASE && fd >= 0
}

/// The shared table, as the shadowing functions hold it.
type Sockets = Arc<Mutex<SocketTable>>;

/// Calls wasmtime-wasi's own preview 1 function (`call`, one of
/// `wasmtime_wasi::p1::wasi_snapshot_preview1`'s) with the caller's context
/// and memory, as its linker entry does: for descriptors that are not sockets.
fn wasi(
    caller: &mut Caller<'_, WasiP1Ctx>,
    call: impl FnOnce(&mut WasiP1Ctx, &mut GuestMemory<'_>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    let fuel = caller.as_context_mut().hostcall_fuel();
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => {
            let (memory, ctx) = memory.data_and_store_mut(caller);
            ctx.set_hostcall_fuel(fuel);
            call(ctx, &mut GuestMemory::Unshared(memory))
        }
        Some(Extern::SharedMemory(memory)) => {
            let ctx = caller.data_mut();
            ctx.set_hostcall_fuel(fuel);
            call(ctx, &mut GuestMemory::Shared(memory.data()))
        }
        _ => Err(wasmtime::format_err!("missing required memory export")),
    }
}

/// Runs `call` on the locked socket table and the module's memory; returns
/// its errno as the function's result.
fn with_sockets(
    caller: &mut Caller<'_, WasiP1Ctx>,
    sockets: &Sockets,
    call: impl FnOnce(&mut SocketTable, &mut [u8]) -> Result<(), Errno>,
) -> i32 {
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return i32::from(errno::INVAL);
    };
    let mut table = match sockets.lock() {
        Ok(table) => table,
        Err(poisoned) => poisoned.into_inner(),
    };
    let data = memory.data_mut(caller);
    i32::from(call(&mut table, data).err().unwrap_or(errno::SUCCESS))
}

/// Shadows the descriptor functions of `linker`'s preview 1.
fn shadow(linker: &mut Linker<WasiP1Ctx>, sockets: Sockets) -> anyhow::Result<()> {
    linker.allow_shadowing(true);

    let table = sockets.clone();
    linker.func_wrap(
        P1,
        "sock_accept",
        move |mut caller: Caller<'_, WasiP1Ctx>, fd: i32, flags: i32, fd_out: i32| {
            if !is_socket_fd(fd) {
                return wasi(&mut caller, |ctx, memory| {
                    p1::sock_accept(ctx, memory, fd, flags, fd_out)
                });
            }
            Ok(with_sockets(&mut caller, &table, |table, memory| {
                let fd = accept(table, fd as u32, flags as u16)?;
                store_bytes(memory, fd_out as u32, &fd.to_le_bytes())
            }))
        },
    )?;

    let table = sockets.clone();
    linker.func_wrap(
        P1,
        "sock_recv",
        move |mut caller: Caller<'_, WasiP1Ctx>,
              fd: i32,
              iovs: i32,
              iovs_len: i32,
              flags: i32,
              len_out: i32,
              flags_out: i32| {
            if !is_socket_fd(fd) {
                return wasi(&mut caller, |ctx, memory| {
                    p1::sock_recv(ctx, memory, fd, iovs, iovs_len, flags, len_out, flags_out)
                });
            }
            Ok(with_sockets(&mut caller, &table, |table, memory| {
                let iovs = iovecs(memory, iovs as u32, iovs_len as u32)?;
                let n = recv(table.stream(fd as u32)?, memory, &iovs, flags as u16)?;
                store_bytes(memory, len_out as u32, &n.to_le_bytes())?;
                store_bytes(memory, flags_out as u32, &0u16.to_le_bytes())
            }))
        },
    )?;

    let table = sockets.clone();
    linker.func_wrap(
        P1,
        "sock_send",
        move |mut caller: Caller<'_, WasiP1Ctx>,
              fd: i32,
              iovs: i32,
              iovs_len: i32,
              flags: i32,
              len_out: i32| {
            if !is_socket_fd(fd) {
                return wasi(&mut caller, |ctx, memory| {
                    p1::sock_send(ctx, memory, fd, iovs, iovs_len, flags, len_out)
                });
            }
            Ok(with_sockets(&mut caller, &table, |table, memory| {
                let iovs = iovecs(memory, iovs as u32, iovs_len as u32)?;
                let n = send(table.stream(fd as u32)?, memory, &iovs)?;
                store_bytes(memory, len_out as u32, &n.to_le_bytes())
            }))
        },
    )?;

    let table = sockets.clone();
    linker.func_wrap(
        P1,
        "sock_shutdown",
        move |mut caller: Caller<'_, WasiP1Ctx>, fd: i32, how: i32| {
            if !is_socket_fd(fd) {
                return wasi(&mut caller, |ctx, memory| {
                    p1::sock_shutdown(ctx, memory, fd, how)
                });
            }
            Ok(with_sockets(&mut caller, &table, |table, _| {
                let how = match how {
                    1 => Shutdown::Read,
                    2 => Shutdown::Write,
                    3 => Shutdown::Both,
                    _ => return Err(errno::INVAL),
                };
                table
                    .stream(fd as u32)?
                    .shutdown(how)
                    .map_err(|e| errno_of(&e))
            }))
        },
    )?;

    let table = sockets.clone();
    linker.func_wrap(
        P1,
        "fd_read",
        move |mut caller: Caller<'_, WasiP1Ctx>,
              fd: i32,
              iovs: i32,
              iovs_len: i32,
              len_out: i32| {
            if !is_socket_fd(fd) {
                return wasi(&mut caller, |ctx, memory| {
                    in_tokio(p1::fd_read(ctx, memory, fd, iovs, iovs_len, len_out))
                });
            }
            Ok(with_sockets(&mut caller, &table, |table, memory| {
                let iovs = iovecs(memory, iovs as u32, iovs_len as u32)?;
                let n = recv(table.stream(fd as u32)?, memory, &iovs, 0)?;
                store_bytes(memory, len_out as u32, &n.to_le_bytes())
            }))
        },
    )?;

    let table = sockets.clone();
    linker.func_wrap(
        P1,
        "fd_write",
        move |mut caller: Caller<'_, WasiP1Ctx>,
              fd: i32,
              iovs: i32,
              iovs_len: i32,
              len_out: i32| {
            if !is_socket_fd(fd) {
                return wasi(&mut caller, |ctx, memory| {
                    in_tokio(p1::fd_write(ctx, memory, fd, iovs, iovs_len, len_out))
                });
            }
            Ok(with_sockets(&mut caller, &table, |table, memory| {
                let iovs = iovecs(memory, iovs as u32, iovs_len as u32)?;
                let n = send(table.stream(fd as u32)?, memory, &iovs)?;
                store_bytes(memory, len_out as u32, &n.to_le_bytes())
            }))
        },
    )?;

    let table = sockets.clone();
    linker.func_wrap(
        P1,
        "fd_close",
        move |mut caller: Caller<'_, WasiP1Ctx>, fd: i32| {
            if !is_socket_fd(fd) {
                return wasi(&mut caller, |ctx, memory| {
                    in_tokio(p1::fd_close(ctx, memory, fd))
                });
            }
            Ok(with_sockets(&mut caller, &table, |table, _| {
                // Dropping the socket closes it.
                table
                    .entries
                    .remove(&(fd as u32))
                    .map(drop)
                    .ok_or(errno::BADF)
            }))
        },
    )?;

    let table = sockets.clone();
    linker.func_wrap(
        P1,
        "fd_fdstat_get",
        move |mut caller: Caller<'_, WasiP1Ctx>, fd: i32, stat_out: i32| {
            if !is_socket_fd(fd) {
                return wasi(&mut caller, |ctx, memory| {
                    in_tokio(p1::fd_fdstat_get(ctx, memory, fd, stat_out))
                });
            }
            Ok(with_sockets(&mut caller, &table, |table, memory| {
                let stat = fdstat(table.get(fd as u32)?);
                store_bytes(memory, stat_out as u32, &stat)
            }))
        },
    )?;

    let table = sockets;
    linker.func_wrap(
        P1,
        "fd_fdstat_set_flags",
        move |mut caller: Caller<'_, WasiP1Ctx>, fd: i32, flags: i32| {
            if !is_socket_fd(fd) {
                return wasi(&mut caller, |ctx, memory| {
                    p1::fd_fdstat_set_flags(ctx, memory, fd, flags)
                });
            }
            Ok(with_sockets(&mut caller, &table, |table, _| {
                let entry = table.get(fd as u32)?;
                if flags as u16 & !FDFLAGS_NONBLOCK != 0 {
                    return Err(errno::INVAL);
                }
                let nonblocking = flags as u16 & FDFLAGS_NONBLOCK != 0;
                entry
                    .socket
                    .set_nonblocking(nonblocking)
                    .map_err(|e| errno_of(&e))?;
                entry.nonblocking = nonblocking;
                Ok(())
            }))
        },
    )?;
    Ok(())
}

/// `sock_accept` on `fd`: the new connection's descriptor.
fn accept(table: &mut SocketTable, fd: u32, flags: u16) -> Result<u32, Errno> {
    if flags & !FDFLAGS_NONBLOCK != 0 {
        return Err(errno::INVAL);
    }
    let stream = match &table.get(fd)?.socket {
        Socket::Listener(listener) => loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(errno_of(&e)),
            }
        },
        Socket::Stream(_) => return Err(errno::INVAL),
    };
    let nonblocking = flags & FDFLAGS_NONBLOCK != 0;
    stream
        .set_nonblocking(nonblocking)
        .map_err(|e| errno_of(&e))?;
    let new_fd = table.insert(Socket::Stream(stream))?;
    table.get(new_fd)?.nonblocking = nonblocking;
    Ok(new_fd)
}

/// Receives into the `(pointer, length)` buffers `iovs` of `memory`, as
/// `readv` does: one read (a short count is not an error) unless `flags`
/// asks to wait for all of them. Returns the byte count; 0 at end of stream.
fn recv(
    stream: &mut TcpStream,
    memory: &mut [u8],
    iovs: &[(u32, u32)],
    flags: u16,
) -> Result<u32, Errno> {
    if flags & !(RIFLAGS_PEEK | RIFLAGS_WAITALL) != 0 {
        return Err(errno::INVAL);
    }
    let peek = flags & RIFLAGS_PEEK != 0;
    let wait_all = flags & RIFLAGS_WAITALL != 0 && !peek;
    let mut total = 0usize;
    for &(pointer, len) in iovs {
        let buf = guest_slice(memory, pointer, len)?;
        let mut filled = 0;
        while filled < buf.len() {
            let read = if peek {
                stream.peek(&mut buf[filled..])
            } else {
                stream.read(&mut buf[filled..])
            };
            match read {
                Ok(0) => return Ok((total + filled) as u32),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) if total + filled > 0 => return Ok((total + filled) as u32),
                Err(e) => return Err(errno_of(&e)),
            }
            if !wait_all {
                return Ok((total + filled) as u32);
            }
        }
        total += filled;
    }
    Ok(total as u32)
}

/// Sends the `(pointer, length)` buffers `iovs` of `memory`, as `writev`
/// does: stops at a short write. Returns the byte count.
fn send(stream: &mut TcpStream, memory: &[u8], iovs: &[(u32, u32)]) -> Result<u32, Errno> {
    let mut total = 0usize;
    for &(pointer, len) in iovs {
        let start = pointer as usize;
        let buf = memory
            .get(start..start + len as usize)
            .ok_or(errno::FAULT)?;
        if buf.is_empty() {
            continue;
        }
        let written = loop {
            match stream.write(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) if total > 0 => return Ok(total as u32),
                Err(e) => return Err(errno_of(&e)),
            }
        };
        total += written;
        if written < buf.len() {
            break;
        }
    }
    Ok(total as u32)
}

/// The 24-byte `fdstat` of a socket.
fn fdstat(entry: &Entry) -> [u8; 24] {
    let (base, inheriting) = match entry.socket {
        Socket::Listener(_) => (LISTENER_RIGHTS, STREAM_RIGHTS),
        Socket::Stream(_) => (STREAM_RIGHTS, 0),
    };
    let flags = if entry.nonblocking {
        FDFLAGS_NONBLOCK
    } else {
        0
    };
    let mut stat = [0u8; 24];
    stat[0] = FILETYPE_SOCKET_STREAM;
    stat[2..4].copy_from_slice(&flags.to_le_bytes());
    stat[8..16].copy_from_slice(&base.to_le_bytes());
    stat[16..24].copy_from_slice(&inheriting.to_le_bytes());
    stat
}

/// The `len` bytes of `memory` at `pointer`, or EFAULT.
fn guest_slice(memory: &mut [u8], pointer: u32, len: u32) -> Result<&mut [u8], Errno> {
    let start = pointer as usize;
    memory
        .get_mut(start..start + len as usize)
        .ok_or(errno::FAULT)
}

/// Writes `bytes` to `memory` at `pointer`, or fails with EFAULT.
fn store_bytes(memory: &mut [u8], pointer: u32, bytes: &[u8]) -> Result<(), Errno> {
    guest_slice(memory, pointer, bytes.len() as u32)?.copy_from_slice(bytes);
    Ok(())
}

/// The `iovs_len` `(pointer, length)` pairs of the iovec array at `iovs`.
fn iovecs(memory: &[u8], iovs: u32, iovs_len: u32) -> Result<Vec<(u32, u32)>, Errno> {
    let start = iovs as usize;
    let bytes = memory
        .get(start..start + iovs_len as usize * 8)
        .ok_or(errno::FAULT)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|pair| {
            let word =
                |i: usize| u32::from_le_bytes([pair[i], pair[i + 1], pair[i + 2], pair[i + 3]]);
            (word(0), word(4))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::wasmtime::WasmtimeEngine;
    use crate::engine::{Engine, Outcome};

    fn spec(env: &[(&str, &str)]) -> RunSpec {
        RunSpec {
            module: "/test.wasm".into(),
            module_name: "/test.wasm".into(),
            entry: "_start".into(),
            args: vec!["/test.wasm".into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            preopens: Vec::new(),
        }
    }

    /// Accepts on the first listener (after checking with fd_fdstat_get that
    /// it is a stream socket, and that fd 1 still reaches wasmtime-wasi),
    /// echoes one receive and exits with its byte count; exits 100 + errno
    /// when a call fails, 9x when a check does.
    const ECHO_ONCE: &str = r#"(module
      (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_recv" (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      ;; 0: accepted fd; 8: iovec; 16: received; 20: roflags; 24: sent; 32: fdstat; 64: buffer
      (func $check (param i32)
        (if (local.get 0) (then (call $exit (i32.add (i32.const 100) (local.get 0))))))
      (func (export "_start")
        (call $check (call $fdstat (i32.const 1073741824) (i32.const 32)))
        (if (i32.ne (i32.load8_u (i32.const 32)) (i32.const 6)) (then (call $exit (i32.const 99))))
        (call $check (call $fdstat (i32.const 1) (i32.const 32)))
        (if (i32.eq (i32.load8_u (i32.const 32)) (i32.const 6)) (then (call $exit (i32.const 98))))
        (if (i32.ne (call $close (i32.const 1073741900)) (i32.const 8)) (then (call $exit (i32.const 97))))
        (call $check (call $accept (i32.const 1073741824) (i32.const 0) (i32.const 0)))
        (i32.store (i32.const 8) (i32.const 64))
        (i32.store (i32.const 12) (i32.const 32))
        (call $check (call $recv (i32.load (i32.const 0)) (i32.const 8) (i32.const 1)
          (i32.const 0) (i32.const 16) (i32.const 20)))
        (i32.store (i32.const 12) (i32.load (i32.const 16)))
        (call $check (call $send (i32.load (i32.const 0)) (i32.const 8) (i32.const 1)
          (i32.const 0) (i32.const 24)))
        (call $check (call $close (i32.load (i32.const 0))))
        (call $exit (i32.load (i32.const 16)))))"#;

    /// A port of 127.0.0.1 that nothing listens on (a moment ago).
    fn free_port() -> u16 {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    }

    #[test]
    fn a_module_accepts_on_its_preopened_listener() {
        let address = format!("127.0.0.1:{}", free_port());
        let spec = spec(&[(TCP_LISTEN_ENV, &address)]);
        let wasm = wat::parse_str(ECHO_ONCE).unwrap();
        let prepared = WasmtimeEngine::new().prepare(&wasm, &spec, None).unwrap();
        // Bound at prepare: the client may connect before the module accepts.
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream.write_all(b"hello").unwrap();
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).unwrap();
            echoed
        });
        assert_eq!(prepared.run(), Outcome::Exited(5));
        assert_eq!(client.join().unwrap(), b"hello");
    }

    #[test]
    fn without_a_declaration_the_socket_range_is_not_there() {
        let wasm = wat::parse_str(ECHO_ONCE).unwrap();
        let prepared = WasmtimeEngine::new()
            .prepare(&wasm, &spec(&[]), None)
            .unwrap();
        assert_eq!(
            prepared.run(),
            Outcome::Exited(100 + i32::from(errno::BADF))
        );
    }

    #[test]
    fn listeners_are_numbered_from_the_base_and_announced() {
        let spec = spec(&[
            (TCP_LISTEN_ENV, "127.0.0.1:0, [::1]:0"),
            (LISTEN_FDS_ENV, "3"),
        ]);
        let listeners = match Listeners::declared(&spec) {
            Ok(l) => l.unwrap(),
            // A host without IPv6 on loopback: one address is enough.
            Err(_) => Listeners::declared(&super::tests::spec(&[(
                TCP_LISTEN_ENV,
                "127.0.0.1:0,127.0.0.1:0",
            )]))
            .unwrap()
            .unwrap(),
        };
        assert_eq!(listeners.fds(), "1073741824,1073741825");
        assert!(listeners.local_addrs().iter().all(|a| a.port() != 0));
        let announced = listeners.announce(&spec);
        assert_eq!(
            announced.env_var(LISTEN_FDS_ENV),
            Some("1073741824,1073741825")
        );
        let count = announced
            .env
            .iter()
            .filter(|(k, _)| k == LISTEN_FDS_ENV)
            .count();
        assert_eq!(count, 1);
        assert!(Listeners::declared(&super::tests::spec(&[]))
            .unwrap()
            .is_none());
    }

    fn refusal(env: &[(&str, &str)]) -> String {
        match Listeners::declared(&spec(env)) {
            Ok(_) => panic!("{env:?} was accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn bad_declarations_are_refused_naming_the_address() {
        let err = refusal(&[(TCP_LISTEN_ENV, "127.0.0.1:80,localhost:8080")]);
        assert!(
            err.contains("WASMSHIM_TCP_LISTEN") && err.contains("'localhost:8080'"),
            "{err}"
        );
        let err = refusal(&[(TCP_LISTEN_ENV, "8080")]);
        assert!(err.contains("'8080' is not an address"), "{err}");
        let err = refusal(&[(TCP_LISTEN_ENV, "127.0.0.1:1,")]);
        assert!(err.contains("empty entry"), "{err}");
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let err = refusal(&[(TCP_LISTEN_ENV, &address)]);
        assert!(
            err.contains(&format!("cannot listen on {address}")) && err.contains("in use"),
            "{err}"
        );
    }

    #[test]
    fn a_component_with_listeners_is_refused() {
        let wasm = wat::parse_str("(component)").unwrap();
        let spec = spec(&[(TCP_LISTEN_ENV, "127.0.0.1:0")]);
        let err = match WasmtimeEngine::new().prepare(&wasm, &spec, None) {
            Ok(_) => panic!("a component with listeners was prepared"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("WASMSHIM_TCP_LISTEN") && err.contains("is a component"),
            "{err}"
        );
    }

    #[test]
    fn socket_descriptors_are_reused_lowest_first() {
        let mut table = SocketTable::default();
        let listener = || Socket::Listener(TcpListener::bind("127.0.0.1:0").unwrap());
        assert_eq!(table.insert(listener()), Ok(SOCKET_FD_BASE));
        assert_eq!(table.insert(listener()), Ok(SOCKET_FD_BASE + 1));
        assert_eq!(table.insert(listener()), Ok(SOCKET_FD_BASE + 2));
        table.entries.remove(&(SOCKET_FD_BASE + 1));
        assert_eq!(table.insert(listener()), Ok(SOCKET_FD_BASE + 1));
        assert_eq!(table.stream(SOCKET_FD_BASE).err(), Some(errno::NOTCONN));
        assert_eq!(table.stream(SOCKET_FD_BASE + 7).err(), Some(errno::BADF));
        assert!(is_socket_fd(SOCKET_FD_BASE as i32) && !is_socket_fd(3) && !is_socket_fd(-1));
    }

    #[test]
    fn fdstat_says_stream_socket() {
        let entry = Entry {
            socket: Socket::Listener(TcpListener::bind("127.0.0.1:0").unwrap()),
            nonblocking: true,
        };
        let stat = fdstat(&entry);
        assert_eq!(stat[0], FILETYPE_SOCKET_STREAM);
        assert_eq!(u16::from_le_bytes([stat[2], stat[3]]), FDFLAGS_NONBLOCK);
        assert_eq!(stat[8..16], LISTENER_RIGHTS.to_le_bytes());
    }
}
