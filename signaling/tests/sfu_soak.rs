//! Soak: hundreds of join/leave cycles leave the relay's open files and memory flat
//! (WEBRTC-NOTES pitfall 9: reference cycles between a connection and its tasks).

mod sfu_support;

use std::time::Duration;

use sfu_support::{Client, MediaProfile};
use signaling::sfu::{Relay, RelayConfig};
use uuid::Uuid;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4
}

/// One call: two participants negotiate (and with `media`, connect and exchange media), leave.
async fn cycle(relay: &Relay, media: bool) {
    let call = Uuid::new_v4();
    let a = Client::join(relay, call, MediaProfile::default()).await;
    let b = Client::join(relay, call, MediaProfile::default()).await;
    if media {
        let from = a.id;
        b.wait_until(Duration::from_secs(8), "media in a soak cycle", |c| {
            c.received_from(from).video_packets > 0
        })
        .await;
    }
    a.leave().await;
    b.leave().await;
}

/// Ten calls at once, each negotiated and torn down before or while connecting.
async fn quick_round(relay: &Relay) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let relay = relay.clone();
        set.spawn(async move { cycle(&relay, false).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("cycle");
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_join_leave_cycles_leave_fds_and_memory_flat() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let relay = Relay::new(RelayConfig::default());
        // Warm up allocator pools and lazily created runtime state, at the same peak
        // concurrency as the quick rounds below.
        for _ in 0..5 {
            cycle(&relay, true).await;
        }
        quick_round(&relay).await;
        settle().await;
        let (fds0, rss0) = (open_fds(), rss_kib());

        // 300 quick cycles (negotiated, torn down before or while connecting) ...
        let rounds: usize = std::env::var("SFU_SOAK_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
        for round in 0..rounds {
            quick_round(&relay).await;
            assert_eq!(relay.call_count(), 0, "round {round}");
        }
        // ... and 30 with media flowing.
        for _ in 0..rounds {
            cycle(&relay, true).await;
        }
        settle().await;
        let mut alive = relay.stats().connections_alive;
        for _ in 0..50 {
            if alive == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            alive = relay.stats().connections_alive;
        }
        assert_eq!(alive, 0, "every participant connection object was freed");
        let (fds1, rss1) = (open_fds(), rss_kib());
        eprintln!("soak: fds {fds0} -> {fds1}, rss {rss0} KiB -> {rss1} KiB");
        assert_eq!(relay.call_count(), 0);
        assert!(fds1 <= fds0 + 4, "open files grew: {fds0} -> {fds1}");
        // 660 connections of ~200 KB each would be ~130 MB if they leaked; allow allocator slack.
        assert!(rss1 < rss0 + 16 * 1024, "memory grew: {rss0} KiB -> {rss1} KiB");
    })
    .await
    .expect("soak exceeded its time limit");
}
