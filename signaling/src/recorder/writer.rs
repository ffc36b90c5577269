//! One call's recording: a dedicated thread that owns the call's [`Recording`], fed by the
//! relay's taps over one bounded channel. The thread does the (blocking, fsyncing) file work, so
//! the forwarding path never waits for a disk.
//!
//! Life: the first packet of the call's first track starts the recording; a participant whose
//! first track opens is declared once its tracks have had [`GATHER`] to show up (so audio and
//! video start in the same segment); a participant whose tracks all ended is removed (its
//! segment finished; a rejoin continues it); when every track of the call has ended and the call
//! is ended in the database, or nothing came back for the linger time, the recording is
//! finished, sealed in the chain, and its row updated.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use recordings::{
    CallId, Codec, ParticipantId, ParticipantRole, Recording, RecordingConfig, RecordingEvent, RecordingId, RtpPacket,
    TrackKind, TrackSpec,
};
use rtc::rtp;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Shared;
use crate::domain::call::MemberRole;
use crate::sfu::{MediaKind, TrackInfo};
use crate::store::recordings::{RecordingRecord, RecordingState};

/// How long a participant's first track waits for the others before the participant is
/// declared (packets meanwhile are buffered, not lost).
pub const GATHER: Duration = Duration::from_millis(400);
/// Most packets buffered per participant while gathering.
const GATHER_MAX: usize = 4_000;
/// How often a lingering recording asks the database whether the call ended.
/// How long the writer sleeps between two batches of packets. The channel holds
/// [`super::TAP_QUEUE`] messages, many times what arrives meanwhile.
const BATCH: Duration = Duration::from_millis(40);
/// A writer whose taps never delivered a packet exits after this.
const IDLE_EXIT: Duration = Duration::from_secs(60);
/// How often a lingering recording asks the database whether the call ended.
const LINGER_POLL: Duration = Duration::from_millis(200);

/// What a tap sends to its call's writer.
pub(crate) enum TapMsg {
    /// A track's first packet is about to follow.
    Opened { info: TrackInfo, at: Instant },
    /// One RTP packet (payload refcounted, not copied).
    Rtp { participant: Uuid, kind: MediaKind, packet: rtp::Packet, at: Instant },
    /// A track ended.
    Ended { participant: Uuid, kind: MediaKind, at: Instant },
    /// The server is shutting down: finish now.
    Shutdown,
}

fn codec_of(info: &TrackInfo) -> Option<Codec> {
    match info.mime_type.to_ascii_lowercase().as_str() {
        "video/vp8" => Some(Codec::Vp8),
        "video/vp9" => Some(Codec::Vp9),
        "video/h264" => Some(Codec::H264),
        "audio/opus" => Some(Codec::Opus),
        _ => None,
    }
}

fn track_kind(kind: MediaKind) -> TrackKind {
    match kind {
        MediaKind::Audio => TrackKind::Audio,
        MediaKind::Video => TrackKind::Video,
    }
}

fn role_of(r: MemberRole) -> ParticipantRole {
    match r {
        MemberRole::Resident => ParticipantRole::Resident,
        MemberRole::Device => ParticipantRole::Device,
        MemberRole::Agent => ParticipantRole::Agent,
        MemberRole::Helper => ParticipantRole::Helper,
        MemberRole::Observer => ParticipantRole::Supervisor,
    }
}

struct Buffered {
    kind: MediaKind,
    packet: rtp::Packet,
    at: Instant,
}

#[derive(Default)]
struct Part {
    /// Tracks open now: kind → (codec, payload type).
    open: HashMap<MediaKind, (Codec, u8)>,
    /// Tracks declared to the recording.
    declared: HashMap<MediaKind, (Codec, u8)>,
    /// Declared and not removed.
    present: bool,
    /// Gathering: until when, and the packets held meanwhile.
    gathering: Option<(Instant, Vec<Buffered>)>,
    role: Option<ParticipantRole>,
}

pub(crate) struct CallWriter {
    shared: Arc<Shared>,
    call_id: Uuid,
    rx: Receiver<TapMsg>,
    rec: Option<Recording>,
    origin: Option<(Instant, OffsetDateTime)>,
    parts: HashMap<Uuid, Part>,
    linger_since: Option<Instant>,
    last_db_check: Option<Instant>,
    segments: u32,
    created: Instant,
}

impl CallWriter {
    pub(crate) fn new(shared: Arc<Shared>, call_id: Uuid, rx: Receiver<TapMsg>) -> Self {
        Self {
            shared,
            call_id,
            rx,
            rec: None,
            origin: None,
            parts: HashMap::new(),
            linger_since: None,
            last_db_check: None,
            segments: 0,
            created: Instant::now(),
        }
    }

    fn wall(&self, at: Instant) -> OffsetDateTime {
        match self.origin {
            Some((i, w)) => w + at.saturating_duration_since(i),
            None => OffsetDateTime::now_utc(),
        }
    }

    /// Runs until the recording is finished (or never started and the taps are gone).
    pub(crate) fn run(mut self) {
        loop {
            let now = Instant::now();
            let mut wait = Duration::from_millis(500);
            if let Some(t) = self.rec.as_ref().and_then(Recording::poll_timeout) {
                let due = (t - self.wall(now)).max(time::Duration::ZERO);
                wait = wait.min(Duration::try_from(due).unwrap_or_default());
            }
            for p in self.parts.values() {
                if let Some((deadline, _)) = &p.gathering {
                    wait = wait.min(deadline.saturating_duration_since(now));
                }
            }
            if self.linger_since.is_some() {
                wait = wait.min(LINGER_POLL);
            }
            // Work in batches: sleep, then take everything that queued up. Waking per packet
            // would cost a context switch per packet; recording needs no low latency.
            std::thread::sleep(wait.min(BATCH));
            let mut stop = false;
            loop {
                match self.rx.try_recv() {
                    Ok(TapMsg::Shutdown) => {
                        stop = true;
                        break;
                    }
                    Ok(msg) => self.handle(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                }
            }
            if stop {
                break;
            }
            self.tick(Instant::now());
            if self.should_finish(Instant::now()) {
                break;
            }
        }
        self.finish();
    }

    fn handle(&mut self, msg: TapMsg) {
        match msg {
            TapMsg::Opened { info, at } => self.opened(info, at),
            TapMsg::Rtp { participant, kind, packet, at } => {
                let Some(p) = self.parts.get_mut(&participant) else { return };
                if let Some((_, buf)) = p.gathering.as_mut() {
                    buf.push(Buffered { kind, packet, at });
                    if buf.len() >= GATHER_MAX {
                        self.declare(participant);
                    }
                    return;
                }
                if p.present && p.declared.contains_key(&kind) {
                    self.push(participant, kind, &packet, at);
                }
            }
            TapMsg::Ended { participant, kind, at } => {
                let Some(p) = self.parts.get_mut(&participant) else { return };
                p.open.remove(&kind);
                if p.open.is_empty() {
                    if p.gathering.is_some() {
                        self.declare(participant);
                    }
                    let wall = self.wall(at);
                    let p = self.parts.get_mut(&participant).expect("present");
                    if p.present {
                        p.present = false;
                        if let Some(rec) = self.rec.as_mut() {
                            if let Err(e) = rec.remove_participant(ParticipantId::from_uuid(participant), wall) {
                                tracing::error!(error = %e, call = %self.call_id, "recording: removing a participant failed");
                            }
                        }
                        self.pump_events();
                    }
                }
                if self.parts.values().all(|p| p.open.is_empty()) {
                    self.linger_since = Some(Instant::now());
                }
            }
            TapMsg::Shutdown => {}
        }
    }

    fn opened(&mut self, info: TrackInfo, at: Instant) {
        let Some(codec) = codec_of(&info) else {
            tracing::warn!(call = %self.call_id, mime = %info.mime_type, "recording: codec not recordable; track left out");
            return;
        };
        if self.rec.is_none() && !self.start(at) {
            return;
        }
        self.linger_since = None;
        let pid = info.participant_id;
        if !self.parts.contains_key(&pid) {
            let role = self.lookup_role(pid);
            self.parts.insert(pid, Part { role: Some(role), ..Default::default() });
        }
        let p = self.parts.get_mut(&pid).expect("inserted");
        p.open.insert(info.kind, (codec, info.payload_type));
        let known = p.present && p.declared.get(&info.kind) == Some(&(codec, info.payload_type));
        if known {
            return;
        }
        if p.gathering.is_none() {
            p.gathering = Some((at + GATHER, Vec::new()));
        }
        if p.open.len() >= 2 {
            self.declare(pid);
        }
    }

    fn lookup_role(&self, pid: Uuid) -> ParticipantRole {
        let db = self.shared.db.clone();
        let call = self.call_id;
        let members = self.shared.rt.block_on(async move { db.call_members(call).await });
        members
            .ok()
            .and_then(|m| m.into_iter().find(|m| m.participant_id == pid))
            .map(|m| role_of(m.role))
            .unwrap_or(ParticipantRole::Resident)
    }

    /// Starts the recording at `at` (the first packet). False if it cannot start (logged).
    fn start(&mut self, at: Instant) -> bool {
        let wall = OffsetDateTime::now_utc() - Instant::now().saturating_duration_since(at);
        self.origin = Some((at, wall));
        let id = RecordingId::new_v7();
        let mut config = RecordingConfig::new(self.shared.config.spool.clone());
        config.media.segment_duration = self.shared.config.segment;
        let rec = match Recording::start(config, id, CallId::from_uuid(self.call_id), wall, self.shared.signer.clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, call = %self.call_id, "recording could not start");
                return false;
            }
        };
        self.shared.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(*id.as_uuid());
        let shared = self.shared.clone();
        let call_id = self.call_id;
        let rid = *id.as_uuid();
        let inserted = self.shared.rt.block_on(async move {
            let call = shared.db.call_by_id(call_id).await.ok().flatten();
            let matter_code = call.and_then(|c| c.matter_code);
            let retention_days = shared.retention_for(matter_code.as_deref()).await;
            shared
                .db
                .insert_recording(&RecordingRecord {
                    id: rid,
                    call_id,
                    matter_code,
                    state: RecordingState::Recording,
                    started_at: shared.clock.now_ms(),
                    ended_at: None,
                    segments: 0,
                    manifest_sha256: None,
                    retention_days,
                    hold: None,
                    deleted_at: None,
                })
                .await
        });
        if let Err(e) = inserted {
            tracing::error!(error = %e, recording = %rid, "recording row could not be stored; recording continues");
        }
        tracing::info!(call = %self.call_id, recording = %rid, "recording started");
        self.rec = Some(rec);
        true
    }

    /// Declares a participant with every track open now (and those declared before), then
    /// feeds what was buffered.
    fn declare(&mut self, pid: Uuid) {
        let Some(p) = self.parts.get_mut(&pid) else { return };
        let Some((_, buffered)) = p.gathering.take() else { return };
        for (k, v) in &p.open {
            p.declared.insert(*k, *v);
        }
        let specs: Vec<TrackSpec> = p
            .declared
            .values()
            .map(|(codec, pt)| TrackSpec { codec: *codec, payload_type: Some(*pt) })
            .collect();
        let role = p.role.unwrap_or(ParticipantRole::Resident);
        p.present = true;
        let at = buffered.first().map(|b| b.at).unwrap_or_else(Instant::now);
        let wall = self.wall(at);
        if let Some(rec) = self.rec.as_mut() {
            if let Err(e) = rec.add_participant(ParticipantId::from_uuid(pid), role, &specs, wall) {
                tracing::error!(error = %e, call = %self.call_id, "recording: declaring a participant failed");
                return;
            }
        }
        for b in buffered {
            if self.parts.get(&pid).is_some_and(|p| p.declared.contains_key(&b.kind)) {
                self.push(pid, b.kind, &b.packet, b.at);
            }
        }
        self.pump_events();
    }

    fn push(&mut self, pid: Uuid, kind: MediaKind, packet: &rtp::Packet, at: Instant) {
        let wall = self.wall(at);
        let Some(rec) = self.rec.as_mut() else { return };
        let h = &packet.header;
        let p = RtpPacket::new(h.marker, h.payload_type, h.sequence_number, h.timestamp, h.ssrc, &packet.payload);
        if let Err(e) = rec.push_rtp_packet(ParticipantId::from_uuid(pid), track_kind(kind), &p, wall) {
            tracing::error!(error = %e, call = %self.call_id, "recording: writing a packet failed");
        }
        self.pump_events();
    }

    fn tick(&mut self, now: Instant) {
        let due: Vec<Uuid> = self
            .parts
            .iter()
            .filter(|(_, p)| p.gathering.as_ref().is_some_and(|(d, _)| *d <= now))
            .map(|(id, _)| *id)
            .collect();
        for pid in due {
            self.declare(pid);
        }
        let wall = self.wall(now);
        if let Some(rec) = self.rec.as_mut() {
            if rec.poll_timeout().is_some_and(|t| t <= wall) {
                if let Err(e) = rec.handle_timeout(wall) {
                    tracing::error!(error = %e, call = %self.call_id, "recording: timeout handling failed");
                }
            }
        }
        self.pump_events();
    }

    fn pump_events(&mut self) {
        let Some(rec) = self.rec.as_mut() else { return };
        while let Some(ev) = rec.poll_event() {
            match ev {
                RecordingEvent::KeyframeWanted { participant } => {
                    if let Some(relay) = self.shared.relay.get().and_then(|w| w.upgrade()) {
                        let (call, pid) = (self.call_id, *participant.as_uuid());
                        self.shared.rt.spawn(async move {
                            relay.request_keyframe(call, pid);
                        });
                    }
                }
                RecordingEvent::SegmentFinished { .. } => {
                    self.segments += 1;
                    self.shared.uploads.notify_one();
                }
                _ => {}
            }
        }
    }

    fn should_finish(&mut self, now: Instant) -> bool {
        if self.rec.is_none() {
            // Taps opened but no packet came: nothing to record.
            return now.duration_since(self.created) > IDLE_EXIT;
        }
        let Some(since) = self.linger_since else { return false };
        if self.rec.is_none() {
            return true;
        }
        if now.duration_since(since) >= self.shared.config.linger {
            return true;
        }
        if self.last_db_check.is_some_and(|t| now.duration_since(t) < LINGER_POLL) {
            return false;
        }
        self.last_db_check = Some(now);
        let db = self.shared.db.clone();
        let call = self.call_id;
        let ended = self.shared.rt.block_on(async move { db.call_by_id(call).await });
        matches!(ended, Ok(Some(c)) if c.ended_at.is_some())
    }

    fn finish(mut self) {
        let Some(mut rec) = self.rec.take() else { return };
        // Participants still gathering are declared so their buffered media is kept.
        let gathering: Vec<Uuid> = self.parts.iter().filter(|(_, p)| p.gathering.is_some()).map(|(id, _)| *id).collect();
        self.rec = Some(rec);
        for pid in gathering {
            self.declare(pid);
        }
        rec = self.rec.take().expect("set above");
        let id = *rec.id().as_uuid();
        let finished = match rec.finish(OffsetDateTime::now_utc()) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, recording = %id, "recording could not be finished; it will be recovered at the next start");
                return;
            }
        };
        self.shared.seal(finished);
        tracing::info!(call = %self.call_id, recording = %id, "recording finished and sealed");
    }
}
