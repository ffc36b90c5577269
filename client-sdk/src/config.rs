//! How to join a call: [`CallConfig`], media sources, the reconnect policy.

use std::path::PathBuf;
use std::time::Duration;

use signaling_protocol::{CallId, ParticipantRole};

use crate::error::Error;

/// Where the microphone's audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioSource {
    /// Generated Opus-sized packets, 20 ms each (50 per second). Not decodable audio: for
    /// tests and demos of the transport.
    TestTone,
    /// An Ogg/Opus file, sent page by page at its own pace, looped.
    OggFile(PathBuf),
}

/// Where the camera's video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VideoSource {
    /// Generated VP8-shaped frames (a keyframe first and whenever the server asks for one,
    /// interframes otherwise) at `fps` frames per second and about `bitrate` bits per second.
    /// Not decodable video: for tests and demos of the transport.
    TestPattern {
        /// Frames per second.
        fps: u32,
        /// Bits per second.
        bitrate: u32,
    },
    /// A VP8 IVF file, sent frame by frame at its own frame rate, looped.
    IvfFile(PathBuf),
}

impl VideoSource {
    /// The test pattern at 30 frames per second and 300 kbit/s.
    pub fn test_pattern() -> Self {
        VideoSource::TestPattern {
            fps: 30,
            bitrate: 300_000,
        }
    }
}

/// How the SDK reconnects after the signaling socket or the media connection breaks.
///
/// Delays grow exponentially from `initial_delay` to `max_delay`, each with up to 25 % random
/// jitter; the first attempt after a drop is made at once. While the session's resume window
/// lasts the SDK resumes (nothing is missed); after it, it joins again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// Stop trying after this long without a connection ([`EndCause::ConnectionLost`]).
    ///
    /// [`EndCause::ConnectionLost`]: crate::EndCause::ConnectionLost
    pub give_up_after: Duration,
    /// Least time between two ICE restarts the SDK asks for by itself.
    pub ice_restart_interval: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            give_up_after: Duration::from_secs(120),
            ice_restart_interval: Duration::from_secs(3),
        }
    }
}

impl ReconnectPolicy {
    /// The delay before attempt `attempt` (0 = the first one after the drop).
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let exp = self.initial_delay.saturating_mul(1u32 << (attempt - 1).min(16));
        let base = exp.min(self.max_delay);
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
        base + jitter
    }
}

/// Everything [`Call::join`](crate::Call::join) needs.
///
/// ```
/// use client_sdk::{AudioSource, CallConfig, VideoSource};
/// # let call_id = signaling_protocol::CallId::random();
/// let config = CallConfig::new("https://window.example.gov.cn", "eyJ…", call_id)
///     .with_user_agent("kiosk/1.0 (rk3568)")
///     .with_audio(Some(AudioSource::TestTone))
///     .with_video(Some(VideoSource::test_pattern()));
/// assert_eq!(config.websocket_url().unwrap(), "wss://window.example.gov.cn/ws");
/// ```
#[derive(Clone)]
pub struct CallConfig {
    /// The server's base URL: `http(s)://host[:port][/prefix]` (the WebSocket is
    /// `ws(s)://…/ws`); a `ws(s)://` URL is used as it is.
    pub server_url: String,
    /// The access token (a JWT).
    pub token: String,
    /// The call to join.
    pub call_id: CallId,
    /// The role to join in; `None` lets the server use the one the identity holds.
    pub role: Option<ParticipantRole>,
    /// A token scoped to the call, when the access token does not grant it.
    pub call_token: Option<String>,
    /// The audio to publish; `None` publishes no audio (receives only).
    pub audio: Option<AudioSource>,
    /// The video to publish; `None` publishes no video (receives only).
    pub video: Option<VideoSource>,
    /// Names the client software and device in the server's logs.
    pub user_agent: String,
    /// Reconnect behaviour.
    pub reconnect: ReconnectPolicy,
    /// Capacity of the event channel. **Full policy:** no event is dropped; while the
    /// channel is full the SDK stops reading the socket (commands and media go on). A
    /// consumer stalled for long makes the server drop the socket; the SDK then resumes and
    /// the server replays what was missed.
    pub event_capacity: usize,
    /// Capacity of each remote track's packet channel (see [`RemoteTrack`] for the full
    /// policy).
    ///
    /// [`RemoteTrack`]: crate::RemoteTrack
    pub track_capacity: usize,
    /// How long [`Call::join`](crate::Call::join) waits for the server.
    pub join_timeout: Duration,
    /// Local UDP addresses for media. Empty (the default): `127.0.0.1:0` when the server is
    /// on this host, `0.0.0.0:0` otherwise (a wildcard bind does not gather loopback).
    pub udp_bind: Vec<std::net::SocketAddr>,
}

impl std::fmt::Debug for CallConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never in logs.
        f.debug_struct("CallConfig")
            .field("server_url", &self.server_url)
            .field("call_id", &self.call_id)
            .field("role", &self.role)
            .field("audio", &self.audio)
            .field("video", &self.video)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

impl CallConfig {
    /// A configuration publishing the test tone and test pattern, with default policies.
    pub fn new(server_url: impl Into<String>, token: impl Into<String>, call_id: CallId) -> Self {
        Self {
            server_url: server_url.into(),
            token: token.into(),
            call_id,
            role: None,
            call_token: None,
            audio: Some(AudioSource::TestTone),
            video: Some(VideoSource::test_pattern()),
            user_agent: format!("client-sdk/{}", env!("CARGO_PKG_VERSION")),
            reconnect: ReconnectPolicy::default(),
            event_capacity: 256,
            track_capacity: 512,
            join_timeout: Duration::from_secs(15),
            udp_bind: Vec::new(),
        }
    }

    /// Sets the role to join in.
    pub fn with_role(mut self, role: ParticipantRole) -> Self {
        self.role = Some(role);
        self
    }

    /// Sets the audio source.
    pub fn with_audio(mut self, audio: Option<AudioSource>) -> Self {
        self.audio = audio;
        self
    }

    /// Sets the video source.
    pub fn with_video(mut self, video: Option<VideoSource>) -> Self {
        self.video = video;
        self
    }

    /// Sets the user agent.
    pub fn with_user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// Sets the reconnect policy.
    pub fn with_reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// The WebSocket URL derived from [`CallConfig::server_url`].
    pub fn websocket_url(&self) -> Result<String, Error> {
        let url = self.server_url.trim().trim_end_matches('/');
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::InvalidUrl(format!("{url}: no scheme")))?;
        let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => "ws",
            "https" | "wss" => "wss",
            other => return Err(Error::InvalidUrl(format!("unsupported scheme `{other}`"))),
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(Error::InvalidUrl(format!("{url}: no host")));
        }
        if matches!(scheme, "ws" | "wss") {
            return Ok(format!("{ws_scheme}://{rest}"));
        }
        Ok(format!("{ws_scheme}://{rest}/ws"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> CallConfig {
        CallConfig::new(url, "t", CallId::random())
    }

    #[test]
    fn the_websocket_url_is_derived_from_the_base_url() {
        assert_eq!(
            cfg("http://127.0.0.1:8080").websocket_url().unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            cfg("https://gov.example/cw/").websocket_url().unwrap(),
            "wss://gov.example/cw/ws"
        );
        assert_eq!(
            cfg("wss://gov.example/ws").websocket_url().unwrap(),
            "wss://gov.example/ws"
        );
        assert!(matches!(cfg("ftp://x").websocket_url(), Err(Error::InvalidUrl(_))));
        assert!(matches!(cfg("http://").websocket_url(), Err(Error::InvalidUrl(_))));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.delay(0), Duration::ZERO);
        assert!(p.delay(1) >= Duration::from_millis(500) && p.delay(1) <= Duration::from_millis(625));
        assert!(p.delay(3) >= Duration::from_secs(2));
        assert!(p.delay(30) <= Duration::from_secs(10));
    }
}
