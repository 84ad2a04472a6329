//! The Socket.IO endpoints at the HTTP level: the handshake's numbers, the
//! Engine.IO errors, and hostile requests refused or closed. The client
//! flows (both parsers, both transports, the upgrade) run with the real
//! socket.io-client in tests/socketio.

use serde_json::Value;

use crate::helpers::TestHub;

async fn get(hub: &TestHub, path_and_query: &str) -> (u16, String) {
    let response = reqwest::get(hub.url(path_and_query)).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn post(
    hub: &TestHub,
    path_and_query: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(hub.url(path_and_query))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Opens a polling session; returns its sid and the handshake.
async fn handshake(hub: &TestHub, path: &str) -> (String, Value) {
    let (status, body) = get(hub, &format!("{path}?EIO=4&transport=polling")).await;
    assert_eq!(status, 200, "{body}");
    let open: Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
    (open["sid"].as_str().unwrap().to_owned(), open)
}

fn code(body: &str) -> u64 {
    serde_json::from_str::<Value>(body).unwrap()["code"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn the_handshake_announces_heartbeat_and_payload_limit_then_connects() {
    let hub = TestHub::with(|c| {
        c.heartbeat.interval_ms = 1500;
        c.heartbeat.timeout_ms = 700;
        c.limits.max_message_size = 8192;
        c.limits.max_data_size = 4096;
    })
    .await;
    let (sid, open) = handshake(&hub, "/socket.io/").await;
    assert_eq!(open["pingInterval"], 1500);
    assert_eq!(open["pingTimeout"], 700);
    assert_eq!(open["maxPayload"], 8192);
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    let query = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let connect = format!(r#"40{{"token":"{}"}}"#, hub.token("alice"));
    assert_eq!(post(&hub, &query, connect).await, (200, "ok".to_owned()));
    let (status, body) = get(&hub, &query).await;
    assert_eq!(status, 200);
    assert!(body.starts_with(r#"40{"sid":""#), "{body}");
    assert!(body.contains(r#""user_id":"alice""#), "{body}");
}

#[tokio::test]
async fn bad_requests_get_engine_io_error_codes() {
    let hub = TestHub::spawn().await;
    let cases = [
        ("/socket.io/?EIO=3&transport=polling", 5),
        ("/socket.io/?transport=polling", 5),
        ("/socket.io/?EIO=4&transport=flashsocket", 0),
        ("/socket.io/?EIO=4&transport=polling&sid=nope", 1),
        ("/socket.io/?EIO=4&transport=polling&j=0", 3),
    ];
    for (query, expected) in cases {
        let (status, body) = get(&hub, query).await;
        assert_eq!((status, code(&body)), (400, expected), "{query}: {body}");
    }
    let (status, body) = post(&hub, "/socket.io/?EIO=4&transport=polling", "40").await;
    assert_eq!((status, code(&body)), (400, 2));
    // A session belongs to the parser of the path that opened it.
    let (sid, _) = handshake(&hub, "/socket.io/").await;
    let (status, body) = get(
        &hub,
        &format!("/socket.io-msgpack/?EIO=4&transport=polling&sid={sid}"),
    )
    .await;
    assert_eq!((status, code(&body)), (400, 1));
    let response = reqwest::Client::new()
        .get(hub.url("/socket.io/?EIO=4&transport=polling"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // A page on an allowed origin may poll cross-origin (CORS).
    let response = reqwest::Client::new()
        .get(hub.url("/socket.io/?EIO=4&transport=polling"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
}

#[tokio::test]
async fn overlapping_polls_and_bad_bodies_close_the_session() {
    let hub = TestHub::spawn().await;
    let (sid, _) = handshake(&hub, "/socket.io/").await;
    let query = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let first = tokio::spawn({
        let url = hub.url(&query);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (status, _) = get(&hub, &query).await;
    assert_eq!(status, 400);
    // The open poll learns why (CONNECT_ERROR with the close code), then the close.
    let mut seen = first.await.unwrap();
    while !seen.ends_with('1') {
        let (status, body) = get(&hub, &query).await;
        if status != 200 {
            break;
        }
        seen.push_str(&body);
    }
    assert!(seen.contains(r#""code":4502"#), "{seen}");

    let (sid, _) = handshake(&hub, "/socket.io/").await;
    let query = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(post(&hub, &query, "b!!!").await.0, 400);
    let (sid, _) = handshake(&hub, "/socket.io/").await;
    let query = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(post(&hub, &query, vec![b'6'; 70_000]).await.0, 413);
}

#[tokio::test]
async fn polling_sessions_are_capped_and_the_endpoints_can_be_off() {
    let hub = TestHub::with(|c| c.socketio.max_polling_sessions = 2).await;
    handshake(&hub, "/socket.io/").await;
    handshake(&hub, "/socket.io-msgpack/").await;
    let (status, _) = get(&hub, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 503);

    let off = TestHub::with(|c| c.socketio.enabled = false).await;
    let (status, _) = get(&off, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 404);
}
