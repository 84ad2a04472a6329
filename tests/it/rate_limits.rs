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

/// Over a real socket, with bounds that only a stall of seconds could
/// break: the exact rule (burst, refill, strikes) is unit-tested on a
/// clock the test drives, in `core::rate_limit`.
#[tokio::test]
async fn messages_per_connection() {
    let hub = TestHub::with(only(|l| {
        l.messages_per_second = 5;
        l.strikes = 3;
    }))
    .await;
    let mut client = hub.connect("m").await;
    // Seven requests sent back to back: the burst of five passes, and the
    // rest arrive before more than one slot could refill.
    for id in 0..7 {
        client.send(json!({"type": "ping", "id": id})).await;
    }
    let mut refused = Vec::new();
    for _ in 0..7 {
        let reply = client.recv().await;
        if reply["type"] == "error" {
            assert_eq!(reply["code"], 111, "{reply}");
            refused.push(reply["id"].as_u64().unwrap());
        } else {
            assert_eq!(reply["type"], "pong", "{reply}");
        }
    }
    assert!(
        !refused.is_empty() && refused.iter().all(|&id| id >= 5),
        "refused {refused:?}"
    );
    // Below the rate again after a pause (any longer pause only refills more).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        client.request(json!({"type": "ping", "id": 7})).await["type"],
        "pong"
    );
    // Persistent abuse closes the connection.
    for id in 0..40 {
        client.send(json!({"type": "ping", "id": 100 + id})).await;
    }
    loop {
        match client.next_message(crate::helpers::WAIT).await {
            Some(Ok(reply)) => assert!(reply["type"] == "pong" || reply["code"] == 111, "{reply}"),
            Some(Err(close)) => {
                assert_eq!(close, (4006, "rate limit exceeded".into()));
                break;
            }
            None => panic!("not closed after 40 requests at once"),
        }
    }
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
    // One per second: of five upgrades at once, the first passes and the
    // others are refused (unless they spread over seconds).
    let hub = TestHub::with(only(|l| l.upgrades_per_ip_per_second = 1)).await;
    let statuses = futures_util::future::join_all((0..5).map(|_| upgrade_status(&hub, "u"))).await;
    assert!(
        statuses.iter().filter(|&&s| s == 101).count() >= 1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 101 || s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|&&s| s == 429).count() >= 1,
        "{statuses:?}"
    );
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
    let batch = |n: usize| {
        let publications: Vec<_> = (0..n)
            .map(|n| json!({"channel": "c", "event": "e", "data": n}))
            .collect();
        json!({ "publications": publications })
    };
    // A batch larger than a second's worth never fits, whatever the timing.
    let (status, body) = hub.api("/api/v1/publish/batch", batch(3)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(hub.api("/api/v1/publish/batch", batch(2)).await.0, 200);
    // Ten at once: refused past the rate (unless they spread over seconds).
    let statuses = futures_util::future::join_all((0..10).map(|n| {
        hub.api(
            "/api/v1/publish",
            json!({"channel": "c", "event": "e", "data": n}),
        )
    }))
    .await;
    assert!(
        statuses.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.iter().any(|(s, _)| *s == 429), "{statuses:?}");
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
