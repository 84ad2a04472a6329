//! The `herald` binary: `herald` (serve), `herald token`, `herald check-config`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use herald::{
    app::App,
    auth::TokenIssuer,
    config::{Config, LogFormat, Overrides},
};

/// A real-time WebSocket push hub.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file (see herald.example.toml).
    #[arg(long, short, env = "HERALD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Node id (overrides server.node_id).
    #[arg(long, global = true)]
    node_id: Option<String>,
    /// Log format (overrides log.format).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve,
    /// Print an access token signed with the signing key (auth.signing_kid, or the default key).
    Token {
        /// The user id (`sub` claim).
        #[arg(long)]
        user: String,
        /// Lifetime in seconds, from 1 to 31536000 (365 days).
        #[arg(long, default_value_t = 3600,
              value_parser = clap::value_parser!(u64).range(1..=herald::auth::MAX_TOKEN_TTL_SECS))]
        ttl: u64,
    },
    /// Load and validate the configuration, then exit.
    CheckConfig,
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI answers on its terminal: errors before logging starts, `check-config` and `token` output"
)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        node_id: cli.node_id.clone(),
        log_format: cli.log_format,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("herald: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Token { user, ttl } => token(&config, &user, ttl),
        Command::CheckConfig => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
    }
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI answers on its terminal: errors before logging starts, `check-config` and `token` output"
)]
fn token(config: &Config, user: &str, ttl: u64) -> ExitCode {
    match TokenIssuer::new(&config.auth).and_then(|issuer| issuer.mint(user, ttl)) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("herald token: {err}");
            ExitCode::FAILURE
        }
    }
}

#[allow(
    clippy::print_stderr,
    reason = "logging failed to start, so stderr is the only place left to say why"
)]
fn serve(config: Config) -> ExitCode {
    if let Err(err) = herald::telemetry::init(&config.log) {
        eprintln!("herald: {err}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        warn_insecure(&config);
        let app = match App::build(config).await {
            Ok(app) => app,
            Err(err) => {
                tracing::error!(%err, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let state = app.state();
        match app.local_addr() {
            Ok(addr) => tracing::info!(
                %addr,
                node_id = state.hub.node_id(),
                engine = ?state.config.engine.kind,
                "herald listening: ws://{addr}/ws"
            ),
            Err(err) => tracing::warn!(%err, "cannot read the bound address"),
        }
        match app.run(herald::shutdown::signal()).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!(%err, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

fn warn_insecure(config: &Config) {
    let keys = config.insecure_defaults();
    if keys.is_empty() {
        return;
    }
    for key in &keys {
        tracing::warn!(
            key,
            "INSECURE DEVELOPMENT DEFAULT in use: anyone who reads the source can forge tokens or publish. \
             Set it in the config file or as HERALD_{}",
            key.to_uppercase().replace('.', "__")
        );
    }
    tracing::warn!(
        "development defaults are only accepted on a loopback address; herald refuses to listen elsewhere until they are set"
    );
}
