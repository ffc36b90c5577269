//! H.264 (RFC 6184, packetization modes 0 and 1): single NAL unit packets,
//! STAP-A aggregates and FU-A fragments; keyframes (IDR), parameter sets and
//! the picture size from the bitstream (ITU-T H.264 §7.3.2.1); the
//! `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §5.3.3.1) a Matroska
//! `V_MPEG4/ISO/AVC` track carries as its CodecPrivate.
//!
//! Assembled frames are in AVC form: every NAL unit prefixed with its length
//! in 4 bytes (big-endian), no Annex B start codes.

use super::{DepacketizeError, FrameInfo};

/// NAL unit types used here.
pub(crate) const NAL_IDR: u8 = 5;
pub(crate) const NAL_SEI: u8 = 6;
pub(crate) const NAL_SPS: u8 = 7;
pub(crate) const NAL_PPS: u8 = 8;
pub(crate) const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Bytes of the NAL unit length prefix in assembled frames (and in the avcC:
/// `lengthSizeMinusOne` = 3).
pub(crate) const LENGTH_SIZE: usize = 4;

/// The NAL unit type of a NAL unit header byte.
pub(crate) const fn nal_type(header: u8) -> u8 {
    header & 0x1F
}

/// A VCL NAL unit (a coded slice) of the kinds WebRTC senders use.
pub(crate) const fn is_vcl(t: u8) -> bool {
    matches!(t, 1..=5)
}

/// What one RTP payload carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unit<'a> {
    /// Whole NAL units: a single NAL unit packet, or the units of a STAP-A.
    Nals(Vec<&'a [u8]>),
    /// One FU-A fragment. `header` is the fragmented NAL unit's header byte,
    /// rebuilt from the FU indicator and FU header.
    Fragment {
        header: u8,
        start: bool,
        end: bool,
        data: &'a [u8],
    },
}

impl Unit<'_> {
    /// Whether this payload begins an access unit (a frame): its first NAL
    /// unit is one that may only precede the first slice (SEI, SPS, PPS,
    /// access unit delimiter), or the slice with `first_mb_in_slice` = 0.
    /// Slices after the first and continuation fragments do not.
    pub(crate) fn starts_access_unit(&self) -> bool {
        match self {
            Unit::Nals(nals) => nals.first().is_some_and(|n| nal_starts_access_unit(n)),
            Unit::Fragment {
                header,
                start,
                data,
                ..
            } => {
                if !*start {
                    return false;
                }
                let t = nal_type(*header);
                if is_vcl(t) {
                    // first_mb_in_slice is ue(v); a leading 1 bit codes 0.
                    data.first().is_some_and(|b| b & 0x80 != 0)
                } else {
                    starts_before_first_slice(t)
                }
            }
        }
    }
}

fn starts_before_first_slice(t: u8) -> bool {
    matches!(t, NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD | 14 | 15)
}

fn nal_starts_access_unit(nal: &[u8]) -> bool {
    let Some(&h) = nal.first() else {
        return false;
    };
    let t = nal_type(h);
    if is_vcl(t) {
        nal.get(1).is_some_and(|b| b & 0x80 != 0)
    } else {
        starts_before_first_slice(t)
    }
}

/// Parses one RTP payload. Aggregation and fragmentation types of
/// packetization mode 2 (STAP-B, MTAP, FU-B) and reserved types are refused.
pub(crate) fn depacketize(payload: &[u8]) -> Result<Unit<'_>, DepacketizeError> {
    let b0 = *payload.first().ok_or(DepacketizeError::Empty)?;
    if b0 & 0x80 != 0 {
        return Err(DepacketizeError::Invalid); // forbidden_zero_bit
    }
    match nal_type(b0) {
        1..=23 => Ok(Unit::Nals(vec![payload])),
        STAP_A => {
            let mut nals = Vec::new();
            let mut rest = &payload[1..];
            while !rest.is_empty() {
                let [hi, lo, tail @ ..] = rest else {
                    return Err(DepacketizeError::Truncated);
                };
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                if len == 0 {
                    return Err(DepacketizeError::Invalid);
                }
                let nal = tail.get(..len).ok_or(DepacketizeError::Truncated)?;
                if nal[0] & 0x80 != 0 || matches!(nal_type(nal[0]), 0 | 24..=31) {
                    return Err(DepacketizeError::Invalid);
                }
                nals.push(nal);
                rest = &tail[len..];
            }
            if nals.is_empty() {
                return Err(DepacketizeError::Empty);
            }
            Ok(Unit::Nals(nals))
        }
        FU_A => {
            let fu = *payload.get(1).ok_or(DepacketizeError::Truncated)?;
            let start = fu & 0x80 != 0;
            let end = fu & 0x40 != 0;
            let t = nal_type(fu);
            if (start && end) || matches!(t, 0 | 24..=31) {
                return Err(DepacketizeError::Invalid);
            }
            Ok(Unit::Fragment {
                header: (b0 & 0xE0) | t,
                start,
                end,
                data: &payload[2..],
            })
        }
        _ => Err(DepacketizeError::Invalid),
    }
}

/// The NAL units of an assembled (length-prefixed) frame. Stops at the first
/// inconsistent length.
pub(crate) fn nal_units(frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = frame;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<LENGTH_SIZE>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if len == 0 || len > tail.len() {
            rest = &[];
            return None;
        }
        let (nal, after) = tail.split_at(len);
        rest = after;
        Some(nal)
    })
}

/// Appends `nal` to `out` with its 4-byte length prefix.
pub(crate) fn push_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
    out.extend_from_slice(nal);
}

/// Keyframe: the access unit holds an IDR slice and both an SPS and a PPS, so
/// it decodes on its own. The size comes from the SPS.
pub(crate) fn inspect(frame: &[u8]) -> FrameInfo {
    let mut idr = false;
    let mut pps = false;
    let mut sps = None;
    for nal in nal_units(frame) {
        match nal_type(nal[0]) {
            NAL_IDR => idr = true,
            NAL_PPS => pps = true,
            NAL_SPS => sps = sps.or(Some(nal)),
            _ => {}
        }
    }
    let keyframe = idr && pps && sps.is_some();
    FrameInfo {
        keyframe,
        dimensions: sps
            .and_then(parse_sps)
            .and_then(|s| Some((u16::try_from(s.width).ok()?, u16::try_from(s.height).ok()?))),
        duration_ticks: None,
    }
}

/// The `AVCDecoderConfigurationRecord` for the SPS and PPS of `frame` (in the
/// order they appear), or `None` if it has none of either or the SPS does not
/// parse.
pub(crate) fn avc_config(frame: &[u8]) -> Option<Vec<u8>> {
    let mut spss: Vec<&[u8]> = Vec::new();
    let mut ppss: Vec<&[u8]> = Vec::new();
    for nal in nal_units(frame) {
        let list = match nal_type(nal[0]) {
            NAL_SPS => &mut spss,
            NAL_PPS => &mut ppss,
            _ => continue,
        };
        if !list.contains(&nal) && u16::try_from(nal.len()).is_ok() {
            list.push(nal);
        }
    }
    spss.truncate(31);
    ppss.truncate(255);
    let first = *spss.first()?;
    if ppss.is_empty() {
        return None;
    }
    let sps = parse_sps(first)?;
    let mut out = vec![
        1,        // configurationVersion
        first[1], // AVCProfileIndication
        first[2], // profile_compatibility
        first[3], // AVCLevelIndication
        0xFC | (LENGTH_SIZE as u8 - 1),
        0xE0 | spss.len() as u8,
    ];
    for s in &spss {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }
    out.push(ppss.len() as u8);
    for p in &ppss {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    if matches!(first[1], 100 | 110 | 122 | 144) {
        out.push(0xFC | (sps.chroma_format_idc as u8 & 0x03));
        out.push(0xF8 | (sps.bit_depth_luma_minus8 as u8 & 0x07));
        out.push(0xF8 | (sps.bit_depth_chroma_minus8 as u8 & 0x07));
        out.push(0); // numOfSequenceParameterSetExt
    }
    Some(out)
}

/// What the recorder needs from a sequence parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sps {
    pub(crate) profile_idc: u8,
    pub(crate) chroma_format_idc: u32,
    pub(crate) bit_depth_luma_minus8: u32,
    pub(crate) bit_depth_chroma_minus8: u32,
    /// Displayed size (after cropping).
    pub(crate) width: u32,
    pub(crate) height: u32,
}

/// The RBSP of a NAL unit (after its header): emulation prevention bytes
/// (`00 00 03`) removed.
fn rbsp(nal_payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal_payload.len());
    let mut zeros = 0;
    for &b in nal_payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// ue(v), Exp-Golomb. Values that need more than 31 bits are refused.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0u32;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        ((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()
    }

    /// se(v).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Parses an SPS NAL unit (header byte included) up to the frame cropping.
pub(crate) fn parse_sps(nal: &[u8]) -> Option<Sps> {
    if nal_type(*nal.first()?) != NAL_SPS || nal.len() < 4 {
        return None;
    }
    let data = rbsp(&nal[1..]);
    let mut r = Bits {
        data: &data,
        pos: 0,
    };
    let profile_idc = r.bits(8)? as u8;
    r.bits(16)?; // constraint flags, reserved, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let (mut luma8, mut chroma8) = (0, 0);
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()? == 1;
        }
        luma8 = r.ue()?;
        chroma8 = r.ue()?;
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let mut width = width_mbs * 16;
    let mut height = (2 - frame_mbs_only) * height_units * 16;
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (unit_x, unit_y) = match chroma_array_type {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        width = width.checked_sub(unit_x * (u64::from(left) + u64::from(right)))?;
        height = height.checked_sub(unit_y * (u64::from(top) + u64::from(bottom)))?;
    }
    if width == 0 || height == 0 {
        return None;
    }
    Some(Sps {
        profile_idc,
        chroma_format_idc,
        bit_depth_luma_minus8: luma8,
        bit_depth_chroma_minus8: chroma8,
        width: u32::try_from(width).ok()?,
        height: u32::try_from(height).ok()?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The SPS libx264 writes for 320x240 baseline (level 1.3), VUI included.
    pub(crate) const SPS_320X240: [u8; 24] = [
        0x67, 0x42, 0xC0, 0x0D, 0xD9, 0x01, 0x41, 0xFB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x42, 0xA4, 0x80,
    ];
    /// The SPS libx264 writes for 1280x720 high profile (level 3.1): 45 macroblock rows,
    /// no cropping needed; VUI included.
    pub(crate) const SPS_1280X720_HIGH: [u8; 26] = [
        0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40, 0x50, 0x05, 0xBB, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x83, 0x19, 0x60,
    ];
    /// The PPS libx264 writes with the baseline SPS above.
    pub(crate) const PPS: [u8; 5] = [0x68, 0xCB, 0x83, 0xCB, 0x20];

    /// `bits` is a string of 0/1 (spaces ignored); pads with a stop bit.
    fn nal_from_bits(header: u8, bits: &str) -> Vec<u8> {
        let mut v: Vec<u8> = bits
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| u8::from(c == '1'))
            .collect();
        v.push(1);
        while v.len() & 7 != 0 {
            v.push(0);
        }
        let mut out = vec![header];
        out.extend(v.chunks(8).map(|c| c.iter().fold(0u8, |a, b| (a << 1) | b)));
        out
    }

    #[test]
    fn sps_gives_size_including_cropping() {
        // profile 66, constraints 0, level 30, sps id 0 (1), log2_max_frame_num-4 0 (1),
        // poc type 2 (011), refs 1 (010), gaps 0, width_mbs-1 = 19 (0000 10100),
        // height-1 = 14 (0001111), frame_mbs_only 1, direct 1, crop 1:
        // left 0 (1) right 0 (1) top 0 (1) bottom 4 (00101) -> 320 x (240 - 8) = 320x232
        let nal = nal_from_bits(
            0x67,
            "01000010 00000000 00011110 1 1 011 010 0 000010100 0001111 1 1 1 1 1 1 00101 0",
        );
        let s = parse_sps(&nal).expect("parses");
        assert_eq!((s.width, s.height), (320, 232));
        assert_eq!(s.profile_idc, 66);
        let s = parse_sps(&SPS_1280X720_HIGH).expect("high profile parses");
        assert_eq!((s.width, s.height), (1280, 720));
        assert_eq!(s.chroma_format_idc, 1);
        assert!(parse_sps(&[0x67, 0x42]).is_none());
        assert!(parse_sps(&PPS).is_none());
    }

    #[test]
    fn emulation_prevention_bytes_are_removed() {
        assert_eq!(
            rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            vec![0, 0, 1, 0, 0, 0, 3]
        );
    }

    #[test]
    fn single_stap_a_and_fu_a_payloads_parse() {
        assert_eq!(
            depacketize(&[0x65, 0x88, 0x01]),
            Ok(Unit::Nals(vec![&[0x65u8, 0x88, 0x01][..]]))
        );
        let stap = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68];
        assert_eq!(
            depacketize(&stap),
            Ok(Unit::Nals(vec![&[0x67u8, 0x42][..], &[0x68u8][..]]))
        );
        assert!(depacketize(&stap).expect("valid").starts_access_unit());
        // FU indicator NRI=3 type 28, FU header S=1 type 5
        let fu = depacketize(&[0x7C, 0x85, 0x88, 0x10]).expect("valid");
        assert_eq!(
            fu,
            Unit::Fragment {
                header: 0x65,
                start: true,
                end: false,
                data: &[0x88, 0x10]
            }
        );
        assert!(fu.starts_access_unit());
        // a second slice (first_mb_in_slice != 0) does not start a frame
        assert!(!depacketize(&[0x65, 0x40, 0x01])
            .expect("valid")
            .starts_access_unit());
        assert!(!depacketize(&[0x7C, 0x05, 0x01])
            .expect("valid")
            .starts_access_unit());
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert_eq!(depacketize(&[]), Err(DepacketizeError::Empty));
        assert_eq!(depacketize(&[0xE5, 0x00]), Err(DepacketizeError::Invalid));
        assert_eq!(depacketize(&[0x78, 0x00]), Err(DepacketizeError::Truncated));
        assert_eq!(
            depacketize(&[0x78, 0x00, 0x05, 0x67]),
            Err(DepacketizeError::Truncated)
        );
        assert_eq!(
            depacketize(&[0x78, 0x00, 0x00]),
            Err(DepacketizeError::Invalid)
        );
        assert_eq!(depacketize(&[0x78]), Err(DepacketizeError::Empty));
        assert_eq!(depacketize(&[0x7C]), Err(DepacketizeError::Truncated));
        // S and E together
        assert_eq!(
            depacketize(&[0x7C, 0xC5, 0x00]),
            Err(DepacketizeError::Invalid)
        );
        // STAP-B, MTAP16, FU-B: packetization mode 2 only
        for t in [25u8, 26, 27, 29, 30, 31, 0] {
            assert_eq!(
                depacketize(&[0x60 | t, 0, 1, 2]),
                Err(DepacketizeError::Invalid)
            );
        }
    }

    #[test]
    fn keyframes_need_idr_sps_and_pps_and_the_avcc_is_built_from_them() {
        let mut key = Vec::new();
        push_nal(&mut key, &SPS_320X240);
        push_nal(&mut key, &PPS);
        push_nal(&mut key, &[0x65, 0x88, 0x80]);
        let info = inspect(&key);
        assert!(info.keyframe);
        assert_eq!(info.dimensions, Some((320, 240)));
        let avcc = avc_config(&key).expect("avcC");
        let mut expected = vec![1, 0x42, 0xC0, 0x0D, 0xFF, 0xE1, 0x00, 24];
        expected.extend_from_slice(&SPS_320X240);
        expected.extend_from_slice(&[1, 0x00, 5]);
        expected.extend_from_slice(&PPS);
        assert_eq!(avcc, expected);

        let mut idr_only = Vec::new();
        push_nal(&mut idr_only, &[0x65, 0x88, 0x80]);
        assert!(!inspect(&idr_only).keyframe);
        assert!(avc_config(&idr_only).is_none());
        let mut p = Vec::new();
        push_nal(&mut p, &[0x41, 0x9A, 0x00]);
        assert!(!inspect(&p).keyframe);
        // high profile gets the four extra bytes
        let mut high = Vec::new();
        push_nal(&mut high, &SPS_1280X720_HIGH);
        push_nal(&mut high, &PPS);
        let avcc = avc_config(&high).expect("avcC");
        assert_eq!(&avcc[avcc.len() - 4..], &[0xFD, 0xF8, 0xF8, 0]);
    }

    #[test]
    fn nal_units_stop_at_a_bad_length() {
        let mut f = Vec::new();
        push_nal(&mut f, &[0x41, 1]);
        f.extend_from_slice(&[0, 0, 0, 9, 0x41]);
        assert_eq!(nal_units(&f).count(), 1);
    }
}
