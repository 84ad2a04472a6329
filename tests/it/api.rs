//! The backend HTTP API: keys, validation, batch.

use serde_json::json;

use crate::helpers::{TestHub, api_request};

#[tokio::test]
async fn publish_without_or_with_a_wrong_key_is_401() {
    let hub = TestHub::spawn().await;
    let body = json!({"channel": "c", "event": "e", "data": 1});
    let url = hub.url("/api/v1/publish");
    let (status, error) = api_request(&url, None, body.clone()).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = api_request(&url, Some("not-the-key"), body).await;
    assert_eq!(status, 401);
    let stats = reqwest::Client::new()
        .get(hub.url("/api/v1/stats"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 401);
}

#[tokio::test]
async fn batch_publish_answers_per_publication() {
    let hub = TestHub::spawn().await;
    let mut a = hub.connect("a").await;
    let mut b = hub.connect("b").await;
    a.subscribe("x").await;
    b.subscribe("x").await;
    let (status, body) = hub
        .api(
            "/api/v1/publish/batch",
            json!({"publications": [
                {"channel": "x", "event": "e", "data": 1},
                {"channel": "y", "event": "e", "data": 2},
                {"user": "a", "event": "e", "data": 3},
                {"broadcast": true, "event": "e", "data": 4},
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"results": [{"subscribers": 2}, {"subscribers": 0}, {"subscribers": 1}, {"subscribers": 2}]})
    );
    let seen: Vec<_> = [
        a.recv_push().await,
        a.recv_push().await,
        a.recv_push().await,
    ]
    .iter()
    .map(|p| p["data"].clone())
    .collect();
    assert_eq!(seen, [json!(1), json!(3), json!(4)]);
}

#[tokio::test]
async fn bad_input_is_4xx_naming_the_problem() {
    let hub = TestHub::with(|c| c.limits.max_data_size = 100).await;
    let cases = [
        (
            json!({"channel": "bad name", "event": "e", "data": 1}),
            400,
            "invalid_channel",
        ),
        (
            json!({"channel": "c", "event": "", "data": 1}),
            400,
            "invalid_event",
        ),
        (
            json!({"channel": "c", "user": "u", "event": "e", "data": 1}),
            400,
            "invalid_target",
        ),
        (json!({"event": "e", "data": 1}), 400, "invalid_target"),
        (
            json!({"user": "a b", "event": "e", "data": 1}),
            400,
            "invalid_user",
        ),
        (json!({"channel": "c", "event": "e"}), 400, "invalid_json"),
        (
            json!({"channel": "c", "event": "e", "data": 1, "extra": true}),
            400,
            "invalid_json",
        ),
        (
            json!({"channel": "c", "event": "e", "data": "x".repeat(200)}),
            413,
            "data_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let (got, error) = hub.api("/api/v1/publish", body.clone()).await;
        assert_eq!(
            (got, error["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, error) = hub
        .api(
            "/api/v1/publish/batch",
            json!({"publications": [{"channel": "ok", "event": "e", "data": 1}, {"channel": "no way", "event": "e", "data": 1}]}),
        )
        .await;
    assert_eq!((status, error["error"]["index"].as_u64()), (400, Some(1)));
    let (status, error) = hub
        .api("/api/v1/publish/batch", json!({"publications": []}))
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_batch"))
    );
}

#[tokio::test]
async fn stats_and_disconnect_user() {
    let hub = TestHub::with(|c| c.server.node_id = Some("n1".into())).await;
    let mut a = hub.connect("kick-me").await;
    a.subscribe("room").await;
    let stats: serde_json::Value = reqwest::Client::new()
        .get(hub.url("/api/v1/stats"))
        .bearer_auth(herald::config::DEV_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["node"]["node_id"], "n1");
    assert_eq!(stats["node"]["connections"], 1);
    assert_eq!(stats["node"]["subscriptions"], 3);
    assert!(
        stats["node"]["top_channels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["channel"] == "room")
    );
    let (status, body) = hub.api("/api/v1/users/kick-me/disconnect", json!({})).await;
    assert_eq!((status, body), (200, json!({"disconnected": 1})));
    assert_eq!(a.expect_close().await.0, 4504);
}
