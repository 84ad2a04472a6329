//! Origin allow-list: which browser origins may open WebSockets and call
//! the browser-facing API (against cross-site WebSocket hijacking).

/// CORS for the allowed origins only: `methods` with a `Content-Type`
/// header, for browser endpoints called from another allowed origin.
pub fn cors(
    origins: &[String],
    methods: impl Into<tower_http::cors::AllowMethods>,
) -> tower_http::cors::CorsLayer {
    let origins = origins.to_vec();
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::predicate(
            move |origin: &axum::http::HeaderValue, _| {
                origin.to_str().is_ok_and(|o| allowed(o, &origins))
            },
        ))
        .allow_methods(methods)
        .allow_headers([axum::http::header::CONTENT_TYPE])
}

/// Whether `origin` matches one of `patterns` (`*` matches any run of characters).
pub(crate) fn allowed(origin: &str, patterns: &[String]) -> bool {
    // Real origins are short; the bound also keeps matching cheap on hostile input.
    origin.len() <= 256
        && patterns
            .iter()
            .any(|p| glob(p.as_bytes(), origin.as_bytes()))
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn patterns_match_exact_and_wildcard_origins() {
        let patterns = vec![
            "http://localhost:*".to_owned(),
            "https://app.example.com".to_owned(),
        ];
        assert!(allowed("http://localhost:3000", &patterns));
        assert!(allowed("https://app.example.com", &patterns));
        assert!(!allowed("https://evil.example.com", &patterns));
        assert!(!allowed("https://app.example.com.evil.net", &patterns));
        assert!(allowed("anything", &["*".to_owned()]));
    }
}
