//! Shapes used by the call messages: participants, roles, the recording notice, reasons.

use serde::{Deserialize, Serialize};

use crate::ids::{ParticipantId, Timestamp};

/// An account's role, as carried in its access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A resident using their own phone browser.
    Resident,
    /// A shared device: a self-service kiosk or a TV set-top box.
    Device,
    /// A back-office agent.
    Agent,
    /// A grid helper (proxy) acting for residents.
    Helper,
    /// A supervisor: live figures, may observe calls.
    Supervisor,
    /// An auditor: reviews recordings; never in live calls.
    Auditor,
    /// An administrator.
    Admin,
}

/// The part a participant plays in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    /// The resident, on their own phone.
    Resident,
    /// The resident side on a kiosk or TV box.
    Device,
    /// The agent handling the matter; may end the call.
    Agent,
    /// A grid helper, with the resident or joining as a third party.
    Helper,
    /// A supervisor observing: receives media, publishes none.
    Observer,
}

/// Connection state of a participant, as seen by the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Signaling connected.
    Connected,
    /// Its signaling connection is lost; its place is kept for the grace period.
    Reconnecting,
}

/// A participant of a call, as described to the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Its id in this call. In the server's SDP offers, every track this participant
    /// publishes has this id as its MediaStream id (`a=msid:<participant_id> <track>`).
    pub participant_id: ParticipantId,
    /// Its role in the call.
    pub role: ParticipantRole,
    /// Name to show: a resident's masked name (`张*明`), an agent's title and number.
    pub display_name: String,
    /// Whether it is connected or reconnecting.
    pub state: ConnectionState,
    /// Its microphone is muted.
    pub audio_muted: bool,
    /// Its camera is off.
    pub video_off: bool,
    /// When it joined the call.
    pub joined_at: Timestamp,
}

/// The notice that the call is recorded. Clients must show it, in full, before they start
/// sending media and keep an indicator visible for the whole call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingNotice {
    /// Whether the call is recorded. Always `true` in protocol v1: every call is recorded.
    pub recorded: bool,
    /// The notice to show, in Chinese: that the call is recorded, why, and for how long.
    pub notice_zh: String,
    /// The same notice in English.
    pub notice_en: String,
    /// Why it is recorded, as a short legal or policy basis (Chinese), e.g. the regulation
    /// requiring audit recordings of remote handling.
    pub purpose_zh: String,
    /// The same basis in English.
    pub purpose_en: String,
    /// How many days the recording is kept before it is deleted.
    pub retention_days: u32,
    /// A page with the full recording policy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_url: Option<String>,
}

/// Why a participant left a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its connection was lost and it did not come back within the grace period.
    TimedOut,
    /// An agent or administrator removed it.
    Removed,
    /// A reason added by a newer server; treat as [`LeaveReason::Left`].
    #[serde(other)]
    Unknown,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A participant allowed to end it (the agent) sent `end_call`; `ended_by` says who.
    HungUp,
    /// The resident side left or did not come back within the grace period.
    ResidentLeft,
    /// The agent left or did not come back within the grace period.
    AgentLeft,
    /// The server is shutting down and could not move the call.
    ServerShutdown,
    /// The call failed on the server (media relay or recording could not continue).
    Failed,
    /// A reason added by a newer server.
    #[serde(other)]
    Unknown,
}
