//! Storage of calls, their members and their events.

use async_trait::async_trait;
use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{PgStore, SqliteStore};
use super::{StoreError, StoreResult};
use crate::domain::call::{Call, CallId, CallState, Member, MemberRole};
use crate::domain::clock::Millis;

/// One stored call event (joined, left, reconnected, chat, ended, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    /// Id (time ordered).
    pub id: Uuid,
    /// The call.
    pub call_id: CallId,
    /// When.
    pub at: Millis,
    /// What: `joined`, `left`, `reconnecting`, `reconnected`, `timed_out`, `chat`, `ended`, ...
    pub kind: String,
    /// Which participant, if one.
    pub participant_id: Option<Uuid>,
    /// Details (JSON).
    pub detail: serde_json::Value,
}

/// Calls, members and events.
#[async_trait]
pub trait CallStore: Send + Sync {
    /// Stores a new call with its first members, in one transaction.
    async fn insert_call(&self, call: &Call, members: &[Member]) -> StoreResult<()>;
    /// Finds a call.
    async fn call_by_id(&self, id: CallId) -> StoreResult<Option<Call>>;
    /// The members of a call.
    async fn call_members(&self, id: CallId) -> StoreResult<Vec<Member>>;
    /// Adds a member (conflict when the subject is one already).
    async fn add_call_member(&self, m: &Member) -> StoreResult<()>;
    /// Ends an open call; false when it was already ended (exactly once).
    async fn end_call(&self, id: CallId, at: Millis, reason: &str, by: Option<Uuid>) -> StoreResult<bool>;
    /// Appends an event.
    async fn append_call_event(&self, e: &CallEvent) -> StoreResult<()>;
    /// A call's events, oldest first.
    async fn call_events(&self, id: CallId, limit: u32) -> StoreResult<Vec<CallEvent>>;
    /// Calls a subject is a member of, newest first.
    async fn calls_of_subject(&self, subject: Uuid, limit: u32) -> StoreResult<Vec<Call>>;
}

#[derive(FromRow)]
struct CallRow {
    id: Uuid,
    opened_by: Uuid,
    resident_id: Option<Uuid>,
    matter_code: Option<String>,
    ticket_id: Option<Uuid>,
    state: String,
    created_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
    ended_by: Option<Uuid>,
}

impl TryFrom<CallRow> for Call {
    type Error = StoreError;
    fn try_from(r: CallRow) -> StoreResult<Call> {
        Ok(Call {
            id: r.id,
            opened_by: r.opened_by,
            resident_id: r.resident_id,
            matter_code: r.matter_code,
            ticket_id: r.ticket_id,
            state: match r.state.as_str() {
                "open" => CallState::Open,
                "ended" => CallState::Ended,
                _ => return Err(StoreError::Db("unreadable call state".into())),
            },
            created_at: r.created_at,
            ended_at: r.ended_at,
            end_reason: r.end_reason,
            ended_by: r.ended_by,
        })
    }
}

#[derive(FromRow)]
struct MemberRow {
    call_id: Uuid,
    participant_id: Uuid,
    subject: Uuid,
    role: String,
    display_name: String,
    added_at: i64,
    added_by: Option<Uuid>,
}

impl TryFrom<MemberRow> for Member {
    type Error = StoreError;
    fn try_from(r: MemberRow) -> StoreResult<Member> {
        Ok(Member {
            call_id: r.call_id,
            participant_id: r.participant_id,
            subject: r.subject,
            role: MemberRole::parse(&r.role).ok_or_else(|| StoreError::Db("unreadable member role".into()))?,
            display_name: r.display_name,
            added_at: r.added_at,
            added_by: r.added_by,
        })
    }
}

#[derive(FromRow)]
struct EventRow {
    id: Uuid,
    call_id: Uuid,
    at: i64,
    kind: String,
    participant_id: Option<Uuid>,
    detail: String,
}

const CALL_COLS: &str = "id, opened_by, resident_id, matter_code, ticket_id, state, created_at, ended_at, end_reason, ended_by";
const MEMBER_COLS: &str = "call_id, participant_id, subject, role, display_name, added_at, added_by";

macro_rules! call_store {
    ($name:ident) => {
        impl $name {
            /// Stores a call and its members inside a transaction (opening a call, and a
            /// queue offer accepted: `store::queue`).
            pub(crate) async fn insert_call_in(
                tx: &mut <<Self as super::queue::QueueBackend>::Db as sqlx::Database>::Connection,
                call: &Call,
                members: &[Member],
            ) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO calls ({CALL_COLS}) VALUES ($1, $2, $3, $4, $5, 'open', $6, NULL, NULL, NULL)"
                ))
                .bind(call.id)
                .bind(call.opened_by)
                .bind(call.resident_id)
                .bind(&call.matter_code)
                .bind(call.ticket_id)
                .bind(call.created_at)
                .execute(&mut *tx)
                .await?;
                for m in members {
                    sqlx::query(&format!("INSERT INTO call_members ({MEMBER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
                        .bind(m.call_id)
                        .bind(m.participant_id)
                        .bind(m.subject)
                        .bind(m.role.as_str())
                        .bind(&m.display_name)
                        .bind(m.added_at)
                        .bind(m.added_by)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl CallStore for $name {
            async fn insert_call(&self, call: &Call, members: &[Member]) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                Self::insert_call_in(&mut *tx, call, members).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn call_by_id(&self, id: CallId) -> StoreResult<Option<Call>> {
                let row: Option<CallRow> = sqlx::query_as(&format!("SELECT {CALL_COLS} FROM calls WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn call_members(&self, id: CallId) -> StoreResult<Vec<Member>> {
                let rows: Vec<MemberRow> = sqlx::query_as(&format!(
                    "SELECT {MEMBER_COLS} FROM call_members WHERE call_id = $1 ORDER BY added_at, participant_id"
                ))
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn add_call_member(&self, m: &Member) -> StoreResult<()> {
                sqlx::query(&format!("INSERT INTO call_members ({MEMBER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
                    .bind(m.call_id)
                    .bind(m.participant_id)
                    .bind(m.subject)
                    .bind(m.role.as_str())
                    .bind(&m.display_name)
                    .bind(m.added_at)
                    .bind(m.added_by)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn end_call(&self, id: CallId, at: Millis, reason: &str, by: Option<Uuid>) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE calls SET state = 'ended', ended_at = $1, end_reason = $2, ended_by = $3 \
                     WHERE id = $4 AND state = 'open'",
                )
                .bind(at)
                .bind(reason)
                .bind(by)
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn append_call_event(&self, e: &CallEvent) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO call_events (id, call_id, at, kind, participant_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(e.id)
                .bind(e.call_id)
                .bind(e.at)
                .bind(&e.kind)
                .bind(e.participant_id)
                .bind(e.detail.to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn call_events(&self, id: CallId, limit: u32) -> StoreResult<Vec<CallEvent>> {
                let rows: Vec<EventRow> = sqlx::query_as(
                    "SELECT id, call_id, at, kind, participant_id, detail FROM call_events \
                     WHERE call_id = $1 ORDER BY id LIMIT $2",
                )
                .bind(id)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|r| {
                        Ok(CallEvent {
                            id: r.id,
                            call_id: r.call_id,
                            at: r.at,
                            kind: r.kind,
                            participant_id: r.participant_id,
                            detail: serde_json::from_str(&r.detail)
                                .map_err(|_| StoreError::Db("unreadable call event".into()))?,
                        })
                    })
                    .collect()
            }

            async fn calls_of_subject(&self, subject: Uuid, limit: u32) -> StoreResult<Vec<Call>> {
                let rows: Vec<CallRow> = sqlx::query_as(&format!(
                    "SELECT {CALL_COLS} FROM calls WHERE id IN \
                     (SELECT call_id FROM call_members WHERE subject = $1) ORDER BY id DESC LIMIT $2"
                ))
                .bind(subject)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }
        }
    };
}

call_store!(SqliteStore);
call_store!(PgStore);
