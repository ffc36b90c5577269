//! Bad input gets a clear error and loses nothing (issue 2, "Bad input"): malformed JSON, wrong
//! content types, unknown fields, wrong types, oversize bodies, unknown ids, malformed path and
//! query parameters, forged, expired and garbage tokens, SQL-looking strings, 10 KB names,
//! control characters, invalid phone and ID numbers, unknown routes and methods.
//!
//! Every answer must be an RFC 9457 problem (`application/problem+json`, a stable `code` that
//! also ends its `type`), never a 5xx. After each class of bad input, every row of every table
//! is compared with what was stored before.

use std::collections::BTreeMap;

use integration_tests::{spawn_app, spawn_app_on, Backend, Reply, TestApp, T0_MS};
use serde_json::{json, Value};
use signaling::domain::identity::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request body limit the server is configured with by default (64 KiB).
const LIMIT: usize = 64 * 1024;

const SQL: &str = "'; DROP TABLE staff; --";

// ---------------------------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------------------------

/// Asserts `r` is a problem response with this status and code.
fn assert_problem(what: &str, r: &Reply, status: u16, code: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{what}: got {} {}", r.status, r.body);
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{what}: content-type is {:?}",
        r.content_type
    );
    let kind = r.body["type"].as_str().unwrap_or_default();
    assert!(kind.ends_with(&format!(":{code}")), "{what}: type {kind:?} does not end with the code");
    assert_eq!(r.body["status"], status, "{what}: the body's status");
    assert!(r.body["title"].is_string() && r.body["detail"].is_string(), "{what}: {}", r.body);
}

/// Status, content type and JSON body of a response.
async fn reply(res: reqwest::Response) -> Reply {
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = res.bytes().await.unwrap_or_default();
    Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), content_type }
}

/// Every row of every table (migrations included), each row as SQL literals.
type Snapshot = BTreeMap<String, Vec<String>>;

/// The test's own connection to the server's database, for looking at every stored row.
enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A running server, its database, and tokens for the callers these tests need. Tokens are
/// taken before any snapshot, so signing in is not counted as a change.
struct Ctx {
    app: TestApp,
    db: Db,
    admin: String,
    agent: String,
    resident: String,
    supervisor: String,
    auditor: String,
}

async fn setup_on(backend: Backend) -> Ctx {
    let app = spawn_app_on(backend, |_| {}).await;
    let url = app.state.settings.database_url();
    let db = match backend {
        Backend::Sqlite => Db::Sqlite(sqlx::SqlitePool::connect(&url).await.expect("open the test database")),
        Backend::Postgres => Db::Postgres(sqlx::PgPool::connect(&url).await.expect("open the test database")),
    };
    let admin = app.staff_token("admin").await;
    let agent = app.staff_token("agent.li").await;
    let resident = app.resident_token("13800000001").await;
    let supervisor = app.staff_token("supervisor").await;
    let auditor = app.staff_token("auditor").await;
    Ctx { app, db, admin, agent, resident, supervisor, auditor }
}

/// Runs each named `async fn(Ctx)` as two tests, `<name>::on_sqlite` and `<name>::on_postgresql`
/// (the latter skipped when `TEST_POSTGRES_URL` is not set, and failing in CI then).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use integration_tests::{skip_without_postgres, Backend};
            #[tokio::test]
            async fn on_sqlite() {
                super::$name(super::setup_on(Backend::Sqlite).await).await
            }
            #[tokio::test]
            async fn on_postgresql() {
                if !skip_without_postgres(Backend::Postgres) {
                    super::$name(super::setup_on(Backend::Postgres).await).await
                }
            }
        }
    )*};
}

on_both_backends!(
    malformed_json_is_refused_as_malformed_json_and_stores_nothing,
    bodies_not_declared_as_json_are_refused_as_unsupported_media_type,
    unknown_fields_are_refused_not_ignored,
    wrong_types_missing_fields_and_wrong_shapes_are_refused_as_invalid_body,
    bodies_over_64_kib_are_refused_as_body_too_large,
    unknown_ids_are_not_found_and_unknown_references_are_refused,
    malformed_uuids_in_paths_are_refused_as_invalid_path,
    bad_query_parameters_are_refused_as_invalid_query,
    forged_expired_and_garbage_tokens_are_refused_with_a_reason,
    sql_looking_strings_are_refused_or_stored_verbatim_and_every_table_survives,
    ten_kilobyte_names_control_characters_and_blank_names_are_refused,
    invalid_phone_numbers_id_numbers_codes_and_dates_are_refused,
    nul_bytes_that_postgresql_cannot_store_are_bad_input,
);

impl Ctx {
    /// The strings a one-column query returns, on either backend.
    async fn strings(&self, sql: &str) -> Vec<String> {
        match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every row of every table, each row as text, sorted.
    async fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::new();
        let tables = match self.db {
            Db::Sqlite(_) => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            Db::Postgres(_) => "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
        };
        for t in self.strings(tables).await {
            let rows = match self.db {
                Db::Sqlite(_) => {
                    let cols = self.strings(&format!("SELECT name FROM pragma_table_info('{t}') ORDER BY cid")).await;
                    let row = cols.iter().map(|c| format!("quote(\"{c}\")")).collect::<Vec<_>>().join(" || '|' || ");
                    format!("SELECT {row} FROM \"{t}\"")
                }
                Db::Postgres(_) => format!("SELECT r::text FROM \"{t}\" AS r"),
            };
            let mut rows = self.strings(&rows).await;
            rows.sort();
            snap.insert(t, rows);
        }
        snap
    }

    /// Sends `body` as it is, with an optional content type and bearer token.
    async fn send(&self, method: &str, path: &str, token: Option<&str>, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let mut req = self.app.http.request(method.parse().unwrap(), format!("{}{path}", self.app.base)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        reply(req.send().await.expect("request sent")).await
    }

    /// Sends a request with a raw `Authorization` header value.
    async fn with_authorization(&self, method: &str, path: &str, header: Option<&[u8]>, body: Option<Value>) -> Reply {
        let mut req = self.app.http.request(method.parse().unwrap(), format!("{}{path}", self.app.base));
        if let Some(h) = header {
            req = req.header("authorization", reqwest::header::HeaderValue::from_bytes(h).unwrap());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        reply(req.send().await.expect("request sent")).await
    }

    /// Sends JSON to an endpoint as `e`'s caller.
    async fn json(&self, e: &Endpoint, body: &Value) -> Reply {
        self.send(e.method, &e.path, e.token.as_deref(), Some("application/json"), body.to_string().into_bytes()).await
    }
}

/// Asserts nothing stored changed, naming the table and rows that did.
fn assert_unchanged(class: &str, before: &Snapshot, after: &Snapshot) {
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "{class}: the set of tables changed");
    for (table, rows) in before {
        let now = &after[table];
        if rows != now {
            let added: Vec<_> = now.iter().filter(|r| !rows.contains(r)).take(3).collect();
            let removed: Vec<_> = rows.iter().filter(|r| !now.contains(r)).take(3).collect();
            panic!("{class}: table {table} changed ({} → {} rows); added {added:?}, removed {removed:?}", rows.len(), now.len());
        }
    }
}

/// An endpoint that takes a JSON body, the token it needs, and a body it would accept.
struct Endpoint {
    method: &'static str,
    path: String,
    token: Option<String>,
    valid: Value,
}

fn matter_spec(code: &str, class: &str) -> Value {
    json!({
        "code": code, "class": class, "name_zh": "测试事项", "name_en": "Test matter",
        "checklist": [{"key": "id_card", "name_zh": "身份证", "name_en": "ID card", "requirement": {"kind": "required"}}]
    })
}

/// The endpoints that read a JSON body: every one the API has (each `request_body` of
/// `signaling/src/api/*.rs` but the document upload's raw chunks). Ids in paths are fresh
/// UUIDs: a body is judged before anything is looked up, so none of these gets as far as
/// storing. The indices are used below; new endpoints go at the end.
fn body_endpoints(c: &Ctx) -> Vec<Endpoint> {
    let (admin, agent, resident) = (Some(c.admin.clone()), Some(c.agent.clone()), Some(c.resident.clone()));
    let (supervisor, auditor) = (Some(c.supervisor.clone()), Some(c.auditor.clone()));
    let e = |method, path: &str, token: &Option<String>, valid| Endpoint { method, path: path.to_string(), token: token.clone(), valid };
    let id = || uuid::Uuid::new_v4();
    vec![
        e("POST", "/api/v1/auth/staff/login", &None, json!({"username": "admin", "password": "demo-pass-2026"})),
        e("POST", "/api/v1/auth/otp/request", &None, json!({"phone": "13800000002"})),
        e("POST", "/api/v1/auth/otp/verify", &None, json!({"phone": "13800000002", "code": "123456"})),
        e("POST", "/api/v1/auth/refresh", &None, json!({"refresh_token": "x"})),
        e("POST", "/api/v1/auth/device", &None, json!({"device_token": "x"})),
        e("POST", "/api/v1/devices/pairings", &None, json!({"kind": "kiosk", "label": "自助机 9号"})),
        e("POST", "/api/v1/devices/pairings/confirm", &admin, json!({"code": "ABCDEFGH", "kind": "kiosk"})),
        e(
            "POST",
            "/api/v1/staff",
            &admin,
            json!({"username": "new.agent", "display_name": "新坐席", "role": "agent", "password": "long-enough-pw"}),
        ),
        e("POST", "/api/v1/residents", &agent, json!({"name": "王五", "phone": "13900001111"})),
        e("PATCH", "/api/v1/residents/me", &resident, json!({"name": "张桂英"})),
        e("POST", "/api/v1/matter-classes", &admin, json!({"code": "housing", "name_zh": "住房", "name_en": "Housing"})),
        e("POST", "/api/v1/matters", &admin, matter_spec("HX-001", "social_insurance")),
        e("PUT", "/api/v1/matters/SI-001", &admin, json!({"matter": matter_spec("SI-001", "social_insurance"), "expected_version": 1})),
        e("POST", "/api/v1/grids", &admin, json!({"code": "XH-WX-099", "name": "第99网格"})),
        // 14: calls
        e("POST", "/api/v1/calls", &agent, json!({"resident_id": id(), "matter_code": "SI-001"})),
        e("POST", &format!("/api/v1/calls/{}/members", id()), &agent, json!({"staff_id": id(), "role": "helper"})),
        // 16: cases and documents
        e("POST", "/api/v1/cases", &resident, json!({"matter_code": "SI-001"})),
        e("PUT", &format!("/api/v1/cases/{}/answers", id()), &resident, json!({"answers": {"household": "本地"}})),
        e("POST", &format!("/api/v1/cases/{}/review", id()), &agent, json!({"action": "approve", "note": "材料齐全"})),
        e("POST", &format!("/api/v1/cases/{}/documents", id()), &resident, json!({"content_type": "image/jpeg", "size": 1000})),
        e(
            "POST",
            &format!("/api/v1/cases/{}/documents/{}/finish", id(), id()),
            &resident,
            json!({"sha256": "ab".repeat(32)}),
        ),
        // 21: queue
        e("POST", "/api/v1/queue/tickets", &resident, json!({"matter_code": "SI-001"})),
        e(
            "POST",
            "/api/v1/queue/appointments",
            &resident,
            json!({"matter_code": "SI-001", "slot_start": "2026-12-01T10:00:00+08:00"}),
        ),
        // 23: ratings and follow-ups
        e("POST", "/api/v1/ratings", &resident, json!({"case_id": id(), "level": 5, "tags": ["态度好"]})),
        e("POST", &format!("/api/v1/follow-ups/{}/close", id()), &supervisor, json!({"note": "已回访，问题已解决"})),
        // 25: recordings
        e("PUT", &format!("/api/v1/recordings/{}/legal-hold", id()), &auditor, json!({"reason": "诉讼保全 2026-001"})),
        // 26: case links
        e("POST", &format!("/api/v1/cases/{}/calls", id()), &agent, json!({"call_id": id()})),
    ]
}

/// `v` with `key` set to `value`.
fn with(v: &Value, key: &str, value: Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().insert(key.to_string(), value);
    v
}

/// The GB 11643 check digit of the first 17 digits.
fn check_digit(body17: &str) -> char {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body17.bytes().zip(W).map(|(b, w)| (b - b'0') as u32 * w).sum();
    b"10X98765432"[(sum % 11) as usize] as char
}

/// Unpadded base64url, for hand-made JWTs.
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

async fn malformed_json_is_refused_as_malformed_json_and_stores_nothing(c: Ctx) {
    let before = c.snapshot().await;
    for e in body_endpoints(&c) {
        let valid = e.valid.to_string();
        let first_key = e.valid.as_object().unwrap().keys().next().unwrap().clone();
        // Bad content inside the body's first string value, the rest of the document intact.
        let at = valid.find(":\"").expect("a string value") + 2;
        let inside = |bad: &[u8]| [&valid.as_bytes()[..at], bad, &valid.as_bytes()[at..]].concat();
        let variants: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("an open brace", b"{".to_vec()),
            ("plain text", b"not json at all".to_vec()),
            ("single quotes", b"{'phone': '13800000001'}".to_vec()),
            ("a bare comma", b"{,}".to_vec()),
            ("truncated", valid.as_bytes()[..valid.len() - 1].to_vec()),
            ("cut inside a string", valid.as_bytes()[..at + 1].to_vec()),
            ("trailing garbage", format!("{valid}}}").into_bytes()),
            ("two documents", format!("{valid} {valid}").into_bytes()),
            ("a comment", format!("/* hi */ {valid}").into_bytes()),
            ("NaN", format!("{{\"{first_key}\": NaN}}").into_bytes()),
            ("invalid UTF-8", inside(b"\xff\xfe")),
            ("a lone surrogate", inside(b"\\ud800")),
            ("a bad escape", inside(b"\\q")),
            ("a raw newline in a string", inside(b"\n")),
            ("a NUL byte in a string", inside(b"\0")),
            ("a byte-order mark", [b"\xef\xbb\xbf".as_slice(), valid.as_bytes()].concat()),
        ];
        for (what, body) in variants {
            let r = c.send(e.method, &e.path, e.token.as_deref(), Some("application/json"), body).await;
            assert_problem(&format!("{} {} with {what}", e.method, e.path), &r, 400, "malformed-json");
        }
    }
    assert_unchanged("malformed JSON", &before, &c.snapshot().await);
}

async fn bodies_not_declared_as_json_are_refused_as_unsupported_media_type(c: Ctx) {
    let before = c.snapshot().await;
    for e in body_endpoints(&c) {
        let body = e.valid.to_string().into_bytes();
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/xml"),
            Some("json"),
            Some(""),
        ] {
            let r = c.send(e.method, &e.path, e.token.as_deref(), ct, body.clone()).await;
            assert_problem(&format!("{} {} as {ct:?}", e.method, e.path), &r, 415, "unsupported-media-type");
        }
    }
    assert_unchanged("wrong content type", &before, &c.snapshot().await);
}

async fn unknown_fields_are_refused_not_ignored(c: Ctx) {
    let before = c.snapshot().await;
    for e in body_endpoints(&c) {
        for (k, v) in [("is_admin", json!(true)), ("role_override", json!("admin")), ("", json!(null)), ("id", json!(1))] {
            let r = c.json(&e, &with(&e.valid, k, v)).await;
            assert_problem(&format!("{} {} with field {k:?}", e.method, e.path), &r, 422, "invalid-body");
        }
    }
    // Unknown fields deep inside a matter are refused too.
    let e = &body_endpoints(&c)[11];
    let mut spec = e.valid.clone();
    spec["checklist"][0]["mandatory"] = json!(true);
    assert_problem("a checklist item with an unknown field", &c.json(e, &spec).await, 422, "invalid-body");
    let e = &body_endpoints(&c)[12];
    let mut update = e.valid.clone();
    update["matter"]["owner"] = json!("admin");
    assert_problem("a matter update with an unknown nested field", &c.json(e, &update).await, 422, "invalid-body");
    assert_unchanged("unknown fields", &before, &c.snapshot().await);
}

async fn wrong_types_missing_fields_and_wrong_shapes_are_refused_as_invalid_body(c: Ctx) {
    let before = c.snapshot().await;
    let eps = body_endpoints(&c);
    // Not an object at all, or an object missing what is required.
    for e in &eps {
        for shape in [json!(null), json!([]), json!("text"), json!(42), json!(true)] {
            let r = c.json(e, &shape).await;
            assert_problem(&format!("{} {} with {shape}", e.method, e.path), &r, 422, "invalid-body");
        }
        if e.path != "/api/v1/residents/me" {
            // Every field of a profile update is optional; elsewhere `{}` misses something.
            assert_problem(&format!("{} {} with {{}}", e.method, e.path), &c.json(e, &json!({})).await, 422, "invalid-body");
        }
    }
    // Each field with a value of the wrong type or outside its type's range.
    let cases: Vec<(usize, &str, Value)> = vec![
        (0, "username", json!(123)),
        (0, "password", json!(null)),
        (0, "username", json!(["admin"])),
        (1, "phone", json!(13800000002u64)),
        (1, "phone", json!({"number": "13800000002"})),
        (2, "code", json!(123456)),
        (3, "refresh_token", json!(true)),
        (4, "device_token", json!([])),
        (5, "kind", json!("toaster")),
        (5, "kind", json!("KIOSK")),
        (5, "label", json!(5)),
        (6, "grid_id", json!("not-a-uuid")),
        (6, "code", json!(12345678)),
        (7, "role", json!("root")),
        (7, "role", json!("Admin")),
        (7, "skills", json!("social_insurance")),
        (7, "grid_id", json!(5)),
        (7, "password", json!(1234567890)),
        (8, "elderly", json!("yes")),
        (8, "disabled", json!(1)),
        (8, "phone", json!(13900001111u64)),
        (8, "birth_date", json!(19900101)),
        (8, "grid_id", json!("x")),
        (9, "name", json!(5)),
        (9, "grid_id", json!("abc")),
        (10, "code", json!(1)),
        (11, "checklist", json!({})),
        (11, "retention_days", json!(-1)),
        (11, "retention_days", json!("30")),
        (11, "retention_days", json!(4_294_967_296u64)),
        (11, "retention_days", json!(1.5)),
        (11, "video", json!("yes")),
        (11, "questions", json!([{"key": "q"}])),
        (12, "expected_version", json!("1")),
        (12, "active", json!("no")),
        (12, "matter", json!("SI-001")),
        (13, "code", json!(1)),
        (13, "name", json!(null)),
        (14, "resident_id", json!("not-a-uuid")),
        (14, "matter_code", json!(1)),
        (14, "device_id", json!(7)),
        (15, "staff_id", json!(5)),
        (15, "role", json!("boss")),
        (16, "matter_code", json!(["SI-001"])),
        (16, "answers", json!(["本地"])),
        (16, "ticket_id", json!("ticket-1")),
        (17, "answers", json!({"household": 1})),
        (17, "expected_version", json!("1")),
        (18, "action", json!("approve_all")),
        (18, "note", json!(5)),
        (19, "size", json!("1000")),
        (19, "size", json!(-1.5)),
        (19, "source", json!("fax")),
        (20, "sha256", json!(256)),
        (21, "callback", json!("yes")),
        (21, "resident_id", json!(1)),
        (22, "slot_start", json!(1_796_004_000)),
        (23, "level", json!(6)),
        (23, "level", json!(0)),
        (23, "level", json!("5")),
        (23, "tags", json!("态度好")),
        (24, "note", json!(null)),
        (25, "reason", json!(["诉讼保全"])),
    ];
    for (i, field, value) in cases {
        let e = &eps[i];
        let r = c.json(e, &with(&e.valid, field, value.clone())).await;
        assert_problem(&format!("{} {} with {field} = {value}", e.method, e.path), &r, 422, "invalid-body");
    }
    let e = &eps[11];
    let mut spec = e.valid.clone();
    spec["checklist"][0]["requirement"] = json!({"kind": "sometimes"});
    assert_problem("an unknown requirement kind", &c.json(e, &spec).await, 422, "invalid-body");
    spec["checklist"][0]["requirement"] = json!("required");
    assert_problem("a requirement that is not tagged", &c.json(e, &spec).await, 422, "invalid-body");
    // A duplicated key is refused, not resolved silently to one of the two values.
    let dup = br#"{"username": "admin", "username": "agent.li", "password": "demo-pass-2026"}"#.to_vec();
    let r = c.send("POST", "/api/v1/auth/staff/login", None, Some("application/json"), dup).await;
    assert_problem("a duplicated key", &r, 422, "invalid-body");
    assert_unchanged("wrong types", &before, &c.snapshot().await);
}

async fn bodies_over_64_kib_are_refused_as_body_too_large(c: Ctx) {
    let before = c.snapshot().await;
    for e in body_endpoints(&c) {
        // Valid JSON that would be accepted, padded with whitespace past the limit.
        let valid = e.valid.to_string();
        let padded = format!("{}{}}}", &valid[..valid.len() - 1], " ".repeat(LIMIT));
        let r = c.send(e.method, &e.path, e.token.as_deref(), Some("application/json"), padded.into_bytes()).await;
        assert_problem(&format!("{} {} padded to {} KiB", e.method, e.path, LIMIT / 1024 + 1), &r, 413, "body-too-large");
        // A long string value, as a careless or hostile client would send.
        let key = e.valid.as_object().unwrap().keys().next().unwrap().clone();
        let r = c.json(&e, &with(&e.valid, &key, json!("x".repeat(LIMIT + 1)))).await;
        assert_problem(&format!("{} {} with a {} KiB {key}", e.method, e.path, LIMIT / 1024), &r, 413, "body-too-large");
    }
    // A megabyte is refused the same way.
    let big = format!("{{\"phone\": \"{}\"}}", "1".repeat(1 << 20));
    let r = c.send("POST", "/api/v1/auth/otp/request", None, Some("application/json"), big.into_bytes()).await;
    assert_problem("a 1 MiB body", &r, 413, "body-too-large");

    // At the boundary: exactly the limit is read and judged on its content; one byte more is not.
    let at_limit = |n: usize| {
        let head = r#"{"code": "not a code", "name": "第99网格""#;
        format!("{head}{}}}", " ".repeat(n - head.len() - 1)).into_bytes()
    };
    let r = c.send("POST", "/api/v1/grids", Some(&c.admin), Some("application/json"), at_limit(LIMIT)).await;
    assert_problem("a body of exactly 64 KiB", &r, 422, "invalid-field");
    let r = c.send("POST", "/api/v1/grids", Some(&c.admin), Some("application/json"), at_limit(LIMIT + 1)).await;
    assert_problem("a body one byte over 64 KiB", &r, 413, "body-too-large");

    // Without a Content-Length (chunked), the limit still holds.
    let mut tcp = tokio::net::TcpStream::connect(c.app.addr).await.unwrap();
    let chunk = format!("{{\"kind\": \"kiosk\", \"label\": \"{}\"}}", "x".repeat(LIMIT + 10));
    let request = format!(
        "POST /api/v1/devices/pairings HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    // The server may answer and close before reading it all; a failed write is fine.
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "chunked oversize body: {answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("\"code\":\"body-too-large\""), "{answer}");

    assert_unchanged("oversize bodies", &before, &c.snapshot().await);
}

// ---------------------------------------------------------------------------------------------
// Ids, paths, queries, routes
// ---------------------------------------------------------------------------------------------

async fn unknown_ids_are_not_found_and_unknown_references_are_refused(c: Ctx) {
    let app = &c.app;
    let before = c.snapshot().await;
    let nobody = uuid::Uuid::new_v4();
    let (admin, agent, resident) = (Some(c.admin.as_str()), Some(c.agent.as_str()), Some(c.resident.as_str()));
    let not_found: Vec<(&str, String, Option<&str>, Option<Value>)> = vec![
        ("GET", format!("/api/v1/staff/{nobody}"), admin, None),
        ("GET", "/api/v1/staff/00000000-0000-0000-0000-000000000000".into(), admin, None),
        ("GET", format!("/api/v1/residents/{nobody}"), agent, None),
        ("GET", "/api/v1/residents/ffffffff-ffff-ffff-ffff-ffffffffffff".into(), admin, None),
        ("DELETE", format!("/api/v1/devices/{nobody}"), admin, None),
        ("GET", "/api/v1/matters/NOPE-404".into(), None, None),
        ("GET", "/api/v1/matters/si-001".into(), None, None),
        ("GET", format!("/api/v1/matters/{}", "X".repeat(300)), None, None),
        ("PUT", "/api/v1/matters/NOPE-404".into(), admin, Some(json!({"matter": matter_spec("NOPE-404", "social_insurance")}))),
    ];
    for (method, path, token, body) in not_found {
        let r = app.call(method, &path, token, body).await;
        assert_problem(&format!("{method} {path}"), &r, 404, "not-found");
    }
    // A pairing that does not exist, polled with some secret.
    let r = reply(
        app.http
            .get(format!("{}/api/v1/devices/pairings/{nobody}", app.base))
            .header("x-pairing-secret", "whatever")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem("polling an unknown pairing", &r, 404, "not-found");
    let r = app
        .call("POST", "/api/v1/devices/pairings/confirm", admin, Some(json!({"code": "ABCDEFGH", "kind": "kiosk"})))
        .await;
    assert_problem("confirming an unknown code", &r, 404, "pairing-not-found");

    // References to things that do not exist are refused as invalid fields, not stored.
    let staff = json!({"username": "new.helper", "display_name": "新网格员", "role": "helper", "password": "long-enough-pw"});
    let invalid: Vec<(&str, &str, Option<&str>, Value)> = vec![
        ("POST", "/api/v1/staff", admin, with(&staff, "grid_id", json!(nobody))),
        ("POST", "/api/v1/staff", admin, with(&staff, "skills", json!(["astrology"]))),
        ("POST", "/api/v1/residents", agent, json!({"name": "王五", "phone": "13900001111", "grid_id": nobody})),
        ("PATCH", "/api/v1/residents/me", resident, json!({"grid_id": nobody})),
        ("POST", "/api/v1/matters", admin, matter_spec("HX-001", "astrology")),
        ("PUT", "/api/v1/matters/SI-001", admin, json!({"matter": matter_spec("SI-001", "astrology")})),
        ("PUT", "/api/v1/matters/SI-001", admin, json!({"matter": matter_spec("SI-002", "social_insurance")})),
    ];
    for (method, path, token, body) in invalid {
        let r = app.call(method, path, token, Some(body.clone())).await;
        assert_problem(&format!("{method} {path} with {body}"), &r, 422, "invalid-field");
    }
    // A stale version and a taken phone are conflicts.
    let r = app
        .call("PUT", "/api/v1/matters/SI-001", admin, Some(json!({"matter": matter_spec("SI-001", "social_insurance"), "expected_version": 99})))
        .await;
    assert_problem("a stale expected_version", &r, 409, "version-mismatch");
    let r = app.call("POST", "/api/v1/residents", agent, Some(json!({"name": "冒名", "phone": "13800000002"}))).await;
    assert_problem("a phone that is already registered", &r, 409, "resident-exists");
    let r = app.call("POST", "/api/v1/staff", admin, Some(with(&staff, "username", json!("agent.li")))).await;
    assert_problem("a taken username", &r, 409, "username-taken");
    let r = app.call("POST", "/api/v1/grids", admin, Some(json!({"code": "XH-WX-001", "name": "重复"}))).await;
    assert_problem("a taken grid code", &r, 409, "grid-exists");
    let r = app.call("POST", "/api/v1/matters", admin, Some(matter_spec("SI-001", "social_insurance"))).await;
    assert_problem("a taken matter code", &r, 409, "matter-exists");
    assert_unchanged("unknown ids", &before, &c.snapshot().await);
}

async fn malformed_uuids_in_paths_are_refused_as_invalid_path(c: Ctx) {
    let before = c.snapshot().await;
    let id = uuid::Uuid::new_v4();
    let (admin, agent) = (Some(c.admin.as_str()), Some(c.agent.as_str()));
    let long = "a".repeat(5000);
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("GET", "/api/v1/staff/not-a-uuid".into(), admin),
        ("GET", "/api/v1/staff/123".into(), admin),
        ("GET", format!("/api/v1/staff/{id}x"), admin),
        ("GET", format!("/api/v1/staff/{}", &id.to_string()[..35]), admin),
        ("GET", "/api/v1/staff/%00".into(), admin),
        ("GET", "/api/v1/staff/%FF%FE".into(), admin),
        ("GET", format!("/api/v1/staff/{}", encode("😀")), admin),
        ("GET", format!("/api/v1/staff/{long}"), admin),
        ("GET", format!("/api/v1/residents/{}", encode(SQL)), agent),
        ("GET", "/api/v1/residents/null".into(), agent),
        ("DELETE", "/api/v1/devices/xyz".into(), admin),
        ("DELETE", "/api/v1/devices/me".into(), admin),
        ("GET", "/api/v1/devices/pairings/zzz".into(), None),
    ];
    for (method, path, token) in cases {
        let r = c.app.call(method, &path, token, None).await;
        assert_problem(&format!("{method} {}", &path[..path.len().min(80)]), &r, 400, "invalid-path");
    }
    // A matter code that is not even UTF-8.
    let r = c.app.call("GET", "/api/v1/matters/%FF", None, None).await;
    assert_problem("a matter code that is not UTF-8", &r, 400, "invalid-path");
    assert_unchanged("malformed paths", &before, &c.snapshot().await);
}

async fn bad_query_parameters_are_refused_as_invalid_query(c: Ctx) {
    let before = c.snapshot().await;
    let (admin, agent) = (Some(c.admin.as_str()), Some(c.agent.as_str()));
    let lists = [("/api/v1/staff", admin), ("/api/v1/residents", agent), ("/api/v1/devices", admin), ("/api/v1/audit", admin)];
    for (list, token) in lists {
        for q in [
            "limit=0",
            "limit=201",
            "limit=abc",
            "limit=-1",
            "limit=1.5",
            "limit=99999999999",
            "limit=",
            "limit=10&limit=20",
            "cursor=nope",
            "cursor=",
            "foo=bar",
            "limit=10&admin=true",
            "LIMIT=10",
        ] {
            let r = c.app.call("GET", &format!("{list}?{q}"), token, None).await;
            assert_problem(&format!("GET {list}?{q}"), &r, 400, "invalid-query");
        }
    }
    for q in [format!("class={}", "a".repeat(41)), "sort=name".into(), "class=a&class=b".into()] {
        let r = c.app.call("GET", &format!("/api/v1/matters?{q}"), None, None).await;
        assert_problem(&format!("GET /api/v1/matters?{}", &q[..q.len().min(40)]), &r, 400, "invalid-query");
    }
    // The good ones still work.
    let r = c.app.call("GET", "/api/v1/staff?limit=1", admin, None).await;
    assert_eq!((r.status, r.body["items"].as_array().map(Vec::len)), (200, Some(1)), "{}", r.body);
    assert!(r.body["next_cursor"].is_string());
    assert_unchanged("bad queries", &before, &c.snapshot().await);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problems_too() {
    let app = spawn_app().await;
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/api/v1"),
        ("GET", "/api/v1/nothing-here"),
        ("GET", "/api/v2/matters"),
        ("GET", "/api/v1/matters/SI-001/versions"),
        ("POST", "/api/v1/admin"),
        ("GET", "/API/V1/MATTERS"),
        ("GET", "/api/v1/../../etc/passwd"),
        ("GET", "/api/v1/%2e%2e/%2e%2e/etc/passwd"),
    ] {
        let r = app.call(method, path, None, None).await;
        assert_problem(&format!("{method} {path}"), &r, 404, "not-found");
    }
    for (method, path) in [
        ("DELETE", "/api/v1/matters"),
        ("PATCH", "/api/v1/matters/SI-001"),
        ("PUT", "/api/v1/staff"),
        ("POST", "/api/v1/me"),
        ("GET", "/api/v1/auth/staff/login"),
        ("GET", "/api/v1/auth/refresh"),
        ("GET", "/api/v1/devices/pairings/confirm"),
        ("GET", "/api/v1/residents/me"),
        ("DELETE", "/api/v1/audit"),
        ("DELETE", "/livez"),
        ("POST", "/openapi.json"),
    ] {
        let r = app.call(method, path, None, None).await;
        assert_problem(&format!("{method} {path}"), &r, 405, "method-not-allowed");
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

async fn forged_expired_and_garbage_tokens_are_refused_with_a_reason(c: Ctx) {
    let me = c.app.call("GET", "/api/v1/me", Some(&c.admin), None).await;
    assert_eq!(me.status, 200);
    let admin_id: uuid::Uuid = me.body["id"].as_str().unwrap().parse().unwrap();
    let resident = c.app.resident_login("13800000003").await;
    let refresh = resident["refresh_token"].as_str().unwrap().to_string();
    let resident_access = resident["access_token"].as_str().unwrap().to_string();
    let resident_id = resident["subject"].as_str().unwrap().to_string();
    let before = c.snapshot().await;

    // Signed with another secret; with no algorithm; with the claims edited after signing.
    let other = signaling::auth::tokens::Tokens::new(b"a-secret-this-server-never-had", 900).unwrap();
    let forged = other.issue(admin_id, Role::Admin, None, T0_MS);
    let now_s = T0_MS / 1000;
    let claims = json!({"sub": resident_id, "role": "admin", "iat": now_s, "exp": now_s + 900, "iss": "cloud-window", "jti": uuid::Uuid::new_v4()});
    let unsigned = format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(claims.to_string().as_bytes()));
    let parts: Vec<&str> = resident_access.split('.').collect();
    let edited = format!("{}.{}.{}", parts[0], b64url(claims.to_string().as_bytes()), parts[2]);
    let hs512 = format!("{}.{}.{}", b64url(br#"{"alg":"HS512","typ":"JWT"}"#), parts[1], parts[2]);
    // Correctly signed by this server, but expired an hour ago.
    let expired = c.app.state.tokens.issue(admin_id, Role::Admin, None, T0_MS - 3_600_000 - 900_000);

    let b = |s: &str| format!("Bearer {s}").into_bytes();
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("no header", None, "unauthenticated"),
        ("an empty header", Some(vec![]), "invalid-token"),
        ("the scheme alone", Some(b"Bearer".to_vec()), "invalid-token"),
        ("Basic credentials", Some(b"Basic YWRtaW46ZGVtby1wYXNzLTIwMjY=".to_vec()), "invalid-token"),
        ("another scheme", Some(format!("Token {}", c.admin).into_bytes()), "invalid-token"),
        ("the token without a scheme", Some(c.admin.clone().into_bytes()), "invalid-token"),
        ("garbage", Some(b("garbage")), "invalid-token"),
        ("three empty parts", Some(b("..")), "invalid-token"),
        ("three junk parts", Some(b("a.b.c")), "invalid-token"),
        ("a 5 KB token", Some(b(&"x".repeat(5000))), "invalid-token"),
        ("a valid token with a suffix", Some(b(&format!("{} extra", c.admin))), "invalid-token"),
        ("a valid token cut short", Some(b(&c.admin[..c.admin.len() - 2])), "invalid-token"),
        ("a token from another server", Some(b(&forged)), "invalid-token"),
        ("an unsigned token", Some(b(&unsigned)), "invalid-token"),
        ("a token with edited claims", Some(b(&edited)), "invalid-token"),
        ("a token with a swapped algorithm", Some(b(&hs512)), "invalid-token"),
        ("a refresh token", Some(b(&refresh)), "invalid-token"),
        ("non-UTF-8 bytes", Some(b"Bearer \xe4\xbd\xa0\xff".to_vec()), "invalid-token"),
        ("an expired token", Some(b(&expired)), "token-expired"),
    ];
    let new_staff = json!({"username": "intruder", "display_name": "x", "role": "admin", "password": "long-enough-pw"});
    for (what, header, code) in &cases {
        for (method, path, body) in [
            ("GET", "/api/v1/me", None),
            ("GET", "/api/v1/audit", None),
            ("POST", "/api/v1/staff", Some(new_staff.clone())),
            ("PATCH", "/api/v1/residents/me", Some(json!({"name": "改名"}))),
        ] {
            let r = c.with_authorization(method, path, header.as_deref(), body).await;
            assert_problem(&format!("{method} {path} with {what}"), &r, 401, code);
        }
    }

    // Garbage where refresh and device tokens go.
    for bad in ["", "garbage", SQL, &"r".repeat(10_240), &c.admin] {
        let r = c.app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": bad}))).await;
        assert_problem("a garbage refresh token", &r, 401, "invalid-refresh-token");
        let r = c.app.call("POST", "/api/v1/auth/device", None, Some(json!({"device_token": bad}))).await;
        assert_problem("a garbage device token", &r, 401, "invalid-device-token");
    }
    assert_unchanged("bad tokens", &before, &c.snapshot().await);
    // The real token still works.
    assert_eq!(c.app.call("GET", "/api/v1/me", Some(&resident_access), None).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

async fn sql_looking_strings_are_refused_or_stored_verbatim_and_every_table_survives(c: Ctx) {
    let app = &c.app;
    let (admin, agent, resident) = (Some(c.admin.as_str()), Some(c.agent.as_str()), Some(c.resident.as_str()));
    let before = c.snapshot().await;

    // Where the value is a code or an identifier, it is refused (and changes nothing).
    let r = app.call("POST", "/api/v1/auth/staff/login", None, Some(json!({"username": SQL, "password": SQL}))).await;
    assert_problem("a SQL username at sign-in", &r, 401, "invalid-credentials");
    let r = app
        .call("POST", "/api/v1/auth/staff/login", None, Some(json!({"username": "admin' OR '1'='1", "password": "' OR '1'='1"})))
        .await;
    assert_problem("a classic injection at sign-in", &r, 401, "invalid-credentials");
    let r = app.call("POST", "/api/v1/auth/otp/request", None, Some(json!({"phone": "13800000001' OR '1'='1"}))).await;
    assert_problem("a SQL phone", &r, 422, "invalid-field");
    let r = app.call("POST", "/api/v1/auth/otp/verify", None, Some(json!({"phone": "13800000001", "code": "' OR 1"}))).await;
    assert_problem("a SQL code", &r, 422, "invalid-field");
    let refused: Vec<(&str, &str, Option<&str>, Value)> = vec![
        ("POST", "/api/v1/staff", admin, json!({"username": SQL, "display_name": "x", "role": "agent", "password": "long-enough-pw"})),
        ("POST", "/api/v1/matters", admin, matter_spec(SQL, "social_insurance")),
        ("POST", "/api/v1/matters", admin, matter_spec("HX-001", "x'); DROP TABLE matters; --")),
        ("POST", "/api/v1/matter-classes", admin, json!({"code": "x'); DROP TABLE matter_classes; --", "name_zh": "x", "name_en": "x"})),
        ("POST", "/api/v1/grids", admin, json!({"code": SQL, "name": "x"})),
        ("POST", "/api/v1/residents", agent, json!({"name": "x", "phone": "139' OR 1=1 --"})),
        ("POST", "/api/v1/devices/pairings/confirm", admin, json!({"code": "' OR 1=1", "kind": "kiosk"})),
    ];
    for (method, path, token, body) in refused {
        let r = app.call(method, path, token, Some(body.clone())).await;
        assert_problem(&format!("{method} {path} with {body}"), &r, 422, "invalid-field");
    }
    let r = app.call("GET", &format!("/api/v1/matters/{}", encode(SQL)), None, None).await;
    assert_problem("a SQL matter code in the path", &r, 404, "not-found");
    let r = app.call("GET", &format!("/api/v1/matters?class={}", encode("' OR '1'='1")), None, None).await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])), "a SQL class filter matches nothing");
    assert_unchanged("refused SQL-looking values", &before, &c.snapshot().await);

    // Where the value is free text, it is stored exactly as sent and read back the same.
    let name = "Robert'); DROP TABLE residents; --";
    let r = app.call("POST", "/api/v1/residents", agent, Some(json!({"name": name, "phone": "13900002222"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rid = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(app.call("GET", &format!("/api/v1/residents/{rid}"), agent, None).await.body["name"], name);
    let display = SQL;
    let r = app
        .call("POST", "/api/v1/staff", admin, Some(json!({"username": "sql.test", "display_name": display, "role": "helper", "password": "long-enough-pw"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sid = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(app.call("GET", &format!("/api/v1/staff/{sid}"), admin, None).await.body["display_name"], display);
    let grid = "1' OR '1'='1";
    let r = app.call("POST", "/api/v1/grids", admin, Some(json!({"code": "XH-SQL-001", "name": grid}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let own = "张三'; DELETE FROM residents WHERE '1'='1";
    let r = app.call("PATCH", "/api/v1/residents/me", resident, Some(json!({"name": own}))).await;
    assert_eq!((r.status, r.body["name"].as_str()), (200, Some(own)), "{}", r.body);
    assert_eq!(app.call("GET", "/api/v1/me", resident, None).await.body["name"], own);
    let stored = c.strings("SELECT name FROM residents WHERE phone IN ('13900002222', '13800000001') ORDER BY phone DESC").await;
    assert_eq!(stored, [name, own], "stored byte for byte");

    // Every table is still there, with exactly the rows the accepted requests added.
    let after = c.snapshot().await;
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (table, added) in [("staff", 1), ("residents", 1), ("grids", 1)] {
        assert_eq!(after[table].len(), before[table].len() + added, "{table}");
    }
    for table in before.keys().filter(|t| !["staff", "residents", "grids", "audit_log"].contains(&t.as_str())) {
        assert_eq!(before[table], after[table], "{table} changed");
    }
    assert_eq!(c.strings("SELECT username FROM staff").await.len(), 7);
    let r = app.call("GET", "/api/v1/staff?limit=200", admin, None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 7);
}

async fn ten_kilobyte_names_control_characters_and_blank_names_are_refused(c: Ctx) {
    let app = &c.app;
    let (admin, agent, resident) = (Some(c.admin.as_str()), Some(c.agent.as_str()), Some(c.resident.as_str()));
    let before = c.snapshot().await;
    let ascii = "A".repeat(10 * 1024);
    let cjk = "名".repeat(10 * 1024 / 3);
    let mut bad_names: Vec<(&str, String)> = vec![("a 10 KB name", ascii.clone()), ("a 10 KB Chinese name", cjk.clone())];
    for (what, s) in [
        ("NUL", "张\u{0}三"),
        ("an escape sequence", "\u{1b}[2J王五"),
        ("a carriage return", "王\r五"),
        ("a tab", "王\t五"),
        ("a bell", "赵\u{7}"),
        ("DEL", "李\u{7f}"),
        ("a C1 control", "周\u{85}"),
        ("a terminal title escape", "\u{1b}]0;pwned\u{7}"),
        ("blanks", "   "),
        ("nothing", ""),
    ] {
        bad_names.push((what, s.to_string()));
    }
    for (what, name) in &bad_names {
        let staff = json!({"username": "new.agent", "display_name": name, "role": "agent", "password": "long-enough-pw"});
        let cases: Vec<(&str, &str, Option<&str>, Value)> = vec![
            ("POST", "/api/v1/residents", agent, json!({"name": name, "phone": "13900001111"})),
            ("PATCH", "/api/v1/residents/me", resident, json!({"name": name})),
            ("POST", "/api/v1/staff", admin, staff),
            ("POST", "/api/v1/grids", admin, json!({"code": "XH-WX-099", "name": name})),
            ("POST", "/api/v1/devices/pairings", None, json!({"kind": "kiosk", "label": name})),
            ("POST", "/api/v1/devices/pairings/confirm", admin, json!({"code": "ABCDEFGH", "kind": "kiosk", "label": name})),
            ("POST", "/api/v1/matter-classes", admin, json!({"code": "housing", "name_zh": name, "name_en": "Housing"})),
            ("POST", "/api/v1/matters", admin, with(&matter_spec("HX-001", "social_insurance"), "name_en", json!(name))),
        ];
        for (method, path, token, body) in cases {
            let r = app.call(method, path, token, Some(body)).await;
            assert_problem(&format!("{method} {path} with {what}"), &r, 422, "invalid-field");
        }
    }
    // Where a name is an identifier, the same input is a failed sign-in.
    for username in [ascii.as_str(), "ad\u{0}min", "admin\u{0}", "\u{1b}admin"] {
        let r = app
            .call("POST", "/api/v1/auth/staff/login", None, Some(json!({"username": username, "password": "demo-pass-2026"})))
            .await;
        assert_problem("an odd username at sign-in", &r, 401, "invalid-credentials");
    }
    let r = app.call("POST", "/api/v1/auth/otp/request", None, Some(json!({"phone": "1380000\u{0}0001"}))).await;
    assert_problem("a NUL in a phone", &r, 422, "invalid-field");
    assert_unchanged("long names and control characters", &before, &c.snapshot().await);

    // The limit is 200 characters, not bytes: 200 Chinese characters are a valid name.
    let r = app.call("POST", "/api/v1/residents", agent, Some(json!({"name": "名".repeat(201), "phone": "13900001111"}))).await;
    assert_problem("a 201-character name", &r, 422, "invalid-field");
    let r = app.call("POST", "/api/v1/residents", agent, Some(json!({"name": "名".repeat(200), "phone": "13900001111"}))).await;
    assert_eq!(r.status, 201, "a 200-character name: {}", r.body);
}

async fn invalid_phone_numbers_id_numbers_codes_and_dates_are_refused(c: Ctx) {
    let app = &c.app;
    let (agent, resident) = (Some(c.agent.as_str()), Some(c.resident.as_str()));
    let before = c.snapshot().await;
    let body17 = "32010219800101123";
    let good_id = format!("{body17}{}", check_digit(body17));
    let wrong_digit = if good_id.ends_with('0') { '1' } else { '0' };
    let bad_ids = [
        format!("{body17}{wrong_digit}"),
        body17.to_string(),
        format!("{good_id}0"),
        format!("A{}", &good_id[1..]),
        format!("{}X{}", &body17[..16], &good_id[17..]),
        "３３０１０６１９９２０５２０００４５".to_string(),
        String::new(),
    ];
    for id in &bad_ids {
        let r = app.call("POST", "/api/v1/residents", agent, Some(json!({"name": "王五", "phone": "13900001111", "id_number": id}))).await;
        assert_problem(&format!("ID number {id:?}"), &r, 422, "invalid-field");
        let r = app.call("PATCH", "/api/v1/residents/me", resident, Some(json!({"id_number": id}))).await;
        assert_problem(&format!("ID number {id:?} in a profile"), &r, 422, "invalid-field");
    }
    let bad_phones = [
        "", "12345", "23800000001", "1380000000a", "138000000011", "1380000000", "+1 202 555 0123", "１３８００００００１",
        "13800000001; --", "+8613800000001234",
    ];
    for phone in bad_phones {
        let r = app.call("POST", "/api/v1/residents", agent, Some(json!({"name": "王五", "phone": phone}))).await;
        assert_problem(&format!("phone {phone:?}"), &r, 422, "invalid-field");
        let r = app.call("POST", "/api/v1/auth/otp/request", None, Some(json!({"phone": phone}))).await;
        assert_problem(&format!("a code for phone {phone:?}"), &r, 422, "invalid-field");
        let r = app.call("POST", "/api/v1/auth/otp/verify", None, Some(json!({"phone": phone, "code": "123456"}))).await;
        assert_problem(&format!("verifying phone {phone:?}"), &r, 422, "invalid-field");
    }
    for code in ["", "12345", "1234567", "abcdef", "１２３４５６", " 123456", "12 345"] {
        let r = app.call("POST", "/api/v1/auth/otp/verify", None, Some(json!({"phone": "13800000002", "code": code}))).await;
        assert_problem(&format!("code {code:?}"), &r, 422, "invalid-field");
    }
    for date in ["1990-02-30", "2999-01-01", "1850-01-01", "19900101", "1990/01/01", "yesterday", "1990-1-1", ""] {
        let r = app
            .call("POST", "/api/v1/residents", agent, Some(json!({"name": "王五", "phone": "13900001111", "birth_date": date})))
            .await;
        assert_problem(&format!("birth date {date:?}"), &r, 422, "invalid-field");
        let r = app.call("PATCH", "/api/v1/residents/me", resident, Some(json!({"birth_date": date}))).await;
        assert_problem(&format!("birth date {date:?} in a profile"), &r, 422, "invalid-field");
    }
    // Codes and passwords that break the catalogue's or the account rules.
    let admin = Some(c.admin.as_str());
    let staff = json!({"username": "new.agent", "display_name": "新坐席", "role": "agent", "password": "long-enough-pw"});
    let cases: Vec<(&str, &str, Value)> = vec![
        ("/api/v1/staff", "a short password", with(&staff, "password", json!("short"))),
        ("/api/v1/staff", "a resident role", with(&staff, "role", json!("resident"))),
        ("/api/v1/staff", "a device role", with(&staff, "role", json!("device"))),
        ("/api/v1/staff", "a username with a space", with(&staff, "username", json!("new agent"))),
        ("/api/v1/staff", "a two-letter username", with(&staff, "username", json!("ab"))),
        ("/api/v1/grids", "a lowercase grid code", json!({"code": "xh-wx-099", "name": "x"})),
        ("/api/v1/matter-classes", "an uppercase class code", json!({"code": "Housing", "name_zh": "x", "name_en": "x"})),
        ("/api/v1/matters", "a lowercase matter code", matter_spec("hx-001", "social_insurance")),
        ("/api/v1/matters", "a zero retention", with(&matter_spec("HX-001", "social_insurance"), "retention_days", json!(0))),
        ("/api/v1/devices/pairings/confirm", "a pairing code with look-alikes", json!({"code": "O0I1L000", "kind": "kiosk"})),
    ];
    for (path, what, body) in cases {
        let r = app.call("POST", path, admin, Some(body)).await;
        assert_problem(&format!("POST {path} with {what}"), &r, 422, "invalid-field");
    }
    assert_unchanged("invalid values", &before, &c.snapshot().await);
    // The valid ID number is accepted, masked on the way out.
    let r = app
        .call("POST", "/api/v1/residents", agent, Some(json!({"name": "王五", "phone": "+86 139-0000-1111", "id_number": good_id})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["phone_masked"], "139****1111");
    assert_eq!(r.body["id_number_masked"], format!("320102********{}", &good_id[14..]));
}

/// PostgreSQL refuses NUL bytes in text, so a NUL that reaches a query is a 500 there and a
/// silent miss on SQLite; it must be bad input on both.
async fn nul_bytes_that_postgresql_cannot_store_are_bad_input(c: Ctx) {
    let r = c.app.call("GET", "/api/v1/matters?class=senior%00", None, None).await;
    assert_problem("a NUL in a class filter", &r, 400, "invalid-query");
    let r = c.app.call("GET", "/api/v1/matters/SI%00", None, None).await;
    assert_problem("a NUL in a matter code", &r, 404, "not-found");
}

/// Valid JSON of the wrong shape is `invalid-body`, never `malformed-json` nor accepted: a
/// wrong-typed enum value (`"kind": 5`) is one (serde_json alone calls it a syntax error; the
/// `Body` extractor parses the JSON first to tell the two apart), and so is a struct sent as a
/// JSON array (serde would accept `["admin", "<password>"]` as a sign-in).
#[tokio::test]
async fn valid_json_of_the_wrong_shape_is_invalid_body_never_malformed_json_or_accepted() {
    let app = spawn_app().await;
    for body in [json!({"kind": 5, "label": "x"}), json!({"kind": ["kiosk"], "label": "x"}), json!({"kind": {}, "label": "x"})] {
        let r = app.call("POST", "/api/v1/devices/pairings", None, Some(body.clone())).await;
        assert_problem(&format!("pairing with {body}"), &r, 422, "invalid-body");
    }
    let r = app.call("POST", "/api/v1/auth/staff/login", None, Some(json!(["admin", "demo-pass-2026"]))).await;
    assert_problem("a sign-in sent as an array", &r, 422, "invalid-body");
}
