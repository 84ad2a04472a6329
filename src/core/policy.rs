//! Which channels are public, open to client publishing, or latest-value.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::protocol::{ChannelName, HistorySpec, NameError};

/// `history_ttl_secs` when a namespace keeps history but does not say.
const DEFAULT_HISTORY_TTL_SECS: u64 = 300;
/// `history_meta_ttl_secs` when a namespace keeps history but does not say.
const DEFAULT_HISTORY_META_TTL_SECS: u64 = 86_400;
/// `recover_max` when a namespace keeps history but does not say.
const DEFAULT_RECOVER_MAX: usize = 256;

fn default_history_ttl() -> u64 {
    DEFAULT_HISTORY_TTL_SECS
}

fn default_meta_ttl() -> u64 {
    DEFAULT_HISTORY_META_TTL_SECS
}

fn default_recover_max() -> usize {
    DEFAULT_RECOVER_MAX
}

/// Why a channel pattern or the channel rules were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A pattern whose part before an optional trailing `*` is not a channel name.
    #[error("invalid channel pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// Why its name part is invalid.
        #[source]
        source: NameError,
    },
    /// A personal namespace with an exact pattern: it has no user id to match.
    #[error(
        "channels.namespaces: personal namespace {pattern:?} needs a prefix pattern such as \"inbox:*\""
    )]
    PersonalWithoutPrefix {
        /// The namespace's pattern.
        pattern: ChannelPattern,
    },
}

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
    /// [`PolicyError::Pattern`] if the part before an optional trailing `*`
    /// holds a character channel names may not.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if !(prefix && body.is_empty()) {
            ChannelName::parse(body, usize::MAX).map_err(|source| PolicyError::Pattern {
                pattern: text.to_owned(),
                source,
            })?;
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

/// Who may subscribe to the channels of a namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone, anonymous connections included (if `auth.allow_anonymous`).
    Public,
    /// Any authenticated connection.
    #[default]
    Authenticated,
    /// Only the user the channel is named after: `<prefix><user id>`.
    Personal,
    /// Only connections whose token grants the channel (`channels` claim).
    Granted,
}

/// One namespace (`[[channels.namespaces]]`): channels matching `pattern`
/// and what connections may do with them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// Which channels (exact name or prefix ending in `*`).
    pub pattern: ChannelPattern,
    /// Who may subscribe.
    #[serde(default)]
    pub access: Access,
    /// Whether clients allowed to subscribe may also publish.
    #[serde(default)]
    pub client_publish: bool,
    /// Whether a slow client gets only the newest pending message per channel.
    #[serde(default)]
    pub latest_value: bool,
    /// Publications kept per channel for recovery and history; 0 (the
    /// default) keeps none and gives the channels no offsets.
    #[serde(default)]
    pub history_size: usize,
    /// How long a kept publication lives, in seconds.
    #[serde(default = "default_history_ttl")]
    pub history_ttl_secs: u64,
    /// How long a channel's stream position (epoch and offset) outlives its
    /// last publication, in seconds; after it, the stream starts a new epoch.
    #[serde(default = "default_meta_ttl")]
    pub history_meta_ttl_secs: u64,
    /// Most publications one recovery replays; a client further behind gets
    /// `recovered: false`. Keep it below `limits.outbox_max_messages`.
    #[serde(default = "default_recover_max")]
    pub recover_max: usize,
    /// Whether clients allowed to subscribe may also read the history.
    #[serde(default)]
    pub client_history: bool,
}

/// What a history channel's namespace says about its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelHistory {
    /// How the engine keeps the stream.
    pub spec: HistorySpec,
    /// Most publications one recovery replays.
    pub recover_max: usize,
    /// Whether clients may read the history.
    pub client_history: bool,
}

impl Namespace {
    /// A namespace with `access` and no publishing or conflation.
    ///
    /// # Errors
    /// [`PolicyError::Pattern`] if `pattern` is invalid.
    pub fn new(pattern: &str, access: Access) -> Result<Self, PolicyError> {
        Ok(Self {
            pattern: ChannelPattern::parse(pattern)?,
            access,
            client_publish: false,
            latest_value: false,
            history_size: 0,
            history_ttl_secs: DEFAULT_HISTORY_TTL_SECS,
            history_meta_ttl_secs: DEFAULT_HISTORY_META_TTL_SECS,
            recover_max: DEFAULT_RECOVER_MAX,
            client_history: false,
        })
    }

    /// The namespace's history, if it keeps one.
    pub fn history(&self) -> Option<ChannelHistory> {
        (self.history_size > 0).then_some(ChannelHistory {
            spec: HistorySpec {
                size: self.history_size,
                ttl_secs: self.history_ttl_secs.max(1),
                meta_ttl_secs: self.history_meta_ttl_secs.max(self.history_ttl_secs),
            },
            recover_max: self.recover_max,
            client_history: self.client_history,
        })
    }
}

/// Who is asking, for a permission check.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The user, `None` when anonymous.
    pub user: Option<&'a str>,
    /// Channel patterns the token granted.
    pub grants: &'a [ChannelPattern],
}

/// Channel permissions from configuration: the first namespace whose
/// pattern matches decides; channels matching none are authenticated-only,
/// without client publishing or conflation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelRules {
    /// Namespaces, first match wins.
    pub namespaces: Vec<Namespace>,
}

static DEFAULT: Namespace = Namespace {
    pattern: ChannelPattern {
        text: String::new(),
        prefix: true,
    },
    access: Access::Authenticated,
    client_publish: false,
    latest_value: false,
    history_size: 0,
    history_ttl_secs: DEFAULT_HISTORY_TTL_SECS,
    history_meta_ttl_secs: DEFAULT_HISTORY_META_TTL_SECS,
    recover_max: DEFAULT_RECOVER_MAX,
    client_history: false,
};

impl ChannelRules {
    fn namespace(&self, channel: &ChannelName) -> &Namespace {
        self.namespaces
            .iter()
            .find(|n| n.pattern.matches(channel))
            .unwrap_or(&DEFAULT)
    }

    /// Why `who` may not subscribe to `channel`, or `None` if it may.
    pub fn refuse_subscribe(
        &self,
        channel: &ChannelName,
        who: Requester<'_>,
    ) -> Option<&'static str> {
        let namespace = self.namespace(channel);
        match (namespace.access, who.user) {
            (Access::Public, _) => None,
            (_, None) => Some("anonymous connections may only subscribe to public channels"),
            (Access::Authenticated, Some(_)) => None,
            (Access::Personal, Some(user)) => {
                let owner = channel
                    .as_str()
                    .strip_prefix(namespace.pattern.text.as_str());
                (owner != Some(user)).then_some("this personal channel belongs to another user")
            }
            (Access::Granted, Some(_)) => (!who.grants.iter().any(|g| g.matches(channel)))
                .then_some("the token does not grant this channel"),
        }
    }

    /// Why `who` may not publish to `channel`, or `None` if it may.
    pub fn refuse_publish(
        &self,
        channel: &ChannelName,
        who: Requester<'_>,
    ) -> Option<&'static str> {
        if !self.namespace(channel).client_publish {
            return Some("clients may not publish to this channel");
        }
        self.refuse_subscribe(channel, who)
    }

    /// Whether `channel` is latest-value (conflated for slow clients).
    pub fn is_latest_value(&self, channel: &ChannelName) -> bool {
        self.namespace(channel).latest_value
    }

    /// The history of `channel`'s namespace, if it keeps one. Reserved
    /// channels (personal, broadcast) never have one.
    pub fn history(&self, channel: &ChannelName) -> Option<ChannelHistory> {
        if channel.is_reserved() {
            return None;
        }
        self.namespace(channel).history()
    }

    /// Whether any namespace keeps history.
    pub fn any_history(&self) -> bool {
        self.namespaces.iter().any(|n| n.history_size > 0)
    }

    /// Checks what a pattern alone cannot: personal namespaces need a prefix pattern.
    ///
    /// # Errors
    /// [`PolicyError::PersonalWithoutPrefix`] naming the offending namespace.
    pub fn validate(&self) -> Result<(), PolicyError> {
        match self
            .namespaces
            .iter()
            .find(|n| n.access == Access::Personal && !n.pattern.prefix)
        {
            Some(n) => Err(PolicyError::PersonalWithoutPrefix {
                pattern: n.pattern.clone(),
            }),
            None => Ok(()),
        }
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

    fn rules() -> ChannelRules {
        let mut prices = Namespace::new("prices.*", Access::Authenticated).unwrap();
        prices.latest_value = true;
        let mut chat = Namespace::new("chat.*", Access::Public).unwrap();
        chat.client_publish = true;
        ChannelRules {
            namespaces: vec![
                Namespace::new("public.*", Access::Public).unwrap(),
                prices,
                chat,
                Namespace::new("inbox:*", Access::Personal).unwrap(),
                Namespace::new("tracking.*", Access::Granted).unwrap(),
            ],
        }
    }

    #[test]
    fn each_access_kind_allows_and_refuses() {
        let rules = rules();
        let grants = [ChannelPattern::parse("tracking.42").unwrap()];
        let anon = Requester {
            user: None,
            grants: &[],
        };
        let alice = Requester {
            user: Some("alice"),
            grants: &grants,
        };
        let bob = Requester {
            user: Some("bob"),
            grants: &[],
        };
        assert_eq!(rules.refuse_subscribe(&ch("public.news"), anon), None);
        assert!(rules.refuse_subscribe(&ch("other"), anon).is_some());
        assert_eq!(rules.refuse_subscribe(&ch("other"), bob), None);
        assert_eq!(rules.refuse_subscribe(&ch("inbox:alice"), alice), None);
        assert!(rules.refuse_subscribe(&ch("inbox:alice"), bob).is_some());
        assert_eq!(rules.refuse_subscribe(&ch("tracking.42"), alice), None);
        assert!(rules.refuse_subscribe(&ch("tracking.42"), bob).is_some());
        assert!(rules.refuse_subscribe(&ch("tracking.43"), alice).is_some());
        assert_eq!(rules.refuse_publish(&ch("chat.lobby"), anon), None);
        assert!(rules.refuse_publish(&ch("public.news"), alice).is_some());
        assert!(rules.is_latest_value(&ch("prices.btc")));
        assert!(!rules.is_latest_value(&ch("public.news")));
    }
}
