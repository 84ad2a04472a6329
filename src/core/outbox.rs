//! A connection's bounded outbound queue, with latest-value conflation.
//!
//! The fan-out pushes with [`Outbox::push`], which never waits: a full queue
//! marks the connection a slow consumer instead of slowing the publisher.
//! The connection's writer waits on [`Outbox::ready`] and takes everything
//! queued in one [`Outbox::take`], so it can write the lot and flush once.
//!
//! **Direct writes.** A transport that can write to its socket without
//! waiting attaches a [`DirectWrite`]. While the connection's task is idle
//! (parked, nothing of its own in flight), the fan-out offers deliveries with
//! [`Outbox::offer`] and then writes them from its own thread with
//! [`Outbox::flush_direct`], straight into the socket: no task wake-up, no
//! copy into a write buffer, no second pass. What the socket does not take
//! at once stays queued, and the task takes over as before. Order holds
//! because every write, direct or by the task, takes from the front of this
//! one queue under its lock, and the task marks itself busy (see
//! [`Outbox::take`], [`Outbox::hold`], [`Outbox::release`]) whenever it
//! writes on its own.

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
    /// Queued, and nobody was woken for it: the caller must call
    /// [`Outbox::flush_direct`] (see [`Outbox::offer`]).
    Deferred,
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

/// What a [`DirectWrite`] did with the deliveries it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// How many of the offered deliveries (from the front) are done with:
    /// in the socket, or partly in it with the rest kept by the transport,
    /// which sends that rest before anything else.
    pub done: usize,
    /// The socket did not take everything: the connection's task must take
    /// over (it will send the transport's kept rest first).
    pub blocked: bool,
}

/// A transport's way to write deliveries into its socket from any thread,
/// without waiting: what fits now is written, the rest is left.
///
/// Called with the outbox lock held, so calls never overlap each other or
/// the task's takes; the transport still must not interleave these bytes
/// with a frame it is itself in the middle of writing.
pub trait DirectWrite: Send + Sync {
    /// Writes as many of `batch`, in order, as the socket takes at once.
    fn write_now(&self, batch: &mut dyn Iterator<Item = &Arc<Delivery>>) -> Written;
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
    /// The transport's direct path, while the connection is open.
    direct: Option<Arc<dyn DirectWrite>>,
    /// The connection's task is writing (or about to): no direct writes.
    busy: bool,
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

    /// Queues `message` without waiting and wakes the writer for it. With
    /// `conflate`, a pending message of the same channel is replaced in
    /// place instead of queuing another.
    pub fn push(&self, message: &Arc<Delivery>, conflate: bool, limits: OutboxLimits) -> Pushed {
        self.enqueue(message, conflate, limits, false)
    }

    /// Like [`Self::push`], but when the connection's task is idle and a
    /// direct path is attached, nobody is woken: the answer is
    /// [`Pushed::Deferred`] and the caller must then call
    /// [`Self::flush_direct`] (after offering the same message to every
    /// other recipient, so that one slow socket delays no other).
    pub fn offer(&self, message: &Arc<Delivery>, conflate: bool, limits: OutboxLimits) -> Pushed {
        self.enqueue(message, conflate, limits, true)
    }

    fn enqueue(
        &self,
        message: &Arc<Delivery>,
        conflate: bool,
        limits: OutboxLimits,
        defer: bool,
    ) -> Pushed {
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
        // An idle task with a direct path: the caller writes. If an earlier
        // offer's flush is still owed (a broadcast chunk not reached yet),
        // the caller writes that too, in order, rather than this message
        // waiting for the chunk; the chunk then finds nothing left.
        if defer && !state.busy && state.direct.is_some() {
            return Pushed::Deferred;
        }
        // Whoever takes the queue next takes this message with the rest:
        // only the empty → non-empty edge needs someone to act.
        if !was_empty {
            return Pushed::Queued;
        }
        drop(guard);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Writes what is queued straight into the socket, from the caller's
    /// thread, if the connection's task is idle and a direct path is
    /// attached; whatever the socket does not take at once is left for the
    /// task, which is woken for it. Never waits.
    pub fn flush_direct(&self) {
        let mut guard = self.lock();
        let state = &mut *guard;
        loop {
            if state.busy || state.close.is_some() || state.ping || state.queue.is_empty() {
                return;
            }
            let Some(direct) = &state.direct else {
                return;
            };
            let latest = state.latest.as_deref();
            let mut pending = state.queue.iter().filter_map(|item| match item {
                Item::Message(message) => Some(message),
                Item::Latest(channel) => latest.and_then(|l| l.get(channel)),
            });
            let written = direct.write_now(&mut pending);
            for _ in 0..written.done {
                match state.queue.pop_front() {
                    Some(Item::Message(message)) => state.bytes -= message.size_hint(),
                    Some(Item::Latest(channel)) => {
                        if let Some(message) =
                            state.latest.as_mut().and_then(|l| l.remove(&channel))
                        {
                            state.bytes -= message.size_hint();
                        }
                    }
                    None => break,
                }
            }
            if written.blocked {
                state.busy = true;
                drop(guard);
                self.ready.notify_one();
                return;
            }
            if written.done == 0 {
                // Nothing taken and not blocked: nothing left that can be written.
                return;
            }
        }
    }

    /// Attaches the transport's direct path, with the connection's task
    /// idle (as after [`Self::release`]).
    pub fn attach(&self, direct: Arc<dyn DirectWrite>) {
        self.lock().direct = Some(direct);
        self.release();
    }

    /// Detaches the direct path: from here on only the task writes.
    pub fn detach(&self) {
        self.lock().direct = None;
    }

    /// The connection's task is about to write on its own (a reply): no
    /// direct writes until [`Self::release`].
    pub fn hold(&self) {
        self.lock().busy = true;
    }

    /// The connection's task has written all it took and is going idle.
    /// If more was queued meanwhile it stays busy and is woken to take it.
    pub fn release(&self) {
        let mut state = self.lock();
        if state.queue.is_empty() && !state.ping && state.close.is_none() {
            state.busy = false;
        } else {
            drop(state);
            self.ready.notify_one();
        }
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

    /// Moves every queued message into `into`, in order, and returns the
    /// signals. The connection's task is busy from here until its next
    /// [`Self::release`].
    pub fn take(&self, into: &mut Vec<Arc<Delivery>>) -> Signals {
        let mut state = self.lock();
        let State {
            queue,
            latest,
            bytes,
            ping,
            close,
            busy,
            direct: _,
        } = &mut *state;
        *busy = true;
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

    /// A direct path that takes up to `room` deliveries, recording them.
    #[derive(Default)]
    struct Socket {
        room: Mutex<usize>,
        taken: Mutex<Vec<String>>,
    }

    impl DirectWrite for Socket {
        fn write_now(&self, batch: &mut dyn Iterator<Item = &Arc<Delivery>>) -> Written {
            let mut room = self.room.lock().unwrap();
            let mut done = 0;
            for delivery in batch {
                if *room == 0 {
                    return Written {
                        done,
                        blocked: true,
                    };
                }
                *room -= 1;
                done += 1;
                self.taken
                    .lock()
                    .unwrap()
                    .extend(data(&[Arc::clone(delivery)]));
            }
            Written {
                done,
                blocked: false,
            }
        }
    }

    fn attached(room: usize) -> (Outbox, Arc<Socket>) {
        let outbox = Outbox::default();
        let socket = Arc::new(Socket {
            room: Mutex::new(room),
            ..Socket::default()
        });
        outbox.attach(Arc::clone(&socket) as Arc<dyn DirectWrite>);
        (outbox, socket)
    }

    #[test]
    fn an_idle_connection_is_written_directly_without_waking_its_task() {
        let (outbox, socket) = attached(10);
        let limits = OutboxLimits::default();
        assert_eq!(outbox.offer(&msg("a", 1), false, limits), Pushed::Deferred);
        // Offered again before the flush: whoever flushes first writes both, in order.
        assert_eq!(outbox.offer(&msg("a", 2), false, limits), Pushed::Deferred);
        outbox.flush_direct();
        assert_eq!(*socket.taken.lock().unwrap(), ["a=1", "a=2"]);
        outbox.flush_direct();
        assert_eq!(socket.taken.lock().unwrap().len(), 2, "written twice");
        assert!(outbox.is_empty());
        assert!(
            outbox.ready().now_or_never().is_none(),
            "the task was woken"
        );
    }

    #[test]
    fn what_the_socket_does_not_take_stays_queued_in_order_for_the_task() {
        let (outbox, socket) = attached(1);
        let limits = OutboxLimits::default();
        outbox.offer(&msg("a", 1), false, limits);
        outbox.offer(&msg("a", 2), false, limits);
        outbox.flush_direct();
        assert_eq!(*socket.taken.lock().unwrap(), ["a=1"]);
        assert!(
            outbox.ready().now_or_never().is_some(),
            "the task must take over"
        );
        // The task is busy now: later offers wait for it, not for a flush.
        *socket.room.lock().unwrap() = 10;
        assert_eq!(outbox.offer(&msg("a", 3), false, limits), Pushed::Queued);
        outbox.flush_direct();
        assert_eq!(socket.taken.lock().unwrap().len(), 1);
        let mut batch = Vec::new();
        outbox.take(&mut batch);
        assert_eq!(data(&batch), ["a=2", "a=3"]);
        outbox.release();
        assert_eq!(outbox.offer(&msg("a", 4), false, limits), Pushed::Deferred);
    }

    #[test]
    fn a_busy_task_keeps_what_arrives_and_is_woken_again_on_release() {
        let (outbox, socket) = attached(10);
        let limits = OutboxLimits::default();
        outbox.hold();
        assert_eq!(outbox.offer(&msg("a", 1), false, limits), Pushed::Queued);
        assert!(outbox.ready().now_or_never().is_some());
        outbox.flush_direct();
        assert!(
            socket.taken.lock().unwrap().is_empty(),
            "written during a reply"
        );
        outbox.release();
        assert!(
            outbox.ready().now_or_never().is_some(),
            "release must wake for the backlog"
        );
        let mut batch = Vec::new();
        outbox.take(&mut batch);
        assert_eq!(data(&batch), ["a=1"]);
    }

    #[test]
    fn conflated_and_closing_connections_on_the_direct_path() {
        let (outbox, socket) = attached(10);
        let limits = OutboxLimits::default();
        assert_eq!(outbox.offer(&msg("p", 1), true, limits), Pushed::Deferred);
        assert_eq!(outbox.offer(&msg("p", 2), true, limits), Pushed::Conflated);
        outbox.flush_direct();
        assert_eq!(*socket.taken.lock().unwrap(), ["p=2"]);
        outbox.offer(&msg("a", 1), false, limits);
        outbox.request_close(DisconnectReason::Shutdown);
        outbox.flush_direct();
        assert_eq!(
            socket.taken.lock().unwrap().len(),
            1,
            "written after the close"
        );
        outbox.detach();
        assert_eq!(outbox.offer(&msg("a", 2), false, limits), Pushed::Closed);
    }
}
