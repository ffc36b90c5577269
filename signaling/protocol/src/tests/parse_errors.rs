//! Refusals: each bad message gets the right code, and the client's `id` when readable.

use super::*;
use crate::client::{parse_client_frame, parse_client_message, ClientMessage};
use crate::error::ErrorCode;
use crate::ids::RequestId;
use crate::limits::{MAX_CANDIDATE_BYTES, MAX_MESSAGE_BYTES, MAX_SDP_BYTES, MAX_TOKEN_BYTES};

fn code_of(text: &str) -> ErrorCode {
    parse_client_frame(text).unwrap_err().code()
}

#[test]
fn unknown_type_is_unknown_type_and_keeps_the_id() {
    let err = parse_client_frame(r#"{"id": 5, "type": "teleport", "to": "moon"}"#).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownType);
    assert_eq!(err.request_id(), Some(RequestId(5)));
    assert!(err.message().contains("teleport"));
}

#[test]
fn a_server_only_type_from_a_client_is_unknown() {
    assert_eq!(code_of(r#"{"type": "welcome"}"#), ErrorCode::UnknownType);
}

#[test]
fn a_very_long_unknown_type_is_not_echoed_in_full() {
    let text = format!(r#"{{"type": "{}"}}"#, "x".repeat(10_000));
    let err = parse_client_frame(&text).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownType);
    assert!(err.message().len() < 200);
}

#[test]
fn wrong_field_types_are_invalid_message() {
    let err = parse_client_frame(r#"{"id": 6, "type": "join", "call_id": 42}"#).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidMessage);
    assert_eq!(err.request_id(), Some(RequestId(6)));
    assert_eq!(
        code_of(r#"{"type": "join", "call_id": "not-a-uuid"}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        code_of(&format!(
            r#"{{"type": "media_state", "call_id": "{CALL}", "audio_muted": "yes", "video_off": false}}"#
        )),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        code_of(r#"{"type": "hello", "protocol_version": -1, "token": "t"}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        code_of(r#"{"type": "set_presence", "status": "on_call"}"#),
        ErrorCode::InvalidMessage
    );
}

#[test]
fn missing_fields_are_invalid_message() {
    let err = parse_client_frame(r#"{"id": 7, "type": "chat_send", "text": "hi"}"#).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidMessage);
    assert_eq!(err.request_id(), Some(RequestId(7)));
    assert!(err.message().contains("call_id"), "{}", err.message());
    assert_eq!(
        code_of(r#"{"type": "hello", "token": "t"}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        code_of(&format!(
            r#"{{"type": "ice_candidate", "call_id": "{CALL}", "candidate": {{"sdpMid": "0"}}}}"#
        )),
        ErrorCode::InvalidMessage
    );
}

#[test]
fn unknown_fields_are_invalid_message() {
    let err = parse_client_frame(&format!(
        r#"{{"id": 8, "type": "leave", "call_id": "{CALL}", "force": true}}"#
    ))
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidMessage);
    assert!(err.message().contains("force"), "{}", err.message());
    assert_eq!(
        code_of(r#"{"type": "subscribe_figures", "skills": []}"#),
        ErrorCode::InvalidMessage
    );
    // A server envelope field in a client message.
    assert_eq!(
        code_of(r#"{"seq": 3, "type": "ping"}"#),
        ErrorCode::InvalidMessage
    );
}

#[test]
fn missing_or_mistyped_type_is_invalid_message() {
    assert_eq!(
        code_of(r#"{"id": 1, "call_id": "x"}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(code_of(r#"{"type": 3}"#), ErrorCode::InvalidMessage);
    assert_eq!(code_of(r#"{"type": null}"#), ErrorCode::InvalidMessage);
}

#[test]
fn not_json_or_not_an_object_is_invalid_message() {
    for text in [
        "",
        "ping",
        "{\"type\": \"ping\"",
        "[1, 2]",
        "\"ping\"",
        "42",
        "null",
    ] {
        let err = parse_client_frame(text).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidMessage, "{text:?}");
        assert_eq!(err.request_id(), None);
    }
}

#[test]
fn an_unreadable_id_is_left_out_of_the_error() {
    let err = parse_client_frame(r#"{"id": "seven", "type": "ping"}"#).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidMessage);
    assert_eq!(err.request_id(), None);
}

#[test]
fn oversize_messages_are_refused_before_parsing() {
    // The issue's test: a 1 MB message.
    let big = format!(
        r#"{{"id": 9, "type": "chat_send", "call_id": "{CALL}", "text": "{}"}}"#,
        "a".repeat(1_000_000)
    );
    let err = parse_client_frame(&big).unwrap_err();
    assert_eq!(err.code(), ErrorCode::MessageTooLarge);
    assert_eq!(err.request_id(), None, "not parsed, so the id is unknown");
    // Not even JSON: still too large, not invalid.
    assert_eq!(
        code_of(&"{".repeat(MAX_MESSAGE_BYTES + 1)),
        ErrorCode::MessageTooLarge
    );
    // Exactly at the limit is parsed (and here refused for another reason).
    let at_limit = format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        " ".repeat(MAX_MESSAGE_BYTES - 24)
    );
    assert_eq!(at_limit.len(), MAX_MESSAGE_BYTES);
    assert_eq!(code_of(&at_limit), ErrorCode::InvalidMessage);
}

#[test]
fn limits_are_checked_after_parsing() {
    let chat = |text: &str| {
        format!(
            r#"{{"id": 4, "type": "chat_send", "call_id": "{CALL}", "text": {}}}"#,
            serde_json::to_string(text).unwrap()
        )
    };
    let err = parse_client_frame(&chat(&"字".repeat(2001))).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidMessage);
    assert_eq!(err.request_id(), Some(RequestId(4)));
    assert!(err.message().contains("2001"), "{}", err.message());
    assert!(parse_client_frame(&chat(&"字".repeat(2000))).is_ok());
    assert_eq!(code_of(&chat("")), ErrorCode::InvalidMessage);
    assert_eq!(code_of(&chat(" \n\t ")), ErrorCode::InvalidMessage);

    let sdp = |n: usize| {
        format!(
            r#"{{"type": "sdp_answer", "call_id": "{CALL}", "description": {{"type": "answer", "sdp": "{}"}}}}"#,
            "v".repeat(n)
        )
    };
    assert!(parse_client_frame(&sdp(MAX_SDP_BYTES)).is_ok());
    assert_eq!(code_of(&sdp(MAX_SDP_BYTES + 1)), ErrorCode::InvalidMessage);
    assert_eq!(code_of(&sdp(0)), ErrorCode::InvalidMessage);

    let cand =
        |c: &str| format!(r#"{{"type": "ice_candidate", "call_id": "{CALL}", "candidate": {c}}}"#);
    let long = format!(
        r#"{{"candidate": "{}", "sdpMid": "0"}}"#,
        "c".repeat(MAX_CANDIDATE_BYTES + 1)
    );
    assert_eq!(code_of(&cand(&long)), ErrorCode::InvalidMessage);
    assert_eq!(
        code_of(&cand(
            r#"{"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host"}"#
        )),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        code_of(&cand(
            r#"{"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMid": null, "sdpMLineIndex": null}"#
        )),
        ErrorCode::InvalidMessage
    );
    let long_mid = format!(r#"{{"candidate": "", "sdpMid": "{}"}}"#, "m".repeat(65));
    assert_eq!(code_of(&cand(&long_mid)), ErrorCode::InvalidMessage);

    let token = format!(
        r#"{{"type": "hello", "protocol_version": 1, "token": "{}"}}"#,
        "t".repeat(MAX_TOKEN_BYTES + 1)
    );
    assert_eq!(code_of(&token), ErrorCode::InvalidMessage);
    assert_eq!(
        code_of(r#"{"type": "hello", "protocol_version": 1, "token": ""}"#),
        ErrorCode::InvalidMessage
    );

    let reason = format!(
        r#"{{"type": "decline_offer", "offer_id": "{OFFER}", "reason": "{}"}}"#,
        "r".repeat(201)
    );
    assert_eq!(code_of(&reason), ErrorCode::InvalidMessage);
}

#[test]
fn a_description_must_match_its_message() {
    // "answer before offer" shaped the other way: an answer inside sdp_offer.
    let text = format!(
        r#"{{"id": 3, "type": "sdp_offer", "call_id": "{CALL}", "description": {{"type": "answer", "sdp": "v=0\r\n"}}}}"#
    );
    let err = parse_client_frame(&text).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidMessage);
    assert_eq!(err.request_id(), Some(RequestId(3)));
    let text = format!(
        r#"{{"type": "sdp_answer", "call_id": "{CALL}", "description": {{"type": "offer", "sdp": "v=0\r\n"}}}}"#
    );
    assert_eq!(code_of(&text), ErrorCode::InvalidMessage);
    // pranswer and rollback never travel.
    let text = format!(
        r#"{{"type": "sdp_answer", "call_id": "{CALL}", "description": {{"type": "pranswer", "sdp": "v=0\r\n"}}}}"#
    );
    assert_eq!(code_of(&text), ErrorCode::InvalidMessage);
    let text = format!(
        r#"{{"type": "sdp_offer", "call_id": "{CALL}", "description": {{"type": "rollback", "sdp": ""}}}}"#
    );
    assert_eq!(code_of(&text), ErrorCode::InvalidMessage);
}

#[test]
fn parse_client_message_drops_only_the_envelope() {
    assert_eq!(
        parse_client_message(r#"{"id": 1, "type": "ping"}"#).unwrap(),
        ClientMessage::Ping { ts: None }
    );
    assert_eq!(
        parse_client_message(r#"{"type": "nope"}"#)
            .unwrap_err()
            .code(),
        ErrorCode::UnknownType
    );
}

#[test]
fn a_protocol_error_becomes_an_error_message() {
    let err = parse_client_frame(r#"{"id": 11, "type": "nope"}"#).unwrap_err();
    let env = crate::ServerEnvelope::reply(5, err.request_id(), err.to_server_message());
    let json: serde_json::Value = serde_json::from_str(&env.to_json().unwrap()).unwrap();
    assert_eq!(json["reply_to"], 11);
    assert_eq!(json["type"], "error");
    assert_eq!(json["code"], "unknown_type");
    assert_eq!(err.to_string(), "unknown_type: unknown type `nope`");
}
