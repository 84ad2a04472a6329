// Fan-out test: many subscribers on ONE channel, one HTTP publisher at a
// set rate. Reports delivery latency and deliveries per second, and counts
// lost publications from the sequence numbers each subscriber tracks
// (including the head, when it subscribed before publishing began, and the
// tail, from the publisher's end marker).
//
//   HERALD_URL=http://127.0.0.1:8080 k6 run k6/fanout.js
//   HERALD_URL=... FANOUT_SUBSCRIBERS=2000 FANOUT_RATE=10 k6 run k6/fanout.js
//
// Environment (all optional):
//   FANOUT_SUBSCRIBERS  subscribers, one VU each (200)
//   FANOUT_RATE         publications per second (20)
//   FANOUT_BATCH        publications per HTTP request (1)
//   FANOUT_DURATION     publishing time (30s)
//   FANOUT_CONNECT      time allowed to connect and subscribe before publishing
//                       (default: 5s + 2 ms per subscriber)
//   FANOUT_P99_MS       delivery latency p99 threshold (100)
//   FANOUT_MAX_LOST     lost publications allowed, over all subscribers (0)
// plus the HERALD_* settings of lib/herald.js.
//
// A k6 VU per subscriber costs a few MB; on a 2-core machine the k6 side,
// not the hub, is usually the first to saturate: watch herald_hub_latency
// (hub accept → subscriber JS) against herald_delivery_latency.

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

const SUBSCRIBERS = envInt('FANOUT_SUBSCRIBERS', 200);
const RATE = envNum('FANOUT_RATE', 20);
const BATCH = Math.max(1, envInt('FANOUT_BATCH', 1));
const DURATION_MS = parseDuration(__ENV.FANOUT_DURATION || '30s');
const CONNECT_MS = __ENV.FANOUT_CONNECT ? parseDuration(__ENV.FANOUT_CONNECT) : 5000 + 2 * SUBSCRIBERS;
const P99_MS = envNum('FANOUT_P99_MS', 100);
const MAX_LOST = envInt('FANOUT_MAX_LOST', 0);
const GRACE_MS = 10000;
const SUBSCRIBER_MS = CONNECT_MS + DURATION_MS + GRACE_MS;

export const options = {
  summaryTrendStats,
  setupTimeout: '30s',
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      exec: 'subscriber',
      vus: SUBSCRIBERS,
      iterations: 1,
      maxDuration: ms(SUBSCRIBER_MS + 30000),
      gracefulStop: '10s',
    },
    publisher: {
      executor: 'per-vu-iterations',
      exec: 'publisher',
      vus: 1,
      iterations: 1,
      startTime: ms(CONNECT_MS),
      maxDuration: ms(DURATION_MS + 30000),
      gracefulStop: '10s',
    },
  },
  thresholds: {
    herald_connect_success: ['rate==1'],
    herald_subscribe_success: ['rate==1'],
    herald_delivery_latency: [`p(99)<${P99_MS}`],
    herald_messages_lost: [`count<=${MAX_LOST}`],
    herald_messages_duplicated: ['count==0'],
    herald_messages_received: ['count>0'],
    herald_unexpected_closes: ['count==0'],
    herald_publish_errors: ['count==0'],
  },
};

export function setup() {
  assertReady();
  const id = runId();
  return { channel: `k6.fanout.${id}`, userPrefix: `k6-fanout-${id}` };
}

export function subscriber(data) {
  const start = exec.scenario.startTime;
  const index = exec.scenario.iterationInTest;
  const sub = new Subscriber({
    user: `${data.userPrefix}-${index}`,
    channels: [data.channel],
    deadline: start + SUBSCRIBER_MS,
    strictFromMs: start + CONNECT_MS,
    reconnect: false,
    onDone: (s) => {
      check(s, {
        'fanout subscriber subscribed before publishing': (x) => x.tracker.strictStart,
        'fanout subscriber lost no publication': (x) => x.totals.lost === 0,
        'fanout subscriber saw the end marker': (x) => x.endSeen,
      });
    },
  });
  // Spread connection attempts over the first half of the connect window.
  setTimeout(() => sub.start(), Math.random() * (CONNECT_MS / 2));
}

export function publisher(data) {
  runPublisher({ channels: [data.channel], rate: RATE, durationMs: DURATION_MS, batch: BATCH });
}

export function handleSummary(data) {
  const seconds = DURATION_MS / 1000;
  const received = stat(data, 'herald_messages_received', 'count') || 0;
  const expected = stat(data, 'herald_expected_deliveries', 'count') || 0;
  const published = stat(data, 'herald_published', 'count') || 0;
  const lost = stat(data, 'herald_messages_lost', 'count') || 0;
  const p50 = stat(data, 'herald_delivery_latency', 'med');
  const p99 = stat(data, 'herald_delivery_latency', 'p(99)');
  const lines = [
    `config: ${SUBSCRIBERS} subscribers on one channel, ${RATE} publications/s in batches of ${BATCH} for ${seconds}s`,
    `publications: ${published} (${(published / seconds).toFixed(1)}/s), mean fan-out ${published ? (expected / published).toFixed(1) : '-'} subscribers each`,
    `deliveries: ${received} in ${seconds}s = ${(received / seconds).toFixed(0)}/s; ${expected ? ((100 * received) / expected).toFixed(3) : '-'}% of the ${expected} the hub reported; ${lost} lost`,
    `delivery latency: median ${p50 === undefined ? '-' : p50.toFixed(1)} ms, p99 ${p99 === undefined ? '-' : p99.toFixed(1)} ms`,
  ];
  return report(data, `herald fanout: ${SUBSCRIBERS} subscribers x ${RATE}/s`, lines);
}
