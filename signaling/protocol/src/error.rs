//! Error codes sent to clients, and the error of parsing and validating a client message.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::RequestId;
use crate::server::ServerMessage;

/// The stable code of an `error` message. Clients branch on it; the `message` text is for
/// people and logs and may change.
///
/// `docs/protocol.md` says when each is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The first message was neither `hello` nor `resume`, or the token is malformed, badly
    /// signed or not for this service.
    Unauthenticated,
    /// The token has expired (checked at `hello` and `join`, not at `resume`).
    TokenExpired,
    /// Authenticated, but not allowed: a call outside the token's scope, a role the identity
    /// does not hold, `end_call` by a non-agent, a queue action by the wrong role, a `resume`
    /// with a token for another subject.
    Forbidden,
    /// `hello` asked for a protocol version this server does not speak.
    VersionUnsupported,
    /// Not valid JSON, not an object, a missing `type`, a missing, mistyped or unknown field,
    /// a limit exceeded, a description whose `type` does not match the message.
    InvalidMessage,
    /// A `type` this server does not know.
    UnknownType,
    /// The message is larger than [`MAX_MESSAGE_BYTES`](crate::limits::MAX_MESSAGE_BYTES).
    MessageTooLarge,
    /// The message is valid but not now: `sdp_answer` with no server offer outstanding,
    /// `ice_candidate` before any description, a second `hello`, `resume` on an
    /// authenticated socket.
    OutOfOrder,
    /// Reserved: a client `sdp_offer` the server cannot take now. A v1 server takes every
    /// client offer (it is the polite peer and rolls its own crossing offer back), so it does
    /// not send this today; a client that gets it answers the server's next offer, then
    /// offers again if it still needs to.
    Glare,
    /// Too many messages; `retry_after_ms` says when to try again.
    RateLimited,
    /// A call message for a call this session has not joined.
    NotInCall,
    /// `join` for a call while this session is in another one; `leave` it first.
    AlreadyInCall,
    /// No such call.
    CallNotFound,
    /// The call has already ended.
    CallEnded,
    /// `accept_offer` / `decline_offer` for an offer that expired, was withdrawn, or was not
    /// made to this agent.
    OfferExpired,
    /// `cancel_ticket` for a ticket that does not exist or is not this client's.
    TicketNotFound,
    /// The server is draining or overloaded; try again later (on another node).
    Unavailable,
    /// A fault on the server; details are in its logs, never in the message.
    Internal,
    /// A code added by a newer server: show the message, treat it as not retryable.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a v1 server sends (all but [`ErrorCode::Unknown`]).
    pub const ALL: &'static [ErrorCode] = &[
        Self::Unauthenticated,
        Self::TokenExpired,
        Self::Forbidden,
        Self::VersionUnsupported,
        Self::InvalidMessage,
        Self::UnknownType,
        Self::MessageTooLarge,
        Self::OutOfOrder,
        Self::Glare,
        Self::RateLimited,
        Self::NotInCall,
        Self::AlreadyInCall,
        Self::CallNotFound,
        Self::CallEnded,
        Self::OfferExpired,
        Self::TicketNotFound,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::TokenExpired => "token_expired",
            Self::Forbidden => "forbidden",
            Self::VersionUnsupported => "version_unsupported",
            Self::InvalidMessage => "invalid_message",
            Self::UnknownType => "unknown_type",
            Self::MessageTooLarge => "message_too_large",
            Self::OutOfOrder => "out_of_order",
            Self::Glare => "glare",
            Self::RateLimited => "rate_limited",
            Self::NotInCall => "not_in_call",
            Self::AlreadyInCall => "already_in_call",
            Self::CallNotFound => "call_not_found",
            Self::CallEnded => "call_ended",
            Self::OfferExpired => "offer_expired",
            Self::TicketNotFound => "ticket_not_found",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }

    /// Whether sending the same message again later may succeed (after `retry_after_ms` when
    /// given). Everything else needs a different message, a new token or user action.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::RateLimited | Self::Unavailable | Self::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client message that could not be accepted: too large, not parseable, or over a limit.
///
/// Turn it into the `error` to send with [`ProtocolError::to_server_message`]; answer it with
/// `reply_to` set to [`ProtocolError::request_id`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    code: ErrorCode,
    message: String,
    request_id: Option<RequestId>,
}

impl ProtocolError {
    /// An error with this code and human-readable message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            request_id: None,
        }
    }

    /// `invalid_message` with this explanation.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidMessage, message)
    }

    /// Attaches the id of the client message this error answers.
    pub fn with_request_id(mut self, id: Option<RequestId>) -> Self {
        self.request_id = id;
        self
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The explanation, safe to show to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The client's `id` of the message, when it could be read.
    pub fn request_id(&self) -> Option<RequestId> {
        self.request_id
    }

    /// The `error` message to send back (put [`Self::request_id`] in the envelope's
    /// `reply_to`).
    pub fn to_server_message(&self) -> ServerMessage {
        ServerMessage::Error {
            code: self.code,
            message: self.message.clone(),
            retry_after_ms: None,
        }
    }
}
