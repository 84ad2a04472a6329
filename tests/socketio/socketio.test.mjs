#!/usr/bin/env node
// End-to-end test of herald's Socket.IO transport with the real socket.io-client 4.8
// (and socket.io-msgpack-parser). Plain node, no test framework; exits 1 with a
// message naming the failed step.
//
// For each way of connecting (default transports: polling then the upgrade to
// WebSocket; websocket only; polling only; the msgpack parser on its own path):
//   connect with a token; subscribe to a list and get one ack; a list with a bad
//   name acks the first failure; 1,000 publications made through POST
//   /api/v1/publish arrive in order with their meta; unsubscribe stops delivery; a
//   personal channel reaches only its user; a client publish reaches a subscriber
//   (binary data from a client is refused with 101);
//   refresh; Engine.IO pings keep an idle client connected; a bad token
//   (and no token) gives connect_error with code 4500; another namespace gives
//   "Invalid namespace"; a kick (4504) is "io server disconnect"; a rate-limit close
//   (4006) is "transport close" and socket.io-client reconnects by itself.
// Then, on two nodes sharing Redis: a publication made on node b reaches clients of
// node a, and binary data PUBLISHed straight into Redis arrives as bytes with both
// parsers (an attachment with the default parser, a bin with msgpack).
//
// Started by run.sh, which starts herald and mints the tokens. Environment:
//   SIO_URL         http://127.0.0.1:PORT of the hub
//   SIO_API_KEY     the hub's API key
//   SIO_TOKEN_ALICE, SIO_TOKEN_BOB   access tokens of users alice and bob
//   SIO_NODE_A_URL, SIO_NODE_B_URL   two more hubs sharing the Redis server on SIO_REDIS_PORT
//   TEST_TIMEOUT_MS hard limit for the whole run (default 120000)

import net from 'node:net';

import { Emitter } from '@socket.io/redis-emitter';
import { createClient } from 'redis';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import msgpackParser from 'socket.io-msgpack-parser';

const env = process.env;
const URL = env.SIO_URL;
const API_KEY = env.SIO_API_KEY;
const TOKENS = { alice: env.SIO_TOKEN_ALICE, bob: env.SIO_TOKEN_BOB };
const COUNT = 1000;

const hardLimit = setTimeout(() => fail('the whole run', `took longer than ${env.TEST_TIMEOUT_MS || 120000} ms`),
  Number(env.TEST_TIMEOUT_MS || 120000));
hardLimit.unref();

const open = new Set();

function fail(step, why) {
  console.error(`FAIL ${step}: ${why}`);
  for (const socket of open) socket.disconnect();
  process.exit(1);
}

function check(step, ok, why) {
  if (!ok) fail(step, why);
}

function within(ms, what, promise) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

function once(emitter, event) {
  return new Promise((resolve) => emitter.once(event, (...args) => resolve(args)));
}

async function api(path, body, base = URL) {
  const response = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}

const publish = (body) => api('/api/v1/publish', body);

/** A connected client of `user` over `mode`. */
async function connect(mode, user, extra = {}) {
  const socket = io(URL, { ...mode.options, auth: { token: TOKENS[user] }, reconnection: false, ...extra });
  open.add(socket);
  const [outcome] = await within(10000, `${user} to connect`, Promise.race([
    once(socket, 'connect').then(() => ['connected']),
    once(socket, 'connect_error').then(([err]) => [`connect_error: ${err.message}`]),
  ]));
  check(`${mode.name}: ${user} connects`, outcome === 'connected', outcome);
  return socket;
}

function close(socket) {
  socket.disconnect();
  open.delete(socket);
}

/** Resolves with the first `count` (data, meta) pairs of `event`. */
function collect(socket, event, count) {
  const seen = [];
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  socket.on(event, (data, meta) => {
    seen.push({ data, meta });
    if (seen.length === count) done(seen);
  });
  return { seen, finished };
}

async function scenario(mode) {
  const step = (what) => `${mode.name}: ${what}`;
  const tag = mode.tag;
  const alice = await connect(mode, 'alice');
  const bob = await connect(mode, 'bob');

  if (mode.upgrades) {
    const engine = alice.io.engine;
    if (engine.transport.name !== 'websocket') {
      await within(5000, 'the upgrade to websocket', once(engine, 'upgrade'));
    }
    check(step('upgrade'), engine.transport.name === 'websocket', `transport is ${engine.transport.name}`);
  } else {
    const expected = mode.options.transports?.[0] ?? 'websocket';
    check(step('transport'), alice.io.engine.transport.name === expected,
      `transport is ${alice.io.engine.transport.name}, expected ${expected}`);
  }

  // Heartbeats: the hub pings every heartbeat.interval_ms (1 s here) as an
  // Engine.IO ping; socket.io-client answers, and nobody times out.
  let pings = 0;
  const countPing = () => { pings += 1; };
  alice.io.engine.on('ping', countPing);
  let dropped = null;
  alice.once('disconnect', (reason) => { dropped = reason; });
  await new Promise((resolve) => setTimeout(resolve, 3500));
  alice.io.engine.off('ping', countPing);
  check(step('heartbeat'), dropped === null && alice.connected, `disconnected: ${dropped}`);
  check(step('heartbeat'), pings >= 2, `${pings} pings in 3.5 s with a 1 s interval`);

  const ticks = `sio.${tag}.ticks`;
  const other = `sio.${tag}.other`;
  let ack = await within(5000, 'the subscribe ack', alice.emitWithAck('subscribe', [ticks, other]));
  check(step('subscribe a list'), ack && ack.ok === true, JSON.stringify(ack));
  ack = await within(5000, 'the failing subscribe ack', alice.emitWithAck('subscribe', [`sio.${tag}.fine`, 'bad name!']));
  check(step('a list with a bad name'), ack.ok === false && ack.code === 103 && ack.channel === 'bad name!',
    JSON.stringify(ack));

  // 1,000 publications, in order, each with its channel.
  const { seen, finished } = collect(alice, 'tick', COUNT);
  const t0 = Date.now();
  for (let i = 0; i < COUNT; i++) await publish({ channel: ticks, event: 'tick', data: { i } });
  await within(30000, `${COUNT} ticks (got ${seen.length})`, finished);
  for (let i = 0; i < COUNT; i++) {
    const { data, meta } = seen[i];
    check(step('publications in order'), data.i === i, `#${i} carried ${JSON.stringify(data)}`);
    check(step('publication meta'), meta && meta.channel === ticks, JSON.stringify(meta));
  }
  console.log(`  ${mode.name}: ${COUNT} publications in order in ${Date.now() - t0} ms`);

  // Unsubscribe stops delivery: a marker on the other channel comes after.
  ack = await within(5000, 'the unsubscribe ack', alice.emitWithAck('unsubscribe', ticks));
  check(step('unsubscribe'), ack.ok === true, JSON.stringify(ack));
  let extra = 0;
  alice.on('tick', () => { extra += 1; });
  const marker = once(alice, 'marker');
  await publish({ channel: ticks, event: 'tick', data: { i: COUNT } });
  await publish({ channel: other, event: 'marker', data: {} });
  await within(5000, 'the marker', marker);
  check(step('no delivery after unsubscribe'), extra === 0, `${extra} ticks after unsubscribe`);

  // A personal channel reaches only its user.
  const aliceDm = collect(alice, 'dm', 1);
  const bobDm = collect(bob, 'dm', 1);
  await publish({ user: 'alice', event: 'dm', data: { to: 'alice' } });
  await publish({ user: 'bob', event: 'dm', data: { to: 'bob' } });
  const [[a], [b]] = await within(5000, 'personal messages', Promise.all([aliceDm.finished, bobDm.finished]));
  check(step('personal channel'), a.data.to === 'alice' && a.meta.channel === 'user:alice', JSON.stringify(a));
  check(step('personal channel'), b.data.to === 'bob' && b.meta.channel === 'user:bob', JSON.stringify(b));
  await new Promise((resolve) => setTimeout(resolve, 100));
  check(step('personal channel is private'), aliceDm.seen.length === 1 && bobDm.seen.length === 1,
    `alice saw ${aliceDm.seen.length}, bob saw ${bobDm.seen.length}`);

  // A client publish where the namespace allows it.
  const room = `chat.${tag}`;
  ack = await bob.emitWithAck('subscribe', room);
  check(step('subscribe one channel'), ack.ok === true, JSON.stringify(ack));
  const said = collect(bob, 'said', 1);
  ack = await within(5000, 'the publish ack',
    alice.emitWithAck('publish', { channel: room, event: 'said', data: { text: 'hi' } }));
  check(step('client publish'), ack.ok === true, JSON.stringify(ack));
  const [[heard]] = await within(5000, 'the client publication', Promise.all([said.finished]));
  check(step('client publish delivered'), heard.data.text === 'hi' && heard.meta.channel === room, JSON.stringify(heard));
  ack = await alice.emitWithAck('publish', { channel: ticks, event: 'said', data: 1 });
  check(step('client publish refused'), ack.ok === false && ack.code === 104, JSON.stringify(ack));

  ack = await within(5000, 'the binary publish ack',
    alice.emitWithAck('publish', { channel: room, event: 'said', data: Buffer.from([1, 2, 3]) }));
  check(step('binary data from a client is refused'), ack.ok === false && ack.code === 101, JSON.stringify(ack));

  ack = await within(5000, 'the refresh ack', alice.emitWithAck('refresh', TOKENS.alice));
  check(step('refresh'), ack.ok === true, JSON.stringify(ack));
  ack = await alice.emitWithAck('refresh', TOKENS.bob);
  check(step('refresh with another user\'s token'), ack.ok === false && ack.code === 114, JSON.stringify(ack));

  // A kick (close code 4504) is a Socket.IO DISCONNECT: no reconnection.
  const gone = once(bob, 'disconnect');
  const notice = once(bob, 'herald:disconnect');
  await api('/api/v1/users/bob/disconnect', {});
  const [[reason], [why]] = await within(5000, 'the kick', Promise.all([gone, notice]));
  check(step('kick'), reason === 'io server disconnect' && why.code === 4504, `${reason} ${JSON.stringify(why)}`);
  open.delete(bob);
  close(alice);

  // A bad token: connect_error carrying herald's close code.
  const refused = io(URL, { ...mode.options, auth: { token: 'not-a-token' }, reconnection: false });
  open.add(refused);
  const [err] = await within(5000, 'connect_error', once(refused, 'connect_error'));
  check(step('bad token'), err.data && err.data.code === 4500, `${err.message} ${JSON.stringify(err.data)}`);
  close(refused);

  // No token where auth.allow_anonymous is off: 4501.
  const anonymous = io(URL, { ...mode.options, reconnection: false });
  open.add(anonymous);
  const [denied] = await within(5000, 'connect_error', once(anonymous, 'connect_error'));
  check(step('no token'), denied.data && denied.data.code === 4501, `${denied.message} ${JSON.stringify(denied.data)}`);
  close(anonymous);

  // Another namespace.
  const admin = io(`${URL}/admin`, { ...mode.options, auth: { token: TOKENS.alice }, reconnection: false });
  open.add(admin);
  const [nsp] = await within(5000, 'connect_error', once(admin, 'connect_error'));
  check(step('other namespace'), nsp.message === 'Invalid namespace', nsp.message);
  close(admin);
  console.log(`ok ${mode.name}`);
}

/** PUBLISH `payload` (bytes) on Redis channel `channel`, speaking RESP. */
function redisPublish(port, channel, payload) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const bulk = (b) => Buffer.concat([Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n')]);
    socket.on('error', reject);
    socket.on('data', (reply) => {
      socket.end();
      resolve(reply.toString());
    });
    socket.write(Buffer.concat([Buffer.from('*3\r\n'), bulk(Buffer.from('PUBLISH')),
      bulk(Buffer.from(channel)), bulk(payload)]));
  });
}

function bytesOf(data) {
  if (data instanceof ArrayBuffer) return Buffer.from(new Uint8Array(data));
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

async function severalNodes() {
  const step = (what) => `several nodes: ${what}`;
  const [a, b] = [env.SIO_NODE_A_URL, env.SIO_NODE_B_URL];
  const msgpack = { path: '/socket.io-msgpack/', parser: msgpackParser };
  const clients = [
    ['default parser over websocket', io(a, { transports: ['websocket'], auth: { token: TOKENS.alice }, reconnection: false })],
    ['default parser over polling', io(a, { transports: ['polling'], auth: { token: TOKENS.alice }, reconnection: false })],
    ['msgpack parser', io(a, { ...msgpack, auth: { token: TOKENS.alice }, reconnection: false })],
  ];
  for (const [name, socket] of clients) {
    open.add(socket);
    if (!socket.connected) await within(10000, `${name} to connect`, once(socket, 'connect'));
    const ack = await socket.emitWithAck('subscribe', ['files']);
    check(step(`${name} subscribes`), ack.ok === true, JSON.stringify(ack));
  }
  const hellos = clients.map(([, socket]) => collect(socket, 'hello', 1));
  await api('/api/v1/publish', { channel: 'files', event: 'hello', data: { from: 'b' } }, b);
  const greeted = await within(10000, 'a publication made on the other node', Promise.all(hellos.map((h) => h.finished)));
  for (const [i, [[{ data, meta }]]] of greeted.map((g, i) => [i, [g]])) {
    check(step(`${clients[i][0]} gets node b's publication`), data.from === 'b' && meta.channel === 'files',
      JSON.stringify({ data, meta }));
  }
  // Not UTF-8, so herald delivers it as binary data, under engine.default_event.
  const payload = Buffer.from([0xff, 0x00, 0x01, 0xfe]);
  const blobs = clients.map(([, socket]) => collect(socket, 'message', 1));
  const receivers = await redisPublish(Number(env.SIO_REDIS_PORT), 'herald:files', payload);
  check(step('PUBLISH into Redis'), /^:[12]/.test(receivers), receivers);
  const got = await within(10000, 'binary data from Redis', Promise.all(blobs.map((x) => x.finished)));
  got.forEach(([{ data, meta }], i) => {
    const bytes = bytesOf(data);
    check(step(`${clients[i][0]} gets bytes`), bytes && bytes.equals(payload) && meta.channel === 'files',
      `${Object.prototype.toString.call(data)} ${JSON.stringify(data)} ${JSON.stringify(meta)}`);
  });
  for (const [, socket] of clients) close(socket);
  console.log('ok several nodes (publication across nodes, binary data from Redis with both parsers)');
}

/**
 * A TCP proxy standing in for a load balancer: `to(url)` picks the node new
 * connections go to (`null`: refuse them), `cut()` drops every open one.
 */
async function balancer() {
  let target = null;
  const live = new Set();
  const server = net.createServer((client) => {
    if (!target) { client.destroy(); return; }
    const upstream = net.connect(Number(new globalThis.URL(target).port), '127.0.0.1');
    live.add(client); live.add(upstream);
    client.pipe(upstream); upstream.pipe(client);
    const drop = () => { client.destroy(); upstream.destroy(); live.delete(client); live.delete(upstream); };
    client.on('error', drop); upstream.on('error', drop); client.on('close', drop); upstream.on('close', drop);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    to(url) { target = url; },
    cut() { for (const s of live) s.destroy(); live.clear(); },
    close() { this.cut(); server.close(); },
  };
}

/**
 * Connection state recovery on two nodes sharing Redis: a client of node a
 * loses its connection, publications are made meanwhile, and it reconnects by
 * itself through the balancer to node b: `socket.recovered`, and every event
 * exactly once, in order. Then a channel without history makes the next
 * recovery fail as a whole: `recovered` is false and nothing missed is replayed.
 */
async function recovery(name, options) {
  const step = (what) => `recovery (${name}): ${what}`;
  const [a, b] = [env.SIO_NODE_A_URL, env.SIO_NODE_B_URL];
  const lb = await balancer();
  lb.to(a);
  const tag = name.replace(/\W+/g, '');
  const channels = [`hist.${tag}.x`, `hist.${tag}.y`];
  const socket = io(lb.url, {
    ...options, auth: { token: TOKENS.alice }, reconnectionDelay: 100, reconnectionDelayMax: 200,
  });
  open.add(socket);
  const seen = [];
  socket.on('tick', (data, meta, offset) => seen.push({ n: data.n, channel: meta.channel, offset }));
  await within(10000, 'connect', once(socket, 'connect'));
  check(step('a first connection is not recovered'), socket.recovered === false, String(socket.recovered));
  const ack = await within(5000, 'subscribe', socket.emitWithAck('subscribe', channels));
  check(step('subscribe'), ack.ok === true, JSON.stringify(ack));
  let n = 0;
  const tick = (base) => {
    n += 1;
    return api('/api/v1/publish', { channel: channels[n % 2], event: 'tick', data: { n } }, base);
  };
  const until = (count, what) => within(10000, what, new Promise((resolve) => {
    const poll = setInterval(() => { if (seen.length >= count) { clearInterval(poll); resolve(); } }, 10);
  }));
  for (let i = 0; i < 4; i++) await tick(a);
  await until(4, 'the first publications');
  check(step('events carry the offset last'), seen.every((e) => typeof e.offset === 'string' && e.offset.startsWith('1~')),
    JSON.stringify(seen));

  // The connection drops; while the client cannot reach any node, more is published.
  lb.to(null);
  const gone = once(socket, 'disconnect');
  lb.cut();
  await within(10000, 'the disconnect', gone);
  for (let i = 0; i < 6; i++) await tick(b);
  const back = once(socket, 'connect');
  lb.to(b);
  await within(15000, 'the reconnection to node b', back);
  check(step('recovered on another node'), socket.recovered === true, String(socket.recovered));
  await tick(b);
  await until(11, 'the missed and the live publications');
  await new Promise((resolve) => setTimeout(resolve, 200));
  // Herald orders publications per channel; a recovery replays channel by channel.
  const order = seen.map((e) => e.n);
  const sorted = [...order].sort((x, y) => x - y);
  check(step('every event exactly once'),
    JSON.stringify(sorted) === JSON.stringify([...Array(11).keys()].map((i) => i + 1)), JSON.stringify(order));
  for (const channel of channels) {
    const mine = seen.filter((e) => e.channel === channel).map((e) => e.n);
    check(step(`in order on ${channel}`), mine.every((v, i) => i === 0 || mine[i - 1] < v), JSON.stringify(mine));
  }

  // All or nothing: with a channel that keeps no history, nothing is recovered.
  const plain = await within(5000, 'subscribe', socket.emitWithAck('subscribe', `plain.${tag}`));
  check(step('subscribe to a channel without history'), plain.ok === true, JSON.stringify(plain));
  lb.to(null);
  const gone2 = once(socket, 'disconnect');
  lb.cut();
  await within(10000, 'the second disconnect', gone2);
  await tick(a);
  const back2 = once(socket, 'connect');
  lb.to(a);
  await within(15000, 'the second reconnection', back2);
  check(step('not recovered with a channel without history'), socket.recovered === false, String(socket.recovered));
  await new Promise((resolve) => setTimeout(resolve, 300));
  check(step('nothing missed is replayed after a failed recovery'), seen.length === 11, JSON.stringify(seen.map((e) => e.n)));
  // The app subscribes again, as after any fresh connection.
  const again = await within(5000, 'subscribe again', socket.emitWithAck('subscribe', channels));
  check(step('subscribe again'), again.ok === true, JSON.stringify(again));
  await tick(b);
  await until(12, 'a publication after subscribing again');
  close(socket);
  lb.close();
  console.log(`ok recovery (${name}): recovered on another node, exactly once, in order per channel; all or nothing`);
}

/**
 * A Node backend publishing with @socket.io/redis-emitter into the Redis of
 * nodes a and b: `io.to(room).emit` reaches that channel's Socket.IO clients
 * on both nodes (and a native client), `io.emit` reaches everyone, and what
 * herald cannot honour (`except`) is refused, not delivered.
 */
async function redisEmitter() {
  const step = (what) => `redis emitter: ${what}`;
  const [a, b] = [env.SIO_NODE_A_URL, env.SIO_NODE_B_URL];
  const redis = createClient({ url: `redis://127.0.0.1:${env.SIO_REDIS_PORT}` });
  await redis.connect();
  const emitter = new Emitter(redis);
  const opts = { transports: ['websocket'], reconnection: false };
  const onA = io(a, { ...opts, auth: { token: TOKENS.alice } });
  const onB = io(b, { ...opts, auth: { token: TOKENS.bob } });
  const outsider = io(b, { ...opts, auth: { token: TOKENS.bob } });
  for (const socket of [onA, onB, outsider]) {
    open.add(socket);
    if (!socket.connected) await within(10000, 'connect', once(socket, 'connect'));
  }
  for (const socket of [onA, onB]) {
    const ack = await socket.emitWithAck('subscribe', ['emitter.room']);
    check(step('subscribe'), ack.ok === true, JSON.stringify(ack));
  }
  const native = new WebSocket(`${a.replace('http', 'ws')}/ws`);
  const nativeFrames = [];
  native.onmessage = (m) => nativeFrames.push(JSON.parse(String(m.data)));
  await within(10000, 'the native client', new Promise((resolve, reject) => { native.onopen = resolve; native.onerror = reject; }));
  native.send(JSON.stringify({ type: 'auth', token: TOKENS.alice }));
  native.send(JSON.stringify({ type: 'subscribe', id: 1, channel: 'emitter.room' }));
  await within(10000, 'the native subscribe', new Promise((resolve) => {
    const poll = setInterval(() => { if (nativeFrames.some((f) => f.id === 1)) { clearInterval(poll); resolve(); } }, 10);
  }));
  const strays = [];
  outsider.on('room_event', (data) => strays.push(data));
  const roomEvents = [onA, onB].map((s) => collect(s, 'room_event', 1));
  // Refused (counted), so it must never arrive; the next one must.
  emitter.except('x').to('emitter.room').emit('room_event', { n: 0 });
  emitter.to('emitter.room').emit('room_event', { n: 1 });
  const got = await within(10000, 'io.to(room).emit on both nodes', Promise.all(roomEvents.map((r) => r.finished)));
  for (const [[{ data, meta }]] of got.map((g) => [g])) {
    check(step('io.to(room).emit'), data.n === 1 && meta.channel === 'emitter.room', JSON.stringify({ data, meta }));
  }
  await within(10000, 'the native push', new Promise((resolve) => {
    const poll = setInterval(() => { if (nativeFrames.some((f) => f.type === 'push')) { clearInterval(poll); resolve(); } }, 10);
  }));
  const push = nativeFrames.find((f) => f.type === 'push');
  check(step('a native client gets it too'), push.channel === 'emitter.room' && push.data.n === 1, JSON.stringify(push));
  const everyone = [onA, onB, outsider].map((s) => collect(s, 'announcement', 1));
  emitter.emit('announcement', { all: true });
  const all = await within(10000, 'io.emit to everyone', Promise.all(everyone.map((e) => e.finished)));
  check(step('io.emit reaches everyone'), all.every(([{ data }]) => data.all === true), JSON.stringify(all));
  check(step('a room event reaches only its room'), strays.length === 0, JSON.stringify(strays));
  const room = [onA, onB].map((s) => s.listeners('room_event').length);
  check(step('the refused message was not delivered'), got.every(([{ data }]) => data.n === 1) && room.length === 2, '');
  native.close();
  for (const socket of [onA, onB, outsider]) close(socket);
  await redis.quit();
  console.log('ok redis emitter (io.to(room).emit and io.emit on two nodes, native clients too, except refused)');
}

/** A close code in 4000–4499 (here 4006, rate limited) lets socket.io-client reconnect by itself. */
async function reconnects(mode) {
  const step = (what) => `${mode.name}: ${what}`;
  const socket = io(URL, {
    ...mode.options, auth: { token: TOKENS.alice }, reconnectionDelay: 100, reconnectionDelayMax: 200,
  });
  open.add(socket);
  await within(10000, 'connect', once(socket, 'connect'));
  const first = socket.id;
  const notice = once(socket, 'herald:disconnect');
  const gone = once(socket, 'disconnect');
  const back = new Promise((resolve) => socket.io.once('reconnect', resolve));
  // Far beyond rate_limits.messages_per_second: refusals, then the close after `strikes`.
  for (let i = 0; i < 400; i++) socket.emit('subscribe', `flood.${i}`);
  const [[why], [reason]] = await within(10000, 'the rate-limit close', Promise.all([notice, gone]));
  check(step('rate-limit close'), why.code === 4006 && reason === 'transport close', `${JSON.stringify(why)} ${reason}`);
  await within(10000, 'the reconnection', back);
  if (!socket.connected) await within(5000, 'connect after reconnecting', once(socket, 'connect'));
  check(step('reconnected'), socket.connected && socket.id !== first, `${socket.id} (was ${first})`);
  close(socket);
}

const modes = [
  { name: 'default transports (polling, then upgrade)', tag: 'default', options: {}, upgrades: true },
  { name: 'websocket only', tag: 'ws', options: { transports: ['websocket'] }, reconnect: true },
  { name: 'polling only', tag: 'polling', options: { transports: ['polling'] }, reconnect: true },
  {
    name: 'msgpack parser (polling, then upgrade)',
    tag: 'msgpack',
    options: { parser: msgpackParser, path: '/socket.io-msgpack/' },
    upgrades: true,
  },
  {
    name: 'msgpack parser, polling only',
    tag: 'msgpackpolling',
    options: { parser: msgpackParser, path: '/socket.io-msgpack/', transports: ['polling'] },
  },
];

for (const mode of modes) {
  try {
    await scenario(mode);
    if (mode.reconnect) {
      await reconnects(mode);
      console.log(`ok ${mode.name}: reconnects after 4006`);
    }
  } catch (err) {
    fail(mode.name, err.stack || err);
  }
}
try {
  await severalNodes();
  await redisEmitter();
  await recovery('websocket', { transports: ['websocket'] });
  await recovery('polling then upgrade', {});
  await recovery('msgpack', { parser: msgpackParser, path: '/socket.io-msgpack/' });
} catch (err) {
  fail('several nodes', err.stack || err);
}
console.log('all Socket.IO checks passed');
process.exit(0);
