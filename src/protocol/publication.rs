//! Publications: what publishers send and subscribers receive.

use std::time::{SystemTime, UNIX_EPOCH};

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
}
