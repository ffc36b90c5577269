//! Calls: who may join a call and in which role, how a call ends, what is recorded about it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::clock::Millis;
use super::identity::Role;

/// A call id.
pub type CallId = Uuid;

/// The role a member holds in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// The resident whose matter it is.
    Resident,
    /// A kiosk or TV box the resident calls from.
    Device,
    /// The back-office agent handling the matter.
    Agent,
    /// A grid helper joining as a third party.
    Helper,
    /// A supervisor listening in.
    Observer,
}

impl MemberRole {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Resident => "resident",
            MemberRole::Device => "device",
            MemberRole::Agent => "agent",
            MemberRole::Helper => "helper",
            MemberRole::Observer => "observer",
        }
    }
    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "resident" => MemberRole::Resident,
            "device" => MemberRole::Device,
            "agent" => MemberRole::Agent,
            "helper" => MemberRole::Helper,
            "observer" => MemberRole::Observer,
            _ => return None,
        })
    }
    /// The account role that may hold this member role.
    pub fn account_role(self) -> &'static [Role] {
        match self {
            MemberRole::Resident => &[Role::Resident],
            MemberRole::Device => &[Role::Device],
            MemberRole::Agent => &[Role::Agent],
            MemberRole::Helper => &[Role::Helper],
            MemberRole::Observer => &[Role::Supervisor],
        }
    }
}

/// Whether a call is going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Members may join.
    Open,
    /// Over; nobody joins again.
    Ended,
}

/// A call as stored.
#[derive(Debug, Clone)]
pub struct Call {
    /// Id.
    pub id: CallId,
    /// The staff member who opened it.
    pub opened_by: Uuid,
    /// The resident whose matter it is.
    pub resident_id: Option<Uuid>,
    /// The matter, when known.
    pub matter_code: Option<String>,
    /// The ticket it came from (queue issue).
    pub ticket_id: Option<Uuid>,
    /// Open or ended.
    pub state: CallState,
    /// Opened at.
    pub created_at: Millis,
    /// Ended at.
    pub ended_at: Option<Millis>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Who ended it (subject id).
    pub ended_by: Option<Uuid>,
}

/// Someone allowed to join a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The call.
    pub call_id: CallId,
    /// The participant id this member has in the call (stable across reconnects).
    pub participant_id: Uuid,
    /// Account id (staff, resident or device).
    pub subject: Uuid,
    /// Role in the call.
    pub role: MemberRole,
    /// Name shown to the others.
    pub display_name: String,
    /// Added at.
    pub added_at: Millis,
    /// Who added them (`None`: at opening).
    pub added_by: Option<Uuid>,
}

/// Why a join is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    /// No such call.
    NotFound,
    /// The call is over.
    Ended,
    /// The identity is not a member, or not in the requested role.
    NotAMember,
}

/// Decides whether `subject` (holding account role `role`) may join `call` as `requested`
/// (or in their own member role when `None`). Returns the member record on success.
pub fn authorize_join<'a>(
    call: Option<&Call>,
    members: &'a [Member],
    subject: Uuid,
    role: Role,
    requested: Option<MemberRole>,
) -> Result<&'a Member, JoinRefusal> {
    let call = call.ok_or(JoinRefusal::NotFound)?;
    if call.state == CallState::Ended {
        return Err(JoinRefusal::Ended);
    }
    let m = members.iter().find(|m| m.subject == subject).ok_or(JoinRefusal::NotAMember)?;
    if requested.is_some_and(|r| r != m.role) || !m.role.account_role().contains(&role) {
        return Err(JoinRefusal::NotAMember);
    }
    Ok(m)
}

/// May this member end the call for everyone? Only the agent.
pub fn may_end(member: &Member) -> bool {
    member.role == MemberRole::Agent
}

/// Who may add a helper or an observer to a call: its agent, or any supervisor.
pub fn may_invite(call: &Call, members: &[Member], subject: Uuid, role: Role) -> bool {
    call.state == CallState::Open
        && (role == Role::Supervisor
            || members.iter().any(|m| m.subject == subject && m.role == MemberRole::Agent))
}

/// How long a participant whose connection dropped keeps their place (default).
pub const DEFAULT_GRACE_MS: u64 = 20_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn call(state: CallState) -> Call {
        Call {
            id: Uuid::now_v7(),
            opened_by: Uuid::now_v7(),
            resident_id: None,
            matter_code: None,
            ticket_id: None,
            state,
            created_at: 0,
            ended_at: None,
            end_reason: None,
            ended_by: None,
        }
    }

    fn member(c: &Call, role: MemberRole) -> Member {
        Member {
            call_id: c.id,
            participant_id: Uuid::now_v7(),
            subject: Uuid::now_v7(),
            role,
            display_name: "x".into(),
            added_at: 0,
            added_by: None,
        }
    }

    #[test]
    fn only_members_join_and_only_in_their_own_role() {
        let c = call(CallState::Open);
        let res = member(&c, MemberRole::Resident);
        let agent = member(&c, MemberRole::Agent);
        let ms = vec![res.clone(), agent.clone()];
        assert!(authorize_join(Some(&c), &ms, res.subject, Role::Resident, None).is_ok());
        // A resident asking to join as the agent is refused.
        assert_eq!(
            authorize_join(Some(&c), &ms, res.subject, Role::Resident, Some(MemberRole::Agent)),
            Err(JoinRefusal::NotAMember)
        );
        // A token of another role for the same subject id is refused.
        assert_eq!(authorize_join(Some(&c), &ms, agent.subject, Role::Helper, None), Err(JoinRefusal::NotAMember));
        assert_eq!(authorize_join(Some(&c), &ms, Uuid::now_v7(), Role::Agent, None), Err(JoinRefusal::NotAMember));
        assert_eq!(authorize_join(None, &ms, res.subject, Role::Resident, None), Err(JoinRefusal::NotFound));
        let ended = Call { state: CallState::Ended, ..c.clone() };
        assert_eq!(authorize_join(Some(&ended), &ms, res.subject, Role::Resident, None), Err(JoinRefusal::Ended));
    }

    #[test]
    fn only_the_agent_ends_and_agents_or_supervisors_invite() {
        let c = call(CallState::Open);
        let res = member(&c, MemberRole::Resident);
        let agent = member(&c, MemberRole::Agent);
        assert!(may_end(&agent) && !may_end(&res));
        let ms = vec![res.clone(), agent.clone()];
        assert!(may_invite(&c, &ms, agent.subject, Role::Agent));
        assert!(may_invite(&c, &ms, Uuid::now_v7(), Role::Supervisor));
        assert!(!may_invite(&c, &ms, res.subject, Role::Resident));
        assert!(!may_invite(&c, &ms, Uuid::now_v7(), Role::Agent), "another agent is not this call's agent");
    }
}
