//! The cloud-window server: REST API, WebSocket signaling, the media relay, queue and
//! dispatch, cases, proxy helpers, storage.
//!
//! Layout (imports point one way: transport → domain ← store):
//! - [`queue`]: the queue service of a node (dispatcher, live pushes);
//! - [`api`]: HTTP transport (axum), problem details, OpenAPI;
//! - [`domain`]: ids, validated values, policies; no I/O, time passed in;
//! - [`store`]: the storage trait and its SQLite / PostgreSQL implementations;
//! - [`auth`]: tokens, password and secret hashing, code delivery;
//! - [`recorder`]: the audit recorder (relay taps → `recordings`, upload, retention, verify);
//! - [`app`]: building and running the server; [`config`]: settings; [`demo`]: demo data.
pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod domain;
pub mod queue;
pub mod recorder;
pub mod sfu;
pub mod store;
pub mod telemetry;
pub mod ws;
