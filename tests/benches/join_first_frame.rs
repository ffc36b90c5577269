//! Join to first frame (issue 3, "Benchmarks"): a resident joins a call the agent has already
//! joined; measured from the resident calling `Call::join` to the agent receiving the first
//! VP8 packet of the resident's keyframe, and to the end of that frame (RTP marker). Sequential
//! calls on loopback, the real server in-process on port 0, real SDK clients.
//!
//! Baseline in the same run, measured the same way on a fresh call each time: the signaling
//! join round trip alone over a raw WebSocket (connect → `hello` → `welcome` → `join` →
//! `joined`).
//!
//! Run (release, loopback-only namespace):
//! `unshare -n -- bash -c 'ip link set lo up && cargo bench -p integration-tests --bench join_first_frame'`.
//! Env: `JFF_CALLS` (default 120), `JFF_MAX_SECS` (default 300) bound the loop.

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_sdk::{AudioSource, Call, CallConfig, CallEvent, MediaKind, VideoSource};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{open_call, quantile, sign_in};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn media_config(base: &str, token: &str, call: client_sdk::CallId) -> CallConfig {
    CallConfig::new(base, token, call)
        .with_audio(Some(AudioSource::TestTone))
        .with_video(Some(VideoSource::TestPattern { fps: 30, bitrate: 500_000 }))
}

/// The raw signaling join round trip (baseline), in ms.
async fn raw_join(addr: std::net::SocketAddr, token: &str, call: client_sdk::CallId) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
    ws.send(Message::text(json!({"type": "hello", "protocol_version": 1, "token": token}).to_string()))
        .await?;
    let mut sent_join = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("socket closed"))??;
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str())?;
        match v["type"].as_str() {
            Some("welcome") if !sent_join => {
                ws.send(Message::text(json!({"id": 1, "type": "join", "call_id": call}).to_string()))
                    .await?;
                sent_join = true;
            }
            Some("joined") => break,
            Some("error") => anyhow::bail!("server error: {v}"),
            _ => {}
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let _ = ws
        .send(Message::text(json!({"id": 2, "type": "leave", "call_id": call}).to_string()))
        .await;
    let _ = ws.close(None).await;
    Ok(ms)
}

/// When each stage of the first frame happened, on the agent's side.
#[derive(Default)]
struct Stages {
    participant_joined: Option<Instant>,
    remote_video_track: Option<Instant>,
    first_video_packet: Option<Instant>,
}

/// Keeps reading a client's events (so the SDK never stalls) and reports the first keyframe
/// packet and the end of that frame on the first remote video track, and when the earlier
/// stages happened (to see where the time goes).
fn watch(
    mut events: tokio::sync::mpsc::Receiver<CallEvent>,
    first: Option<oneshot::Sender<(Instant, Instant)>>,
    stages: Arc<Mutex<Stages>>,
) {
    tokio::spawn(async move {
        let mut first = first;
        while let Some(ev) = events.recv().await {
            if let CallEvent::ParticipantJoined { .. } = &ev {
                stages.lock().unwrap().participant_joined.get_or_insert_with(Instant::now);
            }
            if let CallEvent::RemoteTrack(mut track) = ev {
                let tx = if track.kind == MediaKind::Video { first.take() } else { None };
                if tx.is_some() {
                    stages.lock().unwrap().remote_video_track.get_or_insert_with(Instant::now);
                }
                let stages = stages.clone();
                tokio::spawn(async move {
                    let mut tx = tx;
                    let mut kf_at = None;
                    while let Some(p) = track.packets.recv().await {
                        if tx.is_none() {
                            continue;
                        }
                        stages.lock().unwrap().first_video_packet.get_or_insert(p.received_at);
                        if kf_at.is_none() && p.is_vp8_keyframe() {
                            kf_at = Some(p.received_at);
                        }
                        if let Some(k) = kf_at {
                            if p.ends_frame() {
                                let _ = tx.take().unwrap().send((k, p.received_at));
                            }
                        }
                    }
                });
            }
        }
    });
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if std::env::var("JFF_LOG").is_ok() {
            // Diagnostics: the server's and the crates' logs (RUST_LOG) with timestamps.
            signaling::telemetry::init(signaling::config::LogFormat::Text);
        }
        let calls = env_or("JFF_CALLS", 120);
        let max = Duration::from_secs(env_or("JFF_MAX_SECS", 300));
        let app = integration_tests::spawn_app().await;
        let (agent_token, _) = sign_in(&app, "agent.li").await;
        let (resident_token, resident_id) = sign_in(&app, "13800000001").await;

        let mut base_ms = Vec::new();
        let mut join_ms = Vec::new();
        let mut kf_ms = Vec::new();
        let mut frame_ms = Vec::new();
        let (mut pj_ms, mut track_ms, mut pkt_ms) = (Vec::new(), Vec::new(), Vec::new());
        let mut failures = 0u32;
        let started = Instant::now();
        println!("join_first_frame: up to {calls} sequential calls, at most {max:?}");
        for i in 0..calls {
            if started.elapsed() > max {
                println!("time bound reached after {i} calls");
                break;
            }
            // Baseline: the signaling join round trip on a call of its own.
            let bcall = open_call(&app, &agent_token, &resident_id).await;
            match raw_join(app.addr, &resident_token, bcall).await {
                Ok(ms) => base_ms.push(ms),
                Err(e) => {
                    failures += 1;
                    eprintln!("baseline {i}: {e}");
                }
            }

            // Measured: the agent is in the call; the resident joins.
            let call = open_call(&app, &agent_token, &resident_id).await;
            let (agent, agent_events) = match Call::join(media_config(&app.base, &agent_token, call)).await {
                Ok(x) => x,
                Err(e) => {
                    failures += 1;
                    eprintln!("agent join {i}: {e}");
                    continue;
                }
            };
            let (tx, rx) = oneshot::channel();
            let stages = Arc::new(Mutex::new(Stages::default()));
            watch(agent_events, Some(tx), stages.clone());
            let t0 = Instant::now();
            if std::env::var("JFF_LOG").is_ok() {
                eprintln!("call {i}: resident joins at {}", time::OffsetDateTime::now_utc());
            }
            let resident = match Call::join(media_config(&app.base, &resident_token, call)).await {
                Ok((c, ev)) => {
                    watch(ev, None, Arc::default());
                    c
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("resident join {i}: {e}");
                    let _ = agent.end().await;
                    continue;
                }
            };
            let joined = t0.elapsed().as_secs_f64() * 1e3;
            match tokio::time::timeout(Duration::from_secs(10), rx).await {
                Ok(Ok((kf, end))) => {
                    join_ms.push(joined);
                    kf_ms.push((kf - t0).as_secs_f64() * 1e3);
                    frame_ms.push((end - t0).as_secs_f64() * 1e3);
                    let st = stages.lock().unwrap();
                    let ms = |at: Option<Instant>| at.map_or(f64::NAN, |a| (a - t0).as_secs_f64() * 1e3);
                    pj_ms.push(ms(st.participant_joined));
                    track_ms.push(ms(st.remote_video_track));
                    pkt_ms.push(ms(st.first_video_packet));
                }
                _ => {
                    failures += 1;
                    eprintln!("call {i}: no keyframe within 10 s");
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), agent.end()).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), resident.leave()).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), agent.leave()).await;
        }

        let stat = |name: &str, v: &mut Vec<f64>| -> (f64, f64) {
            v.sort_by(|a, b| a.total_cmp(b));
            let (p50, p99) = (quantile(v, 0.5), quantile(v, 0.99));
            println!(
                "  {name:<46} n={:>4}  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
                v.len(),
                p50,
                p99,
                v.last().copied().unwrap_or(f64::NAN)
            );
            (p50, p99)
        };
        println!("results ({:.0} s, {failures} failures):", started.elapsed().as_secs_f64());
        let (b50, b99) = stat("baseline: raw WS hello→welcome→join→joined", &mut base_ms);
        let (j50, j99) = stat("SDK Call::join returns (joined)", &mut join_ms);
        println!("  where the time goes (agent side, from the resident's Call::join):");
        stat("  agent told the resident joined", &mut pj_ms);
        stat("  agent gets the resident's video track", &mut track_ms);
        stat("  agent gets the first video packet", &mut pkt_ms);
        let (k50, k99) = stat("agent gets first keyframe packet", &mut kf_ms);
        let (f50, f99) = stat("agent gets end of first keyframe (frame)", &mut frame_ms);
        println!("ratios vs baseline:");
        println!("  SDK join          p50 ×{:.1}  p99 ×{:.1}", j50 / b50, j99 / b99);
        println!("  first keyframe    p50 ×{:.1}  p99 ×{:.1}", k50 / b50, k99 / b99);
        println!("  first frame       p50 ×{:.1}  p99 ×{:.1}", f50 / b50, f99 / b99);
        println!(
            "target: first frame p99 < 300 ms → {} ({f99:.1} ms)",
            if f99 < 300.0 { "MET" } else { "MISSED" }
        );
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}
