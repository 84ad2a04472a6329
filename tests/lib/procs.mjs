// Helpers the JavaScript test suites (tests/browser, tests/socketio) share: no
// dependencies beyond node itself, so either suite can import it without the
// other's node_modules.

import net from 'node:net';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * The environment for a herald the test starts: herald reads every
 * HERALD_<SECTION>__<KEY> variable as configuration and refuses unknown ones, so
 * HERALD_* variables that are not configuration (HERALD_BIN, say) are dropped.
 */
export function hubEnv(extra = {}) {
  return {
    ...Object.fromEntries(
      Object.entries(process.env).filter(
        ([k]) => !k.startsWith('HERALD_') || k === 'HERALD_CONFIG' || k.slice(7).includes('__'),
      ),
    ),
    ...extra,
  };
}
