//! Memory of running containers: the proportional set size (PSS) of every
//! process that belongs to a container — its shim and all the shim's
//! descendants (our worker, or runc's container process).

use std::collections::{HashMap, HashSet};

/// A snapshot of the process tree: pid → (parent pid, argv).
pub struct ProcessTable {
    procs: HashMap<u32, (u32, Vec<String>)>,
}

impl ProcessTable {
    /// Reads `/proc` now.
    pub fn read() -> ProcessTable {
        let mut procs = HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(ppid) = parent_of(pid) else { continue };
            let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    b.split(|&c| c == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            procs.insert(pid, (ppid, argv));
        }
        ProcessTable { procs }
    }

    /// The processes of containers `ids`, each counted once: the shims that
    /// serve them and all the shims' descendants (workers, the template,
    /// runc's container processes). A shim is found by `-id <id>` in its argv
    /// (the container it was started for) or as the parent of a worker
    /// `__wasmshim_worker <id>`: one shim may serve many containers.
    pub fn processes_of(&self, ids: &[String]) -> HashSet<u32> {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let names = |argv: &[String], flag: &str| {
            argv.windows(2)
                .any(|w| w[0] == flag && wanted.contains(w[1].as_str()))
        };
        let mut found: HashSet<u32> = HashSet::new();
        for (&pid, (ppid, argv)) in &self.procs {
            if names(argv, "-id") {
                found.insert(pid);
            }
            if names(argv, "__wasmshim_worker") {
                found.insert(*ppid);
            }
        }
        let mut frontier: Vec<u32> = found.iter().copied().collect();
        while let Some(parent) = frontier.pop() {
            for (&pid, (ppid, _)) in &self.procs {
                if *ppid == parent && found.insert(pid) {
                    frontier.push(pid);
                }
            }
        }
        found
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// A `/proc/meminfo` field such as `MemAvailable`, in KiB.
pub fn meminfo_kib(key: &str) -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// PSS of `pid` in bytes, from `/proc/<pid>/smaps_rollup` (0 if it is gone).
pub fn pss_bytes(pid: u32) -> u64 {
    let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Total PSS of the processes of containers `ids` (each process once, however
/// many of the containers it serves), and how many processes that was.
pub fn containers_pss(ids: &[String]) -> (u64, usize) {
    let processes = ProcessTable::read().processes_of(ids);
    let bytes = processes.iter().map(|pid| pss_bytes(*pid)).sum();
    (bytes, processes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_a_process_tree_by_id_and_measures_it() {
        // A stand-in "shim" with `-id <id>` in its argv and a child, like a real shim.
        let id = format!("memtest-{}", std::process::id());
        let mut shim = Command::new("sh")
            .args(["-c", "sleep 30 & wait", "-id", &id])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let pids = ProcessTable::read().processes_of(std::slice::from_ref(&id));
        let (bytes, count) = containers_pss(std::slice::from_ref(&id));
        for pid in &pids {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        shim.wait().unwrap();
        assert!(pids.contains(&shim.id()), "{pids:?}");
        assert_eq!(pids.len(), 2, "sh and its sleep child: {pids:?}");
        assert_eq!(count, 2);
        assert!(
            bytes > 100 * 1024,
            "PSS of sh + sleep is more than 100 KiB: {bytes}"
        );
    }

    #[test]
    fn a_shared_shim_is_found_from_each_container_and_counted_once() {
        // A stand-in shim started for `first`, whose child is the worker of `second`.
        let first = format!("memtest-a-{}", std::process::id());
        let second = format!("memtest-b-{}", std::process::id());
        let worker = format!("sh -c 'sleep 30' __wasmshim_worker {second} & wait");
        let mut shim = Command::new("sh")
            .args(["-c", &worker, "-id", &first])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let table = ProcessTable::read();
        let both = table.processes_of(&[first.clone(), second.clone()]);
        let by_worker = table.processes_of(std::slice::from_ref(&second));
        for pid in &both {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        shim.wait().unwrap();
        assert!(
            by_worker.contains(&shim.id()),
            "the worker's shim: {by_worker:?}"
        );
        assert_eq!(both, by_worker, "one tree, whichever container names it");
    }

    #[test]
    fn own_pss_is_positive() {
        assert!(pss_bytes(std::process::id()) > 0);
        assert_eq!(pss_bytes(u32::MAX), 0);
    }

    #[test]
    fn meminfo_fields_parse() {
        let total = meminfo_kib("MemTotal").unwrap();
        let available = meminfo_kib("MemAvailable").unwrap();
        assert!(total > 0 && available <= total, "{available} of {total}");
        assert_eq!(meminfo_kib("NoSuchField"), None);
    }
}
