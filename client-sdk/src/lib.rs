//! Rust SDK for kiosks and set-top boxes: join a video call of the government-service
//! window, publish a camera and microphone (or a file, or a generated test pattern), receive
//! the other participants' tracks, chat, and survive network drops.
//!
//! Every participant holds one WebRTC peer connection **with the server**, which relays the
//! media (and records it) and one WebSocket for signaling (`docs/protocol.md`). The SDK hides
//! both: [`Call::join`] gives a [`Call`] handle and a stream of [`CallEvent`]s.
//!
//! # Example
//!
//! A kiosk calling in (the runnable version is `examples/kiosk.rs`):
//!
//! ```no_run
//! use client_sdk::{Call, CallConfig, CallEvent, MediaKind};
//!
//! # async fn kiosk(token: String, call_id: signaling_protocol::CallId) -> Result<(), client_sdk::Error> {
//! let config = CallConfig::new("http://127.0.0.1:8080", token, call_id)
//!     .with_user_agent("kiosk/1.0 (rk3568)");
//! let (call, mut events) = Call::join(config).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         // Must be shown before and during the call.
//!         CallEvent::Joined { recording, .. } => println!("{}", recording.notice_zh),
//!         CallEvent::RemoteTrack(mut track) => {
//!             let kind = track.kind;
//!             tokio::spawn(async move {
//!                 while let Some(packet) = track.packets.recv().await {
//!                     if kind == MediaKind::Video && packet.ends_frame() { /* a frame is complete */ }
//!                 }
//!             });
//!         }
//!         CallEvent::Chat(message) if !message.own => {
//!             call.send_chat("收到").await?;
//!         }
//!         CallEvent::Ended { cause } => {
//!             println!("call over: {cause:?}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # What the SDK does for you
//!
//! - **Negotiation.** After `joined` the SDK offers its tracks; afterwards the server offers
//!   whenever tracks are added or removed (someone joined or left) or for an ICE restart, and
//!   the SDK answers. If offers cross, the server is the polite side: the SDK ignores the
//!   server's offer while its own awaits an answer, and the server offers again afterwards.
//! - **Reconnecting.** When the signaling socket drops (or the server goes silent for the
//!   heartbeat timeout) the SDK reconnects with exponential backoff
//!   ([`ReconnectPolicy`]) and **resumes** the session: the server replays every message the
//!   client missed (deduplicated by sequence number) and the SDK re-sends its requests that
//!   were not answered (the server deduplicates them by id). Media keeps flowing meanwhile.
//!   If the server no longer knows the session, the SDK joins again with a fresh peer
//!   connection. When the media connection fails or disconnects, the SDK asks for an ICE
//!   restart. The application sees [`CallEvent::Reconnecting`] / [`CallEvent::Reconnected`].
//! - **Back-pressure.** Every channel is bounded and says what happens when it is full:
//!   events ([`CallConfig::event_capacity`]), remote packets ([`RemoteTrack`]), commands
//!   (the [`Call`] methods wait for room).
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `call.rs` | [`Call`], the driver task: WebSocket, session, resume, negotiation |
//! | `peer.rs` | the peer connection: codecs, local tracks, remote track readers |
//! | `media.rs` | sources (test pattern, IVF, Ogg) and the pacing, packetizing senders |
//! | `event.rs` | [`CallEvent`], [`RemoteTrack`], [`RtpPacket`] |
//! | `config.rs` | [`CallConfig`], [`AudioSource`], [`VideoSource`], [`ReconnectPolicy`] |
//! | `error.rs` | [`Error`] and which errors are retryable |
#![deny(missing_docs)]

mod call;
mod config;
mod error;
mod event;
mod media;
mod peer;

pub use call::{Call, Scenario};
pub use config::{AudioSource, CallConfig, ReconnectPolicy, VideoSource};
pub use error::Error;
pub use event::{is_vp8_keyframe, CallEvent, ChatMessage, EndCause, MediaKind, ReconnectCause, RemoteTrack, RtpPacket};
pub use signaling_protocol::{
    CallId, ChatMessageId, EndReason, ErrorCode, LeaveReason, ParticipantId, ParticipantInfo, ParticipantRole,
    RecordingNotice,
};
