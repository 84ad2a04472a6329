//! The hub core stays independent of transports, encodings and backends.

use std::{fs, path::Path};

/// Source of every `.rs` file under `dir`, without `#[cfg(test)]` modules.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).unwrap();
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_owned();
            out.push((path.display().to_string(), code));
        }
    }
    out
}

fn assert_free_of(dir: &str, forbidden: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let files = sources(&root);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    for (path, code) in files {
        for word in forbidden {
            assert!(
                !code.contains(word),
                "{path} mentions `{word}`, which breaks the layering"
            );
        }
    }
}

const TRANSPORTS_AND_BACKENDS: &[&str] = &[
    "axum",
    "tungstenite",
    "redis",
    "jsonwebtoken",
    "metrics_exporter_prometheus",
    "crate::http",
    "crate::native",
    "crate::app",
    "crate::auth",
    "engine::memory",
];

#[test]
fn core_knows_no_transport_encoding_or_backend() {
    let mut forbidden = TRANSPORTS_AND_BACKENDS.to_vec();
    forbidden.extend(["serde_json", "rmp_serde"]);
    assert_free_of("core", &forbidden);
}

#[test]
fn protocol_is_pure_data() {
    let mut forbidden = TRANSPORTS_AND_BACKENDS.to_vec();
    forbidden.extend(["tokio", "dashmap", "crate::core", "crate::engine"]);
    assert_free_of("protocol", &forbidden);
}

#[test]
fn the_engine_trait_depends_on_protocol_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/mod.rs");
    let code = fs::read_to_string(root).unwrap();
    for word in [
        "crate::core",
        "axum",
        "tungstenite",
        "jsonwebtoken",
        "crate::http",
    ] {
        assert!(!code.contains(word), "engine/mod.rs mentions `{word}`");
    }
}
