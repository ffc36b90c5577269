//! VP8 (RFC 7741): payload descriptor, and keyframe/size from the VP8 frame
//! header (RFC 6386 §9.1).

use super::{DepacketizeError, FrameInfo, Payload};

pub(crate) fn depacketize(payload: &[u8]) -> Result<Payload<'_>, DepacketizeError> {
    let b0 = *payload.first().ok_or(DepacketizeError::Truncated)?;
    let extended = b0 & 0x80 != 0;
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    let mut pos = 1usize;
    if extended {
        let x = *payload.get(pos).ok_or(DepacketizeError::Truncated)?;
        pos += 1;
        let has_picture_id = x & 0x80 != 0;
        let has_tl0 = x & 0x40 != 0;
        let has_tid = x & 0x20 != 0;
        let has_keyidx = x & 0x10 != 0;
        if has_picture_id {
            let m = *payload.get(pos).ok_or(DepacketizeError::Truncated)?;
            pos += if m & 0x80 != 0 { 2 } else { 1 };
        }
        if has_tl0 {
            pos += 1;
        }
        if has_tid || has_keyidx {
            pos += 1;
        }
    }
    let data = payload.get(pos..).ok_or(DepacketizeError::Truncated)?;
    if data.is_empty() {
        return Err(if pos > payload.len() {
            DepacketizeError::Truncated
        } else {
            DepacketizeError::Empty
        });
    }
    let frame_start = start_of_partition && partition_id == 0;
    Ok(Payload {
        data,
        frame_start,
        layer_start: frame_start,
        layer_end: false,
    })
}

/// Keyframe: the P bit of the frame tag is 0 and the start code `9d 01 2a`
/// follows; then 14-bit width and height.
pub(crate) fn inspect(frame: &[u8]) -> FrameInfo {
    let Some(&tag) = frame.first() else {
        return FrameInfo::default();
    };
    if tag & 0x01 != 0 {
        return FrameInfo::default();
    }
    match frame.get(3..10) {
        Some([0x9d, 0x01, 0x2a, w0, w1, h0, h1]) => {
            let width = u16::from_le_bytes([*w0, *w1]) & 0x3FFF;
            let height = u16::from_le_bytes([*h0, *h1]) & 0x3FFF;
            FrameInfo {
                keyframe: true,
                dimensions: Some((width, height)),
                duration_ticks: None,
            }
        }
        _ => FrameInfo::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_minimal_and_extended_descriptors() {
        let p = depacketize(&[0x10, 0xAA, 0xBB]).expect("valid");
        assert_eq!(p.data, &[0xAA, 0xBB]);
        assert!(p.frame_start);
        // X=1, I=1 with 15-bit picture id, L=1, T=1
        let p = depacketize(&[0x90, 0xE0, 0x81, 0x23, 0x05, 0x40, 0xCC]).expect("valid");
        assert_eq!(p.data, &[0xCC]);
        assert!(p.frame_start);
        // continuation packet (S=0)
        let p = depacketize(&[0x80, 0x80, 0x05, 0xDD]).expect("valid");
        assert_eq!(p.data, &[0xDD]);
        assert!(!p.frame_start);
        // S=1 but partition 1 is not a frame start
        assert!(!depacketize(&[0x11, 0x00]).expect("valid").frame_start);
    }

    #[test]
    fn truncated_descriptors_are_errors() {
        assert_eq!(depacketize(&[]), Err(DepacketizeError::Truncated));
        assert_eq!(depacketize(&[0x90]), Err(DepacketizeError::Truncated));
        assert_eq!(
            depacketize(&[0x90, 0x80, 0x81]),
            Err(DepacketizeError::Truncated)
        );
        assert_eq!(depacketize(&[0x10]), Err(DepacketizeError::Empty));
    }

    #[test]
    fn keyframe_header_gives_dimensions() {
        let key = [
            0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xE0, 0x01, 0x55,
        ];
        assert_eq!(
            inspect(&key),
            FrameInfo {
                keyframe: true,
                dimensions: Some((640, 480)),
                duration_ticks: None
            }
        );
        assert!(!inspect(&[0x01, 0x00, 0x00, 0x00]).keyframe);
        // P bit clear but no start code: not trusted as a keyframe
        assert!(!inspect(&[0x00, 0x00, 0x00, 0x11, 0x22]).keyframe);
    }
}
