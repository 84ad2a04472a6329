#!/usr/bin/env node
// Feeds the /demo page: random-walk prices on prices.{BTC,ETH,SOL} and shipment
// updates on tracking.demo, published through herald's HTTP API (batch endpoint).
//
//   node examples/browser/feed.mjs [--url http://127.0.0.1:8080] [--api-key KEY] [--interval-ms 500]
//
// Environment: HERALD_URL, HERALD_API_KEY (default: the development key). Node 18+.

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
};
const base = arg('url', process.env.HERALD_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
const apiKey = arg('api-key', process.env.HERALD_API_KEY ?? 'herald-insecure-development-api-key');
const intervalMs = Number(arg('interval-ms', 500));

const prices = { BTC: 64250, ETH: 3120, SOL: 148.5 };
const opens = { ...prices };
const seq = { BTC: 0, ETH: 0, SOL: 0 };
const ROUTE = ['Shenzhen', 'Hong Kong', 'Singapore', 'Suez Canal', 'Rotterdam', 'Duisburg', 'Frankfurt', 'Berlin'];
const shipments = Array.from({ length: 5 }, (_, i) => ({ id: `SHP-${1001 + i}`, leg: Math.floor(Math.random() * 3), status: 'created' }));

function priceTick(symbol) {
  const p = prices[symbol] * (1 + (Math.random() - 0.5) * 0.004);
  prices[symbol] = Math.round(p * 100) / 100;
  seq[symbol] += 1;
  return {
    channel: `prices.${symbol}`,
    event: 'price_update',
    data: {
      symbol,
      price: prices[symbol],
      change: Math.round(((prices[symbol] - opens[symbol]) / opens[symbol]) * 10000) / 100,
      seq: seq[symbol],
      ts: Date.now(),
    },
  };
}

function shipmentTick() {
  const s = shipments[Math.floor(Math.random() * shipments.length)];
  if (s.status === 'delivered') Object.assign(s, { leg: 0, status: 'created', id: `SHP-${Number(s.id.slice(4)) + 10}` });
  else if (s.status === 'created') s.status = 'picked_up';
  else if (s.leg < ROUTE.length - 2) Object.assign(s, { leg: s.leg + 1, status: Math.random() < 0.05 ? 'exception' : 'in_transit' });
  else s.status = s.status === 'out_for_delivery' ? 'delivered' : 'out_for_delivery';
  return {
    channel: 'tracking.demo',
    event: 'shipment_update',
    data: { shipment: s.id, status: s.status, location: ROUTE[s.leg], ts: Date.now() },
  };
}

let ticks = 0;
async function tick() {
  const publications = Object.keys(prices).map(priceTick);
  if (ticks++ % 4 === 0) publications.push(shipmentTick());
  try {
    const res = await fetch(`${base}/api/v1/publish/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ publications }),
    });
    if (!res.ok) console.error(`publish: HTTP ${res.status} ${await res.text()}`);
  } catch (err) {
    console.error(`publish: ${err.cause?.code ?? err.message} (is herald running at ${base}?)`);
  }
}

console.log(`feeding ${base} every ${intervalMs} ms; Ctrl-C to stop`);
setInterval(tick, intervalMs);
tick();
