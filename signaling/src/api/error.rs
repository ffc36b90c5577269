//! Errors as RFC 9457 problem details. Each carries a stable `code` (also the last segment of
//! `type`); 5xx bodies are generic, the cause is logged once here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::DomainError;
use crate::store::StoreError;

/// The problem `type` prefix; the stable code follows it.
pub const PROBLEM_BASE: &str = "urn:cloud-window:problem:";

/// An RFC 9457 problem body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:cloud-window:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
    /// The stable code.
    pub code: String,
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Detail for the client (never internals).
    pub detail: String,
    /// Seconds to wait before retrying (429/503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A problem with a status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, code, detail: detail.into(), retry_after: None }
    }
    /// 400 with a code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    /// 422 invalid field.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", detail)
    }
    /// 401.
    pub fn unauthenticated(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }
    /// 403.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "your role or ownership does not allow this")
    }
    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", format!("{what} not found"))
    }
    /// 409.
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    /// 429 with Retry-After.
    pub fn too_many(code: &'static str, detail: impl Into<String>, retry_after: u64) -> Self {
        ApiError { retry_after: Some(retry_after.max(1)), ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, detail) }
    }
    /// 500: logs the cause, answers a generic body.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it was logged")
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("{PROBLEM_BASE}{}", self.code),
            title: self.title().to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_string(),
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::conflict("conflict", format!("conflict: {what}")),
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::Db(cause) => ApiError::internal(cause),
        }
    }
}

/// Result of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
