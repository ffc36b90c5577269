//! Shapes used by the queue and dispatch messages (issue 5): tickets, offers to agents,
//! agent presence, supervisor figures.

use serde::{Deserialize, Serialize};

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// In the queue.
    Waiting,
    /// Offered to an agent, waiting for them to accept (the resident sees "connecting").
    Offered,
    /// In a call with an agent.
    InCall,
    /// The call is over; the agent is finishing the case.
    WrapUp,
    /// Handled.
    Done,
    /// The resident left the queue or did not come back within the grace period.
    Abandoned,
    /// Service hours ended before it was handled.
    Expired,
    /// Moved to a call-back: an agent will call the resident, who keeps their place.
    Callback,
    /// Moved to a booked appointment slot.
    Appointment,
    /// A state added by a newer server.
    #[serde(other)]
    Unknown,
}

/// The channel a ticket came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A resident's phone browser.
    Phone,
    /// A TV set-top box.
    Tv,
    /// A self-service kiosk.
    Kiosk,
    /// A grid helper, for a resident.
    Helper,
}

/// Why a ticket has priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorityReason {
    /// The resident is 60 or older.
    Elderly,
    /// The resident is disabled.
    Disabled,
    /// An appointment at its slot.
    Appointment,
    /// A call-back that kept its place.
    Callback,
}

/// The matter a ticket is about, summarized for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatterSummary {
    /// Matter code, e.g. `MI-003`.
    pub code: String,
    /// Class code (the skill), e.g. `medical_insurance`.
    pub class: String,
    /// Name in Chinese.
    pub name_zh: String,
    /// Name in English.
    pub name_en: String,
}

/// The resident behind a ticket, summarized for the agent before accepting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidentSummary {
    /// Masked name, e.g. `张*明`.
    pub display_name: String,
    /// Priority reasons; empty for none.
    pub priority: Vec<PriorityReason>,
    /// Channel the ticket came in through.
    pub channel: Channel,
    /// The helper's display name when a grid helper calls on the resident's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper_name: Option<String>,
}

/// Why an offer to an agent is no longer open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    /// Nobody accepted in time; the agent is set `away`.
    Expired,
    /// The resident left the queue.
    Cancelled,
    /// The agent's presence changed (went offline, on a break) or their console vanished.
    AgentUnavailable,
    /// A reason added by a newer server.
    #[serde(other)]
    Unknown,
}

/// An agent's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// Signed out or console gone.
    Offline,
    /// Ready for the next ticket.
    Available,
    /// In a call.
    OnCall,
    /// Finishing the case after a call.
    WrapUp,
    /// On a break (with a reason).
    OnBreak,
    /// Let an offer expire; out of rotation until they set `available`.
    Away,
    /// A status added by a newer server.
    #[serde(other)]
    Unknown,
}

/// The presence an agent may choose with `set_presence`; the others are set by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectablePresence {
    /// Ready for the next ticket (also ends wrap-up, a break, or away).
    Available,
    /// On a break; give a reason.
    OnBreak,
    /// Out of rotation until further notice.
    Offline,
}

impl From<SelectablePresence> for PresenceStatus {
    fn from(p: SelectablePresence) -> Self {
        match p {
            SelectablePresence::Available => Self::Available,
            SelectablePresence::OnBreak => Self::OnBreak,
            SelectablePresence::Offline => Self::Offline,
        }
    }
}

/// Agents per presence status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCounts {
    /// Available.
    pub available: u32,
    /// On a call.
    pub on_call: u32,
    /// In wrap-up.
    pub wrap_up: u32,
    /// On a break.
    pub on_break: u32,
    /// Away (let an offer expire).
    pub away: u32,
    /// Offline (only agents holding the skill who signed in today).
    pub offline: u32,
}

/// Live figures for one skill (matter class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillFigures {
    /// Class code, e.g. `medical_insurance`.
    pub skill: String,
    /// Tickets waiting now.
    pub waiting: u32,
    /// Wait of the oldest waiting ticket, in seconds (0 when none waits).
    pub longest_wait_s: u32,
    /// Agents holding this skill, per status.
    pub agents: AgentCounts,
    /// Tickets handled today.
    pub handled_today: u32,
    /// Average wait of tickets answered today, in seconds.
    pub avg_wait_s: u32,
    /// Average handling time (call plus wrap-up) today, in seconds.
    pub avg_handle_s: u32,
}
