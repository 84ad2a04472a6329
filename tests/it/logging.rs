//! Secrets stay out of the logs at every level: the real binary runs with
//! `RUST_LOG=trace`, a client authenticates and refreshes, and no token,
//! refresh token, API key or secret shows up in what it printed.

use std::fmt::Write as _;

use herald::auth::{AuthConfig, TokenIssuer};
use serde_json::json;

use crate::helpers::{Client, HeraldProcess, WAIT, api_request};

const API_KEY: &str = "logging-test-api-key-0123456789-abcdefghij";
const SECRET: &str = "logging-test-hmac-secret-0123456789-abcdefghij";

fn hex(text: &str) -> String {
    text.bytes().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[tokio::test]
async fn at_trace_level_no_token_or_key_reaches_the_logs() {
    let mut command = HeraldProcess::command();
    command
        .env(
            "RUST_LOG",
            "trace,tungstenite=trace,tokio_tungstenite::compat=trace",
        )
        .env("HERALD_SERVER__API_KEY", API_KEY)
        .env("HERALD_AUTH__SECRET", SECRET);
    let HeraldProcess {
        mut child,
        addr,
        logs,
    } = HeraldProcess::start(command).await;

    let issuer = TokenIssuer::new(&AuthConfig {
        secret: SECRET.into(),
        ..AuthConfig::default()
    })
    .unwrap();
    let token = issuer.mint("carol", 600).unwrap();
    let fresh = issuer.mint("carol", 900).unwrap();
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    let mut client = Client::from_stream(ws);
    let welcome = client
        .request(json!({"type": "auth", "id": 1, "token": token}))
        .await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let reply = client
        .request(json!({"type": "refresh", "id": 2, "token": fresh}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 2}));

    let url = |path: &str| format!("http://{addr}{path}");
    let (status, session) = api_request(
        &url("/api/v1/sessions"),
        Some(API_KEY),
        json!({"user": "carol"}),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    let (status, rotated) = api_request(
        &url("/api/v1/sessions/refresh"),
        None,
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    // The replies above came after herald read (and would have logged) every request.
    child.kill().await.unwrap();
    drop(client);

    let logs = logs.lock().await.clone();
    // Verbose logging is on (herald's own debug events show): the check
    // below is not vacuous.
    assert!(
        logs.contains("DEBUG") && logs.contains("connected"),
        "{logs}"
    );
    let secrets = [
        ("access token", token.as_str()),
        ("refreshed access token", fresh.as_str()),
        (
            "session access token",
            session["access_token"].as_str().unwrap(),
        ),
        ("refresh token", refresh.as_str()),
        (
            "rotated refresh token",
            rotated["refresh_token"].as_str().unwrap(),
        ),
        ("API key", API_KEY),
        ("secret", SECRET),
    ];
    for (what, secret) in secrets {
        // The signature part alone would already let someone replay the token.
        let tail = secret.rsplit(['.']).next().unwrap();
        for form in [secret.to_owned(), tail.to_owned(), hex(secret)] {
            assert!(!logs.contains(&form), "the {what} reached the logs");
        }
    }
}
