//! Herald: a real-time WebSocket push hub.
//!
//! # Layout
//!
//! ```text
//! protocol/   messages, codes, names, JSON|MessagePack codec      (serde, base64)
//! engine/     Engine trait + in-memory engine                      (protocol)
//! core/       Hub, Registry, Session, Outbox: fan-out, backpressure (protocol, engine trait, tokio, dashmap)
//! auth/       JWT verification and minting                         (jsonwebtoken)
//! native/     GET /ws: the protocol v1 connection task             (axum ws, core, auth)
//! http/       router, backend API, /health /ready /metrics, and    (axum, hyper, core)
//!             serve.rs: the accept loop (deadlines, pending caps, shutdown)
//! app.rs      composition root: picks the engine, wires everything
//! config.rs   defaults < TOML < HERALD_* env < flags
//! ```
//!
//! # Dependency rules
//!
//! `core` and `protocol` never import axum, tokio-tungstenite, redis or
//! jsonwebtoken; `tests/it/architecture.rs` fails the build if they do.
//! Engines and transports depend on the core, never the other way round,
//! and `app.rs` is the only module that picks implementations.
//!
//! # The hot path
//!
//! A publication reaches [`engine::Dispatcher::dispatch`] (the
//! [`core::Registry`]), becomes one shared [`protocol::SharedMessage`], and
//! is pushed into each subscriber's [`core::Outbox`] without waiting. Each
//! connection task drains its whole outbox, encodes nothing that another
//! recipient already encoded, writes every frame and flushes once.

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
pub mod shutdown;
pub mod telemetry;
