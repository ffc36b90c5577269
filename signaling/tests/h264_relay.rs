//! H.264 through the relay: a webrtc-rs peer that offers only H.264 publishes a real libx264
//! stream (encoded by ffmpeg at test time, packetized by the webrtc-rs H.264 payloader); the
//! relay forwards it unchanged to a participant whose connection negotiated H.264, and the
//! call's recording of the publisher is Matroska (`.mkv`) that ffprobe reads as h264, served as
//! `video/x-matroska`.
//!
//! Needs ffmpeg with libx264; run inside a loopback-only network namespace:
//! `unshare -n -- bash -c 'ip link set lo up && cargo test -p signaling --test h264_relay'`.

mod rec_support;
mod sfu_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rec_support::*;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{json, Value};
use sfu_support::{local_track, peer_with, ClientHandler, ClientState};
use signaling::domain::clock::Clock;
use signaling::domain::identity::Role;
use tokio::sync::mpsc;
use uuid::Uuid;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::Track;
use webrtc::peer_connection::PeerConnection;

const REASON: &str = "reason=complaint%20review%20C-2026-17";
const PT_H264: u8 = 102;

fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/H264".into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
        rtcp_feedback: vec![],
    }
}

/// A peer whose media engine knows H.264 only (video): its offer carries nothing else.
async fn h264_only_pc(handler: Arc<ClientHandler>) -> Arc<dyn PeerConnection> {
    let mut me = MediaEngine::default();
    me.register_codec(RTCRtpCodecParameters { rtp_codec: h264_codec(), payload_type: PT_H264 }, RtpCodecKind::Video)
        .unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut me).unwrap();
    peer_with(handler, me, registry).await
}

/// 3 s of a 320x240 test pattern, 30 fps, libx264 baseline, no B-frames, an IDR every second,
/// as an Annex B stream. Fails (does not skip) without ffmpeg/libx264.
fn encode_h264(dir: &Path) -> Vec<u8> {
    let out = dir.join("source.h264");
    let result = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "3"])
        .args(["-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "30"])
        .args(["-f", "h264"])
        .arg(&out)
        .output()
        .expect("ffmpeg is required for this test: install ffmpeg (with libx264)");
    assert!(result.status.success(), "ffmpeg could not encode H.264: {}", String::from_utf8_lossy(&result.stderr));
    std::fs::read(out).unwrap()
}

/// The stream's access units (one per frame), each as RTP payloads of at most 1,200 bytes
/// (STAP-A for SPS+PPS, FU-A for large slices, single NAL units otherwise).
fn packetize(stream: &[u8]) -> Vec<Vec<Bytes>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units: Vec<Vec<&[u8]>> = Vec::new();
    let mut has_slice = false;
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(stream.len(), |next| next - 3);
        while end > s && stream[end - 1] == 0 && n + 1 < starts.len() {
            end -= 1;
        }
        let nal = &stream[s..end];
        let t = nal[0] & 0x1F;
        let slice = (1..=5).contains(&t);
        let begins = matches!(t, 6..=9) || (slice && nal.get(1).is_some_and(|b| b & 0x80 != 0));
        if units.is_empty() || (begins && has_slice) {
            units.push(Vec::new());
            has_slice = false;
        }
        has_slice |= slice;
        units.last_mut().unwrap().push(nal);
    }
    let mut payloader = H264Payloader::default();
    units
        .into_iter()
        .map(|au| {
            let mut annex_b = Vec::new();
            for nal in au {
                annex_b.extend_from_slice(&[0, 0, 0, 1]);
                annex_b.extend_from_slice(nal);
            }
            payloader.payload(1200, &Bytes::from(annex_b)).unwrap()
        })
        .collect()
}

/// A participant over the WebSocket whose peer knows H.264 only: it publishes an H.264 track
/// (`publish`) or just receives video (a recvonly transceiver, so its offer carries H.264).
struct H264Peer {
    id: Uuid,
    pc: Arc<dyn PeerConnection>,
    state: Arc<ClientState>,
    video: Option<Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>>,
    out: mpsc::UnboundedSender<Value>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn join_h264(addr: std::net::SocketAddr, token: &str, call: Uuid, publish: bool) -> H264Peer {
    let mut signal = Signal::join(addr, token, call).await;
    let id = signal.participant_id;
    let state = Arc::new(ClientState::default());
    let (cand_tx, cand_rx) = mpsc::unbounded_channel();
    let pc = h264_only_pc(Arc::new(ClientHandler { state: state.clone(), candidates: cand_tx })).await;
    let video = if publish {
        let video = local_track(RtpCodecKind::Video, h264_codec(), rand::random::<u32>() | 1, &id.to_string());
        pc.add_track(video.clone() as Arc<dyn TrackLocal>).await.unwrap();
        Some(video)
    } else {
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
        pc.add_transceiver_from_kind(RtpCodecKind::Video, Some(init)).await.unwrap();
        None
    };
    let answer = signal.negotiate(&pc, cand_rx, Arc::new(std::sync::Mutex::new(Vec::new()))).await;
    assert!(
        answer.contains("H264/90000") && !answer.contains("VP8"),
        "the relay accepts H.264 (and only H.264 was offered): {answer}"
    );
    let Signal { out, tasks, .. } = signal;
    H264Peer { id, pc, state, video, out, tasks }
}

impl H264Peer {
    /// Video packets received from `other`.
    fn received_from(&self, other: Uuid) -> u64 {
        self.state.received.lock().unwrap().get(&other.to_string()).map_or(0, |r| r.video_packets)
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pc.close()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_only_publisher_is_forwarded_unchanged_and_recorded_as_matroska() {
    let dir = temp_dir("h264");
    let frames = packetize(&encode_h264(&dir));
    assert_eq!(frames.len(), 90);
    let server = spawn_server(&dir, |_| {}).await;
    let state = server.state.clone().unwrap();
    let clock = server.clock.clone().unwrap();
    let admin = server.staff_token("admin").await;
    let agent = server.staff_token("agent.li").await;
    let auditor = server.staff_token("auditor").await;
    let (call, resident_id) = server.open_call(&agent, &admin).await;
    let resident = state.tokens.issue(resident_id, Role::Resident, None, clock.now_ms());

    // The resident publishes H.264 only; the agent receives H.264 only.
    let r = join_h264(server.addr, &resident, call, true).await;
    let r_id = r.id;
    let r_state = r.state.clone();
    let video = r.video.clone().unwrap();
    wait_for(Duration::from_secs(30), "the H.264 publisher to connect", || r_state.connected.load(Ordering::Acquire)).await;
    let a = join_h264(server.addr, &agent, call, false).await;
    wait_for(Duration::from_secs(30), "the agent to connect", || a.state.connected.load(Ordering::Acquire)).await;
    // DTLS done on both sides before the first IDR goes out (packets sent earlier are lost).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Publish the 3 s stream in real time: 30 frames/s, RTP timestamps at 90 kHz.
    let ssrc = video.ssrcs().await[0];
    let (mut seq, ts0) = (rand::random::<u16>(), rand::random::<u32>());
    let start = tokio::time::Instant::now();
    for (n, payloads) in frames.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_micros(33_333 * n as u64)).await;
        for (k, p) in payloads.iter().enumerate() {
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: PT_H264,
                    sequence_number: seq,
                    timestamp: ts0.wrapping_add(3000 * n as u32),
                    ssrc,
                    marker: k == payloads.len() - 1,
                    ..Default::default()
                },
                payload: p.clone(),
            };
            seq = seq.wrapping_add(1);
            let _ = video.write_rtp(packet).await;
        }
    }
    // Forwarded unchanged to the agent, whose connection negotiated H.264. The track is
    // published (and offered to the agent) on its first packet, so the first few packets go
    // out before the agent's side is negotiated.
    let sent: usize = frames.iter().map(Vec::len).sum();
    wait_for(Duration::from_secs(10), "the agent to receive the H.264 video", || a.received_from(r_id) as usize >= sent * 3 / 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let forwarded = a.received_from(r_id) as usize;
    assert!(forwarded <= sent, "the agent received {forwarded} of {sent} packets");
    a.out.send(json!({"type": "end_call", "call_id": call})).unwrap();

    let recorder = state.recorder.clone();
    wait_for(Duration::from_secs(20), "the recording to finish", || recorder.active_recordings() == 0).await;
    let (s, list) = server.call("GET", &format!("/api/v1/recordings?{REASON}&call_id={call}"), Some(&auditor), None).await;
    assert_eq!(s, 200, "{list}");
    let rec: Uuid = list["items"][0]["id"].as_str().unwrap().parse().unwrap();
    let data = std::fs::canonicalize(&dir).unwrap();
    wait_for(Duration::from_secs(20), "uploads", || {
        recorder.pending_uploads() == 0
            && files_with(&data.join("recordings-spool/recordings"), ".mkv").is_empty()
            && files_with(&data.join("recordings-spool/recordings"), ".webm").is_empty()
    })
    .await;
    r.stop().await;
    a.stop().await;

    // The resident's segments are Matroska with an h264 track; nothing of it went to WebM.
    let stored = |pid: Uuid, suffix: &str| -> Vec<PathBuf> {
        files_with(&data.join("recordings/recordings").join(rec.to_string()).join(pid.to_string()), suffix)
    };
    let mkv = stored(r_id, ".mkv");
    assert!(!mkv.is_empty(), "the H.264 participant's segments are .mkv");
    assert!(stored(r_id, ".webm").is_empty());
    let mut total = 0.0;
    for seg in &mkv {
        let (codecs, d) = ffprobe(seg);
        assert_eq!(codecs, vec!["h264".to_string()], "{seg:?}");
        total += d;
    }
    // The first IDR may be lost while the connection settles; the next comes 1 s later.
    assert!((1.5..=3.5).contains(&total), "{total} s of a 3 s stream");
    // Playback: the joined export is served as Matroska.
    let (st, headers, body) = server
        .get_raw(&format!("/api/v1/recordings/{rec}/participants/{r_id}/download?{REASON}"), &auditor, &[])
        .await;
    assert_eq!(st, 200);
    assert_eq!(headers["content-type"], "video/x-matroska");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(disposition.ends_with(".mkv\""), "{disposition}");
    let file = dir.join("export.mkv");
    std::fs::write(&file, &body).unwrap();
    let (codecs, d) = ffprobe(&file);
    assert_eq!(codecs, vec!["h264".to_string()]);
    assert!((d - total).abs() < 0.5, "export {d} s, segments {total} s");
    let (s, v) = server.call("GET", &format!("/api/v1/recordings/{rec}/verify"), Some(&auditor), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
}
