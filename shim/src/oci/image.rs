//! Wasm OCI artifact images: images whose layers are WebAssembly modules
//! rather than rootfs tars. Two shapes: the CNCF Wasm OCI layout (config
//! [`WASM_CONFIG_MEDIA_TYPE`], layers `application/wasm`) and runwasi's
//! component layers (`application/vnd.bytecodealliance.wasm.component.layer.v0+wasm`).
//!
//! containerd unpacks no such layer into the rootfs: 1.6.25 and 1.7.7 skip
//! them and give the container an empty one (older versions refuse the image
//! in `ctr`). So, as runwasi does, the shim reads the module from
//! containerd's content store over containerd's gRPC API, checks it (its
//! digest, its size, the Wasm magic number) and writes it into the bundle as
//! [`MODULE_FILE`], outside the rootfs the container sees.
//!
//! Only asked when the entrypoint names no file in the rootfs
//! ([`super::entrypoint_missing`]): an image whose module is in a rootfs
//! layer never pays for the round trips.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::{transport::Channel, Code, Request};
use containerd_client::with_namespace;
use oci_spec::image::{ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};

use crate::engine::{has_wasm_magic, MAX_MODULE_BYTES};
use crate::error::Error;

/// Media type of the config of a CNCF Wasm OCI artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";

/// Media types of image layers that are a Wasm module or component, the
/// first of which a container runs.
pub const WASM_LAYER_MEDIA_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];

/// File in the bundle into which the shim writes the module of an artifact
/// image. Its presence also tells a later `delete` that the container ran Wasm.
pub const MODULE_FILE: &str = "image-module.wasm";

/// The annotation that names a layer's file (`org.opencontainers.image.title`).
const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// Largest manifest or index the shim reads.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// How long asking containerd may take, all round trips together.
const PATIENCE: Duration = Duration::from_secs(30);

/// The module of a container's artifact image, written into its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageModule {
    /// Host path of the module ([`MODULE_FILE`] in the bundle).
    pub path: PathBuf,
    /// The layer's file name (its title annotation), or `module.wasm`.
    pub name: String,
}

/// containerd's images, as its gRPC API serves them to one namespace.
#[derive(Debug, Clone)]
pub struct ContainerdImages {
    socket: PathBuf,
    namespace: String,
}

impl ContainerdImages {
    /// The images of `namespace` in the containerd at `address` (its gRPC
    /// socket, as the shim's `-address` flag gives it).
    pub fn new(address: &str, namespace: &str) -> Self {
        ContainerdImages {
            socket: PathBuf::from(address.trim_start_matches("unix://")),
            namespace: namespace.to_string(),
        }
    }

    /// Writes the Wasm layer of container `id`'s image to `bundle`'s
    /// [`MODULE_FILE`] when that image is a Wasm artifact.
    ///
    /// `None` when the container has no image, or an image without Wasm
    /// layers, or containerd could not tell (logged): the caller then
    /// reports the missing entrypoint as it would without images. An error
    /// once a Wasm layer is found that cannot be run: it cannot be read, is
    /// too large, does not match its digest or is no WebAssembly.
    pub async fn module_of(
        &self,
        id: &str,
        bundle: &Path,
    ) -> crate::error::Result<Option<ImageModule>> {
        let (layer, wasm) = match self.fetch_module(id).await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(Lookup::NoAnswer(why)) => {
                log::warn!(
                    "container {id}: asking containerd ({}) for its image's Wasm layers: {why}",
                    self.socket.display()
                );
                return Ok(None);
            }
            Err(Lookup::Unusable(why)) => return Err(Error::InvalidArgument(why)),
        };
        let path = bundle.join(MODULE_FILE);
        write_module(&path, &wasm)
            .map_err(|e| Error::internal(format!("writing {}", path.display()), e))?;
        Ok(Some(ImageModule {
            path,
            name: layer.name,
        }))
    }

    /// The first Wasm layer of container `id`'s image and its content, if
    /// the image has one.
    async fn fetch_module(&self, id: &str) -> Result<Option<(WasmLayer, Vec<u8>)>, Lookup> {
        let no_answer = || Lookup::NoAnswer(format!("no answer in {PATIENCE:?}"));
        let channel = containerd_client::connect(&self.socket)
            .await
            .map_err(|e| Lookup::NoAnswer(format!("connecting: {e}")))?;
        let found = tokio::time::timeout(PATIENCE, self.wasm_layer_of(&channel, id))
            .await
            .map_err(|_| no_answer())?
            .map_err(Lookup::NoAnswer)?;
        let Some((image, layer)) = found else {
            return Ok(None);
        };
        log::debug!(
            "container {id}: running layer {} of Wasm artifact image {image}",
            layer.digest
        );
        let unusable = |why: String| {
            Lookup::Unusable(format!(
                "image {image}: Wasm layer {} ({}): {why}",
                layer.digest, layer.media_type
            ))
        };
        let wasm = tokio::time::timeout(PATIENCE, self.read_layer(&channel, &layer))
            .await
            .map_err(|_| unusable(format!("reading it: no answer in {PATIENCE:?}")))?
            .map_err(unusable)?;
        Ok(Some((layer, wasm)))
    }

    /// The image of container `id` and its first Wasm layer, if it has one.
    /// Until a Wasm layer is found, the image may be any image: what does
    /// not parse has none.
    async fn wasm_layer_of(
        &self,
        channel: &Channel,
        id: &str,
    ) -> Result<Option<(String, WasmLayer)>, String> {
        let ns = self.namespace.as_str();
        let request = with_namespace!(GetContainerRequest { id: id.to_string() }, ns);
        let container = ContainersClient::new(channel.clone())
            .get(request)
            .await
            .map_err(|s| format!("container {id}: {}", s.message()))?
            .into_inner()
            .container
            .ok_or_else(|| format!("container {id}: no container"))?;
        if container.image.is_empty() {
            return Ok(None);
        }
        let image = container.image;
        let request = with_namespace!(
            GetImageRequest {
                name: image.clone()
            },
            ns
        );
        let target = match ImagesClient::new(channel.clone()).get(request).await {
            Ok(reply) => reply.into_inner().image.and_then(|i| i.target),
            // The image was removed after the container was made of it.
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(format!("image {image}: {}", s.message())),
        };
        let Some(target) = target else {
            return Ok(None);
        };
        let mut content = ContentClient::new(channel.clone());
        let manifest_digest = if is_index(&target.media_type) {
            let json = self
                .read(&mut content, &target.digest, MAX_MANIFEST_BYTES)
                .await?;
            let Some(digest) = ImageIndex::from_reader(json.as_slice())
                .ok()
                .and_then(|index| choose_manifest(&index))
            else {
                return Ok(None);
            };
            digest
        } else {
            target.digest
        };
        let json = self
            .read(&mut content, &manifest_digest, MAX_MANIFEST_BYTES)
            .await?;
        // Not a manifest (a Docker schema 1 image, say): no Wasm layers.
        let Ok(manifest) = ImageManifest::from_reader(json.as_slice()) else {
            return Ok(None);
        };
        Ok(wasm_layer(&manifest).map(|layer| (image, layer)))
    }

    /// Reads the module of `layer`, checked against its size and digest.
    async fn read_layer(&self, channel: &Channel, layer: &WasmLayer) -> Result<Vec<u8>, String> {
        if layer.size > MAX_MODULE_BYTES {
            return Err(format!(
                "{} bytes, more than the {MAX_MODULE_BYTES} a module may have",
                layer.size
            ));
        }
        let mut content = ContentClient::new(channel.clone());
        let wasm = self
            .read(&mut content, &layer.digest, MAX_MODULE_BYTES)
            .await?;
        check_layer(&wasm, &layer.digest)?;
        Ok(wasm)
    }

    /// Reads blob `digest` from the content store, at most `limit` bytes.
    async fn read(
        &self,
        content: &mut ContentClient<Channel>,
        digest: &str,
        limit: u64,
    ) -> Result<Vec<u8>, String> {
        let ns = self.namespace.as_str();
        let request = with_namespace!(
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            ns
        );
        let failed =
            |s: containerd_client::tonic::Status| format!("reading {digest}: {}", s.message());
        let mut stream = content.read(request).await.map_err(failed)?.into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(failed)? {
            data.extend_from_slice(&chunk.data);
            if data.len() as u64 > limit {
                return Err(format!("{digest} is more than {limit} bytes"));
            }
        }
        Ok(data)
    }
}

/// Why asking containerd gave no module.
enum Lookup {
    /// containerd could not tell (not reachable, no such container): the
    /// shim goes on as if the image had no Wasm layer.
    NoAnswer(String),
    /// The image has a Wasm layer that cannot be run: the container must
    /// not start.
    Unusable(String),
}

/// One Wasm layer of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WasmLayer {
    digest: String,
    media_type: String,
    size: u64,
    name: String,
}

fn is_index(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

/// The manifest of `index` a Wasm container runs: the first whose platform
/// is a Wasm one (os `wasip1`, `wasip2` or `wasi`, or architecture `wasm`),
/// else the first.
fn choose_manifest(index: &ImageIndex) -> Option<String> {
    let is_wasm = |d: &&oci_spec::image::Descriptor| {
        d.platform().as_ref().is_some_and(|p| {
            matches!(p.os().to_string().as_str(), "wasip1" | "wasip2" | "wasi")
                || p.architecture().to_string() == "wasm"
        })
    };
    let manifests = index.manifests();
    manifests
        .iter()
        .find(is_wasm)
        .or(manifests.first())
        .map(|d| d.digest().to_string())
}

/// The first layer of `manifest` that is a Wasm module or component.
fn wasm_layer(manifest: &ImageManifest) -> Option<WasmLayer> {
    let layer = manifest
        .layers()
        .iter()
        .find(|l| WASM_LAYER_MEDIA_TYPES.contains(&l.media_type().to_string().as_str()))?;
    let name = layer
        .annotations()
        .as_ref()
        .and_then(|a: &HashMap<String, String>| a.get(TITLE_ANNOTATION))
        .filter(|t| !t.is_empty())
        .cloned()
        .unwrap_or_else(|| "module.wasm".to_string());
    Some(WasmLayer {
        digest: layer.digest().to_string(),
        media_type: layer.media_type().to_string(),
        size: layer.size(),
        name,
    })
}

/// Checks that `wasm` is the blob `digest` names and a WebAssembly binary.
fn check_layer(wasm: &[u8], digest: &str) -> Result<(), String> {
    let actual = format!("sha256:{:x}", Sha256::digest(wasm));
    if actual != digest {
        return Err(format!("its content has digest {actual}"));
    }
    if !has_wasm_magic(wasm) {
        return Err(
            "not a WebAssembly module (it does not start with the \\0asm magic number)".into(),
        );
    }
    Ok(())
}

/// Writes `wasm` to `path` (mode 0600) through a temp file: a crash leaves
/// no half-written module.
fn write_module(path: &Path, wasm: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".image-module.")
        .tempfile_in(dir)?;
    file.write_all(wasm)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: &[(&str, &str)]) -> ImageManifest {
        let layers: Vec<String> = layers
            .iter()
            .map(|(media_type, title)| {
                let annotations = if title.is_empty() {
                    String::new()
                } else {
                    format!(r#","annotations":{{"{TITLE_ANNOTATION}":"{title}"}}"#)
                };
                format!(
                    r#"{{"mediaType":"{media_type}","digest":"sha256:{}","size":7{annotations}}}"#,
                    "ab".repeat(32)
                )
            })
            .collect();
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
                "config":{{"mediaType":"{WASM_CONFIG_MEDIA_TYPE}","digest":"sha256:{}","size":2}},
                "layers":[{}]}}"#,
            "cd".repeat(32),
            layers.join(",")
        );
        ImageManifest::from_reader(json.as_bytes()).unwrap()
    }

    #[test]
    fn the_first_wasm_layer_is_run_and_named_by_its_title() {
        let m = manifest(&[
            ("application/vnd.oci.image.layer.v1.tar", ""),
            ("application/wasm", "hello.wasm"),
            (WASM_LAYER_MEDIA_TYPES[1], "other.wasm"),
        ]);
        let layer = wasm_layer(&m).unwrap();
        assert_eq!(layer.media_type, "application/wasm");
        assert_eq!(layer.name, "hello.wasm");
        assert_eq!(layer.size, 7);

        let component = wasm_layer(&manifest(&[(WASM_LAYER_MEDIA_TYPES[1], "")])).unwrap();
        assert_eq!(component.name, "module.wasm");
    }

    #[test]
    fn an_image_of_rootfs_layers_has_no_wasm_layer() {
        let m = manifest(&[
            ("application/vnd.oci.image.layer.v1.tar", ""),
            ("application/vnd.oci.image.layer.v1.tar+gzip", ""),
        ]);
        assert_eq!(wasm_layer(&m), None);
    }

    #[test]
    fn an_index_gives_its_wasm_platform_else_its_first_manifest() {
        let entry = |digit: &str, platform: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":1{platform}}}"#,
                digit.repeat(64)
            )
        };
        let index = |entries: &[String]| {
            let json = format!(
                r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                entries.join(",")
            );
            ImageIndex::from_reader(json.as_bytes()).unwrap()
        };
        let linux = entry("1", r#","platform":{"os":"linux","architecture":"amd64"}"#);
        let wasip1 = entry("2", r#","platform":{"os":"wasip1","architecture":"wasm"}"#);
        let bare = entry("3", "");
        assert_eq!(
            choose_manifest(&index(&[linux.clone(), wasip1])),
            Some(format!("sha256:{}", "2".repeat(64)))
        );
        assert_eq!(
            choose_manifest(&index(&[bare, linux])),
            Some(format!("sha256:{}", "3".repeat(64)))
        );
        assert_eq!(choose_manifest(&index(&[])), None);
    }

    #[test]
    fn a_layer_must_match_its_digest_and_be_wasm() {
        let wasm = b"\0asm\x01\0\0\0";
        let digest = format!("sha256:{:x}", Sha256::digest(wasm));
        assert_eq!(check_layer(wasm, &digest), Ok(()));

        let err = check_layer(b"\0asm\x01\0\0\x01", &digest).unwrap_err();
        assert!(err.starts_with("its content has digest sha256:"), "{err}");

        let text = b"#!/bin/sh\n";
        let err = check_layer(text, &format!("sha256:{:x}", Sha256::digest(text))).unwrap_err();
        assert!(err.contains("not a WebAssembly module"), "{err}");
    }

    #[test]
    fn the_module_is_written_whole_with_no_temp_file_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MODULE_FILE);
        write_module(&path, b"\0asm\x01\0\0\0").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\0asm\x01\0\0\0");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(MODULE_FILE)]);
    }
}
