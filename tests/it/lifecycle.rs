//! Heartbeats, connection limits, engine failures and graceful shutdown.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::future::{BoxFuture, FutureExt, ready};
use herald::{
    engine::{
        Engine, EngineError, Kick, NodeRegistry, NodeStats, SharedDispatcher, memory::MemoryEngine,
    },
    protocol::{ChannelName, Publication},
};
use serde_json::json;

use crate::helpers::TestHub;

#[tokio::test]
async fn a_silent_client_is_closed_with_4002_and_a_live_one_is_kept() {
    // Margins, not luck: `live` answers a ping every 300 ms and would have to
    // miss them all for 1.8 s to be closed; `silent` is closed ~2 s in, well
    // inside the 10 s the raw client waits for the close frame.
    let hub = TestHub::with(|c| {
        c.heartbeat.interval_ms = 300;
        c.heartbeat.timeout_ms = 1500;
    })
    .await;
    // A raw socket: nothing on the client side answers the server's pings.
    let mut silent = crate::helpers::raw_socket(&hub, "silent").await;
    let mut live = hub.connect("live").await;
    // `silent` answers no ping: closed after interval + timeout. Meanwhile
    // `live` keeps reading, so its WebSocket layer answers every ping, for
    // longer than the whole deadline.
    let (code, ()) = tokio::join!(
        crate::helpers::raw_close_code(&mut silent),
        live.expect_silence(Duration::from_millis(4000)),
    );
    assert_eq!(code, 4002);
    assert_eq!(
        live.request(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn connections_past_the_node_limit_are_closed_with_4004() {
    let hub = TestHub::with(|c| c.limits.max_connections = 2).await;
    let _a = hub.connect("a").await;
    let _b = hub.connect("b").await;
    let mut c = hub
        .connect_raw(&format!("/ws?token={}", hub.token("c")), &[])
        .await;
    assert_eq!(c.expect_close().await.0, 4004);
}

#[tokio::test]
async fn shutdown_sends_1012_to_every_client_and_readiness_turns_503() {
    let hub = TestHub::with(|c| c.shutdown.drain_ms = 1000).await;
    let mut clients = Vec::new();
    for user in ["a", "b", "c", "d"] {
        clients.push(hub.connect(user).await);
    }
    let ready = reqwest::get(hub.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let url = hub.url("/ready");
    let ws_url = format!("ws://{}/ws", hub.addr);
    let stopping = tokio::spawn(hub.shutdown());
    // During the drain window: not ready, and new upgrades are refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = reqwest::get(&url).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(tokio_tungstenite::connect_async(ws_url).await.is_err());
    for client in &mut clients {
        let (code, reason) = client.expect_close().await;
        assert_eq!((code, reason.as_str()), (1012, "server shutting down"));
    }
    stopping.await.unwrap();
}

/// The memory engine, with a switch that makes it fail like a lost backend.
#[derive(Debug)]
struct FlakyEngine {
    inner: MemoryEngine,
    down: Arc<AtomicBool>,
    /// Subscriptions never complete, like a Redis that stopped answering.
    hung: Arc<AtomicBool>,
}

impl FlakyEngine {
    fn check(&self) -> Result<(), EngineError> {
        if self.down.load(Ordering::SeqCst) {
            Err(EngineError::Unavailable("backend unreachable".into()))
        } else {
            Ok(())
        }
    }
}

impl Engine for FlakyEngine {
    fn publish(&self, batch: Vec<Publication>) -> BoxFuture<'static, Result<(), EngineError>> {
        match self.check() {
            Ok(()) => self.inner.publish(batch),
            Err(err) => ready(Err(err)).boxed(),
        }
    }
    fn publish_once(
        &self,
        batch: Vec<herald::engine::Keyed>,
    ) -> BoxFuture<'static, Result<Vec<herald::engine::Once>, EngineError>> {
        match self.check() {
            Ok(()) => self.inner.publish_once(batch),
            Err(err) => ready(Err(err)).boxed(),
        }
    }
    fn subscribe(&self, channel: ChannelName) -> BoxFuture<'static, Result<(), EngineError>> {
        if self.hung.load(Ordering::SeqCst) {
            return futures_util::future::pending().boxed();
        }
        match self.check() {
            Ok(()) => self.inner.subscribe(channel),
            Err(err) => ready(Err(err)).boxed(),
        }
    }
    fn history(
        &self,
        channel: ChannelName,
        spec: herald::protocol::HistorySpec,
        query: herald::protocol::HistoryQuery,
    ) -> BoxFuture<'static, Result<herald::engine::HistoryPage, EngineError>> {
        match self.check() {
            Ok(()) => self.inner.history(channel, spec, query),
            Err(err) => ready(Err(err)).boxed(),
        }
    }
    fn unsubscribe(&self, channel: ChannelName) {
        self.inner.unsubscribe(channel);
    }
    fn disconnect(
        &self,
        channel: ChannelName,
        kick: Kick,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        match self.check() {
            Ok(()) => self.inner.disconnect(channel, kick),
            Err(err) => ready(Err(err)).boxed(),
        }
    }
    fn is_connected(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }
}

impl NodeRegistry for FlakyEngine {
    fn announce(&self, stats: &NodeStats, ttl: u64) -> BoxFuture<'static, Result<(), EngineError>> {
        self.inner.announce(stats, ttl)
    }
    fn nodes(&self) -> BoxFuture<'static, Result<Vec<NodeStats>, EngineError>> {
        self.inner.nodes()
    }
}

#[tokio::test]
async fn engine_failures_are_reported_never_swallowed() {
    let down = Arc::new(AtomicBool::new(false));
    let switch = Arc::clone(&down);
    let hub = TestHub::with_engine(
        |c| {
            c.channels.namespaces = vec![crate::helpers::namespace(
                "*",
                herald::core::Access::Authenticated,
                true,
                false,
            )]
        },
        move |dispatcher: SharedDispatcher| -> Arc<dyn Engine> {
            Arc::new(FlakyEngine {
                inner: MemoryEngine::new(dispatcher),
                down: switch,
                hung: Arc::default(),
            })
        },
    )
    .await;
    let mut client = hub.connect("u").await;
    down.store(true, Ordering::SeqCst);

    let reply = client
        .request(json!({"type": "subscribe", "id": 1, "channel": "new"}))
        .await;
    // The engine's own text ("backend unreachable") stays in the server log.
    let unavailable = (Some(112), Some("engine unavailable; retry later"));
    assert_eq!(
        (reply["code"].as_u64(), reply["reason"].as_str()),
        unavailable
    );
    let reply = client
        .request(json!({"type": "publish", "id": 2, "channel": "x", "event": "e", "data": 1}))
        .await;
    assert_eq!(
        (reply["code"].as_u64(), reply["reason"].as_str()),
        unavailable
    );
    let (status, body) = hub
        .api(
            "/api/v1/publish",
            json!({"channel": "x", "event": "e", "data": 1}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("engine_unavailable"))
    );
    assert_eq!(
        body["error"]["message"],
        "the engine is unavailable; retry with backoff"
    );
    assert_eq!(reqwest::get(hub.url("/ready")).await.unwrap().status(), 503);
    // A new connection cannot join its automatic channels: internal error, reconnect later.
    let mut late = hub
        .connect_raw(&format!("/ws?token={}", hub.token("late")), &[])
        .await;
    assert_eq!(late.expect_close().await.0, 4000);

    down.store(false, Ordering::SeqCst);
    client.subscribe("new").await;
    assert_eq!(reqwest::get(hub.url("/ready")).await.unwrap().status(), 200);
}

/// A subscribe the engine never confirms is bounded by
/// `engine.command_timeout_ms`: the client gets error 112 and keeps its
/// connection, and a new connection is closed with 4000, instead of both
/// waiting forever with nothing drained.
#[tokio::test]
async fn an_engine_subscribe_that_never_completes_times_out_with_112() {
    let hung = Arc::new(AtomicBool::new(false));
    let switch = Arc::clone(&hung);
    let hub = TestHub::with_engine(
        |c| {
            c.engine.command_timeout_ms = 300;
            c.channels.namespaces = vec![crate::helpers::namespace(
                "*",
                herald::core::Access::Authenticated,
                false,
                false,
            )]
        },
        move |dispatcher: SharedDispatcher| -> Arc<dyn Engine> {
            Arc::new(FlakyEngine {
                inner: MemoryEngine::new(dispatcher),
                down: Arc::default(),
                hung: switch,
            })
        },
    )
    .await;
    let mut client = hub.connect("u").await;
    hung.store(true, Ordering::SeqCst);

    let reply = client
        .request(json!({"type": "subscribe", "id": 1, "channel": "slow"}))
        .await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_u64()),
        (Some("error"), Some(112))
    );
    let mut late = hub
        .connect_raw(&format!("/ws?token={}", hub.token("late")), &[])
        .await;
    assert_eq!(late.expect_close().await.0, 4000);

    // The refused join left nothing behind: once the engine answers, the
    // same channel can be joined and receives publications.
    hung.store(false, Ordering::SeqCst);
    client.subscribe("slow").await;
    hub.publish("slow", "e", json!(1)).await;
    assert_eq!(client.recv_push().await["data"], 1);
}
