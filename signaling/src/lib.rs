//! The cloud-window server library.
pub mod domain;
pub mod sfu;
