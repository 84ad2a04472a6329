//! Which channels are public, open to client publishing, or latest-value.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::protocol::ChannelName;

/// A channel pattern: an exact name, or a prefix ending in `*` (`prices.*`, or `*` for all).
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    text: String,
    prefix: bool,
}

impl ChannelPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// If the part before an optional trailing `*` holds a character channel names may not.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if !(prefix && body.is_empty()) {
            ChannelName::parse(body, usize::MAX)
                .map_err(|e| format!("invalid channel pattern {text:?}: {e}"))?;
        }
        Ok(Self {
            text: body.to_owned(),
            prefix,
        })
    }

    /// Whether `channel` matches.
    pub fn matches(&self, channel: &ChannelName) -> bool {
        if self.prefix {
            channel.as_str().starts_with(&self.text)
        } else {
            channel.as_str() == self.text
        }
    }
}

impl fmt::Debug for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.text, if self.prefix { "*" } else { "" })
    }
}

impl<'de> Deserialize<'de> for ChannelPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Channel rules from configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelRules {
    /// Channels anonymous connections may subscribe to.
    pub public: Vec<ChannelPattern>,
    /// Channels clients may publish to (default: none).
    pub client_publish: Vec<ChannelPattern>,
    /// Channels where a slow client gets only the newest pending message.
    pub latest_value: Vec<ChannelPattern>,
}

fn any(patterns: &[ChannelPattern], channel: &ChannelName) -> bool {
    patterns.iter().any(|p| p.matches(channel))
}

impl ChannelRules {
    /// Whether anonymous connections may subscribe to `channel`.
    pub fn is_public(&self, channel: &ChannelName) -> bool {
        any(&self.public, channel)
    }

    /// Whether clients may publish to `channel`.
    pub fn allows_client_publish(&self, channel: &ChannelName) -> bool {
        any(&self.client_publish, channel)
    }

    /// Whether `channel` is latest-value (conflated for slow clients).
    pub fn is_latest_value(&self, channel: &ChannelName) -> bool {
        any(&self.latest_value, channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::parse(name, 128).unwrap()
    }

    #[test]
    fn prefix_and_exact_patterns() {
        let prefix = ChannelPattern::parse("prices.*").unwrap();
        assert!(prefix.matches(&ch("prices.btc")));
        assert!(!prefix.matches(&ch("prices")));
        let exact = ChannelPattern::parse("news").unwrap();
        assert!(exact.matches(&ch("news")));
        assert!(!exact.matches(&ch("news.x")));
        assert!(ChannelPattern::parse("*").unwrap().matches(&ch("anything")));
        assert!(ChannelPattern::parse("bad name*").is_err());
    }
}
