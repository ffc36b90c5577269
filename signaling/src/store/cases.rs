//! Storage of cases: the case and its history, its documents' metadata (the bytes live in a
//! [`blobs::BlobStore`](super::blobs::BlobStore)), idempotency records, ratings and follow-ups.
//!
//! Same statements on both backends (`$n` parameters, UUIDs, Unix ms, JSON as text); the macro
//! at the bottom stamps the one body out for [`SqliteStore`] and [`PgStore`]. Every claim on
//! shared state is a conditional statement the database decides (`version = $n`,
//! `received = $n`, `ON CONFLICT DO NOTHING`, unique indexes), so two nodes never both win.

use async_trait::async_trait;
use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{PgStore, SqliteStore};
use super::{StoreError, StoreResult};
use crate::domain::case::{
    Answers, Case, CaseAction, CaseEvent, CaseId, CaseStatus, Document, DocumentFormat, DocumentId,
    DocumentSource, DocumentStatus, FollowUp, FollowUpId, Rating, RatingId, RatingLevel, RatingSubject, ReturnRate,
};
use crate::domain::clock::{format_date, Millis};
use crate::domain::identity::Role;
use crate::domain::ids::ResidentId;

/// Which cases to list.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    /// Only this resident's.
    pub resident: Option<ResidentId>,
    /// Only in this status.
    pub status: Option<CaseStatus>,
    /// Only of this matter.
    pub matter: Option<String>,
}

/// A status change to apply to a case, exactly once.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The version the decision was made on; the change applies only if it still holds.
    pub expected_version: i64,
    /// The new status.
    pub to: CaseStatus,
    /// The history entry (its `at` is the change time).
    pub event: CaseEvent,
    /// Documents to mark invalid at a return: (checklist item, reason).
    pub invalidate: Vec<(String, String)>,
    /// The `Idempotency-Key` of the request that makes this change, stored on the history
    /// entry (unique per case, actor and key), so a retry after a crash finds it.
    pub idem_key: Option<String>,
}

/// A call linked to a case, with when the call ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseCall {
    /// The call.
    pub call_id: Uuid,
    /// When it was linked.
    pub attached_at: Millis,
    /// Who linked it.
    pub attached_by: Uuid,
    /// When the call was opened.
    pub started_at: Millis,
    /// When the call ended (`None` while it runs).
    pub ended_at: Option<Millis>,
}

/// What an `Idempotency-Key` claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemClaim {
    /// This request owns the key: run it, then complete or release the claim. `resource_id`
    /// is the id to give a created resource (the same on a takeover, so a retry after a crash
    /// finds what the first attempt made).
    Claimed {
        /// Id for the resource the request creates.
        resource_id: Uuid,
    },
    /// The key was used for this same request: replay its result.
    Replay {
        /// HTTP status of the first result.
        status: u16,
        /// Body of the first result, byte for byte.
        body: String,
    },
    /// The key was used for a different request (other route or body).
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// One claim of an idempotency key.
#[derive(Debug, Clone)]
pub struct IdemRequest<'a> {
    /// The caller.
    pub subject: Uuid,
    /// The key.
    pub key: &'a str,
    /// Method and path.
    pub route: &'a str,
    /// SHA-256 of the canonical request body.
    pub request_hash: &'a str,
    /// Id offered for a resource the request creates.
    pub resource_id: Uuid,
    /// Now.
    pub now: Millis,
    /// A running claim older than this is taken over (its holder died).
    pub stale_before: Millis,
}

/// What finishing an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The document is ready.
    Finished(Document),
    /// The same bytes are already a document of this case.
    Duplicate(DocumentId),
    /// The document is not an upload in progress with all its bytes.
    NotUploading,
}

/// Cases, documents, idempotency records, ratings and follow-ups.
#[async_trait]
pub trait CaseStore: Send + Sync {
    /// Stores a new case with its first history entry (and links the call it was opened in,
    /// if any), in one transaction.
    async fn insert_case(&self, c: &Case, created: &CaseEvent) -> StoreResult<()>;
    /// Finds a case.
    async fn case_by_id(&self, id: CaseId) -> StoreResult<Option<Case>>;
    /// Cases after a cursor, in id order.
    async fn list_cases(&self, f: &CaseFilter, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Case>>;
    /// Replaces the intake answers if the case still has `expected_version`.
    async fn set_case_answers(&self, id: CaseId, answers: &Answers, expected_version: i64, now: Millis) -> StoreResult<Case>;
    /// Applies a status change with its history entry (and, at a return, marks documents
    /// invalid), in one transaction, if the case still has the expected version
    /// (`Conflict("version")` otherwise).
    async fn transition_case(&self, id: CaseId, t: &Transition) -> StoreResult<Case>;
    /// A case's history, oldest first.
    async fn case_events(&self, id: CaseId) -> StoreResult<Vec<CaseEvent>>;
    /// The history entry a request with this `Idempotency-Key` (by this actor) wrote, if any.
    async fn case_event_by_key(&self, id: CaseId, actor: Uuid, key: &str) -> StoreResult<Option<CaseEvent>>;
    /// Links a call to a case; false when it was linked already (one row per case and call).
    /// `Conflict("reference")` when the case or the call does not exist.
    async fn attach_call(&self, id: CaseId, call: Uuid, at: Millis, by: Uuid) -> StoreResult<bool>;
    /// The calls linked to a case, in the order they were linked.
    async fn case_calls(&self, id: CaseId) -> StoreResult<Vec<CaseCall>>;

    /// Adds a document (upload starting).
    async fn insert_document(&self, d: &Document) -> StoreResult<()>;
    /// Finds a document.
    async fn document(&self, id: DocumentId) -> StoreResult<Option<Document>>;
    /// A case's documents, in creation order.
    async fn list_documents(&self, case: CaseId) -> StoreResult<Vec<Document>>;
    /// Moves an upload's offset from `from` to `to`, only if it is still at `from`.
    async fn advance_upload(&self, id: DocumentId, from: i64, to: i64) -> StoreResult<bool>;
    /// Marks a complete upload ready with its SHA-256, unless the case already has those bytes.
    async fn finish_document(&self, id: DocumentId, sha256: &str, now: Millis) -> StoreResult<FinishOutcome>;
    /// Removes an upload that never became a document (refused duplicate or forged content).
    async fn discard_upload(&self, id: DocumentId) -> StoreResult<bool>;

    /// Claims an idempotency key, or says what the first request with it did.
    async fn idem_claim(&self, r: &IdemRequest<'_>) -> StoreResult<IdemClaim>;
    /// Stores the result of a claimed request.
    async fn idem_complete(&self, subject: Uuid, key: &str, status: u16, body: &str) -> StoreResult<()>;
    /// Gives a claim up (the request failed and changed nothing), so a retry runs again.
    async fn idem_release(&self, subject: Uuid, key: &str) -> StoreResult<()>;

    /// Stores a rating and, for a low one, its follow-up, in one transaction
    /// (`Conflict("duplicate")` when the resident already rated that case or call).
    async fn insert_rating(&self, r: &Rating, follow_up: Option<&FollowUp>) -> StoreResult<()>;
    /// Finds a rating.
    async fn rating(&self, id: RatingId) -> StoreResult<Option<Rating>>;
    /// The resident's rating of a case or call.
    async fn rating_of(&self, resident: ResidentId, subject: RatingSubject) -> StoreResult<Option<Rating>>;
    /// Ratings after a cursor (optionally one resident's), in id order.
    async fn list_ratings(&self, resident: Option<ResidentId>, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Rating>>;
    /// Follow-ups with their ratings after a cursor, in id order; `open_only` leaves out closed ones.
    async fn list_follow_ups(&self, open_only: bool, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<(FollowUp, Rating)>>;
    /// Finds a follow-up.
    async fn follow_up(&self, id: FollowUpId) -> StoreResult<Option<FollowUp>>;
    /// The follow-up a rating opened.
    async fn follow_up_of_rating(&self, rating: RatingId) -> StoreResult<Option<FollowUp>>;
    /// Closes an open follow-up, exactly once; `None` when it was not open.
    async fn close_follow_up(&self, id: FollowUpId, by: Uuid, note: &str, now: Millis) -> StoreResult<Option<FollowUp>>;

    /// Return rates per matter, by matter code.
    async fn return_rates(&self) -> StoreResult<Vec<ReturnRate>>;
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Db(format!("unreadable stored {what}"))
}

const CASE_COLS: &str = "id, resident_id, matter_code, status, answers, call_id, ticket_id, created_by, \
    created_by_role, return_count, created_at, updated_at, submitted_at, version";
const EVENT_COLS: &str = "id, case_id, at, actor_id, actor_role, action, from_status, to_status, reason, detail";
const DOC_COLS: &str = "id, case_id, item_key, source, call_id, content_type, size, received, sha256, status, \
    invalid_reason, created_by, created_at, finished_at";
const RATING_COLS: &str = "id, resident_id, case_id, call_id, matter_code, level, tags, comment, created_at";
const FOLLOW_COLS: &str = "id, rating_id, opened_at, due_on, due_at, closed_at, closed_by, note";

#[derive(FromRow)]
struct CaseRow {
    id: Uuid,
    resident_id: Uuid,
    matter_code: String,
    status: String,
    answers: String,
    call_id: Option<Uuid>,
    ticket_id: Option<Uuid>,
    created_by: Uuid,
    created_by_role: String,
    return_count: i64,
    created_at: i64,
    updated_at: i64,
    submitted_at: Option<i64>,
    version: i64,
}

impl TryFrom<CaseRow> for Case {
    type Error = StoreError;
    fn try_from(r: CaseRow) -> StoreResult<Case> {
        Ok(Case {
            id: CaseId(r.id),
            resident_id: ResidentId(r.resident_id),
            matter_code: r.matter_code,
            status: CaseStatus::parse(&r.status).ok_or_else(|| corrupt("case status"))?,
            answers: serde_json::from_str(&r.answers).map_err(|_| corrupt("case answers"))?,
            call_id: r.call_id,
            ticket_id: r.ticket_id,
            created_by: r.created_by,
            created_by_role: Role::parse(&r.created_by_role).ok_or_else(|| corrupt("role"))?,
            return_count: r.return_count,
            created_at: r.created_at,
            updated_at: r.updated_at,
            submitted_at: r.submitted_at,
            version: r.version,
        })
    }
}

#[derive(FromRow)]
struct EventRow {
    id: Uuid,
    case_id: Uuid,
    at: i64,
    actor_id: Option<Uuid>,
    actor_role: Option<String>,
    action: String,
    from_status: Option<String>,
    to_status: String,
    reason: Option<String>,
    detail: String,
}

impl TryFrom<EventRow> for CaseEvent {
    type Error = StoreError;
    fn try_from(r: EventRow) -> StoreResult<CaseEvent> {
        Ok(CaseEvent {
            id: r.id.into(),
            case_id: CaseId(r.case_id),
            at: r.at,
            actor_id: r.actor_id,
            actor_role: r.actor_role.as_deref().and_then(Role::parse),
            action: CaseAction::parse(&r.action).ok_or_else(|| corrupt("case action"))?,
            from: r.from_status.as_deref().map(|s| CaseStatus::parse(s).ok_or_else(|| corrupt("case status"))).transpose()?,
            to: CaseStatus::parse(&r.to_status).ok_or_else(|| corrupt("case status"))?,
            reason: r.reason,
            detail: serde_json::from_str(&r.detail).map_err(|_| corrupt("case event detail"))?,
        })
    }
}

#[derive(FromRow)]
struct DocRow {
    id: Uuid,
    case_id: Uuid,
    item_key: Option<String>,
    source: String,
    call_id: Option<Uuid>,
    content_type: String,
    size: i64,
    received: i64,
    sha256: Option<String>,
    status: String,
    invalid_reason: Option<String>,
    created_by: Uuid,
    created_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<DocRow> for Document {
    type Error = StoreError;
    fn try_from(r: DocRow) -> StoreResult<Document> {
        Ok(Document {
            id: DocumentId(r.id),
            case_id: CaseId(r.case_id),
            item_key: r.item_key,
            source: DocumentSource::parse(&r.source).ok_or_else(|| corrupt("document source"))?,
            call_id: r.call_id,
            format: DocumentFormat::from_mime(&r.content_type).ok_or_else(|| corrupt("content type"))?,
            size: r.size,
            received: r.received,
            sha256: r.sha256,
            status: DocumentStatus::parse(&r.status).ok_or_else(|| corrupt("document status"))?,
            invalid_reason: r.invalid_reason,
            created_by: r.created_by,
            created_at: r.created_at,
            finished_at: r.finished_at,
        })
    }
}

#[derive(FromRow)]
struct RatingRow {
    id: Uuid,
    resident_id: Uuid,
    case_id: Option<Uuid>,
    call_id: Option<Uuid>,
    matter_code: Option<String>,
    level: i64,
    tags: String,
    comment: Option<String>,
    created_at: i64,
}

impl TryFrom<RatingRow> for Rating {
    type Error = StoreError;
    fn try_from(r: RatingRow) -> StoreResult<Rating> {
        let subject = match (r.case_id, r.call_id) {
            (Some(c), None) => RatingSubject::Case(CaseId(c)),
            (None, Some(c)) => RatingSubject::Call(c),
            _ => return Err(corrupt("rating subject")),
        };
        Ok(Rating {
            id: RatingId(r.id),
            resident_id: ResidentId(r.resident_id),
            subject,
            matter_code: r.matter_code,
            level: u8::try_from(r.level).ok().and_then(|l| RatingLevel::try_from(l).ok()).ok_or_else(|| corrupt("rating level"))?,
            tags: serde_json::from_str(&r.tags).map_err(|_| corrupt("rating tags"))?,
            comment: r.comment,
            created_at: r.created_at,
        })
    }
}

#[derive(FromRow)]
struct FollowRow {
    id: Uuid,
    rating_id: Uuid,
    opened_at: i64,
    due_on: String,
    due_at: i64,
    closed_at: Option<i64>,
    closed_by: Option<Uuid>,
    note: Option<String>,
}

const DATE: &[time::format_description::FormatItem<'static>] = time::macros::format_description!("[year]-[month]-[day]");

impl TryFrom<FollowRow> for FollowUp {
    type Error = StoreError;
    fn try_from(r: FollowRow) -> StoreResult<FollowUp> {
        Ok(FollowUp {
            id: FollowUpId(r.id),
            rating_id: RatingId(r.rating_id),
            opened_at: r.opened_at,
            due_on: time::Date::parse(&r.due_on, DATE).map_err(|_| corrupt("due date"))?,
            due_at: r.due_at,
            closed_at: r.closed_at,
            closed_by: r.closed_by,
            note: r.note,
        })
    }
}

#[derive(FromRow)]
struct FollowJoinRow {
    #[sqlx(flatten)]
    f: FollowRow,
    r_id: Uuid,
    r_resident_id: Uuid,
    r_case_id: Option<Uuid>,
    r_call_id: Option<Uuid>,
    r_matter_code: Option<String>,
    r_level: i64,
    r_tags: String,
    r_comment: Option<String>,
    r_created_at: i64,
}

impl TryFrom<FollowJoinRow> for (FollowUp, Rating) {
    type Error = StoreError;
    fn try_from(r: FollowJoinRow) -> StoreResult<(FollowUp, Rating)> {
        let rating = RatingRow {
            id: r.r_id,
            resident_id: r.r_resident_id,
            case_id: r.r_case_id,
            call_id: r.r_call_id,
            matter_code: r.r_matter_code,
            level: r.r_level,
            tags: r.r_tags,
            comment: r.r_comment,
            created_at: r.r_created_at,
        };
        Ok((r.f.try_into()?, rating.try_into()?))
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Db(e.to_string()))
}

/// A nil UUID sorts before every v7 id: the cursor for "from the start".
fn cursor(after: Option<Uuid>) -> Uuid {
    after.unwrap_or(Uuid::nil())
}

macro_rules! case_store {
    ($name:ident) => {
        #[async_trait]
        impl CaseStore for $name {
            async fn insert_case(&self, c: &Case, created: &CaseEvent) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(&format!(
                    "INSERT INTO cases ({CASE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ))
                .bind(c.id.0)
                .bind(c.resident_id.0)
                .bind(&c.matter_code)
                .bind(c.status.as_str())
                .bind(to_json(&c.answers)?)
                .bind(c.call_id)
                .bind(c.ticket_id)
                .bind(c.created_by)
                .bind(c.created_by_role.as_str())
                .bind(c.return_count)
                .bind(c.created_at)
                .bind(c.updated_at)
                .bind(c.submitted_at)
                .bind(c.version)
                .execute(&mut *tx)
                .await?;
                insert_event!(&mut *tx, created, None::<&str>);
                if let Some(call) = c.call_id {
                    sqlx::query(
                        "INSERT INTO case_calls (case_id, call_id, attached_at, attached_by) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (case_id, call_id) DO NOTHING",
                    )
                    .bind(c.id.0)
                    .bind(call)
                    .bind(c.created_at)
                    .bind(c.created_by)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn case_by_id(&self, id: CaseId) -> StoreResult<Option<Case>> {
                let row: Option<CaseRow> = sqlx::query_as(&format!("SELECT {CASE_COLS} FROM cases WHERE id = $1"))
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_cases(&self, f: &CaseFilter, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Case>> {
                let rows: Vec<CaseRow> = sqlx::query_as(&format!(
                    "SELECT {CASE_COLS} FROM cases WHERE id > $1 AND ($2 IS NULL OR resident_id = $2) \
                     AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR matter_code = $4) ORDER BY id LIMIT $5"
                ))
                .bind(cursor(after))
                .bind(f.resident.map(|r| r.0))
                .bind(f.status.map(CaseStatus::as_str))
                .bind(f.matter.as_deref())
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn set_case_answers(
                &self,
                id: CaseId,
                answers: &Answers,
                expected_version: i64,
                now: Millis,
            ) -> StoreResult<Case> {
                let row: Option<CaseRow> = sqlx::query_as(&format!(
                    "UPDATE cases SET answers = $1, updated_at = $2, version = version + 1 \
                     WHERE id = $3 AND version = $4 RETURNING {CASE_COLS}"
                ))
                .bind(to_json(answers)?)
                .bind(now)
                .bind(id.0)
                .bind(expected_version)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(r) => r.try_into(),
                    None if self.case_by_id(id).await?.is_some() => Err(StoreError::Conflict("version")),
                    None => Err(StoreError::NotFound),
                }
            }

            async fn transition_case(&self, id: CaseId, t: &Transition) -> StoreResult<Case> {
                let mut tx = self.pool.begin().await?;
                let returned = i64::from(t.to == CaseStatus::Returned);
                let submitted_at = matches!(t.to, CaseStatus::Submitted | CaseStatus::Resubmitted).then_some(t.event.at);
                let row: Option<CaseRow> = sqlx::query_as(&format!(
                    "UPDATE cases SET status = $1, updated_at = $2, version = version + 1, \
                     return_count = return_count + $3, submitted_at = COALESCE(submitted_at, $4) \
                     WHERE id = $5 AND version = $6 RETURNING {CASE_COLS}"
                ))
                .bind(t.to.as_str())
                .bind(t.event.at)
                .bind(returned)
                .bind(submitted_at)
                .bind(id.0)
                .bind(t.expected_version)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    tx.rollback().await?;
                    return match self.case_by_id(id).await? {
                        Some(_) => Err(StoreError::Conflict("version")),
                        None => Err(StoreError::NotFound),
                    };
                };
                insert_event!(&mut *tx, &t.event, t.idem_key.as_deref());
                for (item, reason) in &t.invalidate {
                    sqlx::query(
                        "UPDATE case_documents SET status = 'invalid', invalid_reason = $1 \
                         WHERE case_id = $2 AND item_key = $3 AND status = 'ready'",
                    )
                    .bind(reason)
                    .bind(id.0)
                    .bind(item)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                row.try_into()
            }

            async fn case_events(&self, id: CaseId) -> StoreResult<Vec<CaseEvent>> {
                let rows: Vec<EventRow> =
                    sqlx::query_as(&format!("SELECT {EVENT_COLS} FROM case_events WHERE case_id = $1 ORDER BY id"))
                        .bind(id.0)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn case_event_by_key(&self, id: CaseId, actor: Uuid, key: &str) -> StoreResult<Option<CaseEvent>> {
                let row: Option<EventRow> = sqlx::query_as(&format!(
                    "SELECT {EVENT_COLS} FROM case_events WHERE case_id = $1 AND actor_id = $2 AND idem_key = $3"
                ))
                .bind(id.0)
                .bind(actor)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn attach_call(&self, id: CaseId, call: Uuid, at: Millis, by: Uuid) -> StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO case_calls (case_id, call_id, attached_at, attached_by) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (case_id, call_id) DO NOTHING",
                )
                .bind(id.0)
                .bind(call)
                .bind(at)
                .bind(by)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn case_calls(&self, id: CaseId) -> StoreResult<Vec<CaseCall>> {
                let rows: Vec<(Uuid, i64, Uuid, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT cc.call_id, cc.attached_at, cc.attached_by, c.created_at, c.ended_at \
                     FROM case_calls cc JOIN calls c ON c.id = cc.call_id \
                     WHERE cc.case_id = $1 ORDER BY cc.attached_at, cc.call_id",
                )
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(call_id, attached_at, attached_by, started_at, ended_at)| CaseCall {
                        call_id,
                        attached_at,
                        attached_by,
                        started_at,
                        ended_at,
                    })
                    .collect())
            }

            async fn insert_document(&self, d: &Document) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO case_documents ({DOC_COLS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ))
                .bind(d.id.0)
                .bind(d.case_id.0)
                .bind(d.item_key.as_deref())
                .bind(d.source.as_str())
                .bind(d.call_id)
                .bind(d.format.mime())
                .bind(d.size)
                .bind(d.received)
                .bind(d.sha256.as_deref())
                .bind(d.status.as_str())
                .bind(d.invalid_reason.as_deref())
                .bind(d.created_by)
                .bind(d.created_at)
                .bind(d.finished_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn document(&self, id: DocumentId) -> StoreResult<Option<Document>> {
                let row: Option<DocRow> =
                    sqlx::query_as(&format!("SELECT {DOC_COLS} FROM case_documents WHERE id = $1"))
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_documents(&self, case: CaseId) -> StoreResult<Vec<Document>> {
                let rows: Vec<DocRow> =
                    sqlx::query_as(&format!("SELECT {DOC_COLS} FROM case_documents WHERE case_id = $1 ORDER BY id"))
                        .bind(case.0)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn advance_upload(&self, id: DocumentId, from: i64, to: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE case_documents SET received = $1 WHERE id = $2 AND received = $3 AND status = 'uploading'",
                )
                .bind(to)
                .bind(id.0)
                .bind(from)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn finish_document(&self, id: DocumentId, sha256: &str, now: Millis) -> StoreResult<FinishOutcome> {
                let res: Result<Option<DocRow>, sqlx::Error> = sqlx::query_as(&format!(
                    "UPDATE case_documents SET status = 'ready', sha256 = $1, finished_at = $2 \
                     WHERE id = $3 AND status = 'uploading' AND received = size RETURNING {DOC_COLS}"
                ))
                .bind(sha256)
                .bind(now)
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await;
                match res.map_err(StoreError::from) {
                    Ok(Some(row)) => Ok(FinishOutcome::Finished(row.try_into()?)),
                    Ok(None) => Ok(FinishOutcome::NotUploading),
                    Err(StoreError::Conflict("duplicate")) => {
                        let existing: Option<(Uuid,)> = sqlx::query_as(
                            "SELECT d.id FROM case_documents d JOIN case_documents me ON me.case_id = d.case_id \
                             WHERE me.id = $1 AND d.sha256 = $2",
                        )
                        .bind(id.0)
                        .bind(sha256)
                        .fetch_optional(&self.pool)
                        .await?;
                        match existing {
                            Some((e,)) => Ok(FinishOutcome::Duplicate(DocumentId(e))),
                            None => Err(StoreError::Conflict("duplicate")),
                        }
                    }
                    Err(e) => Err(e),
                }
            }

            async fn discard_upload(&self, id: DocumentId) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM case_documents WHERE id = $1 AND status = 'uploading'")
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn idem_claim(&self, r: &IdemRequest<'_>) -> StoreResult<IdemClaim> {
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (subject, idem_key, route, request_hash, resource_id, \
                     status_code, response, created_at, locked_at) VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6, $6) \
                     ON CONFLICT (subject, idem_key) DO NOTHING",
                )
                .bind(r.subject)
                .bind(r.key)
                .bind(r.route)
                .bind(r.request_hash)
                .bind(r.resource_id)
                .bind(r.now)
                .execute(&self.pool)
                .await?;
                if inserted.rows_affected() == 1 {
                    return Ok(IdemClaim::Claimed { resource_id: r.resource_id });
                }
                let row: Option<(String, String, Uuid, Option<i64>, Option<String>, i64)> = sqlx::query_as(
                    "SELECT route, request_hash, resource_id, status_code, response, locked_at \
                     FROM idempotency_keys WHERE subject = $1 AND idem_key = $2",
                )
                .bind(r.subject)
                .bind(r.key)
                .fetch_optional(&self.pool)
                .await?;
                let Some((route, hash, resource_id, status, response, locked_at)) = row else {
                    // Released between our insert and select: the caller may retry.
                    return Ok(IdemClaim::InProgress);
                };
                if route != r.route || hash != r.request_hash {
                    return Ok(IdemClaim::Mismatch);
                }
                if let (Some(status), Some(body)) = (status, response) {
                    return Ok(IdemClaim::Replay { status: status.clamp(100, 599) as u16, body });
                }
                if locked_at < r.stale_before {
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET locked_at = $1 WHERE subject = $2 AND idem_key = $3 \
                         AND status_code IS NULL AND locked_at = $4",
                    )
                    .bind(r.now)
                    .bind(r.subject)
                    .bind(r.key)
                    .bind(locked_at)
                    .execute(&self.pool)
                    .await?;
                    if taken.rows_affected() == 1 {
                        return Ok(IdemClaim::Claimed { resource_id });
                    }
                }
                Ok(IdemClaim::InProgress)
            }

            async fn idem_complete(&self, subject: Uuid, key: &str, status: u16, body: &str) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE idempotency_keys SET status_code = $1, response = $2 \
                     WHERE subject = $3 AND idem_key = $4 AND status_code IS NULL",
                )
                .bind(status as i64)
                .bind(body)
                .bind(subject)
                .bind(key)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn idem_release(&self, subject: Uuid, key: &str) -> StoreResult<()> {
                sqlx::query("DELETE FROM idempotency_keys WHERE subject = $1 AND idem_key = $2 AND status_code IS NULL")
                    .bind(subject)
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn insert_rating(&self, r: &Rating, follow_up: Option<&FollowUp>) -> StoreResult<()> {
                let (case_id, call_id) = match r.subject {
                    RatingSubject::Case(c) => (Some(c.0), None),
                    RatingSubject::Call(c) => (None, Some(c)),
                };
                let mut tx = self.pool.begin().await?;
                sqlx::query(&format!("INSERT INTO ratings ({RATING_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
                    .bind(r.id.0)
                    .bind(r.resident_id.0)
                    .bind(case_id)
                    .bind(call_id)
                    .bind(r.matter_code.as_deref())
                    .bind(u8::from(r.level) as i64)
                    .bind(to_json(&r.tags)?)
                    .bind(r.comment.as_deref())
                    .bind(r.created_at)
                    .execute(&mut *tx)
                    .await?;
                if let Some(f) = follow_up {
                    sqlx::query(&format!("INSERT INTO follow_ups ({FOLLOW_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
                        .bind(f.id.0)
                        .bind(f.rating_id.0)
                        .bind(f.opened_at)
                        .bind(format_date(f.due_on))
                        .bind(f.due_at)
                        .bind(f.closed_at)
                        .bind(f.closed_by)
                        .bind(f.note.as_deref())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn rating(&self, id: RatingId) -> StoreResult<Option<Rating>> {
                let row: Option<RatingRow> = sqlx::query_as(&format!("SELECT {RATING_COLS} FROM ratings WHERE id = $1"))
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn rating_of(&self, resident: ResidentId, subject: RatingSubject) -> StoreResult<Option<Rating>> {
                let (case_id, call_id) = match subject {
                    RatingSubject::Case(c) => (Some(c.0), None),
                    RatingSubject::Call(c) => (None, Some(c)),
                };
                let row: Option<RatingRow> = sqlx::query_as(&format!(
                    "SELECT {RATING_COLS} FROM ratings WHERE resident_id = $1 AND \
                     (($2 IS NOT NULL AND case_id = $2) OR ($3 IS NOT NULL AND call_id = $3))"
                ))
                .bind(resident.0)
                .bind(case_id)
                .bind(call_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_ratings(&self, resident: Option<ResidentId>, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Rating>> {
                let rows: Vec<RatingRow> = sqlx::query_as(&format!(
                    "SELECT {RATING_COLS} FROM ratings WHERE id > $1 AND ($2 IS NULL OR resident_id = $2) ORDER BY id LIMIT $3"
                ))
                .bind(cursor(after))
                .bind(resident.map(|r| r.0))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn list_follow_ups(&self, open_only: bool, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<(FollowUp, Rating)>> {
                let rows: Vec<FollowJoinRow> = sqlx::query_as(
                    "SELECT f.id, f.rating_id, f.opened_at, f.due_on, f.due_at, f.closed_at, f.closed_by, f.note, \
                     r.id AS r_id, r.resident_id AS r_resident_id, r.case_id AS r_case_id, r.call_id AS r_call_id, \
                     r.matter_code AS r_matter_code, r.level AS r_level, r.tags AS r_tags, r.comment AS r_comment, \
                     r.created_at AS r_created_at \
                     FROM follow_ups f JOIN ratings r ON r.id = f.rating_id \
                     WHERE f.id > $1 AND ($2 = FALSE OR f.closed_at IS NULL) ORDER BY f.id LIMIT $3",
                )
                .bind(cursor(after))
                .bind(open_only)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn follow_up(&self, id: FollowUpId) -> StoreResult<Option<FollowUp>> {
                let row: Option<FollowRow> = sqlx::query_as(&format!("SELECT {FOLLOW_COLS} FROM follow_ups WHERE id = $1"))
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn follow_up_of_rating(&self, rating: RatingId) -> StoreResult<Option<FollowUp>> {
                let row: Option<FollowRow> =
                    sqlx::query_as(&format!("SELECT {FOLLOW_COLS} FROM follow_ups WHERE rating_id = $1"))
                        .bind(rating.0)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn close_follow_up(&self, id: FollowUpId, by: Uuid, note: &str, now: Millis) -> StoreResult<Option<FollowUp>> {
                let row: Option<FollowRow> = sqlx::query_as(&format!(
                    "UPDATE follow_ups SET closed_at = $1, closed_by = $2, note = $3 \
                     WHERE id = $4 AND closed_at IS NULL RETURNING {FOLLOW_COLS}"
                ))
                .bind(now)
                .bind(by)
                .bind(note)
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn return_rates(&self) -> StoreResult<Vec<ReturnRate>> {
                let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT matter_code, CAST(COUNT(*) AS BIGINT), \
                     CAST(SUM(CASE WHEN return_count > 0 THEN 1 ELSE 0 END) AS BIGINT), \
                     CAST(SUM(return_count) AS BIGINT) \
                     FROM cases WHERE submitted_at IS NOT NULL GROUP BY matter_code ORDER BY matter_code",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(m, s, r, n)| ReturnRate::new(m, s, r, n)).collect())
            }
        }
    };
}

macro_rules! insert_event {
    ($exec:expr, $e:expr, $key:expr) => {{
        let e: &CaseEvent = $e;
        let key: Option<&str> = $key;
        sqlx::query(&format!(
            "INSERT INTO case_events ({EVENT_COLS}, idem_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
            .bind(e.id.0)
            .bind(e.case_id.0)
            .bind(e.at)
            .bind(e.actor_id)
            .bind(e.actor_role.map(Role::as_str))
            .bind(e.action.as_str())
            .bind(e.from.map(CaseStatus::as_str))
            .bind(e.to.as_str())
            .bind(e.reason.as_deref())
            .bind(e.detail.to_string())
            .bind(key)
            .execute($exec)
            .await?;
    }};
}

case_store!(SqliteStore);
case_store!(PgStore);
