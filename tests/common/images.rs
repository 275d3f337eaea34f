//! Test images built in memory: the media types, descriptors, image manifests over pushed
//! blobs, and [`Image`], a small image (config and layers) to push with
//! [`Reg::push_image`](super::registry::Reg::push_image). Layers here are opaque bytes; real
//! tar layers are built where they are unpacked (tests/runtime.rs) or copied
//! ([`skopeo::hello_tar`](super::skopeo::hello_tar)).

use std::io::Write;

use serde_json::{Value, json};

use super::sha256;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest type a docker client accepts: images and indexes, Docker's and OCI's.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// A blob as a manifest names it: its digest and size.
pub type BlobRef = (String, usize);

/// The [`BlobRef`] of some bytes.
pub fn blob_ref(data: &[u8]) -> BlobRef {
    (sha256(data), data.len())
}

/// An image manifest of `media_type` ([`OCI_MANIFEST`] or [`DOCKER_MANIFEST`], whose config and
/// layer media types it uses) over a config and layers; a `Value`, to add fields to.
pub fn image_manifest(media_type: &str, config: &BlobRef, layers: &[BlobRef]) -> Value {
    let (config_type, layer_type) =
        if media_type == DOCKER_MANIFEST { (DOCKER_CONFIG, DOCKER_LAYER) } else { (OCI_CONFIG, OCI_LAYER) };
    let layers: Vec<Value> =
        layers.iter().map(|(d, s)| json!({"mediaType": layer_type, "digest": d, "size": s})).collect();
    json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": config.0, "size": config.1},
        "layers": layers,
    })
}

/// A small image to push: config and layer bytes, and the manifest over them.
#[derive(Clone, Debug)]
pub struct Image {
    /// [`OCI_MANIFEST`] (the default) or [`DOCKER_MANIFEST`].
    pub media_type: &'static str,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    /// The manifest's `annotations` (none when null).
    pub annotations: Value,
}

impl Image {
    /// An OCI image of a config and layers.
    pub fn new(config: impl Into<Vec<u8>>, layers: Vec<Vec<u8>>) -> Image {
        Image { media_type: OCI_MANIFEST, config: config.into(), layers, annotations: Value::Null }
    }

    /// The same image with a Docker (schema 2) manifest.
    pub fn docker(mut self) -> Image {
        self.media_type = DOCKER_MANIFEST;
        self
    }

    /// The same blobs under a manifest annotated `{"note": note}`, which makes it another
    /// manifest (another digest).
    pub fn with_note(&self, note: &str) -> Image {
        Image { annotations: json!({ "note": note }), ..self.clone() }
    }

    pub fn config_ref(&self) -> BlobRef {
        blob_ref(&self.config)
    }

    pub fn layer_refs(&self) -> Vec<BlobRef> {
        self.layers.iter().map(|l| blob_ref(l)).collect()
    }

    /// The digest of layer `i`.
    pub fn layer_digest(&self, i: usize) -> String {
        sha256(&self.layers[i])
    }

    /// The manifest's bytes.
    pub fn manifest(&self) -> Vec<u8> {
        let mut m = image_manifest(self.media_type, &self.config_ref(), &self.layer_refs());
        if !self.annotations.is_null() {
            m["annotations"] = self.annotations.clone();
        }
        serde_json::to_vec(&m).unwrap()
    }

    /// The manifest's digest.
    pub fn digest(&self) -> String {
        sha256(&self.manifest())
    }
}

/// A one-layer image whose config names `seed`, over `layer`.
pub fn image_with_layer(seed: &str, layer: &[u8]) -> Image {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[]}},"history":[],"seed":"{seed}"}}"#
    );
    Image::new(config, vec![layer.to_vec()])
}

/// A one-layer image of its own for each `seed` (config and layer both name it); the layer is
/// `layer of {seed}`.
pub fn tiny(seed: &str) -> Image {
    image_with_layer(seed, format!("layer of {seed}").as_bytes())
}

/// Gzip of bytes (no name or time in the header, so the same bytes give the same blob).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}
