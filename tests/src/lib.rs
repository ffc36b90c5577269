//! Test support: [`spawn_app`] starts the real server on port 0 with a fresh database (SQLite
//! in a temporary directory, or a new PostgreSQL database when `TEST_POSTGRES_URL` is set and
//! the test asks for it), a fake clock and a code sender that keeps the codes it sends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{json, Value};
use signaling::app::{AppState, Application, Components};
use signaling::auth::codes::{CodeSender, SendError};
use signaling::config::Settings;
use signaling::domain::clock::FakeClock;
use signaling::domain::identity::PhoneNumber;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A new SQLite file.
    Sqlite,
    /// A new PostgreSQL database on `TEST_POSTGRES_URL`.
    Postgres,
}

/// Keeps every code "sent", by phone.
#[derive(Default)]
pub struct CapturedCodes(Mutex<HashMap<String, String>>);

impl CapturedCodes {
    /// The last code sent to `phone`.
    pub fn last(&self, phone: &str) -> Option<String> {
        self.0.lock().unwrap().get(phone).cloned()
    }
}

#[async_trait]
impl CodeSender for CapturedCodes {
    async fn send(&self, phone: &PhoneNumber, code: &str) -> Result<(), SendError> {
        self.0.lock().unwrap().insert(phone.expose().to_string(), code.to_string());
        Ok(())
    }
}

/// A running server and a client for it.
pub struct TestApp {
    /// Base URL, e.g. `http://127.0.0.1:43121`.
    pub base: String,
    /// Address.
    pub addr: SocketAddr,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The server's clock.
    pub clock: Arc<FakeClock>,
    /// Codes sent to residents.
    pub codes: Arc<CapturedCodes>,
    /// The server's state (for looking into storage).
    pub state: AppState,
    /// Temporary data directory (removed on drop).
    pub data_dir: PathBuf,
    _server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self._server.abort();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A unique temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cw-test-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The PostgreSQL URL for tests, if configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty())
}

/// Creates a fresh PostgreSQL database and returns its URL.
pub async fn fresh_postgres_db() -> anyhow::Result<String> {
    use sqlx::Connection;
    let admin = postgres_url().ok_or_else(|| anyhow::anyhow!("TEST_POSTGRES_URL is not set"))?;
    let name = format!("cw_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    conn.close().await?;
    // Swap the database name, keeping any query (e.g. `?host=/var/run/postgresql`).
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin.as_str(), String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    Ok(format!("{host_part}/{name}{query}"))
}

/// The database URL for a backend: a fresh database each call.
pub async fn database_url(backend: Backend, dir: &std::path::Path) -> anyhow::Result<String> {
    match backend {
        Backend::Sqlite => Ok(format!("sqlite://{}", dir.join("test.db").display())),
        Backend::Postgres => fresh_postgres_db().await,
    }
}

/// Skips (returns true, with a note) when a PostgreSQL test has no database. In CI
/// (`CI=true`) a missing database is a failure, not a skip.
pub fn skip_without_postgres(backend: Backend) -> bool {
    if backend == Backend::Postgres && postgres_url().is_none() {
        assert!(std::env::var("CI").is_err(), "CI must set TEST_POSTGRES_URL");
        eprintln!("note: TEST_POSTGRES_URL is not set; PostgreSQL case skipped");
        return true;
    }
    false
}

/// Fixed start time of test clocks: 2026-11-30 10:00 Asia/Shanghai (a Monday).
pub const T0_MS: i64 = 1_796_004_000_000;

/// Starts the server (SQLite, demo data seeded).
pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Sqlite, |_| {}).await
}

/// Starts the server on a backend, with demo data, after letting the test adjust settings.
pub async fn spawn_app_on(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = temp_dir("app");
    let mut settings = Settings::for_tests(dir.clone());
    settings.database_url = Some(database_url(backend, &dir).await.expect("database"));
    settings.demo = true;
    tweak(&mut settings);
    let clock = Arc::new(FakeClock::at(T0_MS));
    let codes = Arc::new(CapturedCodes::default());
    let app = Application::build_with(settings, Components { clock: clock.clone(), codes: Some(codes.clone()) })
        .await
        .expect("server builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    let server = tokio::spawn(async move {
        let _ = app.run_until(std::future::pending()).await;
    });
    TestApp {
        base: format!("http://{addr}"),
        addr,
        http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(20)).build().unwrap(),
        clock,
        codes,
        state,
        data_dir: dir,
        _server: server,
    }
}

/// A response's status and JSON body (or `Value::Null`).
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body as JSON.
    pub body: Value,
    /// Content type.
    pub content_type: String,
}

impl Reply {
    /// The problem `code`, if the body is a problem.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::reply(req.send().await.expect("request sent")).await
    }

    /// Sends a raw body with a content type.
    pub async fn raw(&self, method: &str, path: &str, token: Option<&str>, content_type: &str, body: Vec<u8>) -> Reply {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::reply(req.send().await.expect("request sent")).await
    }

    async fn reply(res: reqwest::Response) -> Reply {
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = res.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body, content_type }
    }

    /// Signs a demo staff member in; returns the access token.
    pub async fn staff_token(&self, username: &str) -> String {
        let r = self
            .call(
                "POST",
                "/api/v1/auth/staff/login",
                None,
                Some(json!({"username": username, "password": signaling::demo::DEMO_PASSWORD})),
            )
            .await;
        assert_eq!(r.status, 200, "login {username}: {}", r.body);
        r.body["access_token"].as_str().unwrap().to_string()
    }

    /// Signs a resident in by phone and code; returns the whole token response.
    pub async fn resident_login(&self, phone: &str) -> Value {
        let r = self.call("POST", "/api/v1/auth/otp/request", None, Some(json!({"phone": phone}))).await;
        assert_eq!(r.status, 202, "{}", r.body);
        let code = self.codes.last(phone).expect("a code was sent");
        let r = self
            .call("POST", "/api/v1/auth/otp/verify", None, Some(json!({"phone": phone, "code": code})))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// Signs a resident in; returns the access token.
    pub async fn resident_token(&self, phone: &str) -> String {
        self.resident_login(phone).await["access_token"].as_str().unwrap().to_string()
    }
}
pub mod party;

/// Runs each named `async fn(Arc<dyn Store>)` of the calling test file on SQLite and on
/// PostgreSQL, as `sqlite::<name>` and `postgres::<name>`; the file provides
/// `async fn open(Backend) -> Option<Arc<dyn Store>>` (None: that backend is skipped).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(s) = super::open($crate::Backend::Sqlite).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(s) = super::open($crate::Backend::Postgres).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
    };
}
