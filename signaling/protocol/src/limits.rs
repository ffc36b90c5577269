//! Size limits and default timings of protocol v1.
//!
//! The limits are part of the protocol: the server enforces them (see
//! [`ClientMessage::validate`](crate::ClientMessage::validate)) and clients should check them
//! before sending. The `DEFAULT_` timings are what the server uses unless configured; a client
//! must use the values it receives in `welcome`, not these.

/// Largest client message the server parses, in bytes of UTF-8 JSON text. Larger messages are
/// answered with `message_too_large` without being parsed.
///
/// It is twice [`MAX_SDP_BYTES`] because an SDP's line breaks are escaped in JSON (`\r\n`
/// becomes `\\r\\n`) and the envelope adds a few fields around it.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Largest WebSocket message the server reads at all. Messages between
/// [`MAX_MESSAGE_BYTES`] and this get a `message_too_large` error and the connection stays
/// open; larger ones close the socket (WebSocket close code 1009, "message too big").
pub const MAX_FRAME_BYTES: usize = 2 * 1024 * 1024;

/// Largest SDP in an offer or answer, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Largest ICE `candidate` attribute string, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

/// Largest `sdpMid`, in bytes.
pub const MAX_SDP_MID_BYTES: usize = 64;

/// Largest ICE `usernameFragment`, in bytes (RFC 8839 allows up to 256 characters).
pub const MAX_UFRAG_BYTES: usize = 256;

/// Largest access token (a JWT in compact form), in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest chat message, in characters (Unicode scalar values, so 2000 Chinese characters are
/// allowed).
pub const MAX_CHAT_CHARS: usize = 2000;

/// Longest free-text reason (declining an offer, going on a break), in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// Longest `user_agent` a client may describe itself with in `hello`, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// Default interval between the client's `ping`s, in milliseconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 10_000;

/// Default silence after which either side treats the socket as dead, in milliseconds.
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 20_000;

/// Default time a session whose socket dropped is kept for `resume`, in milliseconds.
pub const DEFAULT_RESUME_WINDOW_MS: u64 = 60_000;

/// Default number of sequenced messages the server keeps per session for replay.
pub const DEFAULT_REPLAY_BUFFER_MESSAGES: usize = 256;

/// Default number of bytes (serialized JSON) the server keeps per session for replay; the
/// oldest messages are dropped first when either bound is reached.
pub const DEFAULT_REPLAY_BUFFER_BYTES: usize = 1024 * 1024;
