//! A backend that streams simulated price ticks and shipment updates to
//! herald, the way an app's backend would: straight into Redis (`PUBLISH`
//! of herald's JSON envelope, any language can do it) or via the HTTP API.
//!
//! ```sh
//! # through Redis (herald nodes run with engine.kind = "redis"):
//! cargo run --release --example publisher -- --via redis --redis-url redis://127.0.0.1:6379 --rate 10
//! # through the HTTP API of one node (works with the memory engine too):
//! cargo run --release --example publisher -- --via http --url http://127.0.0.1:8080 --rate 10
//! ```
//!
//! Channels: `prices.<SYMBOL>` (event `price_update`) and `tracking.demo`
//! (event `shipment_update`): what the `/demo` page shows. Runs for
//! `--duration` seconds and prints what it sent.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example program reports to its terminal"
)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Via {
    Redis,
    Http,
}

#[derive(Debug, Parser)]
struct Args {
    /// Where to publish.
    #[arg(long, value_enum, default_value = "http")]
    via: Via,
    /// Redis URL (with --via redis).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// herald's Redis channel prefix.
    #[arg(long, default_value = "herald:")]
    prefix: String,
    /// herald base URL (with --via http).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key (with --via http).
    #[arg(long, default_value = "herald-insecure-development-api-key")]
    api_key: String,
    /// Ticks per second for each symbol.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Comma-separated symbols.
    #[arg(long, default_value = "BTC,ETH,SOL", value_delimiter = ',')]
    symbols: Vec<String>,
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    duration: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// One tick: a price per symbol, and now and then a shipment update.
fn tick(prices: &mut [(String, f64)], seq: u64) -> Vec<(String, &'static str, Value)> {
    let mut out = Vec::with_capacity(prices.len() + 1);
    for (symbol, price) in prices.iter_mut() {
        let change = (rand::random::<f64>() - 0.5) * 0.004;
        *price *= 1.0 + change;
        let data = json!({
            "symbol": symbol, "price": (*price * 100.0).round() / 100.0,
            "change": (change * 10_000.0).round() / 100.0, "seq": seq, "ts": unix_ms(),
        });
        out.push((format!("prices.{symbol}"), "price_update", data));
    }
    if seq.is_multiple_of(5) {
        const STATUSES: [&str; 5] = [
            "picked_up",
            "in_transit",
            "out_for_delivery",
            "delivered",
            "exception",
        ];
        const PLACES: [&str; 5] = ["Shenzhen", "Singapore", "Rotterdam", "Duisburg", "Berlin"];
        let n = (seq / 5) as usize;
        let data = json!({
            "shipment": format!("SHP-{}", 1001 + n % 5), "status": STATUSES[n % 5],
            "location": PLACES[(n / 5) % 5], "ts": unix_ms(),
        });
        out.push(("tracking.demo".into(), "shipment_update", data));
    }
    out
}

enum Sink {
    Redis(redis::aio::MultiplexedConnection, String),
    Http(reqwest::Client, String, String),
}

impl Sink {
    async fn send(
        &mut self,
        batch: Vec<(String, &'static str, Value)>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Self::Redis(conn, prefix) => {
                let mut pipe = redis::pipe();
                for (channel, event, data) in batch {
                    let envelope = json!({"event": event, "data": data, "ts": unix_ms()});
                    pipe.cmd("PUBLISH")
                        .arg(format!("{prefix}{channel}"))
                        .arg(envelope.to_string())
                        .ignore();
                }
                pipe.query_async::<()>(conn).await?;
            }
            Self::Http(client, url, key) => {
                let publications: Vec<Value> = batch
                    .into_iter()
                    .map(|(channel, event, data)| json!({"channel": channel, "event": event, "data": data}))
                    .collect();
                let response = client
                    .post(format!("{url}/api/v1/publish/batch"))
                    .bearer_auth(&*key)
                    .json(&json!({"publications": publications}))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    return Err(format!(
                        "herald answered {}: {}",
                        response.status(),
                        response.text().await?
                    )
                    .into());
                }
            }
        }
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut sink = match args.via {
        Via::Redis => {
            let client = redis::Client::open(args.redis_url.as_str())?;
            Sink::Redis(
                client.get_multiplexed_async_connection().await?,
                args.prefix.clone(),
            )
        }
        Via::Http => Sink::Http(
            reqwest::Client::new(),
            args.url.clone(),
            args.api_key.clone(),
        ),
    };
    let start_prices = [("BTC", 64_000.0), ("ETH", 3_150.0), ("SOL", 148.0)];
    let mut prices: Vec<(String, f64)> = args
        .symbols
        .iter()
        .map(|s| {
            let base = start_prices
                .iter()
                .find(|(n, _)| n == s)
                .map_or(100.0, |(_, p)| *p);
            (s.clone(), base)
        })
        .collect();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.01)));
    let started = Instant::now();
    let (mut sent, mut failed) = (0u64, 0u64);
    for seq in 0.. {
        ticker.tick().await;
        if started.elapsed() >= Duration::from_secs(args.duration) {
            break;
        }
        let batch = tick(&mut prices, seq);
        let len = batch.len() as u64;
        match sink.send(batch).await {
            Ok(()) => sent += len,
            Err(err) => {
                failed += len;
                eprintln!("publish failed: {err}");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"sent": sent, "failed": failed, "seconds": secs, "per_second": sent as f64 / secs})
    );
    Ok(())
}
