//! Connection state recovery, mapped onto herald's stream recovery.
//!
//! socket.io-client keeps one `offset` string: the last argument of the last
//! event it handled. Herald makes that string a self-contained **snapshot**
//! of the socket's subscriptions: every channel the client subscribed to,
//! with the stream position (epoch and offset) the client has reached in it.
//! Each publication event carries the snapshot as it stands after that
//! event, so the client's offset is always exactly what it received. On
//! reconnection (`auth: {pid, offset}`), any node rebuilds the
//! subscriptions from the offset alone and subscribes each channel with
//! `since` (no session store, no stickiness): all of them recover, or the
//! client is told `recovered: false` and starts fresh.
//!
//! The text (`~` and `*` never occur in channel names or epochs, so it is
//! spliced into packets unescaped):
//!
//! ```text
//! 1                          no subscriptions
//! 1~news*e1f2*41~prices*     news at offset 41 of epoch e1f2; prices (no history)
//! 0                          not recoverable (too many channels)
//! ```
//!
//! It carries nothing secret: each channel is subscribed again through the
//! usual permission checks, so a forged offset gets nothing a `subscribe`
//! would not.

use std::collections::{BTreeMap, VecDeque};

use super::{
    engine::Frame,
    events,
    packet::{Parser, Resume},
};
use crate::{
    core::{Delivery, Inbound, Payload, Reply, Request},
    protocol::StreamPosition,
};

/// The format version that starts every recoverable snapshot.
const VERSION: &str = "1";
/// The snapshot of a socket that cannot be recovered.
const UNRECOVERABLE: &str = "0";
/// Longest epoch read from an offset.
const MAX_EPOCH: usize = 64;
/// Longest `pid` accepted from a client.
const MAX_PID: usize = 64;
/// Bytes of an offset per channel at most: a name, an epoch, an offset.
const MAX_ENTRY: usize = 128 + MAX_EPOCH + 24;

/// A socket's subscriptions and how far it got in each.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    /// Channel → position reached (`None`: a channel without history).
    channels: BTreeMap<String, Option<StreamPosition>>,
    /// The encoded form, until the next change.
    encoded: Option<String>,
}

impl Snapshot {
    /// Records a subscription, from `position` (`None`: no history).
    pub(super) fn subscribed(&mut self, channel: String, position: Option<StreamPosition>) {
        self.channels.insert(channel, position);
        self.encoded = None;
    }

    /// Forgets a subscription.
    pub(super) fn unsubscribed(&mut self, channel: &str) {
        if self.channels.remove(channel).is_some() {
            self.encoded = None;
        }
    }

    /// Forgets every subscription.
    pub(super) fn clear(&mut self) {
        self.channels.clear();
        self.encoded = None;
    }

    /// Moves `channel` to `position`, a publication's, when it is subscribed
    /// and positioned.
    pub(super) fn advance(&mut self, channel: &str, position: &StreamPosition) {
        if let Some(Some(at)) = self.channels.get_mut(channel)
            && (at.offset != position.offset || at.epoch != position.epoch)
        {
            at.clone_from(position);
            self.encoded = None;
        }
    }

    /// The offset string that stands for this snapshot; `"0"` past
    /// `max_channels` channels.
    pub(super) fn encode(&mut self, max_channels: usize) -> &str {
        let channels = &self.channels;
        self.encoded.get_or_insert_with(|| {
            if channels.len() > max_channels {
                return UNRECOVERABLE.to_owned();
            }
            let mut text = String::from(VERSION);
            for (channel, position) in channels {
                text.push('~');
                text.push_str(channel);
                text.push('*');
                if let Some(position) = position.as_ref().filter(|p| plain(&p.epoch)) {
                    text.push_str(&position.epoch);
                    text.push('*');
                    text.push_str(&position.offset.to_string());
                }
            }
            text
        })
    }
}

/// The channels and positions to recover from a client's offset; `None`
/// when it cannot be recovered (a channel without history, more than
/// `max_channels`, the unrecoverable marker, or anything malformed).
pub(super) fn parse(offset: &str, max_channels: usize) -> Option<Vec<(String, StreamPosition)>> {
    if offset.len() > 1 + max_channels.saturating_mul(MAX_ENTRY) {
        return None;
    }
    let mut parts = offset.split('~');
    if parts.next()? != VERSION {
        return None;
    }
    let mut channels = Vec::new();
    for entry in parts {
        if channels.len() == max_channels {
            return None;
        }
        let mut fields = entry.split('*');
        let (channel, epoch, at) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() || channel.is_empty() || !plain(epoch) {
            return None;
        }
        let position = StreamPosition {
            offset: at.parse().ok()?,
            epoch: epoch.to_owned(),
        };
        channels.push((channel.to_owned(), position));
    }
    Some(channels)
}

/// Whether a client's `pid` can be echoed back (ours are connection ids).
pub(super) fn valid_pid(pid: &str) -> bool {
    !pid.is_empty()
        && pid.len() <= MAX_PID
        && pid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An epoch that needs no escaping and cannot be confused with a separator.
fn plain(epoch: &str) -> bool {
    !epoch.is_empty()
        && epoch.len() <= MAX_EPOCH
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A recovery under way: the `CONNECT` reply waits until every channel is
/// subscribed again from its position (or the attempt failed and what was
/// restored is left again), and deliveries meanwhile are held.
#[derive(Debug)]
pub(super) struct Restoring {
    /// The client's `pid`, echoed when everything recovers.
    pub(super) pid: String,
    /// Channels still to subscribe.
    todo: VecDeque<(String, StreamPosition)>,
    /// Channels subscribed and recovered so far.
    restored: Vec<String>,
    /// Channels to leave again after a failure.
    unwind: VecDeque<String>,
    /// Whether a channel could not be recovered.
    pub(super) failed: bool,
    /// The request handed to the core, awaiting its reply.
    pub(super) awaiting: Option<(String, Option<StreamPosition>)>,
    /// Bytes of the frames held.
    pub(super) held_bytes: usize,
}

/// The next request of a recovery, for the core.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    /// Subscribe from a position.
    Subscribe(String, StreamPosition),
    /// Leave a channel restored before a failure.
    Unsubscribe(String),
}

impl Restoring {
    /// Starts recovering `channels` for the client's `pid`.
    pub(super) fn new(pid: String, channels: Vec<(String, StreamPosition)>) -> Self {
        Self {
            pid,
            todo: channels.into(),
            restored: Vec::new(),
            unwind: VecDeque::new(),
            failed: false,
            awaiting: None,
            held_bytes: 0,
        }
    }

    /// The next request; `None` when the recovery is over.
    pub(super) fn next(&mut self) -> Option<Step> {
        if self.failed {
            let channel = self.unwind.pop_front()?;
            self.awaiting = Some((channel.clone(), None));
            return Some(Step::Unsubscribe(channel));
        }
        let (channel, since) = self.todo.pop_front()?;
        self.awaiting = Some((channel.clone(), Some(since.clone())));
        Some(Step::Subscribe(channel, since))
    }

    /// Whether a request is out, or more are to come.
    pub(super) fn busy(&self) -> bool {
        self.awaiting.is_some()
            || if self.failed {
                !self.unwind.is_empty()
            } else {
                !self.todo.is_empty()
            }
    }

    /// Takes the core's answer to the request out (`joined`: the channel
    /// was subscribed, recovered or not): `Some(since)` of a channel that
    /// recovered.
    pub(super) fn answered(
        &mut self,
        recovered: bool,
        joined: bool,
    ) -> Option<(String, StreamPosition)> {
        let (channel, since) = self.awaiting.take()?;
        let since = since?;
        if recovered && !self.failed {
            self.restored.push(channel.clone());
            return Some((channel, since));
        }
        self.fail();
        if joined {
            self.unwind.push_back(channel);
        }
        None
    }

    /// Gives up: the channels restored so far are left again.
    pub(super) fn fail(&mut self) {
        if !self.failed {
            self.failed = true;
            self.todo.clear();
            self.unwind = std::mem::take(&mut self.restored).into();
        }
    }
}

/// A socket's connection state recovery: its snapshot, and the recovery
/// under way after a reconnection.
#[derive(Debug)]
pub(super) struct Recovery {
    max_channels: usize,
    max_held: usize,
    snapshot: Snapshot,
    /// The `pid` and `offset` of the `CONNECT`, until the welcome.
    resume: Option<Resume>,
    restoring: Option<Restoring>,
    /// Frames delivered while restoring, written after the `CONNECT` reply.
    held: Vec<Frame>,
    /// The socket id and the `herald:welcome` event, until the `CONNECT`
    /// reply is written.
    connect: Option<(String, Frame)>,
    /// The client's subscribe or unsubscribe (`true`) out to the core.
    pending: Option<(String, bool)>,
    /// The snapshot changed since the client was last given it.
    dirty: bool,
    /// Whether the client asked to recover (it sent a `pid` and an offset).
    asked: bool,
}

impl Recovery {
    /// At most `max_channels` channels are recovered; at most `max_held`
    /// bytes are held for the client while it recovers.
    pub(super) fn new(max_channels: usize, max_held: usize) -> Self {
        Self {
            max_channels,
            max_held,
            snapshot: Snapshot::default(),
            resume: None,
            restoring: None,
            held: Vec::new(),
            connect: None,
            pending: None,
            dirty: false,
            asked: false,
        }
    }

    /// Keeps the resume of a `CONNECT` for the welcome.
    pub(super) fn connecting(&mut self, resume: Option<Resume>) {
        self.resume = resume;
    }

    /// Whether the `CONNECT` reply waits for a recovery.
    pub(super) fn restoring(&self) -> bool {
        self.restoring.is_some()
    }

    /// The next request of the recovery under way, if any.
    pub(super) fn next_request(&mut self) -> Option<Inbound> {
        let request = match self.restoring.as_mut()?.next()? {
            Step::Subscribe(channel, since) => Request::Subscribe {
                channel,
                since: Some(since),
                latest: false,
            },
            Step::Unsubscribe(channel) => Request::Unsubscribe { channel },
        };
        Some(Inbound::Request { id: None, request })
    }

    /// Notes which channel a client's request is about, for its reply.
    pub(super) fn track(&mut self, inbound: &Inbound) {
        self.pending = match inbound {
            Inbound::Request {
                request: Request::Subscribe { channel, .. },
                ..
            } => Some((channel.clone(), false)),
            Inbound::Request {
                request: Request::Unsubscribe { channel },
                ..
            } => Some((channel.clone(), true)),
            _ => None,
        };
    }

    /// The frames answering the welcome: the `CONNECT` reply at once, or
    /// nothing yet when a recovery starts.
    pub(super) fn welcome(&mut self, parser: Parser, sid: String, event: Frame) -> Vec<Frame> {
        self.asked = self.resume.is_some();
        let channels = self.resume.take().and_then(|resume| {
            let channels = parse(&resume.offset, self.max_channels)?;
            valid_pid(&resume.pid).then_some((resume.pid, channels))
        });
        self.connect = Some((sid, event));
        match channels {
            Some((pid, channels)) => {
                self.restoring = Some(Restoring::new(pid, channels));
                self.settle(parser)
            }
            None => {
                let mut failed = Restoring::new(String::new(), Vec::new());
                failed.fail();
                self.restoring = Some(failed);
                self.settle(parser)
            }
        }
    }

    /// Takes a reply to a recovery request; the frames to write.
    pub(super) fn restore_reply(&mut self, parser: Parser, reply: &Reply<'_>) -> Vec<Frame> {
        let Some(restoring) = self.restoring.as_mut() else {
            return Vec::new();
        };
        let recovered = matches!(
            reply,
            Reply::Subscribed {
                recovered: Some(true),
                ..
            }
        );
        let joined = matches!(reply, Reply::Subscribed { .. } | Reply::Ok { .. });
        if let Some((channel, since)) = restoring.answered(recovered, joined) {
            self.snapshot.subscribed(channel, Some(since));
        }
        self.settle(parser)
    }

    /// Takes the reply to a client's request: the subscriptions it changed.
    pub(super) fn reply(&mut self, reply: &Reply<'_>) {
        let Some((channel, unsubscribe)) = self.pending.take() else {
            return;
        };
        match reply {
            Reply::Ok { .. } if unsubscribe => self.snapshot.unsubscribed(&channel),
            Reply::Ok { .. } => self.snapshot.subscribed(channel, None),
            Reply::Subscribed { position, .. } => {
                self.snapshot.subscribed(channel, Some((*position).clone()));
            }
            _ => return,
        }
        self.dirty = true;
    }

    /// The `herald:offset` event when the subscriptions changed.
    pub(super) fn offset_event(&mut self, parser: Parser) -> Option<Frame> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        events::offset_event(parser, self.snapshot.encode(self.max_channels))
    }

    /// Appends the frames of `delivery`, its publication carrying the
    /// snapshot as it stands after it; `false` when it is not delivered to
    /// Socket.IO clients.
    pub(super) fn encode(
        &mut self,
        parser: Parser,
        delivery: &Delivery,
        out: &mut Vec<Frame>,
    ) -> bool {
        if let Payload::Publication(p) = delivery.payload()
            && let Some(position) = &p.position
        {
            self.snapshot.advance(p.channel.as_str(), position);
        }
        let offset = self.snapshot.encode(self.max_channels);
        events::delivery_with_offset(parser, delivery, offset, out)
    }

    /// The frames to write now: all of them, or, while restoring, none
    /// (they are held, and past `max_held` bytes the recovery fails).
    pub(super) fn hold(&mut self, parser: Parser, frames: Vec<Frame>) -> Vec<Frame> {
        let Some(restoring) = self.restoring.as_mut() else {
            return frames;
        };
        restoring.held_bytes += frames.iter().map(Frame::len).sum::<usize>();
        if restoring.held_bytes > self.max_held {
            restoring.fail();
            self.held.clear();
        }
        if !restoring.failed {
            self.held.extend(frames);
        }
        self.settle(parser)
    }

    /// Once the recovery is over: the `CONNECT` reply (with the client's
    /// `pid` if every channel recovered, else a new one, the socket id),
    /// the welcome, then what was held (recovered) or a fresh snapshot.
    fn settle(&mut self, parser: Parser) -> Vec<Frame> {
        if self.restoring.as_ref().is_none_or(Restoring::busy) {
            return Vec::new();
        }
        let (Some(restoring), Some((sid, event))) = (self.restoring.take(), self.connect.take())
        else {
            return Vec::new();
        };
        let recovered = !restoring.failed;
        let pid = if recovered {
            restoring.pid.as_str()
        } else {
            sid.as_str()
        };
        let mut frames: Vec<Frame> = parser.connect(&sid, Some(pid)).into_iter().collect();
        frames.push(event);
        if recovered {
            frames.append(&mut self.held);
        } else {
            self.held.clear();
            self.snapshot.clear();
            frames.extend(events::offset_event(
                parser,
                self.snapshot.encode(self.max_channels),
            ));
        }
        if std::mem::take(&mut self.asked) {
            tracing::debug!(recovered, "Socket.IO connection state recovery");
            let outcome = if recovered { "recovered" } else { "failed" };
            metrics::counter!(crate::metrics::SOCKETIO_RECOVERIES, "outcome" => outcome)
                .increment(1);
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_follows_publications() {
        let mut snapshot = Snapshot::default();
        assert_eq!(snapshot.encode(4), "1");
        snapshot.subscribed("news".into(), Some(at(41, "e1")));
        snapshot.subscribed("a:b/c".into(), Some(at(0, "e2")));
        snapshot.advance("news", &at(42, "e1"));
        snapshot.advance("other", &at(9, "e1"));
        assert_eq!(snapshot.encode(4), "1~a:b/c*e2*0~news*e1*42");
        assert_eq!(
            parse("1~a:b/c*e2*0~news*e1*42", 4),
            Some(vec![
                ("a:b/c".into(), at(0, "e2")),
                ("news".into(), at(42, "e1"))
            ])
        );
        snapshot.subscribed("live".into(), None);
        assert_eq!(
            parse(snapshot.encode(4), 4),
            None,
            "a channel without history"
        );
        snapshot.unsubscribed("live");
        assert_eq!(parse(snapshot.encode(1), 1), None, "too many channels");
        assert_eq!(snapshot.encode(1), "0");
        assert_eq!(parse("1", 4), Some(Vec::new()));
    }

    #[test]
    fn hostile_offsets_are_not_recoverable() {
        for offset in [
            "",
            "2~a*e*1",
            "1~a*e*x",
            "1~a*e*1*2",
            "1~*e*1",
            "1~a**1",
            "1~a*e\"*1",
            "1~a*e*18446744073709551616",
            &format!("1{}", "~a*e*1".repeat(5)),
            &"1~a*e*1".repeat(10_000),
        ] {
            assert_eq!(parse(offset, 4), None, "{offset:.40}");
        }
        assert!(valid_pid("n1-42"));
        assert!(!valid_pid(""));
        assert!(!valid_pid("a\"b"));
        assert!(!valid_pid(&"p".repeat(65)));
    }

    #[test]
    fn a_failure_leaves_what_was_restored() {
        let mut restoring = Restoring::new(
            "p".into(),
            vec![("a".into(), at(1, "e")), ("b".into(), at(2, "e"))],
        );
        assert_eq!(
            restoring.next(),
            Some(Step::Subscribe("a".into(), at(1, "e")))
        );
        assert_eq!(
            restoring.answered(true, true),
            Some(("a".into(), at(1, "e")))
        );
        assert_eq!(
            restoring.next(),
            Some(Step::Subscribe("b".into(), at(2, "e")))
        );
        assert_eq!(
            restoring.answered(false, true),
            None,
            "joined, not recovered"
        );
        assert!(restoring.failed && restoring.busy());
        assert_eq!(restoring.next(), Some(Step::Unsubscribe("a".into())));
        assert_eq!(restoring.answered(true, true), None);
        assert_eq!(restoring.next(), Some(Step::Unsubscribe("b".into())));
        assert_eq!(restoring.answered(true, true), None);
        assert!(!restoring.busy());
        assert_eq!(restoring.next(), None);
    }
}
