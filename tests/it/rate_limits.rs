//! Every rate limit triggers at its configured rate and not before, and
//! what stays below it stays healthy.

use std::time::Duration;

use herald::config::{Config, EngineKind};
use serde_json::json;

use crate::{helpers::TestHub, redis_server::RedisServer};

fn only(edit: impl FnOnce(&mut herald::core::RateLimitConfig)) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        let limits = &mut c.rate_limits;
        limits.messages_per_second = 0;
        limits.upgrades_per_ip_per_second = 0;
        limits.connections_per_ip = 0;
        limits.connections_per_user = 0;
        limits.api_publishes_per_second = 0;
        limits.session_calls_per_ip_per_minute = 0;
        edit(limits);
    }
}

#[tokio::test]
async fn messages_per_connection() {
    let hub = TestHub::with(only(|l| {
        l.messages_per_second = 5;
        l.strikes = 3;
    }))
    .await;
    let mut client = hub.connect("m").await;
    for id in 0..5 {
        assert_eq!(
            client.request(json!({"type": "ping", "id": id})).await["type"],
            "pong"
        );
    }
    let refused = client.request(json!({"type": "ping", "id": 5})).await;
    assert_eq!(
        (refused["code"].as_u64(), refused["id"].as_u64()),
        (Some(111), Some(5))
    );
    // Below the rate again after a pause: healthy.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        client.request(json!({"type": "ping", "id": 6})).await["type"],
        "pong"
    );
    // Persistent abuse closes the connection.
    for id in 0..20 {
        client.send(json!({"type": "ping", "id": 100 + id})).await;
    }
    assert_eq!(
        client.expect_close().await,
        (4006, "rate limit exceeded".into())
    );
}

async fn upgrade_status(hub: &TestHub, user: &str) -> u16 {
    let url = format!("ws://{}/ws?token={}", hub.addr, hub.token(user));
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("{err}"),
    }
}

#[tokio::test]
async fn upgrades_per_ip() {
    // One per second: the second upgrade right after the first is refused.
    let hub = TestHub::with(only(|l| l.upgrades_per_ip_per_second = 1)).await;
    assert_eq!(upgrade_status(&hub, "u").await, 101);
    assert_eq!(upgrade_status(&hub, "u").await, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        upgrade_status(&hub, "u").await,
        101,
        "healthy again below the rate"
    );
}

#[tokio::test]
async fn connections_per_ip_and_per_user() {
    let hub = TestHub::with(only(|l| l.connections_per_ip = 3)).await;
    let a = hub.connect("a").await;
    let _b = hub.connect("b").await;
    let _c = hub.connect("c").await;
    assert_eq!(upgrade_status(&hub, "d").await, 429);
    drop(a);
    let mut ok = false;
    for _ in 0..100 {
        if upgrade_status(&hub, "d").await == 101 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a freed slot must be usable again");

    let hub = TestHub::with(only(|l| l.connections_per_user = 2)).await;
    let _one = hub.connect("same").await;
    let _two = hub.connect("same").await;
    let mut three = hub
        .connect_raw(&format!("/ws?token={}", hub.token("same")), &[])
        .await;
    assert_eq!(
        three.expect_close().await,
        (4004, "too many connections for this user".into())
    );
    let _other = hub.connect("other").await;
}

#[tokio::test]
async fn api_publishes() {
    let hub = TestHub::with(only(|l| l.api_publishes_per_second = 2)).await;
    let publications: Vec<_> = (0..2)
        .map(|n| json!({"channel": "c", "event": "e", "data": n}))
        .collect();
    let (status, _) = hub
        .api(
            "/api/v1/publish/batch",
            json!({"publications": publications}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = hub
        .api(
            "/api/v1/publish",
            json!({"channel": "c", "event": "e", "data": 6}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = hub
        .api(
            "/api/v1/publish",
            json!({"channel": "c", "event": "e", "data": 7}),
        )
        .await;
    assert_eq!(status, 200, "healthy again below the rate");
}

#[tokio::test]
async fn session_calls_per_ip_hold_across_nodes() {
    let hub = TestHub::with(only(|l| l.session_calls_per_ip_per_minute = 3)).await;
    for _ in 0..3 {
        assert_eq!(
            hub.api("/api/v1/sessions", json!({"user": "s"})).await.0,
            201
        );
    }
    assert_eq!(
        hub.api("/api/v1/sessions", json!({"user": "s"})).await.0,
        429
    );

    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for node in ["a", "b"] {
        let url = redis.url();
        let hub = TestHub::with(move |c| {
            only(|l| l.session_calls_per_ip_per_minute = 3)(c);
            c.engine.kind = EngineKind::Redis;
            c.engine.url = url;
            c.server.node_id = Some(node.into());
        })
        .await;
        hub.wait_ready().await;
        nodes.push(hub);
    }
    assert_eq!(
        nodes[0]
            .api("/api/v1/sessions", json!({"user": "s"}))
            .await
            .0,
        201
    );
    assert_eq!(
        nodes[0]
            .api("/api/v1/sessions", json!({"user": "s"}))
            .await
            .0,
        201
    );
    assert_eq!(
        nodes[1]
            .api("/api/v1/sessions", json!({"user": "s"}))
            .await
            .0,
        201
    );
    let (status, body) = nodes[1].api("/api/v1/sessions", json!({"user": "s"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
}
