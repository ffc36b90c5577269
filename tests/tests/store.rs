//! The storage suite: the same stories run against SQLite and PostgreSQL (PostgreSQL when
//! `TEST_POSTGRES_URL` is set; `.ci/run` sets it).

use std::sync::Arc;

use integration_tests::{database_url, skip_without_postgres, temp_dir, Backend};
use signaling::domain::identity::{otp::Challenge, IdNumber, LoginFailures, PhoneNumber, Role, Username};
use signaling::domain::ids::{DeviceId, GridId, PairingId, ResidentId, SessionId, StaffId};
use signaling::domain::matter::Catalogue;
use signaling::domain::people::{Actor, AuditEntry, Device, DeviceKind, Grid, Resident, Staff};
use signaling::store::{self, Pairing, RotateOutcome, SessionRecord, Store, StoreError};

async fn open(backend: Backend) -> Option<Arc<dyn Store>> {
    if skip_without_postgres(backend) {
        return None;
    }
    let dir = temp_dir("store");
    let url = database_url(backend, &dir).await.expect("database url");
    let s = store::connect(&url).await.expect("store opens and migrates");
    assert_eq!(s.backend(), if backend == Backend::Sqlite { "sqlite" } else { "postgres" });
    Some(s)
}

integration_tests::both_backends!(
    staff_are_stored_unique_by_username_and_keep_lockout_state,
    residents_are_unique_by_phone_and_id_number_and_page_by_cursor,
    one_time_codes_are_replaced_counted_and_deleted,
    guesses_at_one_code_are_capped_and_it_is_used_once_under_concurrency,
    concurrent_failed_sign_ins_each_count,
    a_refresh_token_rotates_exactly_once_under_concurrency,
    a_pairing_is_confirmed_exactly_once_under_concurrency,
    devices_are_found_by_token_until_revoked,
    the_catalogue_seeds_once_and_edits_bump_the_version,
    the_audit_log_keeps_order_and_refuses_nothing_it_should_store,
    grids_are_unique_by_code,
);

fn staff(username: &str, role: Role) -> Staff {
    Staff {
        id: StaffId::new(),
        username: Username::parse(username).unwrap(),
        display_name: "张三".into(),
        role,
        skills: vec!["social_insurance".into()],
        grid_id: None,
        password_hash: "$argon2id$placeholder".into(),
        failed_logins: 0,
        locked_until: None,
        disabled: false,
        created_at: 1000,
    }
}

fn resident(phone: &str, id: Option<&str>) -> Resident {
    Resident {
        id: ResidentId::new(),
        name: "李四".into(),
        phone: PhoneNumber::parse(phone).unwrap(),
        id_number: id.map(|i| IdNumber::parse(i).unwrap()),
        birth_date: Some(time::macros::date!(1950 - 01 - 02)),
        elderly: true,
        disabled: false,
        grid_id: None,
        created_at: 1000,
    }
}

async fn staff_are_stored_unique_by_username_and_keep_lockout_state(s: Arc<dyn Store>) {
    let a = staff("agent.one", Role::Agent);
    s.insert_staff(&a).await.unwrap();
    let dup = staff("agent.one", Role::Admin);
    assert!(matches!(s.insert_staff(&dup).await, Err(StoreError::Conflict(_))));
    let got = s.staff_by_username(&Username::parse("AGENT.ONE").unwrap()).await.unwrap().unwrap();
    assert_eq!((got.id, got.role, got.skills.clone()), (a.id, Role::Agent, vec!["social_insurance".to_string()]));
    s.set_login_failures(a.id, LoginFailures { count: 5, locked_until: Some(99) }).await.unwrap();
    let got = s.staff_by_id(a.id).await.unwrap().unwrap();
    assert_eq!((got.failed_logins, got.locked_until), (5, Some(99)));
    assert!(s.staff_by_id(StaffId::new()).await.unwrap().is_none());
}

async fn residents_are_unique_by_phone_and_id_number_and_page_by_cursor(s: Arc<dyn Store>) {
    let r = resident("13800000011", Some("11010519491231002X"));
    s.insert_resident(&r).await.unwrap();
    assert!(matches!(s.insert_resident(&resident("13800000011", None)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(
        s.insert_resident(&resident("13800000012", Some("11010519491231002X"))).await,
        Err(StoreError::Conflict(_))
    ));
    let got = s.resident_by_phone(&PhoneNumber::parse("13800000011").unwrap()).await.unwrap().unwrap();
    assert_eq!(got.id_number.as_ref().unwrap().expose(), "11010519491231002X");
    assert_eq!(got.birth_date, r.birth_date);
    for i in 0..5 {
        s.insert_resident(&resident(&format!("1390000000{i}"), None)).await.unwrap();
    }
    let p1 = s.list_residents(None, 4).await.unwrap();
    let p2 = s.list_residents(Some(p1.last().unwrap().id.0), 4).await.unwrap();
    assert_eq!((p1.len(), p2.len()), (4, 2));
    let mut ids: Vec<_> = p1.iter().chain(&p2).map(|r| r.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    let mut changed = got.clone();
    changed.name = "李四四".into();
    s.update_resident(&changed).await.unwrap();
    assert_eq!(s.resident_by_id(r.id).await.unwrap().unwrap().name, "李四四");
    let ghost = resident("13600000000", None);
    assert!(matches!(s.update_resident(&ghost).await, Err(StoreError::NotFound)));
}

async fn one_time_codes_are_replaced_counted_and_deleted(s: Arc<dyn Store>) {
    let p = PhoneNumber::parse("13800000021").unwrap();
    assert!(s.otp_get(&p).await.unwrap().is_none());
    assert!(s.otp_take_attempt(&p, 5, 1).await.unwrap().is_none(), "no challenge, nothing to count");
    let c = Challenge { code_hash: "h1".into(), sent_at: 1, expires_at: 100, attempts: 0 };
    s.otp_put(&p, &c).await.unwrap();
    // Each take counts one guess and hands back the challenge as it was before it.
    assert_eq!(s.otp_take_attempt(&p, 3, 10).await.unwrap().unwrap().attempts, 0);
    assert_eq!(s.otp_take_attempt(&p, 3, 10).await.unwrap().unwrap(), Challenge { attempts: 1, ..c.clone() });
    assert_eq!(s.otp_get(&p).await.unwrap().unwrap().attempts, 2);
    assert!(s.otp_take_attempt(&p, 5, 100).await.unwrap().is_none(), "expired: not counted");
    assert_eq!(s.otp_take_attempt(&p, 3, 10).await.unwrap().unwrap().attempts, 2);
    assert!(s.otp_take_attempt(&p, 3, 10).await.unwrap().is_none(), "the cap is reached");
    assert_eq!(s.otp_get(&p).await.unwrap().unwrap().attempts, 3, "a refused take counts nothing");
    let c2 = Challenge { code_hash: "h2".into(), sent_at: 5, expires_at: 600, attempts: 0 };
    s.otp_put(&p, &c2).await.unwrap();
    assert_eq!(s.otp_get(&p).await.unwrap().unwrap(), c2);
    // Consuming needs the code the challenge holds now, and works once.
    assert!(!s.otp_consume(&p, "h1").await.unwrap());
    assert!(s.otp_consume(&p, "h2").await.unwrap());
    assert!(!s.otp_consume(&p, "h2").await.unwrap());
    assert!(s.otp_get(&p).await.unwrap().is_none());
    s.otp_put(&p, &c2).await.unwrap();
    s.otp_delete(&p).await.unwrap();
    assert!(s.otp_get(&p).await.unwrap().is_none());
}

async fn guesses_at_one_code_are_capped_and_it_is_used_once_under_concurrency(s: Arc<dyn Store>) {
    let p = PhoneNumber::parse("13800000022").unwrap();
    s.otp_put(&p, &Challenge { code_hash: "h".into(), sent_at: 1, expires_at: 1_000, attempts: 0 }).await.unwrap();
    let takes: Vec<_> = (0..20)
        .map(|_| {
            let (s, p) = (s.clone(), p.clone());
            tokio::spawn(async move { s.otp_take_attempt(&p, 5, 10).await.unwrap() })
        })
        .collect();
    let mut seen = vec![];
    for t in takes {
        if let Some(c) = t.await.unwrap() {
            seen.push(c.attempts);
        }
    }
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2, 3, 4], "exactly the cap is handed out, each count once");
    assert_eq!(s.otp_get(&p).await.unwrap().unwrap().attempts, 5);
    let uses: Vec<_> = (0..8)
        .map(|_| {
            let (s, p) = (s.clone(), p.clone());
            tokio::spawn(async move { s.otp_consume(&p, "h").await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for u in uses {
        wins += u.await.unwrap() as usize;
    }
    assert_eq!(wins, 1, "one code, one use");
}

async fn concurrent_failed_sign_ins_each_count(s: Arc<dyn Store>) {
    let a = staff("agent.many", Role::Agent);
    s.insert_staff(&a).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.count_login_failure(a.id, 1_000).await.unwrap().unwrap() })
        })
        .collect();
    let mut counts = vec![];
    for t in tasks {
        counts.push(t.await.unwrap().count);
    }
    counts.sort();
    assert_eq!(counts, (1..=20).collect::<Vec<u32>>(), "no failure is lost");
    let got = s.staff_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(got.failed_logins, 20);
    assert_eq!(got.locked_until, Some(1_000 + signaling::domain::identity::MAX_LOCK_MS));
    assert!(s.count_login_failure(StaffId::new(), 1_000).await.unwrap().is_none());
}

async fn a_refresh_token_rotates_exactly_once_under_concurrency(s: Arc<dyn Store>) {
    let rec = SessionRecord {
        id: SessionId::new(),
        subject: uuid::Uuid::now_v7(),
        role: Role::Resident,
        refresh_hash: "r0".into(),
        created_at: 10,
        expires_at: 1_000,
    };
    s.insert_session(&rec).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.rotate_session("r0", &format!("r1-{i}"), 20, 2_000).await.unwrap() })
        })
        .collect();
    let mut rotated = 0;
    for t in tasks {
        if let RotateOutcome::Rotated(r) = t.await.unwrap() {
            rotated += 1;
            assert_eq!(r.id, rec.id);
        }
    }
    assert_eq!(rotated, 1, "exactly one concurrent refresh wins");
    // Expired and revoked sessions do not rotate.
    let rec2 = SessionRecord { id: SessionId::new(), refresh_hash: "x0".into(), expires_at: 50, ..rec.clone() };
    s.insert_session(&rec2).await.unwrap();
    assert!(matches!(s.rotate_session("x0", "x1", 60, 100).await.unwrap(), RotateOutcome::Invalid));
    let rec3 = SessionRecord { id: SessionId::new(), refresh_hash: "y0".into(), ..rec };
    s.insert_session(&rec3).await.unwrap();
    s.revoke_session(rec3.id, 30).await.unwrap();
    assert!(matches!(s.rotate_session("y0", "y1", 40, 100).await.unwrap(), RotateOutcome::Invalid));
}

fn pairing(code: &str, now: i64) -> Pairing {
    Pairing {
        id: PairingId::new(),
        code: code.into(),
        kind: DeviceKind::TvBox,
        label: "客厅电视".into(),
        poll_secret_hash: "ph".into(),
        created_at: now,
        expires_at: now + 600_000,
        confirmed_at: None,
        device_id: None,
    }
}

fn device(kind: DeviceKind) -> Device {
    Device { id: DeviceId::new(), kind, label: String::new(), grid_id: None, revoked: false, created_at: 5, last_seen_at: None }
}

async fn a_pairing_is_confirmed_exactly_once_under_concurrency(s: Arc<dyn Store>) {
    let p = pairing("ABCD2345", 0);
    s.insert_pairing(&p).await.unwrap();
    // A second pending pairing cannot hold the same code.
    assert!(matches!(s.insert_pairing(&pairing("ABCD2345", 1)).await, Err(StoreError::Conflict(_))));
    let admin = StaffId::new();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.confirm_pairing("ABCD2345", 10, admin, &device(DeviceKind::TvBox)).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some((pp, d))) => {
                wins += 1;
                assert_eq!(pp.device_id, Some(d.id));
                assert_eq!(d.label, "客厅电视");
            }
            Ok(None) => {}
            // SQLite may refuse a concurrent writer outright; it then changed nothing.
            Err(StoreError::Db(e)) if e.contains("locked") || e.contains("busy") => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(s.list_devices(None, 50).await.unwrap().len(), 1, "no orphan devices from losing confirmations");
    // Expired codes free up for new pairings, and cannot be confirmed.
    let old = pairing("EXPD2345", 0);
    s.insert_pairing(&old).await.unwrap();
    assert!(s.confirm_pairing("EXPD2345", 600_001, admin, &device(DeviceKind::TvBox)).await.unwrap().is_none());
    s.insert_pairing(&pairing("EXPD2345", 700_000)).await.unwrap();
}

async fn devices_are_found_by_token_until_revoked(s: Arc<dyn Store>) {
    let d = device(DeviceKind::Kiosk);
    s.insert_device(&d).await.unwrap();
    s.set_device_token(d.id, "t1").await.unwrap();
    let found = s.device_by_token("t1", 77).await.unwrap().unwrap();
    assert_eq!((found.id, found.last_seen_at), (d.id, Some(77)));
    s.set_device_token(d.id, "t2").await.unwrap();
    assert!(s.device_by_token("t1", 78).await.unwrap().is_none());
    assert!(s.revoke_device(d.id).await.unwrap());
    assert!(s.device_by_token("t2", 79).await.unwrap().is_none());
    assert!(matches!(s.set_device_token(d.id, "t3").await, Err(StoreError::NotFound)));
    assert!(!s.revoke_device(DeviceId::new()).await.unwrap());
}

async fn the_catalogue_seeds_once_and_edits_bump_the_version(s: Arc<dyn Store>) {
    let n = store::seed_catalogue(s.as_ref(), 1).await.unwrap();
    assert_eq!(n, Catalogue::builtin().matters.len());
    assert_eq!(store::seed_catalogue(s.as_ref(), 2).await.unwrap(), 0, "seeding twice adds nothing");
    let all = s.list_matters(None).await.unwrap();
    assert_eq!(all.len(), n);
    let mi = s.list_matters(Some("medical_insurance")).await.unwrap();
    assert!(!mi.is_empty() && mi.iter().all(|m| m.spec.class == "medical_insurance"));
    let mut m = all[0].clone();
    assert!(matches!(s.insert_matter(&m.spec, 3).await, Err(StoreError::Conflict(_))));
    m.spec.name_en = "Renamed".into();
    let v2 = s.update_matter(&m.spec, true, Some(1), 4).await.unwrap();
    assert_eq!(v2.version, 2);
    assert!(matches!(s.update_matter(&m.spec, true, Some(1), 5).await, Err(StoreError::Conflict(_))));
    let v3 = s.update_matter(&m.spec, false, None, 6).await.unwrap();
    assert_eq!((v3.version, v3.active), (3, false));
    assert_eq!(s.matter(&m.spec.code).await.unwrap().unwrap().spec.name_en, "Renamed");
    let mut ghost = m.spec.clone();
    ghost.code = "ZZ-999".into();
    assert!(matches!(s.update_matter(&ghost, true, None, 7).await, Err(StoreError::NotFound)));
    ghost.class = "no_such_class".into();
    assert!(matches!(s.insert_matter(&ghost, 8).await, Err(StoreError::Conflict(_))));
}

async fn the_audit_log_keeps_order_and_refuses_nothing_it_should_store(s: Arc<dyn Store>) {
    let mut ids = vec![];
    for i in 0..5 {
        let e = AuditEntry {
            id: Default::default(),
            at: i,
            actor: Actor { id: Some(uuid::Uuid::now_v7()), role: Some(Role::Auditor) },
            action: format!("test.{i}"),
            target_kind: "x".into(),
            target_id: "'; DROP TABLE audit_log; --".into(),
            detail: serde_json::json!({"i": i, "名字": "值"}),
        };
        s.append_audit(&e).await.unwrap();
        ids.push(e.id);
    }
    let all = s.list_audit(None, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(all[2].detail["名字"], "值");
    assert_eq!(all[0].target_id, "'; DROP TABLE audit_log; --");
    let rest = s.list_audit(Some(ids[1].0), 10).await.unwrap();
    assert_eq!(rest.len(), 3);
}

async fn grids_are_unique_by_code(s: Arc<dyn Store>) {
    s.insert_grid(&Grid { id: GridId::new(), code: "G-1".into(), name: "一网格".into() }).await.unwrap();
    assert!(matches!(
        s.insert_grid(&Grid { id: GridId::new(), code: "G-1".into(), name: "dup".into() }).await,
        Err(StoreError::Conflict(_))
    ));
    s.ping().await.unwrap();
    assert_eq!(s.list_grids().await.unwrap().len(), 1);
}

/// The audit log is append-only in the database itself, on both backends: the server's own
/// database user cannot change or remove an entry (a trigger refuses it).
#[tokio::test]
async fn the_audit_log_refuses_update_and_delete_on_both_backends() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if skip_without_postgres(backend) {
            continue;
        }
        let dir = temp_dir("audit");
        let url = database_url(backend, &dir).await.unwrap();
        let s = store::connect(&url).await.unwrap();
        let e = AuditEntry {
            id: Default::default(),
            at: 1,
            actor: Actor { id: None, role: Some(Role::Admin) },
            action: "staff.create".into(),
            target_kind: "staff".into(),
            target_id: "x".into(),
            detail: serde_json::json!({}),
        };
        s.append_audit(&e).await.unwrap();
        let tampering = ["UPDATE audit_log SET action = 'nothing.happened'", "DELETE FROM audit_log"];
        let refused: Vec<bool> = match backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let mut out = vec![];
                for q in tampering {
                    out.push(sqlx::query(q).execute(&pool).await.is_err());
                }
                out
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let mut out = vec![];
                for q in tampering.iter().chain(&["TRUNCATE audit_log"]) {
                    out.push(sqlx::query(q).execute(&pool).await.is_err());
                }
                out
            }
        };
        assert!(refused.iter().all(|r| *r), "{backend:?}: {refused:?}");
        let all = s.list_audit(None, 10).await.unwrap();
        assert_eq!((all.len(), all[0].action.as_str()), (1, "staff.create"), "{backend:?}");
    }
}
