//! Frame assembly: packets in sequence order in, whole codec frames out.
//!
//! A video frame is the run of packets sharing one RTP timestamp, from a
//! frame-start packet to the packet with the marker bit, with no sequence gap.
//! Anything else is an incomplete frame: it is dropped and counted, and the
//! caller is told so it can wait for the next keyframe. VP9 pictures made of
//! several spatial-layer frames are joined into a superframe with an index.

use crate::codec::{Codec, TrackKind};
use crate::depacketize::{self, FrameInfo};

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
}

/// Assembles frames of one RTP stream.
#[derive(Debug)]
pub(crate) struct FrameAssembler {
    codec: Codec,
    last_seq: Option<i64>,
    partial: Option<Partial>,
}

impl FrameAssembler {
    pub(crate) fn new(codec: Codec) -> Self {
        Self {
            codec,
            last_seq: None,
            partial: None,
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
                    });
                }
                Err(_) => out.malformed = true,
            }
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
                        self.partial = Some(Partial {
                            timestamp: packet.timestamp,
                            layers: Vec::new(),
                            layer_open: false,
                            broken: true,
                            arrival_ms: packet.arrival_ms,
                        });
                    }
                    return out;
                }
                self.partial.insert(Partial {
                    timestamp: packet.timestamp,
                    layers: Vec::new(),
                    layer_open: false,
                    broken: false,
                    arrival_ms: packet.arrival_ms,
                })
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
                    });
                }
            }
        }
        out
    }
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
}
