//! Request extractors that answer problem details: JSON bodies, path and query parameters, and
//! the authenticated principal.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::tokens::TokenError;
use crate::domain::identity::Role;

/// A JSON body; malformed, mistyped, unknown-field, oversize and wrong content-type bodies get
/// a problem response.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime_guess_free::Mime>().ok())
            .is_some_and(|m| m.is_json());
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "the request body is larger than allowed")
            } else {
                ApiError::bad_request("unreadable-body", clip(&rej.body_text()))
            }
        })?;
        // Two steps, so that valid JSON of the wrong shape is told apart from broken JSON.
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::bad_request("malformed-json", "the body is not valid JSON"))?;
        if !value.is_object() {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", "the body must be a JSON object"));
        }
        // Deserialize from the bytes, not the parsed value: that also refuses duplicated keys.
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", clip(&e.to_string())))
    }
}

/// Just enough media-type parsing to accept `application/json` and `application/*+json`
/// (with parameters such as `charset`), case-insensitively.
mod mime_guess_free {
    pub struct Mime(String);
    impl std::str::FromStr for Mime {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            Ok(Mime(s.split(';').next().unwrap_or("").trim().to_ascii_lowercase()))
        }
    }
    impl Mime {
        pub fn is_json(&self) -> bool {
            self.0 == "application/json" || (self.0.starts_with("application/") && self.0.ends_with("+json"))
        }
    }
}

/// Keeps error details short (they may echo input).
fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

/// Path parameters, with a problem response when they do not parse (e.g. a bad UUID).
pub struct PathParam<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid-path", clip(&e.body_text())))
    }
}

/// Query parameters, with a problem response when they do not parse.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid-query", clip(&e.body_text())))
    }
}

/// The caller, from a valid `Authorization: Bearer <access token>`.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    /// Staff, resident or device id.
    pub id: Uuid,
    /// Role.
    pub role: Role,
    /// Sign-in session.
    pub session: Option<Uuid>,
}

impl Principal {
    /// Refuses (403) unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthenticated("unauthenticated", "sign in and send a bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t))
            .ok_or_else(|| ApiError::unauthenticated("invalid-token", "expected `Authorization: Bearer <token>`"))?;
        match state.tokens.verify(token.trim(), state.clock.now_ms()) {
            Ok(c) => Ok(Principal { id: c.sub, role: c.role, session: c.sid }),
            Err(TokenError::Expired) => {
                Err(ApiError::unauthenticated("token-expired", "the access token has expired; refresh it"))
            }
            Err(TokenError::Invalid) => Err(ApiError::unauthenticated("invalid-token", "the token is not valid")),
        }
    }
}
