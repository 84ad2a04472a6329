// Shared by the browser tests (demo.test.mjs, recovery.test.mjs): the herald binary and
// its environment, processes started on free ports and killed on exit, health checks,
// the publish API, a static server for examples/browser, named steps with deadlines, and
// headless Chromium.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { freePort, hubEnv, sleep } from '../lib/procs.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '../..');
const env = process.env;

export const API_KEY = env.DEMO_API_KEY || env.HERALD_SERVER__API_KEY || 'herald-insecure-development-api-key';
export const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = path.resolve(root, env.ARTIFACTS_DIR || 'artifacts/browser');
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function heraldBin() {
  if (env.HERALD_BIN) return path.resolve(root, env.HERALD_BIN);
  for (const candidate of ['target/release/herald', 'target/debug/herald']) {
    const p = path.join(root, candidate);
    if (fs.existsSync(p)) return p;
  }
  throw new Error('no herald binary: build one (cargo build --release) or set HERALD_BIN');
}

export { freePort, hubEnv, sleep };

// ------------------------------------------------------------------ processes

const spawned = new Set(); // processes this process started (killed on exit)

/**
 * Starts `bin args` with its output appended to `log`; the child is killed when this
 * process exits (killSpawned). `child.exitInfo` is set once it exits. With DEMO_PIDS_FILE
 * set, its pid is appended there too, for run.sh to clean up after a crash of the test.
 */
export function startProcess(bin, args, { log, env: childEnv = process.env } = {}) {
  const fd = fs.openSync(log, 'a');
  fs.writeSync(fd, `\n--- ${path.basename(process.argv[1])}: starting ${bin} ${args.join(' ')} at ${new Date().toISOString()}\n`);
  const child = spawn(bin, args, { stdio: ['ignore', fd, fd], env: childEnv });
  fs.closeSync(fd);
  child.exitInfo = null;
  child.on('exit', (code, signal) => {
    child.exitInfo = { code, signal };
    spawned.delete(child);
  });
  spawned.add(child);
  if (env.DEMO_PIDS_FILE) fs.appendFileSync(env.DEMO_PIDS_FILE, `${child.pid}\n`);
  return child;
}

export function killSpawned() {
  for (const child of spawned) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Kills what is still running and waits (at most `ms`) until it has exited and is reaped. */
export async function stopSpawned(ms = 5000) {
  const running = [...spawned];
  const exited = Promise.all(running.map((child) => new Promise((resolve) => (child.exitInfo ? resolve() : child.once('exit', resolve)))));
  killSpawned();
  let timer;
  await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

export function logTail(log, lines = 25) {
  try {
    return fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function answers(port, what) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/${what}`, { signal: AbortSignal.timeout(1000) });
    return res.ok;
  } catch {
    return false;
  }
}

export const healthy = (port) => answers(port, 'health');

/** Waits for `/health` (or `/ready` with `what = 'ready'`: the engine is connected too). */
export async function waitHealthy(port, child, ms, { log, what = 'health' } = {}) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child?.exitInfo) throw new Error(`hub exited (${JSON.stringify(child.exitInfo)}):\n${logTail(log)}`);
    if (await answers(port, what)) return;
    await sleep(100);
  }
  throw new Error(`hub on port ${port} not ${what === 'health' ? 'healthy' : what} within ${ms} ms:\n${logTail(log)}`);
}

export async function waitDown(port, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await healthy(port))) return;
    await sleep(50);
  }
  throw new Error(`hub on port ${port} still answering ${ms} ms after SIGKILL`);
}

// ------------------------------------------------------------------ HTTP API

export async function publish(port, body) {
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(3000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`publish ${JSON.stringify(body)}: HTTP ${res.status} ${text}`);
  return JSON.parse(text);
}

// ------------------------------------------------------------------ static server (DEMO_ORIGIN=local)

export function serveExamples() {
  const dir = path.join(root, 'examples/browser');
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8' };
  const server = http.createServer((req, res) => {
    let p = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (p.endsWith('/')) p += 'index.html';
    const file = path.join(dir, path.normalize(p));
    if (!file.startsWith(dir + path.sep) || !fs.existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/**
 * The demo page's URL for a hub on `port`: herald's own /demo, or with DEMO_ORIGIN the
 * page from that origin ("local": served by this process; close `server` when done).
 */
export async function demoPageUrl(port, query) {
  const q = new URLSearchParams(query);
  if (!env.DEMO_ORIGIN) return { url: `http://127.0.0.1:${port}/demo?${q}`, server: null };
  let origin = env.DEMO_ORIGIN;
  let server = null;
  if (origin === 'local') {
    server = await serveExamples();
    origin = `http://127.0.0.1:${server.address().port}`;
  }
  q.set('url', `ws://127.0.0.1:${port}/ws`);
  return { url: `${new URL('index.html', origin.endsWith('/') ? origin : `${origin}/`)}?${q}`, server };
}

// ------------------------------------------------------------------ steps

export const counts = { passed: 0 };

/** Runs `fn` as a named step that fails after `ms`; prints ok/FAIL with its duration. */
export async function step(name, ms, fn) {
  const started = Date.now();
  let timer;
  try {
    const result = await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
      }),
    ]);
    counts.passed += 1;
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
    return result;
  } catch (err) {
    console.log(`FAIL ${name} (${Date.now() - started} ms)`);
    err.step = name;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Headless Chromium with a fresh profile in `userDataDir`. */
export function launchChromium(userDataDir) {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install -y chromium (run.sh does)`);
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 860 },
    timeout: 25000,
  });
}

/**
 * Runs `main` under a hard limit of `totalMs`, prints the summary line and exits 0/1;
 * every spawned process is killed on the way out (also on SIGINT/SIGTERM).
 */
export async function run(main, totalMs) {
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      killSpawned();
      process.exit(130);
    });
  }
  const hardLimit = setTimeout(() => {
    console.error(`FAIL: the test did not finish within ${totalMs} ms`);
    console.log(`${counts.passed} passed, 1 failed`);
    killSpawned();
    process.exit(1);
  }, totalMs);
  hardLimit.unref();
  try {
    await main();
    console.log(`${counts.passed} passed, 0 failed`);
    await stopSpawned();
    process.exit(0);
  } catch (err) {
    console.error(`\nFAIL${err.step ? ` in step "${err.step}"` : ''}: ${err.message}`);
    console.log(`${counts.passed} passed, 1 failed`);
    await stopSpawned();
    process.exit(1);
  }
}
