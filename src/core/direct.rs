//! The direct writes a fan-out owes, and how a large one shares the
//! runtime with the rest of the traffic.
//!
//! The fan-out first offers a publication to every recipient
//! ([`super::Outbox::offer`]), then writes into the sockets of those whose
//! task was idle. Up to [`CHUNK`] sockets are written from the dispatching
//! thread; past that (a broadcast), the rest is left to [`Bulk`]: at most
//! one task per worker, each claiming the next chunk, writing it and
//! yielding, so that the engine readers, woken meanwhile, run between two
//! chunks instead of after the whole broadcast. While other channels have
//! traffic (small fan-outs: a user's channel, a shipment's), each chunk is
//! also followed by a pause that holds the bulk writes to
//! [`FanoutConfig::bulk_share_percent`] of a worker's time: on a
//! busy node a 50,000-socket broadcast then takes a little longer to
//! reach everyone, and per-channel traffic keeps its latency.
//!
//! What is dispatched to a socket whose chunk has not come yet does not
//! wait for it: the offer is deferred to the new dispatcher, which writes
//! the broadcast and the new message together, in order.

use std::{
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::Conn;

/// The members of a channel, as the fan-out iterates them.
pub(super) type Snapshot = Arc<[Arc<Conn>]>;

/// Sockets written in a row by one thread before it yields.
const CHUNK: usize = 256;

/// `[fanout]`: how a large fan-out shares the workers with other traffic.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutConfig {
    /// While publications to channels with at most 256 local subscribers
    /// are being dispatched, the most of a worker's time the writes of a
    /// large fan-out (past its first 256 sockets) may take, in percent,
    /// 1–100. 100: no pause, only a yield between chunks.
    pub bulk_share_percent: u32,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            bulk_share_percent: 50,
        }
    }
}

impl FanoutConfig {
    /// Checks the settings; the error names what is wrong.
    pub fn validate(&self) -> Result<(), &'static str> {
        if (1..=100).contains(&self.bulk_share_percent) {
            Ok(())
        } else {
            Err("must be between 1 and 100")
        }
    }
}

/// Tells large fan-outs whether anything else is being dispatched.
#[derive(Debug)]
pub(super) struct Pacer {
    share_percent: u32,
    /// Publications dispatched so far: a bulk writer that sees it move
    /// during a chunk knows other traffic is waiting for the workers.
    dispatched: AtomicU64,
}

impl Pacer {
    pub(super) fn new(config: FanoutConfig) -> Self {
        Self {
            share_percent: config.bulk_share_percent.clamp(1, 100),
            dispatched: AtomicU64::new(0),
        }
    }

    /// Counts a publication dispatched to `recipients` local sockets (once
    /// per publication, not per recipient). Only those a bulk writer should
    /// make way for count: small fan-outs, written from the dispatching
    /// thread. Another large one (the same broadcast channel's next
    /// publication, say) gains nothing from a pause: it goes to the same
    /// sockets, or is paced itself.
    pub(super) fn dispatched(&self, recipients: usize) {
        if recipients <= CHUNK {
            self.dispatched.fetch_add(1, Relaxed);
        }
    }

    /// What a bulk writer does after its `chunks`-th chunk, which took
    /// `spent`, given the count of small fan-outs dispatched when it began.
    fn after_chunk(&self, since: u64, spent: Duration, chunks: usize) -> Next {
        if self.dispatched.load(Relaxed) != since {
            if self.share_percent < 100 {
                return Next::Pause(spent * (100 - self.share_percent) / self.share_percent);
            }
            return Next::Yield;
        }
        // Nothing else seen: go on, but let the worker poll its sockets now
        // and then, or a reader with something to dispatch could not run.
        if chunks.is_multiple_of(YIELD_EVERY) {
            Next::Yield
        } else {
            Next::Continue
        }
    }
}

/// Chunks a bulk writer makes in a row while nothing else is dispatched.
const YIELD_EVERY: usize = 4;

/// What a bulk writer does after a chunk.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Other traffic waits for the workers: sleep this long.
    Pause(Duration),
    /// Let the worker run its other tasks and poll its sockets first.
    Yield,
    /// Write the next chunk at once.
    Continue,
}

/// Direct writes owed to the recipients of one or more fan-outs, made
/// together by [`Owed::write`]: a run of publications read at once from the
/// engine then costs each socket one write, not one per publication.
#[derive(Default)]
pub(super) struct Owed(Vec<(Snapshot, Range<usize>)>);

impl Owed {
    pub(super) fn add(&mut self, recipients: Snapshot, range: Range<usize>) {
        // Consecutive publications of one channel share its snapshot.
        if let Some((last, owed)) = self.0.last_mut()
            && Arc::ptr_eq(last, &recipients)
        {
            owed.start = owed.start.min(range.start);
            owed.end = owed.end.max(range.end);
            return;
        }
        self.0.push((recipients, range));
    }

    pub(super) fn write(self, pacer: &Arc<Pacer>) {
        for (recipients, range) in self.0 {
            let mut own = range.clone();
            if range.len() > CHUNK
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                own.end = range.start + CHUNK;
                Bulk::start(&runtime, recipients.clone(), own.end..range.end, pacer);
            }
            flush(recipients.get(own).unwrap_or_default());
        }
    }
}

fn flush(conns: &[Arc<Conn>]) {
    for conn in conns {
        conn.outbox().flush_direct();
    }
}

/// The direct writes of a large fan-out past its first chunk.
struct Bulk {
    recipients: Snapshot,
    next: AtomicUsize,
    end: usize,
    pacer: Arc<Pacer>,
}

impl Bulk {
    fn start(
        runtime: &tokio::runtime::Handle,
        recipients: Snapshot,
        range: Range<usize>,
        pacer: &Arc<Pacer>,
    ) {
        let tasks = runtime
            .metrics()
            .num_workers()
            .clamp(1, range.len().div_ceil(CHUNK));
        let bulk = Arc::new(Self {
            recipients,
            next: range.start.into(),
            end: range.end,
            pacer: Arc::clone(pacer),
        });
        for _ in 0..tasks {
            runtime.spawn(Arc::clone(&bulk).run());
        }
    }

    async fn run(self: Arc<Self>) {
        for chunks in 1.. {
            let start = self.next.fetch_add(CHUNK, Relaxed);
            if start >= self.end {
                return;
            }
            let since = self.pacer.dispatched.load(Relaxed);
            let began = Instant::now();
            flush(
                self.recipients
                    .get(start..self.end.min(start + CHUNK))
                    .unwrap_or_default(),
            );
            // The timer sleeps whole milliseconds at least: a pause shorter
            // than that lasts a millisecond, and the share is then lower
            // than set, never higher. (Adding short pauses up to make
            // accurate ones was tried: it kept the share exact and doubled
            // the tracking updates' p99.9 in the mixed benchmark.)
            match self.pacer.after_chunk(since, began.elapsed(), chunks) {
                Next::Pause(pause) => tokio::time::sleep(pause.min(MAX_PAUSE)).await,
                Next::Yield => tokio::task::yield_now().await,
                Next::Continue => {}
            }
        }
    }
}

/// The longest pause after one chunk, whatever the share: a broadcast's
/// sockets not reached yet hold its message queued, and a very low share
/// must not turn that into a backlog that closes them as slow consumers.
const MAX_PAUSE: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_pauses_only_while_small_fan_outs_wait() {
        let pacer = Pacer::new(FanoutConfig {
            bulk_share_percent: 25,
        });
        let spent = Duration::from_millis(2);
        assert_eq!(pacer.after_chunk(0, spent, 1), Next::Continue);
        assert_eq!(pacer.after_chunk(0, spent, YIELD_EVERY), Next::Yield);
        pacer.dispatched(CHUNK + 1);
        assert_eq!(
            pacer.after_chunk(0, spent, 1),
            Next::Continue,
            "another large fan-out"
        );
        pacer.dispatched(1);
        assert_eq!(
            pacer.after_chunk(0, spent, 1),
            Next::Pause(Duration::from_millis(6))
        );
        let all = Pacer::new(FanoutConfig {
            bulk_share_percent: 100,
        });
        all.dispatched(1);
        assert_eq!(
            all.after_chunk(0, spent, 1),
            Next::Yield,
            "100 % never pauses"
        );
    }

    #[test]
    fn shares_outside_1_to_100_are_refused() {
        for bad in [0, 101] {
            assert!(
                FanoutConfig {
                    bulk_share_percent: bad
                }
                .validate()
                .is_err()
            );
        }
        assert!(FanoutConfig::default().validate().is_ok());
    }
}
