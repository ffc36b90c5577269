//! RTP payload formats: strip the payload descriptor, say where frames begin
//! and end, and inspect the assembled codec frame (keyframe, dimensions,
//! duration).

pub(crate) mod h264;
pub(crate) mod opus;
pub(crate) mod vp8;
pub(crate) mod vp9;

use thiserror::Error;

use crate::codec::Codec;

/// A payload that does not follow its codec's RTP payload format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum DepacketizeError {
    /// The payload descriptor runs past the end of the payload.
    #[error("payload descriptor truncated")]
    Truncated,
    /// Nothing after the payload descriptor.
    #[error("empty codec payload")]
    Empty,
    /// A header field has a value the payload format forbids or the recorder
    /// does not accept (H.264: forbidden bit, STAP-B/MTAP/FU-B, S and E set).
    #[error("invalid payload header")]
    Invalid,
}

/// One RTP payload with its descriptor removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Payload<'a> {
    /// Codec bytes.
    pub(crate) data: &'a [u8],
    /// This packet begins a frame (VP8: S=1 and PID=0; VP9: B=1 of the first
    /// layer; Opus: always).
    pub(crate) frame_start: bool,
    /// VP9 only: this packet begins a layer frame (B bit). Equal to
    /// `frame_start` for the other codecs.
    pub(crate) layer_start: bool,
    /// VP9 only: this packet ends a layer frame (E bit).
    pub(crate) layer_end: bool,
}

/// What the codec bitstream says about an assembled frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FrameInfo {
    /// An intra frame that decodes on its own.
    pub(crate) keyframe: bool,
    /// Width and height, read from keyframes.
    pub(crate) dimensions: Option<(u16, u16)>,
    /// Duration in RTP ticks, when the bitstream says (Opus).
    pub(crate) duration_ticks: Option<u32>,
}

/// Strips the payload descriptor of `codec` from `payload`.
///
/// H.264 payloads are not a descriptor plus codec bytes (aggregates and
/// fragments rebuild NAL units): the assembler reads them with
/// [`h264::depacketize`]. Here an H.264 payload is taken as one NAL unit.
pub(crate) fn depacketize(codec: Codec, payload: &[u8]) -> Result<Payload<'_>, DepacketizeError> {
    match codec {
        Codec::Vp8 => vp8::depacketize(payload),
        Codec::Vp9 => vp9::depacketize(payload),
        Codec::H264 => {
            let start = h264::depacketize(payload)?.starts_access_unit();
            Ok(Payload {
                data: payload,
                frame_start: start,
                layer_start: start,
                layer_end: false,
            })
        }
        Codec::Opus => opus::depacketize(payload),
    }
}

/// Inspects an assembled frame of `codec`.
pub(crate) fn inspect(codec: Codec, frame: &[u8]) -> FrameInfo {
    match codec {
        Codec::Vp8 => vp8::inspect(frame),
        Codec::Vp9 => vp9::inspect(frame),
        Codec::H264 => h264::inspect(frame),
        Codec::Opus => opus::inspect(frame),
    }
}
