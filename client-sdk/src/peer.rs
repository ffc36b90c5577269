//! The client's one peer connection with the server: how it is built (codecs the server
//! speaks, no mDNS, explicit UDP binding), its local tracks, and the readers of remote tracks.
//!
//! Ownership: the driver holds the connection; the WebRTC event handler holds only a channel
//! sender to the driver, and the tasks it spawns are aborted on [`Peer::close`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{configure_nack, configure_rtcp_reports};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceTransportPolicy};
use rtc::peer_connection::sdp::RTCSdpType;
use rtc::peer_connection::transport::{RTCIceCandidateInit, RTCIceServer};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use signaling_protocol::{IceCandidate, IceServer, IceTransportPolicy, ParticipantId};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::error::Error;
use crate::event::{MediaKind, RemoteTrack, RtpPacket};
use crate::media::{Outbound, Publisher, PT_OPUS, PT_VP8};

const PT_VP8_RTX: u8 = 97;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// ICE connectivity-check interval while connecting.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Binding requests per candidate pair (28 × 50 ms = the crate's default budget of 1.4 s).
const ICE_MAX_BINDING_REQUESTS: u16 = 28;

/// What the connection tells the driver.
pub(crate) enum PeerEvent {
    /// A local candidate to trickle to the server.
    Candidate(RTCIceCandidateInit),
    /// The connection state changed.
    State(RTCPeerConnectionState),
    /// A remote track started.
    Track(RemoteTrack),
}

/// Marks inbound PLI/FIR for the application, so the sender sees keyframe requests
/// (`TrackLocal::poll`); all other RTCP stays inside the interceptor chain.
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
            if ps
                .iter()
                .any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
            {
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

type Tasks = Arc<Mutex<Vec<AbortHandle>>>;

fn keep(tasks: &Tasks, handle: AbortHandle) {
    let mut t = tasks.lock().unwrap_or_else(PoisonError::into_inner);
    t.retain(|h| !h.is_finished());
    t.push(handle);
}

struct Handler {
    events: mpsc::Sender<PeerEvent>,
    track_capacity: usize,
    tasks: Tasks,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            // Never block the WebRTC driver: a full channel (hundreds of candidates waiting)
            // means the driver is gone or stuck; the candidate is dropped and logged.
            Ok(c) => {
                if self.events.try_send(PeerEvent::Candidate(c)).is_err() {
                    tracing::warn!("peer event channel full: local candidate dropped");
                }
            }
            Err(err) => tracing::debug!(%err, "unserialisable local candidate"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if self.events.try_send(PeerEvent::State(state)).is_err() {
            tracing::warn!(?state, "peer event channel full: state change dropped");
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Fires on the first packet; read at once (an unread track drops media and logs).
        let handle = tokio::spawn(read_track(track, self.events.clone(), self.track_capacity));
        keep(&self.tasks, handle.abort_handle());
    }
}

/// Hands a remote track to the application and forwards its packets until it ends.
async fn read_track(track: Arc<dyn TrackRemote>, events: mpsc::Sender<PeerEvent>, capacity: usize) {
    let stream = track.stream_id().await;
    let kind = match track.kind().await {
        RtpCodecKind::Audio => MediaKind::Audio,
        _ => MediaKind::Video,
    };
    let track_id = track.track_id().await;
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    match stream.parse::<ParticipantId>() {
        Ok(participant_id) => {
            let remote = RemoteTrack {
                participant_id,
                kind,
                track_id,
                packets: rx,
                dropped: Arc::clone(&dropped),
            };
            // Awaited: the driver drains this channel; it never waits for this task.
            let _ = events.send(PeerEvent::Track(remote)).await;
        }
        Err(_) => tracing::warn!(%stream, "remote track with a stream id that is not a participant id; dropped"),
    }
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(p) => {
                let packet = RtpPacket {
                    sequence_number: p.header.sequence_number,
                    timestamp: p.header.timestamp,
                    marker: p.header.marker,
                    payload_type: p.header.payload_type,
                    payload: p.payload,
                    received_at: Instant::now(),
                };
                match tx.try_send(packet) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {} // not wanted; keep draining
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// Forwards keyframe requests about a local video track to its sender.
async fn read_keyframe_requests(track: Arc<TrackLocalStaticRTP>, out: Arc<Outbound>) {
    loop {
        match track.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(ps)) => {
                if ps
                    .iter()
                    .any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
                {
                    out.request_keyframe();
                }
            }
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(50)).await, // not bound yet
        }
    }
}

fn media_engine() -> Result<MediaEngine, Error> {
    let mut me = MediaEngine::default();
    let audio = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: PT_OPUS,
    };
    me.register_codec(audio, RtpCodecKind::Audio).map_err(Error::webrtc)?;
    let video = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![RTCPFeedback {
                typ: "ccm".to_owned(),
                parameter: "fir".to_owned(),
            }],
        },
        payload_type: PT_VP8,
    };
    me.register_codec(video, RtpCodecKind::Video).map_err(Error::webrtc)?;
    let rtx = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_RTX.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: format!("apt={PT_VP8}"),
            rtcp_feedback: vec![],
        },
        payload_type: PT_VP8_RTX,
    };
    me.register_codec(rtx, RtpCodecKind::Video).map_err(Error::webrtc)?;
    Ok(me)
}

fn local_track(out: &Outbound, stream_id: &str) -> Arc<TrackLocalStaticRTP> {
    let (kind, name, codec) = match out.kind {
        MediaKind::Audio => (
            RtpCodecKind::Audio,
            "audio",
            RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48_000,
                channels: 2,
                ..Default::default()
            },
        ),
        MediaKind::Video => (
            RtpCodecKind::Video,
            "video",
            RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.into(),
                clock_rate: 90_000,
                ..Default::default()
            },
        ),
    };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream_id.to_owned(),
        format!("{name}-{stream_id}"),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(out.ssrc),
                ..Default::default()
            },
            codec,
            active: true,
            ..Default::default()
        }],
    )))
}

pub(crate) fn to_rtc_candidate(c: &IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate.clone(),
        sdp_mid: c.sdp_mid.clone(),
        sdp_mline_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment.clone(),
        ..Default::default()
    }
}

pub(crate) fn from_rtc_candidate(c: RTCIceCandidateInit) -> IceCandidate {
    IceCandidate {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_m_line_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
    }
}

/// One peer connection with the server.
pub(crate) struct Peer {
    pc: Arc<dyn PeerConnection>,
    senders: Vec<(Arc<Outbound>, Arc<dyn RtpSender>)>,
    tasks: Tasks,
    /// A remote description has been applied (candidates can be added).
    pub(crate) has_remote: bool,
    /// Remote candidates that arrived before any remote description.
    early_candidates: Vec<RTCIceCandidateInit>,
    /// Last connection state reported.
    pub(crate) state: RTCPeerConnectionState,
}

impl Peer {
    /// Builds the connection and attaches the publisher's tracks (or receive-only
    /// transceivers), with `stream_id` (this participant's id) as their stream.
    pub(crate) async fn build(
        ice_servers: &[IceServer],
        policy: IceTransportPolicy,
        bind: &[SocketAddr],
        publisher: &Publisher,
        stream_id: &str,
        events: mpsc::Sender<PeerEvent>,
        track_capacity: usize,
    ) -> Result<Self, Error> {
        let mut me = media_engine()?;
        let registry = configure_nack(Registry::new(), &mut me);
        let registry = configure_rtcp_reports(registry);
        let registry = registry.with(Slot::from(14_000), KeyframeRequestMarker::default());
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            // The server's binding requests usually arrive before its trickled candidates, so
            // its address is first learned as peer-reflexive; the crate would then wait 1 s
            // before nominating that pair. The server is the only peer: nominate at once.
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            // Checks every 50 ms (same 1.4 s budget as the default 7 × 200 ms): the first
            // DTLS flight otherwise waits for the next 200 ms tick of the connection's driver.
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
            .build();
        let servers = ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .with_ice_transport_policy(match policy {
                IceTransportPolicy::Relay => RTCIceTransportPolicy::Relay,
                _ => RTCIceTransportPolicy::All,
            })
            .build();
        let tasks: Tasks = Arc::default();
        let handler = Arc::new(Handler {
            events,
            track_capacity,
            tasks: Arc::clone(&tasks),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(bind.iter().map(ToString::to_string).collect::<Vec<_>>())
            .build()
            .await
            .map_err(Error::webrtc)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let mut senders = Vec::new();
        for out in publisher.outbounds() {
            let track = local_track(out, stream_id);
            let sender = pc
                .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
                .await
                .map_err(Error::webrtc)?;
            out.set_track(Some(Arc::clone(&track)));
            if out.kind == MediaKind::Video {
                let h = tokio::spawn(read_keyframe_requests(track, Arc::clone(out)));
                keep(&tasks, h.abort_handle());
            }
            senders.push((Arc::clone(out), sender));
        }
        // A receive-only side still offers media sections (an offer without any has no ICE).
        for (present, kind) in [
            (publisher.audio.is_some(), RtpCodecKind::Audio),
            (publisher.video.is_some(), RtpCodecKind::Video),
        ] {
            if !present {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                };
                pc.add_transceiver_from_kind(kind, Some(init))
                    .await
                    .map_err(Error::webrtc)?;
            }
        }
        Ok(Self {
            pc,
            senders,
            tasks,
            has_remote: false,
            early_candidates: Vec::new(),
            state: RTCPeerConnectionState::New,
        })
    }

    /// Makes an offer (with new ICE credentials when `ice_restart`) and applies it locally.
    pub(crate) async fn create_offer(&self, ice_restart: bool) -> Result<String, Error> {
        if ice_restart {
            self.pc.restart_ice().await.map_err(Error::webrtc)?;
        }
        let offer = self.pc.create_offer(None).await.map_err(Error::webrtc)?;
        self.pc
            .set_local_description(offer.clone())
            .await
            .map_err(Error::webrtc)?;
        Ok(offer.sdp)
    }

    /// Applies the server's answer to our offer.
    pub(crate) async fn apply_answer(&mut self, sdp: String) -> Result<(), Error> {
        let answer = RTCSessionDescription::answer(sdp).map_err(Error::webrtc)?;
        self.pc.set_remote_description(answer).await.map_err(Error::webrtc)?;
        self.after_remote().await;
        Ok(())
    }

    /// Applies a server offer and returns our answer.
    pub(crate) async fn answer_offer(&mut self, sdp: String) -> Result<String, Error> {
        let offer = RTCSessionDescription::offer(sdp).map_err(Error::webrtc)?;
        self.pc.set_remote_description(offer).await.map_err(Error::webrtc)?;
        let answer = self.pc.create_answer(None).await.map_err(Error::webrtc)?;
        self.pc
            .set_local_description(answer.clone())
            .await
            .map_err(Error::webrtc)?;
        self.after_remote().await;
        Ok(answer.sdp)
    }

    /// Rolls back a local offer that will not be answered.
    pub(crate) async fn rollback(&self) {
        let mut rollback = RTCSessionDescription::default();
        rollback.sdp_type = RTCSdpType::Rollback;
        if let Err(err) = self.pc.set_local_description(rollback).await {
            tracing::debug!(%err, "rollback failed");
        }
    }

    async fn after_remote(&mut self) {
        self.has_remote = true;
        for c in std::mem::take(&mut self.early_candidates) {
            if let Err(err) = self.pc.add_ice_candidate(c).await {
                tracing::debug!(%err, "remote candidate refused");
            }
        }
        // The negotiated payload types (the server's, normally 111 and 96).
        for (out, sender) in &self.senders {
            if let Ok(params) = sender.get_parameters().await {
                if let Some(codec) = params.rtp_parameters.codecs.first() {
                    out.set_payload_type(codec.payload_type);
                }
            }
        }
    }

    /// Adds a server candidate (kept until a remote description exists).
    pub(crate) async fn add_candidate(&mut self, c: &IceCandidate) {
        let init = to_rtc_candidate(c);
        if !self.has_remote {
            self.early_candidates.push(init);
            return;
        }
        if let Err(err) = self.pc.add_ice_candidate(init).await {
            tracing::debug!(%err, "remote candidate refused");
        }
    }

    /// Tears the connection down: stops its tasks, detaches the publisher, closes.
    pub(crate) async fn close(self) {
        for (out, _) in &self.senders {
            out.set_track(None);
        }
        for t in std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner)) {
            t.abort();
        }
        match tokio::time::timeout(CLOSE_TIMEOUT, self.pc.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(%err, "peer connection close failed"),
            Err(_) => tracing::warn!("peer connection close timed out"),
        }
    }
}
