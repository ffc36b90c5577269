//! Calls over REST: until the queue lands, an agent opens a call with a given resident; the
//! call's agent (or a supervisor) invites a helper or an observer; members read the call and
//! its events; the agent can end it. Media and live signaling go over the WebSocket.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam, Principal};
use super::rfc3339;
use crate::app::AppState;
use crate::domain::call::{may_invite, Call, CallState, Member, MemberRole};
use crate::domain::identity::Role;
use crate::domain::ids::{DeviceId, ResidentId, StaffId};
use crate::domain::people::Actor;
use crate::store::StoreError;

/// Open a call.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenCall {
    /// The resident whose matter it is.
    pub resident_id: Uuid,
    /// The kiosk or TV box the resident calls from (it joins instead of the resident's phone).
    pub device_id: Option<Uuid>,
    /// The matter, if known.
    pub matter_code: Option<String>,
}

/// A member as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    /// Participant id in the call.
    pub participant_id: Uuid,
    /// Account id.
    pub subject: Uuid,
    /// Role in the call.
    pub role: MemberRole,
    /// Name shown.
    pub display_name: String,
    /// Added (RFC 3339).
    pub added_at: String,
}

/// A call as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallView {
    /// Id (join it over the WebSocket).
    pub id: Uuid,
    /// Open or ended.
    pub state: CallState,
    /// The resident.
    pub resident_id: Option<Uuid>,
    /// The matter.
    pub matter_code: Option<String>,
    /// Opened (RFC 3339).
    pub created_at: String,
    /// Ended (RFC 3339).
    pub ended_at: Option<String>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Who may join.
    pub members: Vec<MemberView>,
}

fn view(c: &Call, members: &[Member]) -> CallView {
    CallView {
        id: c.id,
        state: c.state,
        resident_id: c.resident_id,
        matter_code: c.matter_code.clone(),
        created_at: rfc3339(c.created_at),
        ended_at: c.ended_at.map(rfc3339),
        end_reason: c.end_reason.clone(),
        members: members
            .iter()
            .map(|m| MemberView {
                participant_id: m.participant_id,
                subject: m.subject,
                role: m.role,
                display_name: m.display_name.clone(),
                added_at: rfc3339(m.added_at),
            })
            .collect(),
    }
}

fn member(call: Uuid, subject: Uuid, role: MemberRole, name: String, now: i64, by: Option<Uuid>) -> Member {
    Member { call_id: call, participant_id: Uuid::now_v7(), subject, role, display_name: name, added_at: now, added_by: by }
}

/// Opens a call between the calling agent and a resident (and the resident's device).
#[utoipa::path(post, path = "/api/v1/calls", tag = "calls", request_body = OpenCall, security(("bearer" = [])),
    responses((status = 201, body = CallView), (status = 403, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn open_call(
    State(state): State<AppState>,
    who: Principal,
    Body(req): Body<OpenCall>,
) -> ApiResult<(StatusCode, Json<CallView>)> {
    who.require(&[Role::Agent])?;
    let agent = state.store.staff_by_id(StaffId(who.id)).await?.ok_or_else(ApiError::forbidden)?;
    let resident = state
        .store
        .resident_by_id(ResidentId(req.resident_id))
        .await?
        .ok_or_else(|| ApiError::invalid("unknown resident"))?;
    if let Some(code) = &req.matter_code {
        if code.len() > 32 || state.store.matter(code).await?.is_none() {
            return Err(ApiError::invalid("unknown matter"));
        }
    }
    let now = state.clock.now_ms();
    let call = Call {
        id: Uuid::now_v7(),
        opened_by: who.id,
        resident_id: Some(resident.id.0),
        matter_code: req.matter_code.clone(),
        ticket_id: None,
        state: CallState::Open,
        created_at: now,
        ended_at: None,
        end_reason: None,
        ended_by: None,
    };
    let resident_name = if resident.name.is_empty() { resident.phone.masked() } else { resident.name.clone() };
    let mut members = vec![
        member(call.id, agent.id.0, MemberRole::Agent, agent.display_name.clone(), now, None),
        member(call.id, resident.id.0, MemberRole::Resident, resident_name.clone(), now, None),
    ];
    if let Some(d) = req.device_id {
        let device = state
            .store
            .device_by_id(DeviceId(d))
            .await?
            .filter(|d| !d.revoked)
            .ok_or_else(|| ApiError::invalid("unknown or revoked device"))?;
        members.push(member(call.id, device.id.0, MemberRole::Device, format!("{resident_name} ({})", device.label), now, None));
    }
    state.store.insert_call(&call, &members).await?;
    state
        .audit(Actor { id: Some(who.id), role: Some(who.role) }, "call.open", "call", call.id, serde_json::json!({"resident": resident.id}))
        .await?;
    Ok((StatusCode::CREATED, Json(view(&call, &members))))
}

/// Callers who could never act on a call get 403 whether it exists or not, so ids cannot be
/// probed.
fn hide_from_strangers(who: &Principal, e: ApiError) -> ApiError {
    if e.status == StatusCode::NOT_FOUND && !matches!(who.role, Role::Agent | Role::Supervisor | Role::Auditor) {
        ApiError::forbidden()
    } else {
        e
    }
}

async fn load(state: &AppState, id: Uuid) -> ApiResult<(Call, Vec<Member>)> {
    let call = state.store.call_by_id(id).await?.ok_or_else(|| ApiError::not_found("call"))?;
    let members = state.store.call_members(id).await?;
    Ok((call, members))
}

fn may_read(who: &Principal, members: &[Member]) -> bool {
    matches!(who.role, Role::Supervisor | Role::Auditor) || members.iter().any(|m| m.subject == who.id)
}

/// A call: its members, or a supervisor or auditor.
#[utoipa::path(get, path = "/api/v1/calls/{id}", tag = "calls", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = CallView), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
pub async fn get_call(State(state): State<AppState>, who: Principal, PathParam(id): PathParam<Uuid>) -> ApiResult<Json<CallView>> {
    let (call, members) = load(&state, id).await?;
    if !may_read(&who, &members) {
        return Err(ApiError::forbidden());
    }
    Ok(Json(view(&call, &members)))
}

/// Invite a helper or an observer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// The staff account to add.
    pub staff_id: Uuid,
    /// `helper` or `observer`.
    pub role: MemberRole,
}

/// Adds a helper (third party) or a supervisor as observer to an open call: its agent or a
/// supervisor may.
#[utoipa::path(post, path = "/api/v1/calls/{id}/members", tag = "calls", params(("id" = Uuid, Path)), request_body = Invite,
    security(("bearer" = [])),
    responses((status = 201, body = MemberView), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn invite(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
    Body(req): Body<Invite>,
) -> ApiResult<(StatusCode, Json<MemberView>)> {
    let (call, members) = load(&state, id).await.map_err(|e| hide_from_strangers(&who, e))?;
    if !(who.role == Role::Supervisor || members.iter().any(|m| m.subject == who.id)) {
        return Err(ApiError::forbidden());
    }
    if !may_invite(&call, &members, who.id, who.role) {
        return Err(if call.state == CallState::Ended {
            ApiError::conflict("call-ended", "the call has ended")
        } else {
            ApiError::forbidden()
        });
    }
    let staff = state.store.staff_by_id(StaffId(req.staff_id)).await?.ok_or_else(|| ApiError::invalid("unknown staff"))?;
    let fits = matches!((req.role, staff.role), (MemberRole::Helper, Role::Helper) | (MemberRole::Observer, Role::Supervisor));
    if !fits {
        return Err(ApiError::invalid("helpers join as helper, supervisors as observer"));
    }
    let m = member(id, staff.id.0, req.role, staff.display_name.clone(), state.clock.now_ms(), Some(who.id));
    state.store.add_call_member(&m).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::conflict("already-member", "already a member of this call"),
        e => e.into(),
    })?;
    state
        .audit(Actor { id: Some(who.id), role: Some(who.role) }, "call.invite", "call", id, serde_json::json!({"staff": staff.id, "role": req.role}))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(MemberView {
            participant_id: m.participant_id,
            subject: m.subject,
            role: m.role,
            display_name: m.display_name,
            added_at: rfc3339(m.added_at),
        }),
    ))
}

/// Ends a call (its agent, or a supervisor): everyone connected is told and disconnected.
#[utoipa::path(post, path = "/api/v1/calls/{id}/end", tag = "calls", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn end_call(State(state): State<AppState>, who: Principal, PathParam(id): PathParam<Uuid>) -> ApiResult<StatusCode> {
    let (call, members) = load(&state, id).await?;
    let agent = members.iter().any(|m| m.subject == who.id && m.role == MemberRole::Agent);
    if !(agent || who.role == Role::Supervisor) {
        return Err(ApiError::forbidden());
    }
    if call.state == CallState::Ended {
        return Err(ApiError::conflict("call-ended", "the call has already ended"));
    }
    state.signaling.hub.end_call(id, None, Some(who.id), signaling_protocol::EndReason::HungUp).await;
    state.audit(Actor { id: Some(who.id), role: Some(who.role) }, "call.end", "call", id, serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A call event as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallEventView {
    /// When (RFC 3339).
    pub at: String,
    /// joined, left, reconnecting, reconnected, timed_out, chat, track_published, ended, ...
    pub kind: String,
    /// Which participant.
    pub participant_id: Option<Uuid>,
    /// Details.
    pub detail: serde_json::Value,
}

/// What happened in a call, oldest first: its agent, supervisors and auditors (audited).
#[utoipa::path(get, path = "/api/v1/calls/{id}/events", tag = "calls", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vec<CallEventView>), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
pub async fn call_events(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<Json<Vec<CallEventView>>> {
    let (_, members) = load(&state, id).await?;
    let agent = members.iter().any(|m| m.subject == who.id && m.role == MemberRole::Agent);
    if !(agent || matches!(who.role, Role::Supervisor | Role::Auditor)) {
        return Err(ApiError::forbidden());
    }
    let events = state.store.call_events(id, 1000).await?;
    state.audit(Actor { id: Some(who.id), role: Some(who.role) }, "call.events.read", "call", id, serde_json::json!({})).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| CallEventView { at: rfc3339(e.at), kind: e.kind, participant_id: e.participant_id, detail: e.detail })
            .collect(),
    ))
}
