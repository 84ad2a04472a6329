//! The reader shards of one node and how channels map to them.
//!
//! - **One server** (or a TLS cluster): `reader_shards` connections, each
//!   channel on the shard picked by a hash of its name.
//! - **Redis Cluster**: one reader per master, each channel on the reader of
//!   the master serving its slot, so a master going down silences only the
//!   channels of its slots. The groups are the masters' slot ranges when the
//!   node first reached the cluster; each reader follows its group to
//!   whichever node serves it now (failover, a returning master).

use std::sync::{
    Arc, Mutex, OnceLock, PoisonError,
    atomic::{AtomicBool, AtomicU16, Ordering},
};

use tokio::sync::mpsc;

use super::{
    backend::{Backend, ClusterNode},
    shard::{Command, Shard, ShardConfig},
    topology::{self, SLOTS, Topology},
};
use crate::{engine::SharedDispatcher, metrics as names};

/// Which reader shards are connected, mirrored into the metrics gauges.
#[derive(Debug)]
pub(super) struct Status {
    up: Vec<AtomicBool>,
    /// What each shard serves, for `/ready` while it is down.
    labels: Vec<String>,
}

impl Status {
    pub(super) fn new(labels: Vec<String>) -> Self {
        metrics::gauge!(names::ENGINE_CONNECTED).set(0.0);
        for shard in 0..labels.len() {
            metrics::gauge!(names::ENGINE_SHARD_CONNECTED, "shard" => shard.to_string()).set(0.0);
        }
        Self {
            up: labels.iter().map(|_| AtomicBool::new(false)).collect(),
            labels,
        }
    }

    pub(super) fn set(&self, shard: usize, up: bool) {
        if let Some(flag) = self.up.get(shard) {
            flag.store(up, Ordering::Release);
        }
        metrics::gauge!(names::ENGINE_SHARD_CONNECTED, "shard" => shard.to_string())
            .set(f64::from(u8::from(up)));
        metrics::gauge!(names::ENGINE_CONNECTED).set(f64::from(u8::from(self.all_up())));
    }

    pub(super) fn shard_up(&self, shard: usize) -> bool {
        self.up
            .get(shard)
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    }

    pub(super) fn all_up(&self) -> bool {
        self.up.iter().all(|flag| flag.load(Ordering::Acquire))
    }

    pub(super) fn any_up(&self) -> bool {
        self.up.iter().any(|flag| flag.load(Ordering::Acquire))
    }

    /// The labels of the shards that are down.
    pub(super) fn down(&self) -> Vec<String> {
        self.up
            .iter()
            .zip(&self.labels)
            .filter(|(flag, _)| !flag.load(Ordering::Acquire))
            .map(|(_, label)| label.clone())
            .collect()
    }
}

/// The running reader shards.
#[derive(Debug)]
pub(super) struct Readers {
    pub(super) shards: Vec<mpsc::UnboundedSender<Command>>,
    pub(super) status: Arc<Status>,
    /// On a cluster: the shard of each slot. Otherwise shards by hash.
    slots: Option<Vec<AtomicU16>>,
    /// On a cluster: the node each shard is connected to (`host:port`).
    masters: Vec<Mutex<Option<String>>>,
}

/// Set once the readers exist (at once, or once the cluster answered).
pub(super) type Routing = Arc<OnceLock<Readers>>;

impl Readers {
    /// Whether the node can serve: on one server every shard must be up
    /// (they share the server, so one down is an outage in progress); on a
    /// cluster one master's shard may be down while the others serve.
    pub(super) fn serving(&self) -> bool {
        if self.slots.is_some() {
            self.status.any_up()
        } else {
            self.status.all_up()
        }
    }

    /// The shard serving the Redis channel `key`.
    pub(super) fn shard_of(&self, key: &str) -> usize {
        match &self.slots {
            Some(slots) => usize::from(
                slots
                    .get(usize::from(topology::slot_of(key.as_bytes())))
                    .map_or(0, |shard| shard.load(Ordering::Acquire)),
            ),
            None => {
                // FNV-1a: stable and cheap; per-channel order needs only
                // that a channel always maps to the same shard.
                let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                (hash % self.shards.len().max(1) as u64) as usize
            }
        }
    }

    /// Records which node shard `index` is connected to.
    pub(super) fn set_master(&self, index: usize, node: String) {
        if let Some(master) = self.masters.get(index) {
            *master.lock().unwrap_or_else(PoisonError::into_inner) = Some(node);
        }
    }

    /// Routes the slot of `key` to the shard connected to `node` (not
    /// `from`) and sends it `command`. Returns that shard, if there is one
    /// (otherwise `command` is dropped, which answers a pending
    /// subscription "engine stopped").
    pub(super) fn move_slot(
        &self,
        key: &str,
        node: &str,
        from: usize,
        command: Command,
    ) -> Option<usize> {
        let slots = self.slots.as_ref()?;
        let to = self.masters.iter().position(|m| {
            m.lock().unwrap_or_else(PoisonError::into_inner).as_deref() == Some(node)
        })?;
        if to == from {
            return None;
        }
        let slot = slots.get(usize::from(topology::slot_of(key.as_bytes())))?;
        slot.store(u16::try_from(to).ok()?, Ordering::Release);
        self.shards.get(to)?.send(command).ok()?;
        Some(to)
    }

    /// Sends `command` to the shard that serves the Redis channel `key` now.
    pub(super) fn send_to_owner(&self, key: &str, command: Command) {
        if let Some(shard) = self.shards.get(self.shard_of(key)) {
            let _ = shard.send(command);
        }
    }

    /// `count` shards over one server, by hash.
    pub(super) fn hashed<B: Backend + Clone>(
        count: usize,
        backend: &B,
        config: &ShardConfig,
        dispatcher: &SharedDispatcher,
    ) -> Self {
        let status = Arc::new(Status::new(
            (0..count).map(|i| format!("reader shard {i}")).collect(),
        ));
        let shards = (0..count)
            .map(|index| spawn(index, backend.clone(), config, dispatcher, &status))
            .collect();
        Self {
            shards,
            status,
            slots: None,
            masters: Vec::new(),
        }
    }

    /// One shard per master of `topology`.
    fn per_master(
        topology: &Topology,
        seeds: &Arc<Mutex<Vec<redis::ConnectionInfo>>>,
        config: &ShardConfig,
        dispatcher: &SharedDispatcher,
    ) -> Self {
        let mut masters = Vec::new();
        let slots: Vec<AtomicU16> = (0..SLOTS).map(|_| AtomicU16::new(0)).collect();
        let mut labels: Vec<String> = Vec::new();
        let mut first_slots = Vec::new();
        for range in &topology.ranges {
            let group = match masters.iter().position(|m| m == &range.master) {
                Some(group) => group,
                None => {
                    masters.push(range.master.clone());
                    labels.push(format!("slots served by {} at start:", range.master));
                    first_slots.push(range.start);
                    masters.len() - 1
                }
            };
            if let Some(label) = labels.get_mut(group) {
                label.push_str(&format!(" {}-{}", range.start, range.end));
            }
            let group = u16::try_from(group).unwrap_or(0);
            for slot in range.start..=range.end.min(SLOTS - 1) {
                if let Some(entry) = slots.get(usize::from(slot)) {
                    entry.store(group, Ordering::Relaxed);
                }
            }
        }
        let status = Arc::new(Status::new(labels));
        let shards = first_slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let backend = ClusterNode {
                    seeds: Arc::clone(seeds),
                    slot: *slot,
                    connect_timeout: config.connect_timeout,
                    command_timeout: config.command_timeout,
                };
                spawn(index, backend, config, dispatcher, &status)
            })
            .collect();
        Self {
            masters: masters.iter().map(|_| Mutex::new(None)).collect(),
            shards,
            status,
            slots: Some(slots),
        }
    }
}

/// Asks the cluster for its masters until it answers (with backoff), then
/// starts one reader per master and publishes them in `routing`.
pub(super) async fn discover(
    routing: Routing,
    seeds: Vec<redis::ConnectionInfo>,
    mut config: ShardConfig,
    dispatcher: SharedDispatcher,
) {
    let mut delay = config.backoff_min;
    let topology = loop {
        match topology::fetch(&seeds, config.connect_timeout, config.command_timeout).await {
            Ok(topology) => break topology,
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?delay, "redis cluster slot map unavailable");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(config.backoff_max);
            }
        }
    };
    // A reader's connect asks the slot map first, then opens its socket.
    config.connect_timeout += config.command_timeout;
    let seeds = Arc::new(Mutex::new(seeds));
    let readers = Readers::per_master(&topology, &seeds, &config, &dispatcher);
    tracing::info!(
        masters = readers.shards.len(),
        "redis cluster readers started, one per master"
    );
    let _ = routing.set(readers);
}

fn spawn<B: Backend>(
    index: usize,
    backend: B,
    config: &ShardConfig,
    dispatcher: &SharedDispatcher,
    status: &Arc<Status>,
) -> mpsc::UnboundedSender<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    let shard = Shard::new(
        index,
        backend,
        config.clone(),
        rx,
        Arc::clone(dispatcher),
        Arc::clone(status),
    );
    tokio::spawn(shard.run());
    tx
}
