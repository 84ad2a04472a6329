#!/usr/bin/env node
// The demo's shipment feed survives a hub restart with no missed event: a real
// redis-server and two herald nodes (Redis engine, history on tracking.*) on free ports,
// the demo page in headless Chromium connected to node A, numbered shipment updates
// published through node B's API. A is killed (SIGKILL) mid-stream, updates keep coming
// while it is down, A is started again on the same port; the page must reconnect, resubscribe
// with `since`, report `recovered: true` for tracking.demo, and show every update exactly
// once, in order. Plain node, no test framework; exits 1 naming the failed step.
//
// Usually started by run.sh. Environment (see demo.test.mjs for the shared ones):
//   HERALD_BIN, DEMO_ORIGIN, DEMO_FORMAT, CHROMIUM, ARTIFACTS_DIR as in demo.test.mjs
//   REDIS_SERVER     redis-server binary (default redis-server on PATH)
//   DEMO_PIDS_FILE   every process started is appended there (run.sh kills leftovers)
//   TEST_TIMEOUT_MS  hard limit for the whole run (default 120000)
// Artifacts: artifacts/browser/recovery.log (both hubs and Redis), recovery-failure.png.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  ARTIFACTS,
  demoPageUrl,
  freePort,
  heraldBin,
  hubEnv,
  launchChromium,
  logTail,
  publish,
  run,
  sleep,
  startProcess,
  step,
  stopSpawned,
  waitDown,
  waitHealthy,
} from './harness.mjs';

const env = process.env;
const FORMAT = env.DEMO_FORMAT || 'json';
const TOTAL_TIMEOUT_MS = Number(env.TEST_TIMEOUT_MS || 120000);
const LOG = path.join(ARTIFACTS, 'recovery.log');
const CHANNEL = 'tracking.demo';
/** Updates published, numbered 1..TOTAL (more than the 30 rows the feed keeps). */
const TOTAL = 60;
/** A is killed once the page has shown this many… */
const KILL_AFTER = 10;
/** …and the publisher waits for the kill after this one: the next ones go out while A is down… */
const HOLD_AT = 20;
/** …and A comes back only after this one was published. */
const RESTART_AFTER = 35;
const PUBLISH_EVERY_MS = 50;
const ROWS = 30; // MAX_TRACKING_ROWS in demo.js
const STATUSES = ['created', 'picked_up', 'in_transit', 'out_for_delivery', 'delivered'];
const PLACES = ['Shenzhen', 'Hong Kong', 'Singapore', 'Suez Canal', 'Rotterdam', 'Duisburg', 'Berlin'];

const shipmentId = (seq) => `SHP-${2000 + seq}`;

function startRedis(port) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-redis-'));
  const child = startProcess(
    env.REDIS_SERVER || 'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { log: LOG },
  );
  child.dir = dir;
  return child;
}

async function waitRedis(port, child) {
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    if (child.exitInfo) throw new Error(`redis-server exited (${JSON.stringify(child.exitInfo)}):\n${logTail(LOG)}`);
    try {
      const out = execFileSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      if (out.trim() === 'PONG') return;
    } catch {
      /* not yet */
    }
    await sleep(100);
  }
  throw new Error(`redis-server on ${port} did not answer PING:\n${logTail(LOG)}`);
}

function startHub(bin, port, redisPort, node) {
  return startProcess(bin, ['--listen', `127.0.0.1:${port}`], {
    log: LOG,
    env: hubEnv({
      HERALD_ENGINE__KIND: 'redis',
      HERALD_ENGINE__URL: `redis://127.0.0.1:${redisPort}`,
      HERALD_ENGINE__RECONNECT_MAX_MS: '500',
      HERALD_SERVER__NODE_ID: `"${node}"`,
      HERALD_CHANNELS__NAMESPACES: '[{pattern="tracking.*", history_size=500, history_ttl_secs=600}]',
    }),
  });
}

function shipmentUpdate(seq) {
  return {
    channel: CHANNEL,
    event: 'shipment_update',
    data: { shipment: shipmentId(seq), seq, status: STATUSES[seq % STATUSES.length], location: PLACES[seq % PLACES.length], ts: Date.now() },
  };
}

/** A deferred: `promise` settles when `resolve` is called. */
function gate() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  fs.rmSync(path.join(ARTIFACTS, 'recovery-failure.png'), { force: true });
  fs.writeFileSync(LOG, '');
  const bin = heraldBin();

  const [redisPort, portA, portB] = [await freePort(), await freePort(), await freePort()];
  const redis = startRedis(redisPort);
  let hubA;
  try {
    await step(`redis-server on port ${redisPort}`, 15000, () => waitRedis(redisPort, redis));
    hubA = startHub(bin, portA, redisPort, 'a');
    const hubB = startHub(bin, portB, redisPort, 'b');
    await step(`hubs a (${portA}) and b (${portB}) ready on the Redis engine`, 20000, async () => {
      await waitHealthy(portA, hubA, 15000, { log: LOG, what: 'ready' });
      await waitHealthy(portB, hubB, 15000, { log: LOG, what: 'ready' });
    });

    const token = execFileSync(bin, ['token', '--user', 'demo'], { encoding: 'utf8', env: hubEnv() }).trim();
    const query = { token };
    if (FORMAT !== 'json') query.format = FORMAT;
    const { url: pageUrl, server: staticServer } = await demoPageUrl(portA, query);
    console.log(`page: ${pageUrl.replace(token, '<token>')}`);

    const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-chromium-'));
    const pageErrors = [];
    const consoleLines = [];
    let context;
    let page;
    try {
      context = await step('launch chromium', 30000, () => launchChromium(userDataDir));
      page = context.pages()[0] ?? (await context.newPage());
      page.on('pageerror', (err) => pageErrors.push(err.stack || String(err)));
      page.on('console', (msg) => {
        consoleLines.push(`[${msg.type()}] ${msg.text()}`);
        if (consoleLines.length > 200) consoleLines.shift();
      });
      const seenCount = () => page.evaluate(() => window.recoveryTest.seen.length);

      await step('open the demo page; it subscribes to tracking.demo with history', 20000, async () => {
        const res = await page.goto(pageUrl, { waitUntil: 'load', timeout: 15000 });
        if (!res || !res.ok()) throw new Error(`GET page: HTTP ${res?.status()}`);
        await page.waitForFunction((c) => window.heraldDemo?.herald.position(c) !== undefined, CHANNEL, { timeout: 15000, polling: 50 });
        // Everything the feed's channel delivers, in arrival order, next to the demo's own handler.
        await page.evaluate((c) => {
          const t = { seen: [], recoveryFailed: [], gaps: [] };
          window.recoveryTest = t;
          const { herald } = window.heraldDemo;
          herald.on(c, 'shipment_update', (data, meta) => t.seen.push({ seq: data.seq, shipment: data.shipment, offset: meta.offset }));
          herald.onRecoveryFailed((info) => t.recoveryFailed.push(info));
          herald.onGap((g) => t.gaps.push(g));
        }, CHANNEL);
      });

      // The publisher: 1..TOTAL through node B, one every PUBLISH_EVERY_MS, holding after
      // HOLD_AT until A is dead; so HOLD_AT+1.. are published while A is down.
      const killed = gate();
      let published = 0;
      let publisherError = null;
      const publisher = (async () => {
        for (let seq = 1; seq <= TOTAL; seq++) {
          if (seq === HOLD_AT + 1) await killed.promise;
          await publish(portB, shipmentUpdate(seq));
          published = seq;
          await sleep(PUBLISH_EVERY_MS);
        }
      })().catch((err) => {
        publisherError = err;
      });
      const checkPublisher = () => {
        if (publisherError) throw new Error(`publisher: ${publisherError.message}`);
      };

      await step(`the feed shows the first ${KILL_AFTER} updates live`, 20000, () =>
        page.waitForFunction((n) => window.recoveryTest.seen.length >= n, KILL_AFTER, { timeout: 20000, polling: 20 }),
      );

      const mark = await page.evaluate(() => window.heraldDemo.transitions.length);
      let atKill;
      await step('kill hub a (SIGKILL) mid-stream', 10000, async () => {
        hubA.kill('SIGKILL');
        await waitDown(portA, 8000);
        atKill = { published, seen: await seenCount() };
        killed.resolve();
      });

      await step('page notices: disconnected', 10000, () =>
        page.waitForFunction((m) => window.heraldDemo.transitions.slice(m).some((t) => t.state === 'disconnected'), mark, {
          timeout: 10000,
          polling: 50,
        }),
      );

      await step(`updates keep coming through b while a is down (up to #${RESTART_AFTER})`, 20000, async () => {
        while (published < RESTART_AFTER) {
          checkPublisher();
          await sleep(20);
        }
        if ((await page.evaluate(() => window.heraldDemo.herald.state)) === 'connected') {
          throw new Error('the page is connected while its hub is down');
        }
      });

      await step('restart hub a on the same port', 20000, async () => {
        for (let attempt = 1; ; attempt++) {
          hubA = startHub(bin, portA, redisPort, 'a');
          try {
            await waitHealthy(portA, hubA, 15000, { log: LOG, what: 'ready' });
            return;
          } catch (err) {
            if (!hubA.exitInfo || attempt >= 3) throw err; // exited early: port not yet free; retry
            await sleep(500);
          }
        }
      });

      await step('page reconnects and resubscribes with recovered: true', 20000, async () => {
        await page.waitForFunction(
          ([m, c]) => {
            const t = window.heraldDemo.transitions.slice(m);
            const down = t.findIndex((x) => x.state === 'disconnected');
            return down >= 0 && t.slice(down + 1).some((x) => x.state === 'connected') && window.heraldDemo.herald.recovered(c) !== undefined;
          },
          [mark, CHANNEL],
          { timeout: 20000, polling: 50 },
        );
        const recovered = await page.evaluate((c) => window.heraldDemo.herald.recovered(c), CHANNEL);
        if (recovered !== true) {
          const failed = await page.evaluate(() => window.recoveryTest.recoveryFailed);
          throw new Error(`recovered(${CHANNEL}) is ${recovered}: ${JSON.stringify(failed)}`);
        }
      });

      await step(`the feed gets every update up to #${TOTAL}`, 30000, async () => {
        await publisher;
        checkPublisher();
        await page.waitForFunction((n) => window.recoveryTest.seen.some((s) => s.seq === n), TOTAL, { timeout: 25000, polling: 50 });
      });

      await step('every update exactly once, in order, offsets consecutive', 5000, async () => {
        await sleep(300); // anything repeated after the last one would show up here
        const { seen, recoveryFailed, gaps } = await page.evaluate(() => window.recoveryTest);
        const seqs = seen.map((s) => s.seq);
        const expected = Array.from({ length: TOTAL }, (_, i) => i + 1);
        if (JSON.stringify(seqs) !== JSON.stringify(expected)) {
          throw new Error(`received ${JSON.stringify(seqs)}, expected 1..${TOTAL}`);
        }
        const first = seen[0].offset;
        const holes = seen.filter((s, i) => s.offset !== first + i);
        if (typeof first !== 'number' || holes.length) throw new Error(`offsets not consecutive: ${JSON.stringify(seen.map((s) => s.offset))}`);
        if (recoveryFailed.length) throw new Error(`recovery failed: ${JSON.stringify(recoveryFailed)}`);
        if (gaps.length) throw new Error(`gap notices: ${JSON.stringify(gaps)}`);
        console.log(
          `     killed with ${atKill.published} published and ${atKill.seen} shown; ` +
            `${TOTAL - atKill.seen} recovered or live after the restart`,
        );
      });

      await step(`the feed shows the newest ${ROWS}, newest first, each once`, 5000, async () => {
        const rows = await page.evaluate(() => [...document.querySelectorAll('#tracking li')].map((li) => ({ id: li.dataset.shipment, offset: li.dataset.offset })));
        const ids = rows.map((r) => r.id);
        const expected = Array.from({ length: Math.min(ROWS, TOTAL) }, (_, i) => shipmentId(TOTAL - i));
        if (JSON.stringify(ids) !== JSON.stringify(expected)) throw new Error(`rows ${JSON.stringify(ids)}, expected ${JSON.stringify(expected)}`);
        if (rows.some((r) => r.offset === undefined)) throw new Error('rows without data-offset: the feed has no history');
      });

      await step('no uncaught errors in the page', 1000, async () => {
        if (pageErrors.length) throw new Error(`uncaught page errors:\n${pageErrors.join('\n')}`);
      });
    } catch (err) {
      if (page) {
        await page.screenshot({ path: path.join(ARTIFACTS, 'recovery-failure.png'), fullPage: true, timeout: 5000 }).catch(() => {});
        const dump = await page
          .evaluate(() => ({
            state: document.querySelector('#state')?.textContent,
            transitions: window.heraldDemo?.transitions,
            seen: window.recoveryTest?.seen.map((s) => `${s.seq}@${s.offset}`).join(' '),
            log: [...document.querySelectorAll('#log li')].map((li) => li.textContent).slice(0, 20),
          }))
          .catch((e) => `(page not readable: ${e.message})`);
        console.error('page state:', JSON.stringify(dump, null, 2));
      }
      if (consoleLines.length) console.error(`browser console (last lines):\n${consoleLines.slice(-30).join('\n')}`);
      if (pageErrors.length) console.error(`page errors:\n${pageErrors.join('\n')}`);
      console.error(`log (tail, ${path.relative(process.cwd(), LOG)}):\n${logTail(LOG, 40)}`);
      throw err;
    } finally {
      await context?.close().catch(() => {});
      fs.rmSync(userDataDir, { recursive: true, force: true });
      staticServer?.close();
    }
  } finally {
    await stopSpawned(); // the hubs and redis-server, before its directory goes
    fs.rmSync(redis.dir, { recursive: true, force: true });
  }
}

await run(main, TOTAL_TIMEOUT_MS);
