//! Calls end to end (issue 3, "Tests"): the real server on port 0 and real SDK clients
//! exchanging real media over loopback. Run inside a loopback-only network namespace (see
//! `scripts/test`); every test is bounded by a timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use client_sdk::{
    Call, CallConfig, CallEvent, CallId, EndCause, EndReason, ErrorCode, LeaveReason,
    ReconnectCause, Scenario, VideoSource,
};
use futures_util::{SinkExt, StreamExt};
use integration_tests::party::{open_call, sign_in, wait_for, Party};
use integration_tests::{spawn_app, spawn_app_on, Backend, TestApp};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Tests that measure the whole process (open files) run alone; the others share.
static GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn config(app: &TestApp, token: &str, call: CallId) -> CallConfig {
    CallConfig::new(&app.base, token, call).with_video(Some(VideoSource::TestPattern {
        fps: 30,
        bitrate: 150_000,
    }))
}

/// The usual cast: agent.li and resident 13800000001 in a new call.
struct Cast {
    call: CallId,
    agent_token: String,
    resident_token: String,
}

async fn cast(app: &TestApp) -> Cast {
    let (agent_token, _) = sign_in(app, "agent.li").await;
    let (resident_token, resident_id) = sign_in(app, "13800000001").await;
    let call = open_call(app, &agent_token, &resident_id).await;
    Cast {
        call,
        agent_token,
        resident_token,
    }
}

const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_party_call_exchanges_audio_video_keyframes_and_chat() {
    let _gate = GATE.read().await;
    tokio::time::timeout(Duration::from_secs(30), async {
        let app = spawn_app().await;
        let c = cast(&app).await;
        let resident = Party::join(config(&app, &c.resident_token, c.call)).await;
        let agent = Party::join(config(&app, &c.agent_token, c.call)).await;

        wait_for(LIMIT, "both sides receive audio, video and a keyframe", || {
            resident.receives_media_from(&agent) && agent.receives_media_from(&resident)
        })
        .await;
        let notice = resident
            .seen
            .recording_notice
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default();
        assert!(
            notice.contains("录"),
            "the recording notice reaches the client: {notice:?}"
        );
        assert!(
            resident.saw("ParticipantJoined"),
            "the resident is told the agent joined:\n{}",
            resident.events()
        );

        agent.call().send_chat("请出示身份证正面。").await.expect("agent chat");
        resident
            .call()
            .send_chat("好的，马上拍。")
            .await
            .expect("resident chat");
        wait_for(LIMIT, "chat delivered both ways", || {
            resident.chats().contains(&("请出示身份证正面。".into(), false))
                && agent.chats().contains(&("好的，马上拍。".into(), false))
        })
        .await;
        assert!(
            agent.chats().contains(&("请出示身份证正面。".into(), true)),
            "the sender gets its own copy"
        );

        let err = resident.call().end().await.expect_err("a resident cannot end the call");
        assert_eq!(err.code(), Some(ErrorCode::Forbidden));
        assert!(!err.is_retryable());

        agent.call().end().await.expect("the agent ends the call");
        wait_for(LIMIT, "both are told the call ended", || {
            [&agent, &resident].iter().all(|p| {
                matches!(
                    *p.seen.ended.lock().unwrap(),
                    Some(EndCause::CallEnded {
                        reason: EndReason::HungUp,
                        ..
                    })
                )
            })
        })
        .await;
    })
    .await
    .expect("test exceeded its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helper_invited_into_a_running_call_exchanges_media_with_both_after_renegotiation() {
    let _gate = GATE.read().await;
    tokio::time::timeout(Duration::from_secs(40), async {
        let app = spawn_app().await;
        let c = cast(&app).await;
        let resident = Party::join(config(&app, &c.resident_token, c.call)).await;
        let agent = Party::join(config(&app, &c.agent_token, c.call)).await;
        wait_for(LIMIT, "the two-party call runs", || {
            resident.receives_media_from(&agent) && agent.receives_media_from(&resident)
        })
        .await;

        let (helper_token, helper_id) = sign_in(&app, "helper.zhao").await;
        let r = app
            .call(
                "POST",
                &format!("/api/v1/calls/{}/members", c.call),
                Some(&c.agent_token),
                Some(json!({"staff_id": helper_id, "role": "helper"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let helper = Party::join(config(&app, &helper_token, c.call)).await;

        let parties = [&resident, &agent, &helper];
        wait_for(
            Duration::from_secs(20),
            "all three receive each other's audio and video",
            || {
                parties.iter().all(|a| {
                    parties
                        .iter()
                        .filter(|b| a.id != b.id)
                        .all(|b| a.receives_media_from(b))
                })
            },
        )
        .await;
        assert!(agent.saw("ParticipantJoined"), "the agent is told the helper joined");
    })
    .await
    .expect("test exceeded its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_resumes_within_five_seconds_without_losing_media_or_chat() {
    let _gate = GATE.read().await;
    tokio::time::timeout(Duration::from_secs(40), async {
        let app = spawn_app().await;
        let c = cast(&app).await;
        let resident = Party::join(config(&app, &c.resident_token, c.call)).await;
        let agent = Party::join(config(&app, &c.agent_token, c.call)).await;
        wait_for(LIMIT, "media flows", || {
            resident.receives_media_from(&agent) && agent.receives_media_from(&resident)
        })
        .await;

        let dropped_at = Instant::now();
        resident.call().simulate(Scenario::SignalDrop).await.unwrap();
        // Sent while the resident's socket is down: must reach it by replay, exactly once.
        agent.call().send_chat("还在吗？").await.expect("agent chat");
        // Sent by the resident while it is down: queued, delivered after the resume.
        let resident_chat = resident.call().send_chat("网络刚才断了");
        tokio::time::timeout(Duration::from_secs(5), resident_chat)
            .await
            .expect("resident chat within 5 s")
            .expect("delivered");
        wait_for(Duration::from_secs(5), "the resident resumes", || {
            resident.saw(&format!(
                "{:?}",
                CallEvent::Reconnected {
                    cause: ReconnectCause::Signal,
                    resumed: true
                }
            ))
        })
        .await;
        assert!(
            dropped_at.elapsed() < Duration::from_secs(5),
            "resumed within 5 s: {:?}",
            dropped_at.elapsed()
        );
        assert!(resident.saw("Reconnecting"), "{}", resident.events());

        wait_for(LIMIT, "chat sent meanwhile arrives both ways", || {
            resident.chats().iter().any(|(t, _)| t == "还在吗？")
                && agent.chats().iter().any(|(t, _)| t == "网络刚才断了")
        })
        .await;
        let copies = resident.chats().iter().filter(|(t, _)| t == "还在吗？").count();
        assert_eq!(copies, 1, "delivered exactly once");

        let (a0, r0) = (agent.from(&resident), resident.from(&agent));
        wait_for(LIMIT, "media keeps flowing after the resume", || {
            agent.from(&resident).video > a0.video + 30 && resident.from(&agent).video > r0.video + 30
        })
        .await;

        // A network change: the SDK asks for an ICE restart; media goes on.
        resident.call().simulate(Scenario::IceRestart).await.unwrap();
        let a1 = agent.from(&resident);
        wait_for(LIMIT, "media flows after an ICE restart", || {
            agent.from(&resident).video > a1.video + 30
        })
        .await;
        assert!(resident.seen.ended.lock().unwrap().is_none(), "{}", resident.events());
    })
    .await
    .expect("test exceeded its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_never_comes_back_is_removed_after_the_grace_period() {
    let _gate = GATE.read().await;
    tokio::time::timeout(Duration::from_secs(30), async {
        let app = spawn_app_on(Backend::Sqlite, |s| s.reconnect_grace_secs = 2).await;
        let c = cast(&app).await;
        let resident = Party::join(config(&app, &c.resident_token, c.call)).await;
        let agent = Party::join(config(&app, &c.agent_token, c.call)).await;
        wait_for(LIMIT, "media flows", || agent.receives_media_from(&resident)).await;

        let gone_at = Instant::now();
        resident.call().simulate(Scenario::Vanish).await.unwrap();
        wait_for(
            Duration::from_secs(5),
            "the agent sees the resident reconnecting",
            || agent.saw("ParticipantReconnecting"),
        )
        .await;
        wait_for(
            Duration::from_secs(8),
            "the agent is told the resident timed out",
            || {
                agent
                    .seen
                    .left
                    .lock()
                    .unwrap()
                    .contains(&(resident.id, LeaveReason::TimedOut))
            },
        )
        .await;
        let after = gone_at.elapsed();
        assert!(
            after >= Duration::from_millis(1500),
            "not before the grace period: {after:?}"
        );
        let call = *c.call.as_uuid();
        wait_for(Duration::from_secs(5), "the relay lets the resident go", || {
            app.state.signaling.hub.relay().participant_count(call) == 1
        })
        .await;
        assert_eq!(app.state.signaling.hub.participant_count(call), 1);
    })
    .await
    .expect("test exceeded its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_resume_window_ends_in_a_full_rejoin_with_media_again() {
    let _gate = GATE.read().await;
    tokio::time::timeout(Duration::from_secs(30), async {
        let app = spawn_app_on(Backend::Sqlite, |s| s.resume_window_secs = 1).await;
        let c = cast(&app).await;
        let resident = Party::join(config(&app, &c.resident_token, c.call)).await;
        let agent = Party::join(config(&app, &c.agent_token, c.call)).await;
        wait_for(LIMIT, "media flows", || {
            agent.receives_media_from(&resident) && resident.receives_media_from(&agent)
        })
        .await;

        resident
            .call()
            .simulate(Scenario::SignalOutage(Duration::from_millis(2500)))
            .await
            .unwrap();
        wait_for(LIMIT, "the resident joins again", || {
            resident.saw(&format!(
                "{:?}",
                CallEvent::Reconnected {
                    cause: ReconnectCause::Signal,
                    resumed: false
                }
            ))
        })
        .await;
        let (a0, r0) = (agent.from(&resident), resident.from(&agent));
        wait_for(LIMIT, "media flows both ways on the new connection", || {
            agent.from(&resident).video > a0.video + 30 && resident.from(&agent).video > r0.video + 30
        })
        .await;
        agent.call().send_chat("回来了").await.unwrap();
        wait_for(LIMIT, "chat after the rejoin", || {
            resident.chats().iter().any(|(t, _)| t == "回来了")
        })
        .await;
        assert!(resident.seen.ended.lock().unwrap().is_none(), "{}", resident.events());
    })
    .await
    .expect("test exceeded its time limit");
}

// --- refusals over a raw WebSocket --------------------------------------------------------

type RawWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_ws(app: &TestApp) -> RawWs {
    let url = format!("ws://{}/ws", app.addr);
    tokio_tungstenite::connect_async(url).await.expect("websocket").0
}

async fn send(ws: &mut RawWs, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next server message of type `ty` (others are skipped), within 5 s.
async fn expect_type(ws: &mut RawWs, ty: &str) -> Value {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
                    if v["type"] == ty {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended while waiting for {ty}: {other:?}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {ty} within 5 s"))
}

async fn expect_error(ws: &mut RawWs, code: &str, reply_to: u64) {
    let e = expect_type(ws, "error").await;
    assert_eq!(e["code"], code, "{e}");
    assert_eq!(e["reply_to"], reply_to, "{e}");
}

/// The socket still works: a ping is answered.
async fn healthy(ws: &mut RawWs) {
    send(ws, json!({"type": "ping", "ts": 7})).await;
    assert_eq!(expect_type(ws, "pong").await["ts"], 7);
}

async fn hello(ws: &mut RawWs, token: &str) {
    send(ws, json!({"type": "hello", "protocol_version": 1, "token": token})).await;
    expect_type(ws, "welcome").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_get_their_error_code_and_the_connection_and_call_stay_healthy() {
    let _gate = GATE.read().await;
    tokio::time::timeout(Duration::from_secs(30), async {
        let app = spawn_app().await;
        let c = cast(&app).await;
        let agent = Party::join(config(&app, &c.agent_token, c.call)).await;
        let call = c.call.to_string();

        // A resident who is not a member of this call.
        let (other_token, _) = sign_in(&app, "13800000002").await;
        let mut ws = raw_ws(&app).await;
        hello(&mut ws, &other_token).await;
        send(&mut ws, json!({"id": 1, "type": "join", "call_id": call})).await;
        expect_error(&mut ws, "forbidden", 1).await;
        healthy(&mut ws).await;

        // The call's resident asking for the agent's role; then joining properly.
        let mut ws = raw_ws(&app).await;
        hello(&mut ws, &c.resident_token).await;
        send(
            &mut ws,
            json!({"id": 1, "type": "join", "call_id": call, "role": "agent"}),
        )
        .await;
        expect_error(&mut ws, "forbidden", 1).await;
        send(&mut ws, json!({"id": 2, "type": "join", "call_id": call})).await;
        assert_eq!(expect_type(&mut ws, "joined").await["reply_to"], 2);

        // An answer when no offer was made.
        let answer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        send(
            &mut ws,
            json!({"id": 3, "type": "sdp_answer", "call_id": call, "description": {"type": "answer", "sdp": answer}}),
        )
        .await;
        expect_error(&mut ws, "out_of_order", 3).await;
        // A type nobody knows.
        send(&mut ws, json!({"id": 4, "type": "teleport", "call_id": call})).await;
        expect_error(&mut ws, "unknown_type", 4).await;
        // One megabyte.
        let big = "好".repeat(350_000);
        send(
            &mut ws,
            json!({"id": 5, "type": "chat_send", "call_id": call, "text": big}),
        )
        .await;
        let e = expect_type(&mut ws, "error").await;
        assert_eq!(e["code"], "message_too_large", "{e}");
        healthy(&mut ws).await;

        // The call is healthy: chat between the agent (SDK) and the raw resident works.
        agent.call().send_chat("能听到吗？").await.expect("chat");
        let chat = expect_type(&mut ws, "chat").await;
        assert_eq!(chat["text"], "能听到吗？");
        send(
            &mut ws,
            json!({"id": 6, "type": "chat_send", "call_id": call, "text": "能"}),
        )
        .await;
        assert_eq!(expect_type(&mut ws, "chat").await["reply_to"], 6);
        wait_for(LIMIT, "the agent gets the resident's chat", || {
            agent.chats().contains(&("能".into(), false))
        })
        .await;

        // An expired token: refused; a fresh one on the same socket works.
        let (stale, _) = sign_in(&app, "agent.wang").await;
        app.clock.advance_ms(16 * 60 * 1000);
        let mut ws = raw_ws(&app).await;
        send(
            &mut ws,
            json!({"id": 1, "type": "hello", "protocol_version": 1, "token": stale}),
        )
        .await;
        expect_error(&mut ws, "token_expired", 1).await;
        let (fresh, _) = sign_in(&app, "agent.wang").await;
        hello(&mut ws, &fresh).await;
        healthy(&mut ws).await;

        assert!(agent.seen.ended.lock().unwrap().is_none(), "{}", agent.events());
        let live = app.call("GET", "/livez", None, None).await;
        assert_eq!(live.status, 200, "the server is still up");
    })
    .await
    .expect("test exceeded its time limit");
}

// --- soak -----------------------------------------------------------------------------------

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

async fn join_leave(app: &TestApp, token: &str, call: CallId) {
    let cfg = config(app, token, call);
    let (call, mut events) = Call::join(cfg).await.expect("join");
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    call.leave().await.expect("leave");
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("the event stream ends after leave")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_join_leave_cycles_leave_no_connections_or_files_behind() {
    let _gate = GATE.write().await;
    tokio::time::timeout(Duration::from_secs(50), async {
        let app = spawn_app().await;
        let (agent_token, _) = sign_in(&app, "agent.li").await;
        let mut lanes = Vec::new();
        for phone in ["13800000001", "13800000002", "13800000003"] {
            let (token, id) = sign_in(&app, phone).await;
            let call = open_call(&app, &agent_token, &id).await;
            lanes.push((token, call));
        }
        // Warm up lazily created runtime state.
        for (token, call) in &lanes {
            join_leave(&app, token, *call).await;
        }
        let relay = app.state.signaling.hub.relay().clone();
        wait_for(Duration::from_secs(5), "warm-up connections freed", || {
            relay.stats().connections_alive == 0
        })
        .await;
        let fds0 = open_fds();

        let app = Arc::new(app);
        let cycles = 200;
        let mut set = tokio::task::JoinSet::new();
        for (lane, (token, call)) in lanes.iter().enumerate() {
            let (app, token, call) = (app.clone(), token.clone(), *call);
            let n = cycles / 3 + usize::from(lane < cycles % 3);
            set.spawn(async move {
                for _ in 0..n {
                    join_leave(&app, &token, call).await;
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("a lane of cycles");
        }

        wait_for(Duration::from_secs(10), "every relay connection freed", || {
            relay.stats().connections_alive == 0
        })
        .await;
        assert_eq!(relay.call_count(), 0);
        for (_, call) in &lanes {
            assert_eq!(relay.participant_count(*call.as_uuid()), 0);
            assert_eq!(app.state.signaling.hub.participant_count(*call.as_uuid()), 0);
        }
        // Sockets close asynchronously; give them a moment. The slack covers another test of
        // this binary building its runtime (a few fds) while it waits for the gate; a leak
        // would be at least two fds per cycle, hundreds in all.
        const SLACK: usize = 16;
        let mut fds1 = open_fds();
        for _ in 0..50 {
            if fds1 <= fds0 + SLACK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            fds1 = open_fds();
        }
        eprintln!("soak: {cycles} cycles, fds {fds0} -> {fds1}");
        assert!(fds1 <= fds0 + SLACK, "open files grew: {fds0} -> {fds1}");
    })
    .await
    .expect("soak exceeded its time limit");
}
