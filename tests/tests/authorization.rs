//! Every endpoint checks role and ownership, and `/openapi.json` describes every endpoint
//! (issue 2, "Identity" and "Done when").
//!
//! [`OPERATIONS`] is written down from the routes in `signaling/src/api/mod.rs`; [`PUBLIC`] are
//! the ones that need no token; [`rules`] says which roles may call each of the others. A route
//! added without documentation, a documented route that is gone, or a new endpoint without a
//! rule fails a test here.

use std::collections::{BTreeMap, BTreeSet};

use integration_tests::{spawn_app, Reply, TestApp};
use serde_json::{json, Value};

/// Every operation of the API, as `METHOD path` (the path as documented).
const OPERATIONS: &[&str] = &[
    "POST /api/v1/auth/staff/login",
    "POST /api/v1/auth/otp/request",
    "POST /api/v1/auth/otp/verify",
    "POST /api/v1/auth/refresh",
    "POST /api/v1/auth/logout",
    "POST /api/v1/auth/device",
    "GET /api/v1/me",
    "POST /api/v1/devices/pairings",
    "GET /api/v1/devices/pairings/{id}",
    "POST /api/v1/devices/pairings/confirm",
    "POST /api/v1/devices/me/token",
    "GET /api/v1/devices",
    "DELETE /api/v1/devices/{id}",
    "GET /api/v1/matter-classes",
    "POST /api/v1/matter-classes",
    "GET /api/v1/matters",
    "POST /api/v1/matters",
    "GET /api/v1/matters/{code}",
    "PUT /api/v1/matters/{code}",
    "POST /api/v1/staff",
    "GET /api/v1/staff",
    "GET /api/v1/staff/{id}",
    "POST /api/v1/residents",
    "GET /api/v1/residents",
    "GET /api/v1/residents/{id}",
    "PATCH /api/v1/residents/me",
    "GET /api/v1/grids",
    "POST /api/v1/grids",
    "GET /api/v1/audit",
    "POST /api/v1/calls",
    "GET /api/v1/calls/{id}",
    "POST /api/v1/calls/{id}/members",
    "POST /api/v1/calls/{id}/end",
    "GET /api/v1/calls/{id}/events",
    "POST /api/v1/queue/tickets",
    "GET /api/v1/queue/tickets",
    "GET /api/v1/queue/tickets/{id}",
    "POST /api/v1/queue/tickets/{id}/cancel",
    "POST /api/v1/queue/tickets/{id}/callback",
    "GET /api/v1/queue/tickets/{id}/events",
    "GET /api/v1/queue/slots",
    "POST /api/v1/queue/appointments",
    "GET /api/v1/queue/figures",
    "GET /api/v1/queue/agents",
    "POST /api/v1/cases",
    "GET /api/v1/cases",
    "GET /api/v1/cases/{id}",
    "POST /api/v1/cases/{id}/calls",
    "PUT /api/v1/cases/{id}/answers",
    "POST /api/v1/cases/{id}/submit",
    "POST /api/v1/cases/{id}/review",
    "GET /api/v1/stats/return-rates",
    "POST /api/v1/cases/{id}/documents",
    "PUT /api/v1/cases/{id}/documents/{doc}/content",
    "HEAD /api/v1/cases/{id}/documents/{doc}/content",
    "GET /api/v1/cases/{id}/documents/{doc}/content",
    "GET /api/v1/cases/{id}/documents/{doc}",
    "POST /api/v1/cases/{id}/documents/{doc}/finish",
    "GET /api/v1/cases/{id}/documents/{doc}/thumbnail",
    "POST /api/v1/ratings",
    "GET /api/v1/ratings",
    "GET /api/v1/follow-ups",
    "POST /api/v1/follow-ups/{id}/close",
    "GET /api/v1/recordings/public-key",
    "GET /api/v1/recordings",
    "GET /api/v1/recordings/{id}",
    "GET /api/v1/recordings/{id}/participants/{participant}/media",
    "GET /api/v1/recordings/{id}/participants/{participant}/download",
    "GET /api/v1/recordings/{id}/verify",
    "GET /api/v1/recording-chain/verify",
    "PUT /api/v1/recordings/{id}/legal-hold",
    "DELETE /api/v1/recordings/{id}/legal-hold",
    "GET /ws",
    "GET /livez",
    "GET /readyz",
    "GET /openapi.json",
];

/// Routes the server serves that are not API operations and so are not in the document on
/// purpose: the agent console's and the browser SDK's static files (docs/api.md). Each is
/// requested below, so one that stops being served fails a test too.
const NOT_IN_THE_DOCUMENT: &[&str] = &["GET /console", "GET /console/", "GET /console/{*path}", "GET /sdk/js/{*path}"];

/// Operations anyone may call without signing in.
const PUBLIC: &[&str] = &[
    "POST /api/v1/auth/staff/login",
    "POST /api/v1/auth/otp/request",
    "POST /api/v1/auth/otp/verify",
    "POST /api/v1/auth/refresh",
    "POST /api/v1/auth/device",
    "POST /api/v1/devices/pairings",
    "GET /api/v1/devices/pairings/{id}",
    "GET /api/v1/matter-classes",
    "GET /api/v1/matters",
    "GET /api/v1/matters/{code}",
    "GET /api/v1/recordings/public-key",
    // The WebSocket authenticates with its first message, `hello` (docs/protocol.md).
    "GET /ws",
    "GET /livez",
    "GET /readyz",
    "GET /openapi.json",
];

/// Operations among [`OPERATIONS`] that change something but read no body.
const NO_BODY: &[&str] = &[
    "POST /api/v1/auth/logout",
    "POST /api/v1/devices/me/token",
    "POST /api/v1/calls/{id}/end",
    "POST /api/v1/queue/tickets/{id}/cancel",
    "POST /api/v1/queue/tickets/{id}/callback",
    "POST /api/v1/cases/{id}/submit",
    "PUT /api/v1/cases/{id}/documents/{doc}/content",
];

/// Operations on one case, document, ticket or follow-up, whose role and ownership rules are
/// tested in their own suites (tests/tests/cases.rs, tests/tests/queue.rs,
/// signaling/tests/recordings.rs), where the objects
/// they need are made; the matrix below covers the rest.
const COVERED_BY_FEATURE_SUITES: &[&str] = &[
    "POST /api/v1/queue/tickets",
    "GET /api/v1/queue/tickets/{id}",
    "POST /api/v1/queue/tickets/{id}/cancel",
    "POST /api/v1/queue/tickets/{id}/callback",
    "GET /api/v1/queue/tickets/{id}/events",
    "GET /api/v1/queue/slots",
    "POST /api/v1/queue/appointments",
    "POST /api/v1/cases",
    "GET /api/v1/cases/{id}",
    "POST /api/v1/cases/{id}/calls",
    "PUT /api/v1/cases/{id}/answers",
    "POST /api/v1/cases/{id}/submit",
    "POST /api/v1/cases/{id}/review",
    "POST /api/v1/cases/{id}/documents",
    "PUT /api/v1/cases/{id}/documents/{doc}/content",
    "HEAD /api/v1/cases/{id}/documents/{doc}/content",
    "GET /api/v1/cases/{id}/documents/{doc}/content",
    "GET /api/v1/cases/{id}/documents/{doc}",
    "POST /api/v1/cases/{id}/documents/{doc}/finish",
    "GET /api/v1/cases/{id}/documents/{doc}/thumbnail",
    "POST /api/v1/ratings",
    "POST /api/v1/follow-ups/{id}/close",
    "GET /api/v1/recordings",
    "GET /api/v1/recordings/{id}",
    "GET /api/v1/recordings/{id}/participants/{participant}/media",
    "GET /api/v1/recordings/{id}/participants/{participant}/download",
    "GET /api/v1/recordings/{id}/verify",
    "GET /api/v1/recording-chain/verify",
    "PUT /api/v1/recordings/{id}/legal-hold",
    "DELETE /api/v1/recordings/{id}/legal-hold",
];

/// Every role a token can carry.
const ROLES: &[&str] = &["resident", "device", "helper", "agent", "supervisor", "auditor", "admin"];
/// Every role (for rules that allow anyone signed in).
const ALL: &[&str] = ROLES;
/// The staff roles.
const STAFF: &[&str] = &["helper", "agent", "supervisor", "auditor", "admin"];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// The secret this test gives a demo device in place of the one printed at start.
const DEVICE_SECRET: &str = "device-token-known-to-the-authorization-tests";

/// Asserts `r` is a problem response with this status and code.
fn assert_problem(what: &str, r: &Reply, status: u16, code: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{what}: got {} {}", r.status, r.body);
    assert!(r.content_type.starts_with("application/problem+json"), "{what}: {:?}", r.content_type);
    let kind = r.body["type"].as_str().unwrap_or_default();
    assert!(kind.ends_with(&format!(":{code}")), "{what}: type {kind:?}");
}

/// Asserts the caller got past the role check: neither 401 nor 403, nor a server error.
fn assert_let_through(what: &str, r: &Reply) {
    assert!(![401, 403].contains(&r.status) && r.status < 500, "{what}: got {} {}", r.status, r.body);
}

/// A signed-in caller for every role, and who they are.
struct Callers {
    tokens: BTreeMap<&'static str, String>,
    ids: BTreeMap<&'static str, String>,
}

impl Callers {
    async fn sign_in(app: &TestApp) -> Callers {
        let mut tokens = BTreeMap::new();
        for (role, username) in
            [("helper", "helper.zhao"), ("agent", "agent.li"), ("supervisor", "supervisor"), ("auditor", "auditor"), ("admin", "admin")]
        {
            tokens.insert(role, app.staff_token(username).await);
        }
        tokens.insert("resident", app.resident_token("13800000001").await);
        // A demo device, signed in the way a paired device does, with a token we set for it.
        let device = app.state.store.list_devices(None, 1).await.unwrap().remove(0);
        app.state.store.set_device_token(device.id, &app.state.hasher.hash("device", DEVICE_SECRET)).await.unwrap();
        let r = app.call("POST", "/api/v1/auth/device", None, Some(json!({"device_token": DEVICE_SECRET}))).await;
        assert_eq!((r.status, r.body["role"].as_str()), (200, Some("device")), "{}", r.body);
        tokens.insert("device", r.body["access_token"].as_str().unwrap().to_string());
        let mut ids = BTreeMap::new();
        for (role, token) in &tokens {
            let me = app.call("GET", "/api/v1/me", Some(token), None).await;
            assert_eq!(me.status, 200, "{role}: {}", me.body);
            ids.insert(*role, me.body["id"].as_str().unwrap().to_string());
        }
        Callers { tokens, ids }
    }

    fn token(&self, role: &str) -> &str {
        &self.tokens[role]
    }
}

/// The id of a demo resident other than the one signed in, and of a staff member who is none
/// of the callers.
async fn others(app: &TestApp, c: &Callers) -> (String, String) {
    let r = app.call("GET", "/api/v1/residents?limit=200", Some(c.token("admin")), None).await;
    let other_resident = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["phone_masked"] == "138****0002")
        .expect("demo resident 13800000002")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.call("GET", "/api/v1/staff?limit=200", Some(c.token("admin")), None).await;
    let other_staff = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["username"] == "agent.wang")
        .expect("demo staff agent.wang")["id"]
        .as_str()
        .unwrap()
        .to_string();
    (other_resident, other_staff)
}

/// Opens a call as the agent with a resident (and a device); returns its id.
async fn open_call(app: &TestApp, c: &Callers, resident: &str, device: Option<&str>) -> String {
    let body = json!({"resident_id": resident, "device_id": device, "matter_code": "SI-001"});
    let r = app.call("POST", "/api/v1/calls", Some(c.token("agent")), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

fn matter_spec(code: &str) -> Value {
    json!({
        "code": code, "class": "social_insurance", "name_zh": "测试事项", "name_en": "Test matter",
        "checklist": [{"key": "id_card", "name_zh": "身份证", "name_en": "ID card", "requirement": {"kind": "required"}}]
    })
}

/// Who may call an operation, and a request to it that is well-formed, so that only the role
/// decides between "forbidden" and getting through.
struct Rule {
    op: &'static str,
    path: String,
    body: Option<Value>,
    allowed: &'static [&'static str],
}

/// The ids the rules need: a resident and a staff member who are none of the callers, a call
/// the agent opened with the signed-in resident and device, and the helper to invite to it.
struct Ids {
    other_resident: String,
    other_staff: String,
    call: String,
    helper: String,
}

/// The role rule of every operation that needs a token. Order matters where a request changes
/// who may do what: the helper becomes a call member when invited, the call ends, and logout
/// (last) ends sessions.
fn rules(ids: &Ids) -> Vec<Rule> {
    let Ids { other_resident, other_staff, call, helper } = ids;
    let nobody = uuid::Uuid::new_v4();
    let r = |op: &'static str, path: String, body: Option<Value>, allowed| Rule { op, path, body, allowed };
    vec![
        r("GET /api/v1/me", "/api/v1/me".into(), None, ALL),
        r(
            "POST /api/v1/devices/pairings/confirm",
            "/api/v1/devices/pairings/confirm".into(),
            Some(json!({"code": "ABCDEFGH", "kind": "kiosk"})),
            &["admin"],
        ),
        r("POST /api/v1/devices/me/token", "/api/v1/devices/me/token".into(), None, &["device"]),
        r("GET /api/v1/devices", "/api/v1/devices".into(), None, &["admin"]),
        r("DELETE /api/v1/devices/{id}", format!("/api/v1/devices/{nobody}"), None, &["admin"]),
        r(
            "POST /api/v1/matter-classes",
            "/api/v1/matter-classes".into(),
            Some(json!({"code": "housing", "name_zh": "住房", "name_en": "Housing"})),
            &["admin"],
        ),
        r("POST /api/v1/matters", "/api/v1/matters".into(), Some(matter_spec("HX-001")), &["admin"]),
        r("PUT /api/v1/matters/{code}", "/api/v1/matters/SI-001".into(), Some(json!({"matter": matter_spec("SI-001")})), &["admin"]),
        r(
            "POST /api/v1/staff",
            "/api/v1/staff".into(),
            Some(json!({"username": "matrix.agent", "display_name": "新坐席", "role": "agent", "password": "long-enough-pw"})),
            &["admin"],
        ),
        r("GET /api/v1/staff", "/api/v1/staff".into(), None, &["supervisor", "admin"]),
        r("GET /api/v1/staff/{id}", format!("/api/v1/staff/{other_staff}"), None, &["supervisor", "admin"]),
        r(
            "POST /api/v1/residents",
            "/api/v1/residents".into(),
            Some(json!({"name": "王五", "phone": "13900003333"})),
            &["agent", "admin"],
        ),
        r("GET /api/v1/residents", "/api/v1/residents".into(), None, &["agent", "supervisor", "admin"]),
        r("GET /api/v1/residents/{id}", format!("/api/v1/residents/{other_resident}"), None, &["agent", "supervisor", "admin"]),
        r("PATCH /api/v1/residents/me", "/api/v1/residents/me".into(), Some(json!({"name": "张桂英"})), &["resident"]),
        r("GET /api/v1/grids", "/api/v1/grids".into(), None, STAFF),
        r("POST /api/v1/grids", "/api/v1/grids".into(), Some(json!({"code": "XH-AUTH-001", "name": "第1网格"})), &["admin"]),
        r("GET /api/v1/audit", "/api/v1/audit".into(), None, &["auditor", "admin"]),
        r("POST /api/v1/calls", "/api/v1/calls".into(), Some(json!({"resident_id": other_resident})), &["agent"]),
        // A call is read by its members (agent, resident, device), supervisors and auditors.
        r("GET /api/v1/calls/{id}", format!("/api/v1/calls/{call}"), None, &["resident", "device", "agent", "supervisor", "auditor"]),
        r("GET /api/v1/calls/{id}/events", format!("/api/v1/calls/{call}/events"), None, &["agent", "supervisor", "auditor"]),
        r(
            "POST /api/v1/calls/{id}/members",
            format!("/api/v1/calls/{call}/members"),
            Some(json!({"staff_id": helper, "role": "helper"})),
            &["agent", "supervisor"],
        ),
        r("POST /api/v1/calls/{id}/end", format!("/api/v1/calls/{call}/end"), None, &["agent", "supervisor"]),
        r("GET /api/v1/queue/tickets", "/api/v1/queue/tickets".into(), None, &["resident", "device", "helper"]),
        r("GET /api/v1/queue/figures", "/api/v1/queue/figures".into(), None, &["supervisor", "admin"]),
        r("GET /api/v1/queue/agents", "/api/v1/queue/agents".into(), None, &["supervisor", "admin"]),
        r("GET /api/v1/cases", "/api/v1/cases".into(), None, &["resident", "agent", "supervisor"]),
        r("GET /api/v1/stats/return-rates", "/api/v1/stats/return-rates".into(), None, &["supervisor"]),
        r("GET /api/v1/ratings", "/api/v1/ratings".into(), None, &["resident", "supervisor"]),
        r("GET /api/v1/follow-ups", "/api/v1/follow-ups".into(), None, &["supervisor"]),
        r("POST /api/v1/auth/logout", "/api/v1/auth/logout".into(), None, ALL),
    ]
}

/// The `METHOD path` of every operation in an OpenAPI document, with the operation.
fn operations(doc: &Value) -> BTreeMap<String, Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                ops.insert(format!("{} {path}", method.to_uppercase()), op.clone());
            }
        }
    }
    ops
}

/// A concrete path for a documented one: `{code}` a real matter, any other parameter a fresh
/// UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{code}" => "SI-001".to_string(),
            s if s.starts_with('{') => uuid::Uuid::new_v4().to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_of_the_api() {
    let app = spawn_app().await;
    let r = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("application/json"), "{}", r.content_type);
    assert!(r.body["openapi"].as_str().unwrap_or_default().starts_with("3."), "an OpenAPI 3 document");
    let documented: BTreeSet<String> = operations(&r.body).into_keys().collect();
    let expected: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(OPERATIONS.len(), expected.len(), "OPERATIONS lists an operation twice");
    let undocumented: Vec<_> = expected.difference(&documented).collect();
    let unexpected: Vec<_> = documented.difference(&expected).collect();
    assert!(
        undocumented.is_empty() && unexpected.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}; documented but not expected: {unexpected:?}"
    );
    // The document is the one the code generates, not a copy that can drift.
    assert_eq!(r.body, serde_json::to_value(signaling::api::openapi()).unwrap());
}

/// The body the server's fallback gives a route it does not have.
const NO_SUCH_ENDPOINT: &str = "no such endpoint";

#[tokio::test]
async fn the_document_and_the_routes_really_served_agree() {
    let app = spawn_app().await;
    let doc = app.call("GET", "/openapi.json", None, None).await.body;
    let ops = operations(&doc);
    let mut problems = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = concrete(path);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let documented = ops.contains_key(&format!("{method} {path}"));
            let body = ["POST", "PUT", "PATCH"].contains(&method).then(|| json!({}));
            let r = app.call(method, &concrete, None, body).await;
            let missing = r.status == 404 && r.body["detail"] == NO_SUCH_ENDPOINT;
            if documented && (missing || r.status == 405) {
                // Every documented operation is routed (whatever it then says about the request).
                problems.push(format!("{method} {path} is documented but not served: {} {}", r.status, r.body));
            } else if !documented && r.status != 405 {
                // And a documented path serves no method the document leaves out.
                problems.push(format!("{method} {path} is served but not documented: {} {}", r.status, r.body));
            }
        }
        assert!(item.as_object().is_some_and(|m| !m.is_empty()), "{path}");
    }
    // The static files are served but deliberately left out of the document.
    for route in NOT_IN_THE_DOCUMENT {
        let path = route.split_once(' ').unwrap().1;
        assert!(doc["paths"].get(path).is_none(), "{path} is documented");
        let probe = path.replace("{*path}", "index.html").replace("/sdk/js/index.html", "/sdk/js/cloud-window.js");
        let r = app.http.get(format!("{}{probe}", app.base)).send().await.unwrap();
        assert!(r.status().is_success() || r.status().is_redirection(), "{probe}: {}", r.status());
    }
    // An unknown route answers the fallback this test relies on.
    let r = app.call("GET", "/api/v1/no-such-thing", None, None).await;
    assert_eq!((r.status, r.body["detail"].as_str()), (404, Some(NO_SUCH_ENDPOINT)));
    assert!(problems.is_empty(), "the document and the router disagree:\n{}", problems.join("\n"));
}

#[tokio::test]
async fn every_documented_operation_has_responses_parameters_and_security() {
    let app = spawn_app().await;
    let doc = app.call("GET", "/openapi.json", None, None).await.body;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "a bearer scheme is declared: {schemes}");
    let mut problems = Vec::new();
    for (name, op) in operations(&doc) {
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        // (The WebSocket's success is the switch to its protocol, 101.)
        if !responses.keys().any(|s| s.starts_with('2') || (name == "GET /ws" && s == "101")) {
            problems.push(format!("{name}: no success response documented"));
        }
        for (status, response) in &responses {
            if !response["description"].is_string() {
                problems.push(format!("{name} {status}: a response without a description"));
            }
        }
        // Path parameters are declared as such, and nothing else is.
        let path = name.split_once(' ').unwrap().1;
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        let in_path: BTreeSet<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        if declared != in_path {
            problems.push(format!("{name}: parameters declared in the path {declared:?}, the path has {in_path:?}"));
        }
        // Exactly the operations that need a token say so.
        let secured = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        if secured == PUBLIC.contains(&name.as_str()) {
            problems.push(format!("{name}: security requirement is {secured}, public is {}", !secured));
        }
        // A JSON body is documented where the handler reads one.
        let reads_json = OPERATIONS.contains(&name.as_str())
            && ["POST", "PUT", "PATCH"].iter().any(|m| name.starts_with(m))
            && !NO_BODY.contains(&name.as_str());
        if reads_json && !op["requestBody"]["content"]["application/json"].is_object() {
            problems.push(format!("{name}: no JSON request body documented"));
        }
    }
    assert!(problems.is_empty(), "the document is incomplete:\n{}", problems.join("\n"));
    // Every schema a reference names exists.
    let mut refs = BTreeSet::new();
    fn collect(v: &Value, refs: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    refs.insert(r.clone());
                }
                m.values().for_each(|v| collect(v, refs));
            }
            Value::Array(a) => a.iter().for_each(|v| collect(v, refs)),
            _ => {}
        }
    }
    collect(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(doc["components"]["schemas"][name].is_object(), "{r} is referenced but not defined");
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens and roles
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_endpoint_but_the_public_ones_refuses_a_caller_without_a_token() {
    let app = spawn_app().await;
    let doc = app.call("GET", "/openapi.json", None, None).await.body;
    // Every documented operation, so that a new one is checked before anyone writes a rule for it.
    let ops = operations(&doc);
    assert!(ops.len() >= OPERATIONS.len());
    let mut problems = Vec::new();
    for name in ops.keys() {
        let (method, path) = name.split_once(' ').unwrap();
        let path = concrete(path);
        let body = ["POST", "PUT", "PATCH"].contains(&method).then(|| json!({}));
        let r = app.call(method, &path, None, body.clone()).await;
        if PUBLIC.contains(&name.as_str()) {
            if ["unauthenticated", "invalid-token", "forbidden"].contains(&r.code()) || r.status >= 500 {
                problems.push(format!("{name} is public but answered {} {}", r.status, r.body));
            }
            continue;
        }
        // HEAD answers carry no body: the status is all there is to check.
        let expect = |r: &Reply, code: &str| {
            let ok = r.status == 401 && (method == "HEAD" || (r.code() == code && r.content_type.starts_with("application/problem+json")));
            (!ok).then(|| format!("{name}: expected 401 {code}, got {} {}", r.status, r.body))
        };
        problems.extend(expect(&r, "unauthenticated"));
        let r = app.call(method, &path, Some("not-a-token"), body).await;
        problems.extend(expect(&r, "invalid-token"));
    }
    assert!(problems.is_empty(), "endpoints that do not refuse anonymous callers:\n{}", problems.join("\n"));
    // Health and the document itself answer without a token.
    for path in ["/livez", "/readyz", "/openapi.json"] {
        assert_eq!(app.call("GET", path, None, None).await.status, 200, "{path}");
    }
    // Public reads answer the same with or without a token.
    let anonymous = app.call("GET", "/api/v1/matters/SI-001", None, None).await;
    assert_eq!(anonymous.status, 200);
    let resident = app.resident_token("13800000002").await;
    assert_eq!(app.call("GET", "/api/v1/matters/SI-001", Some(&resident), None).await.body, anonymous.body);
}

#[tokio::test]
async fn each_role_may_call_only_what_its_role_allows() {
    let app = spawn_app().await;
    let c = Callers::sign_in(&app).await;
    let (other_resident, other_staff) = others(&app, &c).await;
    let call = open_call(&app, &c, &c.ids["resident"], Some(&c.ids["device"])).await;
    let rules = rules(&Ids { other_resident, other_staff, call, helper: c.ids["helper"].clone() });
    // The rules and the public list together cover the API, each operation once.
    let mut covered: Vec<&str> = rules.iter().map(|r| r.op).chain(PUBLIC.iter().copied()).chain(COVERED_BY_FEATURE_SUITES.iter().copied()).collect();
    covered.sort();
    let mut all = OPERATIONS.to_vec();
    all.sort();
    assert_eq!(covered, all, "every operation has a role rule or is public");

    let mut refused = 0;
    for rule in &rules {
        let (method, _) = rule.op.split_once(' ').unwrap();
        for role in ROLES {
            let r = app.call(method, &rule.path, Some(c.token(role)), rule.body.clone()).await;
            let what = format!("{} as {role}", rule.op);
            if rule.allowed.contains(role) {
                assert_let_through(&what, &r);
            } else {
                // Helpers are refused case work with a code of its own until delegations exist.
                let code = if *role == "helper" && rule.op.starts_with("GET /api/v1/cases") { "delegation-required" } else { "forbidden" };
                assert_problem(&what, &r, 403, code);
                refused += 1;
            }
        }
    }
    assert!(refused > 60, "the matrix refuses something for most roles ({refused})");
    // The public operations are open to every role as well.
    for role in ROLES {
        for (method, path) in [("GET", "/api/v1/matters"), ("GET", "/api/v1/matter-classes"), ("GET", "/api/v1/matters/SI-001")] {
            let r = app.call(method, path, Some(c.token(role)), None).await;
            assert_eq!(r.status, 200, "{method} {path} as {role}: {}", r.body);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The named cases
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_resident_reads_their_own_record_but_not_another_residents() {
    let app = spawn_app().await;
    let c = Callers::sign_in(&app).await;
    let (other, _) = others(&app, &c).await;
    let me = &c.ids["resident"];
    let resident = Some(c.token("resident"));

    let r = app.call("GET", &format!("/api/v1/residents/{me}"), resident, None).await;
    assert_eq!((r.status, r.body["phone_masked"].as_str()), (200, Some("138****0001")), "{}", r.body);
    let r = app.call("GET", &format!("/api/v1/residents/{other}"), resident, None).await;
    assert_problem("another resident's record", &r, 403, "forbidden");
    assert!(!r.body.to_string().contains("刘建国"), "a refusal shows nothing of the other resident");
    // Not found and forbidden look the same to a resident: ids cannot be probed.
    let r = app.call("GET", &format!("/api/v1/residents/{}", uuid::Uuid::new_v4()), resident, None).await;
    assert_problem("an unknown resident", &r, 403, "forbidden");
    assert_problem("the list of residents", &app.call("GET", "/api/v1/residents", resident, None).await, 403, "forbidden");
    let r = app.call("GET", &format!("/api/v1/staff/{}", c.ids["agent"]), resident, None).await;
    assert_problem("a staff record", &r, 403, "forbidden");

    // Nor a call about another resident, while their own call is theirs to read.
    let theirs = open_call(&app, &c, &other, None).await;
    let r = app.call("GET", &format!("/api/v1/calls/{theirs}"), resident, None).await;
    assert_problem("another resident's call", &r, 403, "forbidden");
    let mine = open_call(&app, &c, me, None).await;
    assert_eq!(app.call("GET", &format!("/api/v1/calls/{mine}"), resident, None).await.status, 200);
    let r = app.call("GET", &format!("/api/v1/calls/{mine}/events"), resident, None).await;
    assert_problem("the events of one's own call", &r, 403, "forbidden");

    // Changing "my" profile changes only mine.
    let r = app.call("PATCH", "/api/v1/residents/me", resident, Some(json!({"name": "张桂英（改）"}))).await;
    assert_eq!((r.status, r.body["id"].as_str()), (200, Some(me.as_str())), "{}", r.body);
    let r = app.call("GET", &format!("/api/v1/residents/{other}"), Some(c.token("admin")), None).await;
    assert_eq!(r.body["name"], "刘建国");
    // A device is not a resident and reads no resident either.
    let r = app.call("GET", &format!("/api/v1/residents/{me}"), Some(c.token("device")), None).await;
    assert_problem("a device reading a resident", &r, 403, "forbidden");
    assert_problem("a device editing a profile", &app.call("PATCH", "/api/v1/residents/me", Some(c.token("device")), Some(json!({"name": "x"}))).await, 403, "forbidden");
}

#[tokio::test]
async fn a_helper_cannot_act_as_an_agent() {
    let app = spawn_app().await;
    let c = Callers::sign_in(&app).await;
    let (other, _) = others(&app, &c).await;
    let helper = Some(c.token("helper"));
    let before = app.call("GET", "/api/v1/residents?limit=200", Some(c.token("admin")), None).await.body;

    let r = app.call("POST", "/api/v1/residents", helper, Some(json!({"name": "王五", "phone": "13900004444"}))).await;
    assert_problem("a helper registering a resident", &r, 403, "forbidden");
    assert_problem("a helper listing residents", &app.call("GET", "/api/v1/residents", helper, None).await, 403, "forbidden");
    let r = app.call("GET", &format!("/api/v1/residents/{other}"), helper, None).await;
    assert_problem("a helper reading a resident", &r, 403, "forbidden");
    let r = app.call("POST", "/api/v1/calls", helper, Some(json!({"resident_id": other}))).await;
    assert_problem("a helper opening a call", &r, 403, "forbidden");
    // The same requests as an agent work.
    let agent = Some(c.token("agent"));
    assert_eq!(app.call("GET", &format!("/api/v1/residents/{other}"), agent, None).await.status, 200);
    let r = app.call("POST", "/api/v1/residents", agent, Some(json!({"name": "王五", "phone": "13900004444"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let after = app.call("GET", "/api/v1/residents?limit=200", Some(c.token("admin")), None).await.body;
    assert_eq!(after["items"].as_array().unwrap().len(), before["items"].as_array().unwrap().len() + 1, "only the agent's was stored");
    // A helper sees their own staff record, not a colleague's.
    let own = app.call("GET", &format!("/api/v1/staff/{}", c.ids["helper"]), helper, None).await;
    assert_eq!((own.status, own.body["role"].as_str()), (200, Some("helper")), "{}", own.body);
    let r = app.call("GET", &format!("/api/v1/staff/{}", c.ids["agent"]), helper, None).await;
    assert_problem("a helper reading a colleague", &r, 403, "forbidden");
}

#[tokio::test]
async fn an_agent_cannot_create_staff_matters_classes_or_grids() {
    let app = spawn_app().await;
    let c = Callers::sign_in(&app).await;
    let agent = Some(c.token("agent"));
    let staff_before = app.call("GET", "/api/v1/staff?limit=200", Some(c.token("admin")), None).await.body;
    let cases: Vec<(&str, &str, Value)> = vec![
        ("POST", "/api/v1/staff", json!({"username": "agent.boss", "display_name": "x", "role": "admin", "password": "long-enough-pw"})),
        ("POST", "/api/v1/matters", matter_spec("HX-001")),
        ("PUT", "/api/v1/matters/SI-001", json!({"matter": matter_spec("SI-001"), "active": false})),
        ("POST", "/api/v1/matter-classes", json!({"code": "housing", "name_zh": "住房", "name_en": "Housing"})),
        ("POST", "/api/v1/grids", json!({"code": "XH-AG-001", "name": "x"})),
        ("POST", "/api/v1/devices/pairings/confirm", json!({"code": "ABCDEFGH", "kind": "kiosk"})),
    ];
    for (method, path, body) in cases {
        let r = app.call(method, path, agent, Some(body)).await;
        assert_problem(&format!("an agent: {method} {path}"), &r, 403, "forbidden");
    }
    assert_problem("an agent listing staff", &app.call("GET", "/api/v1/staff", agent, None).await, 403, "forbidden");
    // Nothing of it was stored.
    assert_eq!(app.call("GET", "/api/v1/staff?limit=200", Some(c.token("admin")), None).await.body, staff_before);
    assert_eq!(app.call("GET", "/api/v1/matters/HX-001", None, None).await.status, 404);
    let si = app.call("GET", "/api/v1/matters/SI-001", None, None).await;
    assert_eq!((si.body["version"].as_i64(), si.body["active"].as_bool()), (Some(1), Some(true)));
    let classes = app.call("GET", "/api/v1/matter-classes", None, None).await.body;
    assert!(!classes.to_string().contains("housing"));
}

#[tokio::test]
async fn only_auditors_and_admins_read_the_audit_log() {
    let app = spawn_app().await;
    let c = Callers::sign_in(&app).await;
    for role in ROLES {
        let r = app.call("GET", "/api/v1/audit?limit=200", Some(c.token(role)), None).await;
        if ["auditor", "admin"].contains(role) {
            assert_eq!(r.status, 200, "{role}: {}", r.body);
            assert!(r.body["items"].as_array().is_some_and(|i| !i.is_empty()), "{role}");
        } else {
            assert_problem(&format!("the audit log as {role}"), &r, 403, "forbidden");
        }
    }
    // Every read is itself in the log, and only the allowed ones happened.
    let mut readers = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = app.call("GET", &format!("/api/v1/audit?limit=200{q}"), Some(c.token("auditor")), None).await.body;
        for e in page["items"].as_array().unwrap() {
            if e["action"] == "audit.read" {
                readers.insert(e["actor_role"].as_str().unwrap().to_string());
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(readers, BTreeSet::from(["admin".to_string(), "auditor".to_string()]));
}

#[tokio::test]
async fn staff_see_their_own_account_but_only_admins_and_supervisors_see_others() {
    let app = spawn_app().await;
    let c = Callers::sign_in(&app).await;
    for role in STAFF {
        let own = app.call("GET", &format!("/api/v1/staff/{}", c.ids[role]), Some(c.token(role)), None).await;
        assert_eq!((own.status, own.body["role"].as_str()), (200, Some(*role)), "{role}: {}", own.body);
        assert!(own.body.get("password_hash").is_none());
        for other in STAFF.iter().filter(|o| *o != role) {
            let r = app.call("GET", &format!("/api/v1/staff/{}", c.ids[other]), Some(c.token(role)), None).await;
            if ["admin", "supervisor"].contains(role) {
                assert_eq!(r.status, 200, "{role} reading {other}");
            } else {
                assert_problem(&format!("{role} reading {other}"), &r, 403, "forbidden");
            }
        }
    }
    // A resident's or device's id is not a staff member's, even when asked for by its owner.
    for role in ["resident", "device"] {
        let r = app.call("GET", &format!("/api/v1/staff/{}", c.ids[role]), Some(c.token(role)), None).await;
        assert!([403, 404].contains(&r.status), "{role}: {} {}", r.status, r.body);
    }
}

#[tokio::test]
async fn only_a_device_rotates_a_device_token_and_only_an_admin_pairs_or_revokes() {
    let app = spawn_app().await;
    let c = Callers::sign_in(&app).await;
    let device_id = &c.ids["device"];
    for role in ROLES.iter().filter(|r| **r != "device") {
        let r = app.call("POST", "/api/v1/devices/me/token", Some(c.token(role)), None).await;
        assert_problem(&format!("{role} rotating a device token"), &r, 403, "forbidden");
    }
    for role in ROLES.iter().filter(|r| **r != "admin") {
        let r = app.call("DELETE", &format!("/api/v1/devices/{device_id}"), Some(c.token(role)), None).await;
        assert_problem(&format!("{role} revoking a device"), &r, 403, "forbidden");
    }
    // The device still works: nobody but an admin revoked it.
    let r = app.call("POST", "/api/v1/auth/device", None, Some(json!({"device_token": DEVICE_SECRET}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // An admin can.
    let r = app.call("DELETE", &format!("/api/v1/devices/{device_id}"), Some(c.token("admin")), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = app.call("POST", "/api/v1/auth/device", None, Some(json!({"device_token": DEVICE_SECRET}))).await;
    assert_problem("a revoked device signing in", &r, 401, "invalid-device-token");
}

#[tokio::test]
async fn an_admin_creates_a_matter_and_then_edits_it() {
    let app = spawn_app().await;
    let admin = app.staff_token("admin").await;
    let r = app.call("POST", "/api/v1/matters", Some(&admin), Some(matter_spec("HX-001"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!((r.body["code"].as_str(), r.body["version"].as_i64(), r.body["active"].as_bool()), (Some("HX-001"), Some(1), Some(true)));
    let read = app.call("GET", "/api/v1/matters/HX-001", None, None).await;
    assert_eq!((read.status, read.body["name_zh"].as_str()), (200, Some("测试事项")), "{}", read.body);
    // An edit against the current version bumps it and is what everyone then reads.
    let mut edited = matter_spec("HX-001");
    edited["name_zh"] = json!("测试事项（修订）");
    edited["name_en"] = json!("Test matter, revised");
    let r = app
        .call("PUT", "/api/v1/matters/HX-001", Some(&admin), Some(json!({"matter": edited, "expected_version": 1, "active": false})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["version"].as_i64(), r.body["active"].as_bool()), (Some(2), Some(false)), "{}", r.body);
    let read = app.call("GET", "/api/v1/matters/HX-001", None, None).await;
    assert_eq!(
        (read.body["name_zh"].as_str(), read.body["name_en"].as_str(), read.body["version"].as_i64(), read.body["active"].as_bool()),
        (Some("测试事项（修订）"), Some("Test matter, revised"), Some(2), Some(false)),
        "{}",
        read.body
    );
    let listed = app.call("GET", "/api/v1/matters?class=social_insurance", None, None).await;
    let found = listed.body.as_array().unwrap().iter().find(|m| m["code"] == "HX-001").cloned().unwrap();
    assert_eq!(found["version"], 2);
    // The old version is stale now; both actions are in the audit log.
    let r = app
        .call("PUT", "/api/v1/matters/HX-001", Some(&admin), Some(json!({"matter": matter_spec("HX-001"), "expected_version": 1})))
        .await;
    assert_problem("an edit against version 1", &r, 409, "version-mismatch");
    let auditor = app.staff_token("auditor").await;
    let log = app.call("GET", "/api/v1/audit?limit=200", Some(&auditor), None).await.body.to_string();
    assert!(log.contains("matter.create") && log.contains("matter.update"), "{log}");
}

/// Every problem code the handlers answer with is in the table of `docs/api.md`: the literal
/// codes given to `ApiError`'s constructors in `signaling/src/api/*.rs`.
#[test]
fn every_problem_code_in_the_api_is_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/api.md")).unwrap();
    let mut codes = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("signaling/src/api")).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for ctor in ["ApiError::new(", "ApiError::bad_request(", "ApiError::unauthenticated(", "ApiError::conflict(", "ApiError::too_many("] {
            for (at, _) in src.match_indices(ctor) {
                let mut rest = src[at + ctor.len()..].trim_start();
                if let Some(after) = rest.strip_prefix("StatusCode::") {
                    rest = after.split_once(',').map(|(_, r)| r.trim_start()).unwrap_or("");
                }
                // A code passed in a variable (the constructors' own bodies) is not a literal.
                if let Some(lit) = rest.strip_prefix('"') {
                    codes.insert(lit.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    assert!(codes.len() > 40 && codes.contains("account-locked"), "the scan found the codes: {codes:?}");
    let missing: Vec<_> = codes.iter().filter(|c| !doc.contains(&format!("`{c}`"))).collect();
    assert!(missing.is_empty(), "codes missing from docs/api.md: {missing:?}");
}
