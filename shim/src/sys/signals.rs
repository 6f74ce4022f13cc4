//! Signal handlers that a library call installs and leaves behind.
//!
//! LLVM (inside WasmEdge's AOT compiler) installs process-wide handlers the
//! first time it writes a temporary file, and keeps them for the life of the
//! process. They change what the process does on a signal: SIGUSR1 is
//! ignored, a SIGQUIT or SIGABRT from `kill` is swallowed once, and any fault
//! on any thread (a Wasm trap of another engine) first deletes the
//! temporary files LLVM is writing at that moment. A worker that compiled
//! its module would then answer `ctr task kill -s SIGUSR1` differently from
//! one that loaded it from the cache. [`HandlersKept`] puts the
//! dispositions back once the call returns; LLVM counts its handlers as
//! installed and never installs them again.

use std::io;

/// Signals whose handlers a library call is expected to take over: those
/// LLVM 16 claims (`llvm/lib/Support/Unix/Signals.inc`, its interrupt, kill
/// and info signals, as a worker's `/proc/<pid>/status` shows after a compile).
pub const LLVM_SIGNALS: [libc::c_int; 15] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGUSR2,
    libc::SIGUSR1,
    libc::SIGQUIT,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGFPE,
    libc::SIGBUS,
    libc::SIGSEGV,
    libc::SIGSYS,
    libc::SIGXCPU,
    libc::SIGXFSZ,
];

/// While alive, remembers the dispositions of a set of signals; when
/// dropped, puts back those that a handler installed meanwhile on one of
/// the `markers` signals has taken.
///
/// Only handlers found on a marker signal are undone, so a handler that
/// another thread installs meanwhile on other signals (wasmtime's or
/// WasmEdge's trap handlers, on faults) is kept. The markers must be
/// signals that nothing else in the process installs handlers for.
pub struct HandlersKept {
    saved: Dispositions,
    markers: &'static [libc::c_int],
}

impl HandlersKept {
    /// Remembers the dispositions of `signals` as they are now.
    pub fn new(
        signals: &'static [libc::c_int],
        markers: &'static [libc::c_int],
    ) -> io::Result<HandlersKept> {
        let saved = Dispositions::save(signals)?;
        Ok(HandlersKept { saved, markers })
    }

    /// For LLVM: its fatal-signal handler is the one on SIGHUP, its info
    /// handler the one on SIGUSR1; the shim installs neither.
    pub fn for_llvm() -> io::Result<HandlersKept> {
        HandlersKept::new(&LLVM_SIGNALS, &[libc::SIGHUP, libc::SIGUSR1])
    }

    /// Puts back every signal whose handler is now one that appeared on a
    /// marker signal since [`HandlersKept::new`]; returns how many.
    pub fn restore(&self) -> io::Result<usize> {
        let saved_handler = |signal| {
            self.saved
                .0
                .iter()
                .find(|(s, _)| *s == signal)
                .map(|(_, action)| action.sa_sigaction)
        };
        let mut intruders = Vec::new();
        for &marker in self.markers {
            let now = disposition(marker)?.sa_sigaction;
            if saved_handler(marker) != Some(now) {
                intruders.push(now);
            }
        }
        let mut restored = 0;
        for (signal, action) in &self.saved.0 {
            if intruders.contains(&disposition(*signal)?.sa_sigaction) {
                set_disposition(*signal, action)?;
                restored += 1;
            }
        }
        Ok(restored)
    }
}

impl Drop for HandlersKept {
    fn drop(&mut self) {
        match self.restore() {
            Ok(0) => {}
            Ok(n) => log::debug!("put back the dispositions of {n} signals"),
            Err(e) => log::warn!("putting back signal dispositions: {e}"),
        }
    }
}

/// The dispositions of some signals as they were at [`Dispositions::save`],
/// put back, all of them, by [`Dispositions::restore`].
pub struct Dispositions(Vec<(libc::c_int, libc::sigaction)>);

impl Dispositions {
    /// The dispositions of `signals` now.
    pub fn save(signals: &[libc::c_int]) -> io::Result<Dispositions> {
        signals
            .iter()
            .map(|&signal| Ok((signal, disposition(signal)?)))
            .collect::<io::Result<_>>()
            .map(Dispositions)
    }

    /// Sets every signal back to its saved disposition.
    pub fn restore(&self) -> io::Result<()> {
        self.0
            .iter()
            .try_for_each(|(signal, action)| set_disposition(*signal, action))
    }
}

/// Sets the disposition of `signal` back to `action`, one that the kernel
/// gave for it earlier in this process ([`disposition`]).
fn set_disposition(signal: libc::c_int, action: &libc::sigaction) -> io::Result<()> {
    // SAFETY: `action` is a disposition the kernel gave for this signal
    // earlier in this process, so its handler, if any, is still a valid
    // function here.
    if unsafe { libc::sigaction(signal, action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The current disposition of `signal`.
fn disposition(signal: libc::c_int) -> io::Result<libc::sigaction> {
    // SAFETY: all zeroes is a valid value of this plain C struct.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only writes the current one
    // into `old`.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn library_handler(_: libc::c_int) {}

    /// A library's handler, or SIG_IGN standing for another thread's: two
    /// distinct dispositions (two empty functions could share one address).
    fn install(signal: libc::c_int, handler: libc::sighandler_t) {
        // SAFETY: a handler that does nothing, or SIG_IGN, on a signal that
        // nothing else in the test process uses.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler;
            assert_eq!(libc::sigaction(signal, &action, std::ptr::null_mut()), 0);
        }
    }

    /// SIGPWR and SIGSTKFLT stand for the library's signals (SIGPWR the
    /// marker), SIGVTALRM for one that another thread takes meanwhile.
    /// Neither LLVM nor any other test touches them.
    #[test]
    fn undoes_the_library_handlers_and_keeps_the_others() {
        const SIGNALS: [libc::c_int; 3] = [libc::SIGPWR, libc::SIGSTKFLT, libc::SIGVTALRM];
        let before: Vec<_> = SIGNALS.iter().map(|&s| disposition(s).unwrap()).collect();
        let kept = HandlersKept::new(&SIGNALS, &[libc::SIGPWR]).unwrap();
        let library = library_handler as *const () as libc::sighandler_t;
        install(libc::SIGPWR, library);
        install(libc::SIGSTKFLT, library);
        install(libc::SIGVTALRM, libc::SIG_IGN);
        assert_eq!(kept.restore().unwrap(), 2);
        for (i, &signal) in SIGNALS[..2].iter().enumerate() {
            assert_eq!(
                disposition(signal).unwrap().sa_sigaction,
                before[i].sa_sigaction,
                "signal {signal} keeps the library's handler"
            );
        }
        assert_eq!(
            disposition(libc::SIGVTALRM).unwrap().sa_sigaction,
            libc::SIG_IGN,
            "another thread's disposition was undone"
        );
        // SAFETY: the disposition SIGVTALRM had when the test began.
        unsafe { libc::sigaction(libc::SIGVTALRM, &before[2], std::ptr::null_mut()) };
    }
}
