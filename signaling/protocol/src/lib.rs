//! Wire types of the signaling protocol, version 1.
//!
//! One WebSocket carries JSON text messages both ways. A client sends [`ClientMessage`]s in a
//! [`ClientEnvelope`] (an optional correlation `id`); the server sends [`ServerMessage`]s in a
//! [`ServerEnvelope`] (a sequence number `seq` and, for answers, `reply_to`). Every message is
//! an object with a `type`. The tour, with every message and error code, is
//! `docs/protocol.md`; this crate is the reference the server and the Rust SDK share, and the
//! browser module mirrors it.
//!
//! # Layout
//!
//! - [`client`]: client messages, [`ClientMessage::validate`], [`parse_client_frame`].
//! - [`server`]: server messages, the sequenced envelope, what is replayed on resume.
//! - [`rtc`]: browser-compatible WebRTC shapes (`{type, sdp}`, `candidate.toJSON()`).
//! - [`call`], [`queue`]: shapes used inside call and queue messages.
//! - [`error`]: [`ErrorCode`] and [`ProtocolError`].
//! - [`ids`]: id newtypes and [`Timestamp`].
//! - [`limits`]: size limits and default timings.
//!
//! # Example
//!
//! The server's edge: parse, and answer a refusal with the code and the client's `id`.
//!
//! ```
//! use signaling_protocol::{parse_client_frame, ClientMessage, ErrorCode, ServerEnvelope};
//!
//! let text = r#"{"id": 1, "type": "ping", "ts": 1700000000000}"#;
//! let envelope = parse_client_frame(text).unwrap();
//! assert_eq!(envelope.msg, ClientMessage::Ping { ts: Some(1_700_000_000_000) });
//!
//! let err = parse_client_frame(r#"{"id": 2, "type": "teleport"}"#).unwrap_err();
//! assert_eq!(err.code(), ErrorCode::UnknownType);
//! let answer = ServerEnvelope::reply(7, err.request_id(), err.to_server_message());
//! assert_eq!(
//!     answer.to_json().unwrap(),
//!     r#"{"seq":7,"reply_to":2,"type":"error","code":"unknown_type","message":"unknown type `teleport`"}"#
//! );
//! ```
#![deny(missing_docs)]

pub mod call;
pub mod client;
pub mod error;
pub mod ids;
pub mod limits;
pub mod queue;
pub mod rtc;
pub mod server;

#[cfg(test)]
mod tests;

pub use call::{
    ConnectionState, EndReason, LeaveReason, ParticipantInfo, ParticipantRole, RecordingNotice,
    Role,
};
pub use client::{parse_client_frame, parse_client_message, ClientEnvelope, ClientMessage};
pub use error::{ErrorCode, ProtocolError};
pub use ids::{
    CallId, ChatMessageId, OfferId, ParticipantId, RequestId, SessionId, TicketId, TicketNo,
    Timestamp, UserId,
};
pub use queue::{
    AgentCounts, Channel, MatterSummary, PresenceStatus, PriorityReason, ResidentSummary,
    SelectablePresence, SkillFigures, TicketState, WithdrawReason,
};
pub use rtc::{IceCandidate, IceServer, IceTransportPolicy, SdpType, SessionDescription};
pub use server::{
    parse_server_frame, GoodbyeReason, RejoinReason, ServerEnvelope, ServerMessage, SEQ_UNSEQUENCED,
};

/// The protocol version this crate implements. A client announces it in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
