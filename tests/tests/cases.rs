//! Cases (issue 6): the checklist gate, the lifecycle, documents and resumable uploads,
//! idempotent submissions, ratings and follow-ups, and who may see what.

use integration_tests::{skip_without_postgres, spawn_app, spawn_app_on, Backend, Reply, TestApp};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// 张桂英 and 刘建国, demo residents.
const ZHANG: &str = "13800000001";
const LIU: &str = "13800000002";

async fn me_id(app: &TestApp, token: &str) -> String {
    let me = app.call("GET", "/api/v1/me", Some(token), None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    me.body["id"].as_str().expect("an id").to_string()
}

/// Sends a request with an `Idempotency-Key`, returning the reply and the raw body bytes.
async fn keyed(app: &TestApp, path: &str, token: &str, key: &str, body: Option<Value>) -> (Reply, Vec<u8>, bool) {
    let mut req = app.http.post(format!("{}{}", app.base, path)).bearer_auth(token).header("Idempotency-Key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let replayed = res.headers().get("idempotent-replayed").is_some();
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = res.bytes().await.unwrap().to_vec();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (Reply { status, body, content_type }, bytes, replayed)
}

struct Ctx {
    app: TestApp,
    agent: String,
    zhang: String,
    zhang_id: String,
    liu: String,
    supervisor: String,
    /// A call of agent.li with 张桂英 (opened over REST): the call cases are opened in.
    call: String,
}

/// Opens a call (an agent with a resident) over REST; returns its id.
async fn open_call(app: &TestApp, agent: &str, resident_id: &str) -> String {
    let r = app.call("POST", "/api/v1/calls", Some(agent), Some(json!({"resident_id": resident_id}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn ctx() -> Ctx {
    ctx_on(Backend::Sqlite).await
}

async fn ctx_on(backend: Backend) -> Ctx {
    let app = spawn_app_on(backend, |_| {}).await;
    let agent = app.staff_token("agent.li").await;
    let supervisor = app.staff_token("supervisor").await;
    let zhang = app.resident_token(ZHANG).await;
    let liu = app.resident_token(LIU).await;
    let zhang_id = me_id(&app, &zhang).await;
    let call = open_call(&app, &agent, &zhang_id).await;
    Ctx { app, agent, zhang, zhang_id, liu, supervisor, call }
}

impl Ctx {
    /// An agent opens an MI-003 (medical-expense claim) case for 张桂英.
    async fn claim_case(&self, answers: Value) -> Value {
        let r = self
            .app
            .call(
                "POST",
                "/api/v1/cases",
                Some(&self.agent),
                Some(json!({"matter_code": "MI-003", "resident_id": self.zhang_id, "answers": answers,
                    "call_id": self.call})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }

    async fn review(&self, id: &str, body: Value) -> Reply {
        self.app.call("POST", &format!("/api/v1/cases/{id}/review"), Some(&self.agent), Some(body)).await
    }

    async fn submit(&self, id: &str, token: &str) -> Reply {
        self.app.call("POST", &format!("/api/v1/cases/{id}/submit"), Some(token), None).await
    }
}

fn jpeg(n: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0];
    v.extend((0..n.saturating_sub(4)).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

fn pdf(n: usize, seed: u8) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n".to_vec();
    v.extend((0..n.saturating_sub(9)).map(|i| (i as u8).wrapping_add(seed)));
    v
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

async fn start_upload(app: &TestApp, token: &str, case: &str, body: Value) -> Reply {
    app.call("POST", &format!("/api/v1/cases/{case}/documents"), Some(token), Some(body)).await
}

async fn put_chunk(app: &TestApp, token: &str, doc_url: &str, offset: usize, bytes: &[u8]) -> (u16, Option<u64>, String) {
    let res = app
        .http
        .put(format!("{}{}", app.base, doc_url))
        .bearer_auth(token)
        .header("Upload-Offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let off = res.headers().get("upload-offset").and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok());
    let body = res.text().await.unwrap_or_default();
    (status, off, body)
}

async fn head_offset(app: &TestApp, token: &str, content_url: &str) -> u64 {
    let res = app.http.head(format!("{}{}", app.base, content_url)).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.headers()["upload-offset"].to_str().unwrap().parse().unwrap()
}

/// Uploads a whole document in chunks and finishes it; returns the finish reply.
async fn upload(app: &TestApp, token: &str, case: &str, item: Option<&str>, content_type: &str, bytes: &[u8]) -> Reply {
    let r = start_upload(app, token, case, json!({"content_type": content_type, "size": bytes.len(), "item_key": item})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let url = r.body["content_url"].as_str().unwrap().to_string();
    let mut off = 0;
    for chunk in bytes.chunks(64 * 1024) {
        let (status, new_off, body) = put_chunk(app, token, &url, off, chunk).await;
        assert_eq!(status, 204, "{body}");
        off += chunk.len();
        assert_eq!(new_off, Some(off as u64));
    }
    let finish = url.replace("/content", "/finish");
    app.call("POST", &finish, Some(token), Some(json!({"sha256": sha(bytes)}))).await
}

async fn upload_ok(app: &TestApp, token: &str, case: &str, item: &str, seed: u8) -> Value {
    let r = upload(app, token, case, Some(item), "image/jpeg", &jpeg(3000, seed)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ready");
    r.body
}

fn issue_keys(report: &Value) -> Vec<String> {
    report["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.get("item").or_else(|| i.get("question")).unwrap().as_str().unwrap().to_string())
        .collect()
}

/// Provides every unconditional required item of MI-003.
async fn provide_required(c: &Ctx, case: &str) {
    for (i, item) in ["id_card", "receipts", "expense_details", "medical_record", "bank_account"].iter().enumerate() {
        upload_ok(&c.app, &c.zhang, case, item, i as u8).await;
    }
}

const ALL_ANSWERS_NO_INJURY: &str =
    r#"{"is_injury": "no", "visit_type": "outpatient", "emergency_out_of_area": "no", "applicant": "self"}"#;

#[tokio::test]
async fn the_checklist_gate_lists_missing_and_conditional_items_and_needs_a_reason_to_override() {
    let c = ctx().await;
    let case = c.claim_case(json!({})).await;
    let id = case["id"].as_str().unwrap();
    assert_eq!(case["status"], "draft");
    // Nothing given yet: every unanswered question and every missing required item, at once.
    let keys = issue_keys(&case["checklist"]);
    for k in ["is_injury", "visit_type", "applicant", "id_card", "receipts", "expense_details", "medical_record", "bank_account"] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
    assert_eq!(c.submit(id, &c.zhang).await.status, 200);
    let r = c.review(id, json!({"action": "accept"})).await;
    assert_eq!((r.status, r.code()), (409, "checklist-incomplete"), "{}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("id_card"));

    // The injury: the conditional injury-filing form becomes required.
    let answers = json!({"is_injury": "yes", "visit_type": "outpatient", "emergency_out_of_area": "no", "applicant": "self"});
    let r = c.app.call("PUT", &format!("/api/v1/cases/{id}/answers"), Some(&c.zhang), Some(json!({"answers": answers}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    provide_required(&c, id).await;
    let view = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.agent), None).await;
    assert_eq!(issue_keys(&view.body["checklist"]), vec!["injury_filing_form"]);
    let form = view.body["checklist"]["items"].as_array().unwrap().iter().find(|i| i["key"] == "injury_filing_form").unwrap().clone();
    assert_eq!((form["required"].as_bool(), form["state"].as_str()), (Some(true), Some("missing")));
    let r = c.review(id, json!({"action": "accept"})).await;
    assert_eq!((r.status, r.code()), (409, "checklist-incomplete"));
    assert!(r.body["detail"].as_str().unwrap().contains("injury_filing_form"));

    // An override needs a written reason; "ok" is not one.
    let r = c.review(id, json!({"action": "accept", "override_reason": "ok"})).await;
    assert_eq!((r.status, r.code()), (422, "override-reason-required"));
    let reason = "外伤备案表由医院直接传送至医保中心，已电话核实";
    let r = c.review(id, json!({"action": "accept", "override_reason": reason})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "accepted");
    let last = r.body["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["action"].as_str(), last["reason"].as_str()), (Some("accept"), Some(reason)));
    assert_eq!(last["detail"]["override"], true);
    assert_eq!(last["detail"]["overridden"][0]["item"], "injury_filing_form");
    assert_eq!(last["actor_role"], "agent");
    // The override is in the audit log too.
    let admin = c.app.staff_token("auditor").await;
    let audit = c.app.call("GET", "/api/v1/audit?limit=200", Some(&admin), None).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let logged = audit.body["items"].as_array().unwrap().iter().any(|e| {
        e["action"] == "case.accept" && e["detail"]["reason"].as_str() == Some(reason)
    });
    assert!(logged, "the override is logged with its reason");
}

#[tokio::test]
async fn without_an_injury_the_form_is_not_required_and_acceptance_needs_no_override() {
    let c = ctx().await;
    let answers: Value = serde_json::from_str(ALL_ANSWERS_NO_INJURY).unwrap();
    let case = c.claim_case(answers).await;
    let id = case["id"].as_str().unwrap();
    provide_required(&c, id).await;
    assert_eq!(c.submit(id, &c.zhang).await.status, 200);
    let r = c.review(id, json!({"action": "accept"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["checklist"]["complete"], true);
    let last = r.body["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], Value::Null);
}

#[tokio::test]
async fn every_transition_is_recorded_and_illegal_ones_are_refused() {
    every_transition_on(ctx().await).await
}

#[tokio::test]
async fn every_transition_is_recorded_and_illegal_ones_are_refused_on_postgresql() {
    if !skip_without_postgres(Backend::Postgres) {
        every_transition_on(ctx_on(Backend::Postgres).await).await
    }
}

async fn every_transition_on(c: Ctx) {
    let answers: Value = serde_json::from_str(ALL_ANSWERS_NO_INJURY).unwrap();
    let id = c.claim_case(answers.clone()).await["id"].as_str().unwrap().to_string();
    // Illegal from draft: everything an agent decides.
    for action in ["accept", "approve", "complete"] {
        let r = c.review(&id, json!({"action": action})).await;
        assert_eq!((r.status, r.code()), (409, "illegal-transition"), "{action}: {}", r.body);
    }
    let r = c.review(&id, json!({"action": "reject", "reason": "不符合条件"})).await;
    assert_eq!((r.status, r.code()), (409, "illegal-transition"));
    // Draft → submitted, by the resident.
    let r = c.submit(&id, &c.zhang).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("submitted")), "{}", r.body);
    // Submitting twice is illegal.
    assert_eq!(c.submit(&id, &c.zhang).await.code(), "illegal-transition");
    // Residents do not review.
    let r = c.app.call("POST", &format!("/api/v1/cases/{id}/review"), Some(&c.zhang), Some(json!({"action": "accept"}))).await;
    assert_eq!(r.status, 403);
    // Submitted → returned (every missing item listed, plus the invalid one).
    c.app.clock.advance_ms(60_000);
    provide_required(&c, &id).await;
    let r = c
        .review(&id, json!({"action": "return", "reason": "请补正材料", "invalid": [{"item": "receipts", "reason": "票据模糊，金额无法辨认"}]}))
        .await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("returned")), "{}", r.body);
    // Returned → resubmitted (by the agent this time), → accepted → approved → completed.
    upload_ok(&c.app, &c.zhang, &id, "receipts", 99).await;
    let r = c.submit(&id, &c.agent).await;
    assert_eq!(r.body["status"], "resubmitted", "{}", r.body);
    let r = c.review(&id, json!({"action": "approve"})).await;
    assert_eq!(r.code(), "illegal-transition", "approve needs acceptance first");
    assert_eq!(c.review(&id, json!({"action": "accept"})).await.body["status"], "accepted");
    assert_eq!(c.review(&id, json!({"action": "complete"})).await.code(), "illegal-transition");
    assert_eq!(c.review(&id, json!({"action": "approve", "note": "准予报销"})).await.body["status"], "approved");
    let r = c.review(&id, json!({"action": "complete"})).await;
    assert_eq!(r.body["status"], "completed");
    // Completed is final; documents can no longer be added.
    for action in [json!({"action": "accept"}), json!({"action": "reject", "reason": "x"}), json!({"action": "complete"})] {
        assert_eq!(c.review(&id, action).await.code(), "illegal-transition");
    }
    let r = start_upload(&c.app, &c.zhang, &id, json!({"content_type": "image/jpeg", "size": 100})).await;
    assert_eq!((r.status, r.code()), (409, "case-closed"));
    // The whole history: actor, time, from, to, reason.
    let view = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.zhang), None).await;
    let h = view.body["history"].as_array().unwrap();
    let walk: Vec<(&str, &str)> = h.iter().map(|e| (e["action"].as_str().unwrap(), e["to"].as_str().unwrap())).collect();
    assert_eq!(
        walk,
        [
            ("create", "draft"),
            ("submit", "submitted"),
            ("return", "returned"),
            ("resubmit", "resubmitted"),
            ("accept", "accepted"),
            ("approve", "approved"),
            ("complete", "completed"),
        ]
    );
    assert_eq!(h[1]["actor_role"], "resident");
    assert_eq!(h[3]["actor_role"], "agent");
    assert_eq!(h[2]["reason"], "请补正材料");
    assert_eq!(h[2]["from"], "submitted");
    assert!(h[2]["at"].as_str().unwrap() > h[1]["at"].as_str().unwrap(), "times are recorded");

    // The rejection path.
    let id2 = c.claim_case(answers).await["id"].as_str().unwrap().to_string();
    c.submit(&id2, &c.zhang).await;
    let r = c.review(&id2, json!({"action": "reject"})).await;
    assert_eq!(r.status, 422, "a rejection needs a reason: {}", r.body);
    let r = c.review(&id2, json!({"action": "reject", "reason": "   "})).await;
    assert_eq!((r.status, r.code()), (422, "invalid-reason"));
    let r = c.review(&id2, json!({"action": "reject", "reason": "非本市参保人员"})).await;
    assert_eq!(r.body["status"], "rejected");
    assert_eq!(c.review(&id2, json!({"action": "complete"})).await.body["status"], "completed");
}

#[tokio::test]
async fn a_return_tells_everything_at_once_and_the_resident_sees_it() {
    let c = ctx().await;
    let case = c.claim_case(json!({"is_injury": "yes", "visit_type": "inpatient"})).await;
    let id = case["id"].as_str().unwrap();
    upload_ok(&c.app, &c.zhang, id, "id_card", 1).await;
    upload_ok(&c.app, &c.zhang, id, "receipts", 2).await;
    c.submit(id, &c.zhang).await;
    // Nothing to return without items? There are items: the return lists them all.
    let r = c
        .review(id, json!({"action": "return", "reason": "材料不全", "invalid": [{"item": "id_card", "reason": "身份证已过期"}]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let notice: Vec<String> = r.body["return_notice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}:{}", i["kind"].as_str().unwrap(), i.get("item").or(i.get("question")).unwrap().as_str().unwrap()))
        .collect();
    assert_eq!(
        notice,
        [
            "unanswered_question:emergency_out_of_area",
            "unanswered_question:applicant",
            "invalid_document:id_card",
            "missing_document:expense_details",
            "missing_document:medical_record",
            "missing_document:bank_account",
            "missing_document:discharge_summary",
            "missing_document:injury_filing_form",
        ]
    );
    // The invalid ID card no longer counts.
    let id_card = r.body["documents"].as_array().unwrap().iter().find(|d| d["item_key"] == "id_card").unwrap().clone();
    assert_eq!((id_card["status"].as_str(), id_card["invalid_reason"].as_str()), (Some("invalid"), Some("身份证已过期")));
    // The resident's own list says what is missing.
    let mine = c.app.call("GET", "/api/v1/cases", Some(&c.zhang), None).await;
    assert_eq!(mine.status, 200);
    let item = &mine.body["items"][0];
    assert_eq!(item["status"], "returned");
    assert_eq!(item["checklist_complete"], false);
    assert!(issue_keys(item).contains(&"injury_filing_form".to_string()));
    // A complete case has nothing to return.
    let full = c.claim_case(serde_json::from_str(ALL_ANSWERS_NO_INJURY).unwrap()).await;
    let fid = full["id"].as_str().unwrap();
    provide_required(&c, fid).await;
    c.submit(fid, &c.zhang).await;
    let r = c.review(fid, json!({"action": "return", "reason": "请补正"})).await;
    assert_eq!((r.status, r.code()), (422, "nothing-to-return"));
}

#[tokio::test]
async fn the_return_rate_is_tracked_per_matter() {
    let c = ctx().await;
    let answers: Value = serde_json::from_str(ALL_ANSWERS_NO_INJURY).unwrap();
    let a = c.claim_case(answers.clone()).await["id"].as_str().unwrap().to_string();
    let b = c.claim_case(answers.clone()).await["id"].as_str().unwrap().to_string();
    let _draft = c.claim_case(answers).await;
    c.submit(&a, &c.zhang).await;
    c.submit(&b, &c.zhang).await;
    assert_eq!(c.review(&a, json!({"action": "return", "reason": "缺材料"})).await.status, 200);
    c.submit(&a, &c.zhang).await;
    assert_eq!(c.review(&a, json!({"action": "return", "reason": "仍缺材料"})).await.status, 200);
    let r = c.app.call("GET", "/api/v1/stats/return-rates", Some(&c.supervisor), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let row = r.body.as_array().unwrap().iter().find(|x| x["matter_code"] == "MI-003").unwrap().clone();
    assert_eq!((row["submitted"].as_i64(), row["returned"].as_i64(), row["returns"].as_i64()), (Some(2), Some(1), Some(2)));
    assert_eq!(row["rate"].as_f64(), Some(0.5));
    assert_eq!(c.app.call("GET", "/api/v1/stats/return-rates", Some(&c.agent), None).await.status, 403);
}

#[tokio::test]
async fn an_upload_cut_in_the_middle_resumes_from_the_offset_the_server_reports() {
    let c = ctx().await;
    let id = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    let bytes = pdf(300_000, 7);
    let r = start_upload(&c.app, &c.zhang, &id, json!({"content_type": "application/pdf", "size": bytes.len(), "item_key": "receipts"})).await;
    let url = r.body["content_url"].as_str().unwrap().to_string();
    assert_eq!(r.body["offset"], 0);
    // First chunk arrives.
    let (s, off, _) = put_chunk(&c.app, &c.zhang, &url, 0, &bytes[..100_000]).await;
    assert_eq!((s, off), (204, Some(100_000)));
    // The second chunk is cut: the connection drops after half of it.
    {
        let mut sock = tokio::net::TcpStream::connect(c.app.addr).await.unwrap();
        let head = format!(
            "PUT {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nUpload-Offset: 100000\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: 100000\r\n\r\n",
            c.zhang
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&bytes[100_000..150_000]).await.unwrap();
        sock.flush().await.unwrap();
        drop(sock);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The server kept only whole chunks: the offset says where to resume.
    assert_eq!(head_offset(&c.app, &c.zhang, &url).await, 100_000);
    // A chunk at the wrong offset is refused with the right one.
    let (s, off, body) = put_chunk(&c.app, &c.zhang, &url, 150_000, &bytes[150_000..200_000]).await;
    assert_eq!((s, off), (409, Some(100_000)), "{body}");
    assert!(body.contains("offset-mismatch"));
    // Finishing early is refused.
    let finish = url.replace("/content", "/finish");
    let r = c.app.call("POST", &finish, Some(&c.zhang), Some(json!({"sha256": sha(&bytes)}))).await;
    assert_eq!((r.status, r.code()), (409, "upload-incomplete"));
    // Resume and finish.
    let (s, _, _) = put_chunk(&c.app, &c.zhang, &url, 100_000, &bytes[100_000..]).await;
    assert_eq!(s, 204);
    // Bytes past the declared size are refused.
    let (s, _, body) = put_chunk(&c.app, &c.zhang, &url, bytes.len(), b"extra").await;
    assert_eq!(s, 413, "{body}");
    let r = c.app.call("POST", &finish, Some(&c.zhang), Some(json!({"sha256": sha(&bytes)}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["status"].as_str(), r.body["sha256"].as_str()), (Some("ready"), Some(sha(&bytes).as_str())));
    // The stored bytes are the uploaded ones.
    let got = c.app.http.get(format!("{}{}", c.app.base, url)).bearer_auth(&c.zhang).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "application/pdf");
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
}

#[tokio::test]
async fn a_wrong_checksum_resets_the_upload() {
    let c = ctx().await;
    let id = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    let bytes = jpeg(10_000, 3);
    let r = start_upload(&c.app, &c.zhang, &id, json!({"content_type": "image/jpeg", "size": bytes.len()})).await;
    let url = r.body["content_url"].as_str().unwrap().to_string();
    put_chunk(&c.app, &c.zhang, &url, 0, &bytes).await;
    let finish = url.replace("/content", "/finish");
    let r = c.app.call("POST", &finish, Some(&c.zhang), Some(json!({"sha256": sha(b"something else")}))).await;
    assert_eq!((r.status, r.code()), (422, "checksum-mismatch"));
    assert_eq!(head_offset(&c.app, &c.zhang, &url).await, 0);
}

#[tokio::test]
async fn a_forged_content_type_is_refused_and_discarded() {
    let c = ctx().await;
    let id = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    // PDF bytes declared as a PNG.
    let r = upload(&c.app, &c.zhang, &id, Some("id_card"), "image/png", &pdf(5000, 1)).await;
    assert_eq!((r.status, r.code()), (422, "content-type-mismatch"), "{}", r.body);
    // An executable declared as a JPEG.
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00".to_vec();
    exe.resize(4000, 0);
    let r = upload(&c.app, &c.zhang, &id, Some("id_card"), "image/jpeg", &exe).await;
    assert_eq!((r.status, r.code()), (415, "unsupported-document-type"), "{}", r.body);
    // HTML is not even accepted as a declared type.
    let r = start_upload(&c.app, &c.zhang, &id, json!({"content_type": "text/html", "size": 10})).await;
    assert_eq!((r.status, r.code()), (415, "unsupported-document-type"));
    // Nothing of the refused uploads remains.
    let view = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.zhang), None).await;
    assert_eq!(view.body["documents"].as_array().unwrap().len(), 0, "{}", view.body["documents"]);
    // Size limits.
    let r = start_upload(&c.app, &c.zhang, &id, json!({"content_type": "image/jpeg", "size": 21 * 1024 * 1024})).await;
    assert_eq!((r.status, r.code()), (413, "document-too-large"));
    let r = start_upload(&c.app, &c.zhang, &id, json!({"content_type": "image/jpeg", "size": 100, "item_key": "nope"})).await;
    assert_eq!((r.status, r.code()), (422, "unknown-checklist-item"));
}

#[tokio::test]
async fn the_same_bytes_twice_in_a_case_are_reported_as_a_duplicate() {
    let c = ctx().await;
    let id = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    let page = jpeg(20_000, 9);
    let first = upload(&c.app, &c.zhang, &id, Some("receipts"), "image/jpeg", &page).await;
    assert_eq!(first.status, 200);
    let again = upload(&c.app, &c.zhang, &id, Some("receipts"), "image/jpeg", &page).await;
    assert_eq!((again.status, again.code()), (409, "duplicate-document"));
    assert!(again.body["detail"].as_str().unwrap().contains(first.body["id"].as_str().unwrap()));
    let view = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.zhang), None).await;
    assert_eq!(view.body["documents"].as_array().unwrap().len(), 1);
    // The same bytes in another case are fine.
    let other = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    assert_eq!(upload(&c.app, &c.zhang, &other, Some("receipts"), "image/jpeg", &page).await.status, 200);
}

#[tokio::test]
async fn a_video_frame_is_stored_as_a_document_with_a_thumbnail() {
    let c = ctx().await;
    let case = c.claim_case(json!({})).await;
    let id = case["id"].as_str().unwrap();
    let call_id = case["call_id"].as_str().unwrap();
    let frame = png(640, 480);
    // Residents do not capture frames.
    let r = start_upload(&c.app, &c.zhang, id, json!({"content_type": "image/png", "size": frame.len(), "source": "video_frame", "call_id": call_id})).await;
    assert_eq!(r.status, 403);
    // A frame needs its call.
    let r = start_upload(&c.app, &c.agent, id, json!({"content_type": "image/png", "size": frame.len(), "source": "video_frame"})).await;
    assert_eq!(r.status, 422);
    let r = start_upload(
        &c.app,
        &c.agent,
        id,
        json!({"content_type": "image/png", "size": frame.len(), "source": "video_frame", "call_id": call_id, "item_key": "id_card"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let url = r.body["content_url"].as_str().unwrap().to_string();
    assert_eq!(put_chunk(&c.app, &c.agent, &url, 0, &frame).await.0, 204);
    let r = c.app.call("POST", &url.replace("/content", "/finish"), Some(&c.agent), Some(json!({"sha256": sha(&frame)}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["source"].as_str(), r.body["call_id"].as_str()), (Some("video_frame"), Some(call_id)));
    let thumb_url = r.body["thumbnail_url"].as_str().unwrap().to_string();
    for _ in 0..2 {
        // Made once, then served from storage.
        let t = c.app.http.get(format!("{}{}", c.app.base, thumb_url)).bearer_auth(&c.zhang).send().await.unwrap();
        assert_eq!(t.status().as_u16(), 200);
        assert_eq!(t.headers()["content-type"], "image/jpeg");
        let img = image::load_from_memory(&t.bytes().await.unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (240, 180));
    }
    // The ID card item is now provided.
    let view = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.agent), None).await;
    assert!(!issue_keys(&view.body["checklist"]).contains(&"id_card".to_string()));
    // PDFs have no thumbnail.
    let p = upload(&c.app, &c.zhang, id, None, "application/pdf", &pdf(1000, 2)).await;
    assert!(p.body["thumbnail_url"].is_null());
    let t = c.app.call("GET", &format!("{}/thumbnail", p.body["content_url"].as_str().unwrap().trim_end_matches("/content")), Some(&c.zhang), None).await;
    assert_eq!((t.status, t.code()), (404, "no-thumbnail"));
}

#[tokio::test]
async fn a_case_created_twice_with_one_key_is_one_case_with_the_same_answer() {
    let c = ctx().await;
    let body = json!({"matter_code": "SE-001", "answers": {"hukou": "local"}});
    let (a, a_bytes, a_replayed) = keyed(&c.app, "/api/v1/cases", &c.zhang, "create-8f2d", Some(body.clone())).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(!a_replayed);
    c.app.clock.advance_ms(5_000);
    let (b, b_bytes, b_replayed) = keyed(&c.app, "/api/v1/cases", &c.zhang, "create-8f2d", Some(body.clone())).await;
    assert_eq!(b.status, 201);
    assert!(b_replayed);
    assert_eq!(a_bytes, b_bytes, "the retry gets the first answer, byte for byte");
    let mine = c.app.call("GET", "/api/v1/cases?matter=SE-001", Some(&c.zhang), None).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    // The same key with another body is a client bug.
    let (r, _, _) = keyed(&c.app, "/api/v1/cases", &c.zhang, "create-8f2d", Some(json!({"matter_code": "SE-001"}))).await;
    assert_eq!((r.status, r.code()), (422, "idempotency-key-reused"));
    // Keys belong to their caller: another resident's same key is a new request.
    let (r, _, replayed) = keyed(&c.app, "/api/v1/cases", &c.liu, "create-8f2d", Some(body)).await;
    assert_eq!(r.status, 201);
    assert!(!replayed);
    assert_ne!(r.body["id"], a.body["id"]);
    // A malformed key.
    let (r, _, _) = keyed(&c.app, "/api/v1/cases", &c.zhang, "has space", Some(json!({"matter_code": "SE-001"}))).await;
    assert_eq!((r.status, r.code()), (400, "invalid-idempotency-key"));
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_exactly_one_case() {
    concurrent_retries_on(ctx().await).await
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_exactly_one_case_on_postgresql() {
    if !skip_without_postgres(Backend::Postgres) {
        concurrent_retries_on(ctx_on(Backend::Postgres).await).await
    }
}

async fn concurrent_retries_on(c: Ctx) {
    let body = json!({"matter_code": "CC-002", "answers": {}});
    let tries = (0..8).map(|_| keyed(&c.app, "/api/v1/cases", &c.zhang, "burst-1", Some(body.clone())));
    let results = futures_util::future::join_all(tries).await;
    let mut ids = std::collections::HashSet::new();
    for (r, _, _) in &results {
        match r.status {
            201 => {
                ids.insert(r.body["id"].as_str().unwrap().to_string());
            }
            409 => assert_eq!(r.code(), "idempotency-in-progress"),
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert_eq!(ids.len(), 1, "every success names the same case");
    let mine = c.app.call("GET", "/api/v1/cases?matter=CC-002", Some(&c.zhang), None).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_submission_retried_with_its_key_is_submitted_once() {
    let c = ctx().await;
    let id = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/cases/{id}/submit");
    let (a, a_bytes, _) = keyed(&c.app, &path, &c.zhang, "submit-1", None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (b, b_bytes, replayed) = keyed(&c.app, &path, &c.zhang, "submit-1", None).await;
    assert_eq!(b.status, 200, "a retry is not an illegal second submission: {}", b.body);
    assert!(replayed);
    assert_eq!(a_bytes, b_bytes);
    let view = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.zhang), None).await;
    let submits = view.body["history"].as_array().unwrap().iter().filter(|e| e["action"] == "submit").count();
    assert_eq!(submits, 1);
    // Without a key, a second submission is what it is: illegal.
    assert_eq!(c.submit(&id, &c.zhang).await.code(), "illegal-transition");
    // A failed request does not burn its key: a draft with an unknown matter, then fixed.
    let (r, _, _) = keyed(&c.app, "/api/v1/cases", &c.zhang, "k-2", Some(json!({"matter_code": "XX-999"}))).await;
    assert_eq!((r.status, r.code()), (422, "unknown-matter"));
    let (r, _, _) = keyed(&c.app, "/api/v1/cases", &c.zhang, "k-2", Some(json!({"matter_code": "XX-999"}))).await;
    assert_eq!(r.code(), "unknown-matter", "errors are not replayed; the request ran again");
}

#[tokio::test]
async fn a_low_rating_opens_a_follow_up_that_a_supervisor_closes() {
    let c = ctx().await;
    let id = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    // A draft cannot be rated.
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(json!({"case_id": id, "level": 1}))).await;
    assert_eq!((r.status, r.code()), (409, "not-rateable"));
    c.submit(&id, &c.zhang).await;
    // Only the resident rates their own case.
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.liu), Some(json!({"case_id": id, "level": 5}))).await;
    assert_eq!(r.status, 403);
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.agent), Some(json!({"case_id": id, "level": 5}))).await;
    assert_eq!(r.status, 403);
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(json!({"case_id": id, "level": 6}))).await;
    assert_eq!(r.status, 422);
    let r = c
        .app
        .call("POST", "/api/v1/ratings", Some(&c.zhang), Some(json!({"case_id": id, "level": 2, "comment": "x".repeat(501)})))
        .await;
    assert_eq!(r.status, 422);
    let rating = json!({"case_id": id, "level": 2, "tags": ["等待太久"], "comment": "视频卡顿，等了很久"});
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(rating.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!((r.body["level_label_zh"].as_str(), r.body["follow_up_opened"].as_bool()), (Some("不满意"), Some(true)));
    // The same rating again is the same rating; a different one is refused.
    let again = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(rating)).await;
    assert_eq!((again.status, again.body["id"].clone()), (200, r.body["id"].clone()));
    let other = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(json!({"case_id": id, "level": 5}))).await;
    assert_eq!((other.status, other.code()), (409, "already-rated"));
    // A good rating of a call opens nothing.
    let call = json!({"call_id": c.call, "level": 5, "tags": ["态度好"]});
    let good = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(call)).await;
    assert_eq!((good.status, good.body["follow_up_opened"].as_bool()), (201, Some(false)));
    // Exactly one of case and call.
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(json!({"level": 3}))).await;
    assert_eq!(r.status, 422);

    // Supervisors see the open follow-up, due 15 working days later (2026-11-30 is a Monday).
    assert_eq!(c.app.call("GET", "/api/v1/follow-ups", Some(&c.agent), None).await.status, 403);
    let list = c.app.call("GET", "/api/v1/follow-ups", Some(&c.supervisor), None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let f = &items[0];
    assert_eq!(f["due_on"], "2026-12-21");
    assert_eq!((f["overdue"].as_bool(), f["rating"]["level"].as_u64()), (Some(false), Some(2)));
    assert_eq!(f["rating"]["case_id"].as_str(), Some(id.as_str()));
    let fid = f["id"].as_str().unwrap().to_string();
    // Past the deadline it is overdue.
    c.app.clock.advance_ms(22 * 24 * 3_600_000);
    let sup = c.app.staff_token("supervisor").await;
    let list = c.app.call("GET", "/api/v1/follow-ups", Some(&sup), None).await;
    assert_eq!(list.body["items"][0]["overdue"], true, "{}", list.body);
    // Closing needs a note, happens once, and leaves the open list empty.
    let close = format!("/api/v1/follow-ups/{fid}/close");
    assert_eq!(c.app.call("POST", &close, Some(&sup), Some(json!({"note": ""}))).await.status, 422);
    let r = c.app.call("POST", &close, Some(&sup), Some(json!({"note": "已回访，网络问题已报修"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["note"].as_str(), r.body["overdue"].as_bool()), (Some("已回访，网络问题已报修"), Some(false)));
    let r = c.app.call("POST", &close, Some(&sup), Some(json!({"note": "again"}))).await;
    assert_eq!((r.status, r.code()), (409, "follow-up-closed"));
    let open = c.app.call("GET", "/api/v1/follow-ups", Some(&sup), None).await;
    assert_eq!(open.body["items"].as_array().unwrap().len(), 0);
    let all = c.app.call("GET", "/api/v1/follow-ups?open=false", Some(&sup), None).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 1);
    // Residents list their own ratings only.
    let liu = c.app.resident_token(LIU).await;
    let mine = c.app.call("GET", "/api/v1/ratings", Some(&liu), None).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 0);
    c.app.clock.advance_ms(61_000);
    let zhang = c.app.resident_token(ZHANG).await;
    let mine = c.app.call("GET", "/api/v1/ratings", Some(&zhang), None).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_follow_up_deadline_is_configurable_and_skips_holidays() {
    let app = integration_tests::spawn_app_on(integration_tests::Backend::Sqlite, |s| {
        s.cases.follow_up_working_days = 3;
        s.cases.holidays = vec![time::macros::date!(2026 - 12 - 02)];
    })
    .await;
    let zhang = app.resident_token(ZHANG).await;
    let agent = app.staff_token("agent.li").await;
    let call = open_call(&app, &agent, &me_id(&app, &zhang).await).await;
    let r = app.call("POST", "/api/v1/ratings", Some(&zhang), Some(json!({"call_id": call, "level": 1}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sup = app.staff_token("supervisor").await;
    let list = app.call("GET", "/api/v1/follow-ups", Some(&sup), None).await;
    // Mon 30 Nov + 3 working days, Wed 2 Dec off: Tue 1, Thu 3, Fri 4.
    assert_eq!(list.body["items"][0]["due_on"], "2026-12-04");
}

#[tokio::test]
async fn a_resident_cannot_see_or_touch_another_residents_case() {
    let c = ctx().await;
    let id = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    upload_ok(&c.app, &c.zhang, &id, "id_card", 4).await;
    let doc = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.zhang), None).await.body["documents"][0].clone();
    let content = doc["content_url"].as_str().unwrap().to_string();
    // 刘建国 is not 张桂英.
    for (method, path, body) in [
        ("GET", format!("/api/v1/cases/{id}"), None),
        ("PUT", format!("/api/v1/cases/{id}/answers"), Some(json!({"answers": {}}))),
        ("POST", format!("/api/v1/cases/{id}/submit"), None),
        ("POST", format!("/api/v1/cases/{id}/documents"), Some(json!({"content_type": "image/jpeg", "size": 10}))),
        ("GET", content.clone(), None),
        ("GET", content.replace("/content", "/thumbnail"), None),
        ("GET", content.trim_end_matches("/content").to_string(), None),
    ] {
        let r = c.app.call(method, &path, Some(&c.liu), body).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }
    let r = c.app.call("GET", &format!("/api/v1/cases?resident_id={}", c.zhang_id), Some(&c.liu), None).await;
    assert_eq!(r.status, 403);
    let r = c.app.call("GET", "/api/v1/cases", Some(&c.liu), None).await;
    assert_eq!((r.status, r.body["items"].as_array().unwrap().len()), (200, 0));
    // Nor create one in another's name.
    let r = c
        .app
        .call("POST", "/api/v1/cases", Some(&c.liu), Some(json!({"matter_code": "SE-001", "resident_id": c.zhang_id})))
        .await;
    assert_eq!(r.status, 403);
    // Unknown cases are 404, not 403.
    let r = c.app.call("GET", &format!("/api/v1/cases/{}", uuid::Uuid::now_v7()), Some(&c.liu), None).await;
    assert_eq!(r.status, 404);
    // Helpers need a delegation (not built yet); supervisors read but do not decide.
    let helper = c.app.staff_token("helper.zhao").await;
    let r = c.app.call("POST", "/api/v1/cases", Some(&helper), Some(json!({"matter_code": "SE-001", "resident_id": c.zhang_id}))).await;
    assert_eq!((r.status, r.code()), (403, "delegation-required"));
    let r = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&helper), None).await;
    assert_eq!((r.status, r.code()), (403, "delegation-required"));
    let r = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.supervisor), None).await;
    assert_eq!(r.status, 200);
    let r = c.app.call("POST", &format!("/api/v1/cases/{id}/submit"), Some(&c.supervisor), None).await;
    assert_eq!(r.status, 403);
    let admin = c.app.staff_token("admin").await;
    assert_eq!(c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&admin), None).await.status, 403);
    // The owner sees it, with its history.
    let r = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.zhang), None).await;
    assert_eq!((r.status, r.body["history"][0]["action"].as_str()), (200, Some("create")));
}

#[tokio::test]
async fn a_resident_opens_a_case_for_themselves_and_sees_it_in_my_cases() {
    let c = ctx().await;
    let r = c.app.call("POST", "/api/v1/cases", Some(&c.zhang), Some(json!({"matter_code": "SE-001"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["resident_id"].as_str(), Some(c.zhang_id.as_str()));
    assert_eq!((r.body["created_by_role"].as_str(), r.body["matter_name_zh"].as_str()), (Some("resident"), Some("老年优待证办理")));
    // Bad answers and unknown matters are refused.
    let r = c.app.call("POST", "/api/v1/cases", Some(&c.zhang), Some(json!({"matter_code": "SE-001", "answers": {"hukou": "mars"}}))).await;
    assert_eq!(r.status, 422);
    let r = c.app.call("POST", "/api/v1/cases", Some(&c.zhang), Some(json!({"matter_code": "NOPE-1"}))).await;
    assert_eq!((r.status, r.code()), (422, "unknown-matter"));
    // Agents must name the resident.
    let r = c.app.call("POST", "/api/v1/cases", Some(&c.agent), Some(json!({"matter_code": "SE-001"}))).await;
    assert_eq!(r.status, 422);
    let mine = c.app.call("GET", "/api/v1/cases", Some(&c.zhang), None).await;
    let items = mine.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "draft");
    assert!(issue_keys(&items[0]).contains(&"id_card".to_string()));
    // Stale edits are refused.
    let id = items[0]["id"].as_str().unwrap();
    let r = c
        .app
        .call("PUT", &format!("/api/v1/cases/{id}/answers"), Some(&c.zhang), Some(json!({"answers": {}, "expected_version": 99})))
        .await;
    assert_eq!((r.status, r.code()), (409, "case-changed"));
}

#[tokio::test]
async fn the_openapi_document_describes_the_case_endpoints() {
    let app = spawn_app().await;
    let doc = app.call("GET", "/openapi.json", None, None).await;
    let paths = doc.body["paths"].as_object().unwrap();
    for p in [
        "/api/v1/cases",
        "/api/v1/cases/{id}",
        "/api/v1/cases/{id}/submit",
        "/api/v1/cases/{id}/review",
        "/api/v1/cases/{id}/calls",
        "/api/v1/cases/{id}/documents",
        "/api/v1/cases/{id}/documents/{doc}/content",
        "/api/v1/cases/{id}/documents/{doc}/finish",
        "/api/v1/cases/{id}/documents/{doc}/thumbnail",
        "/api/v1/ratings",
        "/api/v1/follow-ups",
        "/api/v1/follow-ups/{id}/close",
        "/api/v1/stats/return-rates",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    let content = &paths["/api/v1/cases/{id}/documents/{doc}/content"];
    assert!(content.get("put").is_some() && content.get("head").is_some() && content.get("get").is_some());
}

/// Takes a queue ticket for the caller (a resident).
async fn take_ticket(app: &TestApp, token: &str) -> String {
    let r = app.call("POST", "/api/v1/queue/tickets", Some(token), Some(json!({"matter_code": "MI-003"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn calls_and_tickets_named_by_cases_documents_and_ratings_are_checked() {
    let c = ctx().await;
    let liu_id = me_id(&c.app, &c.liu).await;
    let liu_call = open_call(&c.app, &c.agent, &liu_id).await;
    let wang = c.app.staff_token("agent.wang").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let for_zhang = |extra: Value| {
        let mut b = json!({"matter_code": "MI-003", "resident_id": c.zhang_id});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    // Cases: the call exists, is the resident's, and the agent was in it.
    for (token, body, want) in [
        (&c.agent, for_zhang(json!({"call_id": unknown})), (404, "unknown-call")),
        (&c.agent, for_zhang(json!({"call_id": liu_call})), (409, "call-resident-mismatch")),
        (&wang, for_zhang(json!({"call_id": c.call})), (403, "not-call-member")),
        (&c.zhang, json!({"matter_code": "SE-001", "call_id": liu_call}), (409, "call-resident-mismatch")),
        (&c.agent, for_zhang(json!({"ticket_id": unknown})), (404, "unknown-ticket")),
    ] {
        let r = c.app.call("POST", "/api/v1/cases", Some(token), Some(body.clone())).await;
        assert_eq!((r.status, r.code()), want, "{body}: {}", r.body);
    }
    // Tickets: the resident's own.
    let liu_ticket = take_ticket(&c.app, &c.liu).await;
    let r = c.app.call("POST", "/api/v1/cases", Some(&c.agent), Some(for_zhang(json!({"ticket_id": liu_ticket})))).await;
    assert_eq!((r.status, r.code()), (409, "ticket-resident-mismatch"), "{}", r.body);
    let zhang_ticket = take_ticket(&c.app, &c.zhang).await;
    let r = c
        .app
        .call("POST", "/api/v1/cases", Some(&c.agent), Some(for_zhang(json!({"ticket_id": zhang_ticket, "call_id": c.call}))))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!((r.body["ticket_id"].as_str(), r.body["call_id"].as_str()), (Some(zhang_ticket.as_str()), Some(c.call.as_str())));
    // A resident opens a case in their own call.
    let r = c.app.call("POST", "/api/v1/cases", Some(&c.zhang), Some(json!({"matter_code": "MI-003", "call_id": c.call}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["calls"][0]["id"].as_str(), Some(c.call.as_str()));
    let id = r.body["id"].as_str().unwrap().to_string();

    // Video frames: the same rules for their call.
    let frame = |call: &str| json!({"content_type": "image/png", "size": 100, "source": "video_frame", "call_id": call});
    for (token, call, want) in [
        (&c.agent, unknown.as_str(), (404, "unknown-call")),
        (&c.agent, liu_call.as_str(), (409, "call-resident-mismatch")),
        (&wang, c.call.as_str(), (403, "not-call-member")),
    ] {
        let r = start_upload(&c.app, token, &id, frame(call)).await;
        assert_eq!((r.status, r.code()), want, "{call}: {}", r.body);
    }
    let r = start_upload(&c.app, &c.agent, &id, frame(&c.call)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Nothing refused was stored.
    let view = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.zhang), None).await;
    assert_eq!(view.body["documents"].as_array().unwrap().len(), 1);

    // Call ratings: the call exists and only its resident rates it, once.
    let rate = |call: &str, level: u8| json!({"call_id": call, "level": level});
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(rate(&unknown, 5))).await;
    assert_eq!((r.status, r.code()), (404, "unknown-call"));
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.liu), Some(rate(&c.call, 1))).await;
    assert_eq!((r.status, r.code()), (403, "not-call-member"), "{}", r.body);
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(rate(&c.call, 4))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.zhang), Some(rate(&c.call, 1))).await;
    assert_eq!((r.status, r.code()), (409, "already-rated"));
    let r = c.app.call("POST", "/api/v1/ratings", Some(&c.liu), Some(rate(&liu_call, 5))).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn a_case_lists_its_calls_and_their_recordings_for_staff_who_may_see_them() {
    case_calls_on(ctx().await).await
}

#[tokio::test]
async fn a_case_lists_its_calls_and_their_recordings_for_staff_who_may_see_them_on_postgresql() {
    if !skip_without_postgres(Backend::Postgres) {
        case_calls_on(ctx_on(Backend::Postgres).await).await
    }
}

async fn case_calls_on(c: Ctx) {
    use signaling::store::recordings::{RecordingRecord, RecordingState};
    let case = c.claim_case(json!({})).await;
    let id = case["id"].as_str().unwrap().to_string();
    let calls = case["calls"].as_array().unwrap();
    assert_eq!((calls.len(), calls[0]["id"].as_str()), (1, Some(c.call.as_str())), "opened in a call, linked to it");
    assert!(calls[0]["ended_at"].is_null());
    let path = format!("/api/v1/cases/{id}/calls");
    let wang = c.app.staff_token("agent.wang").await;
    c.app.clock.advance_ms(60_000);
    let wang_call = open_call(&c.app, &wang, &c.zhang_id).await;
    // Only an agent who was in the call (or a supervisor) links it; residents do not.
    let link = |call: &str| json!({"call_id": call});
    let r = c.app.call("POST", &path, Some(&c.agent), Some(link(&wang_call))).await;
    assert_eq!((r.status, r.code()), (403, "not-call-member"), "{}", r.body);
    let r = c.app.call("POST", &path, Some(&c.zhang), Some(link(&wang_call))).await;
    assert_eq!(r.status, 403);
    let r = c.app.call("POST", &path, Some(&wang), Some(link(&wang_call))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let again = c.app.call("POST", &path, Some(&wang), Some(link(&wang_call))).await;
    assert_eq!(again.status, 200, "linking twice is one link: {}", again.body);
    assert_eq!(again.body["calls"].as_array().unwrap().len(), 2);
    // Unknown calls and other residents' calls are refused.
    let r = c.app.call("POST", &path, Some(&c.supervisor), Some(link(&uuid::Uuid::now_v7().to_string()))).await;
    assert_eq!((r.status, r.code()), (404, "unknown-call"));
    let liu_call = open_call(&c.app, &c.agent, &me_id(&c.app, &c.liu).await).await;
    let r = c.app.call("POST", &path, Some(&c.supervisor), Some(link(&liu_call))).await;
    assert_eq!((r.status, r.code()), (409, "call-resident-mismatch"));
    let r = c.app.call("POST", &format!("/api/v1/cases/{}/calls", uuid::Uuid::now_v7()), Some(&c.supervisor), Some(link(&c.call))).await;
    assert_eq!(r.status, 404);
    // A supervisor links a third call.
    c.app.clock.advance_ms(60_000);
    let third = open_call(&c.app, &c.agent, &c.zhang_id).await;
    let r = c.app.call("POST", &path, Some(&c.supervisor), Some(link(&third))).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // The first call was recorded, and ended.
    let rec = uuid::Uuid::now_v7();
    let first_call: uuid::Uuid = c.call.parse().unwrap();
    c.app
        .state
        .store
        .insert_recording(&RecordingRecord {
            id: rec,
            call_id: first_call,
            matter_code: None,
            state: RecordingState::Recording,
            started_at: integration_tests::T0_MS,
            ended_at: None,
            segments: 0,
            manifest_sha256: None,
            retention_days: 180,
            hold: None,
            deleted_at: None,
        })
        .await
        .unwrap();
    let r = c.app.call("POST", &format!("/api/v1/calls/{}/end", c.call), Some(&c.agent), None).await;
    assert_eq!(r.status, 204, "{}", r.body);

    let calls_seen_by = |body: &Value| -> Vec<(String, bool, Option<Vec<String>>)> {
        body["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                let recs = k.get("recording_ids").map(|v| {
                    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
                });
                (k["id"].as_str().unwrap().to_string(), k["ended_at"].is_string(), recs)
            })
            .collect()
    };
    let view = |token: String| {
        let app = &c.app;
        let path = format!("/api/v1/cases/{id}");
        async move { app.call("GET", &path, Some(&token), None).await }
    };
    let rec = rec.to_string();
    // Supervisors see every call's recordings.
    let sup = view(c.supervisor.clone()).await;
    assert_eq!(sup.status, 200, "{}", sup.body);
    assert_eq!(
        calls_seen_by(&sup.body),
        vec![
            (c.call.clone(), true, Some(vec![rec.clone()])),
            (wang_call.clone(), false, Some(vec![])),
            (third.clone(), false, Some(vec![])),
        ]
    );
    // Agents see the recordings of the calls they were in, and only those.
    let li = view(c.agent.clone()).await;
    assert_eq!(
        calls_seen_by(&li.body),
        vec![
            (c.call.clone(), true, Some(vec![rec.clone()])),
            (wang_call.clone(), false, None),
            (third.clone(), false, Some(vec![])),
        ]
    );
    let w = view(wang.clone()).await;
    assert_eq!(calls_seen_by(&w.body)[0], (c.call.clone(), true, None));
    // The resident sees the calls, without recording ids.
    let mine = view(c.zhang.clone()).await;
    assert_eq!(
        calls_seen_by(&mine.body),
        vec![(c.call.clone(), true, None), (wang_call.clone(), false, None), (third.clone(), false, None)]
    );
    // The links are audited.
    let auditor = c.app.staff_token("auditor").await;
    let audit = c.app.call("GET", "/api/v1/audit?limit=200", Some(&auditor), None).await;
    let links = audit.body["items"].as_array().unwrap().iter().filter(|e| e["action"] == "case.attach_call").count();
    assert_eq!(links, 2);
}

#[tokio::test]
async fn agents_without_recording_access_see_no_recording_ids() {
    let app = spawn_app_on(Backend::Sqlite, |s| s.recordings_agent_access = false).await;
    let agent = app.staff_token("agent.li").await;
    let supervisor = app.staff_token("supervisor").await;
    let zhang = app.resident_token(ZHANG).await;
    let zhang_id = me_id(&app, &zhang).await;
    let call = open_call(&app, &agent, &zhang_id).await;
    let r = app
        .call("POST", "/api/v1/cases", Some(&agent), Some(json!({"matter_code": "SE-001", "resident_id": zhang_id, "call_id": call})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body["calls"][0].get("recording_ids").is_none(), "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    let r = app.call("GET", &format!("/api/v1/cases/{id}"), Some(&supervisor), None).await;
    assert_eq!(r.body["calls"][0]["recording_ids"], json!([]));
}

/// Forgets every stored idempotent result, as if each first attempt had committed its work
/// and died before storing its answer.
async fn forget_results(app: &TestApp) {
    use sqlx::Connection;
    let url = app.state.settings.database_url.clone().unwrap();
    let sql = "UPDATE idempotency_keys SET status_code = NULL, response = NULL";
    if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn a_retry_after_a_crash_gets_the_first_result() {
    crash_retry_on(ctx().await).await
}

#[tokio::test]
async fn a_retry_after_a_crash_gets_the_first_result_on_postgresql() {
    if !skip_without_postgres(Backend::Postgres) {
        crash_retry_on(ctx_on(Backend::Postgres).await).await
    }
}

async fn crash_retry_on(c: Ctx) {
    let id = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    let submit = format!("/api/v1/cases/{id}/submit");
    let review = format!("/api/v1/cases/{id}/review");
    let reject = json!({"action": "reject", "reason": "非本市参保人员"});
    let (a, _, _) = keyed(&c.app, &submit, &c.zhang, "submit-crash", None).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("submitted")), "{}", a.body);
    let (a, _, _) = keyed(&c.app, &review, &c.agent, "review-crash", Some(reject.clone())).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("rejected")), "{}", a.body);
    let doc = json!({"content_type": "image/jpeg", "size": 3000, "item_key": "id_card"});
    let d = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    let docs_d = format!("/api/v1/cases/{d}/documents");
    let (first_doc, _, _) = keyed(&c.app, &docs_d, &c.zhang, "doc-crash", Some(doc.clone())).await;
    assert_eq!(first_doc.status, 201, "{}", first_doc.body);
    // Each first attempt committed, then died before storing its answer.
    forget_results(&c.app).await;
    // While the claims are fresh, a retry is told to wait.
    let (r, _, _) = keyed(&c.app, &submit, &c.zhang, "submit-crash", None).await;
    assert_eq!((r.status, r.code()), (409, "idempotency-in-progress"));
    // After a minute the retries take the claims over and answer the first results.
    c.app.clock.advance_ms(61_000);
    let (r, _, replayed) = keyed(&c.app, &submit, &c.zhang, "submit-crash", None).await;
    assert_eq!(r.status, 200, "not an illegal second submission: {}", r.body);
    assert!(!replayed);
    assert_eq!((r.body["id"].as_str(), r.body["status"].as_str()), (Some(id.as_str()), Some("rejected")));
    let (r, r_bytes, _) = keyed(&c.app, &review, &c.agent, "review-crash", Some(reject.clone())).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("rejected")), "{}", r.body);
    // That answer is stored now: the next retry replays it.
    let (again, again_bytes, replayed) = keyed(&c.app, &review, &c.agent, "review-crash", Some(reject)).await;
    assert!(replayed);
    assert_eq!((again.status, r_bytes), (200, again_bytes));
    let (r, _, _) = keyed(&c.app, &docs_d, &c.zhang, "doc-crash", Some(doc)).await;
    assert_eq!((r.status, r.body["id"].clone()), (201, first_doc.body["id"].clone()), "the same document");
    // Each transition happened once.
    let view = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.zhang), None).await;
    let walk: Vec<&str> = view.body["history"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(walk, ["create", "submit", "reject"]);
    let view = c.app.call("GET", &format!("/api/v1/cases/{d}"), Some(&c.zhang), None).await;
    assert_eq!(view.body["documents"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn documents_and_ratings_retried_with_their_key_are_made_once() {
    let c = ctx().await;
    let id = c.claim_case(json!({})).await["id"].as_str().unwrap().to_string();
    let bytes = jpeg(5000, 42);
    let body = json!({"content_type": "image/jpeg", "size": bytes.len(), "item_key": "id_card"});
    let docs = format!("/api/v1/cases/{id}/documents");
    let (a, a_bytes, a_replayed) = keyed(&c.app, &docs, &c.zhang, "doc-1", Some(body.clone())).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let (b, b_bytes, b_replayed) = keyed(&c.app, &docs, &c.zhang, "doc-1", Some(body)).await;
    assert_eq!((a_replayed, b_replayed, b.status), (false, true, 201));
    assert_eq!(a_bytes, b_bytes);
    let view = c.app.call("GET", &format!("/api/v1/cases/{id}"), Some(&c.zhang), None).await;
    assert_eq!(view.body["documents"].as_array().unwrap().len(), 1);
    // Finish, twice with one key: the same answer; the same key on another body is refused.
    let url = a.body["content_url"].as_str().unwrap().to_string();
    assert_eq!(put_chunk(&c.app, &c.zhang, &url, 0, &bytes).await.0, 204);
    let finish = url.replace("/content", "/finish");
    let (f1, f1_bytes, _) = keyed(&c.app, &finish, &c.zhang, "fin-1", Some(json!({"sha256": sha(&bytes)}))).await;
    assert_eq!((f1.status, f1.body["status"].as_str()), (200, Some("ready")), "{}", f1.body);
    let (f2, f2_bytes, replayed) = keyed(&c.app, &finish, &c.zhang, "fin-1", Some(json!({"sha256": sha(&bytes)}))).await;
    assert!(replayed);
    assert_eq!((f2.status, f1_bytes), (200, f2_bytes));
    let (f3, _, _) = keyed(&c.app, &finish, &c.zhang, "fin-1", Some(json!({"sha256": sha(b"x")}))).await;
    assert_eq!((f3.status, f3.code()), (422, "idempotency-key-reused"));
    // Reviews: a keyed return retried is one return.
    c.submit(&id, &c.zhang).await;
    let ret = json!({"action": "return", "reason": "请补正材料"});
    let review = format!("/api/v1/cases/{id}/review");
    let (r1, r1_bytes, _) = keyed(&c.app, &review, &c.agent, "rev-1", Some(ret.clone())).await;
    assert_eq!((r1.status, r1.body["status"].as_str()), (200, Some("returned")), "{}", r1.body);
    let (r2, r2_bytes, replayed) = keyed(&c.app, &review, &c.agent, "rev-1", Some(ret)).await;
    assert!(replayed);
    assert_eq!((r2.status, r1_bytes), (200, r2_bytes));
    assert_eq!(r2.body["return_count"], 1);
    // Ratings.
    let rating = json!({"case_id": id, "level": 1, "comment": "材料被退回"});
    let (g1, g1_bytes, _) = keyed(&c.app, "/api/v1/ratings", &c.zhang, "rate-1", Some(rating.clone())).await;
    assert_eq!(g1.status, 201, "{}", g1.body);
    let (g2, g2_bytes, replayed) = keyed(&c.app, "/api/v1/ratings", &c.zhang, "rate-1", Some(rating)).await;
    assert!(replayed);
    assert_eq!((g2.status, g1_bytes), (201, g2_bytes));
    let (g3, _, _) = keyed(&c.app, "/api/v1/ratings", &c.zhang, "rate-1", Some(json!({"case_id": id, "level": 5}))).await;
    assert_eq!((g3.status, g3.code()), (422, "idempotency-key-reused"));
    let sup = c.app.call("GET", "/api/v1/follow-ups", Some(&c.supervisor), None).await;
    assert_eq!(sup.body["items"].as_array().unwrap().len(), 1, "one rating, one follow-up");
}

#[tokio::test]
async fn accepted_cases_can_be_returned_or_rejected_and_resubmitted_ones_rejected() {
    let c = ctx().await;
    let answers: Value = serde_json::from_str(ALL_ANSWERS_NO_INJURY).unwrap();
    let history = |body: &Value| -> Vec<(String, String)> {
        body["history"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .map(|e| (e["from"].as_str().unwrap().to_string(), e["to"].as_str().unwrap().to_string()))
            .collect()
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    // accepted → returned: a document found invalid after acceptance.
    let a = c.claim_case(answers.clone()).await["id"].as_str().unwrap().to_string();
    provide_required(&c, &a).await;
    c.submit(&a, &c.zhang).await;
    assert_eq!(c.review(&a, json!({"action": "accept"})).await.body["status"], "accepted");
    let r = c
        .review(&a, json!({"action": "return", "reason": "银行账户信息有误", "invalid": [{"item": "bank_account", "reason": "户名与申请人不符"}]}))
        .await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("returned")), "{}", r.body);
    assert_eq!(r.body["return_notice"][0]["item"], "bank_account");
    assert_eq!(history(&r.body), [pair("draft", "submitted"), pair("submitted", "accepted"), pair("accepted", "returned")]);
    // accepted → rejected.
    let b = c.claim_case(answers.clone()).await["id"].as_str().unwrap().to_string();
    c.submit(&b, &c.zhang).await;
    let r = c.review(&b, json!({"action": "accept", "override_reason": "材料已线下核验齐全"})).await;
    assert_eq!(r.body["status"], "accepted", "{}", r.body);
    let r = c.review(&b, json!({"action": "reject", "reason": "复核发现不符合报销条件"})).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("rejected")), "{}", r.body);
    assert_eq!(history(&r.body), [pair("draft", "submitted"), pair("submitted", "accepted"), pair("accepted", "rejected")]);
    assert_eq!(r.body["history"][3]["reason"], "复核发现不符合报销条件");
    // resubmitted → rejected.
    let d = c.claim_case(answers).await["id"].as_str().unwrap().to_string();
    c.submit(&d, &c.zhang).await;
    assert_eq!(c.review(&d, json!({"action": "return", "reason": "缺材料"})).await.body["status"], "returned");
    assert_eq!(c.submit(&d, &c.zhang).await.body["status"], "resubmitted");
    let r = c.review(&d, json!({"action": "reject", "reason": "逾期未补齐"})).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("rejected")), "{}", r.body);
    assert_eq!(
        history(&r.body),
        [pair("draft", "submitted"), pair("submitted", "returned"), pair("returned", "resubmitted"), pair("resubmitted", "rejected")]
    );
}
