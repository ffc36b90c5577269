//! Rust SDK for kiosks and set-top boxes.
