//! Load generator for herald: many authenticated WebSocket subscribers, a
//! paced publisher (HTTP API or Redis), end-to-end latency, loss and
//! duplicate accounting, server RSS and CPU sampling. Prints ONE JSON line
//! on stdout; progress goes to stderr.
//!
//! ```text
//! cargo run --release --example loadgen -- [options]      (--help lists them all)
//! ```
//!
//! How it works: the parent process spawns `--procs` worker processes (itself,
//! re-executed with a hidden `--worker` flag), each holding at most
//! `--max-per-proc` sockets (the open-file limit here is 20000 per process)
//! and binding its sockets to its own source address 127.0.0.(2+worker) so
//! the ~28k ephemeral ports per source IP are not exhausted. Workers report
//! over stdout as JSON lines; the parent holds, publishes, tells the workers
//! how many publications succeeded per channel, waits for their drained
//! results and merges the histograms.
//!
//! Every publication carries `{"seq":N,"sent_us":T,"step":K}`: a per-channel
//! sequence number, the send time in Unix microseconds, and the schedule
//! step. Receivers record latency = receive time − `sent_us` (µs, hdrhistogram),
//! and per connection and channel which sequence numbers arrived, so
//! `lost` = owed − distinct received (after waiting up to `--drain-secs` for
//! stragglers) and `duplicated` = repeats. `--server-pid` (repeatable)
//! enables server RSS (VmRSS) and CPU (utime+stime) sampling.
//!
//! Output fields: `connections {requested, opened, failed, connect_secs,
//! connect_rate, handshake_ms, errors, server_cpu_secs, loadgen_cpu_secs,
//! host_tcp}` (`handshake_ms` is TCP connect + upgrade + welcome + subscribe
//! acks per connection; `host_tcp` holds host-wide deltas of ListenOverflows
//! and TCPSynRetrans: a full accept queue shows up there and as ~1 s / ~3 s
//! handshake outliers), `latency_ms {p50, p90, p99, p999, max, mean, count}`,
//! `deliveries`, `deliveries_per_sec`, `published`, `expected`, `lost`,
//! `duplicated`, `reordered` (a lower sequence number after a higher one on
//! one connection and channel; the publisher keeps several requests in flight,
//! so these mostly reflect the order requests reached the hub),
//! `disconnected` with `disconnect_reasons`, `server {pids, rss_before_kib,
//! rss_after_kib, rss_end_kib, rss_per_conn_kib, hold_cpu_secs}` (RSS after
//! is taken after connecting and holding), `server_cpu_secs` and
//! `server_cpu_us_per_delivery` (over the publish phase, drain included),
//! `host_cpu_busy_pct`, `loadgen_cpu_secs` (parent + workers, whole run),
//! `loadgen_cpu_secs_publish`, and `steps [...]` when `--steps` is given: per
//! step the rate, achieved rate, published, deliveries of that step's
//! publications (whenever they arrived) and their rate over the step's
//! duration, lost, latency, server / loadgen / host CPU during the step.
//!
//! # Scenarios
//!
//! Start a hub first, e.g. `HERALD_LIMITS__MAX_CONNECTIONS=100000 herald --listen 127.0.0.1:8080`,
//! and pass its pid with `--server-pid $(pgrep -n herald)`.
//!
//! **idle**: 15k idle connections held 60 s; memory per connection.
//! ```text
//! loadgen --connections 15000 --procs 2 --connect-rate 2000 --hold 60 --server-pid $PID
//! ```
//!
//! **connect**: 15k connections as fast as possible; connect rate and handshake latency.
//! ```text
//! loadgen --connections 15000 --procs 2 --connect-rate 0 --server-pid $PID
//! ```
//!
//! **fanout**: 10k subscribers on one channel, 10 publications/s for 60 s.
//! ```text
//! loadgen --connections 10000 --channel bench --publish-rate 10 --duration 60 --server-pid $PID
//! ```
//!
//! **throughput**: 1000 subscribers, publication rate stepped up; per-step figures.
//! ```text
//! loadgen --connections 1000 --steps 100,300,1000,2000,3000 --step-secs 10 --server-pid $PID
//! ```
//!
//! **userchannels**: 5000 connections each on its own channel `bench.<i>`,
//! 1 publication/s per channel (round robin over the channels).
//! ```text
//! loadgen --connections 5000 --channel-mode own --publish-rate 5000 --duration 60 --server-pid $PID
//! ```
//!
//! **scale-out**: 50k connections over 3 nodes sharing Redis; connections are
//! spread round robin over the `--url`s, publications go through Redis
//! (`PUBLISH herald:<channel> {"event":…,"data":…}`, pipelined). Each hub
//! must stay under its own 20000 open files.
//! ```text
//! loadgen --connections 50000 --procs 3 \
//!   --url ws://127.0.0.1:8081 --url ws://127.0.0.1:8082 --url ws://127.0.0.1:8083 \
//!   --via redis --redis-url redis://127.0.0.1:6379 --prefix herald: \
//!   --publish-rate 10 --duration 60 --server-pid $P1 --server-pid $P2 --server-pid $P3
//! ```
//!
//! Add `--extra-channel prices` to subscribe every connection to a second
//! shared channel (published at `--extra-rate`/s), `--format msgpack` for
//! binary frames, `--payload-bytes N` for larger payloads.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the load generator reports its result on stdout and progress on stderr"
)]

#[path = "loadgen/common.rs"]
mod common;
#[path = "loadgen/publisher.rs"]
mod publisher;
#[path = "loadgen/worker.rs"]
mod worker;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use tokio::{sync::mpsc, time};

use common::{
    Drain, Ready, Res, WorkerLine, WorkerResult, add_pairs, counter_delta, host_cpu_ticks,
    new_hist, open_files_limit, parse_target, proc_cpu_secs, proc_rss_kib, quantiles_ms, r3,
    tcp_counters,
};

/// Which channels the connections subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ChannelMode {
    /// Every connection subscribes to `--channel`.
    Shared,
    /// Connection i subscribes to `<channel>.<i>`.
    Own,
}

/// How publications reach the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Via {
    /// `POST /api/v1/publish` and `/api/v1/publish/batch`.
    Http,
    /// `PUBLISH <prefix><channel>` on Redis (the Redis engine).
    Redis,
}

/// Which server, and so which client protocol, the connections speak to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    /// herald's native protocol on `/ws`: `?token=<JWT>`, `welcome`, `subscribe`/`ok`.
    Herald,
    /// Engine.IO v4 + Socket.IO v5 over the WebSocket transport on
    /// `/socket.io/`: CONNECT with `{"token"}`, `subscribe` event with an
    /// ack, publications as event packets. herald's Socket.IO front door or
    /// a Socket.IO server (examples/peers/socketio-hub.mjs).
    Socketio,
    /// Plain WebSocket on `/` with `?channel=<name>` (further channels as
    /// `{"subscribe":"<name>"}` frames, no ack), no auth; frames are the raw
    /// published envelope `{"event":…,"data":…}` (examples/peers/uws-hub.mjs).
    Uws,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Herald => "herald",
            Self::Socketio => "socketio",
            Self::Uws => "uws",
        }
    }

    /// The WebSocket path used when `--url` names none.
    pub(crate) fn default_path(self) -> &'static str {
        match self {
            Self::Herald => "/ws",
            Self::Socketio => "/socket.io/",
            Self::Uws => "/",
        }
    }
}

/// WebSocket frame format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WireFormat {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames (`?format=msgpack`).
    Msgpack,
}

/// Load generator for herald. Prints one JSON line with the results.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen")]
pub(crate) struct Args {
    /// Hub WebSocket URL (path defaults to /ws, /socket.io/ or / by
    /// --target); repeat for several nodes.
    #[arg(long = "url", default_value = "ws://127.0.0.1:8080")]
    urls: Vec<String>,
    /// Client protocol: herald's native one, Socket.IO, or plain WebSocket
    /// with the channel in the URL (uWebSockets.js peer).
    #[arg(long, value_enum, default_value_t = Protocol::Herald)]
    target: Protocol,
    /// HTTP API base URL for publishing, e.g. http://127.0.0.1:8080; repeatable
    /// (requests go round robin). Default: derived from each --url.
    #[arg(long = "api-url")]
    api_urls: Vec<String>,
    /// API key for the HTTP publish API.
    #[arg(long, default_value = "herald-insecure-development-api-key")]
    api_key: String,
    /// HS256 secret the tokens are signed with.
    #[arg(long, default_value = "herald-insecure-development-secret")]
    secret: String,
    /// Connections to open (one user each: <user-prefix><i>).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Connections opened per second over all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Handshakes in flight per worker at most. herald listens with the
    /// tokio default backlog of 128: far more in flight than that overflows
    /// its accept queue (SYN drops, ~1 s retransmits; see `host_tcp`).
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Seconds one connection may take to connect, get welcomed and subscribe.
    #[arg(long, default_value_t = 15.0)]
    connect_timeout: f64,
    /// Channel name (shared mode) or prefix (own mode).
    #[arg(long, default_value = "bench")]
    channel: String,
    /// shared: all on --channel; own: connection i on <channel>.<i>.
    #[arg(long, value_enum, default_value_t = ChannelMode::Shared)]
    channel_mode: ChannelMode,
    /// A second shared channel every connection also subscribes to.
    #[arg(long)]
    extra_channel: Option<String>,
    /// Publications per second on --extra-channel during the publish phase.
    #[arg(long, default_value_t = 0.0)]
    extra_rate: f64,
    /// WebSocket frame format.
    #[arg(long, value_enum, default_value_t = WireFormat::Json)]
    format: WireFormat,
    /// Worker processes; 0 = as many as --max-per-proc requires.
    #[arg(long, default_value_t = 0)]
    procs: usize,
    /// Most sockets per worker process when --procs is 0.
    #[arg(long, default_value_t = 18_000)]
    max_per_proc: usize,
    /// Worker w binds its sockets to 127.0.0.(base+w) when all URLs are IPv4 loopback.
    #[arg(long, default_value_t = 2)]
    source_ip_base: u8,
    /// Do not bind client sockets to per-worker source addresses.
    #[arg(long)]
    no_bind: bool,
    /// Publications per second (round robin over the channels in own mode).
    #[arg(long, default_value_t = 0.0)]
    publish_rate: f64,
    /// Seconds to publish for (without --steps).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Rate schedule, publications/s per step, e.g. 100,300,1000 (overrides --publish-rate/--duration).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<f64>,
    /// Seconds per step of --steps.
    #[arg(long, default_value_t = 10.0)]
    step_secs: f64,
    /// Publish through the HTTP API or Redis.
    #[arg(long, value_enum, default_value_t = Via::Http)]
    via: Via,
    /// Redis URL for --via redis.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Redis channel prefix for --via redis.
    #[arg(long, default_value = "herald:")]
    prefix: String,
    /// Event name of the publications.
    #[arg(long, default_value = "tick")]
    event: String,
    /// Extra padding bytes in each payload.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Most publications per HTTP batch request or Redis pipeline (≤ 1000).
    #[arg(long, default_value_t = 1000)]
    batch_max: usize,
    /// Publisher tick in milliseconds: what is due is sent once per tick, batched.
    #[arg(long, default_value_t = 1.0)]
    tick_ms: f64,
    /// Most publish requests/pipelines in flight.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Seconds to keep all connections idle before publishing (RSS is sampled after).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Server process id for RSS and CPU sampling; repeat for several nodes.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Seconds to wait for stragglers after publishing.
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// User id prefix; connection i authenticates as <prefix><i>.
    #[arg(long, default_value = "lg-")]
    user_prefix: String,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    token_ttl: u64,
    /// WebSocket read buffer per connection, in bytes.
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
    /// Free-form scenario label copied into the output.
    #[arg(long)]
    label: Option<String>,
    /// Internal: run as worker N.
    #[arg(long, hide = true)]
    worker: Option<usize>,
    /// Internal: global index of the worker's first connection.
    #[arg(long, hide = true, default_value_t = 0)]
    worker_start: usize,
    /// Internal: the worker's number of connections.
    #[arg(long, hide = true, default_value_t = 0)]
    worker_count: usize,
}

impl Args {
    /// The publish schedule: (rate, seconds) per step.
    fn plan(&self) -> Vec<(f64, f64)> {
        if !self.steps.is_empty() {
            self.steps.iter().map(|&r| (r, self.step_secs)).collect()
        } else if self.publish_rate > 0.0 || self.extra_rate > 0.0 {
            vec![(self.publish_rate, self.duration)]
        } else {
            Vec::new()
        }
    }

    /// Upper bound for connecting all connections.
    fn connect_budget_secs(&self) -> f64 {
        let paced = if self.connect_rate > 0.0 {
            self.connections as f64 / self.connect_rate
        } else {
            0.0
        };
        paced + self.connect_timeout * 10.0 + 30.0
    }

    /// How long a worker waits for the drain command before giving up.
    fn worker_deadline_secs(&self) -> f64 {
        let publish: f64 = self.plan().iter().map(|(_, s)| s).sum();
        self.hold + publish * 2.0 + self.drain_secs + 300.0
    }
}

fn main() {
    let args = Args::parse();
    let result = match args.worker {
        Some(index) => worker::run(args, index),
        None => parent(args),
    };
    if let Err(e) = result {
        eprintln!("[loadgen] error: {e}");
        std::process::exit(1);
    }
}

/// One spawned worker process.
struct Worker {
    first: usize,
    count: usize,
    pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Option<Ready>,
    result: Option<WorkerResult>,
}

/// CPU counters at one instant.
#[derive(Clone)]
struct CpuSnap {
    at: Instant,
    server: Option<f64>,
    own: f64,
    workers: Vec<f64>,
    host: Option<(u64, u64)>,
}

impl CpuSnap {
    fn take(server_pids: &[u32], workers: &[Worker]) -> Self {
        let server = if server_pids.is_empty() {
            None
        } else {
            server_pids
                .iter()
                .map(|&p| proc_cpu_secs(Some(p)))
                .sum::<Option<f64>>()
        };
        Self {
            at: Instant::now(),
            server,
            own: proc_cpu_secs(None).unwrap_or(0.0),
            workers: workers
                .iter()
                .map(|w| proc_cpu_secs(Some(w.pid)).unwrap_or(0.0))
                .collect(),
            host: host_cpu_ticks(),
        }
    }

    fn wall(&self, later: &Self) -> f64 {
        later.at.duration_since(self.at).as_secs_f64()
    }

    fn server_secs(&self, later: &Self) -> Option<f64> {
        Some(later.server? - self.server?)
    }

    fn loadgen_secs(&self, later: &Self) -> f64 {
        let workers: f64 = later
            .workers
            .iter()
            .zip(&self.workers)
            .map(|(b, a)| (b - a).max(0.0))
            .sum();
        later.own - self.own + workers
    }

    fn host_busy_pct(&self, later: &Self) -> Option<f64> {
        let (busy0, total0) = self.host?;
        let (busy1, total1) = later.host?;
        let total = total1.checked_sub(total0)?;
        (total > 0).then(|| r3(busy1.saturating_sub(busy0) as f64 * 100.0 / total as f64))
    }
}

fn rss_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| proc_rss_kib(p)).sum()
}

fn parent(args: Args) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut workers = Vec::new();
    let result = rt.block_on(run_parent(&args, &mut workers));
    // Never leave workers behind: they exit by themselves after reporting;
    // give them a moment, then kill what is left.
    for w in &mut workers {
        drop(w.stdin.take());
    }
    let until = Instant::now() + Duration::from_secs(5);
    for w in &mut workers {
        loop {
            match w.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= until => {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    let line = result?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn spawn_workers(
    args: &Args,
    workers: &mut Vec<Worker>,
    lines: &mpsc::UnboundedSender<(usize, Option<String>)>,
) -> Res<()> {
    let n = args.connections;
    let procs = if args.procs > 0 {
        args.procs
    } else {
        n.div_ceil(args.max_per_proc.max(1))
    }
    .clamp(1, n.max(1));
    let fd_limit = open_files_limit().unwrap_or(1024) as usize;
    let per = n.div_ceil(procs);
    if per + 64 > fd_limit {
        return Err(format!(
            "{per} sockets per worker exceed the open-file limit {fd_limit}; use more --procs"
        )
        .into());
    }
    let exe = std::env::current_exe()?;
    let passthrough: Vec<_> = std::env::args_os().skip(1).collect();
    let mut first = 0;
    for index in 0..procs {
        let count = n / procs + usize::from(index < n % procs);
        let mut child = Command::new(&exe)
            .args(&passthrough)
            .args(["--worker", &index.to_string()])
            .args(["--worker-start", &first.to_string()])
            .args(["--worker-count", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("worker stdout missing")?;
        let tx = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((index, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((index, None));
        });
        workers.push(Worker {
            first,
            count,
            pid: child.id(),
            stdin: child.stdin.take(),
            child,
            ready: None,
            result: None,
        });
        first += count;
    }
    Ok(())
}

/// Receives worker lines until `done` holds for every worker, or the deadline.
async fn collect(
    workers: &mut [Worker],
    lines: &mut mpsc::UnboundedReceiver<(usize, Option<String>)>,
    deadline: Duration,
    what: &str,
    done: fn(&Worker) -> bool,
) -> Res<()> {
    let until = Instant::now() + deadline;
    while !workers.iter().all(done) {
        let left = until.saturating_duration_since(Instant::now());
        let (index, line) = match time::timeout(left, lines.recv()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err("worker channel closed".into()),
            Err(_) => return Err(format!("workers did not report {what} in time").into()),
        };
        let worker = workers.get_mut(index).ok_or("unknown worker")?;
        let Some(line) = line else {
            if done(worker) {
                continue;
            }
            return Err(format!("worker {index} exited before reporting {what}").into());
        };
        match serde_json::from_str::<WorkerLine>(&line) {
            Ok(WorkerLine::Ready(r)) => worker.ready = Some(r),
            Ok(WorkerLine::Result(r)) => worker.result = Some(r),
            Err(e) => eprintln!("[loadgen] unreadable line from worker {index}: {e}"),
        }
    }
    Ok(())
}

async fn run_parent(args: &Args, workers: &mut Vec<Worker>) -> Res<Value> {
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if args.worker_deadline_secs() > 24.0 * 3600.0 {
        return Err("the run would last more than a day; shorten --hold/--duration/--steps".into());
    }
    let targets = args
        .urls
        .iter()
        .map(|u| parse_target(u, args.target.default_path()))
        .collect::<Res<Vec<_>>>()?;
    if args.target != Protocol::Herald && args.format == WireFormat::Msgpack {
        return Err("--format msgpack is for --target herald only".into());
    }
    if args.target == Protocol::Uws && args.extra_channel.is_some() {
        return Err(
            "--target uws frames name no channel: one channel per connection (no --extra-channel)"
                .into(),
        );
    }
    if args.target == Protocol::Uws
        && args.via == Via::Http
        && args.api_urls.is_empty()
        && !args.plan().is_empty()
    {
        return Err("--target uws has no HTTP publish API: use --via redis".into());
    }
    let own = args.channel_mode == ChannelMode::Own;
    let plan = args.plan();
    let n_steps = args.steps.len().max(1);
    let pids = &args.server_pids;

    // Connect the publisher first, so that a bad Redis URL fails fast.
    let mut publisher = if plan.is_empty() {
        None
    } else {
        Some(publisher::Publisher::new(args, &targets, n_steps).await?)
    };

    let rss_before = rss_sum(pids);
    let connect_start = CpuSnap::take(pids, workers);
    let tcp_before = tcp_counters();
    let (tx, mut lines) = mpsc::unbounded_channel();
    let started = Instant::now();
    spawn_workers(args, workers, &tx)?;
    drop(tx);
    eprintln!(
        "[loadgen] {} connections over {} worker process(es) to {}",
        args.connections,
        workers.len(),
        args.urls.join(", ")
    );
    collect(
        workers,
        &mut lines,
        Duration::from_secs_f64(args.connect_budget_secs()),
        "ready",
        |w| w.ready.is_some(),
    )
    .await?;
    let connect_wall = started.elapsed().as_secs_f64();
    let connect_end = CpuSnap::take(pids, workers);
    let tcp = counter_delta(&tcp_before, &tcp_counters());
    // Workers did not exist at `connect_start`: all their CPU so far is connect work.
    let connect_loadgen_cpu =
        connect_end.own - connect_start.own + connect_end.workers.iter().sum::<f64>();
    let ready: Vec<&Ready> = workers.iter().filter_map(|w| w.ready.as_ref()).collect();
    let opened: u64 = ready.iter().map(|r| r.opened).sum();
    let failed: u64 = ready.iter().map(|r| r.failed).sum();
    let connect_secs = ready.iter().map(|r| r.connect_secs).fold(0.0, f64::max);
    let mut handshake = new_hist()?;
    let mut connect_errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in &ready {
        add_pairs(&mut handshake, &r.handshake_us);
        for (k, v) in &r.errors {
            *connect_errors.entry(k.clone()).or_insert(0) += v;
        }
    }
    let connect_rate = if connect_secs > 0.0 {
        opened as f64 / connect_secs
    } else {
        0.0
    };
    eprintln!(
        "[loadgen] {opened} open, {failed} failed in {connect_secs:.2}s ({connect_rate:.0}/s)"
    );
    if !connect_errors.is_empty() {
        eprintln!("[loadgen] connect errors: {connect_errors:?}");
    }

    // Idle hold.
    let hold_start = CpuSnap::take(pids, workers);
    if args.hold > 0.0 {
        eprintln!(
            "[loadgen] holding {} connections idle for {}s",
            opened, args.hold
        );
        let until = Instant::now() + Duration::from_secs_f64(args.hold);
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            time::sleep(left.min(Duration::from_secs(10))).await;
            if let Some(rss) = rss_sum(pids) {
                eprintln!(
                    "[loadgen] hold: {:.0}s left, server RSS {rss} KiB",
                    until
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                );
            }
        }
    }
    let hold_end = CpuSnap::take(pids, workers);
    let rss_after = rss_sum(pids);

    // Publish.
    let publish_start = CpuSnap::take(pids, workers);
    let mut step_snaps = Vec::new();
    let mut outcomes = Vec::new();
    if let Some(publisher) = publisher.as_mut() {
        for (k, &(rate, secs)) in plan.iter().enumerate() {
            let before = CpuSnap::take(pids, workers);
            eprintln!("[loadgen] step {k}: publishing {rate}/s for {secs}s");
            let outcome = publisher.run_step(k, rate, args.extra_rate, secs).await;
            let after = CpuSnap::take(pids, workers);
            eprintln!(
                "[loadgen] step {k}: sent {} in {:.2}s ({} requests), server CPU {}",
                outcome.attempted,
                outcome.secs,
                outcome.requests,
                before
                    .server_secs(&after)
                    .map_or("n/a".to_owned(), |s| format!(
                        "{:.0}% of a core",
                        s * 100.0 / before.wall(&after)
                    ))
            );
            step_snaps.push((before, after));
            outcomes.push(outcome);
        }
    }
    let publish_wall = outcomes.iter().fold(0.0, |acc, o| acc + o.secs);

    // Drain: tell every worker what it is owed, collect the results.
    for w in workers.iter_mut() {
        let published = match &publisher {
            Some(p) => p.slice_for_worker(own, w.first, w.count),
            None => vec![
                vec![0; common::channel_slots(own, w.count, args.extra_channel.is_some())];
                n_steps
            ],
        };
        let line = serde_json::to_string(&Drain { published })?;
        if let Some(stdin) = w.stdin.as_mut() {
            writeln!(stdin, "{line}")?;
            stdin.flush()?;
        }
    }
    eprintln!("[loadgen] draining (up to {}s)", args.drain_secs);
    collect(
        workers,
        &mut lines,
        Duration::from_secs_f64(args.drain_secs + 60.0),
        "results",
        |w| w.result.is_some(),
    )
    .await?;
    let mut end = CpuSnap::take(pids, workers);
    let rss_end = rss_sum(pids);
    // Workers measured their own CPU right after draining; they may be gone now.
    let results: Vec<&WorkerResult> = workers.iter().filter_map(|w| w.result.as_ref()).collect();
    end.workers = results.iter().map(|r| r.cpu_secs).collect();

    // Merge.
    let mut latency = new_hist()?;
    let mut extra_latency = new_hist()?;
    let mut steps_out = Vec::new();
    let (mut deliveries, mut expected, mut distinct) = (0u64, 0u64, 0u64);
    for k in 0..n_steps {
        let mut hist = new_hist()?;
        let (mut d, mut e, mut x) = (0u64, 0u64, 0u64);
        for r in &results {
            if let Some(s) = r.steps.get(k) {
                add_pairs(&mut hist, &s.latency_us);
                add_pairs(&mut extra_latency, &s.extra_latency_us);
                d += s.deliveries;
                e += s.expected;
                x += s.distinct;
            }
        }
        latency.add(&hist)?;
        deliveries += d;
        expected += e;
        distinct += x;
        if let (Some((rate, _)), Some(outcome), Some((before, after))) =
            (plan.get(k), outcomes.get(k), step_snaps.get(k))
        {
            let published: u64 = publisher
                .as_ref()
                .and_then(|p| p.published.get(k))
                .map_or(0, |v| v.iter().sum());
            let wall = before.wall(after);
            let server = before.server_secs(after);
            steps_out.push(json!({
                "rate": rate,
                "secs": r3(outcome.secs),
                "published": published,
                "achieved_rate": r3(outcome.attempted as f64 / outcome.secs.max(1e-9)),
                "requests": outcome.requests,
                "deliveries": d,
                "deliveries_per_sec": r3(d as f64 / outcome.secs.max(1e-9)),
                "expected": e,
                "lost": e.saturating_sub(x),
                "latency_ms": quantiles_ms(&hist),
                "server_cpu_secs": server.map(r3),
                "server_cpu_pct_of_core": server.map(|s| r3(s * 100.0 / wall)),
                "server_cpu_us_per_delivery": server.filter(|_| d > 0).map(|s| r3(s * 1e6 / d as f64)),
                "loadgen_cpu_secs": r3(before.loadgen_secs(after)),
                "host_cpu_busy_pct": before.host_busy_pct(after),
            }));
        }
    }
    let published: u64 = publisher
        .as_ref()
        .map_or(0, |p| p.published.iter().flatten().sum());
    let sum = |f: fn(&WorkerResult) -> u64| results.iter().map(|r| f(r)).sum::<u64>();
    let mut disconnect_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        for (k, v) in &r.disconnect_reasons {
            *disconnect_reasons.entry(k.clone()).or_insert(0) += v;
        }
    }
    let server_cpu = publish_start.server_secs(&end).filter(|_| !plan.is_empty());
    let loadgen_total =
        proc_cpu_secs(None).unwrap_or(0.0) + results.iter().map(|r| r.cpu_secs).sum::<f64>();
    let rss_per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => Some(r3((a as f64 - b as f64) / opened as f64)),
        _ => None,
    };

    let mut out = json!({
        "label": args.label,
        "target": args.target.name(),
        "connections": {
            "requested": args.connections,
            "opened": opened,
            "failed": failed,
            "connect_secs": r3(connect_secs),
            "connect_rate": r3(connect_rate),
            "connect_wall_secs": r3(connect_wall),
            "handshake_ms": quantiles_ms(&handshake),
            "errors": connect_errors,
            "procs": workers.len(),
            "server_cpu_secs": connect_start.server_secs(&connect_end).map(r3),
            "loadgen_cpu_secs": r3(connect_loadgen_cpu),
            "host_tcp": tcp,
        },
        "hold_secs": args.hold,
        "publish": {
            "via": match args.via { Via::Http => "http", Via::Redis => "redis" },
            "format": match args.format { WireFormat::Json => "json", WireFormat::Msgpack => "msgpack" },
            "mode": match args.channel_mode { ChannelMode::Shared => "shared", ChannelMode::Own => "own" },
            "secs": r3(publish_wall),
            "requests": publisher.as_ref().map_or(0, |p| p.requests),
            "errors": publisher.as_ref().map_or(0, |p| p.errors),
            "error_messages": publisher.as_ref().map(|p| p.error_messages.clone()),
        },
        "latency_ms": quantiles_ms(&latency),
        // With --extra-channel: its pushes (a broadcast, say) and the main
        // channels' apart, since one can stretch the other's tail.
        "latency_ms_main": args.extra_channel.as_ref().and_then(|_| {
            let mut main = latency.clone();
            main.subtract(&extra_latency).ok()?;
            quantiles_ms(&main)
        }),
        "latency_ms_extra": quantiles_ms(&extra_latency),
        "deliveries": deliveries,
        "deliveries_per_sec": if publish_wall > 0.0 { r3(deliveries as f64 / publish_wall) } else { 0.0 },
        "published": published,
        "expected": expected,
        "lost": expected.saturating_sub(distinct),
        "duplicated": sum(|r| r.duplicated),
        "reordered": sum(|r| r.reordered),
        "gaps": sum(|r| r.gaps),
        "other_messages": sum(|r| r.other_messages),
        "parse_errors": sum(|r| r.parse_errors),
        "disconnected": sum(|r| r.disconnected),
        "disconnect_reasons": disconnect_reasons,
        "drain_secs": r3(results.iter().map(|r| r.drain_secs).fold(0.0, f64::max)),
        "server": {
            "pids": pids,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_end_kib": rss_end,
            "rss_per_conn_kib": rss_per_conn,
            "hold_cpu_secs": hold_start.server_secs(&hold_end).filter(|_| args.hold > 0.0).map(r3),
        },
        "server_cpu_secs": server_cpu.map(r3),
        "server_cpu_us_per_delivery": server_cpu.filter(|_| deliveries > 0).map(|s| r3(s * 1e6 / deliveries as f64)),
        "host_cpu_busy_pct": if plan.is_empty() { None } else { publish_start.host_busy_pct(&end) },
        "loadgen_cpu_secs": r3(loadgen_total),
        "loadgen_cpu_secs_publish": if plan.is_empty() { None } else { Some(r3(publish_start.loadgen_secs(&end))) },
        "loadgen_rss_kib": results.iter().map(|r| r.rss_kib).sum::<u64>(),
    });
    if !args.steps.is_empty()
        && let Some(obj) = out.as_object_mut()
    {
        obj.insert("steps".to_owned(), Value::Array(steps_out));
    }
    Ok(out)
}
