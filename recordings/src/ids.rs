//! Identifiers used in manifests and file names.
//!
//! Every id is a UUID newtype so that a call id can never be passed where a
//! participant id is expected. The string form (used in file names and JSON) is
//! the lowercase hyphenated UUID, which contains no path separators.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

uuid_id!(
    /// One recording: all media of one call, with one manifest.
    RecordingId
);
uuid_id!(
    /// The call that was recorded (the signaling server's call id).
    CallId
);
uuid_id!(
    /// A participant of the call (one peer connection with the server).
    ParticipantId
);

impl RecordingId {
    /// A fresh, time-ordered (UUIDv7) recording id.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

/// What a participant is in the call. Stored in the manifest so an auditor
/// knows whose media a segment holds without looking anything else up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    /// A resident on a phone browser.
    Resident,
    /// A kiosk or TV set-top box.
    Device,
    /// A back-office agent.
    Agent,
    /// A grid helper acting as a proxy.
    Helper,
    /// A supervisor who joined the call.
    Supervisor,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_lowercase_hyphenated_uuids_and_parse_back() {
        let id = ParticipantId::from_uuid(Uuid::from_u128(0xABCD));
        let text = id.to_string();
        assert_eq!(text, "00000000-0000-0000-0000-00000000abcd");
        assert_eq!(text.parse::<ParticipantId>().ok(), Some(id));
        assert_eq!(serde_json::to_string(&id).ok(), Some(format!("\"{text}\"")));
    }
}
