//! Composition root: picks the engine, builds the hub and the router, and
//! runs the server until shutdown. The only place that chooses implementations.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{
        TokenVerifier,
        sessions::{MemoryStore, RedisStore, SessionStore, Sessions},
    },
    config::{Config, EngineKind},
    core::{Hub, HubConfig, RateLimits, Registry},
    engine::{
        Engine, SharedDispatcher,
        memory::MemoryEngine,
        redis::{RedisEngine, RedisHandle},
    },
    http::{self, AppState},
};

/// A built, bound, not yet running herald node.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    state: Arc<AppState>,
}

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable; the text names the key.
    #[error("{0}")]
    Config(String),
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
        let mut failure = None;
        let app = Self::build_with_engine(config, |dispatcher| -> Arc<dyn Engine> {
            match engine_config.kind {
                EngineKind::Memory => {
                    Arc::new(MemoryEngine::new(dispatcher).with_idempotency_window(
                        Duration::from_millis(engine_config.idempotency_window_ms),
                    ))
                }
                EngineKind::Redis => {
                    match RedisEngine::start(&engine_config, max_data_size, Arc::clone(&dispatcher))
                    {
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
            Some(err) => Err(StartError::Config(err)),
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
        let verifier = TokenVerifier::new(&config.auth).map_err(StartError::Config)?;
        let metrics = crate::metrics::install().map_err(StartError::Config)?;
        let node_id = config
            .server
            .node_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(random_node_id);
        let rules = Arc::new(config.channels.clone());
        let registry = Arc::new(Registry::new(Arc::clone(&rules), config.outbox));
        let engine = engine(Arc::clone(&registry) as SharedDispatcher);
        let store: Arc<dyn SessionStore> = match config.engine.kind {
            EngineKind::Memory => Arc::new(MemoryStore::default()),
            EngineKind::Redis => Arc::new(RedisStore::new(
                RedisHandle::new(&config.engine).map_err(StartError::Config)?,
                config.engine.prefix.clone(),
            )),
        };
        let sessions = Sessions::new(store, &config.auth);
        let limits = RateLimits::new(config.rate_limits.clone());
        let hub_config = HubConfig {
            node_id,
            max_connections: config.limits.max_connections,
            max_subscriptions: config.limits.max_subscriptions,
            heartbeat_interval: config.heartbeat_interval(),
            heartbeat_timeout: Duration::from_millis(config.heartbeat.timeout_ms),
            ready_requires_engine: config.engine.ready_requires_connection,
            expiry_warning: Duration::from_millis(config.auth.expiry_warning_ms),
            expiry_grace: Duration::from_millis(config.auth.expiry_grace_ms),
        };
        let hub = Hub::new(hub_config, rules, registry, Arc::clone(&engine));
        let addr = config.server.listen;
        let listener = listen(addr).map_err(|source| StartError::Bind { addr, source })?;
        let state = Arc::new(AppState {
            hub,
            engine,
            verifier,
            config: Arc::new(config),
            metrics,
            tracker: TaskTracker::new(),
            sessions,
            limits,
        });
        Ok(Self { listener, state })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// If the OS cannot report it.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (tests inspect the hub through it).
    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns 503,
    /// new upgrades are refused, open connections are closed with 1012
    /// spread over the drain window, and the node exits once they are gone
    /// or the grace period after the window ends.
    ///
    /// # Errors
    /// If the HTTP server fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self { listener, state } = self;
        let hub = Arc::clone(&state.hub);
        let heartbeats = tokio::spawn(Arc::clone(&hub).run_heartbeats());
        let announcer = tokio::spawn(announce(Arc::clone(&state)));
        let store_checks = tokio::spawn(check_store(Arc::clone(&state)));
        let limiter_upkeep = tokio::spawn(shrink_limiters(Arc::clone(&state)));
        let stop_accepting = CancellationToken::new();
        let router = http::router(Arc::clone(&state));
        // Pushes are small and latency-bound: send each flush at once
        // instead of letting Nagle hold it for the previous segment's ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
        let server = tokio::spawn(async move { server.await });

        shutdown.await;
        let settings = &state.config.shutdown;
        let window = Duration::from_millis(settings.drain_ms);
        let grace = Duration::from_millis(settings.grace_ms);
        tracing::info!(
            connections = hub.stats(0).connections,
            drain_ms = settings.drain_ms,
            "shutting down: draining connections"
        );
        // The HTTP listener stays up during the drain so /ready can report 503.
        hub.drain(window).await;
        stop_accepting.cancel();
        state.tracker.close();
        if tokio::time::timeout(grace, state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = state.tracker.len(),
                "grace period over; dropping remaining connections"
            );
        }
        heartbeats.abort();
        announcer.abort();
        store_checks.abort();
        limiter_upkeep.abort();
        match server.await {
            Ok(result) => result,
            Err(err) => Err(std::io::Error::other(err)),
        }
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
        let stats = serde_json::to_string(&state.hub.stats(10)).unwrap_or_default();
        if let Err(err) = state.engine.announce(state.hub.node_id(), stats, ttl).await {
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
