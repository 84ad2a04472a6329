// Smoke test: a few subscribers on one channel, one HTTP publisher.
// Short (about 10 s) and strict: any failed connection, refused
// subscription, lost or duplicated publication, unexpected close or slow
// delivery fails the run. k6/run-smoke.sh starts a hub and runs this.
//
//   HERALD_URL=http://127.0.0.1:8080 k6 run k6/smoke.js
//
// Environment (all optional): SMOKE_VUS (5), SMOKE_RATE publications/s (20),
// SMOKE_DURATION publish time (6s), SMOKE_P99_MS (250), plus the HERALD_*
// settings of lib/herald.js.

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
  summaryTrendStats,
} from './lib/herald.js';

const VUS = envInt('SMOKE_VUS', 5);
const RATE = envNum('SMOKE_RATE', 20);
const PUBLISH_MS = parseDuration(__ENV.SMOKE_DURATION || '6s');
const P99_MS = envNum('SMOKE_P99_MS', 250);
// Subscribers connect first; the publisher starts once they had time to subscribe.
const PUBLISH_START_MS = 2000;
// After the end marker is due, how long a subscriber still waits for it.
const GRACE_MS = 5000;
const SUBSCRIBER_MS = PUBLISH_START_MS + PUBLISH_MS + GRACE_MS;

export const options = {
  summaryTrendStats,
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      exec: 'subscriber',
      vus: VUS,
      iterations: 1,
      maxDuration: ms(SUBSCRIBER_MS + 5000),
      gracefulStop: '3s',
    },
    publisher: {
      executor: 'per-vu-iterations',
      exec: 'publisher',
      vus: 1,
      iterations: 1,
      startTime: ms(PUBLISH_START_MS),
      maxDuration: ms(PUBLISH_MS + 5000),
      gracefulStop: '3s',
    },
  },
  thresholds: {
    // Every connection reaches `welcome`, every subscribe is acknowledged.
    herald_connect_success: ['rate==1'],
    herald_subscribe_success: ['rate==1'],
    // Every per-VU check (received > 0, nothing lost, end marker seen) and every publish.
    checks: ['rate==1'],
    herald_messages_received: ['count>0'],
    herald_messages_lost: ['count==0'],
    herald_messages_duplicated: ['count==0'],
    herald_unexpected_closes: ['count==0'],
    herald_publish_errors: ['count==0'],
    herald_delivery_latency: [`p(99)<${P99_MS}`],
  },
};

export function setup() {
  assertReady();
  const id = runId();
  return { channel: `k6.smoke.${id}`, userPrefix: `k6-smoke-${id}` };
}

export function subscriber(data) {
  const start = exec.scenario.startTime;
  const sub = new Subscriber({
    user: `${data.userPrefix}-${exec.vu.idInTest}`,
    channels: [data.channel],
    deadline: start + SUBSCRIBER_MS,
    // Subscribed before the publisher starts: every publication must arrive, from seq 1.
    strictFromMs: start + PUBLISH_START_MS,
    reconnect: false,
    onDone: (s) => {
      check(s, {
        'subscriber connected': (x) => x.connections === 1,
        'subscriber received publications': (x) => x.totals.received > 0,
        'subscriber lost no publication': (x) => x.totals.lost === 0,
        'subscriber saw the end marker': (x) => x.endSeen,
        'subscriber closed only on purpose': (x) => Object.keys(x.unexpected).length === 0,
      });
    },
  });
  sub.start();
}

export function publisher(data) {
  runPublisher({ channels: [data.channel], rate: RATE, durationMs: PUBLISH_MS });
}

export function handleSummary(data) {
  return report(data, `herald smoke: ${VUS} subscribers, ${RATE}/s for ${PUBLISH_MS / 1000}s`);
}
