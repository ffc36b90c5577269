//! Exactly once across OS processes (issue 5, "Tests"): two `cloud-window` server processes
//! share one database (a SQLite file, then a PostgreSQL database); 20 agents, half connected
//! to each process, accept every offer while 200 residents take tickets on either process at
//! once. Every ticket must be handled exactly once: accepted by one agent, one call, none lost.
//!
//! Claims go through the database (`BEGIN IMMEDIATE` on SQLite, which serializes writers
//! across processes; `FOR UPDATE SKIP LOCKED` on PostgreSQL), so this is the test that the
//! claim is not held in one process's memory. PostgreSQL runs when `TEST_POSTGRES_URL` is set
//! (`scripts/test` sets it; with `CI` set a missing URL fails).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signaling::auth::tokens::Tokens;
use signaling::domain::identity::{PhoneNumber, Role, Username};
use signaling::domain::ids::{ResidentId, StaffId};
use signaling::domain::people::{Resident, Staff};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const SECRET: &str = "test-secret-not-for-production";
const WAIT: Duration = Duration::from_secs(10);

/// A `cloud-window` child process; killed when dropped.
struct Node {
    addr: SocketAddr,
    child: std::process::Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cw-procs-{tag}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts the server binary on `database_url` (open around the clock, so the test does not
/// depend on the hour it runs at) and waits until it is ready.
async fn spawn_node(dir: &Path, database_url: &str, name: &str) -> Node {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let node_dir = dir.join(name);
    std::fs::create_dir_all(&node_dir).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-window"))
        .args(["--listen", &addr.to_string(), "--data-dir", node_dir.to_str().unwrap()])
        .args(["--database-url", database_url, "--queue-tick-ms", "100"])
        .args(["--hours-workday", "00:00-24:00", "--hours-weekend", "00:00-24:00"])
        .env("CW_SECRET", SECRET)
        .env_remove("CW_DEMO")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the server binary starts");
    let node = Node { addr, child };
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await {
            if r.status().is_success() {
                return node;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} did not become ready; log: {}", std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default());
}

/// A raw signaling client that keeps messages it was not waiting for.
struct Ws {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    seen: VecDeque<Value>,
    next_id: u64,
}

impl Ws {
    async fn connect(addr: SocketAddr, token: &str) -> Ws {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("ws connects");
        let mut ws = Ws { socket, seen: VecDeque::new(), next_id: 1 };
        ws.send(json!({"type": "hello", "protocol_version": 1, "token": token})).await;
        ws.next_of("welcome", WAIT).await.expect("welcome");
        ws
    }

    async fn send(&mut self, mut msg: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        msg["id"] = json!(id);
        self.socket.send(Message::Text(msg.to_string().into())).await.expect("ws send");
        id
    }

    /// The next message of type `ty` within `wait`; others are kept.
    async fn next_of(&mut self, ty: &str, wait: Duration) -> Option<Value> {
        if let Some(i) = self.seen.iter().position(|m| m["type"] == ty) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next()).await.ok()??;
            let Ok(Message::Text(t)) = frame else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
            assert_ne!(v["type"], "error", "unexpected error: {v}");
            if v["type"] == ty {
                return Some(v);
            }
            self.seen.push_back(v);
        }
    }

    async fn available(&mut self) {
        self.send(json!({"type": "set_presence", "status": "available"})).await;
        self.next_of("ack", WAIT).await.expect("presence acknowledged");
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A new PostgreSQL database on `TEST_POSTGRES_URL`, or None (skip) outside CI.
async fn fresh_postgres() -> Option<String> {
    let Ok(base) = std::env::var("TEST_POSTGRES_URL") else {
        assert!(std::env::var("CI").is_err(), "CI must set TEST_POSTGRES_URL");
        eprintln!("note: TEST_POSTGRES_URL is not set; PostgreSQL case skipped");
        return None;
    };
    let name = format!("cw_test_{}", Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&base).await.expect("PostgreSQL reachable");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.unwrap();
    pool.close().await;
    // Replace the database name (the path) and keep the query (e.g. `?host=` for a socket).
    let (head, query) = base.split_once('?').map_or((base.as_str(), ""), |(h, q)| (h, q));
    let scheme_end = head.find("://").unwrap() + 3;
    let host_end = head[scheme_end..].find('/').map_or(head.len(), |i| scheme_end + i);
    let q = if query.is_empty() { String::new() } else { format!("?{query}") };
    Some(format!("{}/{name}{q}", &head[..host_end]))
}

async fn exactly_once_across_processes(backend: Backend) {
    let dir = temp_dir(&format!("{backend:?}").to_lowercase());
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("shared.db").display()),
        Backend::Postgres => match fresh_postgres().await {
            Some(u) => u,
            None => return,
        },
    };
    // One after the other, so migrations are applied once; then the second shares them.
    let a = spawn_node(&dir, &url, "node-a").await;
    let b = spawn_node(&dir, &url, "node-b").await;
    assert_ne!(a.child.id(), b.child.id());

    // People, straight into the shared database; tokens signed with the nodes' secret.
    let store = signaling::store::connect(&url).await.expect("the test opens the shared database");
    let tokens = Tokens::new(SECRET.as_bytes(), 900).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let mut agents = Vec::new();
    for i in 0..20 {
        let s = Staff {
            id: StaffId::new(),
            username: Username::parse(&format!("proc.agent{i}")).unwrap(),
            display_name: format!("Agent {i}"),
            role: Role::Agent,
            skills: vec!["social_insurance".into()],
            grid_id: None,
            password_hash: "$argon2id$unused".into(),
            failed_logins: 0,
            locked_until: None,
            disabled: false,
            created_at: now,
        };
        store.insert_staff(&s).await.unwrap();
        agents.push(tokens.issue(s.id.0, Role::Agent, None, now));
    }
    let mut residents = Vec::new();
    for i in 0..200 {
        let r = Resident {
            id: ResidentId::new(),
            name: format!("居民{i}"),
            phone: PhoneNumber::parse(&format!("137{:08}", i)).unwrap(),
            id_number: None,
            birth_date: None,
            elderly: i % 10 == 0,
            disabled: false,
            grid_id: None,
            created_at: now,
        };
        store.insert_resident(&r).await.unwrap();
        residents.push(tokens.issue(r.id.0, Role::Resident, None, now));
    }

    // Agents: accept every offer, end the call, become available again.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let accepted: Arc<tokio::sync::Mutex<Vec<(String, usize)>>> = Default::default();
    let mut tasks = Vec::new();
    for (i, token) in agents.into_iter().enumerate() {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        let (accepted, http) = (accepted.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = Ws::connect(addr, &token).await;
            ws.available().await;
            // Done when no offer came for 5 s (the residents have all taken their tickets by then).
            while let Some(offer) = ws.next_of("ticket_offer", Duration::from_secs(5)).await {
                ws.send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]})).await;
                let Some(assigned) = ws.next_of("call_assigned", Duration::from_secs(5)).await else {
                    continue;
                };
                accepted.lock().await.push((assigned["ticket_id"].as_str().unwrap().to_string(), i));
                let call = assigned["call_id"].as_str().unwrap();
                let r = http.post(format!("http://{addr}/api/v1/calls/{call}/end")).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 204);
                ws.available().await;
            }
        }));
    }
    // Residents take their tickets on either process, all at once.
    let mut takes = Vec::new();
    for (i, token) in residents.into_iter().enumerate() {
        let addr = if i % 2 == 0 { b.addr } else { a.addr };
        let http = http.clone();
        takes.push(tokio::spawn(async move {
            let r = http
                .post(format!("http://{addr}/api/v1/queue/tickets"))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("proc-{i}"))
                .json(&json!({"matter_code": "SI-001"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            assert_eq!(status, 201, "{}", r.text().await.unwrap_or_default());
        }));
    }
    for t in takes {
        t.await.unwrap();
    }
    let started = std::time::Instant::now();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(180), t).await.expect("agents finish").unwrap();
    }
    let took = started.elapsed();

    // Exactly once, counted by the agents and in the database.
    let got = accepted.lock().await.clone();
    let unique: HashSet<&String> = got.iter().map(|(t, _)| t).collect();
    assert_eq!(unique.len(), got.len(), "a ticket was given to two agents");
    assert_eq!(got.len(), 200, "accepted {} of 200 tickets", got.len());
    let by_node = got.iter().fold([0usize; 2], |mut n, (_, agent)| {
        n[agent % 2] += 1;
        n
    });
    assert!(by_node[0] > 0 && by_node[1] > 0, "both processes dispatched: {by_node:?}");
    let counts = db_counts(&url, backend).await;
    assert_eq!(counts["tickets"], 200);
    assert_eq!(counts["calls_with_ticket"], 200, "one call per ticket");
    assert_eq!(counts["distinct_call_tickets"], 200);
    assert_eq!(counts["accept_events"], 200, "one accept per ticket");
    assert_eq!(counts["not_done"], 0, "none lost");
    eprintln!("{backend:?}: 200 tickets, 20 agents, two processes {by_node:?} in {took:?}");
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn db_counts(url: &str, backend: Backend) -> HashMap<&'static str, i64> {
    let queries = [
        ("tickets", "SELECT COUNT(*) FROM tickets"),
        ("calls_with_ticket", "SELECT COUNT(*) FROM calls WHERE ticket_id IS NOT NULL"),
        ("distinct_call_tickets", "SELECT COUNT(DISTINCT ticket_id) FROM calls"),
        ("accept_events", "SELECT COUNT(*) FROM ticket_events WHERE to_state = 'in_call'"),
        ("not_done", "SELECT COUNT(*) FROM tickets WHERE state NOT IN ('done', 'wrap_up')"),
    ];
    let mut out = HashMap::new();
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            for (k, q) in queries {
                out.insert(k, sqlx::query_scalar::<_, i64>(q).fetch_one(&pool).await.unwrap());
            }
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            for (k, q) in queries {
                out.insert(k, sqlx::query_scalar::<_, i64>(q).fetch_one(&pool).await.unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_one_sqlite_file_hand_out_every_ticket_exactly_once() {
    exactly_once_across_processes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_one_postgres_database_hand_out_every_ticket_exactly_once() {
    exactly_once_across_processes(Backend::Postgres).await;
}
