//! Opus (RFC 7587): one packet is one Opus packet; the TOC byte (RFC 6716
//! §3.1) gives its duration.

use super::{DepacketizeError, FrameInfo, Payload};

pub(crate) fn depacketize(payload: &[u8]) -> Result<Payload<'_>, DepacketizeError> {
    if payload.is_empty() {
        return Err(DepacketizeError::Empty);
    }
    Ok(Payload {
        data: payload,
        frame_start: true,
        layer_start: true,
        layer_end: true,
    })
}

/// Samples at 48 kHz of one frame for TOC configuration `config`.
fn frame_samples(config: u8) -> u32 {
    match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    }
}

/// Duration of an Opus packet in 48 kHz samples, if the TOC byte is readable.
pub(crate) fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let per_frame = frame_samples(toc >> 3);
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3F),
    };
    let total = per_frame * frames;
    // RFC 6716: a packet holds at most 120 ms.
    (total > 0 && total <= 5760).then_some(total)
}

pub(crate) fn inspect(frame: &[u8]) -> FrameInfo {
    FrameInfo {
        keyframe: true,
        dimensions: None,
        duration_ticks: packet_samples(frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_byte_gives_packet_duration() {
        // config 31 (CELT FB 20 ms), code 0
        assert_eq!(packet_samples(&[0xF8, 1, 2]), Some(960));
        // config 15 (hybrid FB 20 ms), code 1: two frames
        assert_eq!(packet_samples(&[(15 << 3) | 1, 0]), Some(1920));
        // config 3 (SILK NB 60 ms), code 3 with 2 frames
        assert_eq!(packet_samples(&[(3 << 3) | 3, 2]), Some(5760));
        // code 3 with 0 frames is invalid; missing count byte too
        assert_eq!(packet_samples(&[(3 << 3) | 3, 0]), None);
        assert_eq!(packet_samples(&[0x03]), None);
        assert_eq!(packet_samples(&[]), None);
    }
}
