//! The vocabulary of the OCI Distribution spec: digests, repository names, references and
//! manifests, and the nesting limit of every JSON body (`json.rs`). Everything here is pure
//! parsing and validation, with no I/O, so the API layer, the registry service, the mirror and
//! the runtime all agree on what is valid.

pub mod digest;
pub mod json;
pub mod manifest;
pub mod name;

pub use digest::{Algorithm, Digest, Hasher};
pub use manifest::{Descriptor, ParsedManifest, media};
pub use name::{Reference, namespace_of, validate_name, validate_tag};
