//! What every test vendor shares: a small read-only page listing what it received (`GET /`,
//! for people watching the demo) and an adjustable answer latency (for fault tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::Html;

/// Extra time every answer takes; zero by default.
#[derive(Debug, Clone, Default)]
pub struct Latency(Arc<AtomicU64>);

impl Latency {
    /// Every request from now on waits `delay` before it is handled.
    pub fn set(&self, delay: Duration) {
        self.0.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Wraps `router` so its answers wait for the current latency.
    pub(crate) fn wrap(&self, router: Router) -> Router {
        let millis = self.0.clone();
        router.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let delay = Duration::from_millis(millis.load(Ordering::Relaxed));
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                next.run(req).await
            }
        }))
    }
}

/// A read-only HTML page: a title, a note, and one table.
pub(crate) fn page(title: &str, note: &str, columns: &[&str], rows: &[Vec<String>]) -> Html<String> {
    let head: String = columns.iter().map(|c| format!("<th>{}</th>", escape(c))).collect();
    let body: String = rows
        .iter()
        .map(|r| format!("<tr>{}</tr>", r.iter().map(|c| format!("<td>{}</td>", escape(c))).collect::<String>()))
        .collect();
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>{t}</title><style>body{{font:14px system-ui,sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style>\
         </head><body><h1>{t}</h1><p>{n} Read-only; development stand-in, not the vendor.</p>\
         <table><tr>{head}</tr>{body}</table><p>{count} received</p></body></html>",
        t = escape(title),
        n = escape(note),
        count = rows.len(),
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let Html(html) = page("Jira", "Issues.", &["key"], &[vec!["<script>alert(1)</script>".into()]]);
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("1 received"), "{html}");
    }
}
