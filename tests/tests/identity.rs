//! Sign-in for every kind of subject: staff passwords with lockout, residents' one-time codes,
//! refresh rotation, device pairing and token rotation.

use futures_util::future::join_all;
use integration_tests::{skip_without_postgres, spawn_app, spawn_app_on, Backend, TestApp};
use serde_json::json;

#[tokio::test]
async fn staff_sign_in_and_see_themselves() {
    let app = spawn_app().await;
    let token = app.staff_token("agent.li").await;
    let me = app.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["kind"], "staff");
    assert_eq!(me.body["role"], "agent");
    assert!(me.body.get("password_hash").is_none());
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_then_it_unlocks() {
    let app = spawn_app().await;
    let wrong = json!({"username": "agent.wang", "password": "not-the-password"});
    for _ in 0..5 {
        let r = app.call("POST", "/api/v1/auth/staff/login", None, Some(wrong.clone())).await;
        assert_eq!((r.status, r.code()), (401, "invalid-credentials"));
    }
    // Locked: even the right password is refused, with Retry-After.
    let right = json!({"username": "agent.wang", "password": signaling::demo::DEMO_PASSWORD});
    let r = app.call("POST", "/api/v1/auth/staff/login", None, Some(right.clone())).await;
    assert_eq!((r.status, r.code()), (429, "account-locked"));
    app.clock.advance_ms(61_000);
    let r = app.call("POST", "/api/v1/auth/staff/login", None, Some(right)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Unknown users get the same answer as wrong passwords.
    let r = app
        .call("POST", "/api/v1/auth/staff/login", None, Some(json!({"username": "nobody", "password": "whatever-123"})))
        .await;
    assert_eq!((r.status, r.code()), (401, "invalid-credentials"));
}

#[tokio::test]
async fn residents_sign_in_with_a_code_that_expires_and_burns() {
    let app = spawn_app().await;
    let phone = "13900000009";
    let r = app.call("POST", "/api/v1/auth/otp/request", None, Some(json!({"phone": phone}))).await;
    assert_eq!(r.status, 202);
    // A second request within a minute is refused.
    let r = app.call("POST", "/api/v1/auth/otp/request", None, Some(json!({"phone": phone}))).await;
    assert_eq!((r.status, r.code()), (429, "otp-too-soon"));
    let code = app.codes.last(phone).unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let r = app.call("POST", "/api/v1/auth/otp/verify", None, Some(json!({"phone": phone, "code": wrong}))).await;
        assert_eq!((r.status, r.code()), (401, "otp-invalid"));
    }
    // Burnt after five wrong guesses: the right code no longer works.
    let r = app.call("POST", "/api/v1/auth/otp/verify", None, Some(json!({"phone": phone, "code": code}))).await;
    assert_eq!((r.status, r.code()), (401, "otp-expired"));
    // A new code, used after its five minutes, is expired.
    app.clock.advance_ms(60_000);
    app.call("POST", "/api/v1/auth/otp/request", None, Some(json!({"phone": phone}))).await;
    let code = app.codes.last(phone).unwrap();
    app.clock.advance_ms(5 * 60_000);
    let r = app.call("POST", "/api/v1/auth/otp/verify", None, Some(json!({"phone": phone, "code": code}))).await;
    assert_eq!((r.status, r.code()), (401, "otp-expired"));
    // A fresh code works once; the first sign-in registers the resident.
    let login = app.resident_login(phone).await;
    assert_eq!(login["role"], "resident");
    let token = login["access_token"].as_str().unwrap();
    let me = app.call("GET", "/api/v1/me", Some(token), None).await;
    assert_eq!(me.body["kind"], "resident");
    assert_eq!(me.body["phone_masked"], "139****0009");
}

/// The backends the concurrency stories run on (PostgreSQL when `TEST_POSTGRES_URL` is set).
async fn apps() -> Vec<TestApp> {
    let mut apps = vec![];
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if !skip_without_postgres(backend) {
            apps.push(spawn_app_on(backend, |_| {}).await);
        }
    }
    apps
}

#[tokio::test]
async fn parallel_wrong_codes_count_no_more_than_the_cap_and_then_the_right_code_is_refused() {
    for app in apps().await {
        let phone = "13900000031";
        assert_eq!(app.call("POST", "/api/v1/auth/otp/request", None, Some(json!({"phone": phone}))).await.status, 202);
        let code = app.codes.last(phone).unwrap();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let guesses = (0..20).map(|_| {
            app.call("POST", "/api/v1/auth/otp/verify", None, Some(json!({"phone": phone, "code": wrong})))
        });
        let replies = join_all(guesses).await;
        let invalid = replies.iter().filter(|r| (r.status, r.code()) == (401, "otp-invalid")).count();
        let burnt = replies.iter().filter(|r| (r.status, r.code()) == (401, "otp-expired")).count();
        // Exactly five guesses were checked; the other fifteen found the code burnt.
        assert_eq!((invalid, burnt), (5, 15), "{:?}", replies.iter().map(|r| r.code().to_string()).collect::<Vec<_>>());
        let r = app.call("POST", "/api/v1/auth/otp/verify", None, Some(json!({"phone": phone, "code": code}))).await;
        assert_eq!((r.status, r.code()), (401, "otp-expired"));
    }
}

#[tokio::test]
async fn two_parallel_right_codes_open_exactly_one_session() {
    for app in apps().await {
        let phone = "13900000032";
        assert_eq!(app.call("POST", "/api/v1/auth/otp/request", None, Some(json!({"phone": phone}))).await.status, 202);
        let code = app.codes.last(phone).unwrap();
        let body = json!({"phone": phone, "code": code});
        let replies = join_all((0..2).map(|_| app.call("POST", "/api/v1/auth/otp/verify", None, Some(body.clone())))).await;
        let ok: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
        assert_eq!(ok.len(), 1, "{:?}", replies.iter().map(|r| r.body.clone()).collect::<Vec<_>>());
        let refused = replies.iter().find(|r| r.status != 200).unwrap();
        assert_eq!((refused.status, refused.code()), (401, "otp-expired"));
        // One sign-in in the audit log, and the code is gone.
        let auditor = app.staff_token("auditor").await;
        let log = app.call("GET", "/api/v1/audit?limit=200", Some(&auditor), None).await;
        let logins = log.body["items"].as_array().unwrap().iter().filter(|e| e["action"] == "resident.login").count();
        assert_eq!(logins, 1);
        let r = app.call("POST", "/api/v1/auth/otp/verify", None, Some(body)).await;
        assert_eq!((r.status, r.code()), (401, "otp-expired"));
    }
}

#[tokio::test]
async fn parallel_wrong_passwords_all_count_and_lock_the_account() {
    for app in apps().await {
        let wrong = json!({"username": "agent.wang", "password": "not-the-password"});
        let replies =
            join_all((0..20).map(|_| app.call("POST", "/api/v1/auth/staff/login", None, Some(wrong.clone())))).await;
        assert!(replies.iter().all(|r| r.status == 401 || r.status == 429));
        let staff = app
            .state
            .store
            .staff_by_username(&signaling::domain::identity::Username::parse("agent.wang").unwrap())
            .await
            .unwrap()
            .unwrap();
        // Every failure that was checked was counted: none overwrote another's count.
        let checked = replies.iter().filter(|r| r.status == 401).count() as u32;
        assert_eq!(staff.failed_logins, checked);
        assert!(checked >= 5, "{checked}");
        let right = json!({"username": "agent.wang", "password": signaling::demo::DEMO_PASSWORD});
        let r = app.call("POST", "/api/v1/auth/staff/login", None, Some(right)).await;
        assert_eq!((r.status, r.code()), (429, "account-locked"));
    }
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_session() {
    let app = spawn_app().await;
    let login = app.resident_login("13800000003").await;
    let r1 = login["refresh_token"].as_str().unwrap().to_string();
    let r = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": r1}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r2 = r.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    // The old token again: theft assumed, the session is revoked...
    let r = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": r1}))).await;
    assert_eq!((r.status, r.code()), (401, "refresh-reused"));
    // ...so the newest token stops working too.
    let r = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": r2}))).await;
    assert_eq!((r.status, r.code()), (401, "invalid-refresh-token"));
}

#[tokio::test]
async fn logout_ends_the_refresh_token() {
    let app = spawn_app().await;
    let r = app
        .call("POST", "/api/v1/auth/staff/login", None, Some(json!({"username": "supervisor", "password": signaling::demo::DEMO_PASSWORD})))
        .await;
    let (access, refresh) = (r.body["access_token"].as_str().unwrap(), r.body["refresh_token"].as_str().unwrap());
    assert_eq!(app.call("POST", "/api/v1/auth/logout", Some(access), None).await.status, 204);
    let r = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn access_tokens_expire_on_the_server_clock() {
    let app = spawn_app().await;
    let token = app.staff_token("auditor").await;
    assert_eq!(app.call("GET", "/api/v1/me", Some(&token), None).await.status, 200);
    app.clock.advance_ms(901_000);
    let r = app.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!((r.status, r.code()), (401, "token-expired"));
}

#[tokio::test]
async fn a_device_pairs_gets_a_token_and_rotates_it() {
    let app = spawn_app().await;
    let r = app
        .call("POST", "/api/v1/devices/pairings", None, Some(json!({"kind": "kiosk", "label": "拱墅区 自助机 7号"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (pid, code, secret) = (
        r.body["pairing_id"].as_str().unwrap().to_string(),
        r.body["code"].as_str().unwrap().to_string(),
        r.body["poll_secret"].as_str().unwrap().to_string(),
    );
    assert!(r.body["qr_svg"].as_str().unwrap().starts_with("<?xml"));
    let poll = |s: &str| {
        let req = app
            .http
            .get(format!("{}/api/v1/devices/pairings/{pid}", app.base))
            .header("x-pairing-secret", s.to_string());
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<serde_json::Value>().await.unwrap())
        }
    };
    assert_eq!(poll(&secret).await.1["status"], "pending");
    assert_eq!(poll("wrong-secret").await.0, 404);
    // Only an admin confirms; the kind must match.
    let agent = app.staff_token("agent.li").await;
    let admin = app.staff_token("admin").await;
    let confirm = json!({"code": code, "kind": "kiosk"});
    assert_eq!(app.call("POST", "/api/v1/devices/pairings/confirm", Some(&agent), Some(confirm.clone())).await.status, 403);
    let r = app
        .call("POST", "/api/v1/devices/pairings/confirm", Some(&admin), Some(json!({"code": code, "kind": "tv_box"})))
        .await;
    assert_eq!((r.status, r.code()), (404, "pairing-not-found"));
    let r = app.call("POST", "/api/v1/devices/pairings/confirm", Some(&admin), Some(confirm.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["label"], "拱墅区 自助机 7号");
    // Confirming twice does not make a second device.
    let r = app.call("POST", "/api/v1/devices/pairings/confirm", Some(&admin), Some(confirm)).await;
    assert_eq!(r.status, 404);
    let (_, body) = poll(&secret).await;
    assert_eq!(body["status"], "paired");
    let device_token = body["device_token"].as_str().unwrap().to_string();
    let r = app.call("POST", "/api/v1/auth/device", None, Some(json!({"device_token": device_token}))).await;
    assert_eq!((r.status, r.body["role"].as_str()), (200, Some("device")));
    let access = r.body["access_token"].as_str().unwrap().to_string();
    let r = app.call("POST", "/api/v1/devices/me/token", Some(&access), None).await;
    assert_eq!(r.status, 200);
    let rotated = r.body["device_token"].as_str().unwrap();
    let r = app.call("POST", "/api/v1/auth/device", None, Some(json!({"device_token": device_token}))).await;
    assert_eq!((r.status, r.code()), (401, "invalid-device-token"));
    let r = app.call("POST", "/api/v1/auth/device", None, Some(json!({"device_token": rotated}))).await;
    assert_eq!(r.status, 200);
    // Revoked devices cannot sign in.
    let id = r.body["subject"].as_str().unwrap();
    assert_eq!(app.call("DELETE", &format!("/api/v1/devices/{id}"), Some(&admin), None).await.status, 204);
    let r = app.call("POST", "/api/v1/auth/device", None, Some(json!({"device_token": rotated}))).await;
    assert_eq!(r.status, 401);
    // The pairing expires for a device that never gets confirmed.
    let r = app.call("POST", "/api/v1/devices/pairings", None, Some(json!({"kind": "tv_box", "label": "x"}))).await;
    let pid2 = r.body["pairing_id"].as_str().unwrap().to_string();
    let secret2 = r.body["poll_secret"].as_str().unwrap().to_string();
    app.clock.advance_ms(11 * 60_000);
    let res = app
        .http
        .get(format!("{}/api/v1/devices/pairings/{pid2}", app.base))
        .header("x-pairing-secret", secret2)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["status"], "expired");
}

#[tokio::test]
async fn sign_ins_and_admin_actions_are_in_the_audit_log_with_masked_personal_data() {
    let app = spawn_app().await;
    let admin = app.staff_token("admin").await;
    let r = app
        .call("POST", "/api/v1/residents", Some(&admin), Some(json!({"name": "王大爷", "phone": "13700001234"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let auditor = app.staff_token("auditor").await;
    let r = app.call("GET", "/api/v1/audit?limit=200", Some(&auditor), None).await;
    assert_eq!(r.status, 200);
    let text = r.body.to_string();
    assert!(text.contains("staff.login") && text.contains("resident.create"));
    assert!(!text.contains("13700001234") && text.contains("137****1234"), "{text}");
    // Nobody, not even the database user, edits the audit log.
    let pool = sqlx::SqlitePool::connect(&app.state.settings.database_url()).await.unwrap();
    assert!(sqlx::query("UPDATE audit_log SET action = 'x'").execute(&pool).await.is_err());
    assert!(sqlx::query("DELETE FROM audit_log").execute(&pool).await.is_err());
}

/// An 18-character ID number from its first 17 digits (GB 11643 check digit).
fn id_number(body17: &str) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body17.bytes().zip(W).map(|(b, w)| (b - b'0') as u32 * w).sum();
    format!("{body17}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

#[tokio::test]
async fn a_resident_cannot_probe_whether_an_id_number_is_registered() {
    let app = spawn_app().await;
    let admin = app.staff_token("admin").await;
    let taken = id_number("33010619520520004");
    let r = app
        .call("POST", "/api/v1/residents", Some(&admin), Some(json!({"name": "王大爷", "phone": "13700005678", "id_number": taken})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let resident = app.resident_token("13900000041").await;
    let patch = |body: serde_json::Value| app.call("PATCH", "/api/v1/residents/me", Some(&resident), Some(body));
    // Someone else's number...
    let held = patch(json!({"id_number": taken})).await;
    // ...and a free number that disagrees with the profile's birth date get the same answer.
    assert_eq!(patch(json!({"birth_date": "1960-03-04"})).await.status, 200);
    let mismatched = patch(json!({"id_number": id_number("33010619610101003")})).await;
    for r in [&held, &mismatched] {
        assert_eq!((r.status, r.code()), (422, "id-number-refused"), "{}", r.body);
        let text = r.body.to_string();
        assert!(!text.contains("exist") && !text.contains("registered") && !text.contains("taken"), "{text}");
    }
    assert_eq!(held.body["detail"], mismatched.body["detail"]);
    assert_eq!(held.body["title"], mismatched.body["title"]);
    // Nothing was stored; a free number that fits is taken.
    let me = app.call("GET", "/api/v1/me", Some(&resident), None).await;
    assert!(me.body["id_number_masked"].is_null(), "{}", me.body);
    let own = id_number("33010619600304005");
    let r = patch(json!({"id_number": own})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Each refusal is in the audit log, with the number masked.
    let auditor = app.staff_token("auditor").await;
    let log = app.call("GET", "/api/v1/audit?limit=200", Some(&auditor), None).await.body.to_string();
    assert_eq!(log.matches("resident.profile.id_refused").count(), 2, "{log}");
    assert!(!log.contains(&taken) && log.contains("330106********"), "{log}");
}
