//! The one place a publication is checked before it enters the hub,
//! whoever sends it: a backend through the HTTP API or a client.

use crate::protocol::{
    ChannelName, ErrorCode, EventName, JsonData, NameError, Publication, unix_ms,
};

/// Limits on names and data of publications (from `[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicationLimits {
    /// Longest channel name, in bytes.
    pub max_channel_length: usize,
    /// Largest `data`, in bytes of its JSON text.
    pub max_data_size: usize,
}

/// Why a publication (or a channel name) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPublication {
    /// The channel name breaks the rules.
    #[error("invalid channel name: {0}")]
    Channel(NameError),
    /// The event name breaks the rules.
    #[error("invalid event name: {0}")]
    Event(NameError),
    /// The data is larger than allowed.
    #[error("data is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Size of the data.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl InvalidPublication {
    /// The protocol error code for a client.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Channel(_) => ErrorCode::InvalidChannel,
            Self::Event(_) => ErrorCode::InvalidEvent,
            Self::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        }
    }
}

impl PublicationLimits {
    /// A channel name, checked.
    ///
    /// # Errors
    /// [`InvalidPublication::Channel`].
    pub fn channel(&self, name: &str) -> Result<ChannelName, InvalidPublication> {
        ChannelName::parse(name, self.max_channel_length).map_err(InvalidPublication::Channel)
    }

    /// A publication to an already resolved `channel`, stamped with `ts` or now.
    ///
    /// # Errors
    /// [`InvalidPublication`] names the first rule broken.
    pub fn publication(
        &self,
        channel: ChannelName,
        event: &str,
        data: JsonData,
        ts: Option<u64>,
    ) -> Result<Publication, InvalidPublication> {
        let event = EventName::parse(event).map_err(InvalidPublication::Event)?;
        if data.len() > self.max_data_size {
            return Err(InvalidPublication::TooLarge {
                size: data.len(),
                limit: self.max_data_size,
            });
        }
        Ok(Publication {
            channel,
            event,
            data,
            ts: Some(ts.unwrap_or_else(unix_ms)),
            position: None,
            history: None,
        })
    }

    /// A client's publication: the channel is checked too, and the server
    /// stamps the time.
    ///
    /// # Errors
    /// [`InvalidPublication`] names the first rule broken.
    pub fn client_publication(
        &self,
        channel: &str,
        event: &str,
        data: JsonData,
    ) -> Result<Publication, InvalidPublication> {
        let channel = self.channel(channel)?;
        self.publication(channel, event, data, None)
    }
}
