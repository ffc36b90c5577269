//! Sign-in: staff passwords (with lockout), residents' one-time codes, device tokens, refresh
//! and logout, and `GET /me`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{Body, Principal};
use super::people::{DeviceView, ResidentView, StaffView};
use crate::app::AppState;
use crate::auth::codes::SendError;
use crate::auth::{decoy_hash, random_code, random_token, verify_password};
use crate::domain::identity::{otp, LoginFailures, Password, PhoneNumber, Role, Username};
use crate::domain::ids::{DeviceId, ResidentId, SessionId, StaffId};
use crate::domain::people::{Actor, Resident};
use crate::store::{RotateOutcome, SessionRecord};

/// Tokens handed out at sign-in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// Access token (JWT) for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Refresh token (absent for devices, which hold a device token instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The subject's role.
    pub role: Role,
    /// The subject's id.
    pub subject: Uuid,
}

/// Staff sign-in.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffLogin {
    /// Username.
    pub username: String,
    /// Password.
    #[schema(value_type = String, format = Password)]
    pub password: Password,
}

async fn open_session(state: &AppState, subject: Uuid, role: Role) -> ApiResult<TokenPair> {
    let now = state.clock.now_ms();
    let refresh = random_token();
    let session = SessionRecord {
        id: SessionId::new(),
        subject,
        role,
        refresh_hash: state.hasher.hash("refresh", &refresh),
        created_at: now,
        expires_at: now + state.settings.refresh_ttl_days * 86_400_000,
    };
    state.store.insert_session(&session).await?;
    Ok(TokenPair {
        access_token: state.tokens.issue(subject, role, Some(session.id.0), now),
        token_type: "Bearer",
        expires_in: state.tokens.ttl_secs(),
        refresh_token: Some(refresh),
        role,
        subject,
    })
}

fn bad_credentials() -> ApiError {
    ApiError::unauthenticated("invalid-credentials", "wrong username or password")
}

/// Signs a staff member in with username and password. After 5 failures in a row the account
/// locks for a minute, doubling with each further failure (up to an hour).
#[utoipa::path(post, path = "/api/v1/auth/staff/login", tag = "auth", request_body = StaffLogin,
    responses((status = 200, body = TokenPair), (status = 401, body = super::error::Problem),
              (status = 429, description = "account locked", body = super::error::Problem)))]
pub async fn staff_login(State(state): State<AppState>, Body(req): Body<StaffLogin>) -> ApiResult<Json<TokenPair>> {
    let username = Username::parse(&req.username).map_err(|_| bad_credentials())?;
    let staff = state.store.staff_by_username(&username).await?;
    let now = state.clock.now_ms();
    let Some(staff) = staff else {
        let pw = req.password.expose().to_string();
        let _ = tokio::task::spawn_blocking(move || verify_password(&pw, decoy_hash())).await;
        return Err(bad_credentials());
    };
    let failures = LoginFailures { count: staff.failed_logins, locked_until: staff.locked_until };
    if let Some(until) = failures.locked_at(now) {
        return Err(ApiError::too_many(
            "account-locked",
            "too many failed sign-ins; try again later",
            ((until - now) as u64).div_ceil(1000),
        ));
    }
    let (pw, phc) = (req.password.expose().to_string(), staff.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &phc))
        .await
        .map_err(ApiError::internal)?;
    let actor = Actor { id: Some(staff.id.0), role: Some(staff.role) };
    if !ok || staff.disabled {
        // Counted relative to the stored count, so parallel wrong guesses each count.
        let next = state
            .store
            .count_login_failure(staff.id, now)
            .await?
            .unwrap_or_else(|| failures.after_failure(now));
        state
            .audit(actor, "staff.login.failed", "staff", staff.id, serde_json::json!({"failures": next.count}))
            .await?;
        return Err(bad_credentials());
    }
    if failures.count > 0 {
        state.store.set_login_failures(staff.id, LoginFailures::default()).await?;
    }
    state.audit(actor, "staff.login", "staff", staff.id, serde_json::json!({})).await?;
    Ok(Json(open_session(&state, staff.id.0, staff.role).await?))
}

/// Ask for a sign-in code.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OtpRequest {
    /// Mobile number.
    #[schema(value_type = String, example = "13800000001")]
    pub phone: String,
}

/// A code was sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OtpSent {
    /// Seconds the code stays valid.
    pub expires_in: i64,
    /// Seconds before another code can be asked for.
    pub resend_after: i64,
}

/// Sends a one-time sign-in code to a resident's phone (at most one a minute per phone).
#[utoipa::path(post, path = "/api/v1/auth/otp/request", tag = "auth", request_body = OtpRequest,
    responses((status = 202, body = OtpSent), (status = 429, body = super::error::Problem),
              (status = 503, description = "no code delivery configured", body = super::error::Problem)))]
pub async fn otp_request(
    State(state): State<AppState>,
    Body(req): Body<OtpRequest>,
) -> ApiResult<(StatusCode, Json<OtpSent>)> {
    let phone = PhoneNumber::parse(&req.phone)?;
    let now = state.clock.now_ms();
    let existing = state.store.otp_get(&phone).await?;
    if !otp::may_resend(existing.as_ref(), now) {
        let wait = existing.map(|c| c.sent_at + otp::RESEND_AFTER_MS - now).unwrap_or(0);
        return Err(ApiError::too_many("otp-too-soon", "a code was sent a moment ago", (wait as u64).div_ceil(1000)));
    }
    let code = random_code(b"0123456789", otp::CODE_DIGITS);
    let challenge = otp::Challenge {
        code_hash: state.hasher.hash("otp", &format!("{}:{code}", phone.expose())),
        sent_at: now,
        expires_at: now + otp::TTL_MS,
        attempts: 0,
    };
    state.store.otp_put(&phone, &challenge).await?;
    if let Err(e) = state.codes.send(&phone, &code).await {
        state.store.otp_delete(&phone).await?;
        return Err(match e {
            SendError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "otp-unavailable",
                "sign-in codes cannot be delivered on this server",
            ),
            SendError::Failed(cause) => {
                tracing::warn!(phone = %phone, %cause, "code delivery failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "otp-delivery-failed", "the code could not be sent; try again")
            }
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(OtpSent { expires_in: otp::TTL_MS / 1000, resend_after: otp::RESEND_AFTER_MS / 1000 }),
    ))
}

/// Check a sign-in code.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OtpVerify {
    /// Mobile number.
    #[schema(value_type = String)]
    pub phone: String,
    /// The 6-digit code.
    pub code: String,
}

/// Signs a resident in with the code sent to their phone; a first sign-in registers the
/// resident (profile to be completed).
#[utoipa::path(post, path = "/api/v1/auth/otp/verify", tag = "auth", request_body = OtpVerify,
    responses((status = 200, body = TokenPair), (status = 401, body = super::error::Problem)))]
pub async fn otp_verify(State(state): State<AppState>, Body(req): Body<OtpVerify>) -> ApiResult<Json<TokenPair>> {
    let phone = PhoneNumber::parse(&req.phone)?;
    if req.code.len() != otp::CODE_DIGITS || !req.code.chars().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::invalid("code must be 6 digits"));
    }
    let now = state.clock.now_ms();
    let guess = state.hasher.hash("otp", &format!("{}:{}", phone.expose(), req.code));
    // Every guess is counted before it is checked, in the same statement that checks the
    // limit: parallel guesses cannot get past the cap.
    let challenge = state.store.otp_take_attempt(&phone, otp::MAX_ATTEMPTS, now).await?;
    let expired = || ApiError::unauthenticated("otp-expired", "the code expired or was used up; ask for a new one");
    match otp::check(challenge.as_ref(), &guess, now) {
        otp::Verdict::Accepted => {}
        otp::Verdict::Wrong => return Err(ApiError::unauthenticated("otp-invalid", "wrong code")),
        otp::Verdict::Expired => return Err(expired()),
    }
    // Of two parallel right guesses only the one whose delete removes the code signs in.
    if !state.store.otp_consume(&phone, &guess).await? {
        return Err(expired());
    }
    let resident = match state.store.resident_by_phone(&phone).await? {
        Some(r) => r,
        None => {
            let r = Resident {
                id: ResidentId::new(),
                name: String::new(),
                phone: phone.clone(),
                id_number: None,
                birth_date: None,
                elderly: false,
                disabled: false,
                grid_id: None,
                created_at: now,
            };
            match state.store.insert_resident(&r).await {
                Ok(()) => r,
                // Registered concurrently by another request: use that one.
                Err(crate::store::StoreError::Conflict(_)) => {
                    state.store.resident_by_phone(&phone).await?.ok_or_else(|| ApiError::internal("resident vanished"))?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let actor = Actor { id: Some(resident.id.0), role: Some(Role::Resident) };
    state.audit(actor, "resident.login", "resident", resident.id, serde_json::json!({})).await?;
    Ok(Json(open_session(&state, resident.id.0, Role::Resident).await?))
}

/// Refresh request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from sign-in or the last refresh.
    pub refresh_token: String,
}

/// Swaps a refresh token for a new access and refresh token. Each refresh token works once;
/// presenting a used one again revokes the session (it was copied).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = super::error::Problem)))]
pub async fn refresh(State(state): State<AppState>, Body(req): Body<RefreshRequest>) -> ApiResult<Json<TokenPair>> {
    if req.refresh_token.len() > 256 {
        return Err(ApiError::unauthenticated("invalid-refresh-token", "unknown refresh token"));
    }
    let now = state.clock.now_ms();
    let presented = state.hasher.hash("refresh", &req.refresh_token);
    let fresh = random_token();
    let expires = now + state.settings.refresh_ttl_days * 86_400_000;
    match state.store.rotate_session(&presented, &state.hasher.hash("refresh", &fresh), now, expires).await? {
        RotateOutcome::Rotated(s) => Ok(Json(TokenPair {
            access_token: state.tokens.issue(s.subject, s.role, Some(s.id.0), now),
            token_type: "Bearer",
            expires_in: state.tokens.ttl_secs(),
            refresh_token: Some(fresh),
            role: s.role,
            subject: s.subject,
        })),
        RotateOutcome::Reused => {
            tracing::warn!("a used refresh token was presented again; session revoked");
            Err(ApiError::unauthenticated("refresh-reused", "this refresh token was already used; sign in again"))
        }
        RotateOutcome::Invalid => Err(ApiError::unauthenticated("invalid-refresh-token", "unknown, expired or revoked refresh token")),
    }
}

/// Ends the caller's session (its refresh token stops working).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = super::error::Problem)))]
pub async fn logout(State(state): State<AppState>, who: Principal) -> ApiResult<StatusCode> {
    if let Some(sid) = who.session {
        state.store.revoke_session(SessionId(sid), state.clock.now_ms()).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Device sign-in.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTokenRequest {
    /// The long-lived device token received at pairing.
    pub device_token: String,
}

/// Exchanges a paired device's long-lived token for an access token.
#[utoipa::path(post, path = "/api/v1/auth/device", tag = "auth", request_body = DeviceTokenRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = super::error::Problem)))]
pub async fn device_token(
    State(state): State<AppState>,
    Body(req): Body<DeviceTokenRequest>,
) -> ApiResult<Json<TokenPair>> {
    let bad = || ApiError::unauthenticated("invalid-device-token", "unknown or revoked device token");
    if req.device_token.len() > 256 {
        return Err(bad());
    }
    let now = state.clock.now_ms();
    let device = state
        .store
        .device_by_token(&state.hasher.hash("device", &req.device_token), now)
        .await?
        .ok_or_else(bad)?;
    Ok(Json(TokenPair {
        access_token: state.tokens.issue(device.id.0, Role::Device, None, now),
        token_type: "Bearer",
        expires_in: state.tokens.ttl_secs(),
        refresh_token: None,
        role: Role::Device,
        subject: device.id.0,
    }))
}

/// The signed-in subject.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Me {
    /// A staff member.
    Staff(StaffView),
    /// A resident (personal data masked).
    Resident(ResidentView),
    /// A device.
    Device(DeviceView),
}

/// Who am I?
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = super::error::Problem)))]
pub async fn me(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Me>> {
    let gone = || ApiError::unauthenticated("invalid-token", "the account no longer exists");
    let today = state.clock.now().date();
    Ok(Json(match who.role {
        Role::Resident => Me::Resident(ResidentView::of(
            &state.store.resident_by_id(ResidentId(who.id)).await?.ok_or_else(gone)?,
            today,
        )),
        Role::Device => Me::Device(DeviceView::from(&state.store.device_by_id(DeviceId(who.id)).await?.ok_or_else(gone)?)),
        _ => Me::Staff(StaffView::from(&state.store.staff_by_id(StaffId(who.id)).await?.ok_or_else(gone)?)),
    }))
}
