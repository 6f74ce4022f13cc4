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
//!
//! With `--artifact`, the image is a Wasm OCI artifact instead ([`ArtifactSpec`]):
//! the CNCF Wasm OCI layout, whose one layer is the module itself
//! (`application/wasm`), not a tar. The shims read such a module from
//! containerd's content store (see `wasmshim::oci::image`).

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
    /// Write a Wasm OCI artifact (config `application/vnd.wasm.config.v0+json`,
    /// the module as its one `application/wasm` layer), which has no
    /// entrypoint, arguments or environment of its own.
    #[arg(long, conflicts_with_all = ["path", "args", "env", "platform"])]
    pub artifact: bool,
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
    // Every argument is checked before the output file is created.
    let create = || {
        std::fs::File::create(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))
    };
    let what = if args.artifact {
        artifact_spec(args, wasm)?.write_archive(create()?)?;
        "a Wasm OCI artifact".to_string()
    } else {
        let image = image_spec(args, wasm)?;
        image.write_archive(create()?)?;
        format!("entrypoint {}", image.entrypoint.join(" "))
    };
    eprintln!("wrote {} ({}, {what})", args.output.display(), args.name);
    Ok(())
}

/// The file name of the module `build` packages.
fn module_file_name(args: &BuildArgs) -> anyhow::Result<String> {
    Ok(args
        .module
        .file_name()
        .context("module path has no file name")?
        .to_string_lossy()
        .into_owned())
}

/// The artifact `build --artifact` writes: `wasm` as its one layer.
fn artifact_spec(args: &BuildArgs, wasm: Vec<u8>) -> anyhow::Result<ArtifactSpec> {
    Ok(ArtifactSpec {
        name: args.name.clone(),
        title: module_file_name(args)?,
        wasm,
    })
}

/// The image `build` writes: `wasm` at `--path` in one layer, with the
/// arguments, environment and platform asked for.
fn image_spec(args: &BuildArgs, wasm: Vec<u8>) -> anyhow::Result<ImageSpec> {
    for kv in &args.env {
        if !kv.contains('=') {
            bail!("--env {kv}: expected KEY=VALUE");
        }
    }
    let path = match &args.path {
        Some(p) if p.starts_with('/') => p.clone(),
        Some(p) => bail!("--path {p}: must be absolute"),
        None => format!("/{}", module_file_name(args)?),
    };
    let (os, architecture) = args
        .platform
        .split_once('/')
        .filter(|(os, arch)| !os.is_empty() && !arch.is_empty() && !arch.contains('/'))
        .with_context(|| format!("--platform {}: expected os/arch", args.platform))?;
    Ok(ImageSpec {
        name: args.name.clone(),
        os: os.into(),
        architecture: architecture.into(),
        entries: vec![LayerEntry::File {
            path: path.clone(),
            data: wasm,
            mode: 0o755,
        }],
        entrypoint: vec![path],
        cmd: args.args.clone(),
        env: args.env.clone(),
    })
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

        let annotations = self
            .runs_wasm()
            .then(|| HashMap::from([(VARIANT_ANNOTATION.to_string(), "compat".to_string())]));
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
        Layout {
            reference,
            os,
            architecture: arch,
            config: (config_desc, &config),
            layers: vec![(layer_desc, &layer)],
            annotations,
            docker_manifest: Some(docker_manifest),
        }
        .write(out)
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

/// A Wasm OCI artifact image (the CNCF Wasm OCI layout): one module as its
/// one layer, platform `wasip1/wasm` (`wasip2` for a component).
#[derive(Debug, Clone)]
pub struct ArtifactSpec {
    /// Reference, `repo[:tag]`.
    pub name: String,
    /// The module's file name (the layer's title annotation).
    pub title: String,
    /// The module or component.
    pub wasm: Vec<u8>,
}

impl ArtifactSpec {
    /// Writes the artifact as an OCI image layout in a tar stream, which
    /// `ctr image import` takes.
    pub fn write_archive(&self, out: impl Write) -> anyhow::Result<()> {
        let reference: Reference = self
            .name
            .parse()
            .with_context(|| format!("image reference {:?}", self.name))?;
        // `build` refuses what is not Wasm; the tests also write such layers.
        let os = match wasmshim::engine::WasmKind::of(&self.wasm) {
            Some(wasmshim::engine::WasmKind::Component) => "wasip2",
            _ => "wasip1",
        };
        let mut layer = descriptor(MediaType::Other(WASM_LAYER.into()), &self.wasm)?;
        layer.set_annotations(Some(HashMap::from([(
            "org.opencontainers.image.title".to_string(),
            self.title.clone(),
        )])));
        // The CNCF Wasm OCI config: no entrypoint, args or env.
        let config = serde_json::to_vec(&serde_json::json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": "wasm",
            "os": os,
            "layerDigests": [layer.digest().to_string()],
        }))?;
        let config_desc = descriptor(MediaType::Other(WASM_CONFIG.into()), &config)?;
        Layout {
            reference,
            os: Os::from(os),
            architecture: Arch::from("wasm"),
            config: (config_desc, &config),
            layers: vec![(layer, &self.wasm)],
            annotations: None,
            docker_manifest: None,
        }
        .write(out)
    }
}

/// An OCI image layout of one image, as a tar stream: `oci-layout`,
/// `index.json` (naming the image for `ctr image import`), the blobs, and a
/// docker-archive `manifest.json` if there is one.
struct Layout<'a> {
    reference: Reference,
    os: Os,
    architecture: Arch,
    config: (Descriptor, &'a [u8]),
    layers: Vec<(Descriptor, &'a [u8])>,
    /// The manifest's annotations.
    annotations: Option<HashMap<String, String>>,
    docker_manifest: Option<Vec<u8>>,
}

impl Layout<'_> {
    fn write(self, out: impl Write) -> anyhow::Result<()> {
        let mut manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(self.config.0.clone())
            .layers(
                self.layers
                    .iter()
                    .map(|(d, _)| d.clone())
                    .collect::<Vec<_>>(),
            )
            .build()?;
        manifest.set_annotations(self.annotations);
        let manifest = serde_json::to_vec(&manifest)?;
        let mut manifest_desc = descriptor(MediaType::ImageManifest, &manifest)?;
        manifest_desc.set_platform(Some(
            PlatformBuilder::default()
                .architecture(self.architecture)
                .os(self.os)
                .build()?,
        ));
        manifest_desc.set_annotations(Some(name_annotations(&self.reference)));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![manifest_desc])
            .build()?;
        let index = serde_json::to_vec(&index)?;

        let mut archive = tar::Builder::new(out);
        append(
            &mut archive,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            0o644,
        )?;
        append(&mut archive, "index.json", &index, 0o644)?;
        if let Some(docker_manifest) = &self.docker_manifest {
            append(&mut archive, "manifest.json", docker_manifest, 0o644)?;
        }
        let blobs = self.layers.iter().map(|(_, data)| *data);
        for blob in blobs.chain([self.config.1, manifest.as_slice()]) {
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
}

/// Media type of a Wasm OCI artifact's config: the one the shim recognises.
const WASM_CONFIG: &str = wasmshim::oci::image::WASM_CONFIG_MEDIA_TYPE;
/// Media type of a Wasm OCI artifact's module layer (the CNCF layout's), the
/// first the shim looks for.
const WASM_LAYER: &str = wasmshim::oci::image::WASM_LAYER_MEDIA_TYPES[0];

/// The annotations by which `ctr image import` names an image: containerd's
/// full name, and the OCI tag.
fn name_annotations(reference: &Reference) -> HashMap<String, String> {
    let mut annotations =
        HashMap::from([("io.containerd.image.name".to_string(), reference.whole())]);
    if let Some(tag) = reference.tag() {
        annotations.insert(
            "org.opencontainers.image.ref.name".to_string(),
            tag.to_string(),
        );
    }
    annotations
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

    /// `wasmshim image build` of a hello module in `dir`, to `out`.
    fn build_args(dir: &std::path::Path, out: &str) -> BuildArgs {
        let module = dir.join("hello.wasm");
        std::fs::write(&module, wat::parse_str("(module)").unwrap()).unwrap();
        BuildArgs {
            module,
            name: "hello".into(),
            path: None,
            args: vec![],
            env: vec![],
            platform: "wasi/wasm".into(),
            artifact: false,
            output: dir.join(out),
        }
    }

    /// The entries of the tar archive at `path`.
    fn archive_entries(path: &std::path::Path) -> Vec<String> {
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        let entries = archive.entries().unwrap();
        entries
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn build_writes_an_image_or_an_artifact_and_refuses_bad_arguments_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let image = build_args(dir.path(), "image.tar");
        build(&image).unwrap();
        let artifact = BuildArgs {
            artifact: true,
            ..build_args(dir.path(), "artifact.tar")
        };
        build(&artifact).unwrap();
        for written in [&image.output, &artifact.output] {
            let entries = archive_entries(written);
            assert!(entries.iter().any(|e| e == "index.json"), "{entries:?}");
        }

        let refused = [
            (
                "env",
                BuildArgs {
                    env: vec!["NOEQ".into()],
                    ..build_args(dir.path(), "a.tar")
                },
                "--env NOEQ: expected KEY=VALUE",
            ),
            (
                "path",
                BuildArgs {
                    path: Some("hello.wasm".into()),
                    ..build_args(dir.path(), "b.tar")
                },
                "--path hello.wasm: must be absolute",
            ),
            (
                "platform",
                BuildArgs {
                    platform: "wasi".into(),
                    ..build_args(dir.path(), "c.tar")
                },
                "--platform wasi: expected os/arch",
            ),
        ];
        for (what, args, said) in refused {
            let e = build(&args).expect_err(what).to_string();
            assert!(e.contains(said), "{what}: {e}");
            assert!(!args.output.exists(), "{what}: an output was written");
        }
        let text = build_args(dir.path(), "d.tar");
        std::fs::write(&text.module, "not wasm").unwrap();
        let e = build(&text).expect_err("text").to_string();
        assert!(
            e.contains("is not a WebAssembly module or component"),
            "{e}"
        );
        assert!(!text.output.exists());
    }

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

    #[test]
    fn an_artifact_is_the_module_as_its_one_layer() {
        let blob = |files: &HashMap<String, Vec<u8>>, digest: &serde_json::Value| {
            let digest = digest.as_str().unwrap().trim_start_matches("sha256:");
            files[&format!("blobs/sha256/{digest}")].clone()
        };
        let module = b"\0asm\x01\0\0\0".to_vec();
        let artifact = ArtifactSpec {
            name: "hello:v1".into(),
            title: "hello.wasm".into(),
            wasm: module.clone(),
        };
        let mut tar = Vec::new();
        artifact.write_archive(&mut tar).unwrap();
        let files = archive_files(&tar);
        assert!(
            !files.contains_key("manifest.json"),
            "no docker-archive manifest"
        );
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(entry["platform"]["os"], "wasip1");
        assert_eq!(entry["platform"]["architecture"], "wasm");
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            "docker.io/library/hello:v1"
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(&files, &entry["digest"])).unwrap();
        assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG);
        let layer = &manifest["layers"][0];
        assert_eq!(layer["mediaType"], WASM_LAYER);
        assert_eq!(
            layer["annotations"]["org.opencontainers.image.title"],
            "hello.wasm"
        );
        assert_eq!(
            blob(&files, &layer["digest"]),
            module,
            "the layer is the module itself"
        );
        let config: serde_json::Value =
            serde_json::from_slice(&blob(&files, &manifest["config"]["digest"])).unwrap();
        assert_eq!(config["layerDigests"][0], layer["digest"]);

        let component = ArtifactSpec {
            wasm: b"\0asm\x0d\0\x01\0".to_vec(),
            ..artifact.clone()
        };
        let mut tar = Vec::new();
        component.write_archive(&mut tar).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&archive_files(&tar)["index.json"]).unwrap();
        assert_eq!(index["manifests"][0]["platform"]["os"], "wasip2");
    }
}
