//! Staff accounts, residents and grids. Personal data leaves the server masked.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam, Principal, QueryParams};
use super::{rfc3339, Page, PageQuery};
use crate::app::AppState;
use crate::auth::hash_password;
use crate::domain::identity::{IdNumber, Password, PhoneNumber, Role, Username};
use crate::domain::ids::{GridId, ResidentId, StaffId};
use crate::domain::matter::{check_text, MAX_NAME_CHARS};
use crate::domain::people::{Actor, Device, DeviceKind, Grid, Resident, Staff};
use crate::domain::DomainError;

const STAFF_VIEWERS: &[Role] = &[Role::Admin, Role::Supervisor];
const RESIDENT_VIEWERS: &[Role] = &[Role::Agent, Role::Supervisor, Role::Admin];

fn actor(who: &Principal) -> Actor {
    Actor { id: Some(who.id), role: Some(who.role) }
}

/// A staff account as shown (never the password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StaffView {
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: StaffId,
    /// Username.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Matter classes served.
    pub skills: Vec<String>,
    /// Grid served (helpers).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub grid_id: Option<GridId>,
    /// Disabled.
    pub disabled: bool,
    /// Created (RFC 3339).
    pub created_at: String,
}

impl From<&Staff> for StaffView {
    fn from(s: &Staff) -> Self {
        StaffView {
            id: s.id,
            username: s.username.as_str().to_string(),
            display_name: s.display_name.clone(),
            role: s.role,
            skills: s.skills.clone(),
            grid_id: s.grid_id,
            disabled: s.disabled,
            created_at: rfc3339(s.created_at),
        }
    }
}

/// A resident as shown: phone and ID number masked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResidentView {
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: ResidentId,
    /// Name.
    pub name: String,
    /// Masked phone (`138****0001`).
    pub phone_masked: String,
    /// Masked ID number (`330106********123X`).
    pub id_number_masked: Option<String>,
    /// Birth date (`YYYY-MM-DD`).
    pub birth_date: Option<String>,
    /// Registered as elderly.
    pub elderly: bool,
    /// Registered as disabled.
    pub disabled: bool,
    /// Priority in the queue (60+, elderly or disabled).
    pub priority: bool,
    /// Grid.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub grid_id: Option<GridId>,
    /// Registered (RFC 3339).
    pub created_at: String,
}

impl ResidentView {
    /// The view of a resident on `today`.
    pub fn of(r: &Resident, today: time::Date) -> Self {
        ResidentView {
            id: r.id,
            name: r.name.clone(),
            phone_masked: r.phone.masked(),
            id_number_masked: r.id_number.as_ref().map(IdNumber::masked),
            birth_date: r.birth_date.map(crate::domain::clock::format_date),
            elderly: r.elderly,
            disabled: r.disabled,
            priority: r.has_priority(today),
            grid_id: r.grid_id,
            created_at: rfc3339(r.created_at),
        }
    }
}

/// A device as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    /// Id.
    pub id: Uuid,
    /// Kind.
    pub kind: DeviceKind,
    /// Label.
    pub label: String,
    /// Grid.
    pub grid_id: Option<Uuid>,
    /// Revoked.
    pub revoked: bool,
    /// Paired (RFC 3339).
    pub created_at: String,
    /// Last sign-in (RFC 3339).
    pub last_seen_at: Option<String>,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        DeviceView {
            id: d.id.0,
            kind: d.kind,
            label: d.label.clone(),
            grid_id: d.grid_id.map(|g| g.0),
            revoked: d.revoked,
            created_at: rfc3339(d.created_at),
            last_seen_at: d.last_seen_at.map(rfc3339),
        }
    }
}

/// A new staff account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStaff {
    /// Username (3–32 of a-z 0-9 . _ -).
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// agent, helper, supervisor, auditor or admin.
    pub role: Role,
    /// Initial password (10–128 characters).
    #[schema(value_type = String, format = Password)]
    pub password: String,
    /// Matter classes served (agents).
    #[serde(default)]
    pub skills: Vec<String>,
    /// Grid (helpers).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub grid_id: Option<GridId>,
}

/// Creates a staff account (admin).
#[utoipa::path(post, path = "/api/v1/staff", tag = "people", request_body = NewStaff, security(("bearer" = [])),
    responses((status = 201, body = StaffView), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn create_staff(
    State(state): State<AppState>,
    who: Principal,
    Body(req): Body<NewStaff>,
) -> ApiResult<(StatusCode, Json<StaffView>)> {
    who.require(&[Role::Admin])?;
    if !req.role.is_staff() {
        return Err(ApiError::invalid("role must be agent, helper, supervisor, auditor or admin"));
    }
    let username = Username::parse(&req.username)?;
    check_text("display_name", &req.display_name, true, MAX_NAME_CHARS)?;
    let password = Password::new_checked(req.password)?;
    if req.skills.len() > 50 {
        return Err(DomainError::invalid("skills", "at most 50").into());
    }
    let classes = state.store.list_classes().await?;
    if let Some(bad) = req.skills.iter().find(|s| !classes.iter().any(|c| &c.code == *s)) {
        return Err(ApiError::invalid(format!("unknown matter class in skills: {}", bad.chars().take(40).collect::<String>())));
    }
    let hash = tokio::task::spawn_blocking(move || hash_password(password.expose()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let staff = Staff {
        id: StaffId::new(),
        username,
        display_name: req.display_name,
        role: req.role,
        skills: req.skills,
        grid_id: req.grid_id,
        password_hash: hash,
        failed_logins: 0,
        locked_until: None,
        disabled: false,
        created_at: state.clock.now_ms(),
    };
    state.store.insert_staff(&staff).await.map_err(|e| match e {
        crate::store::StoreError::Conflict("duplicate") => ApiError::conflict("username-taken", "that username is taken"),
        crate::store::StoreError::Conflict(_) => ApiError::invalid("unknown grid"),
        e => e.into(),
    })?;
    state
        .audit(actor(&who), "staff.create", "staff", staff.id, serde_json::json!({"role": staff.role, "username": staff.username.as_str()}))
        .await?;
    Ok((StatusCode::CREATED, Json(StaffView::from(&staff))))
}

/// Lists staff accounts (admin, supervisor).
#[utoipa::path(get, path = "/api/v1/staff", tag = "people", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<StaffView>), (status = 403, body = super::error::Problem)))]
pub async fn list_staff(
    State(state): State<AppState>,
    who: Principal,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Page<StaffView>>> {
    who.require(STAFF_VIEWERS)?;
    let limit = q.limit()?;
    let rows = state.store.list_staff(q.cursor, limit).await?;
    let items = rows.iter().map(StaffView::from).collect();
    Ok(Json(Page::from_items(items, limit, |s: &StaffView| s.id.0)))
}

/// One staff account (admin, supervisor, or the account itself).
#[utoipa::path(get, path = "/api/v1/staff/{id}", tag = "people", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = StaffView), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
pub async fn get_staff(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<Json<StaffView>> {
    if who.id != id {
        who.require(STAFF_VIEWERS)?;
    }
    let s = state.store.staff_by_id(StaffId(id)).await?.ok_or_else(|| ApiError::not_found("staff"))?;
    Ok(Json(StaffView::from(&s)))
}

/// A resident registered by staff.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResident {
    /// Full name.
    pub name: String,
    /// Mobile number.
    pub phone: String,
    /// ID number (18 characters).
    pub id_number: Option<String>,
    /// Birth date `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    /// Registered as elderly.
    #[serde(default)]
    pub elderly: bool,
    /// Registered as disabled.
    #[serde(default)]
    pub disabled: bool,
    /// Grid of residence.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub grid_id: Option<GridId>,
}

fn parse_birth_date(s: &str, today: time::Date) -> Result<time::Date, ApiError> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, fmt).map_err(|_| ApiError::invalid("birth_date must be YYYY-MM-DD"))?;
    if d > today || d.year() < 1880 {
        return Err(ApiError::invalid("birth_date is out of range"));
    }
    Ok(d)
}

fn resident_conflict(e: crate::store::StoreError) -> ApiError {
    match e {
        crate::store::StoreError::Conflict("duplicate") => {
            ApiError::conflict("resident-exists", "a resident with this phone or ID number exists")
        }
        crate::store::StoreError::Conflict(_) => ApiError::invalid("unknown grid"),
        e => e.into(),
    }
}

/// Registers a resident (agent, admin), e.g. at a counter or for a proxy case.
#[utoipa::path(post, path = "/api/v1/residents", tag = "people", request_body = NewResident, security(("bearer" = [])),
    responses((status = 201, body = ResidentView), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn create_resident(
    State(state): State<AppState>,
    who: Principal,
    Body(req): Body<NewResident>,
) -> ApiResult<(StatusCode, Json<ResidentView>)> {
    who.require(&[Role::Agent, Role::Admin])?;
    let today = state.clock.now().date();
    check_text("name", &req.name, true, MAX_NAME_CHARS)?;
    let r = Resident {
        id: ResidentId::new(),
        name: req.name.trim().to_string(),
        phone: PhoneNumber::parse(&req.phone)?,
        id_number: req.id_number.as_deref().map(IdNumber::parse).transpose()?,
        birth_date: req.birth_date.as_deref().map(|s| parse_birth_date(s, today)).transpose()?,
        elderly: req.elderly,
        disabled: req.disabled,
        grid_id: req.grid_id,
        created_at: state.clock.now_ms(),
    };
    state.store.insert_resident(&r).await.map_err(resident_conflict)?;
    state
        .audit(actor(&who), "resident.create", "resident", r.id, serde_json::json!({"phone": r.phone.masked()}))
        .await?;
    Ok((StatusCode::CREATED, Json(ResidentView::of(&r, today))))
}

/// Lists residents, masked (agent, supervisor, admin).
#[utoipa::path(get, path = "/api/v1/residents", tag = "people", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<ResidentView>), (status = 403, body = super::error::Problem)))]
pub async fn list_residents(
    State(state): State<AppState>,
    who: Principal,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Page<ResidentView>>> {
    who.require(RESIDENT_VIEWERS)?;
    let limit = q.limit()?;
    let today = state.clock.now().date();
    let rows = state.store.list_residents(q.cursor, limit).await?;
    let items = rows.iter().map(|r| ResidentView::of(r, today)).collect();
    Ok(Json(Page::from_items(items, limit, |r: &ResidentView| r.id.0)))
}

/// One resident: the resident themselves, or an agent, supervisor or admin. Helpers will see
/// residents they hold a live delegation for (proxy issue); until then they are refused.
#[utoipa::path(get, path = "/api/v1/residents/{id}", tag = "people", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ResidentView), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
pub async fn get_resident(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<Json<ResidentView>> {
    let own = who.role == Role::Resident && who.id == id;
    if !own {
        who.require(RESIDENT_VIEWERS)?;
    }
    let r = state.store.resident_by_id(ResidentId(id)).await?.ok_or_else(|| ApiError::not_found("resident"))?;
    if !own {
        state.audit(actor(&who), "resident.view", "resident", r.id, serde_json::json!({})).await?;
    }
    Ok(Json(ResidentView::of(&r, state.clock.now().date())))
}

/// Profile fields a resident may change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    /// Full name.
    pub name: Option<String>,
    /// ID number.
    pub id_number: Option<String>,
    /// Birth date `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    /// Grid of residence.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub grid_id: Option<GridId>,
}

/// Completes or corrects the signed-in resident's own profile. An ID number the profile cannot
/// take (held by another resident, or its birth date differs from the profile's) is refused
/// with `id-number-refused`, which does not say which.
#[utoipa::path(patch, path = "/api/v1/residents/me", tag = "people", request_body = ProfileUpdate, security(("bearer" = [])),
    responses((status = 200, body = ResidentView), (status = 403, body = super::error::Problem),
              (status = 422, description = "invalid field, or `id-number-refused`", body = super::error::Problem)))]
pub async fn update_my_profile(
    State(state): State<AppState>,
    who: Principal,
    Body(req): Body<ProfileUpdate>,
) -> ApiResult<Json<ResidentView>> {
    who.require(&[Role::Resident])?;
    let today = state.clock.now().date();
    let mut r = state.store.resident_by_id(ResidentId(who.id)).await?.ok_or_else(|| ApiError::not_found("resident"))?;
    if let Some(name) = req.name {
        check_text("name", &name, true, MAX_NAME_CHARS)?;
        r.name = name.trim().to_string();
    }
    let new_id = req.id_number.as_deref().map(IdNumber::parse).transpose()?;
    if let Some(b) = req.birth_date {
        r.birth_date = Some(parse_birth_date(&b, today)?);
    }
    if req.grid_id.is_some() {
        r.grid_id = req.grid_id;
    }
    let changes_id = new_id.is_some() && new_id != r.id_number;
    if let Some(id) = new_id {
        r.id_number = Some(id);
    }
    // An ID number this profile cannot take is refused with one answer whatever the reason
    // (it disagrees with the birth date, or another resident holds it), so the answer does
    // not tell whether a number is registered here. The refusal is audited.
    let refused = || ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "id-number-refused",
        "this ID number cannot be recorded on your profile; have it checked at a service counter",
    );
    let mismatch = match (&r.id_number, r.birth_date) {
        (Some(id), Some(born)) => id.birth_date().is_some_and(|d| d != born),
        _ => false,
    };
    let refused_id = if changes_id && mismatch {
        true
    } else {
        match state.store.update_resident(&r).await {
            Ok(()) => false,
            Err(crate::store::StoreError::Conflict("duplicate")) if changes_id => true,
            Err(e) => return Err(resident_conflict(e)),
        }
    };
    if refused_id {
        let masked = r.id_number.as_ref().map(IdNumber::masked);
        state
            .audit(actor(&who), "resident.profile.id_refused", "resident", r.id, serde_json::json!({"id_number": masked}))
            .await?;
        return Err(refused());
    }
    state.audit(actor(&who), "resident.profile.update", "resident", r.id, serde_json::json!({})).await?;
    Ok(Json(ResidentView::of(&r, today)))
}

/// Lists grids (any staff).
#[utoipa::path(get, path = "/api/v1/grids", tag = "people", security(("bearer" = [])),
    responses((status = 200, body = Vec<Grid>), (status = 403, body = super::error::Problem)))]
pub async fn list_grids(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Vec<Grid>>> {
    if !who.role.is_staff() {
        return Err(ApiError::forbidden());
    }
    Ok(Json(state.store.list_grids().await?))
}

/// A new grid.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrid {
    /// Code, e.g. `XH-WL-012`.
    pub code: String,
    /// Name.
    pub name: String,
}

/// Adds a grid (admin).
#[utoipa::path(post, path = "/api/v1/grids", tag = "people", request_body = NewGrid, security(("bearer" = [])),
    responses((status = 201, body = Grid), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
pub async fn create_grid(
    State(state): State<AppState>,
    who: Principal,
    Body(req): Body<NewGrid>,
) -> ApiResult<(StatusCode, Json<Grid>)> {
    who.require(&[Role::Admin])?;
    let code_ok = (2..=32).contains(&req.code.len())
        && req.code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
    if !code_ok {
        return Err(ApiError::invalid("code: 2-32 of A-Z, 0-9, '-'"));
    }
    check_text("name", &req.name, true, MAX_NAME_CHARS)?;
    let g = Grid { id: GridId::new(), code: req.code, name: req.name };
    state.store.insert_grid(&g).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => ApiError::conflict("grid-exists", "a grid with this code exists"),
        e => e.into(),
    })?;
    state.audit(actor(&who), "grid.create", "grid", g.id, serde_json::json!({"code": g.code})).await?;
    Ok((StatusCode::CREATED, Json(g)))
}
