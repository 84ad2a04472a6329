//! Requests whose replies become acks: the core takes one channel per
//! request, so a `subscribe` or `unsubscribe` of a list is handed to it one
//! channel at a time, and the replies are merged into one ack:
//! `{ok: true}` if every channel succeeded, else the first failure with its
//! channel. The core answers requests one by one, in order, so one list is
//! in flight at a time.

use serde::Serialize;

use super::{engine::Frame, packet::Channels, packet::Parser, transport::invalid};
use crate::{
    core::{Inbound, Request},
    protocol::{EncodeError, ErrorCode},
};

/// A list being handed to the core.
#[derive(Debug)]
struct Batch {
    ack: Option<u64>,
    channels: Vec<String>,
    unsubscribe: bool,
    sent: usize,
    answered: usize,
    /// The first failure: code, reason, index of its channel.
    failure: Option<(ErrorCode, String, usize)>,
}

/// The state of a connection's acks: at most one list in flight.
#[derive(Debug)]
pub(super) struct Acks {
    batch: Option<Batch>,
    max_batch: usize,
}

/// What answers a request: an ack, or (without an ack id) a `herald:error`
/// event for a failure.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Answer {
    ack: Option<u64>,
    failure: Option<(ErrorCode, String, Option<String>)>,
}

/// An ack's argument: `{ok: true}` or `{ok: false, code, reason, channel?}`.
#[derive(Serialize)]
struct AckBody<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
}

impl Acks {
    /// No list in flight; lists hold at most `max_batch` channels.
    pub(super) fn new(max_batch: usize) -> Self {
        Self {
            batch: None,
            max_batch,
        }
    }

    /// The request for one channel, or the first of a list's.
    pub(super) fn start(
        &mut self,
        ack: Option<u64>,
        channels: Channels,
        unsubscribe: bool,
    ) -> Inbound {
        let channels = match channels {
            Channels::One(channel) => {
                return Inbound::Request {
                    id: ack,
                    request: request(channel, unsubscribe),
                };
            }
            Channels::Many(list) if list.is_empty() || list.len() > self.max_batch => {
                let reason = format!("a channel list holds 1 to {} names", self.max_batch);
                return invalid(ack, ErrorCode::BadRequest, &reason);
            }
            Channels::Many(list) => list,
        };
        self.batch = Some(Batch {
            ack,
            channels,
            unsubscribe,
            sent: 0,
            answered: 0,
            failure: None,
        });
        self.next().unwrap_or(Inbound::Control)
    }

    /// Whether a list is being handed to the core.
    pub(super) fn in_batch(&self) -> bool {
        self.batch.is_some()
    }

    /// The next request of the list in flight.
    pub(super) fn next(&mut self) -> Option<Inbound> {
        let batch = self.batch.as_mut()?;
        let channel = batch.channels.get(batch.sent)?.clone();
        batch.sent += 1;
        Some(Inbound::Request {
            id: batch.ack,
            request: request(channel, batch.unsubscribe),
        })
    }

    /// Takes the core's reply to the current request (`failure` for an
    /// error): what answers it now, if anything (a list answers once, after
    /// its last channel; a success without ack id needs no answer).
    pub(super) fn answer(
        &mut self,
        id: Option<u64>,
        failure: Option<(ErrorCode, &str)>,
    ) -> Option<Answer> {
        let Some(batch) = &mut self.batch else {
            let failure = failure.map(|(code, reason)| (code, reason.to_owned(), None));
            return (id.is_some() || failure.is_some()).then_some(Answer { ack: id, failure });
        };
        if let (Some((code, reason)), None) = (failure, &batch.failure) {
            batch.failure = Some((code, reason.to_owned(), batch.answered));
        }
        batch.answered += 1;
        if batch.answered < batch.channels.len() {
            return None;
        }
        let batch = self.batch.take()?;
        let failure = batch
            .failure
            .map(|(code, reason, index)| (code, reason, batch.channels.get(index).cloned()));
        (batch.ack.is_some() || failure.is_some()).then_some(Answer {
            ack: batch.ack,
            failure,
        })
    }
}

impl Answer {
    /// The ack packet, or the `herald:error` event.
    ///
    /// # Errors
    /// If the parser cannot encode it (it always can).
    pub(super) fn frame(&self, parser: Parser) -> Result<Option<Frame>, EncodeError> {
        let body = match &self.failure {
            None => AckBody {
                ok: true,
                code: None,
                reason: None,
                channel: None,
            },
            Some((code, reason, channel)) => AckBody {
                ok: false,
                code: Some(code.as_u16()),
                reason: Some(reason),
                channel: channel.as_deref(),
            },
        };
        match (self.ack, body.ok) {
            (Some(ack), _) => parser.ack(ack, &body).map(Some),
            (None, false) => parser.event(&("herald:error", &body)).map(Some),
            (None, true) => Ok(None),
        }
    }
}

fn request(channel: String, unsubscribe: bool) -> Request {
    if unsubscribe {
        Request::Unsubscribe { channel }
    } else {
        Request::Subscribe {
            channel,
            since: None,
            latest: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_succeeds_only_if_every_channel_did_and_names_the_first_failure() {
        let mut acks = Acks::new(3);
        let many = |names: &[&str]| Channels::Many(names.iter().map(|n| (*n).to_owned()).collect());
        assert!(matches!(
            acks.start(Some(1), many(&["a", "b"]), false),
            Inbound::Request { id: Some(1), .. }
        ));
        assert_eq!(acks.answer(Some(1), None), None);
        assert!(
            matches!(acks.next(), Some(Inbound::Request { request: Request::Subscribe { channel, .. }, .. }) if channel == "b")
        );
        assert_eq!(
            acks.answer(Some(1), None),
            Some(Answer {
                ack: Some(1),
                failure: None
            })
        );
        assert!(acks.next().is_none());

        acks.start(None, many(&["a", "b", "c"]), true);
        acks.answer(None, Some((ErrorCode::NotSubscribed, "not a")));
        acks.next();
        acks.answer(None, Some((ErrorCode::InvalidChannel, "bad b")));
        acks.next();
        let answer = acks.answer(None, None).unwrap();
        assert_eq!(
            answer.failure,
            Some((
                ErrorCode::NotSubscribed,
                "not a".to_owned(),
                Some("a".to_owned())
            ))
        );
        assert!(matches!(
            acks.start(Some(2), many(&["a", "b", "c", "d"]), false),
            Inbound::Invalid { id: Some(2), .. }
        ));
        assert_eq!(
            acks.answer(None, None),
            None,
            "a success without an ack needs no answer"
        );
    }
}
