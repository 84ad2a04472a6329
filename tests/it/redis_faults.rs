//! Redis faults against real servers: a hung Redis (SIGSTOP), a slow one
//! (`DEBUG SLEEP`), a restart under the session store, and retried
//! publishes with idempotency keys (cluster faults: `redis_cluster_faults`). Every test counts, per publication,
//! what the API answered and how often the subscriber received it, and
//! asserts none lost (of those answered 200) and none duplicated.
//!
//! Timing is never part of correctness: waits are bounded only to catch
//! hangs; detection is asserted against the documented bound with slack.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use herald::config::{Config, EngineKind};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{
    helpers::{Client, TestHub, WAIT, api_request},
    redis_server::RedisServer,
};

/// Slack over a documented bound for scheduling on a loaded test machine.
pub(crate) const SLACK: Duration = Duration::from_secs(2);

pub(crate) async fn redis_node(
    redis: &RedisServer,
    id: &str,
    edit: impl FnOnce(&mut Config),
) -> TestHub {
    let url = redis.url();
    let hub = TestHub::with(|c| {
        c.engine.kind = EngineKind::Redis;
        c.engine.url = url;
        c.engine.reconnect_min_ms = 50;
        c.engine.reconnect_max_ms = 500;
        c.server.node_id = Some(id.into());
        edit(c);
    })
    .await;
    hub.wait_ready().await;
    hub
}

async fn ready_status(hub: &TestHub) -> u16 {
    reqwest::get(hub.url("/ready"))
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Polls `/ready` until it answers `status`; returns how long that took.
async fn wait_ready_status(hub: &TestHub, status: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    while ready_status(hub).await != status {
        assert!(
            started.elapsed() < limit,
            "/ready did not answer {status} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Waits until the node's stats say its engine is disconnected.
async fn wait_engine_down(hub: &TestHub, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (_, stats) = hub.get("/api/v1/stats").await;
        if stats["node"]["engine_connected"] == false {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the engine was not reported down within {limit:?}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes `{"n": n}` to `feed`; returns the HTTP status and body.
async fn publish_n(hub: &TestHub, n: u64, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(hub.url("/api/v1/publish"))
        .bearer_auth(herald::config::DEV_API_KEY)
        .json(&json!({"channel": "feed", "event": "n", "data": {"n": n}}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// What a subscriber of `feed` received: deliveries per `n`, gap notices.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) counts: BTreeMap<u64, usize>,
    pub(crate) gaps: Vec<String>,
    /// When each `n` first arrived, and each gap notice (for diagnostics).
    pub(crate) arrived: BTreeMap<u64, Instant>,
    pub(crate) gaps_at: Vec<Instant>,
    /// The end marker arrived.
    pub(crate) ended: bool,
}

impl Received {
    pub(crate) fn gap(&mut self, channel: &Value) {
        self.gaps
            .push(channel.as_str().unwrap_or_default().to_owned());
        self.gaps_at.push(Instant::now());
    }

    pub(crate) fn push(&mut self, n: u64) {
        *self.counts.entry(n).or_default() += 1;
        self.arrived.entry(n).or_insert_with(Instant::now);
    }
}

/// Reads `client` until the push `{"end": true}` on `feed`.
pub(crate) fn read_until_end(mut client: Client) -> JoinHandle<Received> {
    tokio::spawn(async move {
        let mut received = Received::default();
        loop {
            let message = match client.next_message(Duration::from_secs(60)).await {
                Some(Ok(message)) => message,
                other => panic!("reader ended early: {other:?}"),
            };
            match message["type"].as_str() {
                Some("gap") => received.gap(&message["channel"]),
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

/// Lost = answered 200 and never received; duplicated = received twice or
/// more; also fails if a publication refused before sending (503) arrived.
pub(crate) fn audit(label: &str, answers: &BTreeMap<u64, u16>, received: &Received) {
    let count = |n: &u64| received.counts.get(n).copied().unwrap_or(0);
    let by_status = |status: u16| answers.values().filter(|s| **s == status).count();
    let lost_ns: Vec<u64> = answers
        .iter()
        .filter(|(n, s)| **s == 200 && count(n) == 0)
        .map(|(n, _)| *n)
        .collect();
    let lost = lost_ns.len();
    let duplicated = received.counts.values().filter(|c| **c > 1).count();
    let refused_but_delivered = answers
        .iter()
        .filter(|(n, s)| **s == 503 && count(n) > 0)
        .count();
    let unknown_delivered = answers
        .iter()
        .filter(|(n, s)| **s == 504 && count(n) > 0)
        .count();
    eprintln!(
        "[{label}] published {}: 200={} 503={} 504={} (504 delivered once: {unknown_delivered}); \
         lost={lost} {lost_ns:?} duplicated={duplicated} refused-but-delivered={refused_but_delivered}; gaps={:?}",
        answers.len(),
        by_status(200),
        by_status(503),
        by_status(504),
        received.gaps,
    );
    assert_eq!(
        (lost, duplicated, refused_but_delivered),
        (0, 0, 0),
        "[{label}] lost, duplicated, refused-but-delivered"
    );
    let unexpected: Vec<_> = answers
        .iter()
        .filter(|(_, s)| ![200, 503, 504].contains(*s))
        .collect();
    assert!(unexpected.is_empty(), "[{label}] statuses: {unexpected:?}");
}

async fn end(hub: &TestHub, reader: JoinHandle<Received>) -> Received {
    hub.publish("feed", "end", json!({"end": true})).await;
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the end marker never arrived")
        .unwrap()
}

#[tokio::test]
async fn hung_redis_is_detected_within_the_bound_and_nothing_is_delivered_twice() {
    let redis = RedisServer::start();
    let publisher = redis_node(&redis, "pub", |_| {}).await;
    let reader_node = redis_node(&redis, "sub", |_| {}).await;
    let bound = publisher.state.config.engine.detection_bound();
    let mut watcher = reader_node.connect("watcher").await;
    watcher.subscribe("feed").await;
    let mut probe = reader_node.connect("probe").await;
    let reader = read_until_end(watcher);

    // Sees the node's dispatch of `feed` before the hang.
    let mut settled = reader_node.connect("settled").await;
    settled.subscribe("feed").await;

    let mut answers = BTreeMap::new();
    let mut n = 0;
    for _ in 0..10 {
        answers.insert(n, publish_n(&publisher, n, None).await.0);
        n += 1;
    }
    // Redis answers the publisher before it writes to the subscribers: wait
    // until the reader node has dispatched the last one, so that the pause
    // cannot fall between the two (that loss would be the test's, not the
    // fault's).
    while settled.recv_push().await["data"]["n"] != 9 {}
    drop(settled);

    redis.pause();
    let stopped = Instant::now();
    // Publish while Redis hangs: before detection these are sent and time
    // out (504), after it they are refused before sending (503).
    let publishing = {
        let url = publisher.url("/api/v1/publish");
        tokio::spawn(async move {
            let mut answers = BTreeMap::new();
            let mut n = 1000;
            while stopped.elapsed() < bound + SLACK * 2 {
                let (status, _) = api_request(
                    &url,
                    Some(herald::config::DEV_API_KEY),
                    json!({"channel": "feed", "event": "n", "data": {"n": n}}),
                )
                .await;
                answers.insert(n, status);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        })
    };
    // The engine's own verdict, not only /ready: /ready may turn 503 a
    // little earlier because the session store's health check noticed first.
    for node in [&publisher, &reader_node] {
        wait_engine_down(node, bound + SLACK).await;
        assert_eq!(ready_status(node).await, 503);
    }
    let detected = stopped.elapsed();
    eprintln!("[sigstop] both nodes report the engine down after {detected:?} (bound {bound:?})");
    // What clients see while Redis is down: error 112 and close 4000.
    let asked = Instant::now();
    let reply = probe
        .request(json!({"type": "subscribe", "id": 9, "channel": "other"}))
        .await;
    assert_eq!(reply["code"], 112, "{reply}");
    eprintln!(
        "[sigstop] subscribe refused with 112 in {:?}",
        asked.elapsed()
    );
    let mut newcomer = reader_node
        .connect_raw(&format!("/ws?token={}", reader_node.token("late")), &[])
        .await;
    assert_eq!(newcomer.expect_close().await.0, 4000);

    answers.extend(publishing.await.unwrap());
    redis.resume();
    let resumed = Instant::now();
    for node in [&publisher, &reader_node] {
        node.wait_ready().await;
    }
    eprintln!(
        "[sigstop] ready again {:?} after SIGCONT",
        resumed.elapsed()
    );
    for _ in 0..10 {
        answers.insert(n, publish_n(&publisher, n, None).await.0);
        n += 1;
    }
    let received = end(&publisher, reader).await;
    audit("sigstop", &answers, &received);
    let mut gaps = received.gaps;
    gaps.sort();
    assert_eq!(gaps, ["broadcast", "feed", "user:watcher"]);
}

#[tokio::test]
async fn slow_redis_never_delivers_twice_and_a_longer_timeout_succeeds_once() {
    let redis = RedisServer::start_with_debug();
    let impatient = redis_node(&redis, "impatient", |c| c.engine.command_timeout_ms = 500).await;
    let patient = redis_node(&redis, "patient", |c| c.engine.command_timeout_ms = 8000).await;
    let mut watcher = patient.connect("watcher").await;
    watcher.subscribe("feed").await;
    let reader = read_until_end(watcher);
    let mut answers = BTreeMap::new();

    // A 0.8 s stall against a 500 ms deadline: the publish is answered
    // "outcome unknown" and herald does not send it again. (A publish that
    // reached Redis before the sleep did is answered 200; try again then.)
    let mut unknown = None;
    for n in 0..5 {
        let sleeping = redis.debug_sleep(0.8);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let (status, body) = publish_n(&impatient, n, None).await;
        answers.insert(n, status);
        sleeping.join().unwrap();
        if status == 504 {
            assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
            unknown = Some(started.elapsed());
            break;
        }
    }
    let unknown = unknown.expect("no publish met the stall in 5 tries");
    eprintln!("[debug-sleep] 500 ms deadline: 504 outcome_unknown after {unknown:?}");

    // The same stall against an 8 s deadline: answered 200, delivered once.
    let sleeping = redis.debug_sleep(0.8);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (status, body) = publish_n(&patient, 100, None).await;
    sleeping.join().unwrap();
    assert_eq!(status, 200, "{body}");
    eprintln!(
        "[debug-sleep] 8 s deadline: 200 after {:?}",
        started.elapsed()
    );
    answers.insert(100, status);

    let received = end(&patient, reader).await;
    audit("debug-sleep", &answers, &received);
    assert_eq!(received.counts.get(&100), Some(&1));
    assert!(received.gaps.is_empty(), "{:?}", received.gaps);
}

async fn create_session(hub: &TestHub, user: &str) -> (u16, Value) {
    hub.api("/api/v1/sessions", json!({ "user": user })).await
}

#[tokio::test]
async fn the_first_session_call_after_a_restart_succeeds_and_an_outage_is_no_revocation() {
    let mut redis = RedisServer::start();
    // No background health checks: the calls below are the store's first.
    let hub = redis_node(&redis, "a", |c| c.engine.ping_interval_ms = 600_000).await;
    let (status, body) = create_session(&hub, "alice").await;
    assert_eq!(status, 201, "{body}");

    redis.restart();
    let started = Instant::now();
    let (status, session) = create_session(&hub, "bob").await;
    assert_eq!(status, 201, "first call after the restart: {session}");
    eprintln!(
        "[session-restart] first session call after restart: {status} in {:?}",
        started.elapsed()
    );
    let access = session["access_token"].as_str().unwrap();
    let mut client = hub.connect_raw(&format!("/ws?token={access}"), &[]).await;
    assert_eq!(client.recv().await["type"], "welcome");
    let (status, refreshed) = api_request(
        &hub.url("/api/v1/sessions/refresh"),
        None,
        json!({ "refresh_token": session["refresh_token"] }),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");

    // Redis gone: the store says so, distinctly; nothing is called revoked.
    redis.kill();
    let reply = client
        .request(json!({"type": "refresh", "id": 1, "token": refreshed["access_token"]}))
        .await;
    assert_eq!(reply["code"], 116, "{reply}");
    let (status, body) = create_session(&hub, "carol").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("session_store_unavailable")),
        "{body}"
    );
    wait_ready_status(&hub, 503, WAIT).await;
    // Back again: the first call works, with no failed one before it.
    redis.restart();
    let reply = client
        .request(json!({"type": "refresh", "id": 2, "token": refreshed["access_token"]}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 2}));
    hub.wait_ready().await;
}

/// POSTs `body` to `path` with an `Idempotency-Key` header; returns the
/// status, the `Idempotent-Replayed` header and the body.
async fn keyed_post(hub: &TestHub, path: &str, key: &str, body: Value) -> (u16, bool, Value) {
    let response = reqwest::Client::new()
        .post(hub.url(path))
        .bearer_auth(herald::config::DEV_API_KEY)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_publish_retried_with_its_key_on_another_node_is_delivered_once() {
    let redis = RedisServer::start_with_debug();
    let a = redis_node(&redis, "a", |c| c.engine.command_timeout_ms = 500).await;
    let b = redis_node(&redis, "b", |_| {}).await;
    let mut watcher = b.connect("watcher").await;
    watcher.subscribe("feed").await;
    let reader = read_until_end(watcher);
    let mut answers = BTreeMap::new();

    // Answered on A, retried on B: the same answer, flagged as a replay.
    let one = json!({"channel": "feed", "event": "n", "data": {"n": 1}});
    let first = keyed_post(&a, "/api/v1/publish", "order-1", one.clone()).await;
    let retry = keyed_post(&b, "/api/v1/publish", "order-1", one).await;
    assert_eq!((first.0, first.1), (200, false), "{first:?}");
    assert_eq!((retry.0, retry.1, &retry.2), (200, true, &first.2));
    answers.insert(1, 200);

    // The key in the body works the same, and a batch is keyed as a whole.
    let body =
        json!({"channel": "feed", "event": "n", "data": {"n": 2}, "idempotency_key": "order-2"});
    let (status, _) = a.api("/api/v1/publish", body.clone()).await;
    let (again, replay) = b.api("/api/v1/publish", body).await;
    assert_eq!((status, again), (200, 200), "{replay}");
    answers.insert(2, 200);
    let batch = json!({"publications": [
        {"channel": "feed", "event": "n", "data": {"n": 3}},
        {"channel": "feed", "event": "n", "data": {"n": 4}},
    ]});
    let first = keyed_post(&a, "/api/v1/publish/batch", "batch-1", batch.clone()).await;
    let retry = keyed_post(&b, "/api/v1/publish/batch", "batch-1", batch).await;
    assert_eq!((first.0, retry.0, retry.1), (200, 200, true));
    assert_eq!(first.2, retry.2);
    answers.insert(3, 200);
    answers.insert(4, 200);

    // Unknown outcome on A (Redis stalls past A's deadline), retried on B:
    // delivered once, whichever of the two Redis ran first.
    let mut unknown = false;
    for n in 50..55 {
        let key = format!("order-{n}");
        let body = json!({"channel": "feed", "event": "n", "data": {"n": n}});
        let sleeping = redis.debug_sleep(0.8);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first = keyed_post(&a, "/api/v1/publish", &key, body.clone()).await;
        sleeping.join().unwrap();
        let retry = keyed_post(&b, "/api/v1/publish", &key, body).await;
        assert_eq!(retry.0, 200, "{retry:?}");
        answers.insert(n, retry.0);
        if first.0 == 504 {
            assert_eq!(first.2["error"]["code"], "outcome_unknown");
            eprintln!(
                "[idempotency] n={n}: 504 on A, retry on B answered 200 (replayed: {})",
                retry.1
            );
            unknown = true;
            break;
        }
        // A answered before the stall: B's retry was a replay.
        assert!(retry.1, "{retry:?}");
    }
    assert!(unknown, "no publish met the stall in 5 tries");
    let received = end(&b, reader).await;
    audit("idempotency", &answers, &received);
}
