/**
 * herald.js — browser client for the herald native protocol v1.
 *
 * A single dependency-free ES module (works in browsers, and in Node 22+ or
 * any runtime with a WHATWG `WebSocket`; pass `WebSocket` in the options
 * elsewhere). Herald serves it at `/demo/herald.js`.
 *
 * @example
 *   import { Herald } from './herald.js';
 *
 *   const herald = new Herald({
 *     url: 'wss://push.example.com/ws',     // default: same origin, path /ws
 *     getToken: async () => (await fetch('/api/herald-token')).text(),
 *     // or a fixed token:  token: '<jwt>',
 *     format: 'json',                        // or 'msgpack' (binary frames)
 *     reconnect: { baseMs: 500, maxMs: 15000 },
 *   });
 *
 *   herald.onStateChange((state, info) => {
 *     // state: 'connecting' | 'connected' | 'disconnected'
 *     // info on 'disconnected': { code, reason, willReconnect, delayMs, attempt }
 *     // info on 'connected':    { welcome, reconnected }
 *   });
 *   herald.on('prices.BTC', 'price_update', (data, meta) => render(data, meta.ts));
 *   herald.on('*', 'shipment_update', (data, { channel }) => …);  // any channel
 *
 *   await herald.connect();                 // resolves on `welcome`
 *   await herald.subscribe('prices.BTC');   // resolves on `ok`, rejects with HeraldError
 *   const ms = await herald.ping();         // application-level round trip
 *   await herald.publish('chat.room1', 'message', { text: 'hi' }); // if the server allows it
 *   await herald.unsubscribe('prices.BTC');
 *   herald.close();                         // close code 1000; no reconnect
 *
 *   // Channels with history (a namespace with `history_size`): the client keeps
 *   // the last offset and epoch per channel and resubscribes with `since`.
 *   herald.onRecoveryFailed(({ channel, since, position }) => refetch(channel));
 *   herald.position('news.live');           // {offset, epoch} or undefined
 *   herald.recovered('news.live');          // true | false | undefined (last resubscribe)
 *   const page = await herald.history('news.live', { since: 40, limit: 10 });
 *
 * Behaviour worth knowing:
 *
 * - Subscriptions are remembered: `subscribe()` before `connect()` (or while
 *   reconnecting) is sent once the connection is up, and every channel is
 *   subscribed again after each reconnect. A channel the server refuses
 *   with a permanent error (forbidden, invalid channel, limit…) is forgotten,
 *   its promise rejects and `onSubscriptionDropped()` listeners are told. A
 *   transient error (`TRANSIENT_ERROR_CODES`: 111 rate limited, 112 engine
 *   unavailable, 116 session store unavailable, 117 outcome unknown, 100
 *   internal) keeps the channel and retries it on the same connection with
 *   backoff (`resubscribe` option: delay min(maxMs, baseMs · 2^(n-1)) with
 *   equal jitter, at most `maxAttempts` tries in a row); the promise stays
 *   pending meanwhile. After `maxAttempts` the channel is dropped as well
 *   (`transient: true`). The automatic
 *   channels `user:<id>` and `broadcast` need no `subscribe()`: just `on()`.
 * - Reconnect: exponential backoff with full jitter,
 *   delay = random(0, min(maxMs, baseMs · 2^attempt)); the attempt counter
 *   resets once a connection has stayed up for `stableMs`. Close codes decide:
 *   1000 and 4500–4999 (invalid token, forbidden, protocol violation, message
 *   too large, kicked) end the session; everything else (1006 abnormal, 1012
 *   service restart, 4000–4499) reconnects. 4005 (token expired) discards the
 *   token and calls `getToken()` before reconnecting; with a fixed `token` and
 *   no `getToken` it cannot recover and does not reconnect.
 * - Tokens: with `getToken`, the client also refreshes the token in band on a
 *   live socket (`refresh` message) when the server announces
 *   `token_expiring`, and shortly before the JWT's `exp` otherwise. A server
 *   that does not know `refresh` (error 102) keeps the connection; the new
 *   token is then used on the next reconnect. A cached token already past its
 *   `exp` is replaced through `getToken()` before connecting.
 * - Transport of the token: `auth: 'message'` (default: first message
 *   `{type:"auth", token}`, keeps the token out of URLs and headers),
 *   `'subprotocol'` (`bearer.<jwt>` subprotocol entry) or `'query'` (`?token=`).
 *   Without any token the client authenticates anonymously.
 * - Liveness: the client sends an application `ping` every `heartbeat_ms`
 *   (from `welcome`) and drops the socket (reported as code 1006) when no
 *   `pong` comes back within `requestTimeoutMs`; so a silently dead network
 *   path is noticed even though browsers hide WebSocket-level pings.
 * - Errors: request promises reject with {@link HeraldError}; `err.code` is
 *   the server's numeric error code (101 bad_request … 113 payload_too_large,
 *   see `ErrorCodes`) or a string for client-side failures: 'not_connected',
 *   'timeout', 'disconnected', 'closed'. `connect()` rejects with the close
 *   code when the session ends without reconnecting. The promises of
 *   `connect()` and `subscribe()` may be ignored (no unhandled rejection):
 *   their failures are also reported through `onStateChange()` and `onError()`.
 *   `onError()` listeners get refused subscriptions (also on resubscribe) and
 *   errors that belong to no request (failed token refresh, undecodable
 *   frames, an `error` without id).
 * - History and recovery: on a channel with history the server answers
 *   `subscribe` with `subscribed {position}`, and every push carries its
 *   `offset` (also in the handler's `meta.offset`). The client remembers the
 *   position per channel and, on every resubscribe (after a reconnect), sends
 *   `since`: the server then replays what was missed, in order, before live
 *   pushes (`recovered(channel) === true`), or says it could not
 *   (`recovered: false`): `onRecoveryFailed()` listeners are told, with the
 *   channel, the position asked for and the new one; refetch that channel's
 *   state from your backend. A `gap` notice is passed to `onGap()` listeners.
 * - In `info.code` of a state change, 0 means the client gave up before a
 *   socket existed (`getToken()` threw, or the URL/subprotocol was invalid).
 */

/** Subprotocol names per wire format. */
export const SUBPROTOCOLS = Object.freeze({ json: 'herald.v1.json', msgpack: 'herald.v1.msgpack' });

/** Error codes of `error` replies (the connection stays open after each). */
export const ErrorCodes = Object.freeze({
  INTERNAL: 100,
  BAD_REQUEST: 101,
  UNKNOWN_TYPE: 102,
  INVALID_CHANNEL: 103,
  PERMISSION_DENIED: 104,
  ALREADY_SUBSCRIBED: 105,
  NOT_SUBSCRIBED: 106,
  SUBSCRIPTION_LIMIT: 107,
  NOT_AUTHENTICATED: 108,
  ALREADY_AUTHENTICATED: 109,
  INVALID_EVENT: 110,
  ENGINE_UNAVAILABLE: 112,
  PAYLOAD_TOO_LARGE: 113,
  TOKEN_REJECTED: 114,
  INVALID_DATA: 115,
  SESSION_STORE_UNAVAILABLE: 116,
  OUTCOME_UNKNOWN: 117,
  NO_HISTORY: 118,
});

/**
 * Error codes that say "not now" rather than "never": a subscribe refused with one of these
 * is retried with backoff instead of being forgotten.
 */
export const TRANSIENT_ERROR_CODES = Object.freeze([
  ErrorCodes.INTERNAL,
  111, // rate_limited
  ErrorCodes.ENGINE_UNAVAILABLE,
  ErrorCodes.SESSION_STORE_UNAVAILABLE,
  ErrorCodes.OUTCOME_UNKNOWN,
]);

/** Whether an `error` reply with `code` may succeed when retried later. */
export function isTransientError(code) {
  return TRANSIENT_ERROR_CODES.includes(code);
}

/** WebSocket close codes herald sends. */
export const CloseCodes = Object.freeze({
  NORMAL: 1000,
  ABNORMAL: 1006,
  SERVICE_RESTART: 1012,
  INTERNAL_ERROR: 4000,
  SLOW_CONSUMER: 4001,
  HEARTBEAT_TIMEOUT: 4002,
  AUTH_TIMEOUT: 4003,
  CONNECTION_LIMIT: 4004,
  TOKEN_EXPIRED: 4005,
  INVALID_TOKEN: 4500,
  FORBIDDEN: 4501,
  PROTOCOL_VIOLATION: 4502,
  MESSAGE_TOO_LARGE: 4503,
  KICKED: 4504,
});

/**
 * Whether a client should reconnect after the server closed with `code`:
 * not after 1000 or 4500–4999, yes after anything else (1006, 1012, 4000–4499 …).
 * @param {number} code
 * @returns {boolean}
 */
export function shouldReconnect(code) {
  if (code === CloseCodes.NORMAL) return false;
  if (code >= 4500 && code <= 4999) return false;
  return true;
}

/** A failed request or connection. `code` is a number (server) or a string (client side). */
export class HeraldError extends Error {
  /**
   * @param {number|string} code
   * @param {string} reason
   */
  constructor(code, reason) {
    super(`${reason} (${code})`);
    this.name = 'HeraldError';
    this.code = code;
    this.reason = reason;
  }
}

const OPEN = 1;
const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());
const MAX_TIMER_MS = 2 ** 31 - 1;

function reportError(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else setTimeout(() => { throw err; });
}

/** Seconds-since-epoch `exp` claim of a JWT, or null if it has none or is not a JWT. */
function jwtExp(token) {
  try {
    const part = String(token).split('.')[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))));
    return typeof claims.exp === 'number' ? claims.exp : null;
  } catch {
    return null;
  }
}

function defaultUrl() {
  if (typeof location === 'undefined') throw new Error('herald: `url` is required outside a browser page');
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
}

function resolveUrl(url) {
  if (/^wss?:\/\//i.test(url)) return url;
  const u = new URL(url, typeof location !== 'undefined' ? location.href : undefined);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  return u.toString();
}

export class Herald {
  /**
   * @param {object} [options]
   * @param {string} [options.url] WebSocket URL (ws://, wss://, or http(s)/relative, converted). Default: same origin `/ws`.
   * @param {string} [options.token] A fixed access token (JWT).
   * @param {() => Promise<string>|string} [options.getToken] Supplies a (fresh) token: before the first
   *   connect, after close code 4005, and for in-band refresh.
   * @param {'json'|'msgpack'} [options.format='json']
   * @param {{baseMs?: number, maxMs?: number, stableMs?: number}} [options.reconnect] Backoff:
   *   base 500 ms, cap 15 s; the attempt count resets after a connection lived `stableMs` (10 s).
   *   Pass `reconnect: false` to never reconnect.
   * @param {{baseMs?: number, maxMs?: number, maxAttempts?: number}} [options.resubscribe] Retries of a
   *   subscribe refused with a transient error code: base 1 s, cap 15 s, 8 attempts in a row.
   * @param {'message'|'subprotocol'|'query'} [options.auth='message'] How the token travels.
   * @param {number} [options.requestTimeoutMs=10000] Timeout of subscribe/publish/ping/refresh and of the pong.
   * @param {number} [options.connectTimeoutMs=10000] From socket creation to `welcome`.
   * @param {boolean} [options.heartbeat=true] Application pings every `heartbeat_ms` to detect dead sockets.
   * @param {typeof WebSocket} [options.WebSocket] WebSocket implementation (default: the global one).
   */
  constructor(options = {}) {
    const format = options.format ?? 'json';
    if (!(format in SUBPROTOCOLS)) throw new TypeError(`herald: unknown format ${format}: use json or msgpack`);
    const auth = options.auth ?? 'message';
    if (!['message', 'subprotocol', 'query'].includes(auth)) throw new TypeError(`herald: unknown auth mode ${auth}`);
    this.url = resolveUrl(options.url ?? defaultUrl());
    this.format = format;
    this.authMode = auth;
    const rc = options.reconnect === false ? { enabled: false } : options.reconnect ?? {};
    this.reconnectOptions = {
      enabled: rc.enabled !== false,
      baseMs: rc.baseMs ?? 500,
      maxMs: rc.maxMs ?? 15000,
      stableMs: rc.stableMs ?? 10000,
    };
    const rs = options.resubscribe ?? {};
    this.resubscribeOptions = {
      baseMs: rs.baseMs ?? 1000,
      maxMs: rs.maxMs ?? 15000,
      maxAttempts: rs.maxAttempts ?? 8,
    };
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.heartbeat = options.heartbeat !== false;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') throw new TypeError('herald: no WebSocket implementation');

    this._token = options.token ?? null;
    this._getToken = options.getToken ?? null;

    /** @type {'connecting'|'connected'|'disconnected'} */
    this.state = 'disconnected';
    /** The last `welcome` message while connected ({conn_id, user_id, node_id, heartbeat_ms, channels}), else null. */
    this.welcome = null;
    /** Last measured `ping()` round trip, ms. */
    this.latencyMs = null;
    /** Counters: reconnects (welcomes after the first), pushes received, last close {code, reason, at}. */
    this.stats = { reconnects: 0, pushes: 0, lastClose: null };

    this._ws = null;
    this._gen = 0; // bumps on every connection attempt and on close(): stale async work checks it
    this._attempt = 0;
    this._everConnected = false;
    this._connectedAt = 0;
    this._closedByClient = true; // until connect()
    this._lastId = 0;
    this._pending = new Map(); // id -> {resolve, reject, timer}
    this._subs = new Map(); // channel -> {confirmed, inflight, waiters: [{resolve, reject}]}
    this._handlers = new Map(); // channel -> Map(event -> Set(handler))
    this._stateListeners = new Set();
    this._errorListeners = new Set();
    this._recoveryListeners = new Set();
    this._droppedListeners = new Set();
    this._gapListeners = new Set();
    this._readyWaiters = [];
    this._retryTimer = null;
    this._connectTimer = null;
    this._heartbeatTimer = null;
    this._refreshTimer = null;
    this._refreshing = null;
    this._refreshSupported = null; // null: unknown, false: server answered unknown_type
    this._onOnline = () => {
      if (this.state === 'disconnected' && this._retryTimer !== null) {
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._open();
      }
    };
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Opens the connection (and keeps it open, reconnecting as needed).
   * @returns {Promise<object>} the `welcome` message; rejects with HeraldError(closeCode) if the
   *   session ends without reconnecting first.
   */
  connect() {
    const ready = this._whenReady();
    ready.catch(() => {}); // may be ignored: failures are reported through onStateChange too
    if (this._closedByClient) {
      this._closedByClient = false;
      if (typeof addEventListener === 'function') addEventListener('online', this._onOnline);
      this._open();
    }
    return ready;
  }

  /**
   * Closes the connection with code 1000 and stops reconnecting. Subscriptions and handlers are
   * kept: a later `connect()` restores them.
   * @param {string} [reason]
   */
  close(reason = 'client closed') {
    if (this._closedByClient) return;
    this._closedByClient = true;
    this._gen++;
    if (typeof removeEventListener === 'function') removeEventListener('online', this._onOnline);
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const ws = this._ws;
    if (ws) {
      this._detach(ws);
      try {
        ws.close(1000, reason);
      } catch {
        ws.close(1000); // reason longer than 123 bytes
      }
    }
    this._disconnected(CloseCodes.NORMAL, reason);
  }

  /**
   * Listens for state changes; called on every transition and on every close.
   * @param {(state: string, info: object) => void} listener
   * @returns {() => void} removes the listener
   */
  onStateChange(listener) {
    this._stateListeners.add(listener);
    return () => this._stateListeners.delete(listener);
  }

  /**
   * Listens for refused subscriptions and for errors that belong to no request.
   * @param {(err: HeraldError) => void} listener
   * @returns {() => void} removes the listener
   */
  onError(listener) {
    this._errorListeners.add(listener);
    return () => this._errorListeners.delete(listener);
  }

  /**
   * Listens for resubscriptions that could not recover what was missed
   * (`recovered: false`): refetch the channel's state from your backend.
   * @param {(info: {channel: string, since: {offset: number, epoch: string}, position: {offset: number, epoch: string}}) => void} listener
   * @returns {() => void} removes the listener
   */
  onRecoveryFailed(listener) {
    this._recoveryListeners.add(listener);
    return () => this._recoveryListeners.delete(listener);
  }

  /**
   * Listens for channels the client stopped subscribing to because the server refused them:
   * a permanent error (`transient: false`, e.g. 103 invalid channel, 104 permission denied) or
   * a transient one still failing after `resubscribe.maxAttempts` tries (`transient: true`).
   * `attempts` counts the subscribes sent in a row. The channel is gone from `channels`.
   * @param {(info: {channel: string, code: number, reason: string, transient: boolean, attempts: number}) => void} listener
   * @returns {() => void} removes the listener
   */
  onSubscriptionDropped(listener) {
    this._droppedListeners.add(listener);
    return () => this._droppedListeners.delete(listener);
  }

  /**
   * Listens for `gap` notices: publications on a channel may have been missed
   * (`{channel, from?, to?, epoch?}`, positions on channels with history).
   * @param {(gap: {channel: string, from?: number, to?: number, epoch?: string}) => void} listener
   * @returns {() => void} removes the listener
   */
  onGap(listener) {
    this._gapListeners.add(listener);
    return () => this._gapListeners.delete(listener);
  }

  /** The last stream position seen on a channel with history, or undefined. */
  position(channel) {
    const position = this._subs.get(channel)?.position;
    return position ? { ...position } : undefined;
  }

  /** Whether the last resubscribe to `channel` recovered (undefined: no `since` was sent). */
  recovered(channel) {
    return this._subs.get(channel)?.recovered;
  }

  /**
   * Reads a channel's history (where the namespace has `client_history`).
   * @param {string} channel
   * @param {{since?: number, limit?: number, reverse?: boolean}} [options]
   * @returns {Promise<{publications: Array<{event: string, data: any, ts?: number, offset: number}>, position: {offset: number, epoch: string}}>}
   */
  history(channel, options = {}) {
    return this._request({ type: 'history', channel, ...options }).then((msg) => ({
      publications: msg.publications,
      position: msg.position,
    }));
  }

  // ---------------------------------------------------------------- channels & events

  /**
   * Joins a channel, now or as soon as connected; remembered across reconnects.
   * @param {string} channel
   * @returns {Promise<void>} resolves on `ok`; rejects with HeraldError(server code) on `error`
   */
  subscribe(channel) {
    let sub = this._subs.get(channel);
    if (sub?.confirmed) return Promise.resolve();
    if (!sub) {
      sub = { confirmed: false, inflight: false, waiters: [], failures: 0, retryTimer: null };
      this._subs.set(channel, sub);
    }
    const promise = new Promise((resolve, reject) => sub.waiters.push({ resolve, reject }));
    promise.catch(() => {}); // may be ignored: refusals are reported through onError too
    if (this.state === 'connected' && !sub.inflight) this._sendSubscribe(channel, sub);
    return promise;
  }

  /**
   * Leaves a channel and forgets it. While disconnected this resolves at once.
   * @param {string} channel
   * @returns {Promise<void>} resolves on `ok`; rejects with HeraldError(server code) on `error`
   */
  unsubscribe(channel) {
    const sub = this._subs.get(channel);
    this._subs.delete(channel);
    if (sub) this._cancelRetry(sub);
    if (sub && !sub.inflight) this._settleWaiters(sub, new HeraldError('closed', 'unsubscribed before the subscription completed'));
    if (this.state !== 'connected') return Promise.resolve();
    return this._request({ type: 'unsubscribe', channel }).then(() => undefined);
  }

  /** Channels this client wants to be in (subscribed or about to be). */
  get channels() {
    return [...this._subs.keys()];
  }

  /**
   * Adds a handler for pushes. `channel` and `event` may be '*' (any).
   * `on(channel, handler)` is short for `on(channel, '*', handler)`.
   * @param {string} channel
   * @param {string|Function} event
   * @param {(data: any, meta: {channel: string, event: string, ts?: number}) => void} [handler]
   * @returns {() => void} removes the handler
   */
  on(channel, event, handler) {
    if (typeof event === 'function') [event, handler] = ['*', event];
    let byEvent = this._handlers.get(channel);
    if (!byEvent) this._handlers.set(channel, (byEvent = new Map()));
    let set = byEvent.get(event);
    if (!set) byEvent.set(event, (set = new Set()));
    set.add(handler);
    return () => this.off(channel, event, handler);
  }

  /** Removes a handler added with `on()`. */
  off(channel, event, handler) {
    if (typeof event === 'function') [event, handler] = ['*', event];
    const byEvent = this._handlers.get(channel);
    const set = byEvent?.get(event);
    if (!set) return;
    set.delete(handler);
    if (set.size === 0) byEvent.delete(event);
    if (byEvent.size === 0) this._handlers.delete(channel);
  }

  // ---------------------------------------------------------------- requests

  /**
   * Publishes from the client (the server must allow client publishing on the channel).
   * @returns {Promise<void>} resolves on `ok`; rejects with HeraldError
   */
  publish(channel, event, data) {
    return this._request({ type: 'publish', channel, event, data: data === undefined ? null : data }).then(() => undefined);
  }

  /**
   * Application-level ping.
   * @returns {Promise<number>} round-trip time in milliseconds
   */
  ping() {
    const start = now();
    return this._request({ type: 'ping' }).then(() => {
      this.latencyMs = now() - start;
      return this.latencyMs;
    });
  }

  /**
   * Fetches a fresh token through `getToken()` and hands it to the live connection (`refresh`).
   * Called automatically on `token_expiring` and before the token's `exp`.
   * @returns {Promise<string>} the new token
   */
  refreshToken() {
    if (!this._getToken) return Promise.reject(new HeraldError('no_get_token', 'refreshToken() needs the getToken option'));
    if (this._refreshing) return this._refreshing;
    this._refreshing = (async () => {
      const token = await this._getToken();
      this._token = token;
      if (this.state === 'connected' && this._refreshSupported !== false) {
        try {
          await this._request({ type: 'refresh', token });
          this._refreshSupported = true;
        } catch (err) {
          if (err.code === ErrorCodes.UNKNOWN_TYPE) this._refreshSupported = false; // older server: new token waits for the next reconnect
          else throw err;
        }
      }
      this._scheduleRefresh();
      return token;
    })().finally(() => {
      this._refreshing = null;
    });
    return this._refreshing;
  }

  // ---------------------------------------------------------------- internals

  _whenReady() {
    if (this.state === 'connected') return Promise.resolve(this.welcome);
    return new Promise((resolve, reject) => this._readyWaiters.push({ resolve, reject }));
  }

  _setState(state, info) {
    this.state = state;
    for (const listener of [...this._stateListeners]) {
      try {
        listener(state, info);
      } catch (err) {
        reportError(err);
      }
    }
  }

  _emitError(err) {
    if (this._errorListeners.size === 0) {
      if (typeof console !== 'undefined') console.warn('herald:', err);
      return;
    }
    for (const listener of [...this._errorListeners]) {
      try {
        listener(err);
      } catch (e) {
        reportError(e);
      }
    }
  }

  /** Whether the next connection needs a token from getToken() first. */
  _needsToken() {
    if (!this._getToken) return false;
    if (!this._token) return true;
    const exp = jwtExp(this._token);
    return exp !== null && exp * 1000 <= Date.now() + 1000;
  }

  _open() {
    const gen = ++this._gen;
    this._retryTimer = null;
    this._setState('connecting', { attempt: this._attempt });
    if (!this._needsToken()) {
      this._openSocket(this._token || null);
      return;
    }
    Promise.resolve()
      .then(() => this._getToken())
      .then(
        (token) => {
          if (gen !== this._gen) return; // close() meanwhile
          this._token = token;
          this._openSocket(token || null);
        },
        (err) => {
          if (gen !== this._gen) return;
          this._disconnected(0, `getToken failed: ${err?.message ?? err}`, true);
        },
      );
  }

  _openSocket(token) {
    const protocols = [SUBPROTOCOLS[this.format]];
    let url = this.url;
    if (token && this.authMode === 'subprotocol') protocols.push(`bearer.${token}`);
    if (token && this.authMode === 'query') {
      const u = new URL(url);
      u.searchParams.set('token', token);
      url = u.toString();
    }
    let ws;
    try {
      ws = new this._WebSocket(url, protocols);
    } catch (err) {
      this._disconnected(0, `cannot open WebSocket: ${err?.message ?? err}`, false);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._connectTimer = setTimeout(() => this._abandon(ws, CloseCodes.ABNORMAL, `no welcome within ${this.connectTimeoutMs} ms`), this.connectTimeoutMs);
    ws.onopen = () => {
      if (this._ws !== ws) return;
      if (!token || this.authMode === 'message') {
        const auth = { type: 'auth', id: ++this._lastId };
        if (token) auth.token = token;
        this._send(auth);
      }
    };
    ws.onmessage = (event) => this._onFrame(ws, event.data);
    ws.onerror = () => {}; // a close event always follows
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._detach(ws);
      this._disconnected(event.code, event.reason || '');
    };
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (this._ws === ws) this._ws = null;
  }

  /** Gives up on a socket that is alive on paper only, and handles it as closed. */
  _abandon(ws, code, reason) {
    if (this._ws !== ws) return;
    this._detach(ws);
    try { ws.close(); } catch { /* ignore */ }
    this._disconnected(code, reason);
  }

  /**
   * Common path for every end of a connection attempt or connection.
   * @param {boolean} [retryable] overrides the close-code rule (client-side failures)
   */
  _disconnected(code, reason, retryable) {
    clearTimeout(this._connectTimer);
    clearTimeout(this._heartbeatTimer);
    clearTimeout(this._refreshTimer);
    this._connectTimer = this._heartbeatTimer = this._refreshTimer = null;
    const wasConnected = this.state === 'connected';
    if (wasConnected && now() - this._connectedAt >= this.reconnectOptions.stableMs) this._attempt = 0;
    this.welcome = null;

    const lost = new HeraldError(this._closedByClient ? 'closed' : 'disconnected', reason || `connection closed (${code})`);
    for (const [id, pending] of this._pending) {
      clearTimeout(pending.timer);
      this._pending.delete(id);
      pending.reject(lost);
    }
    for (const sub of this._subs.values()) {
      sub.confirmed = false;
      sub.inflight = false;
      this._cancelRetry(sub); // every channel is subscribed again on the next welcome
    }

    if (code === CloseCodes.TOKEN_EXPIRED) this._token = null; // getToken() before the next attempt
    let willReconnect =
      !this._closedByClient &&
      this.reconnectOptions.enabled &&
      (retryable ?? shouldReconnect(code)) &&
      !(code === CloseCodes.TOKEN_EXPIRED && !this._getToken);

    this.stats.lastClose = { code, reason, at: Date.now() };
    const info = { code, reason, willReconnect, attempt: this._attempt, wasConnected };
    if (willReconnect) {
      const { baseMs, maxMs } = this.reconnectOptions;
      info.delayMs = Math.round(Math.random() * Math.min(maxMs, baseMs * 2 ** Math.min(this._attempt, 30)));
      this._attempt++;
      this._retryTimer = setTimeout(() => this._open(), info.delayMs);
    } else {
      this._closedByClient = true;
      if (typeof removeEventListener === 'function') removeEventListener('online', this._onOnline);
      const end = new HeraldError(code, reason || `connection closed (${code})`);
      for (const w of this._readyWaiters.splice(0)) w.reject(end);
      for (const sub of this._subs.values()) this._settleWaiters(sub, end);
    }
    this._setState('disconnected', info);
  }

  _onFrame(ws, raw) {
    if (this._ws !== ws) return;
    let msg;
    try {
      msg = typeof raw === 'string' ? JSON.parse(raw) : decodeMsgpack(new Uint8Array(raw));
    } catch (err) {
      this._emitError(new HeraldError('decode', `undecodable frame: ${err.message}`));
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'push':
        this._dispatch(msg);
        break;
      case 'welcome':
        this._onWelcome(msg);
        break;
      case 'ok':
      case 'pong':
      case 'subscribed':
      case 'history':
        this._settle(msg.id, null, msg);
        break;
      case 'gap':
        this._onGap(msg);
        break;
      case 'error': {
        const err = new HeraldError(msg.code, msg.reason ?? 'error');
        if (!this._settle(msg.id, err)) this._emitError(err);
        break;
      }
      case 'token_expiring':
        if (this._getToken) this.refreshToken().catch((err) => this._emitError(err));
        break;
      default:
        break; // newer server: ignore unknown message types
    }
  }

  _onWelcome(msg) {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    const reconnected = this._everConnected;
    this._everConnected = true;
    if (reconnected) this.stats.reconnects++;
    this._connectedAt = now();
    this.welcome = msg;
    this.state = 'connected';
    for (const [channel, sub] of this._subs) this._sendSubscribe(channel, sub);
    this._scheduleHeartbeat();
    this._scheduleRefresh();
    for (const w of this._readyWaiters.splice(0)) w.resolve(msg);
    this._setState('connected', { welcome: msg, reconnected });
  }

  _onGap(msg) {
    const sub = this._subs.get(msg.channel);
    // A new epoch voids the old position: continue from the notice's.
    if (sub?.position && msg.epoch != null && msg.epoch !== sub.position.epoch) {
      sub.position = { offset: Math.max(0, Number(msg.to ?? 0)), epoch: msg.epoch };
    }
    for (const listener of [...this._gapListeners]) {
      try {
        listener({ channel: msg.channel, from: msg.from, to: msg.to, epoch: msg.epoch });
      } catch (err) {
        reportError(err);
      }
    }
  }

  _dispatch(msg) {
    this.stats.pushes++;
    const meta = { channel: msg.channel, event: msg.event, ts: msg.ts };
    if (msg.offset != null) {
      meta.offset = msg.offset;
      const sub = this._subs.get(msg.channel);
      if (sub?.position) sub.position = { offset: Number(msg.offset), epoch: sub.position.epoch };
    }
    for (const channel of msg.channel === '*' ? ['*'] : [msg.channel, '*']) {
      const byEvent = this._handlers.get(channel);
      if (!byEvent) continue;
      for (const event of msg.event === '*' ? ['*'] : [msg.event, '*']) {
        const set = byEvent.get(event);
        if (!set) continue;
        for (const handler of [...set]) {
          try {
            handler(msg.data, meta);
          } catch (err) {
            reportError(err);
          }
        }
      }
    }
  }

  _send(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(this.format === 'msgpack' ? encodeMsgpack(msg) : JSON.stringify(msg));
    return true;
  }

  _request(msg) {
    if (this.state !== 'connected' || !this._ws || this._ws.readyState !== OPEN) {
      return Promise.reject(new HeraldError('not_connected', `cannot send ${msg.type}: not connected`));
    }
    const id = ++this._lastId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new HeraldError('timeout', `no reply to ${msg.type} within ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      this._send({ ...msg, id });
    });
  }

  /** Settles the request with `id`; false if there is none. */
  _settle(id, err, value) {
    const pending = id == null ? undefined : this._pending.get(Number(id));
    if (!pending) return false;
    this._pending.delete(Number(id));
    clearTimeout(pending.timer);
    if (err) pending.reject(err);
    else pending.resolve(value);
    return true;
  }

  _settleWaiters(sub, err) {
    for (const w of sub.waiters.splice(0)) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  _cancelRetry(sub) {
    if (sub.retryTimer !== null && sub.retryTimer !== undefined) clearTimeout(sub.retryTimer);
    sub.retryTimer = null;
  }

  /** A subscribe refused with a transient code: try again later, or give up after maxAttempts. */
  _retrySubscribe(channel, sub, err) {
    const { baseMs, maxMs, maxAttempts } = this.resubscribeOptions;
    if (sub.failures >= maxAttempts) {
      this._dropSubscription(channel, sub, err, true);
      return;
    }
    const cap = Math.min(maxMs, baseMs * 2 ** Math.min(sub.failures - 1, 30));
    const delayMs = Math.round(cap / 2 + (Math.random() * cap) / 2);
    this._cancelRetry(sub);
    sub.retryTimer = setTimeout(() => {
      sub.retryTimer = null;
      if (this.state === 'connected' && this._subs.get(channel) === sub && !sub.inflight && !sub.confirmed) {
        this._sendSubscribe(channel, sub);
      }
    }, delayMs);
  }

  /** The server refused `channel` for good: forget it, or every reconnect would fail the same way. */
  _dropSubscription(channel, sub, err, transient) {
    this._cancelRetry(sub);
    const attempts = sub.failures;
    sub.failures = 0;
    if (this._subs.get(channel) === sub) this._subs.delete(channel);
    this._emitError(new HeraldError(err.code, `subscribe ${channel}: ${err.reason}`));
    const info = { channel, code: err.code, reason: err.reason, transient, attempts };
    for (const listener of [...this._droppedListeners]) {
      try {
        listener(info);
      } catch (e) {
        reportError(e);
      }
    }
    this._settleWaiters(sub, err);
  }

  _sendSubscribe(channel, sub) {
    this._cancelRetry(sub);
    sub.inflight = true;
    const since = sub.position ? { ...sub.position } : undefined;
    this._request(since ? { type: 'subscribe', channel, since } : { type: 'subscribe', channel }).then(
      (reply) => {
        sub.inflight = false;
        sub.failures = 0;
        if (this._subs.get(channel) === sub) sub.confirmed = true;
        if (reply?.type === 'subscribed') this._onSubscribed(channel, sub, since, reply);
        this._settleWaiters(sub, null);
      },
      (err) => {
        sub.inflight = false;
        if (err.code === ErrorCodes.ALREADY_SUBSCRIBED) {
          if (this._subs.get(channel) === sub) sub.confirmed = true;
          this._settleWaiters(sub, null);
        } else if (typeof err.code === 'number') {
          sub.failures = (sub.failures ?? 0) + 1;
          if (this._subs.get(channel) !== sub) this._settleWaiters(sub, err); // unsubscribed meanwhile
          else if (isTransientError(err.code)) this._retrySubscribe(channel, sub, err);
          else this._dropSubscription(channel, sub, err, false);
        } else if (err.code === 'timeout') {
          this._settleWaiters(sub, err); // stays wanted: retried on the next connection
        } else if (this._subs.get(channel) !== sub) {
          this._settleWaiters(sub, err);
        }
        // 'disconnected': waiters stay, the channel is subscribed again after reconnecting
      },
    );
  }

  _onSubscribed(channel, sub, since, reply) {
    // Recovered: the replay (everything after `since`, up to `reply.position`) follows the
    // reply and moves the position push by push. Keeping `since` until then means a socket
    // lost mid-replay asks for the rest again instead of skipping it.
    const position = since && reply.recovered === true ? since : reply.position;
    sub.position = position ? { offset: Number(position.offset), epoch: position.epoch } : undefined;
    sub.recovered = reply.recovered;
    if (since && reply.recovered === false) {
      for (const listener of [...this._recoveryListeners]) {
        try {
          listener({ channel, since, position: this.position(channel) });
        } catch (err) {
          reportError(err);
        }
      }
    }
  }

  _scheduleHeartbeat() {
    if (!this.heartbeat) return;
    const interval = Math.max(1000, Math.min(Number(this.welcome?.heartbeat_ms) || 25000, MAX_TIMER_MS));
    const gen = this._gen;
    this._heartbeatTimer = setTimeout(() => {
      if (gen !== this._gen || this.state !== 'connected') return;
      const ws = this._ws;
      this.ping().then(
        () => {
          if (gen === this._gen && this.state === 'connected') this._scheduleHeartbeat();
        },
        (err) => {
          if (err.code === 'timeout') this._abandon(ws, CloseCodes.ABNORMAL, `no pong within ${this.requestTimeoutMs} ms`);
        },
      );
    }, interval);
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (!this._getToken || this.state !== 'connected') return;
    const exp = jwtExp(this._token);
    if (exp === null) return;
    const remaining = exp * 1000 - Date.now();
    if (remaining <= 0) return; // the server will close with 4005; the reconnect fetches a token
    const delay = Math.max(0, remaining - Math.min(60000, remaining / 5));
    this._refreshTimer = setTimeout(() => {
      this._refreshTimer = null;
      this.refreshToken().catch((err) => this._emitError(err));
    }, Math.min(delay, MAX_TIMER_MS));
  }
}

// -------------------------------------------------------------------- MessagePack

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/**
 * Encodes a value as MessagePack: null/undefined, booleans, numbers (ints in the smallest
 * form, others float64), bigint (64-bit ints), strings, Uint8Array/ArrayBuffer (bin), arrays,
 * Map and plain objects (maps; `undefined` properties skipped, `toJSON()` honoured).
 * @param {any} value
 * @returns {Uint8Array}
 */
export function encodeMsgpack(value) {
  const w = new Writer();
  w.value(value, 0);
  return w.bytes();
}

/**
 * Decodes one MessagePack value. Maps become plain objects (keys as strings), bin becomes
 * Uint8Array, 64-bit ints beyond 2^53 become bigint, ext becomes {type, data}.
 * @param {Uint8Array} bytes
 */
export function decodeMsgpack(bytes) {
  const r = new Reader(bytes);
  const value = r.value(0);
  if (r.pos !== bytes.length) throw new Error(`msgpack: ${bytes.length - r.pos} trailing bytes`);
  return value;
}

const MAX_DEPTH = 512;

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  bytes() {
    return this.buf.subarray(0, this.pos);
  }

  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const buf = new Uint8Array(size);
    buf.set(this.buf.subarray(0, this.pos));
    this.buf = buf;
    this.view = new DataView(buf.buffer);
  }

  u8(x) { this.ensure(1); this.buf[this.pos++] = x; }
  head8(tag, x) { this.ensure(2); this.buf[this.pos++] = tag; this.buf[this.pos++] = x; }
  head16(tag, x) { this.ensure(3); this.buf[this.pos] = tag; this.view.setUint16(this.pos + 1, x); this.pos += 3; }
  head32(tag, x) { this.ensure(5); this.buf[this.pos] = tag; this.view.setUint32(this.pos + 1, x); this.pos += 5; }
  raw(bytes) { this.ensure(bytes.length); this.buf.set(bytes, this.pos); this.pos += bytes.length; }

  value(v, depth) {
    if (depth > MAX_DEPTH) throw new Error('msgpack: value nested too deeply');
    switch (typeof v) {
      case 'undefined':
        return this.u8(0xc0);
      case 'boolean':
        return this.u8(v ? 0xc3 : 0xc2);
      case 'number':
        return Number.isSafeInteger(v) ? this.int(v) : this.float(v);
      case 'bigint':
        return this.bigint(v);
      case 'string':
        return this.str(v);
      case 'object':
        break;
      default:
        throw new TypeError(`msgpack: cannot encode ${typeof v}`);
    }
    if (v === null) return this.u8(0xc0);
    if (v instanceof Uint8Array) return this.bin(v);
    if (v instanceof ArrayBuffer) return this.bin(new Uint8Array(v));
    if (ArrayBuffer.isView(v)) return this.bin(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    if (Array.isArray(v)) {
      this.len(v.length, 0x90, 0xdc, 0xdd);
      for (const item of v) this.value(item, depth + 1);
      return;
    }
    if (v instanceof Map) {
      this.len(v.size, 0x80, 0xde, 0xdf);
      for (const [key, item] of v) {
        this.value(key, depth + 1);
        this.value(item, depth + 1);
      }
      return;
    }
    if (typeof v.toJSON === 'function') return this.value(v.toJSON(), depth + 1);
    const keys = Object.keys(v).filter((k) => v[k] !== undefined && typeof v[k] !== 'function');
    this.len(keys.length, 0x80, 0xde, 0xdf);
    for (const key of keys) {
      this.str(key);
      this.value(v[key], depth + 1);
    }
  }

  len(n, fix, tag16, tag32) {
    if (n < 16) this.u8(fix | n);
    else if (n < 0x10000) this.head16(tag16, n);
    else this.head32(tag32, n);
  }

  int(v) {
    if (v >= 0) {
      if (v < 0x80) this.u8(v);
      else if (v < 0x100) this.head8(0xcc, v);
      else if (v < 0x10000) this.head16(0xcd, v);
      else if (v < 0x100000000) this.head32(0xce, v);
      else this.bigint(BigInt(v));
    } else if (v >= -32) this.u8(v & 0xff);
    else if (v >= -0x80) this.head8(0xd0, v & 0xff);
    else if (v >= -0x8000) { this.ensure(3); this.buf[this.pos] = 0xd1; this.view.setInt16(this.pos + 1, v); this.pos += 3; }
    else if (v >= -0x80000000) { this.ensure(5); this.buf[this.pos] = 0xd2; this.view.setInt32(this.pos + 1, v); this.pos += 5; }
    else this.bigint(BigInt(v));
  }

  bigint(v) {
    this.ensure(9);
    if (v >= 0n) {
      if (v > 0xffffffffffffffffn) throw new RangeError('msgpack: integer above 2^64-1');
      this.buf[this.pos] = 0xcf;
      this.view.setBigUint64(this.pos + 1, v);
    } else {
      if (v < -0x8000000000000000n) throw new RangeError('msgpack: integer below -2^63');
      this.buf[this.pos] = 0xd3;
      this.view.setBigInt64(this.pos + 1, v);
    }
    this.pos += 9;
  }

  float(v) {
    this.ensure(9);
    this.buf[this.pos] = 0xcb;
    this.view.setFloat64(this.pos + 1, v);
    this.pos += 9;
  }

  str(s) {
    const bytes = textEncoder.encode(s);
    const n = bytes.length;
    if (n < 32) this.u8(0xa0 | n);
    else if (n < 0x100) this.head8(0xd9, n);
    else if (n < 0x10000) this.head16(0xda, n);
    else this.head32(0xdb, n);
    this.raw(bytes);
  }

  bin(bytes) {
    const n = bytes.length;
    if (n < 0x100) this.head8(0xc4, n);
    else if (n < 0x10000) this.head16(0xc5, n);
    else this.head32(0xc6, n);
    this.raw(bytes);
  }
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  need(n) {
    if (this.pos + n > this.bytes.length) throw new Error('msgpack: unexpected end of data');
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u8() { return this.bytes[this.need(1)]; }
  u16() { return this.view.getUint16(this.need(2)); }
  u32() { return this.view.getUint32(this.need(4)); }

  u64() {
    const v = this.view.getBigUint64(this.need(8));
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  i64() {
    const v = this.view.getBigInt64(this.need(8));
    return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
  }

  str(n) {
    const at = this.need(n);
    return textDecoder.decode(this.bytes.subarray(at, at + n));
  }

  bin(n) {
    const at = this.need(n);
    return this.bytes.slice(at, at + n);
  }

  ext(n) {
    const type = this.view.getInt8(this.need(1));
    return { type, data: this.bin(n) };
  }

  array(n, depth) {
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  map(n, depth) {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = this.value(depth + 1);
      const k = typeof key === 'string' ? key : String(key);
      const v = this.value(depth + 1);
      if (k === '__proto__') Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
      else out[k] = v;
    }
    return out;
  }

  value(depth) {
    if (depth > MAX_DEPTH) throw new Error('msgpack: value nested too deeply');
    const b = this.u8();
    if (b < 0x80) return b;
    if (b < 0x90) return this.map(b & 0x0f, depth);
    if (b < 0xa0) return this.array(b & 0x0f, depth);
    if (b < 0xc0) return this.str(b & 0x1f);
    if (b >= 0xe0) return b - 0x100;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.u8());
      case 0xc5: return this.bin(this.u16());
      case 0xc6: return this.bin(this.u32());
      case 0xc7: return this.ext(this.u8());
      case 0xc8: return this.ext(this.u16());
      case 0xc9: return this.ext(this.u32());
      case 0xca: return this.view.getFloat32(this.need(4));
      case 0xcb: return this.view.getFloat64(this.need(8));
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: return this.u64();
      case 0xd0: return this.view.getInt8(this.need(1));
      case 0xd1: return this.view.getInt16(this.need(2));
      case 0xd2: return this.view.getInt32(this.need(4));
      case 0xd3: return this.i64();
      case 0xd4: return this.ext(1);
      case 0xd5: return this.ext(2);
      case 0xd6: return this.ext(4);
      case 0xd7: return this.ext(8);
      case 0xd8: return this.ext(16);
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.array(this.u16(), depth);
      case 0xdd: return this.array(this.u32(), depth);
      case 0xde: return this.map(this.u16(), depth);
      case 0xdf: return this.map(this.u32(), depth);
      default: throw new Error(`msgpack: invalid byte 0x${b.toString(16)}`);
    }
  }
}
