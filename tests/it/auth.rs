//! Connection authentication: token placement, JWT checks, anonymous access.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use crate::helpers::TestHub;

fn sign(claims: &Value, alg: Algorithm, secret: &str) -> String {
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn dev_secret() -> &'static str {
    herald::auth::DEV_SECRET
}

/// Connects with `token` in the query and returns the close code and reason.
async fn refused(hub: &TestHub, token: &str) -> (u16, String) {
    let mut client = hub.connect_raw(&format!("/ws?token={token}"), &[]).await;
    client.expect_close().await
}

#[tokio::test]
async fn bad_tokens_are_closed_with_documented_codes() {
    let hub = TestHub::spawn().await;
    let now = get_current_timestamp();
    let valid = json!({"sub": "42", "exp": now + 60});

    let expired = sign(
        &json!({"sub": "42", "exp": now - 3600}),
        Algorithm::HS256,
        dev_secret(),
    );
    assert_eq!(
        refused(&hub, &expired).await,
        (4005, "token expired".into())
    );

    let wrong_key = sign(&valid, Algorithm::HS256, "some-other-secret");
    assert_eq!(
        refused(&hub, &wrong_key).await,
        (4500, "invalid token: bad signature".into())
    );

    let wrong_alg = sign(&valid, Algorithm::HS512, dev_secret());
    assert_eq!(
        refused(&hub, &wrong_alg).await,
        (4500, "invalid token: algorithm not allowed".into())
    );

    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(valid.to_string());
    let alg_none = format!("{header}.{payload}.");
    assert_eq!(refused(&hub, &alg_none).await.0, 4500);

    let no_sub = sign(&json!({"exp": now + 60}), Algorithm::HS256, dev_secret());
    assert_eq!(
        refused(&hub, &no_sub).await,
        (4500, "invalid token: missing or invalid sub claim".into())
    );

    let bad_sub = sign(
        &json!({"sub": "a b", "exp": now + 60}),
        Algorithm::HS256,
        dev_secret(),
    );
    assert_eq!(refused(&hub, &bad_sub).await.0, 4500);

    let no_exp = sign(&json!({"sub": "42"}), Algorithm::HS256, dev_secret());
    assert_eq!(refused(&hub, &no_exp).await.0, 4500);

    assert_eq!(
        refused(&hub, "garbage").await,
        (4500, "invalid token: malformed token".into())
    );

    // The hub still serves good clients after all of that.
    let mut good = hub.connect("42").await;
    assert_eq!(
        good.request(json!({"type": "ping", "id": 1})).await,
        json!({"type": "pong", "id": 1})
    );
}

#[tokio::test]
async fn token_in_the_first_message_and_requests_before_it() {
    let hub = TestHub::spawn().await;
    let mut client = hub.connect_raw("/ws", &[]).await;
    let early = client
        .request(json!({"type": "subscribe", "id": 1, "channel": "x"}))
        .await;
    assert_eq!(
        (early["id"].as_u64(), early["code"].as_u64()),
        (Some(1), Some(108))
    );
    let welcome = client
        .request(json!({"type": "auth", "id": 2, "token": hub.token("9")}))
        .await;
    assert_eq!(
        (welcome["type"].as_str(), welcome["id"].as_u64()),
        (Some("welcome"), Some(2))
    );
    assert_eq!(welcome["user_id"], "9");
    let again = client
        .request(json!({"type": "auth", "id": 3, "token": hub.token("9")}))
        .await;
    assert_eq!(again["code"], 109);
}

#[tokio::test]
async fn token_in_the_subprotocol_header() {
    let hub = TestHub::spawn().await;
    let protocols = [
        "herald.v1.json".to_owned(),
        format!("bearer.{}", hub.token("5")),
    ];
    let mut client = hub.connect_raw("/ws", &protocols).await;
    assert_eq!(client.recv().await["user_id"], "5");
}

#[tokio::test]
async fn no_auth_within_the_timeout_closes_with_4003() {
    let hub = TestHub::with(|c| c.auth.timeout_ms = 200).await;
    let mut client = hub.connect_raw("/ws", &[]).await;
    assert_eq!(client.expect_close().await.0, 4003);
}

#[tokio::test]
async fn anonymous_is_refused_unless_allowed_and_then_limited_to_public_channels() {
    let closed = TestHub::spawn().await;
    let mut client = closed.connect_raw("/ws", &[]).await;
    client.send(json!({"type": "auth", "id": 1})).await;
    assert_eq!(client.expect_close().await.0, 4501);

    let open = TestHub::with(|c| {
        c.auth.allow_anonymous = true;
        c.channels.namespaces = vec![crate::helpers::namespace(
            "public.*",
            herald::core::Access::Public,
            false,
            false,
        )];
    })
    .await;
    let mut anon = open.connect_raw("/ws", &[]).await;
    let welcome = anon.request(json!({"type": "auth", "id": 1})).await;
    assert_eq!(
        (welcome["type"].as_str(), &welcome["user_id"]),
        (Some("welcome"), &Value::Null)
    );
    assert_eq!(welcome["channels"], json!(["broadcast"]));
    anon.subscribe("public.news").await;
    let denied = anon
        .request(json!({"type": "subscribe", "id": 2, "channel": "private.news"}))
        .await;
    assert_eq!(denied["code"], 104);
    open.publish("public.news", "headline", json!("hi")).await;
    assert_eq!(anon.recv_push().await["data"], "hi");
    anon.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn expiring_tokens_are_warned_then_refreshed_in_band_or_closed_with_4005() {
    let hub = TestHub::with(|c| {
        c.auth.expiry_warning_ms = 2500;
        c.auth.expiry_grace_ms = 300;
        c.heartbeat.interval_ms = 500;
    })
    .await;
    let issuer = herald::auth::TokenIssuer::new(&hub.state.config.auth).unwrap();
    let short = issuer.mint("r", 2).unwrap();
    let mut refreshing = hub.connect_raw(&format!("/ws?token={short}"), &[]).await;
    let mut lapsing = hub.connect_raw(&format!("/ws?token={short}"), &[]).await;
    for client in [&mut refreshing, &mut lapsing] {
        assert_eq!(client.recv().await["type"], "welcome");
        let warning = client.recv().await;
        assert_eq!(warning["type"], "token_expiring", "{warning}");
        assert!(warning["expires_in_ms"].as_u64().unwrap() <= 2300);
    }
    let reply = refreshing
        .request(json!({"type": "refresh", "id": 1, "token": hub.token("someone-else")}))
        .await;
    assert_eq!(reply["code"], 114);
    let reply = refreshing
        .request(json!({"type": "refresh", "id": 2, "token": "garbage"}))
        .await;
    assert_eq!(reply["code"], 114);
    let reply = refreshing
        .request(json!({"type": "refresh", "id": 3, "token": hub.token("r")}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 3}));
    // Without a refresh: closed at expiry + grace, with the reconnect-range code.
    assert_eq!(lapsing.expect_close().await, (4005, "token expired".into()));
    // The refreshed connection lives on.
    refreshing.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(
        refreshing.request(json!({"type": "ping", "id": 4})).await["type"],
        "pong"
    );
}

/// Connects with `token` in the query and reads the welcome.
async fn welcomed(hub: &TestHub, token: &str) -> crate::helpers::Client {
    let mut client = hub.connect_raw(&format!("/ws?token={token}"), &[]).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    client
}

#[tokio::test]
async fn a_far_future_exp_never_expires_and_the_expiry_sweep_survives_it() {
    // Within the leeway, an `exp` just past is admitted; the sweep closes it
    // on its next round, which proves the sweep ran over every connection.
    // Any grace at all overflowed `exp` in ms (saturated) + grace.
    let hub = TestHub::with(|c| {
        c.auth.leeway_secs = 60;
        c.auth.expiry_grace_ms = 1;
    })
    .await;
    let secret = dev_secret();
    let far = sign(
        &json!({"sub": "far", "exp": 1u64 << 62}),
        Algorithm::HS256,
        secret,
    );
    let mut far = welcomed(&hub, &far).await;
    let lapsed = || {
        let exp = get_current_timestamp() - 1;
        sign(
            &json!({"sub": "lapsed", "exp": exp}),
            Algorithm::HS256,
            secret,
        )
    };
    // Two rounds: the one that closes the first may have met `far` after
    // it; the second can only run if meeting `far` did not stop the sweep.
    for _ in 0..2 {
        let mut lapsing = welcomed(&hub, &lapsed()).await;
        assert_eq!(lapsing.expect_close().await, (4005, "token expired".into()));
    }
    assert_eq!(
        far.request(json!({"type": "ping", "id": 1})).await,
        json!({"type": "pong", "id": 1})
    );
}

#[tokio::test]
async fn iss_must_be_the_one_configured_string_and_aud_may_be_a_list_holding_it() {
    let hub = TestHub::with(|c| {
        c.auth.issuer = Some("https://issuer.test".into());
        c.auth.audience = Some("herald".into());
    })
    .await;
    let exp = get_current_timestamp() + 600;
    let token = |iss: Value, aud: Value| {
        let claims = json!({"sub": "7", "exp": exp, "iss": iss, "aud": aud});
        sign(&claims, Algorithm::HS256, dev_secret())
    };
    let iss = json!("https://issuer.test");
    let aud = json!("herald");
    for bad_iss in [
        json!(["https://evil.test", "https://issuer.test"]),
        json!(["https://issuer.test"]),
        json!("https://evil.test"),
        json!(7),
        Value::Null,
    ] {
        assert_eq!(
            refused(&hub, &token(bad_iss.clone(), aud.clone())).await,
            (4500, "invalid token: invalid claim: iss".into()),
            "iss {bad_iss}"
        );
    }
    for bad_aud in [json!(["other"]), json!("other"), json!([]), json!(7)] {
        assert_eq!(
            refused(&hub, &token(iss.clone(), bad_aud.clone())).await,
            (4500, "invalid token: invalid claim: aud".into()),
            "aud {bad_aud}"
        );
    }
    for good_aud in [aud, json!(["other", "herald"])] {
        welcomed(&hub, &token(iss.clone(), good_aud)).await;
    }
}
