//! The connection lifecycle without TCP: the core serves a native transport
//! over an in-memory pipe, on a clock the test controls (`start_paused`), so
//! timeouts are checked exactly instead of with wall-clock margins.

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use herald::{app::App, core::ClientContext, native::NativeTransport, protocol::Format};
use serde_json::{Value, json};
use tokio::{io::DuplexStream, time::Instant};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::Role},
};

use crate::helpers::test_config;

type Ws = WebSocketStream<DuplexStream>;

/// A node (not listening: nothing runs but what the test starts) and its
/// client context, with the heartbeat scanner running.
async fn node(edit: impl FnOnce(&mut herald::config::Config)) -> (App, Arc<ClientContext>) {
    let mut config = test_config();
    edit(&mut config);
    let app = App::build(config).await.unwrap();
    let clients = app.clients();
    tokio::spawn(Arc::clone(clients.hub()).run_heartbeats());
    (app, clients)
}

/// Opens an in-memory WebSocket served by `clients`; returns the client end.
async fn open(clients: &Arc<ClientContext>, token: Option<String>) -> Ws {
    let (server, client) = tokio::io::duplex(64 * 1024);
    let (server, client) = tokio::join!(
        WebSocketStream::from_raw_socket(server, Role::Server, None),
        WebSocketStream::from_raw_socket(client, Role::Client, None),
    );
    tokio::spawn(clients.serve(NativeTransport::new(server, Format::Json), token));
    client
}

/// The next text message, skipping control frames; `Err(code)` on close.
async fn next(ws: &mut Ws) -> Result<Value, u16> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map_or(1005, |f| f.code.into())),
            Some(Ok(_)) => {}
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

fn token(app: &App, user: &str) -> String {
    herald::auth::TokenIssuer::new(&app.state().config.auth)
        .unwrap()
        .mint(user, 3600)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_authenticates_is_closed_exactly_at_the_auth_timeout() {
    let (_app, clients) = node(|c| c.auth.timeout_ms = 5_000).await;
    let started = Instant::now();
    let mut ws = open(&clients, None).await;
    assert_eq!(next(&mut ws).await, Err(4003));
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(5_000)..Duration::from_millis(5_100)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_full_request_cycle_runs_without_a_socket() {
    let (app, clients) = node(|_| {}).await;
    let mut ws = open(&clients, None).await;
    let auth = json!({"type": "auth", "id": 1, "token": token(&app, "42")});
    ws.send(Message::text(auth.to_string())).await.unwrap();
    let welcome = next(&mut ws).await.unwrap();
    assert_eq!(
        (welcome["type"].as_str(), welcome["user_id"].as_str()),
        (Some("welcome"), Some("42"))
    );
    let subscribe = json!({"type": "subscribe", "id": 2, "channel": "prices.btc"});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap(), json!({"type": "ok", "id": 2}));
    let publication = herald::protocol::Publication {
        channel: herald::protocol::ChannelName::parse("prices.btc", 128).unwrap(),
        event: herald::protocol::EventName::parse("tick").unwrap(),
        data: herald::protocol::JsonData::from_json("{\"p\":1}").unwrap(),
        ts: None,
        position: None,
        history: None,
    };
    clients.hub().publish(vec![publication]).await.unwrap();
    assert_eq!(
        next(&mut ws).await.unwrap(),
        json!({"type": "push", "channel": "prices.btc", "event": "tick", "data": {"p": 1}})
    );
}

/// A client whose WebSocket layer never answers pings (the test does not
/// read its end, so nothing sends the pongs) is closed with 4002 after
/// interval + timeout of silence, measured on the paused clock.
#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_interval_plus_timeout() {
    let (app, clients) = node(|c| {
        c.heartbeat.interval_ms = 10_000;
        c.heartbeat.timeout_ms = 5_000;
    })
    .await;
    let mut ws = open(&clients, Some(token(&app, "quiet"))).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "welcome");
    let silent_since = Instant::now();
    // Sleep without reading: pings pile up unanswered in the pipe.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(clients.hub().stats(0).connections, 1, "closed too early");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let code = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame.map_or(1005, |f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 4002);
    let silent = silent_since.elapsed();
    assert!(silent >= Duration::from_secs(15), "{silent:?}");
}
