// Session flow under load: every iteration of every VU walks one login
// session through its whole life, the way a browser does (docs/AUTH.md):
//
//   1. create a session with the API key       POST /api/v1/sessions → 201
//   2. connect with its access token           GET /ws → welcome with session:<sid>
//   3. subscribe                               subscribe → ok
//   4. wait for token_expiring                 (sessions use a short access TTL,
//                                               so the hub warns right away)
//   5. rotate the refresh token                POST /api/v1/sessions/refresh → 200
//   6. refresh in band on the live socket      refresh {token: new access} → ok
//   7. log out                                 POST /api/v1/sessions/logout → 204,
//                                               and the hub closes the socket with 4505
//   8. the spent refresh token stays dead      POST /api/v1/sessions/refresh → 401
//
// Each step has its own success rate, all with `rate==1` thresholds.
//
//   HERALD_URL=http://127.0.0.1:8080 k6 run k6/auth.js
//
// Environment (all optional): AUTH_VUS (5), AUTH_ITERATIONS per VU (3),
// AUTH_ACCESS_TTL seconds (30), AUTH_EXPECT_EXPIRING (1), AUTH_EXPIRING_WAIT_MS
// (5000), AUTH_STEP_TIMEOUT_MS (10000), AUTH_P99_MS (500), plus the HERALD_*
// settings of lib/herald.js. Each iteration makes 4 session calls from this
// machine's address: keep VUS × ITERATIONS × 4 under the hub's
// rate_limits.session_calls_per_ip_per_minute (120 by default) per minute,
// or raise that limit on the hub under test.

import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  assertReady,
  closeCodeOf,
  config,
  envInt,
  envNum,
  metrics,
  ms,
  report,
  runId,
  summaryTrendStats,
} from './lib/herald.js';

const VUS = envInt('AUTH_VUS', 5);
const ITERATIONS = envInt('AUTH_ITERATIONS', 3);
// Access token lifetime of the sessions the script creates. Shorter than the
// hub's auth.expiry_warning_ms (60 s by default), so token_expiring comes
// right after welcome instead of after minutes.
const ACCESS_TTL = envInt('AUTH_ACCESS_TTL', 30);
// Whether a token_expiring notice is required (set 0 against a hub whose
// auth.expiry_warning_ms is shorter than AUTH_ACCESS_TTL).
const EXPECT_EXPIRING = (__ENV.AUTH_EXPECT_EXPIRING || '1') !== '0';
// How long after the subscription the VU waits for token_expiring before it
// rotates anyway.
const EXPIRING_WAIT_MS = envInt('AUTH_EXPIRING_WAIT_MS', 5000);
// Longest wait for any one answer (welcome, ok, the 4505 close).
const STEP_TIMEOUT_MS = envInt('AUTH_STEP_TIMEOUT_MS', 10000);
const P99_MS = envNum('AUTH_P99_MS', 500);

const ITERATION_BUDGET_MS = 3 * STEP_TIMEOUT_MS + EXPIRING_WAIT_MS;

const m = {
  create: new Rate('herald_session_create_success'),
  createDuration: new Trend('herald_session_create_duration', true),
  sessionChannel: new Rate('herald_session_channel_joined'),
  expiring: new Rate('herald_token_expiring_received'),
  rotate: new Rate('herald_session_refresh_success'),
  rotateDuration: new Trend('herald_session_refresh_duration', true),
  inband: new Rate('herald_inband_refresh_success'),
  inbandDuration: new Trend('herald_inband_refresh_duration', true),
  logout: new Rate('herald_logout_success'),
  logoutClose: new Trend('herald_logout_close_duration', true),
  spentRefused: new Rate('herald_spent_token_refused'),
  flow: new Rate('herald_auth_flow_success'),
  rateLimited: new Counter('herald_session_rate_limited'),
};

export const options = {
  summaryTrendStats,
  scenarios: {
    sessions: {
      executor: 'per-vu-iterations',
      exec: 'sessionFlow',
      vus: VUS,
      iterations: ITERATIONS,
      maxDuration: ms(ITERATIONS * ITERATION_BUDGET_MS + 10000),
      gracefulStop: '5s',
    },
  },
  thresholds: {
    herald_session_create_success: ['rate==1'],
    herald_connect_success: ['rate==1'],
    herald_session_channel_joined: ['rate==1'],
    herald_subscribe_success: ['rate==1'],
    ...(EXPECT_EXPIRING ? { herald_token_expiring_received: ['rate==1'] } : {}),
    herald_session_refresh_success: ['rate==1'],
    herald_inband_refresh_success: ['rate==1'],
    herald_logout_success: ['rate==1'],
    herald_spent_token_refused: ['rate==1'],
    herald_auth_flow_success: ['rate==1'],
    herald_unexpected_closes: ['count==0'],
    checks: ['rate==1'],
    herald_session_create_duration: [`p(99)<${P99_MS}`],
    herald_session_refresh_duration: [`p(99)<${P99_MS}`],
    herald_inband_refresh_duration: [`p(99)<${P99_MS}`],
  },
};

export function setup() {
  assertReady();
  const id = runId();
  return { channel: `k6.auth.${id}`, userPrefix: `k6-auth-${id}` };
}

// ---------------------------------------------------------------------------
// HTTP calls

function post(path, body, { apiKey = false, name, expected = null }) {
  const headers = { 'Content-Type': 'application/json' };
  if (apiKey) headers.Authorization = `Bearer ${config.apiKey}`;
  const params = { headers, tags: { name }, timeout: `${STEP_TIMEOUT_MS}ms` };
  // A refusal the script asks for is not an http_req_failed.
  if (expected !== null) params.responseCallback = http.expectedStatuses(expected);
  const res = http.post(`${config.httpUrl}${path}`, JSON.stringify(body), params);
  if (res.status === 429) {
    m.rateLimited.add(1);
    console.warn(
      `${path}: 429 rate_limited: raise rate_limits.session_calls_per_ip_per_minute on the hub or lower AUTH_VUS/AUTH_ITERATIONS`,
    );
  }
  return res;
}

function errorCode(res) {
  try {
    return res.json().error.code;
  } catch (e) {
    return undefined;
  }
}

/** POST /api/v1/sessions; the parsed tokens, or null. */
function createSession(user) {
  const started = Date.now();
  const res = post('/api/v1/sessions', { user, access_ttl_secs: ACCESS_TTL }, { apiKey: true, name: 'session_create' });
  m.createDuration.add(Date.now() - started);
  let body = null;
  try {
    body = res.json();
  } catch (e) {
    body = null;
  }
  const ok = check(res, {
    'session created (201)': (r) => r.status === 201,
    'session has access and refresh tokens': () =>
      body !== null && typeof body.access_token === 'string' && typeof body.refresh_token === 'string',
    'refresh token is <sid>.<secret>': () =>
      body !== null && typeof body.refresh_token === 'string' && body.refresh_token.startsWith(`${body.session_id}.`),
    'access token lifetime as asked': () => body !== null && body.expires_in === ACCESS_TTL,
  });
  m.create.add(ok);
  if (!ok) console.warn(`create session for ${user}: status ${res.status} ${res.error || ''} ${String(res.body).slice(0, 200)}`);
  return ok ? body : null;
}

/** POST /api/v1/sessions/refresh; the new tokens, or null. */
function rotate(refreshToken) {
  const started = Date.now();
  const res = post('/api/v1/sessions/refresh', { refresh_token: refreshToken }, { name: 'session_refresh' });
  m.rotateDuration.add(Date.now() - started);
  let body = null;
  try {
    body = res.json();
  } catch (e) {
    body = null;
  }
  const ok = check(res, {
    'refresh answered 200': (r) => r.status === 200,
    'refresh rotated the refresh token': () =>
      body !== null && typeof body.refresh_token === 'string' && body.refresh_token !== refreshToken,
    'refresh returned an access token': () => body !== null && typeof body.access_token === 'string',
  });
  m.rotate.add(ok);
  if (!ok) console.warn(`refresh: status ${res.status} ${String(res.body).slice(0, 200)}`);
  return ok ? body : null;
}

// ---------------------------------------------------------------------------
// One session's life on one socket

export function sessionFlow(data) {
  const user = `${data.userPrefix}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`;
  const session = createSession(user);
  if (session === null) {
    m.flow.add(0);
    return;
  }
  runSocket(data.channel, user, session);
}

function runSocket(channel, user, session) {
  const st = {
    firstRefresh: session.refresh_token,
    tokens: session,
    nextId: 1,
    subscribeId: 0,
    subscribeSent: 0,
    refreshId: 0,
    refreshSent: 0,
    welcomed: false,
    subscribed: false,
    expiring: false,
    rotated: false,
    loggedOut: false,
    logoutAt: 0,
    clientClosed: false,
    errorText: '',
    failed: false,
    done: false,
    timers: {},
  };
  const startedAt = Date.now();

  let url = config.wsUrl;
  const params = { tags: { name: 'ws' } };
  if (config.authMode === 'query') {
    url += `${url.includes('?') ? '&' : '?'}token=${session.access_token}`;
  } else if (config.authMode === 'subprotocol') {
    params.headers = { 'Sec-WebSocket-Protocol': `herald.v1.json, bearer.${session.access_token}` };
  }
  const ws = new WebSocket(url, null, params);

  const timer = (name, fn, delay) => {
    if (st.timers[name] !== undefined) clearTimeout(st.timers[name]);
    st.timers[name] = setTimeout(() => {
      delete st.timers[name];
      fn();
    }, delay);
  };
  const clearTimer = (name) => {
    if (st.timers[name] !== undefined) {
      clearTimeout(st.timers[name]);
      delete st.timers[name];
    }
  };
  const send = (msg) => ws.send(JSON.stringify(msg));
  const closeSocket = () => {
    st.clientClosed = true;
    try {
      ws.close();
    } catch (e) {
      // already closed
    }
  };
  // Ends the iteration's socket; `why` marks it failed.
  const fail = (why) => {
    if (st.done || st.failed) return;
    st.failed = true;
    console.warn(`${user}: ${why}`);
    closeSocket();
    timer('closing', finish, 3000); // in case no close event comes
  };
  const finish = () => {
    if (st.done) return;
    st.done = true;
    for (const name of Object.keys(st.timers)) clearTimer(name);
    m.flow.add(!st.failed);
  };

  // Step 5 and 6: rotate over HTTP, then hand the new token to the socket.
  const rotateAndRefresh = () => {
    if (st.rotated || st.done) return;
    st.rotated = true;
    clearTimer('expiring');
    const tokens = rotate(st.tokens.refresh_token);
    if (tokens === null) {
      m.inband.add(0);
      fail('refresh token rotation failed');
      return;
    }
    st.tokens = tokens;
    st.refreshId = st.nextId++;
    st.refreshSent = Date.now();
    send({ type: 'refresh', id: st.refreshId, token: tokens.access_token });
    timer('refresh', () => {
      m.inband.add(0);
      fail(`no answer to the in-band refresh within ${STEP_TIMEOUT_MS} ms`);
    }, STEP_TIMEOUT_MS);
  };

  // Step 7: log out; the hub must close this socket with 4505.
  const logout = () => {
    const res = post('/api/v1/sessions/logout', { refresh_token: st.tokens.refresh_token }, { name: 'session_logout' });
    const ok = check(res, { 'logout answered 204': (r) => r.status === 204 });
    if (!ok) {
      m.logout.add(0);
      fail(`logout: status ${res.status} ${String(res.body).slice(0, 200)}`);
      return;
    }
    st.loggedOut = true;
    st.logoutAt = Date.now();
    timer('logout', () => {
      m.logout.add(0);
      fail(`socket not closed within ${STEP_TIMEOUT_MS} ms of the logout`);
    }, STEP_TIMEOUT_MS);
  };

  // Step 8: the first refresh token was spent by the rotation and its
  // session is revoked now.
  const spentTokenRefused = () => {
    const res = post('/api/v1/sessions/refresh', { refresh_token: st.firstRefresh }, { name: 'session_refresh_spent', expected: 401 });
    const ok = check(res, {
      'spent refresh token refused (401 session_revoked)': (r) => r.status === 401 && errorCode(r) === 'session_revoked',
    });
    m.spentRefused.add(ok);
    if (!ok) st.failed = true;
  };

  timer('welcome', () => {
    if (!st.welcomed) {
      metrics.connectSuccess.add(0);
      fail(`no welcome within ${STEP_TIMEOUT_MS} ms`);
    }
  }, STEP_TIMEOUT_MS);

  ws.onopen = () => {
    if (config.authMode === 'message') send({ type: 'auth', id: 0, token: session.access_token });
  };

  ws.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch (e) {
      fail(`unparsable frame ${String(event.data).slice(0, 100)}`);
      return;
    }
    switch (msg.type) {
      case 'welcome': {
        st.welcomed = true;
        clearTimer('welcome');
        metrics.connectSuccess.add(1);
        metrics.connectDuration.add(Date.now() - startedAt);
        const joined = Array.isArray(msg.channels) && msg.channels.includes(`session:${session.session_id}`);
        m.sessionChannel.add(joined);
        check(msg, {
          'welcome is for the session user': (w) => w.user_id === user,
          'welcome lists session:<sid>': () => joined,
        });
        st.subscribeId = st.nextId++;
        st.subscribeSent = Date.now();
        send({ type: 'subscribe', id: st.subscribeId, channel });
        timer('subscribe', () => {
          metrics.subscribeSuccess.add(0);
          fail(`no answer to subscribe within ${STEP_TIMEOUT_MS} ms`);
        }, STEP_TIMEOUT_MS);
        break;
      }
      case 'ok':
        if (msg.id === st.subscribeId && !st.subscribed) {
          st.subscribed = true;
          clearTimer('subscribe');
          metrics.subscribeSuccess.add(1);
          metrics.subscribeDuration.add(Date.now() - st.subscribeSent);
          if (st.expiring || !EXPECT_EXPIRING) {
            rotateAndRefresh();
          } else {
            timer('expiring', () => {
              m.expiring.add(0);
              console.warn(`${user}: no token_expiring within ${EXPIRING_WAIT_MS} ms; rotating anyway`);
              st.failed = true;
              rotateAndRefresh();
            }, EXPIRING_WAIT_MS);
          }
        } else if (msg.id === st.refreshId && st.refreshId !== 0) {
          clearTimer('refresh');
          m.inband.add(1);
          m.inbandDuration.add(Date.now() - st.refreshSent);
          logout();
        }
        break;
      case 'token_expiring':
        // The first one comes for the session's first token; another one
        // follows the in-band refresh (the new token is as short-lived).
        if (!st.expiring) {
          st.expiring = true;
          m.expiring.add(1);
          check(msg, {
            'token_expiring gives the time left': (t) =>
              typeof t.expires_in_ms === 'number' && t.expires_in_ms > 0 && t.expires_in_ms <= (ACCESS_TTL + 60) * 1000,
          });
          if (st.subscribed) rotateAndRefresh();
        }
        break;
      case 'error':
        if (msg.id === st.subscribeId && !st.subscribed) {
          clearTimer('subscribe');
          metrics.subscribeSuccess.add(0);
          fail(`subscribe ${channel} refused: ${msg.code} ${msg.reason}`);
        } else if (msg.id === st.refreshId && st.refreshId !== 0) {
          clearTimer('refresh');
          m.inband.add(0);
          fail(`in-band refresh refused: ${msg.code} ${msg.reason}`);
        } else {
          metrics.errorReplies.add(1, { code: String(msg.code) });
          fail(`error reply ${msg.code} ${msg.reason}`);
        }
        break;
      default:
        break; // push, pong, gap
    }
  };

  ws.onerror = (event) => {
    st.errorText = String(event.error || 'error');
  };

  ws.onclose = () => {
    clearTimer('closing');
    const code = closeCodeOf(st.errorText);
    if (st.loggedOut && !st.done) {
      clearTimer('logout');
      const ok = code === 4505;
      m.logout.add(ok);
      m.logoutClose.add(Date.now() - st.logoutAt);
      check(code, { 'logout closed the socket with 4505': (c) => c === 4505 });
      if (!ok) {
        st.failed = true;
        console.warn(`${user}: after logout the socket closed with ${code || 'no code'}: ${st.errorText}`);
      }
      spentTokenRefused();
    } else if (!st.clientClosed && !st.done) {
      if (!st.welcomed) metrics.connectSuccess.add(0);
      metrics.unexpectedCloses.add(1, { code: String(code || 1006) });
      st.failed = true;
      console.warn(`${user}: connection closed unexpectedly (${code || 'no code'}): ${st.errorText}`);
    }
    finish();
  };
}

export function handleSummary(data) {
  return report(data, `herald auth: ${VUS} VUs × ${ITERATIONS} sessions, access TTL ${ACCESS_TTL}s`, [
    `sessions: ${VUS * ITERATIONS} planned; each: create → connect → subscribe → token_expiring → rotate → refresh in band → logout (4505) → spent token refused`,
  ]);
}
