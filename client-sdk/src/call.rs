//! [`Call`]: the handle the application holds, and the driver task behind it.
//!
//! One driver task per call owns everything with state: the WebSocket, the session (id, last
//! `seq`, requests not yet answered), the peer connection and its negotiation. The [`Call`]
//! handle talks to it over a bounded command channel; the driver talks back over the event
//! channel. Nothing else shares state with it, so there are no locks around the protocol.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use signaling_protocol::limits::MAX_FRAME_BYTES;
use signaling_protocol::{
    parse_server_frame, CallId, ChatMessageId, ClientEnvelope, ClientMessage, ErrorCode, GoodbyeReason, ParticipantId,
    RequestId, ServerMessage, SessionDescription, SessionId, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::config::CallConfig;
use crate::error::Error;
use crate::event::{CallEvent, ChatMessage, EndCause, ReconnectCause};
use crate::media::{Outbound, Publisher};
use crate::peer::{from_rtc_candidate, Peer, PeerEvent};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Commands the handle may queue before the driver takes them; senders wait when it is full.
const COMMAND_CAPACITY: usize = 32;
/// Events from the peer connection to the driver (candidates, state changes, new tracks).
/// The WebRTC handler never waits on it (see `peer.rs`); track tasks do.
const PEER_EVENT_CAPACITY: usize = 256;
/// Time allowed to open the WebSocket on a reconnect attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `leave` waits for the server's acknowledgement.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a finished driver keeps trying to hand over its last events.
const FINAL_EVENTS_TIMEOUT: Duration = Duration::from_secs(5);
/// A session is resumed only with this much of its resume window left; otherwise rejoin.
const RESUME_MARGIN: Duration = Duration::from_secs(2);

/// Failures the test suite injects, like LiveKit's "simulate scenario". For tests and
/// field diagnostics; not needed by applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scenario {
    /// Cut the signaling socket at once (no close frame), as a network switch does. The SDK
    /// reconnects and resumes.
    SignalDrop,
    /// Vanish: cut the socket and the media connection and never come back (a device that
    /// lost power). The event stream ends without `Ended`; the server removes the participant
    /// after its grace period.
    Vanish,
    /// Ask the server for an ICE restart now, as after a network change.
    IceRestart,
    /// Cut the socket and stay offline for this long before reconnecting (a longer outage:
    /// past the server's resume window the SDK joins again instead of resuming).
    SignalOutage(Duration),
}

enum Command {
    Chat {
        text: String,
        reply: oneshot::Sender<Result<ChatMessageId, Error>>,
    },
    MediaState {
        audio_muted: bool,
        video_off: bool,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Leave {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    End {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Simulate {
        scenario: Scenario,
        reply: oneshot::Sender<()>,
    },
}

/// A call this client has joined. Cheap to share behind an `Arc`; dropping it leaves the call.
///
/// ```no_run
/// # async fn demo(call_id: signaling_protocol::CallId) -> Result<(), client_sdk::Error> {
/// use client_sdk::{Call, CallConfig, CallEvent};
/// let config = CallConfig::new("http://127.0.0.1:8080", "eyJ…", call_id);
/// let (call, mut events) = Call::join(config).await?;
/// while let Some(event) = events.recv().await {
///     match event {
///         CallEvent::Joined { recording, .. } => println!("{}", recording.notice_zh),
///         CallEvent::RemoteTrack(mut track) => {
///             tokio::spawn(async move { while let Some(_packet) = track.packets.recv().await {} });
///         }
///         CallEvent::Chat(m) => println!("{}: {}", m.sender_name, m.text),
///         CallEvent::Ended { .. } => break,
///         _ => {}
///     }
/// }
/// call.leave().await
/// # }
/// ```
pub struct Call {
    commands: mpsc::Sender<Command>,
    call_id: CallId,
    participant_id: ParticipantId,
    outbound: Vec<Arc<Outbound>>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("call_id", &self.call_id)
            .field("participant_id", &self.participant_id)
            .finish_non_exhaustive()
    }
}

impl Call {
    /// Connects, authenticates, joins the call and starts publishing. Returns once the server
    /// has answered `joined`; the first event is [`CallEvent::Joined`] with the recording
    /// notice, which the application must show.
    ///
    /// Errors: [`Error::InvalidUrl`], [`Error::Media`] (a source cannot be opened),
    /// [`Error::Connect`] / [`Error::Timeout`] (retryable), [`Error::Refused`] (not a
    /// participant, token expired, call ended, …).
    pub async fn join(config: CallConfig) -> Result<(Call, mpsc::Receiver<CallEvent>), Error> {
        let ws_url = config.websocket_url()?;
        let publisher = Publisher::start(config.audio.as_ref(), config.video.as_ref())?;
        let outbound = publisher.outbounds().cloned().collect();
        let bind = if config.udp_bind.is_empty() {
            default_bind(&ws_url)
        } else {
            config.udp_bind.clone()
        };
        let ws = tokio::time::timeout(config.join_timeout, connect(&ws_url))
            .await
            .map_err(|_| Error::Timeout("opening the WebSocket"))??;
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity.max(1));
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (peer_tx, peer_rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        let (joined_tx, joined_rx) = oneshot::channel();
        let join_timeout = config.join_timeout;
        let call_id = config.call_id;
        let driver = Driver {
            ws_url,
            bind,
            event_capacity: config.event_capacity.max(1),
            cfg: config,
            events_tx,
            pending: VecDeque::new(),
            cmds: cmd_rx,
            peer_tx,
            peer_rx,
            ws: Some(ws),
            ready: false,
            retry_at: None,
            down_since: None,
            attempt: 0,
            last_rx: Instant::now(),
            next_ping: Instant::now(),
            session: None,
            last_seq: 0,
            next_id: 1,
            unanswered: BTreeMap::new(),
            waiters: HashMap::new(),
            join_id: None,
            joined_tx: Some(joined_tx),
            participant_id: None,
            publisher,
            peer: None,
            peer_gen: 0,
            offer_outstanding: None,
            last_ice_restart: None,
            media_reconnecting: false,
            rejoining: false,
            leave_deadline: None,
            done: false,
        };
        tokio::spawn(driver.run());
        match tokio::time::timeout(join_timeout, joined_rx).await {
            Ok(Ok(Ok(participant_id))) => Ok((
                Call {
                    commands: cmd_tx,
                    call_id,
                    participant_id,
                    outbound,
                },
                events_rx,
            )),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout("joining the call")),
        }
    }

    /// The call.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// This client's participant id in the call.
    pub fn participant_id(&self) -> ParticipantId {
        self.participant_id
    }

    /// RTP packets this client has sent (audio and video together).
    pub fn packets_sent(&self) -> u64 {
        self.outbound.iter().map(|o| o.sent()).sum()
    }

    async fn command<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Sends a chat message to everyone in the call. Returns once the server has stored and
    /// delivered it (its id); across a reconnect it is delivered exactly once. Everyone,
    /// this client included, gets it as [`CallEvent::Chat`].
    pub async fn send_chat(&self, text: impl Into<String>) -> Result<ChatMessageId, Error> {
        let text = text.into();
        self.command(|reply| Command::Chat { text, reply }).await
    }

    /// Declares this client's microphone and camera state to the others, and stops (or
    /// resumes) sending the corresponding packets.
    pub async fn set_media_state(&self, audio_muted: bool, video_off: bool) -> Result<(), Error> {
        self.command(|reply| Command::MediaState {
            audio_muted,
            video_off,
            reply,
        })
        .await
    }

    /// Leaves the call (it goes on for the others). The event stream ends with
    /// [`EndCause::Left`].
    pub async fn leave(self) -> Result<(), Error> {
        self.command(|reply| Command::Leave { reply }).await
    }

    /// Ends the call for everyone (agents only; others get [`Error::Refused`] `forbidden`).
    /// Returns once the server has ended it.
    pub async fn end(&self) -> Result<(), Error> {
        self.command(|reply| Command::End { reply }).await
    }

    /// Injects a failure (see [`Scenario`]); returns once it has been applied.
    pub async fn simulate(&self, scenario: Scenario) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Simulate { scenario, reply: tx })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }
}

/// UDP addresses for the peer connection: loopback when the server is on this host (a
/// wildcard bind skips loopback), every interface otherwise.
fn default_bind(ws_url: &str) -> Vec<SocketAddr> {
    let host = ws_url.split_once("://").map_or("", |(_, r)| r);
    let host = host.split('/').next().unwrap_or("");
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let ip = if loopback { "127.0.0.1:0" } else { "0.0.0.0:0" };
    vec![ip.parse().expect("a valid socket address")]
}

/// Opens the WebSocket with small buffers (an idle socket costs a few KB, not ~130 KB).
async fn connect(url: &str) -> Result<Ws, Error> {
    if url.starts_with("wss://") {
        // Not built in yet (it needs a TLS stack and its crypto provider): terminate TLS in
        // a gateway on the device's network for now.
        return Err(Error::InvalidUrl(
            "wss:// is not supported by this SDK build yet".into(),
        ));
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_FRAME_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    Ok(ws)
}

struct SessionInfo {
    id: SessionId,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    resume_window: Duration,
}

enum Waiter {
    Chat(oneshot::Sender<Result<ChatMessageId, Error>>),
    Ack(oneshot::Sender<Result<(), Error>>),
    Leave(oneshot::Sender<Result<(), Error>>),
    End(oneshot::Sender<Result<(), Error>>),
}

impl Waiter {
    fn fail(self, e: Error) {
        match self {
            Waiter::Chat(tx) => drop(tx.send(Err(e))),
            Waiter::Ack(tx) | Waiter::Leave(tx) | Waiter::End(tx) => drop(tx.send(Err(e))),
        }
    }
}

/// What woke the driver.
enum Wake {
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Command(Option<Command>),
    Peer(Option<(u64, PeerEvent)>),
    Ping,
    Silence,
    Retry,
    LeaveTimeout,
    EventRoom,
}

struct Driver {
    cfg: CallConfig,
    ws_url: String,
    bind: Vec<SocketAddr>,
    event_capacity: usize,
    events_tx: mpsc::Sender<CallEvent>,
    /// Events not yet taken by the channel (see `CallConfig::event_capacity`).
    pending: VecDeque<CallEvent>,
    cmds: mpsc::Receiver<Command>,
    peer_tx: mpsc::Sender<(u64, PeerEvent)>,
    peer_rx: mpsc::Receiver<(u64, PeerEvent)>,
    ws: Option<Ws>,
    /// Authenticated on the current socket (`welcome` or `resumed` seen).
    ready: bool,
    retry_at: Option<Instant>,
    down_since: Option<Instant>,
    attempt: u32,
    last_rx: Instant,
    next_ping: Instant,
    session: Option<SessionInfo>,
    /// Highest `seq` processed (dedupe and resume).
    last_seq: u64,
    next_id: u64,
    /// Requests sent (or to send) that have no answer yet, by id: re-sent after a resume.
    unanswered: BTreeMap<u64, ClientMessage>,
    waiters: HashMap<u64, Waiter>,
    join_id: Option<u64>,
    joined_tx: Option<oneshot::Sender<Result<ParticipantId, Error>>>,
    participant_id: Option<ParticipantId>,
    publisher: Publisher,
    peer: Option<Peer>,
    /// Generation of the current peer (events of closed ones are ignored).
    peer_gen: u64,
    /// Our `sdp_offer` awaiting the server's answer (its request id).
    offer_outstanding: Option<u64>,
    last_ice_restart: Option<Instant>,
    media_reconnecting: bool,
    /// Joining again after the session was lost (`Reconnected { resumed: false }` at `joined`).
    rejoining: bool,
    leave_deadline: Option<Instant>,
    done: bool,
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

impl Driver {
    async fn run(mut self) {
        self.send_hello().await;
        while !self.done {
            self.flush_events();
            let backpressured = self.pending.len() >= self.event_capacity;
            let silence_at = self.session.as_ref().map_or(self.last_rx + self.cfg.join_timeout, |s| {
                self.last_rx + s.heartbeat_timeout
            });
            let ping_at = if self.ready { self.next_ping } else { far_future() };
            let retry_at = self.retry_at.unwrap_or_else(far_future);
            let leave_at = self.leave_deadline.unwrap_or_else(far_future);
            let wake = {
                let ws = self.ws.as_mut();
                let has_ws = ws.is_some();
                let frame = async {
                    match ws {
                        Some(ws) => ws.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    f = frame, if has_ws && !backpressured => Wake::Frame(f),
                    c = self.cmds.recv() => Wake::Command(c),
                    p = self.peer_rx.recv() => Wake::Peer(p),
                    _ = tokio::time::sleep_until(ping_at), if has_ws => Wake::Ping,
                    _ = tokio::time::sleep_until(silence_at), if has_ws && !backpressured => Wake::Silence,
                    _ = tokio::time::sleep_until(retry_at), if !has_ws => Wake::Retry,
                    _ = tokio::time::sleep_until(leave_at) => Wake::LeaveTimeout,
                    r = self.events_tx.reserve(), if !self.pending.is_empty() => {
                        match r { Ok(_permit) => Wake::EventRoom, Err(_) => { self.pending.clear(); Wake::EventRoom } }
                    }
                }
            };
            match wake {
                Wake::Frame(Some(Ok(Message::Text(text)))) => self.on_text(text.as_str()).await,
                Wake::Frame(Some(Ok(Message::Close(_)))) | Wake::Frame(None) | Wake::Frame(Some(Err(_))) => {
                    self.link_lost("socket closed").await
                }
                Wake::Frame(Some(Ok(_))) => {}
                Wake::Command(Some(c)) => self.on_command(c).await,
                Wake::Command(None) => {
                    // The handle was dropped: leave without waiting.
                    if let Some(call_id) = self.joined_call() {
                        if self.ready {
                            self.send_env(None, ClientMessage::Leave { call_id }).await;
                        }
                    }
                    self.finish(None).await;
                }
                Wake::Peer(Some((gen, ev))) => {
                    if gen == self.peer_gen {
                        self.on_peer_event(ev).await;
                    }
                }
                Wake::Peer(None) => {}
                Wake::Ping => {
                    let interval = self
                        .session
                        .as_ref()
                        .map_or(Duration::from_secs(10), |s| s.heartbeat_interval);
                    self.next_ping = Instant::now() + interval;
                    let ts = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    self.send_env(None, ClientMessage::Ping { ts: Some(ts) }).await;
                }
                Wake::Silence => self.link_lost("server silent too long").await,
                Wake::Retry => self.reconnect().await,
                Wake::LeaveTimeout => {
                    if self.leave_deadline.take().is_some() {
                        let waiter = self.waiters.drain().find_map(|(_, w)| match w {
                            Waiter::Leave(tx) => Some(tx),
                            other => {
                                other.fail(Error::Closed);
                                None
                            }
                        });
                        if let Some(tx) = waiter {
                            let _ = tx.send(Ok(()));
                        }
                        self.finish(Some(EndCause::Left)).await;
                    }
                }
                Wake::EventRoom => {}
            }
        }
    }

    fn emit(&mut self, ev: CallEvent) {
        self.pending.push_back(ev);
        self.flush_events();
    }

    fn flush_events(&mut self) {
        while let Some(ev) = self.pending.pop_front() {
            match self.events_tx.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(ev)) => {
                    self.pending.push_front(ev);
                    break;
                }
                // The application dropped the receiver: nobody listens.
                Err(mpsc::error::TrySendError::Closed(_)) => self.pending.clear(),
            }
        }
    }

    fn joined_call(&self) -> Option<CallId> {
        self.participant_id.map(|_| self.cfg.call_id)
    }

    async fn send_env(&mut self, id: Option<u64>, msg: ClientMessage) {
        let Some(ws) = self.ws.as_mut() else { return };
        let text = ClientEnvelope {
            id: id.map(RequestId),
            msg,
        }
        .to_json();
        if let Err(err) = ws.send(Message::text(text)).await {
            tracing::debug!(%err, "send failed");
            self.link_lost("send failed").await;
        }
    }

    /// Sends a request with a fresh id, kept until answered (and re-sent after a resume).
    async fn request(&mut self, msg: ClientMessage) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.unanswered.insert(id, msg.clone());
        if self.ready {
            self.send_env(Some(id), msg).await;
        }
        id
    }

    async fn send_hello(&mut self) {
        self.session = None;
        self.last_seq = 0;
        let msg = ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: self.cfg.token.clone(),
            user_agent: Some(self.cfg.user_agent.chars().take(256).collect()),
        };
        self.send_env(None, msg).await;
    }

    /// The socket is gone: schedule reconnecting.
    async fn link_lost(&mut self, why: &str) {
        if self.ws.take().is_none() || self.done {
            return;
        }
        tracing::info!(why, "signaling socket lost; reconnecting");
        self.ready = false;
        if self.joined_tx.is_some() {
            // Still joining: report, do not retry behind the caller's back.
            self.fail_join(Error::Connect(why.to_owned()));
            return;
        }
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            self.attempt = 0;
            self.emit(CallEvent::Reconnecting {
                cause: ReconnectCause::Signal,
            });
        }
        self.retry_at = Some(Instant::now() + self.cfg.reconnect.delay(self.attempt));
    }

    async fn reconnect(&mut self) {
        self.retry_at = None;
        let down_for = self.down_since.map_or(Duration::ZERO, |t| t.elapsed());
        if down_for > self.cfg.reconnect.give_up_after {
            let cause = EndCause::ConnectionLost(Error::Connect("gave up reconnecting".into()));
            self.finish(Some(cause)).await;
            return;
        }
        self.attempt += 1;
        match tokio::time::timeout(CONNECT_TIMEOUT, connect(&self.ws_url)).await {
            Ok(Ok(ws)) => {
                self.ws = Some(ws);
                self.last_rx = Instant::now();
                let resumable = self
                    .session
                    .as_ref()
                    .filter(|s| down_for + RESUME_MARGIN < s.resume_window)
                    .map(|s| s.id);
                match resumable {
                    Some(session_id) => {
                        let msg = ClientMessage::Resume {
                            session_id,
                            last_seq: self.last_seq,
                            token: self.cfg.token.clone(),
                        };
                        self.send_env(None, msg).await;
                    }
                    None => self.start_rejoin().await,
                }
            }
            Ok(Err(err)) => {
                tracing::debug!(%err, attempt = self.attempt, "reconnect failed");
                self.retry_at = Some(Instant::now() + self.cfg.reconnect.delay(self.attempt));
            }
            Err(_) => self.retry_at = Some(Instant::now() + self.cfg.reconnect.delay(self.attempt)),
        }
    }

    /// The server no longer has the session: a new one, then join again.
    async fn start_rejoin(&mut self) {
        for (_, w) in self.waiters.drain() {
            w.fail(Error::Interrupted);
        }
        self.unanswered.clear();
        self.offer_outstanding = None;
        self.join_id = None;
        // Not in the call until `joined`: commands meanwhile get `Interrupted`.
        if self.participant_id.take().is_some() {
            self.rejoining = true;
        }
        if let Some(peer) = self.peer.take() {
            peer.close().await;
        }
        self.send_hello().await;
    }

    fn fail_join(&mut self, e: Error) {
        if let Some(tx) = self.joined_tx.take() {
            let _ = tx.send(Err(e));
        }
        self.done = true;
    }

    /// Ends the driver: tells the application why (if `cause`), tears everything down.
    async fn finish(&mut self, cause: Option<EndCause>) {
        if let Some(cause) = cause {
            self.emit(CallEvent::Ended { cause });
        }
        self.done = true;
        for (_, w) in self.waiters.drain() {
            w.fail(Error::Closed);
        }
        if let Some(peer) = self.peer.take() {
            peer.close().await;
        }
        for out in self.publisher.outbounds() {
            out.set_track(None);
        }
        if let Some(mut ws) = self.ws.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
        let pending: Vec<_> = self.pending.drain(..).collect();
        let tx = self.events_tx.clone();
        let _ = tokio::time::timeout(FINAL_EVENTS_TIMEOUT, async move {
            for ev in pending {
                if tx.send(ev).await.is_err() {
                    break;
                }
            }
        })
        .await;
    }

    async fn on_command(&mut self, cmd: Command) {
        let Some(call_id) = self.joined_call() else {
            // Not in the call (rejoining): refuse rather than queue for a call state that
            // will be rebuilt.
            match cmd {
                Command::Chat { reply, .. } => drop(reply.send(Err(Error::Interrupted))),
                Command::MediaState { reply, .. } | Command::End { reply } => drop(reply.send(Err(Error::Interrupted))),
                Command::Leave { reply } => {
                    let _ = reply.send(Ok(()));
                    self.finish(Some(EndCause::Left)).await;
                }
                Command::Simulate { reply, .. } => drop(reply.send(())),
            }
            return;
        };
        match cmd {
            Command::Chat { text, reply } => {
                let msg = ClientMessage::ChatSend { call_id, text };
                if let Err(e) = msg.validate() {
                    let _ = reply.send(Err(Error::InvalidRequest(e.message().to_owned())));
                    return;
                }
                let id = self.request(msg).await;
                self.waiters.insert(id, Waiter::Chat(reply));
            }
            Command::MediaState {
                audio_muted,
                video_off,
                reply,
            } => {
                if let Some(a) = &self.publisher.audio {
                    a.set_enabled(!audio_muted);
                }
                if let Some(v) = &self.publisher.video {
                    v.set_enabled(!video_off);
                }
                let id = self
                    .request(ClientMessage::MediaState {
                        call_id,
                        audio_muted,
                        video_off,
                    })
                    .await;
                self.waiters.insert(id, Waiter::Ack(reply));
            }
            Command::Leave { reply } => {
                if !self.ready {
                    // Cannot tell the server: it removes us after its grace period.
                    let _ = reply.send(Ok(()));
                    self.finish(Some(EndCause::Left)).await;
                    return;
                }
                let id = self.request(ClientMessage::Leave { call_id }).await;
                self.waiters.insert(id, Waiter::Leave(reply));
                self.leave_deadline = Some(Instant::now() + LEAVE_TIMEOUT);
            }
            Command::End { reply } => {
                let id = self.request(ClientMessage::EndCall { call_id }).await;
                self.waiters.insert(id, Waiter::End(reply));
            }
            Command::Simulate { scenario, reply } => {
                match scenario {
                    Scenario::SignalDrop => {
                        // Dropping the stream closes the TCP connection without a close frame.
                        self.link_lost("simulated signal drop").await;
                    }
                    Scenario::Vanish => {
                        self.ws = None;
                        self.pending.clear();
                        self.finish(None).await;
                    }
                    Scenario::IceRestart => self.ice_restart(true).await,
                    Scenario::SignalOutage(d) => {
                        self.link_lost("simulated outage").await;
                        if self.retry_at.is_some() {
                            self.retry_at = Some(Instant::now() + d);
                        }
                    }
                }
                let _ = reply.send(());
            }
        }
    }

    async fn on_peer_event(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Candidate(c) => {
                if let Some(call_id) = self.joined_call() {
                    let candidate = from_rtc_candidate(c);
                    self.request(ClientMessage::IceCandidate { call_id, candidate }).await;
                }
            }
            PeerEvent::State(state) => {
                tracing::debug!(?state, "media connection state");
                if let Some(peer) = self.peer.as_mut() {
                    peer.state = state;
                }
                match state {
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Disconnected => {
                        self.ice_restart(false).await
                    }
                    RTCPeerConnectionState::Connected if self.media_reconnecting => {
                        self.media_reconnecting = false;
                        self.emit(CallEvent::Reconnected {
                            cause: ReconnectCause::Media,
                            resumed: true,
                        });
                    }
                    _ => {}
                }
            }
            PeerEvent::Track(t) => self.emit(CallEvent::RemoteTrack(t)),
        }
    }

    /// Asks the server for an ICE restart (its offer with new credentials follows), at most
    /// once per `ice_restart_interval` unless `forced`.
    async fn ice_restart(&mut self, forced: bool) {
        let Some(call_id) = self.joined_call() else { return };
        if self.peer.is_none() || !self.ready {
            return; // checked again after `resumed`
        }
        if !forced
            && self
                .last_ice_restart
                .is_some_and(|t| t.elapsed() < self.cfg.reconnect.ice_restart_interval)
        {
            return;
        }
        self.last_ice_restart = Some(Instant::now());
        if !self.media_reconnecting && !forced {
            self.media_reconnecting = true;
            self.emit(CallEvent::Reconnecting {
                cause: ReconnectCause::Media,
            });
        }
        self.request(ClientMessage::IceRestart { call_id }).await;
    }

    async fn on_text(&mut self, text: &str) {
        self.last_rx = Instant::now();
        let env = match parse_server_frame(text) {
            Ok(env) => env,
            Err(err) => {
                tracing::warn!(%err, "unreadable server message ignored");
                return;
            }
        };
        if env.seq != 0 {
            if env.seq <= self.last_seq {
                return; // already processed (a replay overlapping what we saw)
            }
            self.last_seq = env.seq;
        }
        let reply_to = env.reply_to.map(|r| r.0);
        let request = reply_to.and_then(|id| self.unanswered.remove(&id));
        let waiter = reply_to.and_then(|id| self.waiters.remove(&id));
        self.on_message(env.msg, reply_to, request, waiter).await;
    }

    async fn on_message(
        &mut self,
        msg: ServerMessage,
        reply_to: Option<u64>,
        request: Option<ClientMessage>,
        waiter: Option<Waiter>,
    ) {
        match msg {
            ServerMessage::Welcome {
                session_id,
                heartbeat_interval_ms,
                heartbeat_timeout_ms,
                resume_window_ms,
                ..
            } => {
                self.session = Some(SessionInfo {
                    id: session_id,
                    heartbeat_interval: Duration::from_millis(heartbeat_interval_ms.max(1000)),
                    heartbeat_timeout: Duration::from_millis(heartbeat_timeout_ms.max(2000)),
                    resume_window: Duration::from_millis(resume_window_ms),
                });
                self.ready = true;
                self.next_ping = Instant::now() + Duration::from_millis(heartbeat_interval_ms.max(1000));
                let join = ClientMessage::Join {
                    call_id: self.cfg.call_id,
                    role: self.cfg.role,
                    call_token: self.cfg.call_token.clone(),
                };
                self.join_id = Some(self.request(join).await);
            }
            ServerMessage::Resumed { last_client_id, .. } => {
                self.ready = true;
                self.down_since = None;
                self.attempt = 0;
                let interval = self
                    .session
                    .as_ref()
                    .map_or(Duration::from_secs(10), |s| s.heartbeat_interval);
                self.next_ping = Instant::now() + interval;
                // Requests the server never processed go again, with their ids.
                let last = last_client_id.map_or(0, |r| r.0);
                let stale: Vec<u64> = self.unanswered.range(..=last).map(|(id, _)| *id).collect();
                for id in stale {
                    self.unanswered.remove(&id);
                    if let Some(w) = self.waiters.remove(&id) {
                        w.fail(Error::Interrupted);
                    }
                }
                let resend: Vec<(u64, ClientMessage)> = self.unanswered.iter().map(|(i, m)| (*i, m.clone())).collect();
                for (id, msg) in resend {
                    self.send_env(Some(id), msg).await;
                }
                self.emit(CallEvent::Reconnected {
                    cause: ReconnectCause::Signal,
                    resumed: true,
                });
                if self.peer.as_ref().is_some_and(|p| {
                    matches!(
                        p.state,
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Disconnected
                    )
                }) {
                    self.ice_restart(false).await;
                }
            }
            ServerMessage::RejoinRequired { reason } => {
                tracing::info!(?reason, "session gone; joining again");
                self.start_rejoin().await;
            }
            ServerMessage::Joined {
                participant_id,
                role,
                participants,
                ice_servers,
                ice_transport_policy,
                recording,
                ..
            } => {
                let rejoined = std::mem::take(&mut self.rejoining);
                self.participant_id = Some(participant_id);
                if let Some(tx) = self.joined_tx.take() {
                    let _ = tx.send(Ok(participant_id));
                }
                if rejoined {
                    self.down_since = None;
                    self.attempt = 0;
                    self.emit(CallEvent::Reconnected {
                        cause: ReconnectCause::Signal,
                        resumed: false,
                    });
                }
                self.emit(CallEvent::Joined {
                    participant_id,
                    role,
                    participants,
                    recording,
                });
                if let Some(old) = self.peer.take() {
                    old.close().await;
                }
                self.peer_gen += 1;
                let (gen, tx) = (self.peer_gen, self.peer_tx.clone());
                let (fwd_tx, mut fwd_rx) = mpsc::channel::<PeerEvent>(PEER_EVENT_CAPACITY);
                // Tag this connection's events with its generation.
                tokio::spawn(async move {
                    while let Some(ev) = fwd_rx.recv().await {
                        if tx.send((gen, ev)).await.is_err() {
                            break;
                        }
                    }
                });
                let built = Peer::build(
                    &ice_servers,
                    ice_transport_policy,
                    &self.bind,
                    &self.publisher,
                    &participant_id.to_string(),
                    fwd_tx,
                    self.cfg.track_capacity,
                )
                .await;
                match built {
                    Ok(peer) => {
                        self.peer = Some(peer);
                        self.make_offer(false).await;
                    }
                    Err(e) => {
                        self.emit(CallEvent::Error(e.clone()));
                        self.finish(Some(EndCause::ConnectionLost(e))).await;
                    }
                }
            }
            // The answer to our outstanding offer (any other is stale and ignored).
            ServerMessage::SdpAnswer { description, .. }
                if reply_to.is_some() && reply_to == self.offer_outstanding =>
            {
                self.offer_outstanding = None;
                if let Some(peer) = self.peer.as_mut() {
                    if let Err(e) = peer.apply_answer(description.sdp).await {
                        tracing::warn!(%e, "server answer refused");
                        self.emit(CallEvent::Error(e));
                    }
                }
            }
            ServerMessage::SdpOffer { description, .. } => {
                if self.offer_outstanding.is_some() {
                    // Offers crossed: the server is the polite side; it rolls its offer back,
                    // answers ours and offers again afterwards.
                    tracing::debug!("server offer ignored: our offer is outstanding");
                    return;
                }
                let Some(call_id) = self.joined_call() else { return };
                let Some(peer) = self.peer.as_mut() else { return };
                match peer.answer_offer(description.sdp).await {
                    Ok(sdp) => {
                        let description = SessionDescription::answer(sdp);
                        self.request(ClientMessage::SdpAnswer { call_id, description }).await;
                    }
                    Err(e) => {
                        tracing::warn!(%e, "server offer refused");
                        peer.rollback().await;
                        self.emit(CallEvent::Error(e));
                    }
                }
            }
            ServerMessage::IceCandidate { candidate, .. } => {
                if let Some(peer) = self.peer.as_mut() {
                    peer.add_candidate(&candidate).await;
                }
            }
            ServerMessage::Chat {
                message_id,
                sender,
                sender_name,
                sent_at,
                text,
                ..
            } => {
                if let Some(Waiter::Chat(tx)) = waiter {
                    let _ = tx.send(Ok(message_id));
                }
                let own = Some(sender) == self.participant_id;
                self.emit(CallEvent::Chat(ChatMessage {
                    message_id,
                    sender,
                    sender_name,
                    sent_at,
                    text,
                    own,
                }));
            }
            ServerMessage::ParticipantJoined { participant, .. } => {
                self.emit(CallEvent::ParticipantJoined { participant });
            }
            ServerMessage::ParticipantLeft {
                participant_id, reason, ..
            } => {
                if Some(participant_id) == self.participant_id {
                    self.finish(Some(EndCause::Removed(reason))).await;
                } else {
                    self.emit(CallEvent::ParticipantLeft { participant_id, reason });
                }
            }
            ServerMessage::ParticipantReconnecting { participant_id, .. } => {
                self.emit(CallEvent::ParticipantReconnecting { participant_id });
            }
            ServerMessage::ParticipantReconnected { participant_id, .. } => {
                self.emit(CallEvent::ParticipantReconnected { participant_id });
            }
            ServerMessage::MediaStateChanged {
                participant_id,
                audio_muted,
                video_off,
                ..
            } => {
                if let Some(Waiter::Ack(tx)) = waiter {
                    let _ = tx.send(Ok(()));
                }
                if Some(participant_id) != self.participant_id {
                    self.emit(CallEvent::MediaStateChanged {
                        participant_id,
                        audio_muted,
                        video_off,
                    });
                }
            }
            ServerMessage::CallEnded { reason, ended_by, .. } => {
                for (_, w) in self.waiters.drain() {
                    match w {
                        Waiter::End(tx) | Waiter::Leave(tx) => drop(tx.send(Ok(()))),
                        other => other.fail(Error::Closed),
                    }
                }
                self.finish(Some(EndCause::CallEnded { reason, ended_by })).await;
            }
            ServerMessage::Ack {} => match waiter {
                Some(Waiter::Leave(tx)) => {
                    let _ = tx.send(Ok(()));
                    self.leave_deadline = None;
                    self.finish(Some(EndCause::Left)).await;
                }
                Some(Waiter::Ack(tx)) => drop(tx.send(Ok(()))),
                Some(other) => self.waiters.extend(reply_to.map(|id| (id, other))),
                None => {}
            },
            ServerMessage::Error { code, message, .. } => {
                let err = Error::Refused { code, message };
                self.on_error(err, reply_to, request, waiter).await;
            }
            ServerMessage::Goodbye { reason, reconnect } => {
                if reason == GoodbyeReason::Replaced {
                    self.finish(Some(EndCause::Replaced)).await;
                } else if reconnect {
                    self.link_lost("server said goodbye (reconnect)").await;
                } else {
                    let err = Error::Refused {
                        code: ErrorCode::Forbidden,
                        message: format!("goodbye: {reason:?}"),
                    };
                    self.finish(Some(EndCause::ConnectionLost(err))).await;
                }
            }
            _ => {}
        }
    }

    async fn on_error(
        &mut self,
        err: Error,
        reply_to: Option<u64>,
        request: Option<ClientMessage>,
        waiter: Option<Waiter>,
    ) {
        // Refusals of hello (bad or expired token) or of the join are fatal.
        let fatal = match &request {
            Some(ClientMessage::Join { .. }) => true,
            None if !self.ready && self.session.is_none() => {
                matches!(
                    err.code(),
                    Some(ErrorCode::Unauthenticated | ErrorCode::TokenExpired | ErrorCode::VersionUnsupported)
                )
            }
            _ => false,
        };
        if fatal {
            if self.joined_tx.is_some() {
                self.fail_join(err);
            } else {
                self.finish(Some(EndCause::ConnectionLost(err))).await;
            }
            return;
        }
        if reply_to.is_some() && reply_to == self.offer_outstanding {
            // Our offer was not taken (glare or refused): back to stable; the server offers.
            self.offer_outstanding = None;
            if let Some(peer) = self.peer.as_ref() {
                peer.rollback().await;
            }
        }
        match waiter {
            Some(Waiter::Leave(tx)) => {
                let _ = tx.send(Ok(()));
                self.finish(Some(EndCause::Left)).await;
            }
            Some(w) => w.fail(err),
            None => self.emit(CallEvent::Error(err)),
        }
    }

    async fn make_offer(&mut self, ice_restart: bool) {
        let Some(call_id) = self.joined_call() else { return };
        let Some(peer) = self.peer.as_ref() else { return };
        match peer.create_offer(ice_restart).await {
            Ok(sdp) => {
                let id = self
                    .request(ClientMessage::SdpOffer {
                        call_id,
                        description: SessionDescription::offer(sdp),
                    })
                    .await;
                self.offer_outstanding = Some(id);
            }
            Err(e) => self.emit(CallEvent::Error(e)),
        }
    }
}
