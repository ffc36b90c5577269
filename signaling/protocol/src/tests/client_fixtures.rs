//! Every client message, pinned to its JSON.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::*;
use crate::call::ParticipantRole;
use crate::client::{parse_client_frame, ClientEnvelope, ClientMessage};
use crate::ids::RequestId;
use crate::queue::SelectablePresence;
use crate::rtc::{IceCandidate, SessionDescription};

fn fixtures() -> Vec<(Value, ClientEnvelope)> {
    let call = id(CALL);
    let msg = |m| ClientEnvelope::new(m);
    let with_id = |n, m| ClientEnvelope::with_id(RequestId(n), m);
    vec![
        (
            json!({"id": 1, "type": "hello", "protocol_version": 1, "token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln", "user_agent": "kiosk-sdk/0.1 (rk3568)"}),
            with_id(1, ClientMessage::Hello {
                protocol_version: 1,
                token: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln".into(),
                user_agent: Some("kiosk-sdk/0.1 (rk3568)".into()),
            }),
        ),
        (
            json!({"type": "hello", "protocol_version": 1, "token": "t.o.k"}),
            msg(ClientMessage::Hello { protocol_version: 1, token: "t.o.k".into(), user_agent: None }),
        ),
        (
            json!({"id": 1, "type": "resume", "session_id": SESSION, "last_seq": 41, "token": "t.o.k"}),
            with_id(1, ClientMessage::Resume { session_id: id(SESSION), last_seq: 41, token: "t.o.k".into() }),
        ),
        (
            json!({"type": "ping", "ts": 1_741_000_000_000_u64}),
            msg(ClientMessage::Ping { ts: Some(1_741_000_000_000) }),
        ),
        (json!({"type": "ping"}), msg(ClientMessage::Ping { ts: None })),
        (
            json!({"id": 2, "type": "join", "call_id": CALL}),
            with_id(2, ClientMessage::Join { call_id: call, role: None, call_token: None }),
        ),
        (
            json!({"id": 2, "type": "join", "call_id": CALL, "role": "helper", "call_token": "c.t.k"}),
            with_id(2, ClientMessage::Join {
                call_id: call,
                role: Some(ParticipantRole::Helper),
                call_token: Some("c.t.k".into()),
            }),
        ),
        (json!({"type": "leave", "call_id": CALL}), msg(ClientMessage::Leave { call_id: call })),
        (
            json!({"id": 3, "type": "sdp_offer", "call_id": CALL, "description": {"type": "offer", "sdp": CHROME_OFFER_SDP}}),
            with_id(3, ClientMessage::SdpOffer { call_id: call, description: SessionDescription::offer(CHROME_OFFER_SDP) }),
        ),
        (
            json!({"type": "sdp_answer", "call_id": CALL, "description": {"type": "answer", "sdp": "v=0\r\n"}}),
            msg(ClientMessage::SdpAnswer { call_id: call, description: SessionDescription::answer("v=0\r\n") }),
        ),
        (
            json!({"type": "ice_candidate", "call_id": CALL, "candidate": {
                "candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 192.168.1.5 rport 46154 generation 0 ufrag sXyZ network-cost 999",
                "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "sXyZ"}}),
            msg(ClientMessage::IceCandidate {
                call_id: call,
                candidate: IceCandidate {
                    candidate: "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 192.168.1.5 rport 46154 generation 0 ufrag sXyZ network-cost 999".into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                    username_fragment: Some("sXyZ".into()),
                },
            }),
        ),
        (
            json!({"type": "end_of_candidates", "call_id": CALL}),
            msg(ClientMessage::EndOfCandidates { call_id: call }),
        ),
        (
            json!({"id": 9, "type": "ice_restart", "call_id": CALL}),
            with_id(9, ClientMessage::IceRestart { call_id: call }),
        ),
        (
            json!({"type": "media_state", "call_id": CALL, "audio_muted": true, "video_off": false}),
            msg(ClientMessage::MediaState { call_id: call, audio_muted: true, video_off: false }),
        ),
        (
            json!({"id": 10, "type": "chat_send", "call_id": CALL, "text": "请出示身份证正面。"}),
            with_id(10, ClientMessage::ChatSend { call_id: call, text: "请出示身份证正面。".into() }),
        ),
        (
            json!({"id": 11, "type": "end_call", "call_id": CALL}),
            with_id(11, ClientMessage::EndCall { call_id: call }),
        ),
        (
            json!({"id": 12, "type": "accept_offer", "offer_id": OFFER}),
            with_id(12, ClientMessage::AcceptOffer { offer_id: id(OFFER) }),
        ),
        (
            json!({"type": "decline_offer", "offer_id": OFFER, "reason": "正在处理上一件"}),
            msg(ClientMessage::DeclineOffer { offer_id: id(OFFER), reason: Some("正在处理上一件".into()) }),
        ),
        (
            json!({"type": "decline_offer", "offer_id": OFFER}),
            msg(ClientMessage::DeclineOffer { offer_id: id(OFFER), reason: None }),
        ),
        (
            json!({"id": 13, "type": "cancel_ticket", "ticket_id": TICKET}),
            with_id(13, ClientMessage::CancelTicket { ticket_id: id(TICKET) }),
        ),
        (
            json!({"id": 14, "type": "set_presence", "status": "on_break", "reason": "lunch"}),
            with_id(14, ClientMessage::SetPresence { status: SelectablePresence::OnBreak, reason: Some("lunch".into()) }),
        ),
        (
            json!({"type": "set_presence", "status": "available"}),
            msg(ClientMessage::SetPresence { status: SelectablePresence::Available, reason: None }),
        ),
        (json!({"type": "subscribe_figures"}), msg(ClientMessage::SubscribeFigures {})),
        (json!({"type": "unsubscribe_figures"}), msg(ClientMessage::UnsubscribeFigures {})),
    ]
}

#[test]
fn every_client_message_round_trips_through_its_fixture() {
    for (json, envelope) in fixtures() {
        assert_pinned(&json, &envelope);
        let text = serde_json::to_string(&json).unwrap();
        let parsed = parse_client_frame(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed, envelope);
        assert_eq!(
            envelope.to_json(),
            serde_json::to_string(&envelope).unwrap()
        );
        assert_eq!(json["type"], envelope.msg.type_name());
    }
}

#[test]
fn fixtures_cover_every_client_message_type() {
    let covered: BTreeSet<&str> = fixtures().iter().map(|(_, e)| e.msg.type_name()).collect();
    let all: BTreeSet<&str> = ClientMessage::TYPES.iter().copied().collect();
    assert_eq!(covered, all);
    assert_eq!(all.len(), ClientMessage::TYPES.len(), "duplicate in TYPES");
}

#[test]
fn call_id_is_reported_for_call_messages_only() {
    for (_, envelope) in fixtures() {
        let call_scoped = !matches!(
            envelope.msg,
            ClientMessage::Hello { .. }
                | ClientMessage::Resume { .. }
                | ClientMessage::Ping { .. }
                | ClientMessage::AcceptOffer { .. }
                | ClientMessage::DeclineOffer { .. }
                | ClientMessage::CancelTicket { .. }
                | ClientMessage::SetPresence { .. }
                | ClientMessage::SubscribeFigures {}
                | ClientMessage::UnsubscribeFigures {}
        );
        assert_eq!(
            envelope.msg.call_id().is_some(),
            call_scoped,
            "{:?}",
            envelope.msg
        );
    }
}

#[test]
fn browser_local_description_parses_as_is() {
    // `JSON.stringify({type: "sdp_offer", call_id, description: pc.localDescription})`
    let text = format!(
        r#"{{"type":"sdp_offer","call_id":"{CALL}","description":{{"type":"offer","sdp":{}}}}}"#,
        serde_json::to_string(CHROME_OFFER_SDP).unwrap()
    );
    match parse_client_frame(&text).unwrap().msg {
        ClientMessage::SdpOffer { description, .. } => {
            assert_eq!(description.sdp, CHROME_OFFER_SDP);
            assert!(description.sdp.contains("a=mid:1\r\n"));
        }
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn browser_candidate_json_parses_in_its_variants() {
    let parse = |candidate: &str| {
        let text =
            format!(r#"{{"type":"ice_candidate","call_id":"{CALL}","candidate":{candidate}}}"#);
        match parse_client_frame(&text)
            .unwrap_or_else(|e| panic!("{candidate}: {e}"))
            .msg
        {
            ClientMessage::IceCandidate { candidate, .. } => candidate,
            other => panic!("parsed as {other:?}"),
        }
    };
    // Chrome: a host candidate with an mDNS name.
    let c = parse(
        r#"{"candidate":"candidate:1467250027 1 udp 2122260223 4b5e1c2a-9f8d-4e1b-8c7a-0d3e2f1a6b5c.local 54321 typ host generation 0 ufrag sXyZ network-id 1","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXyZ"}"#,
    );
    assert_eq!(c.sdp_m_line_index, Some(0));
    assert_eq!(c.username_fragment.as_deref(), Some("sXyZ"));
    // Nulls, as toJSON() gives them for a candidate built without those fields.
    let c = parse(
        r#"{"candidate":"candidate:1 1 UDP 2122252543 192.0.2.10 50000 typ host","sdpMid":"1","sdpMLineIndex":null,"usernameFragment":null}"#,
    );
    assert_eq!(c.sdp_mid.as_deref(), Some("1"));
    assert_eq!(c.sdp_m_line_index, None);
    // Legacy end-of-candidates: an empty candidate string.
    let c = parse(r#"{"candidate":"","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXyZ"}"#);
    assert!(c.candidate.is_empty());
    // The `rtc` crate's RTCIceCandidateInit adds `url`; unknown fields here are ignored.
    let c = parse(
        r#"{"candidate":"candidate:2 1 udp 1686052607 203.0.113.9 40000 typ srflx raddr 0.0.0.0 rport 0","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd","url":"stun:stun.example.org:3478"}"#,
    );
    assert_eq!(c.sdp_mid.as_deref(), Some("0"));
    // Serialized back, absent options are left out.
    let back = serde_json::to_value(IceCandidate {
        candidate: "x".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: None,
        username_fragment: None,
    })
    .unwrap();
    assert_eq!(back, json!({"candidate": "x", "sdpMid": "0"}));
}

#[test]
fn chat_limit_counts_characters_not_bytes() {
    let call = id(CALL);
    let ok = ClientMessage::ChatSend {
        call_id: call,
        text: "办".repeat(crate::limits::MAX_CHAT_CHARS),
    };
    assert!(
        ok.validate().is_ok(),
        "2000 Chinese characters are 6000 bytes and allowed"
    );
    let long = ClientMessage::ChatSend {
        call_id: call,
        text: "办".repeat(crate::limits::MAX_CHAT_CHARS + 1),
    };
    assert_eq!(
        long.validate().unwrap_err().code(),
        crate::ErrorCode::InvalidMessage
    );
}
