//! The server's recording signing key: Ed25519, generated once and kept in the data directory
//! (`recording-signing.key`, 64 hex characters, mode 0600). Its public half is published
//! (`GET /api/v1/recordings/public-key`) so anyone holding a copy of the recordings can verify
//! them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ed25519_dalek::{SigningKey, VerifyingKey};
use recordings::{Keyring, Signer};

/// File name of the key in the data directory.
pub const KEY_FILE: &str = "recording-signing.key";

/// The key file's path.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// Loads the signing key, or generates and stores it (mode 0600) on first start.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Signer> {
    let path = key_path(data_dir);
    if let Some(key) = load(&path)? {
        return Ok(Signer::new(key));
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    std::fs::create_dir_all(data_dir)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(hex::encode(key.to_bytes()).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), key_id = %Signer::new(key.clone()).key_id(), "generated the recording signing key");
    Ok(Signer::new(key))
}

/// Loads the signing key if the file exists.
pub fn load(path: &Path) -> anyhow::Result<Option<SigningKey>> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let bytes: [u8; 32] = hex::decode(s.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .with_context(|| format!("{} does not hold a 32-byte hex key", path.display()))?;
            Ok(Some(SigningKey::from_bytes(&bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Parses a public key given as 64 hex characters.
pub fn parse_public_key(hex_key: &str) -> anyhow::Result<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("a public key is 64 hex characters")?;
    VerifyingKey::from_bytes(&bytes).context("not an Ed25519 public key")
}

/// The keyring of a signer (current key only; retired keys would be added here).
pub fn keyring_of(signer: &Signer) -> Keyring {
    Keyring::new([signer.verifying_key()])
}
