//! The queue over REST: take a ticket (a resident for themselves, a kiosk or TV box for the
//! resident in front of it, a helper for a resident), with `Idempotency-Key` (and a natural
//! dedupe: one active ticket per resident and matter) so a retry never makes two; my tickets;
//! leave the queue; call-backs; appointment slots and booking; supervisor figures and agent
//! presence. Live changes go over the WebSocket (docs/protocol.md, section 9).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam, Principal, QueryParams};
use super::rfc3339;
use crate::app::AppState;
use crate::domain::identity::Role;
use crate::domain::ids::DeviceId;
use crate::domain::people::{Actor, DeviceKind};
use crate::domain::queue::{self as policy, Channel, Presence, Priority, SkillFigures, TicketState};
use crate::queue::{TakeError, TakeMode, TakeTicket, TicketStatus};
use crate::store::queue::Ticket;

/// Take a ticket.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeTicketRequest {
    /// The matter, e.g. `MI-003`.
    pub matter_code: String,
    /// The resident (required for devices and helpers; residents take for themselves).
    pub resident_id: Option<Uuid>,
    /// Ask for a call-back instead of waiting connected (also outside service hours).
    #[serde(default)]
    pub callback: bool,
    /// Phone to call back on, if not the app.
    pub callback_phone: Option<String>,
}

/// A ticket as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketView {
    /// Id.
    pub id: Uuid,
    /// Readable number, e.g. `B023`.
    pub ticket_no: String,
    /// Matter code.
    pub matter_code: String,
    /// Skill (matter class).
    pub skill: String,
    /// State.
    pub state: TicketState,
    /// Channel.
    pub channel: Channel,
    /// Priority reasons.
    pub priority: Vec<Priority>,
    /// Place, 1 = next (while waiting).
    pub position: Option<u32>,
    /// Estimated wait, seconds (while waiting).
    pub estimated_wait_s: Option<u32>,
    /// Appointment slot (RFC 3339).
    pub appointment_at: Option<String>,
    /// The call once accepted.
    pub call_id: Option<Uuid>,
    /// Taken (RFC 3339).
    pub created_at: String,
}

fn view(s: TicketStatus) -> TicketView {
    let t = s.ticket;
    TicketView {
        id: t.id,
        ticket_no: t.ticket_no,
        matter_code: t.matter_code,
        skill: t.skill,
        state: t.state,
        channel: t.channel,
        priority: t.priority,
        position: s.position,
        estimated_wait_s: s.estimated_wait_s,
        appointment_at: t.appointment_at.map(rfc3339),
        call_id: t.call_id,
        created_at: rfc3339(t.created_at),
    }
}

fn take_error(e: TakeError) -> ApiError {
    match e {
        TakeError::Closed { next_open } => ApiError::conflict(
            "queue-closed",
            format!(
                "outside service hours; next opening {}; book an appointment or ask for a call-back",
                next_open.map(rfc3339).unwrap_or_else(|| "unknown".into())
            ),
        ),
        TakeError::UnknownMatter => ApiError::invalid("unknown or inactive matter"),
        TakeError::UnknownResident => ApiError::invalid("unknown resident"),
        TakeError::Slot(why) => ApiError::conflict("slot-unavailable", why),
        TakeError::Store(e) => e.into(),
    }
}

/// Who takes the ticket, for whom, through which channel.
async fn taker(state: &AppState, who: &Principal, resident_id: Option<Uuid>) -> ApiResult<(Uuid, Channel)> {
    match who.role {
        Role::Resident => {
            if resident_id.is_some_and(|r| r != who.id) {
                return Err(ApiError::forbidden());
            }
            Ok((who.id, Channel::Phone))
        }
        Role::Device => {
            let device = state.store.device_by_id(DeviceId(who.id)).await?.filter(|d| !d.revoked).ok_or_else(ApiError::forbidden)?;
            let r = resident_id.ok_or_else(|| ApiError::invalid("resident_id is required for a device"))?;
            Ok((r, if device.kind == DeviceKind::Kiosk { Channel::Kiosk } else { Channel::Tv }))
        }
        Role::Helper => Ok((resident_id.ok_or_else(|| ApiError::invalid("resident_id is required for a helper"))?, Channel::Helper)),
        _ => Err(ApiError::forbidden()),
    }
}

fn idempotency_key(who: &Principal, headers: &HeaderMap, what: &str) -> ApiResult<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k = v.to_str().map_err(|_| ApiError::bad_request("invalid-idempotency-key", "Idempotency-Key must be text"))?;
            if k.is_empty() || k.len() > 128 {
                return Err(ApiError::bad_request("invalid-idempotency-key", "Idempotency-Key: 1 to 128 characters"));
            }
            Ok(Some(format!("{what}:{}:{k}", who.id)))
        }
    }
}

/// Takes a ticket. A retry with the same `Idempotency-Key`, or while the resident already has
/// an active ticket for the matter, answers 200 with that ticket instead of 201.
#[utoipa::path(post, path = "/api/v1/queue/tickets", tag = "queue", request_body = TakeTicketRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = TicketView), (status = 200, body = TicketView, description = "the existing ticket"),
        (status = 409, body = super::error::Problem, description = "queue-closed: outside service hours"),
        (status = 403, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn take_ticket(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Body(req): Body<TakeTicketRequest>,
) -> ApiResult<(StatusCode, Json<TicketView>)> {
    let (resident_id, channel) = taker(&state, &who, req.resident_id).await?;
    if req.callback_phone.as_ref().is_some_and(|p| crate::domain::identity::PhoneNumber::parse(p).is_err()) {
        return Err(ApiError::invalid("callback_phone is not a mobile number"));
    }
    let take = TakeTicket {
        matter_code: req.matter_code,
        resident_id,
        taken_by: who.id,
        taken_by_role: who.role,
        channel,
        dedupe_key: idempotency_key(&who, &headers, "ticket")?,
        mode: if req.callback { TakeMode::Callback } else { TakeMode::Now },
        callback_phone: req.callback_phone,
    };
    let (t, new) = state.queue.take(take).await.map_err(take_error)?;
    if new {
        state
            .audit(Actor { id: Some(who.id), role: Some(who.role) }, "ticket.take", "ticket", t.id, serde_json::json!({"no": t.ticket_no, "matter": t.matter_code, "resident": t.resident_id}))
            .await?;
    }
    let status = state.queue.status(t).await?;
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(view(status))))
}

/// My tickets (taken by me or for me), newest first.
#[utoipa::path(get, path = "/api/v1/queue/tickets", tag = "queue", security(("bearer" = [])),
    responses((status = 200, body = Vec<TicketView>)))]
pub async fn my_tickets(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Vec<TicketView>>> {
    who.require(&[Role::Resident, Role::Device, Role::Helper])?;
    let mut out = Vec::new();
    for t in state.store.tickets_of(who.id, 50).await? {
        out.push(view(state.queue.status(t).await?));
    }
    Ok(Json(out))
}

async fn own_ticket(state: &AppState, who: &Principal, id: Uuid) -> ApiResult<Ticket> {
    let t = state.store.ticket(id).await?.ok_or_else(|| ApiError::not_found("ticket"))?;
    let mine = t.taken_by == who.id || t.resident_id == who.id;
    let staff = matches!(who.role, Role::Supervisor | Role::Admin) || (who.role == Role::Agent && t.agent_id == Some(who.id));
    if !(mine || staff) {
        return Err(ApiError::not_found("ticket"));
    }
    Ok(t)
}

/// A ticket with its place: its resident or taker, its agent, supervisors.
#[utoipa::path(get, path = "/api/v1/queue/tickets/{id}", tag = "queue", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = TicketView), (status = 404, body = super::error::Problem)))]
pub async fn get_ticket(State(state): State<AppState>, who: Principal, PathParam(id): PathParam<Uuid>) -> ApiResult<Json<TicketView>> {
    let t = own_ticket(&state, &who, id).await?;
    Ok(Json(view(state.queue.status(t).await?)))
}

/// Leaves the queue (the ticket's resident or taker).
#[utoipa::path(post, path = "/api/v1/queue/tickets/{id}/cancel", tag = "queue", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = TicketView), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn cancel_ticket(State(state): State<AppState>, who: Principal, PathParam(id): PathParam<Uuid>) -> ApiResult<Json<TicketView>> {
    let t = own_ticket(&state, &who, id).await?;
    if t.taken_by != who.id && t.resident_id != who.id {
        return Err(ApiError::forbidden());
    }
    match state.queue.cancel(&t, who.id).await? {
        Some(t) => Ok(Json(view(TicketStatus { ticket: t, position: None, estimated_wait_s: None }))),
        None if t.state == TicketState::Abandoned => Ok(Json(view(TicketStatus { ticket: t, position: None, estimated_wait_s: None }))),
        None => Err(ApiError::conflict("ticket-not-waiting", "the ticket is no longer waiting")),
    }
}

/// Turns a waiting ticket into a call-back: it keeps its place, and an agent calls back.
#[utoipa::path(post, path = "/api/v1/queue/tickets/{id}/callback", tag = "queue", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = TicketView), (status = 409, body = super::error::Problem)))]
pub async fn request_callback(State(state): State<AppState>, who: Principal, PathParam(id): PathParam<Uuid>) -> ApiResult<Json<TicketView>> {
    let t = own_ticket(&state, &who, id).await?;
    if t.taken_by != who.id && t.resident_id != who.id {
        return Err(ApiError::forbidden());
    }
    match state.queue.to_callback(t.id, who.id).await? {
        Some(t) => Ok(Json(view(state.queue.status(t).await?))),
        None if t.state == TicketState::Callback => Ok(Json(view(state.queue.status(t).await?))),
        None => Err(ApiError::conflict("ticket-not-waiting", "only a waiting ticket can become a call-back")),
    }
}

/// A stored transition as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketEventView {
    /// When (RFC 3339).
    pub at: String,
    /// From.
    pub from_state: Option<TicketState>,
    /// To.
    pub to_state: TicketState,
    /// Why.
    pub cause: String,
    /// Who.
    pub actor: Option<Uuid>,
}

/// Every transition of a ticket, with its time and cause.
#[utoipa::path(get, path = "/api/v1/queue/tickets/{id}/events", tag = "queue", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vec<TicketEventView>), (status = 404, body = super::error::Problem)))]
pub async fn ticket_events(State(state): State<AppState>, who: Principal, PathParam(id): PathParam<Uuid>) -> ApiResult<Json<Vec<TicketEventView>>> {
    let t = own_ticket(&state, &who, id).await?;
    Ok(Json(
        state
            .store
            .ticket_events(t.id)
            .await?
            .into_iter()
            .map(|e| TicketEventView { at: rfc3339(e.at), from_state: e.from_state, to_state: e.to_state, cause: e.cause, actor: e.actor })
            .collect(),
    ))
}

/// Which slots to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SlotQuery {
    /// The matter.
    pub matter_code: String,
    /// Local date `YYYY-MM-DD` (Asia/Shanghai).
    pub date: String,
}

/// An appointment slot.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlotView {
    /// Start (RFC 3339).
    pub start: String,
    /// Places left.
    pub free: u32,
}

/// Appointment slots of a day for a matter, with places left.
#[utoipa::path(get, path = "/api/v1/queue/slots", tag = "queue", params(SlotQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<SlotView>), (status = 422, body = super::error::Problem)))]
pub async fn list_slots(State(state): State<AppState>, _who: Principal, QueryParams(q): QueryParams<SlotQuery>) -> ApiResult<Json<Vec<SlotView>>> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(&q.date, fmt).map_err(|_| ApiError::invalid("date: expected YYYY-MM-DD"))?;
    let matter = state.store.matter(&q.matter_code).await?.filter(|m| m.active).ok_or_else(|| ApiError::invalid("unknown matter"))?;
    let now = state.clock.now_ms();
    let cap = state.queue.settings().appointment_capacity;
    let mut out = Vec::new();
    for slot in state.queue.hours().slots(date, state.queue.settings().appointment_slot_min) {
        if slot <= now {
            continue;
        }
        let taken = state.store.count_appointments(&matter.spec.class, slot).await?;
        out.push(SlotView { start: rfc3339(slot), free: cap.saturating_sub(taken.max(0) as u32) });
    }
    Ok(Json(out))
}

/// Book an appointment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    /// The matter.
    pub matter_code: String,
    /// A slot start from `GET /api/v1/queue/slots` (RFC 3339).
    pub slot_start: String,
    /// The resident (devices and helpers).
    pub resident_id: Option<Uuid>,
}

/// Books an appointment slot: the ticket joins the queue with priority at its slot.
#[utoipa::path(post, path = "/api/v1/queue/appointments", tag = "queue", request_body = BookRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = TicketView), (status = 200, body = TicketView), (status = 409, body = super::error::Problem)))]
pub async fn book(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Body(req): Body<BookRequest>,
) -> ApiResult<(StatusCode, Json<TicketView>)> {
    let (resident_id, channel) = taker(&state, &who, req.resident_id).await?;
    let slot = time::OffsetDateTime::parse(&req.slot_start, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::invalid("slot_start: expected RFC 3339"))?;
    let take = TakeTicket {
        matter_code: req.matter_code,
        resident_id,
        taken_by: who.id,
        taken_by_role: who.role,
        channel,
        dedupe_key: idempotency_key(&who, &headers, "appointment")?,
        mode: TakeMode::Appointment(crate::domain::clock::to_millis(slot)),
        callback_phone: None,
    };
    let (t, new) = state.queue.take(take).await.map_err(take_error)?;
    if new {
        state
            .audit(Actor { id: Some(who.id), role: Some(who.role) }, "ticket.book", "ticket", t.id, serde_json::json!({"no": t.ticket_no, "slot": req.slot_start}))
            .await?;
    }
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(view(TicketStatus { ticket: t, position: None, estimated_wait_s: None }))))
}

/// Live figures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FiguresView {
    /// When (RFC 3339).
    pub at: String,
    /// Open now.
    pub open: bool,
    /// Per skill.
    pub skills: Vec<SkillFigures>,
}

/// Live queue and staffing figures per skill (supervisors).
#[utoipa::path(get, path = "/api/v1/queue/figures", tag = "queue", security(("bearer" = [])),
    responses((status = 200, body = FiguresView), (status = 403, body = super::error::Problem)))]
pub async fn figures(State(state): State<AppState>, who: Principal) -> ApiResult<Json<FiguresView>> {
    who.require(&[Role::Supervisor, Role::Admin])?;
    let now = state.clock.now_ms();
    Ok(Json(FiguresView { at: rfc3339(now), open: state.queue.hours().is_open(now), skills: state.queue.figures().await? }))
}

/// An agent's presence as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentPresenceView {
    /// Agent.
    pub agent_id: Uuid,
    /// Status.
    pub status: Presence,
    /// Break reason.
    pub reason: Option<String>,
    /// Since (RFC 3339).
    pub since: String,
}

/// Every agent's presence (supervisors).
#[utoipa::path(get, path = "/api/v1/queue/agents", tag = "queue", security(("bearer" = [])),
    responses((status = 200, body = Vec<AgentPresenceView>), (status = 403, body = super::error::Problem)))]
pub async fn agents(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Vec<AgentPresenceView>>> {
    who.require(&[Role::Supervisor, Role::Admin])?;
    Ok(Json(
        state
            .store
            .presences()
            .await?
            .into_iter()
            .map(|p| AgentPresenceView { agent_id: p.agent_id, status: p.status, reason: p.reason, since: rfc3339(p.since) })
            .collect(),
    ))
}

/// Days a ticket number belongs to (for docs): the local date of `now`.
pub fn today(now: crate::domain::clock::Millis) -> String {
    crate::domain::clock::format_date(policy::local(now).0)
}
