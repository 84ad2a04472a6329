//! Caps on HTTP connections that have not become WebSockets, per node and
//! per peer address.
//!
//! A [`PendingPermit`] lives as long as hyper's connection future. That
//! future ends when a request upgrades to a WebSocket (hyper hands the socket
//! to the upgrade task), so the caps count exactly the connections that are
//! still speaking HTTP: idle keep-alive, half-sent requests, slowloris.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use dashmap::{DashMap, mapref::entry::Entry};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The node holds `max_pending_connections` already.
    Node,
    /// The peer address holds `max_pending_per_ip` already.
    PerIp,
}

impl Refusal {
    /// The `reason` label of the refusal metric.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Node => "pending_node",
            Self::PerIp => "pending_per_ip",
        }
    }
}

/// Counters of connections still speaking HTTP.
#[derive(Debug)]
pub(crate) struct PendingLimits {
    node_cap: usize,
    /// `0`: no per-address cap.
    per_ip_cap: usize,
    node: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

impl PendingLimits {
    /// Caps of `node_cap` in all and `per_ip_cap` per address (`0`: none).
    pub(crate) fn new(node_cap: usize, per_ip_cap: usize) -> Arc<Self> {
        Arc::new(Self {
            node_cap,
            per_ip_cap,
            node: AtomicUsize::new(0),
            per_ip: DashMap::new(),
        })
    }

    /// Takes a slot for a connection from `ip`, or says which cap is full.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<PendingPermit, Refusal> {
        let taken = self
            .node
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.node_cap).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Refusal::Node);
        }
        if self.per_ip_cap > 0 {
            // The entry guard is the lock for this address: check and
            // increment cannot interleave with another connection's.
            let mut count = self.per_ip.entry(ip).or_insert(0);
            if *count >= self.per_ip_cap {
                drop(count);
                self.node.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerIp);
            }
            *count += 1;
        }
        Ok(PendingPermit {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Connections holding a slot now.
    pub(crate) fn count(&self) -> usize {
        self.node.load(Ordering::Acquire)
    }

    fn release(&self, ip: IpAddr) {
        if self.per_ip_cap > 0
            && let Entry::Occupied(mut entry) = self.per_ip.entry(ip)
        {
            // Remove at zero so the map holds only addresses with open
            // connections and cannot grow with every address ever seen.
            if *entry.get() <= 1 {
                entry.remove();
            } else {
                *entry.get_mut() -= 1;
            }
        }
        self.node.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection's slot, given back on drop.
#[derive(Debug)]
pub(crate) struct PendingPermit {
    limits: Arc<PendingLimits>,
    ip: IpAddr,
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn per_ip_and_node_caps_hold_and_slots_come_back() {
        let limits = PendingLimits::new(3, 2);
        let a1 = limits.try_acquire(ip(1)).unwrap();
        let _a2 = limits.try_acquire(ip(1)).unwrap();
        assert_eq!(limits.try_acquire(ip(1)).unwrap_err(), Refusal::PerIp);
        let _b1 = limits.try_acquire(ip(2)).unwrap();
        assert_eq!(limits.try_acquire(ip(3)).unwrap_err(), Refusal::Node);
        assert_eq!(limits.count(), 3);
        drop(a1);
        let _a3 = limits.try_acquire(ip(1)).unwrap();
        assert_eq!(limits.count(), 3);
    }

    #[test]
    fn addresses_without_connections_are_forgotten() {
        let limits = PendingLimits::new(10, 5);
        let permits: Vec<_> = (0..4).map(|_| limits.try_acquire(ip(9)).unwrap()).collect();
        drop(permits);
        assert!(limits.per_ip.is_empty());
        assert_eq!(limits.count(), 0);
    }

    #[test]
    fn a_zero_per_ip_cap_means_only_the_node_cap() {
        let limits = PendingLimits::new(2, 0);
        let _a = limits.try_acquire(ip(1)).unwrap();
        let _b = limits.try_acquire(ip(1)).unwrap();
        assert_eq!(limits.try_acquire(ip(1)).unwrap_err(), Refusal::Node);
    }
}
