// herald live demo: a price ticker and a shipment feed on one WebSocket.
//
// Query parameters: token=<jwt> (mint one with `herald token --user demo`),
// url=<ws url> (default: same origin /ws), format=json|msgpack.
// Feed it with examples/browser/feed.mjs, or POST to /api/v1/publish.

import { Herald } from './herald.js';

const params = new URLSearchParams(location.search);
const token = params.get('token') || undefined;
const format = params.get('format') === 'msgpack' ? 'msgpack' : 'json';
const SYMBOLS = ['BTC', 'ETH', 'SOL'];
const TRACKING_CHANNEL = 'tracking.demo';
const MAX_TRACKING_ROWS = 30;
const MAX_LOG_ROWS = 60;
const SPARK_POINTS = 40;
const RATE_WINDOW_MS = 3000;

const $ = (selector) => document.querySelector(selector);
const priceFormat = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const clock = (ms) => new Date(ms).toLocaleTimeString('en-GB', { hour12: false });

const herald = new Herald({
  url: params.get('url') || undefined,
  token,
  format,
  reconnect: { baseMs: 500, maxMs: 5000 },
});

// For tests and the console: the client and every state transition.
const transitions = [];
window.heraldDemo = { herald, transitions };

// ------------------------------------------------------------------ connection panel

$('#endpoint').textContent = herald.url;
$('#endpoint').title = herald.url;
$('#format').textContent = format;
const httpOrigin = herald.url.replace(/^ws/, 'http').replace(/\/ws(\?.*)?$/, '');
$('#curl').textContent = $('#curl').textContent.replace('http://HOST', httpOrigin);

function log(text, kind = '') {
  const li = document.createElement('li');
  li.textContent = `${clock(Date.now())}  ${text}`;
  if (kind) li.className = kind;
  const list = $('#log');
  list.prepend(li);
  while (list.children.length > MAX_LOG_ROWS) list.lastElementChild.remove();
}

function hint(text) {
  $('#hint').hidden = !text;
  $('#hint').textContent = text || '';
}

const CLOSE_HINTS = {
  4005: 'The token expired. Mint a new one (herald token --user demo) and reload with ?token=…',
  4500: 'The token was refused. Mint one with the hub’s secret: herald token --user demo',
  4501: 'This hub does not accept anonymous connections: add ?token=<jwt> to the URL (herald token --user demo).',
  4504: 'The server disconnected this user.',
};

const CLOSE_NAMES = {
  1000: 'normal',
  1001: 'going away',
  1005: 'no status',
  1006: 'connection lost',
  1011: 'server error',
  1012: 'service restart',
  4000: 'internal error',
  4001: 'slow consumer',
  4002: 'heartbeat timeout',
  4003: 'auth timeout',
  4004: 'connection limit',
  4005: 'token expired',
  4500: 'invalid token',
  4501: 'forbidden',
  4502: 'protocol violation',
  4503: 'message too large',
  4504: 'kicked',
};

herald.onStateChange((state, info) => {
  transitions.push({ state, code: info.code, at: Date.now() });
  const pill = $('#state');
  pill.textContent = state;
  pill.dataset.state = state;
  $('#toggle').textContent = state === 'disconnected' && !info.willReconnect ? 'Connect' : 'Disconnect';
  if (state === 'connected') {
    const w = info.welcome;
    $('#user').textContent = w.user_id ?? 'anonymous';
    $('#node').textContent = w.node_id;
    $('#conn').textContent = w.conn_id;
    $('#conn').title = w.conn_id;
    $('#reconnects').textContent = herald.stats.reconnects;
    log(info.reconnected ? `reconnected (${w.conn_id}), resubscribing` : `connected as ${w.user_id ?? 'anonymous'} (${w.conn_id})`, 'ok');
    hint('');
    measureLatency();
  } else if (state === 'disconnected') {
    const closeText = `${info.code} ${info.reason || CLOSE_NAMES[info.code] || ''}`.trim();
    $('#close').textContent = closeText;
    $('#close').title = closeText;
    $('#latency').textContent = '—';
    log(
      info.willReconnect
        ? `closed ${closeText}; retry in ${info.delayMs} ms`
        : `closed ${closeText}; not reconnecting`,
      'err',
    );
    if (!info.willReconnect && info.code !== 1000) hint(CLOSE_HINTS[info.code] ?? `Disconnected for good (${closeText}).`);
  } else if (info.attempt === 0) {
    log(`connecting to ${herald.url}`);
  }
});

herald.onError((err) => log(`error ${err.code}: ${err.reason}`, 'err'));

// Channels with history (a namespace with `history_size`, e.g. tracking.* on a Redis-engine
// hub): after a reconnect herald.js resubscribes from the last offset and the hub replays
// what was missed. When it cannot, the missed updates are gone: say so.
herald.onRecoveryFailed(({ channel, since, position }) => {
  log(`${channel}: updates after offset ${since.offset} could not be recovered (now at ${position?.offset ?? '?'}); reload for the current state`, 'err');
  hint(`Some ${channel} updates were missed while disconnected; reload the page for the current state.`);
});
herald.onGap(({ channel, from, to }) => log(`${channel}: gap notice${from != null ? ` (offsets ${from}–${to})` : ''}`, 'err'));

$('#toggle').addEventListener('click', () => {
  if (herald.state === 'disconnected' && $('#toggle').textContent === 'Connect') {
    herald.connect();
  } else {
    herald.close('closed from the demo page');
  }
});

// Latency: an application ping every 2 s.
async function measureLatency() {
  if (herald.state !== 'connected') return;
  try {
    const ms = await herald.ping();
    $('#latency').textContent = `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  } catch {
    /* disconnected meanwhile */
  }
}
setInterval(measureLatency, 2000);

// Messages per second over a sliding window.
const arrivals = [];
function updateRate() {
  const cutoff = performance.now() - RATE_WINDOW_MS;
  while (arrivals.length && arrivals[0] < cutoff) arrivals.shift();
  $('#rate').textContent = (arrivals.length / (RATE_WINDOW_MS / 1000)).toFixed(1);
}
setInterval(updateRate, 500);

herald.on('*', '*', () => {
  arrivals.push(performance.now());
  $('#received').textContent = herald.stats.pushes;
});

// ------------------------------------------------------------------ prices

const history = new Map(SYMBOLS.map((s) => [s, []]));

function renderPrice(symbol, data, meta) {
  const card = document.querySelector(`#prices [data-symbol="${symbol}"]`);
  if (!card) return;
  const price = Number(data.price);
  if (!Number.isFinite(price)) return;
  const el = card.querySelector('.price');
  const previous = el.dataset.value === '' ? null : Number(el.dataset.value);
  el.textContent = `$${priceFormat.format(price)}`;
  el.dataset.value = String(price);

  const change = Number(data.change);
  const changeEl = card.querySelector('.change');
  if (Number.isFinite(change)) {
    changeEl.textContent = `${change >= 0 ? '▲ +' : '▼ '}${change.toFixed(2)}%`;
    changeEl.className = `change ${change >= 0 ? 'up' : 'down'}`;
  }

  if (previous !== null && previous !== price) {
    card.classList.remove('flash-up', 'flash-down');
    void card.offsetWidth; // restart the transition
    card.classList.add(price > previous ? 'flash-up' : 'flash-down');
    clearTimeout(card.flashTimer);
    card.flashTimer = setTimeout(() => card.classList.remove('flash-up', 'flash-down'), 600);
  }

  const points = history.get(symbol);
  points.push(price);
  if (points.length > SPARK_POINTS) points.shift();
  const min = Math.min(...points);
  const max = Math.max(...points);
  const span = max - min || 1;
  const step = 100 / (SPARK_POINTS - 1);
  const offset = SPARK_POINTS - points.length;
  card.querySelector('polyline').setAttribute(
    'points',
    points.map((p, i) => `${((offset + i) * step).toFixed(2)},${(36 - ((p - min) / span) * 32).toFixed(2)}`).join(' '),
  );

  const sent = meta.ts ?? data.ts;
  const delay = sent ? Math.max(0, Date.now() - sent) : null;
  card.querySelector('.meta').textContent =
    `seq ${data.seq ?? '—'} · ${clock(sent ?? Date.now())}` + (delay !== null ? ` · delivered in ${delay} ms` : '');
}

for (const symbol of SYMBOLS) {
  herald.on(`prices.${symbol}`, 'price_update', (data, meta) => renderPrice(data?.symbol ?? symbol, data ?? {}, meta));
}

// ------------------------------------------------------------------ tracking

const STATUS_LABELS = {
  created: 'created',
  picked_up: 'picked up',
  in_transit: 'in transit',
  out_for_delivery: 'out for delivery',
  delivered: 'delivered',
  exception: 'exception',
};

herald.on(TRACKING_CHANNEL, 'shipment_update', (data, meta) => {
  if (!data || typeof data !== 'object') return;
  const li = document.createElement('li');
  const ship = document.createElement('span');
  ship.className = 'ship';
  ship.textContent = String(data.shipment ?? '?');
  const status = document.createElement('span');
  status.className = 'status';
  status.dataset.status = String(data.status ?? '');
  status.textContent = STATUS_LABELS[data.status] ?? String(data.status ?? '?');
  const place = document.createElement('span');
  place.className = 'loc';
  place.textContent = String(data.location ?? '');
  const time = document.createElement('time');
  const at = data.ts ?? meta.ts ?? Date.now();
  time.dateTime = new Date(at).toISOString();
  time.textContent = clock(at);
  li.append(ship, status, place, time);
  li.dataset.shipment = ship.textContent;
  if (meta.offset != null) li.dataset.offset = String(meta.offset);
  const list = $('#tracking');
  list.prepend(li);
  while (list.children.length > MAX_TRACKING_ROWS) list.lastElementChild.remove();
  $('#tracking-empty').hidden = true;
});

// ------------------------------------------------------------------ go

if (!token) hint('No token in the URL: trying anonymously. Add ?token=<jwt> (herald token --user demo).');
for (const channel of [...SYMBOLS.map((s) => `prices.${s}`), TRACKING_CHANNEL]) {
  herald.subscribe(channel).then(
    () => log(`subscribed ${channel}`),
    () => {}, // refusals reach onError, closes onStateChange
  );
}
herald.connect();
