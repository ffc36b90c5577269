//! Relay configuration and the per-connection WebRTC setup built from it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::peer_connection::transport::{RTCIceCandidateType, RTCIceServer};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};

use super::rtcp::{RtcpMarker, RTCP_MARKER_SLOT};
use super::tap::TapFactory;
use super::SfuError;

/// How the relay is set up. `RelayConfig::default()` binds loopback on ephemeral ports, which is
/// what tests want; a server sets `bind_ip`, `port_range` and `nat_1to1_ips` from its settings.
#[derive(Clone)]
pub struct RelayConfig {
    /// The local address every peer connection's UDP socket binds to. A concrete address, not
    /// the wildcard: a wildcard bind enumerates interfaces and skips loopback (pitfall 2).
    pub bind_ip: IpAddr,
    /// The UDP ports the relay may use, one per participant connection; `None` lets the OS
    /// pick ephemeral ports. Open this range in the firewall.
    pub port_range: Option<RangeInclusive<u16>>,
    /// Public addresses announced instead of `bind_ip` in host candidates (1:1 NAT, e.g. a
    /// cloud VM with an elastic IP). Empty: announce `bind_ip`.
    pub nat_1to1_ips: Vec<IpAddr>,
    /// STUN/TURN servers handed to clients in the join response ([`Relay::ice_servers`]). The
    /// relay itself gathers host candidates only: it is the public endpoint.
    ///
    /// [`Relay::ice_servers`]: super::Relay::ice_servers
    pub ice_servers: Vec<RTCIceServer>,
    /// Minimum gap between two keyframe requests (PLI) sent to one publisher's track, however
    /// many subscribers ask. Default 500 ms.
    pub keyframe_request_interval: Duration,
    /// Receives every inbound RTP packet of every published track (the recorder). `None`: no tap.
    pub tap: Option<Arc<dyn TapFactory>>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_range: None,
            nat_1to1_ips: Vec::new(),
            ice_servers: Vec::new(),
            keyframe_request_interval: Duration::from_millis(500),
            tap: None,
        }
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ICE server credentials (TURN passwords) are deliberately left out.
        f.debug_struct("RelayConfig")
            .field("bind_ip", &self.bind_ip)
            .field("port_range", &self.port_range)
            .field("nat_1to1_ips", &self.nat_1to1_ips)
            .field("ice_servers", &self.ice_servers.len())
            .field("keyframe_request_interval", &self.keyframe_request_interval)
            .field("tap", &self.tap.is_some())
            .finish()
    }
}

/// Payload types the relay offers: Opus; VP8, then H.264 (constrained baseline,
/// packetization mode 1), each with RTX. The relay never transcodes, so VP8 — which every
/// client here can send and receive — is preferred: it comes first in the relay's offers, and
/// answers list it first whatever order the client offered in ([`prefer_vp8`]). A client that
/// offers only H.264 publishes H.264; it reaches the subscribers that accept H.264 and is
/// recorded as Matroska.
pub(crate) const PT_OPUS: u8 = 111;
pub(crate) const PT_VP8: u8 = 96;
pub(crate) const PT_VP8_RTX: u8 = 97;
pub(crate) const PT_H264: u8 = 102;
pub(crate) const PT_H264_RTX: u8 = 103;
/// The H.264 format the relay registers: what browsers offer for constrained baseline.
pub(crate) const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// The media engine and interceptor chain of one connection (neither is reusable across
/// connections in 0.21: the registry is consumed by the build).
pub(crate) fn media_setup() -> Result<(MediaEngine, Registry), SfuError> {
    let mut me = MediaEngine::default();
    let codec = |mime_type: &str, clock_rate: u32, channels: u16, fmtp: String, fir: bool| RTCRtpCodec {
        mime_type: mime_type.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp,
        rtcp_feedback: if fir { vec![RTCPFeedback { typ: "ccm".to_owned(), parameter: "fir".to_owned() }] } else { vec![] },
    };
    let codecs = [
        (codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1".to_owned(), false), PT_OPUS, RtpCodecKind::Audio),
        (codec(MIME_TYPE_VP8, 90_000, 0, String::new(), true), PT_VP8, RtpCodecKind::Video),
        (codec(MIME_TYPE_RTX, 90_000, 0, format!("apt={PT_VP8}"), false), PT_VP8_RTX, RtpCodecKind::Video),
        (codec(MIME_TYPE_H264, 90_000, 0, H264_FMTP.to_owned(), true), PT_H264, RtpCodecKind::Video),
        (codec(MIME_TYPE_RTX, 90_000, 0, format!("apt={PT_H264}"), false), PT_H264_RTX, RtpCodecKind::Video),
    ];
    for (rtp_codec, payload_type, kind) in codecs {
        me.register_codec(RTCRtpCodecParameters { rtp_codec, payload_type }, kind)?;
    }
    // NACK generator + responder (adds `nack` and `nack pli` feedback), sender/receiver
    // reports, and the marker that hands PLI/FIR/SR to the relay. No TWCC: the relay does not
    // estimate bandwidth (no simulcast to switch between), and each TWCC packet costs CPU.
    let registry = configure_nack(Registry::new(), &mut me);
    let registry = configure_rtcp_reports(registry);
    let registry = registry.with(Slot::from(RTCP_MARKER_SLOT), RtcpMarker::default());
    Ok((me, registry))
}

/// Reorders the payload types of every video section of a client's offer so that VP8 (and its
/// RTX) come first, keeping the order of everything else. An answer lists codecs in the
/// offer's order, and the offerer sends the first one the answer lists: without this, a client
/// that prefers H.264 (Safari does) would publish H.264, which subscribers that only take VP8
/// cannot receive. Nothing but the order on the `m=video` lines changes; `None` if nothing had
/// to move.
pub(crate) fn prefer_vp8(sdp: &str) -> Option<String> {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.split(eol).collect();
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let mut changed = false;
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with("m=video ") {
            i += 1;
            continue;
        }
        let end = (i + 1..lines.len()).find(|&j| lines[j].starts_with("m=")).unwrap_or(lines.len());
        let section = &lines[i + 1..end];
        let vp8: Vec<&str> = section
            .iter()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter_map(|r| r.split_once(' '))
            .filter(|(_, enc)| enc.to_ascii_lowercase().starts_with("vp8/"))
            .map(|(pt, _)| pt)
            .collect();
        let rtx_of_vp8: Vec<&str> = section
            .iter()
            .filter_map(|l| l.strip_prefix("a=fmtp:"))
            .filter_map(|r| r.split_once(' '))
            .filter(|(_, params)| {
                params.split(';').any(|p| p.trim().strip_prefix("apt=").is_some_and(|a| vp8.contains(&a)))
            })
            .map(|(pt, _)| pt)
            .collect();
        let fields: Vec<&str> = lines[i].split(' ').collect();
        if fields.len() > 3 && !vp8.is_empty() {
            let formats = &fields[3..];
            let (first, rest): (Vec<&str>, Vec<&str>) =
                formats.iter().partition(|f| vp8.contains(f) || rtx_of_vp8.contains(f));
            let reordered: Vec<&str> = first.into_iter().chain(rest).collect();
            if reordered != formats {
                out[i] = fields[..3].iter().chain(reordered.iter()).copied().collect::<Vec<_>>().join(" ");
                changed = true;
            }
        }
        i = end;
    }
    changed.then(|| out.join(eol))
}

/// Settings shared by every connection: no mDNS (pitfall 1), announced NAT addresses.
pub(crate) fn setting_engine(config: &RelayConfig) -> SettingEngine {
    let mut b = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Checks every 50 ms while connecting (28 × 50 ms = the crate's default budget of
        // 1.4 s): the first DTLS flight otherwise waits for the driver's next 200 ms tick.
        .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(28));
    if !config.nat_1to1_ips.is_empty() {
        b = b.with_nat_1to1_ips(
            config.nat_1to1_ips.iter().map(|ip| ip.to_string()).collect(),
            RTCIceCandidateType::Host,
        );
    }
    b.build()
}

/// Hands out UDP ports from the configured range, round robin; a port still in use is skipped
/// by the caller trying the next one.
#[derive(Debug)]
pub(crate) struct PortAllocator {
    range: Option<RangeInclusive<u16>>,
    next: AtomicU32,
}

impl PortAllocator {
    pub(crate) fn new(range: Option<RangeInclusive<u16>>) -> Self {
        Self {
            range,
            next: AtomicU32::new(0),
        }
    }

    /// How many distinct ports a caller should try before giving up.
    pub(crate) fn attempts(&self) -> usize {
        match &self.range {
            None => 1,
            Some(r) => (usize::from(*r.end()) + 1)
                .saturating_sub(usize::from(*r.start()))
                .clamp(1, 64),
        }
    }

    /// The next port to try; 0 means "any".
    pub(crate) fn next_port(&self) -> u16 {
        match &self.range {
            None => 0,
            Some(r) => {
                let len = (u32::from(*r.end()) + 1).saturating_sub(u32::from(*r.start())).max(1);
                let i = self.next.fetch_add(1, Ordering::Relaxed) % len;
                // `i < len <= 65536 - start`, so this stays within u16.
                (u32::from(*r.start()) + i) as u16
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_moves_to_the_front_of_video_sections_and_nothing_else_changes() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102 103 96 97 45\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:103 rtx/90000\r\n\
a=fmtp:103 apt=102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:45 AV1/90000\r\n";
        let out = prefer_vp8(offer).expect("reordered");
        assert!(out.contains("\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45\r\n"), "{out}");
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n"));
        assert_eq!(out.len(), offer.len());
        assert_eq!(out.replace("96 97 102 103 45", "102 103 96 97 45"), offer);
        // already first, or no VP8 at all: left alone
        assert_eq!(prefer_vp8(&out), None);
        let h264_only = "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 102\na=rtpmap:102 H264/90000\n";
        assert_eq!(prefer_vp8(h264_only), None);
    }

    #[test]
    fn the_media_engine_registers_vp8_before_h264_with_distinct_payload_types() {
        let pts = [PT_OPUS, PT_VP8, PT_VP8_RTX, PT_H264, PT_H264_RTX];
        for (i, a) in pts.iter().enumerate() {
            assert!(!pts[i + 1..].contains(a), "payload type {a} used twice");
        }
        assert!(media_setup().is_ok());
        assert!(H264_FMTP.contains("packetization-mode=1") && H264_FMTP.contains("profile-level-id=42e01f"));
    }
}
