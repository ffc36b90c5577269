//! Queue and automatic dispatch (issue 5), black-box: the real server, REST for tickets, raw
//! WebSocket clients for offers, presence and pushes.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use client_sdk::{CallConfig, CallId, VideoSource};
use futures_util::{SinkExt, StreamExt};
use integration_tests::party::{wait_for, Party};
use integration_tests::{spawn_app, TestApp, T0_MS};
use serde_json::{json, Value};
use signaling::domain::clock::FakeClock;
use signaling::domain::identity::{Role, Username};
use signaling::domain::ids::StaffId;
use signaling::domain::people::Staff;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw signaling client.
struct Ws {
    socket: Socket,
    seen: VecDeque<Value>,
    next_id: u64,
}

const WAIT: Duration = Duration::from_secs(10);

impl Ws {
    async fn connect(addr: std::net::SocketAddr, token: &str) -> Ws {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("ws connects");
        let mut ws = Ws { socket, seen: VecDeque::new(), next_id: 1 };
        ws.send(json!({"type": "hello", "protocol_version": 1, "token": token})).await;
        ws.expect("welcome").await;
        ws
    }

    async fn send(&mut self, mut msg: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        msg["id"] = json!(id);
        self.socket.send(Message::Text(msg.to_string().into())).await.expect("ws send");
        id
    }

    /// The next message of type `ty` (others are kept for later `expect`s).
    async fn expect(&mut self, ty: &str) -> Value {
        self.try_expect(ty, WAIT).await.unwrap_or_else(|| panic!("no {ty} within {WAIT:?}; seen: {:?}", self.seen))
    }

    async fn try_expect(&mut self, ty: &str, wait: Duration) -> Option<Value> {
        if let Some(i) = self.seen.iter().position(|m| m["type"] == ty) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next()).await.ok()??;
            let Ok(Message::Text(t)) = frame else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
            if v["type"] == ty {
                return Some(v);
            }
            self.seen.push_back(v);
        }
    }

    /// A message of type `ty` whose `field` equals `value`.
    async fn expect_where(&mut self, ty: &str, field: &str, value: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut skipped = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_expect(ty, left).await {
                Some(m) if m[field] == value => break Some(m),
                Some(m) => skipped.push(m),
                None => break None,
            }
        };
        for m in skipped {
            self.seen.push_back(m);
        }
        found.unwrap_or_else(|| panic!("no {ty} with {field}={value}; seen {:?}", self.seen))
    }

    async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

async fn take(app: &TestApp, token: &str, body: Value, key: Option<&str>) -> integration_tests::Reply {
    let mut req = app.http.post(format!("{}/api/v1/queue/tickets", app.base)).bearer_auth(token).json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    integration_tests::Reply { status, body, content_type: String::new() }
}

async fn available(ws: &mut Ws) {
    ws.send(json!({"type": "set_presence", "status": "available"})).await;
    ws.expect_where("presence_update", "status", "available").await;
    ws.expect("ack").await;
}

/// A new agent with `skills`, and an access token (no password sign-in: it is tested elsewhere).
async fn new_agent(app: &TestApp, name: &str, skills: &[&str]) -> (StaffId, String) {
    let s = Staff {
        id: StaffId::new(),
        username: Username::parse(name).unwrap(),
        display_name: name.into(),
        role: Role::Agent,
        skills: skills.iter().map(|s| s.to_string()).collect(),
        grid_id: None,
        password_hash: "$argon2id$unused".into(),
        failed_logins: 0,
        locked_until: None,
        disabled: false,
        created_at: T0_MS,
    };
    app.state.store.insert_staff(&s).await.unwrap();
    (s.id, app.state.tokens.issue(s.id.0, Role::Agent, None, app.clock.now_ms_pub()))
}

trait NowPub {
    fn now_ms_pub(&self) -> i64;
}
impl NowPub for FakeClock {
    fn now_ms_pub(&self) -> i64 {
        signaling::domain::clock::Clock::now_ms(self)
    }
}

#[tokio::test]
async fn a_ticket_is_offered_accepted_and_both_sides_are_told_and_join() {
    let app = spawn_app().await;
    let resident = app.resident_login("13800000003").await;
    let r_token = resident["access_token"].as_str().unwrap().to_string();
    let mut r_ws = Ws::connect(app.addr, &r_token).await;

    let r = take(&app, &r_token, json!({"matter_code": "MI-001"}), Some("k1")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ticket_id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["ticket_no"], "B001", "medical insurance is B, first of the day");
    assert_eq!(r.body["state"], "waiting");
    assert_eq!(r.body["position"], 1);
    assert!(r.body["estimated_wait_s"].as_u64().unwrap() > 0);
    let u = r_ws.expect_where("ticket_update", "state", "waiting").await;
    assert_eq!(u["position"], 1);

    // agent.wang (citizen card, car quota) is not offered a medical-insurance ticket.
    let wang = app.staff_token("agent.wang").await;
    let mut wang_ws = Ws::connect(app.addr, &wang).await;
    available(&mut wang_ws).await;
    let li = app.staff_token("agent.li").await;
    let mut li_ws = Ws::connect(app.addr, &li).await;
    available(&mut li_ws).await;
    let offer = li_ws.expect("ticket_offer").await;
    assert_eq!(offer["ticket_id"], ticket_id.as_str());
    assert_eq!(offer["ticket_no"], "B001");
    assert_eq!(offer["matter"]["class"], "medical_insurance");
    assert_eq!(offer["resident"]["display_name"], "周*", "the name is masked");
    assert_eq!(offer["resident"]["channel"], "phone");
    assert_eq!(offer["expires_in_ms"], 20_000);
    assert!(wang_ws.try_expect("ticket_offer", Duration::from_millis(300)).await.is_none());
    r_ws.expect_where("ticket_update", "state", "offered").await;

    let id = li_ws.send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]})).await;
    let ack = li_ws.expect("ack").await;
    assert_eq!(ack["reply_to"], id);
    let assigned = li_ws.expect("call_assigned").await;
    assert_eq!(assigned["role"], "agent");
    assert_eq!(assigned["ticket_id"], ticket_id.as_str());
    let call_id = assigned["call_id"].as_str().unwrap().to_string();
    li_ws.expect_where("presence_update", "status", "on_call").await;

    let r_assigned = r_ws.expect("call_assigned").await;
    assert_eq!(r_assigned["call_id"], call_id.as_str());
    assert_eq!(r_assigned["role"], "resident");
    let in_call = r_ws.expect_where("ticket_update", "state", "in_call").await;
    assert_eq!(in_call["call_id"], call_id.as_str());

    // Both can join the call that was opened.
    li_ws.send(json!({"type": "join", "call_id": call_id})).await;
    li_ws.expect("joined").await;
    r_ws.send(json!({"type": "join", "call_id": call_id})).await;
    let joined = r_ws.expect("joined").await;
    assert_eq!(joined["participants"].as_array().unwrap().len(), 1, "the agent is there");

    // A second accept of the same offer is refused.
    li_ws.send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]})).await;
    assert_eq!(li_ws.expect("error").await["code"], "offer_expired");

    // The agent ends the call: wrap-up; back to available: done.
    li_ws.send(json!({"type": "end_call", "call_id": call_id})).await;
    li_ws.expect("call_ended").await;
    available(&mut li_ws).await;
    r_ws.expect_where("ticket_update", "state", "done").await;

    let events = app.call("GET", &format!("/api/v1/queue/tickets/{ticket_id}/events"), Some(&r_token), None).await;
    assert_eq!(events.status, 200);
    let path: Vec<(String, String)> = events.body.as_array().unwrap().iter()
        .map(|e| (e["to_state"].as_str().unwrap().to_string(), e["cause"].as_str().unwrap().to_string()))
        .collect();
    let expected = [("waiting", "taken"), ("offered", "offered"), ("in_call", "accepted"), ("wrap_up", "call_ended"), ("done", "wrap_up_done")];
    assert_eq!(path, expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());
    r_ws.close().await;
}

/// The whole path with real clients: a ticket is taken, offered, accepted, and the call the
/// queue opened carries real media between the resident's and the agent's SDK clients; when
/// the agent ends it, the ticket goes to wrap-up and then done. Loopback only (`scripts/test`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_becomes_a_call_with_media_between_sdk_clients() {
    let app = spawn_app().await;
    let r_token = app.resident_token("13800000003").await;
    let mut r_ws = Ws::connect(app.addr, &r_token).await;
    let t = take(&app, &r_token, json!({"matter_code": "MI-001"}), Some("media-1")).await;
    assert_eq!(t.status, 201, "{}", t.body);
    let li = app.staff_token("agent.li").await;
    let mut li_ws = Ws::connect(app.addr, &li).await;
    available(&mut li_ws).await;
    let offer = li_ws.expect("ticket_offer").await;
    assert_eq!(offer["ticket_id"], t.body["id"]);
    li_ws.send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]})).await;
    let assigned = li_ws.expect("call_assigned").await;
    let call_id: CallId = assigned["call_id"].as_str().unwrap().parse().unwrap();
    let r_assigned = r_ws.expect("call_assigned").await;
    assert_eq!(r_assigned["call_id"], assigned["call_id"]);

    // Both sides join the call the queue opened with the SDK and publish real media.
    let media = |token: &str| {
        CallConfig::new(&app.base, token, call_id).with_video(Some(VideoSource::TestPattern { fps: 30, bitrate: 150_000 }))
    };
    let agent = Party::join(media(&li)).await;
    let resident = Party::join(media(&r_token)).await;
    wait_for(Duration::from_secs(20), "audio, video and a keyframe both ways", || {
        agent.receives_media_from(&resident) && resident.receives_media_from(&agent)
    })
    .await;
    assert_eq!(
        app.call("GET", &format!("/api/v1/queue/tickets/{}", t.body["id"].as_str().unwrap()), Some(&r_token), None)
            .await
            .body["state"],
        "in_call"
    );

    // The agent ends the call from the SDK: wrap-up, then done once the agent is available.
    agent.call().end().await.expect("the agent ends the call");
    r_ws.expect_where("ticket_update", "state", "wrap_up").await;
    wait_for(Duration::from_secs(10), "the resident is told the call ended", || resident.seen.ended.lock().unwrap().is_some()).await;
    available(&mut li_ws).await;
    r_ws.expect_where("ticket_update", "state", "done").await;
}

#[tokio::test]
async fn retrying_a_take_does_not_make_a_second_ticket() {
    let app = spawn_app().await;
    let token = app.resident_token("13800000002").await;
    let a = take(&app, &token, json!({"matter_code": "CC-001"}), Some("retry-1")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["priority"], json!(["disabled"]));
    let b = take(&app, &token, json!({"matter_code": "CC-001"}), Some("retry-1")).await;
    assert_eq!(b.status, 200);
    assert_eq!(a.body["id"], b.body["id"]);
    // No key: the active ticket for the same matter is the natural dedupe.
    let c = take(&app, &token, json!({"matter_code": "CC-001"}), None).await;
    assert_eq!((c.status, &c.body["id"]), (200, &a.body["id"]));
    // Another matter is another ticket, numbered on its own counter.
    let d = take(&app, &token, json!({"matter_code": "SI-001"}), None).await;
    assert_eq!((d.status, d.body["ticket_no"].as_str().unwrap()), (201, "A001"));
    let mine = app.call("GET", "/api/v1/queue/tickets", Some(&token), None).await;
    assert_eq!(mine.body.as_array().unwrap().len(), 2);
    // Leave the queue.
    let id = a.body["id"].as_str().unwrap();
    let left = app.call("POST", &format!("/api/v1/queue/tickets/{id}/cancel"), Some(&token), None).await;
    assert_eq!((left.status, left.body["state"].as_str().unwrap()), (200, "abandoned"));
    // Agents cannot take tickets; residents cannot take for someone else.
    let agent = app.staff_token("agent.li").await;
    assert_eq!(take(&app, &agent, json!({"matter_code": "CC-001"}), None).await.status, 403);
    let other = take(&app, &token, json!({"matter_code": "CC-002", "resident_id": uuid::Uuid::now_v7()}), None).await;
    assert_eq!(other.status, 403);
}

/// Takes are committed in groups (one transaction for whatever is pending): retries of one
/// take that land in the same group still make one ticket, and other residents' takes in that
/// group each get their own ticket with its own number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takes_committed_together_keep_one_ticket_per_key_and_distinct_numbers() {
    let app = spawn_app().await;
    let same = app.resident_token("13800000002").await;
    let other = app.resident_token("13800000003").await;
    let mut requests = Vec::new();
    for i in 0..12 {
        let (token, key) = if i % 3 == 2 { (other.clone(), format!("other-{i}")) } else { (same.clone(), "same-key".to_string()) };
        let matter = if i % 3 == 2 { format!("SI-00{}", 1 + i / 3) } else { "SI-001".to_string() };
        let http = app.http.clone();
        let base = app.base.clone();
        requests.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/api/v1/queue/tickets"))
                .bearer_auth(&token)
                .header("Idempotency-Key", key)
                .json(&json!({"matter_code": matter}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut same_ids = HashSet::new();
    let mut numbers = HashSet::new();
    let mut created = 0;
    for (i, r) in requests.into_iter().enumerate() {
        let (status, body) = r.await.unwrap();
        assert!(status == 201 || status == 200, "{status}: {body}");
        created += usize::from(status == 201);
        numbers.insert(body["ticket_no"].as_str().unwrap().to_string());
        if i % 3 != 2 {
            same_ids.insert(body["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(same_ids.len(), 1, "eight retries of one take are one ticket");
    assert_eq!(created, 1 + 4, "one for the retried take, one per other take");
    assert_eq!(numbers.len(), 5, "every ticket has its own number: {numbers:?}");
    let mine = app.call("GET", "/api/v1/queue/tickets", Some(&same), None).await;
    assert_eq!(mine.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_agent_disconnecting_during_an_offer_hands_it_to_the_next_agent() {
    let app = spawn_app().await;
    let (_, first) = new_agent(&app, "agent.first", &["car_quota"]).await;
    let (_, second) = new_agent(&app, "agent.second", &["car_quota"]).await;
    let mut a = Ws::connect(app.addr, &first).await;
    available(&mut a).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut b = Ws::connect(app.addr, &second).await;
    available(&mut b).await;
    let token = app.resident_token("13800000003").await;
    let t = take(&app, &token, json!({"matter_code": "CQ-001"}), None).await;
    assert_eq!(t.status, 201, "{}", t.body);
    // The first agent (idle longest) gets it, then vanishes.
    let offer = a.expect("ticket_offer").await;
    assert_eq!(offer["ticket_id"], t.body["id"]);
    drop(a);
    let offer_b = b.expect("ticket_offer").await;
    assert_eq!(offer_b["ticket_id"], t.body["id"]);
    assert_ne!(offer_b["offer_id"], offer["offer_id"]);
    b.send(json!({"type": "accept_offer", "offer_id": offer_b["offer_id"]})).await;
    b.expect("call_assigned").await;
    let sup = app.staff_token("supervisor").await;
    let agents = app.call("GET", "/api/v1/queue/agents", Some(&sup), None).await;
    let statuses: HashSet<String> = agents.body.as_array().unwrap().iter().map(|a| a["status"].as_str().unwrap().to_string()).collect();
    assert!(statuses.contains("offline") && statuses.contains("on_call"), "{statuses:?}");
}

#[tokio::test]
async fn an_offer_left_to_expire_goes_to_the_next_agent_and_the_first_is_set_away() {
    let app = spawn_app().await;
    let (_, first) = new_agent(&app, "agent.slow", &["traffic"]).await;
    let (_, second) = new_agent(&app, "agent.quick", &["traffic"]).await;
    let mut a = Ws::connect(app.addr, &first).await;
    available(&mut a).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut b = Ws::connect(app.addr, &second).await;
    available(&mut b).await;
    let token = app.resident_token("13800000003").await;
    take(&app, &token, json!({"matter_code": "TR-001"}), None).await;
    let offer = a.expect("ticket_offer").await;
    app.clock.advance_ms(20_000);
    let w = a.expect("offer_withdrawn").await;
    assert_eq!((&w["offer_id"], w["reason"].as_str().unwrap()), (&offer["offer_id"], "expired"));
    a.expect_where("presence_update", "status", "away").await;
    let offer_b = b.expect("ticket_offer").await;
    assert_eq!(offer_b["ticket_id"], offer["ticket_id"]);
    // Accepting the expired offer is refused.
    a.send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]})).await;
    assert_eq!(a.expect("error").await["code"], "offer_expired");
}

#[tokio::test]
async fn outside_service_hours_a_ticket_is_refused_but_a_call_back_keeps_a_place() {
    let app = spawn_app().await;
    app.clock.advance_ms(11 * 3_600_000); // Monday 21:00 in Hangzhou
    let token = app.resident_token("13800000001").await;
    let r = take(&app, &token, json!({"matter_code": "SI-002"}), None).await;
    assert_eq!((r.status, r.body["code"].as_str().unwrap()), (409, "queue-closed"), "{}", r.body);
    let cb = take(&app, &token, json!({"matter_code": "SI-002", "callback": true}), None).await;
    assert_eq!((cb.status, cb.body["state"].as_str().unwrap()), (201, "callback"));
    let pr: HashSet<String> = cb.body["priority"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert!(pr.contains("elderly") && pr.contains("callback"));
    // Slots of Tuesday; book the first.
    let slots = app.call("GET", "/api/v1/queue/slots?matter_code=SI-003&date=2026-12-01", Some(&token), None).await;
    assert_eq!(slots.status, 200, "{}", slots.body);
    let list = slots.body.as_array().unwrap();
    assert_eq!(list.len(), 24, "08:00-20:00 in 30-minute slots");
    assert_eq!(list[0]["free"], 4);
    let start = list[0]["start"].as_str().unwrap();
    let booked = app.call("POST", "/api/v1/queue/appointments", Some(&token), Some(json!({"matter_code": "SI-003", "slot_start": start}))).await;
    assert_eq!((booked.status, booked.body["state"].as_str().unwrap()), (201, "appointment"), "{}", booked.body);
    // The next morning the call-back is offered to an agent like a ticket.
    app.clock.advance_ms(11 * 3_600_000); // Tuesday 08:00
    let li = app.staff_token("agent.li").await;
    let mut li_ws = Ws::connect(app.addr, &li).await;
    available(&mut li_ws).await;
    let offer = li_ws.expect("ticket_offer").await;
    let reasons = offer["resident"]["priority"].as_array().unwrap();
    assert!(reasons.contains(&json!("callback")) || reasons.contains(&json!("appointment")), "{offer}");
}

#[tokio::test]
async fn supervisors_see_figures_live_and_as_json_and_others_cannot() {
    let app = spawn_app().await;
    let token = app.resident_token("13800000003").await;
    take(&app, &token, json!({"matter_code": "MI-002"}), None).await;
    let sup = app.staff_token("supervisor").await;
    let json_figures = app.call("GET", "/api/v1/queue/figures", Some(&sup), None).await;
    assert_eq!(json_figures.status, 200);
    let mi = json_figures.body["skills"].as_array().unwrap().iter().find(|s| s["skill"] == "medical_insurance").unwrap().clone();
    assert_eq!(mi["waiting"], 1);
    let mut s_ws = Ws::connect(app.addr, &sup).await;
    s_ws.send(json!({"type": "subscribe_figures"})).await;
    let f = s_ws.expect("supervisor_figures").await;
    assert!(f["skills"].as_array().unwrap().iter().any(|s| s["skill"] == "medical_insurance" && s["waiting"] == 1));
    // An agent's presence change reaches the supervisor.
    let li = app.staff_token("agent.li").await;
    let mut li_ws = Ws::connect(app.addr, &li).await;
    li_ws.send(json!({"type": "set_presence", "status": "on_break", "reason": "lunch"})).await;
    let p = s_ws.expect("presence_update").await;
    assert_eq!((p["status"].as_str().unwrap(), p["reason"].as_str().unwrap()), ("on_break", "lunch"));
    let mut r_ws = Ws::connect(app.addr, &token).await;
    r_ws.send(json!({"type": "subscribe_figures"})).await;
    assert_eq!(r_ws.expect("error").await["code"], "forbidden");
    assert_eq!(app.call("GET", "/api/v1/queue/figures", Some(&token), None).await.status, 403);
}

// 200 tickets and 20 agents on two server *processes* sharing one database (exactly once):
// `signaling/tests/queue_processes.rs`, which runs the real binary twice.
