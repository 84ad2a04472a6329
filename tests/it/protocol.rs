//! Protocol errors and limits, MessagePack, and that bad clients do not hurt good ones.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::TestHub;

#[tokio::test]
async fn msgpack_round_trip_for_every_message_type() {
    let hub = TestHub::with(|c| {
        c.channels.namespaces = vec![crate::helpers::namespace(
            "chat.*",
            herald::core::Access::Authenticated,
            true,
            false,
        )];
    })
    .await;
    // auth in the first message, answered by welcome
    let mut client = hub.connect_raw("/ws?format=msgpack", &[]).await;
    let welcome = client
        .request(json!({"type": "auth", "id": 1, "token": hub.token("m")}))
        .await;
    assert_eq!(
        (welcome["type"].as_str(), welcome["protocol"].as_u64()),
        (Some("welcome"), Some(1))
    );
    assert!(
        client.last_binary,
        "a msgpack connection must get binary frames"
    );
    // subscribe → ok, ping → pong, publish → ok + push, bad request → error, unsubscribe → ok
    assert_eq!(
        client
            .request(json!({"type": "subscribe", "id": 2, "channel": "chat.a"}))
            .await,
        json!({"type": "ok", "id": 2})
    );
    assert_eq!(
        client.request(json!({"type": "ping", "id": 3})).await,
        json!({"type": "pong", "id": 3})
    );
    let data = json!({"n": 1, "f": 2.5, "s": "x", "l": [true, null], "m": {"k": -7}});
    let reply = client
        .request(
            json!({"type": "publish", "id": 4, "channel": "chat.a", "event": "msg", "data": data}),
        )
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 4}));
    let push = client.recv_push().await;
    assert_eq!(push["data"], data);
    assert!(client.last_binary);
    let error = client
        .request(json!({"type": "subscribe", "id": 5, "channel": "a b"}))
        .await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_u64()),
        (Some("error"), Some(103))
    );
    assert_eq!(
        client
            .request(json!({"type": "unsubscribe", "id": 6, "channel": "chat.a"}))
            .await,
        json!({"type": "ok", "id": 6})
    );
    // JSON published by the API arrives as native MessagePack maps.
    let mut sub = hub.connect_msgpack("m2").await;
    sub.subscribe("prices.x").await;
    hub.publish("prices.x", "price_update", json!({"price": 1.25}))
        .await;
    assert_eq!(sub.recv_push().await["data"]["price"], 1.25);
}

async fn expect_error(client: &mut crate::helpers::Client, frame: Message, id: Value, code: u64) {
    client.ws.send(frame).await.unwrap();
    let reply = client.recv().await;
    assert_eq!(
        (reply["type"].as_str(), &reply["id"], reply["code"].as_u64()),
        (Some("error"), &id, Some(code)),
        "{reply}"
    );
    assert!(!reply["reason"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_and_unknown_messages_get_errors_and_the_connection_stays() {
    let hub = TestHub::spawn().await;
    let mut bad = hub.connect("bad").await;
    let mut good = hub.connect("good").await;
    good.subscribe("feed").await;
    expect_error(
        &mut bad,
        Message::Text("{not json".into()),
        Value::Null,
        101,
    )
    .await;
    expect_error(&mut bad, Message::Text("[1,2]".into()), Value::Null, 101).await;
    expect_error(
        &mut bad,
        Message::Binary(vec![0xc1, 0xff, 0x00].into()),
        Value::Null,
        101,
    )
    .await;
    expect_error(
        &mut bad,
        Message::Text(r#"{"type":"dance","id":4}"#.into()),
        json!(4),
        102,
    )
    .await;
    expect_error(
        &mut bad,
        Message::Text(r#"{"type":"subscribe","id":5}"#.into()),
        json!(5),
        101,
    )
    .await;
    let packed = rmp_serde::to_vec_named(&json!({"type": "fly", "id": 6})).unwrap();
    expect_error(&mut bad, Message::Binary(packed.into()), json!(6), 102).await;
    assert_eq!(
        bad.request(json!({"type": "ping", "id": 7})).await,
        json!({"type": "pong", "id": 7})
    );
    hub.publish("feed", "e", json!(1)).await;
    assert_eq!(good.recv_push().await["data"], 1);
}

#[tokio::test]
async fn channel_and_subscription_rules() {
    let hub = TestHub::with(|c| {
        c.limits.max_subscriptions = 3;
        c.limits.max_channel_length = 10;
    })
    .await;
    let mut client = hub.connect("u").await;
    let cases = [
        (
            json!({"type": "subscribe", "id": 1, "channel": "has space"}),
            103,
        ),
        (
            json!({"type": "subscribe", "id": 2, "channel": "x".repeat(11)}),
            103,
        ),
        (json!({"type": "subscribe", "id": 3, "channel": ""}), 103),
        (
            json!({"type": "subscribe", "id": 4, "channel": "user:other"}),
            104,
        ),
        (
            json!({"type": "subscribe", "id": 5, "channel": "broadcast"}),
            104,
        ),
        (
            json!({"type": "unsubscribe", "id": 6, "channel": "user:u"}),
            104,
        ),
        (
            json!({"type": "unsubscribe", "id": 7, "channel": "never"}),
            106,
        ),
    ];
    for (request, code) in cases {
        let reply = client.request(request.clone()).await;
        assert_eq!(reply["code"].as_u64(), Some(code), "{request} → {reply}");
        assert_eq!(reply["id"], request["id"]);
    }
    for channel in ["a", "b", "c"] {
        client.subscribe(channel).await;
    }
    let reply = client
        .request(json!({"type": "subscribe", "id": 8, "channel": "a"}))
        .await;
    assert_eq!(reply["code"], 105);
    let reply = client
        .request(json!({"type": "subscribe", "id": 9, "channel": "d"}))
        .await;
    assert_eq!(reply["code"], 107);
    // Leaving one frees a slot.
    client
        .request(json!({"type": "unsubscribe", "id": 10, "channel": "a"}))
        .await;
    client.subscribe("d").await;
}

#[tokio::test]
async fn client_publish_rules_and_limits() {
    let hub = TestHub::with(|c| {
        c.channels.namespaces = vec![crate::helpers::namespace(
            "chat.*",
            herald::core::Access::Authenticated,
            true,
            false,
        )];
        c.limits.max_data_size = 64;
    })
    .await;
    let mut client = hub.connect("u").await;
    let publish = |id: u64, channel: &str, event: &str, data: Value| json!({"type": "publish", "id": id, "channel": channel, "event": event, "data": data});
    let cases = [
        (publish(1, "news", "e", json!(1)), 104),
        (publish(2, "user:u", "e", json!(1)), 104),
        (publish(3, "chat.a", "bad event", json!(1)), 110),
        (publish(4, "chat a", "e", json!(1)), 103),
        (publish(5, "chat.a", "e", json!("x".repeat(100))), 113),
    ];
    for (request, code) in cases {
        let reply = client.request(request.clone()).await;
        assert_eq!(reply["code"].as_u64(), Some(code), "{request} → {reply}");
    }
    assert_eq!(
        client.request(publish(6, "chat.a", "e", json!(1))).await,
        json!({"type": "ok", "id": 6})
    );
}

#[tokio::test]
async fn oversized_message_closes_with_4503_and_others_are_unaffected() {
    let hub = TestHub::with(|c| {
        c.limits.max_message_size = 2048;
        c.limits.max_data_size = 1024;
    })
    .await;
    let mut big = hub.connect("big").await;
    let mut good = hub.connect("good").await;
    good.subscribe("feed").await;
    let huge = json!({"type": "ping", "id": 1, "pad": "x".repeat(3000)});
    big.ws
        .send(Message::Text(huge.to_string().into()))
        .await
        .unwrap();
    assert_eq!(big.expect_close().await.0, 4503);
    hub.publish("feed", "e", json!("still here")).await;
    assert_eq!(good.recv_push().await["data"], "still here");
}

/// A text frame that is not UTF-8 breaks the WebSocket protocol itself.
#[tokio::test]
async fn invalid_utf8_text_frame_closes_with_4502() {
    let hub = TestHub::spawn().await;
    let mut tcp = crate::helpers::raw_socket(&hub, "raw").await;
    // FIN + text opcode, masked, 2-byte payload 0xff 0xfe (never valid UTF-8), zero mask.
    tcp.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe])
        .await
        .unwrap();
    assert_eq!(crate::helpers::raw_close_code(&mut tcp).await, 4502);
}

/// RFC 6455 §7.4.1: a close frame with a code that may not be sent on the
/// wire is a protocol error, answered with 1002 (documented in PROTOCOL.md).
#[tokio::test]
async fn a_close_frame_with_a_forbidden_code_is_answered_with_1002() {
    let hub = TestHub::spawn().await;
    for code in [999u16, 1005, 1006, 5000] {
        let mut tcp = crate::helpers::raw_socket(&hub, "closer").await;
        let mask = [1u8, 2, 3, 4];
        let payload = code.to_be_bytes();
        let mut frame = vec![0x88, 0x80 | 2];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask).map(|(b, m)| b ^ m));
        tcp.write_all(&frame).await.unwrap();
        assert_eq!(
            crate::helpers::raw_close_code(&mut tcp).await,
            1002,
            "code {code}"
        );
    }
}

#[tokio::test]
async fn an_unsupported_websocket_version_is_told_which_one_to_use() {
    use tokio::io::AsyncReadExt;
    let hub = TestHub::spawn().await;
    let mut tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let request = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\
         Connection: close\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(crate::helpers::WAIT, tcp.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = response.to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 400"), "{response}");
    assert!(
        response.contains("\r\nsec-websocket-version: 13\r\n"),
        "{response}"
    );
}
