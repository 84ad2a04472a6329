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
