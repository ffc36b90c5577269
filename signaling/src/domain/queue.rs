//! The queue (issue 5): ticket states and their legal transitions, the dispatch policy, service
//! hours with a holiday calendar, estimated waits and supervisor figures. Pure: time comes in as
//! an argument, nothing here does I/O.
//!
//! The dispatch policy ([`plan`]) is a function over the waiting tickets, the agents and `now`:
//! 1. skills first: a ticket goes to an agent holding its matter's class, or, once it has
//!    waited [`Policy::widen_after_ms`], to any agent of the broader pool;
//! 2. tickets are ranked: appointments at their slot, then elderly (60+) and disabled
//!    residents and call-backs, then everyone else; within a rank the oldest place first;
//! 3. the agent idle longest gets the ticket.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::clock::Millis;
use super::ids::StaffId;

/// A ticket id.
pub type TicketId = Uuid;

macro_rules! str_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $v:ident = $s:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $v),* }
        impl $name {
            /// Stored name (also the wire name).
            pub fn as_str(self) -> &'static str { match self { $($name::$v => $s),* } }
            /// Parses a stored name.
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some($name::$v),)* _ => None } }
        }
    };
}

str_enum!(
    /// Where a ticket stands.
    TicketState {
        /// In the queue.
        Waiting = "waiting",
        /// Offered to one agent, waiting for accept.
        Offered = "offered",
        /// In a call with the agent.
        InCall = "in_call",
        /// The call is over; the agent finishes the case.
        WrapUp = "wrap_up",
        /// Handled.
        Done = "done",
        /// The resident left, or did not come back within the grace period.
        Abandoned = "abandoned",
        /// Service hours ended before it was handled.
        Expired = "expired",
        /// A call-back: keeps its place, offered to agents like a ticket, the agent calls back.
        Callback = "callback",
        /// A booked appointment slot; joins the queue (with priority) at its slot.
        Appointment = "appointment",
    }
);

str_enum!(
    /// The channel a ticket came in through.
    Channel {
        /// A resident's phone browser.
        Phone = "phone",
        /// A TV set-top box.
        Tv = "tv",
        /// A self-service kiosk.
        Kiosk = "kiosk",
        /// A grid helper for a resident.
        Helper = "helper",
    }
);

str_enum!(
    /// An agent's presence.
    Presence {
        /// Signed out or console gone.
        Offline = "offline",
        /// Ready for the next ticket.
        Available = "available",
        /// In a call.
        OnCall = "on_call",
        /// Finishing a case after a call.
        WrapUp = "wrap_up",
        /// On a break (with a reason).
        OnBreak = "on_break",
        /// Let an offer expire; out of rotation until they set `available`.
        Away = "away",
    }
);

str_enum!(
    /// Why a ticket is ranked ahead.
    Priority {
        /// 60 or older (or registered elderly).
        Elderly = "elderly",
        /// Registered disabled.
        Disabled = "disabled",
        /// An appointment at its slot.
        Appointment = "appointment",
        /// A call-back that kept its place.
        Callback = "callback",
    }
);

impl TicketState {
    /// States in which a ticket is still to be served (it holds a place).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Waiting | Self::Offered | Self::InCall | Self::WrapUp | Self::Callback | Self::Appointment)
    }
    /// States the dispatcher may offer from.
    pub fn is_dispatchable(self) -> bool {
        matches!(self, Self::Waiting | Self::Callback)
    }
    /// Final states.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Abandoned | Self::Expired)
    }
}

/// Is `from → to` a legal ticket transition?
pub fn can_transition(from: TicketState, to: TicketState) -> bool {
    use TicketState::*;
    match (from, to) {
        (Waiting | Callback, Offered) => true,
        (Offered, Waiting | Callback | InCall) => true,
        (InCall, WrapUp) => true,
        (WrapUp, Done) => true,
        (Waiting, Callback | Appointment) => true,
        (Appointment, Waiting) => true,
        (Waiting | Offered | Callback | Appointment, Abandoned | Expired) => true,
        _ => false,
    }
}

/// The readable prefix letter of a skill's tickets (`B023` is the 23rd medical-insurance
/// ticket of the day).
pub fn ticket_prefix(skill: &str) -> char {
    match skill {
        "social_insurance" => 'A',
        "medical_insurance" => 'B',
        "citizen_card" => 'C',
        "car_quota" => 'D',
        "disability" => 'E',
        "traffic" => 'F',
        "senior" => 'G',
        "health" => 'H',
        other => {
            // Other classes: a stable letter from the name, from the upper half of the alphabet.
            let sum: u32 = other.bytes().map(u32::from).sum();
            (b'J' + (sum % 17) as u8) as char
        }
    }
}

/// Formats a ticket number: prefix and a 3-digit (or longer) daily sequence.
pub fn ticket_no(prefix: char, seq: i64) -> String {
    format!("{prefix}{seq:03}")
}

/// Settings of the dispatch policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How long an offer waits for accept (default 20 s).
    pub offer_timeout_ms: i64,
    /// After this wait a ticket may go to the broader pool (default 5 min).
    pub widen_after_ms: i64,
    /// The broader pool per skill; a skill not listed widens to every agent.
    pub wider_pool: HashMap<String, Vec<String>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { offer_timeout_ms: 20_000, widen_after_ms: 300_000, wider_pool: HashMap::new() }
    }
}

/// A ticket as the policy sees it.
#[derive(Debug, Clone)]
pub struct QueuedTicket {
    /// Id.
    pub id: TicketId,
    /// The skill (matter class) it needs.
    pub skill: String,
    /// Priority reasons (empty: none).
    pub priority: Vec<Priority>,
    /// Appointment slot start, if booked.
    pub appointment_at: Option<Millis>,
    /// Its place: when it joined the queue (a call-back keeps the original time).
    pub queued_at: Millis,
    /// Agents who declined it or let it expire (not offered to them again).
    pub excluded: Vec<StaffId>,
}

/// An agent as the policy sees it.
#[derive(Debug, Clone)]
pub struct AgentView {
    /// Id.
    pub id: StaffId,
    /// Skills (matter classes).
    pub skills: Vec<String>,
    /// Presence.
    pub presence: Presence,
    /// Since when idle (the end of their last call or wrap-up, or when they became available).
    pub idle_since: Millis,
    /// Holds an open offer already.
    pub has_offer: bool,
}

/// The rank of a ticket: lower goes first. Appointments at their slot, then priority, then
/// the rest; within a rank, the oldest place.
pub fn rank(t: &QueuedTicket, now: Millis) -> (u8, Millis, TicketId) {
    let at_slot = t.appointment_at.is_some_and(|a| a <= now);
    let class = if at_slot {
        0
    } else if t.priority.iter().any(|p| matches!(p, Priority::Elderly | Priority::Disabled | Priority::Callback)) {
        1
    } else {
        2
    };
    let place = if at_slot { t.appointment_at.unwrap_or(t.queued_at) } else { t.queued_at };
    (class, place, t.id)
}

fn eligible(t: &QueuedTicket, a: &AgentView, now: Millis, policy: &Policy) -> bool {
    if a.presence != Presence::Available || a.has_offer || t.excluded.contains(&a.id) {
        return false;
    }
    if a.skills.iter().any(|s| s == &t.skill) {
        return true;
    }
    if now - t.queued_at >= policy.widen_after_ms {
        return match policy.wider_pool.get(&t.skill) {
            Some(pool) => a.skills.iter().any(|s| pool.contains(s)),
            None => true,
        };
    }
    false
}

/// Who gets what now: pairs (ticket, agent), best-ranked ticket first, each agent at most once.
pub fn plan(tickets: &[QueuedTicket], agents: &[AgentView], now: Millis, policy: &Policy) -> Vec<(TicketId, StaffId)> {
    let mut order: Vec<&QueuedTicket> = tickets.iter().collect();
    order.sort_by_key(|t| rank(t, now));
    let mut free: Vec<&AgentView> =
        agents.iter().filter(|a| a.presence == Presence::Available && !a.has_offer).collect();
    free.sort_by_key(|a| (a.idle_since, a.id));
    let mut taken: HashSet<StaffId> = HashSet::new();
    let mut out = Vec::new();
    for t in order {
        if taken.len() == free.len() {
            break;
        }
        if let Some(a) = free.iter().find(|a| !taken.contains(&a.id) && eligible(t, a, now, policy)) {
            taken.insert(a.id);
            out.push((t.id, a.id));
        }
    }
    out
}

/// What happens when an offer is not accepted in time: the ticket goes back (to the queue or
/// to call-back), the agent is set away.
pub fn on_offer_expired(returned_to: TicketState) -> (TicketState, Presence) {
    (if returned_to == TicketState::Callback { TicketState::Callback } else { TicketState::Waiting }, Presence::Away)
}

/// The Asia/Shanghai offset (UTC+8, no daylight saving).
pub const SHANGHAI_OFFSET_MS: i64 = 8 * 3_600_000;

/// A daily window in local minutes after midnight, `[open, close)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Opens, minutes after midnight.
    pub open_min: u16,
    /// Closes (exclusive).
    pub close_min: u16,
}

/// Service hours: a window for workdays and one for weekend days, holidays (closed), and
/// make-up workdays (weekend days worked, 调休).
#[derive(Debug, Clone)]
pub struct ServiceHours {
    /// Monday to Friday.
    pub workday: Window,
    /// Saturday and Sunday.
    pub weekend: Window,
    /// Closed all day.
    pub holidays: HashSet<time::Date>,
    /// Weekend days that follow the workday window.
    pub extra_workdays: HashSet<time::Date>,
}

impl Default for ServiceHours {
    fn default() -> Self {
        ServiceHours {
            workday: Window { open_min: 8 * 60, close_min: 20 * 60 },
            weekend: Window { open_min: 9 * 60, close_min: 17 * 60 },
            holidays: HashSet::new(),
            extra_workdays: HashSet::new(),
        }
    }
}

/// The local (Asia/Shanghai) date of an instant, and the minutes after local midnight.
pub fn local(now: Millis) -> (time::Date, u32) {
    let local_ms = now + SHANGHAI_OFFSET_MS;
    let day = local_ms.div_euclid(86_400_000);
    let mins = (local_ms.rem_euclid(86_400_000) / 60_000) as u32;
    let date = time::Date::from_julian_day((day + 2_440_588) as i32).unwrap_or(time::Date::MIN);
    (date, mins)
}

/// Unix ms of local midnight starting `date`.
pub fn local_midnight(date: time::Date) -> Millis {
    (date.to_julian_day() as i64 - 2_440_588) * 86_400_000 - SHANGHAI_OFFSET_MS
}

impl ServiceHours {
    /// The window of a local date; `None` when closed all day.
    pub fn window(&self, date: time::Date) -> Option<Window> {
        if self.holidays.contains(&date) {
            return None;
        }
        let weekend = matches!(date.weekday(), time::Weekday::Saturday | time::Weekday::Sunday);
        Some(if weekend && !self.extra_workdays.contains(&date) { self.weekend } else { self.workday })
    }

    /// Is the service open at `now`?
    pub fn is_open(&self, now: Millis) -> bool {
        let (date, mins) = local(now);
        self.window(date).is_some_and(|w| mins >= w.open_min as u32 && mins < w.close_min as u32)
    }

    /// When the current opening ends (`None` when closed).
    pub fn closes_at(&self, now: Millis) -> Option<Millis> {
        let (date, _) = local(now);
        if !self.is_open(now) {
            return None;
        }
        self.window(date).map(|w| local_midnight(date) + w.close_min as i64 * 60_000)
    }

    /// The next opening at or after `now` (now itself when open), looking 60 days ahead.
    pub fn next_open(&self, now: Millis) -> Option<Millis> {
        if self.is_open(now) {
            return Some(now);
        }
        let (mut date, _) = local(now);
        for _ in 0..60 {
            if let Some(w) = self.window(date) {
                let t = local_midnight(date) + w.open_min as i64 * 60_000;
                if t >= now {
                    return Some(t);
                }
            }
            date = date.next_day()?;
        }
        None
    }

    /// Appointment slots of a local date: starts of `slot_min`-minute slots inside the window.
    pub fn slots(&self, date: time::Date, slot_min: u16) -> Vec<Millis> {
        let Some(w) = self.window(date) else { return Vec::new() };
        let base = local_midnight(date);
        (w.open_min..w.close_min)
            .step_by(slot_min.max(1) as usize)
            .filter(|m| m + slot_min <= w.close_min)
            .map(|m| base + m as i64 * 60_000)
            .collect()
    }
}

/// Estimated wait in seconds for the `position`-th ticket (1 = next) of a skill: rounds of the
/// agents on duty for it, each round lasting the recent average handling time.
pub fn estimate_wait_s(position: u32, agents_on_duty: u32, avg_handle_s: u32) -> u32 {
    let agents = agents_on_duty.max(1);
    let rounds = position.saturating_sub(1) / agents + 1;
    rounds.saturating_mul(avg_handle_s.max(30))
}

/// Handling time assumed before any ticket was handled (5 minutes).
pub const DEFAULT_HANDLE_S: u32 = 300;

/// Averages of durations (ms), in seconds; the default when there are none.
pub fn average_s(durations_ms: &[i64], default_s: u32) -> u32 {
    if durations_ms.is_empty() {
        return default_s;
    }
    let sum: i64 = durations_ms.iter().map(|d| (*d).max(0)).sum();
    (sum / durations_ms.len() as i64 / 1000) as u32
}

/// One ticket's facts for the figures.
#[derive(Debug, Clone)]
pub struct TicketFact {
    /// Skill.
    pub skill: String,
    /// State.
    pub state: TicketState,
    /// Place time.
    pub queued_at: Millis,
    /// Accepted at.
    pub answered_at: Option<Millis>,
    /// Done at.
    pub done_at: Option<Millis>,
}

/// Live figures of one skill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SkillFigures {
    /// Class code.
    pub skill: String,
    /// Waiting now (waiting, offered and call-back tickets).
    pub waiting: u32,
    /// Oldest waiting ticket's wait, seconds.
    pub longest_wait_s: u32,
    /// Agents by presence: available, on_call, wrap_up, on_break, away, offline.
    pub agents: HashMap<String, u32>,
    /// Handled today.
    pub handled_today: u32,
    /// Average wait of tickets answered today, seconds.
    pub avg_wait_s: u32,
    /// Average handling time (call + wrap-up) today, seconds.
    pub avg_handle_s: u32,
}

/// Figures per skill from today's tickets and the agents; every skill in `skills` appears.
pub fn figures(skills: &[String], tickets: &[TicketFact], agents: &[AgentView], now: Millis) -> Vec<SkillFigures> {
    skills
        .iter()
        .map(|skill| {
            let mine: Vec<&TicketFact> = tickets.iter().filter(|t| &t.skill == skill).collect();
            let waiting: Vec<&&TicketFact> = mine
                .iter()
                .filter(|t| matches!(t.state, TicketState::Waiting | TicketState::Offered | TicketState::Callback))
                .collect();
            let longest = waiting.iter().map(|t| now - t.queued_at).max().unwrap_or(0).max(0);
            let waits: Vec<i64> = mine.iter().filter_map(|t| t.answered_at.map(|a| a - t.queued_at)).collect();
            let handles: Vec<i64> =
                mine.iter().filter_map(|t| Some(t.done_at? - t.answered_at?)).collect();
            let mut by_state: HashMap<String, u32> = [
                Presence::Available,
                Presence::OnCall,
                Presence::WrapUp,
                Presence::OnBreak,
                Presence::Away,
                Presence::Offline,
            ]
            .into_iter()
            .map(|p| (p.as_str().to_string(), 0))
            .collect();
            for a in agents.iter().filter(|a| a.skills.contains(skill)) {
                *by_state.entry(a.presence.as_str().to_string()).or_default() += 1;
            }
            SkillFigures {
                skill: skill.clone(),
                waiting: waiting.len() as u32,
                longest_wait_s: (longest / 1000) as u32,
                agents: by_state,
                handled_today: mine.iter().filter(|t| t.state == TicketState::Done).count() as u32,
                avg_wait_s: average_s(&waits, 0),
                avg_handle_s: average_s(&handles, 0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::FakeClock;
    use crate::domain::clock::Clock;

    /// 2026-11-30 10:00 Asia/Shanghai, a Monday.
    const MON_10: Millis = 1_796_004_000_000;

    fn ticket(skill: &str, queued_at: Millis) -> QueuedTicket {
        QueuedTicket { id: Uuid::now_v7(), skill: skill.into(), priority: vec![], appointment_at: None, queued_at, excluded: vec![] }
    }

    fn agent(skills: &[&str], idle_since: Millis) -> AgentView {
        AgentView {
            id: StaffId::new(),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            presence: Presence::Available,
            idle_since,
            has_offer: false,
        }
    }

    #[test]
    fn skills_come_first() {
        let clock = FakeClock::at(MON_10);
        let mi = ticket("medical_insurance", clock.now_ms());
        let cc_agent = agent(&["citizen_card"], 0);
        // Only a citizen-card agent is free: the medical ticket waits.
        assert!(plan(&[mi.clone()], &[cc_agent.clone()], clock.now_ms(), &Policy::default()).is_empty());
        let mi_agent = agent(&["medical_insurance"], clock.now_ms());
        assert_eq!(plan(&[mi.clone()], &[cc_agent, mi_agent.clone()], clock.now_ms(), &Policy::default()), vec![(mi.id, mi_agent.id)]);
    }

    #[test]
    fn elderly_and_disabled_go_before_older_tickets() {
        let now = MON_10;
        let old = ticket("social_insurance", now - 600_000);
        let mut elderly = ticket("social_insurance", now - 10_000);
        elderly.priority = vec![Priority::Elderly];
        let mut disabled = ticket("social_insurance", now - 5_000);
        disabled.priority = vec![Priority::Disabled];
        let a = agent(&["social_insurance"], 0);
        let p = plan(&[old.clone(), disabled.clone(), elderly.clone()], &[a.clone()], now, &Policy::default());
        assert_eq!(p, vec![(elderly.id, a.id)], "the older of the two priority tickets first");
        let b = agent(&["social_insurance"], 1);
        let c = agent(&["social_insurance"], 2);
        let p = plan(&[old.clone(), disabled.clone(), elderly.clone()], &[a, b, c], now, &Policy::default());
        assert_eq!(p.iter().map(|x| x.0).collect::<Vec<_>>(), vec![elderly.id, disabled.id, old.id]);
    }

    #[test]
    fn the_oldest_ticket_goes_to_the_agent_idle_longest() {
        let now = MON_10;
        let t1 = ticket("citizen_card", now - 60_000);
        let t2 = ticket("citizen_card", now - 30_000);
        let recent = agent(&["citizen_card"], now - 1_000);
        let longest = agent(&["citizen_card"], now - 900_000);
        let middle = agent(&["citizen_card"], now - 100_000);
        let p = plan(&[t2.clone(), t1.clone()], &[recent.clone(), longest.clone(), middle.clone()], now, &Policy::default());
        assert_eq!(p, vec![(t1.id, longest.id), (t2.id, middle.id)]);
    }

    #[test]
    fn an_expired_offer_goes_to_the_next_agent_and_the_first_is_set_away() {
        let clock = FakeClock::at(MON_10);
        let policy = Policy::default();
        let mut t = ticket("car_quota", clock.now_ms());
        let first = agent(&["car_quota"], 0);
        let second = agent(&["car_quota"], 10);
        let p = plan(&[t.clone()], &[first.clone(), second.clone()], clock.now_ms(), &policy);
        assert_eq!(p, vec![(t.id, first.id)]);
        // 20 s pass without accept.
        clock.advance_ms(policy.offer_timeout_ms);
        let (state, presence) = on_offer_expired(TicketState::Waiting);
        assert_eq!((state, presence), (TicketState::Waiting, Presence::Away));
        t.excluded.push(first.id);
        let first_away = AgentView { presence, ..first };
        let p = plan(&[t.clone()], &[first_away, second.clone()], clock.now_ms(), &policy);
        assert_eq!(p, vec![(t.id, second.id)]);
        assert_eq!(on_offer_expired(TicketState::Callback).0, TicketState::Callback, "a call-back stays a call-back");
    }

    #[test]
    fn a_long_wait_widens_to_the_broader_pool() {
        let clock = FakeClock::at(MON_10);
        let mut policy = Policy { widen_after_ms: 120_000, ..Policy::default() };
        let t = ticket("traffic", clock.now_ms());
        let other = agent(&["citizen_card"], 0);
        assert!(plan(&[t.clone()], &[other.clone()], clock.now_ms(), &policy).is_empty());
        clock.advance_ms(119_999);
        assert!(plan(&[t.clone()], &[other.clone()], clock.now_ms(), &policy).is_empty());
        clock.advance_ms(1);
        assert_eq!(plan(&[t.clone()], &[other.clone()], clock.now_ms(), &policy), vec![(t.id, other.id)]);
        // A configured broader pool limits who may take it.
        policy.wider_pool.insert("traffic".into(), vec!["car_quota".into()]);
        assert!(plan(&[t.clone()], &[other], clock.now_ms(), &policy).is_empty());
        let cq = agent(&["car_quota"], 0);
        assert_eq!(plan(&[t.clone()], &[cq.clone()], clock.now_ms(), &policy), vec![(t.id, cq.id)]);
    }

    #[test]
    fn appointments_go_first_at_their_slot_not_before() {
        let clock = FakeClock::at(MON_10);
        let mut elderly = ticket("social_insurance", clock.now_ms() - 600_000);
        elderly.priority = vec![Priority::Elderly];
        let mut appt = ticket("social_insurance", clock.now_ms() - 3_600_000);
        appt.appointment_at = Some(clock.now_ms() + 60_000);
        appt.priority = vec![Priority::Appointment];
        let a = agent(&["social_insurance"], 0);
        assert_eq!(plan(&[elderly.clone(), appt.clone()], &[a.clone()], clock.now_ms(), &Policy::default())[0].0, elderly.id);
        clock.advance_ms(60_000);
        assert_eq!(plan(&[elderly.clone(), appt.clone()], &[a], clock.now_ms(), &Policy::default())[0].0, appt.id);
    }

    #[test]
    fn busy_offered_declined_and_away_agents_are_skipped() {
        let now = MON_10;
        let mut t = ticket("health", now);
        let mut busy = agent(&["health"], 0);
        busy.presence = Presence::OnCall;
        let mut offered = agent(&["health"], 0);
        offered.has_offer = true;
        let mut away = agent(&["health"], 0);
        away.presence = Presence::Away;
        let declined = agent(&["health"], 0);
        t.excluded.push(declined.id);
        assert!(plan(&[t], &[busy, offered, away, declined], now, &Policy::default()).is_empty());
    }

    #[test]
    fn service_hours_follow_workdays_weekends_and_holidays() {
        let h = ServiceHours::default();
        assert!(h.is_open(MON_10));
        // Monday 07:59 closed, 08:00 open, 19:59 open, 20:00 closed.
        let mon_0 = MON_10 - 10 * 3_600_000;
        assert!(!h.is_open(mon_0 + 7 * 3_600_000 + 59 * 60_000));
        assert!(h.is_open(mon_0 + 8 * 3_600_000));
        assert!(h.is_open(mon_0 + 19 * 3_600_000 + 59 * 60_000));
        assert!(!h.is_open(mon_0 + 20 * 3_600_000));
        // Saturday 2026-12-05: 09:00-17:00.
        let sat_0 = mon_0 + 5 * 86_400_000;
        assert_eq!(local(sat_0).0.weekday(), time::Weekday::Saturday);
        assert!(!h.is_open(sat_0 + 8 * 3_600_000 + 30 * 60_000));
        assert!(h.is_open(sat_0 + 9 * 3_600_000));
        assert!(!h.is_open(sat_0 + 17 * 3_600_000));
        // A holiday closes a workday; a make-up workday opens a weekend day on workday hours.
        let mut h2 = h.clone();
        h2.holidays.insert(local(MON_10).0);
        h2.extra_workdays.insert(local(sat_0).0);
        assert!(!h2.is_open(MON_10));
        assert!(h2.is_open(sat_0 + 8 * 3_600_000));
        // Closed Monday (holiday) at 10:00: next opening is Tuesday 08:00.
        assert_eq!(h2.next_open(MON_10), Some(mon_0 + 86_400_000 + 8 * 3_600_000));
        assert_eq!(h.closes_at(MON_10), Some(mon_0 + 20 * 3_600_000));
        // Friday 20:30 → Saturday 09:00.
        let fri_2030 = mon_0 + 4 * 86_400_000 + 20 * 3_600_000 + 30 * 60_000;
        assert_eq!(h.next_open(fri_2030), Some(sat_0 + 9 * 3_600_000));
        assert_eq!(h.slots(local(sat_0).0, 30).len(), 16);
        assert!(h2.slots(local(MON_10).0, 30).is_empty());
    }

    #[test]
    fn transitions_are_checked() {
        use TicketState::*;
        assert!(can_transition(Waiting, Offered) && can_transition(Offered, InCall));
        assert!(can_transition(InCall, WrapUp) && can_transition(WrapUp, Done));
        assert!(!can_transition(Done, Waiting) && !can_transition(InCall, Waiting) && !can_transition(Waiting, InCall));
        assert!(can_transition(Appointment, Waiting) && can_transition(Waiting, Callback));
    }

    #[test]
    fn wait_estimates_grow_with_position_and_shrink_with_agents() {
        assert_eq!(estimate_wait_s(1, 2, 300), 300);
        assert_eq!(estimate_wait_s(2, 2, 300), 300);
        assert_eq!(estimate_wait_s(3, 2, 300), 600);
        assert_eq!(estimate_wait_s(3, 0, 300), 900, "nobody on duty counts as one");
        assert_eq!(average_s(&[60_000, 120_000], 5), 90);
        assert_eq!(average_s(&[], 5), 5);
    }

    #[test]
    fn figures_count_waiting_agents_and_handled() {
        let now = MON_10;
        let skills = vec!["medical_insurance".to_string()];
        let facts = vec![
            TicketFact { skill: "medical_insurance".into(), state: TicketState::Waiting, queued_at: now - 90_000, answered_at: None, done_at: None },
            TicketFact { skill: "medical_insurance".into(), state: TicketState::Done, queued_at: now - 900_000, answered_at: Some(now - 840_000), done_at: Some(now - 540_000) },
            TicketFact { skill: "citizen_card".into(), state: TicketState::Waiting, queued_at: now - 10_000, answered_at: None, done_at: None },
        ];
        let mut a = agent(&["medical_insurance"], 0);
        a.presence = Presence::OnCall;
        let f = figures(&skills, &facts, &[a, agent(&["citizen_card"], 0)], now);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].waiting, f[0].longest_wait_s, f[0].handled_today), (1, 90, 1));
        assert_eq!((f[0].avg_wait_s, f[0].avg_handle_s), (60, 300));
        assert_eq!(f[0].agents["on_call"], 1);
        assert_eq!(f[0].agents["available"], 0);
    }

    #[test]
    fn ticket_numbers_are_readable() {
        assert_eq!(ticket_no(ticket_prefix("medical_insurance"), 23), "B023");
        assert_eq!(ticket_no('A', 1234), "A1234");
        assert!(ticket_prefix("something_new").is_ascii_uppercase());
    }
}
