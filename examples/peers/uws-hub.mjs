// A uWebSockets.js hub with the same Redis ingress as herald's Redis engine:
// `PUBLISH herald:<channel> <message>` reaches every WebSocket subscribed to
// <channel>, as is. Clients connect to ws://HOST:PORT/?channel=<name> (and
// may send {"subscribe":"<name>"} frames for more); there is no auth.
//   node uws-hub.mjs [port] [redis-url]   (or PORT, REDIS_URL; also HOST, PREFIX, IDLE_TIMEOUT)
import uWS from "uwebsockets";
import { createClient } from "redis";

const port = Number(process.argv[2] ?? process.env.PORT ?? 9001);
const redisUrl = process.argv[3] ?? process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const host = process.env.HOST ?? "127.0.0.1";
const prefix = process.env.PREFIX ?? "herald:";

const app = uWS.App().ws("/*", {
  idleTimeout: Number(process.env.IDLE_TIMEOUT ?? 120), // seconds; uWS pings idle sockets by itself
  maxBackpressure: 1 << 20,
  upgrade: (res, req, context) => {
    const channel = new URLSearchParams(req.getQuery() ?? "").get("channel");
    res.upgrade(
      { channel },
      req.getHeader("sec-websocket-key"),
      req.getHeader("sec-websocket-protocol"),
      req.getHeader("sec-websocket-extensions"),
      context,
    );
  },
  open: (ws) => {
    const { channel } = ws.getUserData();
    if (channel) ws.subscribe(channel);
  },
  message: (ws, message) => {
    try {
      const { subscribe } = JSON.parse(Buffer.from(message).toString());
      if (typeof subscribe === "string") ws.subscribe(subscribe);
    } catch {} // not a subscribe frame
  },
});

const sub = createClient({ url: redisUrl });
await sub.connect();
await sub.pSubscribe(`${prefix}*`, (message, channel) => {
  app.publish(channel.slice(prefix.length), message);
});

app.listen(host, port, (listening) => {
  if (!listening) {
    console.error(`uws-hub: cannot listen on ${host}:${port}`);
    process.exit(1);
  }
  console.error(`uws-hub: ws://${host}:${port}/?channel=<name>, Redis ${redisUrl} ${prefix}*`);
});
