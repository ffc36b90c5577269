//! The retention sweeper: deletes recordings past their retention period (`ended + retention
//! days`, the matter's or the default) that are not on legal hold. Each deletion first appends
//! a tombstone to the chain (so the deletion is on record even if removing files is
//! interrupted), then removes the files from the spool and the object store, records the new
//! chain head, marks the row deleted and writes an audit entry.

use std::sync::{Arc, PoisonError};

use recordings::{DeletionReason, RecordingId};
use time::OffsetDateTime;

use super::{stored_head, Shared};
use crate::domain::people::{Actor, AuditEntry};

/// Sweeps every `sweep_every` until aborted.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(shared.config.sweep_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = sweep_once(&shared).await {
            tracing::error!(error = %e, "retention sweep failed; retried at the next one");
        }
    }
}

/// One sweep; returns how many recordings were deleted.
pub(crate) async fn sweep_once(shared: &Arc<Shared>) -> anyhow::Result<usize> {
    let now = shared.clock.now_ms();
    let due = shared.db.recordings_past_retention(now, 100).await?;
    let mut deleted = 0;
    for r in due {
        let detail = format!(
            "retention of {} days{} ended",
            r.retention_days,
            r.matter_code.as_deref().map(|m| format!(" (matter {m})")).unwrap_or_default()
        );
        let s = shared.clone();
        let id = r.id;
        let d = detail.clone();
        let head = tokio::task::spawn_blocking(move || {
            let mut chain = s.chain.lock().unwrap_or_else(PoisonError::into_inner);
            chain.delete_recording(RecordingId::from_uuid(id), DeletionReason::RetentionExpired, &d, OffsetDateTime::now_utc())
        })
        .await?;
        let head = match head {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, recording = %id, "could not delete an expired recording");
                continue;
            }
        };
        shared.db.set_chain_head(&stored_head(&head), now).await?;
        shared.db.mark_recording_deleted(id, now).await?;
        super::cli::remove_exports(&shared.config.spool, id);
        shared
            .db
            .append_audit(&AuditEntry {
                id: Default::default(),
                at: now,
                actor: Actor::SYSTEM,
                action: "recording.deleted".into(),
                target_kind: "recording".into(),
                target_id: id.to_string(),
                detail: serde_json::json!({"reason": "retention_expired", "detail": detail, "call_id": r.call_id}),
            })
            .await?;
        tracing::info!(recording = %id, "deleted a recording past retention (tombstoned)");
        deleted += 1;
    }
    Ok(deleted)
}
