//! The Redis engine: many herald nodes share one Redis or Redis Cluster.
//!
//! - **Read path**: pub/sub connections, each read by its own task
//!   (`shard`) that hands messages straight to the local fan-out
//!   (`readers`): on one server channels are spread by hash over
//!   `reader_shards` connections; on a cluster there is one reader per master
//!   and a channel goes to the reader of its slot. A channel is subscribed
//!   only while this node has local subscribers (plus a short linger).
//! - **Health**: every reader PINGs its connection; one that hears nothing
//!   within the ping timeout counts as down, however healthy its socket.
//! - **Write path**: publications go through one multiplexed connection as a
//!   pipeline; a batch from the API is one pipeline. Nothing that may have
//!   reached Redis is sent again (`handle`); idempotency keys make a
//!   publisher's retry safe.
//! - **Cluster**: sharded pub/sub (SSUBSCRIBE/SPUBLISH), so each message
//!   travels only to the shard that owns its channel's slot.
//! - **Outages**: readers reconnect with exponential backoff and full jitter,
//!   resubscribe what is still needed and send gap notices; publishing fails
//!   fast for channels whose reader is down.

mod backend;
mod emitter;
mod readers;
mod resp;
mod shard;
mod stream;
mod topology;

pub use self::emitter::listen_to_emitter;
pub use crate::redis_conn::{CommandError, RedisConfigError, RedisHandle};
use crate::redis_conn::{cluster_builder, single_client};

use std::{sync::Arc, time::Duration};

use futures_util::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use self::stream::StreamReader;
use self::{
    backend::{Cluster, Single},
    readers::{Readers, Routing},
    shard::{Command, ShardConfig},
    stream::{PUBLISH_HISTORY, new_epoch},
};
use super::{
    Engine, EngineConfig, EngineError, HistoryPage, Keyed, Kick, NodeRegistry, NodeStats, Once,
    SharedDispatcher, envelope,
};
use crate::{
    metrics as names,
    protocol::{
        ChannelName, EventName, HistoryQuery, HistorySpec, NameError, Publication, unix_ms,
    },
};

/// The Redis (or Redis Cluster) engine.
pub struct RedisEngine {
    readers: Routing,
    writer: RedisHandle,
    prefix: String,
    timeout: Duration,
    /// A Redis Cluster (sharded pub/sub), not one server.
    cluster: bool,
    idempotency_window_ms: u64,
    /// The event of history entries that are not envelopes (never written
    /// by herald; kept for symmetry with the readers).
    default_event: EventName,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("readers", &self.readers.get().map(|r| r.shards.len()))
            .field("prefix", &self.prefix)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// Publishes once per idempotency key, atomically: KEYS[1] the key, KEYS[2]
/// the channel (same slot on a cluster: the key's hash tag is the channel);
/// ARGV window ms, answer to remember, publish command, payload. Returns ''
/// when it published, or the answer remembered by the first attempt.
const PUBLISH_ONCE: &str = r"
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then
  redis.call(ARGV[3], KEYS[2], ARGV[4])
  return ''
end
return redis.call('GET', KEYS[1]) or ''
";

/// Why the Redis engine cannot start from `[engine]`; names the key.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A URL (`engine.url`, `engine.cluster_urls`) redis-rs refuses.
    #[error(transparent)]
    Redis(#[from] RedisConfigError),
    /// `engine.default_event` is not a valid event name.
    #[error("engine.default_event: {0}")]
    DefaultEvent(#[from] NameError),
}

/// How a node's announced stats are stored: with their expiry, in one hash.
#[derive(Serialize, Deserialize)]
struct Announcement {
    expires_ms: u64,
    stats: NodeStats,
}

impl RedisEngine {
    /// Starts the reader shards (they connect in the background) and
    /// prepares the writer. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`SetupError`], naming the config key that cannot be used.
    pub fn start(
        config: &EngineConfig,
        max_data_size: usize,
        dispatcher: SharedDispatcher,
    ) -> Result<Self, SetupError> {
        let shard_count = config.reader_shards.max(1);
        let default_event = EventName::parse(&config.default_event)?;
        let writer = RedisHandle::new(&config.redis())?;
        let readers: Routing = Arc::default();
        let shard_config = ShardConfig {
            prefix: config.prefix.clone(),
            linger: Duration::from_millis(config.unsubscribe_linger_ms),
            default_event: default_event.clone(),
            max_data_size,
            backoff_min: Duration::from_millis(config.reconnect_min_ms.max(1)),
            backoff_max: Duration::from_millis(
                config.reconnect_max_ms.max(config.reconnect_min_ms),
            ),
            connect_timeout: config.connect_timeout(),
            command_timeout: config.command_timeout(),
            ping_interval: Duration::from_millis(config.ping_interval_ms),
            ping_timeout: Duration::from_millis(config.ping_timeout_ms),
            peers: Arc::downgrade(&readers),
            streams: StreamReader {
                prefix: config.prefix.clone(),
                default_event: default_event.clone(),
            },
            writer: writer.clone(),
        };
        if config.cluster_urls.is_empty() {
            // RESP2: the pub/sub connection reads messages as a stream.
            let backend = Single {
                client: single_client(&config.redis(), redis::ProtocolVersion::RESP2)?,
            };
            let _ = readers.set(Readers::hashed(
                shard_count,
                &backend,
                &shard_config,
                &dispatcher,
            ));
        } else if let Some(seeds) = plain_cluster_seeds(config)? {
            tokio::spawn(readers::discover(
                Arc::clone(&readers),
                seeds,
                shard_config,
                dispatcher,
            ));
        } else {
            // TLS: readers over whole-cluster connections (redis-rs speaks TLS).
            let _ = readers.set(Readers::hashed(
                shard_count,
                &cluster_backend(config),
                &shard_config,
                &dispatcher,
            ));
        }
        Ok(Self {
            readers,
            writer,
            prefix: config.prefix.clone(),
            timeout: config.command_timeout(),
            cluster: !config.cluster_urls.is_empty(),
            idempotency_window_ms: config.idempotency_window_ms,
            default_event,
        })
    }

    /// The reader shard serving `channel`, if the readers are running.
    fn shard_of(&self, channel: &ChannelName) -> Option<(usize, &Readers)> {
        let readers = self.readers.get()?;
        Some((readers.shard_of(&self.key(channel)), readers))
    }

    /// Whether the reader that would receive `channel` is up: publishing
    /// to a channel nobody on this node can hear fails fast.
    fn can_carry(&self, channel: &ChannelName) -> bool {
        self.shard_of(channel)
            .is_some_and(|(shard, readers)| readers.status.shard_up(shard))
    }

    fn key(&self, channel: &ChannelName) -> String {
        format!("{}{channel}", self.prefix)
    }

    /// Where an idempotency key lives: hash-tagged with the channel's Redis
    /// name, so that on a cluster it shares the channel's slot and one
    /// script can check the key and publish.
    fn idempotency_key(&self, channel: &ChannelName, key: &str) -> String {
        format!("{}idem:{{{}}}:{key}", self.prefix, self.key(channel))
    }

    /// The keys of a channel's stream: the list and the meta hash,
    /// hash-tagged like the idempotency keys.
    fn stream_keys(&self, channel: &ChannelName) -> (String, String) {
        let tag = self.key(channel);
        (
            format!("{}history:{{{tag}}}", self.prefix),
            format!("{}meta:{{{tag}}}", self.prefix),
        )
    }

    /// The command that publishes `payload` on the Redis channel `key`:
    /// `PUBLISH`, or `SPUBLISH` on a cluster. Bare, not in a script: Redis
    /// refuses scripts on every shard while one master is down (the cluster
    /// state is `fail` until a replica takes over), but keeps serving
    /// sharded pub/sub (`cluster-allow-pubsubshard-when-down`).
    fn plain_publish(&self, key: String, payload: impl redis::ToRedisArgs) -> redis::Cmd {
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(key).arg(payload);
        cmd
    }

    /// `PUBLISH`, or `SPUBLISH` on a cluster (sharded pub/sub).
    fn publish_command(&self) -> &'static str {
        if self.cluster { "SPUBLISH" } else { "PUBLISH" }
    }

    /// The command that publishes `publication`: the history script on a
    /// channel with history (checking `idempotency` first if given), else
    /// [`Self::plain_publish`] or the idempotency script.
    fn publish_cmd(
        &self,
        publication: &Publication,
        idempotency: Option<(&str, u64)>,
    ) -> redis::Cmd {
        let Some(spec) = publication.history else {
            return match idempotency {
                None => self.plain_publish(
                    self.key(&publication.channel),
                    envelope::encode(publication),
                ),
                Some((key, answer)) => {
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(PUBLISH_ONCE)
                        .arg(2)
                        .arg(self.idempotency_key(&publication.channel, key))
                        .arg(self.key(&publication.channel))
                        .arg(self.idempotency_window_ms)
                        .arg(answer)
                        .arg(self.publish_command())
                        .arg(envelope::encode(publication));
                    cmd
                }
            };
        };
        let (stream, meta) = self.stream_keys(&publication.channel);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUBLISH_HISTORY)
            .arg(if idempotency.is_some() { 4 } else { 3 })
            .arg(stream)
            .arg(meta)
            .arg(self.key(&publication.channel));
        if let Some((key, _)) = idempotency {
            cmd.arg(self.idempotency_key(&publication.channel, key));
        }
        cmd.arg(envelope::encode_open(publication))
            .arg(spec.size.max(1))
            .arg(spec.ttl_secs.max(1))
            .arg(spec.meta_ttl_secs.max(spec.ttl_secs).max(1))
            .arg(new_epoch())
            .arg(self.publish_command());
        if let Some((_, answer)) = idempotency {
            cmd.arg(self.idempotency_window_ms).arg(answer);
        }
        cmd
    }

    /// Runs `op` on the writer unless the readers of `channels` are down
    /// (fail fast: a publication accepted while Redis is away would be lost
    /// silently); with no channels, unless every reader is down.
    fn write<'a, T, F>(
        &self,
        channels: impl IntoIterator<Item = &'a ChannelName>,
        op: F,
    ) -> BoxFuture<'static, Result<T, EngineError>>
    where
        T: Send + 'static,
        F: FnOnce(RedisHandle) -> BoxFuture<'static, Result<T, CommandError>> + Send + 'static,
    {
        let mut channels = channels.into_iter().peekable();
        let down = if channels.peek().is_some() {
            channels
                .find(|c| !self.can_carry(c))
                .map(|c| format!("the redis shard serving {c} is unreachable"))
        } else {
            (!self.is_connected()).then(|| "redis is unreachable".to_owned())
        };
        if let Some(why) = down {
            return futures_util::future::ready(Err(EngineError::Unavailable(why))).boxed();
        }
        let writer = self.writer.clone();
        async move { op(writer).await.map_err(engine_error) }.boxed()
    }
}

fn unavailable() -> BoxFuture<'static, Result<(), EngineError>> {
    futures_util::future::ready(Err(EngineError::Unavailable("redis is unreachable".into())))
        .boxed()
}

/// What a failed command means for the caller of the engine.
fn engine_error(err: CommandError) -> EngineError {
    match err {
        CommandError::NotSent => EngineError::Unavailable("redis is unreachable".into()),
        CommandError::Unknown => {
            metrics::counter!(names::PUBLISH_OUTCOME_UNKNOWN).increment(1);
            EngineError::OutcomeUnknown
        }
        CommandError::Refused => EngineError::Failed("redis refused the command".into()),
    }
}

/// The cluster seeds, if none uses TLS (per-master readers speak plain
/// TCP; a TLS cluster keeps readers over whole-cluster connections).
fn plain_cluster_seeds(
    config: &EngineConfig,
) -> Result<Option<Vec<redis::ConnectionInfo>>, RedisConfigError> {
    let mut seeds = Vec::new();
    for url in &config.cluster_urls {
        let mut info: redis::ConnectionInfo = url
            .as_str()
            .parse()
            .map_err(RedisConfigError::at("engine.cluster_urls"))?;
        if !matches!(info.addr(), redis::ConnectionAddr::Tcp(..)) {
            return Ok(None);
        }
        if let Some(password) = &config.password {
            let settings = info.redis_settings().clone().set_password(password.clone());
            info = info.set_redis_settings(settings);
        }
        seeds.push(info);
    }
    Ok(Some(seeds))
}

fn cluster_backend(config: &EngineConfig) -> Cluster {
    Cluster {
        config: config.clone(),
    }
}

impl Engine for RedisEngine {
    fn publish(&self, batch: Vec<Publication>) -> BoxFuture<'static, Result<(), EngineError>> {
        let cmds: Vec<redis::Cmd> = batch.iter().map(|p| self.publish_cmd(p, None)).collect();
        self.write(batch.iter().map(|p| &p.channel), move |writer| {
            // In order per channel (see `RedisHandle::batch`).
            async move { writer.batch::<redis::Value>(cmds).await.map(drop) }.boxed()
        })
    }

    fn publish_once(
        &self,
        batch: Vec<Keyed>,
    ) -> BoxFuture<'static, Result<Vec<Once>, EngineError>> {
        // One script per publication, all in one batch: each is atomic
        // (check the key, publish), and on a cluster each goes to its slot.
        // EVAL, not EVALSHA: a NOSCRIPT reply inside a pipeline would make
        // the whole batch fail, and the script is short.
        let cmds: Vec<redis::Cmd> = batch
            .iter()
            .map(|k| self.publish_cmd(&k.publication, Some((&k.key, k.answer))))
            .collect();
        let write = self.write(
            batch.iter().map(|k| &k.publication.channel),
            move |writer| async move { writer.batch::<String>(cmds).await }.boxed(),
        );
        async move {
            let replies = write.await?;
            let outcomes: Vec<Once> = replies
                .iter()
                .map(|reply| match reply.parse() {
                    Ok(answer) => Once::Duplicate(answer),
                    Err(_) => Once::Published,
                })
                .collect();
            let duplicates = outcomes
                .iter()
                .filter(|o| matches!(o, Once::Duplicate(_)))
                .count();
            metrics::counter!(names::PUBLISH_DUPLICATES_SUPPRESSED).increment(duplicates as u64);
            Ok(outcomes)
        }
        .boxed()
    }

    fn history(
        &self,
        channel: ChannelName,
        spec: HistorySpec,
        query: HistoryQuery,
    ) -> BoxFuture<'static, Result<HistoryPage, EngineError>> {
        let read = StreamReader {
            prefix: self.prefix.clone(),
            default_event: self.default_event.clone(),
        };
        let meta_ttl = spec.meta_ttl_secs.max(spec.ttl_secs).max(1);
        let cmd = read.command(&channel, query, Some(meta_ttl));
        let query_redis = self.write([&channel], move |writer| {
            async move { writer.query::<(String, u64, Vec<Vec<u8>>)>(cmd).await }.boxed()
        });
        async move { Ok(read.page(&channel, query, query_redis.await?)) }.boxed()
    }

    fn subscribe(&self, channel: ChannelName) -> BoxFuture<'static, Result<(), EngineError>> {
        // A shard that is down answers at once; one that is up answers
        // within its command deadline. The outer deadline covers a shard
        // caught between the two (reconnecting).
        let Some((shard, readers)) = self.shard_of(&channel) else {
            return unavailable();
        };
        if !readers.status.shard_up(shard) {
            return unavailable();
        }
        let (reply, answer) = oneshot::channel();
        let sent = readers.shards[shard].send(Command::Subscribe(channel, reply));
        let deadline = self.timeout;
        async move {
            sent.map_err(|_| EngineError::Unavailable("engine stopped".into()))?;
            match tokio::time::timeout(deadline, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(EngineError::Unavailable("engine stopped".into())),
                Err(_) => Err(EngineError::Unavailable(
                    "redis did not answer the subscription in time".into(),
                )),
            }
        }
        .boxed()
    }

    fn unsubscribe(&self, channel: ChannelName) {
        // No readers yet: nothing was subscribed. A closed shard means the
        // engine is shutting down; nothing to undo either.
        if let Some((shard, readers)) = self.shard_of(&channel) {
            let _ = readers.shards[shard].send(Command::Unsubscribe(channel));
        }
    }

    fn disconnect(
        &self,
        channel: ChannelName,
        kick: Kick,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        let cmd = self.plain_publish(self.key(&channel), envelope::control(kick));
        self.write([&channel], move |writer| {
            async move { writer.query::<redis::Value>(cmd).await.map(drop) }.boxed()
        })
    }

    fn is_connected(&self) -> bool {
        // On a cluster, one master down leaves the other shards' channels
        // working: the node stays usable (see `degraded`).
        self.readers.get().is_some_and(Readers::serving)
    }

    fn degraded(&self) -> Vec<String> {
        self.readers
            .get()
            .map_or_else(|| vec!["readers not started".into()], |r| r.status.down())
    }
}

impl NodeRegistry for RedisEngine {
    fn announce(
        &self,
        stats: &NodeStats,
        ttl_secs: u64,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        let key = format!("{}nodes", self.prefix);
        let field = stats.node_id.clone();
        let value = serde_json::to_string(&Announcement {
            expires_ms: unix_ms().saturating_add(ttl_secs.saturating_mul(1000)),
            stats: stats.clone(),
        });
        match value {
            Ok(value) => {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(key).arg(field).arg(value);
                self.write([], move |writer| {
                    async move { writer.query::<()>(cmd).await }.boxed()
                })
            }
            Err(err) => {
                futures_util::future::ready(Err(EngineError::Failed(Box::new(err)))).boxed()
            }
        }
    }

    fn nodes(&self) -> BoxFuture<'static, Result<Vec<NodeStats>, EngineError>> {
        let key = format!("{}nodes", self.prefix);
        let handle = self.writer.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&key);
        let read = self.write([], move |writer| {
            async move { writer.query::<Vec<(String, String)>>(cmd).await }.boxed()
        });
        async move {
            let now = unix_ms();
            let mut live = Vec::new();
            let mut gone = Vec::new();
            for (node, value) in read.await? {
                match serde_json::from_str::<Announcement>(&value) {
                    Ok(a) if a.expires_ms > now => live.push(a.stats),
                    _ => gone.push(node),
                }
            }
            // Pods come and go with new names: forget the ones that stopped
            // announcing, or the hash would grow with every restart.
            if !gone.is_empty() {
                let mut hdel = redis::cmd("HDEL");
                hdel.arg(&key).arg(gone);
                if let Err(err) = handle.query::<()>(hdel).await {
                    tracing::debug!(error = %err, "forgetting stale nodes failed");
                }
            }
            Ok(live)
        }
        .boxed()
    }
}
