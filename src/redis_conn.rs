//! A command connection to Redis or a Redis Cluster that reconnects by
//! itself, with a deadline on every command: the Redis engine's write path
//! and the Redis session store each hold one. A leaf below both, so neither
//! depends on the other.
//!
//! Nothing here retries a command that may have reached Redis: a command
//! whose reply did not arrive may have run, and only the caller knows
//! whether running it twice is harmless. Errors say which case they are
//! ([`CommandError`]). A command that provably never left (no connection)
//! is sent once more, on the connection the manager rebuilt meanwhile.
//!
//! The single-server connection speaks RESP3 so that redis-rs learns of a
//! closed socket at once (a disconnection push) and reconnects before the
//! next command, instead of failing that command on the dead socket.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{
    ErrorKind, FromRedisValue, ProtocolVersion, RedisError, RetryMethod, ScriptInvocation,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

/// Where Redis is and how long to wait for it: the part of `[engine]` a
/// connection needs (built with `EngineConfig::redis`).
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL of one server.
    pub url: String,
    /// Redis Cluster seeds; when not empty, the cluster is used.
    pub cluster_urls: Vec<String>,
    /// Password overriding the URL's.
    pub password: Option<String>,
    /// Deadline of every command.
    pub command_timeout: Duration,
    /// Deadline of opening a connection.
    pub connect_timeout: Duration,
    /// First and longest reconnect delay.
    pub reconnect: (Duration, Duration),
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url)
            .field("cluster_urls", &self.cluster_urls)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A Redis setting herald cannot use; names the configuration key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {source}")]
pub struct RedisConfigError {
    /// The key, e.g. `engine.url`.
    pub key: &'static str,
    /// What redis-rs said of it.
    pub source: RedisError,
}

impl RedisConfigError {
    /// Names `key` as the setting `source` is about.
    pub fn at(key: &'static str) -> impl FnOnce(RedisError) -> Self {
        move |source| Self { key, source }
    }
}

/// Why a command failed, and whether it may have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Redis never ran the command: no connection, or (a single command)
    /// a cluster redirect such as `MOVED`.
    #[error("redis is unreachable")]
    NotSent,
    /// Sent, but no reply came (deadline, dropped connection): it may or may
    /// not have run.
    #[error("redis did not answer in time")]
    Unknown,
    /// Redis answered with an error: the command did not run.
    #[error("redis refused the command")]
    Refused,
}

impl CommandError {
    /// What `err` says about a request of `commands` commands.
    fn classify(err: &RedisError, commands: usize) -> Self {
        let redirect = matches!(
            err.retry_method(),
            RetryMethod::MovedRedirect
                | RetryMethod::AskRedirect
                | RetryMethod::WaitAndRetry
                | RetryMethod::RefreshSlotsAndRetry
        );
        if err.is_connection_refusal() || (commands == 1 && redirect) {
            Self::NotSent
        } else if commands == 1 && matches!(err.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
        {
            Self::Refused
        } else {
            // A dropped connection, a deadline, or an error inside a
            // pipeline (the other commands may have run).
            Self::Unknown
        }
    }
}

enum Conn {
    Single(ConnectionManager),
    Cluster {
        // Boxed: a cluster client is far larger than a connection manager.
        client: Box<ClusterClient>,
        /// The connection, made on first use; replaced by
        /// [`RedisHandle::reconnect`] (the lock is only held to swap it).
        conn: Mutex<Arc<OnceCell<ClusterConnection>>>,
    },
}

impl Conn {
    /// The cluster connection, made now if there is none yet.
    async fn cluster(
        client: &ClusterClient,
        conn: &Mutex<Arc<OnceCell<ClusterConnection>>>,
    ) -> redis::RedisResult<ClusterConnection> {
        let cell = Arc::clone(&conn.lock().unwrap_or_else(PoisonError::into_inner));
        cell.get_or_try_init(|| client.get_async_connection())
            .await
            .cloned()
    }
}

struct Inner {
    conn: Conn,
    timeout: Duration,
    /// Whether the last command (or health check) got an answer.
    healthy: AtomicBool,
}

/// A multiplexed (pipelining) command connection; cheap to clone.
#[derive(Clone)]
pub struct RedisHandle(Arc<Inner>);

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0.conn {
            Conn::Single(_) => "RedisHandle(single)",
            Conn::Cluster { .. } => "RedisHandle(cluster)",
        })
    }
}

/// Runs `$op` on whichever connection the handle holds.
macro_rules! on_conn {
    ($inner:expr, |$conn:ident| $op:expr) => {
        match &$inner.conn {
            Conn::Single(manager) => {
                let mut $conn = manager.clone();
                $op.await
            }
            Conn::Cluster { client, conn } => match Conn::cluster(client, conn).await {
                Ok(mut $conn) => $op.await,
                Err(err) => Err(err),
            },
        }
    };
}

impl RedisHandle {
    /// A handle for `[engine]` (single server, or cluster when
    /// `cluster_urls` is set). Connects lazily, on the first command.
    ///
    /// # Errors
    /// [`RedisConfigError`] naming `engine.url` or `engine.cluster_urls`
    /// when it does not parse.
    pub fn new(config: &RedisSettings) -> Result<Self, RedisConfigError> {
        let conn = if config.cluster_urls.is_empty() {
            let manager_config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(config.command_timeout))
                .set_connection_timeout(Some(config.connect_timeout))
                .set_min_delay(config.reconnect.0)
                .set_max_delay(config.reconnect.1)
                // Each command has its own deadline; a reconnect that keeps
                // failing is started again by the next command.
                .set_number_of_retries(2);
            let manager = ConnectionManager::new_lazy_with_config(
                single_client(config, ProtocolVersion::RESP3)?,
                manager_config,
            )
            .map_err(RedisConfigError::at("engine.url"))?;
            Conn::Single(manager)
        } else {
            Conn::Cluster {
                client: Box::new(
                    cluster_client(config).map_err(RedisConfigError::at("engine.cluster_urls"))?,
                ),
                conn: Mutex::default(),
            }
        };
        Ok(Self(Arc::new(Inner {
            conn,
            timeout: config.command_timeout,
            healthy: AtomicBool::new(true),
        })))
    }

    /// On a cluster: drops the connection, so that the next command makes a
    /// new one with a fresh slot map. redis-rs refreshes its map only when a
    /// node answers `MOVED` or a connection fails; a master that hung and
    /// was replaced answers neither while it hangs and, back as a replica,
    /// accepts `SPUBLISH` for its old slots (passing it on over the cluster
    /// bus, which is not reliable then). The readers call this when they
    /// find their slots served by another node. One server: nothing to do.
    pub fn reconnect(&self) {
        if let Conn::Cluster { conn, .. } = &self.0.conn {
            *conn.lock().unwrap_or_else(PoisonError::into_inner) = Arc::default();
        }
    }

    /// Whether the last command or health check got an answer in time.
    pub fn is_healthy(&self) -> bool {
        self.0.healthy.load(Ordering::Acquire)
    }

    /// Runs `op` within the command deadline; once more if the first try
    /// provably never reached Redis.
    async fn deadline<T, Fut>(
        &self,
        commands: usize,
        op: impl Fn() -> Fut,
    ) -> Result<T, CommandError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempts = async {
            match op().await {
                Err(err) if CommandError::classify(&err, commands) == CommandError::NotSent => {
                    op().await
                }
                other => other,
            }
        };
        let result = match tokio::time::timeout(self.0.timeout, attempts).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "redis command failed");
                Err(CommandError::classify(&err, commands))
            }
            Err(_) => Err(CommandError::Unknown),
        };
        let answered = !matches!(result, Err(CommandError::NotSent | CommandError::Unknown));
        self.0.healthy.store(answered, Ordering::Release);
        result
    }

    /// Sends a pipeline, ignoring replies. Never retried.
    ///
    /// # Errors
    /// [`CommandError`]: whether the pipeline may have run.
    pub async fn pipeline(&self, pipe: redis::Pipeline) -> Result<(), CommandError> {
        self.deadline(pipe.len(), || async {
            on_conn!(self.0, |conn| pipe.query_async::<()>(&mut conn))
        })
        .await
    }

    /// Sends a pipeline and returns its replies. Never retried.
    ///
    /// # Errors
    /// [`CommandError`]: whether the pipeline may have run.
    pub async fn pipeline_query<T: FromRedisValue>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, CommandError> {
        self.deadline(pipe.len(), || async {
            on_conn!(self.0, |conn| pipe.query_async::<T>(&mut conn))
        })
        .await
    }

    /// Runs `cmds` and returns their replies: one command alone, since a
    /// `MOVED` to a command makes redis-rs refresh its cluster slot map (one
    /// inside a pipeline does not); several as one pipeline, which on a
    /// cluster redis-rs splits per slot owner, keeping each node's commands
    /// in order. Never retried.
    ///
    /// # Errors
    /// [`CommandError`]: whether the commands may have run.
    pub async fn batch<T: FromRedisValue>(
        &self,
        mut cmds: Vec<redis::Cmd>,
    ) -> Result<Vec<T>, CommandError> {
        if cmds.len() == 1
            && let Some(cmd) = cmds.pop()
        {
            return self.query::<T>(cmd).await.map(|reply| vec![reply]);
        }
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        self.pipeline_query(pipe).await
    }

    /// Runs one command. Never retried.
    ///
    /// # Errors
    /// [`CommandError`]: whether the command may have run.
    pub async fn query<T: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, CommandError> {
        self.deadline(1, || async {
            on_conn!(self.0, |conn| cmd.query_async(&mut conn))
        })
        .await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use). Never retried.
    ///
    /// # Errors
    /// [`CommandError`]: whether the script may have run.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, CommandError> {
        self.deadline(1, || async {
            on_conn!(self.0, |conn| script.invoke_async(&mut conn))
        })
        .await
    }

    /// Sends `PING` (on a cluster to every master, healthy if one answers:
    /// the store still serves the sessions of the other masters' slots);
    /// records whether Redis answered in time.
    ///
    /// # Errors
    /// [`CommandError`] when it did not.
    pub async fn ping(&self) -> Result<(), CommandError> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
        match &self.0.conn {
            Conn::Single(_) => self.query::<String>(redis::cmd("PING")).await.map(drop),
            Conn::Cluster { client, conn } => {
                let routing = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::OneSucceeded),
                ));
                self.deadline(1, || async {
                    let mut conn = Conn::cluster(client, conn).await?;
                    conn.route_command(redis::cmd("PING"), routing.clone())
                        .await
                })
                .await
                .map(drop)
            }
        }
    }
}

/// A client for one server (engine.url), with the configured password.
pub(crate) fn single_client(
    config: &RedisSettings,
    protocol: redis::ProtocolVersion,
) -> Result<redis::Client, RedisConfigError> {
    let mut info: redis::ConnectionInfo = config
        .url
        .as_str()
        .parse()
        .map_err(RedisConfigError::at("engine.url"))?;
    let mut settings = info.redis_settings().clone().set_protocol(protocol);
    if let Some(password) = &config.password {
        settings = settings.set_password(password.clone());
    }
    info = info.set_redis_settings(settings);
    redis::Client::open(info).map_err(RedisConfigError::at("engine.url"))
}

/// A cluster client builder with the configured password and deadlines.
pub(crate) fn cluster_builder(config: &RedisSettings) -> redis::cluster::ClusterClientBuilder {
    let mut builder = redis::cluster::ClusterClient::builder(config.cluster_urls.clone())
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.command_timeout);
    if let Some(password) = &config.password {
        builder = builder.password(password.clone());
    }
    builder
}

/// A cluster client for commands (RESP2). It never retries by itself:
/// redis-rs would re-send a command after an I/O error, when it may
/// already have run; [`RedisHandle`] retries only what did not run.
pub(crate) fn cluster_client(
    config: &RedisSettings,
) -> redis::RedisResult<redis::cluster::ClusterClient> {
    cluster_builder(config).retries(0).build()
}
