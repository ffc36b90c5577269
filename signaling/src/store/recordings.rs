//! Storage of audit recordings: one row per recording (status, retention, legal hold), and the
//! head of the recordings hash chain. The media, the signed manifests and the chain itself live
//! in the recordings store (`object_store`), not in the database.

use async_trait::async_trait;
use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{PgStore, SqliteStore};
use super::{StoreError, StoreResult};
use crate::domain::clock::Millis;

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Being written.
    Recording,
    /// Finished normally and sealed in the chain.
    Complete,
    /// The writer died (crash, kill); recovered and sealed with the segments it finished.
    Interrupted,
    /// Deleted (retention); a tombstone in the chain accounts for it.
    Deleted,
}

impl RecordingState {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Complete => "complete",
            RecordingState::Interrupted => "interrupted",
            RecordingState::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "recording" => RecordingState::Recording,
            "complete" => RecordingState::Complete,
            "interrupted" => RecordingState::Interrupted,
            "deleted" => RecordingState::Deleted,
            _ => return None,
        })
    }
}

/// A legal hold: the recording is kept past its retention until the hold is cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalHold {
    /// Why (case number, order).
    pub reason: String,
    /// The auditor who set it.
    pub by: Uuid,
    /// When.
    pub at: Millis,
}

/// One recording as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRecord {
    /// The recording id (also its directory in the store).
    pub id: Uuid,
    /// The recorded call.
    pub call_id: Uuid,
    /// The call's matter, if known (decides retention).
    pub matter_code: Option<String>,
    /// Status.
    pub state: RecordingState,
    /// Started (first packet).
    pub started_at: Millis,
    /// Ended (finished, or the end of the last segment of an interrupted recording).
    pub ended_at: Option<Millis>,
    /// Number of segment files.
    pub segments: u32,
    /// SHA-256 (hex) of the sealed manifest file.
    pub manifest_sha256: Option<String>,
    /// Days kept after the end, unless on hold.
    pub retention_days: u32,
    /// The legal hold, if any.
    pub hold: Option<LegalHold>,
    /// When deleted.
    pub deleted_at: Option<Millis>,
}

impl RecordingRecord {
    /// When retention ends (`None` while recording).
    pub fn retention_until(&self) -> Option<Millis> {
        self.ended_at.map(|e| e + i64::from(self.retention_days) * 86_400_000)
    }
}

/// Filters for listing recordings.
#[derive(Debug, Clone, Default)]
pub struct RecordingFilter {
    /// Only this call's.
    pub call_id: Option<Uuid>,
    /// Only recordings of calls this subject is a member of (agents see their own).
    pub member: Option<Uuid>,
    /// After this id (cursor; ids are time ordered).
    pub after: Option<Uuid>,
}

/// The chain head kept outside the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChainHead {
    /// Sequence number of the last entry.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
}

/// Recordings and the chain head.
#[async_trait]
pub trait RecordingStore: Send + Sync {
    /// Adds a recording (status `recording`).
    async fn insert_recording(&self, r: &RecordingRecord) -> StoreResult<()>;
    /// Marks a recording finished (complete or interrupted) with its sealed manifest.
    async fn finish_recording(
        &self,
        id: Uuid,
        state: RecordingState,
        ended_at: Millis,
        segments: u32,
        manifest_sha256: &str,
    ) -> StoreResult<()>;
    /// Finds a recording.
    async fn recording_by_id(&self, id: Uuid) -> StoreResult<Option<RecordingRecord>>;
    /// Recordings, newest id last, after the cursor.
    async fn list_recordings(&self, filter: &RecordingFilter, limit: u32) -> StoreResult<Vec<RecordingRecord>>;
    /// Sets (`Some`) or clears (`None`) a legal hold; not found when unknown.
    async fn set_legal_hold(&self, id: Uuid, hold: Option<&LegalHold>) -> StoreResult<()>;
    /// Finished recordings past retention (`ended_at + retention_days < now`) and not on hold.
    async fn recordings_past_retention(&self, now: Millis, limit: u32) -> StoreResult<Vec<RecordingRecord>>;
    /// Marks a recording deleted.
    async fn mark_recording_deleted(&self, id: Uuid, at: Millis) -> StoreResult<()>;
    /// The recorded chain head.
    async fn chain_head(&self) -> StoreResult<Option<StoredChainHead>>;
    /// Replaces the recorded chain head.
    async fn set_chain_head(&self, head: &StoredChainHead, now: Millis) -> StoreResult<()>;
}

#[derive(FromRow)]
struct Row {
    id: Uuid,
    call_id: Uuid,
    matter_code: Option<String>,
    status: String,
    started_at: i64,
    ended_at: Option<i64>,
    segments: i64,
    manifest_sha256: Option<String>,
    retention_days: i64,
    legal_hold: bool,
    hold_reason: Option<String>,
    hold_by: Option<Uuid>,
    hold_at: Option<i64>,
    deleted_at: Option<i64>,
}

impl TryFrom<Row> for RecordingRecord {
    type Error = StoreError;
    fn try_from(r: Row) -> StoreResult<Self> {
        let hold = match (r.legal_hold, r.hold_by, r.hold_at) {
            (true, Some(by), Some(at)) => Some(LegalHold { reason: r.hold_reason.unwrap_or_default(), by, at }),
            (true, _, _) => return Err(StoreError::Db("unreadable legal hold".into())),
            _ => None,
        };
        Ok(RecordingRecord {
            id: r.id,
            call_id: r.call_id,
            matter_code: r.matter_code,
            state: RecordingState::parse(&r.status).ok_or_else(|| StoreError::Db("unreadable recording status".into()))?,
            started_at: r.started_at,
            ended_at: r.ended_at,
            segments: u32::try_from(r.segments).unwrap_or(u32::MAX),
            manifest_sha256: r.manifest_sha256,
            retention_days: u32::try_from(r.retention_days).unwrap_or(u32::MAX),
            hold,
            deleted_at: r.deleted_at,
        })
    }
}

const COLS: &str = "id, call_id, matter_code, status, started_at, ended_at, segments, manifest_sha256, \
                    retention_days, legal_hold, hold_reason, hold_by, hold_at, deleted_at";

macro_rules! recording_store {
    ($name:ident) => {
        #[async_trait]
        impl RecordingStore for $name {
            async fn insert_recording(&self, r: &RecordingRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO recordings ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ))
                .bind(r.id)
                .bind(r.call_id)
                .bind(&r.matter_code)
                .bind(r.state.as_str())
                .bind(r.started_at)
                .bind(r.ended_at)
                .bind(i64::from(r.segments))
                .bind(&r.manifest_sha256)
                .bind(i64::from(r.retention_days))
                .bind(r.hold.is_some())
                .bind(r.hold.as_ref().map(|h| h.reason.clone()))
                .bind(r.hold.as_ref().map(|h| h.by))
                .bind(r.hold.as_ref().map(|h| h.at))
                .bind(r.deleted_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn finish_recording(
                &self,
                id: Uuid,
                state: RecordingState,
                ended_at: Millis,
                segments: u32,
                manifest_sha256: &str,
            ) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE recordings SET status = $1, ended_at = $2, segments = $3, manifest_sha256 = $4 \
                     WHERE id = $5 AND status IN ('recording', 'complete', 'interrupted')",
                )
                .bind(state.as_str())
                .bind(ended_at)
                .bind(i64::from(segments))
                .bind(manifest_sha256)
                .bind(id)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 1 { Ok(()) } else { Err(StoreError::NotFound) }
            }

            async fn recording_by_id(&self, id: Uuid) -> StoreResult<Option<RecordingRecord>> {
                let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLS} FROM recordings WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_recordings(&self, f: &RecordingFilter, limit: u32) -> StoreResult<Vec<RecordingRecord>> {
                let rows: Vec<Row> = sqlx::query_as(&format!(
                    "SELECT {COLS} FROM recordings \
                     WHERE ($1 IS NULL OR call_id = $1) \
                       AND ($2 IS NULL OR call_id IN (SELECT call_id FROM call_members WHERE subject = $2)) \
                       AND ($3 IS NULL OR id > $3) \
                     ORDER BY id LIMIT $4"
                ))
                .bind(f.call_id)
                .bind(f.member)
                .bind(f.after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn set_legal_hold(&self, id: Uuid, hold: Option<&LegalHold>) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE recordings SET legal_hold = $1, hold_reason = $2, hold_by = $3, hold_at = $4 WHERE id = $5",
                )
                .bind(hold.is_some())
                .bind(hold.map(|h| h.reason.clone()))
                .bind(hold.map(|h| h.by))
                .bind(hold.map(|h| h.at))
                .bind(id)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 1 { Ok(()) } else { Err(StoreError::NotFound) }
            }

            async fn recordings_past_retention(&self, now: Millis, limit: u32) -> StoreResult<Vec<RecordingRecord>> {
                let rows: Vec<Row> = sqlx::query_as(&format!(
                    "SELECT {COLS} FROM recordings \
                     WHERE status IN ('complete', 'interrupted') AND legal_hold = FALSE AND ended_at IS NOT NULL \
                       AND ended_at + retention_days * 86400000 < $1 \
                     ORDER BY ended_at LIMIT $2"
                ))
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn mark_recording_deleted(&self, id: Uuid, at: Millis) -> StoreResult<()> {
                sqlx::query("UPDATE recordings SET status = 'deleted', deleted_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn chain_head(&self) -> StoreResult<Option<StoredChainHead>> {
                let row: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM recording_chain_head WHERE id = 1")
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(seq, hash)| StoredChainHead { seq: u64::try_from(seq).unwrap_or(0), hash }))
            }

            async fn set_chain_head(&self, head: &StoredChainHead, now: Millis) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO recording_chain_head (id, seq, hash, updated_at) VALUES (1, $1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, updated_at = excluded.updated_at",
                )
                .bind(i64::try_from(head.seq).unwrap_or(i64::MAX))
                .bind(&head.hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}

recording_store!(SqliteStore);
recording_store!(PgStore);
