//! Metric names, and the Prometheus exporter behind `/metrics`.
//!
//! Names live here as constants so that code and docs/OPERATIONS.md agree;
//! the hub records through the `metrics` facade and never sees the exporter.
//! Every family, with its help text and a zero for each known label value, is
//! registered when the exporter is installed: dashboards and alerts see a
//! healthy node's zeros rather than "no data".

use std::{sync::Arc, time::Duration};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Open WebSocket connections (gauge).
pub const CONNECTIONS: &str = "herald_connections";
/// Connections accepted since start (counter).
pub const CONNECTIONS_OPENED: &str = "herald_connections_opened_total";
/// Channel subscriptions held by local connections (gauge).
pub const SUBSCRIPTIONS: &str = "herald_subscriptions";
/// Channels with at least one local subscriber (gauge).
pub const CHANNELS: &str = "herald_channels";
/// Publications accepted from the API or clients on this node (counter).
pub const MESSAGES_PUBLISHED: &str = "herald_messages_published_total";
/// Messages queued to local connections (counter).
pub const MESSAGES_DELIVERED: &str = "herald_messages_delivered_total";
/// Messages not delivered, by `reason` (counter).
pub const MESSAGES_DROPPED: &str = "herald_messages_dropped_total";
/// Connections closed because their queue overflowed (counter).
pub const SLOW_CONSUMER_DISCONNECTS: &str = "herald_slow_consumer_disconnects_total";
/// Connections closed by the server, by close `code` (counter).
pub const CLOSES: &str = "herald_closes_total";
/// Time to queue one publication to every local subscriber (histogram, seconds).
pub const FANOUT_DURATION: &str = "herald_fanout_duration_seconds";
/// Whether the engine can carry publications: 1 or 0 (gauge).
pub const ENGINE_CONNECTED: &str = "herald_engine_connected";

/// Requests refused by a rate limit or concurrency cap, by `limit` (counter).
pub const RATE_LIMITED: &str = "herald_rate_limited_total";
/// HTTP connections closed at accept because a pending-connection cap was
/// full, by `listener` and `reason` (counter).
pub const HTTP_CONNECTIONS_REFUSED: &str = "herald_http_connections_refused_total";
/// Reconnections of the engine's pub/sub connections (counter).
pub const ENGINE_RECONNECTS: &str = "herald_engine_reconnects_total";
/// Time to reconnect and resubscribe after losing the engine (histogram, seconds).
pub const ENGINE_RESUBSCRIBE_DURATION: &str = "herald_engine_resubscribe_duration_seconds";
/// Publish time to local receipt, for publications that carry `ts` (histogram, seconds).
pub const ENGINE_PUBSUB_LAG: &str = "herald_engine_pubsub_lag_seconds";
/// Whether one reader shard is connected: 1 or 0, by `shard` (gauge).
pub const ENGINE_SHARD_CONNECTED: &str = "herald_engine_shard_connected";
/// Time from Redis's last answer on a reader to declaring it down (histogram, seconds).
pub const ENGINE_DETECT_DURATION: &str = "herald_engine_detect_seconds";
/// Time a reader shard spent disconnected, per outage (histogram, seconds).
pub const ENGINE_DOWN_DURATION: &str = "herald_engine_disconnected_seconds";
/// Publishes answered "outcome unknown" (sent, no answer in time) (counter).
pub const PUBLISH_OUTCOME_UNKNOWN: &str = "herald_publish_outcome_unknown_total";
/// Publications not sent again because their idempotency key was seen (counter).
pub const PUBLISH_DUPLICATES_SUPPRESSED: &str = "herald_publish_duplicates_suppressed_total";
/// Whether the session store answered its last command or health check: 1 or 0 (gauge).
pub const SESSION_STORE_CONNECTED: &str = "herald_session_store_connected";
/// Subscriptions that asked to recover from a position, by `outcome`
/// (`recovered`, `failed`) (counter).
pub const RECOVERIES: &str = "herald_recoveries_total";
/// Publications delivered from a channel's stream rather than live:
/// recovery, latest value (counter).
pub const PUBLICATIONS_REPLAYED: &str = "herald_publications_replayed_total";
/// Publications the memory engine keeps in its streams, all channels (gauge).
pub const HISTORY_PUBLICATIONS: &str = "herald_history_publications";
/// Estimated bytes of the publications the memory engine keeps (gauge).
pub const HISTORY_BYTES: &str = "herald_history_bytes";
/// Channel streams the memory engine keeps (positions included) (gauge).
pub const HISTORY_STREAMS: &str = "herald_history_streams";
/// Publications dropped before the socket because their offset was already
/// delivered (counter).
pub const HISTORY_DUPLICATES_DROPPED: &str = "herald_history_duplicates_dropped_total";
/// Jumps in a channel's offsets seen on the live stream (lost pub/sub
/// messages), by `outcome` (`filled` from the stream, `signalled` by a gap
/// notice) (counter).
pub const HISTORY_GAPS: &str = "herald_history_gaps_total";

/// `reason` label of [`MESSAGES_DROPPED`]: the recipient's queue overflowed.
pub const DROP_SLOW_CONSUMER: &str = "slow_consumer";
/// `reason` label of [`MESSAGES_DROPPED`]: replaced by a newer latest-value message.
pub const DROP_CONFLATED: &str = "conflated";
/// `reason` label of [`MESSAGES_DROPPED`]: a publication from Redis exceeded `limits.max_data_size`.
pub const DROP_TOO_LARGE: &str = "too_large";
/// `reason` label of [`MESSAGES_DROPPED`]: a publication from Redis whose data not
/// every wire format can carry (too deep, or a number out of range).
pub const DROP_INVALID_DATA: &str = "invalid_data";
/// `reason` label of [`MESSAGES_DROPPED`]: the message could not be encoded for the
/// client's format; checked data makes this impossible, so any count is a bug.
pub const DROP_ENCODE_ERROR: &str = "encode_error";
/// `reason` label of [`MESSAGES_DROPPED`]: a publication whose event name
/// socket.io-client reserves (or `herald:*`), not delivered to a Socket.IO client.
pub const DROP_RESERVED_EVENT: &str = "reserved_event";
/// Socket.IO long-polling sessions open on this node (gauge).
pub const SOCKETIO_POLLING_SESSIONS: &str = "herald_socketio_polling_sessions";
/// `@socket.io/redis-emitter` messages read, by `outcome`: `delivered` or
/// why it was refused (counter).
pub const SOCKETIO_EMITTER_MESSAGES: &str = "herald_socketio_emitter_messages_total";
/// Every `outcome` label of [`SOCKETIO_EMITTER_MESSAGES`].
pub const EMITTER_OUTCOMES: [&str; 8] = [
    "delivered",
    "malformed",
    "packet_type",
    "namespace",
    "unsupported",
    "arguments",
    "name",
    "data",
];
/// Socket.IO connection state recoveries, by `outcome` (counter).
pub const SOCKETIO_RECOVERIES: &str = "herald_socketio_recoveries_total";

/// Every `reason` label of [`MESSAGES_DROPPED`].
pub const DROP_REASONS: [&str; 6] = [
    DROP_SLOW_CONSUMER,
    DROP_CONFLATED,
    DROP_TOO_LARGE,
    DROP_INVALID_DATA,
    DROP_ENCODE_ERROR,
    DROP_RESERVED_EVENT,
];

/// Why the Prometheus exporter could not be installed.
///
/// Cloneable (sources behind `Arc`) because the outcome of the one
/// installation is kept and handed to every later caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    /// The exporter refused a histogram's buckets, or another recorder is installed.
    #[error("{0}")]
    Exporter(#[source] Arc<BuildError>),
    /// The thread that folds histogram samples could not be started.
    #[error("{0}")]
    Upkeep(#[source] Arc<std::io::Error>),
}

impl From<BuildError> for MetricsError {
    fn from(err: BuildError) -> Self {
        Self::Exporter(Arc::new(err))
    }
}

/// Installs the Prometheus recorder for this process and returns its handle.
///
/// The recorder is global; installing twice (several hubs in one test
/// process) returns the first handle.
///
/// # Errors
/// [`MetricsError::Exporter`] if the histogram buckets are rejected (they
/// are not) or another recorder is installed; [`MetricsError::Upkeep`] if
/// the upkeep thread cannot be spawned.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: std::sync::OnceLock<Result<PrometheusHandle, MetricsError>> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(install_once).clone()
}

fn install_once() -> Result<PrometheusHandle, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(FANOUT_DURATION.to_owned()),
            &[
                0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(ENGINE_RESUBSCRIBE_DURATION.to_owned()),
            &[0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(ENGINE_DETECT_DURATION.to_owned()),
            &[0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(ENGINE_DOWN_DURATION.to_owned()),
            &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(ENGINE_PUBSUB_LAG.to_owned()),
            &[
                0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            ],
        )?
        .install_recorder()?;
    describe();
    register();
    let upkeep = handle.clone();
    // Histograms are folded into their buckets by upkeep; without it
    // their samples would pile up between scrapes.
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| MetricsError::Upkeep(Arc::new(e)))?;
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open WebSocket connections.");
    describe_counter!(CONNECTIONS_OPENED, "Connections accepted since start.");
    describe_gauge!(
        SUBSCRIPTIONS,
        "Channel subscriptions held by local connections."
    );
    describe_gauge!(CHANNELS, "Channels with at least one local subscriber.");
    describe_gauge!(
        SOCKETIO_POLLING_SESSIONS,
        "Socket.IO long-polling sessions open on this node."
    );
    describe_counter!(
        SOCKETIO_EMITTER_MESSAGES,
        "@socket.io/redis-emitter messages read, by outcome (delivered, or why refused)."
    );
    describe_counter!(
        SOCKETIO_RECOVERIES,
        "Socket.IO connection state recoveries asked for, by outcome (recovered, failed)."
    );
    describe_counter!(MESSAGES_PUBLISHED, "Publications accepted on this node.");
    describe_counter!(MESSAGES_DELIVERED, "Messages queued to local connections.");
    describe_counter!(MESSAGES_DROPPED, "Messages not delivered, by reason.");
    describe_counter!(
        SLOW_CONSUMER_DISCONNECTS,
        "Connections closed as slow consumers."
    );
    describe_counter!(CLOSES, "Connections closed by the server, by close code.");
    describe_histogram!(
        FANOUT_DURATION,
        Unit::Seconds,
        "Time to queue one publication to every local subscriber."
    );
    describe_gauge!(
        ENGINE_CONNECTED,
        "Whether the engine can carry publications."
    );
    describe_gauge!(
        ENGINE_SHARD_CONNECTED,
        "Whether one engine reader shard is connected."
    );
    describe_histogram!(
        ENGINE_DETECT_DURATION,
        Unit::Seconds,
        "Time from Redis's last answer on a reader to declaring it down."
    );
    describe_histogram!(
        ENGINE_DOWN_DURATION,
        Unit::Seconds,
        "Time a reader shard spent disconnected, per outage."
    );
    describe_counter!(
        PUBLISH_OUTCOME_UNKNOWN,
        "Publishes sent to Redis that got no answer in time (outcome unknown)."
    );
    describe_counter!(
        PUBLISH_DUPLICATES_SUPPRESSED,
        "Publications not sent again because their idempotency key was seen."
    );
    describe_gauge!(
        SESSION_STORE_CONNECTED,
        "Whether the session store answered its last command or health check."
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a rate limit or concurrency cap, by limit."
    );
    describe_counter!(
        ENGINE_RECONNECTS,
        "Reconnections of the engine's pub/sub connections."
    );
    describe_histogram!(
        ENGINE_RESUBSCRIBE_DURATION,
        Unit::Seconds,
        "Time to reconnect and resubscribe after losing the engine."
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "HTTP connections closed at accept because too many had not upgraded, by listener and reason."
    );
    describe_histogram!(
        ENGINE_PUBSUB_LAG,
        Unit::Seconds,
        "Publish time to local receipt, for publications that carry ts."
    );
    describe_counter!(
        RECOVERIES,
        "Subscriptions that asked to recover from a stream position, by outcome."
    );
    describe_counter!(
        PUBLICATIONS_REPLAYED,
        "Publications delivered from a channel's stream (recovery, latest value)."
    );
    describe_gauge!(
        HISTORY_PUBLICATIONS,
        "Publications kept in the memory engine's channel streams."
    );
    describe_gauge!(
        HISTORY_BYTES,
        "Estimated bytes of the publications kept in the memory engine's channel streams."
    );
    describe_gauge!(
        HISTORY_STREAMS,
        "Channel streams the memory engine keeps, positions included."
    );
    describe_counter!(
        HISTORY_DUPLICATES_DROPPED,
        "Publications dropped before the socket because their offset was already delivered."
    );
    describe_counter!(
        HISTORY_GAPS,
        "Offset jumps seen on a channel's live stream, by outcome (filled, signalled)."
    );
}

/// Creates every family and every known label value at zero.
///
/// Adds zero and never sets, so nothing that was already counted is reset.
fn register() {
    use crate::protocol::CloseCode;
    use metrics::{counter, gauge, histogram};
    for name in [
        CONNECTIONS,
        SUBSCRIPTIONS,
        CHANNELS,
        ENGINE_CONNECTED,
        SESSION_STORE_CONNECTED,
        SOCKETIO_POLLING_SESSIONS,
        HISTORY_PUBLICATIONS,
        HISTORY_BYTES,
        HISTORY_STREAMS,
    ] {
        gauge!(name).increment(0.0);
    }
    for name in [
        CONNECTIONS_OPENED,
        MESSAGES_PUBLISHED,
        MESSAGES_DELIVERED,
        SLOW_CONSUMER_DISCONNECTS,
        ENGINE_RECONNECTS,
        PUBLISH_OUTCOME_UNKNOWN,
        PUBLISH_DUPLICATES_SUPPRESSED,
        PUBLICATIONS_REPLAYED,
        HISTORY_DUPLICATES_DROPPED,
    ] {
        counter!(name).increment(0);
    }
    for outcome in ["recovered", "failed"] {
        counter!(SOCKETIO_RECOVERIES, "outcome" => outcome).increment(0);
    }
    for outcome in EMITTER_OUTCOMES {
        counter!(SOCKETIO_EMITTER_MESSAGES, "outcome" => outcome).increment(0);
    }
    for outcome in ["recovered", "failed"] {
        counter!(RECOVERIES, "outcome" => outcome).increment(0);
    }
    for outcome in ["filled", "signalled"] {
        counter!(HISTORY_GAPS, "outcome" => outcome).increment(0);
    }
    for name in [
        FANOUT_DURATION,
        ENGINE_RESUBSCRIBE_DURATION,
        ENGINE_PUBSUB_LAG,
        ENGINE_DETECT_DURATION,
        ENGINE_DOWN_DURATION,
    ] {
        // A histogram's series exists once its handle does; recording would add a sample.
        let _ = histogram!(name);
    }
    for reason in DROP_REASONS {
        counter!(MESSAGES_DROPPED, "reason" => reason).increment(0);
    }
    for code in CloseCode::SENT {
        counter!(CLOSES, "code" => code.as_u16().to_string()).increment(0);
    }
    // `herald_rate_limited_total{limit}` is registered by the core's
    // `RateLimits::new`, which owns the limit names.
    // Listener names and refusal reasons as `http::serve` labels them.
    for listener in ["main", "ops"] {
        for reason in ["pending_node", "pending_per_ip"] {
            counter!(HTTP_CONNECTIONS_REFUSED, "listener" => listener, "reason" => reason)
                .increment(0);
        }
    }
}
