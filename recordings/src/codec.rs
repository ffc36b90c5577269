//! Codecs and track kinds a recording can hold, and the container that holds them.

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

/// A codec the recorder can depacketize and write to a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Codec {
    /// VP8 video, RTP payload format RFC 7741.
    Vp8,
    /// VP9 video, RTP payload format RFC 9628 (draft-ietf-payload-vp9).
    Vp9,
    /// H.264 (AVC) video, RTP payload format RFC 6184, packetization mode 0 or 1
    /// (single NAL units, STAP-A, FU-A). WebM cannot hold it: files with an
    /// H.264 track are Matroska (`.mkv`).
    H264,
    /// Opus audio, RTP payload format RFC 7587.
    Opus,
}

impl Codec {
    /// Video or audio.
    pub const fn kind(self) -> TrackKind {
        match self {
            Self::Vp8 | Self::Vp9 | Self::H264 => TrackKind::Video,
            Self::Opus => TrackKind::Audio,
        }
    }

    /// RTP clock rate in Hz.
    pub const fn clock_rate(self) -> u32 {
        match self {
            Self::Vp8 | Self::Vp9 | Self::H264 => 90_000,
            Self::Opus => 48_000,
        }
    }

    /// The Matroska `CodecID`.
    pub const fn matroska_id(self) -> &'static str {
        match self {
            Self::Vp8 => "V_VP8",
            Self::Vp9 => "V_VP9",
            Self::H264 => "V_MPEG4/ISO/AVC",
            Self::Opus => "A_OPUS",
        }
    }

    /// The codec whose Matroska `CodecID` is `id`.
    pub fn from_matroska_id(id: &str) -> Option<Self> {
        [Self::Vp8, Self::Vp9, Self::H264, Self::Opus]
            .into_iter()
            .find(|c| c.matroska_id() == id)
    }

    /// Whether a WebM file may hold this codec (VP8, VP9, Opus).
    pub const fn fits_webm(self) -> bool {
        !matches!(self, Self::H264)
    }
}

/// The file format of a segment or an export: WebM when every codec fits
/// WebM, else Matroska (WebM is a subset of Matroska; the writer is the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Container {
    /// WebM: VP8/VP9 + Opus. `.webm`, `video/webm`.
    WebM,
    /// Matroska: H.264 (+ Opus). `.mkv`, `video/x-matroska`.
    Matroska,
}

impl Container {
    /// The container for a file holding tracks of `codecs`.
    pub fn for_codecs(codecs: &[Codec]) -> Self {
        if codecs.iter().all(|c| c.fits_webm()) {
            Self::WebM
        } else {
            Self::Matroska
        }
    }

    /// The file name extension, without the dot: `webm` or `mkv`.
    pub const fn extension(self) -> &'static str {
        match self {
            Self::WebM => "webm",
            Self::Matroska => "mkv",
        }
    }

    /// The EBML `DocType`: `webm` or `matroska`.
    pub const fn doc_type(self) -> &'static str {
        match self {
            Self::WebM => "webm",
            Self::Matroska => "matroska",
        }
    }

    /// The media type to serve the file with: `video/webm` or `video/x-matroska`.
    pub const fn mime_type(self) -> &'static str {
        match self {
            Self::WebM => "video/webm",
            Self::Matroska => "video/x-matroska",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_needs_matroska_and_the_rest_fits_webm() {
        assert_eq!(
            Container::for_codecs(&[Codec::Vp8, Codec::Opus]),
            Container::WebM
        );
        assert_eq!(Container::for_codecs(&[Codec::Opus]), Container::WebM);
        let mkv = Container::for_codecs(&[Codec::H264, Codec::Opus]);
        assert_eq!(mkv, Container::Matroska);
        assert_eq!(
            (mkv.extension(), mkv.doc_type(), mkv.mime_type()),
            ("mkv", "matroska", "video/x-matroska")
        );
        assert_eq!(
            Codec::from_matroska_id("V_MPEG4/ISO/AVC"),
            Some(Codec::H264)
        );
        assert_eq!(Codec::from_matroska_id("V_AV1"), None);
        assert_eq!(
            serde_json::to_string(&Codec::H264).ok().as_deref(),
            Some("\"h264\"")
        );
    }
}
