//! Wasm OCI artifact images: the module is the image's one layer (the CNCF
//! Wasm OCI layout, as `wasmshim image build --artifact` writes it), and the
//! shim reads it from containerd's content store.
//!
//! Debian 12's containerd 1.6.20 cannot `ctr run` such an image: ctr unpacks
//! every image before it creates the container, and 1.6.20 refuses layers
//! that are not tars ("mismatched image rootfs and manifest layers"; 1.6.25
//! and 1.7.7 skip them and give the container an empty rootfs). So these
//! cases do through containerd's own API what `ctr run` of those versions
//! does: import without unpacking, create the container on an empty
//! snapshot, run its task and delete it all.

use std::path::Path;

use anyhow::{ensure, Context};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use containerd_client::with_namespace;
use wasmshim_cli::image::ArtifactSpec;
use wasmshim_integration::{image, Containerd, NAMESPACE};

use crate::Env;

/// The snapshotter of the containers (containerd's default).
const SNAPSHOTTER: &str = "overlayfs";

/// Imports the artifact images of the `args` module, of a corrupt module
/// and of a shell script, without unpacking them (1.6.20 cannot).
pub fn import(containerd: &Containerd, modules_dir: &Path) -> anyhow::Result<()> {
    let corrupt = b"\0asm\x01\0\0\0\x01\xffgarbage".to_vec();
    for (name, wasm) in [
        (
            "artifact-args",
            std::fs::read(modules_dir.join("args.wasm"))?,
        ),
        ("artifact-corrupt", corrupt),
        ("artifact-script", b"#!/bin/sh\necho hi\n".to_vec()),
    ] {
        let tar = containerd.dir().join(format!("{name}.tar"));
        ArtifactSpec {
            name: image(name),
            title: "args.wasm".into(),
            wasm,
        }
        .write_archive(std::fs::File::create(&tar)?)?;
        let out = containerd
            .ctr_command(&[
                "image",
                "import",
                "--no-unpack",
                "--all-platforms",
                tar.to_str().unwrap(),
            ])
            .output()
            .context("running ctr")?;
        std::fs::remove_file(&tar)?;
        ensure!(
            out.status.success(),
            "ctr image import {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// An artifact image runs: the module gets its argv (argv[0] as the
/// entrypoint names it) and env, and its output and exit status are the
/// task's.
pub fn module_from_the_image_runs(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let run = run_task(
        &env.containerd,
        rt,
        id,
        &image("artifact-args"),
        &["/args.wasm", "one", "two words"],
    )?;
    let (status, stdout, stderr) = run.map_err(|e| anyhow::anyhow!("creating the task: {e}"))?;
    ensure!(status == 0, "exit status {status}: {stdout:?} {stderr:?}");
    for expected in [
        "arg 0=/args.wasm\n",
        "arg 1=one\n",
        "arg 2=two words\n",
        "env GREETING=from the spec\n",
    ] {
        ensure!(
            stdout.contains(expected),
            "stdout lacks {expected:?}: {stdout:?} (stderr {stderr:?})"
        );
    }
    // No args at all: the image's module runs, named by its layer's title.
    let (status, stdout, _) = run_task(&env.containerd, rt, id, &image("artifact-args"), &[])?
        .map_err(|e| anyhow::anyhow!("creating the task without args: {e}"))?;
    ensure!(status == 0, "exit status {status} without args");
    ensure!(stdout.contains("arg 0=args.wasm\n"), "{stdout:?}");
    Ok(())
}

/// An artifact whose layer is not WebAssembly, or not a valid module, fails
/// at Create with an error naming the layer or the module, and leaves
/// nothing behind (the case's leftover check).
pub fn bad_layers_are_refused(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    for (name, expected) in [
        (
            "artifact-script",
            "(application/wasm): not a WebAssembly module (it does not start with the \\0asm magic number)",
        ),
        ("artifact-corrupt", "/args.wasm is not a valid WebAssembly module"),
    ] {
        let refused = run_task(&env.containerd, rt, id, &image(name), &["/args.wasm"])?;
        let Err(message) = refused else {
            anyhow::bail!("the bad layer of {name} was run");
        };
        ensure!(
            message.contains(expected),
            "the error for {name} does not say {expected:?}: {message}"
        );
    }
    Ok(())
}

/// What one task of `image` printed: its exit status, stdout and stderr; or
/// the error of its Create. Everything it made is deleted before returning.
fn run_task(
    containerd: &Containerd,
    rt: &str,
    id: &str,
    image: &str,
    args: &[&str],
) -> anyhow::Result<Result<(u32, String, String), String>> {
    let io = containerd.dir().join("artifact-io").join(id);
    std::fs::create_dir_all(&io)?;
    let (stdout, stderr) = (io.join("stdout"), io.join("stderr"));
    std::fs::write(&stdout, "")?;
    std::fs::write(&stderr, "")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let channel = containerd_client::connect(containerd.socket()).await?;
        let ran = match create_container(&channel, rt, id, image, args).await {
            Ok(mounts) => Ok(run(&channel, id, mounts, &stdout, &stderr).await),
            Err(e) => Err(e),
        };
        remove_container(&channel, id).await;
        ran
    });
    let printed = (
        std::fs::read_to_string(&stdout).unwrap_or_default(),
        std::fs::read_to_string(&stderr).unwrap_or_default(),
    );
    std::fs::remove_dir_all(&io)?;
    Ok(match result? {
        Ok(status) => Ok((status, printed.0, printed.1)),
        Err(e) => Err(e),
    })
}

/// Makes container `id` of `image` on an empty snapshot, as ctr 1.6.25
/// does for an image without rootfs layers; returns the snapshot's mounts.
async fn create_container(
    channel: &Channel,
    rt: &str,
    id: &str,
    image: &str,
    args: &[&str],
) -> anyhow::Result<Vec<containerd_client::types::Mount>> {
    let mounts = SnapshotsClient::new(channel.clone())
        .prepare(with_namespace!(
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
                ..Default::default()
            },
            NAMESPACE
        ))
        .await
        .context("preparing the snapshot")?
        .into_inner()
        .mounts;
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/", "GREETING=from the spec"],
        },
        "root": {"path": "rootfs"},
        "linux": {
            "cgroupsPath": format!("/{NAMESPACE}/{id}"),
            "namespaces": [{"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}]
        }
    });
    let container = Container {
        id: id.into(),
        image: image.into(),
        runtime: Some(Runtime {
            name: rt.into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: serde_json::to_vec(&spec)?,
        }),
        snapshotter: SNAPSHOTTER.into(),
        snapshot_key: id.into(),
        ..Default::default()
    };
    ContainersClient::new(channel.clone())
        .create(with_namespace!(
            CreateContainerRequest {
                container: Some(container),
            },
            NAMESPACE
        ))
        .await
        .context("creating the container")?;
    Ok(mounts)
}

/// Creates, starts and waits for the task of container `id`; its exit
/// status, or the error containerd gave (Create's, as ctr would print it).
async fn run(
    channel: &Channel,
    id: &str,
    rootfs: Vec<containerd_client::types::Mount>,
    stdout: &Path,
    stderr: &Path,
) -> Result<u32, String> {
    let mut tasks = TasksClient::new(channel.clone());
    tasks
        .create(with_namespace!(
            CreateTaskRequest {
                container_id: id.into(),
                rootfs,
                stdout: stdout.display().to_string(),
                stderr: stderr.display().to_string(),
                ..Default::default()
            },
            NAMESPACE
        ))
        .await
        .map_err(|s| s.message().to_string())?;
    let started = tasks
        .start(with_namespace!(
            StartRequest {
                container_id: id.into(),
                ..Default::default()
            },
            NAMESPACE
        ))
        .await;
    let waited = match started {
        Ok(_) => tasks
            .wait(with_namespace!(
                WaitRequest {
                    container_id: id.into(),
                    ..Default::default()
                },
                NAMESPACE
            ))
            .await
            .map(|r| r.into_inner().exit_status)
            .map_err(|s| format!("waiting: {}", s.message())),
        Err(s) => Err(format!("starting: {}", s.message())),
    };
    let deleted = tasks
        .delete(with_namespace!(
            DeleteTaskRequest {
                container_id: id.into(),
            },
            NAMESPACE
        ))
        .await;
    let status = waited?;
    deleted.map_err(|s| format!("deleting the task: {}", s.message()))?;
    Ok(status)
}

/// Deletes container `id` and its snapshot, whatever exists of them.
async fn remove_container(channel: &Channel, id: &str) {
    let _ = ContainersClient::new(channel.clone())
        .delete(with_namespace!(
            DeleteContainerRequest { id: id.into() },
            NAMESPACE
        ))
        .await;
    let _ = SnapshotsClient::new(channel.clone())
        .remove(with_namespace!(
            RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
            },
            NAMESPACE
        ))
        .await;
}
