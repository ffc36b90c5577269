//! Client → server messages, their envelope, validation and parsing.

use serde::{Deserialize, Serialize};

use crate::call::ParticipantRole;
use crate::error::{ErrorCode, ProtocolError};
use crate::ids::{CallId, OfferId, RequestId, SessionId, TicketId};
use crate::limits::{
    MAX_CANDIDATE_BYTES, MAX_CHAT_CHARS, MAX_MESSAGE_BYTES, MAX_REASON_CHARS, MAX_SDP_BYTES,
    MAX_SDP_MID_BYTES, MAX_TOKEN_BYTES, MAX_UFRAG_BYTES, MAX_USER_AGENT_CHARS,
};
use crate::queue::SelectablePresence;
use crate::rtc::{IceCandidate, SdpType, SessionDescription};

/// A message from a client to the server. On the wire it is a JSON object whose `type` names
/// the variant, inside a [`ClientEnvelope`] that may add an `id`.
///
/// Unknown fields are rejected (`invalid_message`): a client talks to a server at least as new
/// as the protocol version it announced, so an unknown field is a bug worth reporting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The first message of a new session: authenticate and agree on the protocol version.
    /// Answered by `welcome`, or by an `error` (`unauthenticated`, `token_expired`,
    /// `version_unsupported`).
    Hello {
        /// The protocol version the client speaks; [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        protocol_version: u32,
        /// The access token (a JWT).
        token: String,
        /// Free text naming the client software and device, for logs and support
        /// (`"kiosk-sdk/0.1 (rk3568)"`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_agent: Option<String>,
    },
    /// The first message on a new socket of an existing session. Answered by the missed
    /// messages and then `resumed`, or by `rejoin_required`.
    Resume {
        /// The session to resume (from `welcome`).
        session_id: SessionId,
        /// The highest `seq` the client has processed (0 if none).
        last_seq: u64,
        /// An access token for the same subject. Its expiry is not checked here, so a call
        /// outlives its token; its signature and subject are.
        token: String,
    },
    /// Heartbeat, sent every `heartbeat_interval_ms`. Answered by `pong`.
    Ping {
        /// Opaque client value echoed in the `pong` (e.g. `Date.now()`), to measure round
        /// trips.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
    /// Join a call. Answered by `joined`; then the client sends its first `sdp_offer`.
    Join {
        /// The call to join.
        call_id: CallId,
        /// The role to join in; absent lets the server use the one the identity holds in the
        /// call. A role the identity does not hold is `forbidden`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<ParticipantRole>,
        /// A token scoped to this call (e.g. a helper invited into a running call), when the
        /// session's own token does not grant it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_token: Option<String>,
    },
    /// Leave the call (the call goes on for the others, unless the rules end it).
    Leave {
        /// The call to leave.
        call_id: CallId,
    },
    /// An SDP offer from the client: its first offer after `joined`, or a later one (adding or
    /// removing its own tracks, or an ICE restart it made itself). Answered by the server's
    /// `sdp_answer`; a server offer it crosses is rolled back by the server, which offers again
    /// after answering.
    SdpOffer {
        /// The call this negotiation belongs to.
        call_id: CallId,
        /// The offer; `description.type` must be `offer`.
        description: SessionDescription,
    },
    /// The client's answer to the server's outstanding `sdp_offer`.
    SdpAnswer {
        /// The call this negotiation belongs to.
        call_id: CallId,
        /// The answer; `description.type` must be `answer`.
        description: SessionDescription,
    },
    /// A trickled local ICE candidate.
    IceCandidate {
        /// The call this candidate belongs to.
        call_id: CallId,
        /// The candidate, as `event.candidate.toJSON()` gives it.
        candidate: IceCandidate,
    },
    /// The client has gathered all its candidates (`event.candidate === null`).
    EndOfCandidates {
        /// The call this belongs to.
        call_id: CallId,
    },
    /// Ask the server to restart ICE: it answers with an `sdp_offer` carrying new ICE
    /// credentials. Send after a network change or when the connection state is `failed`.
    IceRestart {
        /// The call whose connection to restart.
        call_id: CallId,
    },
    /// The client's own microphone and camera state, shown to the others.
    MediaState {
        /// The call.
        call_id: CallId,
        /// The microphone is muted.
        audio_muted: bool,
        /// The camera is off.
        video_off: bool,
    },
    /// Send a chat message to everyone in the call. The sender gets its own copy back as
    /// `chat` (with `reply_to` when it gave an `id`).
    ChatSend {
        /// The call.
        call_id: CallId,
        /// The text: 1 to [`MAX_CHAT_CHARS`] characters, not only whitespace.
        text: String,
    },
    /// End the call for everyone (agents only).
    EndCall {
        /// The call to end.
        call_id: CallId,
    },
    /// An agent accepts a `ticket_offer`. Answered by `ack`, then `call_assigned`; or
    /// `offer_expired`.
    AcceptOffer {
        /// The offer.
        offer_id: OfferId,
    },
    /// An agent declines a `ticket_offer`; the ticket goes to the next agent.
    DeclineOffer {
        /// The offer.
        offer_id: OfferId,
        /// Why, for the supervisor, up to [`MAX_REASON_CHARS`] characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The resident (or helper) leaves the queue.
    CancelTicket {
        /// The ticket.
        ticket_id: TicketId,
    },
    /// An agent sets their presence. Answered by `ack` and a `presence_update`.
    SetPresence {
        /// The new status.
        status: SelectablePresence,
        /// Why (expected with `on_break`), up to [`MAX_REASON_CHARS`] characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A supervisor starts receiving `supervisor_figures` (and agents' `presence_update`).
    SubscribeFigures {},
    /// A supervisor stops receiving them.
    UnsubscribeFigures {},
}

impl ClientMessage {
    /// Every client message `type`, as on the wire.
    pub const TYPES: &'static [&'static str] = &[
        "hello",
        "resume",
        "ping",
        "join",
        "leave",
        "sdp_offer",
        "sdp_answer",
        "ice_candidate",
        "end_of_candidates",
        "ice_restart",
        "media_state",
        "chat_send",
        "end_call",
        "accept_offer",
        "decline_offer",
        "cancel_ticket",
        "set_presence",
        "subscribe_figures",
        "unsubscribe_figures",
    ];

    /// This message's `type`, as on the wire.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Resume { .. } => "resume",
            Self::Ping { .. } => "ping",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::SdpOffer { .. } => "sdp_offer",
            Self::SdpAnswer { .. } => "sdp_answer",
            Self::IceCandidate { .. } => "ice_candidate",
            Self::EndOfCandidates { .. } => "end_of_candidates",
            Self::IceRestart { .. } => "ice_restart",
            Self::MediaState { .. } => "media_state",
            Self::ChatSend { .. } => "chat_send",
            Self::EndCall { .. } => "end_call",
            Self::AcceptOffer { .. } => "accept_offer",
            Self::DeclineOffer { .. } => "decline_offer",
            Self::CancelTicket { .. } => "cancel_ticket",
            Self::SetPresence { .. } => "set_presence",
            Self::SubscribeFigures {} => "subscribe_figures",
            Self::UnsubscribeFigures {} => "unsubscribe_figures",
        }
    }

    /// The call this message is about, for messages that are about one.
    pub const fn call_id(&self) -> Option<CallId> {
        match self {
            Self::Join { call_id, .. }
            | Self::Leave { call_id }
            | Self::SdpOffer { call_id, .. }
            | Self::SdpAnswer { call_id, .. }
            | Self::IceCandidate { call_id, .. }
            | Self::EndOfCandidates { call_id }
            | Self::IceRestart { call_id }
            | Self::MediaState { call_id, .. }
            | Self::ChatSend { call_id, .. }
            | Self::EndCall { call_id } => Some(*call_id),
            Self::Hello { .. }
            | Self::Resume { .. }
            | Self::Ping { .. }
            | Self::AcceptOffer { .. }
            | Self::DeclineOffer { .. }
            | Self::CancelTicket { .. }
            | Self::SetPresence { .. }
            | Self::SubscribeFigures {}
            | Self::UnsubscribeFigures {} => None,
        }
    }

    /// Checks the limits serde cannot express: text lengths, SDP and candidate sizes, a
    /// description whose `type` matches its message. Errors are `invalid_message`.
    ///
    /// [`parse_client_frame`] calls it; clients should call it before sending.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            Self::Hello {
                token, user_agent, ..
            } => {
                check_token(token)?;
                if let Some(ua) = user_agent {
                    max_chars("user_agent", ua, MAX_USER_AGENT_CHARS)?;
                }
            }
            Self::Resume { token, .. } => check_token(token)?,
            Self::Join { call_token, .. } => {
                if let Some(token) = call_token {
                    max_bytes("call_token", token, MAX_TOKEN_BYTES)?;
                    if token.is_empty() {
                        return Err(ProtocolError::invalid("call_token is empty"));
                    }
                }
            }
            Self::SdpOffer { description, .. } => check_description(description, SdpType::Offer)?,
            Self::SdpAnswer { description, .. } => check_description(description, SdpType::Answer)?,
            Self::IceCandidate { candidate, .. } => check_candidate(candidate)?,
            Self::ChatSend { text, .. } => {
                max_chars("text", text, MAX_CHAT_CHARS)?;
                if text.trim().is_empty() {
                    return Err(ProtocolError::invalid("text is empty"));
                }
            }
            Self::DeclineOffer { reason, .. } | Self::SetPresence { reason, .. } => {
                if let Some(reason) = reason {
                    max_chars("reason", reason, MAX_REASON_CHARS)?;
                }
            }
            Self::Ping { .. }
            | Self::Leave { .. }
            | Self::EndOfCandidates { .. }
            | Self::IceRestart { .. }
            | Self::MediaState { .. }
            | Self::EndCall { .. }
            | Self::AcceptOffer { .. }
            | Self::CancelTicket { .. }
            | Self::SubscribeFigures {}
            | Self::UnsubscribeFigures {} => {}
        }
        Ok(())
    }
}

fn max_bytes(field: &str, value: &str, max: usize) -> Result<(), ProtocolError> {
    if value.len() > max {
        return Err(ProtocolError::invalid(format!(
            "{field} is {} bytes, over the limit of {max}",
            value.len()
        )));
    }
    Ok(())
}

fn max_chars(field: &str, value: &str, max: usize) -> Result<(), ProtocolError> {
    // Cheap bound first: a string of at most `max` bytes has at most `max` characters.
    if value.len() > max {
        let chars = value.chars().count();
        if chars > max {
            return Err(ProtocolError::invalid(format!(
                "{field} is {chars} characters, over the limit of {max}"
            )));
        }
    }
    Ok(())
}

fn check_token(token: &str) -> Result<(), ProtocolError> {
    if token.is_empty() {
        return Err(ProtocolError::invalid("token is empty"));
    }
    max_bytes("token", token, MAX_TOKEN_BYTES)
}

fn check_description(d: &SessionDescription, expected: SdpType) -> Result<(), ProtocolError> {
    if d.kind != expected {
        let (got, want) = match expected {
            SdpType::Offer => ("answer", "offer"),
            SdpType::Answer => ("offer", "answer"),
        };
        return Err(ProtocolError::invalid(format!(
            "description.type is `{got}` in an sdp_{want} message"
        )));
    }
    if d.sdp.is_empty() {
        return Err(ProtocolError::invalid("description.sdp is empty"));
    }
    max_bytes("description.sdp", &d.sdp, MAX_SDP_BYTES)
}

fn check_candidate(c: &IceCandidate) -> Result<(), ProtocolError> {
    max_bytes("candidate.candidate", &c.candidate, MAX_CANDIDATE_BYTES)?;
    if let Some(mid) = &c.sdp_mid {
        max_bytes("candidate.sdpMid", mid, MAX_SDP_MID_BYTES)?;
    }
    if let Some(ufrag) = &c.username_fragment {
        max_bytes("candidate.usernameFragment", ufrag, MAX_UFRAG_BYTES)?;
    }
    // Browsers throw a TypeError for this one too (`new RTCIceCandidate`).
    if c.sdp_mid.is_none() && c.sdp_m_line_index.is_none() {
        return Err(ProtocolError::invalid(
            "candidate needs sdpMid or sdpMLineIndex",
        ));
    }
    Ok(())
}

/// A client message on the wire: the message, plus the optional `id` that the server's
/// answer echoes as `reply_to`.
///
/// ```json
/// {"id": 7, "type": "leave", "call_id": "…"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEnvelope {
    /// Correlation id; strictly increasing within a session when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// The message.
    #[serde(flatten)]
    pub msg: ClientMessage,
}

impl ClientEnvelope {
    /// A message without an id.
    pub fn new(msg: ClientMessage) -> Self {
        Self { id: None, msg }
    }

    /// A message with an id.
    pub fn with_id(id: RequestId, msg: ClientMessage) -> Self {
        Self { id: Some(id), msg }
    }

    /// [`ClientMessage::validate`], with the error carrying this envelope's id.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        self.msg.validate().map_err(|e| e.with_request_id(self.id))
    }

    /// The JSON text to send.
    pub fn to_json(&self) -> String {
        // A ClientMessage has only strings, numbers, booleans and UUIDs: it cannot fail.
        serde_json::to_string(self).expect("client messages always serialize")
    }
}

impl From<ClientMessage> for ClientEnvelope {
    fn from(msg: ClientMessage) -> Self {
        Self::new(msg)
    }
}

/// Longest serde explanation passed on to the client.
const MAX_DETAIL_CHARS: usize = 300;

/// Parses and validates one client message (the text of one WebSocket message).
///
/// In order: larger than [`MAX_MESSAGE_BYTES`] → `message_too_large` (not parsed); not JSON,
/// not an object, no string `type` → `invalid_message`; a `type` that is not in
/// [`ClientMessage::TYPES`] → `unknown_type`; any other serde failure (missing, mistyped or
/// unknown field) → `invalid_message`; then [`ClientEnvelope::validate`]. Errors carry the
/// message's `id` when it could be read.
pub fn parse_client_frame(text: &str) -> Result<ClientEnvelope, ProtocolError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message is {} bytes, over the limit of {MAX_MESSAGE_BYTES}",
                text.len()
            ),
        ));
    }
    match serde_json::from_str::<ClientEnvelope>(text) {
        Ok(envelope) => {
            envelope.validate()?;
            Ok(envelope)
        }
        Err(err) => Err(explain(text, &err)),
    }
}

/// [`parse_client_frame`] without the envelope, for callers that do not need the `id`.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    parse_client_frame(text).map(|envelope| envelope.msg)
}

/// Cold path: work out why `text` did not parse.
fn explain(text: &str, err: &serde_json::Error) -> ProtocolError {
    // Read it again as a plain object (a derived struct would also accept an array).
    let Ok(mut object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
    else {
        return ProtocolError::invalid(match err.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("not valid JSON: {err}")
            }
            _ => "a message must be a JSON object".to_owned(),
        });
    };
    let id = object
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .map(RequestId);
    let kind = match object.remove("type") {
        None | Some(serde_json::Value::Null) => {
            return ProtocolError::invalid("missing field `type`").with_request_id(id)
        }
        Some(serde_json::Value::String(kind)) => kind,
        Some(_) => {
            return ProtocolError::invalid("field `type` must be a string").with_request_id(id)
        }
    };
    if !ClientMessage::TYPES.contains(&kind.as_str()) {
        let mut shown: String = kind.chars().take(64).collect();
        if shown.len() < kind.len() {
            shown.push('…');
        }
        return ProtocolError::new(ErrorCode::UnknownType, format!("unknown type `{shown}`"))
            .with_request_id(id);
    }
    // serde_json appends " at line L column C"; the position helps a developer, keep it.
    let mut detail: String = err.to_string().chars().take(MAX_DETAIL_CHARS).collect();
    if detail.is_empty() {
        detail.push_str("malformed message");
    }
    ProtocolError::invalid(format!("invalid `{kind}`: {detail}")).with_request_id(id)
}
