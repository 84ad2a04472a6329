#!/usr/bin/env node
// End-to-end test of the browser demo (examples/browser) against a real herald hub,
// in headless Chromium driven by playwright-core. Plain node, no test framework;
// exits 1 with a message naming the failed step.
//
// What it checks:
//   1. the demo page loads and reaches state "connected";
//   2. a price published through POST /api/v1/publish shows up in the ticker, and a
//      shipment update in the tracking feed; latency (ping) is measured;
//   3. after the hub is killed (SIGKILL) and started again on the same port, the
//      page goes "disconnected" and then "connected" on its own, and publications
//      made after the restart arrive on every channel (it subscribed again);
//   4. no uncaught errors in the page; a screenshot goes to artifacts/browser/demo.png.
//
// Usually started by run.sh. Environment (herald reads every HERALD_<SECTION>__<KEY>
// variable as configuration and refuses unknown ones, so the test's own settings are
// DEMO_*, and HERALD_BIN is removed from the environment of the herald it starts):
//   HERALD_BIN          herald binary (default target/release/herald, else target/debug/herald)
//   DEMO_HUB_PORT       port of a running hub; then DEMO_HUB_PID_FILE must hold its pid (the
//                       test kills it, starts the replacement itself and writes its pid there).
//                       Without DEMO_HUB_PORT the test starts its own hub on a free port.
//   DEMO_TOKEN          access token for the page (default: `$HERALD_BIN token --user demo`)
//   DEMO_API_KEY        API key (default: HERALD_SERVER__API_KEY, else the development key)
//   DEMO_ORIGIN      where the page comes from. Unset: herald's own /demo. An origin such as
//                    http://127.0.0.1:8000 (python3 -m http.server in examples/browser): the page
//                    is loaded from there with ?url=ws://127.0.0.1:PORT/ws. "local": the test
//                    serves examples/browser itself (so edits are tested without a rebuild).
//   DEMO_FORMAT      json (default) or msgpack
//   CHROMIUM         browser binary (default /usr/bin/chromium)
//   ARTIFACTS_DIR    default artifacts/browser (relative to the repository root)
//   TEST_TIMEOUT_MS  hard limit for the whole run (default 120000)

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
  root,
  run,
  sleep,
  startProcess,
  step,
  waitDown,
  waitHealthy,
} from './harness.mjs';

const env = process.env;
const FORMAT = env.DEMO_FORMAT || 'json';
const TOTAL_TIMEOUT_MS = Number(env.TEST_TIMEOUT_MS || 120000);
const HUB_LOG = path.join(ARTIFACTS, 'herald.log');

function startHub(bin, port) {
  const child = startProcess(bin, ['--listen', `127.0.0.1:${port}`], { log: HUB_LOG, env: hubEnv() });
  if (env.DEMO_HUB_PID_FILE) fs.writeFileSync(env.DEMO_HUB_PID_FILE, `${child.pid}\n`);
  return child;
}

const hubLogTail = () => logTail(HUB_LOG);

// ------------------------------------------------------------------ HTTP API

/** Publishes (a fresh message each time, from make()) until the hub reports a subscriber reached. */
async function publishUntilDelivered(port, make, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const body = make();
    const { subscribers } = await publish(port, body);
    if (subscribers > 0) return body;
    if (Date.now() > deadline) throw new Error(`no subscriber on ${body.channel} within ${ms} ms`);
    await sleep(100);
  }
}

function priceUpdate(symbol, price, seq) {
  return {
    channel: `prices.${symbol}`,
    event: 'price_update',
    data: { symbol, price, change: Math.round((Math.random() - 0.45) * 400) / 100, seq, ts: Date.now() },
  };
}

function shipmentUpdate(shipment, status, location) {
  return { channel: 'tracking.demo', event: 'shipment_update', data: { shipment, status, location, ts: Date.now() } };
}

// ------------------------------------------------------------------ main

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const stale of ['demo.png', 'failure.png']) fs.rmSync(path.join(ARTIFACTS, stale), { force: true });
  const bin = heraldBin();

  let port = Number(env.DEMO_HUB_PORT || 0);
  let hubPid;
  let hub = null;
  if (port) {
    if (!env.DEMO_HUB_PID_FILE) throw new Error('DEMO_HUB_PORT needs DEMO_HUB_PID_FILE (the pid of that hub)');
    hubPid = Number(fs.readFileSync(env.DEMO_HUB_PID_FILE, 'utf8').trim());
    await step('hub is healthy', 10000, () => waitHealthy(port, null, 10000, { log: HUB_LOG }));
  } else {
    port = await freePort();
    hub = startHub(bin, port);
    hubPid = hub.pid;
    await step(`hub starts on port ${port}`, 10000, () => waitHealthy(port, hub, 10000, { log: HUB_LOG }));
  }
  const token = env.DEMO_TOKEN || execFileSync(bin, ['token', '--user', 'demo'], { encoding: 'utf8', env: hubEnv() }).trim();

  const query = { token };
  if (FORMAT !== 'json') query.format = FORMAT;
  const { url: pageUrl, server: staticServer } = await demoPageUrl(port, query);
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

    const state = () => page.locator('#state').textContent().then((t) => t.trim());
    const waitState = (wanted, ms) =>
      page.waitForFunction((s) => document.querySelector('#state')?.textContent.trim() === s, wanted, { timeout: ms, polling: 50 });
    const waitPrice = (symbol, price, ms) =>
      page.waitForFunction(
        ([sym, value]) => Number(document.querySelector(`#prices [data-symbol=${sym}] .price`)?.dataset.value) === value,
        [symbol, price],
        { timeout: ms, polling: 50 },
      );
    const waitShipment = (id, ms) =>
      page.waitForFunction((s) => [...document.querySelectorAll('#tracking li')].some((li) => li.textContent.includes(s)), id, {
        timeout: ms,
        polling: 50,
      });

    await step('open the demo page', 15000, async () => {
      const res = await page.goto(pageUrl, { waitUntil: 'load', timeout: 15000 });
      if (!res || !res.ok()) throw new Error(`GET page: HTTP ${res?.status()}`);
      try {
        await page.locator('#state').waitFor({ state: 'attached', timeout: 5000 });
      } catch {
        throw new Error(
          'the page has no #state element: is it the demo? (herald embeds examples/browser at build time: ' +
            'rebuild herald, or run with DEMO_ORIGIN=local to test the files in the work tree)',
        );
      }
    });

    await step('page connects (#state = connected)', 15000, () => waitState('connected', 15000));

    await step('published price appears in the ticker', 15000, async () => {
      const price = 64321.55;
      await publishUntilDelivered(port, () => priceUpdate('BTC', price, 1));
      await waitPrice('BTC', price, 5000);
      const text = (await page.locator('#prices [data-symbol=BTC] .price').textContent()).trim();
      if (text !== '$64,321.55') throw new Error(`BTC price shows ${JSON.stringify(text)}, expected "$64,321.55"`);
    });

    await step('shipment update appears in the tracking feed', 15000, async () => {
      await publishUntilDelivered(port, () => shipmentUpdate('SHP-1001', 'picked_up', 'Shenzhen'));
      await waitShipment('SHP-1001', 5000);
    });

    await step('latency is measured with ping', 10000, () =>
      page.waitForFunction(() => /^\d+(\.\d+)? ms$/.test(document.querySelector('#latency')?.textContent.trim()), null, {
        timeout: 10000,
        polling: 100,
      }),
    );

    const mark = await page.evaluate(() => window.heraldDemo.transitions.length);
    await step('kill the hub (SIGKILL)', 10000, async () => {
      process.kill(hubPid, 'SIGKILL');
      await waitDown(port, 8000);
    });

    await step('page notices: #state = disconnected', 10000, async () => {
      await page.waitForFunction((m) => window.heraldDemo.transitions.slice(m).some((t) => t.state === 'disconnected'), mark, {
        timeout: 10000,
        polling: 50,
      });
      const first = await page.evaluate((m) => window.heraldDemo.transitions.slice(m).find((t) => t.state === 'disconnected'), mark);
      if (first.code !== 1006) throw new Error(`expected close code 1006 after the hub died, got ${first.code}`);
      const now = await state();
      if (now === 'connected') throw new Error('#state still says connected');
    });

    await step('restart the hub on the same port', 15000, async () => {
      for (let attempt = 1; ; attempt++) {
        hub = startHub(bin, port);
        hubPid = hub.pid;
        try {
          await waitHealthy(port, hub, 10000, { log: HUB_LOG });
          return;
        } catch (err) {
          if (!hub.exitInfo || attempt >= 3) throw err; // exited early: port not yet free; retry
          await sleep(500);
        }
      }
    });

    await step('page reconnects on its own (#state = connected)', 20000, async () => {
      await page.waitForFunction(
        (m) => {
          const t = window.heraldDemo.transitions.slice(m);
          const down = t.findIndex((x) => x.state === 'disconnected');
          return down >= 0 && t.slice(down + 1).some((x) => x.state === 'connected') && document.querySelector('#state').textContent.trim() === 'connected';
        },
        mark,
        { timeout: 20000, polling: 50 },
      );
      const reconnects = Number((await page.locator('#reconnects').textContent()).trim());
      if (!(reconnects >= 1)) throw new Error(`#reconnects shows ${reconnects}, expected ≥ 1`);
      const close = (await page.locator('#close').textContent()).trim();
      if (!close.startsWith('1006')) throw new Error(`#close shows ${JSON.stringify(close)}, expected 1006 …`);
    });

    await step('publications after the restart arrive (resubscribed)', 15000, async () => {
      const price = 65000.25;
      await publishUntilDelivered(port, () => priceUpdate('BTC', price, 2));
      await waitPrice('BTC', price, 5000);
      await publishUntilDelivered(port, () => shipmentUpdate('SHP-1002', 'in_transit', 'Rotterdam'));
      await waitShipment('SHP-1002', 5000);
      for (const [symbol, p] of [['ETH', 3120.4], ['SOL', 148.37]]) {
        await publishUntilDelivered(port, () => priceUpdate(symbol, p, 1));
        await waitPrice(symbol, p, 5000);
      }
    });

    await step('live data for the screenshot; messages/s counts', 20000, async () => {
      const walk = { BTC: 65000.25, ETH: 3120.4, SOL: 148.37 };
      const route = [
        ['SHP-1003', 'created', 'Shenzhen'],
        ['SHP-1001', 'in_transit', 'Singapore'],
        ['SHP-1004', 'picked_up', 'Hong Kong'],
        ['SHP-1002', 'out_for_delivery', 'Duisburg'],
        ['SHP-1005', 'exception', 'Suez Canal'],
        ['SHP-1002', 'delivered', 'Berlin'],
      ];
      for (let i = 0; i < 36; i++) {
        for (const symbol of Object.keys(walk)) {
          walk[symbol] = Math.round(walk[symbol] * (1 + (Math.random() - 0.48) * 0.004) * 100) / 100;
          await publish(port, priceUpdate(symbol, walk[symbol], 3 + i));
        }
        if (i % 6 === 5) await publish(port, shipmentUpdate(...route[(i - 5) / 6]));
        await sleep(40);
      }
      await waitPrice('SOL', walk.SOL, 5000);
      await page.waitForFunction(() => Number(document.querySelector('#rate')?.textContent) > 0, null, { timeout: 5000, polling: 100 });
      await page.waitForFunction(() => /ms$/.test(document.querySelector('#latency')?.textContent.trim()), null, { timeout: 5000, polling: 100 });
      await sleep(1500); // let the price flashes fade
    });

    await step('screenshot artifacts/browser/demo.png', 15000, () =>
      page.screenshot({ path: path.join(ARTIFACTS, 'demo.png'), fullPage: true, timeout: 10000 }),
    );

    await step('no uncaught errors in the page', 1000, async () => {
      if (pageErrors.length) throw new Error(`uncaught page errors:\n${pageErrors.join('\n')}`);
    });
  } catch (err) {
    if (page) {
      await page.screenshot({ path: path.join(ARTIFACTS, 'failure.png'), fullPage: true, timeout: 5000 }).catch(() => {});
      const dump = await page
        .evaluate(() => ({
          state: document.querySelector('#state')?.textContent,
          close: document.querySelector('#close')?.textContent,
          transitions: window.heraldDemo?.transitions,
          log: [...document.querySelectorAll('#log li')].map((li) => li.textContent).slice(0, 20),
        }))
        .catch((e) => `(page not readable: ${e.message})`);
      console.error('page state:', JSON.stringify(dump, null, 2));
    }
    if (consoleLines.length) console.error(`browser console (last lines):\n${consoleLines.slice(-30).join('\n')}`);
    if (pageErrors.length) console.error(`page errors:\n${pageErrors.join('\n')}`);
    console.error(`hub log (tail):\n${hubLogTail()}`);
    throw err;
  } finally {
    await context?.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
    staticServer?.close();
  }
  console.log(`screenshot: ${path.relative(root, path.join(ARTIFACTS, 'demo.png'))}`);
}

await run(main, TOTAL_TIMEOUT_MS);
