//! The listener for `@socket.io/redis-emitter` messages: one pub/sub
//! connection per node, `PSUBSCRIBE <key>#/#*` (the broadcast channel and
//! every single-room channel of the default namespace), each message decoded
//! by [`crate::engine::emitter`] and handed to this node's fan-out. Every
//! node hears every message, so each delivers to its own subscribers only.
//! Reconnects with exponential backoff; a `PING` every `ping_interval` that
//! gets no answer within `ping_timeout` counts as a lost connection.

use std::time::Duration;

use futures_util::StreamExt;
use redis::{RedisResult, Value};
use tokio::time::{interval, sleep, timeout};

use crate::{
    engine::{
        EngineConfig, SharedDispatcher,
        emitter::{self, EmitterLimits, Refusal},
    },
    metrics as names,
    redis_conn::{RedisConfigError, single_client},
};

/// Starts listening for emitter messages published under `key` on the Redis
/// server of `config` (`engine.url`).
///
/// # Errors
/// [`RedisConfigError`] naming `engine.url` when it is invalid.
pub fn listen_to_emitter(
    config: &EngineConfig,
    key: &str,
    limits: EmitterLimits,
    dispatcher: SharedDispatcher,
) -> Result<(), RedisConfigError> {
    let client = single_client(&config.redis(), redis::ProtocolVersion::RESP2)?;
    let pattern = format!("{}#/#*", glob_escape(key));
    let settings = Settings {
        limits,
        connect_timeout: config.connect_timeout(),
        ping_interval: Duration::from_millis(config.ping_interval_ms.max(1)),
        ping_timeout: Duration::from_millis(config.ping_timeout_ms.max(1)),
        backoff: (
            Duration::from_millis(config.reconnect_min_ms.max(1)),
            Duration::from_millis(config.reconnect_max_ms.max(config.reconnect_min_ms.max(1))),
        ),
    };
    tokio::spawn(async move {
        let mut delay = settings.backoff.0;
        loop {
            match session(&client, &pattern, &settings, &dispatcher).await {
                Ok(true) => delay = settings.backoff.0,
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "Socket.IO emitter listener lost Redis"),
            }
            sleep(delay).await;
            delay = (delay * 2).min(settings.backoff.1);
        }
    });
    Ok(())
}

struct Settings {
    limits: EmitterLimits,
    connect_timeout: Duration,
    ping_interval: Duration,
    ping_timeout: Duration,
    backoff: (Duration, Duration),
}

/// One connection's life: `Ok(true)` if it was subscribed before it ended.
async fn session(
    client: &redis::Client,
    pattern: &str,
    settings: &Settings,
    dispatcher: &SharedDispatcher,
) -> RedisResult<bool> {
    let connect = timeout(settings.connect_timeout, client.get_async_pubsub()).await;
    let Ok(pubsub) = connect else {
        return Ok(false);
    };
    let (mut sink, mut stream) = pubsub?.split();
    sink.psubscribe(pattern).await?;
    tracing::debug!(pattern, "listening for Socket.IO emitter messages");
    let mut ticks = interval(settings.ping_interval);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return Ok(true) };
                deliver(message.get_payload_bytes(), &settings.limits, dispatcher);
            }
            _ = ticks.tick() => {
                let mut pinger = sink.clone();
                let ping = async move { pinger.ping::<Value>().await.map(drop) };
                if !matches!(timeout(settings.ping_timeout, ping).await, Ok(Ok(()))) {
                    return Ok(true);
                }
            }
        }
    }
}

fn deliver(payload: &[u8], limits: &EmitterLimits, dispatcher: &SharedDispatcher) {
    let outcome = match emitter::decode(payload, limits) {
        Ok(publications) => {
            for publication in publications {
                dispatcher.dispatch(publication);
            }
            "delivered"
        }
        Err(refusal) => {
            tracing::debug!(%refusal, "Socket.IO emitter message refused");
            Refusal::label(refusal)
        }
    };
    metrics::counter!(names::SOCKETIO_EMITTER_MESSAGES, "outcome" => outcome).increment(1);
}

/// `key` as a literal in a `PSUBSCRIBE` pattern.
fn glob_escape(key: &str) -> String {
    let mut escaped = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_is_a_literal_in_the_pattern() {
        assert_eq!(super::glob_escape("socket.io"), "socket.io");
        assert_eq!(super::glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
