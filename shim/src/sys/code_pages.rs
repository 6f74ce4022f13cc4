//! Drops a long-lived process's mappings of code it ran only while starting:
//! the shim server's, and the template's.
//!
//! Loading libwasmedge runs libLLVM's static constructors, scattered over its
//! 100 MiB of code; with the kernel's fault-around, a process ends up
//! mapping some 36 MiB of libLLVM code it never runs again (the shim serves
//! containerd, the template forks; workers compile and run modules). Those
//! pages count in its PSS for as long as it lives. [`release_startup_code`]
//! drops the process's page-table entries for all its clean, file-backed
//! code: the pages stay in the page cache, reclaimable, and the code it does
//! run again (the shim's ttrpc server) faults back in from there, once.
//! Measured with WasmEdge, when the shim itself loaded the engine: 40 MiB
//! released, the shim's PSS from 35.7 to 9.7 MiB. The shim server of the
//! WasmEdge front binary no longer loads the engine; it drops the 5 MiB of
//! its own start, and the template spawned from the engine binary drops
//! libLLVM's.

use std::ffi::c_void;

/// One mapping of `/proc/self/smaps`, as far as this module needs it.
#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    path: String,
    /// `Anonymous` + `Private_Dirty` + `Shared_Dirty` of the mapping, KiB:
    /// anything written, which dropping would lose.
    written_kib: u64,
    rss_kib: u64,
}

impl Mapping {
    /// Executable code of a file, mapped and never written to.
    fn is_clean_code(&self) -> bool {
        self.perms == "r-xp"
            && self.path.starts_with('/')
            && self.written_kib == 0
            && self.rss_kib > 0
    }
}

/// Drops this process's mappings of its clean code pages (of its executable
/// and its shared libraries) and returns how many KiB were mapped. Call it
/// in the process that serves containerd, once its template is forked:
/// workers and the template map only what they run.
pub fn release_startup_code() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for mapping in parse(&smaps) {
        if !mapping.is_clean_code() {
            continue;
        }
        // SAFETY: the range is one whole mapping of this process, of a file,
        // read-only and with no written page (checked above): MADV_DONTNEED
        // only removes its page-table entries, and each page faults back in,
        // unchanged, from the file on its next use. No Rust object lives there.
        let rc = unsafe {
            libc::madvise(
                mapping.start as *mut c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released += mapping.rss_kib;
        }
    }
    released
}

/// The mappings of an smaps text.
fn parse(smaps: &str) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-').and_then(|(s, e)| {
            Some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        }) {
            let perms = fields.next().unwrap_or_default().to_string();
            // offset, device, inode, then the path (which may hold spaces).
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            mappings.push(Mapping {
                start,
                end,
                perms,
                path,
                written_kib: 0,
                rss_kib: 0,
            });
            continue;
        }
        let Some(current) = mappings.last_mut() else {
            continue;
        };
        let kib = fields.next().and_then(|v| v.parse::<u64>().ok());
        match (first, kib) {
            ("Rss:", Some(kib)) => current.rss_kib = kib,
            ("Anonymous:" | "Private_Dirty:" | "Shared_Dirty:", Some(kib)) => {
                current.written_kib += kib
            }
            _ => {}
        }
    }
    mappings
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
7f859b400000-7f85a20ad000 r-xp 00000000 fe:00 15695899                   /usr/lib/x86_64-linux-gnu/libLLVM-16.so.1
Size:             110260 kB
Rss:               36260 kB
Shared_Dirty:          0 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f85a20ad000-7f85a2961000 r--p 06cac000 fe:00 15695899                   /usr/lib/x86_64-linux-gnu/libLLVM-16.so.1
Rss:                8892 kB
Shared_Dirty:       8800 kB
Private_Dirty:         0 kB
Anonymous:          8800 kB
55d0c0000000-55d0c1000000 r-xp 00000000 fe:00 42 /usr/bin/containerd-shim-wasmedge-v1
Rss:                5888 kB
Shared_Dirty:          0 kB
Anonymous:             0 kB
7f0000000000-7f0000001000 r-xp 00000000 fe:00 43 /opt/x/libpatched.so
Rss:                   4 kB
Private_Dirty:         4 kB
Anonymous:             4 kB
7ffd50257000-7ffd50278000 rw-p 00000000 00:00 0                          [stack]
Rss:                  40 kB
Anonymous:            40 kB
";

    #[test]
    fn only_clean_code_is_released() {
        let released: Vec<String> = parse(SMAPS)
            .into_iter()
            .filter(Mapping::is_clean_code)
            .map(|m| format!("{:x} {} {}", m.start, m.path, m.rss_kib))
            .collect();
        // Not the relocated (written) data, not code with a written page,
        // not anonymous memory.
        assert_eq!(
            released,
            [
                "7f859b400000 /usr/lib/x86_64-linux-gnu/libLLVM-16.so.1 36260",
                "55d0c0000000 /usr/bin/containerd-shim-wasmedge-v1 5888"
            ]
        );
    }

    #[test]
    fn released_code_still_runs() {
        // The test binary's and libc's code are mapped and clean: they are
        // released, and running them afterwards faults them back in.
        assert!(release_startup_code() > 0, "no code was mapped");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status.contains(&format!("Pid:\t{}", std::process::id())));
    }
}
