//! Engine.IO over HTTP long-polling: the handshake that opens a session,
//! the `GET` long-poll that takes what the connection queued, and the `POST`
//! that hands the client's packets to it (see [`super::session`]).

use std::sync::Arc;

use axum::{
    body::Body,
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};

use super::{
    EioError, Endpoint, SocketIoSettings, admit, engine, new_sid, open_frame, refuse,
    session::{Refused, Session},
    text,
    transport::SocketIoTransport,
    unknown_sid,
};
use crate::core::DisconnectReason;

/// The polling handshake: a session, its connection task, the `open` packet.
pub(super) fn open(endpoint: &Endpoint, parts: &Parts) -> Response {
    let state = &endpoint.state;
    let slot = match admit(state, parts) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let settings = &state.settings;
    let sid = new_sid();
    let idle = settings.ping_interval + settings.ping_timeout;
    let (session, ends) = Session::new(
        sid.clone(),
        endpoint.parser,
        settings.max_buffered_bytes,
        idle,
    );
    if !state.sessions.insert(Arc::clone(&session)) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many polling sessions; connect with the websocket transport",
        )
            .into_response();
    }
    let transport = SocketIoTransport::polling(Arc::clone(&session), ends, settings.max_batch);
    let transport = match settings.recovery_max_channels {
        Some(max) => transport.with_recovery(max, settings.max_buffered_bytes),
        None => transport,
    };
    let task_state = Arc::clone(state);
    state.tracker.spawn(async move {
        task_state.clients.serve(transport, None).await;
        task_state.sessions.remove(session.sid());
        // An open long-poll of a client that left answers now, not at its deadline.
        session.end(DisconnectReason::Shutdown);
        drop(slot);
    });
    text(engine::encode_payload(&[open_frame(
        settings,
        &sid,
        &["websocket"],
    )]))
}

/// A long-poll.
pub(super) async fn poll(endpoint: &Endpoint, sid: &str) -> Response {
    let state = &endpoint.state;
    let Some(session) = state.sessions.get(sid, endpoint.parser) else {
        return unknown_sid();
    };
    match session.poll(state.settings.ping_interval).await {
        Ok(body) => text(body),
        Err(_) => refuse(
            StatusCode::BAD_REQUEST,
            EioError::BadRequest,
            "overlapping long-polls",
        ),
    }
}

/// A `POST`: the body's packets, handed to the session's connection.
pub(super) async fn post(settings: &SocketIoSettings, session: &Session, body: Body) -> Response {
    let Ok(body) = axum::body::to_bytes(body, settings.max_payload).await else {
        session.end(DisconnectReason::MessageTooLarge);
        return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
    };
    let packets = match engine::decode_payload(&body) {
        Ok(packets) => packets,
        Err(err) => {
            session.end(DisconnectReason::ProtocolViolation(err.to_string()));
            return refuse(
                StatusCode::BAD_REQUEST,
                EioError::BadRequest,
                &err.to_string(),
            );
        }
    };
    match session.post(packets, settings.write_timeout).await {
        Ok(()) => ([(header::CONTENT_TYPE, "text/html")], "ok").into_response(),
        Err(Refused::Overlap) => refuse(
            StatusCode::BAD_REQUEST,
            EioError::BadRequest,
            "overlapping POSTs",
        ),
        Err(Refused::Busy) => (StatusCode::SERVICE_UNAVAILABLE, "busy; retry").into_response(),
        Err(Refused::Gone) => unknown_sid(),
    }
}

/// The core serving Socket.IO clients over in-memory polling sessions, on a
/// paused clock: the whole life, exactly timed, without HTTP (the client
/// side is the session's `POST`s and `GET`s; socket.io-client itself runs in
/// tests/socketio).
#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tokio::time::Instant;

    use super::super::{engine, packet::Parser, session::Session, transport::SocketIoTransport};
    use crate::{
        app::App,
        config::Config,
        core::ClientContext,
        protocol::{ChannelName, EventName, JsonData, Publication},
    };

    async fn node(edit: impl FnOnce(&mut Config)) -> (App, Arc<ClientContext>) {
        let mut config = Config::default();
        config.server.listen = ([127, 0, 0, 1], 0).into();
        edit(&mut config);
        let app = App::build(config).await.unwrap();
        let clients = app.clients();
        tokio::spawn(Arc::clone(clients.hub()).run_heartbeats());
        (app, clients)
    }

    fn open(clients: &Arc<ClientContext>) -> Arc<Session> {
        let idle = Duration::from_secs(3600);
        let (session, ends) = Session::new("t".into(), Parser::Json, 1 << 20, idle);
        let transport = SocketIoTransport::polling(Arc::clone(&session), ends, 16);
        tokio::spawn(clients.serve(transport, None));
        session
    }

    async fn post(session: &Session, text: &str) {
        let packets = engine::decode_payload(text.as_bytes()).unwrap();
        session.post(packets, Duration::from_secs(1)).await.unwrap();
    }

    async fn poll(session: &Session) -> String {
        let body = session.poll(Duration::from_secs(60)).await.unwrap();
        String::from_utf8(body).unwrap()
    }

    fn token(app: &App, user: &str) -> String {
        crate::auth::TokenIssuer::new(&app.state().config.auth)
            .unwrap()
            .mint(user, 3600)
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn no_connect_is_a_connect_error_with_4003_exactly_at_the_auth_timeout() {
        let (_app, clients) = node(|c| c.auth.timeout_ms = 5_000).await;
        let started = Instant::now();
        let session = open(&clients);
        assert_eq!(
            poll(&session).await,
            r#"44{"message":"authentication timeout","data":{"code":4003}}"#
        );
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(5_000)..Duration::from_millis(5_100)).contains(&waited),
            "{waited:?}"
        );
        assert_eq!(poll(&session).await, "1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_polling_client_is_served_pinged_and_closed_with_4002_when_silent() {
        let (app, clients) = node(|c| {
            c.heartbeat.interval_ms = 10_000;
            c.heartbeat.timeout_ms = 5_000;
        })
        .await;
        let session = open(&clients);
        post(
            &session,
            &format!(r#"40{{"token":"{}"}}"#, token(&app, "42")),
        )
        .await;
        let welcome = poll(&session).await;
        assert!(welcome.starts_with(r#"40{"sid":""#), "{welcome}");

        post(&session, r#"427["subscribe",["prices.btc","bad name!"]]"#).await;
        let ack = poll(&session).await;
        assert!(
            ack.starts_with(r#"437[{"ok":false,"code":103,"#)
                && ack.ends_with(r#""channel":"bad name!"}]"#),
            "{ack}"
        );
        let publication = Publication {
            channel: ChannelName::parse("prices.btc", 128).unwrap(),
            event: EventName::parse("tick").unwrap(),
            data: JsonData::from_json(r#"{"p":1}"#).unwrap(),
            ts: None,
            position: None,
            history: None,
        };
        clients.hub().publish(vec![publication]).await.unwrap();
        assert_eq!(
            poll(&session).await,
            r#"42["tick",{"p":1},{"channel":"prices.btc"}]"#
        );

        // Pings arrive; a pong keeps the client; then silence closes it.
        assert_eq!(poll(&session).await, "2");
        post(&session, "3").await;
        let silent_since = Instant::now();
        let mut seen = String::new();
        while !seen.ends_with("\u{1e}1") && seen != "1" {
            let body = poll(&session).await;
            seen = if seen.is_empty() {
                body
            } else {
                format!("{seen}\u{1e}{body}")
            };
        }
        assert!(
            seen.contains(r#"42["herald:disconnect",{"code":4002,"reason":"heartbeat timeout"}]"#),
            "{seen}"
        );
        assert!(
            !seen.contains("\u{1e}41"),
            "4002 lets the client reconnect: no DISCONNECT"
        );
        assert!(silent_since.elapsed() >= Duration::from_secs(15));
        assert_eq!(clients.hub().stats(0).connections, 0);
    }
}
