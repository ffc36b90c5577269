//! The records of who uses the system: staff, residents, devices, grids, and the audit trail.

use serde::{Deserialize, Serialize};

use super::clock::Millis;
use super::identity::{IdNumber, PhoneNumber, Role, Username};
use super::ids::{AuditId, DeviceId, GridId, ResidentId, StaffId};

/// A staff account.
#[derive(Debug, Clone)]
pub struct Staff {
    /// Id.
    pub id: StaffId,
    /// Sign-in name.
    pub username: Username,
    /// Name shown to residents and colleagues.
    pub display_name: String,
    /// Role (never resident or device).
    pub role: Role,
    /// Matter classes served (agents) — routing skills.
    pub skills: Vec<String>,
    /// Grid served (helpers).
    pub grid_id: Option<GridId>,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Failed sign-ins in a row.
    pub failed_logins: u32,
    /// Locked until (Unix ms).
    pub locked_until: Option<Millis>,
    /// Disabled accounts cannot sign in.
    pub disabled: bool,
    /// Created at (Unix ms).
    pub created_at: Millis,
}

/// A resident.
#[derive(Debug, Clone)]
pub struct Resident {
    /// Id.
    pub id: ResidentId,
    /// Full name (may be empty until the profile is completed).
    pub name: String,
    /// Mobile phone (sign-in).
    pub phone: PhoneNumber,
    /// Identity card number.
    pub id_number: Option<IdNumber>,
    /// Birth date.
    pub birth_date: Option<time::Date>,
    /// Registered as elderly (priority), regardless of birth date.
    pub elderly: bool,
    /// Registered as disabled (priority).
    pub disabled: bool,
    /// Grid of residence.
    pub grid_id: Option<GridId>,
    /// Created at (Unix ms).
    pub created_at: Millis,
}

impl Resident {
    /// Priority in the queue: 60 or older on `today`, flagged elderly, or disabled.
    pub fn has_priority(&self, today: time::Date) -> bool {
        self.disabled
            || self.elderly
            || self.birth_date.is_some_and(|b| super::identity::age_on(b, today) >= 60)
    }
}

/// Kind of a paired device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A self-service kiosk.
    Kiosk,
    /// A TV set-top box.
    TvBox,
}

impl DeviceKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Kiosk => "kiosk",
            DeviceKind::TvBox => "tv_box",
        }
    }
    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kiosk" => Some(DeviceKind::Kiosk),
            "tv_box" => Some(DeviceKind::TvBox),
            _ => None,
        }
    }
}

/// A paired device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Id.
    pub id: DeviceId,
    /// Kiosk or TV box.
    pub kind: DeviceKind,
    /// Label (where it stands).
    pub label: String,
    /// Grid it serves.
    pub grid_id: Option<GridId>,
    /// Revoked devices cannot get tokens.
    pub revoked: bool,
    /// Paired at (Unix ms).
    pub created_at: Millis,
    /// Last token use (Unix ms).
    pub last_seen_at: Option<Millis>,
}

/// A neighbourhood grid (网格).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grid {
    /// Id.
    pub id: GridId,
    /// Stable code, e.g. `XH-WL-012`.
    pub code: String,
    /// Name.
    pub name: String,
}

/// Who did something recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// Subject id (staff, resident or device), `None` for the system or an anonymous caller.
    pub id: Option<uuid::Uuid>,
    /// Role, `None` for the system or an anonymous caller.
    pub role: Option<Role>,
}

impl Actor {
    /// The server itself.
    pub const SYSTEM: Actor = Actor { id: None, role: None };
}

/// One append-only audit entry.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Id (time ordered).
    pub id: AuditId,
    /// When.
    pub at: Millis,
    /// Who.
    pub actor: Actor,
    /// What, e.g. `staff.login`, `matter.update`, `device.pair.confirm`.
    pub action: String,
    /// Kind of the object acted on, e.g. `staff`, `matter`.
    pub target_kind: String,
    /// Id or code of the object.
    pub target_id: String,
    /// Details (JSON), never secrets, personal data masked.
    pub detail: serde_json::Value,
}
