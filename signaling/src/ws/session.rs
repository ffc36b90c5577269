//! Signaling sessions: a session outlives its socket. Every server message gets the next
//! `seq`; replayable ones are kept in a bounded buffer so a client that reconnects with
//! `resume` gets exactly what it missed.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use signaling_protocol::limits::{DEFAULT_REPLAY_BUFFER_BYTES, DEFAULT_REPLAY_BUFFER_MESSAGES};
use signaling_protocol::{RequestId, ServerEnvelope, ServerMessage, SessionId};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::domain::identity::Role;

/// What the socket writer receives.
pub type Outgoing = Arc<str>;

/// One signaling session.
pub struct Session {
    /// Its id (sent in `welcome`).
    pub id: SessionId,
    /// The authenticated subject.
    pub subject: Uuid,
    /// Its role.
    pub role: Role,
    out: Mutex<Outbox>,
    calls: Mutex<HashSet<Uuid>>,
}

struct Outbox {
    next_seq: u64,
    buffer: VecDeque<(u64, Outgoing)>,
    buffered_bytes: usize,
    /// Lowest seq evicted from the buffer (0: none evicted).
    evicted_up_to: u64,
    conn: Option<(u64, mpsc::Sender<Outgoing>)>,
    detached_since: Option<Instant>,
    last_client_id: Option<RequestId>,
}

/// Why a resume cannot be served from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct ReplayGap;

impl Session {
    /// A new session, not yet attached to a socket.
    pub fn new(subject: Uuid, role: Role) -> Arc<Self> {
        Arc::new(Session {
            id: SessionId::random(),
            subject,
            role,
            out: Mutex::new(Outbox {
                next_seq: 1,
                buffer: VecDeque::new(),
                buffered_bytes: 0,
                evicted_up_to: 0,
                conn: None,
                detached_since: Some(Instant::now()),
                last_client_id: None,
            }),
            calls: Mutex::new(HashSet::new()),
        })
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a message: numbers it, keeps it for replay when replayable, and hands it to the
    /// socket if one is attached. A socket whose queue is full is dropped (the client resumes
    /// and gets the rest from the buffer): a slow client never blocks the server.
    pub fn send(&self, msg: ServerMessage, reply_to: Option<RequestId>) {
        let mut o = self.outbox();
        let seq = o.next_seq;
        o.next_seq += 1;
        let replayable = msg.is_replayable();
        let text: Outgoing = match ServerEnvelope::reply(seq, reply_to, msg).to_json() {
            Ok(t) => t.into(),
            Err(e) => {
                tracing::error!(error = %e, "unserializable server message");
                return;
            }
        };
        if replayable {
            o.buffered_bytes += text.len();
            o.buffer.push_back((seq, text.clone()));
            while o.buffer.len() > DEFAULT_REPLAY_BUFFER_MESSAGES || o.buffered_bytes > DEFAULT_REPLAY_BUFFER_BYTES {
                if let Some((s, t)) = o.buffer.pop_front() {
                    o.buffered_bytes -= t.len();
                    o.evicted_up_to = s;
                }
            }
        }
        let full = match &o.conn {
            Some((_, tx)) => tx.try_send(text).is_err(),
            None => false,
        };
        if full {
            tracing::warn!(session = %self.id, "socket queue full or closed: detaching; the client will resume");
            o.conn = None;
            o.detached_since = Some(Instant::now());
        }
    }

    /// Attaches a socket (`conn_id` identifies it), replaying every buffered message after
    /// `last_seq` first. Fails when messages after `last_seq` were evicted.
    pub fn attach(&self, conn_id: u64, tx: mpsc::Sender<Outgoing>, last_seq: Option<u64>) -> Result<u32, ReplayGap> {
        let mut o = self.outbox();
        let mut replayed = 0;
        if let Some(last) = last_seq {
            if last + 1 < o.next_seq && o.evicted_up_to > last {
                return Err(ReplayGap);
            }
            for (seq, text) in o.buffer.iter() {
                if *seq > last {
                    if tx.try_send(text.clone()).is_err() {
                        return Err(ReplayGap);
                    }
                    replayed += 1;
                }
            }
        }
        o.conn = Some((conn_id, tx));
        o.detached_since = None;
        Ok(replayed)
    }

    /// Detaches the socket `conn_id` (if it is still the attached one). Returns true if it was.
    pub fn detach(&self, conn_id: u64) -> bool {
        let mut o = self.outbox();
        if o.conn.as_ref().is_some_and(|(id, _)| *id == conn_id) {
            o.conn = None;
            o.detached_since = Some(Instant::now());
            true
        } else {
            false
        }
    }

    /// Is socket `conn_id` the attached one?
    pub fn is_attached(&self, conn_id: u64) -> bool {
        self.outbox().conn.as_ref().is_some_and(|(id, _)| *id == conn_id)
    }

    /// Since when the session has had no socket.
    pub fn detached_since(&self) -> Option<Instant> {
        self.outbox().detached_since
    }

    /// Records the last client request id processed; returns false for a repeat (an id not
    /// above the last one), which must be ignored.
    pub fn accept_client_id(&self, id: Option<RequestId>) -> bool {
        let Some(id) = id else { return true };
        let mut o = self.outbox();
        if o.last_client_id.is_some_and(|last| id.0 <= last.0) {
            return false;
        }
        o.last_client_id = Some(id);
        true
    }

    /// The last client request id processed.
    pub fn last_client_id(&self) -> Option<RequestId> {
        self.outbox().last_client_id
    }

    /// Calls joined through this session.
    pub fn calls(&self) -> Vec<Uuid> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
    }

    /// Notes a call joined (true) or left (false).
    pub fn set_in_call(&self, call: Uuid, joined: bool) {
        let mut c = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if joined {
            c.insert(call);
        } else {
            c.remove(&call);
        }
    }

    /// Has this session joined `call`?
    pub fn in_call(&self, call: Uuid) -> bool {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).contains(&call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signaling_protocol::parse_server_frame;

    fn ping() -> ServerMessage {
        ServerMessage::Ack {}
    }

    #[test]
    fn a_resumed_socket_gets_exactly_what_it_missed() {
        let s = Session::new(Uuid::now_v7(), Role::Agent);
        let (tx, mut rx) = mpsc::channel(16);
        s.attach(1, tx, None).unwrap();
        s.send(ping(), None);
        s.send(ping(), None);
        assert_eq!(parse_server_frame(&rx.try_recv().unwrap()).unwrap().seq, 1);
        assert!(s.detach(1));
        s.send(ping(), None);
        s.send(ping(), None);
        let (tx2, mut rx2) = mpsc::channel(16);
        // The client saw seq 1 only: 2, 3 and 4 are replayed in order.
        assert_eq!(s.attach(2, tx2, Some(1)), Ok(3));
        let seqs: Vec<u64> = std::iter::from_fn(|| rx2.try_recv().ok()).map(|t| parse_server_frame(&t).unwrap().seq).collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        assert!(!s.detach(1), "an old socket cannot detach the new one");
    }

    #[test]
    fn a_gap_beyond_the_buffer_requires_a_rejoin() {
        let s = Session::new(Uuid::now_v7(), Role::Resident);
        for _ in 0..(DEFAULT_REPLAY_BUFFER_MESSAGES + 10) {
            s.send(ping(), None);
        }
        let (tx, _rx) = mpsc::channel(1024);
        assert_eq!(s.attach(1, tx, Some(3)), Err(ReplayGap));
        let (tx, _rx) = mpsc::channel(1024);
        assert!(s.attach(2, tx, Some(20)).is_ok());
    }

    #[test]
    fn repeated_client_ids_are_ignored() {
        let s = Session::new(Uuid::now_v7(), Role::Resident);
        assert!(s.accept_client_id(Some(RequestId(1))));
        assert!(s.accept_client_id(Some(RequestId(5))));
        assert!(!s.accept_client_id(Some(RequestId(5))));
        assert!(!s.accept_client_id(Some(RequestId(2))));
        assert!(s.accept_client_id(None));
    }
}
