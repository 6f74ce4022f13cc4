//! The isolation plan: what of a bundle's OCI spec (`linux.*`, `process.user`,
//! `process.capabilities`, hooks, …) the shim and the worker enforce.
//!
//! Built in the shim process at Create from `<bundle>/config.json`. The shim
//! keeps the cgroup and hook parts ([`super::cgroup`], [`super::hooks`]); the
//! [`Confinement`] travels to the worker on the control socket and is applied
//! there by [`super::confine`]. Every field that is checked but cannot be
//! honoured is named in [`Plan::unsupported`], logged once per container.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Hooks, LinuxCapabilities, LinuxNamespaceType, LinuxResources, LinuxSeccomp, PosixRlimitType,
    Spec,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Everything of the spec the shim enforces beyond what the engine sees.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The container's cgroup and its limits.
    pub cgroup: CgroupPlan,
    /// What the worker applies to itself (namespaces, identity, seccomp).
    pub confine: Confinement,
    /// OCI hooks, run by the shim.
    pub hooks: Hooks,
    /// `annotations`, for the hooks' state JSON.
    pub annotations: HashMap<String, String>,
    /// Fields of the spec that are set but not honoured, named for the log.
    pub unsupported: Vec<String>,
}

/// Where the container's cgroup is and what is limited there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupPlan {
    /// `linux.cgroupsPath`, parsed.
    pub path: CgroupsPath,
    /// `linux.resources` (empty: no limit).
    pub resources: LinuxResources,
}

impl CgroupPlan {
    /// The cgroup of container `id`: `linux.cgroupsPath` and `linux.resources`.
    pub fn from_spec(spec: &Spec, id: &str) -> Result<Self> {
        let linux = spec.linux().clone().unwrap_or_default();
        Ok(CgroupPlan {
            path: CgroupsPath::parse(
                &linux
                    .cgroups_path()
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                id,
            )?,
            resources: linux.resources().clone().unwrap_or_default(),
        })
    }
}

/// `linux.cgroupsPath` as runc reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupsPath {
    /// A cgroupfs path below the hierarchy's root, e.g. `/default/c1`.
    Fs(PathBuf),
    /// The systemd form `slice:prefix:name`, a scope `<prefix>-<name>.scope` in `slice`.
    Systemd {
        /// Parent slice, e.g. `system.slice` (`-.slice` when empty).
        slice: String,
        /// Scope name prefix, e.g. `docker`.
        prefix: String,
        /// Scope name, usually the container id.
        name: String,
    },
}

impl Default for CgroupsPath {
    fn default() -> Self {
        CgroupsPath::Fs(PathBuf::from("/"))
    }
}

impl CgroupsPath {
    /// Parses `linux.cgroupsPath`; an empty path is `/<id>` (runc's default).
    pub fn parse(path: &str, id: &str) -> Result<Self> {
        let invalid =
            |why: &str| Error::InvalidArgument(format!("linux.cgroupsPath {path:?}: {why}"));
        if path.is_empty() {
            return Ok(CgroupsPath::Fs(Path::new("/").join(id)));
        }
        if !path.starts_with('/') && path.contains(':') {
            let parts: Vec<&str> = path.split(':').collect();
            let [slice, prefix, name] = parts[..] else {
                return Err(invalid("the systemd form is slice:prefix:name"));
            };
            if name.is_empty() || name.contains('/') || prefix.contains('/') {
                return Err(invalid("the systemd form is slice:prefix:name"));
            }
            if !slice.is_empty() && (!slice.ends_with(".slice") || slice.contains('/')) {
                return Err(invalid("a systemd slice name ends in .slice"));
            }
            return Ok(CgroupsPath::Systemd {
                slice: slice.to_string(),
                prefix: prefix.to_string(),
                name: name.to_string(),
            });
        }
        let path_buf = PathBuf::from(path);
        if path_buf
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(invalid("must not contain '..'"));
        }
        // A path of only `/` and `.` is the hierarchy's root: the host's own
        // cgroup, whose processes removing the container's cgroup would kill.
        if !path_buf
            .components()
            .any(|c| matches!(c, Component::Normal(_)))
        {
            return Err(invalid(
                "names the root cgroup; a container needs a cgroup of its own",
            ));
        }
        // runc joins a relative path below the hierarchy's root as well.
        Ok(CgroupsPath::Fs(Path::new("/").join(path_buf)))
    }

    /// The path below a cgroupfs hierarchy's root where systemd (or we) put the
    /// cgroup: `a-b.slice:p:n` becomes `/a.slice/a-b.slice/p-n.scope`.
    pub fn fs_path(&self) -> PathBuf {
        match self {
            CgroupsPath::Fs(p) => p.clone(),
            CgroupsPath::Systemd {
                slice,
                prefix,
                name,
            } => {
                let mut path = PathBuf::from("/");
                let slice = slice.strip_suffix(".slice").unwrap_or(slice);
                if !slice.is_empty() && slice != "-" {
                    let mut prefix_so_far = String::new();
                    for part in slice.split('-') {
                        if !prefix_so_far.is_empty() {
                            prefix_so_far.push('-');
                        }
                        prefix_so_far.push_str(part);
                        path.push(format!("{prefix_so_far}.slice"));
                    }
                }
                let scope = if prefix.is_empty() {
                    format!("{name}.scope")
                } else {
                    format!("{prefix}-{name}.scope")
                };
                path.push(scope);
                path
            }
        }
    }
}

/// What the worker applies to itself, in the order of `docs/process-model.md`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Confinement {
    /// Namespaces to join (with a path) or create (without), in spec order.
    pub namespaces: Vec<NamespacePlan>,
    /// `hostname`, set in the new UTS namespace.
    pub hostname: Option<String>,
    /// `linux.sysctl`, each checked to belong to a namespace of the container,
    /// written to `/proc/sys` once the namespaces are entered.
    pub sysctl: Vec<(String, String)>,
    /// `process.user`: `None` keeps root.
    pub user: Option<UserPlan>,
    /// `process.rlimits` as (resource, soft, hard).
    pub rlimits: Vec<(RlimitKind, u64, u64)>,
    /// `process.capabilities`: `None` leaves the worker's own (root's) sets.
    pub capabilities: Option<LinuxCapabilities>,
    /// `process.noNewPrivileges`.
    pub no_new_privileges: bool,
    /// `linux.seccomp`, checked in the shim, loaded last in the worker.
    pub seccomp: Option<LinuxSeccomp>,
}

/// A namespace of `linux.namespaces` the worker honours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    /// Which namespace.
    pub kind: NamespaceKind,
    /// Join this one (setns); `None` creates a new one (unshare).
    pub path: Option<PathBuf>,
}

/// Namespaces the worker can enter itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceKind {
    /// Network.
    Network,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Hostname.
    Uts,
    /// Mount points.
    Mount,
    /// cgroup root (created after the cgroup is joined).
    Cgroup,
}

impl NamespaceKind {
    /// The `CLONE_NEW*` flag of this namespace.
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            NamespaceKind::Network => libc::CLONE_NEWNET,
            NamespaceKind::Ipc => libc::CLONE_NEWIPC,
            NamespaceKind::Uts => libc::CLONE_NEWUTS,
            NamespaceKind::Mount => libc::CLONE_NEWNS,
            NamespaceKind::Cgroup => libc::CLONE_NEWCGROUP,
        }
    }

    /// The name of its link in `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Network => "net",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Cgroup => "cgroup",
        }
    }
}

/// `process.user`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPlan {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// File mode creation mask (`None`: 0022, as runc).
    pub umask: Option<u32>,
}

/// An rlimit resource, by its `RLIMIT_*` number.
pub type RlimitKind = i32;

impl Plan {
    /// Builds the plan of container `id` from its spec; a bad field is an
    /// [`Error::InvalidArgument`] that names it.
    pub fn from_spec(spec: &Spec, id: &str) -> Result<Self> {
        let mut unsupported = Vec::new();
        let linux = spec.linux().clone().unwrap_or_default();
        let cgroup = CgroupPlan::from_spec(spec, id)?;
        if let Some(devices) = linux.resources().as_ref().and_then(|r| r.devices().clone()) {
            if !devices.is_empty() && is_cgroup2_only() {
                unsupported.push("linux.resources.devices (cgroup v2 device rules)".into());
            }
        }

        let mut namespaces = Vec::new();
        let mut has_uts = false;
        for ns in linux.namespaces().iter().flatten() {
            let kind = match ns.typ() {
                LinuxNamespaceType::Network => NamespaceKind::Network,
                LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
                LinuxNamespaceType::Uts => NamespaceKind::Uts,
                LinuxNamespaceType::Mount => NamespaceKind::Mount,
                LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
                other => {
                    unsupported.push(format!("linux.namespaces {other}"));
                    continue;
                }
            };
            if let Some(path) = ns.path() {
                if !path.is_absolute() {
                    return Err(Error::InvalidArgument(format!(
                        "linux.namespaces: the path of the {} namespace must be absolute: {}",
                        ns.typ(),
                        path.display()
                    )));
                }
            }
            if namespaces.iter().any(|n: &NamespacePlan| n.kind == kind) {
                return Err(Error::InvalidArgument(format!(
                    "linux.namespaces lists the {} namespace twice",
                    ns.typ()
                )));
            }
            has_uts |= kind == NamespaceKind::Uts;
            namespaces.push(NamespacePlan {
                kind,
                path: ns.path().clone(),
            });
        }
        let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        if hostname.is_some() && !has_uts {
            return Err(Error::InvalidArgument(
                "hostname is set but linux.namespaces has no uts namespace".into(),
            ));
        }

        let sysctl = check_sysctl(linux.sysctl().clone().unwrap_or_default(), &namespaces)?;

        let process = spec.process().clone().unwrap_or_default();
        let user = process.user();
        // (uid_t)-1 tells setresuid "leave it": the worker would stay root.
        if user.uid() == u32::MAX {
            return Err(Error::InvalidArgument(format!(
                "process.user.uid {} is not a valid user id",
                user.uid()
            )));
        }
        if user.gid() == u32::MAX {
            return Err(Error::InvalidArgument(format!(
                "process.user.gid {} is not a valid group id",
                user.gid()
            )));
        }
        let user = UserPlan {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
        };
        let mut rlimits = Vec::new();
        for r in process.rlimits().iter().flatten() {
            if r.soft() > r.hard() {
                return Err(Error::InvalidArgument(format!(
                    "process.rlimits: {:?} has soft limit {} above hard limit {}",
                    r.typ(),
                    r.soft(),
                    r.hard()
                )));
            }
            rlimits.push((rlimit_resource(r.typ()), r.soft(), r.hard()));
        }
        let seccomp = linux.seccomp().clone();
        if let Some(profile) = &seccomp {
            super::seccomp::check(profile)?;
        }

        for hook_list in [
            spec.hooks().as_ref().and_then(|h| h.prestart().clone()),
            spec.hooks()
                .as_ref()
                .and_then(|h| h.create_runtime().clone()),
            spec.hooks()
                .as_ref()
                .and_then(|h| h.create_container().clone()),
            spec.hooks()
                .as_ref()
                .and_then(|h| h.start_container().clone()),
            spec.hooks().as_ref().and_then(|h| h.poststart().clone()),
            spec.hooks().as_ref().and_then(|h| h.poststop().clone()),
        ]
        .iter()
        .flatten()
        {
            for hook in hook_list {
                if !hook.path().is_absolute() {
                    return Err(Error::InvalidArgument(format!(
                        "hooks: the path of a hook must be absolute: {}",
                        hook.path().display()
                    )));
                }
                if hook.timeout().is_some_and(|t| t <= 0) {
                    return Err(Error::InvalidArgument(format!(
                        "hooks: the timeout of {} must be positive",
                        hook.path().display()
                    )));
                }
            }
        }

        unsupported.extend(unhonoured(spec));
        Ok(Plan {
            cgroup,
            confine: Confinement {
                namespaces,
                hostname,
                sysctl,
                user: Some(user),
                rlimits,
                capabilities: process.capabilities().clone(),
                no_new_privileges: process.no_new_privileges().unwrap_or(false),
                seccomp,
            },
            hooks: spec.hooks().clone().unwrap_or_default(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            unsupported,
        })
    }

    /// Logs, in one line, what of the spec this container does not get.
    pub fn log_unsupported(&self, id: &str) {
        if !self.unsupported.is_empty() {
            log::warn!(
                "container {id}: not honoured: {}",
                self.unsupported.join(", ")
            );
        }
    }
}

/// IPC sysctls that are per IPC namespace (besides `fs.mqueue.*`), as runc lists them.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Checks `linux.sysctl` as runc does: each key must be a sysctl of a
/// namespace the container has (IPC, network, UTS), never a host-wide one.
fn check_sysctl(
    sysctl: HashMap<String, String>,
    namespaces: &[NamespacePlan],
) -> Result<Vec<(String, String)>> {
    let has = |kind| namespaces.iter().any(|n| n.kind == kind);
    let mut out: Vec<(String, String)> = sysctl.into_iter().collect();
    out.sort();
    for (key, _) in &out {
        let needs = if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            Some((NamespaceKind::Ipc, "IPC"))
        } else if key.starts_with("net.") {
            Some((NamespaceKind::Network, "network"))
        } else if key == "kernel.domainname" {
            Some((NamespaceKind::Uts, "UTS"))
        } else {
            None
        };
        let bad_name = key.is_empty()
            || key
                .split('.')
                .any(|part| part.is_empty() || part == ".." || part.contains('/'));
        match needs {
            _ if bad_name => {
                return Err(Error::InvalidArgument(format!(
                    "linux.sysctl: '{key}' is not a sysctl name"
                )))
            }
            None => {
                return Err(Error::InvalidArgument(format!(
                    "linux.sysctl: {key} is not namespaced: setting it would change the host"
                )))
            }
            Some((kind, name)) if !has(kind) => {
                return Err(Error::InvalidArgument(format!(
                    "linux.sysctl: {key} belongs to the {name} namespace, and linux.namespaces has none"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(out)
}

/// Fields of the spec that are set and that nothing in the shim honours.
fn unhonoured(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(process) = spec.process() {
        if process
            .apparmor_profile()
            .as_ref()
            .is_some_and(|p| !p.is_empty())
        {
            out.push("process.apparmorProfile".into());
        }
        if process
            .selinux_label()
            .as_ref()
            .is_some_and(|p| !p.is_empty())
        {
            out.push("process.selinuxLabel".into());
        }
        if process.oom_score_adj().is_some() {
            out.push("process.oomScoreAdj".into());
        }
        if process.scheduler().is_some() {
            out.push("process.scheduler".into());
        }
        if process.io_priority().is_some() {
            out.push("process.ioPriority".into());
        }
    }
    let other_mounts: Vec<String> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| {
            let bind = m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind");
            !bind
        })
        .map(|m| m.destination().display().to_string())
        .collect();
    if !other_mounts.is_empty() {
        out.push(format!(
            "mounts other than bind mounts ({})",
            other_mounts.join(" ")
        ));
    }
    if let Some(linux) = spec.linux() {
        let set = |v: bool, name: &str, out: &mut Vec<String>| {
            if v {
                out.push(name.to_string());
            }
        };
        set(
            linux.devices().as_ref().is_some_and(|d| !d.is_empty()),
            "linux.devices",
            &mut out,
        );
        set(
            linux.masked_paths().as_ref().is_some_and(|d| !d.is_empty()),
            "linux.maskedPaths",
            &mut out,
        );
        set(
            linux
                .readonly_paths()
                .as_ref()
                .is_some_and(|d| !d.is_empty()),
            "linux.readonlyPaths",
            &mut out,
        );
        set(
            linux.uid_mappings().as_ref().is_some_and(|d| !d.is_empty())
                || linux.gid_mappings().as_ref().is_some_and(|d| !d.is_empty()),
            "linux.uidMappings/gidMappings",
            &mut out,
        );
        set(
            linux.mount_label().as_ref().is_some_and(|d| !d.is_empty()),
            "linux.mountLabel",
            &mut out,
        );
        set(linux.intel_rdt().is_some(), "linux.intelRdt", &mut out);
        set(linux.personality().is_some(), "linux.personality", &mut out);
        set(
            linux.rootfs_propagation().is_some(),
            "linux.rootfsPropagation",
            &mut out,
        );
    }
    out
}

/// Whether only the unified (v2) hierarchy is mounted.
fn is_cgroup2_only() -> bool {
    matches!(
        libcgroups::common::get_cgroup_setup(),
        Ok(libcgroups::common::CgroupSetup::Unified)
    )
}

/// The `RLIMIT_*` number of an OCI rlimit type.
fn rlimit_resource(typ: PosixRlimitType) -> RlimitKind {
    (match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as RlimitKind
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn cgroups_path_forms() {
        assert_eq!(
            CgroupsPath::parse("/default/c1", "c1").unwrap(),
            CgroupsPath::Fs("/default/c1".into())
        );
        assert_eq!(
            CgroupsPath::parse("", "c1").unwrap(),
            CgroupsPath::Fs("/c1".into())
        );
        assert_eq!(
            CgroupsPath::parse("kubepods/pod1/c1", "c1").unwrap(),
            CgroupsPath::Fs("/kubepods/pod1/c1".into())
        );
        let systemd = CgroupsPath::parse("system.slice:docker:abc", "abc").unwrap();
        assert_eq!(
            systemd,
            CgroupsPath::Systemd {
                slice: "system.slice".into(),
                prefix: "docker".into(),
                name: "abc".into()
            }
        );
        assert_eq!(
            systemd.fs_path(),
            PathBuf::from("/system.slice/docker-abc.scope")
        );
        let nested = CgroupsPath::parse("kubepods-besteffort-pod1.slice:cri:c9", "c9").unwrap();
        assert_eq!(
            nested.fs_path(),
            PathBuf::from(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-c9.scope"
            )
        );
        assert_eq!(
            CgroupsPath::parse(":p:n", "n").unwrap().fs_path(),
            PathBuf::from("/p-n.scope")
        );
    }

    #[test]
    fn sysctls_must_belong_to_the_containers_namespaces() {
        let with = |sysctl: serde_json::Value, namespaces: serde_json::Value| {
            Plan::from_spec(
                &spec(serde_json::json!({
                    "ociVersion": "1.0.2",
                    "root": {"path": "rootfs"},
                    "linux": {"sysctl": sysctl, "namespaces": namespaces}
                })),
                "c",
            )
        };
        // Docker's two defaults, in a new network namespace: kept, in key order.
        let plan = with(
            serde_json::json!({"net.ipv4.ping_group_range": "0 2147483647",
                               "net.ipv4.ip_unprivileged_port_start": "0"}),
            serde_json::json!([{"type": "network"}]),
        )
        .unwrap();
        assert_eq!(
            plan.confine.sysctl,
            vec![
                ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
                ("net.ipv4.ping_group_range".into(), "0 2147483647".into())
            ]
        );
        assert!(!plan.unsupported.iter().any(|u| u.contains("sysctl")));
        for (sysctl, namespaces, says) in [
            (
                serde_json::json!({"net.ipv4.ip_forward": "1"}),
                serde_json::json!([]),
                "belongs to the network namespace",
            ),
            (
                serde_json::json!({"kernel.shmmax": "1"}),
                serde_json::json!([{"type": "network"}]),
                "belongs to the IPC namespace",
            ),
            (
                serde_json::json!({"vm.swappiness": "0"}),
                serde_json::json!([{"type": "network"}]),
                "not namespaced",
            ),
            (
                serde_json::json!({"net..ipv4/../../x": "0"}),
                serde_json::json!([{"type": "network"}]),
                "not a sysctl name",
            ),
        ] {
            let err = with(sysctl.clone(), namespaces).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{sysctl}");
            assert!(err.to_string().contains(says), "{sysctl}: {err}");
        }
    }

    #[test]
    fn bad_cgroups_paths_name_the_field() {
        // "/" and "." (found by the property tests): the host's root cgroup.
        for bad in [
            "/a/../../etc",
            "a:b",
            "system:docker:abc",
            "a.slice:p:",
            "/",
            ".",
            "/./",
        ] {
            let err = CgroupsPath::parse(bad, "c").unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}");
            assert!(err.to_string().contains("linux.cgroupsPath"), "{err}");
        }
    }

    #[test]
    fn spec_becomes_plan() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "hostname": "box",
            "process": {
                "user": {"uid": 1000, "gid": 1001, "additionalGids": [5], "umask": 63},
                "cwd": "/",
                "args": ["/m.wasm"],
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}],
                "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
                "noNewPrivileges": true,
                "apparmorProfile": "docker-default"
            },
            "linux": {
                "cgroupsPath": "/ns/c1",
                "resources": {"memory": {"limit": 20971520}, "cpu": {"quota": 50000, "period": 100000}},
                "namespaces": [
                    {"type": "network", "path": "/run/netns/x"},
                    {"type": "uts"}, {"type": "ipc"}, {"type": "mount"}, {"type": "pid"}
                ],
                "maskedPaths": ["/proc/kcore"]
            },
            "hooks": {"prestart": [{"path": "/bin/true"}]}
        }));
        let plan = Plan::from_spec(&s, "c1").unwrap();
        assert_eq!(plan.cgroup.path, CgroupsPath::Fs("/ns/c1".into()));
        assert_eq!(
            plan.cgroup.resources.memory().as_ref().unwrap().limit(),
            Some(20971520)
        );
        let c = &plan.confine;
        assert_eq!(
            c.namespaces[0],
            NamespacePlan {
                kind: NamespaceKind::Network,
                path: Some("/run/netns/x".into())
            }
        );
        assert_eq!(c.namespaces.len(), 4);
        assert_eq!(c.hostname.as_deref(), Some("box"));
        let user = c.user.as_ref().unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1001));
        assert_eq!(user.additional_gids, vec![5]);
        assert_eq!(user.umask, Some(63));
        assert_eq!(c.rlimits, vec![(libc::RLIMIT_NOFILE as i32, 100, 200)]);
        assert!(c.no_new_privileges);
        assert!(c.capabilities.is_some());
        assert_eq!(plan.hooks.prestart().as_ref().unwrap().len(), 1);
        let unsupported = plan.unsupported.join(", ");
        assert!(
            unsupported.contains("linux.namespaces pid"),
            "{unsupported}"
        );
        assert!(
            unsupported.contains("process.apparmorProfile"),
            "{unsupported}"
        );
        assert!(unsupported.contains("linux.maskedPaths"), "{unsupported}");

        // The plan survives the trip to the worker.
        let json = serde_json::to_string(&plan.confine).unwrap();
        assert_eq!(&serde_json::from_str::<Confinement>(&json).unwrap(), c);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let cases = [
            (
                serde_json::json!({"hostname": "h", "linux": {"namespaces": [{"type": "network"}]}}),
                "hostname",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "network", "path": "rel"}]}}),
                "linux.namespaces",
            ),
            (
                serde_json::json!({"process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 300, "hard": 200}]}}),
                "process.rlimits",
            ),
            (
                serde_json::json!({"hooks": {"createRuntime": [{"path": "hook.sh"}]}}),
                "hooks",
            ),
            (
                serde_json::json!({"linux": {"cgroupsPath": "/a/../b"}}),
                "linux.cgroupsPath",
            ),
        ];
        for (mut json, field) in cases {
            json["ociVersion"] = "1.0.2".into();
            let err = Plan::from_spec(&spec(json), "c").unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }
}
