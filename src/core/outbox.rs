//! A connection's bounded outbound queue, with latest-value conflation.
//!
//! The fan-out pushes with [`Outbox::push`], which never waits: a full queue
//! marks the connection a slow consumer instead of slowing the publisher.
//! The connection's writer waits on [`Outbox::ready`] and takes everything
//! queued in one [`Outbox::take`], so it can write the lot and flush once.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use serde::Deserialize;
use tokio::sync::Notify;

use super::Delivery;
use super::DisconnectReason;
use crate::protocol::ChannelName;

/// Caps on one connection's queue; passing either disconnects it as a slow consumer.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxLimits {
    /// Most messages queued for one connection.
    pub max_messages: usize,
    /// Most bytes (estimated encoded size) queued for one connection.
    pub max_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            max_messages: 1024,
            max_bytes: 1024 * 1024,
        }
    }
}

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for delivery.
    Queued,
    /// Replaced an older pending message of the same latest-value channel.
    Conflated,
    /// Did not fit: the connection is now closing as a slow consumer.
    Overflow,
    /// The connection is already closing; the message was not queued.
    Closed,
}

/// Out-of-band requests for the writer, taken together with the queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// Send a WebSocket ping.
    pub ping: bool,
    /// Close the connection after writing what was taken.
    pub close: Option<DisconnectReason>,
}

enum Item {
    Message(Arc<Delivery>),
    /// The newest pending message of a latest-value channel, kept in `State::latest`.
    Latest(ChannelName),
}

#[derive(Default)]
struct State {
    queue: VecDeque<Item>,
    /// Pending message per latest-value channel.
    // Boxed on purpose: an empty HashMap is 48 bytes inline, and most
    // connections never conflate; this way they pay one pointer.
    #[allow(clippy::box_collection)]
    latest: Option<Box<HashMap<ChannelName, Arc<Delivery>>>>,
    bytes: usize,
    ping: bool,
    close: Option<DisconnectReason>,
}

/// The outbound queue of one connection.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Outbox")
            .field("queued", &state.queue.len())
            .field("bytes", &state.bytes)
            .finish_non_exhaustive()
    }
}

/// Queues that grew past this many slots are freed when drained, so a burst
/// does not leave an idle connection holding a large buffer.
const KEEP_CAPACITY: usize = 64;

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section below leaves `State` consistent, so a panic
        // elsewhere while holding the lock cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message` without waiting. With `conflate`, a pending message of
    /// the same channel is replaced in place instead of queuing another.
    pub fn push(&self, message: &Arc<Delivery>, conflate: bool, limits: OutboxLimits) -> Pushed {
        let size = message.size_hint();
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.close.is_some() {
            return Pushed::Closed;
        }
        let was_empty = state.queue.is_empty() && !state.ping;
        if conflate && let Some(channel) = message.channel() {
            if let Some(pending) = state.latest.as_mut().and_then(|l| l.get_mut(channel)) {
                let old = std::mem::replace(pending, Arc::clone(message));
                state.bytes = state.bytes + size - old.size_hint();
                return Pushed::Conflated;
            }
            if !fits(state, size, limits) {
                drop(guard);
                return self.overflow();
            }
            state
                .latest
                .get_or_insert_with(Default::default)
                .insert(channel.clone(), Arc::clone(message));
            state.queue.push_back(Item::Latest(channel.clone()));
        } else {
            if !fits(state, size, limits) {
                drop(guard);
                return self.overflow();
            }
            state.queue.push_back(Item::Message(Arc::clone(message)));
        }
        state.bytes += size;
        drop(guard);
        // Wake the writer only on the empty → non-empty edge; while it has
        // work pending it will take this message with the rest.
        if was_empty {
            self.ready.notify_one();
        }
        Pushed::Queued
    }

    /// Ends the connection as a slow consumer. Frees the backlog now (the
    /// client will never read it, and holding it until the writer notices
    /// would let one slow client pin memory) and always wakes the writer:
    /// the queue may have been empty, with the writer parked on [`Self::ready`]
    /// and nothing else ever going to wake it.
    fn overflow(&self) -> Pushed {
        let mut state = self.lock();
        // A close requested between the caller's check and this lock wins.
        if state.close.is_some() {
            return Pushed::Closed;
        }
        state.queue = VecDeque::new();
        state.latest = None;
        state.bytes = 0;
        state.close = Some(DisconnectReason::SlowConsumer);
        drop(state);
        self.ready.notify_one();
        Pushed::Overflow
    }

    /// Asks the writer to send a WebSocket ping.
    pub fn request_ping(&self) {
        let mut state = self.lock();
        if state.close.is_none() && !state.ping {
            state.ping = true;
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Asks the writer to close the connection. The first reason wins.
    pub fn request_close(&self, reason: DisconnectReason) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(reason);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Waits until something is queued or signalled.
    ///
    /// # Cancel safety
    /// Cancel safe: a wake-up that arrives while nobody waits is kept for the next call.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Moves every queued message into `into`, in order, and returns the signals.
    pub fn take(&self, into: &mut Vec<Arc<Delivery>>) -> Signals {
        let mut state = self.lock();
        let State {
            queue,
            latest,
            bytes,
            ping,
            close,
        } = &mut *state;
        into.reserve(queue.len());
        for item in queue.drain(..) {
            match item {
                Item::Message(message) => into.push(message),
                Item::Latest(channel) => {
                    if let Some(message) = latest.as_mut().and_then(|l| l.remove(&channel)) {
                        into.push(message);
                    }
                }
            }
        }
        if queue.capacity() > KEEP_CAPACITY {
            *queue = VecDeque::new();
        }
        if latest.as_ref().is_some_and(|l| l.is_empty()) {
            *latest = None;
        }
        *bytes = 0;
        Signals {
            ping: std::mem::take(ping),
            close: close.clone(),
        }
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn fits(state: &State, size: usize, limits: OutboxLimits) -> bool {
    state.queue.len() < limits.max_messages && state.bytes + size <= limits.max_bytes
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;
    use crate::{
        core::Payload,
        protocol::{EventName, JsonData, Publication},
    };

    fn msg(channel: &str, n: u32) -> Arc<Delivery> {
        Arc::new(Delivery::publication(Publication {
            channel: ChannelName::parse(channel, 128).unwrap(),
            event: EventName::parse("e").unwrap(),
            data: JsonData::from_json(&n.to_string()).unwrap(),
            ts: None,
            position: None,
            history: None,
        }))
    }

    fn data(batch: &[Arc<Delivery>]) -> Vec<String> {
        batch
            .iter()
            .map(|m| {
                let Payload::Publication(p) = m.payload() else {
                    panic!("not a publication: {m:?}")
                };
                format!("{}={}", p.channel.as_str(), p.data.as_json().unwrap())
            })
            .collect()
    }

    #[test]
    fn keeps_order_and_drains_everything() {
        let outbox = Outbox::default();
        let limits = OutboxLimits::default();
        for n in 0..5 {
            assert_eq!(outbox.push(&msg("a", n), false, limits), Pushed::Queued);
        }
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch), Signals::default());
        assert_eq!(data(&batch), ["a=0", "a=1", "a=2", "a=3", "a=4"]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn overflow_by_count_closes_as_slow_consumer_and_frees_the_queue() {
        let outbox = Outbox::default();
        let limits = OutboxLimits {
            max_messages: 3,
            max_bytes: usize::MAX,
        };
        for n in 0..3 {
            assert_eq!(outbox.push(&msg("a", n), false, limits), Pushed::Queued);
        }
        assert_eq!(outbox.push(&msg("a", 3), false, limits), Pushed::Overflow);
        assert_eq!(outbox.push(&msg("a", 4), false, limits), Pushed::Closed);
        assert!(outbox.is_empty());
        let mut batch = Vec::new();
        let signals = outbox.take(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(signals.close, Some(DisconnectReason::SlowConsumer));
    }

    #[test]
    fn overflow_wakes_a_writer_parked_on_an_empty_queue() {
        let outbox = Outbox::default();
        let limits = OutboxLimits {
            max_messages: 10,
            max_bytes: 1,
        };
        // The writer has drained everything and waits for the next wake-up.
        assert!(outbox.ready().now_or_never().is_none());
        assert_eq!(outbox.push(&msg("a", 1), false, limits), Pushed::Overflow);
        assert!(
            outbox.ready().now_or_never().is_some(),
            "the writer must be woken to send the slow-consumer close"
        );
        let signals = outbox.take(&mut Vec::new());
        assert_eq!(signals.close, Some(DisconnectReason::SlowConsumer));
    }

    #[test]
    fn overflow_of_a_latest_value_channel_wakes_the_writer_too() {
        let outbox = Outbox::default();
        let limits = OutboxLimits {
            max_messages: 10,
            max_bytes: 1,
        };
        assert_eq!(outbox.push(&msg("p", 1), true, limits), Pushed::Overflow);
        assert!(outbox.ready().now_or_never().is_some());
    }

    #[test]
    fn overflow_by_bytes() {
        let outbox = Outbox::default();
        let one = msg("a", 1).size_hint();
        let limits = OutboxLimits {
            max_messages: 100,
            max_bytes: one * 2,
        };
        assert_eq!(outbox.push(&msg("a", 1), false, limits), Pushed::Queued);
        assert_eq!(outbox.push(&msg("a", 2), false, limits), Pushed::Queued);
        assert_eq!(outbox.push(&msg("a", 3), false, limits), Pushed::Overflow);
    }

    #[test]
    fn conflation_keeps_the_newest_per_channel_in_first_position() {
        let outbox = Outbox::default();
        let limits = OutboxLimits {
            max_messages: 4,
            max_bytes: usize::MAX,
        };
        assert_eq!(outbox.push(&msg("p.btc", 1), true, limits), Pushed::Queued);
        assert_eq!(outbox.push(&msg("n", 1), false, limits), Pushed::Queued);
        for n in 2..100 {
            assert_eq!(
                outbox.push(&msg("p.btc", n), true, limits),
                Pushed::Conflated
            );
        }
        assert_eq!(outbox.push(&msg("p.eth", 7), true, limits), Pushed::Queued);
        let mut batch = Vec::new();
        outbox.take(&mut batch);
        assert_eq!(data(&batch), ["p.btc=99", "n=1", "p.eth=7"]);
        // After a drain the channel starts a new slot.
        assert_eq!(
            outbox.push(&msg("p.btc", 100), true, limits),
            Pushed::Queued
        );
    }

    #[test]
    fn close_keeps_pending_messages_for_a_final_flush() {
        let outbox = Outbox::default();
        outbox.push(&msg("a", 1), false, OutboxLimits::default());
        outbox.request_close(DisconnectReason::Shutdown);
        outbox.request_close(DisconnectReason::Kicked);
        let mut batch = Vec::new();
        let signals = outbox.take(&mut batch);
        assert_eq!(batch.len(), 1);
        assert_eq!(signals.close, Some(DisconnectReason::Shutdown));
    }
}
