//! A terminal client: connects, subscribes to channels and prints every message.
//!
//! ```sh
//! TOKEN=$(cargo run -q -- token --user 42)
//! cargo run --example subscribe -- --token "$TOKEN" --channel prices.btc --channel news
//! ```
//!
//! Stops after `--max` messages (default: never) or on Ctrl-C.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a terminal client prints what it receives"
)]

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
struct Args {
    /// Hub WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Access token (`herald token --user ID`).
    #[arg(long, env = "HERALD_TOKEN")]
    token: String,
    /// Channel to join; repeat for several.
    #[arg(long)]
    channel: Vec<String>,
    /// Exit after this many messages.
    #[arg(long)]
    max: Option<usize>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let url = format!("{}?token={}", args.url, args.token);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    for (id, channel) in args.channel.iter().enumerate() {
        let request = json!({"type": "subscribe", "id": id + 1, "channel": channel});
        ws.send(Message::Text(request.to_string().into())).await?;
    }
    let mut seen = 0;
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = tokio::signal::ctrl_c() => break,
        };
        match frame {
            Some(Ok(Message::Text(text))) => println!("{text}"),
            Some(Ok(Message::Close(frame))) => {
                println!("closed: {frame:?}");
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(err.into()),
            None => break,
        }
        seen += 1;
        if args.max.is_some_and(|max| seen >= max) {
            break;
        }
    }
    Ok(())
}
