//! The recordings storage (issue 4) on SQLite and PostgreSQL: rows, retention due dates, legal
//! holds, the chain head, and agents' view limited to their own calls.

use std::sync::Arc;

use integration_tests::{database_url, skip_without_postgres, temp_dir, Backend};
use signaling::domain::call::{Call, CallState, Member, MemberRole};
use signaling::store::recordings::{LegalHold, RecordingFilter, RecordingRecord, RecordingState, StoredChainHead};
use signaling::store::{self, Store};
use uuid::Uuid;

async fn open(backend: Backend) -> Option<Arc<dyn Store>> {
    if skip_without_postgres(backend) {
        return None;
    }
    let dir = temp_dir("recstore");
    let url = database_url(backend, &dir).await.expect("database url");
    Some(store::connect(&url).await.expect("store opens and migrates"))
}

const DAY: i64 = 86_400_000;

fn record(call: Uuid, started: i64) -> RecordingRecord {
    RecordingRecord {
        id: Uuid::now_v7(),
        call_id: call,
        matter_code: Some("social_insurance".into()),
        state: RecordingState::Recording,
        started_at: started,
        ended_at: None,
        segments: 0,
        manifest_sha256: None,
        retention_days: 30,
        hold: None,
        deleted_at: None,
    }
}

async fn call_with_agent(s: &dyn Store, agent: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    let call = Call {
        id,
        opened_by: agent,
        resident_id: None,
        matter_code: None,
        ticket_id: None,
        state: CallState::Open,
        created_at: 0,
        ended_at: None,
        end_reason: None,
        ended_by: None,
    };
    let m = Member {
        call_id: id,
        participant_id: Uuid::new_v4(),
        subject: agent,
        role: MemberRole::Agent,
        display_name: "A".into(),
        added_at: 0,
        added_by: None,
    };
    s.insert_call(&call, &[m]).await.unwrap();
    id
}

async fn recordings_retention_holds_and_the_chain_head(s: Arc<dyn Store>) {
    let (agent1, agent2) = (Uuid::new_v4(), Uuid::new_v4());
    let c1 = call_with_agent(s.as_ref(), agent1).await;
    let c2 = call_with_agent(s.as_ref(), agent2).await;
    let r1 = record(c1, 1_000);
    let r2 = record(c2, 2_000);
    s.insert_recording(&r1).await.unwrap();
    s.insert_recording(&r2).await.unwrap();
    assert_eq!(s.recording_by_id(r1.id).await.unwrap().as_ref(), Some(&r1));
    s.finish_recording(r1.id, RecordingState::Complete, 10_000, 3, "ab").await.unwrap();
    s.finish_recording(r2.id, RecordingState::Interrupted, 20_000, 1, "cd").await.unwrap();
    let got = s.recording_by_id(r1.id).await.unwrap().unwrap();
    assert_eq!((got.state, got.ended_at, got.segments, got.manifest_sha256.as_deref()), (RecordingState::Complete, Some(10_000), 3, Some("ab")));
    assert_eq!(got.retention_until(), Some(10_000 + 30 * DAY));

    // Agents see their own calls' recordings only.
    let mine = s.list_recordings(&RecordingFilter { member: Some(agent1), ..Default::default() }, 50).await.unwrap();
    assert_eq!(mine.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r1.id]);
    let all = s.list_recordings(&RecordingFilter::default(), 50).await.unwrap();
    assert_eq!(all.len(), 2);
    let page = s.list_recordings(&RecordingFilter { after: Some(all[0].id), ..Default::default() }, 50).await.unwrap();
    assert_eq!(page.len(), 1);
    let by_call = s.list_recordings(&RecordingFilter { call_id: Some(c2), ..Default::default() }, 50).await.unwrap();
    assert_eq!(by_call[0].id, r2.id);

    // Retention: due after ended + 30 days, unless held.
    assert!(s.recordings_past_retention(10_000 + 30 * DAY, 10).await.unwrap().is_empty());
    let due = s.recordings_past_retention(20_001 + 30 * DAY, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    let hold = LegalHold { reason: "court order".into(), by: Uuid::new_v4(), at: 5 };
    s.set_legal_hold(r1.id, Some(&hold)).await.unwrap();
    assert_eq!(s.recording_by_id(r1.id).await.unwrap().unwrap().hold, Some(hold));
    let due = s.recordings_past_retention(20_001 + 30 * DAY, 10).await.unwrap();
    assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r2.id]);
    s.set_legal_hold(r1.id, None).await.unwrap();
    s.mark_recording_deleted(r2.id, 99).await.unwrap();
    let due = s.recordings_past_retention(20_001 + 30 * DAY, 10).await.unwrap();
    assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r1.id], "deleted ones are not due again");
    assert!(s.set_legal_hold(Uuid::new_v4(), None).await.is_err());

    // The chain head.
    assert_eq!(s.chain_head().await.unwrap(), None);
    s.set_chain_head(&StoredChainHead { seq: 0, hash: "00".into() }, 1).await.unwrap();
    s.set_chain_head(&StoredChainHead { seq: 1, hash: "11".into() }, 2).await.unwrap();
    assert_eq!(s.chain_head().await.unwrap(), Some(StoredChainHead { seq: 1, hash: "11".into() }));
}

mod sqlite {
    #[tokio::test]
    async fn recordings_retention_holds_and_the_chain_head() {
        if let Some(s) = super::open(integration_tests::Backend::Sqlite).await {
            super::recordings_retention_holds_and_the_chain_head(s).await;
        }
    }
}

mod postgres {
    #[tokio::test]
    async fn recordings_retention_holds_and_the_chain_head() {
        if let Some(s) = super::open(integration_tests::Backend::Postgres).await {
            super::recordings_retention_holds_and_the_chain_head(s).await;
        }
    }
}
