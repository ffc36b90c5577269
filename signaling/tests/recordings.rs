//! Audit recordings end to end (issue 4): real calls through the server's relay, signaled over
//! the WebSocket, recorded, uploaded, played, verified, tampered with, held and swept.
//!
//! Run inside a loopback-only network namespace (media on 127.0.0.1; needs `ffprobe`):
//! `unshare -n -- bash -c 'ip link set lo up && cargo test -p signaling --test recordings'`.

mod rec_support;
mod sfu_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rec_support::*;
use serde_json::Value;
use signaling::auth::tokens::Tokens;
use signaling::domain::clock::Clock;
use signaling::domain::identity::Role;
use uuid::Uuid;

const REASON: &str = "reason=complaint%20review%20C-2026-17";

fn run_verify_cli(data_dir: &Path, what: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-window"))
        .arg("verify")
        .args(what)
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .output()
        .expect("cloud-window verify runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Finished segment files of a recording in the object store (default: `recordings/` in the
/// data directory), by participant.
fn stored_segments(data_dir: &Path, rec: Uuid, participant: Uuid) -> Vec<PathBuf> {
    files_with(&data_dir.join("recordings/recordings").join(rec.to_string()).join(participant.to_string()), ".webm")
}

async fn verify_api(server: &Server, auditor: &str, rec: Uuid) -> Value {
    let (s, b) = server.call("GET", &format!("/api/v1/recordings/{rec}/verify"), Some(auditor), None).await;
    assert_eq!(s, 200, "{b}");
    b
}

fn problems(report: &Value) -> Vec<String> {
    report["report"]["problems"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["problem"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// An admin gives the first demo matter its own retention (editing it through the API); returns
/// its code.
async fn matter_with_retention(server: &Server, admin: &str, days: u32) -> String {
    let (s, list) = server.call("GET", "/api/v1/matters", None, None).await;
    assert_eq!(s, 200, "{list}");
    let mut spec = list[0].clone();
    let code = spec["code"].as_str().unwrap().to_string();
    let version = spec["version"].clone();
    for f in ["version", "active", "updated_at"] {
        spec.as_object_mut().unwrap().remove(f);
    }
    spec["retention_days"] = serde_json::json!(days);
    let body = serde_json::json!({"matter": spec, "active": true, "expected_version": version});
    let (s, b) = server.call("PUT", &format!("/api/v1/matters/{code}"), Some(admin), Some(body)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["retention_days"], days);
    code
}

/// An agent opens a call about `matter` with the first demo resident: (call id, resident id).
async fn open_call_about(server: &Server, agent: &str, admin: &str, matter: &str) -> (Uuid, Uuid) {
    let (resident, _) = server.resident(admin).await;
    let body = serde_json::json!({"resident_id": resident, "matter_code": matter});
    let (s, b) = server.call("POST", "/api/v1/calls", Some(agent), Some(body)).await;
    assert_eq!(s, 201, "{b}");
    (b["id"].as_str().unwrap().parse().unwrap(), resident)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_two_party_call_plays_verifies_detects_tampering_and_is_access_controlled() {
    let dir = temp_dir("call");
    let server = spawn_server(&dir, |s| s.recording_segment_secs = 3).await;
    let state = server.state.clone().unwrap();
    let clock = server.clock.clone().unwrap();
    let admin = server.staff_token("admin").await;
    let agent = server.staff_token("agent.li").await;
    let other_agent = server.staff_token("agent.wang").await;
    let auditor = server.staff_token("auditor").await;
    let supervisor = server.staff_token("supervisor").await;
    // The call is about a matter with its own retention (30 days instead of the default 180).
    let matter = matter_with_retention(&server, &admin, 30).await;
    let (call, resident_id) = open_call_about(&server, &agent, &admin, &matter).await;
    let resident = state.tokens.issue(resident_id, Role::Resident, None, clock.now_ms());

    // --- the call: both publish through the relay for ~9 s --------------------------------
    let a = WsParticipant::join(server.addr, &agent, call).await;
    let a_start = Instant::now();
    let r = WsParticipant::join(server.addr, &resident, call).await;
    let r_start = Instant::now();
    for p in [&a, &r] {
        let notice = &p.joined["recording"];
        assert_eq!(notice["recorded"], true, "the join response says the call is recorded");
        assert_eq!(notice["retention_days"], 30, "and for how long (the matter's retention): {notice}");
    }
    // Media setup (ICE, DTLS, renegotiation) may be slow on a loaded machine: wait for it,
    // bounded, then let the call run until it is ≈9 s long so it spans several segments.
    wait_for(Duration::from_secs(30), "media to flow both ways", || {
        a.received_from(r.participant_id) > 0 && r.received_from(a.participant_id) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(a_start.elapsed())).await;
    a.end_call();
    let a_len = a_start.elapsed().as_secs_f64();
    let r_len = r_start.elapsed().as_secs_f64();
    // The recording is finished, sealed and uploaded.
    let recorder = state.recorder.clone();
    wait_for(Duration::from_secs(20), "the recording to finish", || recorder.active_recordings() == 0).await;
    let (s, list) = server.call("GET", &format!("/api/v1/recordings?{REASON}&call_id={call}"), Some(&auditor), None).await;
    assert_eq!(s, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one recording for the call: {list}");
    let rec: Uuid = items[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(items[0]["state"], "complete");
    assert_eq!(items[0]["retention_days"], 30, "the matter's retention is fixed on the recording: {list}");
    assert_eq!(items[0]["matter_code"], matter.as_str());
    let data = std::fs::canonicalize(&dir).unwrap();
    wait_for(Duration::from_secs(20), "uploads", || {
        recorder.pending_uploads() == 0 && files_with(&data.join("recordings-spool/recordings"), ".webm").is_empty()
    })
    .await;
    let (a_id, r_id) = (a.participant_id, r.participant_id);
    a.stop().await;
    r.stop().await;

    // --- per participant: ffprobe reads VP8 + Opus, duration within 10 % -------------------
    for (pid, len) in [(a_id, a_len), (r_id, r_len)] {
        let segs = stored_segments(&data, rec, pid);
        assert!(segs.len() >= 2, "several segments of ≈3 s: {segs:?}");
        for seg in &segs {
            let (codecs, _) = ffprobe(seg);
            assert!(codecs.contains(&"vp8".to_string()) && codecs.contains(&"opus".to_string()), "{seg:?}: {codecs:?}");
        }
        let (st, headers, body) = server
            .get_raw(&format!("/api/v1/recordings/{rec}/participants/{pid}/media?{REASON}"), &auditor, &[])
            .await;
        assert_eq!(st, 200);
        assert_eq!(headers["accept-ranges"], "bytes");
        assert_eq!(headers["content-type"], "video/webm");
        let file = dir.join(format!("{pid}.webm"));
        std::fs::write(&file, &body).unwrap();
        let (codecs, duration) = ffprobe(&file);
        assert_eq!(codecs, vec!["vp8".to_string(), "opus".to_string()], "codecs of {pid}");
        assert!((duration - len).abs() <= len * 0.10, "{pid}: recorded {duration:.2} s of a {len:.2} s call");
        // Range requests.
        let (st, headers, part) = server
            .get_raw(&format!("/api/v1/recordings/{rec}/participants/{pid}/media?{REASON}"), &auditor, &[("range", "bytes=100-199")])
            .await;
        assert_eq!(st, 206);
        assert_eq!(headers["content-range"], format!("bytes 100-199/{}", body.len()).as_str());
        assert_eq!(part, body[100..200].to_vec());
        let (st, _, _) = server
            .get_raw(&format!("/api/v1/recordings/{rec}/participants/{pid}/media?{REASON}"), &auditor, &[("range", &format!("bytes={}-", body.len() + 10))])
            .await;
        assert_eq!(st, 416);
    }

    // --- access ---------------------------------------------------------------------------
    let (s, b) = server.call("GET", &format!("/api/v1/recordings?{REASON}"), Some(&resident), None).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")), "a resident is refused");
    let (s, _) = server.call("GET", &format!("/api/v1/recordings/{rec}?{REASON}"), Some(&other_agent), None).await;
    assert_eq!(s, 403, "an agent on someone else's call is refused");
    let (s, b) = server.call("GET", &format!("/api/v1/recordings?{REASON}"), Some(&other_agent), None).await;
    assert_eq!((s, b["items"].as_array().map(Vec::len)), (200, Some(0)), "and sees none in the list");
    let (s, b) = server.call("GET", &format!("/api/v1/recordings/{rec}?{REASON}"), Some(&agent), None).await;
    assert_eq!(s, 200, "the call's own agent may: {b}");
    assert!(b["manifest"]["signature"]["signature"].is_string());
    let (s, b) = server.call("GET", &format!("/api/v1/recordings/{rec}"), Some(&supervisor), None).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("reason-required")), "no reason, no access");
    let (s, _) = server.call("GET", "/api/v1/recordings", Some(&auditor), None).await;
    assert_eq!(s, 400);
    let (s, _, _) = server
        .get_raw(&format!("/api/v1/recordings/{rec}/participants/{}/download", a_id), &supervisor, &[("x-access-reason", "quality check")])
        .await;
    assert_eq!(s, 200, "the reason may come as a header");
    let (s, b) = server.call("GET", "/api/v1/audit?limit=200", Some(&auditor), None).await;
    assert_eq!(s, 200);
    let audit = b["items"].as_array().unwrap();
    let auditor_id = state.tokens.verify(&auditor, clock.now_ms()).unwrap().sub;
    let supervisor_id = state.tokens.verify(&supervisor, clock.now_ms()).unwrap().sub;
    let has = |action: &str, who: Uuid, reason: &str| {
        audit.iter().any(|e| {
            e["action"] == action && e["actor_id"] == who.to_string() && e["detail"]["reason"] == reason && e["at"].is_string()
        })
    };
    assert!(has("recording.list", auditor_id, "complaint review C-2026-17"), "list audited");
    assert!(has("recording.play", auditor_id, "complaint review C-2026-17"), "play audited");
    assert!(has("recording.download", supervisor_id, "quality check"), "download audited");
    assert!(!audit.iter().any(|e| e["actor_id"] == resident_id.to_string() && e["action"].as_str().unwrap_or("").starts_with("recording.")));

    // --- verify: intact, then each tampering detected (API and CLI) --------------------------
    let ok = verify_api(&server, &auditor, rec).await;
    assert_eq!(ok["ok"], true, "{ok}");
    let (code, text) = run_verify_cli(&dir, &["--chain"]);
    assert_eq!(code, 0, "{text}");
    let segs = stored_segments(&data, rec, r_id);
    let (s1, s2) = (segs[0].clone(), segs[1].clone());
    let (b1, b2) = (std::fs::read(&s1).unwrap(), std::fs::read(&s2).unwrap());

    let mut flipped = b1.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    std::fs::write(&s1, &flipped).unwrap();
    let play = format!("/api/v1/recordings/{rec}/participants/{r_id}/media?{REASON}");
    let (st, _, body) = server.get_raw(&play, &auditor, &[]).await;
    assert_eq!(st, 409, "the cached export is not served once a segment no longer verifies");
    assert!(String::from_utf8_lossy(&body).contains("recording-not-verifiable"));
    let report = verify_api(&server, &auditor, rec).await;
    assert_eq!(report["ok"], false);
    assert!(problems(&report).contains(&"segment_hash_mismatch".to_string()), "{report}");
    let (code, text) = run_verify_cli(&dir, &["--recording", &rec.to_string()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAILED") && text.contains("altered"), "{text}");
    std::fs::write(&s1, &b1).unwrap();

    std::fs::remove_file(&s2).unwrap();
    let report = verify_api(&server, &auditor, rec).await;
    assert!(problems(&report).contains(&"segment_missing".to_string()), "{report}");
    let (code, text) = run_verify_cli(&dir, &["--chain"]);
    assert_eq!(code, 1, "{text}");
    std::fs::write(&s2, &b2).unwrap();

    std::fs::write(&s1, &b2).unwrap();
    std::fs::write(&s2, &b1).unwrap();
    let report = verify_api(&server, &auditor, rec).await;
    assert!(problems(&report).contains(&"segments_swapped".to_string()), "{report}");
    let (code, text) = run_verify_cli(&dir, &["--recording", &rec.to_string(), "--json"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("segments_swapped"), "the CLI reports the swap too: {text}");
    std::fs::write(&s1, &b1).unwrap();
    std::fs::write(&s2, &b2).unwrap();
    assert_eq!(verify_api(&server, &auditor, rec).await["ok"], true);
    let (st, _, intact) = server.get_raw(&play, &auditor, &[]).await;
    assert_eq!(st, 200, "restored: playable again");
    // An altered cached export is noticed and rebuilt, never served.
    let cached = files_with(&data.join("recording-exports"), &format!("{rec}-{r_id}.webm"));
    assert_eq!(cached.len(), 1, "{cached:?}");
    let mut bad = std::fs::read(&cached[0]).unwrap();
    let at = bad.len() / 3;
    bad[at] ^= 0xff;
    std::fs::write(&cached[0], &bad).unwrap();
    let (st, _, served) = server.get_raw(&play, &auditor, &[]).await;
    assert_eq!(st, 200);
    assert!(served == intact, "the altered cache was rebuilt from the verified segments");

    // --- retention and legal hold ----------------------------------------------------------
    let (s, b) = server
        .call("PUT", &format!("/api/v1/recordings/{rec}/legal-hold"), Some(&supervisor), Some(serde_json::json!({"reason": "court order 17"})))
        .await;
    assert_eq!(s, 403, "only auditors set holds: {b}");
    let (s, b) = server
        .call("PUT", &format!("/api/v1/recordings/{rec}/legal-hold"), Some(&auditor), Some(serde_json::json!({"reason": "court order 17"})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["legal_hold"]["reason"], "court order 17");
    clock.advance_ms(31 * 86_400_000);
    let auditor = server.staff_token("auditor").await; // the old token expired
    assert_eq!(state.recorder.sweep_now().await.unwrap(), 0, "a held recording is kept past retention");
    let (s, b) = server.call("DELETE", &format!("/api/v1/recordings/{rec}/legal-hold"), Some(&auditor), None).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("reason-required")));
    let (s, _) = server.call("DELETE", &format!("/api/v1/recordings/{rec}/legal-hold?reason=case%20closed"), Some(&auditor), None).await;
    assert_eq!(s, 200);
    assert_eq!(state.recorder.sweep_now().await.unwrap(), 1, "past retention, no hold: deleted");
    let (s, b) = server.call("DELETE", &format!("/api/v1/recordings/{rec}/legal-hold?reason=case%20closed"), Some(&auditor), None).await;
    assert_eq!((s, b["code"].as_str()), (410, Some("recording-deleted")), "no hold to clear on a deleted recording");
    assert_eq!(state.recorder.sweep_now().await.unwrap(), 0, "deleted once");
    let (s, b) = server.call("GET", &format!("/api/v1/recordings/{rec}?{REASON}"), Some(&auditor), None).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("deleted")));
    assert!(stored_segments(&data, rec, a_id).is_empty(), "files removed");
    let (s, b) = server.call("GET", "/api/v1/recording-chain/verify", Some(&auditor), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["ok"], true, "the deletion is accounted for by a tombstone: {b}");
    assert_eq!(b["report"]["entries"], 2, "sealed + tombstone");
    let (_, b) = server.call("GET", "/api/v1/audit?limit=200", Some(&auditor), None).await;
    let actions: Vec<&str> = b["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["recording.hold_set", "recording.hold_cleared", "recording.deleted"] {
        assert!(actions.contains(&a), "{a} audited: {actions:?}");
    }
    let (s, b) = server.call("GET", "/api/v1/recordings/public-key", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(b["public_key"].as_str().map(str::len), Some(64));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_mid_call_leaves_finished_segments_playable_and_verifiable() {
    let dir = temp_dir("kill");
    let mut server = spawn_binary(&dir, &["--recording-segment-secs", "2"]).await;
    let admin = server.staff_token("admin").await;
    let agent = server.staff_token("agent.li").await;
    let (call, resident_id) = server.open_call(&agent, &admin).await;
    let tokens = Tokens::new(b"test-secret-not-for-production", 900).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let resident = tokens.issue(resident_id, Role::Resident, None, now);
    let a = WsParticipant::join(server.addr, &agent, call).await;
    let r = WsParticipant::join(server.addr, &resident, call).await;
    // Let each participant finish a few segments (bounded: a loaded machine is slower).
    let data_dir = std::fs::canonicalize(&dir).unwrap();
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let files: Vec<PathBuf> = files_with(&data_dir.join("recordings-spool/recordings"), ".webm")
            .into_iter()
            .chain(files_with(&data_dir.join("recordings/recordings"), ".webm"))
            .collect();
        let mut per_participant = std::collections::HashMap::new();
        for f in &files {
            *per_participant.entry(f.parent().map(PathBuf::from)).or_insert(0) += 1;
        }
        let ready = per_participant.values().filter(|n| **n >= 2).count() >= 2;
        if (ready && started.elapsed() >= Duration::from_secs(5)) || started.elapsed() > Duration::from_secs(40) {
            break;
        }
    }

    // SIGKILL mid-call: no chance to finish anything.
    let key = std::fs::read_to_string(dir.join("recording-signing.key")).unwrap();
    assert_eq!(key.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("recording-signing.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the signing key is private");
    }
    server.kill();
    let killed_at = time::OffsetDateTime::now_utc();
    a.stop().await;
    r.stop().await;

    let data = std::fs::canonicalize(&dir).unwrap();
    let finished: Vec<PathBuf> = files_with(&data.join("recordings-spool/recordings"), ".webm")
        .into_iter()
        .chain(files_with(&data.join("recordings/recordings"), ".webm"))
        .collect();
    assert!(finished.len() >= 4, "finished segments of both participants survive: {finished:?}");
    for f in &finished {
        let (codecs, duration) = ffprobe(f);
        assert!(codecs.contains(&"vp8".to_string()) && codecs.contains(&"opus".to_string()), "{f:?} plays: {codecs:?}");
        assert!(duration > 0.5, "{f:?}: {duration}");
    }
    let rec_dir = files_with(&data.join("recordings-spool/recordings"), "manifest.json");
    assert_eq!(rec_dir.len(), 1, "the unsealed manifest is in the spool");
    let rec: Uuid = rec_dir[0].parent().unwrap().file_name().unwrap().to_str().unwrap().parse().unwrap();

    // Restart: the recording is recovered (interrupted) and sealed; verify says intact.
    let server = spawn_binary(&dir, &[]).await;
    let auditor = server.staff_token("auditor").await;
    let (s, b) = server.call("GET", &format!("/api/v1/recordings/{rec}?{REASON}"), Some(&auditor), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "interrupted");
    assert_eq!(b["manifest"]["manifest"]["status"], "interrupted");
    // It ended with its last finished segment, before the kill: not at the restart.
    let t = |v: &Value| time::OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    let (started, ended) = (t(&b["started_at"]), t(&b["ended_at"]));
    assert!(ended > started && ended <= killed_at, "ended {ended} should be before the kill at {killed_at}: {b}");
    let from_manifest = t(&b["manifest"]["manifest"]["ended_at"]);
    assert!((ended - from_manifest).abs() < time::Duration::seconds(1), "row {ended}, manifest {from_manifest}");
    assert_eq!(verify_api(&server, &auditor, rec).await["ok"], true);
    let (code, text) = run_verify_cli(&dir, &["--chain"]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run_verify_cli(&dir, &["--recording", &rec.to_string()]);
    assert_eq!(code, 0, "{text}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_agent_access_even_the_calls_own_agent_is_refused() {
    use signaling::store::recordings::{RecordingRecord, RecordingState};
    let dir = temp_dir("no-agent");
    let server = spawn_server(&dir, |s| s.recordings_agent_access = false).await;
    let state = server.state.clone().unwrap();
    let clock = server.clock.clone().unwrap();
    let admin = server.staff_token("admin").await;
    let agent = server.staff_token("agent.li").await;
    let supervisor = server.staff_token("supervisor").await;
    let (call, _) = server.open_call(&agent, &admin).await;
    let rec = Uuid::now_v7();
    state
        .store
        .insert_recording(&RecordingRecord {
            id: rec,
            call_id: call,
            matter_code: None,
            state: RecordingState::Recording,
            started_at: clock.now_ms(),
            ended_at: None,
            segments: 0,
            manifest_sha256: None,
            retention_days: 180,
            hold: None,
            deleted_at: None,
        })
        .await
        .unwrap();
    let agent_id = state.tokens.verify(&agent, clock.now_ms()).unwrap().sub;
    let members = state.store.call_members(call).await.unwrap();
    assert!(members.iter().any(|m| m.subject == agent_id), "the agent is the call's own agent");
    for path in [
        format!("/api/v1/recordings?{REASON}&call_id={call}"),
        format!("/api/v1/recordings/{rec}?{REASON}"),
        format!("/api/v1/recordings/{rec}/participants/{agent_id}/media?{REASON}"),
        format!("/api/v1/recordings/{rec}/participants/{agent_id}/download?{REASON}"),
    ] {
        let (s, b) = server.call("GET", &path, Some(&agent), None).await;
        assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")), "{path}: {b}");
    }
    let (s, b) = server.call("GET", &format!("/api/v1/recordings?{REASON}&call_id={call}"), Some(&supervisor), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["items"].as_array().map(Vec::len), Some(1), "the recording exists: {b}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
