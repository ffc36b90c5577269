// cloud-window browser module (first cut): signaling protocol v1 over one WebSocket, and one
// RTCPeerConnection per call with the server's media relay. Plain ES module with JSDoc types,
// no build step; served by the server at /sdk/js/cloud-window.js. See README.md beside it and
// docs/protocol.md for the protocol.
//
//   import { connect } from '/sdk/js/cloud-window.js';
//   const session = await connect({ baseUrl: location.origin, token });
//   const call = await session.join(callId, { localStream });
//   call.addEventListener('track', (e) => { video.srcObject = e.detail.stream; });

/** The protocol version this module speaks. */
export const PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------------------------------------
// Wire types (mirrors of signaling/protocol; only what this module reads).

/**
 * @typedef {'resident'|'device'|'agent'|'helper'|'supervisor'|'auditor'|'admin'} Role
 * @typedef {'resident'|'device'|'agent'|'helper'|'observer'} ParticipantRole
 *
 * @typedef {object} IceServer
 * @property {string[]} urls
 * @property {string} [username]
 * @property {string} [credential]
 *
 * @typedef {object} RecordingNotice  Must be shown before media is sent, and an indicator kept
 *   visible for the whole call.
 * @property {boolean} recorded
 * @property {string} notice_zh
 * @property {string} notice_en
 * @property {string} purpose_zh
 * @property {string} purpose_en
 * @property {number} retention_days
 * @property {string} [policy_url]
 *
 * @typedef {object} ParticipantInfo
 * @property {string} participant_id
 * @property {ParticipantRole} role
 * @property {string} display_name
 * @property {'connected'|'reconnecting'} state
 * @property {boolean} audio_muted
 * @property {boolean} video_off
 * @property {string} joined_at
 *
 * @typedef {{type: string, seq: number, reply_to?: number, [field: string]: any}} ServerMessage
 *   Any server message: `type`, `seq`, `reply_to` and its own fields (docs/protocol.md § 10).
 *
 * @typedef {{type: string, id?: number, [field: string]: any}} ClientMessage
 */

/**
 * @typedef {object} ConnectOptions
 * @property {string} baseUrl  The server, e.g. `https://window.example.gov.cn` (the socket goes
 *   to `/ws` there, `ws:` or `wss:` to match).
 * @property {string} token  Access token (JWT).
 * @property {string} [wsUrl]  Overrides the socket URL.
 * @property {string} [userAgent]  Sent in `hello` (at most 256 characters).
 * @property {(msg: string, data?: unknown) => void} [log]  Debug log.
 */

/**
 * @typedef {object} JoinOptions
 * @property {MediaStream} [localStream]  Camera and microphone to publish (none: receive only).
 * @property {ParticipantRole} [role]
 * @property {string} [callToken]  A token scoped to the call (invited helpers).
 * @property {(notice: RecordingNotice) => (void|Promise<void>)} [confirmRecording]  Called with
 *   the recording notice after `joined` and before any media is sent; media starts once it
 *   returns (or its promise resolves). It replaces the default notice: the application then
 *   shows the notice itself and keeps a recording indicator visible for the whole call.
 *   Without it, the module shows the notice itself before any media is sent: a banner
 *   ({@link showRecordingNotice}) at the top of the page, in Chinese and English with the
 *   retention, that stays until the call ends.
 */

/** A refused request: the server's `error` message. */
export class SignalingError extends Error {
  /**
   * @param {string} code  Stable error code (docs/protocol.md section 11).
   * @param {string} message
   * @param {number} [retryAfterMs]
   */
  constructor(code, message, retryAfterMs) {
    super(`${code}: ${message}`);
    this.name = 'SignalingError';
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * @param {string} type
 * @param {unknown} [detail]
 * @returns {CustomEvent}
 */
function event(type, detail) {
  return new CustomEvent(type, { detail });
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------

/**
 * Opens a signaling session: resolves once the server has answered `welcome`.
 * @param {ConnectOptions} options
 * @returns {Promise<Session>}
 */
export async function connect(options) {
  const session = new Session(options);
  await session.open();
  return session;
}

/**
 * @typedef {object} Pending
 * @property {ClientMessage} msg
 * @property {(m: ServerMessage) => void} resolve
 * @property {(e: Error) => void} reject
 */

/**
 * One signaling session: a WebSocket that is reopened when it drops, the session resumed with
 * its id and the last `seq` seen (replayed messages are deduplicated by `seq`), heartbeats, and
 * requests answered by `reply_to`.
 *
 * Events: `welcome`, `reconnecting` (socket lost; retrying), `reconnected` (`resumed`, or a new
 * session after `rejoin_required`: detail `{resumed: boolean}`), `message` (every server
 * message, detail the message), `closed` (for good: detail `{reason}`), `error`.
 */
export class Session extends EventTarget {
  /** @param {ConnectOptions} options */
  constructor(options) {
    super();
    this.options = options;
    this.token = options.token;
    /** @type {string|null} */
    this.sessionId = null;
    /** @type {string|null} */
    this.userId = null;
    /** @type {Role|null} */
    this.role = null;
    /** Highest `seq` processed. */
    this.lastSeq = 0;
    /** @type {'connecting'|'open'|'reconnecting'|'closed'} */
    this.state = 'connecting';
    this.heartbeatIntervalMs = 10000;
    this.heartbeatTimeoutMs = 20000;
    this.resumeWindowMs = 60000;
    /** @type {WebSocket|null} */
    this.ws = null;
    this._nextId = 1;
    /** @type {Map<number, Pending>} */
    this._pending = new Map();
    /** @type {Map<string, Call>} */
    this.calls = new Map();
    /** @type {ReturnType<typeof setInterval>|undefined} */
    this._pingTimer = undefined;
    this._lastHeard = Date.now();
    /** When the socket was lost (for the resume window). */
    this._lostAt = 0;
    this._attempt = 0;
    /** Messages queued while the socket is down (no id: best effort, e.g. candidates). */
    /** @type {ClientMessage[]} */
    this._outbox = [];
  }

  /** @param {string} msg @param {unknown} [data] */
  _log(msg, data) {
    this.options.log?.(msg, data);
  }

  get wsUrl() {
    if (this.options.wsUrl) return this.options.wsUrl;
    const u = new URL('/ws', this.options.baseUrl);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.toString();
  }

  /**
   * Opens the first socket and says `hello`.
   * @returns {Promise<void>}
   */
  async open() {
    await this._openSocket();
    await this._hello();
    this.state = 'open';
    this._startHeartbeat();
  }

  /** @returns {Promise<void>} */
  _openSocket() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.wsUrl);
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this._lastHeard = Date.now();
        resolve();
      };
      ws.onmessage = (ev) => {
        if (this.ws !== ws) return;
        this._lastHeard = Date.now();
        this._onFrame(String(ev.data));
      };
      ws.onclose = () => {
        if (!opened) reject(new Error('the signaling socket could not be opened'));
        if (this.ws !== ws) return;
        // A hello/resume waiting on this socket will never be answered.
        for (const [id, p] of this._pending) {
          if (p.msg.type === 'hello' || p.msg.type === 'resume') {
            this._pending.delete(id);
            p.reject(new Error('the signaling socket closed'));
          }
        }
        this._onSocketLost();
      };
      ws.onerror = () => {
        /* onclose follows */
      };
    });
  }

  /** @param {ClientMessage} msg */
  _write(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  /**
   * Sends a message without an id (no answer expected; errors arrive as `error` events). While
   * the socket is down it waits in an outbox and goes out after the resume.
   * @param {ClientMessage} msg
   */
  send(msg) {
    if (this.state === 'closed') return;
    if (this.state !== 'open' || !this._write(msg)) this._outbox.push(msg);
  }

  /**
   * Sends a message with an id; resolves with the answer (`reply_to` = id), rejects with a
   * {@link SignalingError}. Survives socket drops: unanswered requests are re-sent after the
   * resume with the same id (the server drops duplicates).
   * @param {ClientMessage} msg
   * @returns {Promise<ServerMessage>}
   */
  request(msg) {
    if (this.state === 'closed') return Promise.reject(new Error('the session is closed'));
    const id = this._nextId++;
    const full = { ...msg, id };
    return new Promise((resolve, reject) => {
      this._pending.set(id, { msg: full, resolve, reject });
      if (this.state === 'open' || msg.type === 'hello' || msg.type === 'resume') this._write(full);
    });
  }

  /** @returns {Promise<void>} */
  async _hello() {
    const ua = (this.options.userAgent ?? `cloud-window.js/0.1 ${navigator.userAgent}`).slice(0, 256);
    const welcome = await this.request({ type: 'hello', protocol_version: PROTOCOL_VERSION, token: this.token, user_agent: ua });
    this.sessionId = welcome.session_id;
    this.userId = welcome.user_id;
    this.role = welcome.role;
    this.heartbeatIntervalMs = welcome.heartbeat_interval_ms ?? this.heartbeatIntervalMs;
    this.heartbeatTimeoutMs = welcome.heartbeat_timeout_ms ?? this.heartbeatTimeoutMs;
    this.resumeWindowMs = welcome.resume_window_ms ?? this.resumeWindowMs;
    this.dispatchEvent(event('welcome', welcome));
  }

  _startHeartbeat() {
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => {
      if (this.state !== 'open') return;
      if (Date.now() - this._lastHeard > this.heartbeatTimeoutMs) {
        this._log('server silent too long: reconnecting');
        this.ws?.close();
        this._onSocketLost();
        return;
      }
      this._write({ type: 'ping', ts: Date.now() });
    }, this.heartbeatIntervalMs);
  }

  /** @param {string} text */
  _onFrame(text) {
    /** @type {ServerMessage} */
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      this._log('unparseable frame', text);
      return;
    }
    if (typeof m !== 'object' || m === null || typeof m.type !== 'string') return;
    const seq = typeof m.seq === 'number' ? m.seq : 0;
    // Replayed or duplicated: already processed.
    if (seq > 0 && seq <= this.lastSeq) return;
    if (seq > 0) this.lastSeq = seq;
    this._log(`<- ${m.type}`, m);

    if (m.reply_to !== undefined && m.reply_to !== null) {
      const p = this._pending.get(m.reply_to);
      if (p) {
        this._pending.delete(m.reply_to);
        if (m.type === 'error') p.reject(new SignalingError(m.code, m.message, m.retry_after_ms));
        else if (m.type === 'rejoin_required') p.resolve(m);
        else p.resolve(m);
      }
    }
    switch (m.type) {
      case 'goodbye':
        this._onGoodbye(m);
        return;
      case 'error':
        if (m.reply_to === undefined || m.reply_to === null) this.dispatchEvent(event('error', new SignalingError(m.code, m.message, m.retry_after_ms)));
        break;
      default:
        break;
    }
    this.dispatchEvent(event('message', m));
    const callId = m.call_id;
    if (typeof callId === 'string') this.calls.get(callId)?._onMessage(m);
  }

  /** @param {ServerMessage} m */
  _onGoodbye(m) {
    if (m.reconnect) {
      this._log('goodbye with reconnect: reconnecting', m);
      return; // the socket closes; _onSocketLost reconnects
    }
    this.close(m.reason ?? 'goodbye');
  }

  _onSocketLost() {
    if (this.state === 'closed' || this.state === 'reconnecting' || this.state === 'connecting') return;
    this.state = 'reconnecting';
    this._lostAt = Date.now();
    this.dispatchEvent(event('reconnecting'));
    void this._reconnectLoop();
  }

  async _reconnectLoop() {
    this._attempt = 0;
    while (this.state === 'reconnecting') {
      const delay = this._attempt === 0 ? 0 : Math.min(8000, 500 * 2 ** (this._attempt - 1)) * (0.75 + Math.random() * 0.5);
      this._attempt++;
      if (delay) await sleep(delay);
      if (this.state !== 'reconnecting') return;
      try {
        await this._openSocket();
      } catch {
        continue;
      }
      try {
        let resumed = false;
        if (this.sessionId && Date.now() - this._lostAt < this.resumeWindowMs) {
          const answer = await this._requestNow({ type: 'resume', session_id: this.sessionId, last_seq: this.lastSeq, token: this.token });
          if (answer.type === 'resumed') {
            resumed = true;
            this._afterResume(answer);
          }
        }
        if (!resumed) {
          // A new session: seq starts again; calls must join again.
          this.lastSeq = 0;
          this.sessionId = null;
          this._failPending(new Error('the session was lost'));
          await this._hello();
        }
        this.state = 'open';
        this._startHeartbeat();
        const outbox = this._outbox.splice(0);
        for (const msg of outbox) this._write(msg);
        this.dispatchEvent(event('reconnected', { resumed }));
        for (const call of this.calls.values()) void call._afterReconnect(resumed);
        return;
      } catch (err) {
        this._log('reconnect failed', err);
        if (err instanceof SignalingError && (err.code === 'unauthenticated' || err.code === 'token_expired' || err.code === 'forbidden')) {
          this.close(err.code);
          return;
        }
        this.ws?.close();
      }
    }
  }

  /**
   * A request sent now, whatever the state (resume, hello during reconnect).
   * @param {ClientMessage} msg
   * @returns {Promise<ServerMessage>}
   */
  _requestNow(msg) {
    const id = this._nextId++;
    const full = { ...msg, id };
    return new Promise((resolve, reject) => {
      this._pending.set(id, { msg: full, resolve, reject });
      this._write(full);
    });
  }

  /** @param {ServerMessage} resumed */
  _afterResume(resumed) {
    const lastClientId = resumed.last_client_id ?? 0;
    for (const [id, p] of this._pending) {
      if (p.msg.type === 'ping' || p.msg.type === 'resume' || p.msg.type === 'hello') continue;
      if (id > lastClientId) this._write(p.msg);
    }
    if (Array.isArray(resumed.ice_servers)) {
      for (const call of this.calls.values()) call._setIceServers(resumed.ice_servers);
    }
  }

  /** @param {Error} err */
  _failPending(err) {
    for (const [id, p] of this._pending) {
      if (p.msg.type === 'resume' || p.msg.type === 'hello') continue;
      this._pending.delete(id);
      p.reject(err);
    }
  }

  /**
   * Joins a call: resolves with the {@link Call} once `joined` arrived (media negotiation goes
   * on in the background; watch the call's events).
   * @param {string} callId
   * @param {JoinOptions} [options]
   * @returns {Promise<Call>}
   */
  async join(callId, options = {}) {
    const call = this.call(callId, options);
    await call.join();
    return call;
  }

  /**
   * A call not joined yet: add listeners (e.g. for the first `joined`), then `await
   * call.join()`. `session.join(id, options)` does both at once.
   * @param {string} callId
   * @param {JoinOptions} [options]
   * @returns {Call}
   */
  call(callId, options = {}) {
    const call = new Call(this, callId, options);
    this.calls.set(callId, call);
    return call;
  }

  /**
   * Closes the session for good (no reconnect).
   * @param {string} [reason]
   */
  close(reason = 'closed') {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearInterval(this._pingTimer);
    this._failPending(new Error(`the session is closed (${reason})`));
    for (const call of this.calls.values()) call._close();
    this.calls.clear();
    this.ws?.close();
    this.dispatchEvent(event('closed', { reason }));
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * One call: its peer connection with the server's relay.
 *
 * Events (`CustomEvent`, payload in `detail`):
 * - `joined` `{participantId, role, participants, recording}`: show `recording` to the user.
 * - `track` `{participantId, stream, track}`: a remote track; `stream` collects everything
 *   from that participant (its id is the participant id).
 * - `track-ended` `{participantId, stream, track}`.
 * - `participant-joined` `{participant}`, `participant-left` `{participantId, reason}`,
 *   `participant-reconnecting` / `participant-reconnected` `{participantId}`.
 * - `chat` `{messageId, sender, senderName, sentAt, text}` (own messages included).
 * - `media-state` `{participantId, audioMuted, videoOff}`.
 * - `connection-state` `{state}` (the peer connection's `connectionState`).
 * - `ended` `{reason, endedBy}`: the call is over; the connection is closed.
 * - `error` an `Error` (negotiation failures, refused messages).
 */
export class Call extends EventTarget {
  /**
   * @param {Session} session
   * @param {string} callId
   * @param {JoinOptions} options
   */
  constructor(session, callId, options) {
    super();
    this.session = session;
    this.callId = callId;
    this.options = options;
    /** @type {string|null} */
    this.participantId = null;
    /** @type {ParticipantRole|null} */
    this.role = null;
    /** @type {RecordingNotice|null} */
    this.recording = null;
    /** @type {Map<string, ParticipantInfo>} */
    this.participants = new Map();
    /** Remote streams by participant id. @type {Map<string, MediaStream>} */
    this.remoteStreams = new Map();
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    this.ended = false;
    this._makingOffer = false;
    /** Our offer is out and its answer has not arrived. */
    this._offerOutstanding = false;
    this._mediaStarted = false;
    /** The default recording notice, while shown. @type {HTMLElement|null} */
    this._noticeBanner = null;
    /** Serialises everything touching the peer connection's descriptions. @type {Promise<void>} */
    this._chain = Promise.resolve();
    /** Remote candidates that arrived before a remote description. @type {RTCIceCandidateInit[]} */
    this._pendingCandidates = [];
    /** @type {ReturnType<typeof setTimeout>|undefined} */
    this._disconnectTimer = undefined;
    this._iceRestartAt = 0;
    /** @type {RTCIceServer[]} */
    this._iceServers = [];
    /** @type {RTCIceTransportPolicy} */
    this._icePolicy = 'all';
  }

  /** @param {string} msg @param {unknown} [data] */
  _log(msg, data) {
    this.session._log(`[call ${this.callId.slice(0, 8)}] ${msg}`, data);
  }

  /** @param {unknown} err */
  _error(err) {
    const e = err instanceof Error ? err : new Error(String(err));
    this._log('error', e);
    this.dispatchEvent(event('error', e));
  }

  /**
   * Runs `fn` after everything queued before it.
   * @param {() => Promise<void>} fn
   */
  _serial(fn) {
    this._chain = this._chain.then(fn).catch((err) => this._error(err));
    return this._chain;
  }

  /** @returns {ClientMessage} */
  _joinMessage() {
    /** @type {ClientMessage} */
    const msg = { type: 'join', call_id: this.callId };
    if (this.options.role) msg.role = this.options.role;
    if (this.options.callToken) msg.call_token = this.options.callToken;
    return msg;
  }

  /**
   * Joins (once): resolves after `joined`, with media negotiation started.
   * @returns {Promise<void>}
   */
  async join() {
    try {
      const joined = await this.session.request(this._joinMessage());
      await this._onJoined(joined);
    } catch (err) {
      if (this.session.calls.get(this.callId) === this) this.session.calls.delete(this.callId);
      this._close();
      throw err;
    }
  }

  /** @param {ServerMessage} joined */
  async _onJoined(joined) {
    this.participantId = joined.participant_id;
    this.role = joined.role;
    this.recording = joined.recording;
    this.participants.clear();
    for (const p of /** @type {ParticipantInfo[]} */ (joined.participants ?? [])) this.participants.set(p.participant_id, p);
    this._iceServers = toRtcIceServers(joined.ice_servers ?? []);
    this._icePolicy = joined.ice_transport_policy === 'relay' ? 'relay' : 'all';
    this.dispatchEvent(
      event('joined', {
        participantId: this.participantId,
        role: this.role,
        participants: [...this.participants.values()],
        recording: this.recording,
      }),
    );
    if (this.recording && this.options.confirmRecording) {
      if (!this._mediaStarted) await this.options.confirmRecording(this.recording);
    } else if (this.recording && typeof document !== 'undefined') {
      // No hook: the notice is shown by default, before any media, for the whole call.
      this._noticeBanner?.remove();
      this._noticeBanner = showRecordingNotice(this.recording);
    }
    this._mediaStarted = true;
    this._newPeerConnection();
  }

  _newPeerConnection() {
    this.pc?.close();
    this.remoteStreams.clear();
    this._pendingCandidates = [];
    this._makingOffer = false;
    this._offerOutstanding = false;
    const pc = new RTCPeerConnection({ iceServers: this._iceServers, iceTransportPolicy: this._icePolicy, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    const local = this.options.localStream;
    const tracks = local ? local.getTracks() : [];
    for (const track of tracks) pc.addTrack(track, /** @type {MediaStream} */ (local));
    // An offer without media sections has no ICE: a receive-only client still offers them.
    if (!tracks.some((t) => t.kind === 'audio')) pc.addTransceiver('audio', { direction: 'recvonly' });
    if (!tracks.some((t) => t.kind === 'video')) pc.addTransceiver('video', { direction: 'recvonly' });
    this._preferCodecs(pc);

    pc.onnegotiationneeded = () => {
      if (this.pc !== pc) return;
      void this._serial(() => this._makeOffer(pc, false));
    };
    pc.onicecandidate = (ev) => {
      if (this.pc !== pc) return;
      if (ev.candidate && ev.candidate.candidate) {
        this.session.send({ type: 'ice_candidate', call_id: this.callId, candidate: ev.candidate.toJSON() });
      } else if (!ev.candidate) {
        this.session.send({ type: 'end_of_candidates', call_id: this.callId });
      }
    };
    pc.ontrack = (ev) => {
      if (this.pc !== pc) return;
      this._onTrack(ev);
    };
    pc.onconnectionstatechange = () => {
      if (this.pc !== pc) return;
      this.dispatchEvent(event('connection-state', { state: pc.connectionState }));
    };
    pc.oniceconnectionstatechange = () => {
      if (this.pc !== pc) return;
      this._onIceState(pc);
    };
  }

  /** VP8 and Opus are what the relay forwards; put them first. @param {RTCPeerConnection} pc */
  _preferCodecs(pc) {
    if (typeof RTCRtpReceiver === 'undefined' || !RTCRtpReceiver.getCapabilities) return;
    for (const t of pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      const caps = RTCRtpReceiver.getCapabilities(kind);
      if (!caps || typeof t.setCodecPreferences !== 'function') continue;
      const want = kind === 'video' ? 'video/vp8' : 'audio/opus';
      const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === want);
      const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== want);
      try {
        t.setCodecPreferences([...first, ...rest]);
      } catch {
        /* not fatal: the server picks from what is offered */
      }
    }
  }

  /**
   * Our offer (first offer, our own track changes, or our ICE restart). Only from `stable`.
   * @param {RTCPeerConnection} pc
   * @param {boolean} iceRestart
   */
  async _makeOffer(pc, iceRestart) {
    if (this.pc !== pc || this.ended || pc.signalingState !== 'stable' || this._offerOutstanding) return;
    this._makingOffer = true;
    try {
      await pc.setLocalDescription(iceRestart ? await pc.createOffer({ iceRestart: true }) : undefined);
      const desc = pc.localDescription;
      if (!desc) return;
      this._offerOutstanding = true;
      this._log('-> sdp_offer');
      // The answer is awaited outside the chain (server offers may be processed meanwhile: they
      // are ignored while ours is outstanding; the server rolls its own back and offers again).
      this.session
        .request({ type: 'sdp_offer', call_id: this.callId, description: { type: desc.type, sdp: desc.sdp } })
        .then((answer) => this._serial(() => this._onAnswer(pc, answer)))
        .catch((err) => this._serial(() => this._onOfferRefused(pc, err)));
    } finally {
      this._makingOffer = false;
    }
  }

  /**
   * @param {RTCPeerConnection} pc
   * @param {ServerMessage} answer
   */
  async _onAnswer(pc, answer) {
    this._offerOutstanding = false;
    if (this.pc !== pc || answer.type !== 'sdp_answer') return;
    if (pc.signalingState !== 'have-local-offer') return;
    await pc.setRemoteDescription(answer.description);
    await this._flushCandidates(pc);
  }

  /**
   * @param {RTCPeerConnection} pc
   * @param {unknown} err
   */
  async _onOfferRefused(pc, err) {
    this._offerOutstanding = false;
    if (this.pc !== pc) return;
    if (pc.signalingState === 'have-local-offer') {
      // Glare (or refused): roll back; the server's offer comes, and negotiationneeded fires
      // again afterwards if our change still needs an offer.
      await pc.setLocalDescription({ type: 'rollback' });
    }
    if (err instanceof SignalingError && err.code === 'glare') return;
    this._error(err);
  }

  /**
   * A server offer. Ignored while our own offer is outstanding (the server is the polite peer:
   * it rolls its offer back, answers ours and offers again).
   * @param {ServerMessage} m
   */
  async _onServerOffer(m) {
    const pc = this.pc;
    if (!pc || this.ended) return;
    if (this._makingOffer || this._offerOutstanding || pc.signalingState !== 'stable') {
      this._log('server offer ignored: ours is outstanding');
      return;
    }
    await pc.setRemoteDescription(m.description);
    await this._flushCandidates(pc);
    await pc.setLocalDescription();
    const desc = pc.localDescription;
    if (desc) this.session.send({ type: 'sdp_answer', call_id: this.callId, description: { type: desc.type, sdp: desc.sdp } });
  }

  /** @param {RTCPeerConnection} pc */
  async _flushCandidates(pc) {
    const queued = this._pendingCandidates.splice(0);
    for (const c of queued) {
      try {
        await pc.addIceCandidate(c);
      } catch (err) {
        this._log('candidate refused', err);
      }
    }
  }

  /** @param {RTCIceCandidateInit} c */
  async _onServerCandidate(c) {
    const pc = this.pc;
    if (!pc) return;
    if (!pc.remoteDescription) {
      this._pendingCandidates.push(c);
      return;
    }
    try {
      await pc.addIceCandidate(c);
    } catch (err) {
      this._log('candidate refused', err);
    }
  }

  /** @param {RTCTrackEvent} ev */
  _onTrack(ev) {
    const stream = ev.streams[0];
    const participantId = stream ? stream.id : ev.track.id;
    let mine = this.remoteStreams.get(participantId);
    if (!mine) {
      mine = stream ?? new MediaStream();
      this.remoteStreams.set(participantId, mine);
    }
    if (!mine.getTracks().includes(ev.track)) mine.addTrack(ev.track);
    const detail = { participantId, stream: mine, track: ev.track };
    const ms = mine;
    const onGone = () => {
      if (ms.getTracks().includes(ev.track)) ms.removeTrack(ev.track);
      this.dispatchEvent(event('track-ended', detail));
    };
    ev.track.addEventListener('ended', onGone, { once: true });
    stream?.addEventListener('removetrack', (e) => {
      if (e.track === ev.track) onGone();
    });
    this.dispatchEvent(event('track', detail));
  }

  /** @param {RTCPeerConnection} pc */
  _onIceState(pc) {
    const state = pc.iceConnectionState;
    clearTimeout(this._disconnectTimer);
    if (state === 'failed') {
      this.restartIce();
    } else if (state === 'disconnected') {
      // Often recovers by itself; restart if it has not within 3 s.
      this._disconnectTimer = setTimeout(() => {
        if (this.pc === pc && pc.iceConnectionState === 'disconnected') this.restartIce();
      }, 3000);
    }
  }

  /** Asks the server for an ICE restart (it sends an offer with new credentials). */
  restartIce() {
    if (this.ended || Date.now() - this._iceRestartAt < 2000) return;
    this._iceRestartAt = Date.now();
    this._log('ICE restart');
    this.session.request({ type: 'ice_restart', call_id: this.callId }).catch((err) => this._error(err));
  }

  /** @param {IceServer[]} servers */
  _setIceServers(servers) {
    this._iceServers = toRtcIceServers(servers);
    try {
      this.pc?.setConfiguration({ iceServers: this._iceServers, iceTransportPolicy: this._icePolicy, bundlePolicy: 'max-bundle' });
    } catch (err) {
      this._log('setConfiguration failed', err);
    }
  }

  /**
   * After the session came back: resumed → check ICE; a new session → join again.
   * @param {boolean} resumed
   */
  async _afterReconnect(resumed) {
    if (this.ended) return;
    if (resumed) {
      const s = this.pc?.iceConnectionState;
      if (s === 'disconnected' || s === 'failed') this.restartIce();
      return;
    }
    try {
      const joined = await this.session.request(this._joinMessage());
      await this._onJoined(joined);
    } catch (err) {
      this._error(err);
      if (err instanceof SignalingError && (err.code === 'call_ended' || err.code === 'call_not_found' || err.code === 'forbidden')) {
        this._end(err.code, null);
      }
    }
  }

  /** @param {ServerMessage} m */
  _onMessage(m) {
    switch (m.type) {
      case 'sdp_offer':
        void this._serial(() => this._onServerOffer(m));
        break;
      case 'ice_candidate':
        void this._serial(() => this._onServerCandidate(m.candidate));
        break;
      case 'participant_joined': {
        /** @type {ParticipantInfo} */
        const p = m.participant;
        this.participants.set(p.participant_id, p);
        this.dispatchEvent(event('participant-joined', { participant: p }));
        break;
      }
      case 'participant_left': {
        if (m.participant_id === this.participantId) {
          // We were removed (e.g. resumed after the grace period): join again.
          void this._afterReconnect(false);
          break;
        }
        this.participants.delete(m.participant_id);
        const stream = this.remoteStreams.get(m.participant_id);
        this.remoteStreams.delete(m.participant_id);
        this.dispatchEvent(event('participant-left', { participantId: m.participant_id, reason: m.reason, stream }));
        break;
      }
      case 'participant_reconnecting':
      case 'participant_reconnected': {
        const p = this.participants.get(m.participant_id);
        if (p) p.state = m.type === 'participant_reconnecting' ? 'reconnecting' : 'connected';
        this.dispatchEvent(event(m.type.replace('_', '-'), { participantId: m.participant_id }));
        break;
      }
      case 'media_state_changed': {
        const p = this.participants.get(m.participant_id);
        if (p) {
          p.audio_muted = m.audio_muted;
          p.video_off = m.video_off;
        }
        this.dispatchEvent(event('media-state', { participantId: m.participant_id, audioMuted: m.audio_muted, videoOff: m.video_off }));
        break;
      }
      case 'chat':
        this.dispatchEvent(
          event('chat', { messageId: m.message_id, sender: m.sender, senderName: m.sender_name, sentAt: m.sent_at, text: m.text }),
        );
        break;
      case 'call_ended':
        this._end(m.reason, m.ended_by ?? null);
        break;
      case 'error':
        if (m.reply_to === undefined || m.reply_to === null) this._error(new SignalingError(m.code, m.message, m.retry_after_ms));
        break;
      default:
        break;
    }
  }

  /**
   * Sends a chat message; resolves with the server's copy.
   * @param {string} text  1–2000 characters.
   */
  async sendChat(text) {
    return this.session.request({ type: 'chat_send', call_id: this.callId, text });
  }

  /**
   * Mutes the microphone / turns the camera off (tracks disabled) and tells the others.
   * @param {{audioMuted: boolean, videoOff: boolean}} state
   */
  setMediaState({ audioMuted, videoOff }) {
    for (const t of this.options.localStream?.getAudioTracks() ?? []) t.enabled = !audioMuted;
    for (const t of this.options.localStream?.getVideoTracks() ?? []) t.enabled = !videoOff;
    this.session.send({ type: 'media_state', call_id: this.callId, audio_muted: audioMuted, video_off: videoOff });
  }

  /** Leaves the call (the others see `participant_left`). */
  async leave() {
    if (this.ended) return;
    try {
      await this.session.request({ type: 'leave', call_id: this.callId });
    } finally {
      this._end('left', this.participantId);
    }
  }

  /** Ends the call for everyone (agents only). */
  async end() {
    await this.session.request({ type: 'end_call', call_id: this.callId });
  }

  /**
   * @param {string} reason
   * @param {string|null} endedBy
   */
  _end(reason, endedBy) {
    if (this.ended) return;
    this._close();
    this.session.calls.delete(this.callId);
    this.dispatchEvent(event('ended', { reason, endedBy }));
  }

  _close() {
    this.ended = true;
    clearTimeout(this._disconnectTimer);
    this.pc?.close();
    this.pc = null;
    this._noticeBanner?.remove();
    this._noticeBanner = null;
  }
}

// ---------------------------------------------------------------------------------------------
// The recording notice.

/**
 * Shows the recording notice as a banner fixed to the top of the page (`role="alert"`, id
 * `cw-recording-notice`): a red "● 录制中 REC" mark, the notice in Chinese and English, and how
 * long the recording is kept. `Call` uses it when the application passes no
 * `confirmRecording` hook; remove the element to hide it (the call does when it ends).
 * @param {RecordingNotice} notice
 * @param {{parent?: HTMLElement}} [options]  Where to add it (default `document.body`).
 * @returns {HTMLElement} the banner
 */
export function showRecordingNotice(notice, options = {}) {
  const parent = options.parent ?? document.body;
  const banner = document.createElement('div');
  banner.id = 'cw-recording-notice';
  banner.setAttribute('role', 'alert');
  banner.setAttribute('aria-live', 'assertive');
  banner.style.cssText = [
    'position:fixed', 'top:0', 'left:0', 'right:0', 'z-index:2147483647', 'margin:0',
    'padding:0.6rem 1rem', 'background:#8b1a1a', 'color:#fff', 'font:600 1rem/1.4 system-ui,sans-serif',
    'box-shadow:0 2px 6px rgba(0,0,0,.4)',
  ].join(';');
  const mark = document.createElement('strong');
  mark.textContent = '● 录制中 REC ';
  const zh = document.createElement('span');
  zh.lang = 'zh-CN';
  zh.textContent = `${notice.notice_zh} `;
  const en = document.createElement('span');
  en.lang = 'en';
  en.textContent = `${notice.notice_en} `;
  const kept = document.createElement('span');
  kept.className = 'cw-retention';
  kept.textContent = `(保存 ${notice.retention_days} 天 / kept ${notice.retention_days} days)`;
  banner.append(mark, zh, en, kept);
  parent.append(banner);
  return banner;
}

// ---------------------------------------------------------------------------------------------
// Frames from live video, filed as case documents.

/** A refused REST request: the server's problem. */
export class ApiError extends Error {
  /**
   * @param {number} status  HTTP status.
   * @param {string} code  Stable problem code (docs/api.md).
   * @param {string} message
   */
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/**
 * The current frame of a playing `<video>` (e.g. a remote participant's) as an image, at the
 * video's own size (`videoWidth` × `videoHeight`).
 * @param {HTMLVideoElement} video
 * @param {{type?: 'image/jpeg'|'image/png', quality?: number}} [options]  Format (default JPEG)
 *   and JPEG quality 0–1 (default 0.92).
 * @returns {Promise<Blob>}
 */
export async function captureFrame(video, options = {}) {
  const type = options.type ?? 'image/jpeg';
  if (type !== 'image/jpeg' && type !== 'image/png') throw new TypeError(`captureFrame: type must be image/jpeg or image/png, not ${type}`);
  if (video.readyState < 2 || video.videoWidth === 0 || video.videoHeight === 0) {
    throw new Error('captureFrame: the video has no frame yet (not playing)');
  }
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  if (!ctx) throw new Error('captureFrame: no 2D canvas');
  ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) => {
    canvas.toBlob(
      (blob) => (blob && blob.type === type ? resolve(blob) : reject(new Error(`captureFrame: the browser could not encode ${type}`))),
      type,
      options.quality ?? 0.92,
    );
  });
}

/**
 * @typedef {object} UploadFrameOptions
 * @property {string} [baseUrl]  The server (default this page's origin).
 * @property {string} [itemKey]  The checklist item the frame is for.
 * @property {number} [chunkSize]  Bytes per PUT (default 1 MiB; the server takes up to 8 MiB).
 */

/**
 * Files a captured frame as a document of a case, taken from call `callId` (`source:
 * "video_frame"`; agents only): creates the document, uploads it in chunks (resuming from the
 * server's offset after `409 offset-mismatch`), then finishes it with its SHA-256. Resolves with
 * the document (`status: "ready"`, `thumbnail_url`); rejects with {@link ApiError}.
 * Needs `crypto.subtle` (HTTPS, or http://localhost).
 * @param {string} caseId
 * @param {string} callId
 * @param {Blob} blob  From {@link captureFrame} (JPEG or PNG).
 * @param {string} token  The agent's access token.
 * @param {UploadFrameOptions} [options]
 * @returns {Promise<any>} the document (`DocumentView`, docs/cases.md)
 */
export async function uploadFrame(caseId, callId, blob, token, options = {}) {
  if (blob.type !== 'image/jpeg' && blob.type !== 'image/png') throw new TypeError(`uploadFrame: a JPEG or PNG frame, not ${blob.type || 'untyped data'}`);
  if (!globalThis.crypto?.subtle) throw new Error('uploadFrame: crypto.subtle is unavailable (needs HTTPS or localhost)');
  const base = (options.baseUrl ?? location.origin).replace(/\/+$/, '');
  const chunkSize = Math.max(1, Math.min(options.chunkSize ?? 1024 * 1024, 8 * 1024 * 1024));
  const auth = { authorization: `Bearer ${token}` };
  /** @param {Response} res */
  const fail = async (res) => {
    /** @type {any} */
    let p = {};
    try {
      p = await res.json();
    } catch {
      /* no problem body */
    }
    return new ApiError(res.status, p.code ?? 'http-error', p.detail ?? p.title ?? res.statusText);
  };
  const bytes = new Uint8Array(await blob.arrayBuffer());
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  const sha256 = [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');

  /** @type {Record<string, unknown>} */
  const declared = { content_type: blob.type, size: bytes.length, source: 'video_frame', call_id: callId };
  if (options.itemKey) declared.item_key = options.itemKey;
  const docsUrl = `${base}/api/v1/cases/${encodeURIComponent(caseId)}/documents`;
  let res = await fetch(docsUrl, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(declared) });
  if (res.status !== 201) throw await fail(res);
  const doc = await res.json();

  let offset = 0;
  let mismatches = 0;
  while (offset < bytes.length) {
    const end = Math.min(offset + chunkSize, bytes.length);
    res = await fetch(`${base}${doc.content_url}`, {
      method: 'PUT',
      headers: { ...auth, 'content-type': 'application/offset+octet-stream', 'upload-offset': String(offset) },
      body: bytes.subarray(offset, end),
    });
    const serverOffset = Number(res.headers.get('upload-offset'));
    if (res.status === 204) {
      offset = Number.isFinite(serverOffset) && res.headers.has('upload-offset') ? serverOffset : end;
    } else if (res.status === 409 && res.headers.has('upload-offset') && mismatches++ < 5) {
      offset = serverOffset; // resume where the server is
    } else {
      throw await fail(res);
    }
  }
  res = await fetch(`${docsUrl}/${encodeURIComponent(doc.id)}/finish`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ sha256 }),
  });
  if (res.status !== 200) throw await fail(res);
  return res.json();
}

/**
 * @param {IceServer[]} servers
 * @returns {RTCIceServer[]}
 */
function toRtcIceServers(servers) {
  return servers.map((s) => {
    /** @type {RTCIceServer} */
    const out = { urls: s.urls };
    if (s.username !== undefined) out.username = s.username;
    if (s.credential !== undefined) out.credential = s.credential;
    return out;
  });
}
