//! `/metrics` on a fresh node serves every family the shipped Grafana
//! dashboard queries, each with help text, for both engines.
//!
//! The recorder is process-global and shared by every test hub, so these
//! tests assert only what holds whatever other tests counted before them:
//! families, help lines and label values exist (they are registered when the
//! recorder is installed, by whichever hub starts first).

use std::collections::BTreeSet;

use herald::config::EngineKind;
use serde_json::Value;

use crate::{helpers::TestHub, redis_server::RedisServer};

/// Every `herald_…` family named in an `expr` of the dashboard.
fn dashboard_families() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/helm/herald/dashboards/herald.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(
        exprs.len() >= 15,
        "dashboard has only {} queries",
        exprs.len()
    );
    let mut families = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("herald_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            // Histogram series name their family plus a suffix.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            families.insert(family.to_owned());
            rest = &tail[end..];
        }
    }
    families
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::String(expr) if key == "expr" => out.push(expr.clone()),
                    other => collect_exprs(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Lines starting with `prefix`.
fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn assert_complete(text: &str) {
    let families = dashboard_families();
    assert!(families.len() >= 15, "{families:?}");
    for family in &families {
        assert!(
            !lines_with(text, &format!("# TYPE {family} ")).is_empty(),
            "{family} (queried by the dashboard) is missing:\n{text}"
        );
        // At least one sample: a series, or a histogram's buckets.
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(family.as_str())
                    .is_some_and(|rest| rest.starts_with([' ', '{']) || rest.starts_with("_bucket"))
            })
            .count();
        assert!(samples > 0, "{family} has no series:\n{text}");
    }
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md"))
        .unwrap();
    for line in lines_with(text, "# TYPE herald_") {
        let family = line.split(' ').nth(2).unwrap();
        assert!(
            !lines_with(text, &format!("# HELP {family} ")).is_empty(),
            "{family} has no # HELP"
        );
        assert!(
            docs.contains(&format!("| `{family}` |")),
            "{family} is not in the metrics table of docs/OPERATIONS.md"
        );
    }
    // Every label value the dashboard groups by exists before its first event.
    for series in [
        r#"herald_closes_total{code="4001"}"#,
        r#"herald_closes_total{code="4505"}"#,
        r#"herald_rate_limited_total{limit="connection_messages"}"#,
        r#"herald_rate_limited_total{limit="session_calls"}"#,
        r#"herald_messages_dropped_total{reason="invalid_data"}"#,
        r#"herald_messages_dropped_total{reason="encode_error"}"#,
    ] {
        assert!(!lines_with(text, series).is_empty(), "{series} is missing");
    }
}

#[tokio::test]
async fn a_fresh_memory_node_serves_every_dashboard_metric_with_help() {
    let hub = TestHub::spawn().await;
    // Only presence: the value of a gauge is shared with every hub in this
    // process (a Redis test may have just lost its server).
    assert_complete(&hub.scrape_metrics().await);
}

#[tokio::test]
async fn a_fresh_redis_node_serves_every_dashboard_metric_with_help() {
    let server = RedisServer::start();
    let hub = TestHub::with(|c| {
        c.engine.kind = EngineKind::Redis;
        c.engine.url = server.url();
    })
    .await;
    hub.wait_ready().await;
    assert_complete(&hub.scrape_metrics().await);
}
