//! Manifest parsing and validation: Docker schema 2 manifests and manifest lists, OCI image
//! manifests and indexes, and OCI artifacts (`artifactType`, `subject`). The bytes are never
//! re-serialised: this module only reads what the registry must check and index.

use serde::{Deserialize, Serialize};

use super::digest::{Digest, truncate};
use crate::error::RegistryError;

/// Manifest media types.
pub mod media {
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// Whether the media type is an index (manifest list or OCI index).
    pub fn is_index(media_type: &str) -> bool {
        media_type == DOCKER_LIST || media_type == OCI_INDEX
    }
}

/// A content descriptor as it appears in manifests and indexes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What the registry needs to know about a manifest it stores.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub media_type: String,
    /// `artifactType`, or for image manifests without one the config media type (as the
    /// referrers API reports it).
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    /// Child manifests of an index.
    pub manifests: Vec<Descriptor>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ParsedManifest {
    /// Blobs this manifest requires in its repository (config and non-foreign layers).
    pub fn required_blobs(&self) -> Result<Vec<Digest>, RegistryError> {
        let mut out = Vec::new();
        for d in self.config.iter().chain(self.layers.iter()) {
            if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                continue; // foreign / non-distributable layer, fetched from its URLs
            }
            out.push(parse_descriptor_digest(d)?);
        }
        Ok(out)
    }

    /// Child manifests this index requires in its repository.
    pub fn required_manifests(&self) -> Result<Vec<Digest>, RegistryError> {
        self.manifests.iter().map(parse_descriptor_digest).collect()
    }
}

fn parse_descriptor_digest(d: &Descriptor) -> Result<Digest, RegistryError> {
    if d.size < 0 {
        return Err(RegistryError::ManifestInvalid(format!("descriptor {} has a negative size", truncate(&d.digest))));
    }
    d.digest.parse().map_err(|_| {
        RegistryError::ManifestInvalid(format!("invalid digest {:?} in a descriptor", truncate(&d.digest)))
    })
}

/// Strips parameters from a Content-Type value (`type; charset=...`).
pub fn bare_media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parses and validates a manifest pushed with the given Content-Type.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<ParsedManifest, RegistryError> {
    super::json::check_nesting(bytes).map_err(|e| RegistryError::ManifestInvalid(format!("manifest: {e}")))?;
    // JSON is UTF-8 (RFC 8259). serde_json checks that only in the strings it reads, not in the
    // fields it skips, and the bytes are stored and served as they are: check them all.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| RegistryError::ManifestInvalid(format!("manifest is not valid JSON (not UTF-8): {e}")))?;
    let raw: RawManifest = serde_json::from_str(text)
        .map_err(|e| RegistryError::ManifestInvalid(format!("manifest is not valid JSON: {e}")))?;
    let header = content_type.map(bare_media_type).filter(|t| !t.is_empty() && *t != "application/json");
    let media_type = match (header, raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(RegistryError::ManifestInvalid(format!(
                "Content-Type {:?} does not match the manifest's mediaType {:?}",
                truncate(h),
                truncate(b)
            )));
        }
        (Some(h), _) => h.to_string(),
        (None, Some(b)) => b.to_string(),
        (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_string(),
        (None, None) => media::OCI_MANIFEST.to_string(),
    };
    if media_type == media::DOCKER_SCHEMA1 || media_type == media::DOCKER_SCHEMA1_SIGNED {
        return Err(RegistryError::ManifestInvalid("Docker schema 1 manifests are deprecated and not accepted".into()));
    }
    if raw.schema_version != Some(2) {
        return Err(RegistryError::ManifestInvalid("schemaVersion must be 2".into()));
    }
    let subject = match &raw.subject {
        Some(s) => Some(parse_descriptor_digest(s)?),
        None => None,
    };
    let parsed = match media_type.as_str() {
        media::DOCKER_MANIFEST | media::OCI_MANIFEST => {
            let config =
                raw.config.ok_or_else(|| RegistryError::ManifestInvalid("image manifest without config".into()))?;
            if raw.manifests.is_some() {
                return Err(RegistryError::ManifestInvalid("an image manifest cannot list manifests".into()));
            }
            let artifact_type = raw.artifact_type.or_else(|| Some(config.media_type.clone()));
            ParsedManifest {
                media_type,
                artifact_type,
                subject,
                config: Some(config),
                layers: raw.layers.unwrap_or_default(),
                manifests: Vec::new(),
                annotations: raw.annotations,
            }
        }
        media::DOCKER_LIST | media::OCI_INDEX => {
            let manifests =
                raw.manifests.ok_or_else(|| RegistryError::ManifestInvalid("index without manifests".into()))?;
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(RegistryError::ManifestInvalid("an index cannot have config or layers".into()));
            }
            ParsedManifest {
                media_type,
                artifact_type: raw.artifact_type,
                subject,
                config: None,
                layers: Vec::new(),
                manifests,
                annotations: raw.annotations,
            }
        }
        other => {
            return Err(RegistryError::ManifestInvalid(format!(
                "unsupported manifest media type {:?}",
                truncate(other)
            )));
        }
    };
    // Validate every digest now, so later steps can rely on them.
    parsed.required_blobs()?;
    parsed.required_manifests()?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn parses_an_oci_artifact_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/x.sig",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/x.blob","digest":"{}","size":5}}],
            "subject":{{"mediaType":"{}","digest":"{}","size":9}}}}"#,
            media::OCI_MANIFEST,
            d('a'),
            d('b'),
            media::OCI_MANIFEST,
            d('c')
        );
        let m = parse(Some(media::OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(m.subject.as_ref().unwrap().as_str(), d('c'));
        assert_eq!(m.required_blobs().unwrap().len(), 2);
    }

    #[test]
    fn config_media_type_is_the_artifact_type_by_default() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            d('a')
        );
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.media_type, media::OCI_MANIFEST);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.cncf.helm.config.v1+json"));
    }

    #[test]
    fn rejects_bad_manifests() {
        let cases = [
            (None, "not json".to_string()),
            (Some(media::OCI_MANIFEST), r#"{"schemaVersion":2}"#.to_string()),
            (Some(media::OCI_MANIFEST), format!(r#"{{"schemaVersion":1,"config":{{"digest":"{}"}}}}"#, d('a'))),
            (Some(media::OCI_INDEX), r#"{"schemaVersion":2}"#.to_string()),
            (Some("text/plain"), r#"{"schemaVersion":2,"manifests":[]}"#.to_string()),
            (
                Some(media::OCI_INDEX),
                format!(r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#, media::DOCKER_LIST),
            ),
            (
                Some(media::OCI_MANIFEST),
                r#"{"schemaVersion":2,"config":{"digest":"sha256:nothex","size":1},"layers":[]}"#.to_string(),
            ),
            (Some(media::DOCKER_SCHEMA1_SIGNED), r#"{"schemaVersion":1}"#.to_string()),
            // Valid in every other respect, but nested too deep (in a field serde_json skips).
            (
                Some(media::OCI_MANIFEST),
                format!(
                    r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":1}},"layers":[],"x":{}{}}}"#,
                    d('a'),
                    "[".repeat(10_000),
                    "]".repeat(10_000)
                ),
            ),
        ];
        for (ct, body) in cases {
            assert!(
                matches!(parse(ct, body.as_bytes()), Err(RegistryError::ManifestInvalid(_))),
                "accepted {ct:?} {body}"
            );
        }
    }

    #[test]
    fn refuses_invalid_utf8_even_where_serde_skips() {
        // Found by fuzz/fuzz_targets/manifest.rs: serde_json skipped the unknown field "l!yers"
        // without checking its strings, so a manifest no JSON parser reads back was accepted.
        let mut body =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":1}},"layers":[],"l!yers":"#, d('a'))
                .into_bytes();
        body.extend_from_slice(b"\"sha256:dac1\xfa\xfa\xfa\"}");
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
        assert!(matches!(parse(Some(media::OCI_MANIFEST), &body), Err(RegistryError::ManifestInvalid(_))));
        assert!(matches!(parse(None, &body), Err(RegistryError::ManifestInvalid(_))));
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"{}","size":1}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":1,"urls":["https://example.invalid/l"]}}]}}"#,
            media::DOCKER_MANIFEST,
            d('a'),
            d('b')
        );
        let m = parse(Some(media::DOCKER_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.required_blobs().unwrap().len(), 1);
    }
}
