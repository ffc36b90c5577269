//! Ratings (好差评) and supervisor follow-ups. A resident rates each call or case once (five
//! levels, optional tags and comment); a rating of 2 or less opens a follow-up due in N
//! working days (15 by default), which supervisors list and close with a note.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::cases::{actor, check_call, load_case, Access};
use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam, Principal, QueryParams};
use super::idempotency::{self, IdempotencyKey, JsonBytes};
use super::{rfc3339, Page, PageQuery};
use crate::app::AppState;
use crate::domain::case::{
    check_reason, follow_up_due, validate_feedback, CaseId, CaseStatus, FollowUp, FollowUpId, Rating, RatingId,
    RatingLevel, RatingSubject,
};
use crate::domain::clock::format_date;
use crate::domain::identity::Role;
use crate::domain::ids::ResidentId;
use crate::store::StoreError;

/// A rating.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRating {
    /// The case rated (exactly one of `case_id` and `call_id`).
    pub case_id: Option<Uuid>,
    /// The call rated.
    pub call_id: Option<Uuid>,
    /// 1 (非常不满意) to 5 (非常满意).
    #[schema(value_type = u8, minimum = 1, maximum = 5)]
    pub level: RatingLevel,
    /// Optional tags (at most 10, 20 characters each).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Optional comment (at most 500 characters).
    pub comment: Option<String>,
}

/// A rating as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RatingView {
    /// Id.
    pub id: Uuid,
    /// Who rated.
    pub resident_id: Uuid,
    /// The case rated.
    pub case_id: Option<Uuid>,
    /// The call rated.
    pub call_id: Option<Uuid>,
    /// The case's matter.
    pub matter_code: Option<String>,
    /// 1 to 5.
    #[schema(value_type = u8, minimum = 1, maximum = 5)]
    pub level: RatingLevel,
    /// The level's label (非常满意 ... 非常不满意).
    pub level_label_zh: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Comment.
    pub comment: Option<String>,
    /// Rated (RFC 3339).
    pub created_at: String,
    /// A follow-up was opened (ratings of 2 or less).
    pub follow_up_opened: bool,
}

impl RatingView {
    fn of(r: &Rating, follow_up_opened: bool) -> Self {
        let (case_id, call_id) = match r.subject {
            RatingSubject::Case(c) => (Some(c.0), None),
            RatingSubject::Call(c) => (None, Some(c)),
        };
        RatingView {
            id: r.id.0,
            resident_id: r.resident_id.0,
            case_id,
            call_id,
            matter_code: r.matter_code.clone(),
            level: r.level,
            level_label_zh: r.level.label_zh().to_string(),
            tags: r.tags.clone(),
            comment: r.comment.clone(),
            created_at: rfc3339(r.created_at),
            follow_up_opened,
        }
    }
}

fn same_rating(r: &Rating, req: &NewRating, comment: &Option<String>) -> bool {
    r.level == req.level && r.tags == req.tags && &r.comment == comment
}

/// Rates a case or a call (residents, once each: their own cases, and calls they were the
/// resident of). Sending the same rating again returns the first (200); a different one is
/// refused with `already-rated`. A level of 2 or less opens a follow-up for supervisors. Send
/// an `Idempotency-Key` so a retry returns the first result.
#[utoipa::path(post, path = "/api/v1/ratings", tag = "ratings", request_body = NewRating, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry return the first result")),
    responses((status = 201, body = RatingView), (status = 200, body = RatingView), (status = 403, body = super::error::Problem),
        (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem),
        (status = 422, body = super::error::Problem)))]
pub async fn create_rating(
    State(state): State<AppState>,
    who: Principal,
    key: IdempotencyKey,
    Body(req): Body<NewRating>,
) -> ApiResult<JsonBytes> {
    who.require(&[Role::Resident])?;
    let resident = ResidentId(who.id);
    let tags: Vec<String> = req.tags.iter().map(|t| t.trim().to_string()).collect();
    let comment = req.comment.as_ref().map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    validate_feedback(&tags, comment.as_deref())?;
    let req = NewRating { tags, ..req };
    let (state, who, req, comment) = (&state, &who, &req, &comment);
    idempotency::once(state, who, &key, "POST /api/v1/ratings", req, move |rating_id| async move {
        let (subject, matter_code) = match (req.case_id, req.call_id) {
            (Some(case), None) => {
                let c = load_case(state, who, case, Access::Read).await?;
                if c.status == CaseStatus::Draft {
                    return Err(ApiError::conflict("not-rateable", "a draft case cannot be rated yet"));
                }
                (RatingSubject::Case(CaseId(case)), Some(c.matter_code))
            }
            (None, Some(call)) => {
                // Only the call's own resident rates it.
                let c = check_call(state, who, call, resident).await.map_err(|e| match e.code {
                    "call-resident-mismatch" => {
                        ApiError::new(StatusCode::FORBIDDEN, "not-call-member", "only the call's resident rates it")
                    }
                    _ => e,
                })?;
                (RatingSubject::Call(call), c.matter_code)
            }
            _ => return Err(ApiError::invalid("give exactly one of case_id and call_id")),
        };
        if let Some(existing) = state.store.rating_of(resident, subject).await? {
            return existing_answer(state, &existing, req, comment).await;
        }
        let now = state.clock.now_ms();
        let rating = Rating {
            id: RatingId(rating_id),
            resident_id: resident,
            subject,
            matter_code,
            level: req.level,
            tags: req.tags.clone(),
            comment: comment.clone(),
            created_at: now,
        };
        let follow_up = req.level.needs_follow_up().then(|| {
            let (due_on, due_at) =
                follow_up_due(now, state.settings.cases.follow_up_working_days, &state.settings.cases.calendar());
            FollowUp {
                id: FollowUpId::new(),
                rating_id: rating.id,
                opened_at: now,
                due_on,
                due_at,
                closed_at: None,
                closed_by: None,
                note: None,
            }
        });
        match state.store.insert_rating(&rating, follow_up.as_ref()).await {
            Ok(()) => {}
            Err(StoreError::Conflict("duplicate")) => {
                // A concurrent first rating won.
                let existing =
                    state.store.rating_of(resident, subject).await?.ok_or_else(|| ApiError::internal("rating vanished"))?;
                return existing_answer(state, &existing, req, comment).await;
            }
            Err(e) => return Err(e.into()),
        }
        state
            .audit(
                actor(who),
                "rating.create",
                "rating",
                rating.id,
                serde_json::json!({"level": u8::from(rating.level), "subject": rating.subject,
                    "follow_up": follow_up.as_ref().map(|f| f.id)}),
            )
            .await?;
        Ok((StatusCode::CREATED, RatingView::of(&rating, follow_up.is_some())))
    })
    .await
}

async fn existing_answer(
    state: &AppState,
    existing: &Rating,
    req: &NewRating,
    comment: &Option<String>,
) -> ApiResult<(StatusCode, RatingView)> {
    if !same_rating(existing, req, comment) {
        return Err(ApiError::conflict("already-rated", "you have already rated this; a rating cannot be changed"));
    }
    let opened = state.store.follow_up_of_rating(existing.id).await?.is_some();
    Ok((StatusCode::OK, RatingView::of(existing, opened)))
}

/// Lists ratings: a resident's own, or all for supervisors.
#[utoipa::path(get, path = "/api/v1/ratings", tag = "ratings", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<RatingView>), (status = 403, body = super::error::Problem)))]
pub async fn list_ratings(
    State(state): State<AppState>,
    who: Principal,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Page<RatingView>>> {
    who.require(&[Role::Resident, Role::Supervisor])?;
    let limit = q.limit()?;
    let resident = (who.role == Role::Resident).then_some(ResidentId(who.id));
    let rows = state.store.list_ratings(resident, q.cursor, limit).await?;
    let items = rows.iter().map(|r| RatingView::of(r, r.level.needs_follow_up())).collect();
    Ok(Json(Page::from_items(items, limit, |r: &RatingView| r.id)))
}

/// A follow-up as supervisors see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FollowUpView {
    /// Id.
    pub id: Uuid,
    /// The rating that opened it.
    pub rating: RatingView,
    /// Opened (RFC 3339).
    pub opened_at: String,
    /// Due by the end of this day (`YYYY-MM-DD`, Asia/Shanghai).
    pub due_on: String,
    /// Due (RFC 3339).
    pub due_at: String,
    /// Open and past its deadline.
    pub overdue: bool,
    /// Closed (RFC 3339).
    pub closed_at: Option<String>,
    /// Closed by.
    pub closed_by: Option<Uuid>,
    /// What was done.
    pub note: Option<String>,
}

impl FollowUpView {
    fn of(f: &FollowUp, r: &Rating, now: i64) -> Self {
        FollowUpView {
            id: f.id.0,
            rating: RatingView::of(r, true),
            opened_at: rfc3339(f.opened_at),
            due_on: format_date(f.due_on),
            due_at: rfc3339(f.due_at),
            overdue: f.closed_at.is_none() && now > f.due_at,
            closed_at: f.closed_at.map(rfc3339),
            closed_by: f.closed_by,
            note: f.note.clone(),
        }
    }
}

/// Filter for follow-ups.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FollowUpQuery {
    /// Only open ones (default true).
    pub open: Option<bool>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// Lists follow-ups of low ratings (supervisors), open ones by default.
#[utoipa::path(get, path = "/api/v1/follow-ups", tag = "ratings", params(FollowUpQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<FollowUpView>), (status = 403, body = super::error::Problem)))]
pub async fn list_follow_ups(
    State(state): State<AppState>,
    who: Principal,
    QueryParams(q): QueryParams<FollowUpQuery>,
) -> ApiResult<Json<Page<FollowUpView>>> {
    who.require(&[Role::Supervisor])?;
    let limit = PageQuery { cursor: q.cursor, limit: q.limit }.limit()?;
    let rows = state.store.list_follow_ups(q.open.unwrap_or(true), q.cursor, limit).await?;
    let now = state.clock.now_ms();
    let items = rows.iter().map(|(f, r)| FollowUpView::of(f, r, now)).collect();
    Ok(Json(Page::from_items(items, limit, |f: &FollowUpView| f.id)))
}

/// Closing a follow-up.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseFollowUp {
    /// What was done (called the resident back, fixed the cause, ...).
    pub note: String,
}

/// Closes an open follow-up with a note (supervisors), exactly once.
#[utoipa::path(post, path = "/api/v1/follow-ups/{id}/close", tag = "ratings", params(("id" = Uuid, Path)),
    request_body = CloseFollowUp, security(("bearer" = [])),
    responses((status = 200, body = FollowUpView), (status = 403, body = super::error::Problem),
        (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn close_follow_up(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
    Body(req): Body<CloseFollowUp>,
) -> ApiResult<Json<FollowUpView>> {
    who.require(&[Role::Supervisor])?;
    check_reason(&req.note, true).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-reason", e.to_string()))?;
    let now = state.clock.now_ms();
    let id = FollowUpId(id);
    let Some(f) = state.store.close_follow_up(id, who.id, req.note.trim(), now).await? else {
        return match state.store.follow_up(id).await? {
            Some(_) => Err(ApiError::conflict("follow-up-closed", "the follow-up is already closed")),
            None => Err(ApiError::not_found("follow-up")),
        };
    };
    state.audit(actor(&who), "follow_up.close", "follow_up", f.id, serde_json::json!({})).await?;
    let rating = state.store.rating(f.rating_id).await?.ok_or_else(|| ApiError::internal("follow-up without its rating"))?;
    Ok(Json(FollowUpView::of(&f, &rating, now)))
}
