//! The HTTP transport: REST + JSON under `/api/v1`, problem details, the OpenAPI document at
//! `/openapi.json`, health endpoints. Each feature module owns its handlers; domain rules and
//! storage are called, not written, here.

pub mod audit;
pub mod auth;
pub mod calls;
pub mod cases;
pub mod devices;
pub mod documents;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod matters;
pub mod people;
pub mod queue;
pub mod ratings;
pub mod recordings;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::clock::{to_datetime, Millis};
use error::ApiError;

/// Largest page size for list endpoints.
pub const MAX_PAGE: u32 = 200;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cloud-window API",
        description = "Remote video and assisted (proxy) handling of government services. Errors are RFC 9457 problem details with a stable `code`."
    ),
    components(schemas(error::Problem)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The OpenAPI document and the API routes, before state and layers.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::staff_login))
        .routes(routes!(auth::otp_request))
        .routes(routes!(auth::otp_verify))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::device_token))
        .routes(routes!(auth::me))
        .routes(routes!(devices::start_pairing))
        .routes(routes!(devices::poll_pairing))
        .routes(routes!(devices::confirm_pairing))
        .routes(routes!(devices::rotate_token))
        .routes(routes!(devices::list_devices))
        .routes(routes!(devices::revoke_device))
        .routes(routes!(matters::list_classes, matters::upsert_class))
        .routes(routes!(matters::list_matters, matters::create_matter))
        .routes(routes!(matters::get_matter, matters::update_matter))
        .routes(routes!(people::create_staff, people::list_staff))
        .routes(routes!(people::get_staff))
        .routes(routes!(people::create_resident, people::list_residents))
        .routes(routes!(people::get_resident))
        .routes(routes!(people::update_my_profile))
        .routes(routes!(people::list_grids, people::create_grid))
        .routes(routes!(audit::list_audit))
        .routes(routes!(calls::open_call))
        .routes(routes!(calls::get_call))
        .routes(routes!(calls::invite))
        .routes(routes!(calls::end_call))
        .routes(routes!(calls::call_events))
        .routes(routes!(queue::take_ticket, queue::my_tickets))
        .routes(routes!(queue::get_ticket))
        .routes(routes!(queue::cancel_ticket))
        .routes(routes!(queue::request_callback))
        .routes(routes!(queue::ticket_events))
        .routes(routes!(queue::list_slots))
        .routes(routes!(queue::book))
        .routes(routes!(queue::figures))
        .routes(routes!(queue::agents))
        .routes(routes!(cases::create_case, cases::list_cases))
        .routes(routes!(cases::get_case))
        .routes(routes!(cases::attach_call))
        .routes(routes!(cases::set_answers))
        .routes(routes!(cases::submit_case))
        .routes(routes!(cases::review_case))
        .routes(routes!(cases::return_rates))
        .routes(routes!(documents::create_document))
        .routes(routes!(documents::get_document))
        .routes(routes!(documents::finish_upload))
        .routes(routes!(documents::thumbnail))
        .merge(documents::chunk_routes())
        .routes(routes!(ratings::create_rating, ratings::list_ratings))
        .routes(routes!(ratings::list_follow_ups))
        .routes(routes!(ratings::close_follow_up))
        .routes(routes!(recordings::public_key))
        .routes(routes!(recordings::list_recordings))
        .routes(routes!(recordings::get_recording))
        .routes(routes!(recordings::play))
        .routes(routes!(recordings::download))
        .routes(routes!(recordings::verify_one))
        .routes(routes!(recordings::verify_all))
        .routes(routes!(recordings::set_hold, recordings::clear_hold))
        .routes(routes!(crate::ws::ws_handler))
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// The whole router with its layers.
pub fn router(state: AppState) -> axum::Router {
    let api = axum::Router::from(api_routes());
    let request_id = HeaderName::from_static("x-request-id");
    let max_body = state.settings.max_body_bytes;
    axum::Router::new()
        .merge(api)
        // Static files, deliberately not in the OpenAPI document (docs/api.md): the agent
        // console under /console/ and the browser SDK module under /sdk/js/.
        .merge(agent_console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "method not allowed here")
}

/// The answer of the health endpoints.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (liveness); `ready`, `draining` or `database-unavailable` (readiness).
    pub status: &'static str,
    /// The storage backend (`sqlite` or `postgres`), when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
}

/// Liveness: the process is up and serving. Never checks dependencies.
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "alive", body = Health)))]
pub async fn livez() -> Json<Health> {
    Json(Health { status: "ok", database: None })
}

/// Readiness: 200 while the database answers; 503 while draining after SIGTERM or when the
/// database is down (load balancers stop sending traffic).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", body = Health),
              (status = 503, description = "draining or database unavailable", body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let health = |status| Json(Health { status, database: None });
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, health("draining"));
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(Health { status: "ready", database: Some(state.store.backend()) })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, health("database-unavailable"))
        }
    }
}

/// This document: every endpoint of the server, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(|| serde_json::to_value(openapi()).unwrap_or_default()).clone())
}

/// RFC 3339 text for a stored time.
pub fn rfc3339(ms: Millis) -> String {
    to_datetime(ms).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Cursor pagination parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<uuid::Uuid>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

impl PageQuery {
    /// The page size, checked.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit.unwrap_or(50) {
            n @ 1..=MAX_PAGE => Ok(n),
            _ => Err(ApiError::bad_request("invalid-query", "limit must be 1 to 200")),
        }
    }
}

/// A page of results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<uuid::Uuid>,
}

impl<T> Page<T> {
    /// A page from items fetched with `limit`, using `key` for the cursor.
    pub fn from_items(items: Vec<T>, limit: u32, key: impl Fn(&T) -> uuid::Uuid) -> Self {
        let next_cursor = if items.len() as u32 == limit { items.last().map(key) } else { None };
        Page { items, next_cursor }
    }
}
