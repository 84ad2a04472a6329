//! Long-polling sessions: what stands in for a socket between HTTP requests.
//!
//! A [`Session`] is one Engine.IO connection while it polls. `POST`s put the
//! client's packets into a bounded channel that the connection's transport
//! reads; the transport puts outgoing frames into a byte-capped buffer that
//! the one open `GET` long-poll takes. An upgrade hands the session's
//! connection a WebSocket, and polling stops. [`Sessions`] is the bounded
//! map from `sid` to session.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use tokio::{
    sync::{Notify, mpsc, oneshot},
    time::{Instant, sleep_until, timeout},
};
use tokio_util::sync::CancellationToken;

use super::{
    Ws,
    engine::{self, Frame, Incoming},
    packet::Parser,
};
use crate::core::DisconnectReason;

/// Packets a session holds between a `POST` and its transport.
const INBOUND_PACKETS: usize = 64;
/// Longest a long-poll opened during an upgrade is held (Engine.IO servers
/// answer polls with `noop` every 100 ms while upgrading).
const UPGRADE_POLL: Duration = Duration::from_millis(100);

/// The ends of a new session that its connection's transport keeps.
#[derive(Debug)]
pub(crate) struct SessionEnds {
    /// Packets posted by the client.
    pub(crate) inbound: mpsc::Receiver<Incoming>,
    /// The WebSocket of a completed upgrade.
    pub(crate) upgrade: oneshot::Receiver<Box<Ws>>,
}

/// One polling Engine.IO connection.
#[derive(Debug)]
pub(crate) struct Session {
    sid: String,
    parser: Parser,
    inbound: mpsc::Sender<Incoming>,
    outbound: Mutex<Outbound>,
    /// Wakes the open long-poll when frames arrive or the session changes.
    wake: Notify,
    /// Wakes a closing transport when a long-poll took the buffer.
    drained: Notify,
    polling: AtomicBool,
    posting: AtomicBool,
    upgrading: AtomicBool,
    upgrade: Mutex<Option<oneshot::Sender<Box<Ws>>>>,
    ended: CancellationToken,
    reason: Mutex<Option<DisconnectReason>>,
    max_bytes: usize,
    idle: Duration,
}

#[derive(Debug)]
struct Outbound {
    frames: Vec<Frame>,
    bytes: usize,
    /// When a long-poll last opened or closed.
    last_poll: Instant,
}

/// Why a request on a session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A second `GET` or `POST` while one is open: the session is closed.
    Overlap,
    /// The connection did not take the packets in time.
    Busy,
    /// The connection is gone.
    Gone,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one holds valid data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    /// A session whose buffer holds at most `max_bytes` and whose client
    /// must poll at least every `idle`.
    pub(crate) fn new(
        sid: String,
        parser: Parser,
        max_bytes: usize,
        idle: Duration,
    ) -> (Arc<Self>, SessionEnds) {
        let (inbound, inbound_rx) = mpsc::channel(INBOUND_PACKETS);
        let (upgrade, upgrade_rx) = oneshot::channel();
        let session = Arc::new(Self {
            sid,
            parser,
            inbound,
            outbound: Mutex::new(Outbound {
                frames: Vec::new(),
                bytes: 0,
                last_poll: Instant::now(),
            }),
            wake: Notify::new(),
            drained: Notify::new(),
            polling: AtomicBool::new(false),
            posting: AtomicBool::new(false),
            upgrading: AtomicBool::new(false),
            upgrade: Mutex::new(Some(upgrade)),
            ended: CancellationToken::new(),
            reason: Mutex::new(None),
            max_bytes,
            idle,
        });
        let ends = SessionEnds {
            inbound: inbound_rx,
            upgrade: upgrade_rx,
        };
        (session, ends)
    }

    /// The session id.
    pub(crate) fn sid(&self) -> &str {
        &self.sid
    }

    /// The parser of the endpoint that opened the session.
    pub(crate) fn parser(&self) -> Parser {
        self.parser
    }

    /// Queues frames for the next long-poll.
    ///
    /// # Errors
    /// The reason to close: the buffer would pass its byte cap, or the
    /// client stopped polling.
    pub(crate) fn push(
        &self,
        frames: impl IntoIterator<Item = Frame>,
    ) -> Result<(), DisconnectReason> {
        let mut out = lock(&self.outbound);
        if !self.polling.load(Ordering::Acquire) && out.last_poll.elapsed() > self.idle {
            return Err(DisconnectReason::HeartbeatTimeout);
        }
        for frame in frames {
            out.bytes += frame.len();
            if out.bytes > self.max_bytes {
                return Err(DisconnectReason::SlowConsumer);
            }
            out.frames.push(frame);
        }
        drop(out);
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a connection's last frames: after what is queued if they fit,
    /// else instead of it (a client that stopped reading still learns why).
    pub(crate) fn replace(&self, frames: Vec<Frame>) {
        let mut out = lock(&self.outbound);
        let extra: usize = frames.iter().map(Frame::len).sum();
        if out.bytes + extra > self.max_bytes {
            out.frames.clear();
            out.bytes = 0;
        }
        out.bytes += extra;
        out.frames.extend(frames);
        drop(out);
        self.wake.notify_one();
    }

    /// Takes everything queued (for an upgrade, which sends it over the WebSocket).
    pub(crate) fn take(&self) -> Vec<Frame> {
        let mut out = lock(&self.outbound);
        out.bytes = 0;
        let frames = std::mem::take(&mut out.frames);
        drop(out);
        if !frames.is_empty() {
            self.drained.notify_one();
        }
        frames
    }

    /// Waits until at most `window` bytes are queued: at once if so, else
    /// until a long-poll takes the buffer.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn room(&self, window: usize) {
        loop {
            let drained = self.drained.notified();
            if lock(&self.outbound).bytes <= window {
                return;
            }
            drained.await;
        }
    }

    /// Waits up to `limit` for a long-poll to take the buffer; whether one did.
    pub(crate) async fn drained(&self, limit: Duration) -> bool {
        timeout(limit, self.room(0)).await.is_ok()
    }

    /// Serves one `GET`: the queued frames as a body, waiting up to `wait`
    /// for some; a `noop` when there are none, or soon after a probe
    /// succeeded (the client then pauses polling to upgrade).
    ///
    /// # Errors
    /// [`Refused::Overlap`] if another `GET` is open (the session closes).
    pub(crate) async fn poll(&self, wait: Duration) -> Result<Vec<u8>, Refused> {
        let Some(_open) = Flag::raise(&self.polling) else {
            self.end(DisconnectReason::ProtocolViolation(
                "overlapping long-polls".into(),
            ));
            return Err(Refused::Overlap);
        };
        self.stamp();
        // A poll open when the probe succeeds is answered at once, so the
        // client can pause polling and upgrade. One opened during the
        // upgrade (already in flight then) waits `UPGRADE_POLL` at most: not
        // at once, which would let a client loop on empty polls.
        let opened_upgrading = self.upgrading.load(Ordering::Acquire);
        let deadline = Instant::now()
            + if opened_upgrading {
                UPGRADE_POLL.min(wait)
            } else {
                wait
            };
        let body = loop {
            let woken = self.wake.notified();
            let frames = self.take();
            if !frames.is_empty() {
                break engine::encode_payload(&frames);
            }
            if self.ended.is_cancelled() {
                break engine::encode_payload(&[Frame::close()]);
            }
            if !opened_upgrading && self.upgrading.load(Ordering::Acquire) {
                break engine::encode_payload(&[Frame::noop()]);
            }
            tokio::select! {
                () = woken => {}
                () = self.ended.cancelled() => {}
                () = sleep_until(deadline) => break engine::encode_payload(&[Frame::noop()]),
            }
        };
        self.stamp();
        Ok(body)
    }

    /// Serves one `POST`: hands the packets to the connection, waiting at
    /// most `wait` for room.
    ///
    /// # Errors
    /// [`Refused`] says why.
    pub(crate) async fn post(&self, packets: Vec<Incoming>, wait: Duration) -> Result<(), Refused> {
        let Some(_open) = Flag::raise(&self.posting) else {
            self.end(DisconnectReason::ProtocolViolation(
                "overlapping posts".into(),
            ));
            return Err(Refused::Overlap);
        };
        for packet in packets {
            match timeout(wait, self.inbound.send(packet)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Refused::Gone),
                Err(_) => return Err(Refused::Busy),
            }
        }
        Ok(())
    }

    /// Takes the right to upgrade: the first probe gets it.
    pub(crate) fn begin_upgrade(&self) -> Option<oneshot::Sender<Box<Ws>>> {
        lock(&self.upgrade).take()
    }

    /// The probe succeeded: open long-polls end with a `noop` so the client
    /// can pause polling and send `upgrade`.
    pub(crate) fn probed(&self) {
        self.upgrading.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The probe failed: long-polls wait for frames again.
    pub(crate) fn unprobed(&self) {
        self.upgrading.store(false, Ordering::Release);
    }

    /// Ends the session for `reason` (the first reason wins).
    pub(crate) fn end(&self, reason: DisconnectReason) {
        lock(&self.reason).get_or_insert(reason);
        self.ended.cancel();
        self.wake.notify_one();
    }

    /// Resolves once the session was ended, with the reason.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn ended(&self) -> DisconnectReason {
        self.ended.cancelled().await;
        lock(&self.reason)
            .clone()
            .unwrap_or(DisconnectReason::Internal)
    }

    fn stamp(&self) {
        lock(&self.outbound).last_poll = Instant::now();
    }
}

/// An atomic flag raised for the life of a request.
struct Flag<'a>(&'a AtomicBool);

impl<'a> Flag<'a> {
    fn raise(flag: &'a AtomicBool) -> Option<Self> {
        (!flag.swap(true, Ordering::AcqRel)).then_some(Self(flag))
    }
}

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The polling sessions of a node, at most `max`.
#[derive(Debug)]
pub(crate) struct Sessions {
    map: DashMap<String, Arc<Session>>,
    count: AtomicUsize,
    max: usize,
}

impl Sessions {
    /// An empty map holding at most `max` sessions.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            map: DashMap::new(),
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// Adds a session; `false` when the map is full.
    pub(crate) fn insert(&self, session: Arc<Session>) -> bool {
        let taken = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if taken {
            self.map.insert(session.sid().to_owned(), session);
            metrics::gauge!(crate::metrics::SOCKETIO_POLLING_SESSIONS).increment(1.0);
        }
        taken
    }

    /// The session of `sid`, if it is open on this parser's endpoint.
    pub(crate) fn get(&self, sid: &str, parser: Parser) -> Option<Arc<Session>> {
        // Clone out of the map's guard at once: it must not live across an await.
        let session = self.map.get(sid).map(|entry| Arc::clone(entry.value()))?;
        (session.parser() == parser).then_some(session)
    }

    /// Forgets `sid` (its connection ended, or moved to a WebSocket).
    pub(crate) fn remove(&self, sid: &str) {
        if self.map.remove(sid).is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
            metrics::gauge!(crate::metrics::SOCKETIO_POLLING_SESSIONS).decrement(1.0);
        }
    }

    /// How many sessions are open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    use super::*;

    fn text(s: &'static str) -> Frame {
        Frame::Text(Utf8Bytes::from_static(s))
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_takes_what_was_pushed_and_waits_otherwise() {
        let (session, _ends) = Session::new("s".into(), Parser::Json, 100, Duration::from_secs(60));
        session.push([text("42[1]"), text("2")]).unwrap();
        assert_eq!(
            session.poll(Duration::from_secs(1)).await.unwrap(),
            b"42[1]\x1e2"
        );
        assert_eq!(session.poll(Duration::from_secs(1)).await.unwrap(), b"6");
        let waiter = {
            let session = Arc::clone(&session);
            tokio::spawn(async move { session.poll(Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            session.poll(Duration::from_secs(1)).await,
            Err(Refused::Overlap)
        );
        assert_eq!(waiter.await.unwrap().unwrap(), b"1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_releases_the_open_poll_at_once_and_later_ones_soon() {
        let (session, _ends) = Session::new("s".into(), Parser::Json, 100, Duration::from_secs(60));
        let open = {
            let session = Arc::clone(&session);
            tokio::spawn(async move { session.poll(Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        session.probed();
        assert_eq!(open.await.unwrap().unwrap(), b"6");
        let start = Instant::now();
        assert_eq!(session.poll(Duration::from_secs(30)).await.unwrap(), b"6");
        assert_eq!(
            start.elapsed(),
            UPGRADE_POLL,
            "a poll opened while upgrading waits a little, not at all or long"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_buffer_is_capped_and_needs_polling() {
        let (session, _ends) = Session::new("s".into(), Parser::Json, 8, Duration::from_secs(5));
        session.push([text("4abc")]).unwrap();
        assert_eq!(
            session.push([text("4defgh")]),
            Err(DisconnectReason::SlowConsumer)
        );
        session.take();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            session.push([text("2")]),
            Err(DisconnectReason::HeartbeatTimeout)
        );
    }

    #[test]
    fn the_map_is_bounded() {
        let sessions = Sessions::new(1);
        let (a, _a) = Session::new("a".into(), Parser::Json, 8, Duration::from_secs(5));
        let (b, _b) = Session::new("b".into(), Parser::Json, 8, Duration::from_secs(5));
        assert!(sessions.insert(a));
        assert!(!sessions.insert(b));
        assert!(sessions.get("a", Parser::MsgPack).is_none());
        assert!(sessions.get("a", Parser::Json).is_some());
        sessions.remove("a");
        assert_eq!(sessions.len(), 0);
    }
}
