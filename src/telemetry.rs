//! Logging: readable lines by default, JSON with `--log-format json`.
//!
//! The filter comes from `RUST_LOG` when it is set and non-empty, else from
//! `log.level`, and is checked strictly: `EnvFilter` would take a misspelt
//! level such as `inof` for a target name and silently log nothing.
//!
//! Whatever the filter says, the libraries that see raw frames, requests or
//! commands log at `info` at most: at `debug`/`trace` they print WebSocket
//! payloads (the `auth` message and its token) and the like.

use tracing::{Level, Metadata};
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::{FilterExt as _, ParseError, filter_fn},
    fmt,
    layer::SubscriberExt as _,
    util::{SubscriberInitExt as _, TryInitError},
};

use serde::Deserialize;

/// Log output format.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `herald=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Targets capped at `info`: they log message payloads, request lines or
/// Redis commands (refresh-token hashes, publications) below that.
const CAPPED_TARGETS: [&str; 6] = [
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "h2",
    "redis",
    "axum::rejection",
];

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Why a log filter was refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A directive whose level is not off, error, warn, info, debug or trace.
    #[error("{directive:?}: {level:?} is not a level (off, error, warn, info, debug, trace)")]
    Level {
        /// The directive as written.
        directive: String,
        /// Its level part.
        level: String,
    },
    /// A directive whose target is not a module path.
    #[error("{directive:?}: {target:?} is not a target (a module path such as herald::native)")]
    Target {
        /// The directive as written.
        directive: String,
        /// Its target part.
        target: String,
    },
    /// No directive at all.
    #[error("empty filter; use a level such as info")]
    Empty,
    /// `EnvFilter` refused what the checks above let through.
    #[error("{0}")]
    Syntax(#[source] ParseError),
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter in effect is invalid.
    #[error("{setting}: {source}")]
    Filter {
        /// Where the filter came from: `RUST_LOG` or `log.level`.
        setting: &'static str,
        /// What is wrong with it.
        #[source]
        source: FilterError,
    },
    /// A global subscriber is already installed.
    #[error("{0}")]
    Install(#[source] TryInitError),
}

/// The filter in effect and where it came from (`RUST_LOG` or `log.level`).
fn source(config: &LogConfig) -> (&'static str, String) {
    match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => ("RUST_LOG", env),
        _ => ("log.level", config.level.clone()),
    }
}

fn is_target(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.'))
}

/// Checks a filter: comma-separated directives, each a level or
/// `target=level`, the level one of off, error, warn, info, debug, trace.
///
/// # Errors
/// [`FilterError`] saying which directive is wrong and why.
pub fn check_filter(spec: &str) -> Result<(), FilterError> {
    let mut directives = 0;
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match directive.split_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, directive),
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(FilterError::Level {
                directive: directive.to_owned(),
                level: level.to_owned(),
            });
        }
        if let Some(target) = target.filter(|t| !is_target(t)) {
            return Err(FilterError::Target {
                directive: directive.to_owned(),
                target: target.to_owned(),
            });
        }
        directives += 1;
    }
    if directives == 0 {
        return Err(FilterError::Empty);
    }
    EnvFilter::try_new(spec)
        .map(drop)
        .map_err(FilterError::Syntax)
}

/// Checks the filter in effect, naming its source in the error.
///
/// # Errors
/// [`TelemetryError::Filter`]: `RUST_LOG: …` or `log.level: …`.
pub fn check(config: &LogConfig) -> Result<(), TelemetryError> {
    let (setting, spec) = source(config);
    check_filter(&spec).map_err(|source| TelemetryError::Filter { setting, source })
}

/// Whether an event may be logged whatever the user's filter says.
fn below_cap(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let capped = CAPPED_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    !capped || *meta.level() <= Level::INFO
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides `log.level`.
///
/// # Errors
/// [`TelemetryError::Filter`] if the filter is invalid (naming `RUST_LOG`
/// or `log.level`), [`TelemetryError::Install`] if a subscriber is already
/// installed.
pub fn init(config: &LogConfig) -> Result<(), TelemetryError> {
    check(config)?;
    let (setting, spec) = source(config);
    let filter = EnvFilter::try_new(spec).map_err(|e| TelemetryError::Filter {
        setting,
        source: FilterError::Syntax(e),
    })?;
    let filter = filter.and(filter_fn(below_cap));
    let layer = fmt::layer().with_target(false);
    let layer = match config.format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().with_current_span(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init()
        .map_err(TelemetryError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_levels_or_target_levels() {
        for good in [
            "info",
            "INFO",
            "herald=debug,info",
            "warn,herald::native=trace",
            "off",
        ] {
            assert!(check_filter(good).is_ok(), "{good}");
        }
        for bad in [
            "inof",
            "herald=inof",
            "",
            " , ",
            "herald",
            "=info",
            "a b=info",
            "x[span]=info",
        ] {
            assert!(check_filter(bad).is_err(), "{bad:?} passed");
        }
        let err = check_filter("info,inof").unwrap_err().to_string();
        assert!(err.contains("\"inof\" is not a level"), "{err}");
    }

    #[test]
    fn chatty_libraries_are_capped_at_info() {
        use tracing::{callsite::Identifier, field::FieldSet, metadata::Kind};
        struct Site;
        impl tracing::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static SITE: Site = Site;
        let meta = |target: &'static str, level| {
            Metadata::new(
                "e",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                Kind::EVENT,
            )
        };
        assert!(!below_cap(&meta("tungstenite::protocol", Level::TRACE)));
        assert!(!below_cap(&meta("tokio_tungstenite", Level::DEBUG)));
        assert!(!below_cap(&meta("redis::aio", Level::DEBUG)));
        assert!(below_cap(&meta("tungstenite", Level::INFO)));
        assert!(below_cap(&meta("tungstenite_fork", Level::TRACE)));
        assert!(below_cap(&meta("herald::native", Level::TRACE)));
    }
}
