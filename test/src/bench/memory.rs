//! Memory of running containers: the proportional set size (PSS) of every
//! process that belongs to a container — its shim and all the shim's
//! descendants (our worker, or runc's container process).

use std::collections::HashMap;

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

    /// The shim serving container `id` (argv holds `-id <id>`) and all its descendants.
    pub fn container_processes(&self, id: &str) -> Vec<u32> {
        let shims: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, (_, argv))| argv.windows(2).any(|w| w[0] == "-id" && w[1] == id))
            .map(|(&pid, _)| pid)
            .collect();
        let mut found = shims.clone();
        let mut frontier = shims;
        while let Some(parent) = frontier.pop() {
            for (&pid, (ppid, _)) in &self.procs {
                if *ppid == parent && !found.contains(&pid) {
                    found.push(pid);
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

/// Total PSS of the processes of containers `ids`, and how many processes that was.
pub fn containers_pss(ids: &[String]) -> (u64, usize) {
    let table = ProcessTable::read();
    let mut bytes = 0;
    let mut count = 0;
    for id in ids {
        for pid in table.container_processes(id) {
            bytes += pss_bytes(pid);
            count += 1;
        }
    }
    (bytes, count)
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
        let pids = ProcessTable::read().container_processes(&id);
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
