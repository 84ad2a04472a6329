//! Which master of a Redis Cluster owns which slots, and the slot of a key.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, Value};

/// Slots in a Redis Cluster.
pub(super) const SLOTS: u16 = 16_384;

/// The cluster slot of `key`: CRC16 (XMODEM) of the key, or of its hash
/// tag (the part between the first `{` and the next `}`, if not empty).
pub(super) fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc
}

/// A node's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Node {
    pub(super) host: String,
    pub(super) port: u16,
}

impl Node {
    /// A node from its `host:port` (as [`Node`] displays it).
    pub(super) fn parse(address: &str) -> Option<Self> {
        let (host, port) = address.rsplit_once(':')?;
        Some(Self {
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Slots `start..=end`, served by `master` (and `replicas`).
#[derive(Debug, Clone)]
pub(super) struct SlotRange {
    pub(super) start: u16,
    pub(super) end: u16,
    pub(super) master: Node,
    pub(super) replicas: Vec<Node>,
}

/// The slot map as one node sees it (`CLUSTER SLOTS`).
#[derive(Debug, Clone, Default)]
pub(super) struct Topology {
    pub(super) ranges: Vec<SlotRange>,
}

impl Topology {
    /// The master serving `slot`.
    pub(super) fn master_of(&self, slot: u16) -> Option<&Node> {
        self.ranges
            .iter()
            .find(|r| (r.start..=r.end).contains(&slot))
            .map(|r| &r.master)
    }

    /// Every node named, masters first.
    pub(super) fn nodes(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = self.ranges.iter().map(|r| r.master.clone()).collect();
        nodes.extend(self.ranges.iter().flat_map(|r| r.replicas.iter().cloned()));
        nodes.dedup();
        nodes
    }
}

/// Asks the first node of `seeds` that answers for the slot map, each
/// within `connect` + `command`.
///
/// # Errors
/// [`SlotMapError`]: why the last seed asked gave no usable map.
pub(super) async fn fetch(
    seeds: &[ConnectionInfo],
    connect: Duration,
    command: Duration,
) -> Result<Topology, SlotMapError> {
    let mut last = SlotMapError::NoSeed;
    for seed in seeds {
        let at = seed.addr().to_string();
        match tokio::time::timeout(connect + command, ask(seed.clone(), connect, command)).await {
            Ok(Ok(topology)) if !topology.ranges.is_empty() => return Ok(topology),
            Ok(Ok(_)) => last = SlotMapError::NoSlots(at),
            Ok(Err(source)) => last = SlotMapError::Failed { at, source },
            Err(_) => last = SlotMapError::TimedOut(at),
        }
    }
    Err(last)
}

/// Why no seed gave a slot map.
#[derive(Debug, thiserror::Error)]
pub(super) enum SlotMapError {
    #[error("no cluster seed")]
    NoSeed,
    #[error("{0} serves no slots")]
    NoSlots(String),
    #[error("{at}: {source}")]
    Failed {
        at: String,
        source: redis::RedisError,
    },
    #[error("{0}: timed out")]
    TimedOut(String),
}

async fn ask(
    seed: ConnectionInfo,
    connect: Duration,
    command: Duration,
) -> redis::RedisResult<Topology> {
    let client = redis::Client::open(seed)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(command));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await?;
    Ok(parse_slots(reply))
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id], [replica...]...]...]`.
fn parse_slots(reply: Value) -> Topology {
    let Value::Array(ranges) = reply else {
        return Topology::default();
    };
    let ranges = ranges
        .into_iter()
        .filter_map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let mut fields = fields.into_iter();
            let start = int(fields.next()?)?;
            let end = int(fields.next()?)?;
            let master = node(fields.next()?)?;
            Some(SlotRange {
                start: u16::try_from(start).ok()?,
                end: u16::try_from(end).ok()?,
                master,
                replicas: fields.filter_map(node).collect(),
            })
        })
        .collect();
    Topology { ranges }
}

fn int(value: Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(n),
        _ => None,
    }
}

fn node(value: Value) -> Option<Node> {
    let Value::Array(fields) = value else {
        return None;
    };
    let mut fields = fields.into_iter();
    let host = match fields.next()? {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        Value::SimpleString(text) => text,
        _ => return None,
    };
    let port = u16::try_from(int(fields.next()?)?).ok()?;
    Some(Node { host, port })
}

/// `seed` pointed at `node` instead (same credentials and settings).
pub(super) fn info_for(seed: &ConnectionInfo, node: &Node) -> ConnectionInfo {
    seed.clone()
        .set_addr(ConnectionAddr::Tcp(node.host.clone(), node.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"foo"), 12_182);
        assert_eq!(slot_of(b"herald:feed"), slot_of(b"x{herald:feed}:y"));
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"{}foo"), crc16(b"{}foo") % SLOTS);
    }
}
