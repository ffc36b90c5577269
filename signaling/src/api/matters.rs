//! The matters catalogue: anyone may browse it (residents look matters up on the TV box before
//! signing in); admins add and edit matters and classes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam, Principal, QueryParams};
use super::rfc3339;
use crate::app::AppState;
use crate::domain::identity::Role;
use crate::domain::matter::{Matter, MatterClass, MatterSpec};
use crate::domain::people::Actor;
use crate::store::StoreError;

/// A matter as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatterView {
    /// The matter and its checklist.
    #[serde(flatten)]
    pub spec: MatterSpec,
    /// Version (send it back as `expected_version` when editing).
    pub version: i64,
    /// Offered to residents.
    pub active: bool,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl From<Matter> for MatterView {
    fn from(m: Matter) -> Self {
        MatterView { spec: m.spec, version: m.version, active: m.active, updated_at: rfc3339(m.updated_at) }
    }
}

/// Lists matter classes.
#[utoipa::path(get, path = "/api/v1/matter-classes", tag = "matters", responses((status = 200, body = Vec<MatterClass>)))]
pub async fn list_classes(State(state): State<AppState>) -> ApiResult<Json<Vec<MatterClass>>> {
    Ok(Json(state.store.list_classes().await?))
}

/// Adds or renames a matter class (admin).
#[utoipa::path(post, path = "/api/v1/matter-classes", tag = "matters", request_body = MatterClass, security(("bearer" = [])),
    responses((status = 200, body = MatterClass), (status = 403, body = super::error::Problem)))]
pub async fn upsert_class(
    State(state): State<AppState>,
    who: Principal,
    Body(c): Body<MatterClass>,
) -> ApiResult<Json<MatterClass>> {
    who.require(&[Role::Admin])?;
    c.validate()?;
    state.store.upsert_class(&c).await?;
    state
        .audit(Actor { id: Some(who.id), role: Some(who.role) }, "matter_class.upsert", "matter_class", &c.code, serde_json::json!({}))
        .await?;
    Ok(Json(c))
}

/// Filter for the matter list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MatterFilter {
    /// Only this class.
    pub class: Option<String>,
}

/// Lists matters with their intake checklists.
#[utoipa::path(get, path = "/api/v1/matters", tag = "matters", params(MatterFilter), responses((status = 200, body = Vec<MatterView>)))]
pub async fn list_matters(
    State(state): State<AppState>,
    QueryParams(f): QueryParams<MatterFilter>,
) -> ApiResult<Json<Vec<MatterView>>> {
    if f.class.as_ref().is_some_and(|c| c.len() > 40 || c.contains('\0')) {
        return Err(ApiError::bad_request("invalid-query", "class must be a matter class code"));
    }
    let ms = state.store.list_matters(f.class.as_deref()).await?;
    Ok(Json(ms.into_iter().map(Into::into).collect()))
}

/// One matter with its intake checklist.
#[utoipa::path(get, path = "/api/v1/matters/{code}", tag = "matters", params(("code" = String, Path)),
    responses((status = 200, body = MatterView), (status = 404, body = super::error::Problem)))]
pub async fn get_matter(State(state): State<AppState>, PathParam(code): PathParam<String>) -> ApiResult<Json<MatterView>> {
    if code.len() > 32 || code.contains('\0') {
        return Err(ApiError::not_found("matter"));
    }
    let m = state.store.matter(&code).await?.ok_or_else(|| ApiError::not_found("matter"))?;
    Ok(Json(m.into()))
}

fn matter_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict("duplicate") => ApiError::conflict("matter-exists", "a matter with this code exists"),
        StoreError::Conflict("reference") => ApiError::invalid("unknown matter class"),
        StoreError::Conflict(_) => {
            ApiError::conflict("version-mismatch", "the matter was changed meanwhile; reload and retry")
        }
        StoreError::NotFound => ApiError::not_found("matter"),
        e => e.into(),
    }
}

/// Adds a matter (admin).
#[utoipa::path(post, path = "/api/v1/matters", tag = "matters", request_body = MatterSpec, security(("bearer" = [])),
    responses((status = 201, body = MatterView), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn create_matter(
    State(state): State<AppState>,
    who: Principal,
    Body(spec): Body<MatterSpec>,
) -> ApiResult<(StatusCode, Json<MatterView>)> {
    who.require(&[Role::Admin])?;
    spec.validate()?;
    let m = state.store.insert_matter(&spec, state.clock.now_ms()).await.map_err(matter_conflict)?;
    state
        .audit(Actor { id: Some(who.id), role: Some(who.role) }, "matter.create", "matter", &spec.code, serde_json::json!({}))
        .await?;
    Ok((StatusCode::CREATED, Json(m.into())))
}

/// An edit of a matter.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatterUpdate {
    /// The new spec (its code must equal the path's).
    pub matter: MatterSpec,
    /// Offered to residents.
    #[serde(default = "yes")]
    pub active: bool,
    /// Apply only if the matter still has this version.
    pub expected_version: Option<i64>,
}

fn yes() -> bool {
    true
}

/// Edits a matter (admin); optimistic concurrency with `expected_version`.
#[utoipa::path(put, path = "/api/v1/matters/{code}", tag = "matters", params(("code" = String, Path)), request_body = MatterUpdate,
    security(("bearer" = [])),
    responses((status = 200, body = MatterView), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn update_matter(
    State(state): State<AppState>,
    who: Principal,
    PathParam(code): PathParam<String>,
    Body(req): Body<MatterUpdate>,
) -> ApiResult<Json<MatterView>> {
    who.require(&[Role::Admin])?;
    if req.matter.code != code {
        return Err(ApiError::invalid("the matter's code must equal the code in the path"));
    }
    req.matter.validate()?;
    let m = state
        .store
        .update_matter(&req.matter, req.active, req.expected_version, state.clock.now_ms())
        .await
        .map_err(matter_conflict)?;
    state
        .audit(
            Actor { id: Some(who.id), role: Some(who.role) },
            "matter.update",
            "matter",
            &code,
            serde_json::json!({"version": m.version, "active": m.active}),
        )
        .await?;
    Ok(Json(m.into()))
}
