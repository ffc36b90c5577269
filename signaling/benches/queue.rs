//! Queue benchmark (issue 5): enqueue-to-offer latency (p50/p99) and sustained dispatches per
//! second with 200 agents, on SQLite (WAL, synchronous=FULL) and on PostgreSQL
//! (`TEST_POSTGRES_URL`), against a baseline in the same run: a raw single-row commit loop on
//! the same database.
//!
//! A "dispatch" is a ticket offered to an agent (the offer delivered to the agent's session).
//! The agents accept at once, the call is ended, and they become available again, so the
//! sustained figure is the whole cycle: take → offer → accept (call opened) → wrap-up → done.
//!
//! Run: `cargo bench -p signaling --bench queue` (set `QUEUE_BENCH_TICKETS` to change the
//! burst size, default 2000).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signaling::domain::clock::{Clock, SystemClock};
use signaling::domain::identity::{PhoneNumber, Role, Username};
use signaling::domain::ids::{ResidentId, StaffId};
use signaling::domain::people::{Resident, Staff};
use signaling::domain::queue::{Channel, Presence, ServiceHours, Window};
use signaling::queue::{Queue, QueueSettings, TakeMode, TakeTicket};
use signaling::store::{self, PgStore, SqliteStore, Store};
use signaling::ws::Session;
use tokio::sync::{mpsc, Mutex};
use uuid::Uuid;

const AGENTS: usize = 200;
const LATENCY_SAMPLES: usize = 300;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn baseline_sqlite(store: &SqliteStore, n: usize) -> f64 {
    let pool = store.pool();
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_rows (id INTEGER PRIMARY KEY, v BIGINT NOT NULL)").execute(pool).await.unwrap();
    let t = Instant::now();
    for i in 0..n {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO bench_rows (v) VALUES ($1)").bind(i as i64).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn baseline_pg(store: &PgStore, n: usize) -> f64 {
    let pool = store.pool();
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_rows (id BIGSERIAL PRIMARY KEY, v BIGINT NOT NULL)").execute(pool).await.unwrap();
    let t = Instant::now();
    for i in 0..n {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO bench_rows (v) VALUES ($1)").bind(i as i64).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

struct Fixture {
    queue: Arc<Queue>,
    residents: Vec<Uuid>,
    offers: Arc<Mutex<HashMap<Uuid, Instant>>>,
    offered: Arc<tokio::sync::Notify>,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

async fn fixture(store: Arc<dyn Store>, tickets: usize) -> Fixture {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now_ms();
    store::seed_catalogue(store.as_ref(), now).await.unwrap();
    let always = Window { open_min: 0, close_min: 1440 };
    let hours = ServiceHours { workday: always, weekend: always, ..ServiceHours::default() };
    let settings = QueueSettings { queue_tick_ms: 50, ..QueueSettings::default() };
    let queue = Queue::new(store.clone(), clock.clone(), settings, hours).unwrap();
    queue.start();
    let mut residents = Vec::new();
    for i in 0..tickets + LATENCY_SAMPLES {
        let r = Resident {
            id: ResidentId::new(),
            name: format!("居民{i}"),
            phone: PhoneNumber::parse(&format!("13{:09}", i)).unwrap(),
            id_number: None,
            birth_date: None,
            elderly: i % 7 == 0,
            disabled: false,
            grid_id: None,
            created_at: now,
        };
        store.insert_resident(&r).await.unwrap();
        residents.push(r.id.0);
    }
    let offers: Arc<Mutex<HashMap<Uuid, Instant>>> = Default::default();
    let offered = Arc::new(tokio::sync::Notify::new());
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..AGENTS {
        let s = Staff {
            id: StaffId::new(),
            username: Username::parse(&format!("bench.agent{i}")).unwrap(),
            display_name: format!("Agent {i}"),
            role: Role::Agent,
            skills: vec!["social_insurance".into(), "medical_insurance".into()],
            grid_id: None,
            password_hash: "-".into(),
            failed_logins: 0,
            locked_until: None,
            disabled: false,
            created_at: now,
        };
        store.insert_staff(&s).await.unwrap();
        let session = Session::new(s.id.0, Role::Agent);
        let (tx, mut rx) = mpsc::channel::<Arc<str>>(64);
        session.attach(i as u64, tx, None).unwrap();
        queue.attach(&session).await;
        queue.set_presence(&session, Presence::Available, None, None).await.ok();
        let (queue, store, offers, offered, count) = (queue.clone(), store.clone(), offers.clone(), offered.clone(), count.clone());
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                match v["type"].as_str() {
                    Some("ticket_offer") => {
                        let ticket: Uuid = v["ticket_id"].as_str().unwrap().parse().unwrap();
                        offers.lock().await.insert(ticket, Instant::now());
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        offered.notify_waiters();
                        let offer: Uuid = v["offer_id"].as_str().unwrap().parse().unwrap();
                        let _ = queue.accept(&session, offer, None).await;
                    }
                    Some("call_assigned") => {
                        let call: Uuid = v["call_id"].as_str().unwrap().parse().unwrap();
                        store.end_call(call, SystemClock.now_ms(), "hung_up", None).await.unwrap();
                        let _ = queue.set_presence(&session, Presence::Available, None, None).await;
                    }
                    _ => {}
                }
            }
        });
    }
    Fixture { queue, residents, offers, offered, count }
}

fn take(resident: Uuid, matter: &str) -> TakeTicket {
    TakeTicket {
        matter_code: matter.into(),
        resident_id: resident,
        taken_by: resident,
        taken_by_role: Role::Resident,
        channel: Channel::Phone,
        dedupe_key: None,
        mode: TakeMode::Now,
        callback_phone: None,
    }
}

async fn run(label: &str, store: Arc<dyn Store>, baseline: f64, tickets: usize) {
    let f = fixture(store, tickets).await;
    // Latency: one ticket at a time, measured from the call that takes it to the offer
    // arriving at the agent's session.
    let mut lat = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let matter = if i % 2 == 0 { "SI-001" } else { "MI-001" };
        let t0 = Instant::now();
        let (t, _) = f.queue.take(take(f.residents[i], matter)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let waiter = f.offered.notified();
            if let Some(at) = f.offers.lock().await.get(&t.id) {
                lat.push(at.saturating_duration_since(t0));
                break;
            }
            if Instant::now() > deadline {
                panic!("no offer within 5 s");
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), waiter).await;
        }
    }
    lat.sort();
    // Sustained: a burst of tickets, 200 agents taking them as fast as they come back.
    let before = f.count.load(std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    let mut takers = Vec::new();
    for chunk in f.residents[LATENCY_SAMPLES..].chunks(tickets.div_ceil(8)) {
        let q = f.queue.clone();
        let chunk = chunk.to_vec();
        takers.push(tokio::spawn(async move {
            for (i, r) in chunk.into_iter().enumerate() {
                q.take(take(r, if i % 2 == 0 { "SI-002" } else { "MI-002" })).await.unwrap();
            }
        }));
    }
    for t in takers {
        t.await.unwrap();
    }
    let enqueued = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while f.count.load(std::sync::atomic::Ordering::SeqCst) - before < tickets {
        assert!(Instant::now() < deadline, "dispatch did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let rate = tickets as f64 / elapsed.as_secs_f64();
    println!("== {label} ==");
    println!("  baseline: raw single-row commit loop        {baseline:>9.0} commits/s");
    println!(
        "  enqueue-to-offer latency ({} samples)      p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        lat.len(),
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        pct(&lat, 1.0).as_secs_f64() * 1e3
    );
    println!("  sustained: {tickets} tickets, {AGENTS} agents, full cycle  {rate:>9.0} dispatches/s  (enqueue took {:.2} s, all offered after {:.2} s)", enqueued.as_secs_f64(), elapsed.as_secs_f64());
    println!("  ratio dispatches/s : baseline commits/s     {:>9.3}", rate / baseline);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tickets: usize = std::env::var("QUEUE_BENCH_TICKETS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let dir = std::env::temp_dir().join(format!("cw-queue-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let sqlite = SqliteStore::connect_full_sync(&url).await.unwrap();
    let base = baseline_sqlite(&sqlite, 2000).await;
    run("SQLite (WAL, synchronous=FULL)", Arc::new(sqlite), base, tickets).await;
    let _ = std::fs::remove_dir_all(&dir);

    match std::env::var("TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty()) {
        Some(admin) => {
            use sqlx::Connection;
            let name = format!("cw_bench_{}", Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
            let (base_url, query) = match admin.split_once('?') {
                Some((b, q)) => (b.to_string(), format!("?{q}")),
                None => (admin.clone(), String::new()),
            };
            let host = &base_url[..base_url.rfind('/').unwrap()];
            let url = format!("{host}/{name}{query}");
            let pg = PgStore::connect(&url).await.unwrap();
            let base = baseline_pg(&pg, 2000).await;
            run("PostgreSQL", Arc::new(pg), base, tickets).await;
        }
        None => println!("== PostgreSQL == skipped: set TEST_POSTGRES_URL"),
    }
}
