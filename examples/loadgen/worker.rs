//! A worker process: opens its slice of the connections, subscribes them,
//! and records every push it receives until the parent says publishing is
//! over. Single-threaded (`current_thread` runtime and a `LocalSet`) so the
//! statistics need no locks; one task per connection.

use std::{
    borrow::Cow,
    cell::{Cell, RefCell},
    collections::BTreeMap,
    io::{BufRead as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::LocalSet,
    time,
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::{
    Args, ChannelMode, Protocol, WireFormat,
    common::{
        Drain, Ready, Res, StepResult, Target, WorkerLine, WorkerResult, channel_slots,
        count_error, hist_pairs, new_hist, parse_target, proc_cpu_secs, proc_rss_kib, unix_us,
    },
};

type Ws = WebSocketStream<TcpStream>;

/// Source ports a worker binds its sockets to (explicitly; see `bind_source`).
const FIRST_PORT: u16 = 10_000;
const LAST_PORT: u16 = 65_000;

/// Highest sequence number a receiver tracks (bounds the per-connection bitsets).
const MAX_SEQ: u64 = 1 << 26;

/// Runs worker `index` to completion and exits the process.
pub(crate) fn run(args: Args, index: usize) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let code = match local.block_on(&rt, worker_main(args, index)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("[loadgen worker {index}] error: {e}");
            1
        }
    };
    // Sockets, tasks and the stdin thread go with the process.
    std::process::exit(code);
}

struct StepStats {
    hist: Histogram<u64>,
    /// Latencies of the extra channel's pushes (also in `hist`).
    extra_hist: Histogram<u64>,
    deliveries: u64,
    distinct: u64,
}

struct Stats {
    opened: u64,
    failed: u64,
    last_done: Option<Instant>,
    handshake: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// Connections subscribed per channel slot.
    subscribers: Vec<u64>,
    steps: Vec<StepStats>,
    distinct: u64,
    duplicated: u64,
    reordered: u64,
    gaps: u64,
    other: u64,
    parse_errors: u64,
    disconnected: u64,
    disconnect_reasons: BTreeMap<String, u64>,
}

struct Ctx {
    index: usize,
    /// Global index of this worker's first connection.
    first: usize,
    count: usize,
    targets: Vec<Target>,
    bind_ip: Option<IpAddr>,
    next_port: Cell<u16>,
    key: EncodingKey,
    user_prefix: String,
    exp: u64,
    channel: String,
    own: bool,
    extra: Option<String>,
    protocol: Protocol,
    format: WireFormat,
    ws_config: WebSocketConfig,
    connect_timeout: Duration,
    stats: RefCell<Stats>,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

#[derive(Serialize)]
struct SubscribeMsg<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: u64,
    channel: &'a str,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct MpMsg<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    channel: Option<&'a str>,
    #[serde(default)]
    data: Option<MpData>,
}

#[derive(Deserialize)]
struct MpData {
    seq: u64,
    sent_us: u64,
    #[serde(default)]
    step: usize,
}

/// What the receive loop needs from one push.
struct Push<'a> {
    channel: &'a [u8],
    seq: u64,
    sent_us: u64,
    step: usize,
}

enum Frame<'a> {
    Push(Push<'a>),
    Gap,
    Other,
    Bad,
}

/// One subscribed channel of one connection, with the sequence numbers seen.
struct Sub {
    name: Box<[u8]>,
    seen: Vec<u64>,
    next: u64,
}

async fn worker_main(args: Args, index: usize) -> Res<()> {
    let first = args.worker_start;
    let count = args.worker_count;
    let targets = args
        .urls
        .iter()
        .map(|u| parse_target(u, args.target.default_path()))
        .collect::<Res<Vec<_>>>()?;
    let loopback = targets
        .iter()
        .all(|t| matches!(t.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
    let bind_ip = (loopback && !args.no_bind).then(|| {
        let last = (args.source_ip_base as usize + index).min(254) as u8;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    });
    let own = args.channel_mode == ChannelMode::Own;
    let slots = channel_slots(own, count, args.extra_channel.is_some());
    let n_steps = args.steps.len().max(1);
    let steps = (0..n_steps)
        .map(|_| {
            Ok(StepStats {
                hist: new_hist()?,
                extra_hist: new_hist()?,
                deliveries: 0,
                distinct: 0,
            })
        })
        .collect::<Res<Vec<_>>>()?;
    let ctx = Rc::new(Ctx {
        index,
        first,
        count,
        targets,
        bind_ip,
        // A random start, so a run right after another mostly avoids ports
        // still in TIME_WAIT.
        next_port: Cell::new(rand::random_range(FIRST_PORT..=LAST_PORT)),
        key: EncodingKey::from_secret(args.secret.as_bytes()),
        user_prefix: args.user_prefix.clone(),
        exp: unix_us() / 1_000_000 + args.token_ttl,
        channel: args.channel.clone(),
        own,
        extra: args.extra_channel.clone(),
        protocol: args.target,
        format: args.format,
        ws_config: WebSocketConfig::default()
            .read_buffer_size(args.read_buffer)
            .write_buffer_size(0)
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20)),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        stats: RefCell::new(Stats {
            opened: 0,
            failed: 0,
            last_done: None,
            handshake: new_hist()?,
            errors: BTreeMap::new(),
            subscribers: vec![0; slots],
            steps,
            distinct: 0,
            duplicated: 0,
            reordered: 0,
            gaps: 0,
            other: 0,
            parse_errors: 0,
            disconnected: 0,
            disconnect_reasons: BTreeMap::new(),
        }),
    });

    // Commands from the parent arrive on stdin; EOF means the parent is gone.
    let (tx, mut commands) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Open the connections, paced, with a bounded number of handshakes in flight.
    let start = Instant::now();
    let share = count as f64 / args.connections.max(1) as f64;
    let rate = args.connect_rate * share;
    let in_flight = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let opener = {
        let ctx = Rc::clone(&ctx);
        tokio::task::spawn_local(async move {
            for local in 0..ctx.count {
                if rate > 0.0 {
                    time::sleep_until(
                        (start + Duration::from_secs_f64(local as f64 / rate)).into(),
                    )
                    .await;
                }
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    return;
                };
                tokio::task::spawn_local(connection(Rc::clone(&ctx), local, permit));
            }
        })
    };
    let budget = if rate > 0.0 { count as f64 / rate } else { 0.0 }
        + args.connect_timeout
            * (1.0 + count as f64 / args.connect_concurrency.max(1) as f64).min(10.0)
        + 30.0;
    let deadline = start + Duration::from_secs_f64(budget);
    let mut last_report = Instant::now();
    loop {
        let (opened, failed) = {
            let s = ctx.stats.borrow();
            (s.opened, s.failed)
        };
        if opened + failed >= count as u64 {
            break;
        }
        if Instant::now() >= deadline {
            opener.abort();
            let mut s = ctx.stats.borrow_mut();
            let missing = count as u64 - s.opened - s.failed;
            s.failed += missing;
            count_error(&mut s.errors, "connect phase deadline passed");
            eprintln!(
                "[loadgen worker {index}] connect deadline passed; {missing} connections still pending"
            );
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            eprintln!(
                "[loadgen worker {index}] {opened}/{count} open, {failed} failed, {:.1}s",
                start.elapsed().as_secs_f64()
            );
        }
        time::sleep(Duration::from_millis(20)).await;
    }
    let ready = {
        let s = ctx.stats.borrow();
        Ready {
            worker: index,
            pid: std::process::id(),
            opened: s.opened,
            failed: s.failed,
            connect_secs: s
                .last_done
                .map_or(0.0, |t| t.duration_since(start).as_secs_f64()),
            handshake_us: hist_pairs(&s.handshake),
            errors: s.errors.clone(),
        }
    };
    emit(&WorkerLine::Ready(ready))?;

    // Wait for the parent to finish holding and publishing.
    let wait = Duration::from_secs_f64(args.worker_deadline_secs());
    let drain: Drain = match time::timeout(wait, commands.recv()).await {
        Ok(Some(line)) => serde_json::from_str(&line)?,
        Ok(None) => return Err("parent closed stdin before the drain command".into()),
        Err(_) => return Err("no drain command from the parent in time".into()),
    };

    // Wait for stragglers until everything owed has arrived or the drain window ends.
    let expected: Vec<u64> = {
        let s = ctx.stats.borrow();
        drain
            .published
            .iter()
            .map(|per_slot| {
                per_slot
                    .iter()
                    .zip(&s.subscribers)
                    .map(|(published, subscribers)| published * subscribers)
                    .sum()
            })
            .collect()
    };
    let expected_total: u64 = expected.iter().sum();
    let drain_start = Instant::now();
    let drain_until = drain_start + Duration::from_secs_f64(args.drain_secs);
    while ctx.stats.borrow().distinct < expected_total && Instant::now() < drain_until {
        time::sleep(Duration::from_millis(10)).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();

    let result = {
        let s = ctx.stats.borrow();
        WorkerResult {
            worker: index,
            steps: s
                .steps
                .iter()
                .enumerate()
                .map(|(i, st)| StepResult {
                    latency_us: hist_pairs(&st.hist),
                    extra_latency_us: hist_pairs(&st.extra_hist),
                    deliveries: st.deliveries,
                    distinct: st.distinct,
                    expected: expected.get(i).copied().unwrap_or(0),
                })
                .collect(),
            duplicated: s.duplicated,
            reordered: s.reordered,
            gaps: s.gaps,
            other_messages: s.other,
            parse_errors: s.parse_errors,
            disconnected: s.disconnected,
            disconnect_reasons: s.disconnect_reasons.clone(),
            drain_secs,
            cpu_secs: proc_cpu_secs(None).unwrap_or(0.0),
            rss_kib: proc_rss_kib(std::process::id()).unwrap_or(0),
        }
    };
    emit(&WorkerLine::Result(result))?;
    Ok(())
}

fn emit(line: &WorkerLine) -> Res<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

impl Ctx {
    /// The channels connection `local` subscribes to, with their slots.
    fn channels(&self, local: usize) -> Vec<(usize, String)> {
        let mut channels = Vec::with_capacity(2);
        if self.own {
            let global = self.first + local;
            channels.push((local, format!("{}.{global}", self.channel)));
        } else {
            channels.push((0, self.channel.clone()));
        }
        if let Some(extra) = &self.extra {
            let slot = if self.own { self.count } else { 1 };
            channels.push((slot, extra.clone()));
        }
        channels
    }

    fn fail(&self, message: &str) {
        let mut s = self.stats.borrow_mut();
        s.failed += 1;
        s.last_done = Some(Instant::now());
        count_error(&mut s.errors, message);
    }
}

/// One connection: open, subscribe, then receive until the process ends.
async fn connection(ctx: Rc<Ctx>, local: usize, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let channels = ctx.channels(local);
    let ws = match time::timeout(ctx.connect_timeout, open(&ctx, local, &channels)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return ctx.fail(&e.to_string()),
        Err(_) => return ctx.fail("connect/subscribe timed out"),
    };
    drop(permit);
    {
        let mut s = ctx.stats.borrow_mut();
        s.opened += 1;
        s.last_done = Some(Instant::now());
        let us = started.elapsed().as_micros() as u64;
        s.handshake.saturating_record(us.max(1));
        for (slot, _) in &channels {
            if let Some(n) = s.subscribers.get_mut(*slot) {
                *n += 1;
            }
        }
    }
    let mut subs: Vec<Sub> = channels
        .into_iter()
        .map(|(_, name)| Sub {
            name: name.into_bytes().into_boxed_slice(),
            seen: Vec::new(),
            next: 0,
        })
        .collect();
    receive(&ctx, ws, &mut subs).await;
}

async fn open(ctx: &Ctx, local: usize, channels: &[(usize, String)]) -> Res<Ws> {
    let global = ctx.first + local;
    let target = ctx
        .targets
        .get(global % ctx.targets.len().max(1))
        .ok_or("no --url")?;
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = ctx.bind_ip {
        bind_source(ctx, &socket, ip)?;
    }
    let stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let base = format!("ws://{}{}", target.authority, target.path);
    match ctx.protocol {
        Protocol::Herald => open_herald(ctx, global, &base, stream, channels).await,
        Protocol::Socketio => open_socketio(ctx, global, &base, stream, channels).await,
        Protocol::Uws => open_uws(ctx, &base, stream, channels).await,
    }
}

fn token(ctx: &Ctx, global: usize) -> Res<String> {
    let user = format!("{}{global}", ctx.user_prefix);
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Claims {
            sub: &user,
            exp: ctx.exp,
        },
        &ctx.key,
    )?)
}

/// herald's native protocol: token in the URL, `welcome`, one `subscribe` per channel, `ok` each.
async fn open_herald(
    ctx: &Ctx,
    global: usize,
    base: &str,
    stream: TcpStream,
    channels: &[(usize, String)],
) -> Res<Ws> {
    let token = token(ctx, global)?;
    let format = match ctx.format {
        WireFormat::Json => "",
        WireFormat::Msgpack => "&format=msgpack",
    };
    let url = format!("{base}?token={token}{format}");
    let (mut ws, _) = client_async_with_config(url, stream, Some(ctx.ws_config)).await?;

    match next_kind(&mut ws).await?.as_deref() {
        Some("welcome") => {}
        other => return Err(format!("expected welcome, got {other:?}").into()),
    }
    for (i, (_, channel)) in channels.iter().enumerate() {
        let msg = SubscribeMsg {
            kind: "subscribe",
            id: i as u64 + 1,
            channel,
        };
        let frame = match ctx.format {
            WireFormat::Json => Message::Text(serde_json::to_string(&msg)?.into()),
            WireFormat::Msgpack => Message::Binary(rmp_serde::to_vec_named(&msg)?.into()),
        };
        ws.feed(frame).await?;
    }
    ws.flush().await?;
    let mut pending = channels.len();
    while pending > 0 {
        match next_kind(&mut ws).await?.as_deref() {
            // `subscribed` answers a subscribe on a channel with history.
            Some("ok" | "subscribed") => pending -= 1,
            Some("error") => return Err("subscribe refused".into()),
            _ => {}
        }
    }
    Ok(ws)
}

/// Engine.IO v4 / Socket.IO v5 on the WebSocket transport: open packet `0{…}`,
/// CONNECT `40{"token":…}` answered by `40{…}`, then one `subscribe` event
/// with all channels and ack id 1, answered by `431[…]`.
async fn open_socketio(
    ctx: &Ctx,
    global: usize,
    base: &str,
    stream: TcpStream,
    channels: &[(usize, String)],
) -> Res<Ws> {
    let url = format!("{base}?EIO=4&transport=websocket");
    let (mut ws, _) = client_async_with_config(url, stream, Some(ctx.ws_config)).await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(format!("expected the Engine.IO open packet, got {}", short(&open)).into());
    }
    let connect = serde_json::to_string(&serde_json::json!({ "token": token(ctx, global)? }))?;
    ws.send(Message::Text(format!("40{connect}").into()))
        .await?;
    loop {
        let packet = next_text(&mut ws).await?;
        if packet.starts_with("40") {
            break;
        }
        if packet.starts_with("44") {
            return Err(format!("connect_error {}", short(&packet)).into());
        }
        if packet == "2" {
            ws.send(Message::Text("3".into())).await?;
        }
    }
    let names: Vec<&str> = channels.iter().map(|(_, c)| c.as_str()).collect();
    let subscribe = serde_json::to_string(&("subscribe", names))?;
    ws.send(Message::Text(format!("421{subscribe}").into()))
        .await?;
    loop {
        let packet = next_text(&mut ws).await?;
        if let Some(ack) = packet.strip_prefix("431") {
            if ack.contains(r#""ok":false"#) {
                return Err(format!("subscribe refused: {}", short(ack)).into());
            }
            return Ok(ws);
        }
        if packet.starts_with("44") || packet.starts_with("41") || packet == "1" {
            return Err(format!("disconnected during setup: {}", short(&packet)).into());
        }
        if packet == "2" {
            ws.send(Message::Text("3".into())).await?;
        }
    }
}

/// Plain WebSocket (the uWebSockets.js peer): the first channel in the URL,
/// any further ones as `{"subscribe":"<name>"}` frames, which get no answer.
async fn open_uws(
    ctx: &Ctx,
    base: &str,
    stream: TcpStream,
    channels: &[(usize, String)],
) -> Res<Ws> {
    let (_, first) = channels.first().ok_or("no channel to subscribe to")?;
    let url = format!("{base}?channel={first}");
    let (mut ws, _) = client_async_with_config(url, stream, Some(ctx.ws_config)).await?;
    for (_, channel) in channels.iter().skip(1) {
        let frame = serde_json::to_string(&serde_json::json!({ "subscribe": channel }))?;
        ws.send(Message::Text(frame.into())).await?;
    }
    Ok(ws)
}

/// The next text message during setup.
async fn next_text(ws: &mut Ws) -> Res<tokio_tungstenite::tungstenite::Utf8Bytes> {
    loop {
        match ws.next().await.ok_or("closed during setup")?? {
            Message::Text(t) => return Ok(t),
            Message::Close(frame) => {
                return Err(match frame {
                    Some(f) => format!("closed during setup: {} {}", u16::from(f.code), f.reason),
                    None => "closed during setup".to_owned(),
                }
                .into());
            }
            _ => {}
        }
    }
}

/// At most 100 characters of a packet, for error messages.
fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Binds to the worker's source address with an explicit port. Asking the
/// kernel for port 0 scans the bind table for a free port on every call,
/// which turns quadratic with thousands of sockets (and TIME_WAIT leftovers
/// of the previous run) on one address; walking our own port cursor, a
/// taken port just costs one failed `bind`.
fn bind_source(ctx: &Ctx, socket: &TcpSocket, ip: IpAddr) -> Res<()> {
    const TRIES: usize = (LAST_PORT - FIRST_PORT) as usize + 1;
    for _ in 0..TRIES {
        let port = ctx.next_port.get();
        ctx.next_port.set(if port >= LAST_PORT {
            FIRST_PORT
        } else {
            port + 1
        });
        match socket.bind(SocketAddr::new(ip, port)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(format!("no free source port on {ip} after {TRIES} tries").into())
}

/// The `type` of the next data message (`None` for an unparsable one).
async fn next_kind(ws: &mut Ws) -> Res<Option<String>> {
    loop {
        let msg = ws.next().await.ok_or("closed during setup")??;
        let bytes: &[u8] = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            Message::Close(frame) => {
                return Err(match frame {
                    Some(f) => format!("closed during setup: {} {}", u16::from(f.code), f.reason),
                    None => "closed during setup".to_owned(),
                }
                .into());
            }
            _ => continue,
        };
        let head: Option<Head<'_>> = if matches!(msg, Message::Text(_)) {
            serde_json::from_slice(bytes).ok()
        } else {
            rmp_serde::from_slice(bytes).ok()
        };
        return Ok(head.map(|h| h.kind.into_owned()));
    }
}

async fn receive(ctx: &Ctx, mut ws: Ws, subs: &mut [Sub]) {
    let reason = loop {
        let Some(msg) = ws.next().await else {
            break "stream ended".to_owned();
        };
        match msg {
            Ok(Message::Text(t)) => match ctx.protocol {
                Protocol::Herald => ctx.on_frame(parse_json(t.as_bytes()), subs),
                Protocol::Uws => ctx.on_frame(parse_envelope(t.as_bytes()), subs),
                Protocol::Socketio if t.as_bytes() == b"2" => {
                    // Engine.IO ping: the server closes the connection
                    // unless the pong arrives within pingTimeout.
                    if let Err(e) = ws.send(Message::Text("3".into())).await {
                        break e.to_string();
                    }
                }
                Protocol::Socketio => ctx.on_frame(parse_socketio(t.as_bytes()), subs),
            },
            Ok(Message::Binary(b)) if ctx.protocol == Protocol::Herald => {
                ctx.on_frame(parse_msgpack(&b), subs);
            }
            Ok(Message::Binary(_)) => ctx.on_frame(Frame::Other, subs),
            Ok(Message::Close(frame)) => {
                break match frame {
                    Some(f) => format!("close {} {}", u16::from(f.code), f.reason),
                    None => "close".to_owned(),
                };
            }
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
    };
    let mut s = ctx.stats.borrow_mut();
    s.disconnected += 1;
    count_error(&mut s.disconnect_reasons, &reason);
    if s.disconnected == 1 {
        eprintln!("[loadgen worker {}] first disconnect: {reason}", ctx.index);
    }
}

impl Ctx {
    fn on_frame(&self, frame: Frame<'_>, subs: &mut [Sub]) {
        let now = unix_us();
        let mut s = self.stats.borrow_mut();
        let s = &mut *s;
        let push = match frame {
            Frame::Push(p) => p,
            Frame::Gap => {
                s.gaps += 1;
                return;
            }
            Frame::Other => {
                s.other += 1;
                return;
            }
            Frame::Bad => {
                s.parse_errors += 1;
                return;
            }
        };
        if push.step >= s.steps.len() || push.seq >= MAX_SEQ {
            s.parse_errors += 1;
            return;
        }
        // A frame without a channel (the uWebSockets.js peer's raw envelope,
        // a Socket.IO server's plain `emit(event, data)`) belongs to the
        // connection's only subscription.
        let found = if push.channel.is_empty() && subs.len() == 1 {
            subs.first_mut()
        } else {
            subs.iter_mut().find(|sub| *sub.name == *push.channel)
        };
        let Some(sub) = found else {
            s.other += 1;
            return;
        };
        let is_extra = self
            .extra
            .as_deref()
            .is_some_and(|extra| *sub.name == *extra.as_bytes());
        let step = &mut s.steps[push.step];
        step.deliveries += 1;
        let latency = now.saturating_sub(push.sent_us).max(1);
        step.hist.saturating_record(latency);
        if is_extra {
            step.extra_hist.saturating_record(latency);
        }
        let word = (push.seq / 64) as usize;
        let bit = 1u64 << (push.seq % 64);
        if sub.seen.len() <= word {
            sub.seen.resize(word + 1, 0);
        }
        if sub.seen[word] & bit != 0 {
            s.duplicated += 1;
            return;
        }
        sub.seen[word] |= bit;
        step.distinct += 1;
        s.distinct += 1;
        if push.seq < sub.next {
            s.reordered += 1;
        } else {
            sub.next = push.seq + 1;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(i) = haystack.get(from..)?.iter().position(|&b| b == first) {
        let at = from + i;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn number_after(haystack: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(haystack, key)? + key.len();
    leading_number(haystack.get(start..)?).map(|(n, _)| n)
}

/// The decimal number at the start of `b`, and what follows it.
fn leading_number(b: &[u8]) -> Option<(u64, &[u8])> {
    let len = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if len == 0 || len > 19 {
        return None;
    }
    let (digits, rest) = b.split_at(len);
    let n = digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((n, rest))
}

/// Finds what a push carries without building a JSON tree: herald copies the
/// published `data` verbatim, so the numbers are where the publisher put them.
fn parse_json(b: &[u8]) -> Frame<'_> {
    parse_json_fast(b).unwrap_or_else(|| parse_json_slow(b))
}

/// The layout herald writes and this publisher sends:
/// `{"type":"push","channel":"C","event":"E","data":{"seq":N,"sent_us":T,"step":K…`.
fn parse_json_fast(b: &[u8]) -> Option<Frame<'_>> {
    let rest = b.strip_prefix(br#"{"type":"push","channel":""#)?;
    let end = rest.iter().position(|&c| c == b'"')?;
    let (channel, rest) = rest.split_at(end);
    let rest = rest.strip_prefix(br#"","event":""#)?;
    let end = rest.iter().position(|&c| c == b'"')?;
    let rest = rest.get(end..)?.strip_prefix(br#"","data":{"seq":"#)?;
    let (seq, rest) = leading_number(rest)?;
    let (sent_us, rest) = leading_number(rest.strip_prefix(br#","sent_us":"#)?)?;
    let (step, _) = leading_number(rest.strip_prefix(br#","step":"#)?)?;
    Some(Frame::Push(Push {
        channel,
        seq,
        sent_us,
        step: step as usize,
    }))
}

/// Any other layout: look the keys up.
fn parse_json_slow(b: &[u8]) -> Frame<'_> {
    if find(b, b"\"type\":\"push\"").is_none() {
        return if find(b, b"\"type\":\"gap\"").is_some() {
            Frame::Gap
        } else {
            Frame::Other
        };
    }
    let key = b"\"channel\":\"";
    let Some(channel) = find(b, key).and_then(|i| {
        let rest = b.get(i + key.len()..)?;
        let end = rest.iter().position(|&c| c == b'"')?;
        rest.get(..end)
    }) else {
        return Frame::Bad;
    };
    let Some(data) = find(b, b"\"data\":").and_then(|i| b.get(i..)) else {
        return Frame::Bad;
    };
    match (
        number_after(data, b"\"seq\":"),
        number_after(data, b"\"sent_us\":"),
    ) {
        (Some(seq), Some(sent_us)) => Frame::Push(Push {
            channel,
            seq,
            sent_us,
            step: number_after(data, b"\"step\":").unwrap_or(0) as usize,
        }),
        _ => Frame::Bad,
    }
}

/// `seq`, `sent_us` and `step` at the start of a publication's data, the
/// layout this publisher writes: `{"seq":N,"sent_us":T,"step":K…`; any
/// other layout is looked up key by key. Returns the numbers and what
/// follows the step (the whole input on the slow path).
fn data_numbers(b: &[u8]) -> Option<(u64, u64, usize, &[u8])> {
    let fast = || {
        let rest = b.strip_prefix(br#"{"seq":"#)?;
        let (seq, rest) = leading_number(rest)?;
        let (sent_us, rest) = leading_number(rest.strip_prefix(br#","sent_us":"#)?)?;
        let (step, rest) = leading_number(rest.strip_prefix(br#","step":"#)?)?;
        Some((seq, sent_us, step as usize, rest))
    };
    fast().or_else(|| {
        Some((
            number_after(b, b"\"seq\":")?,
            number_after(b, b"\"sent_us\":")?,
            number_after(b, b"\"step\":").unwrap_or(0) as usize,
            b,
        ))
    })
}

/// The string value of `"channel":"…"` in `b`, if any.
fn channel_in(b: &[u8]) -> Option<&[u8]> {
    let key = b"\"channel\":\"";
    let rest = b.get(find(b, key)? + key.len()..)?;
    let end = rest.iter().position(|&c| c == b'"')?;
    rest.get(..end)
}

/// A raw published envelope `{"event":"E","data":{…}}` (the uWebSockets.js
/// peer forwards what was published to Redis as is). It names no channel.
fn parse_envelope(b: &[u8]) -> Frame<'_> {
    let data = b
        .strip_prefix(br#"{"event":""#)
        .and_then(|rest| {
            let end = rest.iter().position(|&c| c == b'"')?;
            rest.get(end..)?.strip_prefix(br#"","data":"#)
        })
        .or_else(|| find(b, b"\"data\":").and_then(|i| b.get(i + 7..)));
    let Some(data) = data else {
        return Frame::Other;
    };
    match data_numbers(data) {
        Some((seq, sent_us, step, _)) => Frame::Push(Push {
            channel: b"",
            seq,
            sent_us,
            step,
        }),
        None => Frame::Bad,
    }
}

/// A Socket.IO event packet `42["E",{data},{"channel":"C",…}]` (herald adds
/// the meta argument with the channel; a Socket.IO server's
/// `io.to(room).emit(event, data)` has none). Any other packet is `Other`,
/// `herald:gap` is a gap.
fn parse_socketio(b: &[u8]) -> Frame<'_> {
    let Some(rest) = b.strip_prefix(br#"42[""#) else {
        return Frame::Other;
    };
    let Some(end) = rest.iter().position(|&c| c == b'"') else {
        return Frame::Bad;
    };
    let (event, rest) = rest.split_at(end);
    if event.starts_with(b"herald:") {
        return if event == b"herald:gap" {
            Frame::Gap
        } else {
            Frame::Other
        };
    }
    let Some(data) = rest.strip_prefix(br#"","#) else {
        return Frame::Bad;
    };
    match data_numbers(data) {
        Some((seq, sent_us, step, after)) => Frame::Push(Push {
            channel: channel_in(after).unwrap_or(b""),
            seq,
            sent_us,
            step,
        }),
        None => Frame::Bad,
    }
}

/// MessagePack frames: decoded into a small struct (unknown keys skipped).
fn parse_msgpack(b: &[u8]) -> Frame<'_> {
    let Ok(msg) = rmp_serde::from_slice::<MpMsg<'_>>(b) else {
        return Frame::Bad;
    };
    match (&*msg.kind, msg.channel, msg.data) {
        ("push", Some(channel), Some(data)) => Frame::Push(Push {
            channel: channel.as_bytes(),
            seq: data.seq,
            sent_us: data.sent_us,
            step: data.step,
        }),
        ("push", _, _) => Frame::Bad,
        ("gap", _, _) => Frame::Gap,
        _ => Frame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(frame: Frame<'_>) -> (String, u64, u64, usize) {
        match frame {
            Frame::Push(p) => (
                String::from_utf8(p.channel.to_vec()).unwrap(),
                p.seq,
                p.sent_us,
                p.step,
            ),
            _ => panic!("not a push"),
        }
    }

    #[test]
    fn parses_herald_push_on_the_fast_path() {
        let b = br#"{"type":"push","channel":"bench.7","event":"tick","data":{"seq":12,"sent_us":1700000000123456,"step":3},"ts":1700000000123}"#;
        assert!(parse_json_fast(b).is_some());
        assert_eq!(
            push(parse_json(b)),
            ("bench.7".to_owned(), 12, 1_700_000_000_123_456, 3)
        );
    }

    #[test]
    fn parses_other_layouts_on_the_slow_path() {
        let b = br#"{"channel":"bench","type":"push","event":"tick","data":{"sent_us":5,"pad":"x","seq":2}}"#;
        assert!(parse_json_fast(b).is_none());
        assert_eq!(push(parse_json(b)), ("bench".to_owned(), 2, 5, 0));
        assert!(matches!(
            parse_json(br#"{"type":"gap","channel":"bench"}"#),
            Frame::Gap
        ));
        assert!(matches!(
            parse_json(br#"{"type":"ok","id":1}"#),
            Frame::Other
        ));
        assert!(matches!(
            parse_json(br#"{"type":"push","channel":"bench","event":"tick","data":{}}"#),
            Frame::Bad
        ));
    }

    #[test]
    fn parses_socketio_events() {
        let herald = br#"42["tick",{"seq":4,"sent_us":99,"step":1},{"channel":"bench.3","ts":5}]"#;
        assert_eq!(
            push(parse_socketio(herald)),
            ("bench.3".to_owned(), 4, 99, 1)
        );
        let peer = br#"42["tick",{"seq":7,"sent_us":8,"step":0,"pad":"xx"}]"#;
        assert_eq!(push(parse_socketio(peer)), (String::new(), 7, 8, 0));
        let reordered = br#"42["tick",{"sent_us":8,"seq":7},{"ts":1,"channel":"c"}]"#;
        assert_eq!(push(parse_socketio(reordered)), ("c".to_owned(), 7, 8, 0));
        assert!(matches!(
            parse_socketio(br#"42["herald:gap",{"channel":"c"}]"#),
            Frame::Gap
        ));
        assert!(matches!(
            parse_socketio(br#"42["herald:welcome",{"conn_id":"x"}]"#),
            Frame::Other
        ));
        assert!(matches!(parse_socketio(b"3"), Frame::Other));
        assert!(matches!(
            parse_socketio(br#"42["tick",{"x":1}]"#),
            Frame::Bad
        ));
    }

    #[test]
    fn parses_raw_envelopes() {
        let b = br#"{"event":"tick","data":{"seq":2,"sent_us":3,"step":4}}"#;
        assert_eq!(push(parse_envelope(b)), (String::new(), 2, 3, 4));
        let other = br#"{"data":{"step":1,"sent_us":3,"seq":2},"event":"tick"}"#;
        assert_eq!(push(parse_envelope(other)), (String::new(), 2, 3, 1));
        assert!(matches!(parse_envelope(b"{}"), Frame::Other));
    }

    #[test]
    fn parses_msgpack_push() {
        #[derive(Serialize)]
        struct Data {
            seq: u64,
            sent_us: u64,
            step: usize,
        }
        #[derive(Serialize)]
        struct Msg<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            channel: &'a str,
            event: &'a str,
            data: Data,
            ts: u64,
        }
        let b = rmp_serde::to_vec_named(&Msg {
            kind: "push",
            channel: "prices",
            event: "tick",
            data: Data {
                seq: 9,
                sent_us: 77,
                step: 1,
            },
            ts: 1,
        })
        .unwrap();
        assert_eq!(push(parse_msgpack(&b)), ("prices".to_owned(), 9, 77, 1));
    }
}
