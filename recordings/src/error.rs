//! Errors of the recording writer.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::chain::ChainError;
use crate::codec::TrackKind;
use crate::ids::{ParticipantId, RecordingId};
use crate::store::StoreError;
use crate::webm::WebmError;

/// Writing a recording failed. Malformed RTP is never an error: such packets
/// are dropped and counted in the manifest's track statistics.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// No participant with this id was added.
    #[error("participant {0} is not part of this recording")]
    UnknownParticipant(ParticipantId),
    /// The participant has no track of this kind.
    #[error("participant {participant} has no {kind:?} track")]
    UnknownTrack {
        /// The participant.
        participant: ParticipantId,
        /// The kind of the packet's track.
        kind: TrackKind,
    },
    /// Two tracks of one kind were declared for one participant.
    #[error("participant {participant} declared two {kind:?} tracks")]
    DuplicateTrack {
        /// The participant.
        participant: ParticipantId,
        /// The repeated kind.
        kind: TrackKind,
    },
    /// A recording with this id already exists: evidence is never overwritten.
    #[error("recording {0} already exists")]
    AlreadyExists(RecordingId),
    /// The recording was finished; it takes no more media.
    #[error("recording {0} is finished")]
    Finished(RecordingId),
    /// A file operation failed.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing WebM failed.
    #[error(transparent)]
    Webm(#[from] WebmError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Appending to the chain failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The manifest found on disk is not valid (recovery only).
    #[error("manifest of recording {recording_id} is not valid: {detail}")]
    BadManifest {
        /// The recording.
        recording_id: RecordingId,
        /// What is wrong.
        detail: String,
    },
}

impl RecordError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}
