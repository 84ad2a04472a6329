//! Channels and their local subscribers, and the fan-out over them.
//!
//! Channels live in a sharded [`DashMap`]; a shard lock is held only to find
//! or change an entry, never during a fan-out. Each channel keeps an
//! immutable snapshot of its members that the fan-out iterates lock-free; a
//! membership change only invalidates it, so a join storm costs one rebuild
//! per publication, not one per join.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use dashmap::{DashMap, mapref::entry::Entry};
use metrics::{Counter, Histogram};

use super::{
    ChannelRules, Conn, ConnId, Delivery, DisconnectReason, OutboxLimits, Payload, Pushed,
};
use crate::{
    engine::{Dispatcher, Kick},
    metrics as names,
    protocol::{ChannelName, Publication},
};

/// Outcome of adding a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joined {
    /// The channel had no local subscriber before.
    First,
    /// Added to existing members.
    Added,
}

/// Outcome of removing a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    /// It was the last local subscriber; the channel is gone.
    Last,
    /// Removed; others remain.
    Removed,
    /// It was not a member.
    NotMember,
}

type Snapshot = Arc<[Arc<Conn>]>;

#[derive(Default)]
struct Members {
    by_id: HashMap<ConnId, Arc<Conn>>,
    snapshot: Option<Snapshot>,
}

struct Channel {
    latest_value: bool,
    members: Mutex<Members>,
}

impl Channel {
    fn members(&self) -> MutexGuard<'_, Members> {
        // Members stay consistent under every critical section (insert/remove/snapshot).
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> Snapshot {
        let mut members = self.members();
        let Members { by_id, snapshot } = &mut *members;
        Arc::clone(snapshot.get_or_insert_with(|| by_id.values().cloned().collect()))
    }
}

struct FanoutMetrics {
    delivered: Counter,
    conflated: Counter,
    dropped_slow: Counter,
    duration: Histogram,
}

impl FanoutMetrics {
    fn new() -> Self {
        Self {
            delivered: metrics::counter!(names::MESSAGES_DELIVERED),
            conflated: metrics::counter!(names::MESSAGES_DROPPED, "reason" => names::DROP_CONFLATED),
            dropped_slow: metrics::counter!(names::MESSAGES_DROPPED, "reason" => names::DROP_SLOW_CONSUMER),
            duration: metrics::histogram!(names::FANOUT_DURATION),
        }
    }
}

/// The channels of this node and who subscribes to them.
pub struct Registry {
    channels: DashMap<ChannelName, Arc<Channel>>,
    rules: Arc<ChannelRules>,
    limits: OutboxLimits,
    metrics: FanoutMetrics,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry applying `rules` and per-connection `limits`.
    pub fn new(rules: Arc<ChannelRules>, limits: OutboxLimits) -> Self {
        Self {
            channels: DashMap::new(),
            rules,
            limits,
            metrics: FanoutMetrics::new(),
        }
    }

    pub(crate) fn join(&self, channel: &ChannelName, conn: &Arc<Conn>) -> Joined {
        // Membership changes happen under the shard's entry lock so that a
        // concurrent `leave` cannot remove a channel we are adding to.
        match self.channels.entry(channel.clone()) {
            Entry::Occupied(entry) => {
                let mut members = entry.get().members();
                members.by_id.insert(conn.id(), Arc::clone(conn));
                members.snapshot = None;
                Joined::Added
            }
            Entry::Vacant(entry) => {
                let mut members = Members::default();
                members.by_id.insert(conn.id(), Arc::clone(conn));
                entry.insert(Arc::new(Channel {
                    latest_value: self.rules.is_latest_value(channel),
                    members: Mutex::new(members),
                }));
                Joined::First
            }
        }
    }

    pub(crate) fn leave(&self, channel: &ChannelName, id: ConnId) -> Left {
        let Entry::Occupied(entry) = self.channels.entry(channel.clone()) else {
            return Left::NotMember;
        };
        let mut members = entry.get().members();
        if members.by_id.remove(&id).is_none() {
            return Left::NotMember;
        }
        members.snapshot = None;
        if !members.by_id.is_empty() {
            return Left::Removed;
        }
        drop(members);
        entry.remove();
        Left::Last
    }

    /// The per-connection queue caps.
    pub fn limits(&self) -> OutboxLimits {
        self.limits
    }

    /// Local subscribers of `channel`.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.channels
            .get(channel)
            .map_or(0, |c| c.members().by_id.len())
    }

    /// Channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The `n` channels with the most local subscribers, largest first.
    pub fn top_channels(&self, n: usize) -> Vec<(ChannelName, usize)> {
        let mut all: Vec<_> = self
            .channels
            .iter()
            .map(|e| (e.key().clone(), e.value().members().by_id.len()))
            .collect();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// The channel, cloned out so the shard lock is released before any loop.
    fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.get(name).map(|c| Arc::clone(c.value()))
    }

    fn fan_out(&self, channel: &Channel, message: &Arc<Delivery>) -> usize {
        let mut queued = 0;
        let mut conflated = 0;
        let mut overflowed = 0;
        for conn in channel.snapshot().iter() {
            match conn
                .outbox()
                .push(message, channel.latest_value, self.limits)
            {
                Pushed::Queued => queued += 1,
                Pushed::Conflated => conflated += 1,
                Pushed::Overflow => overflowed += 1,
                Pushed::Closed => {}
            }
        }
        // One counter update per publication, not per recipient: shared
        // atomics touched per delivery would bounce between cores.
        self.metrics.delivered.increment(queued + conflated);
        if conflated > 0 {
            self.metrics.conflated.increment(conflated);
        }
        if overflowed > 0 {
            self.metrics.dropped_slow.increment(overflowed);
            tracing::debug!(overflowed, "slow consumers disconnected");
        }
        usize::try_from(queued + conflated).unwrap_or(usize::MAX)
    }
}

impl Dispatcher for Registry {
    fn dispatch(&self, publication: Publication) -> usize {
        let started = Instant::now();
        let Some(channel) = self.channel(publication.channel.as_str()) else {
            return 0;
        };
        let message = Arc::new(Delivery::publication(publication));
        let reached = self.fan_out(&channel, &message);
        self.metrics.duration.record(started.elapsed());
        reached
    }

    fn disconnect(&self, channel: &str, kick: Kick) -> usize {
        let Some(channel) = self.channel(channel) else {
            return 0;
        };
        let reason = match kick {
            Kick::User => DisconnectReason::Kicked,
            Kick::Revoked => DisconnectReason::SessionRevoked,
        };
        let members = channel.snapshot();
        for conn in members.iter() {
            conn.close(reason.clone());
        }
        members.len()
    }

    fn notify_gap(&self, name: &ChannelName) {
        if let Some(channel) = self.channel(name.as_str()) {
            let notice = Arc::new(Delivery::new(Payload::Gap {
                channel: name.clone(),
            }));
            // Never conflated: a gap notice must not be replaced by a push.
            for conn in channel.snapshot().iter() {
                conn.outbox().push(&notice, false, self.limits);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        core::Identity,
        protocol::{EventName, JsonData},
    };

    fn ch(name: &str) -> ChannelName {
        ChannelName::parse(name, 128).unwrap()
    }

    fn publication(channel: &str) -> Publication {
        Publication {
            channel: ch(channel),
            event: EventName::parse("e").unwrap(),
            data: JsonData::from_json("1").unwrap(),
            ts: None,
        }
    }

    #[test]
    fn first_and_last_member_are_reported() {
        let registry = Registry::new(Arc::default(), OutboxLimits::default());
        let a = Arc::new(Conn::new(1, Identity::default(), 0));
        let b = Arc::new(Conn::new(2, Identity::default(), 0));
        assert_eq!(registry.join(&ch("x"), &a), Joined::First);
        assert_eq!(registry.join(&ch("x"), &b), Joined::Added);
        assert_eq!(registry.leave(&ch("x"), 1), Left::Removed);
        assert_eq!(registry.leave(&ch("x"), 1), Left::NotMember);
        assert_eq!(registry.leave(&ch("x"), 2), Left::Last);
        assert_eq!(registry.channel_count(), 0);
    }

    #[test]
    fn dispatch_reaches_current_members_only() {
        let registry = Registry::new(Arc::default(), OutboxLimits::default());
        let a = Arc::new(Conn::new(1, Identity::default(), 0));
        let b = Arc::new(Conn::new(2, Identity::default(), 0));
        registry.join(&ch("x"), &a);
        assert_eq!(registry.dispatch(publication("x")), 1);
        registry.join(&ch("x"), &b);
        assert_eq!(registry.dispatch(publication("x")), 2);
        registry.leave(&ch("x"), 1);
        assert_eq!(registry.dispatch(publication("x")), 1);
        assert_eq!(registry.dispatch(publication("nobody")), 0);
        assert_eq!((a.outbox().len(), b.outbox().len()), (2, 2));
    }
}
