//! RTP packet parsing (RFC 3550 fixed header, CSRC list, RFC 8285 header
//! extensions, padding).
//!
//! Parsing borrows from the input and never panics: every length is checked and
//! a malformed packet yields an [`RtpError`].

use thiserror::Error;

/// Why a byte string is not a valid RTP packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("packet of {len} bytes is shorter than the 12-byte RTP header")]
    TooShort {
        /// Length of the input.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0} (expected 2)")]
    BadVersion(u8),
    /// The CSRC list runs past the end of the packet.
    #[error("CSRC list of {count} entries runs past the end of the packet")]
    CsrcOverflow {
        /// CSRC count from the header.
        count: u8,
    },
    /// The header extension runs past the end of the packet.
    #[error("header extension runs past the end of the packet")]
    ExtensionOverflow,
    /// The padding count is zero or larger than the payload.
    #[error("padding of {padding} bytes does not fit a payload of {payload} bytes")]
    BadPadding {
        /// Padding count (last byte of the packet).
        padding: u8,
        /// Payload length including the padding.
        payload: usize,
    },
}

/// An RTP header extension block (RFC 3550 §5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    /// The 16-bit profile field: `0xBEDE` for one-byte elements (RFC 8285),
    /// `0x100x` for two-byte elements.
    pub profile: u16,
    /// The extension data (length a multiple of four bytes).
    pub data: &'a [u8],
}

impl<'a> HeaderExtension<'a> {
    /// The RFC 8285 elements `(id, value)` in this block. Stops quietly at the
    /// first malformed element; yields nothing for other profiles.
    pub fn elements(&self) -> Vec<(u8, &'a [u8])> {
        let mut out = Vec::new();
        let data = self.data;
        let mut i = 0usize;
        if self.profile == 0xBEDE {
            while i < data.len() {
                let b = data[i];
                if b == 0 {
                    i += 1; // padding
                    continue;
                }
                let id = b >> 4;
                if id == 15 {
                    break; // reserved: stop processing
                }
                let len = usize::from(b & 0x0F) + 1;
                let start = i + 1;
                let Some(value) = data.get(start..start + len) else {
                    break;
                };
                out.push((id, value));
                i = start + len;
            }
        } else if self.profile & 0xFFF0 == 0x1000 {
            while i < data.len() {
                let id = data[i];
                if id == 0 {
                    i += 1;
                    continue;
                }
                let Some(&len) = data.get(i + 1) else {
                    break;
                };
                let start = i + 2;
                let Some(value) = data.get(start..start + usize::from(len)) else {
                    break;
                };
                out.push((id, value));
                i = start + usize::from(len);
            }
        }
        out
    }
}

/// A parsed RTP packet borrowing from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The marker bit (for video: last packet of a frame).
    pub marker: bool,
    /// The payload type (7 bits).
    pub payload_type: u8,
    /// The 16-bit sequence number.
    pub sequence: u16,
    /// The 32-bit media timestamp.
    pub timestamp: u32,
    /// The synchronization source.
    pub ssrc: u32,
    csrc: &'a [u8],
    /// The header extension, if the X bit is set.
    pub extension: Option<HeaderExtension<'a>>,
    /// The payload with padding removed (may be empty for padding-only packets).
    pub payload: &'a [u8],
    /// Number of padding bytes removed from the end (0 when the P bit is clear).
    pub padding: u8,
}

impl<'a> RtpPacket<'a> {
    /// Parses one RTP packet.
    ///
    /// # Errors
    /// [`RtpError`] when the bytes are not a well-formed RTP version 2 packet.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < 12 {
            return Err(RtpError::TooShort { len: buf.len() });
        }
        let b0 = buf[0];
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = b0 & 0x0F;
        let b1 = buf[1];
        let marker = b1 & 0x80 != 0;
        let payload_type = b1 & 0x7F;
        let sequence = u16::from_be_bytes([buf[2], buf[3]]);
        let timestamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);

        let mut pos = 12usize;
        let csrc_end = pos + usize::from(csrc_count) * 4;
        let csrc = buf
            .get(pos..csrc_end)
            .ok_or(RtpError::CsrcOverflow { count: csrc_count })?;
        pos = csrc_end;

        let extension = if has_extension {
            let head = buf.get(pos..pos + 4).ok_or(RtpError::ExtensionOverflow)?;
            let profile = u16::from_be_bytes([head[0], head[1]]);
            let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let start = pos + 4;
            let end = start + words * 4;
            let data = buf.get(start..end).ok_or(RtpError::ExtensionOverflow)?;
            pos = end;
            Some(HeaderExtension { profile, data })
        } else {
            None
        };

        let rest = &buf[pos..];
        let (payload, padding) = if has_padding {
            let Some(&count) = rest.last() else {
                return Err(RtpError::BadPadding {
                    padding: 0,
                    payload: 0,
                });
            };
            if count == 0 || usize::from(count) > rest.len() {
                return Err(RtpError::BadPadding {
                    padding: count,
                    payload: rest.len(),
                });
            }
            (&rest[..rest.len() - usize::from(count)], count)
        } else {
            (rest, 0)
        };

        Ok(Self {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrc,
            extension,
            payload,
            padding,
        })
    }

    /// A packet from already-parsed fields (for a caller whose RTP stack has
    /// parsed it): no CSRCs, no extension, no padding.
    pub fn new(
        marker: bool,
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload: &'a [u8],
    ) -> Self {
        Self {
            marker,
            payload_type: payload_type & 0x7F,
            sequence,
            timestamp,
            ssrc,
            csrc: &[],
            extension: None,
            payload,
            padding: 0,
        }
    }

    /// The contributing sources (CSRC list).
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.csrc
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut v = vec![0x80, (u8::from(marker) << 7) | pt];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&ssrc.to_be_bytes());
        v
    }

    #[test]
    fn parses_fixed_header_fields() {
        let mut p = header(true, 96, 0xFFFE, 0xDEADBEEF, 0x01020304);
        p.extend_from_slice(&[1, 2, 3]);
        let r = RtpPacket::parse(&p).expect("valid");
        assert!(r.marker);
        assert_eq!(r.payload_type, 96);
        assert_eq!(r.sequence, 0xFFFE);
        assert_eq!(r.timestamp, 0xDEADBEEF);
        assert_eq!(r.ssrc, 0x01020304);
        assert_eq!(r.payload, &[1, 2, 3]);
        assert_eq!(r.padding, 0);
        assert!(r.extension.is_none());
    }

    #[test]
    fn parses_csrcs_one_byte_extensions_and_padding() {
        let mut p = header(false, 111, 7, 960, 42);
        p[0] |= 0x20 | 0x10 | 0x02; // P, X, CC=2
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&2u32.to_be_bytes());
        // one-byte extension: id 1 len 1 (value 0xAA 0xBB), id 3 len 0 (value 0xCC), padding
        p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x02]);
        p.extend_from_slice(&[0x11, 0xAA, 0xBB, 0x30, 0xCC, 0x00, 0x00, 0x00]);
        p.extend_from_slice(&[9, 8, 7]);
        p.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let r = RtpPacket::parse(&p).expect("valid");
        assert_eq!(r.csrcs().collect::<Vec<_>>(), vec![1, 2]);
        let ext = r.extension.expect("extension");
        assert_eq!(
            ext.elements(),
            vec![(1, &[0xAA, 0xBB][..]), (3, &[0xCC][..])]
        );
        assert_eq!(r.payload, &[9, 8, 7]);
        assert_eq!(r.padding, 3);
    }

    #[test]
    fn parses_two_byte_extensions() {
        let mut p = header(false, 100, 1, 1, 1);
        p[0] |= 0x10;
        p.extend_from_slice(&[0x10, 0x00, 0x00, 0x01, 5, 2, 0xAB, 0xCD]);
        let r = RtpPacket::parse(&p).expect("valid");
        assert_eq!(
            r.extension.map(|e| e.elements()),
            Some(vec![(5, &[0xAB, 0xCD][..])])
        );
        assert!(r.payload.is_empty());
    }

    #[test]
    fn rejects_malformed_packets_without_panicking() {
        assert_eq!(
            RtpPacket::parse(&[0x80; 5]),
            Err(RtpError::TooShort { len: 5 })
        );
        let mut p = header(false, 96, 1, 1, 1);
        p[0] = 0x40;
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::BadVersion(1)));
        let mut p = header(false, 96, 1, 1, 1);
        p[0] |= 0x0F;
        assert_eq!(
            RtpPacket::parse(&p),
            Err(RtpError::CsrcOverflow { count: 15 })
        );
        let mut p = header(false, 96, 1, 1, 1);
        p[0] |= 0x10;
        p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x09]);
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::ExtensionOverflow));
        let mut p = header(false, 96, 1, 1, 1);
        p[0] |= 0x20;
        p.extend_from_slice(&[1, 2, 9]);
        assert!(matches!(
            RtpPacket::parse(&p),
            Err(RtpError::BadPadding { .. })
        ));
        let mut p = header(false, 96, 1, 1, 1);
        p[0] |= 0x20;
        assert!(matches!(
            RtpPacket::parse(&p),
            Err(RtpError::BadPadding { .. })
        ));
        // every prefix of a valid packet parses or errors, never panics
        let mut p = header(true, 96, 1, 1, 1);
        p[0] |= 0x30 | 0x01;
        p.extend_from_slice(&[0, 0, 0, 1, 0xBE, 0xDE, 0, 1, 0x10, 0xFF, 0, 0, 5, 5, 2]);
        for n in 0..=p.len() {
            let _ = RtpPacket::parse(&p[..n]);
        }
    }
}
