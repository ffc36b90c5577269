//! Recording cost (issue 4, "Benchmark"): server CPU per two-party call, relayed without
//! recording and relayed with recording, in the same run.
//!
//! Each call has two webrtc-rs participants, both publishing ≈500 kbps video (30 fps, ≤1,000-byte
//! packets) + Opus-like audio (50 packets/s) and receiving each other. The server side (relay
//! connections, forwarding, the recorder's tasks) runs on its own tokio runtime (threads named
//! `relay-*`); the recorder's per-call writer threads are named `rec-*`; clients run on another
//! runtime. Server CPU = run time of the `relay-*` and `rec-*` threads over the measuring window
//! (`/proc/self/task/*/schedstat`). The recorder writes WebM segments (10 s) to a spool in a
//! temporary directory, signs manifests, and uploads to a `file://` object store there.
//!
//! The measuring window covers the whole life of a recording, not only its steady state: it
//! starts once media flows, lasts `REC_BENCH_SECS` of media (default 25 s: two segment
//! roll-overs, each with its keyframe request, segment finish, hash, manifest re-sign and
//! upload), and ends only after the participants left and, for the recorded variant, the
//! recording was finished, sealed in the chain and every file uploaded. The CPU of all of it is
//! divided by the seconds of media.
//!
//! The two variants alternate (plain, recorded, plain, recorded, ...) to spread machine noise.
//!
//! Run: `cargo bench -p signaling --bench recording_cpu` (inside `unshare -n` for a
//! loopback-only network). Env: `REC_BENCH_CALLS` (default 4), `REC_BENCH_SECS` (default 25),
//! `REC_BENCH_ROUNDS` (default 3).

#[path = "../tests/sfu_support/mod.rs"]
#[allow(dead_code)]
mod sfu_support;

use std::sync::Arc;
use std::time::Duration;

use sfu_support::{Client, MediaProfile};
use signaling::domain::clock::SystemClock;
use signaling::recorder::{Recorder, RecorderConfig};
use signaling::sfu::{Relay, RelayConfig, TapFactory};
use uuid::Uuid;

/// Total run time (ns) of this process's threads whose name starts with one of `prefixes`.
fn threads_cpu_ns(prefixes: &[&str]) -> u64 {
    let mut total = 0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    for t in tasks.flatten() {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !prefixes.iter().any(|x| comm.starts_with(x)) {
            continue;
        }
        let sched = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
        total += sched.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    total
}

struct Row {
    recorded: bool,
    calls: usize,
    packets_in: u64,
    cpu_ns: u64,
    /// Seconds of media in the window.
    secs: f64,
    /// Seconds from the participants leaving until the recording was sealed and uploaded.
    teardown_secs: f64,
    /// Segment files that reached the object store in the window.
    segments: usize,
    dropped: u64,
}

/// Files under `dir`.
fn files_under(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// `.webm` files under `dir`.
fn webm_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "webm") {
                n += 1;
            }
        }
    }
    n
}

async fn scenario(
    relay_rt: &tokio::runtime::Handle,
    recorder: Option<Arc<Recorder>>,
    store_dir: &std::path::Path,
    calls: usize,
    secs: u64,
) -> Row {
    let config = RelayConfig { tap: recorder.clone().map(|r| r as Arc<dyn TapFactory>), ..Default::default() };
    let relay = Relay::new(config);
    if let Some(r) = &recorder {
        r.attach_relay(relay.downgrade());
    }
    let mut clients = Vec::new();
    for _ in 0..calls {
        let call = Uuid::new_v4();
        let profile = MediaProfile { video_bps: 500_000, publish: true };
        let a = Client::join_on(&relay, call, Uuid::new_v4(), profile, Some(relay_rt)).await;
        let b = Client::join_on(&relay, call, Uuid::new_v4(), profile, Some(relay_rt)).await;
        let (ai, bi) = (a.id, b.id);
        a.wait_until(Duration::from_secs(15), "a receives b", |c| c.received_from(bi).video_packets > 0).await;
        b.wait_until(Duration::from_secs(15), "b receives a", |c| c.received_from(ai).video_packets > 0).await;
        clients.push(a);
        clients.push(b);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let prefixes = ["relay", "rec-"];
    let s0 = relay.stats();
    let c0 = threads_cpu_ns(&prefixes);
    let d0 = recorder.as_ref().map_or(0, |r| r.dropped_packets());
    let w0 = webm_files(store_dir);
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let s1 = relay.stats();
    let elapsed = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    for c in clients {
        c.leave().await;
    }
    // Teardown is part of the cost: wait until every recording is finished, sealed and
    // uploaded (bounded).
    if let Some(r) = &recorder {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while (r.active_recordings() > 0 || r.pending_uploads() > 0) && std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(r.active_recordings(), 0, "recordings did not finish within 60 s");
        // Uploaded: the spool holds no segment and no manifest any more.
        let spool = r.config().spool.join("recordings");
        while files_under(&spool) > 0 && std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let teardown_secs = t1.elapsed().as_secs_f64();
    let c1 = threads_cpu_ns(&prefixes);
    let d1 = recorder.as_ref().map_or(0, |r| r.dropped_packets());
    Row {
        recorded: recorder.is_some(),
        calls,
        packets_in: s1.packets_received - s0.packets_received,
        cpu_ns: c1 - c0,
        secs: elapsed,
        teardown_secs,
        segments: webm_files(store_dir) - w0,
        dropped: d1 - d0,
    }
}

fn main() {
    let calls: usize = std::env::var("REC_BENCH_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let secs: u64 = std::env::var("REC_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(25);
    let rounds: usize = std::env::var("REC_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let relay_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay-rt")
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client-rt")
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("cw-rec-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let recorder = {
        let dir = dir.clone();
        relay_rt.block_on(async move {
            let db = signaling::store::connect(&format!("sqlite://{}", dir.join("bench.db").display())).await.unwrap();
            let config = RecorderConfig {
                spool: dir.join("spool"),
                store_url: format!("file://{}", dir.join("store").display()),
                segment: Duration::from_secs(10),
                linger: Duration::from_secs(1),
                retention_days: 180,
                upload_retry_first: Duration::from_secs(1),
                upload_retry_max: Duration::from_secs(5),
                sweep_every: Duration::from_secs(3600),
            };
            let signer = recordings::Signer::new(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
            Recorder::start_with(config, signer, db, Arc::new(SystemClock), None).await.unwrap()
        })
    };
    let rt = relay_rt.handle().clone();
    let store_dir = dir.join("store");
    let rows: Vec<Row> = client_rt.block_on(async {
        let mut rows = Vec::new();
        for round in 0..rounds {
            rows.push(scenario(&rt, None, &store_dir, calls, secs).await);
            rows.push(scenario(&rt, Some(recorder.clone()), &store_dir, calls, secs).await);
            eprintln!("round {} of {rounds} done", round + 1);
        }
        rows
    });
    println!(
        "recording cost: {calls} two-party calls, both publishing ≈500 kbps video + audio, {secs} s of media per window \
         (10 s segments), CPU counted until the recordings are sealed and uploaded, {rounds} rounds"
    );
    println!(
        "{:<11} {:>6} {:>12} {:>14} {:>16} {:>10} {:>9} {:>9}",
        "variant", "calls", "packets/s", "server CPU %", "CPU ms/call·s", "teardown s", "segments", "dropped"
    );
    let mut sums = [(0f64, 0usize); 2];
    for r in &rows {
        let cpu_pct = r.cpu_ns as f64 / 1e9 / r.secs * 100.0;
        let per_call = r.cpu_ns as f64 / 1e6 / r.secs / r.calls as f64;
        sums[usize::from(r.recorded)].0 += per_call;
        sums[usize::from(r.recorded)].1 += 1;
        println!(
            "{:<11} {:>6} {:>12.0} {:>14.1} {:>16.2} {:>10.1} {:>9} {:>9}",
            if r.recorded { "recorded" } else { "relay only" },
            r.calls,
            r.packets_in as f64 / r.secs,
            cpu_pct,
            per_call,
            r.teardown_secs,
            r.segments,
            r.dropped
        );
    }
    let plain = sums[0].0 / sums[0].1.max(1) as f64;
    let rec = sums[1].0 / sums[1].1.max(1) as f64;
    println!("mean server CPU per call: relay only {plain:.2} ms/s, recorded {rec:.2} ms/s");
    let added = (rec / plain - 1.0) * 100.0;
    println!(
        "recording adds {added:+.1} % (target: under 15 %): {}",
        if added < 15.0 { "within the target" } else { "ABOVE THE TARGET" }
    );
    let min_segments = 2 * calls * usize::try_from(secs / 10).unwrap_or(0);
    for r in rows.iter().filter(|r| r.recorded) {
        if r.segments < min_segments {
            println!("warning: a recorded round stored {} segments, expected at least {min_segments}", r.segments);
        }
    }
    relay_rt.block_on(recorder.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}
