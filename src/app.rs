//! Composition root: picks the engine, builds the hub and the router, and
//! runs the server until shutdown. The only place that chooses implementations.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::task::TaskTracker;

use crate::{
    auth::{
        ConnectionAuth, KeyError, SessionStoreKind, TokenVerifier,
        sessions::{MemoryStore, RedisStore, SessionStore, Sessions},
    },
    config::{Config, EngineKind},
    core::{
        ClientContext, ClientSettings, Hub, HubConfig, PublicationLimits, RateLimits, Registry,
    },
    engine::{
        Engine, SharedDispatcher,
        emitter::EmitterLimits,
        memory::MemoryEngine,
        redis::{RedisEngine, listen_to_emitter},
    },
    http::{
        self, AppState,
        serve::{Server, Shutdown},
    },
    metrics::MetricsError,
    native::{self, NativeSettings, NativeState},
    socketio::{self, SocketIoSettings, SocketIoState},
};

/// A built, bound, not yet running herald node.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    /// The listener of `server.ops_listen`, if set.
    ops_listener: Option<TcpListener>,
    state: Arc<AppState>,
    native: Arc<NativeState>,
    /// The Socket.IO endpoints, unless `socketio.enabled` is false.
    socketio: Option<Arc<SocketIoState>>,
}

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A key of `[auth]` cannot be loaded; the text names the key.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The Prometheus exporter could not be installed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The Redis engine could not be set up from `[engine]`; names the key.
    #[error(transparent)]
    Engine(#[from] crate::engine::redis::SetupError),
    /// The Redis session store or the Socket.IO emitter listener could not
    /// be set up from `[engine]`; names the key.
    #[error(transparent)]
    Redis(#[from] crate::redis_conn::RedisConfigError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address from `server.listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Accept queue length: connection storms (a node restarting, clients
/// reconnecting) arrive faster than one accept loop drains; the default of
/// 128 would drop SYNs. The kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A random 8-hex-digit node id, for nodes without `$HOSTNAME`.
fn random_node_id() -> String {
    format!("herald-{:08x}", rand::random::<u32>())
}

impl App {
    /// Builds the node from `config` and binds its listener.
    ///
    /// # Errors
    /// [`StartError`] when the config is unusable or the address cannot be bound.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let engine_config = config.engine.clone();
        let max_data_size = config.limits.max_data_size;
        let emitter = config.socketio.redis_emitter.then(|| {
            (
                config.socketio.redis_emitter_key.clone(),
                EmitterLimits {
                    max_channel_length: config.limits.max_channel_length,
                    max_data_size,
                    max_rooms: config.socketio.redis_emitter_max_rooms,
                },
            )
        });
        let mut failure = None;
        let app = Self::build_with_engine(config, |dispatcher| -> Arc<dyn Engine> {
            match engine_config.kind {
                EngineKind::Memory => {
                    Arc::new(MemoryEngine::new(dispatcher).with_idempotency_window(
                        Duration::from_millis(engine_config.idempotency_window_ms),
                    ))
                }
                EngineKind::Redis => {
                    let started =
                        RedisEngine::start(&engine_config, max_data_size, Arc::clone(&dispatcher))
                            .and_then(|engine| match &emitter {
                                Some((key, limits)) => listen_to_emitter(
                                    &engine_config,
                                    key,
                                    *limits,
                                    Arc::clone(&dispatcher),
                                )
                                .map(|()| engine)
                                .map_err(Into::into),
                                None => Ok(engine),
                            });
                    match started {
                        Ok(engine) => Arc::new(engine),
                        Err(err) => {
                            failure = Some(err);
                            Arc::new(MemoryEngine::new(dispatcher))
                        }
                    }
                }
            }
        })
        .await?;
        match failure {
            Some(err) => Err(StartError::Engine(err)),
            None => Ok(app),
        }
    }

    /// Builds the node with an engine made by `engine` from the local
    /// dispatcher. Tests use it to run the hub over a stub or faulty engine.
    ///
    /// # Errors
    /// [`StartError`] when the config is unusable or the address cannot be bound.
    pub async fn build_with_engine(
        config: Config,
        engine: impl FnOnce(SharedDispatcher) -> Arc<dyn Engine>,
    ) -> Result<Self, StartError> {
        let verifier = TokenVerifier::new(&config.auth)?;
        let metrics = crate::metrics::install()?;
        let node_id = config
            .server
            .node_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(random_node_id);
        let rules = Arc::new(config.channels.clone());
        let registry =
            Arc::new(Registry::new(Arc::clone(&rules), config.outbox).with_fanout(config.fanout));
        let engine = engine(Arc::clone(&registry) as SharedDispatcher);
        // Chosen by its own setting, not by the engine: `auto` follows the
        // engine only because that is what one Redis deployment wants.
        let redis_sessions = match config.auth.session_store {
            SessionStoreKind::Auto => config.engine.kind == EngineKind::Redis,
            SessionStoreKind::Memory => false,
            SessionStoreKind::Redis => true,
        };
        let store: Arc<dyn SessionStore> = if redis_sessions {
            Arc::new(RedisStore::new(
                crate::redis_conn::RedisHandle::new(&config.engine.redis())?,
                config.engine.prefix.clone(),
            ))
        } else {
            // In-process: always there, unlike a Redis store it checks.
            metrics::gauge!(crate::metrics::SESSION_STORE_CONNECTED).set(1.0);
            Arc::new(MemoryStore::default())
        };
        let sessions = Sessions::new(store, &config.auth);
        let limits = Arc::new(RateLimits::new(config.rate_limits.clone()));
        let hub_config = HubConfig {
            node_id,
            max_connections: config.limits.max_connections,
            max_subscriptions: config.limits.max_subscriptions,
            heartbeat_interval: config.heartbeat_interval(),
            heartbeat_timeout: Duration::from_millis(config.heartbeat.timeout_ms),
            ready_requires_engine: config.engine.ready_requires_connection,
            expiry_warning: Duration::from_millis(config.auth.expiry_warning_ms),
            expiry_grace: Duration::from_millis(config.auth.expiry_grace_ms),
            engine_timeout: Duration::from_millis(config.engine.command_timeout_ms),
        };
        let hub = Hub::new(hub_config, rules, registry, Arc::clone(&engine));
        let publications = PublicationLimits {
            max_channel_length: config.limits.max_channel_length,
            max_data_size: config.limits.max_data_size,
        };
        let clients = Arc::new(ClientContext::new(
            Arc::clone(&hub),
            Arc::new(ConnectionAuth::new(verifier.clone(), sessions.clone())),
            Arc::clone(&limits),
            ClientSettings {
                auth_timeout: Duration::from_millis(config.auth.timeout_ms),
                allow_anonymous: config.auth.allow_anonymous,
                write_timeout: Duration::from_millis(config.websocket.write_timeout_ms),
                publications,
            },
        ));
        let tracker = TaskTracker::new();
        let socketio = config.socketio.enabled.then(|| {
            Arc::new(SocketIoState::new(
                Arc::clone(&clients),
                SocketIoSettings {
                    path: config.socketio.path.clone(),
                    msgpack_path: config.socketio.msgpack_path.clone(),
                    max_payload: config.limits.max_message_size,
                    ping_interval: config.heartbeat_interval(),
                    ping_timeout: Duration::from_millis(config.heartbeat.timeout_ms),
                    max_polling_sessions: config.socketio.max_polling_sessions,
                    max_buffered_bytes: config.socketio.max_buffered_bytes,
                    max_batch: config.limits.max_subscriptions,
                    recovery_max_channels: config
                        .socketio
                        .connection_state_recovery
                        .then_some(config.socketio.recovery_max_channels),
                    read_buffer_size: config.websocket.read_buffer_size,
                    write_buffer_size: config.websocket.write_buffer_size,
                    write_timeout: Duration::from_millis(config.websocket.write_timeout_ms),
                    allowed_origins: config.server.allowed_origins.clone(),
                    trust_forwarded_for: config.server.trust_forwarded_for,
                },
                tracker.clone(),
            ))
        });
        let native = Arc::new(NativeState {
            clients,
            settings: NativeSettings {
                read_buffer_size: config.websocket.read_buffer_size,
                write_buffer_size: config.websocket.write_buffer_size,
                max_message_size: config.limits.max_message_size,
                allowed_origins: config.server.allowed_origins.clone(),
                trust_forwarded_for: config.server.trust_forwarded_for,
            },
            tracker: tracker.clone(),
        });
        let bind = |addr| listen(addr).map_err(|source| StartError::Bind { addr, source });
        let listener = bind(config.server.listen)?;
        let ops_listener = config.server.ops_listen.map(bind).transpose()?;
        check_open_files(&config);
        let state = Arc::new(AppState {
            hub,
            engine,
            verifier,
            config: Arc::new(config),
            metrics,
            tracker,
            sessions,
            limits,
            publications,
        });
        Ok(Self {
            listener,
            ops_listener,
            state,
            native,
            socketio,
        })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// If the OS cannot report it.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What serves every connection's life; transports (and in-process
    /// tests) hand it their sockets.
    pub fn clients(&self) -> Arc<ClientContext> {
        Arc::clone(&self.native.clients)
    }

    /// The bound address of the ops listener, if `server.ops_listen` is set.
    ///
    /// # Errors
    /// If the OS cannot report it.
    pub fn ops_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.ops_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
    }

    /// The shared state (tests inspect the hub through it).
    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns 503,
    /// new upgrades are refused, open connections are closed with 1012
    /// spread over the drain window. Then the listeners close, every HTTP
    /// connection is asked to finish, and the node exits once sessions and
    /// connections are gone or the grace period ends, dropping what is left.
    ///
    /// # Errors
    /// None today; the signature leaves room for listener failures.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            ops_listener,
            state,
            native,
            socketio,
        } = self;
        let hub = Arc::clone(&state.hub);
        let heartbeats = tokio::spawn(Arc::clone(&hub).run_heartbeats());
        let announcer = tokio::spawn(announce(Arc::clone(&state)));
        let store_checks = tokio::spawn(check_store(Arc::clone(&state)));
        let limiter_upkeep = tokio::spawn(shrink_limiters(Arc::clone(&state)));
        let stop = Shutdown::default();
        let connections = TaskTracker::new();
        let mut servers = vec![tokio::spawn(
            main_server(listener, &state, native, socketio).run(connections.clone(), stop.clone()),
        )];
        if let Some(ops) = ops_listener {
            servers.push(tokio::spawn(
                ops_server(ops, &state).run(connections.clone(), stop.clone()),
            ));
        }

        shutdown.await;
        let settings = &state.config.shutdown;
        let window = Duration::from_millis(settings.drain_ms);
        let grace = Duration::from_millis(settings.grace_ms);
        tracing::info!(
            connections = hub.stats(0).connections,
            drain_ms = settings.drain_ms,
            "shutting down: draining connections"
        );
        // The listeners stay up during the drain so /ready can report 503.
        hub.drain(window).await;
        stop.graceful.cancel();
        for server in servers {
            if let Err(err) = server.await {
                tracing::error!(error = %err, "accept loop failed");
            }
        }
        state.tracker.close();
        connections.close();
        let finished = async { tokio::join!(state.tracker.wait(), connections.wait()) };
        if tokio::time::timeout(grace, finished).await.is_err() {
            tracing::warn!(
                sessions = state.tracker.len(),
                http_connections = connections.len(),
                "grace period over; dropping remaining connections"
            );
            // HTTP connections drop at once on `force`; sessions are not
            // waited for (they end with the runtime).
            stop.force.cancel();
            connections.wait().await;
        }
        heartbeats.abort();
        announcer.abort();
        store_checks.abort();
        limiter_upkeep.abort();
        Ok(())
    }
}

/// The server of `server.listen`.
fn main_server(
    listener: TcpListener,
    state: &Arc<AppState>,
    native: Arc<NativeState>,
    socketio: Option<Arc<SocketIoState>>,
) -> Server {
    let settings = &state.config.server;
    let mut transports = native::router(native);
    if let Some(socketio) = socketio {
        transports = transports.merge(socketio::router(socketio));
    }
    Server::new(
        listener,
        http::router(Arc::clone(state), transports),
        Duration::from_millis(settings.header_read_timeout_ms),
        settings.max_pending_connections,
        settings.max_pending_per_ip,
        "main",
    )
}

/// The server of `server.ops_listen`: its own small cap, no per-address cap
/// (the kubelet and Prometheus each come from one address).
fn ops_server(listener: TcpListener, state: &Arc<AppState>) -> Server {
    let settings = &state.config.server;
    Server::new(
        listener,
        http::ops_router(Arc::clone(state)),
        Duration::from_millis(settings.header_read_timeout_ms),
        settings.ops_max_connections,
        0,
        "ops",
    )
}

/// Descriptors kept free beyond the connection caps: engine connections,
/// the listeners, log files and the process's own.
const FD_RESERVE: u64 = 256;

/// Raises the soft open-files limit to the hard limit, and warns when the
/// caps could still use more descriptors than the limit allows (then a
/// flood ends in `Too many open files` instead of refusals).
fn check_open_files(config: &Config) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read or raise the open-files limit");
            return;
        }
    };
    let server = &config.server;
    let ops = if server.ops_listen.is_some() {
        server.ops_max_connections
    } else {
        0
    };
    let needed = [
        config.limits.max_connections,
        server.max_pending_connections,
        ops,
    ]
    .into_iter()
    .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
    .fold(FD_RESERVE, u64::saturating_add);
    if needed > limit {
        tracing::warn!(
            open_files_limit = limit,
            needed,
            "limits.max_connections + server.max_pending_connections + server.ops_max_connections \
             + 256 exceed the open-files limit: raise `ulimit -n` or lower the caps"
        );
    } else {
        tracing::debug!(
            open_files_limit = limit,
            needed,
            "open-files limit is enough"
        );
    }
}

/// Records this node's stats in the engine periodically, for `/api/v1/stats`.
async fn announce(state: Arc<AppState>) {
    let every = Duration::from_millis(state.config.engine.announce_interval_ms.max(100));
    // Three missed rounds and the node counts as gone.
    let ttl = (every * 3).as_secs().max(1);
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        if let Err(err) = state.engine.announce(&state.hub.stats(10), ttl).await {
            tracing::debug!(error = %err, "announcing node stats failed");
        }
    }
}

/// Checks the session store's health as often as the engine's readers
/// check theirs, so `/ready` reflects a store outage within the same bound.
async fn check_store(state: Arc<AppState>) {
    let every = Duration::from_millis(state.config.engine.ping_interval_ms.max(100));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let store = Arc::clone(state.sessions.store());
        let was = store.is_available();
        let now = store.check().await;
        if was != now {
            if now {
                tracing::info!("session store answers again");
            } else {
                tracing::warn!("session store does not answer");
            }
        }
    }
}

/// Forgets idle per-IP rate-limit state now and then, so memory stays bounded.
async fn shrink_limiters(state: Arc<AppState>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        state.limits.shrink();
    }
}
