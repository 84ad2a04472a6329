//! Sessions kept in Redis: shared by every node and surviving restarts.
//!
//! One hash per session, `<prefix>s:<sid>`: `record` (JSON), `current`
//! (hash of the current refresh token), `used:<hash>` for rotated tokens,
//! `revoked`. Single-key scripts, so they run on a Redis Cluster too.
//!
//! Every call has the engine's command deadline, and every call is safe to
//! send twice (rotation recognises its own retry), so a call that failed on
//! a dead connection (the first after a Redis restart) is retried once on
//! the reconnected one. A store that still fails is an outage
//! ([`StoreError`]), never an answer about the session.

use std::{future::Future, time::Duration};

use futures_util::future::{BoxFuture, FutureExt};
use redis::Script;

use super::{Record, Rotation, SessionStore, StoreError};
use crate::redis_conn::{CommandError, RedisHandle};

/// Rotates atomically: KEYS[1] session; ARGV presented hash, next hash,
/// how many rotated hashes to remember for reuse detection.
/// A rotation renews the session's TTL to its refresh lifetime.
const ROTATE: &str = r"
local s = redis.call('HMGET', KEYS[1], 'record', 'current', 'revoked', 'used')
if not s[1] then return {'unknown'} end
if s[3] == '1' then return {'revoked'} end
local used = s[4] or ''
-- A retry of a rotation that already happened (its reply was lost): the
-- next hash is current and the presented one is the latest rotated.
if s[2] == ARGV[2] and string.sub(used, 1, #ARGV[1]) == ARGV[1] then
  return {'rotated', s[1]}
end
if s[2] == ARGV[1] then
  local kept, n = {ARGV[1]}, 1
  for h in string.gmatch(used, '%S+') do
    if n >= tonumber(ARGV[3]) then break end
    kept[#kept + 1] = h
    n = n + 1
  end
  redis.call('HSET', KEYS[1], 'current', ARGV[2], 'used', table.concat(kept, ' '))
  local ttl = cjson.decode(s[1])['refresh_ttl_secs']
  redis.call('PEXPIRE', KEYS[1], ttl * 1000)
  return {'rotated', s[1]}
end
if string.find(' ' .. used .. ' ', ' ' .. ARGV[1] .. ' ', 1, true) then
  redis.call('HSET', KEYS[1], 'revoked', '1', 'current', '')
  return {'reused'}
end
return {'unknown'}
";

/// Revokes if present: KEYS[1] session.
const REVOKE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'revoked', '1', 'current', '')
return 1
";

/// Fixed-window counter: KEYS[1] counter; ARGV window ms. A retried hit may
/// count twice, which errs towards limiting.
const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
";

/// A [`SessionStore`] in Redis (or a Redis Cluster).
#[derive(Debug)]
pub struct RedisStore {
    redis: RedisHandle,
    prefix: String,
}

impl RedisStore {
    /// A store using `redis`, with keys under `prefix`.
    pub fn new(redis: RedisHandle, prefix: String) -> Self {
        Self { redis, prefix }
    }

    fn session_key(&self, sid: &str) -> String {
        format!("{}s:{sid}", self.prefix)
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}u:{user}", self.prefix)
    }
}

fn failed(err: CommandError) -> StoreError {
    StoreError(err.to_string())
}

/// Runs `op`, and once more if Redis did not answer (the connection was
/// dead and is being replaced). Only for calls that are safe to repeat.
async fn retried<T, F, Fut>(op: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, CommandError>>,
{
    match op().await {
        Err(CommandError::NotSent | CommandError::Unknown) => op().await.map_err(failed),
        result => result.map_err(failed),
    }
}

/// A session lifetime in ms for `PEXPIRE`. Lifetimes are bounded before
/// they get here; the clamp keeps a stray one from making Redis refuse the
/// `PEXPIRE` after the `HSET` ran, which would leave a session without TTL.
fn millis(secs: u64) -> u64 {
    secs.min(super::MAX_REFRESH_TTL_SECS).saturating_mul(1000)
}

impl SessionStore for RedisStore {
    fn create(
        &self,
        sid: String,
        record: Record,
        hash: String,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let redis = self.redis.clone();
        let key = self.session_key(&sid);
        let user_key = self.user_key(&record.user);
        let ttl = millis(record.refresh_ttl_secs);
        async move {
            let json = serde_json::to_string(&record).map_err(|e| StoreError(e.to_string()))?;
            let mut pipe = redis::pipe();
            pipe.cmd("HSET")
                .arg(&key)
                .arg("record")
                .arg(json)
                .arg("current")
                .arg(hash)
                .arg("revoked")
                .arg("0")
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
            retried(|| redis.pipeline(pipe.clone())).await?;
            // The user index lives in another key (another slot on a cluster):
            // a separate step; a stale member is skipped when read.
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(&user_key).arg(&sid).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&user_key)
                .arg(ttl)
                .arg("GT")
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(&user_key)
                .arg(ttl)
                .arg("NX")
                .ignore();
            retried(|| redis.pipeline(pipe.clone())).await
        }
        .boxed()
    }

    fn rotate(
        &self,
        sid: String,
        presented: String,
        next: String,
    ) -> BoxFuture<'static, Result<Rotation, StoreError>> {
        let redis = self.redis.clone();
        let key = self.session_key(&sid);
        let prefix = self.prefix.clone();
        async move {
            let script = Script::new(ROTATE);
            let mut script = script.key(key);
            script
                .arg(&presented)
                .arg(&next)
                .arg(super::REMEMBERED_ROTATIONS);
            let mut reply: Vec<String> = retried(|| redis.invoke(&script)).await?;
            let rotation = match reply.first().map(String::as_str) {
                Some("rotated") if reply.len() == 2 => {
                    let record: Record = serde_json::from_str(&reply.swap_remove(1))
                        .map_err(|e| StoreError(e.to_string()))?;
                    // Keep the user index alive as long as this session (another
                    // key, so not in the script; best effort).
                    let mut cmd = redis::cmd("PEXPIRE");
                    let ttl = millis(record.refresh_ttl_secs);
                    cmd.arg(format!("{prefix}u:{}", record.user))
                        .arg(ttl)
                        .arg("GT");
                    if let Err(err) = redis.query::<()>(cmd).await {
                        tracing::debug!(error = %err, "renewing a user index failed");
                    }
                    Rotation::Rotated(record)
                }
                Some("reused") => Rotation::Reused,
                Some("revoked") => Rotation::Revoked,
                _ => Rotation::Unknown,
            };
            Ok(rotation)
        }
        .boxed()
    }

    fn revoke(&self, sid: String) -> BoxFuture<'static, Result<bool, StoreError>> {
        let redis = self.redis.clone();
        let key = self.session_key(&sid);
        async move {
            let script = Script::new(REVOKE);
            let script = script.key(key);
            let found: i64 = retried(|| redis.invoke(&script)).await?;
            Ok(found == 1)
        }
        .boxed()
    }

    fn sessions_of(&self, user: String) -> BoxFuture<'static, Result<Vec<String>, StoreError>> {
        let redis = self.redis.clone();
        let user_key = self.user_key(&user);
        let prefix = self.prefix.clone();
        async move {
            let sids: Vec<String> =
                retried(|| redis.query(redis::cmd("SMEMBERS").arg(&user_key).clone())).await?;
            let mut live = Vec::with_capacity(sids.len());
            for sid in sids {
                let mut hget = redis::cmd("HGET");
                hget.arg(format!("{prefix}s:{sid}")).arg("revoked");
                let revoked: Option<String> = retried(|| redis.query(hget.clone())).await?;
                if revoked.as_deref() == Some("0") {
                    live.push(sid);
                }
            }
            Ok(live)
        }
        .boxed()
    }

    fn is_revoked(&self, sid: String) -> BoxFuture<'static, Result<bool, StoreError>> {
        let redis = self.redis.clone();
        let key = self.session_key(&sid);
        async move {
            let mut hget = redis::cmd("HGET");
            hget.arg(key).arg("revoked");
            let revoked: Option<String> = retried(|| redis.query(hget.clone())).await?;
            Ok(revoked.as_deref() == Some("1"))
        }
        .boxed()
    }

    fn hit(&self, key: String, window: Duration) -> BoxFuture<'static, Result<u64, StoreError>> {
        let redis = self.redis.clone();
        let key = format!("{}rl:{key}", self.prefix);
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        async move {
            let script = Script::new(HIT);
            let mut script = script.key(key);
            script.arg(window);
            retried(|| redis.invoke(&script)).await
        }
        .boxed()
    }

    fn is_available(&self) -> bool {
        self.redis.is_healthy()
    }

    fn check(&self) -> BoxFuture<'static, bool> {
        let redis = self.redis.clone();
        async move {
            let up = redis.ping().await.is_ok();
            metrics::gauge!(crate::metrics::SESSION_STORE_CONNECTED).set(f64::from(u8::from(up)));
            up
        }
        .boxed()
    }
}
