//! What a call tells the application: [`CallEvent`]s, and remote tracks delivering
//! [`RtpPacket`]s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use signaling_protocol::{
    ChatMessageId, EndReason, LeaveReason, ParticipantId, ParticipantInfo, ParticipantRole, RecordingNotice, Timestamp,
};
use tokio::sync::mpsc;

use crate::error::Error;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Opus audio.
    Audio,
    /// VP8 video.
    Video,
}

/// Something that happened in the call. Read them from the receiver [`Call::join`] returns.
///
/// [`Call::join`]: crate::Call::join
#[derive(Debug)]
#[non_exhaustive]
pub enum CallEvent {
    /// This client is in the call (always the first event; again after a full rejoin, as the
    /// complete current state).
    Joined {
        /// This client's participant id.
        participant_id: ParticipantId,
        /// Its role in the call.
        role: ParticipantRole,
        /// The others already in the call.
        participants: Vec<ParticipantInfo>,
        /// That the call is recorded, why and for how long. **Show it to the user, in full,
        /// and keep a recording indicator visible for the whole call.**
        recording: RecordingNotice,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left (or was removed after the reconnect grace period: `reason` is
    /// [`LeaveReason::TimedOut`]).
    ParticipantLeft {
        /// Who.
        participant_id: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// Someone's connection dropped; their place is kept for the grace period.
    ParticipantReconnecting {
        /// Who.
        participant_id: ParticipantId,
    },
    /// Someone is back.
    ParticipantReconnected {
        /// Who.
        participant_id: ParticipantId,
    },
    /// A participant's track started arriving (also after renegotiation). Read its packets
    /// from [`RemoteTrack::packets`]; the channel ends when the track ends.
    RemoteTrack(RemoteTrack),
    /// A chat message (this client's own messages come back too, with `own` set).
    Chat(ChatMessage),
    /// A participant's microphone or camera state changed (as they declare it).
    MediaStateChanged {
        /// Who.
        participant_id: ParticipantId,
        /// Microphone muted.
        audio_muted: bool,
        /// Camera off.
        video_off: bool,
    },
    /// The connection to the server is being restored: the SDK reconnects by itself.
    Reconnecting {
        /// What broke.
        cause: ReconnectCause,
    },
    /// The connection is restored.
    Reconnected {
        /// What had broken.
        cause: ReconnectCause,
        /// `true`: the session resumed and nothing was missed. `false`: the server no longer
        /// knew the session and the call was joined again (a `Joined` event with the full
        /// state follows).
        resumed: bool,
    },
    /// The call is over for this client. Last event.
    Ended {
        /// Why.
        cause: EndCause,
    },
    /// A request was refused or something failed that did not end the call.
    Error(Error),
}

/// What a [`CallEvent::Reconnecting`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconnectCause {
    /// The signaling socket dropped or went silent; the session is resumed on a new one.
    Signal,
    /// The media connection failed or disconnected; ICE is restarted.
    Media,
}

/// Why the call is over for this client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndCause {
    /// The call ended for everyone.
    CallEnded {
        /// Why.
        reason: EndReason,
        /// Who ended it, if a participant did.
        ended_by: Option<ParticipantId>,
    },
    /// This client left ([`Call::leave`](crate::Call::leave)).
    Left,
    /// The server removed this participant (e.g. it was away longer than the grace period).
    Removed(LeaveReason),
    /// The same identity joined from another device; do not reconnect by yourself.
    Replaced,
    /// Reconnecting failed for longer than the reconnect policy allows.
    ConnectionLost(Error),
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The server's id for it.
    pub message_id: ChatMessageId,
    /// Who sent it.
    pub sender: ParticipantId,
    /// The sender's display name.
    pub sender_name: String,
    /// When the server received it.
    pub sent_at: Timestamp,
    /// The text.
    pub text: String,
    /// This client sent it.
    pub own: bool,
}

/// One received RTP packet of a remote track.
#[derive(Debug, Clone)]
pub struct RtpPacket {
    /// RTP sequence number.
    pub sequence_number: u16,
    /// RTP timestamp (48 kHz for Opus, 90 kHz for VP8).
    pub timestamp: u32,
    /// The marker bit: for video, the last packet of a frame.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// The payload (for VP8, starting with the payload descriptor).
    pub payload: Bytes,
    /// When it was received.
    pub received_at: Instant,
}

impl RtpPacket {
    /// For video: this packet ends a frame (frame boundaries are marked, RFC 7741).
    pub fn ends_frame(&self) -> bool {
        self.marker
    }

    /// For VP8: this packet starts a keyframe.
    pub fn is_vp8_keyframe(&self) -> bool {
        is_vp8_keyframe(&self.payload)
    }
}

/// Whether a VP8 RTP payload starts a keyframe: the descriptor has S=1 and partition 0, and
/// the VP8 payload header's P bit is 0 (RFC 7741, sections 4.2 and 4.3).
pub fn is_vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else { return false };
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(1) else { return false };
        i = 2;
        if x & 0x80 != 0 {
            i += if payload.get(i).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
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

/// A track another participant publishes, as received from the server.
///
/// Packets arrive on a bounded channel ([`CallConfig::track_capacity`]). **Full policy:** the
/// SDK never waits for the application (the WebRTC stack would drop media anyway): when the
/// channel is full the newest packet is dropped and counted in [`RemoteTrack::dropped`].
/// Dropping the receiver is allowed; the SDK keeps draining the track.
///
/// [`CallConfig::track_capacity`]: crate::CallConfig::track_capacity
#[derive(Debug)]
pub struct RemoteTrack {
    /// Whose track (the publishing participant).
    pub participant_id: ParticipantId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The track id the server gave it.
    pub track_id: String,
    /// The packets, in arrival order. Ends when the track ends.
    pub packets: mpsc::Receiver<RtpPacket>,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl RemoteTrack {
    /// Packets dropped because [`RemoteTrack::packets`] was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
