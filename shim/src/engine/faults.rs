//! The fault signals (SIGSEGV, SIGBUS, SIGFPE) through which compiled Wasm
//! code traps, shared by the engines of one process.
//!
//! wasmtime installs its handlers once, when its first engine is made, and
//! keeps them. WasmEdge's AOT code installs its own for each run and resets
//! the signals to their default after it. In a process that runs both
//! engines (the library's tests, criterion), a wasmtime trap during a
//! WasmEdge run would reach WasmEdge's handler, and one after it no handler:
//! either ends the process. So a WasmEdge run holds [`exclusive`], which
//! waits for the wasmtime runs and engine creations holding [`shared`] (an
//! engine made during a WasmEdge run would install wasmtime's handlers only
//! to see them reset), and puts the handlers it found back when it ends. A
//! worker runs one module with one engine: there it never waits.

use std::sync::RwLock;
#[cfg(feature = "wasmtime")]
use std::sync::RwLockReadGuard;
#[cfg(feature = "wasmedge")]
use std::sync::RwLockWriteGuard;

#[cfg(feature = "wasmedge")]
use crate::sys::signals::Dispositions;

/// The signals compiled code traps with.
#[cfg(feature = "wasmedge")]
const FAULT_SIGNALS: [libc::c_int; 3] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE];

#[cfg_attr(not(any(feature = "wasmtime", feature = "wasmedge")), allow(dead_code))]
static GATE: RwLock<()> = RwLock::new(());

/// Held by a run of an engine that keeps its handlers (wasmtime), or while
/// one of its engines is made.
#[cfg(feature = "wasmtime")]
pub struct Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>);

/// For a run of an engine whose handlers stay installed: any number at once.
#[cfg(feature = "wasmtime")]
pub fn shared() -> Shared {
    Shared(GATE.read().unwrap_or_else(|e| e.into_inner()))
}

/// Held by a run of an engine that takes the fault signals over for the run
/// (WasmEdge); puts back the handlers it found when dropped.
#[cfg(feature = "wasmedge")]
pub struct Exclusive {
    found: Option<Dispositions>,
    _gate: RwLockWriteGuard<'static, ()>,
}

/// For a run of an engine that takes the fault signals over: one at a time,
/// and none of the others meanwhile.
#[cfg(feature = "wasmedge")]
pub fn exclusive() -> Exclusive {
    let gate = GATE.write().unwrap_or_else(|e| e.into_inner());
    let found = Dispositions::save(&FAULT_SIGNALS)
        .inspect_err(|e| log::warn!("reading the fault signals' handlers: {e}"))
        .ok();
    Exclusive { found, _gate: gate }
}

#[cfg(feature = "wasmedge")]
impl Drop for Exclusive {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.found.as_ref().map(Dispositions::restore) {
            log::warn!("putting back the fault signals' handlers: {e}");
        }
    }
}
