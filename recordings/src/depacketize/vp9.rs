//! VP9 (RFC 9628, formerly draft-ietf-payload-vp9): payload descriptor, and
//! keyframe/size from the uncompressed frame header (VP9 bitstream spec §6.2).

use super::{DepacketizeError, FrameInfo, Payload};

pub(crate) fn depacketize(payload: &[u8]) -> Result<Payload<'_>, DepacketizeError> {
    let b0 = *payload.first().ok_or(DepacketizeError::Truncated)?;
    let has_picture_id = b0 & 0x80 != 0; // I
    let inter_picture = b0 & 0x40 != 0; // P
    let has_layers = b0 & 0x20 != 0; // L
    let flexible = b0 & 0x10 != 0; // F
    let begin = b0 & 0x08 != 0; // B
    let end = b0 & 0x04 != 0; // E
    let has_ss = b0 & 0x02 != 0; // V
    let mut pos = 1usize;
    let byte = |i: usize| payload.get(i).copied().ok_or(DepacketizeError::Truncated);

    if has_picture_id {
        pos += if byte(pos)? & 0x80 != 0 { 2 } else { 1 };
    }
    let mut spatial_id = 0u8;
    if has_layers {
        let l = byte(pos)?;
        spatial_id = (l >> 1) & 0x07;
        pos += 1;
        if !flexible {
            pos += 1; // TL0PICIDX
        }
    }
    if flexible && inter_picture {
        // up to three P_DIFF bytes, N bit says another follows
        for _ in 0..3 {
            let d = byte(pos)?;
            pos += 1;
            if d & 0x01 == 0 {
                break;
            }
        }
    }
    if has_ss {
        let ss = byte(pos)?;
        pos += 1;
        let layers = usize::from(ss >> 5) + 1;
        let has_sizes = ss & 0x10 != 0;
        let has_groups = ss & 0x08 != 0;
        if has_sizes {
            pos += 4 * layers;
        }
        if has_groups {
            let groups = byte(pos)?;
            pos += 1;
            for _ in 0..groups {
                let g = byte(pos)?;
                pos += 1 + usize::from((g >> 2) & 0x03);
            }
        }
    }
    let data = payload.get(pos..).ok_or(DepacketizeError::Truncated)?;
    if data.is_empty() {
        return Err(DepacketizeError::Empty);
    }
    Ok(Payload {
        data,
        frame_start: begin && spatial_id == 0,
        layer_start: begin,
        layer_end: end,
    })
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u8> {
        let byte = self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(b)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | u32::from(self.bit()?);
        }
        Some(v)
    }
}

/// Reads the uncompressed header of the first frame in `frame` (a frame or a
/// superframe: the first frame comes first either way).
pub(crate) fn inspect(frame: &[u8]) -> FrameInfo {
    parse_header(frame).unwrap_or_default()
}

fn parse_header(frame: &[u8]) -> Option<FrameInfo> {
    let mut r = Bits {
        data: frame,
        pos: 0,
    };
    if r.bits(2)? != 2 {
        return None; // frame_marker
    }
    let low = r.bit()?;
    let high = r.bit()?;
    let profile = (high << 1) | low;
    if profile == 3 {
        r.bit()?; // reserved_zero
    }
    if r.bit()? == 1 {
        return Some(FrameInfo::default()); // show_existing_frame
    }
    let frame_type = r.bit()?;
    if frame_type != 0 {
        return Some(FrameInfo::default()); // NON_KEY_FRAME
    }
    r.bit()?; // show_frame
    r.bit()?; // error_resilient_mode
    if r.bits(24)? != 0x49_83_42 {
        return None; // frame_sync_code
    }
    // color_config
    if profile >= 2 {
        r.bit()?; // ten_or_twelve_bit
    }
    let color_space = r.bits(3)?;
    if color_space != 7 {
        r.bit()?; // color_range
        if profile == 1 || profile == 3 {
            r.bits(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        r.bit()?; // reserved_zero
    }
    let width = u16::try_from(r.bits(16)? + 1).ok()?;
    let height = u16::try_from(r.bits(16)? + 1).ok()?;
    Some(FrameInfo {
        keyframe: true,
        dimensions: Some((width, height)),
        duration_ticks: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A VP9 profile-0 keyframe header of `width`×`height` followed by filler.
    pub(crate) fn keyframe(width: u16, height: u16) -> Vec<u8> {
        // frame_marker(2)=2, profile 0 (2 bits), show_existing 0, frame_type 0,
        // show_frame 1, error_res 0 => 1000 0010 = 0x82
        let mut bits: Vec<u8> = vec![1, 0, 0, 0, 0, 0, 1, 0];
        let mut push = |v: u32, n: u32| {
            for i in (0..n).rev() {
                bits.push(((v >> i) & 1) as u8);
            }
        };
        push(0x49_83_42, 24);
        push(1, 3); // color_space BT.601
        push(0, 1); // color_range
        push(u32::from(width) - 1, 16);
        push(u32::from(height) - 1, 16);
        while bits.len() & 7 != 0 {
            bits.push(0);
        }
        let mut out: Vec<u8> = bits
            .chunks(8)
            .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | b))
            .collect();
        out.extend_from_slice(&[0x11; 20]);
        out
    }

    #[test]
    fn strips_descriptors_with_picture_id_layers_and_scalability_structure() {
        // I, B, E; 15-bit picture id
        let p = depacketize(&[0x8C, 0x80, 0x01, 0xAA]).expect("valid");
        assert_eq!(p.data, &[0xAA]);
        assert!(p.frame_start && p.layer_start && p.layer_end);
        // I, L, B, V (non-flexible): pid(1), layer(1), tl0(1), SS: N_S=0 Y=1 G=1,
        // w/h (4), N_G=1, group with R=1 (1 + 1)
        let p = depacketize(&[
            0xAA, 0x05, 0x00, 0x07, 0x18, 0x02, 0x80, 0x01, 0xE0, 0x01, 0x04, 0x01, 0xBB,
        ])
        .expect("valid");
        assert_eq!(p.data, &[0xBB]);
        // flexible, inter picture: two P_DIFF bytes
        let p = depacketize(&[0x54, 0x03, 0x04, 0xCC]).expect("valid");
        assert_eq!(p.data, &[0xCC]);
        assert!(!p.layer_start && p.layer_end);
        // spatial layer 1 starts a layer but not the picture
        let p = depacketize(&[0x28, 0x02, 0x00, 0xDD]).expect("valid");
        assert!(p.layer_start && !p.frame_start);
    }

    #[test]
    fn truncated_descriptors_are_errors() {
        assert_eq!(depacketize(&[]), Err(DepacketizeError::Truncated));
        assert_eq!(depacketize(&[0x80]), Err(DepacketizeError::Truncated));
        assert_eq!(depacketize(&[0x02, 0x10]), Err(DepacketizeError::Truncated));
        assert_eq!(depacketize(&[0x08]), Err(DepacketizeError::Empty));
    }

    #[test]
    fn keyframe_header_gives_dimensions() {
        let info = inspect(&keyframe(1280, 720));
        assert!(info.keyframe);
        assert_eq!(info.dimensions, Some((1280, 720)));
        // inter frame: frame_type = 1 => 1000 0110
        assert!(!inspect(&[0x86, 0x00]).keyframe);
        assert!(!inspect(&[]).keyframe);
    }
}
