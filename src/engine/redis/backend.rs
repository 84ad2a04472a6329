//! The two kinds of Redis pub/sub connection a reader shard can hold:
//! classic pub/sub on one server, and sharded pub/sub on a Redis Cluster.

use std::future::Future;

use futures_util::StreamExt;
use redis::{
    ProtocolVersion, PushInfo, PushKind, RedisResult, Value,
    aio::{PubSubSink, PubSubStream},
    cluster_async::ClusterConnection,
};
use tokio::sync::mpsc;

use crate::config::EngineConfig;

/// Something a reader shard hears on its connection.
#[derive(Debug)]
pub(super) enum Event {
    /// A message on a (prefixed) Redis channel.
    Message { channel: String, payload: Vec<u8> },
    /// The server dropped our subscription to a channel (a cluster slot moved).
    Dropped(String),
}

/// Opens pub/sub connections for one reader shard.
pub(super) trait Backend: Send + Sync + 'static {
    /// The connection type.
    type Conn: Connection;
    /// Opens a fresh connection with no subscriptions.
    fn connect(&self) -> impl Future<Output = RedisResult<Self::Conn>> + Send;
}

/// One pub/sub connection.
pub(super) trait Connection: Send + 'static {
    /// Subscribes to every channel in one command.
    fn subscribe(&mut self, channels: Vec<String>) -> impl Future<Output = RedisResult<()>> + Send;
    /// Unsubscribes from every channel in one command.
    fn unsubscribe(
        &mut self,
        channels: Vec<String>,
    ) -> impl Future<Output = RedisResult<()>> + Send;
    /// The next event; `None` when the connection is lost.
    ///
    /// Must be cancel safe: the shard selects on it.
    fn next(&mut self) -> impl Future<Output = Option<Event>> + Send;
    /// A health check: resolves when Redis answered a `PING` on this
    /// connection. Owns what it needs, so the shard can poll it next to
    /// `next` without holding the connection.
    fn ping(&self) -> impl Future<Output = RedisResult<()>> + Send + 'static;
}

/// Classic pub/sub (SUBSCRIBE/PUBLISH) on one Redis server.
pub(super) struct Single {
    pub(super) client: redis::Client,
}

pub(super) struct SingleConn {
    sink: PubSubSink,
    stream: PubSubStream,
}

impl Backend for Single {
    type Conn = SingleConn;

    async fn connect(&self) -> RedisResult<SingleConn> {
        let (sink, stream) = self.client.get_async_pubsub().await?.split();
        Ok(SingleConn { sink, stream })
    }
}

impl Connection for SingleConn {
    async fn subscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
        self.sink.subscribe(channels).await
    }

    async fn unsubscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
        self.sink.unsubscribe(channels).await
    }

    async fn next(&mut self) -> Option<Event> {
        let msg = self.stream.next().await?;
        Some(Event::Message {
            channel: msg.get_channel_name().to_owned(),
            payload: msg.get_payload_bytes().to_vec(),
        })
    }

    fn ping(&self) -> impl Future<Output = RedisResult<()>> + Send + 'static {
        let mut sink = self.sink.clone();
        // In subscribed mode the reply is an array ("pong", ""), not "PONG".
        async move { sink.ping::<Value>().await.map(drop) }
    }
}

/// Sharded pub/sub (SSUBSCRIBE/SPUBLISH) on a Redis Cluster: each channel is
/// served by the shard that owns its slot, so pub/sub traffic spreads over
/// the cluster instead of being broadcast to every node.
pub(super) struct Cluster {
    pub(super) config: EngineConfig,
}

pub(super) struct ClusterConn {
    conn: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Backend for Cluster {
    type Conn = ClusterConn;

    async fn connect(&self) -> RedisResult<ClusterConn> {
        let (tx, pushes) = mpsc::unbounded_channel();
        let builder = super::cluster_builder(&self.config)
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(tx);
        let conn = builder.build()?.get_async_connection().await?;
        Ok(ClusterConn { conn, pushes })
    }
}

impl Connection for ClusterConn {
    async fn subscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
        // SSUBSCRIBE takes channels of one slot only; redis-rs routes each
        // command by its first channel, so send one command per channel.
        for channel in channels {
            self.conn.ssubscribe(channel).await?;
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
        for channel in channels {
            self.conn.sunsubscribe(channel).await?;
        }
        Ok(())
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            let push = self.pushes.recv().await?;
            match push.kind {
                PushKind::SMessage | PushKind::Message => {
                    let mut data = push.data.into_iter();
                    if let (Some(channel), Some(payload)) = (data.next(), data.next())
                        && let (Some(channel), Some(payload)) = (text(channel), bytes(payload))
                    {
                        return Some(Event::Message { channel, payload });
                    }
                }
                PushKind::SUnsubscribe => {
                    if let Some(channel) = push.data.into_iter().next().and_then(text) {
                        return Some(Event::Dropped(channel));
                    }
                }
                PushKind::Disconnection => return None,
                _ => {}
            }
        }
    }

    fn ping(&self) -> impl Future<Output = RedisResult<()>> + Send + 'static {
        let mut conn = self.conn.clone();
        async move {
            redis::cmd("PING")
                .query_async::<Value>(&mut conn)
                .await
                .map(drop)
        }
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    bytes(value).and_then(|b| String::from_utf8(b).ok())
}
