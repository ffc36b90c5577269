//! Identifiers and small value types that appear on the wire.
//!
//! Every id is a newtype around [`Uuid`], serialized transparently as the hyphenated UUID
//! string, so a `CallId` can never be passed where a `TicketId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random id (UUID version 4).
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id! {
    /// A signaling session: one authenticated client, across the sockets it resumes on. (Not
    /// a sign-in session: those hold refresh tokens and live in the server's domain.)
    ///
    /// The server must create it from a cryptographically random source (UUID v4): together
    /// with a token for the same subject it is what lets a client resume.
    SessionId
}
uuid_id! {
    /// A call (one video conversation between a resident side and an agent).
    CallId
}
uuid_id! {
    /// One participant of one call. A participant that rejoins within the grace period keeps
    /// its id.
    ParticipantId
}
uuid_id! {
    /// An account, as the `sub` of its access token: a resident, a device (kiosk, TV box) or a
    /// staff member (agent, helper, supervisor, auditor, admin). The server maps it to its own
    /// typed ids.
    UserId
}
uuid_id! {
    /// A queue ticket.
    TicketId
}
uuid_id! {
    /// An offer of a ticket to one agent (issue 5): accepted, declined, or withdrawn.
    OfferId
}
uuid_id! {
    /// A chat message inside a call.
    ChatMessageId
}

/// Optional id a client puts on a message so that the server's answer (carrying it as
/// `reply_to`) can be matched. Within a session, ids must strictly increase; see
/// `docs/protocol.md`, "Requests, answers and retransmission".
///
/// Browsers hold it in a JavaScript number: keep it below 2^53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The readable ticket number shown to the resident and called out, e.g. `B023`; unique per
/// day. Made by the server; clients only display it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TicketNo(pub String);

impl fmt::Display for TicketNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in time, on the wire as an RFC 3339 string (`2025-03-03T09:30:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(#[serde(with = "time::serde::rfc3339")] OffsetDateTime);

impl Timestamp {
    /// Wraps a time.
    pub const fn new(at: OffsetDateTime) -> Self {
        Self(at)
    }

    /// The time inside.
    pub const fn get(&self) -> OffsetDateTime {
        self.0
    }

    /// Parses an RFC 3339 string.
    pub fn parse(s: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map(Self)
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(at: OffsetDateTime) -> Self {
        Self(at)
    }
}

impl From<Timestamp> for OffsetDateTime {
    fn from(at: Timestamp) -> Self {
        at.0
    }
}
