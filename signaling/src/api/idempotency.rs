//! `Idempotency-Key` on creates and submissions: a retry after a dropped connection gets the
//! first result, byte for byte, and changes nothing.
//!
//! The key is scoped to the caller. The first request with a key claims it in the database
//! (`INSERT .. ON CONFLICT DO NOTHING` on the primary key: exactly one concurrent request
//! wins); when it succeeds its status and body are stored, when it fails the claim is released
//! so a retry runs again. A later request with the same key and the same route and body gets
//! the stored result with `Idempotent-Replayed: true`; with another route or body it gets 422
//! `idempotency-key-reused`; while the first is still running, 409 `idempotency-in-progress`.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::Principal;
use crate::app::AppState;
use crate::store::cases::{IdemClaim, IdemRequest};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The header a replayed response carries.
pub const REPLAYED: &str = "idempotent-replayed";
/// A claim whose holder has not finished after this long is taken over.
pub const STALE_AFTER_MS: i64 = 60_000;

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get(HEADER) else { return Ok(IdempotencyKey(None)) };
        let s = v.to_str().unwrap_or("");
        if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ApiError::bad_request(
                "invalid-idempotency-key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(IdempotencyKey(Some(s.to_string())))
    }
}

/// A JSON response whose bytes were fixed once (so a replay is identical).
pub struct JsonBytes {
    status: StatusCode,
    body: String,
    replayed: bool,
}

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.replayed {
            res.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
        }
        res
    }
}

fn request_hash(route: &str, request: &impl Serialize) -> ApiResult<String> {
    let body = serde_json::to_vec(request).map_err(ApiError::internal)?;
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update(b"\n");
    h.update(&body);
    Ok(hex::encode(h.finalize()))
}

/// Runs `f` at most once per (caller, key). `f` gets the id to give a resource it creates
/// (fresh without a key; the claim's id with one, the same on a takeover of a stale claim).
pub async fn once<T, F, Fut>(
    state: &AppState,
    who: &Principal,
    key: &IdempotencyKey,
    route: &str,
    request: &impl Serialize,
    f: F,
) -> ApiResult<JsonBytes>
where
    T: Serialize,
    F: FnOnce(Uuid) -> Fut,
    Fut: Future<Output = ApiResult<(StatusCode, T)>>,
{
    let encode = |status: StatusCode, v: &T| -> ApiResult<JsonBytes> {
        Ok(JsonBytes { status, body: serde_json::to_string(v).map_err(ApiError::internal)?, replayed: false })
    };
    let Some(key) = key.0.as_deref() else {
        let (status, v) = f(Uuid::now_v7()).await?;
        return encode(status, &v);
    };
    let now = state.clock.now_ms();
    let hash = request_hash(route, request)?;
    let claim = state
        .store
        .idem_claim(&IdemRequest {
            subject: who.id,
            key,
            route,
            request_hash: &hash,
            resource_id: Uuid::now_v7(),
            now,
            stale_before: now - STALE_AFTER_MS,
        })
        .await?;
    match claim {
        IdemClaim::Claimed { resource_id } => match f(resource_id).await {
            Ok((status, v)) => {
                let out = encode(status, &v)?;
                if let Err(e) = state.store.idem_complete(who.id, key, out.status.as_u16(), &out.body).await {
                    // The work is done; a retry after the claim goes stale re-runs it with the
                    // same resource id, which finds what this attempt made (a created resource
                    // by its id; a case transition by the key on its history entry).
                    tracing::warn!(error = %e, "could not store an idempotent result");
                }
                Ok(out)
            }
            Err(e) => {
                if let Err(release) = state.store.idem_release(who.id, key).await {
                    tracing::warn!(error = %release, "could not release an idempotency claim");
                }
                Err(e)
            }
        },
        IdemClaim::Replay { status, body } => Ok(JsonBytes {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body,
            replayed: true,
        }),
        IdemClaim::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request; use a new key",
        )),
        IdemClaim::InProgress => {
            let mut e = ApiError::conflict(
                "idempotency-in-progress",
                "a request with this Idempotency-Key is still running; retry shortly",
            );
            e.retry_after = Some(1);
            Err(e)
        }
    }
}
