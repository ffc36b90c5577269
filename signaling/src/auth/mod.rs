//! Credentials: access tokens (signed JWTs), password hashing, keyed hashes for stored
//! secrets, random tokens, and the pluggable sender of residents' one-time codes.

pub mod codes;
pub mod tokens;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// A server secret used to key the hashes of stored secrets (refresh tokens, device tokens,
/// one-time codes). Never printed.
#[derive(Clone)]
pub struct Hasher {
    key: Vec<u8>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(***)")
    }
}

impl Hasher {
    /// A hasher keyed by `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Hasher { key: secret.to_vec() }
    }

    /// HMAC-SHA256 of `value` under a purpose label, hex encoded. The label keeps a hash made
    /// for one purpose from matching another's.
    pub fn hash(&self, label: &str, value: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A random URL-safe token with 256 bits of entropy.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A random code of `len` characters from `alphabet`.
pub fn random_code(alphabet: &[u8], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

/// Hashes a password with Argon2id (default parameters). CPU-heavy: call from a blocking task.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?
        .to_string())
}

/// Checks a password against an Argon2 PHC string. CPU-heavy: call from a blocking task.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A valid Argon2 hash of a random password, verified against when a username is unknown so
/// that unknown and known usernames take the same time.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip_and_wrong_ones_fail() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn keyed_hashes_depend_on_key_and_label() {
        let a = Hasher::new(b"k1");
        assert_eq!(a.hash("otp", "1"), a.hash("otp", "1"));
        assert_ne!(a.hash("otp", "1"), a.hash("refresh", "1"));
        assert_ne!(a.hash("otp", "1"), Hasher::new(b"k2").hash("otp", "1"));
    }
}
