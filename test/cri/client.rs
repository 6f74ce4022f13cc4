//! The CRI test's client side: a CRI client (the kubelet's side, `k8s-cri` +
//! tonic over containerd's unix socket) and readers of what the CRI shows a
//! user: verbose status info, CRI log files, namespaces of processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// A CRI client (the kubelet's side) over containerd's unix socket.
pub struct Cri {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    /// Connects to the CRI at containerd's `socket`.
    pub fn connect(socket: &Path) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let socket = socket.to_path_buf();
        // The URI is required by tonic and unused: the connector dials the socket.
        let channel =
            runtime.block_on(Endpoint::try_from("http://[::]")?.connect_with_connector(
                tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }),
            ))?;
        Ok(Cri {
            runtime,
            client: RuntimeServiceClient::new(channel),
        })
    }

    /// Runs one CRI call to its end.
    pub fn call<T, F>(
        &self,
        what: &str,
        call: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.runtime
            .block_on(call(self.client.clone()))
            .map(tonic::Response::into_inner)
            .map_err(|s| anyhow::anyhow!("{what}: {:?}: {}", s.code(), s.message()))
    }

    /// ContainerStatus, verbose (with the `info` JSON).
    pub fn container_status(&self, id: &str) -> anyhow::Result<cri::ContainerStatusResponse> {
        let request = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        self.call("ContainerStatus", |mut c| async move {
            c.container_status(request).await
        })
    }

    /// PodSandboxStatus of `pod`; `verbose` adds the `info` JSON (the
    /// sandbox's pid).
    pub fn pod_status(
        &self,
        pod: &str,
        verbose: bool,
    ) -> anyhow::Result<cri::PodSandboxStatusResponse> {
        let request = cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose,
        };
        self.call("PodSandboxStatus", |mut c| async move {
            c.pod_sandbox_status(request).await
        })
    }

    /// Waits until container `id` is in `state`; returns its status.
    pub fn wait_for_state(
        &self,
        id: &str,
        state: cri::ContainerState,
        limit: Duration,
    ) -> anyhow::Result<cri::ContainerStatusResponse> {
        let deadline = Instant::now() + limit;
        loop {
            let response = self.container_status(id)?;
            let status = response.status.as_ref().context("no status")?;
            if status.state == state as i32 {
                return Ok(response);
            }
            ensure!(
                Instant::now() < deadline,
                "container {id} is {:?} after {limit:?}, not {state:?}: {} {}",
                cri::ContainerState::try_from(status.state),
                status.reason,
                status.message
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `pid` of a verbose status's `info` JSON (containerd's CRI puts it there).
pub fn info_pid(info: &HashMap<String, String>) -> anyhow::Result<u32> {
    let json: serde_json::Value =
        serde_json::from_str(info.get("info").context("no verbose info")?)?;
    json["pid"]
        .as_u64()
        .filter(|&pid| pid > 0)
        .map(|pid| pid as u32)
        .with_context(|| format!("no pid in the verbose info: {json}"))
}

/// The inode of a namespace link such as `/proc/<pid>/ns/ipc`.
pub fn namespace(pid: &str, kind: &str) -> anyhow::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .with_context(|| format!("reading /proc/{pid}/ns/{kind}"))
}

/// The contents of the lines of a CRI log file, each checked to be in the
/// CRI format `<RFC 3339 time> <stdout|stderr> <F|P> <text>`.
pub fn cri_log(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (time, stream, tag, content) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let time_ok = time.len() >= 20
                && time.as_bytes()[4] == b'-'
                && time.as_bytes()[10] == b'T'
                && (time.ends_with('Z') || time.contains('+'));
            ensure!(
                time_ok && ["stdout", "stderr"].contains(&stream) && ["F", "P"].contains(&tag),
                "{}: not in the CRI log format: {line:?}",
                path.display()
            );
            Ok(content.to_string())
        })
        .collect()
}

/// Waits until the CRI log at `path` has a line equal to `expected`.
pub fn wait_for_log_line(path: &Path, expected: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let lines = cri_log(path)?;
        if lines.iter().any(|l| l == expected) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{} has no line {expected:?} after {limit:?}: {lines:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
