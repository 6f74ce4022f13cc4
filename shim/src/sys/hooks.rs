//! OCI hooks (`hooks` in `config.json`), run by the shim process.
//!
//! Each hook gets the container's state JSON on stdin, its own `args` and
//! `env` (nothing else), and is killed when its `timeout` (seconds) expires.
//! When each kind runs, adapted to a worker process (see
//! `docs/process-model.md`):
//!
//! | kind | when | namespaces |
//! |---|---|---|
//! | `prestart`, `createRuntime` | Create, once the worker is in its cgroup and namespaces and the module is compiled | the shim's |
//! | `createContainer` | right after those | the worker's (setns) |
//! | `startContainer` | Start, before the worker is told to run the module | the worker's |
//! | `poststart` | Start, after the worker is told | the shim's |
//! | `poststop` | Delete, after the worker is gone and its cgroup removed | the shim's |
//!
//! A failing `prestart`, `createRuntime`, `createContainer` or
//! `startContainer` hook fails the request with the hook's message; a failing
//! `poststart` or `poststop` hook is logged, as the runtime spec says.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use oci_spec::runtime::{Hook, Hooks};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// The points of the container's life where hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// Deprecated `prestart`: with `createRuntime`.
    Prestart,
    /// `createRuntime`: after the container's environment exists.
    CreateRuntime,
    /// `createContainer`: in the container's namespaces, before Create returns.
    CreateContainer,
    /// `startContainer`: in the container's namespaces, before the module runs.
    StartContainer,
    /// `poststart`: after the module was started.
    Poststart,
    /// `poststop`: after the container is deleted.
    Poststop,
}

impl HookKind {
    /// The name of the list in `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    /// The container status the state JSON reports to this kind of hook.
    fn status(self) -> &'static str {
        match self {
            HookKind::Prestart | HookKind::CreateRuntime | HookKind::CreateContainer => "creating",
            HookKind::StartContainer => "created",
            HookKind::Poststart => "running",
            HookKind::Poststop => "stopped",
        }
    }

    /// Whether the hook runs in the container's namespaces.
    fn in_container(self) -> bool {
        matches!(self, HookKind::CreateContainer | HookKind::StartContainer)
    }

    fn list(self, hooks: &Hooks) -> &[Hook] {
        let list = match self {
            HookKind::Prestart => hooks.prestart(),
            HookKind::CreateRuntime => hooks.create_runtime(),
            HookKind::CreateContainer => hooks.create_container(),
            HookKind::StartContainer => hooks.start_container(),
            HookKind::Poststart => hooks.poststart(),
            HookKind::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or_default()
    }
}

/// The container, as its hooks see it.
#[derive(Debug, Clone)]
pub struct HookContext<'a> {
    /// Container id.
    pub id: &'a str,
    /// Bundle directory.
    pub bundle: &'a Path,
    /// The worker's pid (0 once it is gone).
    pub pid: u32,
    /// The spec's annotations.
    pub annotations: &'a HashMap<String, String>,
}

impl HookContext<'_> {
    /// The OCI state JSON for a hook of `kind`.
    pub fn state(&self, kind: HookKind) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": kind.status(),
            "pid": self.pid,
            "bundle": self.bundle,
            "annotations": self.annotations,
        })
    }
}

/// Runs the hooks of `kind`, in order; stops at the first that fails.
pub async fn run(kind: HookKind, hooks: &Hooks, context: &HookContext<'_>) -> Result<()> {
    let list = kind.list(hooks);
    if list.is_empty() {
        return Ok(());
    }
    let state = context.state(kind).to_string();
    let namespaces = if kind.in_container() && context.pid != 0 {
        container_namespaces(context.pid)?
    } else {
        Vec::new()
    };
    for hook in list {
        run_one(kind, hook, &state, &namespaces).await?;
    }
    Ok(())
}

/// Runs the hooks of `kind` and logs (rather than returns) a failure, for
/// the kinds whose failure does not change the container's fate.
pub async fn run_logged(kind: HookKind, hooks: &Hooks, context: &HookContext<'_>) {
    if let Err(e) = run(kind, hooks, context).await {
        log::warn!("container {}: {e}", context.id);
    }
}

/// Opens the worker's namespaces for a hook child to join.
fn container_namespaces(pid: u32) -> Result<Vec<(OwnedFd, libc::c_int)>> {
    let mut out = Vec::new();
    for (name, flag) in [
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("cgroup", libc::CLONE_NEWCGROUP),
        // Last: it changes what paths mean.
        ("mnt", libc::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{pid}/ns/{name}");
        let file = File::open(&path).map_err(|e| Error::internal(format!("opening {path}"), e))?;
        out.push((OwnedFd::from(file), flag));
    }
    Ok(out)
}

async fn run_one(
    kind: HookKind,
    hook: &Hook,
    state: &str,
    namespaces: &[(OwnedFd, libc::c_int)],
) -> Result<()> {
    let path = hook.path();
    let what = format!("{} hook {}", kind.name(), path.display());
    let mut command = tokio::process::Command::new(path);
    let args = hook.args().clone().unwrap_or_default();
    if let Some(arg0) = args.first() {
        command.arg0(arg0);
    }
    command
        .args(args.iter().skip(1))
        .env_clear()
        .envs(
            hook.env()
                .iter()
                .flatten()
                .filter_map(|kv| kv.split_once('=')),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    if !namespaces.is_empty() {
        let fds: Vec<(i32, libc::c_int)> = namespaces
            .iter()
            .map(|(fd, flag)| (fd.as_raw_fd(), *flag))
            .collect();
        // SAFETY: the closure runs in the forked, single-threaded child before
        // exec and only calls setns, which is async-signal-safe, on descriptors
        // the parent keeps open until the child is spawned.
        unsafe {
            command.pre_exec(move || {
                for &(fd, flag) in &fds {
                    if libc::setns(fd, flag) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| Error::internal(format!("starting {what}"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin may have exited already.
        let _ = stdin.write_all(state.as_bytes()).await;
    }
    let pid = child.id();
    let output = child.wait_with_output();
    let output = match hook.timeout() {
        Some(secs) => match tokio::time::timeout(Duration::from_secs(secs as u64), output).await {
            Ok(output) => output,
            Err(_) => {
                if let Some(pid) = pid {
                    // The hook leads its group: its children go with it.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(Error::internal(
                    what,
                    anyhow::anyhow!("timed out after {secs} s"),
                ));
            }
        },
        None => output.await,
    }
    .map_err(|e| Error::internal(format!("waiting for {what}"), e))?;
    if !output.status.success() {
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if message.is_empty() {
            message = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        return Err(Error::internal(
            what,
            anyhow::anyhow!("{}: {message}", output.status),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(json: serde_json::Value) -> Hooks {
        serde_json::from_value(json).unwrap()
    }

    #[tokio::test]
    async fn hook_reads_state_and_failure_carries_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("state.json");
        let annotations = HashMap::from([("a".to_string(), "b".to_string())]);
        let context = HookContext {
            id: "c1",
            bundle: dir.path(),
            pid: 7,
            annotations: &annotations,
        };
        let h = hooks(serde_json::json!({
            "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", out.display())]}],
            "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo 'no network for you' >&2; exit 1"]}],
            "poststop": [{"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}]
        }));
        run(HookKind::CreateRuntime, &h, &context).await.unwrap();
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(state["id"], "c1");
        assert_eq!(state["pid"], 7);
        assert_eq!(state["status"], "creating");
        assert_eq!(state["annotations"]["a"], "b");

        let err = run(HookKind::Prestart, &h, &context).await.unwrap_err();
        let message = err.message();
        assert!(message.contains("prestart hook /bin/sh"), "{message}");
        assert!(message.contains("no network for you"), "{message}");

        let started = std::time::Instant::now();
        let err = run(HookKind::Poststop, &h, &context).await.unwrap_err();
        assert!(
            err.message().contains("timed out after 1 s"),
            "{}",
            err.message()
        );
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
