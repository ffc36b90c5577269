//! Forwarding: one task per published track reads its packets and writes a rewritten copy to
//! each subscriber's own local track.
//!
//! The hot path per inbound packet: tap → for each subscriber: clone (no allocation: the
//! payload is refcounted, extensions were cleared) → set SSRC and payload type → `write_rtp`
//! (one bounded channel send into that subscriber connection's driver, which encrypts and
//! sends). The subscriber list is an immutable snapshot re-read only when a generation counter
//! changes, so the loop takes no lock per packet.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use uuid::Uuid;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::rtp_transceiver::RtpSender;

use super::tap::PacketTap;
use super::{Counters, TrackInfo};

/// Payload type not known yet (the subscriber's connection has not negotiated this track).
const PT_UNKNOWN: u16 = u16::MAX;

/// A published track and who receives it.
pub(crate) struct UpTrack {
    pub(crate) info: TrackInfo,
    remote: Arc<dyn TrackRemote>,
    /// Immutable snapshot, replaced on change; `generation` tells the loop to re-read it.
    subscribers: Mutex<Arc<[Arc<DownTrack>]>>,
    generation: AtomicU64,
    keyframes: KeyframeLimiter,
    ended: AtomicBool,
    counters: Arc<Counters>,
}

impl UpTrack {
    pub(crate) fn new(
        info: TrackInfo,
        remote: Arc<dyn TrackRemote>,
        keyframe_interval: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            info,
            remote,
            subscribers: Mutex::new(Arc::from(Vec::new())),
            generation: AtomicU64::new(0),
            keyframes: KeyframeLimiter::new(keyframe_interval),
            ended: AtomicBool::new(false),
            counters,
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the track ended and hands back its subscribers (to detach them). Idempotent: the
    /// second call gets an empty list.
    pub(crate) fn end(&self) -> Vec<Arc<DownTrack>> {
        self.ended.store(true, Ordering::Release);
        let mut subs = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        let out = subs.to_vec();
        *subs = Arc::from(Vec::new());
        self.generation.fetch_add(1, Ordering::AcqRel);
        out
    }

    fn snapshot(&self) -> Arc<[Arc<DownTrack>]> {
        Arc::clone(&self.subscribers.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn has_subscriber(&self, subscriber: Uuid) -> bool {
        self.snapshot().iter().any(|d| d.subscriber == subscriber)
    }

    /// Adds a subscriber unless the track has ended; false if it has.
    pub(crate) fn add_subscriber(&self, down: Arc<DownTrack>) -> bool {
        let mut subs = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_ended() {
            return false;
        }
        let mut v = subs.to_vec();
        v.push(down);
        *subs = Arc::from(v);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    pub(crate) fn remove_subscriber(&self, subscriber: Uuid) {
        let mut subs = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        if subs.iter().any(|d| d.subscriber == subscriber) {
            let v: Vec<_> = subs.iter().filter(|d| d.subscriber != subscriber).cloned().collect();
            *subs = Arc::from(v);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Asks the publisher for a keyframe, at most once per interval; a request inside the
    /// interval is deferred to its end rather than dropped, so a subscriber that became ready
    /// just after another still gets its keyframe.
    pub(crate) fn request_keyframe(self: &Arc<Self>) {
        if self.info.kind != super::MediaKind::Video || self.is_ended() {
            return;
        }
        match self.keyframes.admit(Instant::now()) {
            Admit::Now => {
                let me = Arc::clone(self);
                tokio::spawn(async move { me.send_pli().await });
            }
            Admit::After(delay) => {
                let weak = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(me) = weak.upgrade() {
                        me.keyframes.deferred_sent(Instant::now());
                        me.send_pli().await;
                    }
                });
            }
            Admit::AlreadyDeferred => {}
        }
    }

    async fn send_pli(&self) {
        if self.is_ended() {
            return;
        }
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: self.info.ssrc,
        };
        if self.remote.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
            self.counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum Admit {
    Now,
    After(Duration),
    AlreadyDeferred,
}

/// The keyframe-request rate limit of one published track.
struct KeyframeLimiter {
    interval: Duration,
    state: Mutex<(Option<Instant>, bool)>, // (last sent, one deferred pending)
}

impl KeyframeLimiter {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, false)),
        }
    }

    fn admit(&self, now: Instant) -> Admit {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match s.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                if s.1 {
                    Admit::AlreadyDeferred
                } else {
                    s.1 = true;
                    Admit::After(self.interval - now.duration_since(last))
                }
            }
            _ => {
                s.0 = Some(now);
                Admit::Now
            }
        }
    }

    fn deferred_sent(&self, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *s = (Some(now), false);
    }
}

/// One published track as sent on one subscriber's connection.
pub(crate) struct DownTrack {
    /// The receiving participant.
    pub(crate) subscriber: Uuid,
    /// The publisher's track, for relaying keyframe requests (weak: the track owns us).
    pub(crate) source: Weak<UpTrack>,
    pub(crate) local: Arc<TrackLocalStaticRTP>,
    pub(crate) sender: Arc<dyn RtpSender>,
    /// SSRC the relay picked for this copy.
    pub(crate) ssrc: u32,
    /// Codec MIME type, to find the negotiated payload type.
    pub(crate) mime_type: String,
    /// Negotiated payload type, or [`PT_UNKNOWN`] until negotiated: nothing is written before,
    /// which would only make the driver log one error per packet.
    payload_type: AtomicU16,
}

impl DownTrack {
    pub(crate) fn new(
        subscriber: Uuid,
        source: &Arc<UpTrack>,
        local: Arc<TrackLocalStaticRTP>,
        sender: Arc<dyn RtpSender>,
        ssrc: u32,
    ) -> Self {
        Self {
            subscriber,
            source: Arc::downgrade(source),
            local,
            sender,
            ssrc,
            mime_type: source.info.mime_type.clone(),
            payload_type: AtomicU16::new(PT_UNKNOWN),
        }
    }

    /// Reads the negotiated payload type from the sender. Returns true when the track just
    /// became sendable (it then wants a keyframe).
    pub(crate) async fn refresh_payload_type(&self) -> bool {
        let Ok(params) = self.sender.get_parameters().await else {
            return false;
        };
        let Some(pt) = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&self.mime_type))
            .map(|c| u16::from(c.payload_type))
        else {
            return false;
        };
        let old = self.payload_type.swap(pt, Ordering::AcqRel);
        old == PT_UNKNOWN
    }

    /// Whether the subscriber's connection has negotiated this track.
    pub(crate) fn is_negotiated(&self) -> bool {
        self.payload_type.load(Ordering::Acquire) != PT_UNKNOWN
    }

    /// Writes one copy. `packet` is already stripped of header extensions.
    #[inline]
    async fn forward(&self, packet: &rtp::Packet, counters: &Counters) {
        let pt = self.payload_type.load(Ordering::Relaxed);
        if pt == PT_UNKNOWN {
            return;
        }
        let mut copy = packet.clone();
        copy.header.ssrc = self.ssrc;
        copy.header.payload_type = pt as u8;
        if self.local.write_rtp(copy).await.is_ok() {
            counters.packets_forwarded.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.forward_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads the RTCP a subscriber sends about one forwarded track and relays keyframe requests to
/// the publisher. Ends when the track is removed or the connection closes.
pub(crate) async fn relay_subscriber_rtcp(local: Arc<TrackLocalStaticRTP>, source: Weak<UpTrack>) {
    while let Some(event) = local.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        let wants_keyframe = packets.iter().any(|p| {
            let any = p.as_any();
            any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
        });
        if wants_keyframe {
            match source.upgrade() {
                Some(up) => up.request_keyframe(),
                None => return,
            }
        }
    }
}

/// Strips what must not be forwarded as is and undoes RTX. Returns false to drop the packet.
///
/// Header extensions are negotiated per connection (ids differ), so they are removed
/// (pitfall 4). A packet on another SSRC than the media one is RTX (the only other
/// payload negotiated): its first two payload bytes are the original sequence number.
#[inline]
fn normalise(packet: &mut rtp::Packet, media_ssrc: u32, media_pt: u8) -> bool {
    if packet.header.ssrc != media_ssrc {
        if packet.payload.len() < 2 {
            return false; // RTX padding (bandwidth probe): nothing to forward
        }
        let osn = u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
        packet.header.sequence_number = osn;
        packet.header.ssrc = media_ssrc;
        packet.header.payload_type = media_pt;
        packet.payload = packet.payload.slice(2..);
    }
    if packet.header.extension {
        packet.header.extension = false;
        packet.header.extension_profile = 0;
        packet.header.extensions.clear();
        packet.header.extensions_padding = 0;
    }
    true
}

/// The forwarding loop of one published track: runs until the track ends or the publisher's
/// connection closes. Holds no strong reference to any connection.
pub(crate) async fn forward_track(
    up: Arc<UpTrack>,
    remote: Arc<dyn TrackRemote>,
    mut tap: Option<Box<dyn PacketTap>>,
    first: Vec<rtp::Packet>,
) {
    let counters = Arc::clone(&up.counters);
    let media_ssrc = up.info.ssrc;
    let media_pt = up.info.payload_type;
    let mut generation = up.generation.load(Ordering::Acquire);
    let mut subs = up.snapshot();

    let mut pending = first.into_iter();
    loop {
        let event = match pending.next() {
            Some(p) => TrackRemoteEvent::OnRtpPacket(p),
            None => match remote.poll().await {
                Some(e) => e,
                None => break,
            },
        };
        match event {
            TrackRemoteEvent::OnRtpPacket(mut packet) => {
                let arrival = Instant::now();
                if !normalise(&mut packet, media_ssrc, media_pt) {
                    continue;
                }
                counters.packets_received.fetch_add(1, Ordering::Relaxed);
                if let Some(tap) = tap.as_mut() {
                    tap.on_rtp(&packet, arrival);
                }
                let g = up.generation.load(Ordering::Acquire);
                if g != generation {
                    generation = g;
                    subs = up.snapshot();
                }
                for down in subs.iter() {
                    down.forward(&packet, &counters).await;
                }
            }
            TrackRemoteEvent::OnRtcpPacket(packets) => {
                if let Some(tap) = tap.as_mut() {
                    let arrival = Instant::now();
                    for p in &packets {
                        if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                            tap.on_sender_report(sr, arrival);
                        }
                    }
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    if let Some(tap) = tap.as_mut() {
        tap.on_end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_inside_the_interval_are_deferred_once() {
        let l = KeyframeLimiter::new(Duration::from_millis(500));
        let t0 = Instant::now();
        assert!(matches!(l.admit(t0), Admit::Now));
        assert!(matches!(l.admit(t0 + Duration::from_millis(100)), Admit::After(d) if d == Duration::from_millis(400)));
        assert!(matches!(l.admit(t0 + Duration::from_millis(200)), Admit::AlreadyDeferred));
        l.deferred_sent(t0 + Duration::from_millis(500));
        assert!(matches!(l.admit(t0 + Duration::from_millis(1000)), Admit::Now));
    }

    #[test]
    fn rtx_is_unwrapped_and_extensions_stripped() {
        let mut p = rtp::Packet {
            header: rtp::header::Header {
                ssrc: 7,
                payload_type: 97,
                sequence_number: 900,
                extension: true,
                extension_profile: 0xBEDE,
                extensions: vec![rtp::header::Extension {
                    id: 1,
                    payload: bytes::Bytes::from_static(&[1]),
                }],
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0x01, 0x02, 0xAA]),
        };
        assert!(normalise(&mut p, 5, 96));
        assert_eq!(p.header.ssrc, 5);
        assert_eq!(p.header.payload_type, 96);
        assert_eq!(p.header.sequence_number, 0x0102);
        assert_eq!(&p.payload[..], &[0xAA]);
        assert!(!p.header.extension && p.header.extensions.is_empty());

        let mut probe = rtp::Packet {
            header: rtp::header::Header { ssrc: 7, ..Default::default() },
            payload: bytes::Bytes::new(),
        };
        assert!(!normalise(&mut probe, 5, 96));
    }
}
