//! A shared command connection to Redis or a Redis Cluster, opened on
//! first use: the engine's write path and the session store use it.

use std::sync::Arc;

use redis::{
    FromRedisValue, RedisResult, ScriptInvocation, aio::ConnectionManager,
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

use super::backend::Cluster;
use crate::config::EngineConfig;

enum Inner {
    Single {
        client: redis::Client,
        conn: OnceCell<ConnectionManager>,
    },
    Cluster {
        backend: Cluster,
        conn: OnceCell<ClusterConnection>,
    },
}

/// A multiplexed (pipelining) command connection; cheap to clone.
#[derive(Clone)]
pub struct RedisHandle(Arc<Inner>);

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match *self.0 {
            Inner::Single { .. } => "RedisHandle(single)",
            Inner::Cluster { .. } => "RedisHandle(cluster)",
        })
    }
}

/// Runs `$op` on whichever connection the handle holds.
macro_rules! on_conn {
    ($handle:expr, |$conn:ident| $op:expr) => {
        match &*$handle.0 {
            Inner::Single { client, conn } => {
                let mut $conn = conn
                    .get_or_try_init(|| ConnectionManager::new(client.clone()))
                    .await?
                    .clone();
                $op
            }
            Inner::Cluster { backend, conn } => {
                let mut $conn = conn
                    .get_or_try_init(|| async {
                        backend.client(false)?.get_async_connection().await
                    })
                    .await?
                    .clone();
                $op
            }
        }
    };
}

impl RedisHandle {
    /// A handle for `[engine]` (single server, or cluster when `cluster_urls` is set).
    ///
    /// # Errors
    /// A message naming `engine.url` when it does not parse.
    pub fn new(config: &EngineConfig) -> Result<Self, String> {
        let inner = if config.cluster_urls.is_empty() {
            Inner::Single {
                client: super::single_client(config)?,
                conn: OnceCell::new(),
            }
        } else {
            Inner::Cluster {
                backend: super::cluster_backend(config),
                conn: OnceCell::new(),
            }
        };
        Ok(Self(Arc::new(inner)))
    }

    /// Sends a pipeline, ignoring replies.
    ///
    /// The first command after an outage may find the old socket dead; the
    /// connection then reconnects, so the pipeline is tried once more. (A
    /// reply lost after Redis ran it means at-least-once, never lost.)
    ///
    /// # Errors
    /// The Redis error.
    pub async fn pipeline(&self, pipe: redis::Pipeline) -> RedisResult<()> {
        match on_conn!(self, |conn| pipe.query_async::<()>(&mut conn).await) {
            Err(err) if err.is_connection_dropped() || err.is_io_error() => {
                on_conn!(self, |conn| pipe.query_async::<()>(&mut conn).await)
            }
            result => result,
        }
    }

    /// Runs one command.
    ///
    /// # Errors
    /// The Redis error.
    pub async fn query<T: FromRedisValue>(&self, cmd: redis::Cmd) -> RedisResult<T> {
        on_conn!(self, |conn| cmd.query_async(&mut conn).await)
    }

    /// Runs a Lua script (EVALSHA, loading it on first use).
    ///
    /// # Errors
    /// The Redis error.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &mut ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        on_conn!(self, |conn| script.invoke_async(&mut conn).await)
    }
}
