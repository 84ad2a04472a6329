//! What every HTTP-facing module shares about a request: the client's IP
//! address, the browser origin allow-list, the WebSocket opening
//! handshake, and the socket under an upgraded WebSocket ([`wire`]). Below
//! the transports: it depends on the `http` types, tungstenite's accept key
//! and the core's [`crate::core::DirectWrite`] only, so the HTTP API and
//! every transport can use it without depending on one another.

pub mod origin;
pub mod websocket;
pub mod wire;

use std::net::{IpAddr, SocketAddr};

use axum::{extract::ConnectInfo, http::request::Parts};

/// The client's IP: the first `X-Forwarded-For` entry when
/// `trust_forwarded_for` is set and the header parses, else the TCP peer.
pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| {
            parts
                .headers
                .get("x-forwarded-for")?
                .to_str()
                .ok()?
                .split(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .flatten();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    forwarded.unwrap_or(peer)
}
