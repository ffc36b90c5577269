//! A test client for the media relay: a real webrtc-rs peer on 127.0.0.1 that publishes a
//! generated VP8-like video and Opus-like audio stream, answers the relay's offers, counts
//! what it receives per publisher, and sends a keyframe only when asked (PLI/FIR), so a
//! received keyframe proves the relay's keyframe path.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use signaling::sfu::{
    Participant, RTCIceCandidateInit, RTCPeerConnectionState, Relay, RelayEvent,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionIceEvent,
};

/// Marks inbound PLI/FIR for the application (the client must see keyframe requests).
#[derive(Default)]
struct KeyframeRequestMarker {
    r: VecDeque<TaggedPacket>,
    w: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestMarker {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;
    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(ps) = &msg.message.packet {
            if ps.iter().any(|p| {
                p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
            }) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.r.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.r.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.w.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.w.pop_front()
    }
}

impl Interceptor for KeyframeRequestMarker {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// What one client received from one publisher (keyed by the msid stream id = publisher id).
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub audio_packets: u64,
    pub video_packets: u64,
    pub video_keyframes: u64,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
}

#[derive(Default)]
pub struct ClientState {
    pub received: Mutex<HashMap<String, Received>>,
    pub connected: AtomicBool,
    pub states: Mutex<Vec<RTCPeerConnectionState>>,
    pub offers_from_relay: AtomicU64,
    pub closed_event: AtomicBool,
    pub keyframe_requests: AtomicU64,
    /// Negotiation errors of the signaling pump (expected only around leaving).
    pub pump_errors: Mutex<Vec<String>>,
    keyframe_wanted: AtomicBool,
}

impl ClientState {
    /// Makes the next generated video frame a keyframe.
    pub fn want_keyframe(&self) {
        self.keyframe_wanted.store(true, Ordering::Release);
    }
}

async fn answer_relay_offer(
    pc: &Arc<dyn PeerConnection>,
    participant: &Participant,
    offer: webrtc::peer_connection::RTCSessionDescription,
) -> Result<(), String> {
    pc.set_remote_description(offer).await.map_err(|e| format!("client applies relay offer: {e}"))?;
    let answer = pc.create_answer(None).await.map_err(|e| format!("create answer: {e}"))?;
    pc.set_local_description(answer.clone()).await.map_err(|e| format!("set local answer: {e}"))?;
    participant.handle_answer(answer).await.map_err(|e| format!("relay applies answer: {e}"))
}

pub struct ClientHandler {
    pub state: Arc<ClientState>,
    pub candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
}

/// Whether a VP8 RTP payload starts a keyframe (descriptor S=1, PID=0, then P bit 0).
pub fn is_vp8_keyframe(payload: &[u8]) -> bool {
    if payload.is_empty() {
        return false;
    }
    let b0 = payload[0];
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
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(c) = event.candidate.to_json() {
            let _ = self.candidates.send(c);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.state.connected.store(true, Ordering::Release);
        }
        self.state.states.lock().unwrap().push(state);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let stream = track.stream_id().await;
            let kind = track.kind().await;
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                    let now = Instant::now();
                    let mut rec = state.received.lock().unwrap();
                    let r = rec.entry(stream.clone()).or_default();
                    r.first_at.get_or_insert(now);
                    r.last_at = Some(now);
                    match kind {
                        RtpCodecKind::Audio => r.audio_packets += 1,
                        _ => {
                            r.video_packets += 1;
                            if is_vp8_keyframe(&p.payload) {
                                r.video_keyframes += 1;
                            }
                        }
                    }
                }
            }
        });
    }
}

pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".into(),
        clock_rate: 90_000,
        ..Default::default()
    }
}

pub fn local_track(kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32, stream: &str) -> Arc<TrackLocalStaticRTP> {
    let k = if kind == RtpCodecKind::Audio { "audio" } else { "video" };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream.to_owned(),
        format!("{k}-{stream}"),
        k.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            active: true,
            ..Default::default()
        }],
    )))
}

/// How the generated stream looks.
#[derive(Debug, Clone, Copy)]
pub struct MediaProfile {
    /// Video bits per second (30 fps, packets up to 1,000 bytes).
    pub video_bps: u32,
    /// Send media at all.
    pub publish: bool,
}

impl Default for MediaProfile {
    fn default() -> Self {
        Self { video_bps: 300_000, publish: true }
    }
}

pub struct Client {
    pub id: Uuid,
    pub pc: Arc<dyn PeerConnection>,
    pub participant: Arc<Participant>,
    pub state: Arc<ClientState>,
    pub sent_packets: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

pub async fn client_pc(
    handler: Arc<ClientHandler>,
) -> Arc<dyn PeerConnection> {
    let mut me = MediaEngine::default();
    me.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut me).unwrap();
    let registry = registry.with(Slot::from(14_000), KeyframeRequestMarker::default());
    peer_with(handler, me, registry).await
}

/// A test peer on 127.0.0.1 (no mDNS) with this media engine and interceptor chain.
pub async fn peer_with(handler: Arc<ClientHandler>, me: MediaEngine, registry: Registry) -> Arc<dyn PeerConnection> {
    let se = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    Arc::new(
        PeerConnectionBuilder::new()
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(se)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .expect("client peer connection"),
    )
}

impl Client {
    /// Joins `call` on `relay` as a new participant and negotiates (client offers).
    pub async fn join(relay: &Relay, call: Uuid, profile: MediaProfile) -> Client {
        Self::join_as(relay, call, Uuid::new_v4(), profile).await
    }

    pub async fn join_as(relay: &Relay, call: Uuid, id: Uuid, profile: MediaProfile) -> Client {
        Self::join_on(relay, call, id, profile, None).await
    }

    /// As [`join_as`](Self::join_as), running the relay's side of the join on `relay_rt` (so
    /// its connection's driver lives there: the benchmark measures that runtime's threads).
    pub async fn join_on(
        relay: &Relay,
        call: Uuid,
        id: Uuid,
        profile: MediaProfile,
        relay_rt: Option<&tokio::runtime::Handle>,
    ) -> Client {
        let state = Arc::new(ClientState::default());
        let (cand_tx, mut cand_rx) = mpsc::unbounded_channel();
        let pc = client_pc(Arc::new(ClientHandler {
            state: Arc::clone(&state),
            candidates: cand_tx,
        }))
        .await;
        let stream = id.to_string();
        let audio = local_track(RtpCodecKind::Audio, opus_codec(), rand::random::<u32>() | 1, &stream);
        let video = local_track(RtpCodecKind::Video, vp8_codec(), rand::random::<u32>() | 1, &stream);
        let mut tasks = Vec::new();
        if profile.publish {
            pc.add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>).await.unwrap();
            pc.add_track(Arc::clone(&video) as Arc<dyn TrackLocal>).await.unwrap();
        } else {
            // A receive-only client still offers media sections (an offer with none has no ICE).
            for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                pc.add_transceiver_from_kind(
                    kind,
                    Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                        direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .unwrap();
            }
        }

        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let participant = match relay_rt {
            None => relay.join(call, id, ev_tx).await.expect("join"),
            Some(rt) => {
                let relay = relay.clone();
                rt.spawn(async move { relay.join(call, id, ev_tx).await })
                    .await
                    .unwrap()
                    .expect("join")
            }
        };
        let participant = Arc::new(participant);
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer.clone()).await.unwrap();
        let answer = participant.handle_offer(offer).await.expect("handle_offer");
        pc.set_remote_description(answer).await.unwrap();

        // Signaling pump: the relay's events to the client, the client's candidates to the relay.
        {
            let pc = Arc::clone(&pc);
            let participant = Arc::clone(&participant);
            let state = Arc::clone(&state);
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        ev = ev_rx.recv() => {
                            let Some(ev) = ev else { break };
                            match ev {
                                RelayEvent::Offer { sdp } => {
                                    state.offers_from_relay.fetch_add(1, Ordering::Relaxed);
                                    // Errors here only happen while leaving (closed
                                    // connection); the tests check what matters: media.
                                    if let Err(err) = answer_relay_offer(&pc, &participant, sdp).await {
                                        state.pump_errors.lock().unwrap().push(err);
                                        break;
                                    }
                                }
                                RelayEvent::IceCandidate { candidate } => {
                                    let _ = pc.add_ice_candidate(candidate).await;
                                }
                                RelayEvent::Closed => {
                                    state.closed_event.store(true, Ordering::Release);
                                }
                                _ => {}
                            }
                        }
                        c = cand_rx.recv() => {
                            if let Some(c) = c { let _ = participant.add_ice_candidate(c).await; }
                        }
                    }
                }
            }));
        }

        let sent_packets = Arc::new(AtomicU64::new(0));
        if profile.publish {
            // Keyframe requests from the relay.
            {
                let video = Arc::clone(&video);
                let state = Arc::clone(&state);
                tasks.push(tokio::spawn(async move {
                    loop {
                        match video.poll().await {
                            Some(TrackLocalEvent::OnRtcpPacket(_)) => {
                                state.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                                state.keyframe_wanted.store(true, Ordering::Release);
                            }
                            Some(_) => {}
                            None => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }));
            }
            tasks.push(tokio::spawn(generate_media(
                audio,
                video,
                Arc::clone(&state),
                profile,
                Arc::clone(&sent_packets),
            )));
        }
        Client { id, pc, participant, state, sent_packets, tasks }
    }

    pub fn received_from(&self, other: Uuid) -> Received {
        self.state
            .received
            .lock()
            .unwrap()
            .get(&other.to_string())
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `cond` holds, polling every 20 ms; panics with `what` after `limit`.
    pub async fn wait_until(&self, limit: Duration, what: &str, cond: impl Fn(&Client) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Client-initiated ICE restart: a new offer with fresh credentials.
    pub async fn restart_ice_from_client(&self) {
        self.pc.restart_ice().await.unwrap();
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer.clone()).await.unwrap();
        let answer = self.participant.handle_offer(offer).await.expect("restart offer");
        self.pc.set_remote_description(answer).await.unwrap();
    }

    pub async fn leave(mut self) {
        self.participant.close().await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pc.close()).await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Sends 50 audio packets/s and 30 video frames/s. A video frame is a keyframe only when
/// requested (and the very first frame).
pub async fn generate_media(
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    state: Arc<ClientState>,
    profile: MediaProfile,
    sent: Arc<AtomicU64>,
) {
    let audio_ssrc = audio.ssrcs().await[0];
    let video_ssrc = video.ssrcs().await[0];
    let (mut aseq, mut vseq) = (rand::random::<u16>(), rand::random::<u16>());
    let (mut ats, mut vts) = (rand::random::<u32>(), rand::random::<u32>());
    let frame_bytes = (profile.video_bps / 8 / 30) as usize;
    let audio_payload = Bytes::from(vec![0xF8u8; 80]);
    let mut first = true;
    let start = tokio::time::Instant::now();
    let mut tick = 0u64;
    loop {
        // 10 ms ticks: audio every 2nd, video every 3rd (≈33 fps).
        tick += 1;
        tokio::time::sleep_until(start + Duration::from_millis(10 * tick)).await;
        if tick % 2 == 0 {
            let p = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: 111,
                    sequence_number: aseq,
                    timestamp: ats,
                    ssrc: audio_ssrc,
                    marker: false,
                    ..Default::default()
                },
                payload: audio_payload.clone(),
            };
            aseq = aseq.wrapping_add(1);
            ats = ats.wrapping_add(960);
            if audio.write_rtp(p).await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        if tick % 3 == 0 {
            let key = first || state.keyframe_wanted.swap(false, Ordering::AcqRel);
            first = false;
            let mut remaining = frame_bytes.max(2);
            let mut start_of_frame = true;
            while remaining > 0 {
                let n = remaining.min(1000);
                remaining -= n;
                let mut payload = Vec::with_capacity(n + 1);
                // VP8 descriptor: S bit on the first packet of the frame, PID 0.
                payload.push(if start_of_frame { 0x10 } else { 0x00 });
                if start_of_frame {
                    // VP8 payload header: P bit 0 = keyframe, 1 = interframe.
                    payload.push(if key { 0x00 } else { 0x01 });
                    if key {
                        payload.extend_from_slice(&[0x00, 0x00, 0x9d, 0x01, 0x2a]);
                    }
                }
                payload.resize(n + 1, 0x55);
                let p = rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        payload_type: 96,
                        sequence_number: vseq,
                        timestamp: vts,
                        ssrc: video_ssrc,
                        marker: remaining == 0,
                        ..Default::default()
                    },
                    payload: Bytes::from(payload),
                };
                start_of_frame = false;
                vseq = vseq.wrapping_add(1);
                if video.write_rtp(p).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            vts = vts.wrapping_add(2700);
        }
    }
}

/// Wall-clock bound for a whole test.
pub const TEST_LIMIT: Duration = Duration::from_secs(20);
