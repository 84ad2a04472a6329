//! Herald: a real-time WebSocket push hub.
//!
//! # Layout (docs/ARCHITECTURE.md has the whole picture)
//!
//! ```text
//! protocol/   native protocol v1 as data: messages, codes, names,   (serde, serde_json, rmp-serde,
//!             publication data, JSON|MessagePack codec               bytes, base64)
//! engine/     mod.rs: Engine, Dispatcher, NodeRegistry; `[engine]`     (protocol)
//!             memory.rs, redis/: the engines                         (+ redis)
//! core/       client.rs: one connection's life, any transport;      (protocol, the engine trait,
//!             hub, registry, outbox, delivery: fan-out, backpressure tokio, dashmap, governor)
//! auth/       JWT, login sessions; ConnectionAuth for the core       (core, protocol, jsonwebtoken)
//! native/     GET /ws: the RFC 6455 handshake and NativeTransport    (core, protocol, net, tungstenite)
//! socketio/   /socket.io/: Engine.IO v4 (polling, WebSocket, upgrade) (core, protocol, net, tungstenite)
//!             and Socket.IO v5 packets, JSON and msgpack parsers
//! http/       API, /health /ready /metrics, the accept loop          (core, auth, engine trait, net, axum, hyper)
//! net/        client IP, origin allow-list, the WebSocket handshake, (core's DirectWrite, http types,
//!             the socket under an upgraded WebSocket (wire.rs)        tungstenite's accept key, tokio)
//! redis_conn  the Redis command connection with deadlines, shared    (redis)
//!             by the Redis engine and the Redis session store
//! serde_text  settings that must stay text (secrets)                  (serde)
//! telemetry   tracing setup and `[log]`; metrics.rs: metric names and the exporter
//! app.rs      composition root: picks the engine and session store, wires everything
//! config.rs   defaults < TOML < HERALD_* env < flags; aggregates each module's own settings
//! ```
//!
//! # Dependency rules
//!
//! protocol ← engine trait ← core ← transports (`native`, `socketio`), `http`, `auth` ← `app`;
//! the engines (`engine/memory.rs`, `engine/redis/`) use only the engine trait
//! and `protocol`, and plug into the core through the trait.
//! The core never names axum, hyper, tungstenite, redis, jsonwebtoken or an
//! encoder; transports and the HTTP API never name each other; only `app.rs`
//! names concrete engines and stores. `tests/it/architecture.rs` parses the
//! source and fails the build when a file breaks a rule or modules form a
//! cycle.
//!
//! # The hot path
//!
//! A publication reaches [`engine::Dispatcher::dispatch`] (the
//! [`core::Registry`]), becomes one shared [`core::Delivery`], and is pushed
//! into each subscriber's [`core::Outbox`] without waiting. Each connection's
//! task ([`core::ClientContext::serve`]) drains its whole outbox and hands the
//! batch to its transport, which writes every frame (encoded once per wire
//! format across all recipients) and flushes once.

pub mod app;
pub mod auth;
pub mod config;
pub mod core;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod native;
pub mod net;
pub mod protocol;
pub mod redis_conn;
pub mod serde_text;
pub mod shutdown;
pub mod socketio;
pub mod telemetry;
