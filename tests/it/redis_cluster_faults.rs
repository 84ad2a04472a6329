//! Redis Cluster faults against a real cluster with replicas: a master
//! killed or hung for 10 s, failover to its replica, a slot migrated to
//! another master. Counts per channel what the API answered and what the
//! subscriber received, as `redis_faults` does.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use herald::config::EngineKind;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{
    helpers::{Client, TestHub, api_request},
    redis_faults::{Received, SLACK, audit},
    redis_server::RedisCluster,
};

/// Reads `client` until the push `{"end": true}` on `channel`, or 30 s of
/// silence (then `ended` is false); counts the pushes `{"n": n}` on
/// `channel` and notes every gap notice.
fn read_channel_until_end(mut client: Client, channel: String) -> JoinHandle<Received> {
    tokio::spawn(async move {
        let mut received = Received::default();
        loop {
            let message = match client.next_message(Duration::from_secs(30)).await {
                Some(Ok(message)) => message,
                None => return received,
                Some(Err(err)) => panic!("reader of {channel} ended early: {err:?}"),
            };
            match message["type"].as_str() {
                Some("gap") => received.gap(&message["channel"]),
                Some("push") if message["channel"] != channel.as_str() => {}
                Some("push") if message["data"]["end"] == true => {
                    received.ended = true;
                    return received;
                }
                Some("push") => received.push(message["data"]["n"].as_u64().unwrap()),
                _ => panic!("unexpected message {message}"),
            }
        }
    })
}

async fn publish_to(hub: &TestHub, channel: &str, data: Value) -> u16 {
    api_request(
        &hub.url("/api/v1/publish"),
        Some(herald::config::DEV_API_KEY),
        json!({"channel": channel, "event": "n", "data": data}),
    )
    .await
    .0
}

async fn ready_body(hub: &TestHub) -> Value {
    match reqwest::get(hub.url("/ready")).await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// A herald node on `cluster`, reconnecting quickly, once it is ready.
async fn cluster_node(cluster: &RedisCluster, id: &str) -> TestHub {
    let urls = cluster.urls();
    let id = id.to_owned();
    let hub = TestHub::with(move |c| {
        c.engine.kind = EngineKind::Redis;
        c.engine.cluster_urls = urls;
        c.engine.reconnect_min_ms = 50;
        c.engine.reconnect_max_ms = 500;
        c.server.node_id = Some(id);
    })
    .await;
    hub.wait_ready().await;
    hub
}

/// How a cluster master fails in [`master_down`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL, then a restart (it rejoins as a replica).
    Crash,
    /// SIGSTOP, then SIGCONT (it learns it was replaced).
    Hang,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_master_leaves_other_shards_undisturbed_and_its_replica_takes_over() {
    master_down(Fault::Crash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_cluster_master_is_detected_and_leaves_other_shards_undisturbed() {
    master_down(Fault::Hang).await;
}

/// One master of a 3-master cluster with replicas fails for 10 s while a
/// node publishes to one channel per master every ~50 ms.
async fn master_down(fault: Fault) {
    let label = format!("cluster {fault:?}");
    let mut cluster = RedisCluster::start_with_replicas();
    // Publisher and subscribers on one node: a 200 then means this node's
    // reader of the channel was subscribed. (A subscriber on another node
    // whose reader is still reconnecting misses it and gets a gap notice.)
    let reader_node = cluster_node(&cluster, "sub").await;
    let publisher = &reader_node;
    let config = &reader_node.state.config.engine;
    let backoff_cap = Duration::from_millis(config.reconnect_max_ms);
    let attempt_bound = config.connect_timeout() + config.command_timeout() * 2;

    // One channel per master; the first one's master will die.
    let mut channels: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let channel = format!("orders.{i}");
        let master = cluster.master_of(cluster.slot_of(&format!("herald:{channel}")));
        if !channels.iter().any(|(_, m)| *m == master) {
            channels.push((channel, master));
        }
        if channels.len() == 3 {
            break;
        }
    }
    let (dead_channel, victim) = channels[0].clone();
    let dead_slot = cluster.slot_of(&format!("herald:{dead_channel}"));
    let mut readers = Vec::new();
    for (i, (channel, _)) in channels.iter().enumerate() {
        let mut client = reader_node.connect(&format!("u{i}")).await;
        client.subscribe(channel).await;
        readers.push(read_channel_until_end(client, channel.clone()));
    }
    let mut answers: Vec<BTreeMap<u64, u16>> = vec![BTreeMap::new(); channels.len()];
    // When each publication to the dead master's channel was sent and
    // answered: printed for any that is lost.
    let mut timeline: BTreeMap<u64, (Instant, Instant)> = BTreeMap::new();
    let mut n = 0;
    let publish_round =
        async |n: u64,
               answers: &mut Vec<BTreeMap<u64, u16>>,
               timeline: &mut BTreeMap<u64, (Instant, Instant)>| {
            for (i, (channel, _)) in channels.iter().enumerate() {
                let sent = Instant::now();
                let status = publish_to(publisher, channel, json!({ "n": n })).await;
                answers[i].insert(n, status);
                if i == 0 {
                    timeline.insert(n, (sent, Instant::now()));
                }
            }
        };
    // During the outage publishes run concurrently, so that one waiting out
    // its deadline on the failed master does not slow the others down.
    let url = publisher.url("/api/v1/publish");
    type Answer = (usize, u64, u16, Instant, Instant);
    let spawn_round = |n: u64| -> Vec<JoinHandle<Answer>> {
        channels
            .iter()
            .enumerate()
            .map(|(i, (channel, _))| {
                let (url, channel) = (url.clone(), channel.clone());
                tokio::spawn(async move {
                    let body = json!({"channel": channel, "event": "n", "data": {"n": n}});
                    let sent = Instant::now();
                    let status = api_request(&url, Some(herald::config::DEV_API_KEY), body)
                        .await
                        .0;
                    (i, n, status, sent, Instant::now())
                })
            })
            .collect()
    };
    let mut in_flight = Vec::new();
    for _ in 0..5 {
        publish_round(n, &mut answers, &mut timeline).await;
        n += 1;
    }

    match fault {
        Fault::Crash => cluster.node_mut(victim).kill(),
        Fault::Hang => cluster.node_mut(victim).pause(),
    }
    let killed = Instant::now();
    let killed_n = n;
    let mut degraded_at = None;
    let mut promoted_at = None;
    let mut recovered_at = None;
    while killed.elapsed() < Duration::from_secs(10) {
        in_flight.extend(spawn_round(n));
        n += 1;
        let ready = ready_body(&reader_node).await;
        if ready["status"] == "degraded" && degraded_at.is_none() {
            degraded_at = Some(killed.elapsed());
            eprintln!("[{label}] /ready while the master is down: {ready}");
        }
        if promoted_at.is_none() && cluster.master_of(dead_slot) != victim {
            promoted_at = Some((killed.elapsed(), n));
        }
        if promoted_at.is_some() && recovered_at.is_none() && ready["status"] == "ready" {
            recovered_at = Some((killed.elapsed(), n));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for publish in in_flight {
        let (i, n, status, sent, answered) = publish.await.unwrap();
        answers[i].insert(n, status);
        if i == 0 {
            timeline.insert(n, (sent, answered));
        }
    }
    match fault {
        Fault::Crash => cluster.node_mut(victim).restart(),
        Fault::Hang => cluster.node_mut(victim).resume(),
    }
    let restarted = Instant::now();
    let restarted_n = n;
    // A paused master that resumes believes it is still master until it
    // hears of the failover, and may accept a publish in that moment (to no
    // subscriber): Redis Cluster's own window, not herald's. Publish again
    // only once it has rejoined as a replica.
    let mut rejoined = false;
    while restarted.elapsed() < Duration::from_secs(20) {
        let role: redis::RedisResult<Vec<redis::Value>> =
            redis::cmd("ROLE").query(&mut cluster.node_mut(victim).client());
        if let Ok(role) = role
            && matches!(role.first(), Some(redis::Value::BulkString(r)) if r.as_slice() == b"slave")
        {
            rejoined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rejoined, "the old master never rejoined as a replica");
    reader_node.wait_ready().await;
    while ready_body(&reader_node).await["status"] != "ready" {
        assert!(
            restarted.elapsed() < attempt_bound + SLACK,
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        publish_round(n, &mut answers, &mut timeline).await;
        n += 1;
    }
    for (channel, _) in &channels {
        publisher
            .publish(channel, "end", json!({"end": true}))
            .await;
    }
    let mut received = Vec::new();
    for reader in readers {
        received.push(reader.await.unwrap());
    }

    let degraded_at = degraded_at.expect("/ready never said which slots were down");
    let (promoted_at, promoted_n) = promoted_at.expect("the replica was not promoted within 10 s");
    let (recovered_at, recovered_n) =
        recovered_at.expect("the promoted replica was not used within 10 s");
    eprintln!(
        "[{label}] master down: /ready degraded after {degraded_at:?}; replica promoted after \
         {promoted_at:?}; its channels resumed after {recovered_at:?} ({:?} after the promotion; \
         backoff cap {backoff_cap:?}); publication numbers: killed at {killed_n}, promoted at \
         {promoted_n}, resumed at {recovered_n}, restarted at {restarted_n}",
        recovered_at - promoted_at
    );
    if fault == Fault::Hang {
        let bound = config.detection_bound();
        assert!(
            degraded_at <= bound + SLACK,
            "hang detected after {degraded_at:?}"
        );
    }
    let since_kill = |at: Instant| at.saturating_duration_since(killed);
    for (i, (channel, _)) in channels.iter().enumerate() {
        let last = received[i].arrived.iter().next_back();
        assert!(
            received[i].ended,
            "[{label}] the end marker of {channel} never arrived; the last publication that \
             did: {:?} after the fault; gap notices at {:?}; answers after it: {:?}",
            last.map(|(n, at)| (*n, since_kill(*at))),
            received[i]
                .gaps_at
                .iter()
                .map(|at| since_kill(*at))
                .collect::<Vec<_>>(),
            answers[i]
                .range(last.map_or(0, |(n, _)| n + 1)..)
                .collect::<Vec<_>>(),
        );
    }
    for (n, (sent, answered)) in &timeline {
        if answers[0][n] == 200 && !received[0].counts.contains_key(n) {
            eprintln!(
                "[{label}] lost {n}: sent {:?} and answered {:?} after the fault; gap notices \
                 at {:?}; arrivals around it: {:?}",
                since_kill(*sent),
                since_kill(*answered),
                received[0]
                    .gaps_at
                    .iter()
                    .map(|at| since_kill(*at))
                    .collect::<Vec<_>>(),
                received[0]
                    .arrived
                    .range(n.saturating_sub(2)..n + 3)
                    .map(|(m, at)| (*m, since_kill(*at)))
                    .collect::<Vec<_>>(),
            );
        }
    }
    for (i, (channel, _)) in channels.iter().enumerate() {
        audit(&format!("{label} {channel}"), &answers[i], &received[i]);
        if i == 0 {
            assert!(received[i].gaps.contains(channel), "{:?}", received[i].gaps);
        } else {
            // Healthy shards: every publish accepted, nothing missed.
            let refused: Vec<(u64, u16)> = answers[i]
                .iter()
                .filter(|(_, s)| **s != 200)
                .map(|(n, s)| (*n, *s))
                .collect();
            assert!(
                refused.is_empty(),
                "publishes to {channel} refused during the outage (n, status): {refused:?}"
            );
            assert!(
                !received[i].gaps.contains(channel),
                "{:?}",
                received[i].gaps
            );
        }
    }
    assert!(
        recovered_at - promoted_at <= backoff_cap + attempt_bound + SLACK,
        "resumed {:?} after the promotion",
        recovered_at - promoted_at
    );
}

/// A manual failover (`CLUSTER FAILOVER`, routine maintenance): the old
/// master becomes a replica and drops its shard subscriptions; herald's
/// reader follows the slots to the new master and sends a gap notice. Every
/// publish answered 200 then arrives once, also those the command
/// connection still sends to the old master (a replica passes a shard
/// message on to its master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_manual_failover_every_accepted_publish_arrives() {
    let cluster = RedisCluster::start_with_replicas();
    let hub = cluster_node(&cluster, "herald-1").await;
    let channel = "orders.failover";
    let key = format!("herald:{channel}");
    let old = cluster.master_of(cluster.slot_of(&key));
    let role = |port: u16| -> String {
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query(&mut cluster.node(port).client())
            .unwrap();
        match role.first() {
            Some(redis::Value::BulkString(r)) => String::from_utf8_lossy(r).into_owned(),
            other => panic!("bad ROLE reply {other:?}"),
        }
    };
    let replica = cluster
        .nodes
        .iter()
        .map(|n| n.port)
        .find(|port| {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut cluster.node(*port).client())
                .unwrap();
            info.contains(&format!("master_port:{old}\r\n"))
        })
        .expect("the master has no replica");
    let mut client = hub.connect("watcher").await;
    client.subscribe(channel).await;
    let reader = read_channel_until_end(client, channel.to_owned());
    let mut answers = BTreeMap::new();
    answers.insert(0, publish_to(&hub, channel, json!({"n": 0})).await);
    assert_eq!(answers[&0], 200);

    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query(&mut cluster.node(replica).client())
        .unwrap();
    let started = Instant::now();
    while role(replica) != "master" || role(old) != "slave" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the manual failover did not complete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old master dropped the subscription as it became a replica; the
    // reader follows its slots to the new master. (Subscribed again at the
    // replica, it would get twice every message published there.)
    cluster
        .wait_shard_subscriber(replica, &key, Duration::from_secs(30))
        .await;
    hub.wait_ready().await;
    let (mut n, mut accepted) = (1, 0);
    while accepted < 10 {
        let status = publish_to(&hub, channel, json!({ "n": n })).await;
        answers.insert(n, status);
        n += 1;
        if status == 200 {
            accepted += 1;
        } else {
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "publishing never came back: {answers:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    hub.publish(channel, "end", json!({"end": true})).await;
    let received = reader.await.unwrap();
    assert!(received.ended, "the end marker never arrived");
    audit("manual failover", &answers, &received);
    assert!(
        received.gaps.contains(&channel.to_owned()),
        "{:?}",
        received.gaps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_cluster_slot_is_followed_with_a_gap_notice() {
    let cluster = RedisCluster::start();
    let hub = cluster_node(&cluster, "herald-1").await;
    let channel = "moving.1";
    let key = format!("herald:{channel}");
    let slot = cluster.slot_of(&key);
    let from = cluster.master_of(slot);
    let to = cluster
        .slots()
        .into_iter()
        .map(|(_, _, port)| port)
        .find(|port| *port != from)
        .unwrap();
    let mut client = hub.connect("mover").await;
    client.subscribe(channel).await;
    assert_eq!(publish_to(&hub, channel, json!({"n": 0})).await, 200);
    assert_eq!(client.recv_push().await["data"]["n"], 0);

    let moved = Instant::now();
    cluster.migrate_slot(slot, from, to);
    // The old owner drops the subscription; herald subscribes at the new
    // owner through the reader of that master and says a gap may exist.
    loop {
        let message = client.recv().await;
        if message["type"] == "gap" && message["channel"] == channel {
            break;
        }
    }
    eprintln!(
        "[migration] slot {slot} moved {from} -> {to}: gap notice after {:?}",
        moved.elapsed()
    );
    assert_eq!(cluster.master_of(slot), to);
    // Subscribed at the new owner (a gap notice from an unrelated reconnect
    // may come first, so wait for it, bounded only to catch a hang).
    cluster
        .wait_shard_subscriber(to, &key, Duration::from_secs(20))
        .await;
    assert_eq!(publish_to(&hub, channel, json!({"n": 1})).await, 200);
    // The next push, past the migration's own gap notice if it comes late.
    let push = loop {
        let message = client.recv().await;
        if message["type"] != "gap" {
            break message;
        }
    };
    assert_eq!(
        (
            push["type"].as_str(),
            push["channel"].as_str(),
            &push["data"]["n"]
        ),
        (Some("push"), Some(channel), &json!(1))
    );
    client.expect_silence(Duration::from_millis(200)).await;

    // Keyed publishing works on a cluster too: the key shares the channel's
    // slot, so one script checks it and SPUBLISHes.
    let body =
        json!({"channel": channel, "event": "n", "data": {"n": 2}, "idempotency_key": "c-1"});
    let (first, _) = hub.api("/api/v1/publish", body.clone()).await;
    let (again, _) = hub.api("/api/v1/publish", body).await;
    assert_eq!((first, again), (200, 200));
    assert_eq!(client.recv_push().await["data"]["n"], 2);
    client.expect_silence(Duration::from_millis(200)).await;
}
