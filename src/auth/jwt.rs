//! Docker registry tokens: ES256 JWTs signed with a key kept in the metadata database (made by
//! the first node that starts, shared by all), carrying the access granted per resource.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use data_encoding::{BASE32_NOPAD, BASE64};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{RegistryError, Result};
use crate::meta::Meta;

/// One resource's granted actions, as in the `access` claim of the Docker token spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// The claims of a registry token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<AccessEntry>,
    /// The personal access token the caller logged in with, so revoking it ends the JWTs
    /// issued from it (at once on the node that revoked it, within 500 ms on the others:
    /// `AuthService::identify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<i64>,
}

/// The signing and verifying keys.
pub struct TokenKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
}

/// A key id in the libtrust form Docker's tooling prints: the first 240 bits of the SHA-256 of
/// the public key's DER, base32, in groups of four.
fn key_id(spki_der: &[u8]) -> String {
    let digest = sha2::Sha256::digest(spki_der);
    let b32 = BASE32_NOPAD.encode(&digest[..30]);
    b32.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(":")
}

fn generate() -> Result<(String, String)> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &aws_lc_rs::rand::SystemRandom::new())
        .map_err(|e| RegistryError::internal("generating the token signing key", e))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
        .map_err(|e| RegistryError::internal("reading the new signing key", e))?;
    let spki = pair.public_key().as_der().map_err(|e| RegistryError::internal("encoding the public key", e))?;
    Ok((key_id(spki.as_ref()), BASE64.encode(doc.as_ref())))
}

impl TokenKeys {
    /// Loads the shared key from the database, creating it on first use.
    pub async fn load(meta: &Meta, issuer: &str) -> Result<TokenKeys> {
        let (kid, key) = meta.signing_key(generate).await?;
        TokenKeys::from_stored(kid, &key, issuer)
    }

    /// Keys from a stored signing key: its id and its PKCS#8 document in base64 (public for the
    /// fuzz targets in `fuzz/`, which sign with a fixed key).
    pub fn from_stored(kid: String, key: &str, issuer: &str) -> Result<TokenKeys> {
        let der = BASE64.decode(key.as_bytes()).map_err(|e| RegistryError::internal("decoding the signing key", e))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|e| RegistryError::internal("reading the signing key", e))?;
        Ok(TokenKeys {
            kid,
            decoding: DecodingKey::from_ec_der(pair.public_key().as_ref()),
            encoding: EncodingKey::from_ec_der(&der),
            issuer: issuer.to_string(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs a token.
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| RegistryError::internal("signing a token", e))
    }

    /// Checks signature, issuer, audience, expiry and not-before; `None` when any fails.
    pub fn verify(&self, token: &str, audience: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[audience]);
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        v.validate_nbf = true;
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).ok().map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(aud: &str, exp_in: i64) -> Claims {
        let now = crate::meta::now();
        Claims {
            iss: "berth".into(),
            sub: "alice".into(),
            aud: aud.into(),
            exp: now + exp_in,
            nbf: now - 1,
            iat: now,
            jti: "j".into(),
            access: vec![AccessEntry { kind: "repository".into(), name: "a/b".into(), actions: vec!["pull".into()] }],
            tid: None,
        }
    }

    #[tokio::test]
    async fn sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::temp_sqlite(dir.path()).await;
        let keys = TokenKeys::load(&meta, "berth").await.unwrap();
        let again = TokenKeys::load(&meta, "berth").await.unwrap();
        assert_eq!(keys.kid, again.kid, "the key is kept");
        assert_eq!(keys.kid.split(':').count(), 12);
        let t = keys.sign(&claims("svc", 60)).unwrap();
        assert_eq!(again.verify(&t, "svc").unwrap().access[0].name, "a/b");
        assert!(keys.verify(&t, "other").is_none(), "wrong audience");
        assert!(keys.verify(&keys.sign(&claims("svc", -60)).unwrap(), "svc").is_none(), "expired");
        // Tampered payload.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut c = claims("svc", 60);
        c.access[0].actions.push("push".into());
        parts[1] = data_encoding::BASE64URL_NOPAD.encode(&serde_json::to_vec(&c).unwrap());
        assert!(keys.verify(&parts.join("."), "svc").is_none());
        // Another key's token.
        let dir2 = tempfile::tempdir().unwrap();
        let meta2 = Meta::temp_sqlite(dir2.path()).await;
        let other = TokenKeys::load(&meta2, "berth").await.unwrap();
        assert!(keys.verify(&other.sign(&claims("svc", 60)).unwrap(), "svc").is_none());
    }
}
