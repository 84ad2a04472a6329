//! Validated names: channels, events and user ids.
//!
//! All three share one charset so that a name is safe in a URL path, a log
//! line, a Redis key and a metric label without escaping: ASCII letters,
//! digits and `_ - . : @ /`.

use std::{borrow::Borrow, fmt, sync::Arc};

use serde::{Serialize, Serializer};

/// The channel every connection joins automatically: a message to it reaches everyone.
pub const BROADCAST_CHANNEL: &str = "broadcast";
/// The prefix of personal channels: `user:<id>` reaches every connection of that user.
pub const PERSONAL_PREFIX: &str = "user:";
/// The prefix of session channels: `session:<sid>` holds the connections of one login session.
pub const SESSION_PREFIX: &str = "session:";

/// Longest event name, in bytes.
const MAX_EVENT_LEN: usize = 64;
/// Longest user id, in bytes.
const MAX_USER_ID_LEN: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than allowed.
    #[error("name is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Length of the refused name.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The name holds a character outside the allowed set.
    #[error("name contains {0:?}; allowed are ASCII letters, digits and _ - . : @ /")]
    BadChar(char),
}

fn check(name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            len: name.len(),
            max,
        });
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '/')))
    {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

macro_rules! shared_name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

shared_name!(
    /// A channel (room) name; cheap to clone.
    ChannelName
);
shared_name!(
    /// An event name such as `price_update`; cheap to clone.
    EventName
);
shared_name!(
    /// A user id, taken from the token's `sub` claim; cheap to clone.
    UserId
);

impl ChannelName {
    /// Validates a channel name against the charset and `max_len`.
    ///
    /// # Errors
    /// [`NameError`] says which rule the name broke.
    pub fn parse(name: &str, max_len: usize) -> Result<Self, NameError> {
        check(name, max_len)?;
        Ok(Self(name.into()))
    }

    /// The broadcast channel.
    pub fn broadcast() -> Self {
        Self(BROADCAST_CHANNEL.into())
    }

    /// The personal channel of `user`.
    pub fn personal(user: &UserId) -> Self {
        Self(format!("{PERSONAL_PREFIX}{user}").into())
    }

    /// The session channel of `session`, if the id makes a valid channel name.
    pub fn session(session: &str) -> Option<Self> {
        Self::parse(&format!("{SESSION_PREFIX}{session}"), usize::MAX).ok()
    }

    /// Whether clients may not subscribe to, leave or publish to this channel
    /// themselves, because the server manages it (personal, session and
    /// broadcast channels).
    pub fn is_reserved(&self) -> bool {
        &*self.0 == BROADCAST_CHANNEL
            || self.0.starts_with(PERSONAL_PREFIX)
            || self.0.starts_with(SESSION_PREFIX)
    }
}

impl EventName {
    /// Validates an event name against the charset and the 64-byte limit.
    ///
    /// # Errors
    /// [`NameError`] says which rule the name broke.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        check(name, MAX_EVENT_LEN)?;
        Ok(Self(name.into()))
    }
}

impl UserId {
    /// Validates a user id against the charset and the 128-byte limit.
    ///
    /// # Errors
    /// [`NameError`] says which rule the id broke.
    pub fn parse(id: &str) -> Result<Self, NameError> {
        check(id, MAX_USER_ID_LEN)?;
        Ok(Self(id.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_charset_and_length() {
        assert!(ChannelName::parse("prices.btc-usd", 128).is_ok());
        assert!(ChannelName::parse("tracking:shipment/42@eu_1", 128).is_ok());
        assert_eq!(ChannelName::parse("", 128), Err(NameError::Empty));
        assert_eq!(ChannelName::parse("a b", 128), Err(NameError::BadChar(' ')));
        assert_eq!(ChannelName::parse("é", 128), Err(NameError::BadChar('é')));
        assert_eq!(
            ChannelName::parse(&"x".repeat(129), 128),
            Err(NameError::TooLong { len: 129, max: 128 })
        );
    }

    #[test]
    fn reserved_channels_are_personal_and_broadcast() {
        let user = UserId::parse("42").unwrap();
        assert_eq!(ChannelName::personal(&user).as_str(), "user:42");
        assert!(ChannelName::personal(&user).is_reserved());
        assert!(ChannelName::broadcast().is_reserved());
        assert!(!ChannelName::parse("users", 128).unwrap().is_reserved());
    }

    #[test]
    fn event_and_user_limits() {
        assert!(EventName::parse(&"e".repeat(64)).is_ok());
        assert!(EventName::parse(&"e".repeat(65)).is_err());
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("a\nb").is_err());
    }
}
