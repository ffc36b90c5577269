//! Documents of a case: resumable chunked upload, magic-byte checks, SHA-256, duplicates,
//! video frames and thumbnails.
//!
//! Protocol (see docs/cases.md): `POST .../documents` declares size and content type →
//! `PUT .../content` with `Upload-Offset: n` and the next bytes (repeat) → `HEAD .../content`
//! tells the offset after a dropped connection → `POST .../finish` with the SHA-256 checks
//! size, hash and magic bytes and stores the document. Chunk routes have their own body limit
//! ([`MAX_CHUNK_BYTES`]), not the JSON one.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::cases::{actor, check_call, load_case, matter_of, Access, DocumentView};
use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam, Principal};
use super::idempotency::{self, IdempotencyKey, JsonBytes};
use crate::app::AppState;
use crate::domain::case::{Case, Document, DocumentFormat, DocumentId, DocumentSource, DocumentStatus};
use crate::domain::identity::Role;
use crate::store::blobs::{BlobStore, FsBlobStore};
use crate::store::cases::FinishOutcome;

/// Largest chunk one PUT may carry.
pub const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Most documents one case may hold (a 200-page batch and then some).
pub const MAX_DOCUMENTS_PER_CASE: usize = 1000;
/// Longest side of a thumbnail, pixels.
pub const THUMBNAIL_PX: u32 = 240;
/// The offset header (as in the tus protocol).
pub const UPLOAD_OFFSET: &str = "upload-offset";
/// The declared size header on HEAD.
pub const UPLOAD_LENGTH: &str = "upload-length";

/// Where document bytes are kept. Local files under the data directory for now; object
/// storage can implement [`BlobStore`] later.
pub fn blobs(state: &AppState) -> FsBlobStore {
    FsBlobStore::in_data_dir(&state.settings.data_dir)
}

fn blob_key(d: &Document) -> String {
    format!("{}/{}", d.case_id, d.id)
}

fn thumb_key(d: &Document) -> String {
    format!("{}/{}.thumb.jpg", d.case_id, d.id)
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::internal(format!("document storage: {e}"))
}

async fn load_doc(state: &AppState, c: &Case, doc: Uuid) -> ApiResult<Document> {
    match state.store.document(DocumentId(doc)).await? {
        Some(d) if d.case_id == c.id => Ok(d),
        _ => Err(ApiError::not_found("document")),
    }
}

fn offset_response(status: StatusCode, d: &Document) -> Response {
    let mut res = status.into_response();
    let h = res.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(d.received));
    h.insert(UPLOAD_LENGTH, HeaderValue::from(d.size));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn mismatch(current: i64) -> Response {
    let mut res = ApiError::conflict(
        "offset-mismatch",
        format!("the upload is at offset {current}; send the bytes from there"),
    )
    .into_response();
    res.headers_mut().insert(UPLOAD_OFFSET, HeaderValue::from(current));
    res
}

/// A document about to be uploaded.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDocument {
    /// `image/jpeg`, `image/png` or `application/pdf` (checked against the bytes at finish).
    pub content_type: String,
    /// Total size in bytes.
    pub size: i64,
    /// The checklist item it is for.
    pub item_key: Option<String>,
    /// `upload` (default) or `video_frame` (agents: a frame grabbed from the call's video).
    #[serde(default = "upload")]
    pub source: DocumentSource,
    /// The call a video frame was captured in (required for `video_frame`).
    pub call_id: Option<Uuid>,
}

fn upload() -> DocumentSource {
    DocumentSource::Upload
}

/// Starts a document upload (the case's resident or an agent, while the case is open).
#[utoipa::path(post, path = "/api/v1/cases/{id}/documents", tag = "documents", params(("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry return the first result")),
    request_body = NewDocument, security(("bearer" = [])),
    responses((status = 201, body = DocumentView), (status = 403, body = super::error::Problem),
        (status = 409, body = super::error::Problem), (status = 413, body = super::error::Problem),
        (status = 415, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn create_document(
    State(state): State<AppState>,
    who: Principal,
    key: IdempotencyKey,
    PathParam(id): PathParam<Uuid>,
    Body(req): Body<NewDocument>,
) -> ApiResult<JsonBytes> {
    let c = load_case(&state, &who, id, Access::Write).await?;
    let route = format!("POST /api/v1/cases/{id}/documents");
    let (state, who, req, c) = (&state, &who, &req, &c);
    idempotency::once(state, who, &key, &route, req, move |doc_id| async move {
        if !c.status.accepts_material() {
            return Err(ApiError::conflict("case-closed", "the case is decided; documents can no longer be added"));
        }
        let format = DocumentFormat::from_mime(&req.content_type).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-document-type",
                "documents are JPEG, PNG or PDF",
            )
        })?;
        let max = state.settings.cases.max_document_bytes as i64;
        if req.size <= 0 || req.size > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "document-too-large",
                format!("a document is 1 to {max} bytes"),
            ));
        }
        if let Some(item) = &req.item_key {
            let matter = matter_of(state, c).await?;
            if !matter.spec.checklist.iter().any(|i| &i.key == item) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown-checklist-item",
                    "item_key is not an item of the matter's checklist",
                ));
            }
        }
        if req.source == DocumentSource::VideoFrame {
            if who.role != Role::Agent {
                return Err(ApiError::forbidden());
            }
            if req.call_id.is_none() {
                return Err(ApiError::invalid("a video frame needs the call_id it was captured in"));
            }
        }
        if let Some(call) = req.call_id {
            // The resident's call, and (for frames) one the agent was in.
            check_call(state, who, call, c.resident_id).await?;
        }
        if state.store.list_documents(c.id).await?.len() >= MAX_DOCUMENTS_PER_CASE {
            return Err(ApiError::conflict("too-many-documents", "the case holds the most documents allowed"));
        }
        let d = Document {
            id: DocumentId(doc_id),
            case_id: c.id,
            item_key: req.item_key.clone(),
            source: req.source,
            call_id: req.call_id,
            format,
            size: req.size,
            received: 0,
            sha256: None,
            status: DocumentStatus::Uploading,
            invalid_reason: None,
            created_by: who.id,
            created_at: state.clock.now_ms(),
            finished_at: None,
        };
        match state.store.insert_document(&d).await {
            Ok(()) | Err(crate::store::StoreError::Conflict("duplicate")) => {}
            Err(e) => return Err(e.into()),
        }
        let d = state.store.document(d.id).await?.ok_or_else(|| ApiError::internal("created document vanished"))?;
        state
            .audit(
                actor(who),
                "document.create",
                "case",
                c.id,
                serde_json::json!({"document": d.id, "source": d.source, "size": d.size, "item": d.item_key, "call_id": d.call_id}),
            )
            .await?;
        Ok((StatusCode::CREATED, DocumentView::from(&d)))
    })
    .await
}

/// Appends a chunk at `Upload-Offset` (which must equal the current offset; otherwise 409
/// `offset-mismatch` with the current offset in the header). Answers 204 with the new offset.
#[utoipa::path(put, path = "/api/v1/cases/{id}/documents/{doc}/content", tag = "documents",
    params(("id" = Uuid, Path), ("doc" = Uuid, Path), ("Upload-Offset" = i64, Header, description = "where these bytes start")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"), security(("bearer" = [])),
    responses((status = 204, description = "stored; `Upload-Offset` is the new offset"),
        (status = 409, body = super::error::Problem), (status = 413, body = super::error::Problem)))]
pub async fn put_chunk(
    State(state): State<AppState>,
    who: Principal,
    PathParam((id, doc)): PathParam<(Uuid, Uuid)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let c = load_case(&state, &who, id, Access::Write).await?;
    let d = load_doc(&state, &c, doc).await?;
    let offset: i64 = headers
        .get(UPLOAD_OFFSET)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|o| *o >= 0)
        .ok_or_else(|| ApiError::bad_request("missing-upload-offset", "send Upload-Offset: <bytes already sent>"))?;
    if d.status != DocumentStatus::Uploading {
        return Err(ApiError::conflict("upload-finished", "the upload is finished"));
    }
    if offset != d.received {
        return Ok(mismatch(d.received));
    }
    let end = offset + body.len() as i64;
    if end > d.size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "chunk-exceeds-size",
            format!("the document was declared as {} bytes", d.size),
        ));
    }
    if body.is_empty() {
        return Ok(offset_response(StatusCode::NO_CONTENT, &d));
    }
    // Bytes first, then the offset: the offset never claims bytes that are not on disk.
    blobs(&state).write_part(&blob_key(&d), offset as u64, &body).await.map_err(io_error)?;
    if !state.store.advance_upload(d.id, offset, end).await? {
        let now = state.store.document(d.id).await?.ok_or_else(|| ApiError::not_found("document"))?;
        return Ok(mismatch(now.received));
    }
    Ok(offset_response(StatusCode::NO_CONTENT, &Document { received: end, ..d }))
}

/// The current offset of an upload (`Upload-Offset`, `Upload-Length`): where to resume.
#[utoipa::path(head, path = "/api/v1/cases/{id}/documents/{doc}/content", tag = "documents",
    params(("id" = Uuid, Path), ("doc" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, description = "`Upload-Offset` and `Upload-Length` headers"), (status = 404, description = "unknown")))]
pub async fn upload_offset(
    State(state): State<AppState>,
    who: Principal,
    PathParam((id, doc)): PathParam<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    let c = load_case(&state, &who, id, Access::Read).await?;
    let d = load_doc(&state, &c, doc).await?;
    Ok(offset_response(StatusCode::OK, &d))
}

/// The bytes of a finished document.
#[utoipa::path(get, path = "/api/v1/cases/{id}/documents/{doc}/content", tag = "documents",
    params(("id" = Uuid, Path), ("doc" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, description = "the document", content_type = "application/octet-stream"),
        (status = 409, body = super::error::Problem)))]
pub async fn download(
    State(state): State<AppState>,
    who: Principal,
    PathParam((id, doc)): PathParam<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    let c = load_case(&state, &who, id, Access::Read).await?;
    let d = load_doc(&state, &c, doc).await?;
    if d.status == DocumentStatus::Uploading {
        return Err(ApiError::conflict("upload-incomplete", "the upload is not finished"));
    }
    let bytes = blobs(&state).read(&blob_key(&d)).await.map_err(io_error)?;
    if who.role != Role::Resident {
        state.audit(actor(&who), "document.view", "case", c.id, serde_json::json!({"document": d.id})).await?;
    }
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(d.format.mime())),
            (header::CACHE_CONTROL, HeaderValue::from_static("private, no-store")),
        ],
        bytes,
    )
        .into_response())
}

/// One document with its offset and state.
#[utoipa::path(get, path = "/api/v1/cases/{id}/documents/{doc}", tag = "documents",
    params(("id" = Uuid, Path), ("doc" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = DocumentView), (status = 404, body = super::error::Problem)))]
pub async fn get_document(
    State(state): State<AppState>,
    who: Principal,
    PathParam((id, doc)): PathParam<(Uuid, Uuid)>,
) -> ApiResult<Json<DocumentView>> {
    let c = load_case(&state, &who, id, Access::Read).await?;
    let d = load_doc(&state, &c, doc).await?;
    Ok(Json(DocumentView::from(&d)))
}

/// Completion of an upload.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishUpload {
    /// SHA-256 of the whole document, hex.
    pub sha256: String,
}

/// Finishes an upload: checks the size, the SHA-256 (a mismatch resets the upload to 0) and
/// the magic bytes (a content type that does not match the bytes is refused with
/// `content-type-mismatch`, unknown bytes with `unsupported-document-type`; both discard the
/// upload), refuses the same bytes twice in one case (`duplicate-document`), then stores the
/// document durably.
#[utoipa::path(post, path = "/api/v1/cases/{id}/documents/{doc}/finish", tag = "documents",
    params(("id" = Uuid, Path), ("doc" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry return the first result")),
    request_body = FinishUpload, security(("bearer" = [])),
    responses((status = 200, body = DocumentView), (status = 409, body = super::error::Problem),
        (status = 415, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn finish_upload(
    State(state): State<AppState>,
    who: Principal,
    key: IdempotencyKey,
    PathParam((id, doc)): PathParam<(Uuid, Uuid)>,
    Body(req): Body<FinishUpload>,
) -> ApiResult<JsonBytes> {
    let c = load_case(&state, &who, id, Access::Write).await?;
    let route = format!("POST /api/v1/cases/{id}/documents/{doc}/finish");
    let (state, who, req, c) = (&state, &who, &req, &c);
    idempotency::once(state, who, &key, &route, req, move |_| async move {
        let want = req.sha256.trim().to_ascii_lowercase();
        if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::invalid("sha256 must be 64 hex digits"));
        }
        let d = load_doc(state, c, doc).await?;
        match d.status {
            DocumentStatus::Uploading => {}
            _ if d.sha256.as_deref() == Some(want.as_str()) => return Ok((StatusCode::OK, DocumentView::from(&d))),
            _ => return Err(ApiError::conflict("upload-finished", "the upload is finished")),
        }
        if d.received != d.size {
            return Err(ApiError::conflict(
                "upload-incomplete",
                format!("{} of {} bytes received; resume at offset {}", d.received, d.size, d.received),
            ));
        }
        let store = blobs(state);
        let key = blob_key(&d);
        let info = store.inspect_part(&key).await.map_err(io_error)?;
        if info.size != d.size as u64 || info.sha256 != want {
            // Start over: the bytes on the server are not the ones the client meant.
            store.discard_part(&key).await.map_err(io_error)?;
            state.store.advance_upload(d.id, d.received, 0).await?;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "checksum-mismatch",
                "the bytes received do not have this SHA-256; the upload was reset to offset 0",
            ));
        }
        match DocumentFormat::sniff(&info.head) {
            None => {
                discard(state, &store, &key, &d).await?;
                audit_refusal(state, who, c, &d, "unsupported").await?;
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-document-type",
                    "the bytes are not JPEG, PNG or PDF; the upload was discarded",
                ));
            }
            Some(f) if f != d.format => {
                discard(state, &store, &key, &d).await?;
                audit_refusal(state, who, c, &d, "content-type-mismatch").await?;
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "content-type-mismatch",
                    format!("declared {} but the bytes are {}; the upload was discarded", d.format.mime(), f.mime()),
                ));
            }
            Some(_) => {}
        }
        store.commit_part(&key).await.map_err(io_error)?;
        match state.store.finish_document(d.id, &want, state.clock.now_ms()).await? {
            FinishOutcome::Finished(done) => {
                state
                    .audit(
                        actor(who),
                        "document.finish",
                        "case",
                        c.id,
                        serde_json::json!({"document": done.id, "sha256": want, "size": done.size}),
                    )
                    .await?;
                Ok((StatusCode::OK, DocumentView::from(&done)))
            }
            FinishOutcome::Duplicate(existing) => {
                // The committed copy goes; the existing document stays.
                store.delete(&key).await.map_err(io_error)?;
                state.store.discard_upload(d.id).await?;
                Err(ApiError::conflict(
                    "duplicate-document",
                    format!("the case already holds these bytes as document {existing}; the upload was discarded"),
                ))
            }
            FinishOutcome::NotUploading => {
                let now = load_doc(state, c, doc).await?;
                if now.sha256.as_deref() == Some(want.as_str()) {
                    Ok((StatusCode::OK, DocumentView::from(&now)))
                } else {
                    Err(ApiError::conflict("upload-finished", "the upload is finished"))
                }
            }
        }
    })
    .await
}

async fn discard(state: &AppState, store: &FsBlobStore, key: &str, d: &Document) -> ApiResult<()> {
    store.discard_part(key).await.map_err(io_error)?;
    state.store.discard_upload(d.id).await?;
    Ok(())
}

async fn audit_refusal(state: &AppState, who: &Principal, c: &Case, d: &Document, why: &str) -> ApiResult<()> {
    state
        .audit(
            actor(who),
            "document.refused",
            "case",
            c.id,
            serde_json::json!({"document": d.id, "declared": d.format.mime(), "why": why}),
        )
        .await?;
    Ok(())
}

/// A JPEG thumbnail of an image document (made on first request, then kept), for the
/// console's page strip.
#[utoipa::path(get, path = "/api/v1/cases/{id}/documents/{doc}/thumbnail", tag = "documents",
    params(("id" = Uuid, Path), ("doc" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, description = "a JPEG at most 240 px on its longest side", content_type = "image/jpeg"),
        (status = 404, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn thumbnail(
    State(state): State<AppState>,
    who: Principal,
    PathParam((id, doc)): PathParam<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    let c = load_case(&state, &who, id, Access::Read).await?;
    let d = load_doc(&state, &c, doc).await?;
    if !d.format.is_image() || d.status == DocumentStatus::Uploading {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no-thumbnail", "only finished images have thumbnails"));
    }
    let store = blobs(&state);
    let jpeg = match store.read(&thumb_key(&d)).await {
        Ok(b) => b,
        Err(_) => {
            let bytes = store.read(&blob_key(&d)).await.map_err(io_error)?;
            let jpeg = tokio::task::spawn_blocking(move || make_thumbnail(&bytes))
                .await
                .map_err(ApiError::internal)?
                .map_err(|_| {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "undecodable-image", "the image cannot be decoded")
                })?;
            store.put(&thumb_key(&d), &jpeg).await.map_err(io_error)?;
            jpeg
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600")),
        ],
        jpeg,
    )
        .into_response())
}

/// Decodes an image and encodes a JPEG thumbnail at most [`THUMBNAIL_PX`] on its longest side.
pub fn make_thumbnail(bytes: &[u8]) -> Result<Vec<u8>, image::ImageError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    // Scans are big; phone photos bigger still. Refuse decompression bombs.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(20_000);
    limits.max_image_height = Some(20_000);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let img = reader.decode()?;
    let thumb = img.thumbnail(THUMBNAIL_PX, THUMBNAIL_PX).to_rgb8();
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
    thumb.write_with_encoder(enc)?;
    Ok(out)
}

/// The chunk routes, with their own body limit (the JSON limit does not apply to them).
pub fn chunk_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(put_chunk, upload_offset, download))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_CHUNK_BYTES))
}
