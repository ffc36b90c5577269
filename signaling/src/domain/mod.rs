//! Domain rules: ids, state machines and policies. No axum, sqlx or webrtc here; time comes in
//! as an argument.
pub mod call;
pub mod case;
pub mod clock;
pub mod identity;
pub mod ids;
pub mod matter;
pub mod people;
pub mod queue;

/// A rule of the domain was broken by the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl DomainError {
    /// Shorthand for [`DomainError::Invalid`].
    pub fn invalid(field: &'static str, reason: &'static str) -> Self {
        DomainError::Invalid { field, reason }
    }
}
