//! Publication data: what herald accepts reaches JSON and MessagePack
//! subscribers alike; what not every format can carry is refused at the door
//! (HTTP, client publish, outside Redis publishers); bytes that are not UTF-8
//! travel as binary.

use futures_util::{SinkExt, StreamExt};
use herald::config::{DEV_API_KEY, EngineKind};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    helpers::{Client, TestHub, WAIT, namespace},
    redis_server::RedisServer,
};

const CHANNEL: &str = "edge.values";

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_value(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!([inner]))
}

/// A hub where clients may publish on `edge.*`, with a JSON and a MessagePack subscriber.
async fn hub_with_subscribers(
    edit: impl FnOnce(&mut herald::config::Config),
) -> (TestHub, Client, Client) {
    let hub = TestHub::with(|c| {
        c.channels.namespaces = vec![namespace(
            "edge.*",
            herald::core::Access::Authenticated,
            true,
            false,
        )];
        edit(c);
    })
    .await;
    hub.wait_ready().await;
    let mut json_client = hub.connect("json-reader").await;
    json_client.subscribe(CHANNEL).await;
    let mut msgpack_client = hub.connect_msgpack("msgpack-reader").await;
    msgpack_client.subscribe(CHANNEL).await;
    (hub, json_client, msgpack_client)
}

/// POSTs a raw body (serde_json's `Value` cannot hold `1e400`).
async fn post_raw(hub: &TestHub, path: &str, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(hub.url(path))
        .bearer_auth(DEV_API_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn publish_body(data: &str) -> String {
    format!(r#"{{"channel":"{CHANNEL}","event":"e","data":{data}}}"#)
}

/// Both subscribers' next push carries `expected` as data.
async fn both_receive(json_client: &mut Client, msgpack_client: &mut Client, expected: &Value) {
    let push = json_client.recv_push().await;
    assert_eq!(&push["data"], expected, "json subscriber");
    let push = msgpack_client.recv_push().await;
    assert!(msgpack_client.last_binary);
    assert_eq!(&push["data"], expected, "msgpack subscriber");
}

#[tokio::test]
async fn data_at_the_edges_of_the_limits_reaches_json_and_msgpack_subscribers() {
    let (hub, mut json_client, mut msgpack_client) = hub_with_subscribers(|_| {}).await;
    let cases = [
        (nested(64), nested_value(64)),
        ("1e308".to_owned(), json!(1e308)),
        ("-1.7976931348623157e308".to_owned(), json!(f64::MIN)),
        ("18446744073709551615".to_owned(), json!(u64::MAX)),
        ("-9223372036854775808".to_owned(), json!(i64::MIN)),
        // Beyond u64: carried as the nearest 64-bit float (2^64 exactly).
        (
            "18446744073709551616".to_owned(),
            json!(18_446_744_073_709_551_616_f64),
        ),
    ];
    for (text, expected) in &cases {
        let (status, body) = post_raw(&hub, "/api/v1/publish", publish_body(text)).await;
        assert_eq!(status, 200, "{text}: {body}");
        both_receive(&mut json_client, &mut msgpack_client, expected).await;
    }
    // The same values published by a client.
    let mut publisher = hub.connect("publisher").await;
    for (id, (text, expected)) in cases.iter().enumerate() {
        let message = format!(
            r#"{{"type":"publish","id":{id},"channel":"{CHANNEL}","event":"e","data":{text}}}"#
        );
        publisher
            .ws
            .send(Message::Text(message.into()))
            .await
            .unwrap();
        assert_eq!(
            publisher.recv().await,
            json!({"type": "ok", "id": id}),
            "{text}"
        );
        both_receive(&mut json_client, &mut msgpack_client, expected).await;
    }
}

#[tokio::test]
async fn data_not_every_format_carries_is_refused_on_http_with_invalid_data() {
    let (hub, mut json_client, mut msgpack_client) = hub_with_subscribers(|_| {}).await;
    for (text, why) in [
        (nested(65), "deeper than 64 levels"),
        (nested(200), "deeper than 64 levels"),
        ("1e400".to_owned(), "number out of range: 1e400"),
        ("{\"a\":[-1e400]}".to_owned(), "number out of range: -1e400"),
    ] {
        let (status, body) = post_raw(&hub, "/api/v1/publish", publish_body(&text)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_data")),
            "{text}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
    }
    // A batch is refused whole, naming the item.
    let batch = format!(
        r#"{{"publications":[{},{}]}}"#,
        publish_body("1"),
        publish_body("1e400")
    );
    let (status, body) = post_raw(&hub, "/api/v1/publish/batch", batch).await;
    assert_eq!(
        (status, &body["error"]["code"], &body["error"]["index"]),
        (400, &json!("invalid_data"), &json!(1)),
        "{body}"
    );
    // Nothing of the above was delivered: the next push is this one.
    hub.publish(CHANNEL, "e", json!("after")).await;
    both_receive(&mut json_client, &mut msgpack_client, &json!("after")).await;
}

#[tokio::test]
async fn data_not_every_format_carries_is_refused_on_client_publish_with_error_115() {
    let (hub, mut json_client, mut msgpack_client) = hub_with_subscribers(|_| {}).await;
    let mut publisher = hub.connect("publisher").await;
    for (id, text) in [nested(65), "1e400".to_owned()].iter().enumerate() {
        let message = format!(
            r#"{{"type":"publish","id":{id},"channel":"{CHANNEL}","event":"e","data":{text}}}"#
        );
        publisher
            .ws
            .send(Message::Text(message.into()))
            .await
            .unwrap();
        let reply = publisher.recv().await;
        assert_eq!(
            (&reply["type"], &reply["id"], &reply["code"]),
            (&json!("error"), &json!(id), &json!(115)),
            "{reply}"
        );
    }
    // A MessagePack publisher is held to the same depth limit.
    let mut packer = hub.connect_msgpack("packer").await;
    let reply = packer
        .request(json!({"type": "publish", "id": 7, "channel": CHANNEL, "event": "e", "data": nested_value(65)}))
        .await;
    assert_eq!(
        (&reply["type"], &reply["code"]),
        (&json!("error"), &json!(115)),
        "{reply}"
    );
    assert!(
        reply["reason"].as_str().unwrap().contains("64 levels"),
        "{reply}"
    );
    // And to finite numbers: MessagePack can hold infinities and NaN, JSON cannot.
    for (id, float) in [(9u64, f64::INFINITY), (10, f64::NAN)] {
        let publish = Publish {
            kind: "publish",
            id,
            channel: CHANNEL,
            event: "e",
            data: [float],
        };
        let frame = rmp_serde::to_vec_named(&publish).unwrap();
        packer.ws.send(Message::Binary(frame.into())).await.unwrap();
        let reply = packer.recv().await;
        assert_eq!(
            (&reply["id"], &reply["code"]),
            (&json!(id), &json!(115)),
            "{reply}"
        );
    }
    let reply = packer
        .request(json!({"type": "publish", "id": 8, "channel": CHANNEL, "event": "e", "data": nested_value(64)}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 8}));
    both_receive(&mut json_client, &mut msgpack_client, &nested_value(64)).await;
}

#[derive(serde::Serialize)]
struct Publish {
    #[serde(rename = "type")]
    kind: &'static str,
    id: u64,
    channel: &'static str,
    event: &'static str,
    data: [f64; 1],
}

fn redis_node(server: &RedisServer) -> impl FnOnce(&mut herald::config::Config) {
    let url = server.url();
    move |c| {
        c.engine.kind = EngineKind::Redis;
        c.engine.url = url;
    }
}

fn publish_outside(server: &RedisServer, payload: &[u8]) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("herald:{CHANNEL}"))
        .arg(payload)
        .query(&mut server.client())
        .unwrap();
}

fn dropped_invalid(text: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(r#"herald_messages_dropped_total{reason="invalid_data"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn outside_redis_publications_not_every_format_carries_are_dropped_and_counted() {
    let server = RedisServer::start();
    let (hub, mut json_client, mut msgpack_client) =
        hub_with_subscribers(redis_node(&server)).await;
    let before = dropped_invalid(&hub.scrape_metrics().await);
    let envelope = format!(r#"{{"event":"e","data":{}}}"#, nested(65));
    for payload in [
        nested(65).as_str(),
        &envelope,
        "1e400",
        r#"{"event":"e","data":[1e400]}"#,
    ] {
        publish_outside(&server, payload.as_bytes());
    }
    // At the edge of the limits: delivered to both formats.
    publish_outside(
        &server,
        format!(r#"{{"event":"e","data":{}}}"#, nested(64)).as_bytes(),
    );
    both_receive(&mut json_client, &mut msgpack_client, &nested_value(64)).await;
    // One channel's payloads are handled in order, so all four were counted by now.
    let after = dropped_invalid(&hub.scrape_metrics().await);
    assert!(after - before >= 4.0, "before {before}, after {after}");
}

/// Data read from a MessagePack `bin`, and nothing else.
struct Bin(Vec<u8>);

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a MessagePack bin")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

#[derive(Deserialize)]
struct BinaryPush {
    #[serde(rename = "type")]
    kind: String,
    channel: String,
    event: String,
    data: Bin,
}

#[tokio::test]
async fn outside_bytes_that_are_not_utf8_reach_msgpack_as_bin_and_json_as_marked_base64() {
    let server = RedisServer::start();
    let (_hub, mut json_client, mut msgpack_client) =
        hub_with_subscribers(redis_node(&server)).await;
    let payload = [0xff, 0xfe, 0x00, 0x41];
    publish_outside(&server, &payload);
    let push = json_client.recv_push().await;
    assert_eq!(
        (&push["event"], &push["data"]),
        (&json!("message"), &json!({"$binary": "//4AQQ=="}))
    );
    let frame = tokio::time::timeout(WAIT, msgpack_client.ws.next())
        .await
        .expect("no push in time")
        .unwrap()
        .unwrap();
    let Message::Binary(bytes) = frame else {
        panic!("expected a binary frame, got {frame:?}")
    };
    let push: BinaryPush = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(
        (
            push.kind.as_str(),
            push.channel.as_str(),
            push.event.as_str()
        ),
        ("push", CHANNEL, "message")
    );
    assert_eq!(push.data.0, payload);
}
