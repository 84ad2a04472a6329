//! The layering of docs/ARCHITECTURE.md, checked on the parsed source.
//!
//! Every `.rs` file under `src/` is parsed with `syn`; every path it names
//! (in `use` trees, grouped or not, in types and expressions, and in macro
//! bodies) is resolved against the file's module (`self`, `super`, `crate`)
//! and checked against the rules below. Only items marked `#[cfg(test)]`
//! are skipped, never the rest of their file. `planted_violations_are_caught`
//! shows that each way round the old text search fails here.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// What one top-level module may use: modules of this crate and outside crates.
struct Rule {
    module: &'static str,
    crate_modules: &'static [&'static str],
    /// Outside crates that must never appear (everything else is allowed).
    forbidden_crates: &'static [&'static str],
}

/// The layers, from the bottom: protocol ← core ← transports / engines / auth ← app.
const RULES: &[Rule] = &[
    Rule {
        module: "protocol",
        crate_modules: &[],
        forbidden_crates: &[
            "axum",
            "hyper",
            "tokio",
            "tokio_util",
            "dashmap",
            "governor",
            "redis",
            "jsonwebtoken",
            "tungstenite",
            "tokio_tungstenite",
            "metrics",
        ],
    },
    Rule {
        module: "net",
        crate_modules: &["core"],
        forbidden_crates: &["redis", "jsonwebtoken"],
    },
    Rule {
        module: "serde_text",
        crate_modules: &[],
        forbidden_crates: &["tokio", "axum", "redis", "jsonwebtoken"],
    },
    Rule {
        module: "redis_conn",
        crate_modules: &[],
        forbidden_crates: &[
            "axum",
            "hyper",
            "tungstenite",
            "tokio_tungstenite",
            "jsonwebtoken",
        ],
    },
    Rule {
        module: "engine",
        crate_modules: &["protocol", "metrics", "serde_text", "redis_conn"],
        forbidden_crates: &[
            "axum",
            "hyper",
            "tungstenite",
            "tokio_tungstenite",
            "jsonwebtoken",
        ],
    },
    Rule {
        module: "core",
        crate_modules: &["protocol", "engine", "metrics"],
        forbidden_crates: &[
            "axum",
            "hyper",
            "hyper_util",
            "tower",
            "tower_http",
            "tungstenite",
            "tokio_tungstenite",
            "redis",
            "jsonwebtoken",
            "metrics_exporter_prometheus",
            "serde_json",
            "rmp_serde",
            "figment",
            "clap",
        ],
    },
    Rule {
        module: "auth",
        crate_modules: &["protocol", "core", "metrics", "serde_text", "redis_conn"],
        forbidden_crates: &["axum", "hyper", "tungstenite", "tokio_tungstenite"],
    },
    Rule {
        module: "native",
        crate_modules: &["protocol", "core", "net", "metrics"],
        forbidden_crates: &["redis", "jsonwebtoken", "figment"],
    },
    Rule {
        module: "telemetry",
        crate_modules: &[],
        forbidden_crates: &["redis", "jsonwebtoken", "axum"],
    },
    Rule {
        module: "socketio",
        crate_modules: &["protocol", "core", "net", "metrics"],
        forbidden_crates: &["redis", "jsonwebtoken", "figment"],
    },
    Rule {
        module: "http",
        crate_modules: &[
            "protocol", "core", "engine", "auth", "net", "config", "metrics",
        ],
        forbidden_crates: &["redis", "jsonwebtoken", "tungstenite", "tokio_tungstenite"],
    },
];

/// Where implementations are chosen: the only modules that may name the
/// concrete engines, stores and transports together.
const COMPOSITION_ROOTS: &[&str] = &["app", "main"];

/// Paths below these name concrete implementations.
const IMPLEMENTATIONS: &[&[&str]] = &[
    &["engine", "memory"],
    &["engine", "redis"],
    &["auth", "sessions", "memory"],
    &["auth", "sessions", "redis"],
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    what: String,
}

/// Everything one file names, resolved to absolute paths.
#[derive(Default)]
struct Names {
    /// Paths inside this crate, from the root (`["core", "hub", "Hub"]`).
    internal: BTreeSet<Vec<String>>,
    /// Outside crates named.
    external: BTreeSet<String>,
}

struct Collector<'a> {
    module: &'a [String],
    locals: BTreeSet<String>,
    crates: &'a BTreeSet<String>,
    names: Names,
}

impl Collector<'_> {
    fn record(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.to_vec(),
            "super" => {
                let mut base = self.module.to_vec();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                self.names.internal.insert(base);
                return;
            }
            name if self.locals.contains(name) => self.module.to_vec(),
            name if self.crates.contains(name) => {
                self.names.external.insert(name.to_owned());
                return;
            }
            _ => return,
        };
        let skip = usize::from(matches!(first.as_str(), "crate" | "self"));
        base.extend(segments[skip..].iter().cloned());
        self.names.internal.insert(base);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.record(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.record(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.record(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    /// Paths in macro bodies are tokens, not syntax: read `a :: b :: c` runs.
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let mut run: Vec<String> = Vec::new();
        let mut colons = 0;
        for token in tokens {
            match token {
                proc_macro2::TokenTree::Ident(ident) => {
                    if colons == 2 || run.is_empty() {
                        run.push(ident.to_string());
                    } else {
                        self.flush(&mut run);
                        run.push(ident.to_string());
                    }
                    colons = 0;
                }
                proc_macro2::TokenTree::Punct(p) if p.as_char() == ':' => colons += 1,
                proc_macro2::TokenTree::Group(group) => {
                    self.flush(&mut run);
                    colons = 0;
                    self.tokens(group.stream());
                }
                _ => {
                    self.flush(&mut run);
                    colons = 0;
                }
            }
        }
        self.flush(&mut run);
    }

    fn flush(&mut self, run: &mut Vec<String>) {
        if run.len() > 1 {
            self.record(run);
        }
        run.clear();
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            syn::Item::Type(t) => &t.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_cfg_test(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 || path.leading_colon.is_some() {
            self.record(&segments);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }
}

/// Names declared in a file that a bare path may start with: child modules
/// and names brought in by `use` (so `redis::X` after `mod redis;` is local).
fn locals(file: &syn::File) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for item in &file.items {
        if let syn::Item::Mod(m) = item {
            names.insert(m.ident.to_string());
        }
    }
    names
}

/// Checks one file's source as module `module` (e.g. `["core", "hub"]`).
fn check_source(
    file: &str,
    module: &[String],
    source: &str,
    crates: &BTreeSet<String>,
) -> Vec<Violation> {
    let parsed = match syn::parse_file(source) {
        Ok(parsed) => parsed,
        Err(err) => {
            return vec![Violation {
                file: file.to_owned(),
                what: format!("does not parse: {err}"),
            }];
        }
    };
    let mut collector = Collector {
        module,
        locals: locals(&parsed),
        crates,
        names: Names::default(),
    };
    collector.visit_file(&parsed);
    let names = collector.names;
    let mut violations = Vec::new();
    let mut flag = |what: String| {
        violations.push(Violation {
            file: file.to_owned(),
            what,
        });
    };
    let top = module.first().map(String::as_str).unwrap_or_default();
    for path in &names.internal {
        let Some(target) = path.first() else { continue };
        if target == top || target.is_empty() {
            continue;
        }
        if let Some(rule) = RULES.iter().find(|r| r.module == top)
            && !rule.crate_modules.contains(&target.as_str())
        {
            flag(format!("`{top}` uses `crate::{}`", path.join("::")));
        }
        if !COMPOSITION_ROOTS.contains(&top)
            && IMPLEMENTATIONS
                .iter()
                .any(|imp| path.len() >= imp.len() && path[..imp.len()] == imp[..] && imp[0] != top)
        {
            flag(format!(
                "`{top}` names the implementation `crate::{}`; only app.rs chooses implementations",
                path.join("::")
            ));
        }
    }
    if let Some(rule) = RULES.iter().find(|r| r.module == top) {
        for name in &names.external {
            if rule.forbidden_crates.contains(&name.as_str()) {
                flag(format!("`{top}` uses the crate `{name}`"));
            }
        }
    }
    violations
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The crate's dependencies as Rust names (`tokio-tungstenite` → `tokio_tungstenite`).
fn dependency_names() -> BTreeSet<String> {
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let mut names: BTreeSet<String> = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().replace('-', "_")))
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .collect();
    // Reached through a dependency's re-export, named like a crate in code.
    names.extend(["tungstenite".to_owned(), "proc_macro2".to_owned()]);
    names
}

/// Every source file with its module path.
fn modules() -> BTreeMap<PathBuf, Vec<String>> {
    fn walk(dir: &Path, module: &[String], out: &mut BTreeMap<PathBuf, Vec<String>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut child = module.to_vec();
                child.push(stem);
                walk(&path, &child, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut module = module.to_vec();
                if !matches!(stem.as_str(), "mod" | "lib") {
                    module.push(stem);
                }
                out.insert(path, module);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), &[], &mut out);
    out
}

#[test]
fn every_module_respects_the_layering() {
    let crates = dependency_names();
    let mut violations = Vec::new();
    let files = modules();
    assert!(files.len() > 30, "found only {} files", files.len());
    for (path, module) in &files {
        let source = fs::read_to_string(path).unwrap();
        let file = path.strip_prefix(src()).unwrap().display().to_string();
        violations.extend(check_source(&file, module, &source, &crates));
    }
    assert!(
        violations.is_empty(),
        "layering broken (see docs/ARCHITECTURE.md):\n{}",
        violations
            .iter()
            .map(|v| format!("  {}: {}", v.file, v.what))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// No two top-level modules depend on each other, directly or through others.
#[test]
fn top_level_modules_form_no_cycle() {
    let crates = dependency_names();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, module) in modules() {
        let Some(top) = module.first().cloned() else {
            continue;
        };
        if COMPOSITION_ROOTS.contains(&top.as_str()) {
            continue;
        }
        let source = fs::read_to_string(&path).unwrap();
        let parsed = syn::parse_file(&source).unwrap();
        let mut collector = Collector {
            module: &module,
            locals: locals(&parsed),
            crates: &crates,
            names: Names::default(),
        };
        collector.visit_file(&parsed);
        for target in collector.names.internal.iter().filter_map(|p| p.first()) {
            if *target != top && !COMPOSITION_ROOTS.contains(&target.as_str()) {
                edges.entry(top.clone()).or_default().insert(target.clone());
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}", cycle.join(" → "));
        }
    }
}

/// Each way the old text search could be fooled is caught now.
#[test]
fn planted_violations_are_caught() {
    let crates = dependency_names();
    let module = |m: &str| m.split("::").map(str::to_owned).collect::<Vec<_>>();
    let cases = [
        (
            "a grouped use",
            "core::hub",
            "use crate::{http::AppState, protocol::Format};",
            "`core` uses `crate::http::AppState`",
        ),
        (
            "a super::super path",
            "core::hub",
            "fn f(_: &super::super::http::AppState) {}",
            "`core` uses `crate::http::AppState`",
        ),
        (
            "code after a #[cfg(test)] item",
            "core::hub",
            "#[cfg(test)]\nmod tests {}\nuse axum::Router;",
            "`core` uses the crate `axum`",
        ),
        (
            "a path inside a function body",
            "core::client",
            "fn f() { let _ = crate::native::router; }",
            "`core` uses `crate::native::router`",
        ),
        (
            "a path inside a macro",
            "core::client",
            "fn f() { tokio::select! { _ = redis::cmd(\"PING\") => {} } }",
            "`core` uses the crate `redis`",
        ),
        (
            "a transport naming the HTTP API",
            "native",
            "use crate::http::AppState;",
            "`native` uses `crate::http::AppState`",
        ),
        (
            "an implementation chosen outside app.rs",
            "http::ops",
            "use crate::engine::redis::RedisEngine;",
            "`http` names the implementation `crate::engine::redis::RedisEngine`; only app.rs chooses implementations",
        ),
    ];
    for (name, at, source, expected) in cases {
        let found = check_source("planted.rs", &module(at), source, &crates);
        assert!(
            found.iter().any(|v| v.what == expected),
            "{name}: expected `{expected}`, found {found:?}"
        );
    }
    // And what is allowed passes: tests may use anything.
    let clean = "use crate::protocol::Format;\n#[cfg(test)]\nmod tests { use axum::Router; }";
    assert_eq!(
        check_source("clean.rs", &module("core::hub"), clean, &crates),
        []
    );
}
