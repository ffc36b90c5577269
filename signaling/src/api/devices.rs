//! Device pairing: a kiosk or TV box shows a short code (and its QR code); an admin confirms
//! it; the device, polling with a secret only it knows, receives a long-lived device token,
//! which it exchanges for access tokens (`POST /auth/device`) and can rotate.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam, Principal, QueryParams};
use super::people::DeviceView;
use super::{rfc3339, Page, PageQuery};
use crate::app::AppState;
use crate::auth::{random_code, random_token};
use crate::domain::identity::Role;
use crate::domain::ids::{DeviceId, GridId, PairingId, StaffId};
use crate::domain::matter::{check_text, MAX_NAME_CHARS};
use crate::domain::people::{Actor, Device, DeviceKind};
use crate::store::{Pairing, StoreError};

/// Pairing codes avoid look-alike characters (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const CODE_LEN: usize = 8;
/// How long a code can be confirmed.
const PAIRING_TTL_MS: i64 = 10 * 60 * 1000;
/// After confirmation, how long the device may fetch its token.
const CLAIM_WINDOW_MS: i64 = 10 * 60 * 1000;

/// A device asks to be paired.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairingRequest {
    /// kiosk or tv_box.
    pub kind: DeviceKind,
    /// Where it stands, e.g. "西湖区文新街道便民服务中心 1号机".
    pub label: String,
}

/// A pairing in progress, as the device sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PairingStarted {
    /// Poll `GET /api/v1/devices/pairings/{pairing_id}` with header `X-Pairing-Secret`.
    pub pairing_id: Uuid,
    /// The code to show on screen.
    pub code: String,
    /// Secret for polling; keep it.
    pub poll_secret: String,
    /// When the code stops working (RFC 3339).
    pub expires_at: String,
    /// The link an admin opens to confirm (also in the QR code).
    pub confirm_url: String,
    /// The QR code of `confirm_url`, as SVG.
    pub qr_svg: String,
}

fn public_url(state: &AppState) -> String {
    state.settings.public_url.clone().unwrap_or_else(|| format!("http://{}", state.settings.listen))
}

/// Starts pairing a kiosk or TV box (no sign-in: the device has none yet).
#[utoipa::path(post, path = "/api/v1/devices/pairings", tag = "devices", request_body = PairingRequest,
    responses((status = 201, body = PairingStarted), (status = 422, body = super::error::Problem)))]
pub async fn start_pairing(
    State(state): State<AppState>,
    Body(req): Body<PairingRequest>,
) -> ApiResult<(StatusCode, Json<PairingStarted>)> {
    check_text("label", &req.label, true, MAX_NAME_CHARS)?;
    let now = state.clock.now_ms();
    let secret = random_token();
    for _ in 0..5 {
        let p = Pairing {
            id: PairingId::new(),
            code: random_code(CODE_ALPHABET, CODE_LEN),
            kind: req.kind,
            label: req.label.trim().to_string(),
            poll_secret_hash: state.hasher.hash("pairing", &secret),
            created_at: now,
            expires_at: now + PAIRING_TTL_MS,
            confirmed_at: None,
            device_id: None,
        };
        match state.store.insert_pairing(&p).await {
            Ok(()) => {
                let confirm_url = format!("{}/console/#/pair/{}", public_url(&state).trim_end_matches('/'), p.code);
                let qr_svg = qrcode::QrCode::new(confirm_url.as_bytes())
                    .map(|q| q.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).build())
                    .map_err(ApiError::internal)?;
                return Ok((
                    StatusCode::CREATED,
                    Json(PairingStarted {
                        pairing_id: p.id.0,
                        code: p.code,
                        poll_secret: secret,
                        expires_at: rfc3339(p.expires_at),
                        confirm_url,
                        qr_svg,
                    }),
                ));
            }
            Err(StoreError::Conflict(_)) => continue, // code taken: draw another
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal("could not draw a free pairing code"))
}

/// Pairing state, as the device polls it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PairingStatus {
    /// pending, paired or expired.
    pub status: &'static str,
    /// The device's id, once paired.
    pub device_id: Option<Uuid>,
    /// The long-lived device token, once paired. Each poll after confirmation issues a fresh
    /// one (the previous stops working), so a lost response can be recovered by polling again.
    pub device_token: Option<String>,
}

/// Polls a pairing (the device, with header `X-Pairing-Secret`).
#[utoipa::path(get, path = "/api/v1/devices/pairings/{id}", tag = "devices", params(("id" = Uuid, Path)),
    responses((status = 200, body = PairingStatus), (status = 404, body = super::error::Problem)))]
pub async fn poll_pairing(
    State(state): State<AppState>,
    PathParam(id): PathParam<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Json<PairingStatus>> {
    let secret = headers.get("x-pairing-secret").and_then(|v| v.to_str().ok()).unwrap_or("");
    let p = state.store.pairing_by_id(PairingId(id)).await?;
    // Unknown id and wrong secret look the same.
    let p = p
        .filter(|p| !secret.is_empty() && secret.len() <= 256 && p.poll_secret_hash == state.hasher.hash("pairing", secret))
        .ok_or_else(|| ApiError::not_found("pairing"))?;
    let now = state.clock.now_ms();
    let status = match (p.confirmed_at, p.device_id) {
        (Some(at), Some(device)) if now < at + CLAIM_WINDOW_MS => {
            let token = random_token();
            state.store.set_device_token(device, &state.hasher.hash("device", &token)).await.map_err(|e| match e {
                StoreError::NotFound => ApiError::not_found("device"),
                e => e.into(),
            })?;
            PairingStatus { status: "paired", device_id: Some(device.0), device_token: Some(token) }
        }
        (None, _) if now < p.expires_at => PairingStatus { status: "pending", device_id: None, device_token: None },
        _ => PairingStatus { status: "expired", device_id: None, device_token: None },
    };
    Ok(Json(status))
}

/// An admin confirms the code shown on a device.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairingConfirm {
    /// The code on the device's screen.
    pub code: String,
    /// The kind of device the admin sees (must match what the device said).
    pub kind: DeviceKind,
    /// A label to replace the device's own.
    pub label: Option<String>,
    /// The grid the device serves.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub grid_id: Option<GridId>,
}

/// Confirms a pairing code (admin); the device is created.
#[utoipa::path(post, path = "/api/v1/devices/pairings/confirm", tag = "devices", request_body = PairingConfirm,
    security(("bearer" = [])),
    responses((status = 201, body = DeviceView), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
pub async fn confirm_pairing(
    State(state): State<AppState>,
    who: Principal,
    Body(req): Body<PairingConfirm>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    who.require(&[Role::Admin])?;
    let code = req.code.trim().to_ascii_uppercase();
    if code.len() != CODE_LEN || !code.bytes().all(|b| CODE_ALPHABET.contains(&b)) {
        return Err(ApiError::invalid("code: the 8 characters shown on the device"));
    }
    if let Some(l) = &req.label {
        check_text("label", l, true, MAX_NAME_CHARS)?;
    }
    let now = state.clock.now_ms();
    let device = Device {
        id: DeviceId::new(),
        kind: req.kind,
        label: req.label.clone().unwrap_or_default(),
        grid_id: req.grid_id,
        revoked: false,
        created_at: now,
        last_seen_at: None,
    };
    let paired = state.store.confirm_pairing(&code, now, StaffId(who.id), &device).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::invalid("unknown grid"),
        e => e.into(),
    })?;
    let Some((_, device)) = paired else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "pairing-not-found", "no pending pairing with this code and kind"));
    };
    state
        .audit(Actor { id: Some(who.id), role: Some(who.role) }, "device.pair", "device", device.id, serde_json::json!({"kind": device.kind}))
        .await?;
    Ok((StatusCode::CREATED, Json(DeviceView::from(&device))))
}

/// A new device token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedToken {
    /// The new long-lived device token; the old one stops working now.
    pub device_token: String,
}

/// Rotates the calling device's long-lived token.
#[utoipa::path(post, path = "/api/v1/devices/me/token", tag = "devices", security(("bearer" = [])),
    responses((status = 200, body = RotatedToken), (status = 403, body = super::error::Problem)))]
pub async fn rotate_token(State(state): State<AppState>, who: Principal) -> ApiResult<Json<RotatedToken>> {
    who.require(&[Role::Device])?;
    let token = random_token();
    state
        .store
        .set_device_token(DeviceId(who.id), &state.hasher.hash("device", &token))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::forbidden(),
            e => e.into(),
        })?;
    state.audit(Actor { id: Some(who.id), role: Some(Role::Device) }, "device.token.rotate", "device", who.id, serde_json::json!({})).await?;
    Ok(Json(RotatedToken { device_token: token }))
}

/// Lists devices (admin).
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<DeviceView>), (status = 403, body = super::error::Problem)))]
pub async fn list_devices(
    State(state): State<AppState>,
    who: Principal,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Page<DeviceView>>> {
    who.require(&[Role::Admin])?;
    let limit = q.limit()?;
    let rows = state.store.list_devices(q.cursor, limit).await?;
    Ok(Json(Page::from_items(rows.iter().map(DeviceView::from).collect(), limit, |d: &DeviceView| d.id)))
}

/// Revokes a device (admin): its token stops working.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
pub async fn revoke_device(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<StatusCode> {
    who.require(&[Role::Admin])?;
    if !state.store.revoke_device(DeviceId(id)).await? {
        return Err(ApiError::not_found("device"));
    }
    state.audit(Actor { id: Some(who.id), role: Some(who.role) }, "device.revoke", "device", id, serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}
