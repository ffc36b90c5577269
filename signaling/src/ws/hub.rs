//! The call hub: which sessions are in which calls, the relay connection of each participant,
//! reconnect grace periods, and what every call message does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use signaling_protocol::{
    CallId as WireCallId, ChatMessageId, ConnectionState, EndReason, ErrorCode, IceCandidate, IceServer,
    IceTransportPolicy, LeaveReason, ParticipantId, ParticipantInfo, ParticipantRole, RecordingNotice, RequestId,
    ServerMessage, SessionDescription, Timestamp,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::session::Session;
use crate::domain::call::{authorize_join, may_end, JoinRefusal, Member, MemberRole};
use crate::domain::clock::{to_datetime, Clock};
use crate::sfu::{Participant, Relay, RelayEvent, SfuError};
use crate::store::{CallEvent, Store};

/// An error answered to the client.
pub struct Refusal(pub ErrorCode, pub String);

impl Refusal {
    fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Refusal(code, msg.into())
    }
}

type HubResult<T> = Result<T, Refusal>;

/// Settings of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How long a participant whose socket dropped keeps their place.
    pub grace: Duration,
    /// Recording retention announced in the join notice, days.
    pub retention_days: u32,
}

struct Slot {
    member: Member,
    session: Arc<Session>,
    media: Arc<Participant>,
    connected: bool,
    audio_muted: bool,
    video_off: bool,
    joined_at: i64,
    grace: Option<JoinHandle<()>>,
    pump: JoinHandle<()>,
    /// Held while the relay's answer to a client offer is made and sent, and while the pump
    /// sends a relay event: the relay's next offer (and its candidates) never overtake that
    /// answer on the wire.
    order: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pump.abort();
        if let Some(g) = self.grace.take() {
            g.abort();
        }
    }
}

/// The calls served by this node.
pub struct Hub {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    relay: Relay,
    config: HubConfig,
    rooms: Mutex<HashMap<Uuid, HashMap<Uuid, Slot>>>,
}

fn wire_role(r: MemberRole) -> ParticipantRole {
    match r {
        MemberRole::Resident => ParticipantRole::Resident,
        MemberRole::Device => ParticipantRole::Device,
        MemberRole::Agent => ParticipantRole::Agent,
        MemberRole::Helper => ParticipantRole::Helper,
        MemberRole::Observer => ParticipantRole::Observer,
    }
}

fn member_role(r: ParticipantRole) -> MemberRole {
    match r {
        ParticipantRole::Resident => MemberRole::Resident,
        ParticipantRole::Device => MemberRole::Device,
        ParticipantRole::Agent => MemberRole::Agent,
        ParticipantRole::Helper => MemberRole::Helper,
        ParticipantRole::Observer => MemberRole::Observer,
    }
}

/// Converts between the protocol's and the relay's (serde-compatible) shapes.
fn convert<A: serde::Serialize, B: serde::de::DeserializeOwned>(a: &A) -> Option<B> {
    serde_json::to_value(a).ok().and_then(|v| serde_json::from_value(v).ok())
}

fn info(slot: &Slot) -> ParticipantInfo {
    ParticipantInfo {
        participant_id: ParticipantId::from_uuid(slot.member.participant_id),
        role: wire_role(slot.member.role),
        display_name: slot.member.display_name.clone(),
        state: if slot.connected { ConnectionState::Connected } else { ConnectionState::Reconnecting },
        audio_muted: slot.audio_muted,
        video_off: slot.video_off,
        joined_at: Timestamp::new(to_datetime(slot.joined_at)),
    }
}

impl Hub {
    /// A hub over `relay`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, relay: Relay, config: HubConfig) -> Arc<Self> {
        Arc::new(Hub { store, clock, relay, config, rooms: Mutex::new(HashMap::new()) })
    }

    /// The media relay.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, HashMap<Uuid, Slot>>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Participants connected to a call on this node.
    pub fn participant_count(&self, call: Uuid) -> usize {
        self.rooms().get(&call).map_or(0, HashMap::len)
    }

    async fn event(&self, call: Uuid, kind: &str, participant: Option<Uuid>, detail: serde_json::Value) {
        let e = CallEvent {
            id: Uuid::now_v7(),
            call_id: call,
            at: self.clock.now_ms(),
            kind: kind.into(),
            participant_id: participant,
            detail,
        };
        if let Err(err) = self.store.append_call_event(&e).await {
            tracing::error!(error = %err, call = %call, kind, "could not store a call event");
        }
    }

    /// Sends `msg` to every participant of `call` except `except`.
    fn broadcast(&self, call: Uuid, except: Option<Uuid>, msg: ServerMessage) {
        let sessions: Vec<Arc<Session>> = self
            .rooms()
            .get(&call)
            .map(|r| r.values().filter(|s| Some(s.member.participant_id) != except).map(|s| s.session.clone()).collect())
            .unwrap_or_default();
        for s in sessions {
            s.send(msg.clone(), None);
        }
    }

    fn ice_servers(&self) -> Vec<IceServer> {
        self.relay.ice_servers().iter().filter_map(convert).collect()
    }

    /// The ICE servers for a `resumed` message.
    pub fn ice_servers_for_resume(&self) -> Vec<IceServer> {
        self.ice_servers()
    }

    /// The recording notice for a call: the retention the recorder will apply (the call's
    /// matter's, else the default).
    async fn notice_for(&self, call: Option<&crate::domain::call::Call>) -> RecordingNotice {
        let mut n = self.notice();
        if let Some(code) = call.and_then(|c| c.matter_code.as_deref()) {
            if let Ok(Some(m)) = self.store.matter(code).await {
                n.retention_days = m.spec.retention_days.unwrap_or(n.retention_days);
            }
        }
        n
    }

    fn notice(&self) -> RecordingNotice {
        RecordingNotice {
            recorded: true,
            notice_zh: "本次视频通话将全程录音录像，用于政务服务留痕和审计。".into(),
            notice_en: "This video call is recorded in full for the service record and audit.".into(),
            purpose_zh: "依法留存办理过程，保障您和工作人员的权益。".into(),
            purpose_en: "To keep a lawful record of how your matter was handled, protecting you and the staff.".into(),
            retention_days: self.config.retention_days,
            policy_url: None,
        }
    }

    /// `join`: checks membership, opens the media connection, answers `joined` and tells the
    /// others. A second join of the same identity replaces the first session's place.
    pub async fn join(
        self: &Arc<Self>,
        session: &Arc<Session>,
        call: Uuid,
        requested: Option<ParticipantRole>,
        reply_to: Option<RequestId>,
    ) -> HubResult<()> {
        let stored = self.store.call_by_id(call).await.map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        let members = self.store.call_members(call).await.map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        let member = match authorize_join(stored.as_ref(), &members, session.subject, session.role, requested.map(member_role)) {
            Ok(m) => m.clone(),
            Err(JoinRefusal::NotFound) => return Err(Refusal::new(ErrorCode::CallNotFound, "no such call")),
            Err(JoinRefusal::Ended) => return Err(Refusal::new(ErrorCode::CallEnded, "the call has ended")),
            Err(JoinRefusal::NotAMember) => {
                return Err(Refusal::new(ErrorCode::Forbidden, "you are not a participant of this call in that role"))
            }
        };
        let pid = member.participant_id;
        if session.in_call(call) && self.rooms().get(&call).is_some_and(|r| r.get(&pid).is_some_and(|s| Arc::ptr_eq(&s.session, session))) {
            return Err(Refusal::new(ErrorCode::AlreadyInCall, "this session is already in the call"));
        }
        let (tx, rx) = mpsc::channel(64);
        let media = Arc::new(self.relay.join(call, pid, tx).await.map_err(|e| match e {
            SfuError::NoPortAvailable => Refusal::new(ErrorCode::Unavailable, "no media port available; retry later"),
            e => Refusal::new(ErrorCode::Internal, e.to_string()),
        })?);
        let order = Arc::new(tokio::sync::Mutex::new(()));
        let pump = tokio::spawn(pump(Arc::downgrade(self), session.clone(), call, pid, rx, order.clone()));
        let now = self.clock.now_ms();
        let slot = Slot {
            member: member.clone(),
            session: session.clone(),
            media,
            connected: true,
            audio_muted: false,
            video_off: false,
            joined_at: now,
            grace: None,
            pump,
            order,
        };
        let me = info(&slot);
        let (replaced, others) = {
            let mut rooms = self.rooms();
            let room = rooms.entry(call).or_default();
            let replaced = room.insert(pid, slot);
            let others: Vec<ParticipantInfo> = room.values().filter(|s| s.member.participant_id != pid).map(info).collect();
            (replaced, others)
        };
        let was_present = replaced.is_some();
        if let Some(old) = replaced {
            if !Arc::ptr_eq(&old.session, session) {
                old.session.set_in_call(call, false);
                old.session.send(
                    ServerMessage::Goodbye { reason: signaling_protocol::GoodbyeReason::Replaced, reconnect: false },
                    None,
                );
            }
            drop(old); // the relay already replaced its connection
        }
        session.set_in_call(call, true);
        session.send(
            ServerMessage::Joined {
                call_id: WireCallId::from_uuid(call),
                participant_id: ParticipantId::from_uuid(pid),
                role: wire_role(member.role),
                participants: others,
                ice_servers: self.ice_servers(),
                ice_transport_policy: IceTransportPolicy::All,
                recording: self.notice_for(stored.as_ref()).await,
            },
            reply_to,
        );
        if was_present {
            self.broadcast(call, Some(pid), ServerMessage::ParticipantReconnected {
                call_id: WireCallId::from_uuid(call),
                participant_id: ParticipantId::from_uuid(pid),
            });
            self.event(call, "rejoined", Some(pid), serde_json::json!({"role": member.role})).await;
        } else {
            self.broadcast(call, Some(pid), ServerMessage::ParticipantJoined { call_id: WireCallId::from_uuid(call), participant: me });
            self.event(call, "joined", Some(pid), serde_json::json!({"role": member.role})).await;
        }
        Ok(())
    }

    fn slot_media(&self, session: &Arc<Session>, call: Uuid) -> HubResult<(Uuid, Arc<Participant>, Member)> {
        let rooms = self.rooms();
        rooms
            .get(&call)
            .and_then(|r| r.values().find(|s| Arc::ptr_eq(&s.session, session)))
            .map(|s| (s.member.participant_id, s.media.clone(), s.member.clone()))
            .ok_or_else(|| Refusal::new(ErrorCode::NotInCall, "join the call first"))
    }

    /// Checks the session is in the call (for messages that need nothing else).
    pub fn media_state_probe(&self, session: &Arc<Session>, call: Uuid) -> HubResult<()> {
        self.slot_media(session, call).map(|_| ())
    }

    /// A client's offer: answered by the relay.
    pub async fn offer(&self, session: &Arc<Session>, call: Uuid, desc: SessionDescription, reply_to: Option<RequestId>) -> HubResult<()> {
        let (_, media, _) = self.slot_media(session, call)?;
        let order = self
            .rooms()
            .get(&call)
            .and_then(|r| r.values().find(|s| Arc::ptr_eq(&s.session, session)))
            .map(|s| s.order.clone())
            .ok_or_else(|| Refusal::new(ErrorCode::NotInCall, "join the call first"))?;
        // The relay may make its next offer while answering this one (tracks attached before
        // it): hold the pump back until our answer is queued.
        let _turn = order.lock().await;
        let offer = convert(&desc).ok_or_else(|| Refusal::new(ErrorCode::InvalidMessage, "unreadable description"))?;
        match media.handle_offer(offer).await {
            Ok(answer) => {
                let description: SessionDescription =
                    convert(&answer).ok_or_else(|| Refusal::new(ErrorCode::Internal, "unserializable answer"))?;
                session.send(ServerMessage::SdpAnswer { call_id: WireCallId::from_uuid(call), description }, reply_to);
                Ok(())
            }
            Err(SfuError::UnexpectedDescription(why)) => Err(Refusal::new(ErrorCode::Glare, format!("offer not accepted now: {why}; roll back, answer the server's offer, then offer again"))),
            Err(SfuError::Closed) => Err(Refusal::new(ErrorCode::NotInCall, "the media connection is closed; join again")),
            Err(e) => Err(Refusal::new(ErrorCode::InvalidMessage, format!("offer refused: {e}"))),
        }
    }

    /// A client's answer to the relay's offer.
    pub async fn answer(&self, session: &Arc<Session>, call: Uuid, desc: SessionDescription) -> HubResult<()> {
        let (_, media, _) = self.slot_media(session, call)?;
        let answer = convert(&desc).ok_or_else(|| Refusal::new(ErrorCode::InvalidMessage, "unreadable description"))?;
        media.handle_answer(answer).await.map_err(|e| match e {
            SfuError::UnexpectedDescription(why) => Refusal::new(ErrorCode::OutOfOrder, format!("no offer is waiting for an answer: {why}")),
            SfuError::Closed => Refusal::new(ErrorCode::NotInCall, "the media connection is closed; join again"),
            e => Refusal::new(ErrorCode::InvalidMessage, format!("answer refused: {e}")),
        })
    }

    /// A trickled client candidate.
    pub async fn candidate(&self, session: &Arc<Session>, call: Uuid, c: IceCandidate) -> HubResult<()> {
        let (_, media, _) = self.slot_media(session, call)?;
        let init = convert(&c).ok_or_else(|| Refusal::new(ErrorCode::InvalidMessage, "unreadable candidate"))?;
        media.add_ice_candidate(init).await.map_err(|e| Refusal::new(ErrorCode::InvalidMessage, format!("candidate refused: {e}")))
    }

    /// Client asks for an ICE restart: the relay sends a new offer.
    pub async fn ice_restart(&self, session: &Arc<Session>, call: Uuid) -> HubResult<()> {
        let (_, media, _) = self.slot_media(session, call)?;
        media.restart_ice().await.map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
    }

    /// Mute / camera state, told to the others.
    pub fn media_state(&self, session: &Arc<Session>, call: Uuid, audio_muted: bool, video_off: bool) -> HubResult<()> {
        let pid = {
            let mut rooms = self.rooms();
            let slot = rooms
                .get_mut(&call)
                .and_then(|r| r.values_mut().find(|s| Arc::ptr_eq(&s.session, session)))
                .ok_or_else(|| Refusal::new(ErrorCode::NotInCall, "join the call first"))?;
            slot.audio_muted = audio_muted;
            slot.video_off = video_off;
            slot.member.participant_id
        };
        self.broadcast(call, Some(pid), ServerMessage::MediaStateChanged {
            call_id: WireCallId::from_uuid(call),
            participant_id: ParticipantId::from_uuid(pid),
            audio_muted,
            video_off,
        });
        Ok(())
    }

    /// Chat: stored with the call, delivered to everyone (the sender's copy answers its id).
    pub async fn chat(&self, session: &Arc<Session>, call: Uuid, text: String, reply_to: Option<RequestId>) -> HubResult<()> {
        let (pid, _, member) = self.slot_media(session, call)?;
        let message_id = ChatMessageId::random();
        self.event(call, "chat", Some(pid), serde_json::json!({"message_id": message_id, "text": text})).await;
        let msg = ServerMessage::Chat {
            call_id: WireCallId::from_uuid(call),
            message_id,
            sender: ParticipantId::from_uuid(pid),
            sender_name: member.display_name,
            sent_at: Timestamp::new(self.clock.now()),
            text,
        };
        self.broadcast(call, Some(pid), msg.clone());
        session.send(msg, reply_to);
        Ok(())
    }

    /// `leave`: the participant goes; the others are told.
    pub async fn leave(&self, session: &Arc<Session>, call: Uuid, reason: LeaveReason) -> HubResult<()> {
        let (pid, _, _) = self.slot_media(session, call)?;
        self.remove(call, pid, reason).await;
        Ok(())
    }

    async fn remove(&self, call: Uuid, pid: Uuid, reason: LeaveReason) {
        let slot = {
            let mut rooms = self.rooms();
            let slot = rooms.get_mut(&call).and_then(|r| r.remove(&pid));
            if rooms.get(&call).is_some_and(HashMap::is_empty) {
                rooms.remove(&call);
            }
            slot
        };
        let Some(slot) = slot else { return };
        slot.session.set_in_call(call, false);
        slot.media.close().await;
        drop(slot);
        self.broadcast(call, None, ServerMessage::ParticipantLeft {
            call_id: WireCallId::from_uuid(call),
            participant_id: ParticipantId::from_uuid(pid),
            reason,
        });
        let kind = if reason == LeaveReason::TimedOut { "timed_out" } else { "left" };
        self.event(call, kind, Some(pid), serde_json::json!({})).await;
    }

    /// `end_call` (the agent): everyone is told and disconnected; the call is closed for good.
    pub async fn end(&self, session: &Arc<Session>, call: Uuid) -> HubResult<()> {
        let (pid, _, member) = self.slot_media(session, call)?;
        if !may_end(&member) {
            return Err(Refusal::new(ErrorCode::Forbidden, "only the agent ends the call"));
        }
        self.end_call(call, Some(pid), Some(session.subject), EndReason::HungUp).await;
        Ok(())
    }

    /// Ends a call on this node (from the socket or the REST API).
    pub async fn end_call(&self, call: Uuid, by_participant: Option<Uuid>, by_subject: Option<Uuid>, reason: EndReason) {
        let now = self.clock.now_ms();
        let reason_s = serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        match self.store.end_call(call, now, &reason_s, by_subject).await {
            Ok(true) => self.event(call, "ended", by_participant, serde_json::json!({"reason": reason_s})).await,
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not store the end of a call"),
        }
        self.broadcast(call, None, ServerMessage::CallEnded {
            call_id: WireCallId::from_uuid(call),
            ended_by: by_participant.map(ParticipantId::from_uuid),
            reason,
        });
        let slots = self.rooms().remove(&call);
        for (_, slot) in slots.into_iter().flatten() {
            slot.session.set_in_call(call, false);
            slot.media.close().await;
        }
        self.relay.close_call(call).await;
    }

    /// The session's socket dropped: its participants keep their place for the grace period.
    pub async fn detached(self: &Arc<Self>, session: &Arc<Session>) {
        for call in session.calls() {
            let pid = {
                let mut rooms = self.rooms();
                let Some(slot) = rooms.get_mut(&call).and_then(|r| r.values_mut().find(|s| Arc::ptr_eq(&s.session, session))) else {
                    continue;
                };
                if !slot.connected {
                    continue;
                }
                slot.connected = false;
                let pid = slot.member.participant_id;
                let hub = Arc::downgrade(self);
                let grace = self.config.grace;
                let sess = Arc::downgrade(session);
                slot.grace = Some(tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    if let (Some(hub), Some(sess)) = (hub.upgrade(), sess.upgrade()) {
                        hub.grace_expired(&sess, call, pid).await;
                    }
                }));
                pid
            };
            self.broadcast(call, Some(pid), ServerMessage::ParticipantReconnecting {
                call_id: WireCallId::from_uuid(call),
                participant_id: ParticipantId::from_uuid(pid),
            });
            self.event(call, "reconnecting", Some(pid), serde_json::json!({})).await;
        }
    }

    async fn grace_expired(&self, session: &Arc<Session>, call: Uuid, pid: Uuid) {
        let still_away = self
            .rooms()
            .get(&call)
            .and_then(|r| r.get(&pid))
            .is_some_and(|s| !s.connected && Arc::ptr_eq(&s.session, session));
        if still_away {
            tracing::info!(call = %call, participant = %pid, "reconnect grace period over: removing");
            self.remove(call, pid, LeaveReason::TimedOut).await;
        }
    }

    /// The session resumed on a new socket: its participants are back.
    pub async fn reattached(&self, session: &Arc<Session>) {
        for call in session.calls() {
            let pid = {
                let mut rooms = self.rooms();
                let Some(slot) = rooms.get_mut(&call).and_then(|r| r.values_mut().find(|s| Arc::ptr_eq(&s.session, session))) else {
                    continue;
                };
                if slot.connected {
                    continue;
                }
                slot.connected = true;
                if let Some(g) = slot.grace.take() {
                    g.abort();
                }
                slot.member.participant_id
            };
            self.broadcast(call, Some(pid), ServerMessage::ParticipantReconnected {
                call_id: WireCallId::from_uuid(call),
                participant_id: ParticipantId::from_uuid(pid),
            });
            self.event(call, "reconnected", Some(pid), serde_json::json!({})).await;
        }
    }

    /// The session is gone for good (resume window over): remove it from its calls.
    pub async fn session_expired(&self, session: &Arc<Session>) {
        for call in session.calls() {
            if let Ok((pid, _, _)) = self.slot_media(session, call) {
                self.remove(call, pid, LeaveReason::TimedOut).await;
            }
        }
    }

    /// Server shutdown: every call on this node is told.
    pub async fn shutdown(&self) {
        let calls: Vec<Uuid> = self.rooms().keys().copied().collect();
        for call in calls {
            self.broadcast(call, None, ServerMessage::Goodbye {
                reason: signaling_protocol::GoodbyeReason::ServerShutdown,
                reconnect: true,
            });
        }
    }
}

/// Carries one participant's relay events to its session.
async fn pump(
    hub: std::sync::Weak<Hub>,
    session: Arc<Session>,
    call: Uuid,
    pid: Uuid,
    mut rx: mpsc::Receiver<RelayEvent>,
    order: Arc<tokio::sync::Mutex<()>>,
) {
    let call_id = WireCallId::from_uuid(call);
    while let Some(ev) = rx.recv().await {
        let _turn = order.lock().await;
        match ev {
            RelayEvent::Offer { sdp } => {
                if let Some(description) = convert::<_, SessionDescription>(&sdp) {
                    session.send(ServerMessage::SdpOffer { call_id, description }, None);
                }
            }
            RelayEvent::IceCandidate { candidate } => {
                if let Some(candidate) = convert::<_, IceCandidate>(&candidate) {
                    session.send(ServerMessage::IceCandidate { call_id, candidate }, None);
                }
            }
            RelayEvent::ConnectionState { state } => {
                tracing::debug!(call = %call, participant = %pid, ?state, "media connection state");
            }
            RelayEvent::TrackPublished { track } => {
                if let Some(hub) = hub.upgrade() {
                    hub.event(call, "track_published", Some(pid), serde_json::json!({"kind": format!("{:?}", track.kind), "codec": track.mime_type})).await;
                }
            }
            RelayEvent::Closed => break,
            _ => {}
        }
    }
}
