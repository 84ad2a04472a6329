//! `/demo`: the live demo page and the browser client, built into the binary.

use axum::{
    http::header,
    response::{Html, IntoResponse},
};

/// `GET /demo`: the demo page.
pub(super) async fn page() -> Html<&'static str> {
    Html(include_str!("../../examples/browser/index.html"))
}

/// `GET /demo/herald.js`: the browser client module.
pub(super) async fn client() -> impl IntoResponse {
    javascript(include_str!("../../examples/browser/herald.js"))
}

/// `GET /demo/demo.js`: the demo page's script.
pub(super) async fn script() -> impl IntoResponse {
    javascript(include_str!("../../examples/browser/demo.js"))
}

fn javascript(body: &'static str) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        body,
    )
}
