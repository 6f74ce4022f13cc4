//! Confinement the worker applies to itself: namespaces, hostname, sysctls, rlimits,
//! user and groups, capabilities, no_new_privs and seccomp.
//!
//! Runs in the worker process, in two steps (see `docs/process-model.md`):
//! [`enter_namespaces`] first, while the worker has a single thread and
//! before it reads the module; [`drop_privileges`] after the module is
//! compiled and its directories are open, just before the worker reports the
//! container created. The shim has already put the worker in its cgroup.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context};
use caps::{CapSet, Capability, CapsHashSet};
use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::LinuxCapabilities;

use super::plan::{Confinement, NamespaceKind};
use super::seccomp;
use crate::engine::RunSpec;

/// Joins (setns) or creates (unshare) the namespaces of `plan`, then sets the
/// hostname. Must run while the process has one thread.
pub fn enter_namespaces(plan: &Confinement) -> anyhow::Result<()> {
    // Open every namespace to join first: their paths are in the host's mount namespace.
    let mut joins = Vec::new();
    let mut creates = CloneFlags::empty();
    for ns in &plan.namespaces {
        let flag = CloneFlags::from_bits_retain(ns.kind.clone_flag());
        match &ns.path {
            Some(path) => {
                let file = File::open(path).with_context(|| {
                    format!(
                        "opening the {} namespace {}",
                        ns.kind.proc_name(),
                        path.display()
                    )
                })?;
                joins.push((file, flag, ns.kind, path));
            }
            None => creates |= flag,
        }
    }
    for (file, flag, kind, path) in &joins {
        setns(file, *flag).with_context(|| {
            format!(
                "joining the {} namespace {}",
                kind.proc_name(),
                path.display()
            )
        })?;
    }
    if !creates.is_empty() {
        unshare(creates).with_context(|| format!("creating namespaces {creates:?}"))?;
    }
    let own_mount_ns = plan
        .namespaces
        .iter()
        .any(|n| n.kind == NamespaceKind::Mount);
    if own_mount_ns {
        // Mounts from the host still reach us; nothing we mount reaches the host.
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC,
            None::<&str>,
        )
        .context("making the worker's mounts slaves of the host's")?;
    }
    if let Some(hostname) = &plan.hostname {
        nix::unistd::sethostname(hostname)
            .with_context(|| format!("setting hostname {hostname}"))?;
    }
    // /proc/sys shows the namespaces of the process that writes it: ours now.
    for (key, value) in &plan.sysctl {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value)
            .with_context(|| format!("setting sysctl {key} to {value:?}"))?;
    }
    Ok(())
}

/// For a container that does not run as root: opens every preopened directory
/// now, as root, and points the engine at the open descriptor
/// (`/proc/self/fd/N`). Only the path leading to a directory (the bundle's
/// private parents) is then crossed with root's rights; every access inside
/// it is checked against the container's user.
pub fn open_preopens(spec: &mut RunSpec, plan: &Confinement) -> anyhow::Result<()> {
    if plan.user.as_ref().is_none_or(|u| u.uid == 0) {
        return Ok(());
    }
    for dir in &mut spec.preopens {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_path()
            .open(&dir.host)
            .with_context(|| {
                format!(
                    "opening {} to mount it at {}",
                    dir.host.display(),
                    dir.guest
                )
            })?;
        // The descriptor lives as long as the worker: the engine reopens it by path.
        let fd = file.into_raw_fd();
        dir.host = PathBuf::from(format!("/proc/self/fd/{fd}"));
    }
    Ok(())
}

/// `O_PATH | O_DIRECTORY` for [`open_preopens`].
trait PathOpen {
    fn custom_flags_path(&mut self) -> &mut Self;
}

impl PathOpen for std::fs::OpenOptions {
    fn custom_flags_path(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_PATH | libc::O_DIRECTORY)
    }
}

/// Applies rlimits, user and groups, capabilities, no_new_privs and seccomp,
/// in the order runc applies them. After this the worker runs only the module.
pub fn drop_privileges(plan: &Confinement) -> anyhow::Result<()> {
    let parent = nix::unistd::getppid();
    let death_signal = parent_death_signal()?;
    for &(resource, soft, hard) in &plan.rlimits {
        set_rlimit(resource, soft, hard)?;
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which the
    // capabilities below may drop: load it first, as runc does.
    if let (Some(profile), false) = (&plan.seccomp, plan.no_new_privileges) {
        seccomp::load(profile)?;
    }
    if let Some(capabilities) = &plan.capabilities {
        drop_bounding(capabilities)?;
    }
    if let Some(user) = &plan.user {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
            return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_KEEPCAPS)");
        }
        let groups: Vec<nix::unistd::Gid> = user
            .additional_gids
            .iter()
            .map(|&g| nix::unistd::Gid::from_raw(g))
            .collect();
        nix::unistd::setgroups(&groups).with_context(|| {
            format!(
                "setting process.user.additionalGids {:?}",
                user.additional_gids
            )
        })?;
        let gid = nix::unistd::Gid::from_raw(user.gid);
        nix::unistd::setresgid(gid, gid, gid)
            .with_context(|| format!("setting process.user.gid {}", user.gid))?;
        let uid = nix::unistd::Uid::from_raw(user.uid);
        nix::unistd::setresuid(uid, uid, uid)
            .with_context(|| format!("setting process.user.uid {}", user.uid))?;
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
            user.umask.unwrap_or(0o022) as libc::mode_t,
        ));
    }
    if let Some(capabilities) = &plan.capabilities {
        set_capabilities(capabilities)?;
    }
    if plan.no_new_privileges {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_NO_NEW_PRIVS)");
        }
        if let Some(profile) = &plan.seccomp {
            seccomp::load(profile)?;
        }
    }
    // Changing credentials clears the parent-death signal: set it again, and
    // leave if the shim went away meanwhile. A detached worker (the OCI
    // runtime CLI's) has none: its parent exits after create.
    if death_signal != 0 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, death_signal) } < 0 {
            return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_PDEATHSIG)");
        }
        if nix::unistd::getppid() != parent {
            bail!("the shim exited");
        }
    }
    Ok(())
}

/// The signal this process gets when its parent dies (0: none).
fn parent_death_signal() -> anyhow::Result<libc::c_int> {
    let mut signal: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer, which
    // points to a live local.
    if unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut signal as *mut libc::c_int) } < 0 {
        return Err(std::io::Error::last_os_error()).context("prctl(PR_GET_PDEATHSIG)");
    }
    Ok(signal)
}

fn set_rlimit(resource: i32, soft: u64, hard: u64) -> anyhow::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `limit` is a valid rlimit that outlives the call; the kernel
    // rejects an unknown resource with EINVAL.
    if unsafe { libc::setrlimit(resource as _, &limit) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "setting process.rlimits {} to {soft}/{hard}",
                rlimit_name(resource)
            )
        });
    }
    Ok(())
}

fn rlimit_name(resource: i32) -> String {
    match resource as u32 {
        r if r == libc::RLIMIT_NOFILE => "RLIMIT_NOFILE".into(),
        r if r == libc::RLIMIT_NPROC => "RLIMIT_NPROC".into(),
        r if r == libc::RLIMIT_CORE => "RLIMIT_CORE".into(),
        r if r == libc::RLIMIT_AS => "RLIMIT_AS".into(),
        r => format!("rlimit {r}"),
    }
}

/// The capabilities of one OCI set that this kernel knows.
fn cap_set(names: &Option<oci_spec::runtime::Capabilities>) -> CapsHashSet {
    let supported = caps::runtime::thread_all_supported();
    names
        .iter()
        .flatten()
        .filter_map(|c| {
            let name = serde_json::to_value(c).ok()?;
            name.as_str()?.parse::<Capability>().ok()
        })
        .filter(|c| supported.contains(c))
        .collect()
}

fn drop_bounding(capabilities: &LinuxCapabilities) -> anyhow::Result<()> {
    let keep = cap_set(capabilities.bounding());
    for cap in caps::read(None, CapSet::Bounding).context("reading the bounding set")? {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    Ok(())
}

fn set_capabilities(capabilities: &LinuxCapabilities) -> anyhow::Result<()> {
    let effective = cap_set(capabilities.effective());
    let permitted = cap_set(capabilities.permitted());
    let inheritable = cap_set(capabilities.inheritable());
    let ambient = cap_set(capabilities.ambient());
    caps::set(None, CapSet::Inheritable, &inheritable)
        .context("setting process.capabilities.inheritable")?;
    // Effective first (it must stay within the permitted set), then permitted.
    let current: HashSet<_> = caps::read(None, CapSet::Permitted)?;
    caps::set(
        None,
        CapSet::Effective,
        &effective.intersection(&current).copied().collect(),
    )
    .context("setting process.capabilities.effective")?;
    caps::set(None, CapSet::Permitted, &permitted)
        .context("setting process.capabilities.permitted (it must include the effective set)")?;
    caps::set(None, CapSet::Effective, &effective)
        .context("setting process.capabilities.effective")?;
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).context("clearing the ambient set")?;
        for cap in ambient {
            caps::raise(None, CapSet::Ambient, cap)
                .with_context(|| format!("raising ambient capability {cap}"))?;
        }
    }
    Ok(())
}
