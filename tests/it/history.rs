//! History and recovery: offsets per channel stream, `subscribe` with
//! `since` and `latest`, positioning, the history API and request, on the
//! memory engine (one node) and on real Redis (several nodes, a cluster,
//! a Redis that lost its data). Every check counts offsets; waits only
//! bound hangs.

use herald::{config::Config, core::Access};
use serde_json::{Value, json};

use crate::helpers::{Client, TestHub, namespace};

/// `hist.*`: history of `size`, clients may read it; `plain.*`: none.
pub fn with_history(c: &mut Config, size: usize) {
    let mut hist = namespace("hist.*", Access::Authenticated, true, false);
    hist.history_size = size;
    hist.client_history = true;
    hist.recover_max = 1000;
    let mut small = namespace("capped.*", Access::Authenticated, false, false);
    small.history_size = 1000;
    small.recover_max = 5;
    c.channels.namespaces = vec![hist, small];
}

/// Subscribes with extra fields; returns the reply.
pub async fn subscribe_with(client: &mut Client, channel: &str, extra: Value) -> Value {
    let mut request = json!({"type": "subscribe", "id": 7, "channel": channel});
    if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
        request.extend(extra.clone());
    }
    let reply = client.request(request).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["id"], 7, "{reply}");
    reply
}

/// Reads pushes and asserts their offsets are exactly `range`, in order.
pub async fn expect_offsets(client: &mut Client, range: std::ops::RangeInclusive<u64>) {
    for expected in range {
        let push = client.recv_push().await;
        assert_eq!(push["offset"], expected, "{push}");
        assert_eq!(
            push["data"]["n"], expected,
            "payload of offset {expected}: {push}"
        );
    }
}

/// Publishes `n` numbered by the offset they will get (`first..first+n`).
pub async fn publish_numbered(hub: &TestHub, channel: &str, first: u64, n: u64) {
    for i in first..first + n {
        hub.publish(channel, "tick", json!({ "n": i })).await;
    }
}

#[tokio::test]
async fn memory_recovery_replays_exactly_what_was_missed_then_live() {
    let hub = TestHub::with(|c| with_history(c, 100)).await;
    let mut a = hub.connect("alice").await;
    let reply = subscribe_with(&mut a, "hist.room", json!({})).await;
    assert_eq!(reply["position"]["offset"], 0, "{reply}");
    assert!(reply.get("recovered").is_none(), "{reply}");
    publish_numbered(&hub, "hist.room", 1, 5).await;
    expect_offsets(&mut a, 1..=5).await;
    let since = json!({"offset": 5, "epoch": reply["position"]["epoch"]});
    drop(a);
    publish_numbered(&hub, "hist.room", 6, 5).await;

    let mut b = hub.connect("alice").await;
    let reply = subscribe_with(&mut b, "hist.room", json!({ "since": since })).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["position"]["offset"], 10, "{reply}");
    expect_offsets(&mut b, 6..=10).await;
    publish_numbered(&hub, "hist.room", 11, 1).await;
    expect_offsets(&mut b, 11..=11).await;

    // Up to date already: recovered, nothing replayed.
    let mut c = hub.connect("carol").await;
    let since = json!({"offset": 11, "epoch": reply["position"]["epoch"]});
    let reply = subscribe_with(&mut c, "hist.room", json!({ "since": since })).await;
    assert_eq!(
        (&reply["recovered"], &reply["position"]["offset"]),
        (&json!(true), &json!(11))
    );
    publish_numbered(&hub, "hist.room", 12, 1).await;
    expect_offsets(&mut c, 12..=12).await;
    // Counted (process-wide counters other tests share: at least these).
    let metrics = hub.scrape_metrics().await;
    for (series, at_least) in [
        ("herald_recoveries_total{outcome=\"recovered\"}", 2.0),
        ("herald_publications_replayed_total", 5.0),
    ] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing"));
        assert!(value >= at_least, "{series} {value}");
    }
}

#[tokio::test]
async fn memory_recovery_fails_whole_when_the_stream_cannot_cover_it() {
    let hub = TestHub::with(|c| with_history(c, 3)).await;
    let mut a = hub.connect("alice").await;
    let epoch = subscribe_with(&mut a, "hist.x", json!({})).await["position"]["epoch"].clone();
    publish_numbered(&hub, "hist.x", 1, 10).await;
    let mut top = 10;
    for (since, why) in [
        (
            json!({"offset": 2, "epoch": epoch}),
            "older than the stream",
        ),
        (json!({"offset": 2, "epoch": "another"}), "another epoch"),
        (json!({"offset": 99, "epoch": epoch}), "ahead of the stream"),
    ] {
        let mut b = hub.connect("bob").await;
        let reply = subscribe_with(&mut b, "hist.x", json!({ "since": since })).await;
        assert_eq!(reply["recovered"], false, "{why}: {reply}");
        assert_eq!(
            (&reply["position"]["offset"], &reply["position"]["epoch"]),
            (&json!(top), &epoch),
            "{why}"
        );
        // Nothing replayed (never a partial replay): the next push is live.
        hub.publish("hist.x", "tick", json!({"n": 0})).await;
        top += 1;
        assert_eq!(b.recv_push().await["offset"], top, "{why}");
    }

    // Over the per-namespace recovery cap: refused though the stream has it.
    let mut a = hub.connect("alice").await;
    let epoch = subscribe_with(&mut a, "capped.y", json!({})).await["position"]["epoch"].clone();
    publish_numbered(&hub, "capped.y", 1, 6).await;
    let mut b = hub.connect("bob").await;
    let since = json!({"offset": 0, "epoch": epoch});
    let reply = subscribe_with(&mut b, "capped.y", json!({ "since": since })).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    let since = json!({"offset": 1, "epoch": epoch});
    let reply = subscribe_with(&mut b, "capped.z", json!({ "since": since })).await;
    assert_eq!(
        reply["recovered"], false,
        "a position ahead of the stream: {reply}"
    );
    let mut c = hub.connect("carol").await;
    let reply = subscribe_with(&mut c, "capped.y", json!({ "since": since })).await;
    assert_eq!(reply["recovered"], true, "five is within the cap: {reply}");
    for expected in 2..=6 {
        assert_eq!(c.recv_push().await["offset"], expected);
    }
}

#[tokio::test]
async fn a_fresh_memory_engine_starts_a_new_epoch() {
    let first = TestHub::with(|c| with_history(c, 10)).await;
    let second = TestHub::with(|c| with_history(c, 10)).await;
    let mut a = first.connect("alice").await;
    let mut b = second.connect("alice").await;
    let one = subscribe_with(&mut a, "hist.e", json!({})).await;
    let two = subscribe_with(&mut b, "hist.e", json!({})).await;
    assert_ne!(one["position"]["epoch"], two["position"]["epoch"]);
    first.publish("hist.e", "tick", json!({"n": 1})).await;
    let since = json!({"offset": 1, "epoch": one["position"]["epoch"]});
    let mut c = second.connect("alice").await;
    let reply = subscribe_with(&mut c, "hist.e", json!({ "since": since })).await;
    assert_eq!(reply["recovered"], false, "{reply}");
}

#[tokio::test]
async fn latest_delivers_the_newest_publication_first() {
    let hub = TestHub::with(|c| with_history(c, 10)).await;
    let mut a = hub.connect("alice").await;
    let reply = subscribe_with(&mut a, "hist.p", json!({"latest": true})).await;
    assert_eq!(
        reply["position"]["offset"], 0,
        "empty stream: nothing to send"
    );
    publish_numbered(&hub, "hist.p", 1, 3).await;
    expect_offsets(&mut a, 1..=3).await;
    let mut b = hub.connect("bob").await;
    let reply = subscribe_with(&mut b, "hist.p", json!({"latest": true})).await;
    assert_eq!(reply["position"]["offset"], 3);
    expect_offsets(&mut b, 3..=3).await;
    publish_numbered(&hub, "hist.p", 4, 1).await;
    expect_offsets(&mut b, 4..=4).await;
}

#[tokio::test]
async fn channels_without_history_keep_todays_wire_format() {
    let hub = TestHub::with(|c| with_history(c, 10)).await;
    let mut a = hub.connect("alice").await;
    // `since` and `latest` are ignored where there is no history.
    let reply = a
        .request(
            json!({"type": "subscribe", "id": 1, "channel": "plain.x", "latest": true,
            "since": {"offset": 3, "epoch": "e"}}),
        )
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 1}));
    hub.publish("plain.x", "tick", json!(1)).await;
    let push = a.recv_push().await;
    assert_eq!(
        push,
        json!({"type": "push", "channel": "plain.x", "event": "tick", "data": 1, "ts": push["ts"]})
    );
    let mut m = hub.connect_msgpack("bob").await;
    let reply = subscribe_with(&mut m, "hist.m", json!({})).await;
    assert!(m.last_binary);
    hub.publish("hist.m", "tick", json!({"n": 1})).await;
    let push = m.recv_push().await;
    assert_eq!((&push["offset"], m.last_binary), (&json!(1), true));
    assert_eq!(reply["position"]["offset"], 0);
}

/// Many times over: a client subscribes with `since` while a publisher
/// publishes as fast as it can; the client's offsets continue from `since`
/// with no duplicate and no gap at the boundary between replay and live.
// Two worker threads: the publisher really runs while the subscriber joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_racing_a_fast_publish_stream_never_duplicates_or_skips() {
    let hub = TestHub::with(|c| with_history(c, 1000)).await;
    race_rounds(&hub, &hub, "hist.race", 25).await;
}

/// Runs `rounds` rounds: a publisher on `publisher` publishes continuously;
/// each round a client on `subscriber` joins from the position it last saw.
pub async fn race_rounds(publisher: &TestHub, subscriber: &TestHub, channel: &str, rounds: u64) {
    let mut watcher = publisher.connect("watcher").await;
    let epoch = subscribe_with(&mut watcher, channel, json!({})).await["position"]["epoch"].clone();
    let url = publisher.url("/api/v1/publish");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = std::sync::Arc::clone(&stop);
    let channel_name = channel.to_owned();
    let publishing = tokio::spawn(async move {
        let mut n = 1u64;
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
            let (status, body) = crate::helpers::api_request(
                &url,
                Some(herald::config::DEV_API_KEY),
                json!({"channel": channel_name, "event": "tick", "data": {"n": n}}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            n += 1;
        }
    });
    let mut last = 0;
    for round in 0..rounds {
        let mut client = subscriber.connect("racer").await;
        let since = json!({"offset": last, "epoch": epoch});
        let reply = subscribe_with(&mut client, channel, json!({ "since": since })).await;
        assert_eq!(reply["recovered"], true, "round {round}: {reply}");
        // Read past the boundary: at least a few publications after the
        // reply's position, which were live for this subscriber.
        let until = reply["position"]["offset"].as_u64().unwrap() + 3;
        let mut expected = last + 1;
        while expected <= until {
            let push = client.recv_push().await;
            assert_eq!(push["offset"], expected, "round {round}: {push}");
            assert_eq!(push["data"]["n"], expected, "round {round}: {push}");
            expected += 1;
        }
        last = expected - 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    publishing.await.unwrap();
    // The watcher, subscribed throughout, saw every offset once, in order.
    let mut expected = 1;
    while expected <= last {
        assert_eq!(watcher.recv_push().await["offset"], expected);
        expected += 1;
    }
}

#[tokio::test]
async fn client_history_request_where_the_namespace_allows() {
    let hub = TestHub::with(|c| {
        with_history(c, 5);
        c.channels.namespaces[1].client_history = false;
    })
    .await;
    publish_numbered(&hub, "hist.h", 1, 7).await;
    let mut a = hub.connect("alice").await;
    let reply = a
        .request(json!({"type": "history", "id": 3, "channel": "hist.h", "since": 4, "limit": 2}))
        .await;
    assert_eq!(reply["type"], "history", "{reply}");
    assert_eq!(reply["id"], 3);
    let offsets: Vec<_> = reply["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [5, 6]);
    assert_eq!(reply["position"]["offset"], 7);
    assert_eq!(reply["publications"][0]["data"], json!({"n": 5}));
    let reply = a
        .request(json!({"type": "history", "id": 4, "channel": "hist.h", "reverse": true}))
        .await;
    let offsets: Vec<_> = reply["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [7, 6, 5, 4, 3], "the newest five, newest first");
    for (channel, code) in [("plain.h", 118), ("capped.h", 104)] {
        let reply = a
            .request(json!({"type": "history", "id": 5, "channel": channel}))
            .await;
        assert_eq!(
            (&reply["type"], &reply["code"]),
            (&json!("error"), &json!(code)),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn history_api_with_every_parameter_and_its_errors() {
    let hub = TestHub::with(|c| with_history(c, 5)).await;
    publish_numbered(&hub, "hist.api", 1, 7).await;
    let offsets = |body: &Value| -> Vec<u64> {
        body["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect()
    };
    let (status, body) = hub.get("/api/v1/history?channel=hist.api").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(offsets(&body), [3, 4, 5, 6, 7]);
    assert_eq!(body["position"]["offset"], 7);
    assert_eq!(body["channel"], "hist.api");
    assert_eq!(body["publications"][0]["event"], "tick");
    let epoch = body["position"]["epoch"].as_str().unwrap().to_owned();
    for (query, expected) in [
        ("&since=5", vec![6, 7]),
        ("&limit=2", vec![3, 4]),
        ("&reverse=true&limit=2", vec![7, 6]),
        ("&since=4&reverse=true", vec![7, 6, 5]),
        ("&limit=100", vec![3, 4, 5, 6, 7]),
        ("&since=7", vec![]),
        (&format!("&epoch={epoch}&since=6"), vec![7]),
    ] {
        let (status, body) = hub
            .get(&format!("/api/v1/history?channel=hist.api{query}"))
            .await;
        assert_eq!((status, offsets(&body)), (200, expected), "{query}: {body}");
    }
    for (query, status, code) in [
        ("", 400, "invalid_channel"),
        ("?channel=bad%20name", 400, "invalid_channel"),
        ("?channel=hist.api&since=-1", 400, "invalid_since"),
        ("?channel=hist.api&limit=x", 400, "invalid_limit"),
        ("?channel=hist.api&reverse=maybe", 400, "invalid_reverse"),
        ("?channel=plain.api", 404, "no_history"),
        ("?channel=hist.api&epoch=old", 409, "epoch_changed"),
    ] {
        let (got, body) = hub.get(&format!("/api/v1/history{query}")).await;
        assert_eq!(
            (got, &body["error"]["code"]),
            (status, &json!(code)),
            "{query}: {body}"
        );
    }
    let response = reqwest::get(hub.url("/api/v1/history?channel=hist.api"))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
