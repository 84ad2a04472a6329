#!/usr/bin/env node
// socket.io-client's own browser bundles in headless Chromium (playwright-core, the
// system's /usr/bin/chromium, never a browser download), on a page served from
// another origin than the hub: real XHR long-polling with CORS, the upgrade to
// WebSocket, and the msgpack bundle. Plain node; exits 1 naming the failed step.
//
// For each bundle and transport set: connect with a token, subscribe to a list and
// get the ack, receive 20 publications in order; a bad token gives connect_error
// with code 4500.
//
// Started by run.sh. Environment: SIO_URL, SIO_API_KEY, SIO_TOKEN_ALICE (as for
// socketio.test.mjs); CHROMIUM (default /usr/bin/chromium).

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
const URL = env.SIO_URL;
const COUNT = 20;
const dist = path.join(here, 'node_modules/socket.io-client/dist');
const BUNDLES = {
  '/socket.io.min.js': fs.readFileSync(path.join(dist, 'socket.io.min.js')),
  '/socket.io.msgpack.min.js': fs.readFileSync(path.join(dist, 'socket.io.msgpack.min.js')),
};

let browser;
let server;

async function fail(step, why) {
  console.error(`FAIL browser: ${step}: ${why}`);
  await browser?.close().catch(() => {});
  server?.close();
  process.exit(1);
}

function check(step, ok, why) {
  if (!ok) return fail(step, why);
  return undefined;
}

async function publish(channel, event, data) {
  const response = await fetch(`${URL}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${env.SIO_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ channel, event, data }),
  });
  if (!response.ok) throw new Error(`publish: HTTP ${response.status}`);
}

/** Serves a page that loads `bundle`, on its own port: another origin than the hub. */
function servePages() {
  server = http.createServer((request, response) => {
    const bundle = BUNDLES[request.url];
    if (bundle) {
      response.writeHead(200, { 'content-type': 'text/javascript' });
      response.end(bundle);
      return;
    }
    const src = request.url.includes('msgpack') ? '/socket.io.msgpack.min.js' : '/socket.io.min.js';
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end(`<!doctype html><title>socket.io</title><script src="${src}"></script>`);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

async function scenario(page, mode) {
  const step = (what) => `${mode.name}: ${what}`;
  const channel = `browser.${mode.tag}`;
  const connected = await page.evaluate(({ url, token, options }) => new Promise((resolve) => {
    window.got = [];
    window.socket = io(url, { ...options, auth: { token }, reconnection: false });
    window.socket.on('tick', (data, meta) => window.got.push({ data, meta }));
    window.socket.on('connect', () => resolve('connected'));
    window.socket.on('connect_error', (err) => resolve(`connect_error: ${err.message}`));
  }), { url: URL, token: env.SIO_TOKEN_ALICE, options: mode.options });
  check(step('connect'), connected === 'connected', connected);
  const ack = await page.evaluate((names) => window.socket.emitWithAck('subscribe', names), [channel, `${channel}.b`]);
  check(step('subscribe a list'), ack && ack.ok === true, JSON.stringify(ack));
  if (mode.upgrades) {
    await page.waitForFunction(() => window.socket.io.engine.transport.name === 'websocket', null, { timeout: 10000 })
      .catch(() => fail(step('upgrade'), 'still polling after 10 s'));
  }
  for (let i = 0; i < COUNT; i++) await publish(channel, 'tick', { i });
  await page.waitForFunction((n) => window.got.length >= n, COUNT, { timeout: 10000 })
    .catch(async () => fail(step('publications'), `got ${await page.evaluate(() => window.got.length)}`));
  const got = await page.evaluate(() => window.got);
  got.forEach(({ data, meta }, i) => check(step('publications in order'),
    data.i === i && meta.channel === channel, JSON.stringify({ data, meta })));
  const transport = await page.evaluate(() => window.socket.io.engine.transport.name);
  await page.evaluate(() => window.socket.disconnect());

  const refused = await page.evaluate(({ url, options }) => new Promise((resolve) => {
    const socket = io(url, { ...options, auth: { token: 'not-a-token' }, reconnection: false });
    socket.on('connect', () => resolve('connected'));
    socket.on('connect_error', (err) => resolve(err.data && err.data.code));
  }), { url: URL, options: mode.options });
  check(step('bad token'), refused === 4500, String(refused));
  console.log(`ok browser: ${mode.name} (${COUNT} publications over ${transport})`);
}

const modes = [
  { name: 'default bundle, default transports', tag: 'default', page: '/', options: {}, upgrades: true },
  { name: 'default bundle, polling only', tag: 'polling', page: '/', options: { transports: ['polling'] } },
  {
    name: 'msgpack bundle, default transports',
    tag: 'msgpack',
    page: '/msgpack',
    options: { path: '/socket.io-msgpack/' },
    upgrades: true,
  },
];

const hardLimit = setTimeout(() => fail('the whole run', 'took longer than 90 s'), 90000);
hardLimit.unref();
try {
  const port = await servePages();
  browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    timeout: 25000,
  });
  for (const mode of modes) {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    await page.goto(`http://127.0.0.1:${port}${mode.page}`);
    await scenario(page, mode);
    check(`${mode.name}: page errors`, errors.length === 0, errors.join('\n'));
    await page.close();
  }
} catch (err) {
  await fail('browser', err.stack || err);
}
await browser.close();
server.close();
console.log('all browser Socket.IO checks passed');
process.exit(0);
