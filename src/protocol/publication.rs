//! Publications: what publishers send and subscribers receive.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{ChannelName, EventName, JsonData};

/// Milliseconds since the Unix epoch, the unit of [`Publication::ts`].
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One message for one channel, as a publisher made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// Target channel.
    pub channel: ChannelName,
    /// Event name the subscribers see.
    pub event: EventName,
    /// Application payload.
    pub data: JsonData,
    /// Publish time in milliseconds since the Unix epoch, if the publisher set it.
    pub ts: Option<u64>,
    /// Where it sits in its channel's stream; set by the engine, and only on
    /// channels with history.
    pub position: Option<StreamPosition>,
    /// How the channel's stream is kept, set by the hub from the channel's
    /// namespace; `None` (no history) costs nothing.
    pub history: Option<HistorySpec>,
}

impl Publication {
    /// The publication's offset in its channel's stream, if it has one.
    pub fn offset(&self) -> Option<u64> {
        self.position.as_ref().map(|p| p.offset)
    }
}

/// A place in a channel's stream: an offset within an epoch.
///
/// Offsets increase by one per publication. The epoch names one life of the
/// stream: it changes whenever the engine may have lost the stream (a
/// restarted memory engine, a Redis that lost its data, expired stream
/// metadata), and offsets of different epochs are not comparable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The offset of the last publication (0: none yet in this epoch).
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
}

/// How a channel's stream is kept (`history_size`, `history_ttl_secs` of
/// its namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySpec {
    /// Most publications kept (older ones are trimmed).
    pub size: usize,
    /// How long a publication is kept, in seconds.
    pub ttl_secs: u64,
    /// How long the stream's position (epoch and offset) outlives its last
    /// publication, in seconds.
    pub meta_ttl_secs: u64,
}

/// Which part of a channel's stream to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only publications with a greater offset; `None`: from the oldest kept.
    pub since: Option<u64>,
    /// Most publications to return; `None`: all that match.
    pub limit: Option<usize>,
    /// Newest first (then `since` still bounds from below).
    pub reverse: bool,
}
