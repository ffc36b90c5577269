//! Cases: creation (an agent for a resident, or a resident for themselves), intake answers,
//! hand-in, review (accept with the checklist gate, return with every issue at once, approve,
//! reject, complete), the resident's view and the return rate per matter.
//!
//! Who may do what: residents see and act on their own cases only (403 on others'); agents see
//! and act on every case; supervisors read every case and the return rates; helpers are
//! refused with `delegation-required` until delegations exist (proxy issue); other roles are
//! refused.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam, Principal, QueryParams};
use super::idempotency::{self, IdempotencyKey, JsonBytes};
use super::{rfc3339, Page, PageQuery};
use crate::app::AppState;
use crate::domain::call::{Call, MemberRole};
use crate::domain::case::{
    self, accept_gate, evaluate, hand_in_action, next_status, return_notice, Answers, Case, CaseAction, CaseError,
    CaseEvent, CaseEventId, CaseId, CaseStatus, ChecklistReport, Document, InvalidItem, Issue, ReturnRate,
};
use crate::domain::identity::Role;
use crate::domain::ids::ResidentId;
use crate::domain::matter::Matter;
use crate::domain::people::Actor;
use crate::store::cases::{CaseFilter, Transition};
use crate::store::queue::Ticket;
use crate::store::recordings::{RecordingFilter, RecordingState};
use crate::store::StoreError;

pub(crate) fn actor(who: &Principal) -> Actor {
    Actor { id: Some(who.id), role: Some(who.role) }
}

/// Read or write access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Refuses helpers with a code that says why.
pub(crate) fn no_helpers(who: &Principal) -> ApiResult<()> {
    if who.role == Role::Helper {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "delegation-required",
            "helpers act for residents under a delegation; delegations are not available yet",
        ));
    }
    Ok(())
}

/// Loads a case the caller may read (or change): their own as a resident, any as an agent,
/// any for reading as a supervisor.
pub(crate) async fn load_case(state: &AppState, who: &Principal, id: Uuid, access: Access) -> ApiResult<Case> {
    no_helpers(who)?;
    match (who.role, access) {
        (Role::Resident | Role::Agent, _) | (Role::Supervisor, Access::Read) => {}
        _ => return Err(ApiError::forbidden()),
    }
    let c = state.store.case_by_id(CaseId(id)).await?.ok_or_else(|| ApiError::not_found("case"))?;
    if who.role == Role::Resident && c.resident_id.0 != who.id {
        return Err(ApiError::forbidden());
    }
    Ok(c)
}

/// The matter of a case (it cannot vanish: the foreign key keeps it).
pub(crate) async fn matter_of(state: &AppState, c: &Case) -> ApiResult<Matter> {
    state
        .store
        .matter(&c.matter_code)
        .await?
        .ok_or_else(|| ApiError::internal(format!("case {} names a missing matter", c.id)))
}

/// Checks a call named by a case, a document or a link request: it exists (`404
/// unknown-call`), it is the resident's call (`409 call-resident-mismatch`), and an agent
/// acting on it was a member of it (`403 not-call-member`).
pub(crate) async fn check_call(state: &AppState, who: &Principal, call_id: Uuid, resident: ResidentId) -> ApiResult<Call> {
    let call = state
        .store
        .call_by_id(call_id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown-call", "no such call"))?;
    let members = state.store.call_members(call_id).await?;
    let residents = call.resident_id == Some(resident.0)
        || members.iter().any(|m| m.role == MemberRole::Resident && m.subject == resident.0);
    if !residents {
        return Err(ApiError::conflict("call-resident-mismatch", "the call is not one of this resident's calls"));
    }
    if who.role == Role::Agent && !members.iter().any(|m| m.subject == who.id && m.role == MemberRole::Agent) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "not-call-member", "you were not an agent in that call"));
    }
    Ok(call)
}

/// Checks a queue ticket named by a case: it exists (`404 unknown-ticket`) and is the
/// resident's (`409 ticket-resident-mismatch`).
pub(crate) async fn check_ticket(state: &AppState, ticket_id: Uuid, resident: ResidentId) -> ApiResult<Ticket> {
    let t = state
        .store
        .ticket(ticket_id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown-ticket", "no such ticket"))?;
    if t.resident_id != resident.0 {
        return Err(ApiError::conflict("ticket-resident-mismatch", "the ticket is not one of this resident's tickets"));
    }
    Ok(t)
}

/// May this caller see the recording ids of a call (the rules of `api/recordings.rs`):
/// supervisors and auditors always, agents for calls they were agents in when
/// `recordings_agent_access` allows, nobody else.
async fn may_see_recordings(state: &AppState, who: &Principal, call_id: Uuid) -> ApiResult<bool> {
    Ok(match who.role {
        Role::Supervisor | Role::Auditor => true,
        Role::Agent if state.settings.recordings_agent_access => state
            .store
            .call_members(call_id)
            .await?
            .iter()
            .any(|m| m.subject == who.id && m.role == MemberRole::Agent),
        _ => false,
    })
}

fn case_error(e: CaseError) -> ApiError {
    match e {
        CaseError::IllegalTransition { .. } => ApiError::conflict("illegal-transition", e.to_string()),
        CaseError::ChecklistIncomplete(ref issues) => {
            let keys: Vec<&str> = issues.iter().map(Issue::key).collect();
            ApiError::conflict("checklist-incomplete", format!("{e}: {}", keys.join(", ")))
        }
        CaseError::OverrideReasonTooShort => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "override-reason-required", e.to_string()),
        CaseError::NothingToReturn => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "nothing-to-return", e.to_string()),
        CaseError::Reason(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-reason", e.to_string()),
    }
}

fn version_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict("version") => {
            ApiError::conflict("case-changed", "the case was changed meanwhile; reload it and retry")
        }
        StoreError::NotFound => ApiError::not_found("case"),
        e => e.into(),
    }
}

/// A document as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    /// Id.
    pub id: Uuid,
    /// The case.
    pub case_id: Uuid,
    /// Checklist item it is filed under.
    pub item_key: Option<String>,
    /// `upload` or `video_frame`.
    pub source: case::DocumentSource,
    /// The call a frame was captured in.
    pub call_id: Option<Uuid>,
    /// Declared content type.
    pub content_type: String,
    /// Declared size (bytes).
    pub size: i64,
    /// Bytes received (the upload offset).
    pub offset: i64,
    /// SHA-256 (hex), once finished.
    pub sha256: Option<String>,
    /// `uploading`, `ready` or `invalid`.
    pub status: case::DocumentStatus,
    /// Why it was found invalid.
    pub invalid_reason: Option<String>,
    /// Where to PUT chunks / HEAD the offset / GET the bytes.
    pub content_url: String,
    /// Thumbnail (images, once ready).
    pub thumbnail_url: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Finished (RFC 3339).
    pub finished_at: Option<String>,
}

impl From<&Document> for DocumentView {
    fn from(d: &Document) -> Self {
        let base = format!("/api/v1/cases/{}/documents/{}", d.case_id, d.id);
        DocumentView {
            id: d.id.0,
            case_id: d.case_id.0,
            item_key: d.item_key.clone(),
            source: d.source,
            call_id: d.call_id,
            content_type: d.format.mime().to_string(),
            size: d.size,
            offset: d.received,
            sha256: d.sha256.clone(),
            status: d.status,
            invalid_reason: d.invalid_reason.clone(),
            content_url: format!("{base}/content"),
            thumbnail_url: (d.format.is_image() && d.status != case::DocumentStatus::Uploading)
                .then(|| format!("{base}/thumbnail")),
            created_at: rfc3339(d.created_at),
            finished_at: d.finished_at.map(rfc3339),
        }
    }
}

/// One entry of a case's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// When (RFC 3339).
    pub at: String,
    /// Who.
    pub actor_id: Option<Uuid>,
    /// Their role.
    pub actor_role: Option<Role>,
    /// What.
    pub action: CaseAction,
    /// Status before.
    pub from: Option<CaseStatus>,
    /// Status after.
    pub to: CaseStatus,
    /// Why.
    pub reason: Option<String>,
    /// Details: a return's notice, an override's issues.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<&CaseEvent> for EventView {
    fn from(e: &CaseEvent) -> Self {
        EventView {
            at: rfc3339(e.at),
            actor_id: e.actor_id,
            actor_role: e.actor_role,
            action: e.action,
            from: e.from,
            to: e.to,
            reason: e.reason.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// A call linked to a case.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaseCallView {
    /// The call.
    pub id: Uuid,
    /// When it was opened (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339), `null` while it runs.
    pub ended_at: Option<String>,
    /// When it was linked to the case (RFC 3339).
    pub attached_at: String,
    /// Its recordings (ids for `/api/v1/recordings/{id}`), for staff who may see them;
    /// absent for everyone else (residents, agents who were not in the call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_ids: Option<Vec<Uuid>>,
}

/// A case with its checklist, documents and history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaseView {
    /// Id.
    pub id: Uuid,
    /// The resident.
    pub resident_id: Uuid,
    /// The matter.
    pub matter_code: String,
    /// Matter name (Chinese).
    pub matter_name_zh: String,
    /// Matter name (English).
    pub matter_name_en: String,
    /// Status.
    pub status: CaseStatus,
    /// Intake answers.
    pub answers: Answers,
    /// The call it was opened in.
    pub call_id: Option<Uuid>,
    /// The ticket it came from.
    pub ticket_id: Option<Uuid>,
    /// The calls it was handled in (the first is the one it was opened in).
    pub calls: Vec<CaseCallView>,
    /// Who created it.
    pub created_by: Uuid,
    /// Their role.
    pub created_by_role: Role,
    /// Times returned for correction.
    pub return_count: i64,
    /// The checklist now: what is provided, what is missing.
    pub checklist: ChecklistReport,
    /// The notice of the last return, while the case is returned: every item to fix.
    pub return_notice: Option<Vec<Issue>>,
    /// Documents.
    pub documents: Vec<DocumentView>,
    /// What was done, oldest first.
    pub history: Vec<EventView>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Version (send as `expected_version` to guard against concurrent edits).
    pub version: i64,
}

/// Builds the full view of a case as `who` may see it.
pub(crate) async fn case_view(state: &AppState, who: &Principal, c: &Case) -> ApiResult<CaseView> {
    let matter = matter_of(state, c).await?;
    let mut calls = Vec::new();
    for link in state.store.case_calls(c.id).await? {
        let recording_ids = if may_see_recordings(state, who, link.call_id).await? {
            let filter = RecordingFilter { call_id: Some(link.call_id), ..Default::default() };
            let recs = state.store.list_recordings(&filter, super::MAX_PAGE).await?;
            Some(recs.iter().filter(|r| r.state != RecordingState::Deleted).map(|r| r.id).collect())
        } else {
            None
        };
        calls.push(CaseCallView {
            id: link.call_id,
            started_at: rfc3339(link.started_at),
            ended_at: link.ended_at.map(rfc3339),
            attached_at: rfc3339(link.attached_at),
            recording_ids,
        });
    }
    let docs = state.store.list_documents(c.id).await?;
    let events = state.store.case_events(c.id).await?;
    let facts: Vec<_> = docs.iter().map(Document::fact).collect();
    let checklist = evaluate(&matter.spec, &c.answers, &facts);
    let return_notice = (c.status == CaseStatus::Returned)
        .then(|| events.iter().rev().find(|e| e.action == CaseAction::Return))
        .flatten()
        .and_then(|e| serde_json::from_value(e.detail["notice"].clone()).ok());
    Ok(CaseView {
        id: c.id.0,
        resident_id: c.resident_id.0,
        matter_code: c.matter_code.clone(),
        matter_name_zh: matter.spec.name_zh.clone(),
        matter_name_en: matter.spec.name_en.clone(),
        status: c.status,
        answers: c.answers.clone(),
        call_id: c.call_id,
        ticket_id: c.ticket_id,
        calls,
        created_by: c.created_by,
        created_by_role: c.created_by_role,
        return_count: c.return_count,
        checklist,
        return_notice,
        documents: docs.iter().map(DocumentView::from).collect(),
        history: events.iter().map(EventView::from).collect(),
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
        version: c.version,
    })
}

/// A new case.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCase {
    /// The matter's code.
    pub matter_code: String,
    /// The resident (required for agents; a resident may omit it or give their own id).
    pub resident_id: Option<Uuid>,
    /// The call it is opened in.
    pub call_id: Option<Uuid>,
    /// The queue ticket it comes from.
    pub ticket_id: Option<Uuid>,
    /// Intake answers known already.
    #[serde(default)]
    pub answers: Answers,
}

/// Opens a case: an agent for a resident (during a call), or a resident for themselves.
/// Helpers are refused (`delegation-required`) until delegations exist. Send an
/// `Idempotency-Key` so a retry returns the first case instead of making a second.
#[utoipa::path(post, path = "/api/v1/cases", tag = "cases", request_body = NewCase, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry return the first result")),
    responses((status = 201, body = CaseView), (status = 403, body = super::error::Problem),
        (status = 409, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn create_case(
    State(state): State<AppState>,
    who: Principal,
    key: IdempotencyKey,
    Body(req): Body<NewCase>,
) -> ApiResult<JsonBytes> {
    no_helpers(&who)?;
    who.require(&[Role::Resident, Role::Agent])?;
    let resident = match who.role {
        Role::Resident => match req.resident_id {
            Some(r) if r != who.id => return Err(ApiError::forbidden()),
            _ => ResidentId(who.id),
        },
        _ => ResidentId(req.resident_id.ok_or_else(|| ApiError::invalid("resident_id is required for agents"))?),
    };
    if req.matter_code.len() > 32 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-matter", "no such matter"));
    }
    let (state, who, req) = (&state, &who, &req);
    idempotency::once(state, who, &key, "POST /api/v1/cases", req, move |id| async move {
        let matter = match state.store.matter(&req.matter_code).await? {
            Some(m) if m.active => m,
            _ => return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-matter", "no such matter is offered")),
        };
        case::validate_answers(&matter.spec, &req.answers)?;
        if state.store.resident_by_id(resident).await?.is_none() {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-resident", "no such resident"));
        }
        let call = match req.call_id {
            Some(call) => Some(check_call(state, who, call, resident).await?),
            None => None,
        };
        if let Some(ticket) = req.ticket_id {
            check_ticket(state, ticket, resident).await?;
            if let Some(t) = call.as_ref().and_then(|c| c.ticket_id) {
                if t != ticket {
                    return Err(ApiError::conflict("ticket-call-mismatch", "the call was opened for another ticket"));
                }
            }
        }
        let now = state.clock.now_ms();
        let c = Case {
            id: CaseId(id),
            resident_id: resident,
            matter_code: matter.spec.code.clone(),
            status: CaseStatus::Draft,
            answers: req.answers.clone(),
            call_id: req.call_id,
            ticket_id: req.ticket_id,
            created_by: who.id,
            created_by_role: who.role,
            return_count: 0,
            created_at: now,
            updated_at: now,
            submitted_at: None,
            version: 1,
        };
        let created = CaseEvent {
            id: CaseEventId::new(),
            case_id: c.id,
            at: now,
            actor_id: Some(who.id),
            actor_role: Some(who.role),
            action: CaseAction::Create,
            from: None,
            to: CaseStatus::Draft,
            reason: None,
            detail: serde_json::json!({"call_id": c.call_id, "ticket_id": c.ticket_id}),
        };
        match state.store.insert_case(&c, &created).await {
            Ok(()) => {}
            // A takeover of a stale claim: the first attempt made this very case.
            Err(StoreError::Conflict("duplicate")) => {}
            Err(StoreError::Conflict(_)) => return Err(ApiError::invalid("unknown resident or matter")),
            Err(e) => return Err(e.into()),
        }
        let c = state.store.case_by_id(c.id).await?.ok_or_else(|| ApiError::internal("created case vanished"))?;
        state
            .audit(actor(&who), "case.create", "case", c.id, serde_json::json!({"matter": c.matter_code, "resident": c.resident_id}))
            .await?;
        Ok((StatusCode::CREATED, case_view(state, who, &c).await?))
    })
    .await
}

/// Filter for the case list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CaseQuery {
    /// Only in this status.
    pub status: Option<CaseStatus>,
    /// Only of this matter.
    pub matter: Option<String>,
    /// Only this resident's (staff).
    pub resident_id: Option<Uuid>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// A case in a list: status and what is missing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaseSummary {
    /// Id.
    pub id: Uuid,
    /// The resident.
    pub resident_id: Uuid,
    /// The matter.
    pub matter_code: String,
    /// Matter name (Chinese).
    pub matter_name_zh: String,
    /// Status.
    pub status: CaseStatus,
    /// Nothing is missing.
    pub checklist_complete: bool,
    /// What is missing or invalid.
    pub issues: Vec<Issue>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

/// Lists cases: a resident's own ("my cases"), or any for agents and supervisors.
#[utoipa::path(get, path = "/api/v1/cases", tag = "cases", params(CaseQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<CaseSummary>), (status = 403, body = super::error::Problem)))]
pub async fn list_cases(
    State(state): State<AppState>,
    who: Principal,
    QueryParams(q): QueryParams<CaseQuery>,
) -> ApiResult<Json<Page<CaseSummary>>> {
    no_helpers(&who)?;
    who.require(&[Role::Resident, Role::Agent, Role::Supervisor])?;
    let limit = PageQuery { cursor: q.cursor, limit: q.limit }.limit()?;
    let resident = match who.role {
        Role::Resident => match q.resident_id {
            Some(r) if r != who.id => return Err(ApiError::forbidden()),
            _ => Some(ResidentId(who.id)),
        },
        _ => q.resident_id.map(ResidentId),
    };
    if q.matter.as_ref().is_some_and(|m| m.len() > 32) {
        return Err(ApiError::bad_request("invalid-query", "matter is too long"));
    }
    let filter = CaseFilter { resident, status: q.status, matter: q.matter.clone() };
    let cases = state.store.list_cases(&filter, q.cursor, limit).await?;
    let mut matters: std::collections::HashMap<String, Matter> = Default::default();
    let mut items = Vec::with_capacity(cases.len());
    for c in &cases {
        if !matters.contains_key(&c.matter_code) {
            let m = matter_of(&state, c).await?;
            matters.insert(c.matter_code.clone(), m);
        }
        let m = &matters[&c.matter_code];
        let docs = state.store.list_documents(c.id).await?;
        let facts: Vec<_> = docs.iter().map(Document::fact).collect();
        let report = evaluate(&m.spec, &c.answers, &facts);
        items.push(CaseSummary {
            id: c.id.0,
            resident_id: c.resident_id.0,
            matter_code: c.matter_code.clone(),
            matter_name_zh: m.spec.name_zh.clone(),
            status: c.status,
            checklist_complete: report.complete,
            issues: report.issues,
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        });
    }
    if who.role != Role::Resident {
        state
            .audit(actor(&who), "case.list", "case", "-", serde_json::json!({"count": items.len(), "resident": q.resident_id}))
            .await?;
    }
    Ok(Json(Page::from_items(items, limit, |c: &CaseSummary| c.id)))
}

/// One case with its checklist, documents and history (the resident's own, or any for staff).
#[utoipa::path(get, path = "/api/v1/cases/{id}", tag = "cases", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = CaseView), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
pub async fn get_case(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<Json<CaseView>> {
    let c = load_case(&state, &who, id, Access::Read).await?;
    if who.role != Role::Resident {
        state.audit(actor(&who), "case.view", "case", c.id, serde_json::json!({})).await?;
    }
    Ok(Json(case_view(&state, &who, &c).await?))
}

/// A call to link to a case.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachCall {
    /// The call: one of the case's resident's calls.
    pub call_id: Uuid,
}

/// Links another call of the case's resident to the case (a second call about the same
/// matter): an agent who was an agent in that call, or a supervisor. Linking a call twice is
/// one link (201 the first time, 200 after).
#[utoipa::path(post, path = "/api/v1/cases/{id}/calls", tag = "cases", params(("id" = Uuid, Path)),
    request_body = AttachCall, security(("bearer" = [])),
    responses((status = 201, body = CaseView), (status = 200, body = CaseView), (status = 403, body = super::error::Problem),
        (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn attach_call(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
    Body(req): Body<AttachCall>,
) -> ApiResult<(StatusCode, Json<CaseView>)> {
    no_helpers(&who)?;
    who.require(&[Role::Agent, Role::Supervisor])?;
    let c = load_case(&state, &who, id, Access::Read).await?;
    check_call(&state, &who, req.call_id, c.resident_id).await?;
    let added = match state.store.attach_call(c.id, req.call_id, state.clock.now_ms(), who.id).await {
        Ok(added) => added,
        Err(StoreError::Conflict("reference")) => return Err(ApiError::not_found("case or call")),
        Err(e) => return Err(e.into()),
    };
    if added {
        state.audit(actor(&who), "case.attach_call", "case", c.id, serde_json::json!({"call_id": req.call_id})).await?;
    }
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(case_view(&state, &who, &c).await?)))
}

/// New intake answers.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswersUpdate {
    /// All answers (replaces the previous ones).
    pub answers: Answers,
    /// Apply only if the case still has this version.
    pub expected_version: Option<i64>,
}

/// Sets the intake answers (they decide the conditional checklist items) while the case is
/// not decided.
#[utoipa::path(put, path = "/api/v1/cases/{id}/answers", tag = "cases", params(("id" = Uuid, Path)), request_body = AnswersUpdate,
    security(("bearer" = [])),
    responses((status = 200, body = CaseView), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn set_answers(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
    Body(req): Body<AnswersUpdate>,
) -> ApiResult<Json<CaseView>> {
    let c = load_case(&state, &who, id, Access::Write).await?;
    if !c.status.accepts_material() {
        return Err(ApiError::conflict("case-closed", "the case is decided; its answers can no longer change"));
    }
    let matter = matter_of(&state, &c).await?;
    case::validate_answers(&matter.spec, &req.answers)?;
    let version = req.expected_version.unwrap_or(c.version);
    let c = state
        .store
        .set_case_answers(c.id, &req.answers, version, state.clock.now_ms())
        .await
        .map_err(version_conflict)?;
    state.audit(actor(&who), "case.answers", "case", c.id, serde_json::json!({"answers": c.answers})).await?;
    Ok(Json(case_view(&state, &who, &c).await?))
}

/// A retry of a keyed submit or review whose first attempt committed its transition but died
/// before its result was stored (its claim was taken over): the case as it is now, with the
/// first attempt's transition in its history. `None` when no transition carries the key.
async fn committed_before(state: &AppState, who: &Principal, id: CaseId, key: Option<&str>) -> ApiResult<Option<CaseView>> {
    let Some(key) = key else { return Ok(None) };
    if state.store.case_event_by_key(id, who.id, key).await?.is_none() {
        return Ok(None);
    }
    let c = state.store.case_by_id(id).await?.ok_or_else(|| ApiError::not_found("case"))?;
    Ok(Some(case_view(state, who, &c).await?))
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    state: &AppState,
    who: &Principal,
    c: &Case,
    action: CaseAction,
    reason: Option<String>,
    detail: serde_json::Value,
    invalidate: Vec<(String, String)>,
    expected_version: Option<i64>,
    idem_key: Option<&str>,
) -> ApiResult<Case> {
    if !action.allowed_roles().contains(&who.role) {
        return Err(ApiError::forbidden());
    }
    let to = next_status(c.status, action).map_err(case_error)?;
    let now = state.clock.now_ms();
    let t = Transition {
        expected_version: expected_version.unwrap_or(c.version),
        to,
        event: CaseEvent {
            id: CaseEventId::new(),
            case_id: c.id,
            at: now,
            actor_id: Some(who.id),
            actor_role: Some(who.role),
            action,
            from: Some(c.status),
            to,
            reason: reason.clone(),
            detail: detail.clone(),
        },
        invalidate,
        idem_key: idem_key.map(str::to_string),
    };
    let updated = match state.store.transition_case(c.id, &t).await {
        // The key's transition was committed meanwhile by an attempt still running.
        Err(StoreError::Conflict("duplicate")) => {
            return Err(ApiError::conflict("case-changed", "the case was changed meanwhile; reload it and retry"))
        }
        other => other.map_err(version_conflict)?,
    };
    state
        .audit(
            actor(who),
            &format!("case.{}", action.as_str()),
            "case",
            c.id,
            serde_json::json!({"from": c.status, "to": to, "reason": reason, "detail": detail}),
        )
        .await?;
    Ok(updated)
}

/// Hands a case in: submits a draft, or resubmits a returned case. Send an `Idempotency-Key`
/// so a retry after a dropped connection returns the first result.
#[utoipa::path(post, path = "/api/v1/cases/{id}/submit", tag = "cases", params(("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry return the first result")),
    security(("bearer" = [])),
    responses((status = 200, body = CaseView), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn submit_case(
    State(state): State<AppState>,
    who: Principal,
    key: IdempotencyKey,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<JsonBytes> {
    let route = format!("POST /api/v1/cases/{id}/submit");
    let c = load_case(&state, &who, id, Access::Write).await?;
    let (state, who, idem) = (&state, &who, key.0.as_deref());
    idempotency::once(state, who, &key, &route, &serde_json::json!({}), move |_| async move {
        if let Some(first) = committed_before(state, who, c.id, idem).await? {
            return Ok((StatusCode::OK, first));
        }
        // Re-read inside the claim: the state may have moved since the first read.
        let c = state.store.case_by_id(c.id).await?.ok_or_else(|| ApiError::not_found("case"))?;
        let c = apply(state, who, &c, hand_in_action(c.status), None, serde_json::json!({}), Vec::new(), None, idem).await?;
        Ok((StatusCode::OK, case_view(state, who, &c).await?))
    })
    .await
}

/// What an agent decides about a case.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Review {
    /// Accept (受理). Refused while the checklist has issues unless `override_reason` explains
    /// why (logged with the issues it overrode).
    Accept {
        /// Why the case is accepted despite missing items.
        override_reason: Option<String>,
        /// Apply only if the case still has this version.
        expected_version: Option<i64>,
    },
    /// Return for correction (补正): every missing item, plus `invalid` ones, listed at once.
    Return {
        /// A note to the resident.
        reason: String,
        /// Documents found invalid, by checklist item.
        #[serde(default)]
        invalid: Vec<InvalidItem>,
        /// Apply only if the case still has this version.
        expected_version: Option<i64>,
    },
    /// Approve.
    Approve {
        /// Optional note.
        note: Option<String>,
        /// Apply only if the case still has this version.
        expected_version: Option<i64>,
    },
    /// Reject, with the reason.
    Reject {
        /// Why.
        reason: String,
        /// Apply only if the case still has this version.
        expected_version: Option<i64>,
    },
    /// Complete (the result was delivered).
    Complete {
        /// Optional note.
        note: Option<String>,
        /// Apply only if the case still has this version.
        expected_version: Option<i64>,
    },
}

/// An agent's decision: accept (with the checklist gate), return with every issue at once,
/// approve, reject or complete. Every decision is stored with actor, time and reason.
#[utoipa::path(post, path = "/api/v1/cases/{id}/review", tag = "cases", params(("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry return the first result")),
    request_body = Review, security(("bearer" = [])),
    responses((status = 200, body = CaseView), (status = 403, body = super::error::Problem),
        (status = 409, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn review_case(
    State(state): State<AppState>,
    who: Principal,
    key: IdempotencyKey,
    PathParam(id): PathParam<Uuid>,
    Body(req): Body<Review>,
) -> ApiResult<JsonBytes> {
    no_helpers(&who)?;
    who.require(&[Role::Agent])?;
    let route = format!("POST /api/v1/cases/{id}/review");
    let c = load_case(&state, &who, id, Access::Write).await?;
    let (state, who, req, idem) = (&state, &who, &req, key.0.as_deref());
    idempotency::once(state, who, &key, &route, req, move |_| async move {
        if let Some(first) = committed_before(state, who, c.id, idem).await? {
            return Ok((StatusCode::OK, first));
        }
        // Re-read inside the claim: the state may have moved since the first read.
        let c = state.store.case_by_id(c.id).await?.ok_or_else(|| ApiError::not_found("case"))?;
        let matter = matter_of(&state, &c).await?;
        let docs = state.store.list_documents(c.id).await?;
        let facts: Vec<_> = docs.iter().map(Document::fact).collect();
        let report = evaluate(&matter.spec, &c.answers, &facts);
        let updated = match &req {
            Review::Accept { override_reason, expected_version } => {
                // The gate only matters where acceptance is legal; say "illegal" first.
                next_status(c.status, CaseAction::Accept).map_err(case_error)?;
                let overridden = accept_gate(&report, override_reason.as_deref()).map_err(case_error)?;
                let (reason, detail) = if overridden.is_empty() {
                    (None, serde_json::json!({}))
                } else {
                    (override_reason.clone(), serde_json::json!({"override": true, "overridden": overridden}))
                };
                apply(state, who, &c, CaseAction::Accept, reason, detail, Vec::new(), *expected_version, idem).await?
            }
            Review::Return { reason, invalid, expected_version } => {
                next_status(c.status, CaseAction::Return).map_err(case_error)?;
                case::check_reason(reason, true).map_err(case_error)?;
                if invalid.len() > crate::domain::matter::MAX_ITEMS {
                    return Err(ApiError::invalid("too many invalid items"));
                }
                let notice = return_notice(&matter.spec, &report, invalid).map_err(case_error)?;
                let invalidate = invalid.iter().map(|i| (i.item.clone(), i.reason.trim().to_string())).collect();
                apply(
                    &state,
                    &who,
                    &c,
                    CaseAction::Return,
                    Some(reason.trim().to_string()),
                    serde_json::json!({"notice": notice}),
                    invalidate,
                    *expected_version,
                    idem,
                )
                .await?
            }
            Review::Approve { note, expected_version } | Review::Complete { note, expected_version } => {
                if let Some(n) = note {
                    case::check_reason(n, false).map_err(case_error)?;
                }
                let action = if matches!(req, Review::Approve { .. }) { CaseAction::Approve } else { CaseAction::Complete };
                apply(state, who, &c, action, note.clone(), serde_json::json!({}), Vec::new(), *expected_version, idem).await?
            }
            Review::Reject { reason, expected_version } => {
                next_status(c.status, CaseAction::Reject).map_err(case_error)?;
                case::check_reason(reason, true).map_err(case_error)?;
                apply(
                    &state,
                    &who,
                    &c,
                    CaseAction::Reject,
                    Some(reason.trim().to_string()),
                    serde_json::json!({}),
                    Vec::new(),
                    *expected_version,
                    idem,
                )
                .await?
            }
        };
        Ok((StatusCode::OK, case_view(state, who, &updated).await?))
    })
    .await
}

/// Return rates per matter (supervisors): how many handed-in cases had to be returned.
#[utoipa::path(get, path = "/api/v1/stats/return-rates", tag = "cases", security(("bearer" = [])),
    responses((status = 200, body = Vec<ReturnRate>), (status = 403, body = super::error::Problem)))]
pub async fn return_rates(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Vec<ReturnRate>>> {
    who.require(&[Role::Supervisor])?;
    let rates = state.store.return_rates().await?;
    state.audit(actor(&who), "case.return_rates", "case", "-", serde_json::json!({})).await?;
    Ok(Json(rates))
}
