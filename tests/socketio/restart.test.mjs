#!/usr/bin/env node
// socket.io-client's browser bundle in headless Chromium reconnects by itself after
// its hub is killed (SIGKILL) and started again on the same port. Plain node; exits 1
// naming the failed step. Every hub it starts is killed before it exits.
//
// 1. Memory engine: the page connects (default transports), subscribes in its
//    `connect` handler, gets a publication; the hub is killed and restarted; `connect`
//    fires again without the page doing anything, the handler subscribes again, and the
//    publications made after the restart arrive in order.
// 2. Redis engine, history on hist.*, `[socketio] connection_state_recovery = true`: the
//    page's hub (node c) is killed while node b (run.sh's, same Redis) keeps publishing;
//    node c comes back on the same port; socket.io-client reconnects with its pid and
//    offset, `socket.recovered === true`, and every event arrives exactly once, in order.
//
// Started by run.sh. Environment: SIO_CONFIG (the hubs' config file), SIO_REDIS_PORT,
// SIO_NODE_B_URL, SIO_API_KEY, SIO_TOKEN_ALICE, HERALD_BIN, CHROMIUM (default
// /usr/bin/chromium), SIO_ARTIFACTS (hub logs; default artifacts/socketio).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { freePort, hubEnv, sleep } from '../lib/procs.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
const ARTIFACTS = env.SIO_ARTIFACTS || path.resolve(here, '../../artifacts/socketio');
const BUNDLE = fs.readFileSync(path.join(here, 'node_modules/socket.io-client/dist/socket.io.min.js'));

// ------------------------------------------------------------------ processes

const children = new Set();
function killAll() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

let browser;
let pages;

async function fail(step, why) {
  console.error(`FAIL restart: ${step}: ${why}`);
  await browser?.close().catch(() => {});
  pages?.close();
  killAll();
  process.exit(1);
}


function startHub(port, log, extra = {}) {
  const fd = fs.openSync(log, 'a');
  fs.writeSync(fd, `\n--- restart.test.mjs: starting herald on ${port} at ${new Date().toISOString()}\n`);
  const child = spawn(env.HERALD_BIN, ['--config', env.SIO_CONFIG, '--listen', `127.0.0.1:${port}`], {
    stdio: ['ignore', fd, fd],
    env: hubEnv(extra),
  });
  fs.closeSync(fd);
  child.exited = new Promise((resolve) => child.once('exit', resolve));
  child.once('exit', () => children.delete(child));
  children.add(child);
  return child;
}

async function answersReady(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/ready`, { signal: AbortSignal.timeout(1000) });
    return res.ok;
  } catch {
    return false;
  }
}

/** Starts a hub on `port` and waits for /ready; retries if the port is not free again yet. */
async function startReady(port, log, extra) {
  for (let attempt = 1; ; attempt++) {
    const child = startHub(port, log, extra);
    const deadline = Date.now() + 15000;
    let exited = false;
    child.exited.then(() => { exited = true; });
    while (Date.now() < deadline && !exited) {
      if (await answersReady(port)) return child;
      await sleep(100);
    }
    if (!exited || attempt >= 3) throw new Error(`herald on ${port} not ready (see ${log})`);
    await sleep(500);
  }
}

/** SIGKILL, then wait until the process is reaped and the port refuses connections. */
async function killHub(child, port) {
  child.kill('SIGKILL');
  await child.exited;
  const deadline = Date.now() + 10000;
  while (await answersReady(port)) {
    if (Date.now() > deadline) throw new Error(`port ${port} still answers after SIGKILL`);
    await sleep(50);
  }
}

// ------------------------------------------------------------------ page, API

async function publish(base, body) {
  const res = await fetch(`${base}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${env.SIO_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  if (!res.ok) throw new Error(`publish ${JSON.stringify(body)}: HTTP ${res.status} ${await res.text()}`);
}

/** A page on another origin than the hubs, loading socket.io-client's browser bundle. */
function servePages() {
  pages = http.createServer((request, response) => {
    if (request.url === '/socket.io.min.js') {
      response.writeHead(200, { 'content-type': 'text/javascript' });
      response.end(BUNDLE);
      return;
    }
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><title>restart</title><script src="/socket.io.min.js"></script>');
  });
  return new Promise((resolve) => pages.listen(0, '127.0.0.1', () => resolve(pages.address().port)));
}

/**
 * Connects `window.socket` the way an app does: subscribe to `channel` on every `connect`
 * that is not a recovery. `window.t` records connects, disconnects, acks and events.
 */
function openSocket(page, url, channel) {
  return page.evaluate(({ url, token, channel }) => {
    const t = { connects: [], disconnects: [], acks: [], got: [] };
    window.t = t;
    const socket = io(url, { auth: { token }, reconnectionDelay: 100, reconnectionDelayMax: 500 });
    window.socket = socket;
    socket.on('connect', () => {
      t.connects.push({ id: socket.id, recovered: socket.recovered });
      if (socket.recovered) return;
      socket.emit('subscribe', [channel], (ack) => t.acks.push(ack));
    });
    socket.on('disconnect', (reason) => t.disconnects.push(reason));
    socket.on('tick', (data, meta) => t.got.push({ n: data.n, channel: meta.channel, offset: meta.offset }));
  }, { url, token: env.SIO_TOKEN_ALICE, channel });
}

const waitFor = (page, what, fn, arg, ms = 20000) =>
  page.waitForFunction(fn, arg, { timeout: ms, polling: 20 }).catch(async (err) => {
    const t = await page.evaluate(() => window.t).catch(() => null);
    throw new Error(`${what}: ${err.message.split('\n')[0]}; page saw ${JSON.stringify(t)}`);
  });

// ------------------------------------------------------------------ scenarios

async function memoryEngine(page) {
  const name = 'memory engine';
  const port = await freePort();
  const log = path.join(ARTIFACTS, 'restart-memory.log');
  fs.writeFileSync(log, '');
  const base = `http://127.0.0.1:${port}`;
  const channel = 'restart.memory';
  let hub = await startReady(port, log);
  await openSocket(page, base, channel);
  await waitFor(page, `${name}: connect and subscribe`, () => window.t.acks.length === 1);
  const first = await page.evaluate(() => window.t.acks[0]);
  if (!first.ok) await fail(`${name}: subscribe`, JSON.stringify(first));
  await publish(base, { channel, event: 'tick', data: { n: 1 } });
  await waitFor(page, `${name}: the first publication`, () => window.t.got.length === 1);

  await killHub(hub, port);
  await waitFor(page, `${name}: the disconnect`, () => window.t.disconnects.length === 1);
  hub = await startReady(port, log);
  await waitFor(page, `${name}: connect fires again and the app subscribes again`,
    () => window.t.connects.length === 2 && window.t.acks.length === 2);
  const t = await page.evaluate(() => window.t);
  if (!t.acks[1].ok) await fail(`${name}: subscribe after the restart`, JSON.stringify(t.acks[1]));
  if (t.connects[1].recovered) await fail(`${name}: not a recovery`, JSON.stringify(t.connects));
  for (let n = 2; n <= 6; n++) await publish(base, { channel, event: 'tick', data: { n } });
  await waitFor(page, `${name}: the publications after the restart`, () => window.t.got.length >= 6);
  const got = (await page.evaluate(() => window.t.got)).map((e) => e.n);
  if (JSON.stringify(got) !== JSON.stringify([1, 2, 3, 4, 5, 6])) await fail(`${name}: in order`, JSON.stringify(got));
  await page.evaluate(() => window.socket.disconnect());
  await killHub(hub, port);
  console.log(`ok restart (${name}): SIGKILL, same port, socket.io-client reconnected by itself, 5 publications after it in order`);
}

async function recovery(page) {
  const name = 'redis engine + connection state recovery';
  const port = await freePort();
  const log = path.join(ARTIFACTS, 'restart-node-c.log');
  fs.writeFileSync(log, '');
  const nodeC = `http://127.0.0.1:${port}`;
  const nodeB = env.SIO_NODE_B_URL;
  const extra = {
    HERALD_ENGINE__KIND: 'redis',
    HERALD_ENGINE__URL: `redis://127.0.0.1:${env.SIO_REDIS_PORT}`,
    HERALD_ENGINE__RECONNECT_MAX_MS: '500',
    HERALD_SERVER__NODE_ID: 'node-c',
    HERALD_SOCKETIO__CONNECTION_STATE_RECOVERY: 'true',
  };
  const channel = 'hist.restart.feed';
  let hub = await startReady(port, log, extra);
  await openSocket(page, nodeC, channel);
  await waitFor(page, `${name}: connect and subscribe`, () => window.t.acks.length === 1);
  const first = await page.evaluate(() => window.t);
  if (!first.acks[0].ok) await fail(`${name}: subscribe`, JSON.stringify(first.acks[0]));
  if (first.connects[0].recovered) await fail(`${name}: a first connection`, JSON.stringify(first.connects));
  let n = 0;
  const tick = () => publish(nodeB, { channel, event: 'tick', data: { n: ++n } });
  // Published on node b, delivered through Redis to node c: the page holds an offset.
  for (let i = 0; i < 3; i++) await tick();
  await waitFor(page, `${name}: the first publications`, () => window.t.got.length === 3);

  await killHub(hub, port);
  await waitFor(page, `${name}: the disconnect`, () => window.t.disconnects.length === 1);
  for (let i = 0; i < 5; i++) await tick(); // while node c is down
  hub = await startReady(port, log, extra);
  await waitFor(page, `${name}: the reconnection`, () => window.t.connects.length === 2);
  const back = await page.evaluate(() => window.t.connects[1]);
  if (back.recovered !== true) await fail(`${name}: socket.recovered`, JSON.stringify(back));
  for (let i = 0; i < 3; i++) await tick(); // live, after the restart
  await waitFor(page, `${name}: every publication`, (total) => window.t.got.some((e) => e.n === total), n);
  // Fence: one more, on node c's own API; nothing can follow it that should have come before.
  await publish(nodeC, { channel, event: 'tick', data: { n: ++n } });
  await waitFor(page, `${name}: the fence`, (total) => window.t.got.some((e) => e.n === total), n);
  const t = await page.evaluate(() => window.t);
  const got = t.got.map((e) => e.n);
  const expected = Array.from({ length: n }, (_, i) => i + 1);
  if (JSON.stringify(got) !== JSON.stringify(expected)) await fail(`${name}: every event exactly once, in order`, JSON.stringify(got));
  const offsets = t.got.map((e) => e.offset);
  if (!offsets.every((o, i) => typeof o === 'number' && (i === 0 || o === offsets[i - 1] + 1))) {
    await fail(`${name}: consecutive offsets`, JSON.stringify(offsets));
  }
  if (t.acks.length !== 1) await fail(`${name}: a recovered socket needs no subscribe`, JSON.stringify(t.acks));
  await page.evaluate(() => window.socket.disconnect());
  await killHub(hub, port);
  console.log(`ok restart (${name}): recovered === true after SIGKILL, ${n} events exactly once, in order (5 published on node b during the outage)`);
}

const hardLimit = setTimeout(() => fail('the whole run', 'took longer than 100 s'), 100000);
hardLimit.unref();
try {
  for (const key of ['HERALD_BIN', 'SIO_CONFIG', 'SIO_REDIS_PORT', 'SIO_NODE_B_URL', 'SIO_TOKEN_ALICE', 'SIO_API_KEY']) {
    if (!env[key]) throw new Error(`${key} is not set (run.sh sets it)`);
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const port = await servePages();
  browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    timeout: 25000,
  });
  for (const scenario of [memoryEngine, recovery]) {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    await page.goto(`http://127.0.0.1:${port}/`);
    await scenario(page);
    if (errors.length) await fail(`${scenario.name}: page errors`, errors.join('\n'));
    await page.close();
  }
} catch (err) {
  await fail('restart', err.stack || err);
}
await browser.close();
pages.close();
killAll();
console.log('all restart checks passed');
process.exit(0);
