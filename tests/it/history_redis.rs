//! History and recovery on real Redis: across nodes, a node killed, Redis
//! restarted without its data, a stream older than the client, positioning
//! against lost and repeated pub/sub messages, and a Redis Cluster.

use herald::config::{Config, EngineKind};
use serde_json::json;

use crate::{
    helpers::TestHub,
    history::{expect_offsets, publish_numbered, race_rounds, subscribe_with, with_history},
    redis_server::{RedisCluster, RedisServer},
};

fn single(c: &mut Config, server: &RedisServer, size: usize) {
    with_history(c, size);
    c.engine.kind = EngineKind::Redis;
    c.engine.url = server.url();
    c.engine.reconnect_min_ms = 50;
    c.engine.reconnect_max_ms = 300;
}

async fn node(edit: impl FnOnce(&mut Config), id: &str) -> TestHub {
    let hub = TestHub::with(|c| {
        edit(c);
        c.server.node_id = Some(id.to_owned());
    })
    .await;
    hub.wait_ready().await;
    hub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_across_nodes_under_a_steady_publish_stream() {
    let redis = RedisServer::start();
    let a = node(|c| single(c, &redis, 1000), "a").await;
    let b = node(|c| single(c, &redis, 1000), "b").await;
    // Publishing through A, each round resubscribing on B from where the
    // last round stopped, while publications keep coming.
    race_rounds(&a, &b, "hist.nodes", 15).await;
}

#[tokio::test]
async fn clients_of_a_killed_node_recover_on_another() {
    let redis = RedisServer::start();
    let a = node(|c| single(c, &redis, 100), "a").await;
    let b = node(|c| single(c, &redis, 100), "b").await;
    let mut client = a.connect("alice").await;
    let reply = subscribe_with(&mut client, "hist.k", json!({})).await;
    let epoch = reply["position"]["epoch"].clone();
    publish_numbered(&b, "hist.k", 1, 4).await;
    expect_offsets(&mut client, 1..=4).await;
    a.shutdown().await;
    client.expect_close().await;
    // Published while the client reconnects.
    publish_numbered(&b, "hist.k", 5, 3).await;
    let mut client = b.connect("alice").await;
    let since = json!({"offset": 4, "epoch": epoch});
    let reply = subscribe_with(&mut client, "hist.k", json!({ "since": since })).await;
    assert_eq!(
        (&reply["recovered"], &reply["position"]["offset"]),
        (&json!(true), &json!(7)),
        "{reply}"
    );
    expect_offsets(&mut client, 5..=7).await;
    publish_numbered(&b, "hist.k", 8, 1).await;
    expect_offsets(&mut client, 8..=8).await;
}

#[tokio::test]
async fn redis_that_lost_its_data_starts_a_new_epoch_and_refuses_recovery() {
    let mut redis = RedisServer::start();
    let hub = node(|c| single(c, &redis, 100), "a").await;
    let mut client = hub.connect("alice").await;
    let old = subscribe_with(&mut client, "hist.r", json!({})).await["position"]["epoch"].clone();
    publish_numbered(&hub, "hist.r", 1, 5).await;
    expect_offsets(&mut client, 1..=5).await;
    // No persistence: the restarted server has nothing.
    redis.restart();
    hub.wait_ready().await;
    let mut fresh = hub.connect("bob").await;
    let since = json!({"offset": 5, "epoch": old});
    let reply = subscribe_with(&mut fresh, "hist.r", json!({ "since": since })).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_ne!(reply["position"]["epoch"], old, "{reply}");
    assert_eq!(reply["position"]["offset"], 0, "{reply}");
    let new = reply["position"]["epoch"].clone();
    publish_numbered(&hub, "hist.r", 1, 1).await;
    let push = fresh.recv_push().await;
    assert_eq!(push["offset"], 1, "{push}");
    // The client that stayed is told its offsets no longer apply: a gap
    // notice naming the new epoch (after the reconnect's plain gap notice).
    loop {
        let message = client.recv().await;
        if message["type"] == "gap" && message.get("epoch").is_some() {
            assert_eq!(message["epoch"], new, "{message}");
            break;
        }
        assert_eq!(message["type"], "gap", "{message}");
    }
    assert_eq!(client.recv_push().await["offset"], 1);
}

#[tokio::test]
async fn recovery_older_than_the_stream_is_refused_and_latest_works() {
    let redis = RedisServer::start();
    let hub = node(|c| single(c, &redis, 3), "a").await;
    let mut client = hub.connect("alice").await;
    let epoch = subscribe_with(&mut client, "hist.o", json!({})).await["position"]["epoch"].clone();
    publish_numbered(&hub, "hist.o", 1, 10).await;
    let mut late = hub.connect("bob").await;
    let since = json!({"offset": 6, "epoch": epoch});
    let reply = subscribe_with(&mut late, "hist.o", json!({ "since": since })).await;
    assert_eq!(
        (&reply["recovered"], &reply["position"]["offset"]),
        (&json!(false), &json!(10))
    );
    publish_numbered(&hub, "hist.o", 11, 1).await;
    expect_offsets(&mut late, 11..=11).await;
    // Within the stream: recovered.
    let mut ok = hub.connect("carol").await;
    let since = json!({"offset": 8, "epoch": epoch});
    let reply = subscribe_with(&mut ok, "hist.o", json!({ "since": since })).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    expect_offsets(&mut ok, 9..=11).await;
    let mut newest = hub.connect("dave").await;
    let reply = subscribe_with(&mut newest, "hist.o", json!({"latest": true})).await;
    assert_eq!(reply["position"]["offset"], 11);
    expect_offsets(&mut newest, 11..=11).await;
    let (status, body) = hub.get("/api/v1/history?channel=hist.o&reverse=true").await;
    assert_eq!(status, 200, "{body}");
    let offsets: Vec<_> = body["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [11, 10, 9]);
}

/// Takes the next offset of `channel`'s stream without publishing it (a
/// lost pub/sub message); with `keep`, also appends it to the stream.
fn skip_offset(conn: &mut redis::Connection, channel: &str, epoch: &str, keep: bool) -> u64 {
    let tag = format!("{{herald:{channel}}}");
    let offset: u64 = redis::cmd("HINCRBY")
        .arg(format!("herald:meta:{tag}"))
        .arg("s")
        .arg(1)
        .query(conn)
        .unwrap();
    if keep {
        let payload = format!(
            r#"{{"event":"tick","data":{{"n":{offset}}},"offset":{offset},"epoch":"{epoch}"}}"#
        );
        let _: () = redis::cmd("LPUSH")
            .arg(format!("herald:history:{tag}"))
            .arg(payload)
            .query(conn)
            .unwrap();
    }
    offset
}

/// Positioning: offsets the live stream skipped are filled from the stream
/// when it has them, signalled with a gap notice when it does not; a
/// repeated offset never reaches the socket.
#[tokio::test]
async fn positioning_fills_or_signals_lost_messages_and_drops_repeats() {
    let redis = RedisServer::start();
    let hub = node(|c| single(c, &redis, 100), "a").await;
    let mut client = hub.connect("alice").await;
    let epoch = subscribe_with(&mut client, "hist.pos", json!({})).await["position"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    publish_numbered(&hub, "hist.pos", 1, 2).await;
    expect_offsets(&mut client, 1..=2).await;
    let mut conn = redis.client();
    // 3 and 4 reach the stream only: filled before 5.
    for n in 3..=4 {
        assert_eq!(skip_offset(&mut conn, "hist.pos", &epoch, true), n);
    }
    publish_numbered(&hub, "hist.pos", 5, 1).await;
    expect_offsets(&mut client, 3..=5).await;
    // 6 and 7 reach neither: signalled with their offsets, before 8.
    for n in 6..=7 {
        assert_eq!(skip_offset(&mut conn, "hist.pos", &epoch, false), n);
    }
    publish_numbered(&hub, "hist.pos", 8, 1).await;
    let gap = client.recv().await;
    assert_eq!(
        gap,
        json!({"type": "gap", "channel": "hist.pos", "from": 6, "to": 7, "epoch": epoch})
    );
    expect_offsets(&mut client, 8..=8).await;
    // Offset 2 again, straight through pub/sub: never reaches the socket.
    let repeat = format!(r#"{{"event":"tick","data":{{"n":2}},"offset":2,"epoch":"{epoch}"}}"#);
    let _: i64 = redis::cmd("PUBLISH")
        .arg("herald:hist.pos")
        .arg(repeat)
        .query(&mut conn)
        .unwrap();
    publish_numbered(&hub, "hist.pos", 9, 1).await;
    expect_offsets(&mut client, 9..=9).await;
    // Process-wide counters (other tests share them): at least this test's.
    let metrics = hub.scrape_metrics().await;
    for series in [
        "herald_history_gaps_total{outcome=\"filled\"}",
        "herald_history_gaps_total{outcome=\"signalled\"}",
        "herald_history_duplicates_dropped_total",
    ] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing"));
        assert!(value >= 1.0, "{series} {value}");
    }
}

#[tokio::test]
async fn history_publish_with_idempotency_keys_on_redis() {
    let redis = RedisServer::start();
    let hub = node(|c| single(c, &redis, 100), "a").await;
    let mut client = hub.connect("alice").await;
    subscribe_with(&mut client, "hist.idem", json!({})).await;
    for _ in 0..2 {
        let (status, body) = hub
            .api(
                "/api/v1/publish",
                json!({"channel": "hist.idem", "event": "tick", "data": {"n": 1},
                    "idempotency_key": "k-1"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    publish_numbered(&hub, "hist.idem", 2, 1).await;
    // Published once: offsets 1 and 2, nothing in between.
    expect_offsets(&mut client, 1..=2).await;
}

#[tokio::test]
async fn recovery_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let edit = |c: &mut Config| {
        with_history(c, 100);
        c.engine.kind = EngineKind::Redis;
        c.engine.cluster_urls = cluster.urls();
    };
    let a = node(edit, "a").await;
    let b = node(edit, "b").await;
    for channel in ["hist.c1", "hist.c2", "hist.c3"] {
        let mut client = a.connect("alice").await;
        let epoch =
            subscribe_with(&mut client, channel, json!({})).await["position"]["epoch"].clone();
        publish_numbered(&b, channel, 1, 3).await;
        expect_offsets(&mut client, 1..=3).await;
        publish_numbered(&a, channel, 4, 2).await;
        let mut other = b.connect("alice").await;
        let since = json!({"offset": 3, "epoch": epoch});
        let reply = subscribe_with(&mut other, channel, json!({ "since": since })).await;
        assert_eq!(reply["recovered"], true, "{channel}: {reply}");
        expect_offsets(&mut other, 4..=5).await;
        let (status, body) = a
            .api(
                "/api/v1/publish",
                json!({"channel": channel, "event": "tick", "data": {"n": 6},
                    "idempotency_key": format!("{channel}-6")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        expect_offsets(&mut other, 6..=6).await;
        expect_offsets(&mut client, 4..=6).await;
    }
}

/// The stream's keys share the channel's hash tag and carry their TTLs; a
/// stream whose position expired comes back in a new epoch.
#[tokio::test]
async fn stream_keys_expire_and_an_expired_position_starts_a_new_epoch() {
    let redis = RedisServer::start();
    let hub = node(
        |c| {
            single(c, &redis, 10);
            c.channels.namespaces[0].history_ttl_secs = 60;
            c.channels.namespaces[0].history_meta_ttl_secs = 600;
        },
        "a",
    )
    .await;
    let mut client = hub.connect("alice").await;
    let epoch =
        subscribe_with(&mut client, "hist.ttl", json!({})).await["position"]["epoch"].clone();
    publish_numbered(&hub, "hist.ttl", 1, 2).await;
    expect_offsets(&mut client, 1..=2).await;
    let mut conn = redis.client();
    let ttl = |conn: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("TTL").arg(key).query(conn).unwrap()
    };
    let list = ttl(&mut conn, "herald:history:{herald:hist.ttl}");
    let meta = ttl(&mut conn, "herald:meta:{herald:hist.ttl}");
    assert!((1..=60).contains(&list), "list TTL {list}");
    assert!((61..=600).contains(&meta), "meta TTL {meta}");
    // The position expires (as if `history_meta_ttl_secs` passed).
    let _: () = redis::cmd("DEL")
        .arg("herald:meta:{herald:hist.ttl}")
        .query(&mut conn)
        .unwrap();
    let mut late = hub.connect("bob").await;
    let since = json!({"offset": 1, "epoch": epoch});
    let reply = subscribe_with(&mut late, "hist.ttl", json!({ "since": since })).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_ne!(reply["position"]["epoch"], epoch);
    assert_eq!(reply["position"]["offset"], 0);
    let len: i64 = redis::cmd("LLEN")
        .arg("herald:history:{herald:hist.ttl}")
        .query(&mut conn)
        .unwrap();
    assert_eq!(len, 0, "the old epoch's entries are gone with it");
}
