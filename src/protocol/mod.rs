//! Native protocol v1: the messages a client and the server exchange, their
//! two encodings (JSON in text frames, MessagePack in binary frames), the
//! name rules for channels and events, and the stable error and close codes.
//!
//! This module is pure data: it depends on serde and the encoders only, so
//! the hub core, the engines and every transport can share it.

mod codec;
mod codes;
mod data;
mod message;
mod names;
mod publication;

pub use codec::{DecodeError, EncodeError, Format, decode, encode};
pub use codes::{CloseCode, ErrorCode};
pub use data::{BINARY_KEY, CheckedData, DataError, JsonData, MAX_DATA_DEPTH};
pub use message::{ClientMessage, HistoryEntry, PROTOCOL_VERSION, PushRef, ServerMessage};
pub use names::{
    BROADCAST_CHANNEL, ChannelName, EventName, NameError, PERSONAL_PREFIX, SESSION_PREFIX, UserId,
};
pub use publication::{HistoryQuery, HistorySpec, Publication, StreamPosition, unix_ms};
