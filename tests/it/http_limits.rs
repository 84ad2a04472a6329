//! HTTP connections that never finish: header and body deadlines, caps on
//! connections that have not upgraded, the ops listener, and shutdown with
//! half-sent requests. Clients are raw TCP sockets that send exactly what
//! the test says, byte by byte if need be.

use std::{net::SocketAddr, time::Duration};

use herald::config::DEV_API_KEY;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::helpers::{TestHub, WAIT};

/// A request that completes, asking the server to close afterwards.
const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Connects to `addr` from the loopback address `source` (127.0.0.x), so a
/// test can play several client IPs.
async fn connect_from(addr: SocketAddr, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until the server closes and returns what arrived; fails the test
/// if the connection is still open after [`WAIT`].
async fn read_until_closed(tcp: &mut (impl AsyncRead + Unpin)) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {WAIT:?}; received {:?}",
                String::from_utf8_lossy(&seen)
            ),
            // A reset is a close too.
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a complete `GET /health` from `source` and returns the response.
async fn health_from(addr: SocketAddr, source: [u8; 4]) -> String {
    let mut tcp = connect_from(addr, source).await;
    tcp.write_all(HEALTH.as_bytes()).await.unwrap();
    read_until_closed(&mut tcp).await
}

/// Opens `n` connections from `source` that send nothing.
async fn silent_connections(addr: SocketAddr, source: [u8; 4], n: usize) -> Vec<TcpStream> {
    let mut connections = Vec::new();
    for _ in 0..n {
        connections.push(connect_from(addr, source).await);
    }
    connections
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_closed_by_the_header_deadline() {
    let hub = TestHub::with(|c| c.server.header_read_timeout_ms = 300).await;
    let mut silent = TcpStream::connect(hub.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "");
}

#[tokio::test]
async fn a_slowloris_client_is_closed_by_the_header_deadline() {
    let hub = TestHub::with(|c| c.server.header_read_timeout_ms = 500).await;
    let (mut reader, mut writer) = TcpStream::connect(hub.addr).await.unwrap().into_split();
    // One header byte per 100 ms: the whole request would take 30 s.
    let request = format!(
        "GET /health HTTP/1.1\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(270)
    );
    let trickle = tokio::spawn(async move {
        for byte in request.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let received = read_until_closed(&mut reader).await;
    assert!(!received.contains("200 OK"), "{received}");
    trickle.abort();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_header_deadline() {
    let hub = TestHub::with(|c| c.server.header_read_timeout_ms = 300).await;
    let mut tcp = TcpStream::connect(hub.addr).await.unwrap();
    // Keep-alive by default in HTTP/1.1: after the answer the connection idles.
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut tcp).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
}

#[tokio::test]
async fn a_request_body_that_trickles_gets_408_and_is_closed() {
    let hub = TestHub::with(|c| c.server.body_read_timeout_ms = 300).await;
    let (mut reader, mut writer) = TcpStream::connect(hub.addr).await.unwrap().into_split();
    let head = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DEV_API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"channel\":"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    // Then one body byte per 50 ms: a deadline between chunks would never fire.
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let received = read_until_closed(&mut reader).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    trickle.abort();
}

#[tokio::test]
async fn connections_past_the_per_ip_pending_cap_are_refused_at_once() {
    let hub = TestHub::with(|c| c.server.max_pending_per_ip = 3).await;
    let mut held = silent_connections(hub.addr, [127, 0, 0, 1], 3).await;
    // The header deadline is 10 s: a close within WAIT is the refusal.
    let mut extra = connect_from(hub.addr, [127, 0, 0, 1]).await;
    let received = read_until_closed(&mut extra).await;
    assert!(received.starts_with("HTTP/1.1 503"), "{received}");
    // Another address is not affected.
    let other = health_from(hub.addr, [127, 0, 0, 2]).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // A slot comes back when its connection closes.
    held.pop();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !health_from(hub.addr, [127, 0, 0, 1])
        .await
        .starts_with("HTTP/1.1 200")
    {
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, metrics) = fetch(hub.addr, "/metrics").await;
    assert!(
        metrics.contains(
            "herald_http_connections_refused_total{listener=\"main\",reason=\"pending_per_ip\"}"
        ),
        "{metrics}"
    );
}

/// A complete GET of `path` on `addr`: status line and whole response.
async fn fetch(addr: SocketAddr, path: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut tcp).await;
    let status = response.lines().next().unwrap_or_default().to_owned();
    (status, response)
}

#[tokio::test]
async fn the_ops_listener_answers_while_the_main_port_is_full() {
    let hub = TestHub::with(|c| {
        c.server.max_pending_connections = 4;
        c.server.max_pending_per_ip = 0;
        c.server.ops_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let ops = hub.ops_addr.unwrap();
    let _held = silent_connections(hub.addr, [127, 0, 0, 1], 4).await;
    let refused = health_from(hub.addr, [127, 0, 0, 2]).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert_eq!(fetch(ops, "/health").await.0, "HTTP/1.1 200 OK");
    assert_eq!(fetch(ops, "/ready").await.0, "HTTP/1.1 200 OK");
    let (status, metrics) = fetch(ops, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        metrics.contains(
            "herald_http_connections_refused_total{listener=\"main\",reason=\"pending_node\"}"
        ),
        "{metrics}"
    );
    // Only the operational endpoints are served there.
    assert_eq!(fetch(ops, "/demo").await.0, "HTTP/1.1 404 Not Found");
}

#[tokio::test]
async fn upgraded_websockets_do_not_count_against_the_pending_cap() {
    let hub = TestHub::with(|c| {
        c.server.max_pending_connections = 2;
        c.server.max_pending_per_ip = 2;
    })
    .await;
    let mut clients = Vec::new();
    for user in ["a", "b", "c", "d"] {
        clients.push(hub.connect(user).await);
    }
    let response = health_from(hub.addr, [127, 0, 0, 1]).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // And the sockets still work.
    for client in &mut clients {
        let pong = client
            .request(serde_json::json!({"type": "ping", "id": 7}))
            .await;
        assert_eq!(pong["type"], "pong");
    }
}

#[tokio::test]
async fn shutdown_is_bounded_with_half_sent_requests() {
    let hub = TestHub::with(|c| {
        // Neither deadline may end these requests: shutdown must.
        c.server.header_read_timeout_ms = 120_000;
        c.server.body_read_timeout_ms = 120_000;
        c.shutdown.drain_ms = 200;
        c.shutdown.grace_ms = 300;
    })
    .await;
    let mut half_head = TcpStream::connect(hub.addr).await.unwrap();
    half_head
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        .await
        .unwrap();
    let mut half_body = TcpStream::connect(hub.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DEV_API_KEY}\r\n\
         Content-Length: 100\r\n\r\n{{\"channel\":"
    );
    half_body.write_all(head.as_bytes()).await.unwrap();
    // Let the hub read what was sent before it is told to stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let stopped = hub.begin_shutdown();
    // drain + grace is 0.5 s; anything near WAIT means a hang.
    tokio::time::timeout(WAIT, stopped)
        .await
        .expect("App::run still running with half-sent requests")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < WAIT);
    read_until_closed(&mut half_head).await;
    read_until_closed(&mut half_body).await;
}
