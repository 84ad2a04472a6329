//! The publisher, in the parent process: paced publications over the HTTP
//! API or Redis, each carrying its send time and a per-channel sequence number.
//!
//! Every tick (1 ms by default) it publishes what is due by then, grouped into
//! one batch request or one Redis pipeline, with a bounded number of requests
//! in flight, so one slow request does not stall the schedule.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use tokio::{
    task::JoinSet,
    time::{self, MissedTickBehavior},
};

use crate::{
    Args, ChannelMode, Via,
    common::{Res, Target, count_error, unix_us},
};

/// Longest a request or pipeline may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

enum Sink {
    Http {
        client: reqwest::Client,
        bases: Vec<String>,
        auth: String,
    },
    Redis {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
    },
}

/// What one request carried (step, channel slots) and how it went.
type Sent = (usize, Vec<u32>, Result<(), String>);

pub(crate) struct Publisher {
    sink: Sink,
    /// Channel names by global slot: the main channels, then the extra one.
    names: Vec<String>,
    n_main: usize,
    event: String,
    pad: String,
    seqs: Vec<u64>,
    next_main: usize,
    next_base: usize,
    batch_max: usize,
    tick: Duration,
    max_in_flight: usize,
    in_flight: JoinSet<Sent>,
    /// Successful publications, `[step][global slot]`.
    pub(crate) published: Vec<Vec<u64>>,
    pub(crate) errors: u64,
    pub(crate) error_messages: BTreeMap<String, u64>,
    pub(crate) requests: u64,
}

/// What one step of the schedule did.
pub(crate) struct StepOutcome {
    /// Publications sent (successful or not).
    pub(crate) attempted: u64,
    /// Wall time of the step including the wait for its last responses.
    pub(crate) secs: f64,
    /// Requests (HTTP) or pipelines (Redis) used.
    pub(crate) requests: u64,
}

impl Publisher {
    pub(crate) async fn new(args: &Args, targets: &[Target], steps: usize) -> Res<Self> {
        let sink = match args.via {
            Via::Http => {
                let bases = if args.api_urls.is_empty() {
                    targets
                        .iter()
                        .map(|t| format!("http://{}", t.authority))
                        .collect()
                } else {
                    args.api_urls
                        .iter()
                        .map(|u| u.trim_end_matches('/').to_owned())
                        .collect()
                };
                let client = reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(args.max_in_flight)
                    .build()?;
                Sink::Http {
                    client,
                    bases,
                    auth: format!("Bearer {}", args.api_key),
                }
            }
            Via::Redis => {
                let client = redis::Client::open(args.redis_url.as_str())?;
                let conn =
                    time::timeout(REQUEST_TIMEOUT, client.get_multiplexed_async_connection())
                        .await
                        .map_err(|_| format!("connecting to {} timed out", args.redis_url))??;
                Sink::Redis {
                    conn,
                    prefix: args.prefix.clone(),
                }
            }
        };
        let mut names: Vec<String> = match args.channel_mode {
            ChannelMode::Shared => vec![args.channel.clone()],
            ChannelMode::Own => (0..args.connections)
                .map(|i| format!("{}.{i}", args.channel))
                .collect(),
        };
        let n_main = names.len();
        if let Some(extra) = &args.extra_channel {
            names.push(extra.clone());
        }
        let slots = names.len();
        Ok(Self {
            sink,
            names,
            n_main,
            event: args.event.clone(),
            pad: "x".repeat(args.payload_bytes),
            seqs: vec![0; slots],
            next_main: 0,
            next_base: 0,
            batch_max: args.batch_max.clamp(1, 1000),
            tick: Duration::from_secs_f64((args.tick_ms / 1000.0).max(0.0005)),
            max_in_flight: args.max_in_flight.max(1),
            in_flight: JoinSet::new(),
            published: vec![vec![0; slots]; steps],
            errors: 0,
            error_messages: BTreeMap::new(),
            requests: 0,
        })
    }

    /// Publishes at `rate`/s round robin over the main channels (and at
    /// `extra_rate`/s on the extra channel) for `secs` seconds.
    pub(crate) async fn run_step(
        &mut self,
        step: usize,
        rate: f64,
        extra_rate: f64,
        secs: f64,
    ) -> StepOutcome {
        let has_extra = self.names.len() > self.n_main;
        let extra_rate = if has_extra { extra_rate } else { 0.0 };
        let requests_before = self.requests;
        let start = Instant::now();
        let duration = Duration::from_secs_f64(secs.max(0.0));
        let mut ticker = time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let (mut sent_main, mut sent_extra) = (0u64, 0u64);
        let mut due: Vec<u32> = Vec::new();
        loop {
            ticker.tick().await;
            let elapsed = start.elapsed();
            let t = elapsed.min(duration).as_secs_f64();
            let want_main = (rate * t + 1e-9).floor() as u64;
            let want_extra = (extra_rate * t + 1e-9).floor() as u64;
            while sent_main < want_main {
                due.push(self.next_main as u32);
                self.next_main = (self.next_main + 1) % self.n_main.max(1);
                sent_main += 1;
            }
            while sent_extra < want_extra {
                due.push(self.n_main as u32);
                sent_extra += 1;
            }
            while !due.is_empty() {
                let rest = due.split_off(due.len().min(self.batch_max));
                let batch = std::mem::replace(&mut due, rest);
                self.send(step, batch).await;
            }
            while let Some(done) = self.in_flight.try_join_next() {
                self.record(done);
            }
            if elapsed >= duration {
                break;
            }
        }
        while let Some(done) = self.in_flight.join_next().await {
            self.record(done);
        }
        StepOutcome {
            attempted: sent_main + sent_extra,
            secs: start.elapsed().as_secs_f64(),
            requests: self.requests - requests_before,
        }
    }

    fn record(&mut self, done: Result<Sent, tokio::task::JoinError>) {
        match done {
            Ok((step, slots, Ok(()))) => {
                if let Some(per_slot) = self.published.get_mut(step) {
                    for slot in slots {
                        if let Some(n) = per_slot.get_mut(slot as usize) {
                            *n += 1;
                        }
                    }
                }
            }
            Ok((_, slots, Err(e))) => {
                if self.errors == 0 {
                    eprintln!("[loadgen] first publish error: {e}");
                }
                self.errors += slots.len() as u64;
                count_error(&mut self.error_messages, &e);
            }
            Err(e) => {
                self.errors += 1;
                count_error(&mut self.error_messages, &e.to_string());
            }
        }
    }

    async fn send(&mut self, step: usize, slots: Vec<u32>) {
        if self.in_flight.len() >= self.max_in_flight
            && let Some(done) = self.in_flight.join_next().await
        {
            self.record(done);
        }
        self.requests += 1;
        let sent_us = unix_us();
        let Self {
            sink,
            names,
            event,
            pad,
            seqs,
            next_base,
            in_flight,
            ..
        } = self;
        let mut data = |out: &mut String, slot: u32| {
            let seq = match seqs.get_mut(slot as usize) {
                Some(s) => {
                    *s += 1;
                    *s - 1
                }
                None => 0,
            };
            let _ = write!(out, r#"{{"seq":{seq},"sent_us":{sent_us},"step":{step}"#);
            if !pad.is_empty() {
                let _ = write!(out, r#","pad":"{pad}""#);
            }
            out.push('}');
        };
        let name = |slot: u32| names.get(slot as usize).map_or("", String::as_str);
        match sink {
            Sink::Http {
                client,
                bases,
                auth,
            } => {
                let base = bases
                    .get(*next_base % bases.len().max(1))
                    .cloned()
                    .unwrap_or_default();
                *next_base += 1;
                let (client, auth) = (client.clone(), auth.clone());
                let mut body = String::with_capacity(slots.len() * (96 + pad.len()) + 32);
                let single = slots.len() == 1;
                if !single {
                    body.push_str(r#"{"publications":["#);
                }
                for (i, &slot) in slots.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    let _ = write!(
                        body,
                        r#"{{"channel":"{}","event":"{event}","data":"#,
                        name(slot)
                    );
                    data(&mut body, slot);
                    body.push('}');
                }
                if !single {
                    body.push_str("]}");
                }
                let url = if single {
                    format!("{base}/api/v1/publish")
                } else {
                    format!("{base}/api/v1/publish/batch")
                };
                in_flight.spawn(async move {
                    let result = http_post(&client, url, auth, body).await;
                    (step, slots, result)
                });
            }
            Sink::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let mut pipe = redis::pipe();
                for &slot in &slots {
                    let mut envelope = format!(r#"{{"event":"{event}","data":"#);
                    data(&mut envelope, slot);
                    envelope.push('}');
                    pipe.cmd("PUBLISH")
                        .arg(format!("{prefix}{}", name(slot)))
                        .arg(envelope)
                        .ignore();
                }
                in_flight.spawn(async move {
                    let result =
                        match time::timeout(REQUEST_TIMEOUT, pipe.exec_async(&mut conn)).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(format!("redis: {e}")),
                            Err(_) => Err("redis pipeline timed out".to_owned()),
                        };
                    (step, slots, result)
                });
            }
        }
    }

    /// The successful publication counts a worker needs: `[step][worker slot]`.
    pub(crate) fn slice_for_worker(&self, own: bool, first: usize, count: usize) -> Vec<Vec<u64>> {
        self.published
            .iter()
            .map(|per_slot| slice(per_slot, self.n_main, own, first, count))
            .collect()
    }
}

/// Maps global slots to a worker's slots (see `common::channel_slots`).
pub(crate) fn slice(
    per_slot: &[u64],
    n_main: usize,
    own: bool,
    first: usize,
    count: usize,
) -> Vec<u64> {
    let mut out: Vec<u64> = if own {
        per_slot
            .get(first..(first + count).min(n_main))
            .map(<[u64]>::to_vec)
            .unwrap_or_default()
    } else {
        per_slot.first().copied().into_iter().collect()
    };
    out.extend(per_slot.get(n_main..).unwrap_or_default());
    out
}

async fn http_post(
    client: &reqwest::Client,
    url: String,
    auth: String,
    body: String,
) -> Result<(), String> {
    let response = client
        .post(url)
        .header(reqwest::header::AUTHORIZATION, auth)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("http: {e}"))?;
    let status = response.status();
    // Read the body in full so the connection goes back to the pool.
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::slice;

    #[test]
    fn slices_global_counts_for_a_worker() {
        // own mode, 5 channels + extra: worker with connections 2..4
        let per_slot = [10, 11, 12, 13, 14, 99];
        assert_eq!(slice(&per_slot, 5, true, 2, 2), vec![12, 13, 99]);
        // shared mode: one main channel + extra
        assert_eq!(slice(&[7, 3], 1, false, 100, 50), vec![7, 3]);
        assert_eq!(slice(&[7], 1, false, 0, 50), vec![7]);
    }
}
