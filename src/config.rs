//! Configuration: defaults, then a TOML file, then `HERALD_…` environment
//! variables, then command-line flags, each overriding the one before.
//!
//! Nested keys map to environment variables with `__` between sections:
//! `limits.max_subscriptions` is `HERALD_LIMITS__MAX_SUBSCRIPTIONS`.
//! `herald.example.toml` documents every key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format as _, Serialized, Toml},
};
use serde::Deserialize;

use crate::{
    auth::{
        AuthConfig, KeyError,
        sessions::{Lifetime, SessionError},
    },
    core::{ChannelRules, FanoutConfig, OutboxLimits, PolicyError, RateLimitConfig},
    protocol::NameError,
    telemetry::TelemetryError,
};

/// Shortest HMAC secret or API key accepted off loopback: 256 bits, as
/// RFC 7518 §3.2 asks of HS256 keys.
pub const MIN_KEY_BYTES: usize = 32;

pub use crate::{
    engine::{EngineConfig, EngineKind},
    telemetry::{LogConfig, LogFormat},
};

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
    /// `[fanout]`: how a large fan-out shares the workers with other traffic.
    pub fanout: FanoutConfig,
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
    #[serde(deserialize_with = "crate::serde_text::text")]
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
            read_buffer_size: 256,
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
    /// Connection state recovery: `pid` in the `CONNECT` reply, an offset
    /// as the last argument of each event, recovery on reconnection.
    pub connection_state_recovery: bool,
    /// Most subscribed channels a socket may have and still be recovered.
    pub recovery_max_channels: usize,
    /// Deliver what `@socket.io/redis-emitter` publishes (Redis engine).
    pub redis_emitter: bool,
    /// The emitter's `key` option: messages arrive on `<key>#/#…`.
    pub redis_emitter_key: String,
    /// Most rooms one emitter message may name.
    pub redis_emitter_max_rooms: usize,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/socket.io/".into(),
            msgpack_path: "/socket.io-msgpack/".into(),
            max_polling_sessions: 10_000,
            max_buffered_bytes: 1024 * 1024,
            connection_state_recovery: false,
            recovery_max_channels: 32,
            redis_emitter: false,
            redis_emitter_key: "socket.io".into(),
            redis_emitter_max_rooms: 64,
        }
    }
}

impl SocketIoConfig {
    fn validate(&self, max_data_size: usize) -> Result<(), ConfigError> {
        const PATHS: &str = "socketio.path and socketio.msgpack_path";
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
            return invalid(
                PATHS,
                "must start with `/`, name a path of their own (not /ws, /api, /health, \
                 /ready, /metrics, /demo) and hold no `{`, `}`, `*`, `?` or `#`",
            );
        }
        if self.path.trim_end_matches('/') == self.msgpack_path.trim_end_matches('/') {
            return invalid(PATHS, "must differ");
        }
        if self.max_polling_sessions == 0 {
            return invalid("socketio.max_polling_sessions", "must be at least 1");
        }
        let key = &self.redis_emitter_key;
        if key.is_empty() || key.len() > 64 || key.chars().any(|c| c.is_whitespace() || c == '#') {
            return invalid(
                "socketio.redis_emitter_key",
                "must be 1 to 64 characters, without whitespace or `#`",
            );
        }
        if !(1..=1024).contains(&self.redis_emitter_max_rooms) {
            return invalid("socketio.redis_emitter_max_rooms", "must be 1 to 1024");
        }
        if !(1..=256).contains(&self.recovery_max_channels) {
            return invalid("socketio.recovery_max_channels", "must be 1 to 256");
        }
        if self.max_buffered_bytes < max_data_size + 1024 {
            return invalid(
                "socketio.max_buffered_bytes",
                "must be ≥ limits.max_data_size + 1024",
            );
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
pub enum ConfigError {
    /// The config file given does not exist.
    #[error("invalid configuration: config file {} not found", .0.display())]
    FileNotFound(PathBuf),
    /// The file or the environment holds an unknown key or a value of the wrong type.
    #[error("invalid configuration: {}", describe_figment(.0))]
    Source(#[source] Box<figment::Error>),
    /// A value out of range, or at odds with another key.
    #[error("invalid configuration: {key} {reason}")]
    Invalid {
        /// The offending key (or keys, joined with "and").
        key: &'static str,
        /// What the key must be, starting with "must".
        reason: &'static str,
    },
    /// A key of `[auth]` cannot be loaded.
    #[error("invalid configuration: {0}")]
    Keys(#[from] KeyError),
    /// `[channels]` is inconsistent.
    #[error("invalid configuration: {0}")]
    Channels(#[from] PolicyError),
    /// `engine.default_event` is not a valid event name.
    #[error("invalid configuration: engine.default_event: {0}")]
    DefaultEvent(#[source] NameError),
    /// The log filter (`log.level`, or `RUST_LOG` when set) is invalid.
    #[error("invalid configuration: {0}")]
    Log(#[from] TelemetryError),
    /// `auth.access_ttl_secs` or `auth.refresh_ttl_secs` is out of range.
    #[error("invalid configuration: auth.{0}")]
    Lifetime(#[source] SessionError),
    /// Off loopback, a key still holds its development default.
    #[error(
        "invalid configuration: {} still hold development defaults; set real values before listening on {listen}",
        .keys.join(" and ")
    )]
    InsecureDefaults {
        /// The keys holding defaults.
        keys: Vec<&'static str>,
        /// `server.listen`.
        listen: SocketAddr,
    },
    /// Off loopback, the API key or an HMAC secret is too short.
    #[error(
        "invalid configuration: {} shorter than {MIN_KEY_BYTES} bytes (RFC 7518 §3.2) while listening on {listen}; \
         generate one with `openssl rand -base64 48` or `head -c 48 /dev/urandom | base64`",
        .keys.join(" and ")
    )]
    ShortKeys {
        /// Each short key with its length, as `server.api_key (13 bytes)`.
        keys: Vec<String>,
        /// `server.listen`.
        listen: SocketAddr,
    },
}

/// Every error figment collected, not only the first.
fn describe_figment(err: &figment::Error) -> String {
    err.clone()
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        Self::Source(Box::new(err))
    }
}

/// `Err(ConfigError::Invalid)` for `key`.
fn invalid(key: &'static str, reason: &'static str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid { key, reason })
}

impl Config {
    /// Loads defaults, then `file` (if any), then the environment, then `overrides`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::FileNotFound(path.to_owned()));
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
        let mut config: Self = figment.extract()?;
        config.take_raw_secrets();
        config.validate()?;
        // `RUST_LOG` replaces `log.level` when set: check it here too, so that
        // `check-config` fails as start-up would, naming the variable.
        crate::telemetry::check(&config.log)?;
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
        if self.server.api_key.is_empty() {
            return invalid("server.api_key", "must not be empty");
        }
        if self.limits.max_subscriptions == 0 {
            return invalid("limits.max_subscriptions", "must be at least 1");
        }
        if self.limits.max_message_size < 256 {
            return invalid("limits.max_message_size", "must be at least 256 bytes");
        }
        if self.limits.max_channel_length == 0 {
            return invalid("limits.max_channel_length", "must be at least 1");
        }
        if self.websocket.read_buffer_size < 256 {
            return invalid("websocket.read_buffer_size", "must be at least 256 bytes");
        }
        if self.heartbeat.interval_ms < 100 {
            return invalid("heartbeat.interval_ms", "must be at least 100");
        }
        // A message around the largest data must fit both the inbound limit
        // and one outbox slot, or a legal publication would close its client.
        if self.limits.max_data_size + 1024 > self.limits.max_message_size {
            return invalid(
                "limits.max_data_size",
                "must be at most limits.max_message_size - 1024",
            );
        }
        if self.outbox.max_messages == 0 || self.outbox.max_bytes < self.limits.max_data_size + 1024
        {
            return invalid(
                "outbox.max_messages",
                "must be ≥ 1 and outbox.max_bytes ≥ limits.max_data_size + 1024",
            );
        }
        if let Err(reason) = self.fanout.validate() {
            return invalid("fanout.bulk_share_percent", reason);
        }
        crate::auth::TokenVerifier::new(&self.auth)?;
        self.socketio.validate(self.limits.max_data_size)?;
        if self.socketio.redis_emitter
            && (self.engine.kind != crate::engine::EngineKind::Redis
                || !self.engine.cluster_urls.is_empty())
        {
            return invalid(
                "socketio.redis_emitter",
                "needs engine.kind = \"redis\" on one Redis server (engine.url, not cluster_urls)",
            );
        }
        self.channels.validate()?;
        // A recovery replay is queued at once: one that cannot fit the
        // outbox would close the very client it serves.
        if self
            .channels
            .namespaces
            .iter()
            .any(|n| n.history_size > 0 && n.recover_max >= self.outbox.max_messages)
        {
            return invalid(
                "channels.namespaces.recover_max",
                "must be below outbox.max_messages on namespaces with history",
            );
        }
        crate::protocol::EventName::parse(&self.engine.default_event)
            .map_err(ConfigError::DefaultEvent)?;
        crate::telemetry::check_filter(&self.log.level).map_err(|source| {
            TelemetryError::Filter {
                setting: "log.level",
                source,
            }
        })?;
        if self.engine.reader_shards == 0 || self.engine.reader_shards > 64 {
            return invalid("engine.reader_shards", "must be between 1 and 64");
        }
        if self.engine.prefix.is_empty() {
            return invalid("engine.prefix", "must not be empty");
        }
        if self.server.header_read_timeout_ms == 0 || self.server.body_read_timeout_ms == 0 {
            return invalid(
                "server.header_read_timeout_ms and server.body_read_timeout_ms",
                "must be at least 1",
            );
        }
        if self.server.max_pending_connections == 0 || self.server.ops_max_connections == 0 {
            return invalid(
                "server.max_pending_connections and server.ops_max_connections",
                "must be at least 1",
            );
        }
        let engine = &self.engine;
        if [
            engine.command_timeout_ms,
            engine.connect_timeout_ms,
            engine.ping_interval_ms,
            engine.ping_timeout_ms,
            engine.idempotency_window_ms,
        ]
        .contains(&0)
        {
            return invalid(
                "engine.command_timeout_ms, connect_timeout_ms, ping_interval_ms, ping_timeout_ms and idempotency_window_ms",
                "must be at least 1",
            );
        }
        if self.auth.timeout_ms == 0 {
            return invalid("auth.timeout_ms", "must be at least 1");
        }
        // jsonwebtoken computes `now - leeway`: a leeway beyond the epoch would wrap.
        if self.auth.leeway_secs > 3600 {
            return invalid("auth.leeway_secs", "must be at most 3600");
        }
        for (lifetime, secs) in [
            (Lifetime::Access, self.auth.access_ttl_secs),
            (Lifetime::Refresh, self.auth.refresh_ttl_secs),
        ] {
            lifetime.check(secs).map_err(ConfigError::Lifetime)?;
        }
        if !self.server.listen.ip().is_loopback() {
            self.check_production_keys()?;
        }
        Ok(())
    }

    /// Off loopback: no development default, and every HMAC secret and the
    /// API key at least [`MIN_KEY_BYTES`] long.
    fn check_production_keys(&self) -> Result<(), ConfigError> {
        let defaults = self.insecure_defaults();
        if !defaults.is_empty() {
            return Err(ConfigError::InsecureDefaults {
                keys: defaults,
                listen: self.server.listen,
            });
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
        Err(ConfigError::ShortKeys {
            keys: short,
            listen: self.server.listen,
        })
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
    fn errors_are_typed_and_keep_their_text() {
        let mut config = Config::default();
        config.limits.max_subscriptions = 0;
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "limits.max_subscriptions",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "invalid configuration: limits.max_subscriptions must be at least 1"
        );
        let mut config = Config::default();
        config.auth.signing_kid = Some("nope".into());
        let err = config.validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::Keys(KeyError::UnknownSigningKid { .. })),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "invalid configuration: auth.signing_kid \"nope\" names no key in auth.keys"
        );
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
        let _ = std::fs::remove_dir_all(&dir);
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
            |c| c.socketio.recovery_max_channels = 0,
            |c| c.socketio.redis_emitter_key = String::new(),
            |c| c.socketio.redis_emitter_max_rooms = 0,
            |c| {
                c.socketio.redis_emitter = true;
                c.engine.kind = crate::engine::EngineKind::Memory;
            },
            |c| c.socketio.recovery_max_channels = 257,
        ] {
            let err = check(bad).expect("refused");
            assert!(err.contains("socketio."), "{err}");
        }
    }
}
