//! WebSocket signaling: one endpoint (`GET /ws`) for sessions, call signaling and (later) live
//! events. The wire types are in `signaling-protocol`; docs/protocol.md describes them.
//!
//! Each socket has a reader (this task) and a writer task fed by a bounded queue. A
//! [`Session`] outlives its socket: a client whose socket drops resumes with its session id and
//! the last `seq` it saw, and gets what it missed from the session's replay buffer.

pub mod hub;
pub mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use signaling_protocol::limits::{
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_HEARTBEAT_TIMEOUT_MS, DEFAULT_RESUME_WINDOW_MS, MAX_FRAME_BYTES,
};
use signaling_protocol::{
    parse_client_frame, ClientMessage, ErrorCode, ProtocolError, RejoinReason, RequestId, ServerEnvelope,
    ServerMessage, SessionId, Timestamp, UserId, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::auth::tokens::TokenError;
use crate::domain::identity::Role;
pub use hub::{Hub, HubConfig};
pub use session::{Outgoing, Session};

/// Messages a socket's writer may hold before the socket is considered too slow.
const SOCKET_QUEUE: usize = 256;
/// Time allowed between opening the socket and `hello`/`resume`.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// All sessions of this node.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<SessionId, Arc<Session>>>,
    next_conn: AtomicU64,
}

impl Sessions {
    fn insert(&self, s: Arc<Session>) {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).insert(s.id, s);
    }
    fn get(&self, id: SessionId) -> Option<Arc<Session>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }
    /// Removes sessions detached longer than `window`; returns them.
    pub fn expire(&self, window: Duration) -> Vec<Arc<Session>> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<SessionId> = map
            .values()
            .filter(|s| s.detached_since().is_some_and(|t| t.elapsed() >= window))
            .map(|s| s.id)
            .collect();
        gone.into_iter().filter_map(|id| map.remove(&id)).collect()
    }
    /// Sessions alive (attached or within their resume window).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
    /// No sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Signaling state shared by all sockets.
pub struct Signaling {
    /// Sessions.
    pub sessions: Sessions,
    /// Calls.
    pub hub: Arc<Hub>,
    /// How long a detached session can be resumed.
    pub resume_window: Duration,
}

impl Signaling {
    /// Signaling over a hub; starts the task that expires abandoned sessions.
    pub fn start(hub: Arc<Hub>, resume_window: Duration) -> Arc<Self> {
        let sig = Arc::new(Signaling { sessions: Sessions::default(), hub, resume_window });
        let weak = Arc::downgrade(&sig);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500).min(resume_window));
            loop {
                tick.tick().await;
                let Some(sig) = weak.upgrade() else { break };
                for s in sig.sessions.expire(sig.resume_window) {
                    sig.hub.session_expired(&s).await;
                }
            }
        });
        sig
    }
}

/// Default resume window.
pub const RESUME_WINDOW: Duration = Duration::from_millis(DEFAULT_RESUME_WINDOW_MS);

/// `GET /ws`: upgrades to the signaling protocol. Buffers are kept small: an idle socket costs
/// a few kilobytes, not the library default of ~130 KB. The socket loop keeps its own future
/// small too: every handler it awaits is boxed, so an idle socket does not carry the space of
/// the largest handler (a join or an offer) between messages (≈ 9 KB per idle socket instead
/// of ≈ 31 KB; `docs/benchmarks.md`).
#[utoipa::path(get, path = "/ws", tag = "signaling",
    description = "The signaling WebSocket (`docs/protocol.md`): text frames of JSON envelopes. \
        The access token is not sent here but in the first message, `hello` (or `resume`).",
    responses((status = 101, description = "switched to the WebSocket protocol"),
              (status = 400, description = "not a WebSocket upgrade request"),
              (status = 426, description = "the connection cannot be upgraded")))]
pub async fn ws_handler(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_FRAME_BYTES * 2)
        .on_upgrade(move |socket| run_socket(socket, state))
}

fn unsequenced(reply_to: Option<RequestId>, msg: ServerMessage) -> Outgoing {
    ServerEnvelope::unsequenced(reply_to, msg).to_json().unwrap_or_default().into()
}

fn proto_error(e: &ProtocolError) -> ServerMessage {
    ServerMessage::error(e.code(), e.message())
}

fn wire_role(r: Role) -> signaling_protocol::Role {
    match r {
        Role::Resident => signaling_protocol::Role::Resident,
        Role::Device => signaling_protocol::Role::Device,
        Role::Agent => signaling_protocol::Role::Agent,
        Role::Helper => signaling_protocol::Role::Helper,
        Role::Supervisor => signaling_protocol::Role::Supervisor,
        Role::Auditor => signaling_protocol::Role::Auditor,
        Role::Admin => signaling_protocol::Role::Admin,
    }
}

async fn run_socket(socket: WebSocket, state: AppState) {
    let sig = state.signaling.clone();
    let conn_id = sig.sessions.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(SOCKET_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.as_ref().into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut session: Option<Arc<Session>> = None;
    let timeout = Duration::from_millis(DEFAULT_HEARTBEAT_TIMEOUT_MS);
    loop {
        let wait = if session.is_some() { timeout } else { AUTH_DEADLINE };
        let frame = match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(_))) | Ok(None) => break,
            Err(_) => {
                tracing::debug!(conn = conn_id, "socket silent too long: closing");
                break;
            }
        };
        // A socket replaced by a resume elsewhere stops serving.
        if let Some(s) = &session {
            if !s.is_attached(conn_id) {
                break;
            }
        }
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let _ = tx.try_send(unsequenced(None, ServerMessage::error(ErrorCode::InvalidMessage, "binary frames are not used")));
                continue;
            }
            Message::Close(_) => break,
            _ => continue,
        };
        let env = match parse_client_frame(text.as_str()) {
            Ok(env) => env,
            Err(e) => {
                let msg = proto_error(&e);
                match &session {
                    Some(s) => s.send(msg, e.request_id()),
                    None => {
                        let _ = tx.try_send(unsequenced(e.request_id(), msg));
                    }
                }
                continue;
            }
        };
        let reply_to = env.id;
        match (&session, env.msg) {
            (None, ClientMessage::Hello { protocol_version, token, .. }) => {
                if protocol_version != PROTOCOL_VERSION {
                    let _ = tx.try_send(unsequenced(reply_to, ServerMessage::error(ErrorCode::VersionUnsupported, format!("this server speaks protocol version {PROTOCOL_VERSION}"))));
                    continue;
                }
                let claims = match state.tokens.verify(&token, state.clock.now_ms()) {
                    Ok(c) => c,
                    Err(e) => {
                        let (code, m) = match e {
                            TokenError::Expired => (ErrorCode::TokenExpired, "the access token has expired; refresh it"),
                            TokenError::Invalid => (ErrorCode::Unauthenticated, "the token is not valid"),
                        };
                        let _ = tx.try_send(unsequenced(reply_to, ServerMessage::error(code, m)));
                        continue;
                    }
                };
                let s = Session::new(claims.sub, claims.role);
                let _ = s.attach(conn_id, tx.clone(), None);
                s.accept_client_id(reply_to);
                sig.sessions.insert(s.clone());
                Box::pin(state.queue.attach(&s)).await;
                s.send(
                    ServerMessage::Welcome {
                        session_id: s.id,
                        protocol_version: PROTOCOL_VERSION,
                        user_id: UserId::from_uuid(claims.sub),
                        role: wire_role(claims.role),
                        heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
                        heartbeat_timeout_ms: DEFAULT_HEARTBEAT_TIMEOUT_MS,
                        resume_window_ms: sig.resume_window.as_millis() as u64,
                        server_time: Timestamp::new(state.clock.now()),
                    },
                    reply_to,
                );
                session = Some(s);
            }
            (None, ClientMessage::Resume { session_id, last_seq, token }) => {
                let subject = state.tokens.verify_ignoring_expiry(&token).map(|c| c.sub);
                let found = sig.sessions.get(session_id).filter(|s| subject.as_ref().is_ok_and(|sub| *sub == s.subject));
                let Some(s) = found else {
                    let reason = if subject.is_err() { None } else { Some(RejoinReason::SessionExpired) };
                    let msg = match reason {
                        Some(reason) => ServerMessage::RejoinRequired { reason },
                        None => ServerMessage::error(ErrorCode::Unauthenticated, "the token is not valid"),
                    };
                    let _ = tx.try_send(unsequenced(reply_to, msg));
                    continue;
                };
                match s.attach(conn_id, tx.clone(), Some(last_seq)) {
                    Ok(replayed) => {
                        s.send(
                            ServerMessage::Resumed {
                                session_id: s.id,
                                replayed,
                                last_client_id: s.last_client_id(),
                                ice_servers: Some(sig.hub.ice_servers_for_resume()),
                            },
                            reply_to,
                        );
                        Box::pin(sig.hub.reattached(&s)).await;
                        Box::pin(state.queue.attach(&s)).await;
                        session = Some(s);
                    }
                    Err(_) => {
                        let _ = tx.try_send(unsequenced(reply_to, ServerMessage::RejoinRequired { reason: RejoinReason::ReplayUnavailable }));
                    }
                }
            }
            (None, _) => {
                let _ = tx.try_send(unsequenced(reply_to, ServerMessage::error(ErrorCode::Unauthenticated, "send hello (or resume) first")));
            }
            (Some(s), msg) => {
                if !s.accept_client_id(reply_to) {
                    continue; // a retransmission: its answer is in the replay buffer
                }
                let s = s.clone();
                // Boxed: the handlers' futures (joins, offers) are large, and an idle socket
                // should not carry their space between messages.
                if let Err(hub::Refusal(code, message)) = Box::pin(dispatch(&sig, &state.queue, &s, msg, reply_to)).await {
                    s.send(ServerMessage::error(code, message), reply_to);
                }
            }
        }
    }
    if let Some(s) = session {
        if s.detach(conn_id) {
            Box::pin(sig.hub.detached(&s)).await;
            Box::pin(state.queue.detached(&s)).await;
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

async fn dispatch(
    sig: &Signaling,
    queue: &crate::queue::Queue,
    s: &Arc<Session>,
    msg: ClientMessage,
    reply_to: Option<RequestId>,
) -> Result<(), hub::Refusal> {
    let hub = &sig.hub;
    match msg {
        ClientMessage::Ping { ts } => {
            s.send(ServerMessage::Pong { ts, server_time: Timestamp::new(time::OffsetDateTime::now_utc()) }, reply_to);
        }
        ClientMessage::Hello { .. } | ClientMessage::Resume { .. } => {
            return Err(hub::Refusal(ErrorCode::OutOfOrder, "this socket already has a session".into()));
        }
        ClientMessage::Join { call_id, role, .. } => hub.join(s, *call_id.as_uuid(), role, reply_to).await?,
        ClientMessage::Leave { call_id } => {
            hub.leave(s, *call_id.as_uuid(), signaling_protocol::LeaveReason::Left).await?;
            s.send(ServerMessage::Ack {}, reply_to);
        }
        ClientMessage::SdpOffer { call_id, description } => hub.offer(s, *call_id.as_uuid(), description, reply_to).await?,
        ClientMessage::SdpAnswer { call_id, description } => {
            hub.answer(s, *call_id.as_uuid(), description).await?;
            if reply_to.is_some() {
                s.send(ServerMessage::Ack {}, reply_to);
            }
        }
        ClientMessage::IceCandidate { call_id, candidate } => {
            hub.candidate(s, *call_id.as_uuid(), candidate).await?;
            if reply_to.is_some() {
                s.send(ServerMessage::Ack {}, reply_to);
            }
        }
        ClientMessage::EndOfCandidates { call_id } => {
            // The relay has no use for it; check membership so a stray one gets an error.
            hub.media_state_probe(s, *call_id.as_uuid())?;
            if reply_to.is_some() {
                s.send(ServerMessage::Ack {}, reply_to);
            }
        }
        ClientMessage::IceRestart { call_id } => {
            hub.ice_restart(s, *call_id.as_uuid()).await?;
            if reply_to.is_some() {
                s.send(ServerMessage::Ack {}, reply_to);
            }
        }
        ClientMessage::MediaState { call_id, audio_muted, video_off } => {
            hub.media_state(s, *call_id.as_uuid(), audio_muted, video_off)?;
            if reply_to.is_some() {
                s.send(ServerMessage::Ack {}, reply_to);
            }
        }
        ClientMessage::ChatSend { call_id, text } => hub.chat(s, *call_id.as_uuid(), text, reply_to).await?,
        ClientMessage::EndCall { call_id } => {
            hub.end(s, *call_id.as_uuid()).await?;
            if reply_to.is_some() {
                s.send(ServerMessage::Ack {}, reply_to);
            }
        }
        ClientMessage::AcceptOffer { offer_id } => queue.accept(s, *offer_id.as_uuid(), reply_to).await?,
        ClientMessage::DeclineOffer { offer_id, .. } => queue.decline(s, *offer_id.as_uuid(), reply_to).await?,
        ClientMessage::CancelTicket { ticket_id } => queue.cancel_ws(s, *ticket_id.as_uuid(), reply_to).await?,
        ClientMessage::SetPresence { status, reason } => {
            let status = match status {
                signaling_protocol::SelectablePresence::Available => crate::domain::queue::Presence::Available,
                signaling_protocol::SelectablePresence::OnBreak => crate::domain::queue::Presence::OnBreak,
                signaling_protocol::SelectablePresence::Offline => crate::domain::queue::Presence::Offline,
            };
            queue.set_presence(s, status, reason, reply_to).await?
        }
        ClientMessage::SubscribeFigures {} => queue.subscribe(s, true, reply_to).await?,
        ClientMessage::UnsubscribeFigures {} => queue.subscribe(s, false, reply_to).await?,
    }
    Ok(())
}
