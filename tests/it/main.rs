//! Integration tests: real WebSocket clients over TCP against hubs on ephemeral ports.
//! One test binary (faster to link), one module per feature.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
#![allow(
    clippy::print_stderr,
    reason = "tests report measured figures on stderr (`--nocapture`)"
)]

mod helpers;
mod in_process;
mod redis_server;
mod sessions;

mod api;
mod architecture;
mod auth;
mod backpressure;
mod cli;
mod data;
mod direct_writes;
mod engine_conformance;
mod history;
mod history_kill;
mod history_redis;
mod http_limits;
mod lifecycle;
mod logging;
mod metrics;
mod protocol;
mod pubsub;
mod rate_limits;
mod redis_cluster_faults;
mod redis_faults;
mod redis_nodes;
mod socketio;
