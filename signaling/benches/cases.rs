//! Cases benchmark (issue 6, "Benchmark").
//!
//! 1. Upload throughput of a 200-page batch of 1 MB scanned pages over loopback, through the
//!    real server and the real protocol (create → PUT one chunk → finish with SHA-256; the
//!    server writes, fsyncs, hashes and checks magic bytes), sequentially and with 4 uploads in
//!    flight (what the console does), against a plain file copy of the same bytes (with fsync,
//!    as the server does) measured in the same run.
//! 2. Cases created per second through the API (agent, `Idempotency-Key`, 8 in flight) on
//!    SQLite and, when `TEST_POSTGRES_URL` is set, on PostgreSQL (a fresh database, dropped
//!    afterwards).
//!
//!    Baseline in the same run: a raw commit loop (one single-row INSERT per transaction,
//!    8 in flight) on the same database with the server's settings (SQLite: WAL,
//!    `synchronous=NORMAL`; PostgreSQL: defaults), so a case create reads as a number of plain
//!    commits.
//!
//! Run: `cargo bench -p signaling --bench cases`. Env: `CASES_BENCH_PAGES` (default 200),
//! `CASES_BENCH_PAGE_BYTES` (default 1 MiB), `CASES_BENCH_CREATES` (default 500). Every loop is
//! bounded by these counts; nothing leaves loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use signaling::app::{Application, Components};
use signaling::config::Settings;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cw-bench-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A scanned page: JPEG magic bytes, then pseudo-random content (incompressible, like a scan).
fn page(n: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    v.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

struct Server {
    base: String,
    http: reqwest::Client,
    agent: String,
    resident: String,
    dir: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(database_url: Option<String>) -> Server {
        let dir = temp_dir("server");
        let mut settings = Settings::for_tests(dir.clone());
        settings.database_url = database_url;
        settings.demo = true;
        let app = Application::build_with(settings, Components::default()).await.expect("server builds");
        let base = format!("http://{}", app.local_addr());
        let task = tokio::spawn(async move {
            let _ = app.run_until(std::future::pending()).await;
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let login: Value = http
            .post(format!("{base}/api/v1/auth/staff/login"))
            .json(&json!({"username": "agent.li", "password": signaling::demo::DEMO_PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let agent = login["access_token"].as_str().expect("agent signs in").to_string();
        let residents: Value =
            http.get(format!("{base}/api/v1/residents")).bearer_auth(&agent).send().await.unwrap().json().await.unwrap();
        let resident = residents["items"][0]["id"].as_str().expect("a demo resident").to_string();
        Server { base, http, agent, resident, dir, task }
    }

    async fn create_case(&self, key: &str) -> String {
        let res = self
            .http
            .post(format!("{}/api/v1/cases", self.base))
            .bearer_auth(&self.agent)
            .header("Idempotency-Key", key)
            .json(&json!({"matter_code": "MI-003", "resident_id": self.resident}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 201);
        let v: Value = res.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    async fn upload(&self, case: &str, bytes: &[u8]) {
        let r: Value = self
            .http
            .post(format!("{}/api/v1/cases/{case}/documents", self.base))
            .bearer_auth(&self.agent)
            .json(&json!({"content_type": "image/jpeg", "size": bytes.len(), "item_key": "receipts"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = format!("{}{}", self.base, r["content_url"].as_str().expect("document created"));
        let res = self
            .http
            .put(&url)
            .bearer_auth(&self.agent)
            .header("Upload-Offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
        let sha = hex::encode(Sha256::digest(bytes));
        let res = self
            .http
            .post(url.replace("/content", "/finish"))
            .bearer_auth(&self.agent)
            .json(&json!({"sha256": sha}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap_or_default());
    }

    fn stop(self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1_048_576.0 / d.as_secs_f64()
}

async fn upload_batch(server: &Server, pages: &Arc<Vec<Vec<u8>>>, in_flight: usize) -> Duration {
    let case = server.create_case(&format!("bench-batch-{in_flight}")).await;
    let t = Instant::now();
    futures_util::stream::iter(pages.iter())
        .map(|p| server.upload(&case, p))
        .buffer_unordered(in_flight)
        .collect::<Vec<()>>()
        .await;
    t.elapsed()
}

fn file_copy(pages: &[Vec<u8>], fsync: bool) -> Duration {
    let src = temp_dir("copy-src");
    let dst = temp_dir("copy-dst");
    for (i, p) in pages.iter().enumerate() {
        std::fs::write(src.join(format!("{i}.jpg")), p).unwrap();
    }
    let t = Instant::now();
    for i in 0..pages.len() {
        let to = dst.join(format!("{i}.jpg"));
        std::fs::copy(src.join(format!("{i}.jpg")), &to).unwrap();
        if fsync {
            std::fs::File::open(&to).unwrap().sync_all().unwrap();
        }
    }
    let d = t.elapsed();
    let _ = std::fs::remove_dir_all(src);
    let _ = std::fs::remove_dir_all(dst);
    d
}

async fn cases_per_second(server: &Server, n: usize, in_flight: usize, tag: &str) -> f64 {
    let t = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let key = format!("bench-{tag}-{i}");
            async move { server.create_case(&key).await }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<String>>()
        .await;
    n as f64 / t.elapsed().as_secs_f64()
}

/// Runs `n` single-row INSERT transactions, `in_flight` at a time, on `pool`; commits per second.
macro_rules! commit_loop {
    ($pool:expr, $ddl:expr, $n:expr, $in_flight:expr) => {{
        let pool = $pool;
        sqlx::query($ddl).execute(&pool).await.unwrap();
        let t = Instant::now();
        futures_util::stream::iter(0..$n)
            .map(|i| {
                let pool = pool.clone();
                async move {
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query("INSERT INTO bench_rows (v) VALUES ($1)").bind(i as i64).execute(&mut *tx).await.unwrap();
                    tx.commit().await.unwrap();
                }
            })
            .buffer_unordered($in_flight)
            .collect::<Vec<()>>()
            .await;
        let rate = $n as f64 / t.elapsed().as_secs_f64();
        pool.close().await;
        rate
    }};
}

/// Baseline on the server's SQLite file, opened as the server opens it (WAL, NORMAL).
async fn commit_baseline_sqlite(path: &std::path::Path, n: usize, in_flight: usize) -> f64 {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new().max_connections(in_flight as u32).connect_with(options).await.unwrap();
    commit_loop!(pool, "CREATE TABLE IF NOT EXISTS bench_rows (id INTEGER PRIMARY KEY, v BIGINT NOT NULL)", n, in_flight)
}

/// Baseline on a PostgreSQL database.
async fn commit_baseline_pg(url: &str, n: usize, in_flight: usize) -> f64 {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(in_flight as u32).connect(url).await.unwrap();
    commit_loop!(pool, "CREATE TABLE IF NOT EXISTS bench_rows (id BIGSERIAL PRIMARY KEY, v BIGINT NOT NULL)", n, in_flight)
}

async fn fresh_postgres(admin: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let name = format!("cw_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    conn.close().await?;
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    Ok((format!("{host}/{name}{query}"), name))
}

async fn drop_postgres(admin: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let n_pages = env_usize("CASES_BENCH_PAGES", 200).clamp(1, 2000);
        let page_bytes = env_usize("CASES_BENCH_PAGE_BYTES", 1 << 20).clamp(1024, 8 << 20);
        let n_creates = env_usize("CASES_BENCH_CREATES", 500).clamp(1, 100_000);
        let pages: Arc<Vec<Vec<u8>>> = Arc::new((0..n_pages).map(|i| page(page_bytes, i as u64 + 1)).collect());
        let total = n_pages * page_bytes;
        println!("cases bench: {n_pages} pages x {page_bytes} bytes = {:.1} MiB", total as f64 / 1_048_576.0);

        let server = Server::start(None).await;
        // Warm-up (a few pages into a throwaway case) so connection set-up is not measured.
        let warm = server.create_case("bench-warm").await;
        for i in 0..3u64 {
            server.upload(&warm, &page(page_bytes, 9_999 + i)).await;
        }
        let copy_sync = file_copy(&pages, true);
        let copy_plain = file_copy(&pages, false);
        let seq = upload_batch(&server, &pages, 1).await;
        let par = upload_batch(&server, &pages, 4).await;
        println!("upload, 1 in flight:      {:>8.2} s  {:>8.1} MiB/s", seq.as_secs_f64(), mb_per_s(total, seq));
        println!("upload, 4 in flight:      {:>8.2} s  {:>8.1} MiB/s", par.as_secs_f64(), mb_per_s(total, par));
        println!("file copy + fsync:        {:>8.2} s  {:>8.1} MiB/s", copy_sync.as_secs_f64(), mb_per_s(total, copy_sync));
        println!("file copy (page cache):   {:>8.2} s  {:>8.1} MiB/s", copy_plain.as_secs_f64(), mb_per_s(total, copy_plain));
        println!(
            "ratio upload(4)/copy+fsync time: {:.2}x   upload(1)/copy+fsync: {:.2}x",
            par.as_secs_f64() / copy_sync.as_secs_f64(),
            seq.as_secs_f64() / copy_sync.as_secs_f64()
        );

        let rate = cases_per_second(&server, n_creates, 8, "sqlite").await;
        let base = commit_baseline_sqlite(&server.dir.join("cloud-window.db"), n_creates, 8).await;
        println!("cases created per second, SQLite:     {rate:>8.0}  ({n_creates} cases, 8 in flight, via HTTP)");
        println!("  baseline: raw commit loop, SQLite:  {base:>8.0}  commits/s (same file, 8 in flight); ratio {:.3}", rate / base);
        server.stop();

        match std::env::var("TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty()) {
            Some(admin) => match fresh_postgres(&admin).await {
                Ok((url, name)) => {
                    let server = Server::start(Some(url.clone())).await;
                    let _ = server.create_case("bench-warm").await;
                    let rate = cases_per_second(&server, n_creates, 8, "pg").await;
                    let base = commit_baseline_pg(&url, n_creates, 8).await;
                    println!("cases created per second, PostgreSQL: {rate:>8.0}  ({n_creates} cases, 8 in flight, via HTTP)");
                    println!("  baseline: raw commit loop, PG:      {base:>8.0}  commits/s (same database, 8 in flight); ratio {:.3}", rate / base);
                    server.stop();
                    drop_postgres(&admin, &name).await;
                }
                Err(e) => println!("PostgreSQL: could not create a database: {e}"),
            },
            None => println!("PostgreSQL: TEST_POSTGRES_URL not set; skipped"),
        }
    });
}
