//! Several herald nodes on one Redis (and on a 3-master Redis Cluster):
//! cross-node delivery, outside publishers, ordering, outages, churn.

use std::time::Duration;

use herald::config::{Config, EngineKind};
use serde_json::{Value, json};

use crate::{
    helpers::{Client, TestHub, eventually},
    redis_server::{RedisCluster, RedisServer},
};

enum Redis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    fn configure(&self, c: &mut Config) {
        c.engine.kind = EngineKind::Redis;
        match self {
            Self::Single(server) => c.engine.url = server.url(),
            Self::Cluster(cluster) => c.engine.cluster_urls = cluster.urls(),
        }
        c.engine.unsubscribe_linger_ms = 200;
        c.engine.reconnect_min_ms = 50;
        c.engine.reconnect_max_ms = 500;
        c.engine.announce_interval_ms = 200;
    }

    async fn nodes(&self, count: usize, edit: impl Fn(&mut Config)) -> Vec<TestHub> {
        let mut nodes = Vec::new();
        for i in 0..count {
            let hub = TestHub::with(|c| {
                self.configure(c);
                c.server.node_id = Some(format!("node-{i}"));
                edit(c);
            })
            .await;
            hub.wait_ready().await;
            nodes.push(hub);
        }
        nodes
    }

    /// Publishes like an outside program would: PUBLISH (or SPUBLISH on a cluster).
    fn publish_raw(&self, channel: &str, payload: &str) {
        let key = format!("herald:{channel}");
        match self {
            Self::Single(server) => {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(&key)
                    .arg(payload)
                    .query(&mut server.client())
                    .unwrap();
            }
            Self::Cluster(cluster) => {
                let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
                let _: i64 = redis::cmd("SPUBLISH")
                    .arg(&key)
                    .arg(payload)
                    .query(&mut client.get_connection().unwrap())
                    .unwrap();
            }
        }
    }

    /// Herald's channels currently subscribed in Redis.
    fn subscribed(&self) -> Vec<String> {
        match self {
            Self::Single(server) => redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg("herald:*")
                .query(&mut server.client())
                .unwrap(),
            Self::Cluster(cluster) => cluster.shard_channels(),
        }
    }

    /// Redis-side subscriber count of one channel (one per node that serves it).
    fn subscribers(&self, channel: &str) -> u64 {
        let key = format!("herald:{channel}");
        match self {
            Self::Single(server) => {
                let (_, count): (String, u64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&key)
                    .query(&mut server.client())
                    .unwrap();
                count
            }
            Self::Cluster(cluster) => cluster.shard_subscribers(&key),
        }
    }
}

async fn subscribed(hub: &TestHub, user: &str, channel: &str) -> Client {
    let mut client = hub.connect(user).await;
    client.subscribe(channel).await;
    client
}

async fn cross_node_delivery(redis: Redis) {
    let nodes = redis.nodes(3, |_| {}).await;
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        clients.push(subscribed(node, &format!("u{i}"), "prices.btc").await);
    }
    for (n, node) in nodes.iter().enumerate() {
        node.publish("prices.btc", "price_update", json!({"from": n}))
            .await;
        for client in &mut clients {
            let push = client.recv_push().await;
            assert_eq!(
                (push["event"].as_str(), &push["data"]),
                (Some("price_update"), &json!({"from": n}))
            );
        }
    }
    redis.publish_raw(
        "prices.btc",
        r#"{"event":"tick","data":{"p":1},"ts":1700000000000}"#,
    );
    for client in &mut clients {
        let push = client.recv_push().await;
        assert_eq!(
            (push["event"].as_str(), &push["data"], &push["ts"]),
            (
                Some("tick"),
                &json!({"p": 1}),
                &json!(1_700_000_000_000_u64)
            )
        );
    }
    redis.publish_raw("prices.btc", "64000.5");
    for client in &mut clients {
        let push = client.recv_push().await;
        assert_eq!(
            (push["event"].as_str(), &push["data"]),
            (Some("message"), &json!(64000.5))
        );
    }
    // Exactly one Redis subscription per channel per node.
    assert_eq!(redis.subscribers("prices.btc"), 3);
}

async fn personal_and_broadcast_across_nodes(redis: Redis) {
    let nodes = redis.nodes(3, |_| {}).await;
    let mut phone = nodes[0].connect("42").await;
    let mut laptop = nodes[1].connect("42").await;
    let mut other = nodes[2].connect("43").await;
    let (status, _) = nodes[2]
        .api(
            "/api/v1/publish",
            json!({"user": "42", "event": "note", "data": "hi"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(phone.recv_push().await["data"], "hi");
    assert_eq!(laptop.recv_push().await["data"], "hi");
    other.expect_silence(Duration::from_millis(200)).await;
    let (status, _) = nodes[1]
        .api(
            "/api/v1/publish",
            json!({"broadcast": true, "event": "all", "data": 1}),
        )
        .await;
    assert_eq!(status, 200);
    for client in [&mut phone, &mut laptop, &mut other] {
        assert_eq!(client.recv_push().await["channel"], "broadcast");
    }
    // Disconnect the user everywhere, from a node that holds none of its sockets.
    let (status, _) = nodes[2].api("/api/v1/users/42/disconnect", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(phone.expect_close().await.0, 4504);
    assert_eq!(laptop.expect_close().await.0, 4504);
    // Every node appears in cluster-wide stats.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, stats) = nodes[0].get("/api/v1/stats").await;
        if stats["cluster"]["nodes"] == 3 {
            let ids: Vec<_> = stats["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["node_id"].clone())
                .collect();
            assert_eq!(ids, [json!("node-0"), json!("node-1"), json!("node-2")]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never showed 3 nodes: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn order_under_a_burst(redis: Redis) {
    const COUNT: u64 = 10_000;
    let nodes = redis.nodes(2, |c| c.outbox.max_messages = 20_000).await;
    let mut client = subscribed(&nodes[1], "reader", "orders").await;
    let reading = tokio::spawn(async move {
        for n in 0..COUNT {
            assert_eq!(client.recv_push().await["data"], n);
        }
    });
    for chunk in (0..COUNT).collect::<Vec<_>>().chunks(1000) {
        let publications: Vec<Value> = chunk
            .iter()
            .map(|n| json!({"channel": "orders", "event": "e", "data": n}))
            .collect();
        let (status, _) = nodes[0]
            .api(
                "/api/v1/publish/batch",
                json!({"publications": publications}),
            )
            .await;
        assert_eq!(status, 200);
    }
    tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .unwrap()
        .unwrap();
}

async fn churn_leaves_no_stale_subscriptions(redis: Redis) {
    // 20,000 requests as fast as possible: far past the per-connection rate limit.
    let nodes = redis
        .nodes(1, |c| c.rate_limits.messages_per_second = 0)
        .await;
    let mut client = nodes[0].connect("churner").await;
    for i in 0..10_000u32 {
        let channel = format!("churn.{}", i % 64);
        let id = u64::from(i);
        let ok = client
            .request(json!({"type": "subscribe", "id": id, "channel": channel}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        let ok = client
            .request(json!({"type": "unsubscribe", "id": id, "channel": channel}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stale: Vec<_> = redis
            .subscribed()
            .into_iter()
            .filter(|c| c.starts_with("herald:churn."))
            .collect();
        if stale.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stale subscriptions: {stale:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The personal and broadcast channels of the connected client remain.
    assert_eq!(redis.subscribers("user:churner"), 1);
}

#[tokio::test]
async fn single_cross_node_delivery() {
    cross_node_delivery(Redis::Single(RedisServer::start())).await;
}

#[tokio::test]
async fn single_personal_and_broadcast() {
    personal_and_broadcast_across_nodes(Redis::Single(RedisServer::start())).await;
}

#[tokio::test]
async fn single_order_under_a_burst() {
    order_under_a_burst(Redis::Single(RedisServer::start())).await;
}

#[tokio::test]
async fn single_churn() {
    churn_leaves_no_stale_subscriptions(Redis::Single(RedisServer::start())).await;
}

#[tokio::test]
async fn redis_outage_keeps_sockets_and_resumes_with_a_gap_notice() {
    let mut redis = Redis::Single(RedisServer::start());
    let nodes = redis.nodes(2, |_| {}).await;
    let Redis::Single(server) = &mut redis else {
        unreachable!()
    };
    let mut client = subscribed(&nodes[1], "watcher", "feed").await;
    nodes[0].publish("feed", "e", json!("before")).await;
    assert_eq!(client.recv_push().await["data"], "before");

    server.kill();
    for node in &nodes {
        let ready = node.url("/ready");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while reqwest::get(&ready).await.unwrap().status() != 503 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready stayed 200 without redis"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (status, body) = nodes[0]
        .api(
            "/api/v1/publish",
            json!({"channel": "feed", "event": "e", "data": "lost"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("engine_unavailable"))
    );
    // The socket is still open and served.
    assert_eq!(
        client.request(json!({"type": "ping", "id": 1})).await,
        json!({"type": "pong", "id": 1})
    );

    let restarted = tokio::time::Instant::now();
    server.restart();
    for node in &nodes {
        node.wait_ready().await;
    }
    eprintln!("resume after redis restart: {:?}", restarted.elapsed());
    // Every channel the connection holds gets a gap notice, then delivery resumes.
    let mut gaps = Vec::new();
    while gaps.len() < 3 {
        let message = client.recv().await;
        assert_eq!(message["type"], "gap", "{message}");
        gaps.push(message["channel"].as_str().unwrap().to_owned());
    }
    gaps.sort();
    assert_eq!(gaps, ["broadcast", "feed", "user:watcher"]);
    nodes[0].publish("feed", "e", json!("after")).await;
    assert_eq!(client.recv_push().await["data"], "after");
}

#[tokio::test]
async fn cluster_cross_node_delivery() {
    cross_node_delivery(Redis::Cluster(RedisCluster::start())).await;
}

#[tokio::test]
async fn cluster_personal_and_broadcast() {
    personal_and_broadcast_across_nodes(Redis::Cluster(RedisCluster::start())).await;
}

#[tokio::test]
async fn cluster_order_under_a_burst() {
    order_under_a_burst(Redis::Cluster(RedisCluster::start())).await;
}

#[tokio::test]
async fn cluster_churn() {
    churn_leaves_no_stale_subscriptions(Redis::Cluster(RedisCluster::start())).await;
}

#[tokio::test]
async fn cluster_channels_spread_over_every_shard() {
    let redis = Redis::Cluster(RedisCluster::start());
    let nodes = redis.nodes(1, |_| {}).await;
    let mut clients = Vec::new();
    for i in 0..30 {
        clients.push(subscribed(&nodes[0], &format!("u{i}"), &format!("tracking.{i}")).await);
    }
    let Redis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    for node in &cluster.nodes {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .arg("herald:tracking.*")
            .query(&mut node.client())
            .unwrap();
        assert!(
            !channels.is_empty(),
            "a master serves no channel: not sharded"
        );
    }
    for (i, client) in clients.iter_mut().enumerate() {
        redis.publish_raw(
            &format!("tracking.{i}"),
            &format!(r#"{{"event":"moved","data":{i}}}"#),
        );
        assert_eq!(client.recv_push().await["data"], i);
    }
    let expected = clients.len();
    let state = nodes[0].state.clone();
    eventually("all subscribed", move || {
        state.hub.stats(0).connections == expected
    })
    .await;
}
