// Unit tests of examples/browser/herald.js against a scripted fake WebSocket: close-code
// policy, backoff, resubscription, token handling, in-band refresh, heartbeat, MessagePack.
// No browser, no hub:  node --test tests/browser/client.test.mjs

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { Herald, HeraldError, TRANSIENT_ERROR_CODES, decodeMsgpack, encodeMsgpack, isTransientError, shouldReconnect } from '../../examples/browser/herald.js';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A WebSocket the test plays the server for. */
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.protocol = '';
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(typeof data === 'string' ? JSON.parse(data) : decodeMsgpack(data));
  }
  close(code = 1000, reason = '') {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }
  // server side
  accept() {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  welcome(extra = {}) {
    this.push({ type: 'welcome', conn_id: 'n-1', user_id: '42', node_id: 'n', heartbeat_ms: 25000, protocol: 1, channels: ['user:42', 'broadcast'], ...extra });
  }
  drop(code, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  last(type) {
    return this.sent.filter((m) => m.type === type).at(-1);
  }
  reply(type, extra = {}) {
    const req = this.last(type);
    assert.ok(req, `no ${type} sent`);
    this.push({ type: 'ok', id: req.id, ...extra });
    return req;
  }
}

const latest = () => FakeSocket.all.at(-1);
const clients = [];
function client(options = {}) {
  const h = new Herald({ url: 'ws://hub.test/ws', WebSocket: FakeSocket, reconnect: { baseMs: 20, maxMs: 80 }, ...options });
  clients.push(h);
  return h;
}
async function until(cond, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(2);
  }
}
/** A JWT-shaped token with the given exp (the client only reads the payload). */
const jwt = (exp, sub = '42') => `h.${Buffer.from(JSON.stringify({ sub, exp })).toString('base64url')}.s`;

afterEach(() => {
  for (const h of clients.splice(0)) h.close();
  FakeSocket.all.length = 0;
});

test('authenticates with the first message and resolves connect() on welcome', async () => {
  const h = client({ token: 't0' });
  const states = [];
  h.onStateChange((s) => states.push(s));
  const ready = h.connect();
  const ws = latest();
  assert.deepEqual(ws.protocols, ['herald.v1.json']);
  ws.accept();
  assert.equal(ws.sent[0].type, 'auth');
  assert.equal(ws.sent[0].token, 't0');
  ws.welcome();
  const welcome = await ready;
  assert.equal(welcome.user_id, '42');
  assert.deepEqual(states, ['connecting', 'connected']);
});

test('token in the subprotocol or the query string when asked', async () => {
  client({ token: 'abc', auth: 'subprotocol', format: 'msgpack' }).connect();
  assert.deepEqual(latest().protocols, ['herald.v1.msgpack', 'bearer.abc']);
  latest().accept();
  assert.equal(latest().sent.length, 0, 'no auth message when the token went with the upgrade');
  client({ token: 'abc', auth: 'query' }).connect();
  assert.equal(new URL(latest().url).searchParams.get('token'), 'abc');
});

test('subscribe/unsubscribe resolve on ok and reject with the error code', async () => {
  const h = client({ token: 't' });
  const errors = [];
  h.onError((e) => errors.push(e.code));
  h.connect();
  latest().accept();
  latest().welcome();
  const ws = latest();
  const ok = h.subscribe('prices.BTC');
  ws.reply('subscribe');
  await ok;
  const bad = h.subscribe('x y');
  const req = ws.last('subscribe');
  ws.push({ type: 'error', id: req.id, code: 103, reason: 'invalid channel name' });
  await assert.rejects(bad, (e) => e instanceof HeraldError && e.code === 103);
  assert.deepEqual(h.channels, ['prices.BTC'], 'a refused channel is forgotten');
  assert.deepEqual(errors, [103], 'refusals also reach onError');
  const un = h.unsubscribe('prices.BTC');
  ws.reply('unsubscribe');
  await un;
  assert.deepEqual(h.channels, []);
});

test('pushes reach exact and wildcard handlers', async () => {
  const h = client({ token: 't' });
  h.connect();
  latest().accept();
  latest().welcome();
  const seen = [];
  h.on('prices.BTC', 'price_update', (d, m) => seen.push(['exact', d.price, m.ts]));
  h.on('*', 'price_update', (d, m) => seen.push(['any-channel', m.channel]));
  h.on('prices.BTC', (d, m) => seen.push(['any-event', m.event]));
  const off = h.on('*', '*', () => seen.push(['all']));
  latest().push({ type: 'push', channel: 'prices.BTC', event: 'price_update', data: { price: 1 }, ts: 5 });
  off();
  latest().push({ type: 'push', channel: 'prices.ETH', event: 'other', data: null });
  assert.deepEqual(seen, [['exact', 1, 5], ['any-event', 'price_update'], ['any-channel', 'prices.BTC'], ['all']]);
});

test('reconnects after 1006/1012/4xxx and subscribes every channel again', async () => {
  const h = client({ token: 't' });
  const infos = [];
  h.onStateChange((s, i) => infos.push([s, i.code, i.willReconnect]));
  h.subscribe('prices.BTC');
  h.subscribe('tracking.demo');
  h.connect();
  latest().accept();
  latest().welcome();
  assert.deepEqual(latest().sent.filter((m) => m.type === 'subscribe').map((m) => m.channel), ['prices.BTC', 'tracking.demo']);
  for (const code of [1006, 1012, 4001]) {
    const before = FakeSocket.all.length;
    latest().drop(code);
    assert.equal(h.state, 'disconnected');
    await until(() => FakeSocket.all.length > before);
    latest().accept();
    latest().welcome();
    assert.deepEqual(latest().sent.filter((m) => m.type === 'subscribe').map((m) => m.channel), ['prices.BTC', 'tracking.demo']);
  }
  assert.equal(h.stats.reconnects, 3);
  assert.deepEqual(infos.filter(([s]) => s === 'disconnected'), [['disconnected', 1006, true], ['disconnected', 1012, true], ['disconnected', 4001, true]]);
});

test('does not reconnect after 4500-4999 or a client close', async () => {
  for (const code of [4500, 4501, 4502, 4503, 4504]) {
    const h = client({ token: 't' });
    const ready = h.connect();
    const before = FakeSocket.all.length;
    latest().accept();
    latest().drop(code, 'nope');
    await assert.rejects(ready, (e) => e.code === code);
    await sleep(60);
    assert.equal(FakeSocket.all.length, before, `reconnected after ${code}`);
    assert.equal(h.state, 'disconnected');
  }
  const h = client({ token: 't' });
  let last;
  h.onStateChange((s, i) => (last = [s, i.code, i.willReconnect]));
  h.connect();
  latest().accept();
  latest().welcome();
  const before = FakeSocket.all.length;
  h.close();
  assert.deepEqual(last, ['disconnected', 1000, false]);
  await sleep(60);
  assert.equal(FakeSocket.all.length, before);
  assert.equal(shouldReconnect(1000), false);
  assert.equal(shouldReconnect(4499), true);
});

test('backoff is full jitter, exponential and capped', async () => {
  const random = Math.random;
  Math.random = () => 0.999999;
  try {
    const h = client({ token: 't', reconnect: { baseMs: 10, maxMs: 40 } });
    const delays = [];
    h.onStateChange((s, i) => s === 'disconnected' && delays.push(i.delayMs));
    h.connect();
    for (let i = 0; i < 4; i++) {
      const before = FakeSocket.all.length;
      latest().drop(1006);
      await until(() => FakeSocket.all.length > before);
    }
    assert.deepEqual(delays, [10, 20, 40, 40]);
  } finally {
    Math.random = random;
  }
});

test('4005 fetches a fresh token before reconnecting; without getToken it stops', async () => {
  let n = 0;
  const h = client({ getToken: async () => `tok-${++n}` });
  h.connect();
  await until(() => FakeSocket.all.length === 1);
  latest().accept();
  assert.equal(latest().last('auth').token, 'tok-1');
  latest().welcome();
  latest().drop(4005, 'token expired');
  await until(() => FakeSocket.all.length === 2);
  latest().accept();
  assert.equal(latest().last('auth').token, 'tok-2');

  const fixed = client({ token: 'old' });
  const ready = fixed.connect();
  latest().accept();
  latest().drop(4005);
  await assert.rejects(ready, (e) => e.code === 4005);
});

test('an expired cached token is replaced through getToken before connecting', async () => {
  const h = client({ token: jwt(Math.floor(Date.now() / 1000) - 10), getToken: async () => 'fresh' });
  h.connect();
  await until(() => FakeSocket.all.length === 1);
  latest().accept();
  assert.equal(latest().last('auth').token, 'fresh');
});

test('token_expiring triggers an in-band refresh; a server without refresh keeps the socket', async () => {
  let n = 0;
  const h = client({ getToken: async () => jwt(Math.floor(Date.now() / 1000) + 3600, `u${++n}`) });
  h.connect();
  await until(() => FakeSocket.all.length === 1);
  const ws = latest();
  ws.accept();
  ws.welcome();
  ws.push({ type: 'token_expiring', expires_in_ms: 30000 });
  await until(() => ws.last('refresh'));
  const req = ws.reply('refresh');
  assert.equal(req.token.split('.').length, 3);
  await until(() => h._refreshing === null);
  assert.equal(h._refreshSupported, true);

  const old = client({ getToken: async () => 'x' });
  old.connect();
  await until(() => FakeSocket.all.length === 2);
  const ws2 = latest();
  ws2.accept();
  ws2.welcome();
  const refreshed = old.refreshToken();
  await until(() => ws2.last('refresh'));
  ws2.push({ type: 'error', id: ws2.last('refresh').id, code: 102, reason: 'unknown message type "refresh"' });
  assert.equal(await refreshed, 'x');
  assert.equal(old._refreshSupported, false);
  assert.equal(old.state, 'connected');
});

test('a missing pong drops the socket as 1006 and reconnects', async () => {
  const h = client({ token: 't', requestTimeoutMs: 50 });
  const infos = [];
  h.onStateChange((s, i) => infos.push([s, i.code]));
  h.connect();
  latest().accept();
  latest().welcome({ heartbeat_ms: 1 }); // clamped to 1 s
  await until(() => latest().last('ping'), 3000);
  await until(() => FakeSocket.all.length === 2, 3000);
  assert.deepEqual(infos.slice(0, 3), [['connecting', undefined], ['connected', undefined], ['disconnected', 1006]]);
});

test('ping resolves with the round trip; requests fail fast when not connected', async () => {
  const h = client({ token: 't' });
  await assert.rejects(h.ping(), (e) => e.code === 'not_connected');
  h.connect();
  latest().accept();
  latest().welcome();
  const p = h.ping();
  await sleep(15);
  latest().push({ type: 'pong', id: latest().last('ping').id });
  assert.ok((await p) >= 10);
  const pub = h.publish('c', 'e', { a: 1 });
  latest().drop(1006);
  await assert.rejects(pub, (e) => e.code === 'disconnected');
});

test('MessagePack round trip', () => {
  const values = [null, true, false, 0, 127, 128, 255, 256, 65535, 65536, 2 ** 32, 2 ** 53 - 1, -1, -32, -33, -129, -32769, -(2 ** 31) - 1, 1.5, -0.25,
    '', 'é😀', 'x'.repeat(40), 'x'.repeat(300), 'x'.repeat(70000), [], [1, [2, [3]]], Array.from({ length: 70000 }, (_, i) => i % 3),
    {}, { a: 1, b: { c: [null, 'd'] } }, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i]))];
  for (const v of values) assert.deepEqual(decodeMsgpack(encodeMsgpack(v)), v);
  assert.deepEqual(decodeMsgpack(encodeMsgpack(new Uint8Array([1, 2, 3]))), new Uint8Array([1, 2, 3]));
  assert.equal(decodeMsgpack(encodeMsgpack(2n ** 63n)), 2n ** 63n);
  assert.equal(decodeMsgpack(encodeMsgpack(-(2n ** 63n))), -(2n ** 63n));
  assert.deepEqual(decodeMsgpack(encodeMsgpack({ a: undefined, b: 1 })), { b: 1 });
  assert.equal(decodeMsgpack(Uint8Array.from([0xca, 0x3f, 0xc0, 0, 0])), 1.5);
  assert.throws(() => decodeMsgpack(Uint8Array.from([0xc1])));
  assert.throws(() => decodeMsgpack(Uint8Array.from([0xa5, 0x61])));
});

test('history channels: keeps offset and epoch, resubscribes with since, reports a failed recovery', async () => {
  const h = client({ token: 't' });
  const failed = [];
  const gaps = [];
  h.onRecoveryFailed((info) => failed.push(info));
  h.onGap((g) => gaps.push(g));
  const offsets = [];
  h.on('news.live', (d, m) => offsets.push(m.offset));
  h.subscribe('news.live');
  h.connect();
  latest().accept();
  latest().welcome();
  let req = latest().last('subscribe');
  assert.equal(req.since, undefined, 'the first subscribe has no position');
  latest().push({ type: 'subscribed', id: req.id, position: { offset: 4, epoch: 'e1' } });
  await until(() => h.position('news.live')?.offset === 4);
  latest().push({ type: 'push', channel: 'news.live', event: 'story', data: 1, offset: 5 });
  assert.deepEqual(h.position('news.live'), { offset: 5, epoch: 'e1' });
  assert.deepEqual(offsets, [5]);

  // Reconnect: `since` is the last position; the server recovers.
  latest().drop(1006);
  await until(() => FakeSocket.all.length === 2);
  latest().accept();
  latest().welcome();
  req = latest().last('subscribe');
  assert.deepEqual(req.since, { offset: 5, epoch: 'e1' });
  latest().push({ type: 'subscribed', id: req.id, position: { offset: 7, epoch: 'e1' }, recovered: true });
  await until(() => h.recovered('news.live') === true);
  assert.deepEqual(failed, []);
  // The replay follows the reply; the position moves with it, not ahead of it.
  assert.deepEqual(h.position('news.live'), { offset: 5, epoch: 'e1' });
  latest().push({ type: 'push', channel: 'news.live', event: 'story', data: 1, offset: 6 });

  // Lost mid-replay: the next resubscribe asks from the last offset received.
  latest().drop(1006);
  await until(() => FakeSocket.all.length === 3);
  latest().accept();
  latest().welcome();
  req = latest().last('subscribe');
  assert.deepEqual(req.since, { offset: 6, epoch: 'e1' });
  latest().push({ type: 'subscribed', id: req.id, position: { offset: 7, epoch: 'e1' }, recovered: true });
  await sleep(0); // the reply settles in a microtask, before the next frame (as in a browser)
  latest().push({ type: 'push', channel: 'news.live', event: 'story', data: 1, offset: 7 });
  assert.deepEqual(offsets, [5, 6, 7]);
  assert.deepEqual(h.position('news.live'), { offset: 7, epoch: 'e1' });

  // Reconnect again: the stream was lost (new epoch).
  latest().drop(1012);
  await until(() => FakeSocket.all.length === 4);
  latest().accept();
  latest().welcome();
  req = latest().last('subscribe');
  assert.deepEqual(req.since, { offset: 7, epoch: 'e1' });
  latest().push({ type: 'subscribed', id: req.id, position: { offset: 0, epoch: 'e2' }, recovered: false });
  await until(() => failed.length === 1);
  assert.deepEqual(failed[0], { channel: 'news.live', since: { offset: 7, epoch: 'e1' }, position: { offset: 0, epoch: 'e2' } });
  assert.equal(h.recovered('news.live'), false);

  latest().push({ type: 'gap', channel: 'news.live', from: 1, to: 2, epoch: 'e3' });
  assert.deepEqual(gaps, [{ channel: 'news.live', from: 1, to: 2, epoch: 'e3' }]);
  assert.deepEqual(h.position('news.live'), { offset: 2, epoch: 'e3' }, 'a new epoch voids the old position');
});

test('a transient refusal of a resubscribe is retried with capped backoff; a permanent one drops the channel', async () => {
  assert.deepEqual([...TRANSIENT_ERROR_CODES].sort(), [100, 111, 112, 116, 117]);
  assert.equal(isTransientError(104), false);
  const random = Math.random;
  Math.random = () => 0.999999; // the longest delay of each step: min(maxMs, baseMs · 2^(n-1))
  try {
    const h = client({ token: 't', resubscribe: { baseMs: 5, maxMs: 20, maxAttempts: 4 } });
    const dropped = [];
    const errors = [];
    h.onSubscriptionDropped((info) => dropped.push(info));
    h.onError((e) => errors.push(e.code));
    const subscribes = (ch) => latest().sent.filter((m) => m.type === 'subscribe' && m.channel === ch);
    const refuse = (ch, code) => {
      const req = subscribes(ch).at(-1);
      latest().push({ type: 'error', id: req.id, code, reason: `refused ${code}` });
    };
    h.subscribe('prices.BTC');
    h.subscribe('secret.x');
    h.subscribe('flaky.y');
    h.connect();
    latest().accept();
    latest().welcome();
    latest().reply('subscribe'); // the last sent: flaky.y
    for (const m of latest().sent.filter((x) => x.type === 'subscribe' && x.channel !== 'flaky.y')) latest().push({ type: 'ok', id: m.id });
    await until(() => h.channels.length === 3 && h.state === 'connected');

    // A reconnect: the hub's engine is not back yet (112), then it is.
    latest().drop(1006);
    await until(() => FakeSocket.all.length === 2);
    latest().accept();
    latest().welcome();
    const first = subscribes('prices.BTC').length;
    assert.equal(first, 1);
    const t0 = Date.now();
    refuse('prices.BTC', 112);
    await until(() => subscribes('prices.BTC').length === 2);
    refuse('prices.BTC', 116);
    await until(() => subscribes('prices.BTC').length === 3);
    refuse('prices.BTC', 117);
    await until(() => subscribes('prices.BTC').length === 4);
    assert.ok(Date.now() - t0 >= 5 + 10 + 20 - 3, 'backoff 5, 10, 20 ms (capped) between tries');
    latest().push({ type: 'ok', id: subscribes('prices.BTC').at(-1).id });
    await sleep(0);
    assert.ok(h.channels.includes('prices.BTC'), 'kept through transient errors');

    // Permanent: dropped at once, reported, never retried.
    refuse('secret.x', 104);
    await until(() => dropped.length === 1);
    assert.deepEqual(dropped[0], { channel: 'secret.x', code: 104, reason: 'refused 104', transient: false, attempts: 1 });
    assert.ok(!h.channels.includes('secret.x'));

    // Transient for too long: bounded, then dropped with transient: true; the promise rejects.
    const waiting = h.subscribe('flaky.y'); // confirmed before the reconnect: pending until it settles
    for (let i = 1; i <= 4; i++) {
      await until(() => subscribes('flaky.y').length === i);
      refuse('flaky.y', 112);
    }
    await until(() => dropped.length === 2);
    assert.deepEqual(dropped[1], { channel: 'flaky.y', code: 112, reason: 'refused 112', transient: true, attempts: 4 });
    await assert.rejects(waiting, (e) => e.code === 112);
    assert.deepEqual(h.channels, ['prices.BTC']);
    assert.deepEqual(errors, [104, 112], 'only the drops reach onError');
    await sleep(50);
    assert.equal(subscribes('flaky.y').length, 4, 'no retry after giving up');
    assert.equal(subscribes('secret.x').length, 1, 'a permanent refusal is not retried');

    // A retry pending when the connection drops is replaced by the resubscribe after the reconnect.
    h.subscribe('later.z');
    refuse('later.z', 112);
    latest().drop(1006);
    await until(() => FakeSocket.all.length === 3);
    latest().accept();
    latest().welcome();
    await sleep(40);
    assert.equal(subscribes('later.z').length, 1, 'exactly one subscribe for later.z on the new connection');
  } finally {
    Math.random = random;
  }
});
