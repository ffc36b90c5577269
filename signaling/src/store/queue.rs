//! Storage of the queue: tickets (with readable per-day numbers from a counter row), every
//! transition with its time and cause, and agent presence.
//!
//! Claims on shared work are made here, exactly once, whatever the number of server processes:
//! every write that moves a ticket runs in one transaction and is conditional on the state it
//! expects. On PostgreSQL the rows are claimed with `SELECT ... FOR UPDATE SKIP LOCKED` (a
//! ticket another node is claiming is skipped, not waited for); on SQLite the transaction starts
//! with `BEGIN IMMEDIATE`, which takes the single write lock up front, so claims are serialized.

use async_trait::async_trait;
use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{PgStore, SqliteStore};
use super::{StoreError, StoreResult};
use crate::domain::call::{Call, Member};
use crate::domain::clock::Millis;
use crate::domain::identity::Role;
use crate::domain::queue::{Channel, Presence, Priority, TicketFact, TicketState};

/// A stored ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    /// Id.
    pub id: Uuid,
    /// Readable number, unique per day (`B023`).
    pub ticket_no: String,
    /// Local day (`YYYY-MM-DD`, Asia/Shanghai) the number belongs to.
    pub day: String,
    /// Matter code.
    pub matter_code: String,
    /// The skill needed (the matter's class).
    pub skill: String,
    /// The resident whose matter it is.
    pub resident_id: Uuid,
    /// Who took it: the resident, a device or a helper.
    pub taken_by: Uuid,
    /// The taker's role.
    pub taken_by_role: Role,
    /// Channel.
    pub channel: Channel,
    /// Priority reasons.
    pub priority: Vec<Priority>,
    /// State.
    pub state: TicketState,
    /// Its place in the queue (a call-back keeps it).
    pub queued_at: Millis,
    /// Created.
    pub created_at: Millis,
    /// Appointment slot start.
    pub appointment_at: Option<Millis>,
    /// Phone to call back (when it is a call-back to a number).
    pub callback_phone: Option<String>,
    /// The open (or last) offer.
    pub offer_id: Option<Uuid>,
    /// The agent the open offer is for.
    pub offered_to: Option<Uuid>,
    /// When the open offer expires.
    pub offer_expires_at: Option<Millis>,
    /// Agents who declined it or let it expire.
    pub excluded: Vec<Uuid>,
    /// The agent who accepted it.
    pub agent_id: Option<Uuid>,
    /// The call opened for it.
    pub call_id: Option<Uuid>,
    /// Accepted at.
    pub answered_at: Option<Millis>,
    /// Call ended (wrap-up began) at.
    pub wrap_up_at: Option<Millis>,
    /// Done at (or abandoned/expired at).
    pub done_at: Option<Millis>,
}

/// A ticket to create (its number is given by the store).
#[derive(Debug, Clone)]
pub struct NewTicket {
    /// The ticket, `ticket_no` and `day` ignored.
    pub ticket: Ticket,
    /// The prefix letter of its number.
    pub prefix: char,
    /// Idempotency: a second create with the same key returns the first ticket.
    pub dedupe_key: Option<String>,
}

/// One stored transition.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketEvent {
    /// Id (time ordered).
    pub id: Uuid,
    /// The ticket.
    pub ticket_id: Uuid,
    /// When.
    pub at: Millis,
    /// From (none at creation).
    pub from_state: Option<TicketState>,
    /// To.
    pub to_state: TicketState,
    /// Why: `taken`, `offered`, `accepted`, `declined`, `offer_expired`, `agent_unavailable`,
    /// `call_ended`, `wrap_up_done`, `cancelled`, `grace_expired`, `closed`, `callback`, `slot_due`.
    pub cause: String,
    /// Who caused it, if someone.
    pub actor: Option<Uuid>,
    /// Details (JSON).
    pub detail: serde_json::Value,
}

/// An offer to make: the ticket to the agent, until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferClaim {
    /// Ticket.
    pub ticket_id: Uuid,
    /// Agent.
    pub agent_id: Uuid,
    /// The new offer's id.
    pub offer_id: Uuid,
    /// Expiry.
    pub expires_at: Millis,
}

/// An agent's stored presence.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPresence {
    /// Agent.
    pub agent_id: Uuid,
    /// Status.
    pub status: Presence,
    /// Reason (breaks).
    pub reason: Option<String>,
    /// Since.
    pub since: Millis,
    /// Idle since (for "idle longest").
    pub idle_since: Millis,
    /// The node whose socket the agent is on.
    pub node: Option<Uuid>,
    /// Last heartbeat seen by that node.
    pub last_seen: Millis,
}

/// What happened to an offer being accepted.
#[derive(Debug, Clone)]
pub enum AcceptOutcome {
    /// Accepted: the ticket (now `in_call`) and its call were stored together.
    Accepted(Ticket),
    /// The offer is not open for this agent (expired, withdrawn, taken, or never theirs).
    NotOpen,
}

/// Queue storage.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Creates a ticket with the next number of its day and prefix, storing its first event.
    /// With a `dedupe_key` already used, or while the resident has an active ticket for the same
    /// matter, returns that ticket instead and `false`.
    async fn create_ticket(&self, t: &NewTicket, now: Millis) -> StoreResult<(Ticket, bool)>;
    /// Several [`QueueStore::create_ticket`]s (each with its own time) in one transaction, one
    /// commit: the group commit behind concurrent takes. All or none are stored.
    async fn create_tickets(&self, batch: &[(NewTicket, Millis)]) -> StoreResult<Vec<(Ticket, bool)>>;
    /// A ticket.
    async fn ticket(&self, id: Uuid) -> StoreResult<Option<Ticket>>;
    /// Tickets a subject took or that are for them (resident), newest first.
    async fn tickets_of(&self, subject: Uuid, limit: u32) -> StoreResult<Vec<Ticket>>;
    /// Active tickets taken by or for any of `subjects`.
    async fn active_tickets_of(&self, subjects: &[Uuid]) -> StoreResult<Vec<Ticket>>;
    /// Tickets waiting for an agent (`waiting`, `callback`, `offered`), by place.
    async fn queued_tickets(&self, limit: u32) -> StoreResult<Vec<Ticket>>;
    /// Makes offers, each exactly once: a claim succeeds only if the ticket is still
    /// dispatchable and the agent is still available with no open offer. Returns those made.
    async fn claim_offers(&self, claims: &[OfferClaim], now: Millis) -> StoreResult<Vec<OfferClaim>>;
    /// Accepts an open offer: the ticket goes `in_call` with `call` (stored with its members in
    /// the same transaction) and the agent `on_call`. Exactly one accept wins.
    async fn accept_offer(&self, offer_id: Uuid, agent: Uuid, call: &Call, members: &[Member], now: Millis) -> StoreResult<AcceptOutcome>;
    /// Gives an open offer back (declined, or the agent became unavailable): the ticket returns
    /// to where it was, the agent will not be offered it again. `None` when not open.
    async fn return_offer(&self, offer_id: Uuid, agent: Uuid, cause: &str, now: Millis) -> StoreResult<Option<Ticket>>;
    /// Offers past their expiry go back; their agents are set `away`. Returns the tickets as
    /// they were (with `offer_id`, `offered_to`).
    async fn expire_offers(&self, now: Millis) -> StoreResult<Vec<Ticket>>;
    /// Open offers of an agent (to withdraw when they go away).
    async fn open_offers_of(&self, agent: Uuid) -> StoreResult<Vec<Ticket>>;
    /// Moves a ticket from one of `from` to `to`, storing the event; `None` when it was in no
    /// state of `from`.
    async fn transition(&self, id: Uuid, from: &[TicketState], to: TicketState, cause: &str, actor: Option<Uuid>, now: Millis) -> StoreResult<Option<Ticket>>;
    /// `in_call` tickets whose call has ended go to `wrap_up`; their agents too.
    async fn start_wrap_ups(&self, now: Millis) -> StoreResult<Vec<Ticket>>;
    /// An agent's `wrap_up` tickets become `done` (the agent is ready again).
    async fn finish_wrap_ups(&self, agent: Uuid, now: Millis) -> StoreResult<Vec<Ticket>>;
    /// An agent becomes `available`, in one transaction: their tickets whose call ended go to
    /// wrap-up, their wrap-ups become `done`, and their presence is set (idle time kept if they
    /// were available already). `None` (nothing changed) while they are still on a call.
    async fn make_available(&self, agent: Uuid, node: Uuid, now: Millis) -> StoreResult<Option<(AgentPresence, Vec<Ticket>)>>;
    /// Wrap-ups longer than `max_ms` become `done` and their agents `available`.
    async fn finish_long_wrap_ups(&self, now: Millis, max_ms: i64) -> StoreResult<Vec<Ticket>>;
    /// Appointments whose slot has come join the queue.
    async fn due_appointments(&self, now: Millis) -> StoreResult<Vec<Ticket>>;
    /// Active appointments booked for a skill at a slot.
    async fn count_appointments(&self, skill: &str, slot: Millis) -> StoreResult<i64>;
    /// Stored transitions of a ticket, oldest first.
    async fn ticket_events(&self, id: Uuid) -> StoreResult<Vec<TicketEvent>>;
    /// Replaces an agent's presence.
    async fn put_presence(&self, p: &AgentPresence) -> StoreResult<()>;
    /// An agent's presence.
    async fn presence(&self, agent: Uuid) -> StoreResult<Option<AgentPresence>>;
    /// Every agent's presence.
    async fn presences(&self) -> StoreResult<Vec<AgentPresence>>;
    /// Heartbeat of a node for the agents on it.
    async fn touch_node(&self, node: Uuid, now: Millis) -> StoreResult<()>;
    /// Agents not offline whose node has not been heard from since `before` go offline.
    async fn drop_stale_agents(&self, before: Millis, now: Millis) -> StoreResult<Vec<Uuid>>;
    /// Facts of tickets created since `since` (for figures).
    async fn ticket_facts(&self, since: Millis) -> StoreResult<Vec<TicketFact>>;
    /// Handling times (answered → done) of the last `limit` done tickets of a skill, ms.
    async fn recent_handle_ms(&self, skill: &str, limit: u32) -> StoreResult<Vec<i64>>;
    /// Active tickets not yet final that started before `before` and never got an agent (for
    /// closing time): become `expired`.
    async fn expire_unserved(&self, now: Millis) -> StoreResult<Vec<Ticket>>;
}

#[derive(FromRow)]
struct TicketRow {
    id: Uuid,
    ticket_no: String,
    day: String,
    matter_code: String,
    skill: String,
    resident_id: Uuid,
    taken_by: Uuid,
    taken_by_role: String,
    channel: String,
    priority: String,
    state: String,
    queued_at: i64,
    created_at: i64,
    appointment_at: Option<i64>,
    callback_phone: Option<String>,
    offer_id: Option<Uuid>,
    offered_to: Option<Uuid>,
    offer_expires_at: Option<i64>,
    excluded: String,
    agent_id: Option<Uuid>,
    call_id: Option<Uuid>,
    answered_at: Option<i64>,
    wrap_up_at: Option<i64>,
    done_at: Option<i64>,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Db(format!("unreadable stored {what}"))
}

impl TryFrom<TicketRow> for Ticket {
    type Error = StoreError;
    fn try_from(r: TicketRow) -> StoreResult<Ticket> {
        let priority: Vec<String> = serde_json::from_str(&r.priority).map_err(|_| corrupt("priority"))?;
        Ok(Ticket {
            id: r.id,
            ticket_no: r.ticket_no,
            day: r.day,
            matter_code: r.matter_code,
            skill: r.skill,
            resident_id: r.resident_id,
            taken_by: r.taken_by,
            taken_by_role: Role::parse(&r.taken_by_role).ok_or_else(|| corrupt("role"))?,
            channel: Channel::parse(&r.channel).ok_or_else(|| corrupt("channel"))?,
            priority: priority.iter().filter_map(|p| Priority::parse(p)).collect(),
            state: TicketState::parse(&r.state).ok_or_else(|| corrupt("ticket state"))?,
            queued_at: r.queued_at,
            created_at: r.created_at,
            appointment_at: r.appointment_at,
            callback_phone: r.callback_phone,
            offer_id: r.offer_id,
            offered_to: r.offered_to,
            offer_expires_at: r.offer_expires_at,
            excluded: serde_json::from_str(&r.excluded).map_err(|_| corrupt("excluded"))?,
            agent_id: r.agent_id,
            call_id: r.call_id,
            answered_at: r.answered_at,
            wrap_up_at: r.wrap_up_at,
            done_at: r.done_at,
        })
    }
}

#[derive(FromRow)]
struct EventRow {
    id: Uuid,
    ticket_id: Uuid,
    at: i64,
    from_state: Option<String>,
    to_state: String,
    cause: String,
    actor: Option<Uuid>,
    detail: String,
}

#[derive(FromRow)]
struct PresenceRow {
    agent_id: Uuid,
    status: String,
    reason: Option<String>,
    since: i64,
    idle_since: i64,
    node: Option<Uuid>,
    last_seen: i64,
}

impl TryFrom<PresenceRow> for AgentPresence {
    type Error = StoreError;
    fn try_from(r: PresenceRow) -> StoreResult<AgentPresence> {
        Ok(AgentPresence {
            agent_id: r.agent_id,
            status: Presence::parse(&r.status).ok_or_else(|| corrupt("presence"))?,
            reason: r.reason,
            since: r.since,
            idle_since: r.idle_since,
            node: r.node,
            last_seen: r.last_seen,
        })
    }
}

const TICKET_COLS: &str = "id, ticket_no, day, matter_code, skill, resident_id, taken_by, taken_by_role, channel, priority, \
    state, queued_at, created_at, appointment_at, callback_phone, offer_id, offered_to, offer_expires_at, excluded, \
    agent_id, call_id, answered_at, wrap_up_at, done_at";
const PRESENCE_COLS: &str = "agent_id, status, reason, since, idle_since, node, last_seen";

fn states_sql(states: &[TicketState]) -> String {
    states.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
}

fn json_priority(p: &[Priority]) -> String {
    serde_json::to_string(&p.iter().map(|p| p.as_str()).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

/// The local day of an instant, `YYYY-MM-DD`.
fn day_of(now: Millis) -> String {
    crate::domain::clock::format_date(crate::domain::queue::local(now).0)
}

/// Which column records the time of reaching a state.
fn time_col(to: TicketState) -> Option<&'static str> {
    match to {
        TicketState::WrapUp => Some("wrap_up_at"),
        TicketState::Done | TicketState::Abandoned | TicketState::Expired => Some("done_at"),
        _ => None,
    }
}

macro_rules! queue_store {
    ($name:ident, $begin:ident, $lock:literal) => {
        impl $name {
            async fn event_in(
                tx: &mut <<Self as QueueBackend>::Db as sqlx::Database>::Connection,
                ticket: Uuid,
                from: Option<TicketState>,
                to: TicketState,
                cause: &str,
                actor: Option<Uuid>,
                detail: serde_json::Value,
                now: Millis,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO ticket_events (id, ticket_id, at, from_state, to_state, cause, actor, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(Uuid::now_v7())
                .bind(ticket)
                .bind(now)
                .bind(from.map(TicketState::as_str))
                .bind(to.as_str())
                .bind(cause)
                .bind(actor)
                .bind(detail.to_string())
                .execute(&mut *tx)
                .await?;
                Ok(())
            }

            async fn ticket_in(
                tx: &mut <<Self as QueueBackend>::Db as sqlx::Database>::Connection,
                id: Uuid,
            ) -> StoreResult<Option<Ticket>> {
                let row: Option<TicketRow> = sqlx::query_as(&format!("SELECT {TICKET_COLS} FROM tickets WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn set_presence_in(
                tx: &mut <<Self as QueueBackend>::Db as sqlx::Database>::Connection,
                agent: Uuid,
                status: Presence,
                idle_reset: bool,
                now: Millis,
            ) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE agent_presence SET status = $1, reason = NULL, since = $2, \
                     idle_since = CASE WHEN $3 THEN $2 ELSE idle_since END WHERE agent_id = $4",
                )
                .bind(status.as_str())
                .bind(now)
                .bind(idle_reset)
                .bind(agent)
                .execute(&mut *tx)
                .await?;
                Ok(())
            }

            /// One ticket inside a transaction (see [`QueueStore::create_ticket`]).
            async fn create_ticket_in(
                tx: &mut <<Self as QueueBackend>::Db as sqlx::Database>::Connection,
                n: &NewTicket,
                now: Millis,
            ) -> StoreResult<(Ticket, bool)> {
                let t = &n.ticket;
                // Idempotency: the same key, or an active ticket of the resident for the matter.
                let existing: Option<TicketRow> = sqlx::query_as(&format!(
                    "SELECT {TICKET_COLS} FROM tickets WHERE dedupe_key = $1 OR (resident_id = $2 AND matter_code = $3 \
                     AND state IN ({})) LIMIT 1",
                    states_sql(&[TicketState::Waiting, TicketState::Offered, TicketState::InCall, TicketState::Callback, TicketState::Appointment])
                ))
                .bind(&n.dedupe_key)
                .bind(t.resident_id)
                .bind(&t.matter_code)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = existing {
                    return Ok((row.try_into()?, false));
                }
                let day = day_of(now);
                let prefix = n.prefix.to_string();
                let (seq,): (i64,) = sqlx::query_as(
                    "INSERT INTO ticket_counters (day, prefix, last) VALUES ($1, $2, 1) \
                     ON CONFLICT (day, prefix) DO UPDATE SET last = ticket_counters.last + 1 RETURNING last",
                )
                .bind(&day)
                .bind(&prefix)
                .fetch_one(&mut *tx)
                .await?;
                let no = crate::domain::queue::ticket_no(n.prefix, seq);
                sqlx::query(&format!(
                    "INSERT INTO tickets ({TICKET_COLS}, dedupe_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                     $13, $14, $15, NULL, NULL, NULL, '[]', NULL, NULL, NULL, NULL, NULL, $16)"
                ))
                .bind(t.id)
                .bind(&no)
                .bind(&day)
                .bind(&t.matter_code)
                .bind(&t.skill)
                .bind(t.resident_id)
                .bind(t.taken_by)
                .bind(t.taken_by_role.as_str())
                .bind(t.channel.as_str())
                .bind(json_priority(&t.priority))
                .bind(t.state.as_str())
                .bind(t.queued_at)
                .bind(t.created_at)
                .bind(t.appointment_at)
                .bind(&t.callback_phone)
                .bind(&n.dedupe_key)
                .execute(&mut *tx)
                .await?;
                Self::event_in(&mut *tx, t.id, None, t.state, "taken", Some(t.taken_by), serde_json::json!({"channel": t.channel, "ticket_no": no}), now).await?;
                let stored = Self::ticket_in(&mut *tx, t.id).await?.ok_or(StoreError::NotFound)?;
                Ok((stored, true))
            }

            /// An agent's wrap-ups become `done`, inside a transaction.
            async fn finish_wrap_ups_in(
                tx: &mut <<Self as QueueBackend>::Db as sqlx::Database>::Connection,
                agent: Uuid,
                now: Millis,
            ) -> StoreResult<Vec<Ticket>> {
                let rows: Vec<TicketRow> = sqlx::query_as(&format!(
                    "SELECT {TICKET_COLS} FROM tickets WHERE agent_id = $1 AND state = 'wrap_up'{}",
                    $lock
                ))
                .bind(agent)
                .fetch_all(&mut *tx)
                .await?;
                let mut out = Vec::new();
                for row in rows {
                    let mut t: Ticket = row.try_into()?;
                    sqlx::query("UPDATE tickets SET state = 'done', done_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(t.id)
                        .execute(&mut *tx)
                        .await?;
                    Self::event_in(&mut *tx, t.id, Some(TicketState::WrapUp), TicketState::Done, "wrap_up_done", Some(agent), serde_json::json!({}), now).await?;
                    t.state = TicketState::Done;
                    t.done_at = Some(now);
                    out.push(t);
                }
                Ok(out)
            }

            async fn upsert_presence_in(
                tx: &mut <<Self as QueueBackend>::Db as sqlx::Database>::Connection,
                p: &AgentPresence,
            ) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO agent_presence ({PRESENCE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (agent_id) DO UPDATE SET status = $2, reason = $3, since = $4, idle_since = $5, node = $6, last_seen = $7"
                ))
                .bind(p.agent_id)
                .bind(p.status.as_str())
                .bind(&p.reason)
                .bind(p.since)
                .bind(p.idle_since)
                .bind(p.node)
                .bind(p.last_seen)
                .execute(&mut *tx)
                .await?;
                Ok(())
            }

            async fn tickets_where(&self, cond: &str, bind: Option<Uuid>, limit: u32) -> StoreResult<Vec<Ticket>> {
                let sql = format!("SELECT {TICKET_COLS} FROM tickets WHERE {cond} LIMIT {limit}");
                let mut q = sqlx::query_as::<_, TicketRow>(&sql);
                if let Some(b) = bind {
                    q = q.bind(b);
                }
                let rows = q.fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }
        }

        #[async_trait]
        impl QueueStore for $name {
            async fn create_ticket(&self, n: &NewTicket, now: Millis) -> StoreResult<(Ticket, bool)> {
                let mut tx = $begin(self).await?;
                let out = Self::create_ticket_in(&mut *tx, n, now).await?;
                tx.commit().await?;
                Ok(out)
            }

            async fn create_tickets(&self, batch: &[(NewTicket, Millis)]) -> StoreResult<Vec<(Ticket, bool)>> {
                let mut tx = $begin(self).await?;
                let mut out = Vec::with_capacity(batch.len());
                for (n, now) in batch {
                    out.push(Self::create_ticket_in(&mut *tx, n, *now).await?);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn ticket(&self, id: Uuid) -> StoreResult<Option<Ticket>> {
                Ok(self.tickets_where("id = $1", Some(id), 1).await?.pop())
            }

            async fn tickets_of(&self, subject: Uuid, limit: u32) -> StoreResult<Vec<Ticket>> {
                self.tickets_where("(taken_by = $1 OR resident_id = $1) ORDER BY created_at DESC, id DESC", Some(subject), limit).await
            }

            async fn active_tickets_of(&self, subjects: &[Uuid]) -> StoreResult<Vec<Ticket>> {
                if subjects.is_empty() {
                    return Ok(Vec::new());
                }
                // Subjects are UUIDs we hold (never client text); bound one by one.
                let marks: Vec<String> = (1..=subjects.len()).map(|i| format!("${i}")).collect();
                let list = marks.join(", ");
                let sql = format!(
                    "SELECT {TICKET_COLS} FROM tickets WHERE (taken_by IN ({list}) OR resident_id IN ({list})) AND state IN ({}) ",
                    states_sql(&[TicketState::Waiting, TicketState::Offered, TicketState::InCall, TicketState::WrapUp, TicketState::Callback, TicketState::Appointment])
                );
                let mut q = sqlx::query_as::<_, TicketRow>(&sql);
                for s in subjects {
                    q = q.bind(*s);
                }
                let rows = q.fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn queued_tickets(&self, limit: u32) -> StoreResult<Vec<Ticket>> {
                self.tickets_where(
                    &format!("state IN ({}) ORDER BY queued_at, id", states_sql(&[TicketState::Waiting, TicketState::Callback, TicketState::Offered])),
                    None,
                    limit,
                )
                .await
            }

            async fn claim_offers(&self, claims: &[OfferClaim], now: Millis) -> StoreResult<Vec<OfferClaim>> {
                if claims.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = $begin(self).await?;
                let mut made = Vec::new();
                for c in claims {
                    let agent_free: Option<(Uuid,)> = sqlx::query_as(concat!(
                        "SELECT agent_id FROM agent_presence WHERE agent_id = $1 AND status = 'available' \
                         AND NOT EXISTS (SELECT 1 FROM tickets WHERE offered_to = $1 AND state = 'offered')",
                        $lock
                    ))
                    .bind(c.agent_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if agent_free.is_none() {
                        continue;
                    }
                    let row: Option<(String,)> = sqlx::query_as(concat!(
                        "SELECT state FROM tickets WHERE id = $1 AND state IN ('waiting', 'callback')",
                        $lock
                    ))
                    .bind(c.ticket_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((from,)) = row else { continue };
                    sqlx::query(
                        "UPDATE tickets SET state = 'offered', offer_id = $1, offered_to = $2, offer_expires_at = $3 WHERE id = $4",
                    )
                    .bind(c.offer_id)
                    .bind(c.agent_id)
                    .bind(c.expires_at)
                    .bind(c.ticket_id)
                    .execute(&mut *tx)
                    .await?;
                    Self::event_in(&mut *tx, c.ticket_id, TicketState::parse(&from), TicketState::Offered, "offered", Some(c.agent_id), serde_json::json!({"offer_id": c.offer_id, "returns_to": from}), now).await?;
                    made.push(*c);
                }
                tx.commit().await?;
                Ok(made)
            }

            async fn accept_offer(&self, offer_id: Uuid, agent: Uuid, call: &Call, members: &[Member], now: Millis) -> StoreResult<AcceptOutcome> {
                let mut tx = $begin(self).await?;
                let done = sqlx::query(
                    "UPDATE tickets SET state = 'in_call', agent_id = $1, call_id = $2, answered_at = $3, offer_expires_at = NULL \
                     WHERE offer_id = $4 AND offered_to = $1 AND state = 'offered' AND offer_expires_at > $3",
                )
                .bind(agent)
                .bind(call.id)
                .bind(now)
                .bind(offer_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(AcceptOutcome::NotOpen);
                }
                let (ticket_id,): (Uuid,) = sqlx::query_as("SELECT id FROM tickets WHERE offer_id = $1")
                    .bind(offer_id)
                    .fetch_one(&mut *tx)
                    .await?;
                Self::insert_call_in(&mut *tx, call, members).await?;
                Self::set_presence_in(&mut *tx, agent, Presence::OnCall, false, now).await?;
                Self::event_in(&mut *tx, ticket_id, Some(TicketState::Offered), TicketState::InCall, "accepted", Some(agent), serde_json::json!({"call_id": call.id, "offer_id": offer_id}), now).await?;
                let t = Self::ticket_in(&mut *tx, ticket_id).await?.ok_or(StoreError::NotFound)?;
                tx.commit().await?;
                Ok(AcceptOutcome::Accepted(t))
            }

            async fn return_offer(&self, offer_id: Uuid, agent: Uuid, cause: &str, now: Millis) -> StoreResult<Option<Ticket>> {
                let mut tx = $begin(self).await?;
                let row: Option<TicketRow> = sqlx::query_as(&format!(
                    "SELECT {TICKET_COLS} FROM tickets WHERE offer_id = $1 AND offered_to = $2 AND state = 'offered'{}",
                    $lock
                ))
                .bind(offer_id)
                .bind(agent)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let mut t: Ticket = row.try_into()?;
                let back = if t.priority.contains(&Priority::Callback) { TicketState::Callback } else { TicketState::Waiting };
                t.excluded.push(agent);
                sqlx::query("UPDATE tickets SET state = $1, offered_to = NULL, offer_expires_at = NULL, excluded = $2 WHERE id = $3")
                    .bind(back.as_str())
                    .bind(serde_json::to_string(&t.excluded).unwrap_or_else(|_| "[]".into()))
                    .bind(t.id)
                    .execute(&mut *tx)
                    .await?;
                Self::event_in(&mut *tx, t.id, Some(TicketState::Offered), back, cause, Some(agent), serde_json::json!({"offer_id": offer_id}), now).await?;
                tx.commit().await?;
                t.state = back;
                Ok(Some(t))
            }

            async fn expire_offers(&self, now: Millis) -> StoreResult<Vec<Ticket>> {
                let mut tx = $begin(self).await?;
                let rows: Vec<TicketRow> = sqlx::query_as(&format!(
                    "SELECT {TICKET_COLS} FROM tickets WHERE state = 'offered' AND offer_expires_at <= $1{}",
                    $lock
                ))
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let mut out = Vec::new();
                for row in rows {
                    let t: Ticket = row.try_into()?;
                    let Some(agent) = t.offered_to else { continue };
                    let back = if t.priority.contains(&Priority::Callback) { TicketState::Callback } else { TicketState::Waiting };
                    let mut excluded = t.excluded.clone();
                    excluded.push(agent);
                    sqlx::query("UPDATE tickets SET state = $1, offered_to = NULL, offer_expires_at = NULL, excluded = $2 WHERE id = $3")
                        .bind(back.as_str())
                        .bind(serde_json::to_string(&excluded).unwrap_or_else(|_| "[]".into()))
                        .bind(t.id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE agent_presence SET status = 'away', reason = NULL, since = $1 WHERE agent_id = $2 AND status = 'available'")
                        .bind(now)
                        .bind(agent)
                        .execute(&mut *tx)
                        .await?;
                    Self::event_in(&mut *tx, t.id, Some(TicketState::Offered), back, "offer_expired", Some(agent), serde_json::json!({"offer_id": t.offer_id}), now).await?;
                    out.push(t);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn open_offers_of(&self, agent: Uuid) -> StoreResult<Vec<Ticket>> {
                self.tickets_where("offered_to = $1 AND state = 'offered'", Some(agent), 100).await
            }

            async fn transition(&self, id: Uuid, from: &[TicketState], to: TicketState, cause: &str, actor: Option<Uuid>, now: Millis) -> StoreResult<Option<Ticket>> {
                let mut tx = $begin(self).await?;
                let row: Option<(String,)> = sqlx::query_as(&format!(
                    "SELECT state FROM tickets WHERE id = $1 AND state IN ({}){}",
                    states_sql(from),
                    $lock
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((prev,)) = row else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                // A ticket moved off an offer keeps no offer open.
                match time_col(to) {
                    Some(c) => {
                        sqlx::query(&format!(
                            "UPDATE tickets SET state = $1, offered_to = NULL, offer_expires_at = NULL, {c} = $2 WHERE id = $3"
                        ))
                        .bind(to.as_str())
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("UPDATE tickets SET state = $1, offered_to = NULL, offer_expires_at = NULL WHERE id = $2")
                            .bind(to.as_str())
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                Self::event_in(&mut *tx, id, TicketState::parse(&prev), to, cause, actor, serde_json::json!({}), now).await?;
                let t = Self::ticket_in(&mut *tx, id).await?;
                tx.commit().await?;
                Ok(t)
            }

            async fn start_wrap_ups(&self, now: Millis) -> StoreResult<Vec<Ticket>> {
                let mut tx = $begin(self).await?;
                let rows: Vec<TicketRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM tickets t WHERE t.state = 'in_call' AND EXISTS \
                     (SELECT 1 FROM calls c WHERE c.id = t.call_id AND c.state = 'ended'){}",
                    TICKET_COLS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", "),
                    if $lock.is_empty() { "" } else { " FOR UPDATE OF t SKIP LOCKED" }
                ))
                .fetch_all(&mut *tx)
                .await?;
                let mut out = Vec::new();
                for row in rows {
                    let mut t: Ticket = row.try_into()?;
                    sqlx::query("UPDATE tickets SET state = 'wrap_up', wrap_up_at = $1 WHERE id = $2 AND state = 'in_call'")
                        .bind(now)
                        .bind(t.id)
                        .execute(&mut *tx)
                        .await?;
                    if let Some(a) = t.agent_id {
                        sqlx::query("UPDATE agent_presence SET status = 'wrap_up', reason = NULL, since = $1 WHERE agent_id = $2 AND status = 'on_call'")
                            .bind(now)
                            .bind(a)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Self::event_in(&mut *tx, t.id, Some(TicketState::InCall), TicketState::WrapUp, "call_ended", None, serde_json::json!({"call_id": t.call_id}), now).await?;
                    t.state = TicketState::WrapUp;
                    t.wrap_up_at = Some(now);
                    out.push(t);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn finish_wrap_ups(&self, agent: Uuid, now: Millis) -> StoreResult<Vec<Ticket>> {
                let mut tx = $begin(self).await?;
                let out = Self::finish_wrap_ups_in(&mut *tx, agent, now).await?;
                tx.commit().await?;
                Ok(out)
            }

            async fn make_available(&self, agent: Uuid, node: Uuid, now: Millis) -> StoreResult<Option<(AgentPresence, Vec<Ticket>)>> {
                let mut tx = $begin(self).await?;
                // Their calls that ended: wrap-up first (what the dispatcher's tick would do).
                let ended: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(&format!(
                    "SELECT t.id, t.call_id FROM tickets t WHERE t.agent_id = $1 AND t.state = 'in_call' AND EXISTS \
                     (SELECT 1 FROM calls c WHERE c.id = t.call_id AND c.state = 'ended'){}",
                    if $lock.is_empty() { "" } else { " FOR UPDATE OF t SKIP LOCKED" }
                ))
                .bind(agent)
                .fetch_all(&mut *tx)
                .await?;
                for (id, call) in &ended {
                    sqlx::query("UPDATE tickets SET state = 'wrap_up', wrap_up_at = $1 WHERE id = $2 AND state = 'in_call'")
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    Self::event_in(&mut *tx, *id, Some(TicketState::InCall), TicketState::WrapUp, "call_ended", None, serde_json::json!({"call_id": call}), now).await?;
                }
                if !ended.is_empty() {
                    sqlx::query("UPDATE agent_presence SET status = 'wrap_up', reason = NULL, since = $1 WHERE agent_id = $2 AND status = 'on_call'")
                        .bind(now)
                        .bind(agent)
                        .execute(&mut *tx)
                        .await?;
                }
                let prev: Option<PresenceRow> = sqlx::query_as(&format!(
                    "SELECT {PRESENCE_COLS} FROM agent_presence WHERE agent_id = $1{}",
                    if $lock.is_empty() { "" } else { " FOR UPDATE" }
                ))
                .bind(agent)
                .fetch_optional(&mut *tx)
                .await?;
                let prev: Option<AgentPresence> = prev.map(TryInto::try_into).transpose()?;
                if prev.as_ref().is_some_and(|p| p.status == Presence::OnCall) {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let done = Self::finish_wrap_ups_in(&mut *tx, agent, now).await?;
                let idle_since = match &prev {
                    Some(p) if p.status == Presence::Available => p.idle_since,
                    _ => now,
                };
                let p = AgentPresence { agent_id: agent, status: Presence::Available, reason: None, since: now, idle_since, node: Some(node), last_seen: now };
                Self::upsert_presence_in(&mut *tx, &p).await?;
                tx.commit().await?;
                Ok(Some((p, done)))
            }

            async fn finish_long_wrap_ups(&self, now: Millis, max_ms: i64) -> StoreResult<Vec<Ticket>> {
                let long = self
                    .tickets_where(&format!("state = 'wrap_up' AND wrap_up_at <= {}", now - max_ms), None, 100)
                    .await?;
                let mut out = Vec::new();
                for t in long {
                    if let Some(a) = t.agent_id {
                        let done = self.finish_wrap_ups(a, now).await?;
                        let mut tx = $begin(self).await?;
                        sqlx::query("UPDATE agent_presence SET status = 'available', reason = NULL, since = $1, idle_since = $1 WHERE agent_id = $2 AND status = 'wrap_up'")
                            .bind(now)
                            .bind(a)
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        out.extend(done);
                    }
                }
                Ok(out)
            }

            async fn due_appointments(&self, now: Millis) -> StoreResult<Vec<Ticket>> {
                let due = self
                    .tickets_where(&format!("state = 'appointment' AND appointment_at <= {now}"), None, 200)
                    .await?;
                let mut out = Vec::new();
                for t in due {
                    if let Some(t) = self.transition(t.id, &[TicketState::Appointment], TicketState::Waiting, "slot_due", None, now).await? {
                        out.push(t);
                    }
                }
                Ok(out)
            }

            async fn count_appointments(&self, skill: &str, slot: Millis) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM tickets WHERE skill = $1 AND appointment_at = $2 AND state NOT IN ('abandoned', 'expired')",
                )
                .bind(skill)
                .bind(slot)
                .fetch_one(&self.pool)
                .await?;
                Ok(n)
            }

            async fn ticket_events(&self, id: Uuid) -> StoreResult<Vec<TicketEvent>> {
                let rows: Vec<EventRow> = sqlx::query_as(
                    "SELECT id, ticket_id, at, from_state, to_state, cause, actor, detail FROM ticket_events \
                     WHERE ticket_id = $1 ORDER BY id",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|r| {
                        Ok(TicketEvent {
                            id: r.id,
                            ticket_id: r.ticket_id,
                            at: r.at,
                            from_state: r.from_state.as_deref().and_then(TicketState::parse),
                            to_state: TicketState::parse(&r.to_state).ok_or_else(|| corrupt("ticket state"))?,
                            cause: r.cause,
                            actor: r.actor,
                            detail: serde_json::from_str(&r.detail).map_err(|_| corrupt("ticket event"))?,
                        })
                    })
                    .collect()
            }

            async fn put_presence(&self, p: &AgentPresence) -> StoreResult<()> {
                let mut conn = self.pool.acquire().await?;
                Self::upsert_presence_in(&mut *conn, p).await
            }

            async fn presence(&self, agent: Uuid) -> StoreResult<Option<AgentPresence>> {
                let row: Option<PresenceRow> = sqlx::query_as(&format!("SELECT {PRESENCE_COLS} FROM agent_presence WHERE agent_id = $1"))
                    .bind(agent)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn presences(&self) -> StoreResult<Vec<AgentPresence>> {
                let rows: Vec<PresenceRow> = sqlx::query_as(&format!("SELECT {PRESENCE_COLS} FROM agent_presence"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn touch_node(&self, node: Uuid, now: Millis) -> StoreResult<()> {
                sqlx::query("UPDATE agent_presence SET last_seen = $1 WHERE node = $2 AND status <> 'offline'")
                    .bind(now)
                    .bind(node)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn drop_stale_agents(&self, before: Millis, now: Millis) -> StoreResult<Vec<Uuid>> {
                let rows: Vec<(Uuid,)> = sqlx::query_as(
                    "UPDATE agent_presence SET status = 'offline', reason = NULL, since = $1, node = NULL \
                     WHERE status IN ('available', 'away', 'on_break') AND last_seen < $2 RETURNING agent_id",
                )
                .bind(now)
                .bind(before)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            async fn ticket_facts(&self, since: Millis) -> StoreResult<Vec<TicketFact>> {
                let rows: Vec<(String, String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
                    "SELECT skill, state, queued_at, answered_at, done_at FROM tickets WHERE created_at >= $1 OR state IN \
                     ('waiting', 'offered', 'callback', 'in_call', 'wrap_up')",
                )
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(skill, state, queued_at, answered_at, done_at)| {
                        Some(TicketFact { skill, state: TicketState::parse(&state)?, queued_at, answered_at, done_at })
                    })
                    .collect())
            }

            async fn recent_handle_ms(&self, skill: &str, limit: u32) -> StoreResult<Vec<i64>> {
                let rows: Vec<(i64,)> = sqlx::query_as(
                    "SELECT done_at - answered_at FROM tickets WHERE skill = $1 AND state = 'done' AND answered_at IS NOT NULL \
                     ORDER BY done_at DESC LIMIT $2",
                )
                .bind(skill)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            async fn expire_unserved(&self, now: Millis) -> StoreResult<Vec<Ticket>> {
                let open = self.tickets_where("state IN ('waiting', 'offered')", None, 10_000).await?;
                let mut out = Vec::new();
                for t in open {
                    if let Some(t) = self.transition(t.id, &[TicketState::Waiting, TicketState::Offered], TicketState::Expired, "closed", None, now).await? {
                        out.push(t);
                    }
                }
                Ok(out)
            }
        }
    };
}

/// The database type of a store (lets the macro name its connection type).
pub trait QueueBackend {
    /// The sqlx database.
    type Db: sqlx::Database;
}
impl QueueBackend for SqliteStore {
    type Db = sqlx::Sqlite;
}
impl QueueBackend for PgStore {
    type Db = sqlx::Postgres;
}

/// A queue write transaction. On SQLite it also holds this process's writer turn: writers of
/// one process queue here in order instead of polling SQLite's busy handler (which sleeps in
/// growing steps of milliseconds and made every write wait behind the others' sleeps); writers
/// of other processes still meet at SQLite's own lock. Derefs to the connection, like
/// `sqlx::Transaction`.
pub(crate) struct WriteTx<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<DB: sqlx::Database> std::ops::Deref for WriteTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

impl<DB: sqlx::Database> WriteTx<DB> {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// SQLite: take the write lock at the start (`BEGIN IMMEDIATE`), so a claim never reads a
/// state another writer is about to change; this process's writers take turns first.
async fn begin_sqlite(store: &SqliteStore) -> Result<WriteTx<sqlx::Sqlite>, sqlx::Error> {
    let turn = store.writer.clone().lock_owned().await;
    let tx = store.pool.begin_with("BEGIN IMMEDIATE").await?;
    Ok(WriteTx { tx, _turn: Some(turn) })
}

/// PostgreSQL: an ordinary transaction; rows are claimed with `FOR UPDATE SKIP LOCKED`.
async fn begin_pg(store: &PgStore) -> Result<WriteTx<sqlx::Postgres>, sqlx::Error> {
    Ok(WriteTx { tx: store.pool.begin().await?, _turn: None })
}

queue_store!(SqliteStore, begin_sqlite, "");
queue_store!(PgStore, begin_pg, " FOR UPDATE SKIP LOCKED");

impl SqliteStore {
    /// Opens a SQLite database with `synchronous=FULL` (every commit is flushed to disk): the
    /// setting the queue benchmark measures.
    pub async fn connect_full_sync(url: &str) -> anyhow::Result<Self> {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
        use std::str::FromStr;
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool, writer: Default::default() })
    }
}
