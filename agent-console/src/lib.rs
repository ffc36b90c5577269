//! Web console.
