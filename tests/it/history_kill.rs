//! A node killed with SIGKILL under a publication stream: real herald
//! processes (the debug binary) on one real redis-server, 20 clients on node
//! A, a numbered stream published through node B's API. A dies mid-stream;
//! every client resubscribes on B with its last `{offset, epoch}`, must be
//! `recovered`, and what it saw before and after the kill together must be
//! every publication exactly once, in order. The stream has a fixed length
//! and every wait is a deadline that only catches hangs.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use herald::{
    auth::{AuthConfig, TokenIssuer},
    config::DEV_API_KEY,
};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    helpers::{Client, HeraldProcess, WAIT},
    redis_server::RedisServer,
};

const CHANNEL: &str = "hist.kill";
const CLIENTS: usize = 20;
/// Publications in the stream (offsets 1..=TOTAL on a fresh channel).
const TOTAL: u64 = 600;
/// A is killed once every client has seen this many publications…
const KILL_AFTER_SEEN: u64 = 100;
/// …and the publisher waits for the kill after this one, so the rest is
/// published while A is dead and its clients reconnect.
const HOLD_AT: u64 = 300;
/// About 200 publications per second.
const PUBLISH_EVERY: Duration = Duration::from_millis(5);
/// Bounds a whole phase; only a hang reaches it.
const PHASE: Duration = Duration::from_secs(60);

/// One herald process on `127.0.0.1:0` with the Redis engine and history on `hist.*`.
struct Node {
    herald: HeraldProcess,
}

impl Node {
    async fn spawn(id: &str, redis: &RedisServer) -> Self {
        let mut command = HeraldProcess::command();
        command
            .env("RUST_LOG", "info")
            .env("HERALD_ENGINE__KIND", "redis")
            .env("HERALD_ENGINE__URL", redis.url())
            .env("HERALD_SERVER__NODE_ID", format!("\"{id}\""))
            .env(
                "HERALD_CHANNELS__NAMESPACES",
                r#"[{pattern="hist.*", history_size=1000, recover_max=1000}]"#,
            );
        let node = Self {
            herald: HeraldProcess::start(command).await,
        };
        node.wait_ready(id).await;
        node
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.herald.addr)
    }

    async fn wait_ready(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        loop {
            let ready = reqwest::get(self.url("/ready")).await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} not ready in time:\n{}",
                self.herald.logs.lock().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connect(&self, user: &str) -> Client {
        let token = TokenIssuer::new(&AuthConfig::default())
            .unwrap()
            .mint(user, 600)
            .unwrap();
        let url = format!("ws://{}/ws?token={token}", self.herald.addr);
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        let mut client = Client::from_stream(ws);
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client
    }
}

async fn subscribe(client: &mut Client, since: Option<Value>) -> Value {
    let mut request = json!({"type": "subscribe", "id": 1, "channel": CHANNEL});
    if let Some(since) = since {
        request["since"] = since;
    }
    let reply = client.request(request).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply
}

/// Checks one push: the offset is the next one and the data carries it.
fn check_push(who: &str, message: &Value, seen: &mut Vec<u64>) {
    assert_eq!(message["type"], "push", "{who}: {message}");
    let expected = seen.last().map_or(1, |last| last + 1);
    assert_eq!(message["offset"], expected, "{who}: {message}");
    assert_eq!(message["data"]["n"], expected, "{who}: {message}");
    seen.push(expected);
}

/// One client: on A until A dies, then on B from its last position until
/// the last publication. Returns every `n` it received, in arrival order.
async fn client_life(
    index: usize,
    mut client: Client,
    epoch: Value,
    progress: Arc<AtomicU64>,
    b: Arc<Node>,
) -> Vec<u64> {
    let who = format!("client {index}");
    let mut seen = Vec::new();
    // Before the kill: pushes until the socket dies (`progress` counts them).
    loop {
        match client.next_message(PHASE).await {
            Some(Ok(message)) => {
                check_push(&who, &message, &mut seen);
                progress.store(seen.len() as u64, Ordering::SeqCst);
            }
            Some(Err((code, reason))) => {
                assert_eq!(
                    code, 1006,
                    "{who}: closed with {code} {reason}, not by the kill"
                );
                break;
            }
            None => panic!("{who}: node A neither delivered nor died within {PHASE:?}"),
        }
    }
    let before = seen.len() as u64;
    // After: node B, from the last position seen.
    let mut client = b.connect(&format!("user{index}")).await;
    let since = json!({"offset": before, "epoch": epoch});
    let reply = subscribe(&mut client, Some(since)).await;
    assert_eq!(reply["recovered"], true, "{who} (since {before}): {reply}");
    assert_eq!(reply["position"]["epoch"], epoch, "{who}: {reply}");
    let position = reply["position"]["offset"].as_u64().unwrap();
    assert!(position >= before, "{who}: position {position} < {before}");
    while seen.last().copied().unwrap_or(0) < TOTAL {
        match client.next_message(PHASE).await {
            Some(Ok(message)) => check_push(&who, &message, &mut seen),
            Some(Err(close)) => panic!("{who}: node B closed {close:?} at {:?}", seen.last()),
            None => panic!("{who}: stuck at {:?} on node B", seen.last()),
        }
    }
    // Nothing after the last one (no repeat of it either).
    client.expect_silence(Duration::from_millis(200)).await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_node_killed_mid_stream_recover_everything_on_another() {
    let redis = RedisServer::start();
    let mut a = Node::spawn("a", &redis).await;
    let b = Arc::new(Node::spawn("b", &redis).await);

    // Every client subscribed on A before the first publication.
    let mut clients = Vec::new();
    let mut epoch = Value::Null;
    for index in 0..CLIENTS {
        let mut client = a.connect(&format!("user{index}")).await;
        let reply = subscribe(&mut client, None).await;
        assert_eq!(reply["position"]["offset"], 0, "{reply}");
        if index > 0 {
            assert_eq!(reply["position"]["epoch"], epoch, "{reply}");
        }
        epoch = reply["position"]["epoch"].clone();
        clients.push(client);
    }
    let counts: Vec<_> = (0..CLIENTS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| {
            tokio::spawn(client_life(
                index,
                client,
                epoch.clone(),
                Arc::clone(&counts[index]),
                Arc::clone(&b),
            ))
        })
        .collect();

    // The publisher: 1..=TOTAL through B, holding after HOLD_AT until A is dead.
    let (killed_tx, mut killed_rx) = watch::channel(false);
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let url = b.url("/api/v1/publish");
        let published = Arc::clone(&published);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(PUBLISH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 1..=TOTAL {
                if n == HOLD_AT + 1 {
                    tokio::time::timeout(PHASE, killed_rx.wait_for(|k| *k))
                        .await
                        .expect("node A was not killed in time")
                        .unwrap();
                }
                tick.tick().await;
                let response = http
                    .post(&url)
                    .bearer_auth(DEV_API_KEY)
                    .json(&json!({"channel": CHANNEL, "event": "tick", "data": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                assert_eq!(status, 200, "publish {n}: {body}");
                published.store(n, Ordering::SeqCst);
            }
        })
    };

    // Kill A once every client is well into the stream.
    let deadline = tokio::time::Instant::now() + PHASE;
    loop {
        let slowest = counts.iter().map(|c| c.load(Ordering::SeqCst)).min();
        if slowest >= Some(KILL_AFTER_SEEN) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "clients on A stuck at {slowest:?} (published {})",
            published.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.herald.child.kill().await.unwrap();
    let at_kill = published.load(Ordering::SeqCst);
    killed_tx.send(true).unwrap();

    tokio::time::timeout(PHASE, publisher)
        .await
        .expect("publisher hung")
        .unwrap();
    let mut cut_points = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        let seen = tokio::time::timeout(PHASE, task)
            .await
            .unwrap_or_else(|_| panic!("client {index} hung"))
            .unwrap();
        assert_eq!(
            seen,
            (1..=TOTAL).collect::<Vec<_>>(),
            "client {index}: every publication once, in order"
        );
        cut_points.push(counts[index].load(Ordering::SeqCst));
    }
    eprintln!(
        "kill -9 under a stream: killed at {at_kill} published, clients cut at {cut_points:?}; \
         all {CLIENTS} recovered 1..={TOTAL}"
    );
}
