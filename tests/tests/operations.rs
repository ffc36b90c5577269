//! Health, readiness and graceful drain of the real server process logic.

use std::sync::Arc;
use std::time::Duration;

use integration_tests::temp_dir;
use signaling::app::{Application, Components};
use signaling::config::Settings;
use signaling::domain::clock::FakeClock;

#[tokio::test]
async fn readiness_turns_503_while_draining_and_the_server_then_stops() {
    let dir = temp_dir("drain");
    let mut settings = Settings::for_tests(dir.clone());
    settings.drain_secs = 1;
    let app = Application::build_with(settings, Components { clock: Arc::new(FakeClock::at(0)), codes: None })
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let live = http.get(format!("{base}/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.headers().contains_key("x-request-id"));
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["database"], "sqlite");
    stop_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "draining servers are not ready");
    let live = http.get(format!("{base}/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200, "but still alive and serving");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("stops after the drain").unwrap().unwrap();
    assert!(http.get(format!("{base}/livez")).send().await.is_err(), "no longer listening");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_restart_keeps_data_and_the_generated_secret() {
    let dir = temp_dir("restart");
    let mut settings = Settings::for_tests(dir.clone());
    settings.secret = None;
    settings.demo = true;
    let clock = Arc::new(FakeClock::at(integration_tests::T0_MS));
    let app = Application::build_with(settings.clone(), Components { clock: clock.clone(), codes: None }).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let http = reqwest::Client::new();
    let login = http
        .post(format!("{base}/api/v1/auth/staff/login"))
        .json(&serde_json::json!({"username": "admin", "password": signaling::demo::DEMO_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_string();
    server.abort();
    let _ = server.await;
    assert!(dir.join("secret.key").exists());
    // Same data directory, new process: the token still verifies, the demo data is not doubled.
    let app = Application::build_with(settings, Components { clock, codes: None }).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let staff = http
        .get(format!("{base}/api/v1/staff?limit=200"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(staff.status(), 200);
    let body = staff.json::<serde_json::Value>().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), signaling::demo::DEMO_STAFF.len());
    server.abort();
    let _ = std::fs::remove_dir_all(dir);
}
