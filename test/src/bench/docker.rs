//! The Docker scenario of `make bench`: `docker run --rm` of hello through
//! `wasmshim-oci` against busybox `echo hi` through runc, both in one private
//! Docker 20.10 daemon (see [`crate::clients::Docker`]), interleaved round by
//! round. Runs in the bench process; the daemon is the caller's to stop.

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use anyhow::{bail, Context};
use wasmshim_cli::image::ImageSpec;

use super::scenarios::Samples;
use crate::clients::Docker;
use crate::text;

/// Label of our side: Docker's runtime `wasmshim` is this binary.
pub const OURS: &str = "wasmshim-oci";

/// The client [`Docker::command`] runs.
const CLIENT: &str = "/usr/bin/docker";

/// One side of the comparison: a runtime Docker knows and what it runs.
#[derive(Debug, Clone)]
pub struct DockerKind {
    /// Label in tables: `runc+busybox` or [`OURS`].
    pub label: String,
    /// `docker run --runtime` value: `runc` or [`crate::clients::RUNTIME`].
    pub runtime: String,
    /// Image reference, loaded with [`load`].
    pub image: String,
    /// `--entrypoint`, if not the image's.
    pub entrypoint: Option<String>,
    /// Arguments after the image.
    pub args: Vec<String>,
    /// What the container prints.
    pub output: String,
}

/// [`Docker::start`] with `oci` as runtime, after checking that the client
/// exists (`Docker::start` would panic without it).
pub fn start(oci: &Path) -> anyhow::Result<Docker> {
    if !Path::new(CLIENT).is_file() {
        bail!("{CLIENT} is missing (apt-get install docker.io)");
    }
    Docker::start(oci).context("starting a private dockerd")
}

/// Docker 20.10 loads only `linux` images: a Wasm image gets the platform
/// `wasmshim image build --platform linux/amd64` would give it.
pub fn linux_platform(mut spec: ImageSpec) -> ImageSpec {
    spec.os = "linux".into();
    spec.architecture = "amd64".into();
    spec
}

/// `docker load` of `spec`, written as an archive in the daemon's temp dir.
pub fn load(docker: &Docker, spec: &ImageSpec) -> anyhow::Result<()> {
    let tar = docker.dir().join("image.tar");
    spec.write_archive(std::fs::File::create(&tar)?)?;
    let out = run(docker, &["load", "-i", tar.to_str().context("temp path")?])?;
    check(&out, &format!("docker load {}", spec.name))?;
    let _ = std::fs::remove_file(&tar);
    Ok(())
}

/// `docker run --rm --network none --runtime R` of every kind: one untimed
/// warm-up run of each, then `rounds` timed rounds (every kind once a
/// round, in order). Wall time of the client, ms.
pub fn docker_run(
    docker: &Docker,
    kinds: &[DockerKind],
    rounds: usize,
) -> anyhow::Result<Vec<Samples>> {
    let mut samples: Vec<Samples> = kinds
        .iter()
        .map(|k| Samples {
            kind: k.label.clone(),
            ms: Vec::with_capacity(rounds),
        })
        .collect();
    for kind in kinds {
        run_once(docker, kind).with_context(|| format!("{}: warm-up", kind.label))?;
    }
    for _ in 0..rounds {
        for (kind, out) in kinds.iter().zip(samples.iter_mut()) {
            out.ms.push(run_once(docker, kind)?);
        }
    }
    let left = run(docker, &["ps", "--all", "--quiet"])?;
    let left = String::from_utf8_lossy(&left.stdout);
    if !left.trim().is_empty() {
        bail!(
            "containers left after docker run --rm: {}",
            left.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    Ok(samples)
}

/// One timed `docker run --rm` of `kind`, checked for its output; ms.
fn run_once(docker: &Docker, kind: &DockerKind) -> anyhow::Result<f64> {
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime",
        &kind.runtime,
    ];
    if let Some(entrypoint) = &kind.entrypoint {
        args.extend(["--entrypoint", entrypoint]);
    }
    args.push(&kind.image);
    args.extend(kind.args.iter().map(String::as_str));
    let started = Instant::now();
    let out = run(docker, &args)?;
    let elapsed = started.elapsed();
    check(&out, &format!("{}: docker {}", kind.label, args.join(" ")))?;
    if !String::from_utf8_lossy(&out.stdout).contains(&kind.output) {
        bail!(
            "{}: docker run printed {:?}, not {:?}",
            kind.label,
            text(&out).0,
            kind.output
        );
    }
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// The client against `docker`; an error, not a panic, when it cannot run.
fn run(docker: &Docker, args: &[&str]) -> anyhow::Result<Output> {
    docker
        .command(args)
        .output()
        .context("running /usr/bin/docker (apt-get install docker.io)")
}

fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    if !out.status.success() {
        let (stdout, stderr) = text(out);
        bail!("{what}: {}: {stdout}{stderr}", out.status);
    }
    Ok(())
}
