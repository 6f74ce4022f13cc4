//! `linux.seccomp` → a libseccomp filter.
//!
//! The translation follows youki's `libcontainer::seccomp` (Apache-2.0), which
//! we do not depend on: that crate brings netlink, CRIU and protobuf code the
//! shim has no use for. [`check`] runs in the shim at Create, so that a profile
//! libseccomp cannot build is an `InvalidArgument` before any process exists;
//! [`load`] runs in the worker, last before the module runs.

use std::collections::HashSet;

use anyhow::Context;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::error::{Error, Result};

/// Checks that `profile` builds into a filter (without loading it).
pub fn check(profile: &LinuxSeccomp) -> Result<()> {
    build(profile)
        .map(|_| ())
        .map_err(|e| Error::InvalidArgument(format!("linux.seccomp: {e:#}")))
}

/// Builds the filter of `profile` and loads it into this process (every
/// thread, with `SECCOMP_FILTER_FLAG_TSYNC`).
pub fn load(profile: &LinuxSeccomp) -> anyhow::Result<()> {
    let mut ctx = build(profile)?;
    ctx.set_ctl_tsync(true)
        .context("seccomp: synchronising threads")?;
    ctx.load().context("loading the seccomp filter")
}

fn build(profile: &LinuxSeccomp) -> anyhow::Result<ScmpFilterContext> {
    if profile.default_action() == LinuxSeccompAction::ScmpActNotify
        || profile
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
    {
        anyhow::bail!("SCMP_ACT_NOTIFY (a seccomp agent) is not supported");
    }
    let default_action = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default_action).context("creating the filter")?;
    // We set no_new_privs ourselves, as process.noNewPrivileges says.
    ctx.set_ctl_nnp(false).context("seccomp: nnp attribute")?;
    for flag in profile.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        }
        .with_context(|| format!("flag {flag:?}"))?;
    }
    for &arch in profile.architectures().iter().flatten() {
        let arch = translate_arch(arch);
        match ctx.add_arch(arch) {
            Ok(_) => {}
            // An architecture libseccomp does not know on this machine is no use anyway.
            Err(e) => log::debug!("seccomp: architecture {arch:?} skipped: {e}"),
        }
    }
    for syscall in profile.syscalls().iter().flatten() {
        let act = action(syscall.action(), syscall.errno_ret())?;
        if act == default_action {
            // libseccomp refuses a rule that repeats the default action; it changes nothing.
            continue;
        }
        for name in syscall.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                // Profiles name syscalls newer than this libseccomp (Docker's does): skip them.
                log::debug!("seccomp: unknown syscall {name} skipped");
                continue;
            };
            let args: Vec<ScmpArgCompare> = syscall
                .args()
                .iter()
                .flatten()
                .map(|a| {
                    ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value())
                })
                .collect();
            let mut seen = HashSet::new();
            let repeated = syscall
                .args()
                .iter()
                .flatten()
                .any(|a| !seen.insert(a.index()));
            if args.is_empty() {
                ctx.add_rule(act, nr)
            } else if repeated {
                // Conditions on one argument cannot be ANDed by libseccomp: like runc, OR them.
                args.iter()
                    .try_for_each(|a| {
                        ctx.add_rule_conditional(act, nr, std::slice::from_ref(a))
                            .map(|_| ())
                    })
                    .map(|_| &mut ctx)
            } else {
                ctx.add_rule_conditional(act, nr, &args)
            }
            .with_context(|| format!("rule for {name}"))?;
        }
    }
    Ok(ctx)
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> anyhow::Result<ScmpAction> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(u16::try_from(errno).context("SCMP_ACT_TRACE errno")?)
        }
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => anyhow::bail!("SCMP_ACT_NOTIFY is not supported"),
    })
}

fn op(op: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

fn translate_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn docker_like_profile_builds_and_skips_unknown_syscalls() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["read", "write", "no_such_syscall_42"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                          {"index": 0, "value": 131072, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]
        }));
        check(&p).unwrap();
    }

    #[test]
    fn notify_is_refused_with_the_field_name() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        let err = check(&p).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(err.to_string().contains("linux.seccomp"), "{err}");
    }
}
