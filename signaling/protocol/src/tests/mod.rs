//! Unit tests: every message pinned to a literal JSON fixture, browser shapes, refusals.

mod client_fixtures;
mod parse_errors;
mod server_fixtures;

use serde_json::Value;

use crate::ids::Timestamp;

pub(crate) const SESSION: &str = "5b1f2c1e-8d3a-4f6b-9c2d-0a1b2c3d4e5f";
pub(crate) const CALL: &str = "0195a0c2-7b1e-7c3a-9d4e-3f2a1b0c9d8e";
pub(crate) const ME: &str = "0195a0c2-7b1e-7c3a-9d4e-000000000001";
pub(crate) const AGENT: &str = "0195a0c2-7b1e-7c3a-9d4e-000000000002";
pub(crate) const USER: &str = "0195a0c2-7b1e-7c3a-9d4e-0000000000aa";
pub(crate) const TICKET: &str = "0195a0c2-7b1e-7c3a-9d4e-0000000000b1";
pub(crate) const OFFER: &str = "0195a0c2-7b1e-7c3a-9d4e-0000000000c1";
pub(crate) const CHAT_MSG: &str = "0195a0c2-7b1e-7c3a-9d4e-0000000000d1";
pub(crate) const AT: &str = "2025-03-03T09:30:00Z";

/// A short but real Chrome offer (audio + video, BUNDLE), as `pc.localDescription.sdp` gives it.
pub(crate) const CHROME_OFFER_SDP: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS 3d1a2b\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:sXyZ\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=ice-options:trickle\r\na=fingerprint:sha-256 1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=msid:3d1a2b 7c9e\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:sXyZ\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=ice-options:trickle\r\na=fingerprint:sha-256 1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09\r\na=setup:actpass\r\na=mid:1\r\na=sendrecv\r\na=msid:3d1a2b 5f0d\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";

pub(crate) fn at() -> Timestamp {
    Timestamp::parse(AT).unwrap()
}

pub(crate) fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

/// Asserts that `value` serializes to exactly `json` and that `json` deserializes to `value`.
pub(crate) fn assert_pinned<T>(json: &Value, value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let serialized = serde_json::to_value(value).unwrap();
    assert_eq!(
        &serialized, json,
        "serialized shape differs from the fixture"
    );
    let parsed: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&parsed, value, "fixture parses to a different value");
    // And through text, as it travels.
    let text = serde_json::to_string(json).unwrap();
    let parsed: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&parsed, value);
}
