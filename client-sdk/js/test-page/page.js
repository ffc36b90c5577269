// Test page for cloud-window.js: joins the call named in the URL and shows the remote video.
//
//   /sdk/js/test-page/?call=<call id>#token=<access token>
//
// Optional query parameters: `base` (server URL, default this page's origin), `media=0`
// (receive only, no camera), `notice=default` (no `confirmRecording` hook: the module shows its
// own recording notice banner). The token goes in the fragment so it never reaches server logs.
// State for tests is kept in `window.cwTest`.
import { connect } from '../cloud-window.js';

const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const statusEl = /** @type {HTMLElement} */ (document.getElementById('status'));
const remoteVideo = /** @type {HTMLVideoElement} */ (document.getElementById('remote'));
const localVideo = /** @type {HTMLVideoElement} */ (document.getElementById('local'));

/**
 * @typedef {object} TestState
 * @property {string} phase
 * @property {string|null} participantId
 * @property {string[]} remoteParticipants
 * @property {string[]} events
 * @property {string[]} errors
 * @property {string|null} connectionState
 * @property {import('../cloud-window.js').Call|null} call
 */

/** @type {TestState} */
const state = { phase: 'starting', participantId: null, remoteParticipants: [], events: [], errors: [], connectionState: null, call: null };
/** @type {any} */ (window).cwTest = state;

/** @param {string} line */
function log(line) {
  state.events.push(line);
  statusEl.textContent = `${state.phase}\n${state.events.slice(-12).join('\n')}`;
}

/** @param {unknown} err */
function fail(err) {
  const text = err instanceof Error ? err.message : String(err);
  state.errors.push(text);
  log(`error: ${text}`);
}

async function main() {
  const callId = params.get('call');
  const token = fragment.get('token') ?? params.get('token');
  if (!callId || !token) throw new Error('give ?call=<id>#token=<token>');
  const baseUrl = params.get('base') ?? location.origin;

  /** @type {MediaStream|undefined} */
  let localStream;
  if (params.get('media') !== '0') {
    localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
    localVideo.srcObject = localStream;
  }

  state.phase = 'connecting';
  const session = await connect({ baseUrl, token, log: (m) => { if (!m.startsWith('<- ice_candidate')) log(m); } });
  session.addEventListener('reconnecting', () => log('signaling: reconnecting'));
  session.addEventListener('reconnected', () => log('signaling: reconnected'));
  session.addEventListener('error', (e) => fail(/** @type {CustomEvent} */ (e).detail));

  state.phase = 'joining';
  const call = await session.join(callId, {
    localStream,
    confirmRecording: params.get('notice') === 'default' ? undefined : (notice) => {
      // A real app waits for the user to acknowledge; the test page shows it and goes on.
      const text = /** @type {HTMLElement} */ (document.getElementById('notice-text'));
      text.textContent = `${notice.notice_zh} ${notice.notice_en}`;
      /** @type {HTMLElement} */ (document.getElementById('notice')).classList.add('shown');
    },
  });
  state.call = call;
  state.participantId = call.participantId;
  state.phase = 'joined';
  log(`joined as ${call.role} ${call.participantId}`);

  call.addEventListener('track', (e) => {
    const { participantId, stream, track } = /** @type {CustomEvent} */ (e).detail;
    log(`track ${track.kind} from ${participantId}`);
    if (!state.remoteParticipants.includes(participantId)) state.remoteParticipants.push(participantId);
    if (remoteVideo.srcObject !== stream) {
      remoteVideo.srcObject = stream;
      const p = call.participants.get(participantId);
      /** @type {HTMLElement} */ (document.getElementById('remote-caption')).textContent = `对方 / remote: ${p ? p.display_name : participantId}`;
    }
    void remoteVideo.play().catch(() => {});
  });
  call.addEventListener('connection-state', (e) => {
    state.connectionState = /** @type {CustomEvent} */ (e).detail.state;
    log(`media: ${state.connectionState}`);
  });
  call.addEventListener('participant-joined', (e) => log(`participant joined: ${/** @type {CustomEvent} */ (e).detail.participant.display_name}`));
  call.addEventListener('participant-left', (e) => log(`participant left: ${/** @type {CustomEvent} */ (e).detail.participantId}`));
  call.addEventListener('chat', (e) => log(`chat: ${/** @type {CustomEvent} */ (e).detail.text}`));
  call.addEventListener('ended', (e) => {
    state.phase = 'ended';
    log(`call ended: ${/** @type {CustomEvent} */ (e).detail.reason}`);
  });
  call.addEventListener('error', (e) => fail(/** @type {CustomEvent} */ (e).detail));
}

main().catch((err) => {
  state.phase = 'failed';
  fail(err);
});
