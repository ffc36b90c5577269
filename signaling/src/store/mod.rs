//! Storage: one trait, [`Store`], with a SQLite and a PostgreSQL implementation, each with its
//! own migrations (`signaling/migrations/{sqlite,postgres}`) applied at start. The backend is
//! picked from the database URL scheme.

use async_trait::async_trait;
use std::sync::Arc;
use uuid::Uuid;

use crate::domain::clock::Millis;
use crate::domain::identity::{otp::Challenge, LoginFailures, PhoneNumber, Role, Username};
use crate::domain::ids::{DeviceId, PairingId, ResidentId, SessionId, StaffId};
use crate::domain::matter::{Matter, MatterClass, MatterSpec};
use crate::domain::people::{AuditEntry, Device, DeviceKind, Grid, Resident, Staff};

pub mod blobs;
pub mod calls;
pub mod cases;
pub mod queue;
pub mod recordings;
mod sql;
pub use calls::{CallEvent, CallStore};
pub use cases::CaseStore;
pub use queue::QueueStore;
pub use recordings::RecordingStore;
pub use sql::{PgStore, SqliteStore};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness or reference rule was broken (which one, in a stable word).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// The database failed or the stored data is unreadable.
    #[error("database: {0}")]
    Db(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return StoreError::Conflict("duplicate");
            }
            if d.is_foreign_key_violation() {
                return StoreError::Conflict("reference");
            }
        }
        StoreError::Db(e.to_string())
    }
}

/// Result of storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A sign-in session holding a refresh token (stored as a hash).
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Id (carried in access tokens as `sid`).
    pub id: SessionId,
    /// Staff, resident or device id.
    pub subject: Uuid,
    /// Role of the subject.
    pub role: Role,
    /// Hash of the current refresh token.
    pub refresh_hash: String,
    /// Created (Unix ms).
    pub created_at: Millis,
    /// Refresh token expiry (Unix ms).
    pub expires_at: Millis,
}

/// What happened to a presented refresh token.
#[derive(Debug, Clone)]
pub enum RotateOutcome {
    /// Valid: the session now holds the new hash.
    Rotated(SessionRecord),
    /// An already-rotated token was presented again: the session was revoked (theft).
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

/// A device pairing attempt.
#[derive(Debug, Clone)]
pub struct Pairing {
    /// Id (the device polls it).
    pub id: PairingId,
    /// Short code shown on the device's screen.
    pub code: String,
    /// What kind of device asks.
    pub kind: DeviceKind,
    /// Label the device proposed.
    pub label: String,
    /// Hash of the secret only the device knows (proves it is the one polling).
    pub poll_secret_hash: String,
    /// Created (Unix ms).
    pub created_at: Millis,
    /// Expires (Unix ms).
    pub expires_at: Millis,
    /// Set when an admin confirmed it.
    pub confirmed_at: Option<Millis>,
    /// The device created on confirmation.
    pub device_id: Option<DeviceId>,
}

/// Everything the server stores. Implementations: [`SqliteStore`], [`PgStore`].
#[async_trait]
pub trait Store: CallStore + QueueStore + CaseStore + RecordingStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Checks the database answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Adds a grid.
    async fn insert_grid(&self, g: &Grid) -> StoreResult<()>;
    /// All grids, by code.
    async fn list_grids(&self) -> StoreResult<Vec<Grid>>;

    /// Adds a staff account (conflict on a taken username).
    async fn insert_staff(&self, s: &Staff) -> StoreResult<()>;
    /// Finds a staff account by username.
    async fn staff_by_username(&self, u: &Username) -> StoreResult<Option<Staff>>;
    /// Finds a staff account by id.
    async fn staff_by_id(&self, id: StaffId) -> StoreResult<Option<Staff>>;
    /// Staff accounts after a cursor, in id order.
    async fn list_staff(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Staff>>;
    /// Stores the failed sign-in state (a reset after a good sign-in; imports).
    async fn set_login_failures(&self, id: StaffId, f: LoginFailures) -> StoreResult<()>;
    /// Counts one failed sign-in in one atomic step (`failed_logins + 1`, never a value read
    /// earlier) and sets the lock [`LoginFailures::after_failure`] asks for; returns the new
    /// state. Concurrent failures each count. `None` when the account does not exist.
    async fn count_login_failure(&self, id: StaffId, now: Millis) -> StoreResult<Option<LoginFailures>>;

    /// Adds a resident (conflict on a known phone or ID number).
    async fn insert_resident(&self, r: &Resident) -> StoreResult<()>;
    /// Finds a resident by id.
    async fn resident_by_id(&self, id: ResidentId) -> StoreResult<Option<Resident>>;
    /// Finds a resident by phone.
    async fn resident_by_phone(&self, p: &PhoneNumber) -> StoreResult<Option<Resident>>;
    /// Residents after a cursor, in id order.
    async fn list_residents(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Resident>>;
    /// Replaces a resident's profile fields.
    async fn update_resident(&self, r: &Resident) -> StoreResult<()>;

    /// The current code challenge for a phone.
    async fn otp_get(&self, phone: &PhoneNumber) -> StoreResult<Option<Challenge>>;
    /// Replaces the challenge for a phone.
    async fn otp_put(&self, phone: &PhoneNumber, c: &Challenge) -> StoreResult<()>;
    /// Counts one guess against the phone's challenge in a single conditional update, if the
    /// challenge is still live (unexpired at `now`, fewer than `max_attempts` guesses
    /// counted), and returns the challenge as it was before this guess. `None`: no live
    /// challenge, and nothing was counted. Of many concurrent guesses at most `max_attempts`
    /// in all get a challenge to check against.
    async fn otp_take_attempt(&self, phone: &PhoneNumber, max_attempts: u32, now: Millis) -> StoreResult<Option<Challenge>>;
    /// Uses the challenge up: deletes it only if it still holds `code_hash`. True for exactly
    /// one caller; a concurrent use of the same code gets false.
    async fn otp_consume(&self, phone: &PhoneNumber, code_hash: &str) -> StoreResult<bool>;
    /// Removes the challenge (abandoned).
    async fn otp_delete(&self, phone: &PhoneNumber) -> StoreResult<()>;

    /// Opens a session.
    async fn insert_session(&self, s: &SessionRecord) -> StoreResult<()>;
    /// Swaps a presented refresh hash for a new one, exactly once.
    async fn rotate_session(
        &self,
        presented_hash: &str,
        new_hash: &str,
        now: Millis,
        new_expires: Millis,
    ) -> StoreResult<RotateOutcome>;
    /// Ends a session.
    async fn revoke_session(&self, id: SessionId, now: Millis) -> StoreResult<()>;

    /// Adds a pairing attempt (conflict when its code is taken by a pending one).
    async fn insert_pairing(&self, p: &Pairing) -> StoreResult<()>;
    /// Finds a pairing attempt.
    async fn pairing_by_id(&self, id: PairingId) -> StoreResult<Option<Pairing>>;
    /// Confirms the pending, unexpired pairing with this code and kind, creating `device` for
    /// it (an empty label takes the one the device proposed), in one transaction. `None` when
    /// no such pairing exists.
    async fn confirm_pairing(
        &self,
        code: &str,
        now: Millis,
        by: StaffId,
        device: &Device,
    ) -> StoreResult<Option<(Pairing, Device)>>;
    /// Adds a device directly (demo data, imports); pairing is the normal way.
    async fn insert_device(&self, d: &Device) -> StoreResult<()>;
    /// Sets a device's token hash (pairing delivery or rotation).
    async fn set_device_token(&self, id: DeviceId, token_hash: &str) -> StoreResult<()>;
    /// Finds the live (not revoked) device holding this token hash, and marks it seen.
    async fn device_by_token(&self, token_hash: &str, now: Millis) -> StoreResult<Option<Device>>;
    /// Finds a device.
    async fn device_by_id(&self, id: DeviceId) -> StoreResult<Option<Device>>;
    /// Devices after a cursor.
    async fn list_devices(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Device>>;
    /// Revokes a device; false when unknown.
    async fn revoke_device(&self, id: DeviceId) -> StoreResult<bool>;

    /// Adds or renames a matter class.
    async fn upsert_class(&self, c: &MatterClass) -> StoreResult<()>;
    /// All classes.
    async fn list_classes(&self) -> StoreResult<Vec<MatterClass>>;
    /// Adds a matter at version 1 (conflict when the code exists or the class does not).
    async fn insert_matter(&self, m: &MatterSpec, now: Millis) -> StoreResult<Matter>;
    /// Replaces a matter's spec, bumping its version; with `expected_version`, only if it still
    /// has that version (conflict otherwise).
    async fn update_matter(
        &self,
        m: &MatterSpec,
        active: bool,
        expected_version: Option<i64>,
        now: Millis,
    ) -> StoreResult<Matter>;
    /// Finds a matter.
    async fn matter(&self, code: &str) -> StoreResult<Option<Matter>>;
    /// All matters, optionally of one class, by code.
    async fn list_matters(&self, class: Option<&str>) -> StoreResult<Vec<Matter>>;

    /// Appends to the audit log.
    async fn append_audit(&self, e: &AuditEntry) -> StoreResult<()>;
    /// Audit entries after a cursor, oldest first.
    async fn list_audit(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}

/// Opens the store named by `url` (`sqlite://...` or `postgres://...`) and applies its
/// migrations.
pub async fn connect(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        anyhow::bail!("unsupported database URL scheme (use sqlite:// or postgres://)")
    }
}

/// Seeds the built-in matters catalogue when the catalogue is empty.
pub async fn seed_catalogue(store: &dyn Store, now: Millis) -> StoreResult<usize> {
    if !store.list_classes().await?.is_empty() {
        return Ok(0);
    }
    let cat = crate::domain::matter::Catalogue::builtin();
    for c in &cat.classes {
        store.upsert_class(c).await?;
    }
    for m in &cat.matters {
        store.insert_matter(m, now).await?;
    }
    Ok(cat.matters.len())
}
