//! Manifests and indexes (`oci::manifest::parse`): the first byte picks the `Content-Type` the
//! push came with, the rest is the body. An accepted manifest is JSON within the nesting limit,
//! of a supported media type, with every digest it names valid.
#![no_main]
use berth::oci::manifest::{self, media};
use berth::oci::{Digest, json::MAX_DEPTH};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some(media::DOCKER_MANIFEST),
    Some(media::DOCKER_LIST),
    Some(media::OCI_MANIFEST),
    Some(media::OCI_INDEX),
    Some("application/json"),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some(media::DOCKER_SCHEMA1_SIGNED),
];

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[first as usize % CONTENT_TYPES.len()];
    let Ok(m) = manifest::parse(content_type, body) else { return };
    let value: serde_json::Value = serde_json::from_slice(body).expect("an accepted manifest is JSON");
    assert!(depth(&value) <= MAX_DEPTH);
    assert_eq!(value["schemaVersion"], 2);
    let index = media::is_index(&m.media_type);
    assert!(
        [media::DOCKER_MANIFEST, media::OCI_MANIFEST, media::DOCKER_LIST, media::OCI_INDEX]
            .contains(&m.media_type.as_str())
    );
    if index {
        assert!(m.config.is_none() && m.layers.is_empty());
    } else {
        assert!(m.config.is_some() && m.manifests.is_empty());
    }
    for d in
        m.required_blobs().expect("checked by parse").iter().chain(&m.required_manifests().expect("checked by parse"))
    {
        assert_eq!(d.as_str().parse::<Digest>().ok().as_ref(), Some(d));
    }
    if let Some(s) = &m.subject {
        assert_eq!(value["subject"]["digest"].as_str(), Some(s.as_str()));
    }
});
