//! Typed identifiers. Every id is a UUID (v7, so ids sort by creation time); the newtypes keep
//! a staff id from being passed where a resident id is expected.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(
    /// A staff account (agent, helper, supervisor, auditor, admin).
    StaffId
);
id_type!(
    /// A resident.
    ResidentId
);
id_type!(
    /// A paired device (kiosk, TV box).
    DeviceId
);
id_type!(
    /// A neighbourhood grid.
    GridId
);
id_type!(
    /// A device pairing attempt.
    PairingId
);
id_type!(
    /// A sign-in session (holds the refresh token).
    SessionId
);
id_type!(
    /// An audit log entry.
    AuditId
);
