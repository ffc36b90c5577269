//! `cloud-window verify`: checks a recording (`--recording ID`) or the whole chain and every
//! recording in it (`--chain`) against the server's public key and the chain head recorded in
//! the database, and says exactly what is wrong. Exit status: 0 intact, 1 problems found,
//! 2 the check could not run.
//!
//! ```text
//! cloud-window verify --chain --data-dir /var/lib/cloud-window
//! cloud-window verify --recording 0193… --json
//! cloud-window verify --chain --public-key 3b6a27bc… --recordings-store-url s3://bucket/rec
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use recordings::{verify_chain, verify_recording, ChainHead, Keyring, RecordingId, Sha256Digest};
use uuid::Uuid;

use super::objects::{open_object_store, TieredStore};
use super::{keys, RecorderConfig};
use crate::config::Settings;

/// Arguments of `cloud-window verify` (plus every server setting, for the data directory,
/// database and recordings store).
#[derive(Debug, Parser)]
#[command(name = "cloud-window verify", about = "Verify audit recordings and their hash chain")]
pub struct VerifyArgs {
    /// Check this recording: manifest signature, every segment's hash, its place in the chain.
    #[arg(long, conflicts_with = "chain")]
    pub recording: Option<Uuid>,
    /// Check the whole chain and every recording it names.
    #[arg(long)]
    pub chain: bool,
    /// Trust this Ed25519 public key (64 hex characters) instead of the key in the data
    /// directory (an external verifier holding only the published key).
    #[arg(long)]
    pub public_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Server settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// Runs `verify` with `args` (the first one is the program name); returns the exit status.
pub async fn run(args: impl IntoIterator<Item = String>) -> i32 {
    let args = match VerifyArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match verify(&args).await {
        Ok((ok, text)) => {
            println!("{text}");
            if ok {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("verify: {e:#}");
            2
        }
    }
}

async fn verify(args: &VerifyArgs) -> anyhow::Result<(bool, String)> {
    anyhow::ensure!(args.recording.is_some() || args.chain, "say what to check: --recording ID or --chain");
    let keyring = match &args.public_key {
        Some(k) => Keyring::new([keys::parse_public_key(k)?]),
        None => {
            let key = keys::load(&keys::key_path(&args.settings.data_dir))?
                .context("no recording signing key in the data directory; pass --public-key")?;
            Keyring::new([key.verifying_key()])
        }
    };
    let config = RecorderConfig::from_settings(&args.settings)?;
    let remote = open_object_store(&config.store_url)?;
    let tiered = TieredStore::new(&config.spool, remote, tokio::runtime::Handle::current());
    let db = crate::store::connect(&args.settings.database_url()).await.context("opening the database")?;
    let head = expected_head(db.as_ref()).await?;
    let recording = args.recording;
    let json = args.json;
    tokio::task::spawn_blocking(move || -> anyhow::Result<(bool, String)> { match recording {
        Some(id) => {
            let report = verify_recording(&tiered, &keyring, RecordingId::from_uuid(id));
            let ok = report.is_ok();
            let text = if json { serde_json::to_string_pretty(&report)? } else { format!("{report}") };
            Ok((ok, text))
        }
        None => {
            let report = verify_chain(&tiered, &keyring, head);
            let ok = report.is_ok();
            let text = if json { serde_json::to_string_pretty(&report)? } else { format!("{report}") };
            Ok((ok, text))
        }
    }})
    .await?
}

/// The chain head recorded in the database.
pub async fn expected_head(db: &dyn crate::store::Store) -> anyhow::Result<Option<ChainHead>> {
    Ok(match db.chain_head().await? {
        Some(h) => Some(ChainHead {
            seq: h.seq,
            hash: h.hash.parse::<Sha256Digest>().map_err(|_| anyhow::anyhow!("unreadable chain head in the database"))?,
        }),
        None => None,
    })
}

/// The directory of playback exports (derived data, rebuilt on demand) next to the spool.
pub fn exports_dir(spool: &Path) -> PathBuf {
    spool.parent().unwrap_or(spool).join("recording-exports")
}

/// Removes the cached exports of a recording.
pub fn remove_exports(spool: &Path, id: Uuid) {
    let dir = exports_dir(spool);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&id.to_string()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

