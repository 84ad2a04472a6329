#!/usr/bin/env node
// The seed app's three frontend calls (socketService.mjs: connect(authToken),
// subscribe(['prices', 'notifications']), on(event, cb)) against herald, with the seed
// backend's three pushes done through herald's HTTP API:
//   broadcast_to_user(user, event, data)       POST /api/v1/publish {"user": …}
//   broadcast_to_channel(channel, event, data) POST /api/v1/publish {"channel": …}
//   broadcast_global(event, data)              POST /api/v1/publish {"broadcast": true}
// Three users, alice with two sockets (two tabs). Checks that a channel push reaches its
// subscribers only, a user push every socket of that user and nobody else, a global push
// everyone, each with the event name and data as published. The global push goes last:
// herald delivers a node's publications to a connection in the order they were accepted,
// so once every socket has it, nothing else addressed to it can still be on the way.
// Plain node; exits 1 naming the failed step.
//
// Started by run.sh. Environment: SIO_URL, SIO_API_KEY, SIO_TOKEN_ALICE, SIO_TOKEN_BOB,
// SIO_TOKEN_CAROL.

import assert from 'node:assert/strict';

import { createSocketService } from './socketService.mjs';

const env = process.env;
const URL = env.SIO_URL;
const services = [];

function fail(step, why) {
  console.error(`FAIL seed app: ${step}: ${why}`);
  for (const s of services) s.disconnect();
  process.exit(1);
}

const hardLimit = setTimeout(() => fail('the whole run', 'took longer than 60 s'), 60000);
hardLimit.unref();

function within(ms, what, promise) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// ------------------------------------------------------------------ the seed backend, on herald

async function publish(body) {
  const response = await fetch(`${URL}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${env.SIO_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`publish ${JSON.stringify(body)}: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}
const broadcastToUser = (user, event, data) => publish({ user, event, data });
const broadcastToChannel = (channel, event, data) => publish({ channel, event, data });
const broadcastGlobal = (event, data) => publish({ broadcast: true, event, data });

// ------------------------------------------------------------------ the frontends

const EVENTS = ['price_update', 'notification', 'announcement'];

/** A tab: a socketService connected as `user`, recording every event it listens to. */
async function tab(name, token, channels) {
  const service = createSocketService(URL);
  services.push(service);
  const seen = [];
  await within(10000, `${name} to connect`, service.connect(token));
  for (const event of EVENTS) service.on(event, (data, meta) => seen.push({ event, data, channel: meta?.channel }));
  let last;
  const announced = new Promise((resolve) => {
    last = resolve;
  });
  service.on('announcement', () => last());
  if (channels.length) {
    const ack = await within(5000, `${name}'s subscribe ack`, service.subscribe(channels));
    assert.equal(ack.ok, true, `${name} subscribe: ${JSON.stringify(ack)}`);
  }
  return { name, service, seen, announced };
}

const price = { symbol: 'BTC', price: 97000.5, change: -0.25, at: '2026-01-02T03:04:05Z' };
const digest = { kind: 'digest', items: [1, 'two', null, { three: true }], text: 'Grüße 👋' };
const personal = { text: 'Your order shipped', order: 42, nested: { deep: [[]] } };
const maintenance = { at: '22:00', minutes: 30 };

try {
  const alice1 = await tab('alice (tab 1)', env.SIO_TOKEN_ALICE, ['prices', 'notifications']);
  const alice2 = await tab('alice (tab 2)', env.SIO_TOKEN_ALICE, []);
  const bob = await tab('bob', env.SIO_TOKEN_BOB, ['prices']);
  const carol = await tab('carol', env.SIO_TOKEN_CAROL, ['notifications']);
  const tabs = [alice1, alice2, bob, carol];

  // A refused channel rejects the service's promise with herald's code.
  await assert.rejects(carol.service.subscribe(['user:bob']), (err) => err.code === 104 && err.channel === 'user:bob');

  await broadcastToChannel('prices', 'price_update', price);
  await broadcastToChannel('notifications', 'notification', digest);
  await broadcastToUser('alice', 'notification', personal);
  await broadcastToUser('bob', 'price_update', { symbol: 'ETH', price: 3100, alert: 'above 3000' });
  await broadcastGlobal('announcement', maintenance);
  await within(10000, 'the global push on every socket', Promise.all(tabs.map((t) => t.announced)));

  const expected = {
    'alice (tab 1)': [
      { event: 'price_update', data: price, channel: 'prices' },
      { event: 'notification', data: digest, channel: 'notifications' },
      { event: 'notification', data: personal, channel: 'user:alice' },
      { event: 'announcement', data: maintenance, channel: 'broadcast' },
    ],
    'alice (tab 2)': [
      { event: 'notification', data: personal, channel: 'user:alice' },
      { event: 'announcement', data: maintenance, channel: 'broadcast' },
    ],
    bob: [
      { event: 'price_update', data: price, channel: 'prices' },
      { event: 'price_update', data: { symbol: 'ETH', price: 3100, alert: 'above 3000' }, channel: 'user:bob' },
      { event: 'announcement', data: maintenance, channel: 'broadcast' },
    ],
    carol: [
      { event: 'notification', data: digest, channel: 'notifications' },
      { event: 'announcement', data: maintenance, channel: 'broadcast' },
    ],
  };
  for (const t of tabs) {
    try {
      assert.deepEqual(t.seen, expected[t.name]);
    } catch (err) {
      fail(`what ${t.name} received`, err.message);
    }
  }
  for (const s of services) s.disconnect();
  console.log('ok seed app: channel push to subscribers only, user push to all of that user\'s sockets only, global push to everyone; event names and data as published');
} catch (err) {
  fail('seed app', err.stack || err);
}
process.exit(0);
