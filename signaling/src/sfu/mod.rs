//! The media relay (selective forwarding unit): one peer connection per participant with the
//! server; every track a participant publishes is forwarded to every other participant of the
//! same call, and shown to a [`PacketTap`] (the recorder) packet by packet.
//!
//! This module is the transport layer for media. It knows calls and participants only as
//! [`Uuid`]s and depends on nothing else in the server: the signaling layer drives it through
//! [`Relay::join`] and the [`Participant`] handle, and relays [`RelayEvent`]s to the client.
//! `docs/media-relay.md` explains the design and the measurements behind it.
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Relay`], [`RelayEvent`], [`TrackInfo`], [`SfuError`], call membership |
//! | `config.rs` | [`RelayConfig`]; media engine, interceptors and settings of each connection |
//! | `participant.rs` | [`Participant`]: one connection, its negotiation and teardown |
//! | `forward.rs` | the per-track forwarding loop, subscriber tracks, keyframe requests |
//! | `rtcp.rs` | the interceptor that hands PLI/FIR/SR to the relay |
//! | `tap.rs` | [`TapFactory`] / [`PacketTap`], the recorder's hook |
//!
//! # Negotiation
//!
//! The client makes the first offer ([`Participant::handle_offer`] returns the answer). From
//! then on the relay offers whenever the set of tracks a participant must receive changes (or
//! on [`Participant::restart_ice`]): it sends [`RelayEvent::Offer`] and expects
//! [`Participant::handle_answer`]. Candidates trickle both ways ([`RelayEvent::IceCandidate`],
//! [`Participant::add_ice_candidate`]). The relay is the *polite* peer: a client offer that
//! crosses a relay offer wins — the relay rolls its offer back, answers, then offers again.
//! The signaling layer must send the answer returned by `handle_offer` to the client before it
//! forwards the events that follow the call.
//!
//! In every SDP the relay produces, a forwarded track's `msid` stream id is the publishing
//! participant's id: that is how a client tells whose track it receives.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(offer: webrtc::peer_connection::RTCSessionDescription) -> Result<(), signaling::sfu::SfuError> {
//! use signaling::sfu::{Relay, RelayConfig, RelayEvent};
//! let relay = Relay::new(RelayConfig::default());
//! let (tx, mut events) = tokio::sync::mpsc::channel(64);
//! let me = relay.join(uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), tx).await?;
//! let answer = me.handle_offer(offer).await?; // send it to the client
//! while let Some(event) = events.recv().await {
//!     match event {
//!         RelayEvent::Offer { sdp } => { /* to the client; its answer → me.handle_answer */ }
//!         RelayEvent::IceCandidate { candidate } => { /* to the client */ }
//!         RelayEvent::Closed => break,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod config;
mod forward;
mod participant;
mod rtcp;
mod tap;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use uuid::Uuid;

pub use config::RelayConfig;
pub use participant::Participant;
pub use tap::{PacketTap, TapFactory};

pub use rtc::peer_connection::state::RTCPeerConnectionState;
pub use rtc::peer_connection::transport::{RTCIceCandidateInit, RTCIceServer};
pub use webrtc::peer_connection::RTCSessionDescription;

use config::PortAllocator;
use participant::ParticipantInner;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An audio track (Opus).
    Audio,
    /// A video track (VP8).
    Video,
}

/// What the relay knows about one published (inbound) track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// The call it belongs to.
    pub call_id: Uuid,
    /// The participant publishing it.
    pub participant_id: Uuid,
    /// The track id the publisher gave it (`msid` track id).
    pub track_id: String,
    /// The publisher's stream id (`msid` stream id).
    pub stream_id: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// Codec MIME type, e.g. `video/VP8`.
    pub mime_type: String,
    /// RTP clock rate of the codec.
    pub clock_rate: u32,
    /// Audio channels (0 for video).
    pub channels: u16,
    /// The publisher's media SSRC.
    pub ssrc: u32,
    /// The payload type the publisher uses for the media (not its RTX).
    pub payload_type: u8,
}

/// What the relay tells the signaling layer about one participant's connection.
///
/// Delivered on the bounded channel given to [`Relay::join`]. The relay never waits for that
/// channel (events are produced inside the connection's driver): if it is **full**, or its
/// receiver is gone, the participant is closed — a consumer that far behind has lost the
/// negotiation anyway. The channel then ends (`recv()` returns `None`) once drained; a
/// capacity of 64 is plenty for a live consumer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RelayEvent {
    /// A relay-initiated offer (tracks added or removed, or an ICE restart). Send it to the
    /// client and pass its answer to [`Participant::handle_answer`].
    Offer {
        /// The offer (`type: "offer"`).
        sdp: RTCSessionDescription,
    },
    /// A local ICE candidate of the relay, to trickle to the client.
    IceCandidate {
        /// In the browser's `candidate.toJSON()` form.
        candidate: RTCIceCandidateInit,
    },
    /// The peer connection changed state. `Failed`/`Disconnected` are reported, not acted on:
    /// whether to wait for a reconnect (ICE restart) is the signaling layer's decision.
    ConnectionState {
        /// The new state.
        state: RTCPeerConnectionState,
    },
    /// This participant's track started arriving (first packet) and is now forwarded.
    TrackPublished {
        /// The track.
        track: TrackInfo,
    },
    /// This participant's track ended (the client removed it) and is no longer forwarded.
    TrackUnpublished {
        /// The track.
        track: TrackInfo,
    },
    /// The participant was closed (by [`Participant::close`], a duplicate join, or an event
    /// overflow). Last event.
    Closed,
}

/// Errors of the media relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// The participant was closed.
    #[error("the participant's connection is closed")]
    Closed,
    /// A description arrived that the negotiation state does not allow (an answer with no
    /// offer pending, an offer passed as an answer, …). Not retryable as is; the connection
    /// stays usable.
    #[error("unexpected session description: {0}")]
    UnexpectedDescription(&'static str),
    /// No UDP port of the configured range could be bound.
    #[error("no UDP port available for a new connection")]
    NoPortAvailable,
    /// The WebRTC stack refused an operation (malformed SDP or candidate, …).
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
}

/// A snapshot of the relay's counters (process lifetime).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// RTP packets received on published tracks.
    pub packets_received: u64,
    /// RTP packet copies handed to subscriber connections.
    pub packets_forwarded: u64,
    /// Copies that the subscriber connection refused (closing, not yet negotiated).
    pub forward_errors: u64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: u64,
    /// Participant connections still in memory: equals the participants joined and not yet
    /// closed, once teardown has finished. A number that stays above that is a leak.
    pub connections_alive: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) packets_received: AtomicU64,
    pub(crate) packets_forwarded: AtomicU64,
    pub(crate) forward_errors: AtomicU64,
    pub(crate) keyframe_requests: AtomicU64,
    /// Participant connection objects alive (not yet dropped).
    pub(crate) connections_alive: AtomicU64,
}

/// The state shared by the relay handle and (weakly) by every participant.
pub(crate) struct RelayShared {
    pub(crate) config: RelayConfig,
    pub(crate) ports: PortAllocator,
    /// call → participant → connection. Holds the only long-lived strong references to
    /// participants besides their [`Participant`] handles.
    calls: Mutex<HashMap<Uuid, HashMap<Uuid, Arc<ParticipantInner>>>>,
    pub(crate) counters: Arc<Counters>,
}

impl RelayShared {
    /// The other members of a call, at this instant.
    pub(crate) fn members_except(&self, call_id: Uuid, except: Uuid) -> Vec<Arc<ParticipantInner>> {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls
            .get(&call_id)
            .map(|m| m.values().filter(|p| p.id != except).cloned().collect())
            .unwrap_or_default()
    }

    /// One member of a call.
    pub(crate) fn member(&self, call_id: Uuid, participant_id: Uuid) -> Option<Arc<ParticipantInner>> {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.get(&call_id)?.get(&participant_id).cloned()
    }

    /// Removes `p` from its call if it is still the registered connection for its id (a
    /// duplicate join may have replaced it).
    pub(crate) fn remove_member(&self, p: &Arc<ParticipantInner>) {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(members) = calls.get_mut(&p.call_id) {
            if members.get(&p.id).is_some_and(|m| Arc::ptr_eq(m, p)) {
                members.remove(&p.id);
            }
            if members.is_empty() {
                calls.remove(&p.call_id);
            }
        }
    }

    /// Registers `p`, returning the connection it replaces.
    fn insert_member(&self, p: Arc<ParticipantInner>) -> Option<Arc<ParticipantInner>> {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.entry(p.call_id).or_default().insert(p.id, p)
    }
}

/// The media relay. Cheap to clone; every clone is the same relay.
#[derive(Clone)]
pub struct Relay {
    shared: Arc<RelayShared>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay with this configuration. Binds nothing yet: each [`join`](Self::join) binds one
    /// UDP socket.
    pub fn new(config: RelayConfig) -> Self {
        let ports = PortAllocator::new(config.port_range.clone());
        Self {
            shared: Arc::new(RelayShared {
                config,
                ports,
                calls: Mutex::new(HashMap::new()),
                counters: Arc::new(Counters::default()),
            }),
        }
    }

    /// The STUN/TURN servers clients should use (for the join response).
    pub fn ice_servers(&self) -> &[RTCIceServer] {
        &self.shared.config.ice_servers
    }

    /// Opens the server side of `participant_id`'s connection in `call_id`. Tracks already
    /// published in the call are attached at once and will be offered after the client's
    /// first offer is answered. A second join of the same participant replaces (closes) the
    /// first connection.
    ///
    /// `events` receives this participant's [`RelayEvent`]s; see there for what happens when it
    /// is full.
    pub async fn join(
        &self,
        call_id: Uuid,
        participant_id: Uuid,
        events: mpsc::Sender<RelayEvent>,
    ) -> Result<Participant, SfuError> {
        let inner = ParticipantInner::connect(&self.shared, call_id, participant_id, events).await?;
        if let Some(old) = self.shared.insert_member(Arc::clone(&inner)) {
            old.close(&self.shared).await;
        }
        // Subscribe to what the others already publish.
        for other in self.shared.members_except(call_id, participant_id) {
            for up in other.published() {
                inner.subscribe(&up).await;
            }
        }
        Ok(Participant::new(inner, Arc::downgrade(&self.shared)))
    }

    /// Closes every participant of a call (the call ended).
    pub async fn close_call(&self, call_id: Uuid) {
        let members: Vec<_> = {
            let calls = self.shared.calls.lock().unwrap_or_else(PoisonError::into_inner);
            calls
                .get(&call_id)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        };
        for p in members {
            p.close(&self.shared).await;
        }
    }

    /// Asks `participant_id`'s published video tracks in `call_id` for a keyframe (a PLI, rate
    /// limited per track like subscribers' requests). The recorder uses it when a segment is
    /// about to roll over. False when the participant is not here or publishes no video. Call
    /// it inside the tokio runtime.
    pub fn request_keyframe(&self, call_id: Uuid, participant_id: Uuid) -> bool {
        let Some(p) = self.shared.member(call_id, participant_id) else { return false };
        let mut any = false;
        for up in p.published() {
            if up.info.kind == MediaKind::Video && !up.is_ended() {
                up.request_keyframe();
                any = true;
            }
        }
        any
    }

    /// A handle that does not keep the relay alive (for the recorder, which the relay's own
    /// configuration holds).
    pub fn downgrade(&self) -> WeakRelay {
        WeakRelay(Arc::downgrade(&self.shared))
    }

    /// How many participants are connected to a call.
    pub fn participant_count(&self, call_id: Uuid) -> usize {
        let calls = self.shared.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.get(&call_id).map_or(0, HashMap::len)
    }

    /// How many calls have at least one participant.
    pub fn call_count(&self) -> usize {
        self.shared.calls.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The relay's counters.
    pub fn stats(&self) -> RelayStats {
        let c = &self.shared.counters;
        RelayStats {
            packets_received: c.packets_received.load(Ordering::Relaxed),
            packets_forwarded: c.packets_forwarded.load(Ordering::Relaxed),
            forward_errors: c.forward_errors.load(Ordering::Relaxed),
            keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
            connections_alive: c.connections_alive.load(Ordering::Relaxed),
        }
    }
}

/// A [`Relay`] reference that does not keep it alive.
#[derive(Clone, Default)]
pub struct WeakRelay(std::sync::Weak<RelayShared>);

impl std::fmt::Debug for WeakRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakRelay").field("alive", &(self.0.strong_count() > 0)).finish()
    }
}

impl WeakRelay {
    /// The relay, if it still exists.
    pub fn upgrade(&self) -> Option<Relay> {
        self.0.upgrade().map(|shared| Relay { shared })
    }
}
