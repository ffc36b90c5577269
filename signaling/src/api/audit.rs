//! Reading the append-only audit log (auditors and admins).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use uuid::Uuid;

use super::error::ApiResult;
use super::extract::{Principal, QueryParams};
use super::{rfc3339, Page, PageQuery};
use crate::app::AppState;
use crate::domain::identity::Role;
use crate::domain::people::{Actor, AuditEntry};

/// An audit entry as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    /// Id.
    pub id: Uuid,
    /// When (RFC 3339).
    pub at: String,
    /// Who (absent for the system).
    pub actor_id: Option<Uuid>,
    /// Their role.
    pub actor_role: Option<Role>,
    /// What.
    pub action: String,
    /// Kind of object.
    pub target_kind: String,
    /// Which object.
    pub target_id: String,
    /// Details.
    pub detail: serde_json::Value,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        AuditView {
            id: e.id.0,
            at: rfc3339(e.at),
            actor_id: e.actor.id,
            actor_role: e.actor.role,
            action: e.action,
            target_kind: e.target_kind,
            target_id: e.target_id,
            detail: e.detail,
        }
    }
}

/// Reads the audit log, oldest first (auditor, admin). Reading it is itself logged.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<AuditView>), (status = 403, body = super::error::Problem)))]
pub async fn list_audit(
    State(state): State<AppState>,
    who: Principal,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Page<AuditView>>> {
    who.require(&[Role::Auditor, Role::Admin])?;
    let limit = q.limit()?;
    let rows = state.store.list_audit(q.cursor, limit).await?;
    state
        .audit(Actor { id: Some(who.id), role: Some(who.role) }, "audit.read", "audit_log", "-", serde_json::json!({"cursor": q.cursor}))
        .await?;
    Ok(Json(Page::from_items(rows.into_iter().map(AuditView::from).collect(), limit, |a: &AuditView| a.id)))
}
