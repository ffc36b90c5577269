//! Codecs and track kinds a recording can hold.

use serde::{Deserialize, Serialize};

/// Whether a track carries video or audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Video (90 kHz RTP clock).
    Video,
    /// Audio (48 kHz RTP clock for Opus).
    Audio,
}

/// A codec the recorder can depacketize and write to WebM.
///
/// H.264 is not supported: WebM cannot hold it and it would need a Matroska or
/// MP4 writer; browsers negotiate VP8/VP9 when the server offers only those.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Codec {
    /// VP8 video, RTP payload format RFC 7741.
    Vp8,
    /// VP9 video, RTP payload format RFC 9628 (draft-ietf-payload-vp9).
    Vp9,
    /// Opus audio, RTP payload format RFC 7587.
    Opus,
}

impl Codec {
    /// Video or audio.
    pub const fn kind(self) -> TrackKind {
        match self {
            Self::Vp8 | Self::Vp9 => TrackKind::Video,
            Self::Opus => TrackKind::Audio,
        }
    }

    /// RTP clock rate in Hz.
    pub const fn clock_rate(self) -> u32 {
        match self {
            Self::Vp8 | Self::Vp9 => 90_000,
            Self::Opus => 48_000,
        }
    }

    /// The Matroska `CodecID`.
    pub const fn matroska_id(self) -> &'static str {
        match self {
            Self::Vp8 => "V_VP8",
            Self::Vp9 => "V_VP9",
            Self::Opus => "A_OPUS",
        }
    }
}
