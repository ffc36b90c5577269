//! Server → client messages and their sequenced envelope.

use serde::{Deserialize, Serialize};

use crate::call::{
    EndReason, LeaveReason, ParticipantInfo, ParticipantRole, RecordingNotice, Role,
};
use crate::error::ErrorCode;
use crate::ids::{
    CallId, ChatMessageId, OfferId, ParticipantId, RequestId, SessionId, TicketId, TicketNo,
    Timestamp, UserId,
};
use crate::queue::{
    MatterSummary, PresenceStatus, ResidentSummary, SkillFigures, TicketState, WithdrawReason,
};
use crate::rtc::{IceCandidate, IceServer, IceTransportPolicy, SessionDescription};

/// The `seq` of messages sent outside any session (before `welcome`, or `rejoin_required`).
/// Clients do not record it as their last seen sequence.
pub const SEQ_UNSEQUENCED: u64 = 0;

/// A message from the server to a client. On the wire it is a JSON object whose `type` names
/// the variant, inside a [`ServerEnvelope`] that adds `seq` and maybe `reply_to`.
///
/// Clients must ignore fields they do not know, and messages whose `type` they do not know
/// (they parse as [`ServerMessage::Unknown`]): within protocol v1 the server may add both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// Answer to `hello`: the session is open.
    Welcome {
        /// The new session's id; keep it to `resume`.
        session_id: SessionId,
        /// The protocol version the server will speak on this session.
        protocol_version: u32,
        /// The authenticated account.
        user_id: UserId,
        /// Its role (from the token).
        role: Role,
        /// Send a `ping` this often, in milliseconds.
        heartbeat_interval_ms: u64,
        /// Treat the socket as dead after this long without any message from the server, in
        /// milliseconds; the server does the same with the client's messages.
        heartbeat_timeout_ms: u64,
        /// How long after a drop the session can still be resumed, in milliseconds.
        resume_window_ms: u64,
        /// The server's clock.
        server_time: Timestamp,
    },
    /// Sent after the replayed messages: the session is resumed and the client is caught up.
    Resumed {
        /// The session resumed.
        session_id: SessionId,
        /// How many messages were replayed before this one.
        replayed: u32,
        /// The highest client `id` the server has processed in this session; the client
        /// resends its unanswered messages with a higher `id`. Absent if none had an id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_client_id: Option<RequestId>,
        /// Fresh STUN/TURN servers (TURN credentials are short-lived) when the session is in a
        /// call: `setConfiguration` them before an ICE restart. Absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ice_servers: Option<Vec<IceServer>>,
    },
    /// Answer to `resume` when the session cannot be resumed: send `hello`, then `join` the
    /// call again (within the grace period the participant keeps its place).
    RejoinRequired {
        /// Why.
        reason: RejoinReason,
    },
    /// Answer to `ping`.
    Pong {
        /// The `ts` of the `ping`, echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
        /// The server's clock.
        server_time: Timestamp,
    },
    /// A client message with an `id` was accepted and has no more specific answer.
    Ack {},
    /// A client message was refused, or something went wrong. The connection stays open.
    Error {
        /// Stable code to branch on.
        code: ErrorCode,
        /// Human-readable explanation (English), for logs and developers.
        message: String,
        /// With `rate_limited` (and sometimes `unavailable`): wait this long before retrying,
        /// in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The server is closing this session; the socket closes right after.
    Goodbye {
        /// Why.
        reason: GoodbyeReason,
        /// Whether the client should connect again by itself (with `hello`).
        reconnect: bool,
    },

    /// Answer to `join`: the client is in the call. The client sends its first `sdp_offer` next.
    Joined {
        /// The call.
        call_id: CallId,
        /// The client's participant id in this call.
        participant_id: ParticipantId,
        /// The client's role in this call.
        role: ParticipantRole,
        /// The other participants now in the call.
        participants: Vec<ParticipantInfo>,
        /// STUN/TURN servers for the peer connection (`iceServers`).
        ice_servers: Vec<IceServer>,
        /// `iceTransportPolicy` for the peer connection.
        ice_transport_policy: IceTransportPolicy,
        /// The recording notice, which the client must show.
        recording: RecordingNotice,
    },
    /// Someone joined the call.
    ParticipantJoined {
        /// The call.
        call_id: CallId,
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left the call. If `participant_id` is the client's own, it has been removed
    /// (e.g. it came back after the grace period) and must `join` again to continue.
    ParticipantLeft {
        /// The call.
        call_id: CallId,
        /// Who.
        participant_id: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// A participant's signaling connection was lost; its place is kept for the grace
    /// period. Its media may stop.
    ParticipantReconnecting {
        /// The call.
        call_id: CallId,
        /// Who.
        participant_id: ParticipantId,
    },
    /// A reconnecting participant is back (resumed, or joined again within the grace period).
    ParticipantReconnected {
        /// The call.
        call_id: CallId,
        /// Who.
        participant_id: ParticipantId,
    },
    /// A participant's microphone or camera state changed (sent to everyone, the sender
    /// included).
    MediaStateChanged {
        /// The call.
        call_id: CallId,
        /// Whose state.
        participant_id: ParticipantId,
        /// The microphone is muted.
        audio_muted: bool,
        /// The camera is off.
        video_off: bool,
    },
    /// An SDP offer from the server: the first one after `joined`, a renegotiation when
    /// tracks are added or removed, or an ICE restart. Answer with `sdp_answer`.
    SdpOffer {
        /// The call.
        call_id: CallId,
        /// The offer.
        description: SessionDescription,
    },
    /// The server's answer to the client's `sdp_offer`.
    SdpAnswer {
        /// The call.
        call_id: CallId,
        /// The answer.
        description: SessionDescription,
    },
    /// A trickled ICE candidate of the server.
    IceCandidate {
        /// The call.
        call_id: CallId,
        /// Pass it to `addIceCandidate` as is.
        candidate: IceCandidate,
    },
    /// The server has sent all its candidates for the current ICE generation.
    EndOfCandidates {
        /// The call.
        call_id: CallId,
    },
    /// A chat message, sent to every participant, the sender included.
    Chat {
        /// The call.
        call_id: CallId,
        /// The message's id.
        message_id: ChatMessageId,
        /// Who sent it.
        sender: ParticipantId,
        /// The sender's display name at the time.
        sender_name: String,
        /// When the server received it.
        sent_at: Timestamp,
        /// The text.
        text: String,
    },
    /// The call is over for everyone; media stops. The client closes its peer connection.
    CallEnded {
        /// The call.
        call_id: CallId,
        /// The participant who ended it, if one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ended_by: Option<ParticipantId>,
        /// Why.
        reason: EndReason,
    },

    /// A call was opened for this client (an agent accepted the resident's ticket, or an agent
    /// opened a call with a resident): `join` it.
    CallAssigned {
        /// The call to join.
        call_id: CallId,
        /// The ticket it serves, if it came from the queue.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket_id: Option<TicketId>,
        /// The role the client will have in it.
        role: ParticipantRole,
    },
    /// A ticket of this client changed: position, estimated wait, or state.
    TicketUpdate {
        /// The ticket.
        ticket_id: TicketId,
        /// Its readable number, e.g. `B023`.
        ticket_no: TicketNo,
        /// The matter code.
        matter_code: String,
        /// Its state.
        state: TicketState,
        /// Place in the queue while `waiting`, 1 being next.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<u32>,
        /// Estimated wait while `waiting`, in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        estimated_wait_s: Option<u32>,
        /// The call, once `in_call`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<CallId>,
    },
    /// A ticket is offered to this agent: `accept_offer` or `decline_offer` before it
    /// expires.
    TicketOffer {
        /// The offer.
        offer_id: OfferId,
        /// The ticket.
        ticket_id: TicketId,
        /// Its readable number.
        ticket_no: TicketNo,
        /// What it is about.
        matter: MatterSummary,
        /// Who is waiting.
        resident: ResidentSummary,
        /// How long the ticket has waited, in seconds.
        waited_s: u32,
        /// When the offer expires.
        expires_at: Timestamp,
        /// The same, as milliseconds from now (for clients whose clock is off).
        expires_in_ms: u64,
    },
    /// An offer to this agent is no longer open.
    OfferWithdrawn {
        /// The offer.
        offer_id: OfferId,
        /// Why.
        reason: WithdrawReason,
    },
    /// An agent's presence changed: sent to the agent's own sessions, and to supervisors
    /// subscribed to figures.
    PresenceUpdate {
        /// The agent.
        user_id: UserId,
        /// The new status.
        status: PresenceStatus,
        /// The reason given for a break.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Since when.
        since: Timestamp,
    },
    /// Live queue and staffing figures, pushed to subscribed supervisors every few seconds.
    SupervisorFigures {
        /// When the figures were taken.
        at: Timestamp,
        /// Per skill (matter class).
        skills: Vec<SkillFigures>,
    },

    /// A message type this client does not know (from a newer server): ignore it. Never sent;
    /// serializing it is an error.
    #[serde(other, skip_serializing)]
    Unknown,
}

impl ServerMessage {
    /// Every server message `type` a v1 server sends, as on the wire.
    pub const TYPES: &'static [&'static str] = &[
        "welcome",
        "resumed",
        "rejoin_required",
        "pong",
        "ack",
        "error",
        "goodbye",
        "joined",
        "participant_joined",
        "participant_left",
        "participant_reconnecting",
        "participant_reconnected",
        "media_state_changed",
        "sdp_offer",
        "sdp_answer",
        "ice_candidate",
        "end_of_candidates",
        "chat",
        "call_ended",
        "call_assigned",
        "ticket_update",
        "ticket_offer",
        "offer_withdrawn",
        "presence_update",
        "supervisor_figures",
    ];

    /// This message's `type`, as on the wire (`"unknown"` for [`ServerMessage::Unknown`]).
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::Welcome { .. } => "welcome",
            Self::Resumed { .. } => "resumed",
            Self::RejoinRequired { .. } => "rejoin_required",
            Self::Pong { .. } => "pong",
            Self::Ack {} => "ack",
            Self::Error { .. } => "error",
            Self::Goodbye { .. } => "goodbye",
            Self::Joined { .. } => "joined",
            Self::ParticipantJoined { .. } => "participant_joined",
            Self::ParticipantLeft { .. } => "participant_left",
            Self::ParticipantReconnecting { .. } => "participant_reconnecting",
            Self::ParticipantReconnected { .. } => "participant_reconnected",
            Self::MediaStateChanged { .. } => "media_state_changed",
            Self::SdpOffer { .. } => "sdp_offer",
            Self::SdpAnswer { .. } => "sdp_answer",
            Self::IceCandidate { .. } => "ice_candidate",
            Self::EndOfCandidates { .. } => "end_of_candidates",
            Self::Chat { .. } => "chat",
            Self::CallEnded { .. } => "call_ended",
            Self::CallAssigned { .. } => "call_assigned",
            Self::TicketUpdate { .. } => "ticket_update",
            Self::TicketOffer { .. } => "ticket_offer",
            Self::OfferWithdrawn { .. } => "offer_withdrawn",
            Self::PresenceUpdate { .. } => "presence_update",
            Self::SupervisorFigures { .. } => "supervisor_figures",
            Self::Unknown => "unknown",
        }
    }

    /// An `error` with no retry hint.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// Whether the server keeps this message in the session's replay buffer.
    ///
    /// Session control messages are not replayed: `welcome`, `resumed`, `rejoin_required`
    /// and `goodbye` describe one socket, and a `pong` is stale once the socket it answered
    /// is gone. They still take a `seq`, so replayed sequences can have gaps.
    pub const fn is_replayable(&self) -> bool {
        !matches!(
            self,
            Self::Welcome { .. }
                | Self::Resumed { .. }
                | Self::RejoinRequired { .. }
                | Self::Pong { .. }
                | Self::Goodbye { .. }
                | Self::Unknown
        )
    }

    /// The call this message is about, for messages that are about one.
    pub const fn call_id(&self) -> Option<CallId> {
        match self {
            Self::Joined { call_id, .. }
            | Self::ParticipantJoined { call_id, .. }
            | Self::ParticipantLeft { call_id, .. }
            | Self::ParticipantReconnecting { call_id, .. }
            | Self::ParticipantReconnected { call_id, .. }
            | Self::MediaStateChanged { call_id, .. }
            | Self::SdpOffer { call_id, .. }
            | Self::SdpAnswer { call_id, .. }
            | Self::IceCandidate { call_id, .. }
            | Self::EndOfCandidates { call_id }
            | Self::Chat { call_id, .. }
            | Self::CallEnded { call_id, .. }
            | Self::CallAssigned { call_id, .. } => Some(*call_id),
            Self::TicketUpdate { call_id, .. } => *call_id,
            Self::Welcome { .. }
            | Self::Resumed { .. }
            | Self::RejoinRequired { .. }
            | Self::Pong { .. }
            | Self::Ack {}
            | Self::Error { .. }
            | Self::Goodbye { .. }
            | Self::TicketOffer { .. }
            | Self::OfferWithdrawn { .. }
            | Self::PresenceUpdate { .. }
            | Self::SupervisorFigures { .. }
            | Self::Unknown => None,
        }
    }
}

/// Why a session cannot be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejoinReason {
    /// The server does not know the session: never existed, its resume window passed, it was
    /// closed or replaced, or it lived on a node that went away.
    SessionExpired,
    /// The session exists but its replay buffer no longer holds every message after
    /// `last_seq` (or `last_seq` is ahead of what the server sent).
    ReplayUnavailable,
    /// A reason added by a newer server.
    #[serde(other)]
    Unknown,
}

/// Why the server closes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoodbyeReason {
    /// The same identity connected and joined from elsewhere; this session is replaced. Do
    /// not reconnect by yourself (two devices would keep replacing each other).
    Replaced,
    /// The server is draining; connect again (another node will take it).
    ServerShutdown,
    /// The account was signed out or its token revoked.
    TokenRevoked,
    /// The client kept sending refused messages.
    PolicyViolation,
    /// A reason added by a newer server.
    #[serde(other)]
    Unknown,
}

/// A server message on the wire: the message with its sequence number, and the client `id`
/// it answers.
///
/// ```json
/// {"seq": 12, "reply_to": 7, "type": "ack"}
/// ```
///
/// `seq` strictly increases within a session (1 is the `welcome`), across the sockets the
/// session resumes on; [`SEQ_UNSEQUENCED`] marks messages outside any session. Replayed
/// messages are sent again byte for byte, with their original `seq` and `reply_to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEnvelope {
    /// Sequence number.
    pub seq: u64,
    /// The client `id` of the message this answers, if it answers one that had an id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<RequestId>,
    /// The message.
    #[serde(flatten)]
    pub msg: ServerMessage,
}

impl ServerEnvelope {
    /// A sequenced message that answers nothing.
    pub fn new(seq: u64, msg: ServerMessage) -> Self {
        Self {
            seq,
            reply_to: None,
            msg,
        }
    }

    /// A sequenced message answering the client message with this id (if it had one).
    pub fn reply(seq: u64, reply_to: Option<RequestId>, msg: ServerMessage) -> Self {
        Self { seq, reply_to, msg }
    }

    /// A message outside any session ([`SEQ_UNSEQUENCED`]).
    pub fn unsequenced(reply_to: Option<RequestId>, msg: ServerMessage) -> Self {
        Self {
            seq: SEQ_UNSEQUENCED,
            reply_to,
            msg,
        }
    }

    /// The JSON text to send. Fails only for [`ServerMessage::Unknown`].
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// Parses one server message (for clients). Unknown types give [`ServerMessage::Unknown`];
/// unknown fields are ignored.
pub fn parse_server_frame(text: &str) -> Result<ServerEnvelope, serde_json::Error> {
    serde_json::from_str(text)
}
