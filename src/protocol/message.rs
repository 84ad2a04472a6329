//! The messages of protocol v1. Every message is a map with a `type` field.

use serde::Serialize;

use super::{ChannelName, EventName, JsonData, Publication, StreamPosition, UserId};

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u8 = 1;

/// A message from a client. Field names and types are in docs/PROTOCOL.md;
/// [`super::decode`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Authenticate with an access token; no token means anonymous.
    Auth {
        /// Request id echoed in the reply.
        id: Option<u64>,
        /// The JWT access token.
        token: Option<String>,
    },
    /// Join a channel.
    Subscribe {
        /// Request id echoed in the reply.
        id: Option<u64>,
        /// Channel to join (validated later, so the error names the channel).
        channel: String,
        /// Recover what was published after this position (history channels).
        since: Option<StreamPosition>,
        /// Deliver the channel's latest publication at once (history channels).
        latest: bool,
    },
    /// Read a channel's history, where its namespace allows clients to.
    History {
        /// Request id echoed in the reply.
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// Only publications after this offset.
        since: Option<u64>,
        /// Most publications to return.
        limit: Option<usize>,
        /// Newest first.
        reverse: bool,
    },
    /// Leave a channel.
    Unsubscribe {
        /// Request id echoed in the reply.
        id: Option<u64>,
        /// Channel to leave.
        channel: String,
    },
    /// Publish to a channel, where the server allows client publishing.
    Publish {
        /// Request id echoed in the reply.
        id: Option<u64>,
        /// Target channel.
        channel: String,
        /// Event name the subscribers see.
        event: String,
        /// Application payload.
        data: JsonData,
    },
    /// Replace the connection's access token before it expires.
    Refresh {
        /// Request id echoed in the reply.
        id: Option<u64>,
        /// A fresh access token for the same user.
        token: String,
    },
    /// Application-level ping, for clients that cannot see WebSocket pings.
    Ping {
        /// Request id echoed in the `pong`.
        id: Option<u64>,
    },
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sent once, after successful authentication.
    Welcome {
        /// Request id of the `auth` message, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// This connection's id, unique across the cluster.
        conn_id: String,
        /// The authenticated user, or null for anonymous connections.
        user_id: Option<UserId>,
        /// The node that holds the connection.
        node_id: String,
        /// How often the server pings, in milliseconds.
        heartbeat_ms: u64,
        /// Protocol version, `1`.
        protocol: u8,
        /// Channels the connection joined automatically.
        channels: Vec<ChannelName>,
    },
    /// A request succeeded.
    Ok {
        /// Request id, null if the request had none.
        id: Option<u64>,
    },
    /// A subscription to a channel with history succeeded.
    Subscribed {
        /// Request id, null if the request had none.
        id: Option<u64>,
        /// The channel's stream position: what the client has now.
        position: StreamPosition,
        /// Whether the publications after `since` follow (present when
        /// `since` was sent).
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// A client's history request.
    History {
        /// Request id, null if the request had none.
        id: Option<u64>,
        /// The publications, each with its offset.
        publications: Vec<HistoryEntry>,
        /// The channel's stream position.
        position: StreamPosition,
    },
    /// A request failed; the connection stays open.
    Error {
        /// Request id, null if the request had none or could not be read.
        id: Option<u64>,
        /// Stable numeric code (see [`super::ErrorCode`]).
        code: u16,
        /// Human-readable reason.
        reason: String,
    },
    /// Answer to a client `ping`.
    Pong {
        /// Request id of the ping.
        id: Option<u64>,
    },
    /// The access token expires soon: send `refresh` with a new one.
    TokenExpiring {
        /// Milliseconds until the connection is closed with 4005 unless refreshed
        /// (token expiry plus the grace period).
        expires_in_ms: u64,
    },
    /// Publications on `channel` may have been missed (the node lost its
    /// engine for a while); refetch the state the channel carries.
    Gap {
        /// The affected channel.
        channel: ChannelName,
        /// On a history channel: the first offset that was missed.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<u64>,
        /// On a history channel: the last offset that was missed.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<u64>,
        /// On a history channel: the stream's epoch.
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    /// A publication on a channel the connection is subscribed to.
    Push {
        /// Channel it was published to.
        channel: ChannelName,
        /// Event name.
        event: EventName,
        /// Application payload.
        data: JsonData,
        /// Publish time, milliseconds since the Unix epoch, when the publisher set it.
        #[serde(skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
        /// Offset in the channel's stream (history channels only).
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
}

/// One publication of a history reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// Event name.
    pub event: EventName,
    /// Application payload.
    pub data: JsonData,
    /// Publish time, when the publisher set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    /// Offset in the channel's stream.
    pub offset: u64,
}

impl From<&Publication> for HistoryEntry {
    fn from(p: &Publication) -> Self {
        Self {
            event: p.event.clone(),
            data: p.data.clone(),
            ts: p.ts,
            offset: p.offset().unwrap_or(0),
        }
    }
}

/// A `push` message borrowed from a publication: what the fan-out encodes,
/// once per wire format, without copying the publication. Encodes exactly
/// as [`ServerMessage::Push`].
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "type", rename = "push")]
pub struct PushRef<'a> {
    /// Channel it was published to.
    pub channel: &'a ChannelName,
    /// Event name.
    pub event: &'a EventName,
    /// Application payload.
    pub data: &'a JsonData,
    /// Publish time, when the publisher set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    /// Offset in the channel's stream (history channels only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl<'a> From<&'a Publication> for PushRef<'a> {
    fn from(p: &'a Publication) -> Self {
        Self {
            channel: &p.channel,
            event: &p.event,
            data: &p.data,
            ts: p.ts,
            offset: p.offset(),
        }
    }
}
