//! Capacity (issue 3, "Benchmarks"): concurrent two-party calls, each side publishing
//! ≈500 kbps VP8-shaped video (30 fps) + Opus-sized audio (50 packets/s) through the server's
//! relay, ramped in steps (default 5, 10, 20, 40 calls; calls are added, not restarted). At
//! each step, after a warm-up, a window of `CAP_SECS` (default 5) seconds is measured:
//!
//! * loss, sent vs received: RTP packets the SDK clients sent (`Call::packets_sent`) against
//!   packets the other side's SDK handed to the application; the received snapshots are taken
//!   100 ms after the sent snapshots so in-flight packets do not count as lost;
//! * loss from RTP sequence gaps on every received track (independent cross-check);
//! * server CPU: the server runs in this process on its own tokio runtime (threads `srv-*`),
//!   the clients on another (`cli-*`); CPU = run time of those threads (`schedstat`). The
//!   clients run on the same 2-core machine, so the machine saturates long before the server
//!   alone would: calls per server core are extrapolated from the server's CPU share.
//!
//! Baseline in the same run: the same clients and media with no server relay in between is
//! not possible with the SDK, so the baseline is the cost side: client CPU per call, printed
//! next to server CPU per call (the ratio says how much of the machine the test itself eats).
//!
//! Run: `unshare -n -- bash -c 'ip link set lo up && cargo bench -p integration-tests --bench capacity'`.
//! Env: `CAP_STEPS` (e.g. `5,10,20,40`), `CAP_SECS`, `CAP_MAX_SECS` (whole run, default 400).

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client_sdk::{AudioSource, Call, CallConfig, CallEvent, VideoSource};
use support::{machine_jiffies, open_call, sign_in, threads_cpu_ns, wait_until};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Receive counters of one remote track.
#[derive(Default)]
struct TrackCounters {
    received: AtomicU64,
    /// Highest extended sequence number seen + 1 (0: none yet).
    highest: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Counters {
    tracks: std::sync::Mutex<Vec<Arc<TrackCounters>>>,
}

impl Counters {
    fn received(&self) -> u64 {
        self.tracks.lock().unwrap().iter().map(|t| t.received.load(Ordering::Relaxed)).sum()
    }
    fn highest(&self) -> u64 {
        self.tracks.lock().unwrap().iter().map(|t| t.highest.load(Ordering::Relaxed)).sum()
    }
    fn dropped(&self) -> u64 {
        self.tracks.lock().unwrap().iter().map(|t| t.dropped.load(Ordering::Relaxed)).sum()
    }
    fn track_count(&self) -> usize {
        self.tracks.lock().unwrap().len()
    }
}

fn watch(mut events: tokio::sync::mpsc::Receiver<CallEvent>, counters: Arc<Counters>) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let CallEvent::RemoteTrack(mut track) = ev {
                let c = Arc::new(TrackCounters::default());
                counters.tracks.lock().unwrap().push(c.clone());
                tokio::spawn(async move {
                    let mut ext: Option<u64> = None;
                    while let Some(p) = track.packets.recv().await {
                        // Extend the 16-bit sequence number.
                        let e = match ext {
                            None => (1u64 << 20) + u64::from(p.sequence_number),
                            Some(prev) => {
                                let delta = p.sequence_number.wrapping_sub(prev as u16) as i16;
                                (prev as i64 + i64::from(delta)) as u64
                            }
                        };
                        if ext.map_or(true, |prev| e > prev) {
                            ext = Some(e);
                            c.highest.store(e + 1, Ordering::Relaxed);
                        }
                        c.received.fetch_add(1, Ordering::Relaxed);
                        c.dropped.store(track.dropped(), Ordering::Relaxed);
                    }
                });
            }
        }
    });
}

struct Pair {
    agent: Call,
    resident: Call,
}

fn media(base: &str, token: &str, call: client_sdk::CallId) -> CallConfig {
    CallConfig::new(base, token, call)
        .with_audio(Some(AudioSource::TestTone))
        .with_video(Some(VideoSource::TestPattern { fps: 30, bitrate: 500_000 }))
}

fn main() {
    let srv = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("srv-rt")
        .enable_all()
        .build()
        .expect("server runtime");
    let cli = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cli-rt")
        .enable_all()
        .build()
        .expect("client runtime");
    let app = srv.block_on(integration_tests::spawn_app());
    let steps: Vec<usize> = std::env::var("CAP_STEPS")
        .unwrap_or_else(|_| "5,10,20,40".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let secs = env_or("CAP_SECS", 5);
    let max = Duration::from_secs(env_or("CAP_MAX_SECS", 400));
    let ticks = 100.0; // USER_HZ
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;

    cli.block_on(async {
        let started = Instant::now();
        let (agent_token, _) = sign_in(&app, "agent.li").await;
        let (resident_token, resident_id) = sign_in(&app, "13800000001").await;
        let counters = Arc::new(Counters::default());
        let mut pairs: Vec<Pair> = Vec::new();
        let relay = || app.state.signaling.hub.relay().stats();
        println!("capacity: steps {steps:?}, {secs} s windows, {cores} cores shared by server and clients");
        println!(
            "{:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7} {:>9}",
            "calls", "sent/s", "recv/s", "loss%", "seqloss%", "sdkdrop", "srv cpu%", "cli cpu%", "machine%", "ratio", "calls/core"
        );
        let mut best: Option<(usize, f64)> = None;
        for &n in &steps {
            if started.elapsed() > max {
                println!("time bound reached before step {n}");
                break;
            }
            // Add calls up to n.
            let t_setup = Instant::now();
            let mut failed = 0;
            while pairs.len() < n && t_setup.elapsed() < Duration::from_secs(120) {
                let call = open_call(&app, &agent_token, &resident_id).await;
                let a = Call::join(media(&app.base, &agent_token, call)).await;
                let r = Call::join(media(&app.base, &resident_token, call)).await;
                match (a, r) {
                    (Ok((agent, ae)), Ok((resident, re))) => {
                        watch(ae, counters.clone());
                        watch(re, counters.clone());
                        pairs.push(Pair { agent, resident });
                    }
                    (a, r) => {
                        failed += 1;
                        eprintln!("join failed: {:?} / {:?}", a.err(), r.err());
                        if failed > 5 {
                            break;
                        }
                    }
                }
            }
            if pairs.len() < n {
                println!("step {n}: only {} calls could be set up; stopping", pairs.len());
                break;
            }
            // Warm-up: every call has its 4 remote tracks (2 per side), then settle.
            let all = wait_until(Duration::from_secs(30), || counters.track_count() >= 4 * n).await;
            if !all {
                println!("step {n}: only {} of {} remote tracks arrived in 30 s", counters.track_count(), 4 * n);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;

            let sent = |p: &Vec<Pair>| p.iter().map(|p| p.agent.packets_sent() + p.resident.packets_sent()).sum::<u64>();
            let s0 = sent(&pairs);
            let (srv0, cli0, m0, r0) = (threads_cpu_ns("srv-rt"), threads_cpu_ns("cli-rt"), machine_jiffies(), relay());
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (rx0, hi0, d0) = (counters.received(), counters.highest(), counters.dropped());
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let s1 = sent(&pairs);
            let (srv1, cli1, m1, r1) = (threads_cpu_ns("srv-rt"), threads_cpu_ns("cli-rt"), machine_jiffies(), relay());
            let win = t0.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (rx1, hi1, d1) = (counters.received(), counters.highest(), counters.dropped());

            let sent_n = (s1 - s0) as f64;
            let recv_n = (rx1 - rx0) as f64;
            let loss = (1.0 - recv_n / sent_n).max(0.0) * 100.0;
            let expected = (hi1 - hi0) as f64;
            let seqloss = if expected > 0.0 { (1.0 - recv_n / expected).max(0.0) * 100.0 } else { f64::NAN };
            let srv_cpu = (srv1 - srv0) as f64 / 1e9 / win; // cores
            let cli_cpu = (cli1 - cli0) as f64 / 1e9 / win;
            let machine = ((m1.0 - m0.0) as f64 / ticks) / win; // cores busy
            let per_core = n as f64 / srv_cpu.max(1e-9);
            println!(
                "{:>5} {:>9.0} {:>9.0} {:>8.3} {:>8.3} {:>8} {:>8.0}% {:>8.0}% {:>8.0}% {:>7.2} {:>9.1}",
                n,
                sent_n / win,
                recv_n / win,
                loss,
                seqloss,
                d1 - d0,
                srv_cpu * 100.0,
                cli_cpu * 100.0,
                machine * 100.0 / cores,
                cli_cpu / srv_cpu.max(1e-9),
                per_core
            );
            println!(
                "      relay: {} packets in, {} forwarded, {} forward errors in the window; server ingress loss {:.3}%",
                r1.packets_received - r0.packets_received,
                r1.packets_forwarded - r0.packets_forwarded,
                r1.forward_errors - r0.forward_errors,
                (1.0 - (r1.packets_received - r0.packets_received) as f64 / sent_n).max(0.0) * 100.0
            );
            if loss < 0.5 {
                best = Some((n, per_core));
            }
        }
        println!("columns: loss% = 1 − received/sent (SDK counters); seqloss% from RTP sequence gaps;");
        println!("  srv/cli cpu% = CPU of the server / client runtime threads (100% = one core); machine% = all cores busy;");
        println!("  ratio = client CPU / server CPU (baseline: what the load generator itself costs);");
        println!("  calls/core = calls / server cores used (extrapolation: server CPU only).");
        match best {
            Some((n, pc)) => println!(
                "largest step under 0.5% loss: {n} calls, {pc:.1} calls per server core (target 125) → {}",
                if pc >= 125.0 { "MET (extrapolated)" } else { "MISSED" }
            ),
            None => println!("no step stayed under 0.5% loss → MISSED"),
        }
        for p in pairs {
            let _ = tokio::time::timeout(Duration::from_secs(2), p.agent.end()).await;
            drop(p);
        }
    });
    cli.shutdown_timeout(Duration::from_secs(2));
    drop(app);
    srv.shutdown_timeout(Duration::from_secs(2));
}
