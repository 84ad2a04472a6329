// Shared helpers for herald's k6 scripts: configuration from the
// environment, HS256 access tokens, a reconnecting subscriber, a
// sequence-number tracker and an HTTP publisher.
//
// Protocol facts used here (docs/PROTOCOL.md, src/protocol/, src/native/):
// - `GET /ws?token=<jwt>` (or subprotocol `bearer.<jwt>`, or a first
//   `{"type":"auth"}` message); the server greets with `welcome`.
// - `subscribe` → `ok` | `error`, pushes are
//   `{"type":"push","channel","event","data","ts"}`.
// - Close codes: 1000 normal, 1012 and 4000–4499 reconnect with backoff,
//   4500–4999 do not reconnect.
//
// Every publication the scripts send carries `data = {seq, pub, sent}`:
// `pub` names the publisher stream, `seq` counts up from 1 within it and
// `sent` is the publisher's clock (ms) just before the HTTP request. The
// publisher and the subscribers run in the same k6 process, so
// `Date.now() - sent` is the end-to-end delivery latency.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { hmac } from 'k6/crypto';
import encoding from 'k6/encoding';
import exec from 'k6/execution';
import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Rate, Trend } from 'k6/metrics';

// ---------------------------------------------------------------------------
// Configuration

function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

/** Integer from the environment, with a default. */
export function envInt(name, fallback) {
  const value = env(name, undefined);
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new Error(`${name}=${value} is not a number`);
  return Math.floor(n);
}

/** Number (may be fractional) from the environment, with a default. */
export function envNum(name, fallback) {
  const value = env(name, undefined);
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new Error(`${name}=${value} is not a number`);
  return n;
}

/** `1h30m`, `90s`, `500ms`, `2m` or a bare number of seconds → milliseconds. */
export function parseDuration(text) {
  const s = String(text).trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const units = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  let match;
  while ((match = re.exec(s)) !== null) {
    total += Number(match[1]) * units[match[2]];
    consumed += match[0].length;
  }
  if (consumed !== s.length || consumed === 0) {
    throw new Error(`cannot parse duration ${JSON.stringify(text)}`);
  }
  return Math.round(total);
}

/** Milliseconds → a k6 duration string. */
export function ms(n) {
  return `${Math.max(0, Math.round(n))}ms`;
}

const httpUrl = env('HERALD_URL', 'http://127.0.0.1:8080').replace(/\/+$/, '');

export const config = {
  /** Base URL of the hub's HTTP listener (API, /ready). */
  httpUrl,
  /** WebSocket endpoint; derived from HERALD_URL unless set. */
  wsUrl: env('HERALD_WS_URL', `${httpUrl.replace(/^http/, 'ws')}/ws`),
  /** Key for /api/v1 (`Authorization: Bearer <key>`). */
  apiKey: env('HERALD_API_KEY', 'herald-insecure-development-api-key'),
  /** HS256 secret the hub verifies tokens with. */
  jwtSecret: env('HERALD_JWT_SECRET', 'herald-insecure-development-secret'),
  /** How the token travels: `query`, `subprotocol` or `message`. */
  authMode: env('HERALD_AUTH_MODE', 'query'),
  /** Longest wait from `new WebSocket` to `welcome`. */
  connectTimeoutMs: envInt('HERALD_CONNECT_TIMEOUT_MS', 10000),
  /** Close codes (comma separated) that do not count as unexpected, e.g. `1012` for rolling restarts. */
  expectedCloseCodes: env('HERALD_EXPECTED_CLOSE_CODES', '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map(Number),
  /** Log every unexpected close and error reply (noisy under load). */
  verbose: env('HERALD_VERBOSE', '') !== '',
};

if (!['query', 'subprotocol', 'message'].includes(config.authMode)) {
  throw new Error(`HERALD_AUTH_MODE must be query, subprotocol or message, not ${config.authMode}`);
}

// ---------------------------------------------------------------------------
// Metrics (created in the init context, shared by every script)

export const metrics = {
  /** 1 per connection attempt that reached `welcome`, 0 per attempt that did not. */
  connectSuccess: new Rate('herald_connect_success'),
  /** From `new WebSocket` to `welcome`. */
  connectDuration: new Trend('herald_connect_duration', true),
  /** 1 per `subscribe` answered `ok`, 0 per `error` or no answer. */
  subscribeSuccess: new Rate('herald_subscribe_success'),
  /** From sending `subscribe` to its `ok`. */
  subscribeDuration: new Trend('herald_subscribe_duration', true),
  /** Date.now() at the subscriber minus `data.sent` (publisher clock, same process). */
  deliveryLatency: new Trend('herald_delivery_latency', true),
  /** Date.now() at the subscriber minus the push's `ts` (set by the hub when the API accepted it). */
  hubLatency: new Trend('herald_hub_latency', true),
  /** Publications received (test pushes only, not end markers). */
  received: new Counter('herald_messages_received'),
  /** Publications a subscriber should have received and did not (gaps, head and tail). */
  lost: new Counter('herald_messages_lost'),
  /** Publications received twice or out of order. */
  duplicated: new Counter('herald_messages_duplicated'),
  /** Closes the client did not ask for, tagged with `code` (1006 = dropped without a close frame). */
  unexpectedCloses: new Counter('herald_unexpected_closes'),
  /** Connection attempts after the first, per VU. */
  reconnects: new Counter('herald_reconnects'),
  /** `error` replies to requests other than `subscribe`. */
  errorReplies: new Counter('herald_error_replies'),
  /** Publications the API accepted. */
  published: new Counter('herald_published'),
  /** Publish requests that failed (non-200 or transport error). */
  publishErrors: new Counter('herald_publish_errors'),
  /** Sum of `subscribers` the API reported: deliveries the hub promised. */
  expectedDeliveries: new Counter('herald_expected_deliveries'),
  /** How far the publisher fell behind its schedule, sampled per request. */
  publisherLag: new Trend('herald_publisher_lag', true),
};

// ---------------------------------------------------------------------------
// Tokens

function b64url(text) {
  return encoding.b64encode(text, 'rawurl');
}

/**
 * An HS256 JWT for `user` (claims sub, iat, exp), signed with
 * HERALD_JWT_SECRET (default: herald's development secret).
 */
export function mintToken(user, ttlSeconds = 3600, secret = config.jwtSecret) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub: String(user), iat: now, exp: now + ttlSeconds }));
  const signature = hmac('sha256', secret, `${header}.${claims}`, 'base64rawurl');
  return `${header}.${claims}.${signature}`;
}

// ---------------------------------------------------------------------------
// HTTP: readiness and publishing

function apiParams(name) {
  return {
    headers: {
      Authorization: `Bearer ${config.apiKey}`,
      'Content-Type': 'application/json',
    },
    tags: { name },
    timeout: '10s',
  };
}

/** Fails the test early (in setup) when the hub is not ready. */
export function assertReady() {
  const res = http.get(`${config.httpUrl}/ready`, { tags: { name: 'ready' }, timeout: '5s' });
  if (res.status !== 200) {
    throw new Error(
      `herald at ${config.httpUrl} is not ready: status ${res.status} ${res.error || res.body || ''}`,
    );
  }
}

/** A short id for this run, so that concurrent runs on one hub use separate channels and users. */
export function runId() {
  return `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/**
 * Publishes one message or a batch. Returns the per-publication subscriber
 * counts, or null when the request failed.
 */
export function publish(publications, counted = true) {
  const batch = publications.length > 1;
  const url = `${config.httpUrl}/api/v1/publish${batch ? '/batch' : ''}`;
  const body = JSON.stringify(batch ? { publications } : publications[0]);
  const res = http.post(url, body, apiParams(batch ? 'publish_batch' : 'publish'));
  const ok = check(res, { 'publish answered 200': (r) => r.status === 200 });
  if (!ok) {
    metrics.publishErrors.add(1);
    console.warn(`publish failed: status ${res.status} ${res.error || ''} ${res.body || ''}`);
    return null;
  }
  let parsed;
  try {
    parsed = res.json();
  } catch (e) {
    metrics.publishErrors.add(1);
    return null;
  }
  const counts = batch ? parsed.results.map((r) => r.subscribers) : [parsed.subscribers];
  if (counted) {
    metrics.published.add(publications.length);
    for (const n of counts) metrics.expectedDeliveries.add(n);
  }
  return counts;
}

/**
 * Publishes `{seq, pub, sent}` at `rate` publications per second for
 * `durationMs`, `batch` publications per request, round-robin over
 * `channels` (one sequence per channel: `pub` is `p<vu>/<channel>`), then
 * one `end` marker per channel carrying its last sequence number.
 * Blocking: run it as the whole iteration of a one-VU scenario. Bounded by
 * `durationMs` plus `endDelayMs` plus one request.
 */
export function runPublisher({ channels, rate, durationMs, batch = 1, endDelayMs = 500, event = 'tick' }) {
  if (!(rate > 0)) throw new Error(`publish rate must be > 0, got ${rate}`);
  if (!(batch >= 1)) throw new Error(`publish batch must be ≥ 1, got ${batch}`);
  const streams = channels.map((channel) => ({ channel, pub: `p${exec.vu.idInTest}/${channel}`, seq: 0 }));
  const intervalMs = (1000 * batch) / rate;
  const start = Date.now();
  let due = start;
  let next = 0; // round-robin position
  while (Date.now() - start < durationMs) {
    const sent = Date.now();
    metrics.publisherLag.add(Math.max(0, sent - due));
    const publications = [];
    const used = [];
    for (let i = 0; i < batch; i++) {
      const stream = streams[next];
      next = (next + 1) % streams.length;
      stream.seq += 1;
      used.push(stream);
      publications.push({ channel: stream.channel, event, data: { seq: stream.seq, pub: stream.pub, sent } });
    }
    // A failed request published nothing: give its numbers back so that the
    // subscribers do not count the failure as loss.
    if (publish(publications) === null) {
      for (const stream of used) stream.seq -= 1;
    }
    due += intervalMs;
    const wait = due - Date.now();
    if (wait > 0) {
      sleep(wait / 1000);
    } else if (wait < -1000) {
      due = Date.now(); // more than a second behind: do not burst to catch up
    }
  }
  sleep(endDelayMs / 1000);
  const markers = streams.map((s) => ({
    channel: s.channel,
    event: 'end',
    data: { pub: s.pub, last: s.seq, sent: Date.now() },
  }));
  for (let i = 0; i < markers.length; i += 500) {
    publish(markers.slice(i, i + 500), false);
  }
  return streams.reduce((sum, s) => sum + s.seq, 0);
}

// ---------------------------------------------------------------------------
// Sequence tracking

/**
 * Counts received, lost and duplicated publications per publisher stream.
 * `strictStart`: the subscription existed before the publisher started, so
 * every stream must start at seq 1 (earlier numbers missing count as lost).
 */
export class SeqTracker {
  constructor(strictStart = false) {
    this.strictStart = strictStart;
    this.streams = {};
    this.received = 0;
    this.lost = 0;
    this.duplicated = 0;
    this.ended = {};
  }

  /** Records one push; returns the number of publications found missing before it. */
  observe(pub, seq) {
    this.received += 1;
    const stream = this.streams[pub];
    if (stream === undefined) {
      this.streams[pub] = { first: seq, last: seq };
      const missing = this.strictStart ? seq - 1 : 0;
      this.lost += missing;
      return missing;
    }
    if (seq <= stream.last) {
      this.duplicated += 1;
      return 0;
    }
    const missing = seq - stream.last - 1;
    stream.last = seq;
    this.lost += missing;
    return missing;
  }

  /** Records an end marker; returns the publications missing at the tail. */
  end(pub, last) {
    if (this.ended[pub]) return 0;
    this.ended[pub] = true;
    const stream = this.streams[pub];
    let missing;
    if (stream === undefined) {
      missing = this.strictStart ? last : 0;
    } else {
      missing = Math.max(0, last - stream.last);
    }
    this.lost += missing;
    return missing;
  }
}

// ---------------------------------------------------------------------------
// Close codes

/** The close code in a gorilla/k6 error text (`websocket: close 4001 ...`), or 0. */
export function closeCodeOf(errorText) {
  const m = /close (\d{3,4})/.exec(errorText || '');
  return m ? Number(m[1]) : 0;
}

/** Whether a client reconnects after this code (herald's close-code ranges). */
export function shouldReconnect(code) {
  if (code >= 4500 && code <= 4999) return false;
  // 1012 and 4000–4499 by the protocol; 1006 (dropped) and 0 (could not
  // connect) are network failures, which clients also retry with backoff.
  return true;
}

// ---------------------------------------------------------------------------
// Subscriber

let nextSubscriberId = 0;

/**
 * One logical subscriber: connects, authenticates, subscribes to `channels`
 * and receives pushes until `deadline` (epoch ms), `stop()` or an end
 * marker from every publisher it tracks (when `stopOnEnd`). With
 * `reconnect`, it reconnects after unexpected closes with exponential
 * backoff and full jitter.
 *
 * Options:
 *   user            user id (`sub` claim)
 *   channels        channel names to subscribe to
 *   deadline        epoch ms; the subscriber closes itself then
 *   reconnect       reconnect after unexpected closes (default false)
 *   backoffBaseMs   first backoff cap (default 500)
 *   backoffMaxMs    largest backoff cap (default 30000)
 *   strictFromMs    epoch ms; a first subscription acknowledged before it
 *                   expects every stream from seq 1 (default: never)
 *   stopOnEnd       close after the first `end` marker (default true)
 *   tokenTtl        seconds (default 3600)
 *   onSubscribed(sub) called each time a connection has all its subscriptions
 *   onDone(sub)     called once, when the subscriber has finished
 */
export class Subscriber {
  constructor(opts) {
    this.id = nextSubscriberId++;
    this.user = opts.user;
    this.channels = opts.channels;
    this.deadline = opts.deadline;
    this.reconnect = Boolean(opts.reconnect);
    this.backoffBaseMs = opts.backoffBaseMs || 500;
    this.backoffMaxMs = opts.backoffMaxMs || 30000;
    this.strictFromMs = opts.strictFromMs || 0;
    this.stopOnEnd = opts.stopOnEnd !== false;
    this.tokenTtl = opts.tokenTtl || 3600;
    this.onDone = opts.onDone || (() => {});
    this.onSubscribedHook = opts.onSubscribed || (() => {});

    this.attempts = 0; // connection attempts so far
    this.failures = 0; // consecutive attempts that ended badly
    this.connections = 0; // attempts that reached welcome
    this.unexpected = {}; // close code → count
    this.endSeen = false;
    this.subscribedOnce = false;
    this.tracker = new SeqTracker(false);
    this.totals = { received: 0, lost: 0, duplicated: 0 };
    this.recycled = 0; // planned reconnects (churn)
    this.done = false;
    this.stopping = false;
    this.ws = null;
    this.timers = {};
  }

  start() {
    const left = this.deadline - Date.now();
    if (left <= 0) {
      this.stopping = true;
      this.maybeFinish();
      return;
    }
    this.setTimer('deadline', () => this.stop(), left);
    this.connect();
  }

  setTimer(name, fn, delay) {
    this.clearTimer(name);
    this.timers[name] = setTimeout(() => {
      delete this.timers[name];
      fn();
    }, Math.max(0, delay));
  }

  clearTimer(name) {
    if (this.timers[name] !== undefined) {
      clearTimeout(this.timers[name]);
      delete this.timers[name];
    }
  }

  connect() {
    if (this.stopping) return;
    this.attempts += 1;
    if (this.attempts > 1 && !this.planned) metrics.reconnects.add(1);
    this.planned = false;
    const token = mintToken(this.user, this.tokenTtl);
    let url = config.wsUrl;
    const params = { tags: { name: 'ws' } };
    if (config.authMode === 'query') {
      url += `${url.includes('?') ? '&' : '?'}token=${token}`;
    } else if (config.authMode === 'subprotocol') {
      params.headers = { 'Sec-WebSocket-Protocol': `herald.v1.json, bearer.${token}` };
    }
    const conn = {
      startedAt: Date.now(),
      welcomed: false,
      clientClosed: false,
      errorText: '',
      pending: {}, // request id → {channel, sentAt}
      nextId: 1,
      subscribed: 0,
      recorded: false,
    };
    this.conn = conn;
    let ws;
    try {
      ws = new WebSocket(url, null, params);
    } catch (e) {
      this.connectionEnded(conn, `constructor: ${e}`);
      return;
    }
    this.ws = ws;
    this.setTimer('connect', () => {
      if (!conn.welcomed) {
        const phase = ws.readyState === 0 ? 'WebSocket handshake not finished' : 'socket open, no welcome';
        conn.errorText = conn.errorText || `no welcome within ${config.connectTimeoutMs} ms (${phase})`;
        this.closeSocket(conn, ws);
        // Count it now: a socket that never opens may not report a close promptly.
        this.connectionEnded(conn, conn.errorText, true);
      }
    }, config.connectTimeoutMs);

    ws.onopen = () => {
      if (conn.abandoned) {
        ws.close();
        return;
      }
      if (config.authMode === 'message') {
        ws.send(JSON.stringify({ type: 'auth', id: 0, token }));
      }
    };
    ws.onmessage = (event) => this.onMessage(conn, ws, event);
    ws.onerror = (event) => {
      conn.errorText = String(event.error || 'error');
    };
    ws.onclose = () => this.connectionEnded(conn, conn.errorText);
  }

  closeSocket(conn, ws) {
    conn.clientClosed = true;
    // close() on a socket that is still connecting would block the VU (k6
    // queues the close frame for a writer that does not exist yet): mark it
    // and close it when it opens.
    if (ws.readyState === 0) {
      conn.abandoned = true;
      return;
    }
    try {
      ws.close();
    } catch (e) {
      // already closed
    }
  }

  onMessage(conn, ws, event) {
    if (conn.recorded) return; // given up on (connect timeout); its close is on the way
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch (e) {
      console.error(`${this.user}: unparsable frame: ${String(event.data).slice(0, 200)}`);
      return;
    }
    switch (msg.type) {
      case 'push':
        this.onPush(conn, ws, msg);
        break;
      case 'welcome':
        this.onWelcome(conn, ws);
        break;
      case 'ok': {
        const req = conn.pending[msg.id];
        if (req === undefined) break;
        delete conn.pending[msg.id];
        metrics.subscribeSuccess.add(1);
        metrics.subscribeDuration.add(Date.now() - req.sentAt);
        conn.subscribed += 1;
        if (conn.subscribed === this.channels.length) this.onSubscribed(conn);
        break;
      }
      case 'error': {
        const req = conn.pending[msg.id];
        if (req !== undefined) {
          delete conn.pending[msg.id];
          metrics.subscribeSuccess.add(0);
          console.error(`${this.user}: subscribe ${req.channel} refused: ${msg.code} ${msg.reason}`);
        } else {
          metrics.errorReplies.add(1, { code: String(msg.code) });
          if (config.verbose) console.warn(`${this.user}: error reply ${msg.code} ${msg.reason}`);
        }
        break;
      }
      default:
        break; // pong and future message types
    }
  }

  onWelcome(conn, ws) {
    if (conn.welcomed) return;
    conn.welcomed = true;
    this.clearTimer('connect');
    this.connections += 1;
    metrics.connectSuccess.add(1);
    metrics.connectDuration.add(Date.now() - conn.startedAt);
    for (const channel of this.channels) {
      const id = conn.nextId++;
      conn.pending[id] = { channel, sentAt: Date.now() };
      ws.send(JSON.stringify({ type: 'subscribe', id, channel }));
    }
  }

  onSubscribed(conn) {
    const now = Date.now();
    // Only the first session can be strict: a reconnected one missed what
    // was published while it was away, which is not the hub's loss.
    const strict = !this.subscribedOnce && this.strictFromMs > 0 && now < this.strictFromMs;
    this.subscribedOnce = true;
    // Each session starts a fresh tracker; totals go to the metrics as they happen.
    this.tracker = new SeqTracker(strict);
    // A connection that stayed up 5 s resets the backoff.
    this.setTimer('stable', () => {
      this.failures = 0;
    }, 5000);
    this.onSubscribedHook(this);
  }

  onPush(conn, ws, msg) {
    const now = Date.now();
    const data = msg.data || {};
    if (msg.event === 'end') {
      const missing = this.tracker.end(data.pub, data.last);
      if (missing > 0) {
        this.totals.lost += missing;
        metrics.lost.add(missing);
        if (config.verbose) console.warn(`${this.user}: ${missing} lost at the tail of ${data.pub}`);
      }
      this.endSeen = true;
      if (this.stopOnEnd) this.stop();
      return;
    }
    if (typeof data.seq !== 'number') return; // not one of ours
    metrics.received.add(1);
    this.totals.received += 1;
    if (typeof data.sent === 'number') metrics.deliveryLatency.add(now - data.sent);
    if (typeof msg.ts === 'number') metrics.hubLatency.add(now - msg.ts);
    const before = this.tracker.duplicated;
    const missing = this.tracker.observe(data.pub, data.seq);
    if (missing > 0) {
      this.totals.lost += missing;
      metrics.lost.add(missing);
      if (config.verbose) console.warn(`${this.user}: ${missing} lost before seq ${data.seq} of ${data.pub}`);
    }
    if (this.tracker.duplicated > before) {
      this.totals.duplicated += 1;
      metrics.duplicated.add(1);
    }
  }

  /** Runs once per connection attempt, when its socket is gone (or given up on). */
  connectionEnded(conn, errorText, forced = false) {
    if (conn.recorded) return;
    conn.recorded = true;
    if (this.conn === conn) {
      this.clearTimer('stable');
      this.clearTimer('connect');
    }
    if (conn.clientClosed && !forced) {
      // We asked for it (stop, end marker, churn): whatever k6 reports is
      // not the hub failing a connection. (herald builds before 42ecd93
      // dropped TCP without echoing the close frame, which k6 saw as 1006.)
      if (conn.recycle && !this.stopping) {
        this.connect();
        return;
      }
      this.maybeFinish();
      return;
    }
    if (!conn.welcomed) metrics.connectSuccess.add(0);
    // Subscribes that never got an answer.
    for (const id of Object.keys(conn.pending)) metrics.subscribeSuccess.add(0);
    conn.pending = {};
    let code = closeCodeOf(errorText);
    if (code === 0 && conn.welcomed && errorText === '') code = 1000; // clean close by the server
    this.problems = (this.problems || 0) + 1;
    const loud = config.verbose || this.problems <= 2;
    if (code === 0) {
      // No close frame: the connection never got going (refused, bad
      // handshake such as 503 while draining, timeout). herald_connect_success
      // counts it; it is not a close code.
      if (loud) console.warn(`${this.user}: could not connect: ${errorText || 'no reason'}`);
    } else if (!config.expectedCloseCodes.includes(code)) {
      metrics.unexpectedCloses.add(1, { code: String(code) });
      this.unexpected[code] = (this.unexpected[code] || 0) + 1;
      if (loud) console.warn(`${this.user}: connection closed unexpectedly (code ${code}): ${errorText || 'no reason'}`);
    }
    if (this.stopping || !this.reconnect || !shouldReconnect(code) || Date.now() >= this.deadline) {
      this.stopping = true;
      this.maybeFinish();
      return;
    }
    this.failures += 1;
    const cap = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** Math.min(this.failures - 1, 16));
    const delay = Math.random() * cap; // full jitter
    if (Date.now() + delay >= this.deadline) {
      this.stopping = true;
      this.maybeFinish();
      return;
    }
    this.setTimer('reconnect', () => this.connect(), delay);
  }

  /**
   * Planned reconnect (connection churn): closes the current connection and
   * opens a new one at once. Not counted as unexpected or as a reconnect.
   */
  recycle() {
    const conn = this.conn;
    if (this.stopping || conn === undefined || conn.recorded || !conn.welcomed) return;
    this.recycled += 1;
    this.planned = true; // the next attempt is not a failure-driven reconnect
    conn.recycle = true;
    this.closeSocket(conn, this.ws);
    if (conn.abandoned) return;
    this.setTimer('closing', () => {
      if (!conn.recorded) this.connectionEnded(conn, '', false);
    }, 3000);
  }

  /** Closes for good: no reconnect, timers cleared, `onDone` once the socket is gone. */
  stop() {
    if (this.stopping && this.done) return;
    this.stopping = true;
    this.clearTimer('reconnect');
    this.clearTimer('deadline');
    this.clearTimer('stable');
    const conn = this.conn;
    if (conn !== undefined && !conn.recorded && this.ws !== null) {
      this.closeSocket(conn, this.ws);
      // Bound the wait for the close event.
      this.setTimer('closing', () => {
        if (!conn.recorded) this.connectionEnded(conn, '', false);
      }, 3000);
    } else {
      this.maybeFinish();
    }
  }

  maybeFinish() {
    if (this.done || !this.stopping) return;
    if (this.conn !== undefined && !this.conn.recorded) return;
    this.done = true;
    for (const name of Object.keys(this.timers)) this.clearTimer(name);
    this.onDone(this);
  }
}

// ---------------------------------------------------------------------------
// End-of-test report

/** Trend statistics every script asks k6 to keep. */
export const summaryTrendStats = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

function fmtNum(v, unit) {
  if (v === undefined || v === null || Number.isNaN(v)) return '-';
  if (unit === 'ms') return v >= 1000 ? `${(v / 1000).toFixed(2)}s` : `${v.toFixed(2)}ms`;
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function describe(metric) {
  const v = metric.values;
  switch (metric.type) {
    case 'trend': {
      const unit = metric.contains === 'time' ? 'ms' : '';
      return ['avg', 'med', 'p(95)', 'p(99)', 'max']
        .map((k) => `${k}=${fmtNum(v[k], unit)}`)
        .join(' ') + (v.count !== undefined ? ` n=${v.count}` : '');
    }
    case 'rate':
      return `${(100 * v.rate).toFixed(2)}% (${v.passes} of ${v.passes + v.fails})`;
    case 'counter':
      return `${v.count} (${v.rate.toFixed(1)}/s)`;
    case 'gauge':
      return `${v.value} (min ${v.min}, max ${v.max})`;
    default:
      return JSON.stringify(v);
  }
}

function collectChecks(group, out) {
  for (const c of group.checks || []) out.push(c);
  for (const g of group.groups || []) collectChecks(g, out);
  return out;
}

/**
 * A plain-text report: thresholds with pass/fail, every herald_* metric,
 * checks, then the script's own `lines`. Returned by handleSummary, so it
 * replaces k6's default summary; set HERALD_SUMMARY_JSON=<path> to also get
 * k6's full summary data as JSON.
 */
export function report(data, title, lines = []) {
  const out = [];
  const m = data.metrics;
  out.push('', `== ${title}`, '');
  out.push('thresholds:');
  let failed = 0;
  let passed = 0;
  for (const name of Object.keys(m).sort()) {
    const thresholds = m[name].thresholds;
    if (!thresholds) continue;
    for (const expr of Object.keys(thresholds)) {
      const ok = thresholds[expr].ok;
      if (ok) passed += 1;
      else failed += 1;
      out.push(`  ${ok ? 'PASS' : 'FAIL'}  ${name} ${expr}   [${describe(m[name])}]`);
    }
  }
  out.push('', 'herald metrics:');
  for (const name of Object.keys(m).sort()) {
    if (!name.startsWith('herald_')) continue;
    out.push(`  ${name.padEnd(28, '.')} ${describe(m[name])}`);
  }
  out.push('', 'k6 metrics:');
  for (const name of ['ws_connecting', 'ws_sessions', 'ws_msgs_received', 'ws_msgs_sent', 'http_req_duration', 'http_req_failed', 'iterations', 'vus_max']) {
    if (m[name]) out.push(`  ${name.padEnd(28, '.')} ${describe(m[name])}`);
  }
  const checks = collectChecks(data.root_group, []);
  if (checks.length > 0) {
    out.push('', 'checks:');
    for (const c of checks) {
      out.push(`  ${c.fails === 0 ? 'ok  ' : 'FAIL'}  ${c.name}: ${c.passes}/${c.passes + c.fails}`);
    }
  }
  if (lines.length > 0) out.push('', ...lines);
  out.push('', failed === 0 ? 'result: all thresholds passed' : `result: ${failed} threshold(s) FAILED`);
  // A plain closing line that test-result readers understand.
  out.push(`k6: ${passed} passed, ${failed} failed`, '');
  const files = { stdout: out.join('\n') };
  const jsonPath = __ENV.HERALD_SUMMARY_JSON;
  if (jsonPath) files[jsonPath] = JSON.stringify(data, null, 2);
  return files;
}

/** Value of one statistic of a metric in the summary data, or undefined. */
export function stat(data, name, key) {
  const metric = data.metrics[name];
  return metric ? metric.values[key] : undefined;
}
