//! History and recovery on subscribe: joining a channel with history from a
//! stream position (all or nothing, race-free against live publications),
//! reading a channel's history, and stamping publications with how their
//! channel's stream is kept.

use std::sync::Arc;

use super::{ChannelHistory, Conn, Hub, HubError, Joined, Subscriptions, hub::requester};
use crate::{
    engine::HistoryPage,
    metrics as names,
    protocol::{ChannelName, HistoryQuery, Publication, StreamPosition},
};

/// Where a subscription to a channel with history starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Recover everything published after this position.
    pub since: Option<StreamPosition>,
    /// Deliver the channel's latest publication at once.
    pub latest: bool,
}

/// How a subscription started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscribed {
    /// A channel without history: live publications from now on.
    Live,
    /// A channel with history: the client is at `position` and gets every
    /// publication after it, in order.
    Stream {
        /// The stream position the live publications continue from.
        position: StreamPosition,
        /// Whether everything after the requested `since` was replayed;
        /// `None` when no `since` was asked for.
        recovered: Option<bool>,
    },
}

/// What to replay to a subscriber, decided from the stream as read.
fn plan_recovery(
    since: &StreamPosition,
    page: HistoryPage,
    recover_max: usize,
) -> (Vec<Publication>, bool) {
    let top = &page.position;
    if since.epoch != top.epoch || since.offset > top.offset {
        return (Vec::new(), false);
    }
    let missed = top.offset - since.offset;
    if usize::try_from(missed).map_or(true, |n| n > recover_max) {
        return (Vec::new(), false);
    }
    // All or nothing: every offset after `since` must still be there.
    let complete = page.publications.len() as u64 == missed
        && page
            .publications
            .iter()
            .zip(since.offset + 1..)
            .all(|(p, expected)| p.offset() == Some(expected));
    if complete {
        (page.publications, true)
    } else {
        (Vec::new(), false)
    }
}

impl Hub {
    /// Joins a channel with history without a gap or a duplicate between
    /// what was missed and what is live: the connection joins first with
    /// its live deliveries held, then the stream is read, then the replay
    /// and the held deliveries after it are queued in offset order.
    pub(super) async fn join_stream(
        &self,
        conn: &Arc<Conn>,
        subs: &mut Subscriptions,
        channel: ChannelName,
        history: ChannelHistory,
        recovery: Recovery,
    ) -> Result<Subscribed, HubError> {
        if self.registry.join_held(&channel, conn) == Joined::First {
            self.metrics.channels.increment(1);
        }
        self.engine_join(conn, &channel).await?;
        let query = match (&recovery.since, recovery.latest) {
            (Some(since), _) => HistoryQuery {
                since: Some(since.offset),
                limit: Some(history.recover_max),
                reverse: false,
            },
            (None, latest) => HistoryQuery {
                since: None,
                limit: Some(usize::from(latest)),
                reverse: true,
            },
        };
        let read = self.engine.history(channel.clone(), history.spec, query);
        let page = match self.within_engine_timeout(read).await {
            Ok(page) => page,
            Err(err) => {
                self.leave(conn.id(), &channel);
                return Err(err.into());
            }
        };
        let position = page.position.clone();
        let (replay, recovered) = match &recovery.since {
            Some(since) => {
                let (replay, recovered) = plan_recovery(since, page, history.recover_max);
                let outcome = if recovered { "recovered" } else { "failed" };
                metrics::counter!(names::RECOVERIES, "outcome" => outcome).increment(1);
                (replay, Some(recovered))
            }
            None => (page.publications, None),
        };
        metrics::counter!(names::PUBLICATIONS_REPLAYED).increment(replay.len() as u64);
        let dropped = self.registry.release(&channel, conn, replay, &position);
        if dropped > 0 {
            metrics::counter!(names::HISTORY_DUPLICATES_DROPPED).increment(dropped as u64);
        }
        self.joined(conn, subs, channel);
        Ok(Subscribed::Stream {
            position,
            recovered,
        })
    }

    /// Reads a channel's history for a client, where its namespace allows.
    ///
    /// # Errors
    /// [`HubError::NoHistory`], [`HubError::PermissionDenied`], or the engine's.
    pub async fn client_history(
        &self,
        conn: &Conn,
        channel: ChannelName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, HubError> {
        let Some(history) = self.rules.history(&channel) else {
            return Err(HubError::NoHistory(channel));
        };
        if !history.client_history {
            return Err(HubError::PermissionDenied(
                "clients may not read this channel's history",
            ));
        }
        if let Some(why) = self.rules.refuse_subscribe(&channel, requester(conn)) {
            return Err(HubError::PermissionDenied(why));
        }
        self.history(channel, query).await
    }

    /// Reads a channel's history (for backends: no permission check).
    /// The limit is capped at the channel's `history_size`.
    ///
    /// # Errors
    /// [`HubError::NoHistory`] or the engine's error.
    pub async fn history(
        &self,
        channel: ChannelName,
        mut query: HistoryQuery,
    ) -> Result<HistoryPage, HubError> {
        let Some(history) = self.rules.history(&channel) else {
            return Err(HubError::NoHistory(channel));
        };
        query.limit = Some(
            query
                .limit
                .map_or(history.spec.size, |l| l.min(history.spec.size)),
        );
        let read = self.engine.history(channel, history.spec, query);
        Ok(self.within_engine_timeout(read).await?)
    }

    /// Marks each publication with its channel's history settings.
    pub(super) fn stamp(&self, publication: &mut Publication) {
        if self.any_history {
            publication.history = self.rules.history(&publication.channel).map(|h| h.spec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{EventName, JsonData};

    fn at(offset: u64) -> Publication {
        Publication {
            channel: ChannelName::parse("c", 128).unwrap(),
            event: EventName::parse("e").unwrap(),
            data: JsonData::from_json("1").unwrap(),
            ts: None,
            position: Some(pos(offset, "e")),
            history: None,
        }
    }

    fn pos(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    fn page(offsets: &[u64], top: u64) -> HistoryPage {
        HistoryPage {
            publications: offsets.iter().map(|&o| at(o)).collect(),
            position: pos(top, "e"),
        }
    }

    fn plan(since: StreamPosition, page: HistoryPage, max: usize) -> (Vec<u64>, bool) {
        let (replay, recovered) = plan_recovery(&since, page, max);
        (
            replay.iter().filter_map(Publication::offset).collect(),
            recovered,
        )
    }

    #[test]
    fn recovery_is_all_or_nothing() {
        assert_eq!(plan(pos(2, "e"), page(&[3, 4], 4), 10), (vec![3, 4], true));
        assert_eq!(plan(pos(4, "e"), page(&[], 4), 10), (vec![], true));
        // Trimmed: 3 is gone.
        assert_eq!(plan(pos(2, "e"), page(&[4], 4), 10), (vec![], false));
        // A hole in the middle.
        assert_eq!(plan(pos(2, "e"), page(&[3, 5], 5), 10), (vec![], false));
        assert_eq!(plan(pos(2, "x"), page(&[3, 4], 4), 10), (vec![], false));
        assert_eq!(plan(pos(9, "e"), page(&[], 4), 10), (vec![], false));
        assert_eq!(plan(pos(1, "e"), page(&[2, 3, 4], 4), 2), (vec![], false));
    }
}
