//! Subscribe, unsubscribe, personal and broadcast delivery, ordering.

use std::time::Duration;

use serde_json::json;

use crate::helpers::TestHub;

#[tokio::test]
async fn subscriber_receives_a_publication_with_channel_event_and_data() {
    let hub = TestHub::spawn().await;
    let mut alice = hub.connect("alice").await;
    alice.subscribe("prices.btc").await;
    let reply = hub
        .publish("prices.btc", "price_update", json!({"price": 64000.5}))
        .await;
    assert_eq!(reply, json!({"subscribers": 1}));
    let push = alice.recv_push().await;
    assert_eq!(push["channel"], "prices.btc");
    assert_eq!(push["event"], "price_update");
    assert_eq!(push["data"], json!({"price": 64000.5}));
    assert!(push["ts"].as_u64().unwrap() > 1_700_000_000_000);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let hub = TestHub::spawn().await;
    let mut alice = hub.connect("alice").await;
    alice.subscribe("news").await;
    let reply = alice
        .request(json!({"type": "unsubscribe", "id": 9, "channel": "news"}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 9}));
    assert_eq!(
        hub.publish("news", "headline", json!("x")).await,
        json!({"subscribers": 0})
    );
    alice.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn personal_channel_reaches_every_device_of_one_user_and_no_one_else() {
    let hub = TestHub::spawn().await;
    let mut phone = hub.connect("42").await;
    let mut laptop = hub.connect("42").await;
    let mut other = hub.connect("43").await;
    let (status, body) = hub
        .api(
            "/api/v1/publish",
            json!({"user": "42", "event": "notification", "data": {"text": "hi"}}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"subscribers": 2})));
    for device in [&mut phone, &mut laptop] {
        let push = device.recv_push().await;
        assert_eq!(push["channel"], "user:42");
        assert_eq!(push["data"]["text"], "hi");
    }
    other.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn broadcast_reaches_every_connection() {
    let hub = TestHub::spawn().await;
    let mut clients = Vec::new();
    for user in ["a", "b", "c"] {
        clients.push(hub.connect(user).await);
    }
    let (status, body) = hub
        .api(
            "/api/v1/publish",
            json!({"broadcast": true, "event": "maintenance", "data": null}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"subscribers": 3})));
    for client in &mut clients {
        let push = client.recv_push().await;
        assert_eq!(
            (push["channel"].as_str(), push["event"].as_str()),
            (Some("broadcast"), Some("maintenance"))
        );
    }
}

#[tokio::test]
async fn welcome_names_the_connection_user_node_and_automatic_channels() {
    let hub = TestHub::with(|c| c.server.node_id = Some("node-a".into())).await;
    let mut client = hub
        .connect_raw(&format!("/ws?token={}", hub.token("7")), &[])
        .await;
    let welcome = client.recv().await;
    assert_eq!(welcome["user_id"], "7");
    assert_eq!(welcome["node_id"], "node-a");
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["heartbeat_ms"], 25_000);
    assert_eq!(welcome["channels"], json!(["user:7", "broadcast"]));
    assert!(welcome["conn_id"].as_str().unwrap().starts_with("node-a-"));
}

#[tokio::test]
async fn a_burst_arrives_complete_and_in_order() {
    let hub = TestHub::spawn().await;
    let mut client = hub.connect("alice").await;
    client.subscribe("orders").await;
    let publications: Vec<_> = (0..500)
        .map(|n| json!({"channel": "orders", "event": "order", "data": n}))
        .collect();
    hub.publish_batch(publications).await;
    for n in 0..500 {
        assert_eq!(client.recv_push().await["data"], n);
    }
}

#[tokio::test]
async fn client_publish_reaches_subscribers_where_allowed() {
    let hub = TestHub::with(|c| {
        c.channels.namespaces = vec![crate::helpers::namespace(
            "chat.*",
            herald::core::Access::Authenticated,
            true,
            false,
        )];
    })
    .await;
    let mut alice = hub.connect("alice").await;
    let mut bob = hub.connect("bob").await;
    bob.subscribe("chat.lobby").await;
    let reply = alice
        .request(json!({"type": "publish", "id": 3, "channel": "chat.lobby", "event": "message", "data": {"text": "hello"}}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 3}));
    let push = bob.recv_push().await;
    assert_eq!(
        (push["event"].as_str(), push["data"]["text"].as_str()),
        (Some("message"), Some("hello"))
    );
}

/// Records joins and leaves, as a presence module would see them.
#[derive(Debug, Default)]
struct Membership(std::sync::Mutex<Vec<String>>);

impl herald::core::MembershipObserver for Membership {
    fn joined(&self, channel: &herald::protocol::ChannelName, conn: &herald::core::Conn) {
        let user = conn.user().map_or("-", |u| u.as_str());
        self.0
            .lock()
            .unwrap()
            .push(format!("+{user}@{}", channel.as_str()));
    }
    fn left(&self, channel: &herald::protocol::ChannelName, conn: &herald::core::Conn) {
        let user = conn.user().map_or("-", |u| u.as_str());
        self.0
            .lock()
            .unwrap()
            .push(format!("-{user}@{}", channel.as_str()));
    }
}

/// The hub's membership seam sees every confirmed join and every leave, an
/// unsubscribe and a disconnect alike, and nothing for a refused join.
#[tokio::test]
async fn a_membership_observer_sees_joins_and_leaves() {
    let hub = TestHub::spawn().await;
    let seen = std::sync::Arc::new(Membership::default());
    assert!(hub.state.hub.observe(seen.clone()));
    let mut client = hub.connect("ann").await;
    client.subscribe("news").await;
    let refused = client
        .request(json!({"type": "subscribe", "id": 2, "channel": "news"}))
        .await;
    assert_eq!(refused["code"], 105);
    let reply = client
        .request(json!({"type": "unsubscribe", "id": 3, "channel": "news"}))
        .await;
    assert_eq!(reply["type"], "ok");
    client.subscribe("sports").await;
    drop(client);
    crate::helpers::eventually("the disconnect to be observed", || {
        seen.0.lock().unwrap().len() == 8
    })
    .await;
    let mut events = seen.0.lock().unwrap().clone();
    // The automatic joins come first, in order; the leaves on disconnect in
    // no particular order.
    let tail = events.split_off(5);
    assert_eq!(
        events,
        [
            "+ann@user:ann",
            "+ann@broadcast",
            "+ann@news",
            "-ann@news",
            "+ann@sports"
        ]
    );
    let mut tail = tail;
    tail.sort();
    assert_eq!(tail, ["-ann@broadcast", "-ann@sports", "-ann@user:ann"]);
}
