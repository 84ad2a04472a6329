//! Channels and their local subscribers, and the fan-out over them.
//!
//! Channels live in a sharded [`DashMap`]; a shard lock is held only to find
//! or change an entry, never during a fan-out. Each channel keeps an
//! immutable snapshot of its members that the fan-out iterates lock-free; a
//! membership change only invalidates it, so a join storm costs one rebuild
//! per publication, not one per join.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, DefaultHasher},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use dashmap::{DashMap, mapref::entry::Entry};
use metrics::{Counter, Histogram};

use super::direct::{FanoutConfig, Owed, Pacer, Snapshot};
use super::{
    ChannelRules, Conn, ConnId, Delivery, DisconnectReason, Missed, OutboxLimits, Payload, Pushed,
};
use crate::{
    engine::{Dispatcher, Kick},
    metrics as names,
    protocol::{ChannelName, Publication, StreamPosition},
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

/// A map keyed by connection id, hashed without per-map keys: ids are
/// assigned by this node, never chosen by a client, and a keyed hasher's
/// state would cost every channel 16 bytes per map.
type ById<V> = HashMap<ConnId, V, BuildHasherDefault<DefaultHasher>>;

#[derive(Default)]
struct Members {
    by_id: ById<Arc<Conn>>,
    snapshot: Option<Snapshot>,
    /// Members joining from a stream position (see [`Registry::join_held`]
    /// and [`Registry::release`]). Empty on every channel without history,
    /// where it costs one check per publication.
    held: ById<Hold>,
}

/// A member joining from a stream position, not yet a plain member.
enum Hold {
    /// Its stream is being read: live deliveries wait here.
    Buffer(Vec<Arc<Delivery>>),
    /// It got everything up to this position: live deliveries at or before
    /// it (still in flight from the engine when it was read) are dropped;
    /// the first one after it makes it a plain member.
    Floor(StreamPosition),
}

/// Whether `delivery` adds nothing for a member that has everything up to
/// `floor`: a publication at or before it, or a gap notice about offsets
/// at or before it.
fn covered(delivery: &Delivery, floor: &StreamPosition) -> bool {
    match delivery.payload() {
        Payload::Publication(p) => p
            .position
            .as_ref()
            .is_some_and(|p| p.epoch == floor.epoch && p.offset <= floor.offset),
        Payload::Gap {
            missed: Some(missed),
            ..
        } => missed.epoch == floor.epoch && missed.to <= floor.offset,
        Payload::Gap { missed: None, .. } | Payload::TokenExpiring { .. } => false,
    }
}

struct Channel {
    latest_value: bool,
    members: Mutex<Members>,
    /// The position of the last publication fanned out (history channels):
    /// duplicates and jumps on the live stream are found against it. Boxed:
    /// one pointer on the many channels without history.
    last: Mutex<Option<Box<StreamPosition>>>,
}

impl Channel {
    fn members(&self) -> MutexGuard<'_, Members> {
        // Members stay consistent under every critical section (insert/remove/snapshot).
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The plain members to fan `message` out to. Held members are served
    /// here, under the lock [`Registry::release`] takes: buffered, dropped
    /// as covered, or queued (and then made plain members).
    fn recipients(&self, message: &Arc<Delivery>, limits: OutboxLimits) -> Snapshot {
        let mut members = self.members();
        if members.held.is_empty() {
            return members.current();
        }
        let snapshot = members.current();
        let Members { by_id, held, .. } = &mut *members;
        let mut caught_up = Vec::new();
        for (id, hold) in held.iter_mut() {
            match hold {
                // Bounded like the outbox the buffer will be queued into: a
                // recovery whose read takes longer than the queue holds is a
                // slow consumer, not a reason to grow memory without bound.
                Hold::Buffer(buffer) if buffer.len() >= limits.max_messages => {
                    if let Some(conn) = by_id.get(id) {
                        conn.close(DisconnectReason::SlowConsumer);
                    }
                    *buffer = Vec::new();
                }
                Hold::Buffer(buffer) => buffer.push(Arc::clone(message)),
                Hold::Floor(floor) if covered(message, floor) => {
                    metrics::counter!(names::HISTORY_DUPLICATES_DROPPED).increment(1);
                }
                Hold::Floor(_) => {
                    if let Some(conn) = by_id.get(id) {
                        conn.outbox().push(message, self.latest_value, limits);
                    }
                    if matches!(message.payload(), Payload::Publication(_)) {
                        caught_up.push(*id);
                    }
                }
            }
        }
        if !caught_up.is_empty() {
            for id in caught_up {
                held.remove(&id);
            }
            members.snapshot = None;
        }
        snapshot
    }
}

impl Members {
    fn current(&mut self) -> Snapshot {
        let Members {
            by_id,
            snapshot,
            held,
        } = self;
        Arc::clone(snapshot.get_or_insert_with(|| {
            by_id
                .iter()
                .filter(|(id, _)| !held.contains_key(id))
                .map(|(_, conn)| Arc::clone(conn))
                .collect()
        }))
    }
}

/// What the fan-out does with a publication on a history channel, judged
/// by its offset against the last one fanned out.
enum Judged {
    /// The next offset (or the first seen, or a new epoch).
    Next,
    /// Already fanned out: dropped before any socket.
    Duplicate,
    /// Offsets were skipped: the subscribers are told which.
    Jump(Missed),
}

fn judge(last: Option<&StreamPosition>, position: &StreamPosition) -> Judged {
    match last {
        Some(last) if last.epoch == position.epoch => {
            if position.offset <= last.offset {
                Judged::Duplicate
            } else if position.offset > last.offset + 1 {
                Judged::Jump(Missed {
                    from: last.offset + 1,
                    to: position.offset - 1,
                    epoch: position.epoch.clone(),
                })
            } else {
                Judged::Next
            }
        }
        // A new epoch: whatever the subscribers held is void; they are told
        // so by a notice naming the new epoch.
        Some(_) if position.offset > 0 => Judged::Jump(Missed {
            from: 1,
            to: position.offset - 1,
            epoch: position.epoch.clone(),
        }),
        _ => Judged::Next,
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
    pacer: Arc<Pacer>,
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
            pacer: Arc::new(Pacer::new(FanoutConfig::default())),
        }
    }

    /// The same, with large fan-outs paced by `fanout`.
    pub fn with_fanout(mut self, fanout: FanoutConfig) -> Self {
        self.pacer = Arc::new(Pacer::new(fanout));
        self
    }

    pub(crate) fn join(&self, channel: &ChannelName, conn: &Arc<Conn>) -> Joined {
        self.join_as(channel, conn, false)
    }

    /// Joins `conn` with its live deliveries held back until
    /// [`Registry::release`]: the first half of a race-free recovery.
    pub(crate) fn join_held(&self, channel: &ChannelName, conn: &Arc<Conn>) -> Joined {
        self.join_as(channel, conn, true)
    }

    fn join_as(&self, channel: &ChannelName, conn: &Arc<Conn>, held: bool) -> Joined {
        // Membership changes happen under the shard's entry lock so that a
        // concurrent `leave` cannot remove a channel we are adding to.
        let add = |members: &mut Members| {
            members.by_id.insert(conn.id(), Arc::clone(conn));
            if held {
                members.held.insert(conn.id(), Hold::Buffer(Vec::new()));
            }
            members.snapshot = None;
        };
        match self.channels.entry(channel.clone()) {
            Entry::Occupied(entry) => {
                add(&mut entry.get().members());
                Joined::Added
            }
            Entry::Vacant(entry) => {
                let mut members = Members::default();
                add(&mut members);
                entry.insert(Arc::new(Channel {
                    latest_value: self.rules.is_latest_value(channel),
                    members: Mutex::new(members),
                    last: Mutex::new(None),
                }));
                Joined::First
            }
        }
    }

    /// Ends the buffering of [`Registry::join_held`]: queues `replay` (what
    /// the connection missed, in offset order), then the live deliveries
    /// held meanwhile that come after it (dropping those the replay or the
    /// position `from` already covers). Live publications covered by then
    /// may still be in flight from the engine (published before the stream
    /// was read, received after): they are dropped until the first one
    /// after the replay makes the connection a plain member.
    /// Returns how many held deliveries were dropped as duplicates.
    ///
    /// All under the members' lock, which the fan-out takes to decide
    /// between holding and queueing: no live publication can slip between
    /// the replay and the held ones, or be queued twice.
    pub(crate) fn release(
        &self,
        channel: &ChannelName,
        conn: &Conn,
        replay: Vec<Publication>,
        from: &StreamPosition,
    ) -> usize {
        let Some(entry) = self.channel(channel.as_str()) else {
            return 0;
        };
        let mut members = entry.members();
        let Some(Hold::Buffer(held)) = members.held.remove(&conn.id()) else {
            return 0;
        };
        let mut floor = from.clone();
        for publication in replay {
            floor.offset = floor.offset.max(publication.offset().unwrap_or(0));
            let delivery = Arc::new(Delivery::publication(publication));
            conn.outbox()
                .push(&delivery, entry.latest_value, self.limits);
        }
        let mut dropped = 0;
        let mut caught_up = false;
        for delivery in held {
            if covered(&delivery, &floor) {
                dropped += 1;
                continue;
            }
            caught_up |= matches!(delivery.payload(), Payload::Publication(_));
            conn.outbox()
                .push(&delivery, entry.latest_value, self.limits);
        }
        if caught_up {
            members.snapshot = None;
        } else {
            members.held.insert(conn.id(), Hold::Floor(floor));
        }
        dropped
    }

    pub(crate) fn leave(&self, channel: &ChannelName, id: ConnId) -> Left {
        let Entry::Occupied(entry) = self.channels.entry(channel.clone()) else {
            return Left::NotMember;
        };
        let mut members = entry.get().members();
        if members.by_id.remove(&id).is_none() {
            return Left::NotMember;
        }
        members.held.remove(&id);
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

    fn fan_out(&self, channel: &Channel, message: &Arc<Delivery>, owed: &mut Owed) -> usize {
        let mut queued = 0;
        let mut conflated = 0;
        let mut overflowed = 0;
        // The span of recipients whose task is idle: they get the message
        // written from here, after everyone has it queued.
        let (mut first, mut end) = (usize::MAX, 0);
        let recipients = channel.recipients(message, self.limits);
        self.pacer.dispatched(recipients.len());
        for (i, conn) in recipients.iter().enumerate() {
            match conn
                .outbox()
                .offer(message, channel.latest_value, self.limits)
            {
                Pushed::Queued => queued += 1,
                Pushed::Deferred => {
                    queued += 1;
                    first = first.min(i);
                    end = i + 1;
                }
                Pushed::Conflated => conflated += 1,
                Pushed::Overflow => overflowed += 1,
                Pushed::Closed => {}
            }
        }
        if first < end {
            owed.add(recipients, first..end);
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

impl Registry {
    fn dispatch_into(&self, publication: Publication, owed: &mut Owed) -> usize {
        let started = Instant::now();
        let Some(channel) = self.channel(publication.channel.as_str()) else {
            return 0;
        };
        let Some(position) = publication.position.clone() else {
            let message = Arc::new(Delivery::publication(publication));
            let reached = self.fan_out(&channel, &message, owed);
            self.metrics.duration.record(started.elapsed());
            return reached;
        };
        // Positioning: held across the fan-out so that offsets reach the
        // outboxes in the order they were judged in.
        let mut last = channel.last.lock().unwrap_or_else(PoisonError::into_inner);
        match judge(last.as_deref(), &position) {
            Judged::Duplicate => {
                metrics::counter!(names::HISTORY_DUPLICATES_DROPPED).increment(1);
                return 0;
            }
            Judged::Jump(missed) => {
                metrics::counter!(names::HISTORY_GAPS, "outcome" => "signalled").increment(1);
                let notice = Arc::new(Delivery::new(Payload::Gap {
                    channel: publication.channel.clone(),
                    missed: Some(missed),
                }));
                // Never conflated: a gap notice must not be replaced by a push.
                for conn in channel.recipients(&notice, self.limits).iter() {
                    conn.outbox().push(&notice, false, self.limits);
                }
            }
            Judged::Next => {}
        }
        match &mut *last {
            Some(kept) => **kept = position,
            None => *last = Some(Box::new(position)),
        }
        let message = Arc::new(Delivery::publication(publication));
        let reached = self.fan_out(&channel, &message, owed);
        drop(last);
        self.metrics.duration.record(started.elapsed());
        reached
    }
}

impl Dispatcher for Registry {
    fn dispatch(&self, publication: Publication) -> usize {
        let mut owed = Owed::default();
        let reached = self.dispatch_into(publication, &mut owed);
        owed.write(&self.pacer);
        reached
    }

    fn dispatch_all(&self, publications: Vec<Publication>) -> usize {
        let mut owed = Owed::default();
        let reached = publications
            .into_iter()
            .map(|publication| self.dispatch_into(publication, &mut owed))
            .sum();
        owed.write(&self.pacer);
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
        // Every member, those joining from a stream position included.
        let members: Vec<Arc<Conn>> = channel.members().by_id.values().cloned().collect();
        for conn in &members {
            conn.close(reason.clone());
        }
        members.len()
    }

    fn notify_gap(&self, name: &ChannelName) {
        if let Some(channel) = self.channel(name.as_str()) {
            let notice = Arc::new(Delivery::new(Payload::Gap {
                channel: name.clone(),
                missed: None,
            }));
            // Never conflated: a gap notice must not be replaced by a push.
            // Members joining from a stream position get it in order too.
            for conn in channel.recipients(&notice, self.limits).iter() {
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
            position: None,
            history: None,
        }
    }

    fn at(channel: &str, offset: u64) -> Publication {
        Publication {
            position: Some(StreamPosition {
                offset,
                epoch: "e".into(),
            }),
            ..publication(channel)
        }
    }

    fn offsets(conn: &Conn) -> Vec<u64> {
        let mut batch = Vec::new();
        conn.outbox().take(&mut batch);
        batch
            .iter()
            .map(|d| match d.payload() {
                Payload::Publication(p) => p.offset().unwrap(),
                Payload::Gap { missed, .. } => 1000 + missed.as_ref().unwrap().to,
                Payload::TokenExpiring { .. } => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_held_member_gets_the_replay_then_the_live_ones_after_it_once() {
        let registry = Registry::new(Arc::default(), OutboxLimits::default());
        let a = Arc::new(Conn::new(1, Identity::default(), 0));
        let b = Arc::new(Conn::new(2, Identity::default(), 0));
        registry.join(&ch("x"), &a);
        registry.join_held(&ch("x"), &b);
        // Live while b is held: 3 and 4 (3 is also in the replay).
        registry.dispatch(at("x", 3));
        registry.dispatch(at("x", 4));
        let from = StreamPosition {
            offset: 1,
            epoch: "e".into(),
        };
        let dropped = registry.release(&ch("x"), &b, vec![at("x", 2), at("x", 3)], &from);
        assert_eq!(dropped, 1);
        registry.dispatch(at("x", 5));
        assert_eq!(offsets(&b), [2, 3, 4, 5]);
        assert_eq!(offsets(&a), [3, 4, 5]);
    }

    #[test]
    fn a_held_buffer_is_bounded_by_the_outbox_and_closes_a_slow_joiner() {
        let limits = OutboxLimits {
            max_messages: 4,
            max_bytes: usize::MAX,
        };
        let registry = Registry::new(Arc::default(), limits);
        let a = Arc::new(Conn::new(1, Identity::default(), 0));
        registry.join_held(&ch("x"), &a);
        for offset in 1..=4 {
            registry.dispatch(at("x", offset));
        }
        assert!(a.outbox().take(&mut Vec::new()).close.is_none());
        registry.dispatch(at("x", 5));
        assert_eq!(
            a.outbox().take(&mut Vec::new()).close,
            Some(DisconnectReason::SlowConsumer)
        );
    }

    #[test]
    fn publications_in_flight_past_the_replay_are_dropped_for_the_joiner_only() {
        let registry = Registry::new(Arc::default(), OutboxLimits::default());
        let a = Arc::new(Conn::new(1, Identity::default(), 0));
        let b = Arc::new(Conn::new(2, Identity::default(), 0));
        registry.join(&ch("x"), &a);
        registry.join_held(&ch("x"), &b);
        let from = StreamPosition {
            offset: 3,
            epoch: "e".into(),
        };
        // The stream was read at 3; 3 itself is still on its way live.
        registry.release(&ch("x"), &b, vec![at("x", 2), at("x", 3)], &from);
        registry.dispatch(at("x", 3));
        registry.dispatch(at("x", 4));
        registry.dispatch(at("x", 5));
        assert_eq!(offsets(&b), [2, 3, 4, 5]);
        assert_eq!(offsets(&a), [3, 4, 5]);
    }

    #[test]
    fn positioning_drops_duplicates_and_signals_jumps() {
        let registry = Registry::new(Arc::default(), OutboxLimits::default());
        let a = Arc::new(Conn::new(1, Identity::default(), 0));
        registry.join(&ch("x"), &a);
        for offset in [1, 2, 2, 1, 5, 6] {
            registry.dispatch(at("x", offset));
        }
        // 1004: the gap notice for 3..=4 (1000 + its last offset), before 5.
        assert_eq!(offsets(&a), [1, 2, 1004, 5, 6]);
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

    /// Counts direct writes and the deliveries in each.
    #[derive(Default)]
    struct Socket(Mutex<Vec<usize>>);

    impl crate::core::DirectWrite for Socket {
        fn write_now(
            &self,
            batch: &mut dyn Iterator<Item = &Arc<Delivery>>,
        ) -> crate::core::Written {
            let done = batch.count();
            self.0.lock().unwrap().push(done);
            crate::core::Written {
                done,
                blocked: false,
            }
        }
    }

    #[test]
    fn idle_members_are_written_directly_once_per_run_in_order() {
        let registry = Registry::new(Arc::default(), OutboxLimits::default());
        let conns: Vec<_> = (0..3)
            .map(|id| {
                let conn = Arc::new(Conn::new(id, Identity::default(), 0));
                registry.join(&ch("c"), &conn);
                let socket = Arc::new(Socket::default());
                conn.outbox()
                    .attach(Arc::clone(&socket) as Arc<dyn crate::core::DirectWrite>);
                (conn, socket)
            })
            .collect();
        // One publication: written at once, nothing left for the task.
        assert_eq!(registry.dispatch(publication("c")), 3);
        // A run of three: one write of three per socket.
        let run = (0..3).map(|_| publication("c")).collect();
        assert_eq!(registry.dispatch_all(run), 9);
        for (conn, socket) in &conns {
            assert_eq!(*socket.0.lock().unwrap(), [1, 3]);
            assert!(conn.outbox().is_empty());
        }
        // A busy task (answering a request) gets them queued instead.
        conns[0].0.outbox().hold();
        registry.dispatch(publication("c"));
        assert_eq!(conns[0].0.outbox().len(), 1);
        assert_eq!(*conns[1].1.0.lock().unwrap(), [1, 3, 1]);
    }
}
