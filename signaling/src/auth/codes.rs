//! Delivery of residents' one-time sign-in codes. The transport (an SMS gateway in
//! production) is pluggable: implement [`CodeSender`].

use async_trait::async_trait;

use crate::domain::identity::PhoneNumber;

/// A code could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No sender is configured.
    #[error("code delivery is not configured")]
    Unavailable,
    /// The gateway failed.
    #[error("code delivery failed: {0}")]
    Failed(String),
}

/// Sends a one-time code to a phone.
#[async_trait]
pub trait CodeSender: Send + Sync + 'static {
    /// Delivers `code` to `phone`.
    async fn send(&self, phone: &PhoneNumber, code: &str) -> Result<(), SendError>;
}

/// Demo only: writes the code to the server log (the phone masked). Refused outside demo mode.
#[derive(Debug, Default)]
pub struct LogSender;

#[async_trait]
impl CodeSender for LogSender {
    async fn send(&self, phone: &PhoneNumber, code: &str) -> Result<(), SendError> {
        tracing::warn!(phone = %phone, code, "DEMO sign-in code (demo mode only; never in production)");
        Ok(())
    }
}

/// No delivery configured: every request answers 503.
#[derive(Debug, Default)]
pub struct DisabledSender;

#[async_trait]
impl CodeSender for DisabledSender {
    async fn send(&self, _: &PhoneNumber, _: &str) -> Result<(), SendError> {
        Err(SendError::Unavailable)
    }
}
