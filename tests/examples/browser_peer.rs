//! The Rust participant of the real-browser test (`tests/browser/`): signs in as a staff
//! member, joins a call over the WebSocket signaling protocol with a webrtc-rs peer connection
//! on 127.0.0.1, publishes a VP8 video read from an IVF file (looped) and Opus silence, and
//! reports on stdout, one JSON object per line, what it receives from the other participants.
//!
//! ```text
//! browser_peer --base http://127.0.0.1:8080 --call <id> --username agent.li \
//!              --password demo-pass-2026 --ivf pattern.ivf [--seconds 30]
//! ```
//!
//! Lines: `{"event":"joined",…}`, then `{"event":"stats","vp8":…,"opus":…,…}` every 250 ms,
//! `{"event":"error",…}` on failure. It leaves the call and exits after `--seconds` or when its
//! standard input closes.
//!
//! Independent of the Rust SDK on purpose (it is written in parallel): this is a test peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionIceEvent, RTCSessionDescription,
};

/// What arrived from one remote stream (the publisher's participant id).
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Received {
    vp8: u64,
    opus: u64,
    other: u64,
    vp8_keyframes: u64,
    mime_types: Vec<String>,
}

#[derive(Default)]
struct State {
    received: Mutex<HashMap<String, Received>>,
    connected: AtomicBool,
    sent_video: AtomicU64,
    sent_audio: AtomicU64,
}

struct Handler {
    state: Arc<State>,
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
}

/// Whether a VP8 RTP payload starts a keyframe (descriptor S=1, PID=0, then P bit 0).
fn is_vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else { return false };
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(1) else { return false };
        i = 2;
        if x & 0x80 != 0 {
            i += if payload.get(i).is_some_and(|b| b & 0x80 != 0) { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    b0 & 0x10 != 0 && b0 & 0x07 == 0 && payload.get(i).is_some_and(|h| h & 0x01 == 0)
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(c) = event.candidate.to_json() {
            let _ = self.candidates.send(c);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.connected.store(state == RTCPeerConnectionState::Connected, Ordering::Release);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Poll at once and for good (an unpolled track drops packets and floods the log).
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let stream = track.stream_id().await;
            let kind = track.kind().await;
            let mut mime: Option<String> = None;
            while let Some(ev) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(p) = ev else { continue };
                if mime.is_none() {
                    let ssrc = track.ssrcs().await.first().copied().unwrap_or(p.header.ssrc);
                    let m = track.codec(ssrc).await.map(|c| c.mime_type).unwrap_or_default();
                    let mut rec = state.received.lock().unwrap();
                    rec.entry(stream.clone()).or_default().mime_types.push(m.clone());
                    mime = Some(m);
                }
                let m = mime.as_deref().unwrap_or("").to_ascii_lowercase();
                let mut rec = state.received.lock().unwrap();
                let r = rec.entry(stream.clone()).or_default();
                match kind {
                    RtpCodecKind::Video if m == "video/vp8" => {
                        r.vp8 += 1;
                        if is_vp8_keyframe(&p.payload) {
                            r.vp8_keyframes += 1;
                        }
                    }
                    RtpCodecKind::Audio if m == "audio/opus" => r.opus += 1,
                    _ => r.other += 1,
                }
            }
        });
    }
}

struct Args {
    base: String,
    call: String,
    username: String,
    password: String,
    ivf: String,
    seconds: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut map = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let k = k.strip_prefix("--").ok_or_else(|| anyhow!("unexpected argument {k}"))?.to_owned();
        let v = it.next().ok_or_else(|| anyhow!("--{k} needs a value"))?;
        map.insert(k, v);
    }
    let mut take = |k: &str| map.remove(k).ok_or_else(|| anyhow!("--{k} is required"));
    Ok(Args {
        base: take("base")?,
        call: take("call")?,
        username: take("username")?,
        password: take("password")?,
        ivf: take("ivf")?,
        seconds: take("seconds").ok().map(|s| s.parse()).transpose()?.unwrap_or(30),
    })
}

fn emit(v: Value) {
    println!("{v}");
}

/// VP8 frames of an IVF file.
fn read_ivf(path: &str) -> anyhow::Result<Vec<Bytes>> {
    let data = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    if data.len() < 32 || &data[0..4] != b"DKIF" || &data[8..12] != b"VP80" {
        bail!("{path} is not a VP8 IVF file");
    }
    let header_len = u16::from_le_bytes([data[6], data[7]]) as usize;
    let mut frames = Vec::new();
    let mut i = header_len;
    while i + 12 <= data.len() {
        let size = u32::from_le_bytes(data[i..i + 4].try_into()?) as usize;
        i += 12;
        if i + size > data.len() {
            break;
        }
        frames.push(Bytes::copy_from_slice(&data[i..i + size]));
        i += size;
    }
    if frames.is_empty() {
        bail!("{path} holds no frames");
    }
    Ok(frames)
}

fn local_track(kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let k = if kind == RtpCodecKind::Audio { "audio" } else { "video" };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "browser-peer".to_owned(),
        format!("{k}-browser-peer"),
        k.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec,
            active: true,
            ..Default::default()
        }],
    )))
}

/// 30 fps VP8 from the file (looped; timestamps keep going) and 50 Opus silence frames a second.
async fn publish(audio: Arc<TrackLocalStaticRTP>, video: Arc<TrackLocalStaticRTP>, frames: Vec<Bytes>, state: Arc<State>) {
    const MAX_PAYLOAD: usize = 1100;
    let audio_ssrc = audio.ssrcs().await[0];
    let video_ssrc = video.ssrcs().await[0];
    let (mut aseq, mut vseq) = (rand::random::<u16>(), rand::random::<u16>());
    let (mut ats, mut vts) = (rand::random::<u32>(), rand::random::<u32>());
    // The canonical Opus 20 ms silence frame (TOC 0xf8: CELT FB 20 ms, mono, one frame).
    let silence = Bytes::from_static(&[0xf8, 0xff, 0xfe]);
    let start = tokio::time::Instant::now();
    let mut frame_no = 0usize;
    for tick in 1u64.. {
        // 10 ms ticks: audio every 2nd (20 ms), video on the 30 fps schedule.
        tokio::time::sleep_until(start + Duration::from_millis(10 * tick)).await;
        if tick % 2 == 0 {
            let p = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: 111,
                    sequence_number: aseq,
                    timestamp: ats,
                    ssrc: audio_ssrc,
                    ..Default::default()
                },
                payload: silence.clone(),
            };
            aseq = aseq.wrapping_add(1);
            ats = ats.wrapping_add(960);
            if audio.write_rtp(p).await.is_ok() {
                state.sent_audio.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Frame n is due at n * 33.3 ms.
        while (frame_no as u64) * 100 / 3 <= tick * 10 {
            let frame = &frames[frame_no % frames.len()];
            let chunks: Vec<&[u8]> = frame.chunks(MAX_PAYLOAD).collect();
            for (j, chunk) in chunks.iter().enumerate() {
                let mut payload = Vec::with_capacity(chunk.len() + 1);
                // VP8 payload descriptor: S=1 on the frame's first packet, partition 0.
                payload.push(if j == 0 { 0x10 } else { 0x00 });
                payload.extend_from_slice(chunk);
                let p = rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        payload_type: 96,
                        sequence_number: vseq,
                        timestamp: vts,
                        ssrc: video_ssrc,
                        marker: j + 1 == chunks.len(),
                        ..Default::default()
                    },
                    payload: Bytes::from(payload),
                };
                vseq = vseq.wrapping_add(1);
                if video.write_rtp(p).await.is_ok() {
                    state.sent_video.fetch_add(1, Ordering::Relaxed);
                }
            }
            vts = vts.wrapping_add(3000);
            frame_no += 1;
        }
    }
}

async fn peer_connection(handler: Arc<Handler>) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let mut me = MediaEngine::default();
    me.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut me)?;
    // mDNS off (no multicast where only loopback exists); bind loopback explicitly.
    let se = SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build();
    Ok(Arc::new(
        PeerConnectionBuilder::new()
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(se)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await?,
    ))
}

async fn sign_in(a: &Args) -> anyhow::Result<String> {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/staff/login", a.base))
        .json(&json!({"username": a.username, "password": a.password}))
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    if !status.is_success() {
        bail!("sign-in refused ({status}): {body}");
    }
    body["access_token"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no access_token in {body}"))
}

async fn run(a: Args) -> anyhow::Result<()> {
    let frames = read_ivf(&a.ivf)?;
    let token = sign_in(&a).await?;
    let ws_url = format!("{}/ws", a.base.replacen("http", "ws", 1));
    let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.context("opening the WebSocket")?;
    let (mut sink, mut stream) = ws.split();
    let mut next_id = 1u64;
    let mut send = |msg: Value, with_id: bool| {
        let mut msg = msg;
        let id = next_id;
        if with_id {
            msg["id"] = json!(id);
            next_id += 1;
        }
        (Message::text(msg.to_string()), id)
    };
    /// Reads until the answer to `id`.
    async fn answer_to<S>(stream: &mut S, id: u64) -> anyhow::Result<Value>
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        while let Some(frame) = stream.next().await {
            if let Message::Text(t) = frame? {
                let m: Value = serde_json::from_str(t.as_str())?;
                if m["reply_to"] == json!(id) {
                    if m["type"] == "error" {
                        bail!("refused: {m}");
                    }
                    return Ok(m);
                }
            }
        }
        bail!("socket closed")
    }

    let (hello, id) = send(json!({"type": "hello", "protocol_version": 1, "token": token, "user_agent": "browser-peer"}), true);
    sink.send(hello).await?;
    answer_to(&mut stream, id).await?;
    let (join, id) = send(json!({"type": "join", "call_id": a.call}), true);
    sink.send(join).await?;
    let joined = answer_to(&mut stream, id).await?;
    emit(json!({"event": "joined", "participant_id": joined["participant_id"], "recording": joined["recording"]["recorded"]}));

    let state = Arc::new(State::default());
    let (cand_tx, mut cand_rx) = mpsc::unbounded_channel();
    let pc = peer_connection(Arc::new(Handler { state: Arc::clone(&state), candidates: cand_tx })).await?;
    let opus = RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    };
    let vp8 = RTCRtpCodec { mime_type: "video/VP8".into(), clock_rate: 90_000, ..Default::default() };
    let audio = local_track(RtpCodecKind::Audio, opus, rand::random::<u32>() | 1);
    let video = local_track(RtpCodecKind::Video, vp8, rand::random::<u32>() | 1);
    pc.add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>).await?;
    pc.add_track(Arc::clone(&video) as Arc<dyn TrackLocal>).await?;

    // The client offers first; the server answers, then offers whenever tracks change.
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer.clone()).await?;
    let (msg, offer_id) = send(json!({"type": "sdp_offer", "call_id": a.call, "description": offer}), true);
    sink.send(msg).await?;
    let mut offer_outstanding = true;
    let mut pending_candidates: Vec<RTCIceCandidateInit> = Vec::new();

    let publisher = tokio::spawn(publish(audio, video, frames, Arc::clone(&state)));
    let started = Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs(a.seconds));
    tokio::pin!(deadline);
    let mut stats = tokio::time::interval(Duration::from_millis(250));
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    let (stdin_tx, mut stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = stdin_tx.send(());
    });
    let result: anyhow::Result<()> = loop {
        tokio::select! {
            _ = &mut deadline => break Ok(()),
            _ = &mut stdin_closed => break Ok(()),
            _ = ping.tick() => {
                let (m, _) = send(json!({"type": "ping"}), false);
                sink.send(m).await?;
            }
            _ = stats.tick() => {
                let received = state.received.lock().unwrap().clone();
                let (vp8, opus, keyframes) = received.values().fold((0, 0, 0), |(v, o, k), r| (v + r.vp8, o + r.opus, k + r.vp8_keyframes));
                emit(json!({
                    "event": "stats", "elapsed_ms": started.elapsed().as_millis() as u64,
                    "connected": state.connected.load(Ordering::Acquire),
                    "vp8": vp8, "opus": opus, "vp8_keyframes": keyframes, "by_stream": received,
                    "sent_video": state.sent_video.load(Ordering::Relaxed), "sent_audio": state.sent_audio.load(Ordering::Relaxed),
                }));
            }
            c = cand_rx.recv() => {
                if let Some(c) = c {
                    let (m, _) = send(json!({"type": "ice_candidate", "call_id": a.call, "candidate": c}), false);
                    sink.send(m).await?;
                }
            }
            frame = stream.next() => {
                let Some(frame) = frame else { break Err(anyhow!("the server closed the socket")) };
                let Message::Text(t) = frame? else { continue };
                let m: Value = serde_json::from_str(t.as_str())?;
                match m["type"].as_str().unwrap_or("") {
                    "sdp_answer" if m["reply_to"] == json!(offer_id) => {
                        let d: RTCSessionDescription = serde_json::from_value(m["description"].clone())?;
                        pc.set_remote_description(d).await?;
                        offer_outstanding = false;
                        for c in pending_candidates.drain(..) {
                            let _ = pc.add_ice_candidate(c).await;
                        }
                    }
                    "sdp_offer" => {
                        if offer_outstanding {
                            continue; // the server rolls its offer back and offers again
                        }
                        let d: RTCSessionDescription = serde_json::from_value(m["description"].clone())?;
                        pc.set_remote_description(d).await?;
                        let answer = pc.create_answer(None).await?;
                        pc.set_local_description(answer.clone()).await?;
                        let (msg, _) = send(json!({"type": "sdp_answer", "call_id": a.call, "description": answer}), false);
                        sink.send(msg).await?;
                    }
                    "ice_candidate" => {
                        let c: RTCIceCandidateInit = serde_json::from_value(m["candidate"].clone())?;
                        if offer_outstanding {
                            pending_candidates.push(c);
                        } else {
                            let _ = pc.add_ice_candidate(c).await;
                        }
                    }
                    "error" => emit(json!({"event": "server_error", "message": m})),
                    "call_ended" => break Ok(()),
                    _ => {}
                }
            }
        }
    };
    publisher.abort();
    let (leave, _) = send(json!({"type": "leave", "call_id": a.call}), false);
    let _ = sink.send(leave).await;
    let _ = sink.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), pc.close()).await;
    result
}

#[tokio::main]
async fn main() {
    let code = match args() {
        Err(e) => {
            emit(json!({"event": "error", "message": format!("{e:#}")}));
            2
        }
        Ok(a) => match run(a).await {
            Ok(()) => 0,
            Err(e) => {
                emit(json!({"event": "error", "message": format!("{e:#}")}));
                1
            }
        },
    };
    emit(json!({"event": "exit", "code": code}));
    std::process::exit(code);
}
