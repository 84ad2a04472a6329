//! Test harness: a hub on port 0, token minting, and a WebSocket client that
//! speaks JSON or MessagePack and never waits forever.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use herald::{
    app::App,
    auth::TokenIssuer,
    config::{Config, DEV_API_KEY},
    engine::{Engine, SharedDispatcher},
    http::AppState,
};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest},
};

/// A namespace rule for test configs.
pub fn namespace(
    pattern: &str,
    access: herald::core::Access,
    client_publish: bool,
    latest_value: bool,
) -> herald::core::Namespace {
    let mut namespace = herald::core::Namespace::new(pattern, access).unwrap();
    namespace.client_publish = client_publish;
    namespace.latest_value = latest_value;
    namespace
}

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The real herald binary running in its own process, with what it printed.
pub struct HeraldProcess {
    pub child: tokio::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every line it printed so far, stdout and stderr.
    pub logs: Arc<tokio::sync::Mutex<String>>,
}

impl HeraldProcess {
    /// `Command` for the binary, without any `HERALD_*` variable of the
    /// environment: only the settings the test gives it.
    pub fn command() -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        for (name, _) in std::env::vars() {
            if name.starts_with("HERALD_") {
                command.env_remove(name);
            }
        }
        command.args(["--listen", "127.0.0.1:0"]);
        command
    }

    /// Starts `command` (from [`Self::command`]) and waits until it says
    /// where it listens; it is killed when dropped.
    pub async fn start(mut command: tokio::process::Command) -> Self {
        use std::process::Stdio;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = Arc::new(tokio::sync::Mutex::new(String::new()));
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        collect_output(child.stdout.take().unwrap(), Arc::clone(&logs), tx.clone());
        collect_output(child.stderr.take().unwrap(), Arc::clone(&logs), tx);
        let Ok(Some(addr)) = tokio::time::timeout(WAIT * 2, rx.recv()).await else {
            panic!("herald did not report its address:\n{}", logs.lock().await);
        };
        Self { child, addr, logs }
    }
}

/// Appends every line of `stream` to `sink`; sends the first listening address seen.
fn collect_output(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    sink: Arc<tokio::sync::Mutex<String>>,
    addr: tokio::sync::mpsc::Sender<SocketAddr>,
) {
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((_, rest)) = line.split_once("herald listening: ws://")
                && let Some((at, _)) = rest.split_once("/ws")
                && let Ok(at) = at.parse()
            {
                let _ = addr.send(at).await;
            }
            let mut sink = sink.lock().await;
            sink.push_str(&line);
            sink.push('\n');
        }
    });
}

/// A running hub on an ephemeral port.
pub struct TestHub {
    pub addr: SocketAddr,
    /// The ops listener's address, when `server.ops_listen` is set.
    pub ops_addr: Option<SocketAddr>,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A config for tests: ephemeral port, fast shutdown.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.shutdown.drain_ms = 200;
    config.shutdown.grace_ms = 2000;
    config
}

impl TestHub {
    pub async fn spawn() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(edit: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        edit(&mut config);
        config.validate().unwrap();
        Self::start(App::build(config).await.unwrap())
    }

    pub async fn with_engine(
        edit: impl FnOnce(&mut Config),
        engine: impl FnOnce(SharedDispatcher) -> Arc<dyn Engine>,
    ) -> Self {
        let mut config = test_config();
        edit(&mut config);
        Self::start(App::build_with_engine(config, engine).await.unwrap())
    }

    fn start(app: App) -> Self {
        let addr = app.local_addr().unwrap();
        let ops_addr = app.ops_addr().unwrap();
        let state = app.state();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            ops_addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Waits until `/ready` answers 200 (the engine is connected).
    pub async fn wait_ready(&self) {
        let url = self.url("/ready");
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        loop {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hub not ready in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `/metrics` page (its counters are process-wide: every hub of
    /// the test binary shares them).
    pub async fn scrape_metrics(&self) -> String {
        let response = reqwest::get(self.url("/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// GET `path` with the API key; returns status and JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(DEV_API_KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub fn token(&self, user: &str) -> String {
        TokenIssuer::new(&self.state.config.auth)
            .unwrap()
            .mint(user, 600)
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connects as `user` (token in the query) and reads the welcome.
    pub async fn connect(&self, user: &str) -> Client {
        let mut client = self
            .connect_raw(&format!("/ws?token={}", self.token(user)), &[])
            .await;
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client
    }

    /// Connects with MessagePack frames as `user` and reads the welcome.
    pub async fn connect_msgpack(&self, user: &str) -> Client {
        let protocols = [
            "herald.v1.msgpack".to_owned(),
            format!("bearer.{}", self.token(user)),
        ];
        let mut client = self.connect_raw("/ws", &protocols).await;
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client
    }

    /// Opens a WebSocket to `path_and_query` offering `protocols`; reads nothing.
    pub async fn connect_raw(&self, path_and_query: &str, protocols: &[String]) -> Client {
        let mut request = format!("ws://{}{path_and_query}", self.addr)
            .into_client_request()
            .unwrap();
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                protocols.join(", ").parse().unwrap(),
            );
        }
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        let msgpack = response
            .headers()
            .get("sec-websocket-protocol")
            .is_some_and(|p| p == "herald.v1.msgpack");
        Client {
            ws,
            msgpack,
            last_binary: false,
        }
    }

    /// POSTs `body` to the API path with the dev API key.
    pub async fn api(&self, path: &str, body: Value) -> (u16, Value) {
        api_request(&self.url(path), Some(DEV_API_KEY), body).await
    }

    /// Publishes `publications` in one `POST /api/v1/publish/batch`; asserts it succeeded.
    pub async fn publish_batch(&self, publications: Vec<Value>) {
        let (status, body) = self
            .api(
                "/api/v1/publish/batch",
                json!({"publications": publications}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    pub async fn publish(&self, channel: &str, event: &str, data: Value) -> Value {
        let (status, body) = self
            .api(
                "/api/v1/publish",
                json!({"channel": channel, "event": event, "data": data}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Triggers shutdown and waits for the hub to exit.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// Triggers shutdown; the returned task ends when `App::run` returns.
    pub fn begin_shutdown(mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("hub did not stop in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn api_request(url: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A protocol v1 test client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    msgpack: bool,
    /// Whether the last message arrived in a binary frame.
    pub last_binary: bool,
}

impl Client {
    /// A JSON client over an already opened socket.
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self {
            ws,
            msgpack: false,
            last_binary: false,
        }
    }

    pub async fn send(&mut self, message: Value) {
        let frame = if self.msgpack {
            Message::Binary(rmp_serde::to_vec_named(&message).unwrap().into())
        } else {
            Message::Text(message.to_string().into())
        };
        self.ws.send(frame).await.unwrap();
    }

    /// The next protocol message; fails the test after [`WAIT`] or on close.
    pub async fn recv(&mut self) -> Value {
        match self.next_message(WAIT).await {
            Some(Ok(value)) => value,
            Some(Err((code, reason))) => panic!("closed with {code}: {reason}"),
            None => panic!("no message within {WAIT:?}"),
        }
    }

    /// The next push, skipping nothing else: asserts it is a push.
    pub async fn recv_push(&mut self) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], "push", "{message}");
        message
    }

    /// The next message, a close (`Err((code, reason))`), or `None` after `wait`.
    pub async fn next_message(&mut self, wait: Duration) -> Option<Result<Value, (u16, String)>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    self.last_binary = false;
                    return Some(Ok(serde_json::from_str(&text).unwrap()));
                }
                Some(Ok(Message::Binary(bytes))) => {
                    self.last_binary = true;
                    return Some(Ok(rmp_serde::from_slice(&bytes).unwrap()));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Err(frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    })));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Some(Err((1006, err.to_string()))),
                None => return Some(Err((1006, "stream ended".into()))),
            }
        }
    }

    /// Sends `message` and returns the reply.
    pub async fn request(&mut self, message: Value) -> Value {
        self.send(message).await;
        self.recv().await
    }

    pub async fn subscribe(&mut self, channel: &str) {
        let reply = self
            .request(json!({"type": "subscribe", "id": 1, "channel": channel}))
            .await;
        assert_eq!(reply, json!({"type": "ok", "id": 1}));
    }

    /// Waits for the server to close; returns (code, reason). Skips other messages.
    pub async fn expect_close(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_message(left).await {
                Some(Ok(_)) => {}
                Some(Err(close)) => return close,
                None => panic!("connection not closed in time"),
            }
        }
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(message) = self.next_message(wait).await {
            panic!("expected silence, got {message:?}");
        }
    }
}

/// Polls `check` until it holds or [`WAIT`] passes.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A WebSocket upgraded by hand on a raw TCP socket: nothing answers pings
/// or close frames, so a test can play a client that is truly silent.
pub async fn raw_socket(hub: &TestHub, user: &str) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = TcpStream::connect(hub.addr).await.unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        hub.token(user)
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// Reads a raw socket until a close frame arrives; returns its code.
pub async fn raw_close_code(tcp: &mut TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
            .await
            .expect("no close frame in time")
            .unwrap();
        assert!(n > 0, "socket closed without a close frame: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
        // Server frames are unmasked: 0x88, a length byte, then the code.
        if let Some(at) = seen
            .windows(2)
            .position(|w| w[0] == 0x88 && w[1] >= 2 && w[1] < 126)
            && seen.len() >= at + 4
        {
            return u16::from_be_bytes([seen[at + 2], seen[at + 3]]);
        }
    }
}
