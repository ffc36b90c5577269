//! SDK participants for the black-box tests and benches: a [`Party`] joins a call with the real
//! client SDK and keeps its events and what it received from each publisher; sign-in and
//! call-opening helpers over REST. Every wait is bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_sdk::{Call, CallConfig, CallEvent, CallId, EndCause, LeaveReason, MediaKind, ParticipantId};
use serde_json::json;

use crate::TestApp;

/// What one client received from one publisher.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub audio: u64,
    pub video: u64,
    pub keyframes: u64,
}

/// The events of one SDK client, kept for assertions, and its media counters.
#[derive(Default)]
pub struct Seen {
    pub events: Mutex<Vec<String>>,
    pub chats: Mutex<Vec<(String, bool)>>,
    pub left: Mutex<Vec<(ParticipantId, LeaveReason)>>,
    pub ended: Mutex<Option<EndCause>>,
    pub received: Mutex<HashMap<ParticipantId, Received>>,
    pub recording_notice: Mutex<Option<String>>,
}

pub struct Party {
    pub call: Option<Call>,
    pub seen: Arc<Seen>,
    pub id: ParticipantId,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for Party {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Party {
    pub async fn join(config: CallConfig) -> Party {
        let (call, mut events) = Call::join(config).await.expect("join");
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let line = match &ev {
                    CallEvent::RemoteTrack(t) => format!("track {:?} {}", t.kind, t.participant_id),
                    other => format!("{other:?}"),
                };
                s.events.lock().unwrap().push(line);
                match ev {
                    CallEvent::Joined { recording, .. } => {
                        *s.recording_notice.lock().unwrap() = Some(recording.notice_zh.clone());
                    }
                    CallEvent::RemoteTrack(mut track) => {
                        let s = s.clone();
                        tokio::spawn(async move {
                            while let Some(p) = track.packets.recv().await {
                                let mut rec = s.received.lock().unwrap();
                                let r = rec.entry(track.participant_id).or_default();
                                match track.kind {
                                    MediaKind::Audio => r.audio += 1,
                                    MediaKind::Video => {
                                        r.video += 1;
                                        r.keyframes += u64::from(p.is_vp8_keyframe());
                                    }
                                }
                            }
                        });
                    }
                    CallEvent::Chat(m) => s.chats.lock().unwrap().push((m.text, m.own)),
                    CallEvent::ParticipantLeft { participant_id, reason } => {
                        s.left.lock().unwrap().push((participant_id, reason))
                    }
                    CallEvent::Ended { cause } => *s.ended.lock().unwrap() = Some(cause),
                    _ => {}
                }
            }
        });
        let id = call.participant_id();
        Party {
            call: Some(call),
            seen,
            id,
            task,
        }
    }

    pub fn call(&self) -> &Call {
        self.call.as_ref().expect("still in the call")
    }

    pub fn from(&self, other: &Party) -> Received {
        self.seen
            .received
            .lock()
            .unwrap()
            .get(&other.id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn saw(&self, needle: &str) -> bool {
        self.seen.events.lock().unwrap().iter().any(|e| e.contains(needle))
    }

    pub fn chats(&self) -> Vec<(String, bool)> {
        self.seen.chats.lock().unwrap().clone()
    }

    pub fn receives_media_from(&self, other: &Party) -> bool {
        let r = self.from(other);
        r.audio >= 10 && r.video >= 10 && r.keyframes >= 1
    }

    pub fn events(&self) -> String {
        self.seen.events.lock().unwrap().join("\n")
    }
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Signs in; returns the access token and the subject id.
pub async fn sign_in(app: &TestApp, who: &str) -> (String, String) {
    let body = if who.starts_with("138") {
        app.resident_login(who).await
    } else {
        let r = app
            .call(
                "POST",
                "/api/v1/auth/staff/login",
                None,
                Some(json!({"username": who, "password": signaling::demo::DEMO_PASSWORD})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["subject"].as_str().unwrap().to_owned(),
    )
}

/// An agent opens a call with a resident.
pub async fn open_call(app: &TestApp, agent_token: &str, resident_id: &str) -> CallId {
    let r = app
        .call(
            "POST",
            "/api/v1/calls",
            Some(agent_token),
            Some(json!({"resident_id": resident_id})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().parse().unwrap()
}
