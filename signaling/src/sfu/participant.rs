//! One participant's peer connection with the relay: negotiation, subscriptions, teardown.
//!
//! Ownership (pitfall 9, reference cycles): the relay's call map and the [`Participant`]
//! handle hold the connection strongly; the WebRTC event handler and every spawned task hold
//! it weakly. Teardown is explicit ([`ParticipantInner::close`]); dropping the handle closes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSdpType;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use uuid::Uuid;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};

use super::config::{media_setup, prefer_vp8, setting_engine};
use super::forward::{forward_track, relay_subscriber_rtcp, DownTrack, UpTrack};
use super::{MediaKind, RTCIceCandidateInit, RelayEvent, RelayShared, SfuError, TrackInfo};

/// How long `close` waits for the WebRTC stack to shut a connection down.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The handle the signaling layer holds for one participant. Not `Clone`: dropping it closes
/// the connection (from a spawned task), so a forgotten participant cannot leak.
pub struct Participant {
    inner: Arc<ParticipantInner>,
    relay: Weak<RelayShared>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("call_id", &self.inner.call_id)
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Participant {
    pub(crate) fn new(inner: Arc<ParticipantInner>, relay: Weak<RelayShared>) -> Self {
        Self { inner, relay }
    }

    /// The participant's id.
    pub fn id(&self) -> Uuid {
        self.inner.id
    }

    /// The call's id.
    pub fn call_id(&self) -> Uuid {
        self.inner.call_id
    }

    /// Applies a client offer and returns the relay's answer (candidates follow as
    /// [`RelayEvent::IceCandidate`]). If a relay offer was outstanding it is rolled back and
    /// made again after this one (the relay is the polite peer).
    pub async fn handle_offer(
        &self,
        offer: RTCSessionDescription,
    ) -> Result<RTCSessionDescription, SfuError> {
        self.inner.handle_offer(offer).await
    }

    /// Applies the client's answer to the last [`RelayEvent::Offer`].
    pub async fn handle_answer(&self, answer: RTCSessionDescription) -> Result<(), SfuError> {
        self.inner.handle_answer(answer).await
    }

    /// Adds a remote (client) ICE candidate. Call after the description it belongs to.
    pub async fn add_ice_candidate(&self, candidate: RTCIceCandidateInit) -> Result<(), SfuError> {
        if self.inner.is_closed() {
            return Err(SfuError::Closed);
        }
        self.inner.pc.add_ice_candidate(candidate).await?;
        Ok(())
    }

    /// Restarts ICE from the relay's side: a [`RelayEvent::Offer`] with new credentials follows
    /// (at once, or after the answer to an outstanding offer). Media keeps flowing on the old
    /// path until the new one is selected. A client may instead restart by sending an offer
    /// with new credentials to [`handle_offer`](Self::handle_offer).
    pub async fn restart_ice(&self) -> Result<(), SfuError> {
        if self.inner.is_closed() {
            return Err(SfuError::Closed);
        }
        self.inner.ice_restart.store(true, Ordering::Release);
        self.inner.needs_offer.store(true, Ordering::Release);
        self.inner.renegotiate().await
    }

    /// Closes the connection: stops forwarding its tracks (the others get an offer without
    /// them), detaches it from the tracks it received, emits [`RelayEvent::Closed`].
    /// Idempotent.
    pub async fn close(&self) {
        if let Some(relay) = self.relay.upgrade() {
            self.inner.close(&relay).await;
        } else {
            self.inner.close_connection_only().await;
        }
    }

    /// The participant's published tracks, at this instant.
    pub fn published_tracks(&self) -> Vec<TrackInfo> {
        self.inner.published().iter().map(|u| u.info.clone()).collect()
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        if self.inner.is_closed() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            let relay = self.relay.clone();
            rt.spawn(async move {
                match relay.upgrade() {
                    Some(relay) => inner.close(&relay).await,
                    None => inner.close_connection_only().await,
                }
            });
        }
    }
}

/// Negotiation state, behind an async lock so offers and answers never interleave.
#[derive(Debug, Default)]
struct Negotiation {
    /// The relay sent an offer and waits for the answer.
    awaiting_answer: bool,
    /// The client's first offer has been answered; before that the relay never offers.
    established: bool,
}

pub(crate) struct ParticipantInner {
    pub(crate) id: Uuid,
    pub(crate) call_id: Uuid,
    pc: Arc<dyn PeerConnection>,
    events: mpsc::Sender<RelayEvent>,
    relay: Weak<RelayShared>,
    negotiation: tokio::sync::Mutex<Negotiation>,
    /// Serialises `subscribe` so a track is never attached twice.
    subscribing: tokio::sync::Mutex<()>,
    needs_offer: AtomicBool,
    ice_restart: AtomicBool,
    closed: AtomicBool,
    /// The connection is in the `Connected` state: forwarded packets can reach the client.
    connected: AtomicBool,
    /// Tracks this participant publishes.
    uptracks: Mutex<Vec<Arc<UpTrack>>>,
    /// Other participants' tracks this participant receives.
    downtracks: Mutex<Vec<Arc<DownTrack>>>,
    /// Tasks to stop on close (subscriber RTCP readers, renegotiations). Forwarding tasks end
    /// by themselves when the connection closes and are not aborted: they call the tap's
    /// `on_end`.
    tasks: Mutex<Vec<AbortHandle>>,
    /// For `connections_alive`.
    counters: Arc<super::Counters>,
}

impl Drop for ParticipantInner {
    fn drop(&mut self) {
        self.counters.connections_alive.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The WebRTC event handler: holds the participant weakly (set right after the build).
struct Handler {
    participant: OnceLock<Weak<ParticipantInner>>,
}

impl Handler {
    fn get(&self) -> Option<Arc<ParticipantInner>> {
        self.participant.get().and_then(Weak::upgrade)
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Some(p) = self.get() {
            match event.candidate.to_json() {
                Ok(candidate) => p.emit(RelayEvent::IceCandidate { candidate }),
                Err(err) => tracing::debug!(%err, "unserialisable local candidate"),
            }
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if let Some(p) = self.get() {
            tracing::debug!(participant = %p.id, ?state, "connection state");
            let connected = state == RTCPeerConnectionState::Connected;
            let was = p.connected.swap(connected, Ordering::AcqRel);
            if connected && !was {
                // Packets written before this were lost (no DTLS yet): every forwarded video
                // track needs a fresh keyframe now — also after an ICE restart reconnects.
                p.request_keyframes();
            }
            p.emit(RelayEvent::ConnectionState { state });
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Fires on the first packet (pitfall 6). Start reading at once (pitfall 5): the
        // track buffers only 256 packets.
        if let Some(p) = self.get() {
            let weak = Arc::downgrade(&p);
            drop(p);
            tokio::spawn(run_published_track(weak, track));
        }
    }
}

impl ParticipantInner {
    /// Builds the connection (binding a port from the range).
    pub(crate) async fn connect(
        relay: &Arc<RelayShared>,
        call_id: Uuid,
        id: Uuid,
        events: mpsc::Sender<RelayEvent>,
    ) -> Result<Arc<Self>, SfuError> {
        let handler = Arc::new(Handler {
            participant: OnceLock::new(),
        });
        let mut last_err = None;
        let mut pc = None;
        for _ in 0..relay.ports.attempts() {
            let port = relay.ports.next_port();
            let (media_engine, registry) = media_setup()?;
            let built = PeerConnectionBuilder::new()
                .with_media_engine(media_engine)
                .with_interceptor_registry(registry)
                .with_setting_engine(setting_engine(&relay.config))
                .with_handler(Arc::clone(&handler) as Arc<dyn PeerConnectionEventHandler>)
                .with_udp_addrs(vec![std::net::SocketAddr::new(relay.config.bind_ip, port)])
                .build()
                .await;
            match built {
                Ok(built) => {
                    pc = Some(Arc::new(built) as Arc<dyn PeerConnection>);
                    break;
                }
                Err(err) => {
                    tracing::debug!(port, %err, "peer connection build failed");
                    last_err = Some(err);
                }
            }
        }
        let pc = match (pc, last_err) {
            (Some(pc), _) => pc,
            (None, Some(err)) if relay.config.port_range.is_none() => return Err(err.into()),
            (None, _) => return Err(SfuError::NoPortAvailable),
        };
        let inner = Arc::new(Self {
            id,
            call_id,
            pc,
            events,
            relay: Arc::downgrade(relay),
            negotiation: tokio::sync::Mutex::new(Negotiation::default()),
            subscribing: tokio::sync::Mutex::new(()),
            needs_offer: AtomicBool::new(false),
            ice_restart: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            uptracks: Mutex::new(Vec::new()),
            downtracks: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            counters: Arc::clone(&relay.counters),
        });
        relay.counters.connections_alive.fetch_add(1, Ordering::Relaxed);
        let _ = handler.participant.set(Arc::downgrade(&inner));
        Ok(inner)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The tracks it publishes that are still live.
    pub(crate) fn published(&self) -> Vec<Arc<UpTrack>> {
        self.uptracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|u| !u.is_ended())
            .cloned()
            .collect()
    }

    fn track_task(&self, handle: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Sends an event without waiting. Full or closed channel: the consumer is gone or hopelessly
    /// behind, so the participant is closed (see [`RelayEvent`]).
    pub(crate) fn emit(self: &Arc<Self>, event: RelayEvent) {
        if let Err(err) = self.events.try_send(event) {
            if self.is_closed() {
                return;
            }
            tracing::warn!(participant = %self.id, full = matches!(err, mpsc::error::TrySendError::Full(_)),
                "relay event channel unusable; closing the participant");
            let me = Arc::clone(self);
            tokio::spawn(async move {
                match me.relay.upgrade() {
                    Some(relay) => me.close(&relay).await,
                    None => me.close_connection_only().await,
                }
            });
        }
    }

    async fn handle_offer(
        self: &Arc<Self>,
        offer: RTCSessionDescription,
    ) -> Result<RTCSessionDescription, SfuError> {
        if offer.sdp_type != RTCSdpType::Offer {
            return Err(SfuError::UnexpectedDescription("handle_offer needs an offer"));
        }
        let mut neg = self.negotiation.lock().await;
        if self.is_closed() {
            return Err(SfuError::Closed);
        }
        if neg.awaiting_answer {
            // Glare: the client wins. Roll our offer back and make it again afterwards.
            let mut rollback = RTCSessionDescription::default();
            rollback.sdp_type = RTCSdpType::Rollback;
            self.pc.set_local_description(rollback).await?;
            neg.awaiting_answer = false;
            self.needs_offer.store(true, Ordering::Release);
        }
        // VP8 first in the answer whatever order the client offered (see `prefer_vp8`).
        let offer = match prefer_vp8(&offer.sdp) {
            Some(sdp) => {
                let mut reordered = RTCSessionDescription::default();
                reordered.sdp_type = RTCSdpType::Offer;
                reordered.sdp = sdp;
                reordered
            }
            None => offer,
        };
        self.pc.set_remote_description(offer).await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer.clone()).await?;
        neg.established = true;
        drop(neg);
        self.after_negotiation().await;
        if self.needs_offer.load(Ordering::Acquire) {
            // Tracks attached before this offer may not fit in the answer: offer them. The
            // caller sends our answer before it forwards this offer (see the module docs).
            self.spawn_renegotiation();
        }
        Ok(answer)
    }

    async fn handle_answer(self: &Arc<Self>, answer: RTCSessionDescription) -> Result<(), SfuError> {
        if answer.sdp_type != RTCSdpType::Answer {
            return Err(SfuError::UnexpectedDescription("handle_answer needs an answer"));
        }
        let mut neg = self.negotiation.lock().await;
        if self.is_closed() {
            return Err(SfuError::Closed);
        }
        if !neg.awaiting_answer {
            return Err(SfuError::UnexpectedDescription("no offer is waiting for an answer"));
        }
        if let Err(err) = self.pc.set_remote_description(answer).await {
            // Back to stable so the next offer can be made; keep what it carried pending.
            let mut rollback = RTCSessionDescription::default();
            rollback.sdp_type = RTCSdpType::Rollback;
            let _ = self.pc.set_local_description(rollback).await;
            neg.awaiting_answer = false;
            self.needs_offer.store(true, Ordering::Release);
            return Err(err.into());
        }
        neg.awaiting_answer = false;
        drop(neg);
        self.after_negotiation().await;
        self.renegotiate().await
    }

    /// Learns the payload types of newly negotiated forwarded tracks and, if the connection is
    /// up, asks their publishers for a keyframe so the subscriber can start decoding at once
    /// (otherwise that happens when it connects).
    async fn after_negotiation(&self) {
        let downs: Vec<_> = self
            .downtracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for down in downs {
            if down.refresh_payload_type().await && self.connected.load(Ordering::Acquire) {
                if let Some(up) = down.source.upgrade() {
                    up.request_keyframe();
                }
            }
        }
    }

    /// Asks the publisher of every negotiated forwarded track for a keyframe (rate-limited
    /// per track).
    fn request_keyframes(&self) {
        let downs: Vec<_> = self
            .downtracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for down in downs {
            if down.is_negotiated() {
                if let Some(up) = down.source.upgrade() {
                    up.request_keyframe();
                }
            }
        }
    }

    fn spawn_renegotiation(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
            if let Some(me) = weak.upgrade() {
                if let Err(err) = me.renegotiate().await {
                    tracing::warn!(participant = %me.id, %err, "renegotiation failed");
                }
            }
        });
        self.track_task(handle.abort_handle());
    }

    /// Makes an offer if one is needed and allowed now; otherwise leaves the need recorded for
    /// the end of the current negotiation.
    async fn renegotiate(self: &Arc<Self>) -> Result<(), SfuError> {
        let mut neg = self.negotiation.lock().await;
        if self.is_closed() || !neg.established || neg.awaiting_answer {
            return Ok(());
        }
        if !self.needs_offer.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        if self.ice_restart.swap(false, Ordering::AcqRel) {
            self.pc.restart_ice().await?;
        }
        let offer = match self.pc.create_offer(None).await {
            Ok(offer) => offer,
            Err(err) => {
                self.needs_offer.store(true, Ordering::Release);
                return Err(err.into());
            }
        };
        self.pc.set_local_description(offer.clone()).await?;
        neg.awaiting_answer = true;
        drop(neg);
        self.emit(RelayEvent::Offer { sdp: offer });
        Ok(())
    }

    /// Starts sending `up` (another participant's track) on this connection.
    pub(crate) async fn subscribe(self: &Arc<Self>, up: &Arc<UpTrack>) {
        let _guard = self.subscribing.lock().await;
        if self.is_closed() || up.is_ended() || up.has_subscriber(self.id) {
            return;
        }
        let ssrc = loop {
            let s: u32 = rand::random();
            if s != 0 {
                break s;
            }
        };
        let kind = match up.info.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let kind_name = match up.info.kind {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        };
        let track = MediaStreamTrack::new(
            up.info.participant_id.to_string(),
            format!("{kind_name}-{ssrc:08x}"),
            format!("{kind_name}-{}", up.info.participant_id),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: up.info.mime_type.clone(),
                    clock_rate: up.info.clock_rate,
                    channels: up.info.channels,
                    ..Default::default()
                },
                active: true,
                ..Default::default()
            }],
        );
        let local = Arc::new(TrackLocalStaticRTP::new(track));
        let sender = match self
            .pc
            .add_track(Arc::clone(&local) as Arc<dyn TrackLocal>)
            .await
        {
            Ok(sender) => sender,
            Err(err) => {
                tracing::warn!(participant = %self.id, %err, "cannot attach a forwarded track");
                return;
            }
        };
        let down = Arc::new(DownTrack::new(self.id, up, Arc::clone(&local), sender, ssrc));
        // The local track is bound by `add_track`: its RTCP can be read from now on.
        let handle = tokio::spawn(relay_subscriber_rtcp(local, Arc::downgrade(up)));
        self.track_task(handle.abort_handle());
        self.downtracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&down));
        if !up.add_subscriber(Arc::clone(&down)) {
            // The track ended meanwhile.
            self.detach(&down).await;
            return;
        }
        self.needs_offer.store(true, Ordering::Release);
        self.spawn_renegotiation();
    }

    /// Stops sending a forwarded track on this connection.
    pub(crate) async fn unsubscribe(self: &Arc<Self>, down: &Arc<DownTrack>) {
        let _guard = self.subscribing.lock().await;
        self.detach(down).await;
    }

    /// [`unsubscribe`](Self::unsubscribe) with the `subscribing` lock held.
    async fn detach(self: &Arc<Self>, down: &Arc<DownTrack>) {
        let removed = {
            let mut downs = self.downtracks.lock().unwrap_or_else(PoisonError::into_inner);
            let before = downs.len();
            downs.retain(|d| !Arc::ptr_eq(d, down));
            before != downs.len()
        };
        if !removed || self.is_closed() {
            return;
        }
        if let Err(err) = self.pc.remove_track(&down.sender).await {
            tracing::debug!(participant = %self.id, %err, "remove_track failed");
        }
        self.needs_offer.store(true, Ordering::Release);
        self.spawn_renegotiation();
    }

    /// Detaches a published track from every subscriber.
    async fn unpublish(relay: &RelayShared, up: &Arc<UpTrack>) {
        for down in up.end() {
            if let Some(sub) = relay.member(up.info.call_id, down.subscriber) {
                sub.unsubscribe(&down).await;
            }
        }
    }

    /// Full teardown. Idempotent.
    pub(crate) async fn close(self: &Arc<Self>, relay: &RelayShared) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        relay.remove_member(self);
        let ups: Vec<_> = std::mem::take(&mut *self.uptracks.lock().unwrap_or_else(PoisonError::into_inner));
        for up in &ups {
            Self::unpublish(relay, up).await;
        }
        let downs: Vec<_> = std::mem::take(&mut *self.downtracks.lock().unwrap_or_else(PoisonError::into_inner));
        for down in &downs {
            if let Some(up) = down.source.upgrade() {
                up.remove_subscriber(self.id);
            }
        }
        self.shutdown().await;
    }

    /// Teardown when the relay itself is gone.
    pub(crate) async fn close_connection_only(self: &Arc<Self>) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for up in std::mem::take(&mut *self.uptracks.lock().unwrap_or_else(PoisonError::into_inner)) {
            up.end();
        }
        self.downtracks.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.shutdown().await;
    }

    async fn shutdown(self: &Arc<Self>) {
        for t in std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner)) {
            t.abort();
        }
        match tokio::time::timeout(CLOSE_TIMEOUT, self.pc.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(participant = %self.id, %err, "close failed"),
            Err(_) => tracing::warn!(participant = %self.id, "close timed out"),
        }
        // `try_send` directly: `emit` would try to close again on a full channel.
        let _ = self.events.try_send(RelayEvent::Closed);
    }
}

/// The life of one published track: wait for its first packet, announce it, attach it to the
/// other participants, forward until it ends, detach.
async fn run_published_track(weak: Weak<ParticipantInner>, remote: Arc<dyn TrackRemote>) {
    // Read up to the first RTP packet: it fixes the media SSRC and payload type.
    let mut first = Vec::new();
    let first_packet = loop {
        match remote.poll().await {
            Some(TrackRemoteEvent::OnRtpPacket(p)) => break p,
            Some(TrackRemoteEvent::OnEnded) | None => return,
            Some(_) => {}
        }
    };
    let ssrc = remote
        .ssrcs()
        .await
        .first()
        .copied()
        .unwrap_or(first_packet.header.ssrc);
    let codec = remote.codec(ssrc).await.unwrap_or_default();
    let kind = match remote.kind().await {
        RtpCodecKind::Audio => MediaKind::Audio,
        _ => MediaKind::Video,
    };
    let payload_type = first_packet.header.payload_type;
    first.push(first_packet);

    let Some(me) = weak.upgrade() else { return };
    let Some(relay) = me.relay.upgrade() else { return };
    if me.is_closed() {
        return;
    }
    let info = TrackInfo {
        call_id: me.call_id,
        participant_id: me.id,
        track_id: remote.track_id().await,
        stream_id: remote.stream_id().await,
        kind,
        mime_type: codec.mime_type.clone(),
        clock_rate: codec.clock_rate,
        channels: codec.channels,
        ssrc,
        payload_type,
    };
    let up = Arc::new(UpTrack::new(
        info.clone(),
        Arc::clone(&remote),
        relay.config.keyframe_request_interval,
        Arc::clone(&relay.counters),
    ));
    let tap = relay.config.tap.as_ref().and_then(|f| f.open(&info));
    me.uptracks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::clone(&up));
    me.emit(RelayEvent::TrackPublished { track: info.clone() });
    let others = relay.members_except(me.call_id, me.id);
    drop(me);
    drop(relay);

    // Forward at once; subscribers are attached concurrently and join the loop's snapshot as
    // they are ready (a late one gets a keyframe when its negotiation completes).
    // Not aborted when the track ends: a subscription cut half-way would leave a sender
    // behind; `subscribe` itself notices an ended track and backs out.
    {
        let up = Arc::clone(&up);
        tokio::spawn(async move {
            for sub in others {
                sub.subscribe(&up).await;
            }
        });
    }
    forward_track(Arc::clone(&up), remote, tap, first).await;

    // The track ended: by the client's choice (the connection lives on) or by close.
    if let Some(me) = weak.upgrade() {
        let still_listed = {
            let mut ups = me.uptracks.lock().unwrap_or_else(PoisonError::into_inner);
            let before = ups.len();
            ups.retain(|u| !Arc::ptr_eq(u, &up));
            before != ups.len()
        };
        if still_listed && !me.is_closed() {
            if let Some(relay) = me.relay.upgrade() {
                ParticipantInner::unpublish(&relay, &up).await;
            }
            me.emit(RelayEvent::TrackUnpublished { track: info });
        }
    }
    up.end();
}
