//! Direct writes (the fan-out writing into idle sockets from its own thread)
//! racing everything else that writes to the same socket: the connection's
//! own replies, its heartbeat pings, frames the socket takes only partly,
//! large fan-outs spread over the runtime's workers, and the close.
//!
//! Every check is on content (order, completeness, integrity of each
//! frame), never on timing; the races are provoked by volume.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, TestHub, eventually};

const PUBLISHERS: u64 = 2;
const BATCHES: u64 = 8;
const PER_BATCH: u64 = 250;

/// A pad whose length depends on `n`: mostly small frames, some over the
/// 16-bit length, some of several socket buffers' worth in a row, so that
/// writes are often taken only partly.
fn pad(n: u64) -> String {
    let len = match n % 50 {
        0 => 50_000,
        1..=4 => 20_000,
        _ => (n % 7) as usize * 13,
    };
    "x".repeat(len)
}

async fn hub() -> TestHub {
    TestHub::with(|c| {
        c.heartbeat.interval_ms = 100;
        c.outbox.max_messages = 100_000;
        c.outbox.max_bytes = 512 * 1024 * 1024;
        c.websocket.write_timeout_ms = 60_000;
        c.rate_limits.messages_per_second = 0;
    })
    .await
}

/// Publishes `BATCHES` batches of `PER_BATCH` numbered publications as
/// publisher `p`, through the HTTP API (each batch dispatched in order).
async fn publish(url: String, p: u64) {
    for batch in 0..BATCHES {
        let publications: Vec<_> = (0..PER_BATCH)
            .map(|i| {
                let n = batch * PER_BATCH + i;
                json!({"channel": "race", "event": "e", "data": {"p": p, "n": n, "pad": pad(n)}})
            })
            .collect();
        let (status, body) = crate::helpers::api_request(
            &format!("{url}/api/v1/publish/batch"),
            Some(herald::config::DEV_API_KEY),
            json!({"publications": publications}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Reads until every publisher's last publication arrived, pinging now and
/// then (the replies race the pushes) and pausing now and then (so the
/// socket fills and writes are taken only partly). Asserts order and
/// integrity of every push, and that every ping was answered.
async fn read_all(mut client: Client, reader: usize) {
    let mut next = vec![0u64; PUBLISHERS as usize];
    let (mut pings, mut pongs) = (0u64, 0u64);
    let total = PUBLISHERS * BATCHES * PER_BATCH;
    let mut received = 0;
    while received < total {
        let message = client.recv().await;
        match message["type"].as_str() {
            Some("push") => {
                let data = &message["data"];
                let p = data["p"].as_u64().unwrap();
                let n = data["n"].as_u64().unwrap();
                let slot = &mut next[p as usize];
                assert_eq!(n, *slot, "reader {reader}: publisher {p} out of order");
                assert_eq!(data["pad"].as_str().unwrap(), pad(n), "corrupt push {n}");
                *slot += 1;
                received += 1;
                if received % 97 == 0 {
                    pings += 1;
                    client.send(json!({"type": "ping", "id": pings})).await;
                }
                // A WebSocket ping is answered by the reading side of the
                // connection, while direct writes may be going on.
                if received % 31 == 0 {
                    client
                        .ws
                        .send(Message::Ping(vec![7; 125].into()))
                        .await
                        .unwrap();
                }
                if reader % 2 == 1 && received % 400 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Some("pong") => pongs += 1,
            _ => panic!("reader {reader}: unexpected {message}"),
        }
    }
    while pongs < pings {
        let message = client.recv().await;
        assert_eq!(message["type"], "pong", "{message}");
        pongs += 1;
    }
}

async fn race(msgpack: bool) {
    let hub = hub().await;
    let mut readers = Vec::new();
    for reader in 0..4 {
        let user = format!("reader-{reader}");
        let mut client = if msgpack {
            hub.connect_msgpack(&user).await
        } else {
            hub.connect(&user).await
        };
        client.subscribe("race").await;
        readers.push(tokio::spawn(read_all(client, reader)));
    }
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(publish(hub.url(""), p)))
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    for reader in readers {
        tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .expect("a reader hung")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_keep_order_and_frames_whole_beside_replies_and_pings_json() {
    race(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_keep_order_and_frames_whole_beside_replies_and_pings_msgpack() {
    race(true).await;
}

/// A fan-out larger than one thread's chunk is spread over the workers;
/// every recipient still gets every publication once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fan_out_spread_over_workers_reaches_everyone_in_order() {
    const CLIENTS: usize = 1200;
    const COUNT: u64 = 30;
    let hub = hub().await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut client = hub.connect(&format!("wide-{i}")).await;
        client.subscribe("wide").await;
        clients.push(client);
    }
    let publications: Vec<_> = (0..COUNT)
        .map(|n| json!({"channel": "wide", "event": "e", "data": {"n": n}}))
        .collect();
    hub.publish_batch(publications).await;
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                for n in 0..COUNT {
                    let push = client.recv_push().await;
                    assert_eq!(push["data"]["n"], n);
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
}

/// A broadcast paced in chunks while every recipient's own channel keeps
/// publishing: a publication to a socket whose chunk has not come yet is
/// written with the broadcast before it, so each socket still sees exactly
/// the order the hub dispatched in, with nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_broadcast_and_per_channel_traffic_keep_dispatch_order() {
    const CLIENTS: usize = 1100; // the first chunk and four paced ones
    const ROUNDS: u64 = 15;
    let hub = TestHub::with(|c| {
        c.server.max_batch = 2000;
        // A long pause after every chunk keeps chunks pending while the
        // next rounds are dispatched.
        c.fanout.bulk_share_percent = 5;
        c.rate_limits.messages_per_second = 0;
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut client = hub.connect(&format!("paced-{i}")).await;
        client.subscribe("paced").await;
        client.subscribe(&format!("own.{i}")).await;
        clients.push(client);
    }
    for round in 0..ROUNDS {
        let mut publications =
            vec![json!({"channel": "paced", "event": "e", "data": {"n": round}})];
        publications.extend(
            (0..CLIENTS).map(
                |i| json!({"channel": format!("own.{i}"), "event": "e", "data": {"n": round}}),
            ),
        );
        hub.publish_batch(publications).await;
    }
    // Last, a broadcast alone: only the paced chunks can deliver it.
    hub.publish_batch(vec![
        json!({"channel": "paced", "event": "e", "data": {"n": ROUNDS}}),
    ])
    .await;
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    for channel in ["paced".to_owned(), format!("own.{i}")] {
                        let push = client.recv_push().await;
                        assert_eq!(
                            (push["channel"].as_str(), &push["data"]["n"]),
                            (Some(channel.as_str()), &json!(round)),
                            "client {i}"
                        );
                    }
                }
                assert_eq!(client.recv_push().await["data"]["n"], ROUNDS);
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
}

/// Closing a connection while pushes are being written into it: the close
/// frame arrives whole after whole pushes, in order; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_racing_direct_writes_ends_cleanly_after_whole_frames() {
    let hub = hub().await;
    let mut victims = Vec::new();
    let mut survivors = Vec::new();
    for i in 0..6 {
        let mut victim = hub.connect(&format!("victim-{i}")).await;
        victim.subscribe("race").await;
        victims.push(victim);
        let mut survivor = hub.connect(&format!("survivor-{i}")).await;
        survivor.subscribe("race").await;
        survivors.push(survivor);
    }
    let url = hub.url("");
    let publisher = tokio::spawn(publish(url.clone(), 0));
    let victims: Vec<_> = victims
        .into_iter()
        .enumerate()
        .map(|(i, mut victim)| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut next = 0;
                loop {
                    match victim.next_message(Duration::from_secs(60)).await {
                        Some(Ok(message)) if message["type"] == "push" => {
                            let data = &message["data"];
                            assert_eq!(data["n"], next, "victim {i}: out of order");
                            assert_eq!(data["pad"].as_str().unwrap(), pad(next));
                            next += 1;
                            if next == 100 {
                                let (status, _) = crate::helpers::api_request(
                                    &format!("{url}/api/v1/users/victim-{i}/disconnect"),
                                    Some(herald::config::DEV_API_KEY),
                                    json!({}),
                                )
                                .await;
                                assert_eq!(status, 200);
                            }
                        }
                        Some(Ok(message)) => panic!("victim {i}: unexpected {message}"),
                        Some(Err((code, reason))) => {
                            assert!(next >= 100, "closed before the disconnect");
                            assert_eq!(code, 4504, "{reason}");
                            return;
                        }
                        None => panic!("victim {i}: never closed"),
                    }
                }
            })
        })
        .collect();
    for victim in victims {
        victim.await.unwrap();
    }
    publisher.await.unwrap();
    let state = hub.state.clone();
    eventually("the victims to be gone", || {
        state.hub.stats(0).connections == 6
    })
    .await;
    for (i, survivor) in survivors.into_iter().enumerate() {
        let mut survivor = survivor;
        for n in 0..BATCHES * PER_BATCH {
            let push = survivor.recv_push().await;
            assert_eq!(push["data"]["n"], n, "survivor {i}");
        }
    }
}

/// The same race on a Socket.IO socket opened on the WebSocket transport
/// (which gets direct writes): publications arrive whole and in order while
/// subscribe acks (the connection's own replies) and Engine.IO pings
/// interleave with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_direct_writes_keep_order_beside_acks_and_pings() {
    use futures_util::StreamExt;
    let hub = hub().await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", hub.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let next_text = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(_))) => {}
            other => panic!("socket ended: {other:?}"),
        }
    };
    assert!(next_text(&mut ws).await.starts_with('0'), "no open packet");
    let connect = format!("40{}", json!({"token": hub.token("sio-reader")}));
    ws.send(Message::Text(connect.into())).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("40"), "not connected");
    ws.send(Message::Text(r#"420["subscribe","race"]"#.into()))
        .await
        .unwrap();
    // (herald's own events, e.g. the welcome, may come first)
    loop {
        let text = next_text(&mut ws).await;
        if text.starts_with("430") {
            break;
        }
        assert!(text.starts_with("42[\"herald:"), "unexpected {text}");
    }
    let publisher = tokio::spawn(publish(hub.url(""), 0));
    let (mut next, mut acks, mut asked) = (0u64, 0u64, 0u64);
    while next < BATCHES * PER_BATCH {
        let text = next_text(&mut ws).await;
        if text == "2" {
            ws.send(Message::Text("3".into())).await.unwrap();
        } else if let Some(event) = text.strip_prefix("42") {
            let event: serde_json::Value = serde_json::from_str(event).unwrap();
            assert_eq!(event[0], "e", "{text}");
            assert_eq!(event[1]["n"], next, "out of order");
            assert_eq!(
                event[1]["pad"].as_str().unwrap(),
                pad(next),
                "corrupt event {next}"
            );
            next += 1;
            if next % 97 == 0 {
                asked += 1;
                let ask = format!(r#"42{asked}["subscribe","other.{asked}"]"#);
                ws.send(Message::Text(ask.into())).await.unwrap();
            }
        } else if text.starts_with("43") {
            acks += 1;
        } else {
            panic!("unexpected packet {text}");
        }
    }
    publisher.await.unwrap();
    while acks < asked {
        let text = next_text(&mut ws).await;
        if text.starts_with("43") {
            acks += 1;
        }
    }
}
