//! The Redis engine: many herald nodes share one Redis or Redis Cluster.
//!
//! - **Read path**: channels are spread by hash over `reader_shards` pub/sub
//!   connections, each read by its own task ([`shard`]) that hands messages
//!   straight to the local fan-out. A channel is subscribed only while this
//!   node has local subscribers (plus a short linger).
//! - **Write path**: publications go through one multiplexed connection as a
//!   pipeline; a batch from the API is one pipeline.
//! - **Cluster**: sharded pub/sub (SSUBSCRIBE/SPUBLISH), so each message
//!   travels only to the shard that owns its channel's slot.
//! - **Outages**: readers reconnect with exponential backoff and full jitter,
//!   resubscribe what is still needed and send gap notices; publishing fails
//!   fast while any reader is down.

mod backend;
mod shard;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::future::{BoxFuture, FutureExt};
use redis::{AsyncCommands, aio::ConnectionManager, cluster_async::ClusterConnection};
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, mpsc, oneshot};

use self::{
    backend::{Backend, Cluster, Single},
    shard::{Command, Shard, ShardConfig},
};
use super::{Engine, EngineError, SharedDispatcher, envelope};
use crate::{
    config::EngineConfig,
    metrics as names,
    protocol::{ChannelName, EventName, Publication, unix_ms},
};

/// How many reader shards are connected, mirrored into the metrics gauge.
#[derive(Debug)]
struct Status {
    up: AtomicUsize,
    shards: usize,
}

impl Status {
    fn shard_up(&self) {
        let up = self.up.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(names::ENGINE_CONNECTED).set(f64::from(u8::from(up == self.shards)));
    }

    fn shard_down(&self) {
        self.up.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(names::ENGINE_CONNECTED).set(0.0);
    }

    fn connected(&self) -> bool {
        self.up.load(Ordering::Acquire) == self.shards
    }
}

/// The write side: one multiplexed connection, opened on first use.
enum Writer {
    Single {
        client: redis::Client,
        conn: OnceCell<ConnectionManager>,
    },
    Cluster {
        backend: Cluster,
        conn: OnceCell<ClusterConnection>,
    },
}

/// The Redis (or Redis Cluster) engine.
pub struct RedisEngine {
    shards: Vec<mpsc::UnboundedSender<Command>>,
    writer: Arc<Writer>,
    status: Arc<Status>,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("shards", &self.shards.len())
            .field("prefix", &self.prefix)
            .field("connected", &self.status.connected())
            .finish_non_exhaustive()
    }
}

/// How a node's announced stats are stored: with their expiry, in one hash.
#[derive(Serialize, Deserialize)]
struct Announcement {
    expires_ms: u64,
    stats: Box<serde_json::value::RawValue>,
}

impl RedisEngine {
    /// Starts the reader shards (they connect in the background) and
    /// prepares the writer. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// A message naming the config key when a URL is invalid.
    pub fn start(
        config: &EngineConfig,
        max_data_size: usize,
        dispatcher: SharedDispatcher,
    ) -> Result<Self, String> {
        let shard_count = config.reader_shards.max(1);
        let status = Arc::new(Status {
            up: AtomicUsize::new(0),
            shards: shard_count,
        });
        metrics::gauge!(names::ENGINE_CONNECTED).set(0.0);
        let shard_config = ShardConfig {
            prefix: config.prefix.clone(),
            linger: Duration::from_millis(config.unsubscribe_linger_ms),
            default_event: EventName::parse(&config.default_event)
                .map_err(|e| format!("engine.default_event: {e}"))?,
            max_data_size,
            backoff_min: Duration::from_millis(config.reconnect_min_ms.max(1)),
            backoff_max: Duration::from_millis(
                config.reconnect_max_ms.max(config.reconnect_min_ms),
            ),
        };
        let mut shards = Vec::with_capacity(shard_count);
        let writer = if config.cluster_urls.is_empty() {
            let client = single_client(config)?;
            for _ in 0..shard_count {
                let backend = Single {
                    client: client.clone(),
                };
                shards.push(spawn_shard(backend, &shard_config, &dispatcher, &status));
            }
            Writer::Single {
                client,
                conn: OnceCell::new(),
            }
        } else {
            for _ in 0..shard_count {
                shards.push(spawn_shard(
                    cluster_backend(config),
                    &shard_config,
                    &dispatcher,
                    &status,
                ));
            }
            Writer::Cluster {
                backend: cluster_backend(config),
                conn: OnceCell::new(),
            }
        };
        Ok(Self {
            shards,
            writer: Arc::new(writer),
            status,
            prefix: config.prefix.clone(),
            timeout: Duration::from_millis(config.command_timeout_ms),
        })
    }

    fn shard(&self, channel: &ChannelName) -> &mpsc::UnboundedSender<Command> {
        // FNV-1a: stable and cheap; per-channel order needs only that a
        // channel always maps to the same shard.
        let hash = channel
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }

    fn key(&self, channel: &ChannelName) -> String {
        format!("{}{channel}", self.prefix)
    }

    /// Runs `op` on the writer unless a reader is down (fail fast: a
    /// publication accepted while Redis is away would be lost silently).
    fn write<T, F>(&self, op: F) -> BoxFuture<'static, Result<T, EngineError>>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a Writer) -> BoxFuture<'a, redis::RedisResult<T>> + Send + 'static,
    {
        if !self.status.connected() {
            return futures_util::future::ready(Err(EngineError::Unavailable(
                "redis is unreachable".into(),
            )))
            .boxed();
        }
        let writer = Arc::clone(&self.writer);
        let timeout = self.timeout;
        async move {
            match tokio::time::timeout(timeout, op(&writer)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(err)) => Err(EngineError::Unavailable(err.to_string())),
                Err(_) => Err(EngineError::Unavailable(
                    "redis did not answer in time".into(),
                )),
            }
        }
        .boxed()
    }
}

impl Writer {
    /// Sends `(key, payload)` pairs as PUBLISH (or SPUBLISH) in one pipeline.
    async fn publish(&self, messages: Vec<(String, Vec<u8>)>) -> redis::RedisResult<()> {
        match self {
            Self::Single { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| ConnectionManager::new(client.clone()))
                    .await?;
                let mut pipe = redis::pipe();
                for (key, payload) in messages {
                    pipe.cmd("PUBLISH").arg(key).arg(payload).ignore();
                }
                match pipe.query_async::<()>(&mut conn.clone()).await {
                    // The first command after an outage finds the old socket
                    // dead; the manager reconnects, so try once more. (A
                    // reply lost after Redis ran the pipeline would deliver
                    // twice: at-least-once, never silently lost.)
                    Err(err) if err.is_connection_dropped() || err.is_io_error() => {
                        pipe.query_async::<()>(&mut conn.clone()).await
                    }
                    result => result,
                }
            }
            Self::Cluster { backend, conn } => {
                let conn = conn
                    .get_or_try_init(|| async {
                        backend.client(false)?.get_async_connection().await
                    })
                    .await?;
                // One pipeline: redis-rs splits it per slot owner and keeps
                // each node's commands in order, so per-channel order holds.
                let mut pipe = redis::pipe();
                for (key, payload) in messages {
                    pipe.cmd("SPUBLISH").arg(key).arg(payload).ignore();
                }
                pipe.query_async::<()>(&mut conn.clone()).await
            }
        }
    }

    async fn hset(&self, key: String, field: String, value: String) -> redis::RedisResult<()> {
        match self {
            Self::Single { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| ConnectionManager::new(client.clone()))
                    .await?;
                conn.clone().hset(key, field, value).await
            }
            Self::Cluster { backend, conn } => {
                let conn = conn
                    .get_or_try_init(|| async {
                        backend.client(false)?.get_async_connection().await
                    })
                    .await?;
                conn.clone().hset(key, field, value).await
            }
        }
    }

    async fn hgetall(&self, key: String) -> redis::RedisResult<Vec<(String, String)>> {
        match self {
            Self::Single { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| ConnectionManager::new(client.clone()))
                    .await?;
                conn.clone().hgetall(key).await
            }
            Self::Cluster { backend, conn } => {
                let conn = conn
                    .get_or_try_init(|| async {
                        backend.client(false)?.get_async_connection().await
                    })
                    .await?;
                conn.clone().hgetall(key).await
            }
        }
    }
}

fn spawn_shard<B: Backend>(
    backend: B,
    config: &ShardConfig,
    dispatcher: &SharedDispatcher,
    status: &Arc<Status>,
) -> mpsc::UnboundedSender<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    let shard = Shard::new(
        backend,
        config.clone(),
        rx,
        Arc::clone(dispatcher),
        Arc::clone(status),
    );
    tokio::spawn(shard.run());
    tx
}

fn single_client(config: &EngineConfig) -> Result<redis::Client, String> {
    let mut info: redis::ConnectionInfo = config
        .url
        .as_str()
        .parse()
        .map_err(|e| format!("engine.url: {e}"))?;
    if let Some(password) = &config.password {
        let settings = info.redis_settings().clone().set_password(password.clone());
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info).map_err(|e| format!("engine.url: {e}"))
}

fn cluster_backend(config: &EngineConfig) -> Cluster {
    Cluster {
        urls: config.cluster_urls.clone(),
        password: config.password.clone(),
    }
}

impl Engine for RedisEngine {
    fn publish(&self, batch: Vec<Publication>) -> BoxFuture<'static, Result<(), EngineError>> {
        let messages: Vec<_> = batch
            .iter()
            .map(|p| (self.key(&p.channel), envelope::encode(p)))
            .collect();
        self.write(move |writer| writer.publish(messages).boxed())
    }

    fn subscribe(&self, channel: ChannelName) -> BoxFuture<'static, Result<(), EngineError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .shard(&channel)
            .send(Command::Subscribe(channel, reply));
        async move {
            sent.map_err(|_| EngineError::Unavailable("engine stopped".into()))?;
            answer
                .await
                .unwrap_or_else(|_| Err(EngineError::Unavailable("engine stopped".into())))
        }
        .boxed()
    }

    fn unsubscribe(&self, channel: ChannelName) {
        // A closed shard means the engine is shutting down; nothing to undo.
        let _ = self.shard(&channel).send(Command::Unsubscribe(channel));
    }

    fn disconnect(&self, channel: ChannelName) -> BoxFuture<'static, Result<(), EngineError>> {
        let messages = vec![(self.key(&channel), envelope::DISCONNECT.to_vec())];
        self.write(move |writer| writer.publish(messages).boxed())
    }

    fn is_connected(&self) -> bool {
        self.status.connected()
    }

    fn announce(
        &self,
        node_id: &str,
        stats: String,
        ttl_secs: u64,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        let key = format!("{}nodes", self.prefix);
        let field = node_id.to_owned();
        let value = serde_json::value::RawValue::from_string(stats)
            .map(|stats| Announcement {
                expires_ms: unix_ms() + ttl_secs * 1000,
                stats,
            })
            .and_then(|a| serde_json::to_string(&a));
        match value {
            Ok(value) => self.write(move |writer| writer.hset(key, field, value).boxed()),
            Err(err) => {
                futures_util::future::ready(Err(EngineError::Failed(Box::new(err)))).boxed()
            }
        }
    }

    fn nodes(&self) -> BoxFuture<'static, Result<Vec<String>, EngineError>> {
        let key = format!("{}nodes", self.prefix);
        let read = self.write(move |writer| writer.hgetall(key).boxed());
        async move {
            let now = unix_ms();
            Ok(read
                .await?
                .into_iter()
                .filter_map(|(_, value)| serde_json::from_str::<Announcement>(&value).ok())
                .filter(|a| a.expires_ms > now)
                .map(|a| a.stats.get().to_owned())
                .collect())
        }
        .boxed()
    }
}
