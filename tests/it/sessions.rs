//! Sessions and abuse protection: refresh rotation and reuse, logout across
//! nodes, revocation, token validation, key rotation, permissions, origins,
//! rate limits.

use std::path::PathBuf;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use herald::{
    auth::{KeyAlgorithm, KeyConfig},
    config::{Config, EngineKind},
    core::Access,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use crate::{
    helpers::{TestHub, api_request, namespace},
    redis_server::RedisServer,
};

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/keys")
        .join(name)
}

async fn create_session(hub: &TestHub, body: Value) -> Value {
    let (status, session) = hub.api("/api/v1/sessions", body).await;
    assert_eq!(status, 201, "{session}");
    session
}

/// POSTs to a browser-facing session endpoint (no API key).
async fn browser(hub: &TestHub, path: &str, refresh_token: &str) -> (u16, Value) {
    api_request(
        &hub.url(path),
        None,
        json!({ "refresh_token": refresh_token }),
    )
    .await
}

#[tokio::test]
async fn session_connect_refresh_in_band_rotate_and_old_token_refused() {
    let hub = TestHub::spawn().await;
    let session = create_session(&hub, json!({"user": "alice", "claims": {"plan": "pro"}})).await;
    assert_eq!(session["token_type"], "Bearer");
    assert_eq!(session["expires_in"], 900);
    assert_eq!(session["refresh_expires_in"], 604_800);
    let access = session["access_token"].as_str().unwrap();
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    // ≥ 256 bits of secret after the session id.
    assert!(refresh.split_once('.').unwrap().1.len() >= 43);

    let mut client = hub.connect_raw(&format!("/ws?token={access}"), &[]).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["user_id"], "alice");
    let sid = session["session_id"].as_str().unwrap();
    assert!(
        welcome["channels"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("session:{sid}")))
    );

    let (status, rotated) = browser(&hub, "/api/v1/sessions/refresh", &refresh).await;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["refresh_token"], json!(refresh));
    let reply = client
        .request(json!({"type": "refresh", "id": 1, "token": rotated["access_token"]}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 1}));
    // Same user, but no session: it may not extend this session's connection.
    let reply = client
        .request(json!({"type": "refresh", "id": 2, "token": hub.token("alice")}))
        .await;
    assert_eq!(
        (reply["code"].as_u64(), reply["reason"].as_str()),
        (
            Some(114),
            Some("token rejected: it belongs to another session")
        )
    );

    let (status, rotated_again) = browser(
        &hub,
        "/api/v1/sessions/refresh",
        rotated["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{rotated_again}");
    // The very first refresh token is long gone: reuse.
    let (status, error) = browser(&hub, "/api/v1/sessions/refresh", &refresh).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("refresh_token_reused"))
    );
    let (status, error) = browser(&hub, "/api/v1/sessions/refresh", "garbage").await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("invalid_refresh_token"))
    );
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_family_and_closes_its_sockets() {
    let hub = TestHub::spawn().await;
    let session = create_session(&hub, json!({"user": "bob"})).await;
    let old = session["refresh_token"].as_str().unwrap();
    let mut client = hub
        .connect_raw(
            &format!("/ws?token={}", session["access_token"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(client.recv().await["type"], "welcome");
    let (status, new) = browser(&hub, "/api/v1/sessions/refresh", old).await;
    assert_eq!(status, 200);
    // A thief replays the old token: the whole session dies.
    let (status, _) = browser(&hub, "/api/v1/sessions/refresh", old).await;
    assert_eq!(status, 401);
    assert_eq!(
        client.expect_close().await,
        (4505, "session revoked".into())
    );
    let (status, error) = browser(
        &hub,
        "/api/v1/sessions/refresh",
        new["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("session_revoked"))
    );
    // Its access tokens no longer open sockets either.
    let mut late = hub
        .connect_raw(
            &format!("/ws?token={}", new["access_token"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(late.expect_close().await.0, 4505);
}

async fn concurrent_refreshes(hub: &TestHub) {
    let session = create_session(hub, json!({"user": "carol"})).await;
    let token = session["refresh_token"].as_str().unwrap().to_owned();
    let url = hub.url("/api/v1/sessions/refresh");
    let attempts = (0..8).map(|_| {
        let (url, token) = (url.clone(), token.clone());
        tokio::spawn(async move {
            api_request(&url, None, json!({"refresh_token": token}))
                .await
                .0
        })
    });
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_have_exactly_one_winner() {
    concurrent_refreshes(&TestHub::spawn().await).await;
    let redis = RedisServer::start();
    let hub = redis_hub(&redis, "a").await;
    concurrent_refreshes(&hub).await;
}

/// Lifetimes outside their ranges are refused naming the field, and the
/// largest allowed ones work.
async fn lifetimes_are_bounded(hub: &TestHub) {
    let refused = [
        ("refresh_ttl_secs", json!(u64::MAX)),
        ("access_ttl_secs", json!(u64::MAX)),
        ("access_ttl_secs", json!(0)),
        ("refresh_ttl_secs", json!(0)),
        ("access_ttl_secs", json!(86_401)),
        ("refresh_ttl_secs", json!(31_536_001)),
        ("refresh_ttl_secs", json!(-1)),
        ("access_ttl_secs", json!(1.5)),
        ("refresh_ttl_secs", json!(1e30)),
    ];
    for (field, value) in refused {
        let mut body = json!({"user": "ttl"});
        body[field] = value.clone();
        let (status, reply) = hub.api("/api/v1/sessions", body).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some("invalid_ttl")),
            "{field} = {value}: {reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{message}");
    }
    let session = create_session(
        hub,
        json!({"user": "ttl", "access_ttl_secs": 86_400, "refresh_ttl_secs": 31_536_000}),
    )
    .await;
    assert_eq!(
        (&session["expires_in"], &session["refresh_expires_in"]),
        (&json!(86_400), &json!(31_536_000))
    );
    let access = session["access_token"].as_str().unwrap();
    let payload = URL_SAFE_NO_PAD
        .decode(access.split('.').nth(1).unwrap())
        .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        claims["exp"].as_u64(),
        claims["iat"].as_u64().map(|t| t + 86_400)
    );
    // The session works: it refreshes.
    let (status, _) = browser(
        hub,
        "/api/v1/sessions/refresh",
        session["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn session_lifetimes_are_bounded_with_the_memory_engine() {
    lifetimes_are_bounded(&TestHub::spawn().await).await;
}

#[tokio::test]
async fn session_lifetimes_are_bounded_with_redis_and_every_session_has_a_ttl() {
    let redis = RedisServer::start();
    let hub = redis_hub(&redis, "a").await;
    lifetimes_are_bounded(&hub).await;
    let mut conn = redis.client();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("herald:s:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 1, "only the valid session is stored: {keys:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query(&mut conn).unwrap();
    assert!(
        ttl > 31_535_000_000 && ttl <= 31_536_000_000,
        "a year, renewed by the refresh: {ttl}"
    );
}

#[tokio::test]
async fn with_redis_gone_every_503_is_the_stable_message_without_redis_internals() {
    let mut redis = RedisServer::start();
    let hub = redis_hub(&redis, "a").await;
    let session = create_session(&hub, json!({"user": "erin"})).await;
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    redis.kill();
    let store = json!({"error": {
        "code": "session_store_unavailable",
        "message": "the session store is unavailable; retry later",
    }});
    let engine = json!({"error": {
        "code": "engine_unavailable",
        "message": "the engine is unavailable; retry with backoff",
    }});
    // The browser-facing refresh takes no API key: it must not leak either.
    let answers = [
        (
            browser(&hub, "/api/v1/sessions/refresh", &refresh).await,
            &store,
        ),
        (
            hub.api("/api/v1/sessions", json!({"user": "erin"})).await,
            &store,
        ),
        (
            hub.api(
                "/api/v1/publish",
                json!({"channel": "c", "event": "e", "data": 1}),
            )
            .await,
            &engine,
        ),
    ];
    for ((status, body), expected) in answers {
        assert_eq!((status, &body), (503, expected));
    }
}

#[tokio::test]
async fn without_a_signing_key_sessions_answer_a_stable_503() {
    let hub = TestHub::with(|c: &mut Config| {
        c.auth.algorithm = KeyAlgorithm::ES256;
        c.auth.public_key_file = Some(key_file("ec.pub.pem"));
    })
    .await;
    let (status, body) = hub.api("/api/v1/sessions", json!({"user": "frank"})).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"error": {
                "code": "no_signing_key",
                "message": "herald has no key to sign access tokens with",
            }})
        )
    );
}

async fn redis_hub(redis: &RedisServer, node: &str) -> TestHub {
    let url = redis.url();
    let hub = TestHub::with(move |c: &mut Config| {
        c.engine.kind = EngineKind::Redis;
        c.engine.url = url;
        c.server.node_id = Some(node.into());
    })
    .await;
    hub.wait_ready().await;
    hub
}

#[tokio::test]
async fn logout_on_node_a_closes_the_socket_on_node_b_and_survives_restart() {
    let redis = RedisServer::start();
    let a = redis_hub(&redis, "a").await;
    let b = redis_hub(&redis, "b").await;
    let session = create_session(&a, json!({"user": "dave"})).await;
    let access = session["access_token"].as_str().unwrap().to_owned();
    let mut on_b = b.connect_raw(&format!("/ws?token={access}"), &[]).await;
    assert_eq!(on_b.recv().await["type"], "welcome");
    let (status, _) = browser(
        &a,
        "/api/v1/sessions/logout",
        session["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 204);
    // Bounded by the client's wait (a hang fails), not by a timing guess.
    assert_eq!(on_b.expect_close().await.0, 4505);
    // A node started after the logout still refuses the session: it is in Redis.
    let c = redis_hub(&redis, "c").await;
    let mut late = c.connect_raw(&format!("/ws?token={access}"), &[]).await;
    assert_eq!(late.expect_close().await.0, 4505);
    // No refresh token is stored in plain text anywhere in Redis.
    let refresh = session["refresh_token"].as_str().unwrap();
    let secret = refresh.split_once('.').unwrap().1;
    let mut conn = redis.client();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query(&mut conn).unwrap();
        let text = String::from_utf8_lossy(&dump);
        assert!(
            !text.contains(secret) && !key.contains(secret),
            "refresh token in plain text under {key}"
        );
    }
}

#[tokio::test]
async fn revoke_all_sessions_of_a_user() {
    let hub = TestHub::spawn().await;
    let one = create_session(&hub, json!({"user": "erin"})).await;
    let two = create_session(&hub, json!({"user": "erin"})).await;
    let other = create_session(&hub, json!({"user": "frank"})).await;
    let mut sockets = Vec::new();
    for session in [&one, &two] {
        let mut client = hub
            .connect_raw(
                &format!("/ws?token={}", session["access_token"].as_str().unwrap()),
                &[],
            )
            .await;
        assert_eq!(client.recv().await["type"], "welcome");
        sockets.push(client);
    }
    let response = reqwest::Client::new()
        .delete(hub.url("/api/v1/users/erin/sessions"))
        .bearer_auth(herald::config::DEV_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"revoked": 2})
    );
    for socket in &mut sockets {
        assert_eq!(socket.expect_close().await.0, 4505);
    }
    for session in [&one, &two] {
        let (status, _) = browser(
            &hub,
            "/api/v1/sessions/refresh",
            session["refresh_token"].as_str().unwrap(),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, _) = browser(
        &hub,
        "/api/v1/sessions/refresh",
        other["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200, "another user's session must survive");
}

fn sign_with(header: Header, claims: &Value, key: &EncodingKey) -> String {
    encode(&header, claims, key).unwrap()
}

async fn close_code(hub: &TestHub, token: &str) -> (u16, String) {
    hub.connect_raw(&format!("/ws?token={token}"), &[])
        .await
        .expect_close()
        .await
}

#[tokio::test]
async fn token_validation_refuses_every_bad_token_with_documented_codes() {
    let rsa_public = std::fs::read_to_string(key_file("rsa.pub.pem")).unwrap();
    let hub = TestHub::with(|c| {
        c.auth.issuer = Some("https://auth.example".into());
        c.auth.audience = Some("herald".into());
        c.auth.keys = vec![KeyConfig {
            kid: "rsa-1".into(),
            algorithm: KeyAlgorithm::RS256,
            secret: None,
            public_key: None,
            public_key_file: Some(key_file("rsa.pub.pem")),
            private_key_file: None,
        }];
    })
    .await;
    let now = get_current_timestamp();
    let good = json!({"sub": "u", "exp": now + 60, "iss": "https://auth.example", "aud": "herald"});
    let secret = EncodingKey::from_secret(herald::auth::DEV_SECRET.as_bytes());
    let hs = |claims: &Value| sign_with(Header::new(Algorithm::HS256), claims, &secret);
    let with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        claims
    };
    // The good token works (so the refusals below are about what they change).
    let mut ok = hub
        .connect_raw(&format!("/ws?token={}", hs(&good)), &[])
        .await;
    assert_eq!(ok.recv().await["type"], "welcome");

    // Flip one bit of the decoded signature and re-encode it canonically
    // (editing the last base64 character can give a non-canonical ending,
    // which is refused as malformed, not as a bad signature).
    let tampered = {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        let token = hs(&good);
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        signature[0] ^= 1;
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    };
    assert_eq!(
        close_code(&hub, &tampered).await,
        (4500, "invalid token: bad signature".into())
    );
    assert_eq!(
        close_code(&hub, &hs(&with("exp", json!(now - 3600))))
            .await
            .0,
        4005
    );
    assert_eq!(
        close_code(&hub, &hs(&with("nbf", json!(now + 3600)))).await,
        (
            4500,
            "invalid token: invalid claim: nbf is in the future".into()
        )
    );
    assert_eq!(
        close_code(&hub, &hs(&with("aud", json!("other")))).await,
        (4500, "invalid token: invalid claim: aud".into())
    );
    assert_eq!(
        close_code(&hub, &hs(&with("iss", json!("https://evil")))).await,
        (4500, "invalid token: invalid claim: iss".into())
    );
    let mut missing_aud = good.clone();
    missing_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(close_code(&hub, &hs(&missing_aud)).await.0, 4500);
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    assert_eq!(close_code(&hub, &alg_none).await.0, 4500);
    // HS/RS confusion: HS256 "signed" with the RSA public key, under the RSA kid.
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some("rsa-1".into());
    let forged = sign_with(
        confused,
        &good,
        &EncodingKey::from_secret(rsa_public.as_bytes()),
    );
    assert_eq!(
        close_code(&hub, &forged).await,
        (4500, "invalid token: algorithm not allowed".into())
    );
    let mut unknown = Header::new(Algorithm::HS256);
    unknown.kid = Some("nope".into());
    assert_eq!(
        close_code(&hub, &sign_with(unknown, &good, &secret)).await,
        (4500, "invalid token: unknown kid".into())
    );
    // A real RS256 token under the RSA kid is accepted.
    let mut rs = Header::new(Algorithm::RS256);
    rs.kid = Some("rsa-1".into());
    let rsa_private =
        EncodingKey::from_rsa_pem(&std::fs::read(key_file("rsa.key.pem")).unwrap()).unwrap();
    let mut client = hub
        .connect_raw(
            &format!("/ws?token={}", sign_with(rs, &good, &rsa_private)),
            &[],
        )
        .await;
    assert_eq!(client.recv().await["type"], "welcome");
}

#[tokio::test]
async fn key_rotation_old_and_new_keys_both_work_during_the_overlap() {
    let ec = KeyConfig {
        kid: "ec-2026".into(),
        algorithm: KeyAlgorithm::ES256,
        secret: None,
        public_key: None,
        public_key_file: Some(key_file("ec.pub.pem")),
        private_key_file: Some(key_file("ec.key.pem")),
    };
    let old = KeyConfig {
        kid: "hs-2025".into(),
        algorithm: KeyAlgorithm::HS512,
        secret: Some("the-old-rotating-secret-of-2025-0123456789".into()),
        public_key: None,
        public_key_file: None,
        private_key_file: None,
    };
    // Before: herald signs with the old key. After: with the new one, the old still verifies.
    let before = TestHub::with({
        let (ec, old) = (ec.clone(), old.clone());
        move |c| {
            c.auth.keys = vec![old, ec];
            c.auth.signing_kid = Some("hs-2025".into());
        }
    })
    .await;
    let old_token = create_session(&before, json!({"user": "gina"})).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let after = TestHub::with(move |c| {
        c.auth.keys = vec![old, ec];
        c.auth.signing_kid = Some("ec-2026".into());
    })
    .await;
    let new_token = create_session(&after, json!({"user": "gina"})).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(new_token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("ES256"), Some("ec-2026"))
    );
    for token in [&old_token, &new_token] {
        let mut client = after.connect_raw(&format!("/ws?token={token}"), &[]).await;
        assert_eq!(client.recv().await["user_id"], "gina");
    }
}

#[tokio::test]
async fn each_permission_kind_allows_and_refuses_over_the_wire() {
    let hub = TestHub::with(|c| {
        c.auth.allow_anonymous = true;
        c.channels.namespaces = vec![
            namespace("public.*", Access::Public, false, false),
            namespace("inbox:*", Access::Personal, true, false),
            namespace("tracking.*", Access::Granted, false, false),
        ];
    })
    .await;
    let session = create_session(&hub, json!({"user": "hana", "channels": ["tracking.42"]})).await;
    let mut hana = hub
        .connect_raw(
            &format!("/ws?token={}", session["access_token"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(hana.recv().await["type"], "welcome");
    let ivan = hub.connect("ivan").await;
    let mut anon = hub.connect_raw("/ws", &[]).await;
    assert_eq!(
        anon.request(json!({"type": "auth", "id": 0})).await["type"],
        "welcome"
    );
    let mut clients = [anon, ivan, hana];
    let (anon, ivan, hana) = (0, 1, 2);
    let cases = [
        (anon, "public.news", None),
        (anon, "private", Some(104)),
        (ivan, "private", None),
        (hana, "inbox:hana", None),
        (ivan, "inbox:hana", Some(104)),
        (hana, "tracking.42", None),
        (hana, "tracking.43", Some(104)),
        (ivan, "tracking.42", Some(104)),
        (anon, "inbox:hana", Some(104)),
    ];
    for (who, channel, code) in cases {
        let reply = clients[who]
            .request(json!({"type": "subscribe", "id": 5, "channel": channel}))
            .await;
        assert_eq!(reply["code"].as_u64(), code, "{channel}: {reply}");
    }
    let [_, mut ivan, mut hana] = clients;
    // Refusals leave the connection usable.
    assert_eq!(
        ivan.request(json!({"type": "ping", "id": 6})).await["type"],
        "pong"
    );
    let reply = hana
        .request(json!({"type": "publish", "id": 7, "channel": "inbox:hana", "event": "note", "data": 1}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 7}));
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_allowed_origins_get_cors() {
    let hub =
        TestHub::with(|c| c.server.allowed_origins = vec!["https://app.example.com".into()]).await;
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws?token={}",
            hub.addr,
            hub.token("o")
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example.net".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request.clone()).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 403),
        "{refused:?}"
    );
    request
        .headers_mut()
        .insert("origin", "https://app.example.com".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());

    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(
                reqwest::Method::OPTIONS,
                hub.url("/api/v1/sessions/refresh"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let foreign = preflight("https://evil.example.net").await.unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let health = reqwest::get(hub.url("/health")).await.unwrap();
    assert_eq!(health.headers()["x-content-type-options"], "nosniff");
    assert_eq!(health.headers()["x-frame-options"], "DENY");
}

/// The session store is chosen by `auth.session_store`, not by the engine:
/// two memory-engine nodes (which share no publications) share their login
/// sessions through Redis, and `memory` keeps them per node.
#[tokio::test]
async fn the_session_store_follows_its_own_setting_not_the_engine() {
    let redis = RedisServer::start();
    let node = |store: herald::auth::SessionStoreKind| {
        let url = redis.url();
        TestHub::with(move |c: &mut Config| {
            c.engine.kind = EngineKind::Memory;
            c.engine.url = url;
            c.auth.session_store = store;
        })
    };
    let a = node(herald::auth::SessionStoreKind::Redis).await;
    let b = node(herald::auth::SessionStoreKind::Redis).await;
    let session = create_session(&a, json!({"user": "gus"})).await;
    let refresh = session["refresh_token"].as_str().unwrap();
    let (status, rotated) = browser(&b, "/api/v1/sessions/refresh", refresh).await;
    assert_eq!(
        status, 200,
        "node b reads node a's session from Redis: {rotated}"
    );

    let c = node(herald::auth::SessionStoreKind::Memory).await;
    let rotated = rotated["refresh_token"].as_str().unwrap();
    let (status, body) = browser(&c, "/api/v1/sessions/refresh", rotated).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_refresh_token")),
        "a memory store knows only its own node's sessions"
    );
}
