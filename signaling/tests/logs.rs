//! The real binary, as an operator runs it (issue 2, "Tests"): `cloud-window --demo
//! --log-format json`, a resident's one-time-code sign-in, staff sign-ins and a failed one, a
//! refresh, then SIGTERM. It exits 0 within the drain time; every line it wrote to stdout and
//! stderr is a JSON object; and no line holds the resident's full phone number, a token it
//! issued, or a password it was sent. The one-time code appears only where demo mode puts it
//! on purpose: the one "DEMO sign-in code" line (with the phone masked), which is how a demo
//! user gets it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const DRAIN_SECS: u64 = 1;
const PHONE: &str = "13912345678";
const STAFF_PASSWORD: &str = "Log-Test-Pa55word-7731";
const WRONG_PASSWORD: &str = "Wrong-Guess-Pa55-9917";

struct Server {
    child: std::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start() -> Server {
    let dir = std::env::temp_dir().join(format!("cw-logs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-window"))
        .args(["--demo", "--log-format", "json", "--listen", &addr.to_string()])
        .args(["--data-dir", dir.join("data").to_str().unwrap(), "--drain-secs", &DRAIN_SECS.to_string()])
        // Everything of our own, down to trace, and the request traces.
        .env("RUST_LOG", "info,signaling=trace,tower_http=debug,webrtc=warn,rtc=warn,sqlx=warn")
        .env_remove("CW_DATABASE_URL")
        .env_remove("CW_LOG_FORMAT")
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("the server binary starts");
    let server = Server { child, addr, dir };
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await {
            if r.status().is_success() {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not ready: {}", std::fs::read_to_string(server.dir.join("stdout")).unwrap_or_default());
}

async fn post(http: &reqwest::Client, addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = http.post(format!("http://{addr}{path}")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// The log lines written so far, from both streams.
fn lines(dir: &std::path::Path) -> Vec<String> {
    let mut all = vec![];
    for stream in ["stdout", "stderr"] {
        let text = std::fs::read_to_string(dir.join(stream)).unwrap();
        all.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    all
}

/// Does `needle` occur in `hay` as a whole word (not inside a longer run of letters and
/// digits, e.g. a timestamp's fraction or an id)?
fn has_word(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric()) && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

#[tokio::test]
async fn json_logs_hold_no_secrets_and_sigterm_drains_and_exits_cleanly() {
    let mut server = start().await;
    let (addr, dir) = (server.addr, server.dir.clone());
    let http = reqwest::Client::new();
    let mut secrets: Vec<(String, &str)> = vec![
        (PHONE.into(), "the full phone number"),
        (STAFF_PASSWORD.into(), "a password"),
        (WRONG_PASSWORD.into(), "a wrong password"),
    ];

    // A resident signs in with a code: the first sign-in registers the phone.
    let (status, _) = post(&http, addr, "/api/v1/auth/otp/request", None, json!({"phone": PHONE})).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let code_line = lines(&dir)
        .into_iter()
        .map(|l| serde_json::from_str::<Value>(&l).unwrap_or(Value::Null))
        .find(|v| v["message"].as_str().is_some_and(|m| m.contains("DEMO sign-in code")))
        .expect("demo mode logs the code");
    let code = code_line["code"].as_str().unwrap().to_string();
    assert_eq!(code_line["phone"], "139****5678", "the code line masks the phone: {code_line}");
    let (status, wrong) = post(&http, addr, "/api/v1/auth/otp/verify", None, json!({"phone": PHONE, "code": "000000"})).await;
    assert!(status == 401 || code == "000000", "{wrong}");
    let (status, login) = post(&http, addr, "/api/v1/auth/otp/verify", None, json!({"phone": PHONE, "code": code})).await;
    assert_eq!(status, 200, "{login}");
    let access = login["access_token"].as_str().unwrap().to_string();
    let res = http.get(format!("http://{addr}/api/v1/me")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let (status, refreshed) =
        post(&http, addr, "/api/v1/auth/refresh", None, json!({"refresh_token": login["refresh_token"]})).await;
    assert_eq!(status, 200, "{refreshed}");
    for pair in [&login, &refreshed] {
        for key in ["access_token", "refresh_token"] {
            let t = pair[key].as_str().unwrap().to_string();
            // A JWT's signature alone is as good as the token: look for it too.
            if let Some(sig) = t.rsplit('.').next().filter(|s| s.len() >= 20 && *s != t) {
                secrets.push((sig.to_string(), "a token signature"));
            }
            secrets.push((t, "a token"));
        }
    }

    // Staff: the admin adds an account, it signs in, and a wrong password fails.
    let (status, admin) = post(
        &http,
        addr,
        "/api/v1/auth/staff/login",
        None,
        json!({"username": "admin", "password": signaling::demo::DEMO_PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{admin}");
    let admin_token = admin["access_token"].as_str().unwrap().to_string();
    let new_staff = json!({"username": "log.tester", "display_name": "日志测试", "role": "agent", "password": STAFF_PASSWORD});
    let (status, body) = post(&http, addr, "/api/v1/staff", Some(&admin_token), new_staff).await;
    assert_eq!(status, 201, "{body}");
    let (status, staff) =
        post(&http, addr, "/api/v1/auth/staff/login", None, json!({"username": "log.tester", "password": STAFF_PASSWORD})).await;
    assert_eq!(status, 200, "{staff}");
    let (status, failed) =
        post(&http, addr, "/api/v1/auth/staff/login", None, json!({"username": "log.tester", "password": WRONG_PASSWORD})).await;
    assert_eq!((status, failed["code"].as_str()), (401, Some("invalid-credentials")));
    for pair in [&admin, &staff] {
        for key in ["access_token", "refresh_token"] {
            secrets.push((pair[key].as_str().unwrap().to_string(), "a token"));
        }
    }

    // SIGTERM: ready turns 503 while draining, then the process exits 0 within the drain time.
    let pid = server.child.id().to_string();
    let asked = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut saw_draining = false;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).timeout(Duration::from_millis(300)).send().await {
            saw_draining |= r.status().as_u16() == 503;
        }
        assert!(asked.elapsed() < Duration::from_secs(DRAIN_SECS + 10), "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took >= Duration::from_millis(DRAIN_SECS * 1000 - 100), "stopped before draining: {took:?}");
    assert!(took < Duration::from_secs(DRAIN_SECS + 5), "took {took:?} to stop");
    assert!(saw_draining, "/readyz said 503 while draining");

    // Every line is one JSON object; no secret is in any line.
    let all = lines(&dir);
    assert!(all.len() > 10, "the server logged: {all:?}");
    let mut problems = vec![];
    let mut code_lines = 0;
    for line in &all {
        let Ok(Value::Object(v)) = serde_json::from_str::<Value>(line) else {
            problems.push(format!("not a JSON object: {line}"));
            continue;
        };
        let is_code_line = v.get("message").and_then(Value::as_str).is_some_and(|m| m.contains("DEMO sign-in code"));
        if is_code_line {
            code_lines += 1;
        } else if has_word(line, &code) {
            problems.push(format!("the one-time code outside its demo line: {line}"));
        }
        // The demo banner prints the demo accounts' shared password on purpose; nothing else may.
        let is_banner = v.get("target").and_then(Value::as_str) == Some("demo");
        if !is_banner && line.contains(signaling::demo::DEMO_PASSWORD) {
            problems.push(format!("the demo password outside the banner: {line}"));
        }
        for (secret, what) in &secrets {
            if line.contains(secret.as_str()) {
                problems.push(format!("{what} in: {line}"));
            }
        }
    }
    assert_eq!(code_lines, 1, "exactly one code was sent");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The lines that matter are there, so the absence of secrets means something.
    let text = all.join("\n");
    for expected in ["listening", "DEMO MODE", "shutdown requested: draining", "/api/v1/auth/staff/login"] {
        assert!(text.contains(expected), "no log line mentions {expected:?}");
    }
}
