//! The packet tap: how the recorder sees every inbound packet of every published track.

use std::time::Instant;

use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;

use super::TrackInfo;

/// Opens a [`PacketTap`] for each track a participant publishes. One factory serves the whole
/// relay ([`RelayConfig::tap`](super::RelayConfig::tap)); it is called once per inbound track,
/// on that track's forwarding task, before the first packet is forwarded.
pub trait TapFactory: Send + Sync + 'static {
    /// Returns the tap for `track`, or `None` to leave the track untapped (not recorded).
    fn open(&self, track: &TrackInfo) -> Option<Box<dyn PacketTap>>;
}

/// Sees one inbound track's packets, from the first one, in arrival order, before they are
/// forwarded.
///
/// Runs **inline on the forwarding task**: every microsecond spent here delays the copies to
/// all subscribers. Do the least possible (e.g. `try_send` the packet to a writer task; the
/// payload is a refcounted [`bytes::Bytes`], so cloning the packet copies no media) and never
/// block or await.
pub trait PacketTap: Send + 'static {
    /// One inbound RTP packet, decrypted and already de-RTX'd: the publisher's SSRC, sequence
    /// numbers and timestamps, the original payload type, header extensions removed.
    /// `arrival` is when the relay took it from the connection.
    fn on_rtp(&mut self, packet: &rtp::Packet, arrival: Instant);

    /// An RTCP sender report from the publisher about this track: the RTP ↔ NTP mapping that
    /// puts audio and video on one clock.
    fn on_sender_report(&mut self, _report: &SenderReport, _arrival: Instant) {}

    /// The track ended (unpublished, or the publisher left). Called at most once; no call
    /// follows it.
    fn on_end(&mut self) {}
}
