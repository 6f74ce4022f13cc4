//! A container's cgroup statistics as the metrics containerd decodes: cgroup
//! v1 `io.containerd.cgroups.v1.Metrics` or v2 `io.containerd.cgroups.v2.Metrics`,
//! in a protobuf `Any` (what `ctr task metrics` and the CRI read).
//!
//! Runs in the shim process, for the Task service's Stats request.

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{MessageField, MessageFull};

use crate::error::{Error, Result};
use crate::instance::Stats as CgroupStats;

/// Encodes `stats` as the metrics message of its cgroup version.
pub fn to_any(stats: &CgroupStats) -> Result<Any> {
    if stats.unified {
        pack(&v2_metrics(stats))
    } else {
        pack(&v1_metrics(stats))
    }
}

fn pack<M: MessageFull>(message: &M) -> Result<Any> {
    let mut any = Any::new();
    any.type_url = M::descriptor().full_name().to_string();
    any.value = message
        .write_to_bytes()
        .map_err(|e| Error::internal("encoding metrics", e))?;
    Ok(any)
}

fn stat(stats: &CgroupStats, key: &str) -> u64 {
    stats.stats.memory.stats.get(key).copied().unwrap_or(0)
}

fn v1_metrics(stats: &CgroupStats) -> v1::Metrics {
    let s = &stats.stats;
    let entry = |d: &libcgroups::stats::MemoryData| v1::MemoryEntry {
        limit: d.limit,
        usage: d.usage,
        max: d.max_usage,
        failcnt: d.fail_count,
        ..Default::default()
    };
    let memory = v1::MemoryStat {
        cache: s.memory.cache,
        rss: stat(stats, "rss"),
        rss_huge: stat(stats, "rss_huge"),
        mapped_file: stat(stats, "mapped_file"),
        dirty: stat(stats, "dirty"),
        writeback: stat(stats, "writeback"),
        pg_pg_in: stat(stats, "pgpgin"),
        pg_pg_out: stat(stats, "pgpgout"),
        pg_fault: stat(stats, "pgfault"),
        pg_maj_fault: stat(stats, "pgmajfault"),
        inactive_anon: stat(stats, "inactive_anon"),
        active_anon: stat(stats, "active_anon"),
        inactive_file: stat(stats, "inactive_file"),
        active_file: stat(stats, "active_file"),
        unevictable: stat(stats, "unevictable"),
        hierarchical_memory_limit: stat(stats, "hierarchical_memory_limit"),
        hierarchical_swap_limit: stat(stats, "hierarchical_memsw_limit"),
        total_cache: stat(stats, "total_cache"),
        total_rss: stat(stats, "total_rss"),
        total_inactive_file: stat(stats, "total_inactive_file"),
        total_active_file: stat(stats, "total_active_file"),
        total_inactive_anon: stat(stats, "total_inactive_anon"),
        total_active_anon: stat(stats, "total_active_anon"),
        usage: MessageField::some(entry(&s.memory.memory)),
        swap: MessageField::some(entry(&s.memory.memswap)),
        kernel: MessageField::some(entry(&s.memory.kernel)),
        kernel_tcp: MessageField::some(entry(&s.memory.kernel_tcp)),
        ..Default::default()
    };
    let cpu = v1::CPUStat {
        usage: MessageField::some(v1::CPUUsage {
            total: s.cpu.usage.usage_total,
            kernel: s.cpu.usage.usage_kernel,
            user: s.cpu.usage.usage_user,
            per_cpu: s.cpu.usage.per_core_usage_total.clone(),
            ..Default::default()
        }),
        throttling: MessageField::some(v1::Throttle {
            periods: s.cpu.throttling.periods,
            throttled_periods: s.cpu.throttling.throttled_periods,
            throttled_time: s.cpu.throttling.throttled_time,
            ..Default::default()
        }),
        ..Default::default()
    };
    v1::Metrics {
        pids: MessageField::some(v1::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(cpu),
        memory: MessageField::some(memory),
        ..Default::default()
    }
}

fn v2_metrics(stats: &CgroupStats) -> v2::Metrics {
    let s = &stats.stats;
    let memory = v2::MemoryStat {
        anon: stat(stats, "anon"),
        file: stat(stats, "file"),
        kernel_stack: stat(stats, "kernel_stack"),
        slab: stat(stats, "slab"),
        sock: stat(stats, "sock"),
        shmem: stat(stats, "shmem"),
        file_mapped: stat(stats, "file_mapped"),
        file_dirty: stat(stats, "file_dirty"),
        inactive_anon: stat(stats, "inactive_anon"),
        active_anon: stat(stats, "active_anon"),
        inactive_file: stat(stats, "inactive_file"),
        active_file: stat(stats, "active_file"),
        pgfault: stat(stats, "pgfault"),
        pgmajfault: stat(stats, "pgmajfault"),
        usage: s.memory.memory.usage,
        usage_limit: s.memory.memory.limit,
        max_usage: s.memory.memory.max_usage,
        swap_usage: s.memory.memswap.usage,
        swap_limit: s.memory.memswap.limit,
        swap_max_usage: s.memory.memswap.max_usage,
        ..Default::default()
    };
    let cpu = v2::CPUStat {
        usage_usec: s.cpu.usage.usage_total,
        user_usec: s.cpu.usage.usage_user,
        system_usec: s.cpu.usage.usage_kernel,
        nr_periods: s.cpu.throttling.periods,
        nr_throttled: s.cpu.throttling.throttled_periods,
        throttled_usec: s.cpu.throttling.throttled_time,
        ..Default::default()
    };
    v2::Metrics {
        pids: MessageField::some(v2::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(cpu),
        memory: MessageField::some(memory),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::Message;

    #[test]
    fn v1_and_v2_carry_type_url_and_values() {
        let mut stats = CgroupStats::default();
        stats.stats.memory.memory.usage = 4096;
        stats.stats.memory.memory.limit = 20971520;
        stats.stats.pids.current = 1;
        stats.stats.cpu.usage.usage_total = 1234;

        let any = to_any(&stats).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 20971520);
        assert_eq!(m.pids.current, 1);
        assert_eq!(m.cpu.usage.total, 1234);

        stats.unified = true;
        let any = to_any(&stats).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.usage_limit, 20971520);
        assert_eq!(m.cpu.usage_usec, 1234);
    }
}
