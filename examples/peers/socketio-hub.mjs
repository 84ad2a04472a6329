// A Socket.IO 4.8 server as its users run it behind a load balancer: the
// Redis adapter (a pub and a sub client) shares rooms between nodes. Clients
// emit("subscribe", channelOrArray, ack) to join rooms; a pattern
// subscription on `herald:*` turns each `PUBLISH herald:<channel>
// {"event":…,"data":…}` into io.to(channel).emit(event, data), so the same
// publisher drives this server and herald's Redis engine.
//   node socketio-hub.mjs [port] [redis-url]      (or PORT, REDIS_URL, HOST, PREFIX)
// With several nodes, each one receives every herald:* message: set
// EMIT=local so that each node emits to its own sockets only (io.local).
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const port = Number(process.argv[2] ?? process.env.PORT ?? 3000);
const redisUrl = process.argv[3] ?? process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const host = process.env.HOST ?? "127.0.0.1";
const prefix = process.env.PREFIX ?? "herald:";

const pubClient = createClient({ url: redisUrl });
const subClient = pubClient.duplicate();
const ingress = pubClient.duplicate();
await Promise.all([pubClient.connect(), subClient.connect(), ingress.connect()]);

const io = new Server({ adapter: createAdapter(pubClient, subClient), serveClient: false });
io.on("connection", (socket) => {
  socket.on("subscribe", (channels, ack) => {
    socket.join(channels);
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("unsubscribe", (channels, ack) => {
    for (const c of [channels].flat()) socket.leave(c);
    if (typeof ack === "function") ack({ ok: true });
  });
});

const emitter = process.env.EMIT === "local" ? io.local : io;
await ingress.pSubscribe(`${prefix}*`, (message, channel) => {
  let envelope;
  try {
    envelope = JSON.parse(message);
  } catch {
    return; // not an envelope
  }
  emitter.to(channel.slice(prefix.length)).emit(envelope.event, envelope.data);
});

const http = createServer();
io.attach(http);
http.listen(port, host, () => {
  console.error(`socketio-hub: http://${host}:${port}/socket.io/, Redis ${redisUrl} ${prefix}*`);
});
