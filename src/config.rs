//! Configuration: defaults, then a TOML file, then `HERALD_…` environment
//! variables, then command-line flags, each overriding the one before.
//!
//! Nested keys map to environment variables with `__` between sections:
//! `limits.max_subscriptions` is `HERALD_LIMITS__MAX_SUBSCRIPTIONS`.
//! `herald.example.toml` documents every key.

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format as _, Serialized, Toml},
};
use serde::Deserialize;

use crate::{
    auth::{AuthConfig, sessions::Lifetime},
    core::{ChannelRules, OutboxLimits, RateLimitConfig},
};

/// Shortest HMAC secret or API key accepted off loopback: 256 bits, as
/// RFC 7518 §3.2 asks of HS256 keys.
pub const MIN_KEY_BYTES: usize = 32;

/// The development API key used when none is configured. Never use it in production.
pub const DEV_API_KEY: &str = "herald-insecure-development-api-key";

/// All of herald's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listening address, node id, API key.
    pub server: ServerConfig,
    /// `[engine]`: how publications travel between nodes.
    pub engine: EngineConfig,
    /// `[auth]`: access token verification.
    pub auth: AuthConfig,
    /// `[limits]`: caps on what clients may do.
    pub limits: LimitsConfig,
    /// `[websocket]`: socket buffers and timeouts.
    pub websocket: WebSocketConfig,
    /// `[heartbeat]`: ping schedule.
    pub heartbeat: HeartbeatConfig,
    /// `[outbox]`: per-connection outbound queue caps.
    pub outbox: OutboxLimits,
    /// `[channels]`: permissions, client publishing and conflation by namespace.
    pub channels: ChannelRules,
    /// `[rate_limits]`: rates and concurrency caps per connection, IP, user and key.
    pub rate_limits: RateLimitConfig,
    /// `[shutdown]`: drain window and deadline.
    pub shutdown: ShutdownConfig,
    /// `[socketio]`: the Socket.IO endpoints.
    pub socketio: SocketIoConfig,
    /// `[log]`: format and filter.
    pub log: LogConfig,
}

/// `[server]`
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Node id; defaults to `$HOSTNAME` (the pod name on Kubernetes) or a random id.
    pub node_id: Option<String>,
    /// Key that guards `/api/v1/`.
    #[serde(deserialize_with = "text")]
    pub api_key: String,
    /// Largest HTTP API request body, in bytes.
    pub max_body_bytes: usize,
    /// Most publications in one batch request.
    pub max_batch: usize,
    /// Origins allowed to open WebSockets and call the browser-facing API
    /// (CORS); `*` matches any run of characters. Requests without an
    /// `Origin` header (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Take the client IP from the first `X-Forwarded-For` entry (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Longest a client may take to send a request's headers, in milliseconds.
    /// The clock starts when a connection opens and again whenever a
    /// keep-alive connection goes idle, so it is also the idle timeout.
    pub header_read_timeout_ms: u64,
    /// Longest a client may take to send a request's body, in milliseconds (408 after).
    pub body_read_timeout_ms: u64,
    /// Most HTTP connections this node holds that have not (yet) become
    /// WebSockets; connections past it are refused with a 503 and closed.
    pub max_pending_connections: usize,
    /// Most such connections from one peer IP address (the TCP peer, also
    /// behind a proxy); `0` turns the per-address cap off.
    pub max_pending_per_ip: usize,
    /// Optional second listener serving only `/health`, `/ready` and `/metrics`,
    /// so probes and scrapes never wait behind traffic on `listen`.
    pub ops_listen: Option<SocketAddr>,
    /// Most connections the ops listener holds at once.
    pub ops_max_connections: usize,
}

// By hand, so that printing a config never prints the API key.
impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("node_id", &self.node_id)
            .field("api_key", &"<redacted>")
            .field("allowed_origins", &self.allowed_origins)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            node_id: None,
            api_key: DEV_API_KEY.to_owned(),
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            allowed_origins: vec![
                "http://localhost".into(),
                "http://localhost:*".into(),
                "http://127.0.0.1".into(),
                "http://127.0.0.1:*".into(),
                "http://[::1]:*".into(),
            ],
            trust_forwarded_for: false,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_pending_connections: 1024,
            max_pending_per_ip: 64,
            ops_listen: None,
            ops_max_connections: 16,
        }
    }
}

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
    #[serde(deserialize_with = "optional_text")]
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
    /// Longest a publish may wait for Redis before failing, ms.
    pub command_timeout_ms: u64,
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
            announce_interval_ms: 5000,
        }
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

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most connections this node accepts.
    pub max_connections: usize,
    /// Most channels one connection may subscribe to (automatic channels not counted).
    pub max_subscriptions: usize,
    /// Largest inbound WebSocket message, in bytes.
    pub max_message_size: usize,
    /// Longest channel name, in bytes.
    pub max_channel_length: usize,
    /// Largest publication `data` (JSON text), in bytes.
    pub max_data_size: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_subscriptions: 128,
            max_message_size: 64 * 1024,
            max_channel_length: 128,
            max_data_size: 60 * 1024,
        }
    }
}

/// `[websocket]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Bytes read from the socket at a time; the buffer every connection keeps.
    pub read_buffer_size: usize,
    /// Outgoing bytes buffered before a write is forced.
    pub write_buffer_size: usize,
    /// Longest a write to one client may block before it is a slow consumer, in milliseconds.
    pub write_timeout_ms: u64,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            read_buffer_size: 512,
            write_buffer_size: 16 * 1024,
            write_timeout_ms: 10_000,
        }
    }
}

/// `[heartbeat]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// How often each connection is pinged, in milliseconds.
    pub interval_ms: u64,
    /// How long past the interval a silent connection is kept, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval_ms: 25_000,
            timeout_ms: 20_000,
        }
    }
}

/// `[socketio]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Serve Socket.IO (Engine.IO v4) clients.
    pub enabled: bool,
    /// Path of the endpoint for the default (JSON) parser.
    pub path: String,
    /// Path of the endpoint for `socket.io-msgpack-parser`.
    pub msgpack_path: String,
    /// Most long-polling sessions open at once on this node.
    pub max_polling_sessions: usize,
    /// Most bytes queued for one polling session between two long-polls.
    pub max_buffered_bytes: usize,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/socket.io/".into(),
            msgpack_path: "/socket.io-msgpack/".into(),
            max_polling_sessions: 10_000,
            max_buffered_bytes: 1024 * 1024,
        }
    }
}

impl SocketIoConfig {
    fn validate(&self, max_data_size: usize) -> Result<(), String> {
        let ours = |path: &str| {
            let trimmed = path.trim_end_matches('/');
            trimmed.len() > 1
                && path.starts_with('/')
                && !path.contains(['{', '}', '*', '?', '#'])
                && !["/ws", "/api", "/health", "/ready", "/metrics", "/demo"]
                    .iter()
                    .any(|taken| trimmed == *taken || trimmed.starts_with(&format!("{taken}/")))
        };
        if !ours(&self.path) || !ours(&self.msgpack_path) {
            return Err(
                "socketio.path and socketio.msgpack_path must start with `/`, name \
                        a path of their own (not /ws, /api, /health, /ready, /metrics, /demo) \
                        and hold no `{`, `}`, `*`, `?` or `#`"
                    .into(),
            );
        }
        if self.path.trim_end_matches('/') == self.msgpack_path.trim_end_matches('/') {
            return Err("socketio.path and socketio.msgpack_path must differ".into());
        }
        if self.max_polling_sessions == 0 {
            return Err("socketio.max_polling_sessions must be at least 1".into());
        }
        if self.max_buffered_bytes < max_data_size + 1024 {
            return Err("socketio.max_buffered_bytes must be ≥ limits.max_data_size + 1024".into());
        }
        Ok(())
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Window over which open connections are closed with 1012, in milliseconds.
    pub drain_ms: u64,
    /// Extra time after the drain window for connections to finish, in milliseconds.
    pub grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_ms: 10_000,
            grace_ms: 5_000,
        }
    }
}

/// Log output format.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `herald=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// A string setting that also accepts what the environment parser turns
/// into a number or boolean: a secret such as `123456` must stay text.
pub(crate) fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i128),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Text(s) => s,
        Scalar::Int(n) => n.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    })
}

pub(crate) fn optional_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    text(deserializer).map(Some)
}

/// Command-line overrides, applied last.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--node-id`
    pub node_id: Option<String>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

/// Why the configuration was refused; the text names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads defaults, then `file` (if any), then the environment, then `overrides`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} not found",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only HERALD_<SECTION>__<KEY> variables are settings. Others share the
        // prefix by accident, like the HERALD_SERVICE_HOST that Kubernetes
        // injects for a Service named `herald`, and must not break startup.
        figment = figment.merge(
            Env::prefixed("HERALD_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        if let Some(listen) = overrides.listen {
            figment = figment.merge(Serialized::default("server.listen", listen));
        }
        if let Some(node_id) = &overrides.node_id {
            figment = figment.merge(Serialized::default("server.node_id", node_id));
        }
        if let Some(format) = overrides.log_format {
            figment = figment.merge(Serialized::default("log.format", format));
        }
        let mut config: Self = figment.extract().map_err(|e| {
            ConfigError(
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        config.take_raw_secrets();
        config.validate()?;
        // `RUST_LOG` replaces `log.level` when set: check it here too, so that
        // `check-config` fails as start-up would, naming the variable.
        crate::telemetry::check(&config.log).map_err(ConfigError)?;
        Ok(config)
    }

    /// Reads secrets from the environment verbatim: the generic parser would
    /// turn `0123` into the number 123 and lose the leading zero.
    fn take_raw_secrets(&mut self) {
        let raw = |name: &str| std::env::var(name).ok();
        if let Some(key) = raw("HERALD_SERVER__API_KEY") {
            self.server.api_key = key;
        }
        if let Some(secret) = raw("HERALD_AUTH__SECRET") {
            self.auth.secret = secret;
        }
        if let Some(password) = raw("HERALD_ENGINE__PASSWORD") {
            self.engine.password = Some(password);
        }
    }

    /// Checks relations between keys that the types alone cannot.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError(msg.to_owned()));
        if self.server.api_key.is_empty() {
            return fail("server.api_key must not be empty");
        }
        if self.limits.max_subscriptions == 0 {
            return fail("limits.max_subscriptions must be at least 1");
        }
        if self.limits.max_message_size < 256 {
            return fail("limits.max_message_size must be at least 256 bytes");
        }
        if self.limits.max_channel_length == 0 {
            return fail("limits.max_channel_length must be at least 1");
        }
        if self.websocket.read_buffer_size < 256 {
            return fail("websocket.read_buffer_size must be at least 256 bytes");
        }
        if self.heartbeat.interval_ms < 100 {
            return fail("heartbeat.interval_ms must be at least 100");
        }
        // A message around the largest data must fit both the inbound limit
        // and one outbox slot, or a legal publication would close its client.
        if self.limits.max_data_size + 1024 > self.limits.max_message_size {
            return fail("limits.max_data_size must be at most limits.max_message_size - 1024");
        }
        if self.outbox.max_messages == 0 || self.outbox.max_bytes < self.limits.max_data_size + 1024
        {
            return fail(
                "outbox.max_messages must be ≥ 1 and outbox.max_bytes ≥ limits.max_data_size + 1024",
            );
        }
        crate::auth::TokenVerifier::new(&self.auth).map_err(ConfigError)?;
        self.socketio
            .validate(self.limits.max_data_size)
            .map_err(ConfigError)?;
        self.channels.validate().map_err(ConfigError)?;
        crate::protocol::EventName::parse(&self.engine.default_event)
            .map_err(|e| ConfigError(format!("engine.default_event: {e}")))?;
        crate::telemetry::check_filter(&self.log.level)
            .map_err(|e| ConfigError(format!("log.level: {e}")))?;
        if self.engine.reader_shards == 0 || self.engine.reader_shards > 64 {
            return fail("engine.reader_shards must be between 1 and 64");
        }
        if self.engine.prefix.is_empty() {
            return fail("engine.prefix must not be empty");
        }
        if self.server.header_read_timeout_ms == 0 || self.server.body_read_timeout_ms == 0 {
            return fail(
                "server.header_read_timeout_ms and server.body_read_timeout_ms must be at least 1",
            );
        }
        if self.server.max_pending_connections == 0 || self.server.ops_max_connections == 0 {
            return fail(
                "server.max_pending_connections and server.ops_max_connections must be at least 1",
            );
        }
        if self.auth.timeout_ms == 0 {
            return fail("auth.timeout_ms must be at least 1");
        }
        // jsonwebtoken computes `now - leeway`: a leeway beyond the epoch would wrap.
        if self.auth.leeway_secs > 3600 {
            return fail("auth.leeway_secs must be at most 3600");
        }
        for (lifetime, secs) in [
            (Lifetime::Access, self.auth.access_ttl_secs),
            (Lifetime::Refresh, self.auth.refresh_ttl_secs),
        ] {
            lifetime
                .check(secs)
                .map_err(|e| ConfigError(format!("auth.{e}")))?;
        }
        if !self.server.listen.ip().is_loopback() {
            self.check_production_keys()?;
        }
        Ok(())
    }

    /// Off loopback: no development default, and every HMAC secret and the
    /// API key at least [`MIN_KEY_BYTES`] long.
    fn check_production_keys(&self) -> Result<(), ConfigError> {
        if !self.insecure_defaults().is_empty() {
            return Err(ConfigError(format!(
                "{} still hold development defaults; set real values before listening on {}",
                self.insecure_defaults().join(" and "),
                self.server.listen
            )));
        }
        let short: Vec<String> = self
            .keys_by_length()
            .into_iter()
            .filter(|(_, len)| *len < MIN_KEY_BYTES)
            .map(|(key, len)| format!("{key} ({len} bytes)"))
            .collect();
        if short.is_empty() {
            return Ok(());
        }
        Err(ConfigError(format!(
            "{} shorter than {MIN_KEY_BYTES} bytes (RFC 7518 §3.2) while listening on {}; \
             generate one with `openssl rand -base64 48` or `head -c 48 /dev/urandom | base64`",
            short.join(" and "),
            self.server.listen
        )))
    }

    /// The API key and every HMAC secret, with their lengths in bytes.
    fn keys_by_length(&self) -> Vec<(String, usize)> {
        let mut keys = vec![("server.api_key".to_owned(), self.server.api_key.len())];
        if self.auth.algorithm.is_hmac() {
            keys.push(("auth.secret".to_owned(), self.auth.secret.len()));
        }
        for (i, key) in self.auth.keys.iter().enumerate() {
            if key.algorithm.is_hmac() {
                let len = key.secret.as_deref().map_or(0, str::len);
                keys.push((format!("auth.keys[{i}].secret"), len));
            }
        }
        keys
    }

    /// The keys that still hold insecure development defaults.
    pub fn insecure_defaults(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.auth.algorithm.is_hmac() && self.auth.secret == crate::auth::DEV_SECRET {
            keys.push("auth.secret");
        }
        if self.server.api_key == DEV_API_KEY {
            keys.push("server.api_key");
        }
        keys
    }

    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("herald.example.toml");
        Config::load(Some(&path), &Overrides::default()).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("herald-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[limits]\nmax_subscriptions = \"many\"\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_subscriptions"), "{err}");
        std::fs::write(&path, "[limits]\nmax_subscritions = 3\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_subscritions"), "{err}");
        let overrides = Overrides {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..Overrides::default()
        };
        let err = Config::load(None, &overrides).unwrap_err().to_string();
        assert!(err.contains("auth.secret"), "{err}");
    }

    #[test]
    fn socketio_paths_and_caps_are_checked() {
        let check = |edit: fn(&mut Config)| {
            let mut config = Config::default();
            edit(&mut config);
            config.validate().err().map(|e| e.to_string())
        };
        assert_eq!(check(|_| {}), None);
        for bad in [
            (|c: &mut Config| c.socketio.path = "socket.io".into()) as fn(&mut Config),
            |c| c.socketio.path = "/".into(),
            |c| c.socketio.path = "/ws".into(),
            |c| c.socketio.msgpack_path = "/api/v1/sio/".into(),
            |c| c.socketio.path = "/{sid}/".into(),
            |c| c.socketio.msgpack_path = "/socket.io".into(),
            |c| c.socketio.max_polling_sessions = 0,
            |c| c.socketio.max_buffered_bytes = 1024,
        ] {
            let err = check(bad).expect("refused");
            assert!(err.contains("socketio."), "{err}");
        }
    }
}
