//! Slow consumers and latest-value conflation.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use herald::{core::Access, engine::memory::MemoryEngine};

use crate::helpers::{TestHub, eventually, namespace};

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_burst_past_the_queue_cap_closes_the_client_with_4001() {
    let hub = TestHub::with(|c| c.outbox.max_messages = 8).await;
    let mut client = hub.connect("burst").await;
    client.subscribe("firehose").await;
    // The client reads nothing until the burst is over. What its socket
    // takes is written at once; 32 MiB is more than the kernel buffers of a
    // loopback connection hold, so the rest queues, and past 8 queued
    // messages the client is a slow consumer.
    let pad = "x".repeat(32 * 1024);
    for chunk in 0..40 {
        let publications: Vec<_> = (0..25)
            .map(|n| json!({"channel": "firehose", "event": "e", "data": {"n": chunk * 25 + n, "pad": pad}}))
            .collect();
        hub.publish_batch(publications).await;
    }
    let (code, reason) = client.expect_close().await;
    assert_eq!(
        (code, reason.as_str()),
        (4001, "slow consumer: outbound queue overflowed")
    );
    let text = hub.scrape_metrics().await;
    assert!(
        metric(&text, "herald_slow_consumer_disconnects_total") >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_while_a_reader_gets_everything_in_order() {
    const COUNT: u64 = 800;
    let hub = TestHub::with(|c| {
        c.outbox.max_messages = 256;
        c.outbox.max_bytes = 4 * 1024 * 1024;
        c.websocket.write_timeout_ms = 1000;
    })
    .await;
    let mut stalled = hub.connect("stalled").await;
    stalled.subscribe("feed").await;
    let mut reader = hub.connect("reader").await;
    reader.subscribe("feed").await;
    let reading = tokio::spawn(async move {
        for n in 0..COUNT {
            let push = reader.recv_push().await;
            assert_eq!(push["data"]["n"], n, "out of order or lost");
        }
    });
    // 32 KiB per message: enough to fill the kernel socket buffers of the
    // stalled client, after which its writer blocks and it must be dropped.
    let pad = "x".repeat(32 * 1024);
    for n in 0..COUNT {
        hub.publish("feed", "e", json!({"n": n, "pad": pad})).await;
    }
    tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .unwrap()
        .unwrap();
    let state = hub.state.clone();
    eventually("the stalled client to be disconnected", || {
        state.hub.stats(0).connections == 1
    })
    .await;
    drop(stalled);
}

#[tokio::test]
async fn latest_value_channels_conflate_for_a_slow_client() {
    const COUNT: u64 = 1500;
    let hub = TestHub::with(|c| {
        c.channels.namespaces = vec![namespace("prices.*", Access::Authenticated, false, true)];
        c.outbox.max_messages = 4;
        c.websocket.write_timeout_ms = 60_000;
    })
    .await;
    let mut slow = hub.connect("slow").await;
    slow.subscribe("prices.btc").await;
    let pad = "x".repeat(32 * 1024);
    for n in 0..COUNT {
        hub.publish("prices.btc", "price_update", json!({"n": n, "pad": pad}))
            .await;
    }
    hub.publish(
        "prices.btc",
        "price_update",
        json!({"n": COUNT, "last": true}),
    )
    .await;
    // Now read: a backlog already in the socket, then only the newest price.
    let mut seen = Vec::new();
    loop {
        let push = slow.recv_push().await;
        seen.push(push["data"]["n"].as_u64().unwrap());
        if push["data"]["last"] == true {
            break;
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "older price after a newer one"
    );
    assert!(
        (seen.len() as u64) < COUNT / 2,
        "expected conflation, got {} of {COUNT} messages",
        seen.len()
    );
    assert_eq!(
        hub.state.hub.stats(0).connections,
        1,
        "conflation must not disconnect"
    );
    let text = hub.scrape_metrics().await;
    assert!(metric(&text, "herald_messages_dropped_total{reason=\"conflated\"}") > 0.0);
}

/// A publication that overflows an idle connection's empty queue (here one
/// larger than the whole byte cap) must still end in the slow-consumer
/// close: the writer is parked waiting for work and must be woken for it.
#[tokio::test]
async fn an_overflow_of_an_empty_queue_still_closes_the_client_with_4001() {
    // Below what `validate` allows (max_data_size + 1024), which keeps a
    // legal publication from overflowing an empty queue by itself; the
    // writer must be woken whatever made the push overflow.
    let hub = TestHub::with_engine(
        |c| c.outbox.max_bytes = 64,
        |dispatcher| Arc::new(MemoryEngine::new(dispatcher)),
    )
    .await;
    let mut client = hub.connect("idle").await;
    client.subscribe("big").await;
    hub.publish("big", "e", json!("x".repeat(200))).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(
        (code, reason.as_str()),
        (4001, "slow consumer: outbound queue overflowed")
    );
}
