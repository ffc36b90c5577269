//! The media relay with real webrtc-rs clients on 127.0.0.1 (issue 3, "Media relay").
//!
//! Run inside a loopback-only network namespace:
//! `unshare -n sh -c 'ip link set lo up && cargo test -p signaling --test sfu_media'`.

mod sfu_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtp;
use sfu_support::{Client, MediaProfile, TEST_LIMIT};
use signaling::sfu::{PacketTap, Relay, RelayConfig, TapFactory, TrackInfo};
use uuid::Uuid;

const MEDIA_WAIT: Duration = Duration::from_secs(8);

fn relay() -> Relay {
    Relay::new(RelayConfig::default())
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f).await.expect("test exceeded its time limit");
}

/// Waits until `client` has received audio, video and a keyframe from `from`.
async fn expect_media(client: &Client, from: Uuid, who: &str) {
    client
        .wait_until(MEDIA_WAIT, who, |c| {
            let r = c.received_from(from);
            r.audio_packets >= 10 && r.video_packets >= 10 && r.video_keyframes >= 1
        })
        .await;
    let errors = client.state.pump_errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{who}: negotiation errors {errors:?}");
}

/// Media keeps arriving: `at_least` more video packets from `from` within the wait.
async fn expect_more_media(client: &Client, from: Uuid, at_least: u64, who: &str) {
    let base = client.received_from(from);
    client
        .wait_until(MEDIA_WAIT, who, |c| {
            let r = c.received_from(from);
            r.video_packets >= base.video_packets + at_least
                && r.audio_packets >= base.audio_packets + at_least
        })
        .await;
}

#[derive(Default)]
struct TapLog {
    opened: Mutex<Vec<TrackInfo>>,
    packets: AtomicU64,
    first_seq_per_ssrc: Mutex<Vec<(u32, u16)>>,
    ended: AtomicU64,
}

struct CountingTap {
    log: Arc<TapLog>,
    first: bool,
}

impl PacketTap for CountingTap {
    fn on_rtp(&mut self, packet: &rtp::Packet, _arrival: Instant) {
        if self.first {
            self.first = false;
            self.log
                .first_seq_per_ssrc
                .lock()
                .unwrap()
                .push((packet.header.ssrc, packet.header.sequence_number));
        }
        self.log.packets.fetch_add(1, Ordering::Relaxed);
    }
    fn on_end(&mut self) {
        self.log.ended.fetch_add(1, Ordering::Relaxed);
    }
}

struct Factory(Arc<TapLog>);

impl TapFactory for Factory {
    fn open(&self, track: &TrackInfo) -> Option<Box<dyn PacketTap>> {
        self.0.opened.lock().unwrap().push(track.clone());
        Some(Box::new(CountingTap { log: Arc::clone(&self.0), first: true }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_party_call_both_sides_receive_audio_video_and_a_keyframe() {
    bounded(async {
        let log = Arc::new(TapLog::default());
        let relay = Relay::new(RelayConfig {
            tap: Some(Arc::new(Factory(Arc::clone(&log)))),
            ..RelayConfig::default()
        });
        let call = Uuid::new_v4();
        let resident = Client::join(&relay, call, MediaProfile::default()).await;
        let agent = Client::join(&relay, call, MediaProfile::default()).await;

        expect_media(&agent, resident.id, "agent receives the resident").await;
        expect_media(&resident, agent.id, "resident receives the agent").await;
        // Clients send keyframes only on request: these came through the relay's PLI path.
        assert!(resident.state.keyframe_requests.load(Ordering::Relaxed) >= 1);
        assert!(agent.state.keyframe_requests.load(Ordering::Relaxed) >= 1);
        assert!(relay.stats().keyframe_requests >= 2);

        // The tap saw all four tracks, with codec details, and every packet the relay took in.
        let opened = log.opened.lock().unwrap().clone();
        assert_eq!(opened.len(), 4, "{opened:?}");
        assert!(opened.iter().any(|t| t.mime_type.eq_ignore_ascii_case("video/VP8") && t.clock_rate == 90_000));
        assert!(opened.iter().any(|t| t.mime_type.eq_ignore_ascii_case("audio/opus") && t.clock_rate == 48_000));
        assert!(opened.iter().all(|t| t.call_id == call));
        assert_eq!(log.packets.load(Ordering::Relaxed), relay.stats().packets_received);

        resident.leave().await;
        agent.leave().await;
        assert_eq!(relay.call_count(), 0);
        // Forwarding tasks end with the connections and close their taps.
        let start = Instant::now();
        while log.ended.load(Ordering::Relaxed) < 4 && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(log.ended.load(Ordering::Relaxed), 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helper_joining_a_running_call_receives_and_is_received_by_both() {
    bounded(async {
        let relay = relay();
        let call = Uuid::new_v4();
        let resident = Client::join(&relay, call, MediaProfile::default()).await;
        let agent = Client::join(&relay, call, MediaProfile::default()).await;
        expect_media(&agent, resident.id, "agent receives the resident").await;
        expect_media(&resident, agent.id, "resident receives the agent").await;
        let offers_before = resident.state.offers_from_relay.load(Ordering::Relaxed);

        let helper = Client::join(&relay, call, MediaProfile::default()).await;
        expect_media(&helper, resident.id, "helper receives the resident").await;
        expect_media(&helper, agent.id, "helper receives the agent").await;
        expect_media(&resident, helper.id, "resident receives the helper").await;
        expect_media(&agent, helper.id, "agent receives the helper").await;
        // The running call was renegotiated, not rebuilt, and kept flowing.
        assert!(resident.state.offers_from_relay.load(Ordering::Relaxed) > offers_before);
        expect_more_media(&resident, agent.id, 20, "resident still receives the agent").await;
        assert_eq!(relay.participant_count(call), 3);

        helper.leave().await;
        agent.leave().await;
        resident.leave().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_from_either_side_keeps_media_flowing() {
    bounded(async {
        let relay = relay();
        let call = Uuid::new_v4();
        let resident = Client::join(&relay, call, MediaProfile::default()).await;
        let agent = Client::join(&relay, call, MediaProfile::default()).await;
        expect_media(&agent, resident.id, "agent receives the resident").await;
        expect_media(&resident, agent.id, "resident receives the agent").await;

        // Relay-initiated: an offer with new ICE credentials, answered by the client.
        let offers = resident.state.offers_from_relay.load(Ordering::Relaxed);
        let ufrag_before = ice_ufrag(&resident).await;
        resident.participant.restart_ice().await.unwrap();
        resident
            .wait_until(MEDIA_WAIT, "the restart offer", |c| {
                c.state.offers_from_relay.load(Ordering::Relaxed) > offers
            })
            .await;
        let mut ufrag_after = ice_ufrag(&resident).await;
        let start = Instant::now();
        while ufrag_after == ufrag_before && start.elapsed() < MEDIA_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ufrag_after = ice_ufrag(&resident).await;
        }
        assert_ne!(ufrag_before, ufrag_after, "the relay's ICE credentials changed");
        expect_more_media(&agent, resident.id, 30, "agent receives the resident after a relay restart").await;
        expect_more_media(&resident, agent.id, 30, "resident receives the agent after a relay restart").await;

        // Client-initiated (the resident's network changed).
        resident.restart_ice_from_client().await;
        expect_more_media(&agent, resident.id, 30, "agent receives the resident after a client restart").await;
        expect_more_media(&resident, agent.id, 30, "resident receives the agent after a client restart").await;

        resident.leave().await;
        agent.leave().await;
    })
    .await;
}

/// The relay's ICE ufrag as the client sees it.
async fn ice_ufrag(client: &Client) -> String {
    let desc = client.pc.remote_description().await.expect("remote description");
    desc.sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_leaving_renegotiates_the_others_and_media_continues() {
    bounded(async {
        let relay = relay();
        let call = Uuid::new_v4();
        let resident = Client::join(&relay, call, MediaProfile::default()).await;
        let agent = Client::join(&relay, call, MediaProfile::default()).await;
        let helper = Client::join(&relay, call, MediaProfile::default()).await;
        expect_media(&resident, helper.id, "resident receives the helper").await;
        expect_media(&agent, helper.id, "agent receives the helper").await;
        expect_media(&resident, agent.id, "resident receives the agent").await;
        expect_media(&agent, resident.id, "agent receives the resident").await;

        // Let any renegotiation from the joins settle before counting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r_offers = resident.state.offers_from_relay.load(Ordering::Relaxed);
        let a_offers = agent.state.offers_from_relay.load(Ordering::Relaxed);
        let helper_id = helper.id;
        helper.leave().await;

        resident
            .wait_until(MEDIA_WAIT, "resident gets an offer without the helper", |c| {
                c.state.offers_from_relay.load(Ordering::Relaxed) > r_offers
            })
            .await;
        agent
            .wait_until(MEDIA_WAIT, "agent gets an offer without the helper", |c| {
                c.state.offers_from_relay.load(Ordering::Relaxed) > a_offers
            })
            .await;
        // The helper's media stopped; the others' continues.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped = resident.received_from(helper_id).video_packets;
        expect_more_media(&resident, agent.id, 30, "resident still receives the agent").await;
        expect_more_media(&agent, resident.id, 30, "agent still receives the resident").await;
        assert_eq!(resident.received_from(helper_id).video_packets, stopped);
        assert_eq!(relay.participant_count(call), 2);

        resident.leave().await;
        agent.leave().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_join_replaces_the_old_connection() {
    bounded(async {
        let relay = relay();
        let call = Uuid::new_v4();
        let id = Uuid::new_v4();
        let agent = Client::join(&relay, call, MediaProfile::default()).await;
        let first = Client::join_as(&relay, call, id, MediaProfile::default()).await;
        expect_media(&agent, id, "agent receives the first connection").await;
        let second = Client::join_as(&relay, call, id, MediaProfile::default()).await;
        first
            .wait_until(MEDIA_WAIT, "the first connection is told it was closed", |c| {
                c.state.closed_event.load(Ordering::Acquire)
            })
            .await;
        assert_eq!(relay.participant_count(call), 2);
        expect_media(&second, agent.id, "the new connection receives the agent").await;
        expect_more_media(&agent, id, 30, "agent receives the new connection").await;
        drop(first);
        second.leave().await;
        agent.leave().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_an_offer_is_refused_and_the_call_stays_healthy() {
    bounded(async {
        let relay = relay();
        let call = Uuid::new_v4();
        // Alone in the call, the resident is never sent a relay offer: nothing is outstanding.
        let resident = Client::join(&relay, call, MediaProfile::default()).await;
        resident
            .wait_until(MEDIA_WAIT, "the resident connects", |c| {
                c.state.connected.load(Ordering::Acquire)
            })
            .await;

        let own_offer = resident.pc.local_description().await.unwrap();
        let err = resident.participant.handle_answer(own_offer.clone()).await;
        assert!(
            matches!(err, Err(signaling::sfu::SfuError::UnexpectedDescription(_))),
            "an offer passed as an answer is refused: {err:?}"
        );
        let mut as_answer = own_offer;
        as_answer.sdp_type = rtc::peer_connection::sdp::RTCSdpType::Answer;
        let unexpected = resident.participant.handle_answer(as_answer).await;
        assert!(
            matches!(unexpected, Err(signaling::sfu::SfuError::UnexpectedDescription(_))),
            "an answer with no offer pending is refused: {unexpected:?}"
        );

        // The connection is still usable: the next participant's media flows both ways.
        let agent = Client::join(&relay, call, MediaProfile::default()).await;
        expect_media(&agent, resident.id, "agent receives the resident").await;
        expect_media(&resident, agent.id, "resident receives the agent").await;
        resident.leave().await;
        agent.leave().await;
    })
    .await;
}
