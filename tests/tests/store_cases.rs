//! The storage suite for cases (issue 6): the same stories on SQLite and PostgreSQL
//! (PostgreSQL when `TEST_POSTGRES_URL` is set; `.ci/run` sets it).

use std::sync::Arc;

use integration_tests::{database_url, skip_without_postgres, temp_dir, Backend};
use signaling::domain::case::{
    Answers, Case, CaseAction, CaseEvent, CaseEventId, CaseId, CaseStatus, Document, DocumentFormat, DocumentId,
    DocumentSource, DocumentStatus, FollowUp, FollowUpId, Rating, RatingId, RatingLevel, RatingSubject,
};
use signaling::domain::call::{Call, CallState, Member, MemberRole};
use signaling::domain::identity::{PhoneNumber, Role};
use signaling::domain::ids::ResidentId;
use signaling::domain::people::Resident;
use signaling::store::cases::{CaseFilter, FinishOutcome, IdemClaim, IdemRequest, Transition};
use signaling::store::{self, Store, StoreError};
use uuid::Uuid;

async fn open(backend: Backend) -> Option<Arc<dyn Store>> {
    if skip_without_postgres(backend) {
        return None;
    }
    let dir = temp_dir("store-cases");
    let url = database_url(backend, &dir).await.expect("database url");
    let s = store::connect(&url).await.expect("store opens and migrates");
    store::seed_catalogue(s.as_ref(), 1000).await.expect("catalogue");
    Some(s)
}

integration_tests::both_backends!(
    a_case_and_its_history_round_trip_and_filter,
    a_transition_applies_exactly_once_under_concurrency,
    a_return_marks_documents_invalid_and_counts_for_the_return_rate,
    upload_offsets_advance_only_from_where_they_are,
    the_same_bytes_become_a_document_once_per_case,
    an_idempotency_key_is_claimed_exactly_once_under_concurrency,
    a_stale_claim_is_taken_over_with_the_same_resource_id,
    one_rating_per_resident_and_subject_with_its_follow_up,
    a_follow_up_closes_exactly_once_under_concurrency,
    calls_link_to_a_case_once_each,
    a_keyed_transition_is_found_by_its_key_and_applies_once,
);

/// A call between a new agent and the resident.
async fn call_of(s: &Arc<dyn Store>, r: ResidentId, at: i64) -> (Uuid, Uuid) {
    let agent = Uuid::now_v7();
    let call = Call {
        id: Uuid::now_v7(),
        opened_by: agent,
        resident_id: Some(r.0),
        matter_code: None,
        ticket_id: None,
        state: CallState::Open,
        created_at: at,
        ended_at: None,
        end_reason: None,
        ended_by: None,
    };
    let member = |subject, role| Member {
        call_id: call.id,
        participant_id: Uuid::now_v7(),
        subject,
        role,
        display_name: "x".into(),
        added_at: at,
        added_by: None,
    };
    s.insert_call(&call, &[member(agent, MemberRole::Agent), member(r.0, MemberRole::Resident)]).await.unwrap();
    (call.id, agent)
}

async fn calls_link_to_a_case_once_each(s: Arc<dyn Store>) {
    let r = resident(&s, "13700000021").await;
    let (first, agent) = call_of(&s, r, 1500).await;
    // A case opened in a call is linked to it at creation, in the same transaction.
    let mut c = new_case(&s, r, "MI-003").await;
    c.id = CaseId::new();
    c.call_id = Some(first);
    s.insert_case(&c, &event(c.id, 2000, CaseAction::Create, None, CaseStatus::Draft)).await.unwrap();
    let links = s.case_calls(c.id).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].call_id, links[0].attached_by, links[0].started_at, links[0].ended_at), (first, c.created_by, 1500, None));
    // A second call: linked once, however often it is asked (also concurrently).
    let (second, _) = call_of(&s, r, 5000).await;
    let tries = (0..6).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.attach_call(c.id, second, 6000, agent).await.unwrap() })
    });
    let added: Vec<bool> = futures_util::future::join_all(tries).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(added.iter().filter(|a| **a).count(), 1, "{added:?}");
    s.end_call(second, 7000, "hung_up", Some(agent)).await.unwrap();
    let links = s.case_calls(c.id).await.unwrap();
    assert_eq!(links.iter().map(|l| l.call_id).collect::<Vec<_>>(), vec![first, second]);
    assert_eq!((links[1].attached_at, links[1].ended_at), (6000, Some(7000)));
    // Unknown calls and cases are reference conflicts; a case opened in an unknown call is not stored.
    assert!(matches!(s.attach_call(c.id, Uuid::now_v7(), 1, agent).await, Err(StoreError::Conflict("reference"))));
    assert!(matches!(s.attach_call(CaseId::new(), first, 1, agent).await, Err(StoreError::Conflict("reference"))));
    let mut ghost = c.clone();
    ghost.id = CaseId::new();
    ghost.call_id = Some(Uuid::now_v7());
    let e = s.insert_case(&ghost, &event(ghost.id, 1, CaseAction::Create, None, CaseStatus::Draft)).await;
    assert!(matches!(e, Err(StoreError::Conflict("reference"))), "{e:?}");
    assert!(s.case_by_id(ghost.id).await.unwrap().is_none());
}

async fn a_keyed_transition_is_found_by_its_key_and_applies_once(s: Arc<dyn Store>) {
    let r = resident(&s, "13700000022").await;
    let c = new_case(&s, r, "MI-003").await;
    let mut ev = event(c.id, 3000, CaseAction::Submit, Some(CaseStatus::Draft), CaseStatus::Submitted);
    let actor = ev.actor_id.unwrap();
    let t = Transition { expected_version: 1, to: CaseStatus::Submitted, event: ev.clone(), invalidate: vec![], idem_key: Some("k-1".into()) };
    let after = s.transition_case(c.id, &t).await.unwrap();
    assert_eq!(s.case_event_by_key(c.id, actor, "k-1").await.unwrap().map(|e| e.id), Some(ev.id));
    // Another actor's key, another key: nothing.
    assert!(s.case_event_by_key(c.id, Uuid::now_v7(), "k-1").await.unwrap().is_none());
    assert!(s.case_event_by_key(c.id, actor, "k-2").await.unwrap().is_none());
    // The same key cannot write a second entry, even at the right version.
    ev.id = CaseEventId::new();
    let again = Transition { expected_version: after.version, event: ev, ..t };
    assert!(matches!(s.transition_case(c.id, &again).await, Err(StoreError::Conflict("duplicate"))));
    let now = s.case_by_id(c.id).await.unwrap().unwrap();
    assert_eq!((now.version, s.case_events(c.id).await.unwrap().len()), (after.version, 2));
}

#[tokio::test]
async fn case_events_are_append_only_on_sqlite() {
    case_events_are_append_only(Backend::Sqlite).await
}

#[tokio::test]
async fn case_events_are_append_only_on_postgresql() {
    case_events_are_append_only(Backend::Postgres).await
}

/// The trigger refuses UPDATE and DELETE on the history, whoever asks (plain SQL here).
async fn case_events_are_append_only(backend: Backend) {
    if skip_without_postgres(backend) {
        return;
    }
    let dir = temp_dir("append-only");
    let url = database_url(backend, &dir).await.unwrap();
    let s = store::connect(&url).await.unwrap();
    store::seed_catalogue(s.as_ref(), 1000).await.unwrap();
    let r = resident(&s, "13700000023").await;
    let c = new_case(&s, r, "MI-003").await;
    let id = c.id.0;
    let tries = [
        ("UPDATE case_events SET reason = 'rewritten' WHERE case_id = $1", "update"),
        ("DELETE FROM case_events WHERE case_id = $1", "delete"),
    ];
    for (sql, what) in tries {
        let err = match backend {
            Backend::Sqlite => {
                let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
                sqlx::query(sql).bind(id).execute(&mut conn).await.err()
            }
            Backend::Postgres => {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
                sqlx::query(sql).bind(id).execute(&mut conn).await.err()
            }
        };
        let err = err.unwrap_or_else(|| panic!("the {what} went through"));
        assert!(err.to_string().contains("append-only"), "{what}: {err}");
    }
    let h = s.case_events(c.id).await.unwrap();
    assert_eq!((h.len(), h[0].reason.as_deref()), (1, None));
}

async fn resident(s: &Arc<dyn Store>, phone: &str) -> ResidentId {
    let r = Resident {
        id: ResidentId::new(),
        name: "王五".into(),
        phone: PhoneNumber::parse(phone).unwrap(),
        id_number: None,
        birth_date: None,
        elderly: false,
        disabled: false,
        grid_id: None,
        created_at: 1000,
    };
    s.insert_resident(&r).await.unwrap();
    r.id
}

fn event(case: CaseId, at: i64, action: CaseAction, from: Option<CaseStatus>, to: CaseStatus) -> CaseEvent {
    CaseEvent {
        id: CaseEventId::new(),
        case_id: case,
        at,
        actor_id: Some(Uuid::now_v7()),
        actor_role: Some(Role::Agent),
        action,
        from,
        to,
        reason: None,
        detail: serde_json::json!({}),
    }
}

async fn new_case(s: &Arc<dyn Store>, r: ResidentId, matter: &str) -> Case {
    let mut answers = Answers::new();
    answers.insert("is_injury".into(), "yes".into());
    let c = Case {
        id: CaseId::new(),
        resident_id: r,
        matter_code: matter.into(),
        status: CaseStatus::Draft,
        answers,
        call_id: None,
        ticket_id: None,
        created_by: Uuid::now_v7(),
        created_by_role: Role::Agent,
        return_count: 0,
        created_at: 2000,
        updated_at: 2000,
        submitted_at: None,
        version: 1,
    };
    s.insert_case(&c, &event(c.id, 2000, CaseAction::Create, None, CaseStatus::Draft)).await.unwrap();
    c
}

async fn step(s: &Arc<dyn Store>, c: &Case, action: CaseAction, to: CaseStatus, at: i64) -> Result<Case, StoreError> {
    s.transition_case(
        c.id,
        &Transition {
            expected_version: c.version,
            to,
            event: event(c.id, at, action, Some(c.status), to),
            invalidate: vec![],
            idem_key: None,
        },
    )
    .await
}

fn doc(case: CaseId, item: &str, size: i64) -> Document {
    Document {
        id: DocumentId::new(),
        case_id: case,
        item_key: Some(item.into()),
        source: DocumentSource::Upload,
        call_id: None,
        format: DocumentFormat::Jpeg,
        size,
        received: 0,
        sha256: None,
        status: DocumentStatus::Uploading,
        invalid_reason: None,
        created_by: Uuid::now_v7(),
        created_at: 3000,
        finished_at: None,
    }
}

async fn a_case_and_its_history_round_trip_and_filter(s: Arc<dyn Store>) {
    let r = resident(&s, "13700000001").await;
    let other = resident(&s, "13700000002").await;
    let c = new_case(&s, r, "MI-003").await;
    new_case(&s, other, "SE-001").await;
    let got = s.case_by_id(c.id).await.unwrap().unwrap();
    assert_eq!(got, c);
    let mine = s.list_cases(&CaseFilter { resident: Some(r), ..Default::default() }, None, 50).await.unwrap();
    assert_eq!(mine.iter().map(|c| c.id).collect::<Vec<_>>(), vec![c.id]);
    let se = s.list_cases(&CaseFilter { matter: Some("SE-001".into()), ..Default::default() }, None, 50).await.unwrap();
    assert_eq!((se.len(), se[0].resident_id), (1, other));
    let drafts = s.list_cases(&CaseFilter { status: Some(CaseStatus::Draft), ..Default::default() }, None, 50).await.unwrap();
    assert_eq!(drafts.len(), 2);
    let page1 = s.list_cases(&CaseFilter::default(), None, 1).await.unwrap();
    let page2 = s.list_cases(&CaseFilter::default(), Some(page1[0].id.0), 1).await.unwrap();
    assert_ne!(page1[0].id, page2[0].id);
    // An unknown matter or resident is a reference conflict.
    let mut bad = c.clone();
    bad.id = CaseId::new();
    bad.matter_code = "XX-000".into();
    let e = s.insert_case(&bad, &event(bad.id, 1, CaseAction::Create, None, CaseStatus::Draft)).await;
    assert!(matches!(e, Err(StoreError::Conflict(_))), "{e:?}");
    // Answers change with the version.
    let mut a = Answers::new();
    a.insert("is_injury".into(), "no".into());
    let updated = s.set_case_answers(c.id, &a, 1, 2500).await.unwrap();
    assert_eq!((updated.version, updated.answers.get("is_injury").map(String::as_str)), (2, Some("no")));
    assert!(matches!(s.set_case_answers(c.id, &a, 1, 2600).await, Err(StoreError::Conflict("version"))));
    assert!(matches!(s.set_case_answers(CaseId::new(), &a, 1, 2600).await, Err(StoreError::NotFound)));
    let h = s.case_events(c.id).await.unwrap();
    assert_eq!((h.len(), h[0].action, h[0].from, h[0].to), (1, CaseAction::Create, None, CaseStatus::Draft));
}

async fn a_transition_applies_exactly_once_under_concurrency(s: Arc<dyn Store>) {
    let r = resident(&s, "13700000003").await;
    let c = new_case(&s, r, "MI-003").await;
    let tries = (0..8).map(|i| {
        let s = s.clone();
        let c = c.clone();
        tokio::spawn(async move { step(&s, &c, CaseAction::Submit, CaseStatus::Submitted, 5000 + i).await })
    });
    let results = futures_util::future::join_all(tries).await;
    let wins = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let lost = results.iter().filter(|r| matches!(r, Ok(Err(StoreError::Conflict("version"))))).count();
    assert_eq!((wins, lost), (1, 7), "{results:?}");
    let now = s.case_by_id(c.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.version), (CaseStatus::Submitted, 2));
    assert!(now.submitted_at.is_some());
    assert_eq!(s.case_events(c.id).await.unwrap().len(), 2, "one history entry for one change");
}

async fn a_return_marks_documents_invalid_and_counts_for_the_return_rate(s: Arc<dyn Store>) {
    let r = resident(&s, "13700000004").await;
    let c = new_case(&s, r, "MI-003").await;
    let d = doc(c.id, "receipts", 4);
    s.insert_document(&d).await.unwrap();
    assert!(s.advance_upload(d.id, 0, 4).await.unwrap());
    assert!(matches!(s.finish_document(d.id, &"a".repeat(64), 3100).await.unwrap(), FinishOutcome::Finished(_)));
    let c = step(&s, &c, CaseAction::Submit, CaseStatus::Submitted, 4000).await.unwrap();
    let mut ret = event(c.id, 4100, CaseAction::Return, Some(c.status), CaseStatus::Returned);
    ret.reason = Some("票据模糊".into());
    ret.detail = serde_json::json!({"notice": [{"kind": "invalid_document", "item": "receipts"}]});
    let c = s
        .transition_case(
            c.id,
            &Transition {
                expected_version: c.version,
                to: CaseStatus::Returned,
                event: ret,
                invalidate: vec![("receipts".into(), "票据模糊".into())],
                idem_key: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(c.return_count, 1);
    let docs = s.list_documents(c.id).await.unwrap();
    assert_eq!((docs[0].status, docs[0].invalid_reason.as_deref()), (DocumentStatus::Invalid, Some("票据模糊")));
    let h = s.case_events(c.id).await.unwrap();
    assert_eq!(h.last().unwrap().reason.as_deref(), Some("票据模糊"));
    assert_eq!(h.last().unwrap().detail["notice"][0]["item"], "receipts");
    // A second case of the same matter, submitted and never returned; a draft does not count.
    let c2 = new_case(&s, r, "MI-003").await;
    step(&s, &c2, CaseAction::Submit, CaseStatus::Submitted, 4200).await.unwrap();
    new_case(&s, r, "MI-003").await;
    let rates = s.return_rates().await.unwrap();
    let mi = rates.iter().find(|x| x.matter_code == "MI-003").unwrap();
    assert_eq!((mi.submitted, mi.returned, mi.returns), (2, 1, 1));
    assert!((mi.rate - 0.5).abs() < 1e-9);
}

async fn upload_offsets_advance_only_from_where_they_are(s: Arc<dyn Store>) {
    let r = resident(&s, "13700000005").await;
    let c = new_case(&s, r, "MI-003").await;
    let d = doc(c.id, "id_card", 100);
    s.insert_document(&d).await.unwrap();
    assert!(s.advance_upload(d.id, 0, 40).await.unwrap());
    assert!(!s.advance_upload(d.id, 0, 40).await.unwrap(), "a second writer at the old offset loses");
    // Finishing before all bytes arrived does nothing.
    assert_eq!(s.finish_document(d.id, &"b".repeat(64), 1).await.unwrap(), FinishOutcome::NotUploading);
    // The size is a hard ceiling.
    assert!(s.advance_upload(d.id, 40, 101).await.is_err());
    assert!(s.advance_upload(d.id, 40, 100).await.unwrap());
    let FinishOutcome::Finished(done) = s.finish_document(d.id, &"b".repeat(64), 7).await.unwrap() else { panic!() };
    assert_eq!((done.status, done.received, done.finished_at), (DocumentStatus::Ready, 100, Some(7)));
    assert!(!s.advance_upload(d.id, 100, 100).await.unwrap(), "a finished upload takes no bytes");
    assert!(!s.discard_upload(d.id).await.unwrap(), "a finished document is not discarded");
    let gone = doc(c.id, "id_card", 10);
    s.insert_document(&gone).await.unwrap();
    assert!(s.discard_upload(gone.id).await.unwrap());
    assert!(s.document(gone.id).await.unwrap().is_none());
}

async fn the_same_bytes_become_a_document_once_per_case(s: Arc<dyn Store>) {
    let r = resident(&s, "13700000006").await;
    let c = new_case(&s, r, "MI-003").await;
    let other = new_case(&s, r, "MI-003").await;
    let sha = "c".repeat(64);
    let mut ids = Vec::new();
    for case in [c.id, c.id, other.id] {
        let d = doc(case, "receipts", 5);
        s.insert_document(&d).await.unwrap();
        s.advance_upload(d.id, 0, 5).await.unwrap();
        ids.push(d.id);
    }
    let first = s.finish_document(ids[0], &sha, 1).await.unwrap();
    assert!(matches!(first, FinishOutcome::Finished(_)));
    assert_eq!(s.finish_document(ids[1], &sha, 2).await.unwrap(), FinishOutcome::Duplicate(ids[0]));
    // Another case may hold the same bytes.
    assert!(matches!(s.finish_document(ids[2], &sha, 3).await.unwrap(), FinishOutcome::Finished(_)));
    assert_eq!(s.list_documents(c.id).await.unwrap().iter().filter(|d| d.status == DocumentStatus::Ready).count(), 1);
}

fn claim<'a>(subject: Uuid, key: &'a str, hash: &'a str, now: i64) -> IdemRequest<'a> {
    IdemRequest {
        subject,
        key,
        route: "POST /api/v1/cases",
        request_hash: hash,
        resource_id: Uuid::now_v7(),
        now,
        stale_before: now - 60_000,
    }
}

async fn an_idempotency_key_is_claimed_exactly_once_under_concurrency(s: Arc<dyn Store>) {
    let me = Uuid::now_v7();
    let tries = (0..10).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.idem_claim(&claim(me, "k1", "h1", 10_000)).await.unwrap() })
    });
    let results: Vec<IdemClaim> = futures_util::future::join_all(tries).await.into_iter().map(Result::unwrap).collect();
    let claimed = results.iter().filter(|r| matches!(r, IdemClaim::Claimed { .. })).count();
    let waiting = results.iter().filter(|r| **r == IdemClaim::InProgress).count();
    assert_eq!((claimed, waiting), (1, 9), "{results:?}");
    s.idem_complete(me, "k1", 201, r#"{"id":"x"}"#).await.unwrap();
    assert_eq!(
        s.idem_claim(&claim(me, "k1", "h1", 10_500)).await.unwrap(),
        IdemClaim::Replay { status: 201, body: r#"{"id":"x"}"#.into() }
    );
    assert_eq!(s.idem_claim(&claim(me, "k1", "other", 10_500)).await.unwrap(), IdemClaim::Mismatch);
    // Another caller's same key is theirs.
    assert!(matches!(s.idem_claim(&claim(Uuid::now_v7(), "k1", "h1", 10_500)).await.unwrap(), IdemClaim::Claimed { .. }));
    // A released claim (the request failed) can be claimed again.
    assert!(matches!(s.idem_claim(&claim(me, "k2", "h", 11_000)).await.unwrap(), IdemClaim::Claimed { .. }));
    s.idem_release(me, "k2").await.unwrap();
    assert!(matches!(s.idem_claim(&claim(me, "k2", "h", 11_001)).await.unwrap(), IdemClaim::Claimed { .. }));
    // A completed result is not released.
    s.idem_release(me, "k1").await.unwrap();
    assert!(matches!(s.idem_claim(&claim(me, "k1", "h1", 12_000)).await.unwrap(), IdemClaim::Replay { .. }));
}

async fn a_stale_claim_is_taken_over_with_the_same_resource_id(s: Arc<dyn Store>) {
    let me = Uuid::now_v7();
    let IdemClaim::Claimed { resource_id } = s.idem_claim(&claim(me, "k", "h", 1_000)).await.unwrap() else { panic!() };
    // Still fresh: in progress.
    assert_eq!(s.idem_claim(&claim(me, "k", "h", 30_000)).await.unwrap(), IdemClaim::InProgress);
    // The holder died; after a minute the claim is taken over, once, with the same id.
    let tries = (0..6).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.idem_claim(&claim(me, "k", "h", 100_000)).await.unwrap() })
    });
    let results: Vec<IdemClaim> = futures_util::future::join_all(tries).await.into_iter().map(Result::unwrap).collect();
    let taken: Vec<_> = results.iter().filter_map(|r| match r {
        IdemClaim::Claimed { resource_id } => Some(*resource_id),
        _ => None,
    }).collect();
    assert_eq!(taken, vec![resource_id], "{results:?}");
}

fn rating(r: ResidentId, subject: RatingSubject, level: RatingLevel) -> Rating {
    Rating {
        id: RatingId::new(),
        resident_id: r,
        subject,
        matter_code: None,
        level,
        tags: vec!["等待太久".into()],
        comment: Some("网络卡顿".into()),
        created_at: 9000,
    }
}

fn follow_up(rating: RatingId) -> FollowUp {
    FollowUp {
        id: FollowUpId::new(),
        rating_id: rating,
        opened_at: 9000,
        due_on: time::macros::date!(2026 - 12 - 21),
        due_at: 99_000,
        closed_at: None,
        closed_by: None,
        note: None,
    }
}

async fn one_rating_per_resident_and_subject_with_its_follow_up(s: Arc<dyn Store>) {
    let r = resident(&s, "13700000007").await;
    let other = resident(&s, "13700000008").await;
    let c = new_case(&s, r, "MI-003").await;
    let low = rating(r, RatingSubject::Case(c.id), RatingLevel::VeryDissatisfied);
    let f = follow_up(low.id);
    s.insert_rating(&low, Some(&f)).await.unwrap();
    let again = rating(r, RatingSubject::Case(c.id), RatingLevel::VerySatisfied);
    assert!(matches!(s.insert_rating(&again, None).await, Err(StoreError::Conflict("duplicate"))));
    // The failed insert left nothing behind, not even a follow-up.
    let dup_follow = rating(r, RatingSubject::Case(c.id), RatingLevel::Dissatisfied);
    assert!(s.insert_rating(&dup_follow, Some(&follow_up(dup_follow.id))).await.is_err());
    assert_eq!(s.list_follow_ups(false, None, 50).await.unwrap().len(), 1);
    let got = s.rating_of(r, RatingSubject::Case(c.id)).await.unwrap().unwrap();
    assert_eq!(got, low);
    assert_eq!(s.rating(low.id).await.unwrap(), Some(low.clone()));
    assert!(s.rating_of(other, RatingSubject::Case(c.id)).await.unwrap().is_none());
    // Calls: one per resident and call.
    let call = Uuid::now_v7();
    s.insert_rating(&rating(r, RatingSubject::Call(call), RatingLevel::Satisfied), None).await.unwrap();
    s.insert_rating(&rating(other, RatingSubject::Call(call), RatingLevel::Satisfied), None).await.unwrap();
    assert!(s.insert_rating(&rating(r, RatingSubject::Call(call), RatingLevel::Neutral), None).await.is_err());
    assert_eq!(s.list_ratings(Some(r), None, 50).await.unwrap().len(), 2);
    assert_eq!(s.list_ratings(None, None, 50).await.unwrap().len(), 3);
    let open = s.list_follow_ups(true, None, 50).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].0.clone(), open[0].1.clone()), (f.clone(), low.clone()));
    assert_eq!(s.follow_up_of_rating(low.id).await.unwrap(), Some(f));
}

async fn a_follow_up_closes_exactly_once_under_concurrency(s: Arc<dyn Store>) {
    let r = resident(&s, "13700000009").await;
    let low = rating(r, RatingSubject::Call(Uuid::now_v7()), RatingLevel::Dissatisfied);
    let f = follow_up(low.id);
    s.insert_rating(&low, Some(&f)).await.unwrap();
    let tries = (0..6).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.close_follow_up(f.id, Uuid::now_v7(), &format!("note {i}"), 50_000).await.unwrap() })
    });
    let results: Vec<Option<FollowUp>> = futures_util::future::join_all(tries).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1);
    let closed = s.follow_up(f.id).await.unwrap().unwrap();
    assert_eq!(closed.closed_at, Some(50_000));
    assert!(closed.note.unwrap().starts_with("note "));
    assert!(s.list_follow_ups(true, None, 50).await.unwrap().is_empty());
    assert!(s.close_follow_up(FollowUpId::new(), Uuid::now_v7(), "x", 1).await.unwrap().is_none());
}
