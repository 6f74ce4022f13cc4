//! `wasmshim image build`: an OCI image archive with one Wasm module.
//!
//! The image has the shape of Docker's `--platform wasi/wasm` images: one
//! uncompressed layer holding the module, `os: wasi`, `architecture: wasm`
//! (or the `--platform` given: Docker 20.10 loads only `linux` images), and
//! the module's path as the entrypoint; its manifest carries crun's
//! annotation `module.wasm.image/variant=compat`. The archive is an OCI
//! image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) with a
//! docker-archive `manifest.json` beside it, so that one tar file loads with
//! `ctr image import`, `docker load` (also before Docker 25) and `podman load`.
//! [`ImageSpec`] writes any single-layer image (the tests build busybox with it).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context};
use oci_spec::distribution::Reference;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
    Sha256Digest,
};
use sha2::{Digest as _, Sha256};

/// Arguments of `wasmshim image build`.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// The .wasm module to package.
    pub module: PathBuf,
    /// Image reference, e.g. `docker.io/library/hello:latest`.
    #[arg(long)]
    pub name: String,
    /// Path of the module inside the image (default: `/<file name>`).
    #[arg(long)]
    pub path: Option<String>,
    /// Default argument after the module (repeatable): the image's `Cmd`.
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Environment variable `KEY=VALUE` (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Platform `os/arch` of the image: `wasi/wasm`, or `linux/amd64` for
    /// Docker 20.10, which refuses to load other operating systems.
    #[arg(long, default_value = "wasi/wasm")]
    pub platform: String,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// crun's image annotation for Wasm images, which podman passes to the
/// runtime; `compat` says the entrypoint is a module (honoured by wasmshim-oci).
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";

/// Builds the image archive described by `args`.
pub fn build(args: &BuildArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    if wasmshim::engine::WasmKind::of(&wasm).is_none() {
        bail!(
            "{} is not a WebAssembly module or component",
            args.module.display()
        );
    }
    for kv in &args.env {
        if !kv.contains('=') {
            bail!("--env {kv}: expected KEY=VALUE");
        }
    }
    let path = match &args.path {
        Some(p) if p.starts_with('/') => p.clone(),
        Some(p) => bail!("--path {p}: must be absolute"),
        None => {
            let file = args
                .module
                .file_name()
                .context("module path has no file name")?;
            format!("/{}", file.to_string_lossy())
        }
    };
    let (os, architecture) = args
        .platform
        .split_once('/')
        .filter(|(os, arch)| !os.is_empty() && !arch.is_empty() && !arch.contains('/'))
        .with_context(|| format!("--platform {}: expected os/arch", args.platform))?;
    let image = ImageSpec {
        name: args.name.clone(),
        os: os.into(),
        architecture: architecture.into(),
        entries: vec![LayerEntry::File {
            path: path.clone(),
            data: wasm,
            mode: 0o755,
        }],
        entrypoint: vec![path.clone()],
        cmd: args.args.clone(),
        env: args.env.clone(),
    };
    let out = std::fs::File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    image.write_archive(out)?;
    eprintln!(
        "wrote {} ({}, entrypoint {path})",
        args.output.display(),
        args.name
    );
    Ok(())
}

/// One entry of the image's single layer.
#[derive(Debug, Clone)]
pub enum LayerEntry {
    /// A regular file.
    File {
        /// Absolute path in the image.
        path: String,
        /// Contents.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// Absolute path in the image.
        path: String,
        /// Where it points.
        target: String,
    },
}

/// A single-layer image: what `write_archive` packs.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Reference, `repo[:tag]`.
    pub name: String,
    /// Platform OS (`wasi`, `linux`).
    pub os: String,
    /// Platform architecture (`wasm`, `amd64`).
    pub architecture: String,
    /// The layer's files.
    pub entries: Vec<LayerEntry>,
    /// The image's `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// The image's `Cmd`.
    pub cmd: Vec<String>,
    /// The image's `Env`, `KEY=VALUE`.
    pub env: Vec<String>,
}

impl ImageSpec {
    /// Writes the image as an OCI image layout in a tar stream.
    pub fn write_archive(&self, out: impl Write) -> anyhow::Result<()> {
        let reference: Reference = self
            .name
            .parse()
            .with_context(|| format!("image reference {:?}", self.name))?;
        let os = Os::from(self.os.as_str());
        let arch = Arch::from(self.architecture.as_str());

        let layer = self.layer_tar()?;
        let layer_desc = descriptor(MediaType::ImageLayer, &layer)?;
        let config = ImageConfigurationBuilder::default()
            .architecture(arch.clone())
            .os(os.clone())
            .config(
                ConfigBuilder::default()
                    .entrypoint(self.entrypoint.clone())
                    .cmd(self.cmd.clone())
                    .env(self.env.clone())
                    .working_dir("/")
                    .build()?,
            )
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![layer_desc.digest().to_string()])
                    .build()?,
            )
            .build()?;
        let config = serde_json::to_vec(&config)?;
        let config_desc = descriptor(MediaType::ImageConfig, &config)?;

        let mut manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc.clone())
            .layers(vec![layer_desc.clone()])
            .build()?;
        if self.runs_wasm() {
            manifest.set_annotations(Some(HashMap::from([(
                VARIANT_ANNOTATION.to_string(),
                "compat".to_string(),
            )])));
        }
        let manifest = serde_json::to_vec(&manifest)?;
        let mut manifest_desc = descriptor(MediaType::ImageManifest, &manifest)?;
        manifest_desc.set_platform(Some(
            PlatformBuilder::default()
                .architecture(arch)
                .os(os)
                .build()?,
        ));
        let mut annotations =
            HashMap::from([("io.containerd.image.name".to_string(), reference.whole())]);
        if let Some(tag) = reference.tag() {
            annotations.insert(
                "org.opencontainers.image.ref.name".to_string(),
                tag.to_string(),
            );
        }
        manifest_desc.set_annotations(Some(annotations));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![manifest_desc])
            .build()?;
        let index = serde_json::to_vec(&index)?;
        let blob = |digest: &Digest| format!("blobs/sha256/{}", digest.digest());
        // docker-archive's manifest, pointing at the same blobs.
        let repo_tags = match reference.tag() {
            Some(_) => vec![reference.whole()],
            None => vec![],
        };
        let docker_manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": blob(config_desc.digest()),
            "RepoTags": repo_tags,
            "Layers": [blob(layer_desc.digest())],
        }]))?;

        let mut archive = tar::Builder::new(out);
        append(
            &mut archive,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            0o644,
        )?;
        append(&mut archive, "index.json", &index, 0o644)?;
        append(&mut archive, "manifest.json", &docker_manifest, 0o644)?;
        for blob in [&layer, &config, &manifest] {
            append(
                &mut archive,
                &format!("blobs/sha256/{}", sha256_hex(blob)),
                blob,
                0o644,
            )?;
        }
        archive.into_inner()?.flush()?;
        Ok(())
    }

    /// Whether the entrypoint is a WebAssembly module of the layer.
    fn runs_wasm(&self) -> bool {
        let Some(entrypoint) = self.entrypoint.first() else {
            return false;
        };
        self.entries.iter().any(|entry| {
            matches!(entry, LayerEntry::File { path, data, .. }
                if path == entrypoint && wasmshim::engine::has_wasm_magic(data))
        })
    }

    fn layer_tar(&self) -> anyhow::Result<Vec<u8>> {
        let mut layer = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            match entry {
                LayerEntry::File { path, data, mode } => {
                    append(&mut layer, path.trim_start_matches('/'), data, *mode)?
                }
                LayerEntry::Symlink { path, target } => {
                    let mut header = tar::Header::new_gnu();
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    header.set_mode(0o777);
                    header.set_mtime(0);
                    layer.append_link(&mut header, path.trim_start_matches('/'), target)?;
                }
            }
        }
        Ok(layer.into_inner()?)
    }
}

fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_cksum();
    archive.append_data(&mut header, path, data)?;
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn descriptor(media_type: MediaType, data: &[u8]) -> anyhow::Result<Descriptor> {
    let digest: Digest = Sha256Digest::from_str(&sha256_hex(data))?.into();
    Ok(DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(data.len() as u64)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_defaults_to_latest_and_keeps_registry_port_and_digest() {
        let name = |r: &str| r.parse::<Reference>().unwrap().whole();
        assert_eq!(name("hello"), "docker.io/library/hello:latest");
        assert_eq!(name("docker.io/x/hello:v1"), "docker.io/x/hello:v1");
        assert_eq!(name("localhost:5000/hello"), "localhost:5000/hello:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        let by_digest: Reference = format!("localhost:5000/hello@{digest}").parse().unwrap();
        assert_eq!(by_digest.repository(), "hello");
        assert_eq!(by_digest.digest(), Some(digest.as_str()));
        assert_eq!(by_digest.tag(), None);
    }

    #[test]
    fn archive_names_the_image_by_its_full_reference() {
        let image = ImageSpec {
            name: "localhost:5000/hello:v2".into(),
            os: "wasi".into(),
            architecture: "wasm".into(),
            entries: vec![],
            entrypoint: vec!["/hello.wasm".into()],
            cmd: vec![],
            env: vec![],
        };
        let mut tar = Vec::new();
        image.write_archive(&mut tar).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let index = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_string_lossy() == "index.json")
            .map(|mut e| {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                s
            })
            .expect("index.json in the archive");
        assert!(index.contains("\"localhost:5000/hello:v2\""), "{index}");
        assert!(index.contains("\"v2\""), "{index}");
    }

    fn archive_files(tar: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                (path, data)
            })
            .collect()
    }

    #[test]
    fn docker_manifest_points_at_the_oci_blobs_and_wasm_is_annotated() {
        let image = ImageSpec {
            name: "hello:v1".into(),
            os: "linux".into(),
            architecture: "amd64".into(),
            entries: vec![LayerEntry::File {
                path: "/hello.wasm".into(),
                data: b"\0asm\x01\0\0\0".to_vec(),
                mode: 0o755,
            }],
            entrypoint: vec!["/hello.wasm".into()],
            cmd: vec![],
            env: vec![],
        };
        let mut tar = Vec::new();
        image.write_archive(&mut tar).unwrap();
        let files = archive_files(&tar);
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let entry = &manifest[0];
        assert_eq!(entry["RepoTags"][0], "docker.io/library/hello:v1");
        let config: serde_json::Value =
            serde_json::from_slice(&files[entry["Config"].as_str().unwrap()]).unwrap();
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        let layer = &files[entry["Layers"][0].as_str().unwrap()];
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(layer))
        );
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let oci_manifest: serde_json::Value = serde_json::from_slice(
            &files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))],
        )
        .unwrap();
        assert_eq!(oci_manifest["annotations"][VARIANT_ANNOTATION], "compat");
    }
}
