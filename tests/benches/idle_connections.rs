//! Idle signaling connections (issue 3, "Benchmarks"): memory of the server process holding
//! 10,000 idle authenticated WebSockets (`hello` → `welcome`, then idle; the client answers
//! nothing but sends the protocol's `ping` every 10 s so the server's heartbeat timeout does not
//! close them), against a bare tokio-tungstenite echo server (`examples/ws_echo.rs`, same
//! buffer sizes as the server's `/ws`; one text message echoed, then idle) in the same run.
//!
//! Both run as separate processes (`cloud-window --demo` on SQLite in a temporary directory,
//! and `ws_echo`) so their RSS (`/proc/<pid>/status` VmRSS) is theirs alone. Clients connect
//! from 127.0.0.1–127.0.0.8 in turn to spread the ephemeral ports.
//!
//! Build the two binaries first (`cargo build --release -p signaling --bin cloud-window -p
//! integration-tests --example ws_echo`), then run in a loopback-only namespace with enough
//! file descriptors:
//! `unshare -n -- bash -c 'ip link set lo up && ulimit -n 30000 && cargo bench -p integration-tests --bench idle_connections'`.
//! Env: `IDLE_CONNS` (default 10000), `IDLE_SECS` (idle time before reading RSS, default 5),
//! `IDLE_DEFAULT_ECHO=1` adds the echo server with tungstenite's default buffers.

#[path = "support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::status_kib;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `target/release`, from this bench's own path (`target/release/deps/idle_connections-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent().and_then(|p| p.parent()).expect("target dir").to_path_buf()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(addr: SocketAddr) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "{addr} did not open in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `n` WebSockets to `addr`, each sending `first` and waiting for a reply whose text
/// contains `expect`, then idling until `stop`. Returns how many are open.
async fn open_idle(
    addr: SocketAddr,
    n: u64,
    first: String,
    expect: &'static str,
    ping: bool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, u64, Duration) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    let start = Instant::now();
    let mut ready = Vec::new();
    for i in 0..n {
        if start.elapsed() > Duration::from_secs(180) {
            eprintln!("connect time bound reached at {i}");
            break;
        }
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (ok, failed, first, mut stop) = (ok.clone(), failed.clone(), first.clone(), stop.clone());
        let (rtx, rrx) = tokio::sync::oneshot::channel::<()>();
        ready.push(rrx);
        tokio::spawn(async move {
            let src = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1 + (i % 8) as u8), 0));
            let setup = async {
                let sock = TcpSocket::new_v4()?;
                sock.bind(src)?;
                let tcp = sock.connect(addr).await?;
                let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0);
                let (mut ws, _) =
                    tokio_tungstenite::client_async_with_config(format!("ws://{addr}/ws"), tcp, Some(config)).await?;
                ws.send(Message::text(first)).await?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) if t.as_str().contains(expect) => break,
                        Some(Ok(_)) => {}
                        other => anyhow::bail!("no {expect}: {other:?}"),
                    }
                }
                anyhow::Ok(ws)
            };
            let ws = tokio::time::timeout(Duration::from_secs(20), setup).await;
            drop(permit);
            let Ok(Ok(mut ws)) = ws else {
                if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("connection {i} failed: {:?}", ws.map(|r| r.err()));
                }
                drop(rtx);
                return;
            };
            ok.fetch_add(1, Ordering::Relaxed);
            let _ = rtx.send(());
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(10),
                Duration::from_secs(10),
            );
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    m = ws.next() => if !matches!(m, Some(Ok(_))) { break },
                    _ = tick.tick(), if ping => {
                        if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() { break }
                    }
                }
            }
            let _ = ws.close(None).await;
        });
    }
    for r in ready {
        let _ = r.await;
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), start.elapsed())
}

struct Row {
    name: String,
    rss0: u64,
    rss1: u64,
    hwm: u64,
    open: u64,
    failed: u64,
    took: Duration,
}

async fn measure(name: &str, pid: u32, addr: SocketAddr, n: u64, first: String, expect: &'static str, ping: bool) -> Row {
    let idle = Duration::from_secs(env_or("IDLE_SECS", 5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = status_kib(pid, "VmRSS");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (open, failed, took) = open_idle(addr, n, first, expect, ping, rx).await;
    tokio::time::sleep(idle).await;
    let rss1 = status_kib(pid, "VmRSS");
    let hwm = status_kib(pid, "VmHWM");
    let _ = tx.send(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Row { name: name.into(), rss0, rss1, hwm, open, failed, took }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let n = env_or("IDLE_CONNS", 10_000);
    let target = target_dir();
    let echo_bin = target.join("examples/ws_echo");
    let server_bin = target.join("cloud-window");
    for b in [&echo_bin, &server_bin] {
        assert!(b.exists(), "{} is missing: build it first (see the header of this file)", b.display());
    }
    let mut rows = Vec::new();
    rt.block_on(async {
        println!("idle_connections: {n} idle WebSockets per server, one server at a time");
        let mut echoes = vec![("baseline: ws_echo (server-sized buffers)", "small", "127.0.0.1:18091")];
        if std::env::var("IDLE_DEFAULT_ECHO").is_ok() {
            echoes.push(("ws_echo (tungstenite default buffers)", "default", "127.0.0.1:18092"));
        }
        for (name, mode, listen) in echoes {
            let child = Proc(
                Command::new(&echo_bin)
                    .args([listen, mode])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("ws_echo starts"),
            );
            let addr: SocketAddr = listen.parse().unwrap();
            wait_port(addr).await;
            rows.push(measure(name, child.0.id(), addr, n, "hello".into(), "hello", false).await);
            drop(child);
        }

        let dir = integration_tests::temp_dir("idle");
        let listen = "127.0.0.1:18090";
        let child = Proc(
            Command::new(&server_bin)
                .args(["--demo", "--listen", listen, "--data-dir"])
                .arg(&dir)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cloud-window starts"),
        );
        let addr: SocketAddr = listen.parse().unwrap();
        wait_port(addr).await;
        let http = reqwest::Client::new();
        let token = {
            let start = Instant::now();
            loop {
                let r = http
                    .post(format!("http://{addr}/api/v1/auth/staff/login"))
                    .json(&json!({"username": "agent.li", "password": signaling::demo::DEMO_PASSWORD}))
                    .send()
                    .await;
                if let Ok(r) = r {
                    if r.status() == 200 {
                        let v: serde_json::Value = r.json().await.unwrap();
                        break v["access_token"].as_str().unwrap().to_owned();
                    }
                }
                assert!(start.elapsed() < Duration::from_secs(30), "login failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let hello = json!({"type": "hello", "protocol_version": 1, "token": token}).to_string();
        rows.push(measure("server: cloud-window /ws (hello→welcome)", child.0.id(), addr, n, hello, "welcome", true).await);
        drop(child);
        let _ = std::fs::remove_dir_all(&dir);
    });
    rt.shutdown_timeout(Duration::from_secs(2));

    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "{:<44} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "", "open", "failed", "RSS0 MiB", "RSS MiB", "HWM MiB", "Δ MiB", "B/conn", "took s"
    );
    for r in &rows {
        println!(
            "{:<44} {:>6} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>7.1}",
            r.name,
            r.open,
            r.failed,
            mib(r.rss0),
            mib(r.rss1),
            mib(r.hwm),
            mib(r.rss1.saturating_sub(r.rss0)),
            (r.rss1.saturating_sub(r.rss0) * 1024) as f64 / r.open.max(1) as f64,
            r.took.as_secs_f64()
        );
    }
    let base = &rows[0];
    let srv = rows.last().unwrap();
    let per = |r: &Row| (r.rss1.saturating_sub(r.rss0)) as f64 / r.open.max(1) as f64;
    println!(
        "ratio server/baseline: total RSS ×{:.2}, per-connection Δ ×{:.2}",
        srv.rss1 as f64 / base.rss1.max(1) as f64,
        per(srv) / per(base).max(1e-9)
    );
    // The target read two ways: the memory the 10,000 sockets take (growth), and the whole
    // process including the idle server it runs in.
    let growth = mib(srv.rss1.saturating_sub(srv.rss0));
    let verdict = |ok: bool| if ok && srv.open >= 10_000 { "MET" } else { "MISSED" };
    println!(
        "target: < 100 MiB for 10,000 idle sockets → sockets' memory (growth) {growth:.1} MiB: {}; whole process {:.1} MiB (idle server {:.1} MiB): {}",
        verdict(growth < 100.0),
        mib(srv.rss1),
        mib(srv.rss0),
        verdict(mib(srv.rss1) < 100.0)
    );
}
