//! The interceptor that lets the relay see the RTCP it must act on (WEBRTC-NOTES pitfall 7).
//!
//! Inbound RTCP ends at the end of the interceptor chain unless an interceptor marks it
//! [`Attribute::DeliverToApplication`]. The relay needs two kinds of it:
//!
//! - **PLI and FIR** arriving on a subscriber's connection, about a track the relay sends: they
//!   are relayed (rate-limited) to the publisher of that track.
//! - **Sender reports** arriving on a publisher's connection: they carry the RTP↔NTP clock
//!   mapping the recorder needs for audio/video sync, and go to the [`PacketTap`](super::PacketTap).
//!
//! Everything else passes through unmarked, after the crate's own interceptors (NACK, reports)
//! have seen it: this interceptor sits application-most.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// The slot of [`RtcpMarker`]: application-most, after the crate's interceptors.
pub(crate) const RTCP_MARKER_SLOT: usize = 14_000;

/// Marks keyframe requests and sender reports for delivery to the application.
#[derive(Default)]
pub(crate) struct RtcpMarker {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

/// Whether the relay wants to see this RTCP packet.
fn wanted(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() || any.is::<SenderReport>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpMarker {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            // The compound packet is marked whole (no copy); the relay filters what it reads.
            if packets.iter().any(|p| wanted(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RtcpMarker {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
