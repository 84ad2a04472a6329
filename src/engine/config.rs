//! `[engine]`: which engine carries publications between nodes, and the
//! Redis settings (connection, deadlines, health checks) of the `redis` one.
//! Lives with the engines it configures; `config.rs` only aggregates it.

use std::time::Duration;

use serde::Deserialize;

/// Which engine carries publications between nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// One node, no other service.
    #[default]
    Memory,
    /// Many nodes sharing a Redis server or Redis Cluster.
    Redis,
}

/// `[engine]`
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `memory` (default) or `redis`.
    pub kind: EngineKind,
    /// Redis URL (`redis://` or `rediss://` for TLS; password and db from the URL).
    pub url: String,
    /// Redis Cluster seed URLs; when set, herald uses the cluster and sharded pub/sub.
    pub cluster_urls: Vec<String>,
    /// Password, overriding the URL's (give it through `HERALD_ENGINE__PASSWORD`).
    #[serde(deserialize_with = "crate::serde_text::optional_text")]
    pub password: Option<String>,
    /// Prefix of herald's Redis channels and keys: channel `c` is `<prefix>c`.
    pub prefix: String,
    /// Pub/sub connections (each with its own reader task) channels are spread over.
    pub reader_shards: usize,
    /// How long a channel stays subscribed after its last local subscriber left, ms.
    pub unsubscribe_linger_ms: u64,
    /// Event name given to raw (non-envelope) payloads published to Redis.
    pub default_event: String,
    /// Whether `/ready` reports 503 while the engine is disconnected.
    pub ready_requires_connection: bool,
    /// First reconnect delay, ms (doubles up to `reconnect_max_ms`, with full jitter).
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, ms.
    pub reconnect_max_ms: u64,
    /// Deadline of every Redis command (publish, subscribe, unsubscribe,
    /// session store, node registry), ms.
    pub command_timeout_ms: u64,
    /// Deadline of opening a Redis connection (handshake included), ms.
    pub connect_timeout_ms: u64,
    /// How often each pub/sub reader sends a health-check PING, ms.
    pub ping_interval_ms: u64,
    /// How long a reader waits for a PING reply before it declares Redis
    /// down, ms. A hung Redis is detected within `ping_interval_ms + ping_timeout_ms`.
    pub ping_timeout_ms: u64,
    /// How long an idempotency key of a publish is remembered, ms.
    pub idempotency_window_ms: u64,
    /// How often this node records its stats in Redis for `/api/v1/stats`, ms.
    pub announce_interval_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            kind: EngineKind::Memory,
            url: "redis://127.0.0.1:6379".into(),
            cluster_urls: Vec::new(),
            password: None,
            prefix: "herald:".into(),
            reader_shards: 4,
            unsubscribe_linger_ms: 2000,
            default_event: "message".into(),
            ready_requires_connection: true,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5000,
            command_timeout_ms: 2000,
            connect_timeout_ms: 1000,
            ping_interval_ms: 1000,
            ping_timeout_ms: 2000,
            idempotency_window_ms: 300_000,
            announce_interval_ms: 5000,
        }
    }
}

impl EngineConfig {
    /// What a Redis connection needs of these settings.
    pub fn redis(&self) -> crate::redis_conn::RedisSettings {
        crate::redis_conn::RedisSettings {
            url: self.url.clone(),
            cluster_urls: self.cluster_urls.clone(),
            password: self.password.clone(),
            command_timeout: self.command_timeout(),
            connect_timeout: self.connect_timeout(),
            reconnect: (
                Duration::from_millis(self.reconnect_min_ms.max(1)),
                Duration::from_millis(self.reconnect_max_ms.max(1)),
            ),
        }
    }

    /// Deadline of every Redis command.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// The deadline of opening a Redis connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The longest a hung Redis goes unnoticed by a pub/sub reader.
    pub fn detection_bound(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms + self.ping_timeout_ms)
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("cluster_urls", &self.cluster_urls)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .field("reader_shards", &self.reader_shards)
            .finish_non_exhaustive()
    }
}
