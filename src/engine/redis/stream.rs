//! Channel streams in Redis (history): the publish and read scripts, and
//! reading a stream (docs/REDIS.md, "History streams").

use super::{RedisHandle, envelope};
use crate::{
    engine::HistoryPage,
    protocol::{ChannelName, EventName, HistoryQuery, Publication, StreamPosition},
};

/// Publishes on a channel with history, in one atomic step: gives the
/// publication the stream's next offset, appends it, trims and refreshes the
/// TTLs, and publishes it. KEYS: the stream (a list, newest first), its meta
/// hash (`e` epoch, `s` top offset), the channel, and optionally an
/// idempotency key; all share the channel's slot. ARGV: the envelope without
/// its closing brace, size, TTL s, meta TTL s, an epoch for a new stream,
/// the publish command, and with a key: window ms and answer. Returns '' when
/// it published, else the answer remembered with the key.
pub(super) const PUBLISH_HISTORY: &str = r#"
if #KEYS >= 4 and not redis.call('SET', KEYS[4], ARGV[8], 'NX', 'PX', ARGV[7]) then
  return redis.call('GET', KEYS[4]) or ''
end
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[2], 'e', epoch)
  redis.call('DEL', KEYS[1])
end
local offset = redis.call('HINCRBY', KEYS[2], 's', 1)
local payload = ARGV[1] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
redis.call('LPUSH', KEYS[1], payload)
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call(ARGV[6], KEYS[3], payload)
return ''
"#;

/// Reads a channel's stream and its position in one atomic step, creating
/// the position (a new epoch at offset 0) if there is none and ARGV[6] is
/// '1' (then also refreshing the position's TTL, as a publication does).
/// KEYS: stream, meta. ARGV: an epoch for a new stream, meta TTL s, since
/// (-1: none), limit (-1: none), '1' for newest first, create.
/// Returns {epoch, top, entries} with entries newest first ('' epoch: no
/// stream, not created).
const READ_HISTORY: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch and ARGV[6] ~= '1' then
  return {'', 0, {}}
end
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
  redis.call('DEL', KEYS[1])
end
if ARGV[6] == '1' then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[2], 's') or '0')
local since = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local avail = redis.call('LLEN', KEYS[1])
if since >= 0 then avail = math.min(avail, math.max(top - since, 0)) end
local n = avail
if limit >= 0 then n = math.min(n, limit) end
if n <= 0 then return {epoch, top, {}} end
if ARGV[5] == '1' then
  return {epoch, top, redis.call('LRANGE', KEYS[1], 0, n - 1)}
end
return {epoch, top, redis.call('LRANGE', KEYS[1], avail - n, avail - 1)}
";

/// Reads channel streams: builds the read script's command and decodes its
/// answer. Shared by the engine (recovery, history) and the readers
/// (filling offsets the live stream skipped).
#[derive(Debug, Clone)]
pub(super) struct StreamReader {
    pub(super) prefix: String,
    pub(super) default_event: EventName,
}

impl StreamReader {
    /// The read script for `channel`; with `create` (the meta TTL), a
    /// missing stream is created.
    pub(super) fn command(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
        create: Option<u64>,
    ) -> redis::Cmd {
        let tag = format!("{}{channel}", self.prefix);
        let as_arg = |n: Option<u64>| n.and_then(|n| i64::try_from(n).ok()).unwrap_or(-1);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(READ_HISTORY)
            .arg(2)
            .arg(format!("{}history:{{{tag}}}", self.prefix))
            .arg(format!("{}meta:{{{tag}}}", self.prefix))
            .arg(new_epoch())
            .arg(create.unwrap_or(1))
            .arg(as_arg(query.since))
            .arg(as_arg(query.limit.map(|l| l as u64)))
            .arg(if query.reverse { "1" } else { "0" })
            .arg(if create.is_some() { "1" } else { "0" });
        cmd
    }

    /// The script's answer as a page, oldest first unless `query.reverse`.
    pub(super) fn page(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
        (epoch, top, entries): (String, u64, Vec<Vec<u8>>),
    ) -> HistoryPage {
        let mut publications: Vec<Publication> = entries
            .iter()
            .filter_map(|payload| {
                match envelope::decode(channel.clone(), payload, &self.default_event) {
                    envelope::Decoded::Publish(p) if p.position.is_some() => Some(p),
                    _ => None,
                }
            })
            .collect();
        if !query.reverse {
            publications.reverse();
        }
        HistoryPage {
            publications,
            position: StreamPosition { offset: top, epoch },
        }
    }

    /// The publications after `after` up to `to` in `epoch`, if the stream
    /// still has every one of them.
    pub(super) async fn fill(
        &self,
        writer: &RedisHandle,
        channel: &ChannelName,
        after: u64,
        to: u64,
        epoch: &str,
    ) -> Option<Vec<Publication>> {
        let query = HistoryQuery {
            since: Some(after),
            limit: usize::try_from(to.checked_sub(after)?).ok(),
            reverse: false,
        };
        let answer = writer
            .query::<(String, u64, Vec<Vec<u8>>)>(self.command(channel, query, None))
            .await
            .ok()?;
        let page = self.page(channel, query, answer);
        let complete = page.position.epoch == epoch
            && page.publications.len() as u64 == to - after
            && page
                .publications
                .iter()
                .zip(after + 1..)
                .all(|(p, expected)| p.offset() == Some(expected));
        complete.then_some(page.publications)
    }
}

/// A new epoch: random, alphanumeric (it is spliced into JSON unescaped).
pub(super) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}
