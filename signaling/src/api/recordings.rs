//! Audit recordings over REST: listing, details, playback and download (HTTP range requests),
//! verification, legal hold, and the public key verifiers need.
//!
//! Access: auditors and supervisors; agents only for calls they were members of (setting
//! `recordings_agent_access`); everyone else is refused. Every list, view, play and download
//! must carry a reason (`reason` query parameter or `X-Access-Reason` header, 3 to 500
//! characters) — refused with `reason-required` otherwise — and is appended to the audit log
//! with who, when and why.

use std::io::SeekFrom;
use std::path::PathBuf;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use recordings::{
    export_participant, verify_chain, verify_recording, Container, ParticipantId, RecordingId, Sha256Digest, Store,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam, Principal, QueryParams};
use super::{rfc3339, Page, MAX_PAGE};
use crate::app::AppState;
use crate::domain::call::MemberRole;
use crate::domain::identity::Role;
use crate::domain::people::Actor;
use crate::store::recordings::{LegalHold, RecordingFilter, RecordingRecord, RecordingState};

/// Header that may carry the access reason instead of the `reason` query parameter.
pub const REASON_HEADER: &str = "x-access-reason";

/// A legal hold as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HoldView {
    /// Why.
    pub reason: String,
    /// The auditor who set it.
    pub by: Uuid,
    /// When (RFC 3339).
    pub at: String,
}

/// A recording as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordingView {
    /// Id.
    pub id: Uuid,
    /// The recorded call.
    pub call_id: Uuid,
    /// The call's matter.
    pub matter_code: Option<String>,
    /// Status.
    pub state: RecordingState,
    /// Started (RFC 3339).
    pub started_at: String,
    /// Ended (RFC 3339).
    pub ended_at: Option<String>,
    /// Segment files.
    pub segments: u32,
    /// SHA-256 of the sealed manifest.
    pub manifest_sha256: Option<String>,
    /// Retention, days after the end.
    pub retention_days: u32,
    /// When it becomes eligible for deletion (unless on hold).
    pub retention_until: Option<String>,
    /// The legal hold, if any.
    pub legal_hold: Option<HoldView>,
    /// When it was deleted.
    pub deleted_at: Option<String>,
}

fn view(r: &RecordingRecord) -> RecordingView {
    RecordingView {
        id: r.id,
        call_id: r.call_id,
        matter_code: r.matter_code.clone(),
        state: r.state,
        started_at: rfc3339(r.started_at),
        ended_at: r.ended_at.map(rfc3339),
        segments: r.segments,
        manifest_sha256: r.manifest_sha256.clone(),
        retention_days: r.retention_days,
        retention_until: r.retention_until().map(rfc3339),
        legal_hold: r.hold.as_ref().map(|h| HoldView { reason: h.reason.clone(), by: h.by, at: rfc3339(h.at) }),
        deleted_at: r.deleted_at.map(rfc3339),
    }
}

/// A recording with its signed manifest (participants, tracks, segment hashes).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordingDetail {
    /// The recording.
    #[serde(flatten)]
    pub recording: RecordingView,
    /// The manifest as stored (`{"manifest":{..},"signature":{..}}`), absent once deleted.
    #[schema(value_type = Object)]
    pub manifest: Option<serde_json::Value>,
}

/// List filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Why you access recordings (required, or the `X-Access-Reason` header).
    pub reason: Option<String>,
    /// Only this call's recordings.
    pub call_id: Option<Uuid>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// The access reason.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReasonQuery {
    /// Why you access this recording (required, or the `X-Access-Reason` header).
    pub reason: Option<String>,
}

/// The server's recording signing key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicKeyView {
    /// Always `ed25519`.
    pub algorithm: String,
    /// First 8 bytes of SHA-256 of the key, hex (as in manifests and chain entries).
    pub key_id: String,
    /// The 32-byte public key, hex.
    pub public_key: String,
}

/// Set a legal hold.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// Why (case number, order); 3 to 500 characters.
    pub reason: String,
}

/// A verification result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyView {
    /// True when nothing is wrong.
    pub ok: bool,
    /// The report: every problem found (see docs/recordings.md).
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

fn check_reason(text: Option<&str>) -> ApiResult<String> {
    let reason = text.map(str::trim).unwrap_or("");
    let n = reason.chars().count();
    if !(3..=500).contains(&n) {
        return Err(ApiError::bad_request(
            "reason-required",
            "say why you access recordings: a `reason` query parameter or an X-Access-Reason header, 3 to 500 characters",
        ));
    }
    Ok(reason.to_string())
}

/// The reason from the query or the header.
fn access_reason(query: Option<&str>, headers: &HeaderMap) -> ApiResult<String> {
    let header = headers.get(REASON_HEADER).and_then(|v| v.to_str().ok());
    check_reason(query.or(header))
}

fn staff_roles(state: &AppState) -> Vec<Role> {
    let mut roles = vec![Role::Auditor, Role::Supervisor];
    if state.settings.recordings_agent_access {
        roles.push(Role::Agent);
    }
    roles
}

/// Loads a recording the caller may access.
async fn accessible(state: &AppState, who: &Principal, id: Uuid) -> ApiResult<RecordingRecord> {
    who.require(&staff_roles(state))?;
    let rec = state.store.recording_by_id(id).await?.ok_or_else(|| ApiError::not_found("recording"))?;
    if who.role == Role::Agent {
        let members = state.store.call_members(rec.call_id).await?;
        let own = members.iter().any(|m| m.subject == who.id && m.role == MemberRole::Agent);
        if !own {
            return Err(ApiError::forbidden());
        }
    }
    Ok(rec)
}

fn actor(who: &Principal) -> Actor {
    Actor { id: Some(who.id), role: Some(who.role) }
}

/// The server's public recording key, for anyone verifying recordings (no sign-in).
#[utoipa::path(get, path = "/api/v1/recordings/public-key", tag = "recordings",
    responses((status = 200, body = PublicKeyView)))]
pub async fn public_key(State(state): State<AppState>) -> Json<PublicKeyView> {
    Json(PublicKeyView {
        algorithm: "ed25519".into(),
        key_id: state.recorder.key_id().to_string(),
        public_key: hex::encode(state.recorder.public_key().to_bytes()),
    })
}

/// Lists recordings (auditor, supervisor; an agent sees those of their own calls). Needs a
/// reason; audited.
#[utoipa::path(get, path = "/api/v1/recordings", tag = "recordings", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<RecordingView>), (status = 400, body = super::error::Problem), (status = 403, body = super::error::Problem)))]
pub async fn list_recordings(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Page<RecordingView>>> {
    who.require(&staff_roles(&state))?;
    let reason = access_reason(q.reason.as_deref(), &headers)?;
    let limit = match q.limit.unwrap_or(50) {
        n @ 1..=MAX_PAGE => n,
        _ => return Err(ApiError::bad_request("invalid-query", "limit must be 1 to 200")),
    };
    let filter = RecordingFilter {
        call_id: q.call_id,
        member: (who.role == Role::Agent).then_some(who.id),
        after: q.cursor,
    };
    let items = state.store.list_recordings(&filter, limit).await?;
    state
        .audit(
            actor(&who),
            "recording.list",
            "recording",
            q.call_id.map(|c| format!("call:{c}")).unwrap_or_else(|| "*".into()),
            serde_json::json!({"reason": reason, "count": items.len(), "call_id": q.call_id}),
        )
        .await?;
    let views: Vec<RecordingView> = items.iter().map(view).collect();
    Ok(Json(Page::from_items(views, limit, |v| v.id)))
}

fn manifest_key(id: Uuid) -> recordings::ObjectKey {
    recordings::ObjectKey::parse(format!("recordings/{id}/manifest.json")).expect("a uuid makes a valid key")
}

/// One recording with its manifest. Needs a reason; audited.
#[utoipa::path(get, path = "/api/v1/recordings/{id}", tag = "recordings", params(("id" = Uuid, Path), ReasonQuery), security(("bearer" = [])),
    responses((status = 200, body = RecordingDetail), (status = 400, body = super::error::Problem), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
pub async fn get_recording(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(id): PathParam<Uuid>,
    QueryParams(q): QueryParams<ReasonQuery>,
) -> ApiResult<Json<RecordingDetail>> {
    let rec = accessible(&state, &who, id).await?;
    let reason = access_reason(q.reason.as_deref(), &headers)?;
    state
        .audit(actor(&who), "recording.view", "recording", id, serde_json::json!({"reason": reason, "call_id": rec.call_id}))
        .await?;
    let manifest = if rec.state == RecordingState::Deleted {
        None
    } else {
        let store = state.recorder.store().clone();
        tokio::task::spawn_blocking(move || store.get(&manifest_key(id)))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
            .and_then(|b| serde_json::from_slice(&b).ok())
    };
    Ok(Json(RecordingDetail { recording: view(&rec), manifest }))
}

/// Path of a recording participant's playback file.
#[derive(Debug, Deserialize)]
pub struct MediaPath {
    id: Uuid,
    participant: Uuid,
}

/// Plays one participant's media of a recording as one WebM file (all segments, verified
/// against the signed manifest); Matroska (`video/x-matroska`) when the video is H.264. Supports `Range: bytes=`. Needs a reason; every request is
/// audited.
#[utoipa::path(get, path = "/api/v1/recordings/{id}/participants/{participant}/media", tag = "recordings",
    params(("id" = Uuid, Path), ("participant" = Uuid, Path), ReasonQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "video/webm"), (status = 206, content_type = "video/webm"),
        (status = 400, body = super::error::Problem), (status = 403, body = super::error::Problem),
        (status = 409, body = super::error::Problem), (status = 416, body = super::error::Problem)))]
pub async fn play(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(p): PathParam<MediaPath>,
    QueryParams(q): QueryParams<ReasonQuery>,
) -> ApiResult<Response> {
    serve_media(state, who, headers, p, q, false).await
}

/// Downloads one participant's media of a recording (as `play`, as an attachment). Needs a
/// reason; audited.
#[utoipa::path(get, path = "/api/v1/recordings/{id}/participants/{participant}/download", tag = "recordings",
    params(("id" = Uuid, Path), ("participant" = Uuid, Path), ReasonQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "video/webm"), (status = 206, content_type = "video/webm"),
        (status = 400, body = super::error::Problem), (status = 403, body = super::error::Problem)))]
pub async fn download(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(p): PathParam<MediaPath>,
    QueryParams(q): QueryParams<ReasonQuery>,
) -> ApiResult<Response> {
    serve_media(state, who, headers, p, q, true).await
}

async fn serve_media(
    state: AppState,
    who: Principal,
    headers: HeaderMap,
    p: MediaPath,
    q: ReasonQuery,
    attachment: bool,
) -> ApiResult<Response> {
    let rec = accessible(&state, &who, p.id).await?;
    let reason = access_reason(q.reason.as_deref(), &headers)?;
    match rec.state {
        RecordingState::Deleted => {
            return Err(ApiError::new(StatusCode::GONE, "recording-deleted", "the recording was deleted (retention)"))
        }
        RecordingState::Recording => {
            return Err(ApiError::conflict("recording-in-progress", "the recording is still being written"))
        }
        _ => {}
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    state
        .audit(
            actor(&who),
            if attachment { "recording.download" } else { "recording.play" },
            "recording",
            p.id,
            serde_json::json!({"reason": reason, "participant": p.participant, "range": range, "call_id": rec.call_id}),
        )
        .await?;
    let (path, container) = export_file(&state, &rec, p.participant).await?;
    let size = tokio::fs::metadata(&path).await.map_err(ApiError::internal)?.len();
    let mut res_headers = HeaderMap::new();
    res_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(container.mime_type()));
    res_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    res_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if attachment {
        let v = format!("attachment; filename=\"recording-{}-{}.{}\"", p.id, p.participant, container.extension());
        if let Ok(v) = HeaderValue::from_str(&v) {
            res_headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    let (status, start, len) = match range.as_deref().map(|r| parse_range(r, size)) {
        None => (StatusCode::OK, 0, size),
        Some(Some((start, end))) => {
            let v = format!("bytes {start}-{end}/{size}");
            res_headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&v).map_err(ApiError::internal)?);
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Some(None) => {
            let mut e = ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range-not-satisfiable", "the range is outside the file")
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                e.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(e);
        }
    };
    res_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let mut file = tokio::fs::File::open(&path).await.map_err(ApiError::internal)?;
    file.seek(SeekFrom::Start(start)).await.map_err(ApiError::internal)?;
    let stream = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; left.min(64 * 1024) as usize];
        match file.read_exact(&mut buf).await {
            Ok(_) => Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), (file, left - buf_len(left)))),
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    Ok((status, res_headers, HttpBody::from_stream(stream)).into_response())
}

fn buf_len(left: u64) -> u64 {
    left.min(64 * 1024)
}

/// Parses a single `bytes=` range against a file of `size` bytes: `Some((first, last))`, or
/// `None` when unsatisfiable or malformed.
pub fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let start: u64 = a.parse().ok()?;
    if start >= size {
        return None;
    }
    let end = if b.is_empty() { size - 1 } else { b.parse::<u64>().ok()?.min(size - 1) };
    (end >= start).then_some((start, end))
}

/// The playback export of a participant and its container (WebM, `.webm`; or Matroska, `.mkv`,
/// when the video is H.264), built on first use and cached as derived data.
///
/// Nothing is served unchecked: before every use the recording must still verify (the
/// manifest is the one sealed in the chain — the hash on the recording row — its signature is
/// valid and every segment matches its hash), and a cached export must be the one built from
/// that manifest (a stamp file next to it holds the manifest hash and the export's own hash).
/// A stale or altered cache is rebuilt; a recording that no longer verifies is refused.
async fn export_file(state: &AppState, rec: &RecordingRecord, participant: Uuid) -> ApiResult<(PathBuf, Container)> {
    let id = rec.id;
    let dir = crate::recorder::cli::exports_dir(&state.recorder.config().spool);
    let stamp = dir.join(format!("{id}-{participant}.stamp"));
    let sealed = rec.manifest_sha256.clone();
    let store = state.recorder.store().clone();
    let keyring = state.recorder.keyring().clone();
    let res = tokio::task::spawn_blocking(move || -> Result<(PathBuf, Container), String> {
        let rid = RecordingId::from_uuid(id);
        let manifest = store.get(&manifest_key(id)).map_err(|e| e.to_string())?.ok_or("the manifest is missing")?;
        let manifest_sha = Sha256Digest::of(&manifest).to_string();
        let cached: Vec<(PathBuf, Container)> = [Container::WebM, Container::Matroska]
            .into_iter()
            .map(|c| (dir.join(format!("{id}-{participant}.{}", c.extension())), c))
            .collect();
        let discard = || {
            for (p, _) in &cached {
                let _ = std::fs::remove_file(p);
            }
            let _ = std::fs::remove_file(&stamp);
        };
        if sealed.as_deref().is_some_and(|s| s != manifest_sha) {
            discard();
            return Err("the manifest is not the one sealed in the chain".into());
        }
        let report = verify_recording(&store, &keyring, rid);
        if !report.is_ok() {
            discard();
            return Err(format!("{} problem(s) found", report.problems.len()));
        }
        let file_sha = |p: &std::path::Path| std::fs::File::open(p).and_then(Sha256Digest::of_reader).map(|d| d.to_string());
        if let Ok(stamped) = std::fs::read_to_string(&stamp) {
            for (path, container) in &cached {
                if let Ok(actual) = file_sha(path) {
                    if stamped == format!("{manifest_sha}\n{actual}\n") {
                        return Ok((path.clone(), *container));
                    }
                }
            }
            tracing::warn!(recording = %id, "a cached playback export did not match its recording; rebuilding it");
        }
        discard();
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let tag = Uuid::new_v4().simple();
        let tmp = dir.join(format!(".{id}-{participant}-{tag}.tmp"));
        let file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let container = match export_participant(&store, &keyring, rid, ParticipantId::from_uuid(participant), file) {
            Ok((_, summary)) => summary.container,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.to_string());
            }
        };
        let out = dir.join(format!("{id}-{participant}.{}", container.extension()));
        let export_sha = file_sha(&tmp).map_err(|e| e.to_string())?;
        let stamp_tmp = dir.join(format!(".{id}-{participant}-{tag}.stamp.tmp"));
        std::fs::write(&stamp_tmp, format!("{manifest_sha}\n{export_sha}\n")).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
        std::fs::rename(&stamp_tmp, &stamp).map_err(|e| e.to_string())?;
        Ok((out, container))
    })
    .await
    .map_err(ApiError::internal)?;
    match res {
        Ok(done) => Ok(done),
        Err(e) if e.contains("no segments") || e.contains("NoSegments") => Err(ApiError::not_found("participant media")),
        Err(e) => Err(ApiError::conflict(
            "recording-not-verifiable",
            format!("the recording does not verify and cannot be played: {e}; run verify"),
        )),
    }
}

/// Verifies one recording: manifest signature, every segment hash (auditor, supervisor).
/// Audited.
#[utoipa::path(get, path = "/api/v1/recordings/{id}/verify", tag = "recordings", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = VerifyView), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
pub async fn verify_one(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<Json<VerifyView>> {
    who.require(&[Role::Auditor, Role::Supervisor])?;
    let rec = state.store.recording_by_id(id).await?.ok_or_else(|| ApiError::not_found("recording"))?;
    if rec.state == RecordingState::Deleted {
        return Err(ApiError::new(StatusCode::GONE, "recording-deleted", "the recording was deleted; verify the chain"));
    }
    let store = state.recorder.store().clone();
    let keyring = state.recorder.keyring().clone();
    let report = tokio::task::spawn_blocking(move || verify_recording(&store, &keyring, RecordingId::from_uuid(id)))
        .await
        .map_err(ApiError::internal)?;
    let ok = report.is_ok();
    state
        .audit(actor(&who), "recording.verify", "recording", id, serde_json::json!({"ok": ok}))
        .await?;
    Ok(Json(VerifyView { ok, report: serde_json::to_value(&report).map_err(ApiError::internal)? }))
}

/// Verifies the whole chain against the head recorded in the database, and every recording
/// in it (auditor). Audited.
#[utoipa::path(get, path = "/api/v1/recording-chain/verify", tag = "recordings", security(("bearer" = [])),
    responses((status = 200, body = VerifyView), (status = 403, body = super::error::Problem)))]
pub async fn verify_all(State(state): State<AppState>, who: Principal) -> ApiResult<Json<VerifyView>> {
    who.require(&[Role::Auditor])?;
    let head = crate::recorder::cli::expected_head(state.store.as_ref()).await.map_err(ApiError::internal)?;
    let store = state.recorder.store().clone();
    let keyring = state.recorder.keyring().clone();
    let report = tokio::task::spawn_blocking(move || verify_chain(&store, &keyring, head))
        .await
        .map_err(ApiError::internal)?;
    let ok = report.is_ok();
    state.audit(actor(&who), "recording.verify_chain", "recording_chain", "chain", serde_json::json!({"ok": ok})).await?;
    Ok(Json(VerifyView { ok, report: serde_json::to_value(&report).map_err(ApiError::internal)? }))
}

/// Puts a recording on legal hold: kept past its retention until cleared (auditor). Audited.
#[utoipa::path(put, path = "/api/v1/recordings/{id}/legal-hold", tag = "recordings", params(("id" = Uuid, Path)), request_body = HoldRequest,
    security(("bearer" = [])),
    responses((status = 200, body = RecordingView), (status = 400, body = super::error::Problem), (status = 403, body = super::error::Problem)))]
pub async fn set_hold(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam<Uuid>,
    Body(req): Body<HoldRequest>,
) -> ApiResult<Json<RecordingView>> {
    who.require(&[Role::Auditor])?;
    let reason = check_reason(Some(&req.reason))?;
    let rec = state.store.recording_by_id(id).await?.ok_or_else(|| ApiError::not_found("recording"))?;
    if rec.state == RecordingState::Deleted {
        return Err(ApiError::new(StatusCode::GONE, "recording-deleted", "the recording was already deleted"));
    }
    let hold = LegalHold { reason: reason.clone(), by: who.id, at: state.clock.now_ms() };
    state.store.set_legal_hold(id, Some(&hold)).await?;
    state.audit(actor(&who), "recording.hold_set", "recording", id, serde_json::json!({"reason": reason})).await?;
    let rec = state.store.recording_by_id(id).await?.ok_or_else(|| ApiError::not_found("recording"))?;
    Ok(Json(view(&rec)))
}

/// Clears a legal hold (auditor); needs a reason. Audited.
#[utoipa::path(delete, path = "/api/v1/recordings/{id}/legal-hold", tag = "recordings", params(("id" = Uuid, Path), ReasonQuery),
    security(("bearer" = [])),
    responses((status = 200, body = RecordingView), (status = 400, body = super::error::Problem), (status = 403, body = super::error::Problem), (status = 410, body = super::error::Problem)))]
pub async fn clear_hold(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(id): PathParam<Uuid>,
    QueryParams(q): QueryParams<ReasonQuery>,
) -> ApiResult<Json<RecordingView>> {
    who.require(&[Role::Auditor])?;
    let reason = access_reason(q.reason.as_deref(), &headers)?;
    let rec = state.store.recording_by_id(id).await?.ok_or_else(|| ApiError::not_found("recording"))?;
    if rec.state == RecordingState::Deleted {
        return Err(ApiError::new(StatusCode::GONE, "recording-deleted", "the recording was already deleted"));
    }
    state.store.set_legal_hold(id, None).await?;
    state.audit(actor(&who), "recording.hold_cleared", "recording", id, serde_json::json!({"reason": reason})).await?;
    let rec = state.store.recording_by_id(id).await?.ok_or_else(|| ApiError::not_found("recording"))?;
    Ok(Json(view(&rec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }

    #[test]
    fn a_reason_is_required() {
        assert_eq!(check_reason(None).unwrap_err().code, "reason-required");
        assert_eq!(check_reason(Some("  ")).unwrap_err().code, "reason-required");
        assert_eq!(check_reason(Some("投诉复核")).unwrap(), "投诉复核");
    }
}
