//! Inputs shared by the doctor's tests: a containerd config, a shim's
//! `--version` output, engine entries, scripts standing in for binaries.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use wasmshim::engine::EngineEntry;

use super::{Finding, Status};

/// The runtime part of `containerd config default` of containerd 1.6.
pub(super) const DEFAULT_1X: &str = r#"version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = false
"#;

/// What `containerd-shim-wasmtime-v1 --version` prints, as a shell command.
pub(super) const SHIM_VERSION: &str = "printf 'containerd-shim-wasmtime-v1:\\n  Runtime:  io.containerd.wasmtime.v1\\n  Version:  0.1.0\\n  Revision: abc1234\\n  Engine:   wasmtime 48.0.8\\n'";

/// The wasmtime engine, which needs no system library.
pub(super) const WASMTIME: EngineEntry = EngineEntry {
    name: "wasmtime",
    needs: None,
};
/// The WasmEdge engine, which needs `libwasmedge`.
pub(super) const WASMEDGE: EngineEntry = EngineEntry {
    name: "wasmedge",
    needs: Some("libwasmedge"),
};

/// The `why` and `fix` of a failed finding; panics on any other.
pub(super) fn why_and_fix(finding: &Finding) -> (&str, &str) {
    match &finding.status {
        Status::Fail { why, fix } => (why, fix),
        _ => panic!("expected a failure: {finding}"),
    }
}

/// Writes an executable shell script `dir/name` running `body`.
pub(super) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
