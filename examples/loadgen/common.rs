//! Pieces shared by the parent and the worker processes: the JSON lines they
//! exchange, histogram helpers and `/proc` sampling.

use std::{
    collections::BTreeMap,
    fs,
    time::{SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Res<T> = Result<T, BoxError>;

/// Linux reports utime/stime in clock ticks; `USER_HZ` is 100 on every
/// mainstream architecture (reading `sysconf(_SC_CLK_TCK)` would need libc).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Microseconds since the Unix epoch.
pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A latency histogram in microseconds, 1 µs to one hour, 3 significant figures.
pub(crate) fn new_hist() -> Res<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

/// The recorded buckets as `(value, count)` pairs, for sending to the parent.
pub(crate) fn hist_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds `(value, count)` pairs from a worker into `h`.
pub(crate) fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        h.saturating_record_n(value, count);
    }
}

/// Percentiles of a microsecond histogram, in milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Quantiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
    count: u64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentiles in milliseconds, or `None` for an empty histogram.
pub(crate) fn quantiles_ms(h: &Histogram<u64>) -> Option<Quantiles> {
    if h.is_empty() {
        return None;
    }
    Some(Quantiles {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: r3(h.mean() / 1000.0),
        count: h.len(),
    })
}

/// Rounds to three decimals for the report.
pub(crate) fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// user+system CPU seconds of a process (`None`: this process), from `/proc/PID/stat`.
pub(crate) fn proc_cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': [0] is field 3 (state), so utime (14) is [11] and stime (15) is [12].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SEC)
}

/// Resident set size of a process in KiB, from `VmRSS` in `/proc/PID/status`.
pub(crate) fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Host-wide CPU counters `(busy, total)` in ticks, from the first line of `/proc/stat`.
pub(crate) fn host_cpu_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Number of channel slots a worker tracks: its main channels, then the extra one.
pub(crate) fn channel_slots(own: bool, connections: usize, extra: bool) -> usize {
    let main = if own { connections } else { 1 };
    main + usize::from(extra)
}

/// Worker → parent: all connections of the worker are open (or failed).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ready {
    pub(crate) worker: usize,
    pub(crate) pid: u32,
    pub(crate) opened: u64,
    pub(crate) failed: u64,
    pub(crate) connect_secs: f64,
    pub(crate) handshake_us: Vec<(u64, u64)>,
    pub(crate) errors: BTreeMap<String, u64>,
}

/// Per-step figures a worker measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StepResult {
    /// Latency histogram (µs) as `(value, count)` pairs.
    pub(crate) latency_us: Vec<(u64, u64)>,
    /// The same, for the --extra-channel's pushes only (a subset of `latency_us`).
    #[serde(default)]
    pub(crate) extra_latency_us: Vec<(u64, u64)>,
    /// Push frames received, duplicates included.
    pub(crate) deliveries: u64,
    /// Distinct (connection, channel, seq) triples received.
    pub(crate) distinct: u64,
    /// Deliveries owed to this worker's subscribed connections.
    pub(crate) expected: u64,
}

/// Worker → parent: final figures, after the drain.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WorkerResult {
    pub(crate) worker: usize,
    pub(crate) steps: Vec<StepResult>,
    pub(crate) duplicated: u64,
    pub(crate) reordered: u64,
    pub(crate) gaps: u64,
    pub(crate) other_messages: u64,
    pub(crate) parse_errors: u64,
    pub(crate) disconnected: u64,
    pub(crate) disconnect_reasons: BTreeMap<String, u64>,
    pub(crate) drain_secs: f64,
    pub(crate) cpu_secs: f64,
    pub(crate) rss_kib: u64,
}

/// One line a worker writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum WorkerLine {
    Ready(Ready),
    Result(WorkerResult),
}

/// Parent → worker: publishing is over; these many publications succeeded
/// per step and per channel slot of the worker (see [`channel_slots`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Drain {
    pub(crate) published: Vec<Vec<u64>>,
}

/// A hub address, parsed from `--url`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Resolved socket address.
    pub(crate) addr: std::net::SocketAddr,
    /// `host:port` as given, for the Host header and the HTTP API.
    pub(crate) authority: String,
    /// WebSocket path: the URL's, or `default_path` when it names none.
    pub(crate) path: String,
}

/// Parses `ws://host:port[/path]` (or `http://…`) and resolves it once;
/// `default_path` stands for a missing or `/` path (`/ws` for herald's
/// native protocol).
pub(crate) fn parse_target(url: &str, default_path: &str) -> Res<Target> {
    use std::net::ToSocketAddrs as _;
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("--url {url}: only ws:// (or http://) URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = if path.is_empty() || path == "/" {
        default_path
    } else {
        path
    };
    let with_port = if authority
        .rsplit(']')
        .next()
        .unwrap_or(authority)
        .contains(':')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("--url {url}: {authority} resolves to no address"))?;
    Ok(Target {
        addr,
        authority: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// Counts an error message under a short, bounded key.
pub(crate) fn count_error(map: &mut BTreeMap<String, u64>, message: &str) {
    let mut key: String = message.chars().take(100).collect();
    if !map.contains_key(&key) && map.len() >= 20 {
        key = "(other errors)".to_owned();
    }
    *map.entry(key).or_insert(0) += 1;
}

/// Host-wide TCP counters that explain slow connects (SYN drops on a full
/// accept queue), from `/proc/net/netstat`.
pub(crate) fn tcp_counters() -> BTreeMap<String, u64> {
    const KEYS: [&str; 3] = ["ListenOverflows", "ListenDrops", "TCPSynRetrans"];
    let mut out = BTreeMap::new();
    let Ok(text) = fs::read_to_string("/proc/net/netstat") else {
        return out;
    };
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if KEYS.contains(&name)
                && let Ok(v) = value.parse()
            {
                out.insert(name.to_owned(), v);
            }
        }
    }
    out
}

/// `later - earlier` per counter.
pub(crate) fn counter_delta(
    earlier: &BTreeMap<String, u64>,
    later: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    later
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(earlier.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}
