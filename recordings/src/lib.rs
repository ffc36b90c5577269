//! Audit recordings.
