//! The SDK's error type, and which errors are worth retrying.

use signaling_protocol::ErrorCode;

/// What went wrong. [`Error::is_retryable`] says whether trying the same thing again later
/// may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL cannot be used (not `http(s)://` or `ws(s)://`, or no host). Not
    /// retryable: fix the configuration.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    /// The WebSocket could not be opened or broke during the handshake (network, DNS, TLS,
    /// server down). Retryable.
    #[error("cannot reach the server: {0}")]
    Connect(String),
    /// The server did not answer in time. Retryable.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The server refused a request with a stable code (`docs/protocol.md`, section 11).
    /// Retryable only when the code is ([`ErrorCode::is_retryable`]: `rate_limited`,
    /// `unavailable`, `internal`).
    #[error("refused by the server: {code}: {message}")]
    Refused {
        /// The stable code.
        code: ErrorCode,
        /// The server's explanation (English, for logs).
        message: String,
    },
    /// A message the SDK was asked to send breaks a protocol limit (chat too long, empty
    /// text, …). Not retryable as is.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server sent something this SDK cannot use. Not retryable.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The WebRTC stack failed (building the peer connection, applying a description). Not
    /// retryable as is; joining again starts over.
    #[error("webrtc: {0}")]
    WebRtc(String),
    /// A media source could not be opened or read (missing file, not IVF/Ogg). Not
    /// retryable.
    #[error("media source: {0}")]
    Media(String),
    /// A request was interrupted because the session had to be rebuilt (the server no longer
    /// knew it); the call was joined again, the request was not delivered. Retryable.
    #[error("interrupted by a rejoin; send it again")]
    Interrupted,
    /// The call is over for this client (ended, left, replaced, or gave up reconnecting).
    /// Not retryable: join again.
    #[error("the call is over for this client")]
    Closed,
}

impl Error {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect(_) | Error::Timeout(_) | Error::Interrupted => true,
            Error::Refused { code, .. } => code.is_retryable(),
            Error::InvalidUrl(_)
            | Error::InvalidRequest(_)
            | Error::Protocol(_)
            | Error::WebRtc(_)
            | Error::Media(_)
            | Error::Closed => false,
        }
    }

    /// The server's error code, for [`Error::Refused`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn webrtc(e: impl std::fmt::Display) -> Self {
        Error::WebRtc(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(Error::Connect("refused".into()).is_retryable());
        assert!(Error::Refused {
            code: ErrorCode::RateLimited,
            message: String::new()
        }
        .is_retryable());
        assert!(!Error::Refused {
            code: ErrorCode::Forbidden,
            message: String::new()
        }
        .is_retryable());
        assert!(!Error::Closed.is_retryable());
        assert!(!Error::InvalidUrl("ftp://x".into()).is_retryable());
    }
}
