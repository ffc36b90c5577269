//! Every server message, pinned to its JSON, and the client-side tolerance rules.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::*;
use crate::call::{
    ConnectionState, EndReason, LeaveReason, ParticipantInfo, ParticipantRole, RecordingNotice,
    Role,
};
use crate::error::ErrorCode;
use crate::ids::{RequestId, TicketNo};
use crate::queue::{
    AgentCounts, Channel, MatterSummary, PresenceStatus, PriorityReason, ResidentSummary,
    SkillFigures, TicketState, WithdrawReason,
};
use crate::rtc::{IceCandidate, IceServer, IceTransportPolicy, SessionDescription};
use crate::server::{
    parse_server_frame, GoodbyeReason, RejoinReason, ServerEnvelope, ServerMessage,
};

fn agent_info() -> ParticipantInfo {
    ParticipantInfo {
        participant_id: id(AGENT),
        role: ParticipantRole::Agent,
        display_name: "医保窗口 12号".into(),
        state: ConnectionState::Connected,
        audio_muted: false,
        video_off: false,
        joined_at: at(),
    }
}

fn agent_info_json() -> Value {
    json!({
        "participant_id": AGENT, "role": "agent", "display_name": "医保窗口 12号",
        "state": "connected", "audio_muted": false, "video_off": false, "joined_at": AT
    })
}

fn fixtures() -> Vec<(Value, ServerEnvelope)> {
    let call = id(CALL);
    let env = |seq, m| ServerEnvelope::new(seq, m);
    let reply = |seq, to, m| ServerEnvelope::reply(seq, Some(RequestId(to)), m);
    vec![
        (
            json!({"seq": 1, "reply_to": 1, "type": "welcome", "session_id": SESSION, "protocol_version": 1,
                   "user_id": USER, "role": "resident", "heartbeat_interval_ms": 10000,
                   "heartbeat_timeout_ms": 20000, "resume_window_ms": 60000, "server_time": AT}),
            reply(
                1,
                1,
                ServerMessage::Welcome {
                    session_id: id(SESSION),
                    protocol_version: 1,
                    user_id: id(USER),
                    role: Role::Resident,
                    heartbeat_interval_ms: 10_000,
                    heartbeat_timeout_ms: 20_000,
                    resume_window_ms: 60_000,
                    server_time: at(),
                },
            ),
        ),
        (
            json!({"seq": 57, "reply_to": 1, "type": "resumed", "session_id": SESSION, "replayed": 3, "last_client_id": 12,
                   "ice_servers": [{"urls": ["turns:turn.example.gov.cn:443?transport=tcp"], "username": "1741007400:0195a0c2", "credential": "Zm9vYmFy"}]}),
            reply(
                57,
                1,
                ServerMessage::Resumed {
                    session_id: id(SESSION),
                    replayed: 3,
                    last_client_id: Some(RequestId(12)),
                    ice_servers: Some(vec![IceServer {
                        urls: vec!["turns:turn.example.gov.cn:443?transport=tcp".into()],
                        username: Some("1741007400:0195a0c2".into()),
                        credential: Some("Zm9vYmFy".into()),
                    }]),
                },
            ),
        ),
        (
            json!({"seq": 5, "type": "resumed", "session_id": SESSION, "replayed": 0}),
            env(
                5,
                ServerMessage::Resumed {
                    session_id: id(SESSION),
                    replayed: 0,
                    last_client_id: None,
                    ice_servers: None,
                },
            ),
        ),
        (
            json!({"seq": 0, "reply_to": 1, "type": "rejoin_required", "reason": "replay_unavailable"}),
            ServerEnvelope::unsequenced(
                Some(RequestId(1)),
                ServerMessage::RejoinRequired {
                    reason: RejoinReason::ReplayUnavailable,
                },
            ),
        ),
        (
            json!({"seq": 0, "type": "rejoin_required", "reason": "session_expired"}),
            ServerEnvelope::unsequenced(
                None,
                ServerMessage::RejoinRequired {
                    reason: RejoinReason::SessionExpired,
                },
            ),
        ),
        (
            json!({"seq": 8, "type": "pong", "ts": 1_741_000_000_000_u64, "server_time": AT}),
            env(
                8,
                ServerMessage::Pong {
                    ts: Some(1_741_000_000_000),
                    server_time: at(),
                },
            ),
        ),
        (
            json!({"seq": 9, "reply_to": 4, "type": "ack"}),
            reply(9, 4, ServerMessage::Ack {}),
        ),
        (
            json!({"seq": 10, "reply_to": 5, "type": "error", "code": "not_in_call", "message": "this session has not joined the call"}),
            reply(
                10,
                5,
                ServerMessage::error(ErrorCode::NotInCall, "this session has not joined the call"),
            ),
        ),
        (
            json!({"seq": 11, "type": "error", "code": "rate_limited", "message": "too many messages", "retry_after_ms": 1500}),
            env(
                11,
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    message: "too many messages".into(),
                    retry_after_ms: Some(1500),
                },
            ),
        ),
        (
            json!({"seq": 90, "type": "goodbye", "reason": "replaced", "reconnect": false}),
            env(
                90,
                ServerMessage::Goodbye {
                    reason: GoodbyeReason::Replaced,
                    reconnect: false,
                },
            ),
        ),
        (
            json!({"seq": 3, "reply_to": 2, "type": "joined", "call_id": CALL, "participant_id": ME, "role": "resident",
            "participants": [agent_info_json()],
            "ice_servers": [
                {"urls": ["stun:stun.example.gov.cn:3478"]},
                {"urls": ["turn:turn.example.gov.cn:3478?transport=udp", "turns:turn.example.gov.cn:443?transport=tcp"],
                 "username": "1741003800:0195a0c2", "credential": "kR3x0Q=="}
            ],
            "ice_transport_policy": "all",
            "recording": {
                "recorded": true,
                "notice_zh": "本次视频办理全程录音录像，录像保存180天。",
                "notice_en": "This call is recorded in full; the recording is kept for 180 days.",
                "purpose_zh": "依据政务服务远程办理规定留存办理过程",
                "purpose_en": "Kept as the record of remote handling required for government services",
                "retention_days": 180,
                "policy_url": "https://gov.example.cn/recording-policy"
            }}),
            reply(
                3,
                2,
                ServerMessage::Joined {
                    call_id: call,
                    participant_id: id(ME),
                    role: ParticipantRole::Resident,
                    participants: vec![agent_info()],
                    ice_servers: vec![
                        IceServer {
                            urls: vec!["stun:stun.example.gov.cn:3478".into()],
                            username: None,
                            credential: None,
                        },
                        IceServer {
                            urls: vec![
                                "turn:turn.example.gov.cn:3478?transport=udp".into(),
                                "turns:turn.example.gov.cn:443?transport=tcp".into(),
                            ],
                            username: Some("1741003800:0195a0c2".into()),
                            credential: Some("kR3x0Q==".into()),
                        },
                    ],
                    ice_transport_policy: IceTransportPolicy::All,
                    recording: RecordingNotice {
                        recorded: true,
                        notice_zh: "本次视频办理全程录音录像，录像保存180天。".into(),
                        notice_en:
                            "This call is recorded in full; the recording is kept for 180 days."
                                .into(),
                        purpose_zh: "依据政务服务远程办理规定留存办理过程".into(),
                        purpose_en:
                            "Kept as the record of remote handling required for government services"
                                .into(),
                        retention_days: 180,
                        policy_url: Some("https://gov.example.cn/recording-policy".into()),
                    },
                },
            ),
        ),
        (
            json!({"seq": 20, "type": "participant_joined", "call_id": CALL, "participant": agent_info_json()}),
            env(
                20,
                ServerMessage::ParticipantJoined {
                    call_id: call,
                    participant: agent_info(),
                },
            ),
        ),
        (
            json!({"seq": 21, "type": "participant_left", "call_id": CALL, "participant_id": AGENT, "reason": "timed_out"}),
            env(
                21,
                ServerMessage::ParticipantLeft {
                    call_id: call,
                    participant_id: id(AGENT),
                    reason: LeaveReason::TimedOut,
                },
            ),
        ),
        (
            json!({"seq": 22, "type": "participant_reconnecting", "call_id": CALL, "participant_id": AGENT}),
            env(
                22,
                ServerMessage::ParticipantReconnecting {
                    call_id: call,
                    participant_id: id(AGENT),
                },
            ),
        ),
        (
            json!({"seq": 23, "type": "participant_reconnected", "call_id": CALL, "participant_id": AGENT}),
            env(
                23,
                ServerMessage::ParticipantReconnected {
                    call_id: call,
                    participant_id: id(AGENT),
                },
            ),
        ),
        (
            json!({"seq": 24, "type": "media_state_changed", "call_id": CALL, "participant_id": AGENT, "audio_muted": false, "video_off": true}),
            env(
                24,
                ServerMessage::MediaStateChanged {
                    call_id: call,
                    participant_id: id(AGENT),
                    audio_muted: false,
                    video_off: true,
                },
            ),
        ),
        (
            json!({"seq": 4, "type": "sdp_offer", "call_id": CALL, "description": {"type": "offer", "sdp": CHROME_OFFER_SDP}}),
            env(
                4,
                ServerMessage::SdpOffer {
                    call_id: call,
                    description: SessionDescription::offer(CHROME_OFFER_SDP),
                },
            ),
        ),
        (
            json!({"seq": 30, "reply_to": 3, "type": "sdp_answer", "call_id": CALL, "description": {"type": "answer", "sdp": "v=0\r\n"}}),
            reply(
                30,
                3,
                ServerMessage::SdpAnswer {
                    call_id: call,
                    description: SessionDescription::answer("v=0\r\n"),
                },
            ),
        ),
        (
            json!({"seq": 5, "type": "ice_candidate", "call_id": CALL, "candidate": {
                "candidate": "candidate:1 1 udp 2130706431 198.51.100.20 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}}),
            env(
                5,
                ServerMessage::IceCandidate {
                    call_id: call,
                    candidate: IceCandidate {
                        candidate: "candidate:1 1 udp 2130706431 198.51.100.20 50000 typ host"
                            .into(),
                        sdp_mid: Some("0".into()),
                        sdp_m_line_index: Some(0),
                        username_fragment: None,
                    },
                },
            ),
        ),
        (
            json!({"seq": 6, "type": "end_of_candidates", "call_id": CALL}),
            env(6, ServerMessage::EndOfCandidates { call_id: call }),
        ),
        (
            json!({"seq": 31, "reply_to": 10, "type": "chat", "call_id": CALL, "message_id": CHAT_MSG, "sender": ME,
                   "sender_name": "张*明", "sent_at": AT, "text": "好的，马上拍。"}),
            reply(
                31,
                10,
                ServerMessage::Chat {
                    call_id: call,
                    message_id: id(CHAT_MSG),
                    sender: id(ME),
                    sender_name: "张*明".into(),
                    sent_at: at(),
                    text: "好的，马上拍。".into(),
                },
            ),
        ),
        (
            json!({"seq": 40, "type": "call_ended", "call_id": CALL, "ended_by": AGENT, "reason": "hung_up"}),
            env(
                40,
                ServerMessage::CallEnded {
                    call_id: call,
                    ended_by: Some(id(AGENT)),
                    reason: EndReason::HungUp,
                },
            ),
        ),
        (
            json!({"seq": 41, "type": "call_ended", "call_id": CALL, "reason": "resident_left"}),
            env(
                41,
                ServerMessage::CallEnded {
                    call_id: call,
                    ended_by: None,
                    reason: EndReason::ResidentLeft,
                },
            ),
        ),
        (
            json!({"seq": 15, "type": "call_assigned", "call_id": CALL, "ticket_id": TICKET, "role": "agent"}),
            env(
                15,
                ServerMessage::CallAssigned {
                    call_id: call,
                    ticket_id: Some(id(TICKET)),
                    role: ParticipantRole::Agent,
                },
            ),
        ),
        (
            json!({"seq": 12, "type": "ticket_update", "ticket_id": TICKET, "ticket_no": "B023", "matter_code": "MI-003",
                   "state": "waiting", "position": 4, "estimated_wait_s": 360}),
            env(
                12,
                ServerMessage::TicketUpdate {
                    ticket_id: id(TICKET),
                    ticket_no: TicketNo("B023".into()),
                    matter_code: "MI-003".into(),
                    state: TicketState::Waiting,
                    position: Some(4),
                    estimated_wait_s: Some(360),
                    call_id: None,
                },
            ),
        ),
        (
            json!({"seq": 16, "type": "ticket_update", "ticket_id": TICKET, "ticket_no": "B023", "matter_code": "MI-003",
                   "state": "in_call", "call_id": CALL}),
            env(
                16,
                ServerMessage::TicketUpdate {
                    ticket_id: id(TICKET),
                    ticket_no: TicketNo("B023".into()),
                    matter_code: "MI-003".into(),
                    state: TicketState::InCall,
                    position: None,
                    estimated_wait_s: None,
                    call_id: Some(call),
                },
            ),
        ),
        (
            json!({"seq": 13, "type": "ticket_offer", "offer_id": OFFER, "ticket_id": TICKET, "ticket_no": "B023",
                   "matter": {"code": "MI-003", "class": "medical_insurance", "name_zh": "异地就医备案", "name_en": "Registration for medical treatment elsewhere"},
                   "resident": {"display_name": "张*明", "priority": ["elderly"], "channel": "helper", "helper_name": "网格员 李*"},
                   "waited_s": 95, "expires_at": "2025-03-03T09:30:20Z", "expires_in_ms": 20000}),
            env(
                13,
                ServerMessage::TicketOffer {
                    offer_id: id(OFFER),
                    ticket_id: id(TICKET),
                    ticket_no: TicketNo("B023".into()),
                    matter: MatterSummary {
                        code: "MI-003".into(),
                        class: "medical_insurance".into(),
                        name_zh: "异地就医备案".into(),
                        name_en: "Registration for medical treatment elsewhere".into(),
                    },
                    resident: ResidentSummary {
                        display_name: "张*明".into(),
                        priority: vec![PriorityReason::Elderly],
                        channel: Channel::Helper,
                        helper_name: Some("网格员 李*".into()),
                    },
                    waited_s: 95,
                    expires_at: crate::ids::Timestamp::parse("2025-03-03T09:30:20Z").unwrap(),
                    expires_in_ms: 20_000,
                },
            ),
        ),
        (
            json!({"seq": 14, "type": "offer_withdrawn", "offer_id": OFFER, "reason": "expired"}),
            env(
                14,
                ServerMessage::OfferWithdrawn {
                    offer_id: id(OFFER),
                    reason: WithdrawReason::Expired,
                },
            ),
        ),
        (
            json!({"seq": 17, "reply_to": 14, "type": "presence_update", "user_id": USER, "status": "on_break", "reason": "lunch", "since": AT}),
            reply(
                17,
                14,
                ServerMessage::PresenceUpdate {
                    user_id: id(USER),
                    status: PresenceStatus::OnBreak,
                    reason: Some("lunch".into()),
                    since: at(),
                },
            ),
        ),
        (
            json!({"seq": 18, "type": "supervisor_figures", "at": AT, "skills": [{
                "skill": "medical_insurance", "waiting": 7, "longest_wait_s": 412,
                "agents": {"available": 1, "on_call": 5, "wrap_up": 1, "on_break": 1, "away": 0, "offline": 2},
                "handled_today": 143, "avg_wait_s": 188, "avg_handle_s": 402}]}),
            env(
                18,
                ServerMessage::SupervisorFigures {
                    at: at(),
                    skills: vec![SkillFigures {
                        skill: "medical_insurance".into(),
                        waiting: 7,
                        longest_wait_s: 412,
                        agents: AgentCounts {
                            available: 1,
                            on_call: 5,
                            wrap_up: 1,
                            on_break: 1,
                            away: 0,
                            offline: 2,
                        },
                        handled_today: 143,
                        avg_wait_s: 188,
                        avg_handle_s: 402,
                    }],
                },
            ),
        ),
    ]
}

#[test]
fn every_server_message_round_trips_through_its_fixture() {
    for (json, envelope) in fixtures() {
        assert_pinned(&json, &envelope);
        let text = envelope.to_json().unwrap();
        assert_eq!(parse_server_frame(&text).unwrap(), envelope);
        assert_eq!(json["type"], envelope.msg.type_name());
        assert!(
            text.starts_with(r#"{"seq":"#),
            "seq leads the object: {text}"
        );
    }
}

#[test]
fn fixtures_cover_every_server_message_type() {
    let covered: BTreeSet<&str> = fixtures().iter().map(|(_, e)| e.msg.type_name()).collect();
    let all: BTreeSet<&str> = ServerMessage::TYPES.iter().copied().collect();
    assert_eq!(covered, all);
    assert_eq!(all.len(), ServerMessage::TYPES.len(), "duplicate in TYPES");
}

#[test]
fn session_control_messages_are_not_replayed() {
    for (_, envelope) in fixtures() {
        let control = matches!(
            envelope.msg.type_name(),
            "welcome" | "resumed" | "rejoin_required" | "pong" | "goodbye"
        );
        assert_eq!(
            envelope.msg.is_replayable(),
            !control,
            "{}",
            envelope.msg.type_name()
        );
    }
}

#[test]
fn a_client_ignores_types_and_fields_from_a_newer_server() {
    let env = parse_server_frame(r#"{"seq": 70, "type": "whiteboard_stroke", "points": [[1, 2]]}"#)
        .unwrap();
    assert_eq!(env.seq, 70);
    assert_eq!(env.msg, ServerMessage::Unknown);
    assert!(!env.msg.is_replayable());

    let env = parse_server_frame(&format!(
        r#"{{"seq": 71, "type": "participant_reconnected", "call_id": "{CALL}", "participant_id": "{AGENT}", "network": "wifi"}}"#
    ))
    .unwrap();
    assert_eq!(env.msg.type_name(), "participant_reconnected");

    let env = parse_server_frame(
        r#"{"seq": 72, "type": "error", "code": "quota_exceeded", "message": "new"}"#,
    )
    .unwrap();
    assert!(matches!(
        env.msg,
        ServerMessage::Error {
            code: ErrorCode::Unknown,
            ..
        }
    ));

    let env = parse_server_frame(&format!(
        r#"{{"seq": 73, "type": "call_ended", "call_id": "{CALL}", "reason": "budget_exhausted"}}"#
    ))
    .unwrap();
    assert!(matches!(
        env.msg,
        ServerMessage::CallEnded {
            reason: EndReason::Unknown,
            ..
        }
    ));
}

#[test]
fn the_unknown_placeholder_is_never_sent() {
    assert!(ServerEnvelope::new(1, ServerMessage::Unknown)
        .to_json()
        .is_err());
}

#[test]
fn error_codes_serialize_as_their_stable_strings() {
    for &code in ErrorCode::ALL {
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        assert_eq!(
            serde_json::from_value::<ErrorCode>(json!(code.as_str())).unwrap(),
            code
        );
    }
    let all: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(all.len(), ErrorCode::ALL.len());
    assert!(ErrorCode::RateLimited.is_retryable());
    assert!(!ErrorCode::Forbidden.is_retryable());
}

#[test]
fn call_id_is_reported_for_call_messages() {
    for (_, envelope) in fixtures() {
        let expected = match envelope.msg.type_name() {
            "joined"
            | "participant_joined"
            | "participant_left"
            | "participant_reconnecting"
            | "participant_reconnected"
            | "media_state_changed"
            | "sdp_offer"
            | "sdp_answer"
            | "ice_candidate"
            | "end_of_candidates"
            | "chat"
            | "call_ended"
            | "call_assigned" => true,
            "ticket_update" => matches!(
                envelope.msg,
                ServerMessage::TicketUpdate {
                    call_id: Some(_),
                    ..
                }
            ),
            _ => false,
        };
        assert_eq!(
            envelope.msg.call_id().is_some(),
            expected,
            "{}",
            envelope.msg.type_name()
        );
    }
}
