// Soak test: many subscribers stay connected for a long time, spread over
// several channels, while one HTTP publisher sends at a steady rate. A
// subscriber whose connection closes reconnects with exponential backoff
// and full jitter (as herald's close codes ask), so the run keeps going and
// the closes show up in the metrics.
//
//   HERALD_URL=http://127.0.0.1:8080 k6 run k6/soak.js
//   HERALD_URL=... SOAK_DURATION=60s SOAK_VUS=50 k6 run k6/soak.js
//
// Environment (all optional):
//   SOAK_DURATION   publishing time (30m); the run adds the ramp and ~15 s
//   SOAK_VUS        subscribers (200)
//   SOAK_CHANNELS   channels the subscribers are spread over (10)
//   SOAK_RATE       publications per second, over all channels (20)
//   SOAK_BATCH      publications per HTTP request (1)
//   SOAK_RAMP       window over which subscribers first connect (10s)
//   SOAK_CHURN      mean connection lifetime, e.g. 5m: each subscriber then
//                   closes and reopens its connection after 0.5–1.5× that
//                   (planned, not counted as unexpected); off by default
//   SOAK_P99_MS     delivery latency p99 threshold (50)
//   SOAK_MIN_CONNECT_RATE  connection success threshold (0.999)
// plus the HERALD_* settings of lib/herald.js.

import { check } from 'k6';
import exec from 'k6/execution';
import {
  Subscriber,
  assertReady,
  envInt,
  envNum,
  ms,
  parseDuration,
  report,
  runId,
  runPublisher,
  stat,
  summaryTrendStats,
} from './lib/herald.js';

const DURATION_MS = parseDuration(__ENV.SOAK_DURATION || '30m');
const VUS = envInt('SOAK_VUS', 200);
const CHANNELS = Math.max(1, envInt('SOAK_CHANNELS', 10));
const RATE = envNum('SOAK_RATE', 20);
const BATCH = Math.max(1, envInt('SOAK_BATCH', 1));
const RAMP_MS = parseDuration(__ENV.SOAK_RAMP || '10s');
const CHURN_MS = __ENV.SOAK_CHURN ? parseDuration(__ENV.SOAK_CHURN) : 0;
const P99_MS = envNum('SOAK_P99_MS', 50);
const MIN_CONNECT = envNum('SOAK_MIN_CONNECT_RATE', 0.999);

// The publisher starts once the ramp is over and the last subscriber had a moment to subscribe.
const PUBLISH_START_MS = RAMP_MS + 2000;
const GRACE_MS = 10000;
const SUBSCRIBER_MS = PUBLISH_START_MS + DURATION_MS + GRACE_MS;

export const options = {
  summaryTrendStats,
  setupTimeout: '30s',
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      exec: 'subscriber',
      vus: VUS,
      iterations: 1,
      maxDuration: ms(SUBSCRIBER_MS + 30000),
      gracefulStop: '10s',
    },
    publisher: {
      executor: 'per-vu-iterations',
      exec: 'publisher',
      vus: 1,
      iterations: 1,
      startTime: ms(PUBLISH_START_MS),
      maxDuration: ms(DURATION_MS + 30000),
      gracefulStop: '10s',
    },
  },
  thresholds: {
    herald_connect_success: [`rate>=${MIN_CONNECT}`],
    herald_subscribe_success: [`rate>=${MIN_CONNECT}`],
    herald_delivery_latency: [`p(99)<${P99_MS}`],
    herald_unexpected_closes: ['count==0'],
    herald_messages_lost: ['count==0'],
    herald_messages_received: ['count>0'],
    herald_publish_errors: ['count==0'],
  },
};

export function setup() {
  assertReady();
  const id = runId();
  const channels = [];
  for (let i = 0; i < CHANNELS; i++) channels.push(`k6.soak.${id}.${i}`);
  return { channels, userPrefix: `k6-soak-${id}` };
}

export function subscriber(data) {
  const start = exec.scenario.startTime;
  const index = exec.scenario.iterationInTest; // 0..VUS-1: one iteration per VU
  const channel = data.channels[index % data.channels.length];
  const sub = new Subscriber({
    user: `${data.userPrefix}-${index}`,
    channels: [channel],
    deadline: start + SUBSCRIBER_MS,
    strictFromMs: start + PUBLISH_START_MS,
    reconnect: true,
    backoffBaseMs: 500,
    backoffMaxMs: 30000,
    // Tokens outlive the run, so expiry (4005) is not part of the soak.
    tokenTtl: Math.ceil(SUBSCRIBER_MS / 1000) + 3600,
    onSubscribed: (s) => {
      if (CHURN_MS <= 0) return;
      const delay = CHURN_MS * (0.5 + Math.random());
      // No planned reconnect near the end: the end marker must find everyone connected.
      if (Date.now() + delay < start + PUBLISH_START_MS + DURATION_MS - 2000) {
        s.setTimer('churn', () => s.recycle(), delay);
      }
    },
    onDone: (s) => {
      check(s, {
        'soak subscriber received publications': (x) => x.totals.received > 0,
        'soak subscriber lost no publication': (x) => x.totals.lost === 0,
        'soak subscriber saw the end marker': (x) => x.endSeen,
        'soak subscriber closed only on purpose': (x) => Object.keys(x.unexpected).length === 0,
      });
    },
  });
  // Spread the first connections over the ramp.
  setTimeout(() => sub.start(), Math.random() * RAMP_MS);
}

export function publisher(data) {
  runPublisher({ channels: data.channels, rate: RATE, durationMs: DURATION_MS, batch: BATCH });
}

export function handleSummary(data) {
  const seconds = DURATION_MS / 1000;
  const received = stat(data, 'herald_messages_received', 'count') || 0;
  const expected = stat(data, 'herald_expected_deliveries', 'count') || 0;
  const published = stat(data, 'herald_published', 'count') || 0;
  const lines = [
    `config: ${VUS} subscribers on ${CHANNELS} channel(s), ${RATE} publications/s in batches of ${BATCH} for ${seconds}s, ramp ${RAMP_MS / 1000}s, churn ${CHURN_MS ? `${CHURN_MS / 1000}s` : 'off'}`,
    `publications: ${published} (${(published / seconds).toFixed(1)}/s over the publishing window)`,
    `deliveries: ${received} (${(received / seconds).toFixed(1)}/s), ${expected ? ((100 * received) / expected).toFixed(3) : '-'}% of the ${expected} the hub reported`,
  ];
  return report(data, `herald soak: ${VUS} subscribers, ${seconds}s`, lines);
}
