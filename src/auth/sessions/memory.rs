//! Sessions kept in this process, for the memory engine (one node).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures_util::future::{BoxFuture, FutureExt, ready};
use tokio::time::Instant;

use super::{Record, Rotation, SessionStore, StoreError};

#[derive(Debug)]
struct Entry {
    record: Record,
    current: String,
    used: VecDeque<String>,
    revoked: bool,
    expires: Instant,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<String, Entry>,
    by_user: HashMap<String, HashSet<String>>,
    windows: HashMap<String, (Instant, u64)>,
    created: u64,
}

impl State {
    /// Drops expired sessions and windows; run now and then so memory stays bounded.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.sessions.retain(|_, e| e.expires > now);
        let sessions = &self.sessions;
        self.by_user.retain(|_, sids| {
            sids.retain(|sid| sessions.contains_key(sid));
            !sids.is_empty()
        });
        self.windows.retain(|_, (end, _)| *end > now);
    }

    fn live(&mut self, sid: &str) -> Option<&mut Entry> {
        self.sessions
            .get_mut(sid)
            .filter(|e| e.expires > Instant::now())
    }
}

/// An in-process [`SessionStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// When a session created or rotated now expires. Lifetimes are bounded
/// before they get here; should one still not fit an `Instant`, the session
/// lives as long as an `Instant` can say rather than panicking.
fn expiry(ttl_secs: u64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(ttl_secs))
        .or_else(|| now.checked_add(Duration::from_secs(super::MAX_REFRESH_TTL_SECS)))
        .unwrap_or(now)
}

fn done<T: Send + 'static>(value: T) -> BoxFuture<'static, Result<T, StoreError>> {
    ready(Ok(value)).boxed()
}

impl SessionStore for MemoryStore {
    fn create(
        &self,
        sid: String,
        record: Record,
        hash: String,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let mut state = self.lock();
        state.created += 1;
        if state.created.is_multiple_of(1024) {
            state.sweep();
        }
        let expires = expiry(record.refresh_ttl_secs);
        state
            .by_user
            .entry(record.user.clone())
            .or_default()
            .insert(sid.clone());
        state.sessions.insert(
            sid,
            Entry {
                record,
                current: hash,
                used: VecDeque::new(),
                revoked: false,
                expires,
            },
        );
        done(())
    }

    fn rotate(
        &self,
        sid: String,
        presented: String,
        next: String,
    ) -> BoxFuture<'static, Result<Rotation, StoreError>> {
        let mut state = self.lock();
        let Some(entry) = state.live(&sid) else {
            return done(Rotation::Unknown);
        };
        let rotation = if entry.revoked {
            Rotation::Revoked
        } else if entry.current == presented {
            let rotated = std::mem::replace(&mut entry.current, next);
            entry.used.push_front(rotated);
            entry.used.truncate(super::REMEMBERED_ROTATIONS);
            entry.expires = expiry(entry.record.refresh_ttl_secs);
            Rotation::Rotated(entry.record.clone())
        } else if entry.used.contains(&presented) {
            entry.revoked = true;
            entry.current.clear();
            Rotation::Reused
        } else {
            Rotation::Unknown
        };
        done(rotation)
    }

    fn revoke(&self, sid: String) -> BoxFuture<'static, Result<bool, StoreError>> {
        let mut state = self.lock();
        let found = state.live(&sid).map(|entry| {
            entry.revoked = true;
            entry.current.clear();
        });
        done(found.is_some())
    }

    fn sessions_of(&self, user: String) -> BoxFuture<'static, Result<Vec<String>, StoreError>> {
        let mut state = self.lock();
        let sids: Vec<String> = state
            .by_user
            .get(&user)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let live = sids
            .into_iter()
            .filter(|sid| state.live(sid).is_some_and(|e| !e.revoked))
            .collect();
        done(live)
    }

    fn is_revoked(&self, sid: String) -> BoxFuture<'static, Result<bool, StoreError>> {
        let mut state = self.lock();
        done(state.live(&sid).is_some_and(|e| e.revoked))
    }

    fn hit(&self, key: String, window: Duration) -> BoxFuture<'static, Result<u64, StoreError>> {
        let mut state = self.lock();
        let now = Instant::now();
        if state.windows.len() > 100_000 {
            state.sweep();
        }
        let slot = state.windows.entry(key).or_insert((now + window, 0));
        if slot.0 <= now {
            *slot = (now + window, 0);
        }
        slot.1 += 1;
        done(slot.1)
    }
}
