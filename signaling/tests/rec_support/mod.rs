//! Test support for the recording tests: a server (in process, or the real binary as a child
//! process), REST helpers, and a participant that signs in, joins a call over the WebSocket
//! signaling protocol and publishes real RTP (VP8-payload-format video, Opus-like audio)
//! through the relay with a webrtc-rs peer on 127.0.0.1.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{json, Value};
use signaling::app::{AppState, Application, Components};
use signaling::config::Settings;
use signaling::domain::clock::FakeClock;
use signaling::sfu::RTCIceCandidateInit;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use crate::sfu_support::{client_pc, generate_media, local_track, opus_codec, vp8_codec, ClientHandler, ClientState, MediaProfile};

/// Fixed start of the fake clock (as the black-box harness).
pub const T0_MS: i64 = 1_796_004_000_000;

/// A unique temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cw-rec-{tag}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server: its base URL, and (in process) its state.
pub struct Server {
    pub base: String,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    pub state: Option<AppState>,
    pub clock: Option<Arc<FakeClock>>,
    task: Option<JoinHandle<()>>,
    child: Option<std::process::Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Starts the server in this process (SQLite, demo data, a fake clock), after `tweak`.
pub async fn spawn_server(data_dir: &Path, tweak: impl FnOnce(&mut Settings)) -> Server {
    let mut settings = Settings::for_tests(data_dir.to_path_buf());
    settings.demo = true;
    settings.reconnect_grace_secs = 2;
    tweak(&mut settings);
    let clock = Arc::new(FakeClock::at(T0_MS));
    let app = Application::build_with(settings, Components { clock: clock.clone(), codes: None })
        .await
        .expect("server builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    let task = tokio::spawn(async move {
        let _ = app.run_until(std::future::pending()).await;
    });
    Server {
        base: format!("http://{addr}"),
        addr,
        http: http(),
        data_dir: data_dir.to_path_buf(),
        state: Some(state),
        clock: Some(clock),
        task: Some(task),
        child: None,
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts the real `cloud-window` binary on `data_dir` and waits until it is ready.
pub async fn spawn_binary(data_dir: &Path, extra: &[&str]) -> Server {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::fs::File::create(data_dir.join(format!("server-{port}.log"))).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-window"))
        .args(["--listen", &addr.to_string(), "--data-dir", data_dir.to_str().unwrap(), "--demo", "--reconnect-grace-secs", "2"])
        .args(extra)
        .env("CW_SECRET", "test-secret-not-for-production")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the server binary starts");
    let server = Server {
        base: format!("http://{addr}"),
        addr,
        http: http(),
        data_dir: data_dir.to_path_buf(),
        state: None,
        clock: None,
        task: None,
        child: Some(child),
    };
    for _ in 0..200 {
        if let Ok(r) = server.http.get(format!("{}/readyz", server.base)).send().await {
            if r.status().is_success() {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server binary did not become ready");
}

impl Server {
    /// The child process id (binary servers).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILLs the child process.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.child = None;
    }

    /// A JSON request: status and body.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A raw GET with headers: status, headers, body bytes.
    pub async fn get_raw(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self.http.get(format!("{}{}", self.base, path)).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let h = res.headers().clone();
        (status, h, res.bytes().await.unwrap_or_default().to_vec())
    }

    /// Signs a demo staff member in.
    pub async fn staff_token(&self, username: &str) -> String {
        let (s, b) = self
            .call(
                "POST",
                "/api/v1/auth/staff/login",
                None,
                Some(json!({"username": username, "password": signaling::demo::DEMO_PASSWORD})),
            )
            .await;
        assert_eq!(s, 200, "login {username}: {b}");
        b["access_token"].as_str().unwrap().to_string()
    }

    /// Signs the first demo resident in (reading the code from the demo log sender is not
    /// possible from outside, so residents sign in through a device-less staff-made token: the
    /// resident's own OTP flow is exercised by the identity tests). Returns (resident id, token).
    pub async fn resident(&self, admin: &str) -> (Uuid, Option<String>) {
        let (s, b) = self.call("GET", "/api/v1/residents?limit=1", Some(admin), None).await;
        assert_eq!(s, 200, "{b}");
        let id: Uuid = b["items"][0]["id"].as_str().unwrap().parse().unwrap();
        (id, None)
    }

    /// An agent opens a call with the first demo resident; returns (call id, resident id).
    pub async fn open_call(&self, agent: &str, admin: &str) -> (Uuid, Uuid) {
        let (resident, _) = self.resident(admin).await;
        let (s, b) = self.call("POST", "/api/v1/calls", Some(agent), Some(json!({"resident_id": resident}))).await;
        assert_eq!(s, 201, "{b}");
        (b["id"].as_str().unwrap().parse().unwrap(), resident)
    }
}

/// A participant over the WebSocket: signaling pump plus a publishing webrtc-rs peer.
pub struct WsParticipant {
    pub call: Uuid,
    pub participant_id: Uuid,
    pub joined: Value,
    pub messages: Arc<Mutex<Vec<Value>>>,
    pub state: Arc<ClientState>,
    pub sent: Arc<AtomicU64>,
    pub pc: Arc<dyn PeerConnection>,
    out: mpsc::UnboundedSender<Value>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for WsParticipant {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn desc(kind: &str, sdp: &str) -> Value {
    json!({"type": kind, "sdp": sdp})
}

/// The next message of type `kind` (at most 10 s; an `error` message fails the test).
pub async fn expect_type(rx: &mut mpsc::UnboundedReceiver<Value>, kind: &str) -> Value {
    loop {
        let v = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {kind}"))
            .expect("socket open");
        if v["type"] == kind {
            return v;
        }
        assert_ne!(v["type"], "error", "waiting for {kind}: {v}");
    }
}

/// A raw signaling socket joined to a call: messages out, messages in, its pump tasks.
pub struct Signal {
    pub call: Uuid,
    pub participant_id: Uuid,
    pub joined: Value,
    pub out: mpsc::UnboundedSender<Value>,
    pub rx: mpsc::UnboundedReceiver<Value>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl Signal {
    /// Connects, says hello with `token` and joins `call`.
    pub async fn join(addr: SocketAddr, token: &str, call: Uuid) -> Signal {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("ws connects");
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Value>();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            while let Some(v) = out_rx.recv().await {
                if sink.send(Message::Text(v.to_string().into())).await.is_err() {
                    break;
                }
            }
        }));
        let (in_tx, mut rx) = mpsc::unbounded_channel::<Value>();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m {
                    if let Ok(v) = serde_json::from_str::<Value>(&t) {
                        let _ = in_tx.send(v);
                    }
                }
            }
        }));
        out.send(json!({"type": "hello", "protocol_version": 1, "token": token})).unwrap();
        expect_type(&mut rx, "welcome").await;
        out.send(json!({"type": "join", "call_id": call})).unwrap();
        let joined = expect_type(&mut rx, "joined").await;
        let participant_id: Uuid = joined["participant_id"].as_str().unwrap().parse().unwrap();
        Signal { call, participant_id, joined, out, rx, tasks }
    }

    /// Offers what `pc` holds, applies the relay's answer and returns its SDP. From then on a
    /// task answers the relay's offers, adds its candidates and sends `pc`'s; every other
    /// message goes to `messages`.
    pub async fn negotiate(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
        mut candidates: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
        messages: Arc<Mutex<Vec<Value>>>,
    ) -> String {
        let call = self.call;
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer.clone()).await.unwrap();
        self.out.send(json!({"type": "sdp_offer", "call_id": call, "description": desc("offer", &offer.sdp)})).unwrap();
        let answer = expect_type(&mut self.rx, "sdp_answer").await;
        let sdp = answer["description"]["sdp"].as_str().unwrap().to_string();
        pc.set_remote_description(RTCSessionDescription::answer(sdp.clone()).unwrap()).await.unwrap();
        let (pc, out) = (pc.clone(), self.out.clone());
        // The task reads the socket from now on (what is left behind is a closed channel).
        let mut rx = std::mem::replace(&mut self.rx, mpsc::unbounded_channel().1);
        self.tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    v = rx.recv() => {
                        let Some(v) = v else { break };
                        match v["type"].as_str() {
                            Some("sdp_offer") => {
                                let sdp = v["description"]["sdp"].as_str().unwrap_or("").to_string();
                                let Ok(offer) = RTCSessionDescription::offer(sdp) else { continue };
                                if pc.set_remote_description(offer).await.is_err() { continue }
                                let Ok(answer) = pc.create_answer(None).await else { continue };
                                if pc.set_local_description(answer.clone()).await.is_err() { continue }
                                let _ = out.send(json!({"type": "sdp_answer", "call_id": call, "description": desc("answer", &answer.sdp)}));
                            }
                            Some("ice_candidate") => {
                                if let Ok(c) = serde_json::from_value(v["candidate"].clone()) {
                                    let _ = pc.add_ice_candidate(c).await;
                                }
                            }
                            _ => messages.lock().unwrap().push(v),
                        }
                    }
                    c = candidates.recv() => {
                        let Some(c) = c else { break };
                        if let Ok(c) = serde_json::to_value(&c) {
                            let _ = out.send(json!({"type": "ice_candidate", "call_id": call, "candidate": c}));
                        }
                    }
                }
            }
        }));
        sdp
    }
}

impl WsParticipant {
    /// Connects, says hello, joins `call`, offers audio + video and starts publishing.
    pub async fn join(addr: SocketAddr, token: &str, call: Uuid) -> WsParticipant {
        let mut signal = Signal::join(addr, token, call).await;
        let participant_id = signal.participant_id;
        let state = Arc::new(ClientState::default());
        let (cand_tx, cand_rx) = mpsc::unbounded_channel();
        let pc = client_pc(Arc::new(ClientHandler { state: state.clone(), candidates: cand_tx })).await;
        let stream_id = participant_id.to_string();
        let audio = local_track(RtpCodecKind::Audio, opus_codec(), rand::random::<u32>() | 1, &stream_id);
        let video = local_track(RtpCodecKind::Video, vp8_codec(), rand::random::<u32>() | 1, &stream_id);
        pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await.unwrap();
        pc.add_track(video.clone() as Arc<dyn TrackLocal>).await.unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        signal.negotiate(&pc, cand_rx, messages.clone()).await;
        let Signal { joined, out, mut tasks, .. } = signal;
        // Keyframe requests from the relay (the recorder asks through it).
        {
            let (video, state) = (video.clone(), state.clone());
            tasks.push(tokio::spawn(async move {
                use webrtc::media_stream::track_local::TrackLocalEvent;
                loop {
                    match video.poll().await {
                        Some(TrackLocalEvent::OnRtcpPacket(_)) => {
                            state.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                            state.want_keyframe();
                        }
                        Some(_) => {}
                        None => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        let sent = Arc::new(AtomicU64::new(0));
        tasks.push(tokio::spawn(generate_media(audio, video, state.clone(), MediaProfile::default(), sent.clone())));
        WsParticipant { call, participant_id, joined, messages, state, sent, pc, out, tasks }
    }

    /// Video packets received from `other`.
    pub fn received_from(&self, other: Uuid) -> u64 {
        self.state.received.lock().unwrap().get(&other.to_string()).map_or(0, |r| r.video_packets)
    }

    /// Ends the call (the agent).
    pub fn end_call(&self) {
        let _ = self.out.send(json!({"type": "end_call", "call_id": self.call}));
    }

    /// Stops publishing and closes the connection.
    pub async fn stop(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pc.close()).await;
    }
}

/// Runs `ffprobe` on a file: (codec names, duration in seconds).
pub fn ffprobe(path: &Path) -> (Vec<String>, f64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name:format=duration", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs (Debian package ffmpeg)");
    assert!(out.status.success(), "ffprobe failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let codecs = v["streams"].as_array().map(|s| s.iter().filter_map(|x| x["codec_name"].as_str().map(String::from)).collect()).unwrap_or_default();
    let duration = v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    (codecs, duration)
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
pub fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Polls `cond` every 100 ms until it holds or `limit` passes.
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !cond() {
        assert!(std::time::Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
