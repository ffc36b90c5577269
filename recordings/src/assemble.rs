//! Frame assembly: packets in sequence order in, whole codec frames out.
//!
//! A video frame is the run of packets sharing one RTP timestamp, from a
//! frame-start packet to the packet with the marker bit, with no sequence gap.
//! Anything else is an incomplete frame: it is dropped and counted, and the
//! caller is told so it can wait for the next keyframe. VP9 pictures made of
//! several spatial-layer frames are joined into a superframe with an index.
//! H.264 access units are rebuilt NAL unit by NAL unit (STAP-A split, FU-A
//! joined) and written length-prefixed; the last SPS and PPS seen are kept so
//! that every keyframe carries them.

use crate::codec::{Codec, TrackKind};
use crate::depacketize::{self, h264, FrameInfo};

/// Largest frame accepted; a sender exceeding it gets the frame dropped
/// instead of unbounded memory.
pub(crate) const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// One packet in sequence order, descriptor not yet removed.
#[derive(Debug, Clone)]
pub(crate) struct OrderedPacket {
    pub(crate) seq: i64,
    pub(crate) timestamp: i64,
    pub(crate) marker: bool,
    pub(crate) payload: Vec<u8>,
    pub(crate) arrival_ms: u64,
}

/// A complete codec frame.
#[derive(Debug, Clone)]
pub(crate) struct AssembledFrame {
    pub(crate) timestamp: i64,
    pub(crate) data: Vec<u8>,
    pub(crate) info: FrameInfo,
    pub(crate) arrival_ms: u64,
    /// H.264 keyframes: the `AVCDecoderConfigurationRecord` of their SPS/PPS.
    pub(crate) config: Option<Vec<u8>>,
}

/// The result of pushing one packet.
#[derive(Debug, Default)]
pub(crate) struct Assembled {
    /// A frame completed by this packet.
    pub(crate) frame: Option<AssembledFrame>,
    /// Frames (or parts of frames) lost before or at this packet.
    pub(crate) dropped_frames: u32,
    /// A sequence gap was seen: video after it may reference lost data.
    pub(crate) gap: bool,
    /// The payload did not follow the payload format.
    pub(crate) malformed: bool,
}

#[derive(Debug)]
struct Partial {
    timestamp: i64,
    /// Completed layer frames (VP9) or the single frame being built.
    layers: Vec<Vec<u8>>,
    layer_open: bool,
    broken: bool,
    arrival_ms: u64,
    /// H.264: the frame began right after a sequence gap, so packets of its
    /// start (parameter sets) may be missing.
    after_gap: bool,
}

impl Partial {
    fn new(timestamp: i64, broken: bool, arrival_ms: u64, after_gap: bool) -> Self {
        Self {
            timestamp,
            layers: Vec::new(),
            layer_open: false,
            broken,
            arrival_ms,
            after_gap,
        }
    }
}

/// Assembles frames of one RTP stream.
#[derive(Debug)]
pub(crate) struct FrameAssembler {
    codec: Codec,
    last_seq: Option<i64>,
    partial: Option<Partial>,
    /// H.264: the last SPS and PPS received whole.
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl FrameAssembler {
    pub(crate) fn new(codec: Codec) -> Self {
        Self {
            codec,
            last_seq: None,
            partial: None,
            sps: None,
            pps: None,
        }
    }

    /// Forgets all state (new SSRC or resync).
    pub(crate) fn reset(&mut self) -> u32 {
        self.last_seq = None;
        u32::from(self.partial.take().is_some())
    }

    pub(crate) fn push(&mut self, packet: OrderedPacket) -> Assembled {
        let mut out = Assembled::default();
        let contiguous = self.last_seq.is_none_or(|last| packet.seq == last + 1);
        self.last_seq = Some(packet.seq);
        if !contiguous {
            out.gap = true;
        }

        // Padding-only packets keep the sequence contiguous and carry nothing.
        if packet.payload.is_empty() {
            if !contiguous && self.partial.take().is_some() {
                out.dropped_frames += 1;
            }
            return out;
        }

        if self.codec.kind() == TrackKind::Audio {
            match depacketize::depacketize(self.codec, &packet.payload) {
                Ok(p) => {
                    let info = depacketize::inspect(self.codec, p.data);
                    out.frame = Some(AssembledFrame {
                        timestamp: packet.timestamp,
                        data: p.data.to_vec(),
                        info,
                        arrival_ms: packet.arrival_ms,
                        config: None,
                    });
                }
                Err(_) => out.malformed = true,
            }
            return out;
        }

        if self.codec == Codec::H264 {
            self.push_h264(packet, contiguous, &mut out);
            return out;
        }

        // A different timestamp ends the frame in progress: it never saw its marker.
        if self
            .partial
            .as_ref()
            .is_some_and(|p| p.timestamp != packet.timestamp)
        {
            self.partial = None;
            out.dropped_frames += 1;
        }
        if !contiguous {
            if let Some(p) = self.partial.as_mut() {
                p.broken = true;
            }
        }

        let payload = match depacketize::depacketize(self.codec, &packet.payload) {
            Ok(p) => p,
            Err(_) => {
                out.malformed = true;
                if let Some(p) = self.partial.as_mut() {
                    p.broken = true;
                }
                if packet.marker && self.partial.take().is_some() {
                    out.dropped_frames += 1;
                }
                return out;
            }
        };

        let partial = match self.partial.as_mut() {
            Some(p) => p,
            None => {
                if !payload.frame_start {
                    // The start of this frame was lost; wait for the next one.
                    if packet.marker {
                        out.dropped_frames += 1;
                    } else {
                        self.partial = Some(Partial::new(
                            packet.timestamp,
                            true,
                            packet.arrival_ms,
                            false,
                        ));
                    }
                    return out;
                }
                self.partial.insert(Partial::new(
                    packet.timestamp,
                    false,
                    packet.arrival_ms,
                    false,
                ))
            }
        };
        partial.arrival_ms = packet.arrival_ms;
        let size: usize = partial.layers.iter().map(Vec::len).sum();
        if size + payload.data.len() > MAX_FRAME_BYTES {
            partial.broken = true;
            partial.layers.clear();
        }
        if partial.broken {
            // keep nothing of a frame that will be dropped
            if packet.marker {
                self.partial = None;
                out.dropped_frames += 1;
            }
            return out;
        }

        if self.codec == Codec::Vp9 {
            if payload.layer_start {
                if partial.layer_open {
                    partial.broken = true; // previous layer never ended
                }
                partial.layers.push(Vec::new());
                partial.layer_open = true;
            } else if !partial.layer_open {
                partial.broken = true;
            }
            if let Some(layer) = partial.layers.last_mut() {
                layer.extend_from_slice(payload.data);
            }
            if payload.layer_end {
                partial.layer_open = false;
            }
        } else {
            if partial.layers.is_empty() {
                partial.layers.push(Vec::new());
            }
            if let Some(layer) = partial.layers.last_mut() {
                layer.extend_from_slice(payload.data);
            }
        }

        if packet.marker {
            if let Some(done) = self.partial.take() {
                if done.broken || done.layer_open || done.layers.is_empty() {
                    out.dropped_frames += 1;
                } else {
                    let data = join_layers(done.layers);
                    let info = depacketize::inspect(self.codec, &data);
                    out.frame = Some(AssembledFrame {
                        timestamp: done.timestamp,
                        data,
                        info,
                        arrival_ms: done.arrival_ms,
                        config: None,
                    });
                }
            }
        }
        out
    }
}

impl FrameAssembler {
    /// H.264: one RTP payload of an access unit. NAL units are kept whole in
    /// `layers`; `layer_open` means an FU-A is being joined.
    fn push_h264(&mut self, packet: OrderedPacket, contiguous: bool, out: &mut Assembled) {
        // A different timestamp ends the access unit in progress: it never saw
        // its marker. One holding only parameter sets is not a lost frame.
        if let Some(p) = self.partial.take_if(|p| p.timestamp != packet.timestamp) {
            if p.broken || has_vcl(&p.layers) || p.layer_open {
                out.dropped_frames += 1;
            }
        }
        if !contiguous {
            if let Some(p) = self.partial.as_mut() {
                p.broken = true;
            }
        }
        let unit = match h264::depacketize(&packet.payload) {
            Ok(u) => u,
            Err(_) => {
                out.malformed = true;
                if let Some(p) = self.partial.as_mut() {
                    p.broken = true;
                }
                if packet.marker && self.partial.take().is_some() {
                    out.dropped_frames += 1;
                }
                return;
            }
        };
        let partial = match self.partial.as_mut() {
            Some(p) => p,
            None => {
                let start = unit.starts_access_unit();
                if !start && packet.marker {
                    out.dropped_frames += 1;
                    return;
                }
                self.partial.insert(Partial::new(
                    packet.timestamp,
                    !start,
                    packet.arrival_ms,
                    !contiguous,
                ))
            }
        };
        partial.arrival_ms = packet.arrival_ms;
        let size: usize = partial
            .layers
            .iter()
            .map(|n| n.len() + h264::LENGTH_SIZE)
            .sum();
        let adding = match &unit {
            h264::Unit::Nals(nals) => nals.iter().map(|n| n.len() + h264::LENGTH_SIZE).sum(),
            h264::Unit::Fragment { data, .. } => data.len() + 1 + h264::LENGTH_SIZE,
        };
        if size + adding > MAX_FRAME_BYTES {
            partial.broken = true;
            partial.layers.clear();
        }
        if !partial.broken {
            let mut completed = 0..0;
            match unit {
                h264::Unit::Nals(nals) => {
                    if partial.layer_open {
                        partial.broken = true; // an FU-A never ended
                    } else {
                        let from = partial.layers.len();
                        partial.layers.extend(nals.iter().map(|n| n.to_vec()));
                        completed = from..partial.layers.len();
                    }
                }
                h264::Unit::Fragment {
                    header,
                    start,
                    end,
                    data,
                } => {
                    if start == partial.layer_open {
                        // a start inside a fragmented unit, or a middle without its start
                        partial.broken = true;
                    } else {
                        if start {
                            let mut nal = Vec::with_capacity(data.len() + 1);
                            nal.push(header);
                            partial.layers.push(nal);
                            partial.layer_open = true;
                        }
                        if let Some(nal) = partial.layers.last_mut() {
                            nal.extend_from_slice(data);
                        }
                        if end {
                            partial.layer_open = false;
                            completed = partial.layers.len() - 1..partial.layers.len();
                        }
                    }
                }
            }
            for nal in &partial.layers[completed] {
                match nal.first().map(|h| h264::nal_type(*h)) {
                    Some(h264::NAL_SPS) => self.sps = Some(nal.clone()),
                    Some(h264::NAL_PPS) => self.pps = Some(nal.clone()),
                    _ => {}
                }
            }
        }
        if partial.broken {
            partial.layers.clear();
        }
        if !packet.marker {
            return;
        }
        let Some(done) = self.partial.take() else {
            return;
        };
        if done.broken || done.layer_open {
            out.dropped_frames += 1;
            return;
        }
        if !has_vcl(&done.layers) {
            return; // parameter sets (kept above) or SEI on their own
        }
        let types: Vec<u8> = done
            .layers
            .iter()
            .filter_map(|n| n.first().map(|h| h264::nal_type(*h)))
            .collect();
        let idr = types.contains(&h264::NAL_IDR);
        let mut data = Vec::with_capacity(
            done.layers
                .iter()
                .map(|n| n.len() + h264::LENGTH_SIZE)
                .sum::<usize>()
                + 64,
        );
        let mut layers = done.layers.iter().peekable();
        // Leading access unit delimiter stays first.
        if let Some(aud) = layers.next_if(|n| h264::nal_type(n[0]) == h264::NAL_AUD) {
            h264::push_nal(&mut data, aud);
        }
        // An IDR without its parameter sets gets the last ones received, unless
        // packets were lost just before it (they may have been newer ones).
        if idr && !done.after_gap {
            if !types.contains(&h264::NAL_SPS) {
                if let Some(sps) = &self.sps {
                    h264::push_nal(&mut data, sps);
                }
            }
            if !types.contains(&h264::NAL_PPS) {
                if let Some(pps) = &self.pps {
                    h264::push_nal(&mut data, pps);
                }
            }
        }
        for nal in layers {
            h264::push_nal(&mut data, nal);
        }
        let info = h264::inspect(&data);
        let config = if info.keyframe {
            h264::avc_config(&data)
        } else {
            None
        };
        out.frame = Some(AssembledFrame {
            timestamp: done.timestamp,
            info: FrameInfo {
                // a keyframe the muxer could not describe is not written as one
                keyframe: info.keyframe && config.is_some(),
                ..info
            },
            data,
            arrival_ms: done.arrival_ms,
            config,
        });
    }
}

fn has_vcl(nals: &[Vec<u8>]) -> bool {
    nals.iter()
        .any(|n| n.first().is_some_and(|h| h264::is_vcl(h264::nal_type(*h))))
}

/// One frame, or a VP9 superframe: the frames back to back, then an index
/// (marker byte, little-endian sizes, marker byte).
fn join_layers(mut layers: Vec<Vec<u8>>) -> Vec<u8> {
    if layers.len() == 1 {
        return layers.pop().unwrap_or_default();
    }
    let largest = layers.iter().map(Vec::len).max().unwrap_or(0);
    let size_bytes: usize = match largest {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        0x1_0000..=0xFF_FFFF => 3,
        _ => 4,
    };
    // At most 8 frames fit a superframe index; keep the lowest layers.
    layers.truncate(8);
    let marker = 0xC0 | (((size_bytes - 1) as u8) << 3) | ((layers.len() - 1) as u8);
    let mut out = Vec::with_capacity(
        layers.iter().map(Vec::len).sum::<usize>() + 2 + size_bytes * layers.len(),
    );
    for l in &layers {
        out.extend_from_slice(l);
    }
    out.push(marker);
    for l in &layers {
        out.extend_from_slice(&(l.len() as u32).to_le_bytes()[..size_bytes]);
    }
    out.push(marker);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: i64, ts: i64, marker: bool, payload: &[u8]) -> OrderedPacket {
        OrderedPacket {
            seq,
            timestamp: ts,
            marker,
            payload: payload.to_vec(),
            arrival_ms: 0,
        }
    }

    const VP8_KEY: [u8; 10] = [0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xF0, 0x00];

    #[test]
    fn vp8_frame_spanning_three_packets_is_joined_and_keyframe_detected() {
        let mut a = FrameAssembler::new(Codec::Vp8);
        let mut first = vec![0x10];
        first.extend_from_slice(&VP8_KEY);
        assert!(a.push(pkt(1, 3000, false, &first)).frame.is_none());
        assert!(a.push(pkt(2, 3000, false, &[0x00, 0xAA])).frame.is_none());
        let out = a.push(pkt(3, 3000, true, &[0x00, 0xBB]));
        let f = out.frame.expect("frame");
        assert_eq!(f.data.len(), VP8_KEY.len() + 2);
        assert!(f.info.keyframe);
        assert_eq!(f.info.dimensions, Some((320, 240)));
    }

    #[test]
    fn vp8_frame_with_a_missing_middle_packet_is_dropped() {
        let mut a = FrameAssembler::new(Codec::Vp8);
        a.push(pkt(1, 3000, false, &[0x10, 0x01]));
        let out = a.push(pkt(3, 3000, true, &[0x00, 0x02]));
        assert!(out.frame.is_none());
        assert!(out.gap);
        assert_eq!(out.dropped_frames, 1);
        // next frame is fine
        assert!(a.push(pkt(4, 6000, true, &[0x10, 0x01])).frame.is_some());
    }

    #[test]
    fn vp8_frame_whose_marker_packet_was_lost_is_dropped_when_the_next_begins() {
        let mut a = FrameAssembler::new(Codec::Vp8);
        a.push(pkt(1, 3000, false, &[0x10, 0x01]));
        let out = a.push(pkt(3, 6000, true, &[0x10, 0x02]));
        assert_eq!(out.dropped_frames, 1);
        assert!(out.frame.is_some());
    }

    #[test]
    fn vp8_frame_whose_first_packet_was_lost_is_dropped() {
        let mut a = FrameAssembler::new(Codec::Vp8);
        a.push(pkt(1, 3000, true, &[0x10, 0x01]));
        let out = a.push(pkt(3, 6000, false, &[0x00, 0x02]));
        assert!(out.gap);
        let out = a.push(pkt(4, 6000, true, &[0x00, 0x03]));
        assert!(out.frame.is_none());
        assert_eq!(out.dropped_frames, 1);
    }

    #[test]
    fn vp9_spatial_layers_become_a_superframe() {
        let mut a = FrameAssembler::new(Codec::Vp9);
        // layer 0: B..E in two packets; layer 1: B+E in one packet with marker
        a.push(pkt(1, 9000, false, &[0x28, 0x00, 0x00, 1, 2]));
        a.push(pkt(2, 9000, false, &[0x24, 0x00, 0x00, 3]));
        let f = a
            .push(pkt(3, 9000, true, &[0x2C, 0x02, 0x00, 4, 5]))
            .frame
            .expect("frame");
        assert_eq!(f.data, vec![1, 2, 3, 4, 5, 0xC1, 3, 2, 0xC1]);
    }

    #[test]
    fn a_frame_that_never_ends_cannot_grow_without_bound() {
        let mut a = FrameAssembler::new(Codec::Vp8);
        let chunk = vec![0u8; 1200];
        let mut first = vec![0x10];
        first.extend_from_slice(&chunk);
        a.push(pkt(0, 1, false, &first));
        let mut cont = vec![0x00];
        cont.extend_from_slice(&chunk);
        for seq in 1..(MAX_FRAME_BYTES as i64 / 1200 + 10) {
            a.push(pkt(seq, 1, false, &cont));
        }
        let held: usize = a
            .partial
            .as_ref()
            .map_or(0, |p| p.layers.iter().map(Vec::len).sum());
        assert!(held <= MAX_FRAME_BYTES);
        let out = a.push(pkt(100_000, 1, true, &cont));
        assert!(out.frame.is_none());
    }

    #[test]
    fn opus_packets_are_frames_and_padding_packets_are_skipped() {
        let mut a = FrameAssembler::new(Codec::Opus);
        let f = a
            .push(pkt(1, 960, true, &[0xF8, 0xAB]))
            .frame
            .expect("frame");
        assert_eq!(f.info.duration_ticks, Some(960));
        assert!(a.push(pkt(2, 960, false, &[])).frame.is_none());
        let out = a.push(pkt(3, 1920, false, &[0xF8, 0xCD]));
        assert!(!out.gap);
        assert!(out.frame.is_some());
    }

    fn fu_a(nal: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let parts: Vec<&[u8]> = body.chunks(chunk).collect();
        let last = parts.len() - 1;
        parts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut fu = if i == 0 { 0x80 } else { 0 } | nal[0] & 0x1F;
                if i == last {
                    fu |= 0x40;
                }
                let mut p = vec![(nal[0] & 0xE0) | 28, fu];
                p.extend_from_slice(c);
                p
            })
            .collect()
    }

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78];
        for n in nals {
            p.extend_from_slice(&(n.len() as u16).to_be_bytes());
            p.extend_from_slice(n);
        }
        p
    }

    fn idr() -> Vec<u8> {
        let mut n = vec![0x65, 0x88];
        n.extend((0..3000).map(|i| (i % 251) as u8 | 1));
        n
    }

    use crate::depacketize::h264::tests::{PPS, SPS_320X240};

    fn h264_keyframe_packets(seq: i64, ts: i64) -> Vec<OrderedPacket> {
        let mut payloads = vec![stap_a(&[&SPS_320X240, &PPS])];
        payloads.extend(fu_a(&idr(), 1000));
        let last = payloads.len() - 1;
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| pkt(seq + i as i64, ts, i == last, &p))
            .collect()
    }

    #[test]
    fn h264_stap_a_and_fu_a_become_one_length_prefixed_keyframe_with_its_avcc() {
        let mut a = FrameAssembler::new(Codec::H264);
        let packets = h264_keyframe_packets(10, 9000);
        assert_eq!(packets.len(), 5);
        let mut frame = None;
        for p in packets {
            let out = a.push(p);
            assert_eq!(out.dropped_frames, 0);
            frame = frame.or(out.frame);
        }
        let f = frame.expect("frame");
        assert!(f.info.keyframe);
        assert_eq!(f.info.dimensions, Some((320, 240)));
        let nals: Vec<&[u8]> = h264::nal_units(&f.data).collect();
        assert_eq!(nals, vec![&SPS_320X240[..], &PPS[..], &idr()[..]]);
        let config = f.config.expect("avcC");
        assert_eq!(config[0..4], [1, 0x42, 0xC0, 0x0D]);
        // a P frame as a single NAL unit
        let f = a
            .push(pkt(15, 12000, true, &[0x41, 0x9A, 0x01]))
            .frame
            .expect("P frame");
        assert!(!f.info.keyframe);
        assert!(f.config.is_none());
        assert_eq!(f.data, vec![0, 0, 0, 3, 0x41, 0x9A, 0x01]);
    }

    #[test]
    fn h264_a_lost_fragment_drops_the_frame_and_the_next_frame_is_whole() {
        let mut a = FrameAssembler::new(Codec::H264);
        let mut packets = h264_keyframe_packets(1, 3000);
        packets.remove(2); // a middle FU-A fragment
        let mut dropped = 0;
        let mut gap = false;
        for p in packets {
            let out = a.push(p);
            assert!(out.frame.is_none());
            dropped += out.dropped_frames;
            gap |= out.gap;
        }
        assert!(gap);
        assert_eq!(dropped, 1);
        let f = a.push(pkt(6, 6000, true, &[0x41, 0x9A, 0x02])).frame;
        assert!(f.is_some());
        // a continuation fragment without its start is dropped
        let mut fu = fu_a(&idr(), 1000);
        fu.remove(0);
        let mut dropped = 0;
        for (i, p) in fu.iter().enumerate() {
            let out = a.push(pkt(7 + i as i64, 9000, i == fu.len() - 1, p));
            assert!(out.frame.is_none());
            dropped += out.dropped_frames;
        }
        assert_eq!(dropped, 1);
    }

    #[test]
    fn h264_an_idr_without_parameter_sets_gets_the_last_ones_unless_it_follows_a_gap() {
        let mut a = FrameAssembler::new(Codec::H264);
        // parameter sets alone, in an access unit of their own: kept, no frame, no loss
        let out = a.push(pkt(1, 100, true, &stap_a(&[&SPS_320X240, &PPS])));
        assert!(out.frame.is_none());
        assert_eq!(out.dropped_frames, 0);
        let short_idr = [0x65, 0x88, 0x84, 0x21];
        let f = a.push(pkt(2, 3000, true, &short_idr)).frame.expect("frame");
        assert!(f.info.keyframe);
        assert_eq!(h264::nal_units(&f.data).count(), 3);
        assert!(f.config.is_some());
        // after a gap the stored sets are not trusted: not a keyframe
        let f = a.push(pkt(5, 9000, true, &short_idr)).frame.expect("frame");
        assert!(!f.info.keyframe);
        assert_eq!(h264::nal_units(&f.data).count(), 1);
        // without any parameter sets ever: not a keyframe
        let mut b = FrameAssembler::new(Codec::H264);
        let f = b.push(pkt(1, 3000, true, &short_idr)).frame.expect("frame");
        assert!(!f.info.keyframe);
    }

    #[test]
    fn h264_malformed_payloads_are_counted_and_break_the_frame() {
        let mut a = FrameAssembler::new(Codec::H264);
        let mut packets = h264_keyframe_packets(1, 3000);
        packets[1].payload = vec![0x7A, 0x00, 0x01]; // FU-B: not packetization mode 1
        let mut malformed = 0;
        for p in packets {
            let out = a.push(p);
            assert!(out.frame.is_none());
            malformed += u32::from(out.malformed);
        }
        assert_eq!(malformed, 1);
    }
}
