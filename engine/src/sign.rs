//! Signed control commands, so a credential broker or tool proxy can tell a
//! revocation that came from the engine from one that did not (SPEC §5).
//!
//! A command travels as a JWS in compact serialization (RFC 7515) signed with
//! Ed25519 (`alg: EdDSA`, RFC 8037) over the command's JSON. The header names
//! the key (`kid`, its RFC 7638 thumbprint) so keys can rotate: subscribers
//! hold a JWKS with the current key and the ones before it, and a command
//! signed by any key in the set verifies. The same envelope carries the CAEP
//! Security Event Token form of a command ([`crate::caep`]), told apart by
//! `typ`.
//!
//! Ed25519 signatures are deterministic: the same key and command give the
//! same bytes, so signing keeps the engine's replay guarantee.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::verdict::ControlCommand;

/// The only algorithm accepted: Ed25519 as named by RFC 8037.
pub const ALGORITHM: &str = "EdDSA";
/// `typ` of a native control command.
pub const COMMAND_TYPE: &str = "vigil-command+jws";
/// `typ` of a Security Event Token (RFC 8417 §2.3).
pub const SET_TYPE: &str = "secevent+jwt";

/// Why a key could not be made, read or published.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("not an Ed25519 private key in PKCS#8 PEM form: {0}")]
    Pkcs8(String),
    #[error("cannot encode the signing key as PKCS#8: {0}")]
    Encode(String),
    #[error("not a JWK set: {0}")]
    Jwks(String),
    #[error("key id `{0}` appears more than once in the JWK set")]
    DuplicateKid(String),
}

/// Why a JWS was refused. Every variant means "do not obey this command".
/// What the Kafka sink signs every control command with (`[signing]`):
/// the native JWS always, the CAEP token when it has a topic to go to.
#[derive(Debug)]
pub struct Signer {
    pub keys: KeyRing,
    pub issuer: String,
    pub audience: String,
    pub caep_topic: Option<String>,
}

impl Signer {
    /// The signer `settings` ask for; `None` when they name no key.
    pub fn from_config(settings: &crate::config::Signing) -> Result<Option<Signer>, KeyError> {
        let Some(path) = &settings.key else { return Ok(None) };
        Ok(Some(Signer {
            keys: KeyRing::load(path)?,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            caep_topic: settings.caep_topic.clone(),
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a compact JWS: expected 3 `.`-separated parts, found {0}")]
    Shape(usize),
    #[error("the {0} is not base64url without padding")]
    Encoding(&'static str),
    #[error("the protected header is not a JSON object with a string `alg`: {0}")]
    Header(String),
    #[error("algorithm `{0}` is refused; only `EdDSA` is accepted")]
    Algorithm(String),
    #[error("the header has `crit` {0:?}; no critical extension is understood")]
    Critical(Vec<String>),
    #[error("the header names no `kid`")]
    MissingKid,
    #[error("key `{0}` is not in the key set")]
    UnknownKid(String),
    #[error("key `{kid}` in the key set is not an Ed25519 verification key: {reason}")]
    UnusableKey { kid: String, reason: String },
    #[error("the signature does not verify with key `{0}`: the token was altered or signed by another key")]
    Signature(String),
    #[error("token type `{found}` where `{expected}` was expected")]
    Type { expected: &'static str, found: String },
    #[error("the signed payload is not {expected}: {reason}")]
    Payload { expected: &'static str, reason: String },
}

/// One public key as a JWK (RFC 7517, OKP keys per RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

impl Jwk {
    fn ed25519(key: &VerifyingKey) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(key.as_bytes())),
            kid: Some(thumbprint(key)),
            key_use: Some("sig".into()),
            alg: Some(ALGORITHM.into()),
        }
    }

    /// The Ed25519 key this JWK carries, refusing anything a signer of
    /// commands could not have meant: other key types, encryption keys,
    /// other algorithms, points off the curve and small-order ("weak") keys.
    fn verifying_key(&self, kid: &str) -> Result<VerifyingKey, VerifyError> {
        let unusable = |reason: &str| VerifyError::UnusableKey { kid: kid.to_string(), reason: reason.to_string() };
        if self.kty != "OKP" || self.crv.as_deref() != Some("Ed25519") {
            return Err(unusable("not an OKP key on curve Ed25519"));
        }
        if self.key_use.as_deref().is_some_and(|u| u != "sig") {
            return Err(unusable("its `use` is not `sig`"));
        }
        if self.alg.as_deref().is_some_and(|a| a != ALGORITHM) {
            return Err(unusable("its `alg` is not `EdDSA`"));
        }
        let x = self.x.as_deref().ok_or_else(|| unusable("it has no `x`"))?;
        let bytes = URL_SAFE_NO_PAD.decode(x).map_err(|_| unusable("`x` is not base64url"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| unusable("`x` is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| unusable("`x` is not a point on the curve"))?;
        if key.is_weak() {
            return Err(unusable("`x` is a small-order point"));
        }
        Ok(key)
    }
}

/// The published verification keys (RFC 7517 §5): what a subscriber needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWK set. Keys without a `kid` are kept but can never match a
    /// token; a repeated `kid` is refused because it would make the key a
    /// token names ambiguous.
    pub fn from_json(text: &str) -> Result<Jwks, KeyError> {
        let jwks: Jwks = serde_json::from_str(text).map_err(|e| KeyError::Jwks(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for kid in jwks.keys.iter().filter_map(|k| k.kid.as_deref()) {
            if !seen.insert(kid) {
                return Err(KeyError::DuplicateKid(kid.to_string()));
            }
        }
        Ok(jwks)
    }

    /// Pretty JSON, one key per entry, for the file subscribers load.
    pub fn to_json(&self) -> String {
        serde_json::to_value(self).map(|v| format!("{v:#}")).unwrap_or_default()
    }

    fn find(&self, kid: &str) -> Result<VerifyingKey, VerifyError> {
        let jwk = self
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or_else(|| VerifyError::UnknownKid(kid.to_string()))?;
        jwk.verifying_key(kid)
    }
}

/// The RFC 7638 thumbprint of an Ed25519 key: a `kid` anyone can recompute
/// from the public key, so it never has to be configured or kept in sync.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    // Required members only, in lexicographic order, no whitespace (RFC 7638 §3.2).
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The engine's keys: one active signing key, plus the public keys of the
/// keys it replaced, still published so commands signed before a rotation
/// keep verifying until they expire.
pub struct KeyRing {
    signing: SigningKey,
    kid: String,
    previous: Vec<Jwk>,
}

impl fmt::Debug for KeyRing {
    /// Names the keys, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<_> = self.previous.iter().filter_map(|k| k.kid.as_deref()).collect();
        f.debug_struct("KeyRing").field("kid", &self.kid).field("previous", &previous).finish()
    }
}

impl KeyRing {
    fn with_key(signing: SigningKey) -> KeyRing {
        let kid = thumbprint(&signing.verifying_key());
        KeyRing { signing, kid, previous: Vec::new() }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> KeyRing {
        KeyRing::with_key(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key in a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<KeyRing, KeyError> {
        SigningKey::from_pkcs8_pem(pem).map(KeyRing::with_key).map_err(|e| KeyError::Pkcs8(e.to_string()))
    }

    /// Reads a PKCS#8 PEM key file.
    pub fn load(path: &Path) -> Result<KeyRing, KeyError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Read { path: path.display().to_string(), source })?;
        KeyRing::from_pkcs8_pem(&pem)
    }

    /// The secret key as PKCS#8 PEM; the text is wiped from memory on drop.
    pub fn to_pkcs8_pem(&self) -> Result<impl std::ops::Deref<Target = String>, KeyError> {
        self.signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// The active key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Keeps publishing the keys of an earlier JWK set (all but the active
    /// one), for a rotation: sign with the new key, verify old commands too.
    pub fn keep_previous(&mut self, published: &Jwks) {
        for jwk in &published.keys {
            let Some(kid) = jwk.kid.as_deref() else { continue };
            let known = kid == self.kid || self.previous.iter().any(|k| k.kid.as_deref() == Some(kid));
            if !known {
                self.previous.push(jwk.clone());
            }
        }
    }

    /// The public keys to publish: the active one first.
    pub fn jwks(&self) -> Jwks {
        let mut keys = vec![Jwk::ed25519(&self.signing.verifying_key())];
        keys.extend(self.previous.iter().cloned());
        Jwks { keys }
    }

    /// `command` as a compact JWS of `typ` [`COMMAND_TYPE`].
    pub fn sign(&self, command: &ControlCommand) -> String {
        self.sign_payload(COMMAND_TYPE, command_json(command).as_bytes())
    }

    /// Any JSON claims (a Security Event Token) as a compact JWS of `typ`
    /// [`SET_TYPE`].
    pub fn sign_set(&self, claims: &serde_json::Value) -> String {
        self.sign_payload(SET_TYPE, claims.to_string().as_bytes())
    }

    fn sign_payload(&self, typ: &str, payload: &[u8]) -> String {
        let header = serde_json::json!({"alg": ALGORITHM, "kid": self.kid, "typ": typ});
        let mut signing_input = URL_SAFE_NO_PAD.encode(header.to_string());
        signing_input.push('.');
        signing_input.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = self.signing.sign(signing_input.as_bytes());
        signing_input.push('.');
        signing_input.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        signing_input
    }
}

/// The command's JSON as signed: serde writes the fields in struct order,
/// so the bytes are stable.
fn command_json(command: &ControlCommand) -> String {
    // A struct of strings, an enum and options has no failing serialization
    // path (no non-string map keys, no custom `Serialize`), so this arm is dead.
    #[allow(clippy::expect_used)]
    serde_json::to_string(command).expect("a control command always serializes")
}

#[derive(Debug, Deserialize)]
struct ProtectedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

/// A JWS whose signature checked out against the key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub kid: String,
    /// The header's `typ`, which says what the payload is.
    pub typ: Option<String>,
    pub payload: Vec<u8>,
}

/// Checks a compact JWS against `keys`, whatever it carries. The algorithm
/// comes from this verifier, never from the token: anything but `EdDSA`
/// (`none`, `HS256` with the public key as secret, …) is refused before a key
/// is looked up. Verification is strict (RFC 8032 §5.1.7 plus canonical
/// encodings), so a signature cannot be re-encoded into a second valid one.
pub fn verify_compact(jws: &str, keys: &Jwks) -> Result<Verified, VerifyError> {
    let jws = jws.trim();
    let parts: Vec<&str> = jws.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts[..] else {
        return Err(VerifyError::Shape(parts.len()));
    };
    let header_bytes = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| VerifyError::Encoding("header"))?;
    let header: ProtectedHeader =
        serde_json::from_slice(&header_bytes).map_err(|e| VerifyError::Header(e.to_string()))?;
    if header.alg != ALGORITHM {
        return Err(VerifyError::Algorithm(header.alg));
    }
    if let Some(crit) = header.crit {
        return Err(VerifyError::Critical(crit));
    }
    let kid = header.kid.ok_or(VerifyError::MissingKid)?;
    let key = keys.find(&kid)?;
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| VerifyError::Encoding("payload"))?;
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| VerifyError::Encoding("signature"))?;
    let signature = Signature::from_slice(&signature).map_err(|_| VerifyError::Signature(kid.clone()))?;
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    key.verify_strict(&jws.as_bytes()[..signing_input_len], &signature)
        .map_err(|_| VerifyError::Signature(kid.clone()))?;
    Ok(Verified { kid, typ: header.typ, payload })
}

fn expect_type(verified: &Verified, expected: &'static str) -> Result<(), VerifyError> {
    match verified.typ.as_deref() {
        Some(typ) if typ == expected => Ok(()),
        other => Err(VerifyError::Type { expected, found: other.unwrap_or("(none)").to_string() }),
    }
}

/// Verifies a native command JWS and returns the command. The `typ` must be
/// [`COMMAND_TYPE`], so a signed token of another kind (a SET) can never be
/// replayed as a command.
pub fn verify(jws: &str, keys: &Jwks) -> Result<ControlCommand, VerifyError> {
    let verified = verify_compact(jws, keys)?;
    expect_type(&verified, COMMAND_TYPE)?;
    serde_json::from_slice(&verified.payload)
        .map_err(|e| VerifyError::Payload { expected: "a control command", reason: e.to_string() })
}

/// Verifies a Security Event Token JWS (`typ` [`SET_TYPE`]) and returns its
/// claims.
pub fn verify_set(jws: &str, keys: &Jwks) -> Result<serde_json::Value, VerifyError> {
    let verified = verify_compact(jws, keys)?;
    expect_type(&verified, SET_TYPE)?;
    let claims: serde_json::Value = serde_json::from_slice(&verified.payload)
        .map_err(|e| VerifyError::Payload { expected: "a JSON object", reason: e.to_string() })?;
    if !claims.is_object() {
        return Err(VerifyError::Payload { expected: "a JSON object", reason: "another JSON value".into() });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_8037_appendix_a3() {
        // RFC 8037 A.1 public key and its A.3 thumbprint.
        let x = URL_SAFE_NO_PAD.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap_or_default();
        let bytes: [u8; 32] = x.try_into().unwrap_or([0; 32]);
        let key = VerifyingKey::from_bytes(&bytes).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(thumbprint(&key), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn signature_matches_rfc_8037_appendix_a4() {
        // RFC 8037 A.4: the secret key of A.1 signs "Example of Ed25519 signing".
        let d = URL_SAFE_NO_PAD.decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").unwrap_or_default();
        let seed: [u8; 32] = d.try_into().unwrap_or([0; 32]);
        let key = SigningKey::from_bytes(&seed);
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let signature = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
        assert_eq!(
            signature,
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }
}
