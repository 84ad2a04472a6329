//! Rate limits and concurrency caps that protect a node from one client,
//! one IP or one API key (governor's GCRA for rates).

use std::{hash::Hash, net::IpAddr, num::NonZeroU32, sync::Arc};

use dashmap::DashMap;
use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, MonotonicClock},
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};
use serde::Deserialize;

use crate::metrics as names;

/// Which limit refused something (the `limit` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Messages per connection.
    ConnectionMessages,
    /// New WebSocket upgrades per client IP.
    UpgradesPerIp,
    /// Open connections per client IP.
    ConnectionsPerIp,
    /// Open connections per user.
    ConnectionsPerUser,
    /// Publications through the API.
    ApiPublishes,
    /// Session create/refresh/logout calls per client IP (across nodes).
    SessionCalls,
}

impl Limit {
    /// Every limit, for registering the metric's labels.
    pub const ALL: [Limit; 6] = [
        Self::ConnectionMessages,
        Self::UpgradesPerIp,
        Self::ConnectionsPerIp,
        Self::ConnectionsPerUser,
        Self::ApiPublishes,
        Self::SessionCalls,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ConnectionMessages => "connection_messages",
            Self::UpgradesPerIp => "upgrades_per_ip",
            Self::ConnectionsPerIp => "connections_per_ip",
            Self::ConnectionsPerUser => "connections_per_user",
            Self::ApiPublishes => "api_publishes",
            Self::SessionCalls => "session_calls",
        }
    }

    /// Counts one refusal.
    pub fn count(self) {
        metrics::counter!(names::RATE_LIMITED, "limit" => self.label()).increment(1);
    }
}

/// Rate settings (`[rate_limits]`); 0 turns a limit off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Messages a connection may send per second (burst: the same number).
    pub messages_per_second: u32,
    /// Refused messages in a row after which the connection is closed (4006).
    pub strikes: u32,
    /// New upgrades per client IP per second (burst: the same number).
    pub upgrades_per_ip_per_second: u32,
    /// Open connections per client IP.
    pub connections_per_ip: u32,
    /// Open connections per user.
    pub connections_per_user: u32,
    /// Publications through the API per second, all keys together (burst: the same).
    pub api_publishes_per_second: u32,
    /// Session calls (create, refresh, logout) per client IP per minute, across nodes.
    pub session_calls_per_ip_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            messages_per_second: 100,
            strikes: 20,
            upgrades_per_ip_per_second: 500,
            connections_per_ip: 20_000,
            connections_per_user: 100,
            api_publishes_per_second: 100_000,
            session_calls_per_ip_per_minute: 120,
        }
    }
}

fn quota(per_second: u32) -> Option<Quota> {
    NonZeroU32::new(per_second).map(Quota::per_second)
}

/// A connection's own message limiter, with its strike count.
///
/// Generic over the clock so that tests can drive time by hand; herald
/// itself uses [`MonotonicClock`] (`std::time::Instant`), not governor's
/// default quanta clock: that one is about 40 bytes in every connection's
/// limiter, and building one runs `cpuid`, which in a virtual machine traps
/// to the hypervisor (a quarter of the server's CPU in a connection storm,
/// when each connection built its own).
#[derive(Debug)]
pub struct MessageLimiter<C: Clock + Clone = MonotonicClock> {
    limiter: Option<RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>>,
    strikes: u32,
    max_strikes: u32,
}

/// What to do with one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: refuse it (error 111).
    Refuse,
    /// Over the limit too many times in a row: close (4006).
    Close,
}

impl<C: Clock + Clone> MessageLimiter<C> {
    /// `per_second` messages (0: unlimited), closing after `strikes`
    /// refusals in a row, timed by `clock`.
    pub fn with_clock(per_second: u32, strikes: u32, clock: &C) -> Self {
        Self {
            limiter: quota(per_second).map(|q| RateLimiter::direct_with_clock(q, clock.clone())),
            strikes: 0,
            max_strikes: strikes.max(1),
        }
    }

    /// Checks one message.
    pub fn check(&mut self) -> Verdict {
        let Some(limiter) = &self.limiter else {
            return Verdict::Allow;
        };
        if limiter.check().is_ok() {
            self.strikes = 0;
            return Verdict::Allow;
        }
        Limit::ConnectionMessages.count();
        self.strikes += 1;
        if self.strikes >= self.max_strikes {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

/// Counts open connections per key, with a cap.
#[derive(Debug)]
struct Concurrency<K: Hash + Eq> {
    open: DashMap<K, u32>,
    max: u32,
}

impl<K: Hash + Eq + Clone> Concurrency<K> {
    fn acquire(&self, key: &K) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut open = self.open.entry(key.clone()).or_insert(0);
        if *open >= self.max {
            return false;
        }
        *open += 1;
        true
    }

    fn release(&self, key: &K) {
        if self.max == 0 {
            return;
        }
        // Remove at zero so the map only holds keys with open connections.
        self.open.remove_if_mut(key, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }
}

/// A per-IP connection slot, held for a connection's life (see
/// [`RateLimits::ip_slot`]).
#[derive(Debug)]
pub struct IpSlot {
    limits: Arc<RateLimits>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.limits.release_ip(self.ip);
    }
}

/// Every node-local limit.
#[derive(Debug)]
pub struct RateLimits {
    config: RateLimitConfig,
    upgrades: Option<DefaultKeyedRateLimiter<IpAddr>>,
    api: Option<DefaultDirectRateLimiter>,
    per_ip: Concurrency<IpAddr>,
    per_user: Concurrency<Arc<str>>,
}

impl RateLimits {
    /// Limits from `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        // Every limit's series exists from the start, at zero (adding zero
        // never resets what another hub in this process counted).
        for limit in Limit::ALL {
            metrics::counter!(names::RATE_LIMITED, "limit" => limit.label()).increment(0);
        }
        Self {
            upgrades: quota(config.upgrades_per_ip_per_second).map(RateLimiter::keyed),
            api: quota(config.api_publishes_per_second).map(RateLimiter::direct),
            per_ip: Concurrency {
                open: DashMap::new(),
                max: config.connections_per_ip,
            },
            per_user: Concurrency {
                open: DashMap::new(),
                max: config.connections_per_user,
            },
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// A limiter for one new connection's inbound messages.
    pub fn message_limiter(&self) -> MessageLimiter {
        MessageLimiter::with_clock(
            self.config.messages_per_second,
            self.config.strikes,
            &MonotonicClock,
        )
    }

    /// Whether `ip` may open another WebSocket now (rate of upgrades).
    pub fn allow_upgrade(&self, ip: IpAddr) -> bool {
        let allowed = self
            .upgrades
            .as_ref()
            .is_none_or(|l| l.check_key(&ip).is_ok());
        if !allowed {
            Limit::UpgradesPerIp.count();
        }
        allowed
    }

    /// Whether `n` more publications through the API fit the rate now.
    pub fn allow_api_publishes(&self, n: u32) -> bool {
        let allowed = match (&self.api, NonZeroU32::new(n)) {
            (Some(limiter), Some(n)) => matches!(limiter.check_n(n), Ok(Ok(()))),
            _ => true,
        };
        if !allowed {
            Limit::ApiPublishes.count();
        }
        allowed
    }

    /// Takes a connection slot for `ip`; `false` when it has too many open.
    pub fn acquire_ip(&self, ip: IpAddr) -> bool {
        let ok = self.per_ip.acquire(&ip);
        if !ok {
            Limit::ConnectionsPerIp.count();
        }
        ok
    }

    /// Takes a connection slot for `ip` that is returned when the guard is
    /// dropped (however the connection or its upgrade ends); `None` when
    /// `ip` has too many open.
    pub fn ip_slot(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        self.acquire_ip(ip).then(|| IpSlot {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Returns a slot taken with [`Self::acquire_ip`].
    pub fn release_ip(&self, ip: IpAddr) {
        self.per_ip.release(&ip);
    }

    /// Takes a connection slot for `user`; `false` when it has too many open.
    pub fn acquire_user(&self, user: &str) -> bool {
        let ok = self.per_user.acquire(&Arc::from(user));
        if !ok {
            Limit::ConnectionsPerUser.count();
        }
        ok
    }

    /// Returns a slot taken with [`Self::acquire_user`].
    pub fn release_user(&self, user: &str) {
        self.per_user.release(&Arc::from(user));
    }

    /// Forgets idle per-IP upgrade state (call now and then).
    pub fn shrink(&self) {
        if let Some(upgrades) = &self.upgrades {
            upgrades.retain_recent();
            upgrades.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    /// The exact rule, on a clock the test moves: a burst of `rate`
    /// messages passes, the next is refused, `strikes` refusals in a row
    /// close, and after a pause the connection is healthy again.
    #[test]
    fn message_rate_burst_refusal_recovery_and_strikes() {
        let clock = FakeRelativeClock::default();
        let mut limiter = MessageLimiter::with_clock(5, 3, &clock);
        for _ in 0..5 {
            assert_eq!(limiter.check(), Verdict::Allow);
        }
        assert_eq!(limiter.check(), Verdict::Refuse);
        clock.advance(Duration::from_millis(199));
        assert_eq!(
            limiter.check(),
            Verdict::Refuse,
            "one slot refills in 200 ms"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            limiter.check(),
            Verdict::Allow,
            "an allowed message resets the strikes"
        );
        assert_eq!(limiter.check(), Verdict::Refuse);
        assert_eq!(limiter.check(), Verdict::Refuse);
        assert_eq!(limiter.check(), Verdict::Close);
        clock.advance(Duration::from_secs(1));
        for _ in 0..5 {
            assert_eq!(limiter.check(), Verdict::Allow);
        }
    }

    #[test]
    fn zero_means_unlimited() {
        let clock = FakeRelativeClock::default();
        let mut limiter = MessageLimiter::with_clock(0, 1, &clock);
        for _ in 0..10_000 {
            assert_eq!(limiter.check(), Verdict::Allow);
        }
    }
}
