// The real-browser test (issue 3, "A real browser"): the real server binary, headless Debian
// Chromium (driven by playwright-core) on the test page of client-sdk/js as the resident, and a
// webrtc-rs peer (tests/examples/browser_peer.rs) as the agent. Media both ways through the
// server's relay: the browser's remote <video> plays the peer's VP8, and the peer receives the
// browser's VP8 and Opus. The page passes no `confirmRecording` hook, so the module shows its
// default recording notice. During the call a frame of the remote video is captured with the
// module's `captureFrame` and filed with `uploadFrame` as a document of a case opened in the
// call, with the agent's token (what the agent console does).
//
// Run inside a loopback-only network namespace (scripts/test does):
//   unshare -n -- sh -c 'ip link set lo up && cd tests/browser && npm test'
// Needs: the binaries `cloud-window` and the example `browser_peer` built by cargo (found in
// $CARGO_TARGET_DIR/debug or <repo>/target/debug; override with CW_SERVER_BIN, CW_PEER_BIN),
// /usr/bin/chromium (override with CHROMIUM), ffmpeg (makes the VP8 test pattern).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(repo, 'target');
const serverBin = process.env.CW_SERVER_BIN ?? path.join(targetDir, 'debug', 'cloud-window');
const peerBin = process.env.CW_PEER_BIN ?? path.join(targetDir, 'debug', 'examples', 'browser_peer');
const chromiumBin = process.env.CHROMIUM ?? '/usr/bin/chromium';
const artifacts = path.join(here, 'artifacts');

const DEMO_PASSWORD = 'demo-pass-2026';
const AGENT = 'agent.li';
const RESIDENT_PHONE = '13800000001';

// The flags measured in WEBRTC-NOTES.md ("Real Chromium against a webrtc-rs server").
const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
];

const t0 = Date.now();
/** @param {string} msg */
const note = (msg) => console.log(`# [${((Date.now() - t0) / 1000).toFixed(2)} s] ${msg}`);

/** @type {string} */
let work;
/** @type {import('node:child_process').ChildProcess | undefined} */
let server;
/** @type {string[]} */
const serverLog = [];
/** @type {((line: string) => void)[]} */
const serverLogWatchers = [];
/** @type {string} */
let base;

/**
 * Resolves with the first server log line matching `re` (from now on, or already seen).
 * @param {RegExp} re
 * @param {number} ms
 * @returns {Promise<RegExpMatchArray>}
 */
function waitForLog(re, ms) {
  for (const line of serverLog) {
    const m = line.match(re);
    if (m) return Promise.resolve(m);
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no server log line matching ${re} within ${ms} ms`)), ms);
    serverLogWatchers.push((line) => {
      const m = line.match(re);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
  });
}

/**
 * JSON request to the server.
 * @param {string} method
 * @param {string} p
 * @param {unknown} [body]
 * @param {string} [token]
 */
async function api(method, p, body, token) {
  /** @type {Record<string, string>} */
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${base}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  /** @type {any} */
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text, headers: res.headers };
}

before(async () => {
  for (const [what, file] of [['server binary', serverBin], ['test peer', peerBin], ['chromium', chromiumBin]]) {
    assert.ok(existsSync(file), `${what} not found at ${file} (build with: cargo build -p signaling --bin cloud-window -p integration-tests --example browser_peer)`);
  }
  work = mkdtempSync(path.join(tmpdir(), 'cw-browser-'));
  mkdirSync(artifacts, { recursive: true });
  server = spawn(
    serverBin,
    ['--listen', '127.0.0.1:0', '--data-dir', path.join(work, 'data'), '--demo', '--log-format', 'json', '--drain-secs', '0', '--media-bind-ip', '127.0.0.1'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info,webrtc=warn,rtc=warn,sqlx=warn' } },
  );
  for (const s of [server.stdout, server.stderr]) {
    if (!s) continue;
    readline.createInterface({ input: s }).on('line', (line) => {
      serverLog.push(line);
      for (const w of serverLogWatchers) w(line);
    });
  }
  const m = await waitForLog(/"message":"listening".*"address":"([0-9.]+:\d+)"/, 20000);
  base = `http://${m[1]}`;
  note(`server listening at ${base}`);
});

after(async () => {
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((resolve) => {
      const timer = setTimeout(() => {
        server?.kill('SIGKILL');
        resolve(undefined);
      }, 5000);
      server?.once('exit', () => {
        clearTimeout(timer);
        resolve(undefined);
      });
    });
  }
  if (process.env.KEEP_WORK) note(`work dir kept: ${work}`);
  else if (work) rmSync(work, { recursive: true, force: true });
});

test('the server serves the browser module and the console with their content types', async () => {
  const js = await api('GET', '/sdk/js/cloud-window.js');
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type') ?? '', /^text\/javascript/);
  assert.match(js.text, /export async function connect/);
  const page = await api('GET', '/sdk/js/test-page/');
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
  const console_ = await api('GET', '/console/');
  assert.equal(console_.status, 200);
  assert.match(console_.headers.get('content-type') ?? '', /^text\/html/);
  const missing = await api('GET', '/sdk/js/nope.js');
  assert.equal(missing.status, 404);
});

test('a browser resident and a webrtc-rs agent exchange VP8 and Opus through the server', { timeout: 60000 }, async (t) => {
  // --- a VP8 test pattern for the agent to publish (a moving picture the browser can decode)
  const ivf = path.join(work, 'pattern.ivf');
  execFileSync('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=30', '-t', '1',
    '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '400k', '-g', '10', '-keyint_min', '10',
    '-auto-alt-ref', '0', '-lag-in-frames', '0', '-y', ivf,
  ]);
  note('test pattern encoded');

  // --- accounts and the call, over REST
  const agentLogin = await api('POST', '/api/v1/auth/staff/login', { username: AGENT, password: DEMO_PASSWORD });
  assert.equal(agentLogin.status, 200, agentLogin.text);
  const sent = await api('POST', '/api/v1/auth/otp/request', { phone: RESIDENT_PHONE });
  assert.equal(sent.status, 202, sent.text);
  // Demo mode writes the code to the server log.
  const codeLine = await waitForLog(/DEMO sign-in code.*"code":"(\d{6})"/, 5000);
  const residentLogin = await api('POST', '/api/v1/auth/otp/verify', { phone: RESIDENT_PHONE, code: codeLine[1] });
  assert.equal(residentLogin.status, 200, residentLogin.text);
  const residentToken = residentLogin.json.access_token;
  const opened = await api('POST', '/api/v1/calls', { resident_id: residentLogin.json.subject }, agentLogin.json.access_token);
  assert.equal(opened.status, 201, opened.text);
  const callId = opened.json.id;
  note(`call ${callId} opened`);

  // --- the agent: webrtc-rs peer over the WebSocket
  const peer = spawn(peerBin, ['--base', base, '--call', callId, '--username', AGENT, '--password', DEMO_PASSWORD, '--ivf', ivf, '--seconds', '50'], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'warn,webrtc=error,rtc=error' },
  });
  /** @type {any} */
  let peerStats = null;
  /** @type {any} */
  let peerJoined = null;
  /** @type {string[]} */
  const peerErrors = [];
  /** @type {string[]} */
  const peerStderr = [];
  readline.createInterface({ input: /** @type {import('node:stream').Readable} */ (peer.stdout) }).on('line', (line) => {
    /** @type {any} */
    let m;
    try {
      m = JSON.parse(line);
    } catch {
      return;
    }
    if (m.event === 'stats') peerStats = m;
    else if (m.event === 'joined') peerJoined = m;
    else if (m.event === 'error' || m.event === 'server_error') peerErrors.push(line);
  });
  readline.createInterface({ input: /** @type {import('node:stream').Readable} */ (peer.stderr) }).on('line', (l) => peerStderr.push(l));
  t.after(() => {
    peer.stdin?.end();
    setTimeout(() => peer.kill('SIGKILL'), 3000).unref();
  });

  // --- the resident: headless Chromium on the test page, served by the server itself
  const profile = path.join(work, 'chromium-profile');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumBin,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 720, height: 420 },
  });
  t.after(() => context.close());
  const page = context.pages()[0] ?? (await context.newPage());
  /** @type {string[]} */
  const consoleLines = [];
  page.on('console', (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => consoleLines.push(`pageerror: ${err.message}`));
  note('chromium started');
  await page.goto(`${base}/sdk/js/test-page/?call=${callId}&notice=default#token=${encodeURIComponent(residentToken)}`);

  const diagnose = async () => {
    const state = await page.evaluate(() => {
      const w = /** @type {any} */ (window).cwTest;
      return w ? { phase: w.phase, errors: w.errors, events: w.events.slice(-30), connectionState: w.connectionState } : null;
    }).catch((e) => String(e));
    return JSON.stringify({ page: state, console: consoleLines.slice(-20), peerStats, peerErrors, peerStderr: peerStderr.slice(-20) }, null, 1);
  };

  /**
   * @param {() => Promise<boolean> | boolean} cond
   * @param {number} ms
   * @param {string} what
   */
  const waitFor = async (cond, ms, what) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await cond()) return;
      if (peerErrors.length) break;
      const failed = await page.evaluate(() => /** @type {any} */ (window).cwTest?.phase === 'failed').catch(() => false);
      if (failed) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await page.screenshot({ path: path.join(artifacts, 'browser-call-failed.png') }).catch(() => {});
    assert.fail(`timed out waiting for ${what}\n${await diagnose()}`);
  };

  await waitFor(() => page.evaluate(() => /** @type {any} */ (window).cwTest?.phase === 'joined'), 10000, 'the page to join');
  await waitFor(() => peerJoined !== null, 10000, 'the peer to join');
  note('both joined');
  // Without a confirmRecording hook the module itself shows the recording notice, before media
  // (join resolves only after it is on the page), with the retention.
  const banner = page.locator('#cw-recording-notice');
  assert.ok(await banner.isVisible(), 'the default recording notice is visible');
  const bannerText = await banner.innerText();
  assert.match(bannerText, /录制中 REC/);
  assert.match(bannerText, /kept 180 days/);
  assert.equal(await banner.getAttribute('role'), 'alert');
  assert.equal(await page.locator('#notice.shown').count(), 0, 'the page\'s own notice was not asked for');

  // Browser side: the remote <video> has frames and plays on.
  await waitFor(
    () => page.evaluate(() => {
      const v = /** @type {HTMLVideoElement} */ (document.getElementById('remote'));
      return v.videoWidth > 0 && v.currentTime > 0;
    }),
    20000,
    'the remote video to start',
  );
  note('remote video started');
  const first = await page.evaluate(() => {
    const v = /** @type {HTMLVideoElement} */ (document.getElementById('remote'));
    return { t: v.currentTime, w: v.videoWidth, h: v.videoHeight, frames: v.getVideoPlaybackQuality().totalVideoFrames };
  });
  await new Promise((r) => setTimeout(r, 1500));
  const second = await page.evaluate(() => {
    const v = /** @type {HTMLVideoElement} */ (document.getElementById('remote'));
    return { t: v.currentTime, w: v.videoWidth, h: v.videoHeight, frames: v.getVideoPlaybackQuality().totalVideoFrames, paused: v.paused };
  });
  note(`remote video ${second.w}x${second.h}, currentTime ${first.t.toFixed(2)} → ${second.t.toFixed(2)} s, frames ${first.frames} → ${second.frames}`);
  assert.equal(second.w, 320);
  assert.equal(second.h, 240);
  assert.ok(second.t > first.t + 0.5, `currentTime advances: ${first.t} → ${second.t}`);
  assert.ok(second.frames > first.frames + 10, `frames decoded: ${first.frames} → ${second.frames}`);

  // Rust side: the browser's VP8 and Opus arrive, under the resident's participant id.
  const residentPid = await page.evaluate(() => /** @type {any} */ (window).cwTest.participantId);
  await waitFor(() => peerStats?.by_stream?.[residentPid]?.vp8 >= 50 && peerStats.by_stream[residentPid].opus >= 50, 15000, 'the peer to receive the browser\'s media');
  const fromBrowser = peerStats.by_stream[residentPid];
  note(`peer received from the browser: ${fromBrowser.vp8} VP8 packets (${fromBrowser.vp8_keyframes} keyframe starts), ${fromBrowser.opus} Opus packets; codecs ${fromBrowser.mime_types.join(', ')}`);
  assert.ok(fromBrowser.vp8_keyframes >= 1, 'a VP8 keyframe from the browser');
  assert.equal(fromBrowser.other, 0, 'nothing but VP8 and Opus');
  const pagePeer = await page.evaluate(() => /** @type {any} */ (window).cwTest.remoteParticipants);
  assert.deepEqual(pagePeer, [peerJoined.participant_id], 'the browser sees the agent\'s stream under its participant id');

  // A frame of the remote video, filed as a case document of this call (as the agent).
  const agentToken = agentLogin.json.access_token;
  const matters = await api('GET', '/api/v1/matters');
  assert.equal(matters.status, 200, matters.text);
  const matterCode = matters.json.find((/** @type {any} */ m) => m.active).code;
  const opencase = await api('POST', '/api/v1/cases', { matter_code: matterCode, resident_id: residentLogin.json.subject, call_id: callId }, agentToken);
  assert.equal(opencase.status, 201, opencase.text);
  const caseId = opencase.json.id;
  const captured = await page.evaluate(async ({ caseId, callId, agentToken }) => {
    const cw = await import('/sdk/js/cloud-window.js');
    const v = /** @type {HTMLVideoElement} */ (document.getElementById('remote'));
    const blob = await cw.captureFrame(v, { type: 'image/png' });
    let refused = '';
    try {
      await cw.captureFrame(v, /** @type {any} */ ({ type: 'image/gif' }));
    } catch (e) {
      refused = String(e);
    }
    const doc = await cw.uploadFrame(caseId, callId, blob, agentToken, { chunkSize: 4096 });
    return { doc, type: blob.type, size: blob.size, width: v.videoWidth, height: v.videoHeight, refused };
  }, { caseId, callId, agentToken });
  note(`captured a ${captured.width}x${captured.height} frame (${captured.size} bytes ${captured.type}); document ${captured.doc.id}`);
  assert.match(captured.refused, /image\/jpeg or image\/png/, 'other formats are refused');
  const doc = captured.doc;
  assert.equal(doc.status, 'ready');
  assert.equal(doc.source, 'video_frame');
  assert.equal(doc.call_id, callId);
  assert.equal(doc.case_id, caseId);
  assert.equal(doc.content_type, 'image/png');
  assert.equal(doc.size, captured.size);
  // The stored bytes are a PNG of the video's size.
  const content = await fetch(`${base}${doc.content_url}`, { headers: { authorization: `Bearer ${agentToken}` } });
  assert.equal(content.status, 200);
  const png = Buffer.from(await content.arrayBuffer());
  assert.equal(png.length, captured.size);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG');
  assert.equal(png.readUInt32BE(16), captured.width, 'width of the video');
  assert.equal(png.readUInt32BE(20), captured.height, 'height of the video');
  assert.equal(captured.width, 320);
  assert.ok(png.length > 5000, `a real picture, not a blank frame (${png.length} bytes)`);
  // ... with a thumbnail.
  assert.ok(doc.thumbnail_url, 'a thumbnail URL');
  const thumb = await fetch(`${base}${doc.thumbnail_url}`, { headers: { authorization: `Bearer ${agentToken}` } });
  assert.equal(thumb.status, 200);
  assert.match(thumb.headers.get('content-type') ?? '', /^image\/jpeg/);
  const thumbBytes = Buffer.from(await thumb.arrayBuffer());
  assert.deepEqual([...thumbBytes.subarray(0, 2)], [0xff, 0xd8], 'a JPEG thumbnail');

  await page.screenshot({ path: path.join(artifacts, 'browser-call.png') });
  note(`screenshot: ${path.join(artifacts, 'browser-call.png')}`);

  // The signaling socket drops: the module resumes the same session, media goes on.
  const before = await page.evaluate(() => {
    const s = /** @type {any} */ (window).cwTest.call.session;
    /** @type {any} */ (window).cwResumed = null;
    s.addEventListener('reconnected', (/** @type {CustomEvent} */ e) => { /** @type {any} */ (window).cwResumed = e.detail.resumed; });
    const sessionId = s.sessionId;
    s.ws.close();
    return { sessionId, t: /** @type {HTMLVideoElement} */ (document.getElementById('remote')).currentTime };
  });
  await waitFor(() => page.evaluate(() => /** @type {any} */ (window).cwResumed !== null), 10000, 'the session to resume');
  const resumed = await page.evaluate(() => ({
    resumed: /** @type {any} */ (window).cwResumed,
    sessionId: /** @type {any} */ (window).cwTest.call.session.sessionId,
    state: /** @type {any} */ (window).cwTest.call.session.state,
  }));
  assert.deepEqual(resumed, { resumed: true, sessionId: before.sessionId, state: 'open' }, 'resumed the same session');
  const vp8Before = peerStats.by_stream[residentPid].vp8;
  await new Promise((r) => setTimeout(r, 1000));
  const tAfter = await page.evaluate(() => /** @type {HTMLVideoElement} */ (document.getElementById('remote')).currentTime);
  assert.ok(tAfter > before.t + 0.5, `video goes on after the resume: ${before.t} → ${tAfter}`);
  assert.ok(peerStats.by_stream[residentPid].vp8 > vp8Before, 'the browser keeps sending after the resume');
  note('signaling socket dropped and resumed; media kept flowing');
  const errors = await page.evaluate(() => /** @type {any} */ (window).cwTest.errors);
  assert.deepEqual(errors, [], 'no errors on the page');
  assert.deepEqual(peerErrors, [], 'no errors in the peer');
});
