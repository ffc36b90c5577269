//! The queue service of one node: takes tickets, runs the dispatcher, and carries what changes
//! to the WebSocket sessions connected to this node.
//!
//! - The **dispatcher** is one task per node. It wakes on every queue event (a [`Notify`]) and
//!   on a short tick, applies the pure policy ([`crate::domain::queue::plan`]) to the queued
//!   tickets and the agents *connected to this node*, and claims the offers in the database
//!   (exactly once, see [`crate::store::queue`]). It also expires offers, starts and ends
//!   wrap-ups, brings due appointments into the queue, abandons tickets of residents who did
//!   not come back within the grace period, and expires the queue at closing time.
//! - **Pushes** are derived from the database: every tick the node reads the active tickets of
//!   the residents, devices and helpers connected to it and sends what changed (position,
//!   estimated wait, state, the call). So a ticket accepted on another node still reaches a
//!   resident connected here, one tick later.
//!
//! Layout: [`settings`] (flags), this file (the service).

pub mod settings;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use signaling_protocol::{
    CallId as WireCallId, ErrorCode, MatterSummary, OfferId, ParticipantRole, RequestId, ResidentSummary, ServerMessage,
    TicketId as WireTicketId, TicketNo, Timestamp, UserId, WithdrawReason,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::call::{Call, CallState, Member, MemberRole};
use crate::domain::clock::{to_datetime, Clock, Millis};
use crate::domain::identity::Role;
use crate::domain::ids::{ResidentId, StaffId};
use crate::domain::queue::{
    self as policy, AgentView, Channel, Policy, Presence, Priority, QueuedTicket, ServiceHours, SkillFigures, TicketState,
};
use crate::store::queue::{AcceptOutcome, AgentPresence, NewTicket, OfferClaim, Ticket};
use crate::store::{Store, StoreError};
use crate::ws::hub::Refusal;
use crate::ws::Session;
pub use settings::QueueSettings;

/// Why a ticket cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// Outside service hours: book an appointment or ask for a call-back.
    #[error("outside service hours")]
    Closed {
        /// The next opening (Unix ms), if within 60 days.
        next_open: Option<Millis>,
    },
    /// No such (active) matter.
    #[error("unknown matter")]
    UnknownMatter,
    /// No such resident.
    #[error("unknown resident")]
    UnknownResident,
    /// The slot is not a slot of the service hours, is past, or is full.
    #[error("slot unavailable: {0}")]
    Slot(&'static str),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a ticket is taken as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeMode {
    /// Join the queue now.
    Now,
    /// A call-back: keeps a place; an agent calls the resident back (also outside hours).
    Callback,
    /// An appointment at a slot start (Unix ms).
    Appointment(Millis),
}

/// A request to take a ticket.
#[derive(Debug, Clone)]
pub struct TakeTicket {
    /// The matter.
    pub matter_code: String,
    /// The resident whose matter it is.
    pub resident_id: Uuid,
    /// Who takes it (resident, device or helper).
    pub taken_by: Uuid,
    /// Their role.
    pub taken_by_role: Role,
    /// Channel.
    pub channel: Channel,
    /// Idempotency key, already scoped to the caller.
    pub dedupe_key: Option<String>,
    /// Now, a call-back, or an appointment.
    pub mode: TakeMode,
    /// Phone to call back, if not the app.
    pub callback_phone: Option<String>,
}

/// A ticket with its live place.
#[derive(Debug, Clone)]
pub struct TicketStatus {
    /// The ticket.
    pub ticket: Ticket,
    /// Place among the tickets of its skill, 1 = next (while waiting).
    pub position: Option<u32>,
    /// Estimated wait, seconds (while waiting).
    pub estimated_wait_s: Option<u32>,
}

type Pushed = (TicketState, Option<u32>, Option<u32>, Instant, [Uuid; 2]);

#[derive(Default)]
struct Local {
    /// Sessions on this node by subject.
    sessions: HashMap<Uuid, Vec<Weak<Session>>>,
    /// Supervisors subscribed to figures.
    supervisors: Vec<Weak<Session>>,
    /// Last pushed (state, position, eta, when, [taker, resident]) per ticket.
    pushed: HashMap<Uuid, Pushed>,
    /// (ticket, subject) pairs told about their call.
    told: HashSet<(Uuid, Uuid)>,
    /// Resident-side subjects whose connection dropped: keep their place until then.
    grace: HashMap<Uuid, Millis>,
    /// Agents' skills (loaded when they set a presence).
    skills: HashMap<Uuid, Vec<String>>,
    /// Agents who were available when their connection dropped.
    was_available: HashSet<Uuid>,
}

/// Caches reads that change rarely.
#[derive(Default)]
struct Cache {
    matters: HashMap<String, MatterSummary>,
    handle_s: HashMap<String, (u32, Instant)>,
}

/// The queue service of this node.
pub struct Queue {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// This node's id (agents' presence rows name the node holding their socket).
    pub node: Uuid,
    policy: Policy,
    hours: ServiceHours,
    settings: QueueSettings,
    notify: Notify,
    local: Mutex<Local>,
    cache: Mutex<Cache>,
    takes: Arc<TakeCommits>,
}

type TakeReply = tokio::sync::oneshot::Sender<Result<(Ticket, bool), StoreError>>;

/// Group commit of takes: concurrent takes wait in `pending`; one committer task at a time
/// stores everything pending in one transaction (one fsync for the batch instead of one per
/// ticket) and answers each. The committer runs as its own task, so a take whose caller goes
/// away (a dropped HTTP request) never strands the others.
#[derive(Default)]
struct TakeCommits {
    pending: Mutex<Vec<(NewTicket, Millis, TakeReply)>>,
    /// Held while a batch commits; the next batch forms meanwhile.
    writer: tokio::sync::Mutex<()>,
}

impl TakeCommits {
    /// Most tickets in one transaction.
    const MAX_BATCH: usize = 256;

    async fn commit(self: Arc<Self>, store: Arc<dyn Store>, n: NewTicket, now: Millis) -> Result<(Ticket, bool), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            p.push((n, now, tx));
            p.len() == 1
        };
        if lead {
            let me = self.clone();
            tokio::spawn(async move { me.run(store).await });
        }
        rx.await.map_err(|_| StoreError::Db("the take committer stopped".into()))?
    }

    async fn run(&self, store: Arc<dyn Store>) {
        let _writer = self.writer.lock().await;
        loop {
            let batch: Vec<_> = {
                let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                let n = p.len().min(Self::MAX_BATCH);
                p.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let items: Vec<(NewTicket, Millis)> = batch.iter().map(|(n, at, _)| (n.clone(), *at)).collect();
            match store.create_tickets(&items).await {
                Ok(out) => {
                    for ((_, _, reply), r) in batch.into_iter().zip(out) {
                        let _ = reply.send(Ok(r));
                    }
                }
                // The batch failed as a whole: each on its own, so one bad take fails alone.
                Err(_) => {
                    for (n, at, reply) in batch {
                        let _ = reply.send(store.create_ticket(&n, at).await);
                    }
                }
            }
            // Takes that arrived while this batch committed found `pending` non-empty and did
            // not start a committer: this one goes on with them.
        }
    }
}

fn wire<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

fn ts(ms: Millis) -> Timestamp {
    Timestamp::new(to_datetime(ms))
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "queue: storage failed");
    Refusal(ErrorCode::Internal, "internal error".into())
}

fn participant_role(r: Role) -> ParticipantRole {
    match r {
        Role::Device => ParticipantRole::Device,
        Role::Helper => ParticipantRole::Helper,
        Role::Agent => ParticipantRole::Agent,
        _ => ParticipantRole::Resident,
    }
}

/// A masked name: first and last character kept (`张*明`).
pub fn mask_name(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    match chars.len() {
        0 => "*".into(),
        1 => format!("{}*", chars[0]),
        2 => format!("{}*", chars[0]),
        n => format!("{}{}{}", chars[0], "*".repeat(n - 2), chars[n - 1]),
    }
}

impl Queue {
    /// A queue service over `store`; call [`Queue::start`] to run its dispatcher.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: QueueSettings, hours: ServiceHours) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Queue {
            store,
            clock,
            node: Uuid::now_v7(),
            policy: settings.policy()?,
            hours,
            settings,
            notify: Notify::new(),
            local: Mutex::new(Local::default()),
            cache: Mutex::new(Cache::default()),
            takes: Arc::default(),
        }))
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Service hours in effect.
    pub fn hours(&self) -> &ServiceHours {
        &self.hours
    }

    /// Settings in effect.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Starts the dispatcher; it stops when the service is dropped.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let tick = Duration::from_millis(self.settings.queue_tick_ms.max(10));
        tokio::spawn(async move {
            let mut last_slow = Instant::now() - Duration::from_secs(10);
            let mut last_figures = Instant::now();
            loop {
                let Some(q) = weak.upgrade() else { break };
                let woke = tokio::time::timeout(tick, q.notify.notified()).await;
                let slow = last_slow.elapsed() >= Duration::from_secs(1);
                if slow {
                    last_slow = Instant::now();
                }
                if let Err(e) = q.round(slow || woke.is_err()).await {
                    tracing::warn!(error = %e, "queue: dispatcher round failed; retrying");
                    tokio::time::sleep(tick).await;
                }
                if last_figures.elapsed() >= Duration::from_secs(5) {
                    last_figures = Instant::now();
                    q.push_figures().await;
                }
            }
        })
    }

    /// Wakes the dispatcher.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    // ---------- sessions on this node ----------

    fn sessions_of(&self, subject: Uuid) -> Vec<Arc<Session>> {
        let mut l = self.local();
        let Some(v) = l.sessions.get_mut(&subject) else { return Vec::new() };
        v.retain(|w| w.strong_count() > 0);
        v.iter().filter_map(Weak::upgrade).collect()
    }

    fn send_to(&self, subject: Uuid, msg: &ServerMessage) -> bool {
        let ss = self.sessions_of(subject);
        for s in &ss {
            s.send(msg.clone(), None);
        }
        !ss.is_empty()
    }

    fn connected(&self, subject: Uuid) -> bool {
        self.sessions_of(subject).iter().any(|s| s.detached_since().is_none())
    }

    /// A session opened or resumed on this node.
    pub async fn attach(&self, s: &Arc<Session>) {
        let restore = {
            let mut l = self.local();
            let v = l.sessions.entry(s.subject).or_default();
            if !v.iter().any(|w| w.as_ptr() == Arc::as_ptr(s)) {
                v.push(Arc::downgrade(s));
            }
            l.grace.remove(&s.subject);
            // Push the current state of this subject's tickets afresh.
            let subject = s.subject;
            l.told.retain(|(_, who)| *who != subject);
            l.pushed.retain(|_, p| !p.4.contains(&subject));
            s.role == Role::Agent && l.was_available.remove(&s.subject)
        };
        if restore {
            if let Err(e) = self.put_presence(s.subject, Presence::Available, None).await {
                tracing::warn!(error = %e, "queue: could not restore presence");
            }
        }
        self.wake();
    }

    /// A session's socket dropped. An agent is taken out of rotation and their offers go back
    /// to the queue; a resident keeps their place for the grace period.
    pub async fn detached(&self, s: &Arc<Session>) {
        if self.connected(s.subject) {
            return;
        }
        let now = self.clock.now_ms();
        match s.role {
            Role::Agent => {
                let p = self.store.presence(s.subject).await.ok().flatten();
                if p.as_ref().is_some_and(|p| matches!(p.status, Presence::Available | Presence::Away | Presence::OnBreak)) {
                    if p.as_ref().is_some_and(|p| p.status == Presence::Available) {
                        self.local().was_available.insert(s.subject);
                    }
                    let _ = self.put_presence(s.subject, Presence::Offline, Some("disconnected".into())).await;
                }
                self.withdraw_offers_of(s.subject, WithdrawReason::AgentUnavailable).await;
            }
            Role::Resident | Role::Device | Role::Helper => {
                let deadline = now + self.settings.queue_grace_secs as i64 * 1000;
                self.local().grace.insert(s.subject, deadline);
            }
            _ => {}
        }
        self.wake();
    }

    // ---------- taking tickets ----------

    async fn matter_summary(&self, code: &str) -> Result<Option<MatterSummary>, StoreError> {
        let cached = self.cache.lock().unwrap_or_else(PoisonError::into_inner).matters.get(code).cloned();
        if let Some(m) = cached {
            return Ok(Some(m));
        }
        let Some(m) = self.store.matter(code).await?.filter(|m| m.active) else { return Ok(None) };
        let s = MatterSummary { code: m.spec.code.clone(), class: m.spec.class.clone(), name_zh: m.spec.name_zh.clone(), name_en: m.spec.name_en.clone() };
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).matters.insert(code.to_string(), s.clone());
        Ok(Some(s))
    }

    /// Takes a ticket (or books an appointment, or asks for a call-back). Returns the ticket and
    /// whether it is new (a retry returns the first one).
    pub async fn take(&self, req: TakeTicket) -> Result<(Ticket, bool), TakeError> {
        let now = self.clock.now_ms();
        if req.matter_code.len() > 32 {
            return Err(TakeError::UnknownMatter);
        }
        let matter = self.matter_summary(&req.matter_code).await?.ok_or(TakeError::UnknownMatter)?;
        let resident = self.store.resident_by_id(ResidentId(req.resident_id)).await?.ok_or(TakeError::UnknownResident)?;
        let mut priority = Vec::new();
        if resident.elderly || resident.birth_date.is_some_and(|b| crate::domain::identity::age_on(b, policy::local(now).0) >= 60) {
            priority.push(Priority::Elderly);
        }
        if resident.disabled {
            priority.push(Priority::Disabled);
        }
        let (state, appointment_at) = match req.mode {
            TakeMode::Now => {
                if !self.hours.is_open(now) {
                    return Err(TakeError::Closed { next_open: self.hours.next_open(now) });
                }
                (TicketState::Waiting, None)
            }
            TakeMode::Callback => {
                priority.push(Priority::Callback);
                (TicketState::Callback, None)
            }
            TakeMode::Appointment(slot) => {
                let (date, _) = policy::local(slot);
                if slot <= now || !self.hours.slots(date, self.settings.appointment_slot_min).contains(&slot) {
                    return Err(TakeError::Slot("not a future slot of the service hours"));
                }
                if self.store.count_appointments(&matter.class, slot).await? >= self.settings.appointment_capacity as i64 {
                    return Err(TakeError::Slot("the slot is full"));
                }
                priority.push(Priority::Appointment);
                (TicketState::Appointment, Some(slot))
            }
        };
        let ticket = Ticket {
            id: Uuid::now_v7(),
            ticket_no: String::new(),
            day: String::new(),
            matter_code: matter.code.clone(),
            skill: matter.class.clone(),
            resident_id: resident.id.0,
            taken_by: req.taken_by,
            taken_by_role: req.taken_by_role,
            channel: req.channel,
            priority,
            state,
            queued_at: now,
            created_at: now,
            appointment_at,
            callback_phone: req.callback_phone,
            offer_id: None,
            offered_to: None,
            offer_expires_at: None,
            excluded: Vec::new(),
            agent_id: None,
            call_id: None,
            answered_at: None,
            wrap_up_at: None,
            done_at: None,
        };
        let prefix = policy::ticket_prefix(&matter.class);
        let new = NewTicket { ticket, prefix, dedupe_key: req.dedupe_key };
        let out = self.takes.clone().commit(self.store.clone(), new, now).await?;
        if out.1 {
            self.wake();
        }
        Ok(out)
    }

    /// Moves a waiting ticket to a call-back: it keeps its place; an agent calls back.
    pub async fn to_callback(&self, ticket: Uuid, by: Uuid) -> Result<Option<Ticket>, StoreError> {
        let t = self.store.transition(ticket, &[TicketState::Waiting], TicketState::Callback, "callback", Some(by), self.clock.now_ms()).await?;
        self.wake();
        Ok(t)
    }

    /// The ticket's resident or taker leaves the queue.
    pub async fn cancel(&self, ticket: &Ticket, by: Uuid) -> Result<Option<Ticket>, StoreError> {
        let from = [TicketState::Waiting, TicketState::Offered, TicketState::Callback, TicketState::Appointment];
        let t = self.store.transition(ticket.id, &from, TicketState::Abandoned, "cancelled", Some(by), self.clock.now_ms()).await?;
        if t.is_some() && ticket.state == TicketState::Offered {
            if let (Some(agent), Some(offer)) = (ticket.offered_to, ticket.offer_id) {
                self.send_to(agent, &ServerMessage::OfferWithdrawn { offer_id: OfferId::from_uuid(offer), reason: WithdrawReason::Cancelled });
            }
        }
        self.wake();
        Ok(t)
    }

    /// Position and estimated wait of a ticket (while it waits).
    pub async fn status(&self, t: Ticket) -> Result<TicketStatus, StoreError> {
        if !matches!(t.state, TicketState::Waiting | TicketState::Callback | TicketState::Offered) {
            return Ok(TicketStatus { ticket: t, position: None, estimated_wait_s: None });
        }
        let queued = self.store.queued_tickets(5000).await?;
        let presences = self.store.presences().await?;
        let places = self.places(&queued, &presences, self.clock.now_ms()).await;
        let (position, eta) = places.get(&t.id).copied().map_or((None, None), |(p, e)| (Some(p), Some(e)));
        Ok(TicketStatus { ticket: t, position, estimated_wait_s: eta })
    }

    async fn avg_handle_s(&self, skill: &str) -> u32 {
        let cached = self.cache.lock().unwrap_or_else(PoisonError::into_inner).handle_s.get(skill).copied();
        if let Some((v, at)) = cached {
            if at.elapsed() < Duration::from_secs(30) {
                return v;
            }
        }
        let v = match self.store.recent_handle_ms(skill, 20).await {
            Ok(d) => policy::average_s(&d, policy::DEFAULT_HANDLE_S),
            Err(_) => policy::DEFAULT_HANDLE_S,
        };
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).handle_s.insert(skill.to_string(), (v, Instant::now()));
        v
    }

    /// Places (position, eta) of queued tickets, per skill in policy order.
    async fn places(&self, queued: &[Ticket], presences: &[AgentPresence], now: Millis) -> HashMap<Uuid, (u32, u32)> {
        let mut by_skill: HashMap<&str, Vec<&Ticket>> = HashMap::new();
        for t in queued {
            by_skill.entry(t.skill.as_str()).or_default().push(t);
        }
        let on_duty: Vec<&AgentPresence> =
            presences.iter().filter(|p| matches!(p.status, Presence::Available | Presence::OnCall | Presence::WrapUp)).collect();
        let mut out = HashMap::new();
        for (skill, mut ts) in by_skill {
            ts.sort_by_key(|t| policy::rank(&to_queued(t), now));
            let agents = {
                let l = self.local();
                on_duty.iter().filter(|p| l.skills.get(&p.agent_id).is_none_or(|s| s.iter().any(|x| x == skill))).count() as u32
            };
            let handle = self.avg_handle_s(skill).await;
            for (i, t) in ts.iter().enumerate() {
                let pos = i as u32 + 1;
                out.insert(t.id, (pos, policy::estimate_wait_s(pos, agents, handle)));
            }
        }
        out
    }

    // ---------- agents ----------

    async fn put_presence(&self, agent: Uuid, status: Presence, reason: Option<String>) -> Result<AgentPresence, StoreError> {
        let now = self.clock.now_ms();
        let prev = self.store.presence(agent).await?;
        let idle_since = match &prev {
            Some(p) if p.status == Presence::Available && status == Presence::Available => p.idle_since,
            _ => now,
        };
        let p = AgentPresence {
            agent_id: agent,
            status,
            reason,
            since: now,
            idle_since,
            node: (status != Presence::Offline).then_some(self.node),
            last_seen: now,
        };
        self.store.put_presence(&p).await?;
        self.tell_presence(&p);
        Ok(p)
    }

    fn tell_presence(&self, p: &AgentPresence) {
        let Some(status) = wire(p.status.as_str()) else { return };
        let msg = ServerMessage::PresenceUpdate { user_id: UserId::from_uuid(p.agent_id), status, reason: p.reason.clone(), since: ts(p.since) };
        self.send_to(p.agent_id, &msg);
        self.to_supervisors(&msg);
    }

    fn to_supervisors(&self, msg: &ServerMessage) {
        let sups: Vec<Arc<Session>> = {
            let mut l = self.local();
            l.supervisors.retain(|w| w.strong_count() > 0);
            l.supervisors.iter().filter_map(Weak::upgrade).collect()
        };
        for s in sups {
            s.send(msg.clone(), None);
        }
    }

    async fn withdraw_offers_of(&self, agent: Uuid, reason: WithdrawReason) {
        let now = self.clock.now_ms();
        let offers = match self.store.open_offers_of(agent).await {
            Ok(o) => o,
            Err(e) => return tracing::warn!(error = %e, "queue: could not read offers"),
        };
        for t in offers {
            let Some(offer) = t.offer_id else { continue };
            if let Ok(Some(_)) = self.store.return_offer(offer, agent, "agent_unavailable", now).await {
                self.send_to(agent, &ServerMessage::OfferWithdrawn { offer_id: OfferId::from_uuid(offer), reason });
            }
        }
        self.wake();
    }

    /// `set_presence` from an agent.
    pub async fn set_presence(&self, s: &Arc<Session>, status: Presence, reason: Option<String>, reply_to: Option<RequestId>) -> Result<(), Refusal> {
        if s.role != Role::Agent {
            return Err(Refusal(ErrorCode::Forbidden, "only agents have a presence".into()));
        }
        let staff = self.store.staff_by_id(StaffId(s.subject)).await.map_err(internal)?.ok_or_else(|| Refusal(ErrorCode::Forbidden, "unknown agent".into()))?;
        self.local().skills.insert(s.subject, staff.skills.clone());
        self.local().was_available.remove(&s.subject);
        if status == Presence::Available {
            // One transaction: a call that just ended goes to wrap-up, wrap-ups are done, the
            // agent is available. Another node may be moving the ended call to wrap-up right
            // now (its rows are locked and skipped here): give it a moment before refusing.
            let mut tries = 0;
            let (p, done) = loop {
                if let Some(out) = self.store.make_available(s.subject, self.node, self.clock.now_ms()).await.map_err(internal)? {
                    break out;
                }
                tries += 1;
                if tries >= 40 {
                    return Err(Refusal(ErrorCode::Forbidden, "you are in a call; end it first".into()));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            };
            for t in done {
                self.push_ticket(&t, None, None, true);
            }
            self.tell_presence(&p);
        } else {
            self.withdraw_offers_of(s.subject, WithdrawReason::AgentUnavailable).await;
            self.put_presence(s.subject, status, reason).await.map_err(internal)?;
        }
        // The answer to the request is the presence update itself (sent above); mark the
        // request done.
        s.send(ServerMessage::Ack {}, reply_to);
        self.wake();
        Ok(())
    }

    /// `accept_offer` from an agent: opens the call, tells both sides.
    pub async fn accept(&self, s: &Arc<Session>, offer_id: Uuid, reply_to: Option<RequestId>) -> Result<(), Refusal> {
        if s.role != Role::Agent {
            return Err(Refusal(ErrorCode::Forbidden, "only agents accept offers".into()));
        }
        let expired = || Refusal(ErrorCode::OfferExpired, "the offer is no longer open".into());
        let offers = self.store.open_offers_of(s.subject).await.map_err(internal)?;
        let t = offers.into_iter().find(|t| t.offer_id == Some(offer_id)).ok_or_else(expired)?;
        let now = self.clock.now_ms();
        let agent = self.store.staff_by_id(StaffId(s.subject)).await.map_err(internal)?.ok_or_else(expired)?;
        let resident = self.store.resident_by_id(ResidentId(t.resident_id)).await.map_err(internal)?.ok_or_else(expired)?;
        let resident_name = if resident.name.is_empty() { resident.phone.masked() } else { resident.name.clone() };
        let call = Call {
            id: Uuid::now_v7(),
            opened_by: s.subject,
            resident_id: Some(t.resident_id),
            matter_code: Some(t.matter_code.clone()),
            ticket_id: Some(t.id),
            state: CallState::Open,
            created_at: now,
            ended_at: None,
            end_reason: None,
            ended_by: None,
        };
        let member = |subject: Uuid, role: MemberRole, name: String| Member {
            call_id: call.id,
            participant_id: Uuid::now_v7(),
            subject,
            role,
            display_name: name,
            added_at: now,
            added_by: None,
        };
        let mut members = vec![
            member(s.subject, MemberRole::Agent, agent.display_name.clone()),
            member(t.resident_id, MemberRole::Resident, resident_name.clone()),
        ];
        match t.taken_by_role {
            Role::Device => members.push(member(t.taken_by, MemberRole::Device, format!("{resident_name} (device)"))),
            Role::Helper => {
                let name = self.store.staff_by_id(StaffId(t.taken_by)).await.ok().flatten().map_or("helper".into(), |h| h.display_name);
                members.push(member(t.taken_by, MemberRole::Helper, name));
            }
            _ => {}
        }
        match self.store.accept_offer(offer_id, s.subject, &call, &members, now).await.map_err(internal)? {
            AcceptOutcome::NotOpen => Err(expired()),
            AcceptOutcome::Accepted(t) => {
                s.send(ServerMessage::Ack {}, reply_to);
                let assigned = ServerMessage::CallAssigned {
                    call_id: WireCallId::from_uuid(call.id),
                    ticket_id: Some(WireTicketId::from_uuid(t.id)),
                    role: ParticipantRole::Agent,
                };
                self.send_to(s.subject, &assigned);
                if let Ok(Some(p)) = self.store.presence(s.subject).await {
                    self.tell_presence(&p);
                }
                // The resident side, if connected here (other nodes tell theirs from the database).
                self.push_ticket(&t, None, None, true);
                self.wake();
                Ok(())
            }
        }
    }

    /// `decline_offer` from an agent: the ticket goes to the next agent.
    pub async fn decline(&self, s: &Arc<Session>, offer_id: Uuid, reply_to: Option<RequestId>) -> Result<(), Refusal> {
        if s.role != Role::Agent {
            return Err(Refusal(ErrorCode::Forbidden, "only agents decline offers".into()));
        }
        match self.store.return_offer(offer_id, s.subject, "declined", self.clock.now_ms()).await.map_err(internal)? {
            Some(_) => {
                s.send(ServerMessage::Ack {}, reply_to);
                self.wake();
                Ok(())
            }
            None => Err(Refusal(ErrorCode::OfferExpired, "the offer is no longer open".into())),
        }
    }

    /// `cancel_ticket` over the WebSocket.
    pub async fn cancel_ws(&self, s: &Arc<Session>, ticket: Uuid, reply_to: Option<RequestId>) -> Result<(), Refusal> {
        let not_found = || Refusal(ErrorCode::TicketNotFound, "no such ticket of yours".into());
        let t = self.store.ticket(ticket).await.map_err(internal)?.ok_or_else(not_found)?;
        if t.taken_by != s.subject && t.resident_id != s.subject {
            return Err(not_found());
        }
        match self.cancel(&t, s.subject).await.map_err(internal)? {
            Some(t) => {
                s.send(ServerMessage::Ack {}, reply_to);
                self.push_ticket(&t, None, None, true);
                Ok(())
            }
            None => Err(Refusal(ErrorCode::Forbidden, "the ticket is no longer waiting".into())),
        }
    }

    /// `subscribe_figures` / `unsubscribe_figures` (supervisors).
    pub async fn subscribe(&self, s: &Arc<Session>, on: bool, reply_to: Option<RequestId>) -> Result<(), Refusal> {
        if !matches!(s.role, Role::Supervisor | Role::Admin) {
            return Err(Refusal(ErrorCode::Forbidden, "only supervisors receive figures".into()));
        }
        {
            let mut l = self.local();
            l.supervisors.retain(|w| w.strong_count() > 0 && w.as_ptr() != Arc::as_ptr(s));
            if on {
                l.supervisors.push(Arc::downgrade(s));
            }
        }
        if on {
            let figures = self.figures().await.map_err(internal)?;
            s.send(self.figures_message(figures), reply_to);
        } else {
            s.send(ServerMessage::Ack {}, reply_to);
        }
        Ok(())
    }

    // ---------- figures ----------

    /// Live figures per skill.
    pub async fn figures(&self) -> Result<Vec<SkillFigures>, StoreError> {
        let now = self.clock.now_ms();
        let day_start = policy::local_midnight(policy::local(now).0);
        let facts = self.store.ticket_facts(day_start).await?;
        let presences = self.store.presences().await?;
        let mut skills: Vec<String> = self.store.list_classes().await?.into_iter().map(|c| c.code).collect();
        skills.sort();
        let mut agents = Vec::new();
        for p in presences {
            let cached = self.local().skills.get(&p.agent_id).cloned();
            let skills = match cached {
                Some(s) => s,
                None => self.store.staff_by_id(StaffId(p.agent_id)).await?.map(|s| s.skills).unwrap_or_default(),
            };
            agents.push(AgentView { id: StaffId(p.agent_id), skills, presence: p.status, idle_since: p.idle_since, has_offer: false });
        }
        Ok(policy::figures(&skills, &facts, &agents, now))
    }

    fn figures_message(&self, figures: Vec<SkillFigures>) -> ServerMessage {
        let skills = figures
            .into_iter()
            .map(|f| signaling_protocol::SkillFigures {
                skill: f.skill,
                waiting: f.waiting,
                longest_wait_s: f.longest_wait_s,
                agents: signaling_protocol::AgentCounts {
                    available: f.agents.get("available").copied().unwrap_or(0),
                    on_call: f.agents.get("on_call").copied().unwrap_or(0),
                    wrap_up: f.agents.get("wrap_up").copied().unwrap_or(0),
                    on_break: f.agents.get("on_break").copied().unwrap_or(0),
                    away: f.agents.get("away").copied().unwrap_or(0),
                    offline: f.agents.get("offline").copied().unwrap_or(0),
                },
                handled_today: f.handled_today,
                avg_wait_s: f.avg_wait_s,
                avg_handle_s: f.avg_handle_s,
            })
            .collect();
        ServerMessage::SupervisorFigures { at: ts(self.clock.now_ms()), skills }
    }

    async fn push_figures(&self) {
        let any = {
            let mut l = self.local();
            l.supervisors.retain(|w| w.strong_count() > 0);
            !l.supervisors.is_empty()
        };
        if !any {
            return;
        }
        match self.figures().await {
            Ok(f) => {
                let msg = self.figures_message(f);
                self.to_supervisors(&msg);
            }
            Err(e) => tracing::warn!(error = %e, "queue: figures failed"),
        }
    }

    // ---------- pushes to the resident side ----------

    /// Sends a ticket's state to its resident side on this node when it changed (or when
    /// `force`), and `call_assigned` once it is in a call.
    fn push_ticket(&self, t: &Ticket, position: Option<u32>, eta: Option<u32>, force: bool) {
        let Some(state) = wire(t.state.as_str()) else { return };
        let waiting = matches!(t.state, TicketState::Waiting | TicketState::Callback);
        let (position, eta) = if waiting { (position, eta) } else { (None, None) };
        let changed = {
            let mut l = self.local();
            let prev = l.pushed.get(&t.id).cloned();
            let changed = match prev {
                None => true,
                Some((s, p, e, at, _)) => s != t.state || ((p != position || e != eta) && at.elapsed() >= Duration::from_secs(2)),
            };
            if t.state.is_final() {
                l.pushed.remove(&t.id);
            } else if changed || force {
                l.pushed.insert(t.id, (t.state, position, eta, Instant::now(), [t.taken_by, t.resident_id]));
            }
            changed || force
        };
        let subjects: Vec<(Uuid, Role)> = if t.taken_by == t.resident_id {
            vec![(t.resident_id, Role::Resident)]
        } else {
            vec![(t.taken_by, t.taken_by_role), (t.resident_id, Role::Resident)]
        };
        if changed {
            let msg = ServerMessage::TicketUpdate {
                ticket_id: WireTicketId::from_uuid(t.id),
                ticket_no: TicketNo(t.ticket_no.clone()),
                matter_code: t.matter_code.clone(),
                state,
                position,
                estimated_wait_s: eta,
                call_id: t.call_id.map(WireCallId::from_uuid),
            };
            for (s, _) in &subjects {
                self.send_to(*s, &msg);
            }
        }
        if t.state == TicketState::InCall {
            if let Some(call) = t.call_id {
                for (s, role) in subjects {
                    let first = self.local().told.insert((t.id, s));
                    if first {
                        let msg = ServerMessage::CallAssigned {
                            call_id: WireCallId::from_uuid(call),
                            ticket_id: Some(WireTicketId::from_uuid(t.id)),
                            role: participant_role(role),
                        };
                        if !self.send_to(s, &msg) {
                            self.local().told.remove(&(t.id, s));
                        }
                    }
                }
            }
        }
        if t.state.is_final() {
            let mut l = self.local();
            l.told.retain(|(id, _)| *id != t.id);
        }
    }

    // ---------- the dispatcher ----------

    /// One round: housekeeping (when `slow`), dispatch, pushes.
    pub async fn round(&self, slow: bool) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        // Offers past their expiry: back to the queue, their agents away.
        for t in self.store.expire_offers(now).await? {
            if let (Some(agent), Some(offer)) = (t.offered_to, t.offer_id) {
                self.send_to(agent, &ServerMessage::OfferWithdrawn { offer_id: OfferId::from_uuid(offer), reason: WithdrawReason::Expired });
                if let Some(p) = self.store.presence(agent).await? {
                    self.tell_presence(&p);
                }
            }
        }
        if slow {
            self.housekeeping(now).await?;
        }
        let open = self.hours.is_open(now);
        let queued = self.store.queued_tickets(2000).await?;
        let presences = self.store.presences().await?;
        if open {
            self.dispatch(&queued, &presences, now).await?;
        }
        self.push_all(&presences, now).await?;
        Ok(())
    }

    async fn housekeeping(&self, now: Millis) -> Result<(), StoreError> {
        for t in self.store.start_wrap_ups(now).await? {
            if let Some(a) = t.agent_id {
                if let Some(p) = self.store.presence(a).await? {
                    self.tell_presence(&p);
                }
            }
        }
        for t in self.store.finish_long_wrap_ups(now, self.settings.wrap_up_max_secs as i64 * 1000).await? {
            if let Some(a) = t.agent_id {
                if let Some(p) = self.store.presence(a).await? {
                    self.tell_presence(&p);
                }
            }
        }
        self.store.due_appointments(now).await?;
        // Residents who did not come back within the grace period leave the queue.
        let due: Vec<Uuid> = {
            let l = self.local();
            l.grace.iter().filter(|(_, d)| **d <= now).map(|(s, _)| *s).collect()
        };
        for subject in due {
            self.local().grace.remove(&subject);
            if self.connected(subject) {
                continue;
            }
            for t in self.store.active_tickets_of(&[subject]).await? {
                if t.taken_by != subject {
                    continue;
                }
                if let Some(done) =
                    self.store.transition(t.id, &[TicketState::Waiting, TicketState::Offered], TicketState::Abandoned, "grace_expired", None, now).await?
                {
                    if let (TicketState::Offered, Some(agent), Some(offer)) = (t.state, t.offered_to, t.offer_id) {
                        self.send_to(agent, &ServerMessage::OfferWithdrawn { offer_id: OfferId::from_uuid(offer), reason: WithdrawReason::Cancelled });
                    }
                    self.push_ticket(&done, None, None, true);
                }
            }
        }
        // Heartbeat of this node; agents of nodes not heard from in 30 s go offline.
        self.store.touch_node(self.node, now).await?;
        self.store.drop_stale_agents(now - 30_000, now).await?;
        if !self.hours.is_open(now) {
            for t in self.store.expire_unserved(now).await? {
                self.push_ticket(&t, None, None, true);
            }
        }
        Ok(())
    }

    async fn dispatch(&self, queued: &[Ticket], presences: &[AgentPresence], now: Millis) -> Result<(), StoreError> {
        let offered: HashSet<Uuid> =
            queued.iter().filter(|t| t.state == TicketState::Offered).filter_map(|t| t.offered_to).collect();
        let agents: Vec<AgentView> = {
            let l = self.local();
            presences
                .iter()
                .filter(|p| p.node == Some(self.node) && p.status == Presence::Available)
                .filter(|p| l.sessions.get(&p.agent_id).is_some_and(|v| v.iter().any(|w| w.strong_count() > 0)))
                .map(|p| AgentView {
                    id: StaffId(p.agent_id),
                    skills: l.skills.get(&p.agent_id).cloned().unwrap_or_default(),
                    presence: p.status,
                    idle_since: p.idle_since,
                    has_offer: offered.contains(&p.agent_id),
                })
                .collect()
        };
        if agents.iter().all(|a| a.has_offer) {
            return Ok(());
        }
        let candidates: Vec<QueuedTicket> = queued.iter().filter(|t| t.state.is_dispatchable()).map(to_queued).collect();
        let plan = policy::plan(&candidates, &agents, now, &self.policy);
        if plan.is_empty() {
            return Ok(());
        }
        let expires_at = now + self.policy.offer_timeout_ms;
        let claims: Vec<OfferClaim> = plan
            .iter()
            .map(|(t, a)| OfferClaim { ticket_id: *t, agent_id: a.0, offer_id: Uuid::now_v7(), expires_at })
            .collect();
        let made = self.store.claim_offers(&claims, now).await?;
        let by_id: HashMap<Uuid, &Ticket> = queued.iter().map(|t| (t.id, t)).collect();
        for c in made {
            let Some(t) = by_id.get(&c.ticket_id) else { continue };
            let Some(matter) = self.matter_summary(&t.matter_code).await? else { continue };
            let (display_name, helper_name) = self.names(t).await;
            let msg = ServerMessage::TicketOffer {
                offer_id: OfferId::from_uuid(c.offer_id),
                ticket_id: WireTicketId::from_uuid(t.id),
                ticket_no: TicketNo(t.ticket_no.clone()),
                matter,
                resident: ResidentSummary {
                    display_name,
                    priority: t.priority.iter().filter_map(|p| wire(p.as_str())).collect(),
                    channel: wire(t.channel.as_str()).unwrap_or(signaling_protocol::Channel::Phone),
                    helper_name,
                },
                waited_s: ((now - t.queued_at).max(0) / 1000) as u32,
                expires_at: ts(c.expires_at),
                expires_in_ms: self.policy.offer_timeout_ms as u64,
            };
            self.send_to(c.agent_id, &msg);
            let mut offered = (*t).clone();
            offered.state = TicketState::Offered;
            self.push_ticket(&offered, None, None, false);
        }
        Ok(())
    }

    async fn names(&self, t: &Ticket) -> (String, Option<String>) {
        let name = match self.store.resident_by_id(ResidentId(t.resident_id)).await {
            Ok(Some(r)) if !r.name.is_empty() => mask_name(&r.name),
            Ok(Some(r)) => r.phone.masked(),
            _ => "*".into(),
        };
        let helper = if t.taken_by_role == Role::Helper {
            self.store.staff_by_id(StaffId(t.taken_by)).await.ok().flatten().map(|h| mask_name(&h.display_name))
        } else {
            None
        };
        (name, helper)
    }

    async fn push_all(&self, presences: &[AgentPresence], now: Millis) -> Result<(), StoreError> {
        let subjects: Vec<Uuid> = {
            let mut l = self.local();
            l.sessions.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            l.sessions
                .iter()
                .filter(|(_, v)| v.iter().filter_map(Weak::upgrade).any(|s| matches!(s.role, Role::Resident | Role::Device | Role::Helper)))
                .map(|(k, _)| *k)
                .collect()
        };
        if subjects.is_empty() {
            return Ok(());
        }
        let mut tickets = Vec::new();
        for chunk in subjects.chunks(200) {
            tickets.extend(self.store.active_tickets_of(chunk).await?);
        }
        // Tickets pushed before that are no longer active ended (maybe on another node): push
        // their final state once.
        let active: HashSet<Uuid> = tickets.iter().map(|t| t.id).collect();
        let here: HashSet<Uuid> = subjects.iter().copied().collect();
        let gone: Vec<Uuid> = {
            let mut l = self.local();
            // Nobody here to tell: forget (a reconnect pushes afresh).
            l.pushed.retain(|_, p| p.4.iter().any(|s| here.contains(s)));
            l.pushed.keys().filter(|id| !active.contains(id)).copied().collect()
        };
        for id in gone {
            match self.store.ticket(id).await? {
                Some(t) => self.push_ticket(&t, None, None, false),
                None => {
                    self.local().pushed.remove(&id);
                }
            }
        }
        if tickets.is_empty() {
            return Ok(());
        }
        let queued = self.store.queued_tickets(5000).await?;
        let places = self.places(&queued, presences, now).await;
        for t in tickets {
            let (p, e) = places.get(&t.id).copied().map_or((None, None), |(p, e)| (Some(p), Some(e)));
            self.push_ticket(&t, p, e, false);
        }
        Ok(())
    }
}

fn to_queued(t: &Ticket) -> QueuedTicket {
    QueuedTicket {
        id: t.id,
        skill: t.skill.clone(),
        priority: t.priority.clone(),
        appointment_at: t.appointment_at,
        queued_at: t.queued_at,
        excluded: t.excluded.iter().map(|u| StaffId(*u)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::mask_name;

    #[test]
    fn names_are_masked() {
        assert_eq!(mask_name("张桂英"), "张*英");
        assert_eq!(mask_name("周婷"), "周*");
        assert_eq!(mask_name("欧阳娜娜"), "欧**娜");
    }
}
