// The seed app's frontend socket service, as an app would write it with socket.io-client 4.8
// against herald: the three calls its components make (connect, subscribe, on), nothing
// herald-specific beyond the `subscribe` event and its ack. Used by seed.test.mjs.
//
//   const service = createSocketService('https://push.example.com');
//   await service.connect(authToken);
//   await service.subscribe(['prices', 'notifications']);
//   service.on('price_update', (data) => render(data));

import { io } from 'socket.io-client';

/** A failed `subscribe`: herald's ack `{ok: false, code, reason, channel?}`. */
export class SubscribeError extends Error {
  constructor(ack) {
    super(`subscribe failed: ${ack.reason} (${ack.code}${ack.channel ? `, ${ack.channel}` : ''})`);
    this.code = ack.code;
    this.channel = ack.channel;
  }
}

/**
 * @param {string} url herald's base URL
 * @param {object} [options] extra socket.io-client options (e.g. transports)
 */
export function createSocketService(url, options = {}) {
  let socket = null;
  return {
    get socket() {
      return socket;
    },

    /** `io(url, { auth: { token } })`; resolves on `connect`, rejects on `connect_error`. */
    connect(authToken) {
      socket = io(url, { ...options, auth: { token: authToken } });
      return new Promise((resolve, reject) => {
        const onConnect = () => {
          socket.off('connect_error', onError);
          resolve(socket);
        };
        const onError = (err) => {
          socket.off('connect', onConnect);
          reject(err);
        };
        socket.once('connect', onConnect);
        socket.once('connect_error', onError);
      });
    },

    /** `socket.emit('subscribe', channels, ack)`; resolves on `{ok: true}`. */
    subscribe(channels) {
      return new Promise((resolve, reject) => {
        socket.emit('subscribe', channels, (ack) => (ack && ack.ok ? resolve(ack) : reject(new SubscribeError(ack ?? {}))));
      });
    },

    /** `socket.on(event, cb)`; returns a function that removes the handler. */
    on(event, callback) {
      socket.on(event, callback);
      return () => socket.off(event, callback);
    },

    disconnect() {
      socket?.disconnect();
    },
  };
}
