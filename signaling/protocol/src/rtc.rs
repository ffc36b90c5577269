//! WebRTC shapes, JSON-compatible with the browser's own objects.
//!
//! A browser can send `pc.localDescription` and `event.candidate.toJSON()` as they are, and
//! pass what it receives straight to `setRemoteDescription` / `addIceCandidate`.
//!
//! These two shapes ignore unknown fields instead of rejecting them: the browser, not this
//! protocol, owns them, and a future browser adding a field must not break calls.

use serde::{Deserialize, Serialize};

/// The `type` of a session description. Only offers and answers travel over the wire:
/// provisional answers are not used and rollback is local to each peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdpType {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
}

/// An `RTCSessionDescriptionInit`: `{"type": "offer", "sdp": "v=0\r\n..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// Offer or answer; must match the message carrying it (`sdp_offer` / `sdp_answer`).
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text (RFC 8866), at most [`MAX_SDP_BYTES`](crate::limits::MAX_SDP_BYTES).
    pub sdp: String,
}

impl SessionDescription {
    /// An offer with this SDP.
    pub fn offer(sdp: impl Into<String>) -> Self {
        Self {
            kind: SdpType::Offer,
            sdp: sdp.into(),
        }
    }

    /// An answer with this SDP.
    pub fn answer(sdp: impl Into<String>) -> Self {
        Self {
            kind: SdpType::Answer,
            sdp: sdp.into(),
        }
    }
}

/// An `RTCIceCandidateInit`, as produced by `RTCIceCandidate.toJSON()` (camelCase keys).
///
/// Absent and `null` optional fields are the same; they are left out when serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` attribute (RFC 8839 §5.1) without the `a=` prefix. An empty string is
    /// the legacy browser way of saying end-of-candidates for this generation; it is accepted
    /// and means the same as `end_of_candidates`.
    pub candidate: String,
    /// The media stream identification tag of the m-line the candidate belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The index (from 0) of the m-line the candidate belongs to.
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE username fragment the candidate belongs to; tells an old ICE generation's
    /// candidates from the current one's after an ICE restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// An `RTCIceServer` handed to clients in `joined`: pass the list as `iceServers` to
/// `new RTCPeerConnection(...)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// STUN or TURN URLs, e.g. `stun:stun.example.gov.cn:3478`,
    /// `turns:turn.example.gov.cn:443?transport=tcp`. Always a list (browsers also accept a
    /// single string; this protocol never sends one).
    pub urls: Vec<String>,
    /// TURN username (short-lived credentials, RFC 8489 / TURN REST style); absent for STUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password for `username`; absent for STUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Which candidates a client may use (`RTCConfiguration.iceTransportPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IceTransportPolicy {
    /// Any candidate (host, server-reflexive, relay).
    #[default]
    All,
    /// Relay (TURN) candidates only: for networks where only TURN over TCP/TLS on 443 gets
    /// through.
    Relay,
}
