//! The kinds of Redis pub/sub connection a reader shard can hold: classic
//! pub/sub on one server, sharded pub/sub on one Redis Cluster master (one
//! reader per master), and sharded pub/sub over a whole-cluster connection
//! (used for TLS clusters).

use std::{
    collections::VecDeque,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::BytesMut;

use futures_util::StreamExt;
use redis::ConnectionInfo;
use redis::{
    ProtocolVersion, PushInfo, PushKind, RedisResult, Value,
    aio::{PubSubSink, PubSubStream},
    cluster_async::ClusterConnection,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    resp::{self, Frame},
    topology::{self, Node, Topology},
};
use crate::engine::EngineConfig;

/// Something a reader shard hears on its connection.
#[derive(Debug)]
pub(super) enum Event {
    /// A message on a (prefixed) Redis channel.
    Message { channel: String, payload: Vec<u8> },
    /// The server dropped our subscription to a channel (a cluster slot moved).
    Dropped(String),
}

/// A channel whose slot another cluster node serves now (`-MOVED`).
#[derive(Debug, Clone)]
pub(super) struct Moved {
    /// The Redis channel.
    pub(super) key: String,
    /// The node serving its slot now, `host:port`.
    pub(super) node: String,
}

/// Opens pub/sub connections for one reader shard.
pub(super) trait Backend: Send + Sync + 'static {
    /// The connection type.
    type Conn: Connection;
    /// Opens a fresh connection with no subscriptions.
    fn connect(&self) -> impl Future<Output = RedisResult<Self::Conn>> + Send;
    /// Which node serves this reader's slots as master, `host:port`, in the
    /// view of the node `here` (itself `host:port`): only a backend that
    /// follows one cluster master (see [`ClusterNode`]) answers, if `here`
    /// does.
    fn master_seen_by(&self, _here: &str) -> impl Future<Output = Option<String>> + Send {
        std::future::ready(None)
    }
}

/// One pub/sub connection.
pub(super) trait Connection: Send + 'static {
    /// Subscribes to every channel. Returns the channels refused because
    /// another node serves their slot (only a per-node cluster reader).
    fn subscribe(
        &mut self,
        channels: Vec<String>,
    ) -> impl Future<Output = RedisResult<Vec<Moved>>> + Send;
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
    /// The node this connection reaches, `host:port`, if it is one node of
    /// a cluster.
    fn node(&self) -> Option<String> {
        None
    }
}

/// Classic pub/sub (SUBSCRIBE/PUBLISH) on one Redis server.
#[derive(Clone)]
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
    async fn subscribe(&mut self, channels: Vec<String>) -> RedisResult<Vec<Moved>> {
        self.sink.subscribe(channels).await.map(|()| Vec::new())
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
#[derive(Clone)]
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
        let builder = super::cluster_builder(&self.config.redis())
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(tx);
        let conn = builder.build()?.get_async_connection().await?;
        Ok(ClusterConn { conn, pushes })
    }
}

impl Connection for ClusterConn {
    async fn subscribe(&mut self, channels: Vec<String>) -> RedisResult<Vec<Moved>> {
        // SSUBSCRIBE takes channels of one slot only; redis-rs routes each
        // command by its first channel (and follows MOVED), so send one
        // command per channel.
        for channel in channels {
            self.conn.ssubscribe(channel).await?;
        }
        Ok(Vec::new())
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

/// Sharded pub/sub on the one master that currently serves `slot` (and the
/// other slots of its group): a master going down takes only its own
/// group's reader with it. Each connect asks the cluster for its slot map,
/// so a promoted replica or a returning master is found.
pub(super) struct ClusterNode {
    /// Nodes to ask for the slot map: the configured seeds, then every node
    /// the cluster named since.
    pub(super) seeds: Arc<Mutex<Vec<ConnectionInfo>>>,
    pub(super) slot: u16,
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
}

impl ClusterNode {
    fn learn(&self, topology: &Topology) {
        let mut seeds = self.seeds.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(first) = seeds.first().cloned() else {
            return;
        };
        for node in topology.nodes() {
            let info = topology::info_for(&first, &node);
            if !seeds.iter().any(|s| s.addr() == info.addr()) {
                seeds.push(info);
            }
        }
    }
}

fn client_error(what: &'static str, detail: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, what, detail))
}

impl ClusterNode {
    fn seeds(&self) -> Vec<ConnectionInfo> {
        self.seeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Backend for ClusterNode {
    type Conn = NodeConn;

    async fn connect(&self) -> RedisResult<NodeConn> {
        let seeds = self.seeds();
        let topology = topology::fetch(&seeds, self.connect_timeout, self.command_timeout)
            .await
            .map_err(|e| client_error("cluster slot map unavailable", e.to_string()))?;
        self.learn(&topology);
        let mut master = topology
            .master_of(self.slot)
            .ok_or_else(|| client_error("slot not served", self.slot.to_string()))?
            .clone();
        let Some(seed) = seeds.first() else {
            return Err(client_error("no cluster seed", String::new()));
        };
        // The seed that answered may not have heard of a failover yet; the
        // master it names knows whether it still is one (and one that does
        // not answer would not serve us either).
        let named = master.to_string();
        let current = self
            .master_seen_by(&named)
            .await
            .ok_or_else(|| client_error("cluster master did not answer", named))?;
        if let Some(node) = topology::Node::parse(&current) {
            master = node;
        }
        NodeConn::open(seed.redis_settings(), &master, self.command_timeout).await
    }

    async fn master_seen_by(&self, here: &str) -> Option<String> {
        let node = topology::Node::parse(here)?;
        let seed = topology::info_for(self.seeds().first()?, &node);
        let topology = topology::fetch(&[seed], self.connect_timeout, self.command_timeout)
            .await
            .ok()?;
        topology.master_of(self.slot).map(ToString::to_string)
    }
}

/// A RESP2 sharded pub/sub connection to one cluster node.
pub(super) struct NodeConn {
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    frames: mpsc::UnboundedReceiver<Frame>,
    /// Counts `PING` replies, which the reader task takes out of the stream.
    pongs: watch::Receiver<u64>,
    /// Events read while waiting for subscription confirmations.
    pending: VecDeque<Event>,
    reader: JoinHandle<()>,
    /// `host:port`.
    node: String,
}

impl Drop for NodeConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl NodeConn {
    async fn open(
        settings: &redis::RedisConnectionInfo,
        node: &Node,
        deadline: Duration,
    ) -> RedisResult<Self> {
        let tcp = TcpStream::connect((node.host.as_str(), node.port)).await?;
        tcp.set_nodelay(true)?;
        let (read, write) = tcp.into_split();
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let (pongs_tx, pongs) = watch::channel(0);
        let reader = tokio::spawn(read_frames(read, frames_tx, pongs_tx));
        let mut conn = Self {
            writer: Arc::new(tokio::sync::Mutex::new(write)),
            frames,
            pongs,
            pending: VecDeque::new(),
            reader,
            node: node.to_string(),
        };
        if let Some(password) = settings.password() {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = settings.username() {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            conn.write(resp::encode(&auth)).await?;
            match tokio::time::timeout(deadline, conn.frames.recv()).await {
                Ok(Some(Frame::Simple(_))) => {}
                Ok(Some(Frame::Error(err))) => return Err(client_error("AUTH refused", err)),
                _ => return Err(client_error("AUTH not answered", node.to_string())),
            }
        }
        Ok(conn)
    }

    async fn write(&self, bytes: Vec<u8>) -> RedisResult<()> {
        self.writer.lock().await.write_all(&bytes).await?;
        Ok(())
    }

    fn event(frame: Frame) -> Option<Event> {
        let Frame::Array(Some(items)) = frame else {
            return None;
        };
        let mut items = items.into_iter();
        let kind = items.next()?.into_bytes()?;
        let channel = String::from_utf8(items.next()?.into_bytes()?).ok()?;
        match kind.as_slice() {
            b"smessage" | b"message" => Some(Event::Message {
                channel,
                payload: items.next()?.into_bytes()?,
            }),
            b"sunsubscribe" => Some(Event::Dropped(channel)),
            _ => None,
        }
    }
}

/// Reads frames until the connection ends; `PING` replies go to `pongs`.
async fn read_frames(
    mut read: OwnedReadHalf,
    frames: mpsc::UnboundedSender<Frame>,
    pongs: watch::Sender<u64>,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        match resp::decode(&mut buf) {
            Ok(Some(frame)) => {
                if is_pong(&frame) {
                    pongs.send_modify(|n| *n += 1);
                } else if frames.send(frame).is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(resp::Malformed) => {
                tracing::warn!("malformed reply from a redis cluster node; reconnecting");
                return;
            }
        }
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn is_confirmation(frame: &Frame) -> bool {
    matches!(frame, Frame::Array(Some(items))
        if matches!(items.first(), Some(Frame::Bulk(Some(k))) if k == b"ssubscribe"))
}

fn is_pong(frame: &Frame) -> bool {
    match frame {
        Frame::Simple(text) => text.eq_ignore_ascii_case("pong"),
        Frame::Array(Some(items)) => items
            .first()
            .is_some_and(|kind| matches!(kind, Frame::Bulk(Some(k)) if k == b"pong")),
        _ => false,
    }
}

impl Connection for NodeConn {
    async fn subscribe(&mut self, channels: Vec<String>) -> RedisResult<Vec<Moved>> {
        // One SSUBSCRIBE per channel: channels of a group span many slots.
        // Replies come in command order, messages interleaved.
        let mut bytes = Vec::new();
        for channel in &channels {
            bytes.extend(resp::encode(&[b"SSUBSCRIBE", channel.as_bytes()]));
        }
        self.write(bytes).await?;
        let mut moved = Vec::new();
        let mut replies = channels.into_iter();
        let mut next = replies.next();
        while let Some(channel) = next.take() {
            match self.frames.recv().await {
                None => return Err(client_error("connection lost", String::new())),
                Some(Frame::Error(err)) => match err.strip_prefix("MOVED ") {
                    Some(target) => moved.push(Moved {
                        key: channel,
                        node: target.split(' ').nth(1).unwrap_or_default().to_owned(),
                    }),
                    None => return Err(client_error("SSUBSCRIBE refused", err)),
                },
                Some(frame) if is_confirmation(&frame) => {}
                Some(frame) => {
                    if let Some(event) = Self::event(frame) {
                        self.pending.push_back(event);
                    }
                    next = Some(channel);
                    continue;
                }
            }
            next = replies.next();
        }
        Ok(moved)
    }

    fn node(&self) -> Option<String> {
        Some(self.node.clone())
    }

    async fn unsubscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
        // Confirmations arrive as `sunsubscribe` events; the shard counts them.
        let mut bytes = Vec::new();
        for channel in &channels {
            bytes.extend(resp::encode(&[b"SUNSUBSCRIBE", channel.as_bytes()]));
        }
        self.write(bytes).await
    }

    async fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        loop {
            let frame = self.frames.recv().await?;
            if let Some(event) = Self::event(frame) {
                return Some(event);
            }
        }
    }

    fn ping(&self) -> impl Future<Output = RedisResult<()>> + Send + 'static {
        let writer = Arc::clone(&self.writer);
        let mut pongs = self.pongs.clone();
        async move {
            let seen = *pongs.borrow_and_update();
            writer
                .lock()
                .await
                .write_all(&resp::encode(&[b"PING"]))
                .await?;
            pongs
                .wait_for(|n| *n > seen)
                .await
                .map_err(|_| client_error("connection lost", String::new()))?;
            Ok(())
        }
    }
}
