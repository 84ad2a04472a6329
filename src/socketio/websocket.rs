//! Engine.IO over WebSocket: a connection on a WebSocket from the start
//! (`transport=websocket` without `sid`), or the upgrade of a polling
//! session (`2probe` → `3probe`, long-polls released, `5`), after which the
//! session's connection reads and writes the WebSocket.

use std::sync::Arc;

use axum::{
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use tokio::{sync::oneshot, time::timeout};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

use super::{
    EioError, Endpoint, SocketIoSettings, SocketIoState, Ws, admit, events, new_sid, open_frame,
    packet::Parser, refuse, session::Session, transport, transport::SocketIoTransport, unknown_sid,
};
use crate::{
    core::IpSlot,
    net::{websocket::Handshake, wire::take_back},
};

/// `GET …?transport=websocket[&sid=…]`: the RFC 6455 handshake, then a new
/// connection or an upgrade.
pub(super) fn websocket(endpoint: &Endpoint, parts: &mut Parts, sid: Option<String>) -> Response {
    let handshake = match Handshake::read(parts) {
        Ok(handshake) => handshake,
        Err(refused) => return refused.into_response(),
    };
    let state = &endpoint.state;
    let response = handshake.switching_protocols(None);
    let on_upgrade = handshake.on_upgrade;
    match sid {
        None => match admit(state, parts) {
            Ok(slot) => {
                let task = connect(Arc::clone(state), on_upgrade, endpoint.parser, slot);
                state.tracker.spawn(task);
            }
            Err(refused) => return refused.into_response(),
        },
        Some(sid) => {
            let Some(session) = state.sessions.get(&sid, endpoint.parser) else {
                return unknown_sid();
            };
            // Only the first attempt gets the way to the connection.
            let Some(hand_over) = session.begin_upgrade() else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    EioError::BadRequest,
                    "this session is already upgrading",
                );
            };
            let task = upgrade(Arc::clone(state), on_upgrade, session, hand_over);
            state.tracker.spawn(task);
        }
    }
    response
}

/// The WebSocket of a completed handshake, over the socket taken back from
/// the HTTP server so that deliveries can be written to it directly (see
/// [`SocketIoTransport`]'s `direct`).
async fn accept(
    on_upgrade: OnUpgrade,
    settings: &SocketIoSettings,
    parser: Parser,
) -> Option<Box<Ws>> {
    let upgraded = on_upgrade.await.ok()?;
    let config = WebSocketConfig::default()
        .read_buffer_size(settings.read_buffer_size)
        .write_buffer_size(settings.write_buffer_size)
        .max_message_size(Some(settings.max_payload))
        .max_frame_size(Some(settings.max_payload));
    let framing = match parser {
        Parser::Json => events::json_frame,
        Parser::MsgPack => events::msgpack_frame,
    };
    match take_back(upgraded, framing, config).await {
        Ok((ws, _)) => Some(Box::new(ws)),
        Err(_) => {
            tracing::warn!("a Socket.IO upgrade over something other than TCP; closing");
            None
        }
    }
}

/// A connection on a WebSocket from the start: the `open` packet, then the
/// core serves it.
async fn connect(state: Arc<SocketIoState>, on_upgrade: OnUpgrade, parser: Parser, slot: IpSlot) {
    let settings = &state.settings;
    let Some(mut ws) = accept(on_upgrade, settings, parser).await else {
        return;
    };
    let open = transport::message(open_frame(settings, &new_sid(), &[]));
    if !matches!(
        timeout(settings.write_timeout, ws.send(open)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let transport = SocketIoTransport::websocket(ws, parser, settings.max_batch);
    let transport = match settings.recovery_max_channels {
        Some(max) => transport.with_recovery(max, settings.max_buffered_bytes),
        None => transport,
    };
    // Served by a task of its own: this one's state (the upgrade, the
    // handshake, the open packet) is freed now instead of being kept for
    // the connection's whole life.
    let serving = state.clients.serve_holding(transport, None, slot);
    state.tracker.spawn(serving);
}

/// The upgrade of a polling session, within `pingInterval + pingTimeout`.
/// On failure the session keeps polling.
async fn upgrade(
    state: Arc<SocketIoState>,
    on_upgrade: OnUpgrade,
    session: Arc<Session>,
    hand_over: oneshot::Sender<Box<Ws>>,
) {
    let settings = &state.settings;
    let Some(mut ws) = accept(on_upgrade, settings, session.parser()).await else {
        return;
    };
    let limit = settings.ping_interval + settings.ping_timeout;
    match timeout(limit, probe(&mut ws, &session)).await {
        Ok(Ok(())) => {
            // The session's connection now reads and writes the WebSocket;
            // polling requests for it are refused as unknown.
            state.sessions.remove(session.sid());
            let _ = hand_over.send(ws);
        }
        Ok(Err(why)) => {
            tracing::debug!(why, "Engine.IO upgrade failed");
            session.unprobed();
        }
        Err(_) => {
            tracing::debug!("Engine.IO upgrade timed out");
            session.unprobed();
        }
    }
}

/// The upgrade exchange: `2probe` → `3probe`, long-polls released, then `5`.
async fn probe(ws: &mut Ws, session: &Session) -> Result<(), &'static str> {
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.as_str() == "2probe" => {}
        _ => return Err("the first frame was not `2probe`"),
    }
    ws.send(Message::Text("3probe".into()))
        .await
        .map_err(|_| "the probe answer could not be sent")?;
    session.probed();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == "5" => return Ok(()),
            Some(Ok(Message::Text(text))) if text.as_str() == "6" => {}
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err("expected the `upgrade` packet"),
        }
    }
}
