//! Ed25519 signing of manifests and chain entries.
//!
//! Every signature covers a domain-separation prefix and the signed bytes, so a
//! manifest signature can never be replayed as a chain-entry signature.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Sha256Digest;

pub(crate) const MANIFEST_DOMAIN: &[u8] = b"recordings/manifest/v1\0";
pub(crate) const CHAIN_DOMAIN: &[u8] = b"recordings/chain-entry/v1\0";

/// Names a public key: the first 8 bytes of SHA-256 of the 32-byte key, in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        let d = Sha256Digest::of(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.0[..8]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = hex::FromHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 8];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Self(out))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An Ed25519 signature, serialized as 128 hex characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes(pub [u8; 64]);

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureBytes({})", hex::encode(self.0))
    }
}

impl Serialize for SignatureBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for SignatureBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Self(out))
    }
}

/// The server's signing key. `Debug` shows only the key id.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    id: KeyId,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Wraps a signing key (load it with `ed25519_dalek::pkcs8` or generate one).
    pub fn new(key: SigningKey) -> Self {
        let id = KeyId::of(&key.verifying_key());
        Self { key, id }
    }

    /// The id of the public half.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The public half, for a [`Keyring`].
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub(crate) fn sign(&self, domain: &[u8], message: &[u8]) -> SignatureBytes {
        let mut m = Vec::with_capacity(domain.len() + message.len());
        m.extend_from_slice(domain);
        m.extend_from_slice(message);
        SignatureBytes(self.key.sign(&m).to_bytes())
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureCheck {
    Valid,
    UnknownKey,
    Invalid,
}

/// The public keys whose signatures are trusted (the current server key and
/// any retired ones).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<(KeyId, VerifyingKey)>,
}

impl Keyring {
    /// A keyring holding `keys`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let mut ring = Self::default();
        for k in keys {
            ring.add(k);
        }
        ring
    }

    /// Trusts one more key.
    pub fn add(&mut self, key: VerifyingKey) {
        let id = KeyId::of(&key);
        if !self.keys.iter().any(|(k, _)| *k == id) {
            self.keys.push((id, key));
        }
    }

    pub(crate) fn check(
        &self,
        key_id: KeyId,
        domain: &[u8],
        message: &[u8],
        sig: &SignatureBytes,
    ) -> SignatureCheck {
        let Some((_, key)) = self.keys.iter().find(|(k, _)| *k == key_id) else {
            return SignatureCheck::UnknownKey;
        };
        let mut m = Vec::with_capacity(domain.len() + message.len());
        m.extend_from_slice(domain);
        m.extend_from_slice(message);
        match key.verify_strict(&m, &Signature::from_bytes(&sig.0)) {
            Ok(()) => SignatureCheck::Valid,
            Err(_) => SignatureCheck::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_bound_to_their_domain_and_key() {
        let signer = Signer::new(SigningKey::from_bytes(&[1; 32]));
        let other = Signer::new(SigningKey::from_bytes(&[2; 32]));
        let ring = Keyring::new([signer.verifying_key()]);
        let sig = signer.sign(MANIFEST_DOMAIN, b"hello");
        assert_eq!(
            ring.check(signer.key_id(), MANIFEST_DOMAIN, b"hello", &sig),
            SignatureCheck::Valid
        );
        assert_eq!(
            ring.check(signer.key_id(), CHAIN_DOMAIN, b"hello", &sig),
            SignatureCheck::Invalid
        );
        assert_eq!(
            ring.check(signer.key_id(), MANIFEST_DOMAIN, b"hellO", &sig),
            SignatureCheck::Invalid
        );
        let forged = other.sign(MANIFEST_DOMAIN, b"hello");
        assert_eq!(
            ring.check(other.key_id(), MANIFEST_DOMAIN, b"hello", &forged),
            SignatureCheck::UnknownKey
        );
        assert_eq!(
            ring.check(signer.key_id(), MANIFEST_DOMAIN, b"hello", &forged),
            SignatureCheck::Invalid
        );
        assert!(!format!("{signer:?}").contains("SigningKey"));
    }
}
